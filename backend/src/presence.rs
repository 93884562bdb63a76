//! Presence: who is connected, and how each user is seen, as plain state driven by the gateway's
//! session events and `now` (Unix ms).
//!
//! A user is seen `offline` without a gateway session, and with one as they chose: `dnd`,
//! `idle`, `invisible` (seen `offline`), or `online`, which reads `idle` while every session
//! of theirs reports [`Activity`](copains_client_core::social::Activity) idle. A session whose
//! connection dropped still counts for [`PresenceConfig::grace_ms`]: a RESUME within it changes
//! nothing anyone sees, so a flaky link does not flap. A closed connection (the tab closed,
//! a logout) counts no more at once.
//!
//! Changes are not sent as they happen: [`PresenceTracker::tick`] hands back, once per flush,
//! the users whose visible presence differs from what was last published (each once, latest
//! state), and the gateway sends each recipient one `PRESENCE_UPDATE` holding all of theirs.
//! A user who goes offline and comes back within one flush is not announced at all.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use copains_client_core::social::{Presence, PresenceSettings, PresenceStatus};
use copains_client_core::UserId;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Presence timings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// How long a dropped connection's session still counts as connected (ms).
    pub grace_ms: i64,
    /// How often changes are gathered and sent (ms).
    pub flush_ms: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { grace_ms: 15_000, flush_ms: 1_000 }
    }
}

#[derive(Debug, Clone, Copy)]
struct Session {
    idle: bool,
    /// When its connection dropped (it counts until `grace_ms` after).
    dropped_at: Option<i64>,
}

#[derive(Debug)]
struct Entry {
    sessions: HashMap<Arc<str>, Session>,
    settings: PresenceSettings,
    /// What others last heard.
    published: (PresenceStatus, Option<copains_client_core::social::CustomStatus>),
}

impl Entry {
    fn visible(&self, now: i64) -> (PresenceStatus, Option<copains_client_core::social::CustomStatus>) {
        if self.sessions.is_empty() {
            return (PresenceStatus::Offline, None);
        }
        let status = match self.settings.status {
            PresenceStatus::Invisible | PresenceStatus::Offline => return (PresenceStatus::Offline, None),
            PresenceStatus::Online if self.sessions.values().all(|s| s.idle) => PresenceStatus::Idle,
            other => other,
        };
        let custom = self.settings.custom_status.clone().filter(|c| c.expires_at.is_none_or(|e| e > now));
        (status, custom)
    }
}

#[derive(Debug, Default)]
struct Inner {
    users: HashMap<UserId, Entry>,
    dirty: BTreeSet<UserId>,
}

/// The presence of every user connected to this node.
#[derive(Debug)]
pub struct PresenceTracker {
    config: PresenceConfig,
    inner: Mutex<Inner>,
}

impl PresenceTracker {
    /// An empty tracker.
    pub fn new(config: PresenceConfig) -> Self {
        Self { config, inner: Mutex::new(Inner::default()) }
    }

    /// The timings.
    pub fn config(&self) -> &PresenceConfig {
        &self.config
    }

    /// A gateway session of `user` identified (or resumed after it stopped counting), with the
    /// user's stored choice (read before: a user already here keeps the choice they hold, which
    /// [`Self::settings_changed`] kept current).
    pub fn connected(&self, user: UserId, session: Arc<str>, settings: PresenceSettings) {
        let mut inner = self.inner.lock();
        let entry = inner.users.entry(user).or_insert_with(|| Entry {
            sessions: HashMap::new(),
            settings,
            published: (PresenceStatus::Offline, None),
        });
        entry.sessions.insert(session, Session { idle: false, dropped_at: None });
        inner.dirty.insert(user);
    }

