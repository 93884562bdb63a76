//! In-memory rate limits (GCRA from `governor`): per client IP on the auth routes and the
//! gateway's IDENTIFY/RESUME (an IPv6 address by its /64), per user on everything authenticated. A distributed variant over
//! Redis replaces these in scale-out.

use std::net::IpAddr;
use std::num::NonZeroU32;

use copains_client_core::UserId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::RateLimits;
use crate::error::ApiError;

/// The key of a client address: an IPv4 address; an IPv6 address by its /64 (what one host or
/// household is given: the rest changes at will, and must not buy a fresh allowance).
pub(crate) fn client(ip: IpAddr) -> IpAddr {
    match crate::client_ip::canonical(ip) {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
        v4 => v4,
    }
}

/// The limiters of one node.
pub struct RateLimiters {
    auth: DefaultKeyedRateLimiter<IpAddr>,
    user_writes: DefaultKeyedRateLimiter<UserId>,
    messages: DefaultKeyedRateLimiter<UserId>,
    bundles: DefaultKeyedRateLimiter<UserId>,
    channel_keys: DefaultKeyedRateLimiter<UserId>,
    queue_reads: DefaultKeyedRateLimiter<UserId>,
    deletes: DefaultKeyedRateLimiter<UserId>,
    user_lookups: DefaultKeyedRateLimiter<UserId>,
    gateway_acks: DefaultKeyedRateLimiter<UserId>,
    identify: DefaultKeyedRateLimiter<UserId>,
    identify_ip: DefaultKeyedRateLimiter<IpAddr>,
    typing: DefaultKeyedRateLimiter<UserId>,
    read_marks: DefaultKeyedRateLimiter<UserId>,
    presence: DefaultKeyedRateLimiter<UserId>,
    clock: DefaultClock,
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    let per_minute = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl RateLimiters {
    /// Limiters with the configured quotas.
    pub fn new(cfg: &RateLimits) -> Self {
        Self {
            auth: DefaultKeyedRateLimiter::keyed(quota(cfg.auth_per_minute, cfg.auth_burst)),
            user_writes: DefaultKeyedRateLimiter::keyed(quota(cfg.user_writes_per_minute, cfg.user_writes_burst)),
            messages: DefaultKeyedRateLimiter::keyed(quota(cfg.messages_per_minute, cfg.messages_burst)),
            bundles: DefaultKeyedRateLimiter::keyed(quota(cfg.bundle_fetches_per_minute, cfg.bundle_fetches_burst)),
            channel_keys: DefaultKeyedRateLimiter::keyed(quota(cfg.channel_key_claims_per_minute, cfg.channel_key_claims_burst)),
            queue_reads: DefaultKeyedRateLimiter::keyed(quota(cfg.queue_reads_per_minute, cfg.queue_reads_burst)),
            deletes: DefaultKeyedRateLimiter::keyed(quota(cfg.deletes_per_minute, cfg.deletes_burst)),
            user_lookups: DefaultKeyedRateLimiter::keyed(quota(cfg.user_lookups_per_minute, cfg.user_lookups_burst)),
            gateway_acks: DefaultKeyedRateLimiter::keyed(quota(cfg.gateway_acks_per_minute, cfg.gateway_acks_burst)),
            identify: DefaultKeyedRateLimiter::keyed(quota(cfg.identify_per_minute, cfg.identify_burst)),
            identify_ip: DefaultKeyedRateLimiter::keyed(quota(cfg.identify_per_ip_per_minute, cfg.identify_per_ip_burst)),
            typing: DefaultKeyedRateLimiter::keyed(quota(cfg.typing_per_minute, cfg.typing_burst)),
            read_marks: DefaultKeyedRateLimiter::keyed(quota(cfg.read_marks_per_minute, cfg.read_marks_burst)),
            presence: DefaultKeyedRateLimiter::keyed(quota(cfg.presence_per_minute, cfg.presence_burst)),
            clock: DefaultClock::default(),
        }
    }

    /// One auth attempt from `ip`.
    pub fn auth(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.auth
            .check_key(&client(ip))
            .map_err(|not_until| ApiError::RateLimited(not_until.wait_time_from(self.clock.now()).as_secs() + 1))
    }

    /// One write by `user`.
    pub fn user_write(&self, user: UserId) -> Result<(), ApiError> {
        self.check(&self.user_writes, user)
    }

    /// One message sent by `user`.
    pub fn message(&self, user: UserId) -> Result<(), ApiError> {
        self.check(&self.messages, user)
    }

    /// One prekey bundle fetch by `user` (bounds how fast one-time prekeys can be drained).
    pub fn bundle_fetch(&self, user: UserId) -> Result<(), ApiError> {
        self.check(&self.bundles, user)
    }

    /// `cost` units of channel key claims by `user` (a device claimed, or ten device lists
    /// read). A cost above the burst is never allowed.
    pub fn channel_keys(&self, user: UserId, cost: usize) -> Result<(), ApiError> {
        let cost = NonZeroU32::new(u32::try_from(cost.max(1)).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match self.channel_keys.check_key_n(&user, cost) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(ApiError::RateLimited(not_until.wait_time_from(self.clock.now()).as_secs() + 1)),
            Err(_) => Err(ApiError::RateLimited(60)),
        }
    }

    /// One queue page read by `user`.
    pub fn queue_read(&self, user: UserId) -> Result<(), ApiError> {
        self.check(&self.queue_reads, user)
    }

    /// One `DELETE` request by `user`.
    pub fn delete(&self, user: UserId) -> Result<(), ApiError> {
        self.check(&self.deletes, user)
    }

    /// One lookup of another user's profile by `user` (by username or by id).
    pub fn user_lookup(&self, user: UserId) -> Result<(), ApiError> {
        self.check(&self.user_lookups, user)
    }

    /// One gateway `ACK` frame from `user`.
    pub fn gateway_ack(&self, user: UserId) -> Result<(), ApiError> {
        self.check(&self.gateway_acks, user)
    }

    /// One gateway IDENTIFY or RESUME from `ip`, before its token is checked.
    pub fn identify_from(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.identify_ip
            .check_key(&client(ip))
            .map_err(|not_until| ApiError::RateLimited(not_until.wait_time_from(self.clock.now()).as_secs() + 1))
    }

    /// One gateway IDENTIFY or RESUME by `user` (once the token is checked).
    pub fn identify(&self, user: UserId) -> Result<(), ApiError> {
        self.check(&self.identify, user)
    }

    /// One typing indicator from `user`.
    pub fn typing(&self, user: UserId) -> Result<(), ApiError> {
        self.check(&self.typing, user)
    }

    /// One read mark from `user`.
    pub fn read_mark(&self, user: UserId) -> Result<(), ApiError> {
        self.check(&self.read_marks, user)
    }

    /// One presence change from `user` (an `ACTIVITY` frame or a new status).
    pub fn presence(&self, user: UserId) -> Result<(), ApiError> {
        self.check(&self.presence, user)
    }

    fn check(&self, limiter: &DefaultKeyedRateLimiter<UserId>, user: UserId) -> Result<(), ApiError> {
        limiter
            .check_key(&user)
            .map_err(|not_until| ApiError::RateLimited(not_until.wait_time_from(self.clock.now()).as_secs() + 1))
    }

    /// Forgets idle keys (called periodically).
    pub fn shrink(&self) {
        for limiter in [&self.auth, &self.identify_ip] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        for limiter in [
            &self.user_writes,
            &self.messages,
            &self.bundles,
            &self.channel_keys,
            &self.queue_reads,
            &self.deletes,
            &self.user_lookups,
            &self.gateway_acks,
            &self.identify,
            &self.typing,
            &self.read_marks,
            &self.presence,
        ] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_slash_64_is_one_client_for_the_auth_limits() {
        let cfg = RateLimits {
            auth_burst: 1,
            auth_per_minute: 1,
            identify_per_ip_burst: 1,
            identify_per_ip_per_minute: 1,
            ..RateLimits::default()
        };
        let limits = RateLimiters::new(&cfg);
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert!(limits.auth(a).is_ok());
        assert!(limits.auth(b).is_err(), "the same /64");
        assert!(limits.auth(other).is_ok(), "another /64");
        assert!(limits.identify_from(a).is_ok());
        assert!(limits.identify_from(b).is_err());
        let v4: IpAddr = "192.0.2.7".parse().expect("ip");
        assert!(limits.auth(v4).is_ok());
        assert!(limits.auth("192.0.2.8".parse().expect("ip")).is_ok(), "IPv4 addresses each count");
    }
}
