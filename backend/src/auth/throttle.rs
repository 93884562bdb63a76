//! Login throttling: slows password guessing against an account without locking its owner
//! out for good. Failures are counted per account *and address*, and per account alone:
//!
//! - From one address, the first [`LoginThrottleConfig::free_per_address`] failures cost
//!   nothing; each one after doubles a wait (1 s, 2 s, 4 s…) up to `max_wait_secs`. An
//!   attempt during the wait is refused (429 with `Retry-After`) before any password is
//!   checked, so a guesser gets a handful of tries an hour, and the owner elsewhere none of
//!   that.
//! - Across addresses (a guesser with many), the first `free_per_account` failures cost
//!   nothing, then the same doubling, capped lower (`max_account_wait_secs`): the account is
//!   slowed for everyone, never closed.
//! - A success from an address clears that address's count and the account's; a quiet
//!   `forget_after_secs` clears any count.
//!
//! Counts live in the node's memory (a guesser spread over nodes gets each node's allowance;
//! the per-IP rate limit still bounds each address). Times come from tokio's clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Settings of the login throttle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginThrottleConfig {
    /// Failures against one account from one address before waits begin. Default 5.
    pub free_per_address: u32,
    /// Longest wait for one address, in seconds. Default 900 (15 minutes).
    pub max_wait_secs: u64,
    /// Failures against one account from all addresses before waits begin. Default 50.
    pub free_per_account: u32,
    /// Longest wait for everyone on one account, in seconds. Default 60.
    pub max_account_wait_secs: u64,
    /// A count is forgotten after this long without a failure, in seconds. Default 3600.
    pub forget_after_secs: u64,
}

impl Default for LoginThrottleConfig {
    fn default() -> Self {
        Self { free_per_address: 5, max_wait_secs: 900, free_per_account: 50, max_account_wait_secs: 60, forget_after_secs: 3600 }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    until: Option<Instant>,
}

/// Entries kept at most per map; past that, the oldest quiet ones go first.
const MAX_ENTRIES: usize = 100_000;

/// The throttle of one node.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    config: LoginThrottleConfig,
    by_address: Mutex<HashMap<(String, IpAddr), Failures>>,
    by_account: Mutex<HashMap<String, Failures>>,
}

/// An attempt refused for this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled(pub Duration);

impl Throttled {
    /// Whole seconds to wait, rounded up (for `Retry-After`).
    pub fn secs(self) -> u64 {
        self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)
    }
}

fn wait(count: u32, free: u32, cap: Duration) -> Option<Duration> {
    let over = count.checked_sub(free)?;
    if over == 0 {
        return None;
    }
    let secs = 1u64.checked_shl(over - 1).unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(cap))
}

impl LoginThrottle {
    /// A throttle with these settings.
    pub fn new(config: LoginThrottleConfig) -> Self {
        Self { config, by_address: Mutex::default(), by_account: Mutex::default() }
    }

    fn forget(&self) -> Duration {
        Duration::from_secs(self.config.forget_after_secs)
    }

    /// Whether an attempt on `account` (the folded username) from `ip` may go ahead now.
    pub fn check(&self, account: &str, ip: IpAddr) -> Result<(), Throttled> {
        let now = Instant::now();
        let pending = |f: Option<&Failures>| {
            f.filter(|f| now.duration_since(f.last) < self.forget()).and_then(|f| f.until).filter(|u| *u > now).map(|u| u - now)
        };
        let address = pending(self.by_address.lock().get(&(account.to_owned(), ip)));
        let everyone = pending(self.by_account.lock().get(account));
        match address.into_iter().chain(everyone).max() {
            Some(d) => Err(Throttled(d)),
            None => Ok(()),
        }
    }

