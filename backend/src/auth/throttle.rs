//! Login throttling: slows password guessing against an account without locking its owner
//! out for good. Failures are counted per account *and address*, and per account alone:
//!
//! - From one address (an IPv6 address counts by its /64), the first
//!   [`LoginThrottleConfig::free_per_address`] failures cost nothing; each one after doubles a
//!   wait (1 s, 2 s, 4 s…) up to `max_wait_secs`. An attempt during the wait is refused (429
//!   with `Retry-After`) before any password is checked, so a guesser gets a handful of tries
//!   an hour. Once the free failures are spent, an attempt holds the address's turn while it
//!   runs: attempts sent side by side are refused, not checked in parallel.
//! - Across addresses (a guesser with many), the first `free_per_account` failures cost
//!   nothing, then the same doubling, capped lower (`max_account_wait_secs`). This wait does
//!   not apply to an address the account signed in from before (remembered for
//!   `forget_after_secs` after its last success, at most [`MAX_ENTRIES`]), so a guesser with
//!   many addresses slows strangers, never the owner at home.
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
    /// Longest wait on one account for addresses it never signed in from, in seconds. Default
    /// 60.
    pub max_account_wait_secs: u64,
    /// A count is forgotten after this long without a failure, and an address the account
    /// signed in from after this long without a success, in seconds. Default 3600 (counts);
    /// the addresses are kept 30 times as long.
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

/// Entries kept at most per map; past that, the ones that matter least go first.
pub const MAX_ENTRIES: usize = 100_000;

/// How long an attempt holds its address's turn once the free failures are spent (until it
/// fails, which starts the next wait, or succeeds).
const TURN: Duration = Duration::from_secs(5);

use crate::ratelimit::client;

/// The throttle of one node.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    config: LoginThrottleConfig,
    by_address: Mutex<HashMap<(String, IpAddr), Failures>>,
    by_account: Mutex<HashMap<String, Failures>>,
    /// Where each account signed in from, and when last.
    known: Mutex<HashMap<(String, IpAddr), Instant>>,
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
        Self { config, by_address: Mutex::default(), by_account: Mutex::default(), known: Mutex::default() }
    }

    fn forget(&self) -> Duration {
        Duration::from_secs(self.config.forget_after_secs)
    }

    fn remember(&self) -> Duration {
        self.forget().saturating_mul(30)
    }

    /// Whether an attempt on `account` (the folded username) from `ip` may go ahead now. Past
    /// the free failures, a permitted attempt holds the address's turn until it fails or
    /// succeeds (or a few seconds pass).
    pub fn check(&self, account: &str, ip: IpAddr) -> Result<(), Throttled> {
        let now = Instant::now();
        let key = (account.to_owned(), client(ip));
        let forget = self.forget();
        let pending = |f: &Failures| {
            Some(f).filter(|f| now.duration_since(f.last) < forget).and_then(|f| f.until).filter(|u| *u > now).map(|u| u - now)
        };
        let known = self.known.lock().get(&key).is_some_and(|seen| now.duration_since(*seen) < self.remember());
        let everyone = if known { None } else { self.by_account.lock().get(account).and_then(pending) };
        let mut by_address = self.by_address.lock();
        let address = by_address.get(&key).and_then(pending);
        if let Some(d) = address.into_iter().chain(everyone).max() {
            return Err(Throttled(d));
        }
        if let Some(f) = by_address.get_mut(&key) {
            if f.count >= self.config.free_per_address && now.duration_since(f.last) < forget {
                f.until = Some(now + TURN);
            }
        }
        Ok(())
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
                evict(&mut map, now, forget, self.config.free_per_address);
            }
            let f = map.entry((account.to_owned(), client(ip))).or_insert(fresh);
            bump(f, self.config.free_per_address, Duration::from_secs(self.config.max_wait_secs))
        };
        let b = {
            let mut map = self.by_account.lock();
            if map.len() >= MAX_ENTRIES {
                evict(&mut map, now, forget, self.config.free_per_account);
            }
            let f = map.entry(account.to_owned()).or_insert(fresh);
            bump(f, self.config.free_per_account, Duration::from_secs(self.config.max_account_wait_secs))
        };
        a.into_iter().chain(b).max()
    }

    /// A successful sign-in: the counts of this address and of the account are cleared, and
    /// the address is remembered as the account's.
    pub fn succeeded(&self, account: &str, ip: IpAddr) {
        let key = (account.to_owned(), client(ip));
        self.by_address.lock().remove(&key);
        self.by_account.lock().remove(account);
        let now = Instant::now();
        let mut known = self.known.lock();
        if known.len() >= MAX_ENTRIES && !known.contains_key(&key) {
            let remember = self.remember();
            known.retain(|_, seen| now.duration_since(*seen) < remember);
            if known.len() >= MAX_ENTRIES {
                // Still full: the oldest half goes.
                let mut ages: Vec<Instant> = known.values().copied().collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                known.retain(|_, seen| *seen > cut);
            }
        }
        known.insert(key, now);
    }

    /// Drops counts nobody added to for `forget_after_secs`, and addresses not signed in from
    /// for 30 times that (the housekeeping job).
    pub fn shrink(&self) {
        let now = Instant::now();
        let forget = self.forget();
        let live = |f: &mut Failures| now.duration_since(f.last) < forget || f.until.is_some_and(|u| u > now);
        {
            let mut map = self.by_address.lock();
            map.retain(|_, f| live(f));
            map.shrink_to_fit();
        }
        {
            let mut map = self.by_account.lock();
            map.retain(|_, f| live(f));
            map.shrink_to_fit();
        }
        let remember = self.remember();
        let mut known = self.known.lock();
        known.retain(|_, seen| now.duration_since(*seen) < remember);
        known.shrink_to_fit();
    }
}

