//! The live-session cache: which login sessions exist and the user behind each, so that an
//! authenticated request needs no database read.
//!
//! Revocation stays immediate. The cache is a sink of the event bus: it forgets a session when
//! that session's `SESSION_REVOKED` event passes (logout, revoke, device removal, password
//! change, refresh-token reuse, expiry), and a user when their `USER_UPDATE` passes. Every
//! path that ends a session or changes a user publishes one of these (the gateway needs them
//! too). A database read that began before an invalidation is not cached (an epoch counter),
//! so a session revoked while its lookup was in flight cannot come back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use copains_client_core::api::User;
use copains_client_core::gateway::{event_name, SessionRevoked};
use copains_client_core::{SessionId, UserId};
use parking_lot::RwLock;

use crate::bus::{BusEvent, EventSink};

/// Sessions (and as many users) kept before the cache is emptied.
const SESSIONS_MAX: usize = 100_000;

/// How long a user read from the database is trusted without another read: a change made
/// where no bus event reaches this node (the `copains admin` command line on the database
/// itself) takes effect within this time.
pub const USER_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// A user as the request path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedUser {
    /// The public part.
    pub user: User,
    /// Whether the account is disabled.
    pub disabled: bool,
}

#[derive(Debug, Default)]
struct Maps {
    sessions: HashMap<SessionId, UserId>,
    /// Each user with when it was read.
    users: HashMap<UserId, (CachedUser, Instant)>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct SessionCache {
    maps: RwLock<Maps>,
    epoch: AtomicU64,
}

impl SessionCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Take this before reading a session from the database, and give it to [`Self::insert`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The user of a live session, if cached (and the session is `user`'s).
    pub fn get(&self, session: SessionId, user: UserId) -> Option<CachedUser> {
        self.get_at(session, user, Instant::now())
    }

    /// [`Self::get`] as of `now`: a user read more than [`USER_TTL`] before is read again.
    fn get_at(&self, session: SessionId, user: UserId, now: Instant) -> Option<CachedUser> {
        let maps = self.maps.read();
        if maps.sessions.get(&session) != Some(&user) {
            return None;
        }
        maps.users.get(&user).filter(|(_, at)| now.saturating_duration_since(*at) <= USER_TTL).map(|(u, _)| u.clone())
    }

    /// Caches a session read from the database, unless something was invalidated since
    /// `epoch` was taken.
    pub fn insert(&self, session: SessionId, record: CachedUser, epoch: u64) {
        let mut maps = self.maps.write();
        // Compared under the write lock, which invalidations also take: no interleaving.
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        if maps.sessions.len() >= SESSIONS_MAX || maps.users.len() >= SESSIONS_MAX {
            maps.sessions.clear();
            maps.users.clear();
        }
        maps.sessions.insert(session, record.user.id);
        maps.users.insert(record.user.id, (record, Instant::now()));
    }

    /// Forgets a session (it ended).
    pub fn forget_session(&self, session: SessionId) {
        let mut maps = self.maps.write();
        maps.sessions.remove(&session);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Forgets a user (their profile or status changed).
    pub fn forget_user(&self, user: UserId) {
        let mut maps = self.maps.write();
        maps.users.remove(&user);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Sessions cached now.
    pub fn len(&self) -> usize {
        self.maps.read().sessions.len()
    }

    /// Whether no session is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl EventSink for SessionCache {
    fn deliver(&self, event: &BusEvent) {
        match &*event.name {
            // Published on the user's topic and on the session's: act once.
            event_name::SESSION_REVOKED if event.topic.as_session().is_none() => {}
            event_name::SESSION_REVOKED => match serde_json::from_str::<SessionRevoked>(&event.payload) {
                Ok(revoked) => self.forget_session(revoked.session_id),
                Err(e) => {
                    // Unreadable: forget everything rather than keep a revoked session alive.
                    tracing::error!(error = %e, "SESSION_REVOKED event unreadable; session cache emptied");
                    let mut maps = self.maps.write();
                    maps.sessions.clear();
                    self.epoch.fetch_add(1, Ordering::SeqCst);
                }
            },
            event_name::USER_UPDATE => match event.topic.as_user() {
                Some(user) => self.forget_user(user),
                None => tracing::warn!(topic = %event.topic, "USER_UPDATE outside a user topic"),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Topic;
    use copains_client_core::api::PlatformRole;

    fn user(id: i64, name: &str) -> CachedUser {
        CachedUser {
            user: User {
                id: UserId(id),
                username: name.into(),
                display_name: None,
                status_text: None,
                platform_role: PlatformRole::Member,
                created_at: time::OffsetDateTime::UNIX_EPOCH,
                guest_expires_at: None,
            },
            disabled: false,
        }
    }

    #[test]
    fn revocation_and_user_updates_from_the_bus_invalidate() {
        let cache = SessionCache::new();
        cache.insert(SessionId(10), user(1, "alice"), cache.epoch());
        cache.insert(SessionId(11), user(1, "alice"), cache.epoch());
        assert_eq!(cache.get(SessionId(10), UserId(1)).map(|u| u.user.username), Some("alice".into()));
        assert_eq!(cache.get(SessionId(10), UserId(2)), None, "another user's session");

        let revoked = SessionRevoked { session_id: SessionId(10), user_id: UserId(1) };
        cache.deliver(&BusEvent::new(Topic::session(SessionId(10)), event_name::SESSION_REVOKED, &revoked).expect("event"));
        assert_eq!(cache.get(SessionId(10), UserId(1)), None, "revoked");
        assert!(cache.get(SessionId(11), UserId(1)).is_some(), "the other session lives");

        cache.deliver(&BusEvent::new(Topic::user(UserId(1)), event_name::USER_UPDATE, &user(1, "alice").user).expect("event"));
        assert_eq!(cache.get(SessionId(11), UserId(1)), None, "the user is read again after a change");
    }

    #[test]
    fn a_user_is_read_again_after_a_while() {
        let cache = SessionCache::new();
        cache.insert(SessionId(10), user(1, "alice"), cache.epoch());
        let now = Instant::now();
        assert!(cache.get_at(SessionId(10), UserId(1), now).is_some());
        assert!(cache.get_at(SessionId(10), UserId(1), now + USER_TTL / 2).is_some());
        // A change no event told this node of (the command line on the database) is read then.
        assert_eq!(cache.get_at(SessionId(10), UserId(1), now + USER_TTL + std::time::Duration::from_secs(1)), None);
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let cache = SessionCache::new();
        let before = cache.epoch();
        // The session is revoked while its database read is in flight...
        cache.forget_session(SessionId(7));
        // ...so what that read found must not be cached.
        cache.insert(SessionId(7), user(3, "carol"), before);
        assert_eq!(cache.get(SessionId(7), UserId(3)), None);
        cache.insert(SessionId(7), user(3, "carol"), cache.epoch());
        assert!(cache.get(SessionId(7), UserId(3)).is_some());
    }
}