    /// A session resumed: true if it still counted (nothing else to do), false if the caller
    /// must call [`Self::connected`] again.
    pub fn resumed(&self, user: UserId, session: &str) -> bool {
        let mut inner = self.inner.lock();
        match inner.users.get_mut(&user).and_then(|e| e.sessions.get_mut(session)) {
            Some(s) => {
                s.dropped_at = None;
                true
            }
            None => false,
        }
    }

    /// A session's connection dropped; it may resume.
    pub fn dropped(&self, user: UserId, session: &str, now: i64) {
        if let Some(s) = self.inner.lock().users.get_mut(&user).and_then(|e| e.sessions.get_mut(session)) {
            s.dropped_at = Some(now);
        }
    }

    /// A session ended for good.
    pub fn ended(&self, user: UserId, session: &str) {
        let mut inner = self.inner.lock();
        if inner.users.get_mut(&user).is_some_and(|e| e.sessions.remove(session).is_some()) {
            inner.dirty.insert(user);
        }
    }

    /// A session reports its user idle or back.
    pub fn activity(&self, user: UserId, session: &str, idle: bool) {
        let mut inner = self.inner.lock();
        if let Some(s) = inner.users.get_mut(&user).and_then(|e| e.sessions.get_mut(session)) {
            if s.idle != idle {
                s.idle = idle;
                inner.dirty.insert(user);
            }
        }
    }

    /// The user chose another status or custom status.
    pub fn settings_changed(&self, user: UserId, settings: PresenceSettings) {
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.users.get_mut(&user) {
            entry.settings = settings;
            inner.dirty.insert(user);
        }
    }

    /// How `user` is seen now.
    pub fn presence(&self, user: UserId, now: i64) -> Presence {
        let inner = self.inner.lock();
        let (status, custom_status) = inner.users.get(&user).map_or((PresenceStatus::Offline, None), |e| e.visible(now));
        Presence { user_id: user, status, custom_status }
    }

    /// Whether `user` has a session here (connected, or dropped within the grace).
    pub fn is_connected(&self, user: UserId) -> bool {
        self.inner.lock().users.get(&user).is_some_and(|e| !e.sessions.is_empty())
    }

