//! Token buckets per client network, for signup and login: one per IPv4
//! address and one per IPv6 /64 (what one host or subscriber is usually
//! given, so walking the addresses of a /64 gains nothing).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimitConfig;

/// The most buckets of their own that networks get (with the one overflow
/// bucket, at most `MAX_BUCKETS + 1` are kept: about 3 MiB with the map's
/// overhead). When that many are in use, full ones are dropped first (at most
/// once a second); while the table is still full, new networks share the
/// overflow bucket: bounded memory, and a flood of new addresses is limited
/// together instead of resetting anyone's limit.
pub const MAX_BUCKETS: usize = 50_000;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Whose attempts count together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    V4(u32),
    /// The upper 64 bits.
    V6(u64),
    /// Every new network while the table is full.
    Overflow,
}

impl Key {
    fn of(ip: IpAddr) -> Key {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Key::V4(u32::from(v4)),
            IpAddr::V6(v6) => Key::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// A token bucket per client network: `burst` attempts at once, `per_minute`
/// regained per minute.
pub struct RateLimiter {
    table: Mutex<Table>,
    burst: f64,
    per_sec: f64,
}

#[derive(Default)]
struct Table {
    buckets: HashMap<Key, Bucket>,
    /// When full buckets were last dropped: at most once a second, so a full
    /// table costs one scan a second, not one per request.
    pruned_at: Option<Instant>,
}

impl RateLimiter {
    /// A limiter with the given rates.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            burst: f64::from(config.burst.max(1)),
            per_sec: f64::from(config.per_minute.max(1)) / 60.0,
        }
    }

    /// How many buckets are kept now.
    pub fn len(&self) -> usize {
        self.lock().buckets.len()
    }

    /// Whether no bucket is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes one attempt for `ip`; `Err(seconds)` says when the next one is allowed.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        self.check_at(ip, Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let mut table = self.lock();
        let mut key = Key::of(ip);
        if table.buckets.len() >= MAX_BUCKETS && !table.buckets.contains_key(&key) {
            let due = table
                .pruned_at
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
            if due {
                let (burst, per_sec) = (self.burst, self.per_sec);
                table.buckets.retain(|k, b| {
                    *k == Key::Overflow
                        || b.tokens + now.duration_since(b.updated).as_secs_f64() * per_sec < burst
                });
                table.pruned_at = Some(now);
            }
            if table.buckets.len() >= MAX_BUCKETS {
                key = Key::Overflow;
            }
        }
        let buckets = &mut table.buckets;
        let bucket = buckets.entry(key).or_insert(Bucket {
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
    use std::net::Ipv6Addr;

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

    fn limiter(burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            burst,
            per_minute: 1,
        })
    }

    #[test]
    fn an_ipv6_64_is_one_client() {
        let limiter = limiter(5);
        let t0 = Instant::now();
        let base = u128::from("2001:db8:1:2::".parse::<Ipv6Addr>().unwrap());
        let refused = (0..300u128)
            .map(|i| IpAddr::V6(Ipv6Addr::from(base + i * 0x1_0000_0001)))
            .filter(|ip| limiter.check_at(*ip, t0).is_err())
            .count();
        assert_eq!(refused, 295, "300 addresses of one /64 share 5 attempts");
        let next_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(
            limiter.check_at(next_64, t0).is_ok(),
            "the next /64 is another client"
        );
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address() {
        let limiter = limiter(1);
        let t0 = Instant::now();
        assert!(limiter.check_at("192.0.2.7".parse().unwrap(), t0).is_ok());
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert!(limiter.check_at(mapped, t0).is_err());
    }

    #[test]
    fn a_million_addresses_keep_the_table_bounded_and_the_limit_on() {
        let limiter = limiter(2);
        let t0 = Instant::now();
        let victim: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limiter.check_at(victim, t0).is_ok());
        assert!(limiter.check_at(victim, t0).is_ok());
        assert!(limiter.check_at(victim, t0).is_err());
        let mut refused = 0;
        for i in 0..1_000_000u32 {
            // 10.0.0.0/8 upwards: a new address each time.
            let ip = IpAddr::V4((0x0a00_0000 + i).into());
            if limiter.check_at(ip, t0).is_err() {
                refused += 1;
            }
        }
        assert_eq!(
            limiter.len(),
            MAX_BUCKETS + 1,
            "its own buckets and the overflow"
        );
        assert!(
            // At most MAX_BUCKETS got a bucket of their own, and the
            // overflow bucket lets its burst (2) through.
            refused >= 1_000_000 - MAX_BUCKETS as u32 - 2,
            "once the table is full new addresses share one bucket: {refused} refused"
        );
        assert!(
            limiter.check_at(victim, t0).is_err(),
            "the flood did not reset the victim's bucket"
        );
    }
}
