//! Token buckets per client IP, for signup and login.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimitConfig;

/// Buckets beyond this many are pruned of full ones.
const MAX_BUCKETS: usize = 50_000;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A token bucket per IP: `burst` attempts at once, `per_minute` regained per minute.
pub struct RateLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    burst: f64,
    per_sec: f64,
}

impl RateLimiter {
    /// A limiter with the given rates.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
            burst: f64::from(config.burst.max(1)),
            per_sec: f64::from(config.per_minute.max(1)) / 60.0,
        }
    }

    /// Takes one attempt for `ip`; `Err(seconds)` says when the next one is allowed.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            let (burst, per_sec) = (self.burst, self.per_sec);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * per_sec < burst
            });
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_sec;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_a_burst_then_refills() {
        let limiter = RateLimiter::new(RateLimitConfig {
            burst: 3,
            per_minute: 60,
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(ip, t0).is_ok());
        }
        assert_eq!(limiter.check_at(ip, t0), Err(1));
        assert!(limiter.check_at(other, t0).is_ok(), "buckets are per IP");
        assert!(limiter.check_at(ip, t0 + Duration::from_secs(1)).is_ok());
    }
}
