//! Failed logins per account, with growing delays: after a few wrong
//! passwords for one email address, further logins for it (from anywhere,
//! the right password included) wait 1 s, then 2 s, 4 s … up to 15 min. This
//! holds where the per-network limiter cannot: a guess spread over many
//! addresses. Unknown addresses are counted alike, so the answers do not
//! tell which accounts exist. A login that succeeds clears the count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong passwords for one account that cost nothing.
pub const FREE_FAILURES: u32 = 5;
/// The longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Accounts tracked at most (about 5 MiB). When full, those whose delay and
/// memory have passed are dropped (at most once a second); while it is still
/// full, new accounts are not tracked and only the per-network limit holds
/// for them.
pub const MAX_ACCOUNTS: usize = 50_000;
/// A count is forgotten this long after the last failure.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

struct Failures {
    count: u32,
    last: Instant,
    until: Instant,
}

#[derive(Default)]
struct Table {
    accounts: HashMap<String, Failures>,
    pruned_at: Option<Instant>,
}

/// The failed logins of every account seen lately.
#[derive(Default)]
pub struct LoginFailures {
    table: Mutex<Table>,
}

impl LoginFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(seconds)` while logins for `email` must wait.
    pub fn check(&self, email: &str) -> Result<(), u64> {
        self.check_at(email, Instant::now())
    }

    /// Records a wrong password for `email`.
    pub fn failed(&self, email: &str) {
        self.failed_at(email, Instant::now());
    }

    /// Clears `email`'s count (a login succeeded).
    pub fn succeeded(&self, email: &str) {
        self.lock().accounts.remove(email);
    }

    /// Accounts tracked now.
    pub fn len(&self) -> usize {
        self.lock().accounts.len()
    }

    /// Whether no account is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_at(&self, email: &str, now: Instant) -> Result<(), u64> {
        match self.lock().accounts.get(email) {
            Some(f) if f.until > now => Err((f.until - now).as_secs_f64().ceil().max(1.0) as u64),
            _ => Ok(()),
        }
    }

    fn failed_at(&self, email: &str, now: Instant) {
        let mut table = self.lock();
        if table.accounts.len() >= MAX_ACCOUNTS && !table.accounts.contains_key(email) {
            let due = table
                .pruned_at
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
            if due {
                table
                    .accounts
                    .retain(|_, f| f.until > now || now.duration_since(f.last) < FORGET_AFTER);
                table.pruned_at = Some(now);
            }
            if table.accounts.len() >= MAX_ACCOUNTS {
                return;
            }
        }
        let f = table.accounts.entry(email.to_owned()).or_insert(Failures {
            count: 0,
            last: now,
            until: now,
        });
        if now.duration_since(f.last) >= FORGET_AFTER {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        f.until = now + delay_after(f.count);
    }
}

/// The wait after the `count`-th wrong password in a row.
fn delay_after(count: u32) -> Duration {
    match count.checked_sub(FREE_FAILURES) {
        None | Some(0) => Duration::ZERO,
        Some(n) => Duration::from_secs(1u64 << (n - 1).min(20)).min(MAX_DELAY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_after_the_free_failures_and_stop_at_the_cap() {
        let secs: Vec<u64> = (1..=16).map(|n| delay_after(n).as_secs()).collect();
        assert_eq!(
            secs,
            [0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900]
        );
        assert_eq!(delay_after(1000), MAX_DELAY);
    }

    #[test]
    fn an_account_waits_whatever_the_password_and_a_success_clears_it() {
        let failures = LoginFailures::default();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(failures.check_at("ada@example.org", t0), Ok(()));
            failures.failed_at("ada@example.org", t0);
        }
        assert_eq!(failures.check_at("ada@example.org", t0), Ok(()));
        failures.failed_at("ada@example.org", t0);
        assert_eq!(failures.check_at("ada@example.org", t0), Err(1));
        assert_eq!(
            failures.check_at("bob@example.org", t0),
            Ok(()),
            "per account"
        );
        failures.failed_at("ada@example.org", t0 + Duration::from_secs(1));
        assert_eq!(
            failures.check_at("ada@example.org", t0 + Duration::from_secs(1)),
            Err(2)
        );
        let later = t0 + Duration::from_secs(3);
        assert_eq!(failures.check_at("ada@example.org", later), Ok(()));
        failures.succeeded("ada@example.org");
        failures.failed_at("ada@example.org", later);
        assert_eq!(
            failures.check_at("ada@example.org", later),
            Ok(()),
            "cleared"
        );
    }

    #[test]
    fn the_table_stays_bounded() {
        let failures = LoginFailures::default();
        let t0 = Instant::now();
        for i in 0..(MAX_ACCOUNTS + 10_000) {
            failures.failed_at(&format!("user{i}@example.org"), t0);
        }
        assert_eq!(failures.len(), MAX_ACCOUNTS);
        // An hour on, the old counts make room.
        let later = t0 + FORGET_AFTER;
        failures.failed_at("new@example.org", later);
        assert_eq!(failures.len(), 1);
    }
}