    /// Lets dropped sessions past the grace go, ends custom statuses past their time, and
    /// returns the presences that differ from what was last published (now published).
    pub fn tick(&self, now: i64) -> Vec<Presence> {
        let mut inner = self.inner.lock();
        let Inner { users, dirty } = &mut *inner;
        let grace = self.config.grace_ms;
        for (user, entry) in users.iter_mut() {
            let before = entry.sessions.len();
            entry.sessions.retain(|_, s| s.dropped_at.is_none_or(|at| now - at < grace));
            let expired = entry.settings.custom_status.as_ref().is_some_and(|c| c.expires_at.is_some_and(|e| e <= now));
            if expired {
                entry.settings.custom_status = None;
            }
            if before != entry.sessions.len() || expired {
                dirty.insert(*user);
            }
        }
        let mut changed = Vec::new();
        for user in std::mem::take(dirty) {
            let Some(entry) = users.get_mut(&user) else { continue };
            let visible = entry.visible(now);
            if visible != entry.published {
                entry.published = visible.clone();
                changed.push(Presence { user_id: user, status: visible.0, custom_status: visible.1 });
            }
            if entry.sessions.is_empty() {
                users.remove(&user);
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use copains_client_core::social::CustomStatus;

    fn tracker() -> PresenceTracker {
        PresenceTracker::new(PresenceConfig { grace_ms: 15_000, flush_ms: 1_000 })
    }

    fn statuses(changes: &[Presence]) -> Vec<(i64, PresenceStatus)> {
        changes.iter().map(|p| (p.user_id.0, p.status)).collect()
    }

    #[test]
    fn online_while_any_session_is_active_and_offline_when_the_last_ends() {
        let t = tracker();
        let ann = UserId(1);
        t.connected(ann, "a".into(), PresenceSettings::default());
        t.connected(ann, "b".into(), PresenceSettings::default());
        assert_eq!(statuses(&t.tick(0)), [(1, PresenceStatus::Online)]);
        t.activity(ann, "a", true);
        assert!(t.tick(1).is_empty(), "one of two sessions idle: still online");
        t.activity(ann, "b", true);
        assert_eq!(statuses(&t.tick(2)), [(1, PresenceStatus::Idle)]);
        t.activity(ann, "a", false);
        assert_eq!(statuses(&t.tick(3)), [(1, PresenceStatus::Online)]);
        t.ended(ann, "a");
        assert_eq!(statuses(&t.tick(4)), [(1, PresenceStatus::Idle)], "the idle session is all that is left");
        t.ended(ann, "b");
        assert_eq!(statuses(&t.tick(5)), [(1, PresenceStatus::Offline)]);
        assert!(!t.is_connected(ann));
    }

    #[test]
    fn a_dropped_connection_counts_until_the_grace_ends_and_a_resume_within_it_changes_nothing() {
        let t = tracker();
        let ann = UserId(1);
        t.connected(ann, "a".into(), PresenceSettings::default());
        t.tick(0);
        t.dropped(ann, "a", 1_000);
        assert!(t.tick(10_000).is_empty());
        assert!(t.resumed(ann, "a"));
        assert!(t.tick(20_000).is_empty(), "resumed within the grace: no flap");
        t.dropped(ann, "a", 30_000);
        assert!(t.tick(44_999).is_empty());
        assert_eq!(statuses(&t.tick(45_000)), [(1, PresenceStatus::Offline)]);
        assert!(!t.is_connected(ann));
        assert!(!t.resumed(ann, "a"), "past the grace a resume connects again");
    }

    #[test]
    fn changes_within_one_flush_are_coalesced_and_a_return_to_the_published_state_is_not_sent() {
        let t = tracker();
        let ann = UserId(1);
        t.connected(ann, "a".into(), PresenceSettings::default());
        t.tick(0);
        t.ended(ann, "a");
        t.connected(ann, "b".into(), PresenceSettings::default());
        assert!(t.tick(1).is_empty(), "offline and back within one flush is not announced");
        t.activity(ann, "b", true);
        t.activity(ann, "b", false);
        t.activity(ann, "b", true);
        assert_eq!(statuses(&t.tick(2)), [(1, PresenceStatus::Idle)], "one change, the latest");
    }

    #[test]
    fn choices_rule_over_activity_and_invisible_reads_offline() {
        let t = tracker();
        let ann = UserId(1);
        t.connected(ann, "a".into(), PresenceSettings { status: PresenceStatus::Invisible, custom_status: None });
        assert!(t.tick(0).is_empty(), "an invisible user's arrival is not announced");
        assert_eq!(t.presence(ann, 0).status, PresenceStatus::Offline);
        t.settings_changed(ann, PresenceSettings { status: PresenceStatus::Dnd, custom_status: None });
        t.activity(ann, "a", true);
        assert_eq!(statuses(&t.tick(1)), [(1, PresenceStatus::Dnd)], "dnd stays dnd when idle");
        t.settings_changed(ann, PresenceSettings { status: PresenceStatus::Online, custom_status: None });
        assert_eq!(statuses(&t.tick(2)), [(1, PresenceStatus::Idle)]);
    }

    #[test]
    fn a_custom_status_ends_at_its_time() {
        let t = tracker();
        let ann = UserId(1);
        let custom = CustomStatus { text: "lunch".into(), expires_at: Some(60_000) };
        t.connected(ann, "a".into(), PresenceSettings { status: PresenceStatus::Online, custom_status: Some(custom.clone()) });
        let first = t.tick(0);
        assert_eq!(first[0].custom_status, Some(custom));
        assert!(t.tick(59_999).is_empty());
        let later = t.tick(60_000);
        assert_eq!(later.len(), 1);
        assert_eq!((later[0].status, later[0].custom_status.clone()), (PresenceStatus::Online, None));
    }
}