/// Makes room in a full map: counts forgotten or still free go first (a guesser filling the
/// map with names cannot wipe a count that holds a wait), then those not waiting.
fn evict<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Failures>, now: Instant, forget: Duration, free: u32) {
    map.retain(|_, f| now.duration_since(f.last) < forget && (f.count >= free || f.until.is_some_and(|u| u > now)));
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, f| f.until.is_some_and(|u| u > now));
    }
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
    async fn an_attempt_holds_the_turn_and_an_ipv6_slash_64_is_one_address() {
        let t = LoginThrottle::new(LoginThrottleConfig::default());
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, last]);
        for n in 0..5 {
            assert_eq!(t.check("cy", v6(n)), Ok(()));
            t.failed("cy", v6(n));
        }
        // The /64 spent its free failures: another address in it waits its turn.
        assert_eq!(t.check("cy", v6(100)), Ok(()));
        assert_eq!(t.check("cy", v6(101)), Err(Throttled(TURN)), "side by side: refused");
        assert_eq!(t.failed("cy", v6(100)), Some(Duration::from_secs(1)));
        assert!(t.check("cy", v6(102)).is_err());
        // A success ends the turn at once.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(t.check("cy", v6(103)), Ok(()));
        t.succeeded("cy", v6(103));
        assert_eq!(t.check("cy", v6(104)), Ok(()));
        assert_eq!(t.check("cy", v6(105)), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn many_addresses_never_slow_the_owner_at_an_address_it_signed_in_from() {
        let t = LoginThrottle::new(LoginThrottleConfig::default());
        t.succeeded("dee", ip(1));
        for n in 10..80u8 {
            t.failed("dee", ip(n));
        }
        assert!(t.check("dee", ip(200)).is_err(), "a stranger waits");
        assert_eq!(t.check("dee", ip(1)), Ok(()), "the owner at home does not");
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
        assert!(t.known.lock().is_empty());
        assert_eq!(t.failed("bob", ip(1)), None);
    }
}