    /// A failed attempt; returns the wait it starts, if any.
    pub fn failed(&self, account: &str, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let forget = self.forget();
        let bump = |f: &mut Failures, free: u32, cap: Duration| {
            if now.duration_since(f.last) >= forget {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
            let w = wait(f.count, free, cap);
            f.until = w.map(|w| now + w);
            w
        };
        let fresh = Failures { count: 0, last: now, until: None };
        let a = {
            let mut map = self.by_address.lock();
            if map.len() >= MAX_ENTRIES {
                prune(&mut map, now, forget);
            }
            let f = map.entry((account.to_owned(), ip)).or_insert(fresh);
            bump(f, self.config.free_per_address, Duration::from_secs(self.config.max_wait_secs))
        };
        let b = {
            let mut map = self.by_account.lock();
            if map.len() >= MAX_ENTRIES {
                prune(&mut map, now, forget);
            }
            let f = map.entry(account.to_owned()).or_insert(fresh);
            bump(f, self.config.free_per_account, Duration::from_secs(self.config.max_account_wait_secs))
        };
        a.into_iter().chain(b).max()
    }

    /// A successful sign-in: the counts of this address and of the account are cleared.
    pub fn succeeded(&self, account: &str, ip: IpAddr) {
        self.by_address.lock().remove(&(account.to_owned(), ip));
        self.by_account.lock().remove(account);
    }

    /// Drops counts nobody added to for `forget_after_secs` (the housekeeping job).
    pub fn shrink(&self) {
        let now = Instant::now();
        let forget = self.forget();
        prune(&mut self.by_address.lock(), now, forget);
        prune(&mut self.by_account.lock(), now, forget);
    }
}

fn prune<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Failures>, now: Instant, forget: Duration) {
    map.retain(|_, f| now.duration_since(f.last) < forget || f.until.is_some_and(|u| u > now));
    if map.len() >= MAX_ENTRIES {
        // Still full of live counts: drop those not waiting (the ones that matter least).
        map.retain(|_, f| f.until.is_some_and(|u| u > now));
    }
    map.shrink_to_fit();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[tokio::test(start_paused = true)]
    async fn waits_double_per_address_and_a_success_clears_them() {
        let t = LoginThrottle::new(LoginThrottleConfig::default());
        for _ in 0..5 {
            assert_eq!(t.check("ann", ip(1)), Ok(()));
            assert_eq!(t.failed("ann", ip(1)), None);
        }
        assert_eq!(t.failed("ann", ip(1)), Some(Duration::from_secs(1)));
        assert_eq!(t.check("ann", ip(1)), Err(Throttled(Duration::from_secs(1))));
        // Another address is not slowed by this one's failures.
        assert_eq!(t.check("ann", ip(2)), Ok(()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(t.check("ann", ip(1)), Ok(()));
        assert_eq!(t.failed("ann", ip(1)), Some(Duration::from_secs(2)));
        assert_eq!(t.failed("ann", ip(1)), Some(Duration::from_secs(4)));
        assert_eq!(t.check("ann", ip(1)).map_err(Throttled::secs), Err(4));
        for _ in 0..20 {
            t.failed("ann", ip(1));
        }
        assert_eq!(t.check("ann", ip(1)), Err(Throttled(Duration::from_secs(900))), "capped");
        tokio::time::advance(Duration::from_secs(900)).await;
        t.succeeded("ann", ip(1));
        assert_eq!(t.check("ann", ip(1)), Ok(()));
        assert_eq!(t.failed("ann", ip(1)), None, "counting starts over");
    }

    #[tokio::test(start_paused = true)]
    async fn many_addresses_slow_the_account_for_a_minute_at_most_and_counts_are_forgotten() {
        let t = LoginThrottle::new(LoginThrottleConfig::default());
        for n in 0..60u8 {
            t.failed("bob", ip(n));
        }
        let Err(Throttled(d)) = t.check("bob", ip(200)) else { panic!("the account is slowed") };
        assert!(d <= Duration::from_secs(60), "{d:?}");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(t.check("bob", ip(200)), Ok(()), "never closed for good");
        // An hour without failures: forgotten.
        tokio::time::advance(Duration::from_secs(3600)).await;
        t.shrink();
        assert!(t.by_account.lock().is_empty());
        assert!(t.by_address.lock().is_empty());
        assert_eq!(t.failed("bob", ip(1)), None);
    }
}
