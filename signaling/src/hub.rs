//! The hub of one gateway node: every gateway session on this node, the topics each listens
//! to, and the fan-out of bus events into their queues.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use copains_backend::bus::{BusEvent, EventSink, Topic};
use copains_backend::metrics::Metrics;
use copains_backend::presence::PresenceTracker;
use copains_client_core::gateway::close;
use copains_client_core::{DeviceId, SessionId, UserId};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use crate::session::{ResumeError, SessionCore};

/// Tells a connection task to close, from anywhere (the hub, a revocation, a newer
/// connection taking the session over).
#[derive(Debug, Default)]
pub struct CloseSignal {
    code: AtomicU16,
    notify: Notify,
}

impl CloseSignal {
    /// Asks the connection to close with `code` (the first request wins).
    pub fn close(&self, code: u16) {
        if self.code.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.notify.notify_one();
        }
    }

    /// Waits until a close is requested; returns its code.
    pub async fn requested(&self) -> u16 {
        loop {
            let code = self.code.load(Ordering::SeqCst);
            if code != 0 {
                return code;
            }
            self.notify.notified().await;
        }
    }
}

/// The live connection of a session.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Which connection (to tell a stale detach from a current one).
    pub conn_id: u64,
    /// Serialized frames to write.
    pub queue: mpsc::Sender<Arc<str>>,
    /// Closes the connection.
    pub close: Arc<CloseSignal>,
}

/// Who a session belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The user.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
    /// The login session.
    pub login_session: SessionId,
}

/// One gateway session: connected, or waiting for a RESUME.
#[derive(Debug)]
pub struct Slot {
    /// Who it belongs to.
    pub owner: Owner,
    topics: Vec<Topic>,
    core: SessionCore,
    attachment: Option<Attachment>,
    detached_at: Option<Instant>,
}

type SlotRef = Arc<Mutex<Slot>>;

/// A session id with the device it belongs to.
type OwnedSession = (DeviceId, Arc<str>);

/// Outcome of attaching a connection to an existing session.
pub enum ResumeOutcome {
    /// Replay these frames (the last one is RESUMED), then drain the queue.
    Resumed(Vec<Arc<str>>),
    /// No such session, another user's, or events were lost: IDENTIFY again.
    Invalid,
}

/// What one node lets each session and each user hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubLimits {
    /// Events kept per session for replay.
    pub replay_events: usize,
    /// Bytes of frames kept per session for replay.
    pub replay_bytes: usize,
    /// Sessions (connected or resumable) per device.
    pub sessions_per_device: usize,
    /// Sessions (connected or resumable) per user.
    pub sessions_per_user: usize,
}

/// What [`Hub::create`] did.
#[derive(Debug)]
pub struct Created {
    /// The READY frame (sequence 1).
    pub ready: Arc<str>,
    /// Topics this node had no listener for yet (subscribe on the bus).
    pub subscribe: Vec<Topic>,
    /// Topics nobody listens to any more, after older sessions were replaced (unsubscribe).
    pub unsubscribe: Vec<Topic>,
}

/// The sessions of this node.
pub struct Hub {
    sessions: Mutex<HashMap<Arc<str>, SlotRef>>,
    topics: Mutex<HashMap<Topic, Vec<Arc<str>>>>,
    /// Each user's sessions on this node, oldest first, with their device: who gives way
    /// when a new one would go over [`HubLimits`].
    by_user: Mutex<HashMap<UserId, Vec<OwnedSession>>>,
    metrics: Arc<Metrics>,
    limits: HubLimits,
    next_conn: AtomicU64,
    /// Who is seen online: told here, under the session's lock, when a session's connection
    /// drops or the session ends (a RESUME racing a drop cannot leave it counted as gone).
    presence: Arc<PresenceTracker>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("sessions", &self.sessions.lock().len()).finish()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new(metrics: Arc<Metrics>, limits: HubLimits, presence: Arc<PresenceTracker>) -> Self {
        let limits = HubLimits {
            sessions_per_device: limits.sessions_per_device.max(1),
            sessions_per_user: limits.sessions_per_user.max(1),
            ..limits
        };
        Self {
            sessions: Mutex::new(HashMap::new()),
            topics: Mutex::new(HashMap::new()),
            by_user: Mutex::new(HashMap::new()),
            metrics,
            limits,
            next_conn: AtomicU64::new(1),
            presence,
        }
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Creates a session attached to a connection, with its READY frame (sequence 1). The
    /// session listens to `topics` from now on. If the device or the user already holds as
    /// many sessions as [`HubLimits`] allows, the oldest ones end (closed with 4014, not
    /// resumable) to make room: a client that keeps identifying cannot pile up replay buffers.
    pub fn create(&self, id: Arc<str>, owner: Owner, topics: &[Topic], attachment: Attachment, ready_payload: &str) -> Created {
        let mut replaced = Vec::new();
        let mut by_user = self.by_user.lock();
        {
            let mine = by_user.entry(owner.user).or_default();
            while mine.iter().filter(|(device, _)| *device == owner.device).count() >= self.limits.sessions_per_device {
                let Some(oldest) = mine.iter().position(|(device, _)| *device == owner.device) else { break };
                replaced.push(mine.remove(oldest).1);
            }
            while mine.len() >= self.limits.sessions_per_user {
                replaced.push(mine.remove(0).1);
            }
            mine.push((owner.device, id.clone()));
        }
        let mut core = SessionCore::new(self.limits.replay_events, self.limits.replay_bytes);
        let ready = core.dispatch_unbuffered(copains_client_core::gateway::event_name::READY, ready_payload);
        let slot =
            Arc::new(Mutex::new(Slot { owner, topics: topics.to_vec(), core, attachment: Some(attachment), detached_at: None }));
        // Still under the per-user lock: a concurrent IDENTIFY of the same user cannot pick
        // this id as the oldest to end before the session exists (it would then escape the
        // caps). The order is always by_user, then sessions.
        self.sessions.lock().insert(id.clone(), slot);
        self.metrics.gateway_users.set(by_user.len() as i64);
        drop(by_user);
        self.metrics.gateway_sessions.inc();
        let mut new_topics = Vec::new();
        let mut map = self.topics.lock();
        for topic in topics {
            let listeners = map.entry(topic.clone()).or_default();
            if listeners.is_empty() {
                new_topics.push(topic.clone());
            }
            listeners.push(id.clone());
        }
        drop(map);
        // After the new session joined its topics, so that those it shares with the replaced
        // ones are not unsubscribed and subscribed again.
        let unsubscribe = replaced.iter().flat_map(|old| self.end(old, close::SESSION_REPLACED)).collect();
        Created { ready, subscribe: new_topics, unsubscribe }
    }

    /// Attaches a new connection to session `id` owned by `owner`, replaying what came after
    /// `last_seen`. Any connection still attached is closed (the client moved on).
    pub fn resume(&self, id: &str, owner: Owner, last_seen: u64, attachment: Attachment) -> ResumeOutcome {
        let Some(slot) = self.sessions.lock().get(id).cloned() else { return ResumeOutcome::Invalid };
        let mut slot = slot.lock();
        if slot.owner != owner {
            return ResumeOutcome::Invalid;
        }
        match slot.core.replay_after(last_seen) {
            Ok(mut frames) => {
                let replayed = frames.len();
                let resumed = serde_json::json!({ "replayed": replayed }).to_string();
                frames.push(slot.core.dispatch(copains_client_core::gateway::event_name::RESUMED, &resumed));
                if let Some(old) = slot.attachment.replace(attachment) {
                    old.close.close(close::UNKNOWN_ERROR);
                }
                slot.detached_at = None;
                ResumeOutcome::Resumed(frames)
            }
            Err(ResumeError::FutureSeq | ResumeError::TooOld) => ResumeOutcome::Invalid,
        }
    }

    /// The client of session `id` has processed every frame up to `seq` (from its heartbeat):
    /// those frames leave the replay buffer.
    pub fn acknowledge(&self, id: &str, seq: u64) {
        let Some(slot) = self.sessions.lock().get(id).cloned() else { return };
        slot.lock().core.acknowledge(seq);
    }

    /// The connection `conn_id` of session `id` ended. A resumable end keeps the session for
    /// the resume window; otherwise the session is removed. Returns topics this node no
    /// longer listens to.
    pub fn detach(&self, id: &str, conn_id: u64, resumable: bool, now: Instant) -> Vec<Topic> {
        let Some(slot) = self.sessions.lock().get(id).cloned() else { return Vec::new() };
        {
            let mut slot = slot.lock();
            match &slot.attachment {
                Some(a) if a.conn_id == conn_id => {
                    slot.attachment = None;
                    slot.detached_at = Some(now);
                    if resumable {
                        // Still counted for the presence grace: a RESUME within it changes
                        // nothing anyone sees.
                        self.presence.dropped(slot.owner.user, id, copains_backend::store::now_ms());
                    }
                }
                // Another connection already took the session over: nothing to do.
                Some(_) => return Vec::new(),
                None => {}
            }
        }
        if resumable {
            Vec::new()
        } else {
            self.remove(id)
        }
    }

    /// Removes a session now (its connection, if any, closes with 4011). Returns topics this
    /// node no longer listens to.
    pub fn remove(&self, id: &str) -> Vec<Topic> {
        self.end(id, close::SESSION_REVOKED)
    }

    /// Removes a session, closing its connection with `code`.
    fn end(&self, id: &str, code: u16) -> Vec<Topic> {
        let Some(slot) = self.sessions.lock().remove(id) else { return Vec::new() };
        self.metrics.gateway_sessions.dec();
        let (owner, topics) = {
            let mut slot = slot.lock();
            if let Some(a) = slot.attachment.take() {
                a.close.close(code);
            }
            self.presence.ended(slot.owner.user, id);
            (slot.owner, std::mem::take(&mut slot.topics))
        };
        {
            let mut by_user = self.by_user.lock();
            if let Some(mine) = by_user.get_mut(&owner.user) {
                mine.retain(|(_, s)| &**s != id);
                if mine.is_empty() {
                    by_user.remove(&owner.user);
                }
            }
            self.metrics.gateway_users.set(by_user.len() as i64);
        }
        let mut emptied = Vec::new();
        let mut map = self.topics.lock();
        for topic in topics {
            if let Some(listeners) = map.get_mut(&topic) {
                listeners.retain(|l| &**l != id);
                if listeners.is_empty() {
                    map.remove(&topic);
                    emptied.push(topic);
                }
            }
        }
        emptied
    }

    /// Session `id` listens to `topic` from now on (a voice session's events). Returns whether
    /// this node had no listener for it yet (subscribe on the bus); false too when there is no
    /// such session.
    pub fn listen(&self, id: &str, topic: &Topic) -> bool {
        let Some(slot) = self.sessions.lock().get(id).cloned() else { return false };
        {
            let mut slot = slot.lock();
            if slot.topics.contains(topic) {
                return false;
            }
            slot.topics.push(topic.clone());
        }
        let mut map = self.topics.lock();
        let listeners = map.entry(topic.clone()).or_default();
        listeners.push(id.into());
        listeners.len() == 1
    }

    /// Session `id` stops listening to `topic`. Returns whether nobody on this node listens to
    /// it any more (unsubscribe on the bus).
    pub fn unlisten(&self, id: &str, topic: &Topic) -> bool {
        if let Some(slot) = self.sessions.lock().get(id).cloned() {
            slot.lock().topics.retain(|t| t != topic);
        }
        let mut map = self.topics.lock();
        let Some(listeners) = map.get_mut(topic) else { return false };
        listeners.retain(|l| &**l != id);
        if listeners.is_empty() {
            map.remove(topic);
            true
        } else {
            false
        }
    }

    /// Whether session `id` exists and has a connection attached (not waiting for a RESUME).
    pub fn is_attached(&self, id: &str) -> bool {
        self.sessions.lock().get(id).is_some_and(|slot| slot.lock().attachment.is_some())
    }

    /// Dispatches one event to session `id` alone (an answer to one of its own frames), with
    /// its sequence number, kept for replay like any other.
    pub fn dispatch_to(&self, id: &str, name: &str, payload: &str, now: Instant) {
        let Some(slot) = self.sessions.lock().get(id).cloned() else { return };
        let mut slot = slot.lock();
        let frame = slot.core.dispatch(name, payload);
        self.queue(&mut slot, frame, now);
    }

    fn queue(&self, slot: &mut Slot, frame: Arc<str>, now: Instant) {
        let Some(attachment) = &slot.attachment else { return };
        match attachment.queue.try_send(frame) {
            Ok(()) => {
                self.metrics.gateway_events_sent.inc();
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The event stays in the replay buffer: the client resumes and gets it.
                attachment.close.close(close::SLOW_CONSUMER);
                self.metrics.gateway_slow_consumers.inc();
                slot.attachment = None;
                slot.detached_at = Some(now);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                slot.attachment = None;
                slot.detached_at = Some(now);
            }
        }
    }

    /// Removes sessions detached for longer than `window`. Returns topics to unsubscribe.
    pub fn expire(&self, window: Duration, now: Instant) -> Vec<Topic> {
        let stale: Vec<Arc<str>> = self
            .sessions
            .lock()
            .iter()
            .filter(|(_, slot)| {
                let slot = slot.lock();
                slot.detached_at.is_some_and(|at| now.duration_since(at) >= window)
            })
            .map(|(id, _)| id.clone())
            .collect();
        stale.iter().flat_map(|id| self.remove(id)).collect()
    }

    /// Closes every connection with `code` and forgets every session (shutdown).
    pub fn close_all(&self, code: u16) {
        let sessions: Vec<SlotRef> = self.sessions.lock().drain().map(|(_, s)| s).collect();
        self.topics.lock().clear();
        self.by_user.lock().clear();
        self.metrics.gateway_users.set(0);
        for slot in sessions {
            self.metrics.gateway_sessions.dec();
            if let Some(a) = slot.lock().attachment.take() {
                a.close.close(code);
            }
        }
    }

    /// Number of sessions (connected or resumable).
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn listeners(&self, topic: &Topic) -> Vec<SlotRef> {
        let ids: Vec<Arc<str>> = match self.topics.lock().get(topic) {
            Some(ids) => ids.clone(),
            None => return Vec::new(),
        };
        let sessions = self.sessions.lock();
        ids.iter().filter_map(|id| sessions.get(id).cloned()).collect()
    }

    fn session_ids(&self, topic: &Topic) -> Vec<Arc<str>> {
        self.topics.lock().get(topic).cloned().unwrap_or_default()
    }
}

impl EventSink for Hub {
    fn deliver(&self, event: &BusEvent) {
        // The runtime's clock, not the OS's: under a paused test clock, a slow consumer's
        // detach time is virtual like every other instant the hub is given.
        self.deliver_at(event, tokio::time::Instant::now().into_std());
    }
}

impl Hub {
    /// [`EventSink::deliver`] at `now`: a connection closed as a slow consumer counts as
    /// detached from `now` for the resume window.
    pub fn deliver_at(&self, event: &BusEvent, now: Instant) {
        if event.topic.as_session().is_some() {
            // Control topic: the login session ended; its gateway sessions go with it.
            for id in self.session_ids(&event.topic) {
                self.remove(&id);
            }
            return;
        }
        for slot in self.listeners(&event.topic) {
            let mut slot = slot.lock();
            let frame = slot.core.dispatch(&event.name, &event.payload);
            self.queue(&mut slot, frame, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> Arc<PresenceTracker> {
        Arc::new(PresenceTracker::new(copains_backend::presence::PresenceConfig::default()))
    }

    fn owner(user: i64) -> Owner {
        Owner { user: UserId(user), device: DeviceId(1), login_session: SessionId(user * 10) }
    }

    fn limits(replay_events: usize) -> HubLimits {
        HubLimits { replay_events, replay_bytes: 1 << 20, sessions_per_device: 5, sessions_per_user: 20 }
    }

    fn attach(hub: &Hub, cap: usize) -> (Attachment, mpsc::Receiver<Arc<str>>) {
        let (tx, rx) = mpsc::channel(cap);
        (Attachment { conn_id: hub.next_conn_id(), queue: tx, close: Arc::new(CloseSignal::default()) }, rx)
    }

    fn event(user: i64, n: u32) -> BusEvent {
        BusEvent::new(Topic::user(UserId(user)), "USER_UPDATE", &serde_json::json!({ "n": n })).expect("event")
    }

    #[test]
    fn presence_counts_a_session_until_it_ends_and_a_takeover_is_no_drop() {
        let presence = tracker();
        let hub = Hub::new(Arc::new(Metrics::new()), limits(64), presence.clone());
        let ann = UserId(1);
        let past_grace = || copains_backend::store::now_ms() + presence.config().grace_ms + 1;
        let (a, _rx) = attach(&hub, 16);
        let first = a.conn_id;
        hub.create("s1".into(), owner(1), &[], a, "{}");
        presence.connected(ann, "s1".into(), Default::default());
        // A new connection resumes the session before the old one's end is noticed: the old
        // connection's detach changes nothing, however long after.
        let (b, _rx2) = attach(&hub, 16);
        let second = b.conn_id;
        assert!(matches!(hub.resume("s1", owner(1), 1, b), ResumeOutcome::Resumed(_)));
        assert!(presence.resumed(ann, "s1"));
        hub.detach("s1", first, true, Instant::now());
        presence.tick(past_grace());
        assert!(presence.is_connected(ann), "a takeover is not a drop");
        // The attached connection drops: counted until the grace ends.
        hub.detach("s1", second, true, Instant::now());
        presence.tick(copains_backend::store::now_ms());
        assert!(presence.is_connected(ann));
        presence.tick(past_grace());
        assert!(!presence.is_connected(ann), "gone once the grace passed");
        // A session ended by the hub (replaced, revoked, expired) stops counting at once.
        let (c, _rx3) = attach(&hub, 16);
        hub.create("s2".into(), owner(1), &[], c, "{}");
        presence.connected(ann, "s2".into(), Default::default());
        hub.remove("s2");
        presence.tick(copains_backend::store::now_ms());
        assert!(!presence.is_connected(ann), "an ended session does not count");
    }

    #[test]
    fn events_reach_only_their_topic_and_survive_a_detach() {
        let hub = Hub::new(Arc::new(Metrics::new()), limits(64), tracker());
        let (a, mut rx) = attach(&hub, 16);
        let conn = a.conn_id;
        let created = hub.create("s1".into(), owner(1), &[Topic::user(UserId(1))], a, "{}");
        assert_eq!(created.subscribe, vec![Topic::user(UserId(1))]);
        hub.deliver(&event(1, 1));
        hub.deliver(&event(2, 99));
        assert!(rx.try_recv().expect("own event").contains("\"n\":1"));
        assert!(rx.try_recv().is_err(), "another user's event is not delivered");

        assert!(hub.detach("s1", conn, true, Instant::now()).is_empty());
        hub.deliver(&event(1, 2));
        hub.deliver(&event(1, 3));
        let (b, _rx2) = attach(&hub, 16);
        let ResumeOutcome::Resumed(frames) = hub.resume("s1", owner(1), 2, b) else { panic!("resume failed") };
        assert_eq!(frames.len(), 3, "two missed events and RESUMED");
        assert!(frames[0].contains("\"n\":2") && frames[1].contains("\"n\":3") && frames[2].contains("RESUMED"));

        let (c, _rx3) = attach(&hub, 16);
        assert!(matches!(hub.resume("s1", owner(2), 2, c), ResumeOutcome::Invalid), "another owner cannot resume");
    }

    #[test]
    fn a_full_queue_closes_as_slow_consumer_and_keeps_the_event() {
        let hub = Hub::new(Arc::new(Metrics::new()), limits(64), tracker());
        let (a, _rx) = attach(&hub, 2);
        let close = a.close.clone();
        hub.create("s1".into(), owner(1), &[Topic::user(UserId(1))], a, "{}");
        for n in 0..3 {
            hub.deliver(&event(1, n));
        }
        assert_eq!(close.code.load(Ordering::SeqCst), close::SLOW_CONSUMER);
        let (b, _rx2) = attach(&hub, 16);
        let ResumeOutcome::Resumed(frames) = hub.resume("s1", owner(1), 1, b) else { panic!("resume failed") };
        assert_eq!(frames.len(), 4, "all three events are replayed, then RESUMED");
    }

    #[test]
    fn session_topic_events_remove_the_session_and_expiry_forgets_detached_ones() {
        let hub = Hub::new(Arc::new(Metrics::new()), limits(64), tracker());
        let (a, _rx) = attach(&hub, 4);
        let close = a.close.clone();
        let topics = [Topic::user(UserId(1)), Topic::session(SessionId(10))];
        hub.create("s1".into(), owner(1), &topics, a, "{}");
        let revoke = BusEvent::new(Topic::session(SessionId(10)), "SESSION_REVOKED", &serde_json::json!({})).expect("event");
        hub.deliver(&revoke);
        assert!(hub.is_empty());
        assert_eq!(close.code.load(Ordering::SeqCst), close::SESSION_REVOKED);

        let (b, _rx) = attach(&hub, 4);
        let conn = b.conn_id;
        hub.create("s2".into(), owner(2), &[Topic::user(UserId(2))], b, "{}");
        let t0 = Instant::now();
        hub.detach("s2", conn, true, t0);
        assert!(hub.expire(Duration::from_secs(60), t0 + Duration::from_secs(59)).is_empty());
        assert_eq!(hub.len(), 1);
        assert_eq!(hub.expire(Duration::from_secs(60), t0 + Duration::from_secs(60)), vec![Topic::user(UserId(2))]);
        assert!(hub.is_empty());
    }

    #[test]
    fn the_oldest_sessions_give_way_past_the_caps() {
        let hub = Hub::new(
            Arc::new(Metrics::new()),
            HubLimits { sessions_per_device: 2, sessions_per_user: 3, ..limits(64) },
            tracker(),
        );
        let on = |device: u32| Owner { device: DeviceId(device), ..owner(1) };
        let topics = |device: u32| [Topic::user(UserId(1)), Topic::device(UserId(1), DeviceId(device))];
        let mut closes = Vec::new();
        let mut open = |id: &str, device: u32| {
            let (a, rx) = attach(&hub, 4);
            closes.push((id.to_owned(), a.close.clone(), rx));
            hub.create(id.into(), on(device), &topics(device), a, "{}")
        };
        open("d1-a", 1);
        open("d1-b", 1);
        // A third session of device 1: its oldest gives way, nothing to unsubscribe.
        let third = open("d1-c", 1);
        assert!(third.unsubscribe.is_empty());
        // Device 2 brings the user to three sessions: within the caps.
        open("d2-a", 2);
        // A fourth for the user: the oldest of all (d1-b) gives way.
        open("d2-b", 2);
        // Device 2's cap: d2-a gives way; device 1 keeps d1-c.
        let last = open("d2-c", 2);
        assert!(last.unsubscribe.is_empty(), "the user and device topics still have listeners");
        let code = |id: &str| closes.iter().find(|(i, ..)| i == id).map(|(_, c, _)| c.code.load(Ordering::SeqCst));
        assert_eq!(code("d1-a"), Some(close::SESSION_REPLACED));
        assert_eq!(code("d1-b"), Some(close::SESSION_REPLACED));
        assert_eq!(code("d2-a"), Some(close::SESSION_REPLACED));
        for kept in ["d1-c", "d2-b", "d2-c"] {
            assert_eq!(code(kept), Some(0), "{kept} stays open");
        }
        assert_eq!(hub.len(), 3);
        let (b, _rx) = attach(&hub, 4);
        assert!(matches!(hub.resume("d1-a", on(1), 1, b), ResumeOutcome::Invalid), "a replaced session is gone");

        // Replacing the last session of a device leaves its device topic without listeners.
        let solo = Hub::new(
            Arc::new(Metrics::new()),
            HubLimits { sessions_per_device: 5, sessions_per_user: 1, ..limits(64) },
            tracker(),
        );
        let (a, _rx1) = attach(&solo, 4);
        solo.create("x".into(), on(1), &topics(1), a, "{}");
        let (b, _rx2) = attach(&solo, 4);
        let created = solo.create("y".into(), on(2), &topics(2), b, "{}");
        assert_eq!(created.subscribe, vec![Topic::device(UserId(1), DeviceId(2))]);
        assert_eq!(created.unsubscribe, vec![Topic::device(UserId(1), DeviceId(1))]);
        // Removal keeps the per-user index in step: another session fits again.
        solo.remove("y");
        let (c, _rx3) = attach(&solo, 4);
        assert!(solo.create("z".into(), on(3), &topics(3), c, "{}").unsubscribe.is_empty());
    }

    #[test]
    fn replay_buffers_are_capped_in_bytes() {
        let hub = Hub::new(Arc::new(Metrics::new()), HubLimits { replay_bytes: 200, ..limits(1024) }, tracker());
        let (a, _rx) = attach(&hub, 64);
        let conn = a.conn_id;
        hub.create("s1".into(), owner(1), &[Topic::user(UserId(1))], a, "{}");
        hub.detach("s1", conn, true, Instant::now());
        // Each frame is under 50 bytes: four fit in 200, ten do not.
        for n in 0..10 {
            hub.deliver(&event(1, n));
        }
        let (b, _rx2) = attach(&hub, 64);
        assert!(matches!(hub.resume("s1", owner(1), 1, b), ResumeOutcome::Invalid), "the first missed events were dropped");
        let (c, _rx3) = attach(&hub, 64);
        let ResumeOutcome::Resumed(frames) = hub.resume("s1", owner(1), 9, c) else { panic!("recent events are kept") };
        assert_eq!(frames.len(), 3, "two events and RESUMED");
    }

    /// The resume window on a paused clock: the instants given to `detach` and `expire`, and
    /// the one `deliver` reads when it cuts off a slow consumer, are all the runtime's.
    #[tokio::test(start_paused = true)]
    async fn the_resume_window_runs_on_the_runtime_clock() {
        use tokio::time::advance;
        let now = || tokio::time::Instant::now().into_std();
        let window = Duration::from_secs(120);
        let ms = Duration::from_millis(1);
        let hub = Hub::new(Arc::new(Metrics::new()), limits(64), tracker());

        // s1 drops at t0.
        let (a, _rx_a) = attach(&hub, 16);
        let conn = a.conn_id;
        hub.create("s1".into(), owner(1), &[Topic::user(UserId(1))], a, "{}");
        hub.detach("s1", conn, true, now());
        // s2 reads too slowly at t0 + 60 s: `deliver` detaches it then.
        advance(Duration::from_secs(60)).await;
        let (b, _rx_b) = attach(&hub, 1);
        let slow = b.close.clone();
        hub.create("s2".into(), owner(2), &[Topic::user(UserId(2))], b, "{}");
        hub.deliver(&event(2, 1));
        hub.deliver(&event(2, 2));
        assert_eq!(slow.code.load(Ordering::SeqCst), close::SLOW_CONSUMER);

        advance(window - Duration::from_secs(60) - ms).await;
        assert!(hub.expire(window, now()).is_empty(), "1 ms before s1's window ends");
        assert_eq!(hub.len(), 2);
        advance(ms).await;
        assert_eq!(hub.expire(window, now()), vec![Topic::user(UserId(1))], "s1 expires, s2 has 60 s left");
        advance(Duration::from_secs(60) - ms).await;
        assert!(hub.expire(window, now()).is_empty());
        // s2 is still resumable, with both events it missed.
        let (c, _rx_c) = attach(&hub, 16);
        let ResumeOutcome::Resumed(frames) = hub.resume("s2", owner(2), 1, c) else { panic!("s2 resumes") };
        assert_eq!(frames.len(), 3);
        // Attached again, it does not expire; the window starts over at its next drop.
        advance(window).await;
        assert!(hub.expire(window, now()).is_empty());
        assert_eq!(hub.len(), 1);
    }

    /// A RESUME takes a session over from a connection still attached: that connection is
    /// closed with 4000, and its late detach neither detaches the session nor starts its window.
    #[tokio::test(start_paused = true)]
    async fn a_resume_takes_over_and_the_old_connection_cannot_detach_the_session() {
        let now = || tokio::time::Instant::now().into_std();
        let window = Duration::from_secs(120);
        let hub = Hub::new(Arc::new(Metrics::new()), limits(64), tracker());
        let (old, _rx_old) = attach(&hub, 16);
        let (old_conn, old_close) = (old.conn_id, old.close.clone());
        hub.create("s1".into(), owner(1), &[Topic::user(UserId(1))], old, "{}");
        hub.deliver(&event(1, 2));
        hub.deliver(&event(1, 3));

        let (new, mut rx_new) = attach(&hub, 16);
        let new_close = new.close.clone();
        let ResumeOutcome::Resumed(frames) = hub.resume("s1", owner(1), 2, new) else { panic!("resume") };
        assert_eq!(frames.len(), 2, "event 3, then RESUMED");
        assert_eq!(old_close.code.load(Ordering::SeqCst), close::UNKNOWN_ERROR);

        assert!(hub.detach("s1", old_conn, true, now()).is_empty());
        tokio::time::advance(window).await;
        assert!(hub.expire(window, now()).is_empty(), "the session never counted as detached");
        hub.deliver(&event(1, 4));
        assert!(rx_new.try_recv().expect("live events reach the new connection").contains("\"n\":4"));
        assert_eq!(new_close.code.load(Ordering::SeqCst), 0, "the new connection stays open");
    }
}
