//! The event bus: how a change made by the API reaches the gateway sessions that must hear
//! of it, on this node or another.
//!
//! The API publishes [`BusEvent`]s by [`Topic`]. A node registers its [`EventSink`]s: the
//! gateway's hub (which fans out to local sessions, and tells the bus which topics it has
//! local subscribers for) and the API's session cache (which drops what `SESSION_REVOKED` and
//! `USER_UPDATE` events name, and so must receive those of every user). [`InProcessBus`]
//! hands every event straight to the local sinks (the embedded single-process mode). A Redis
//! pub/sub bus for scale-out is not built yet; it will implement the same trait, with a
//! Redis channel per topic and a pattern subscription for the session cache.

use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;

use async_trait::async_trait;
use copains_client_core::{SessionId, UserId};
use serde::Serialize;

/// A routing key: `user:<id>` (everything a user's devices must hear) or `session:<id>`
/// (control of one login session's connections).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Events for every device of a user.
    pub fn user(id: UserId) -> Self {
        Self(format!("user:{id}").into())
    }

    /// Events for one device (its envelopes, its prekey warnings).
    pub fn device(user: UserId, device: copains_client_core::DeviceId) -> Self {
        Self(format!("device:{user}:{device}").into())
    }

    /// Control of one login session (an event here closes its gateway connections).
    pub fn session(id: SessionId) -> Self {
        Self(format!("session:{id}").into())
    }

    /// The events of one voice session (its SDP offers, epochs, key shares), heard by the
    /// gateway session that joined.
    pub fn voice(voice_session_id: &str) -> Self {
        Self(format!("voice:{voice_session_id}").into())
    }

    /// The topic name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The user, for a `user:` topic.
    pub fn as_user(&self) -> Option<UserId> {
        self.0.strip_prefix("user:").and_then(|s| s.parse().ok())
    }

    /// The login session, for a `session:` topic.
    pub fn as_session(&self) -> Option<SessionId> {
        self.0.strip_prefix("session:").and_then(|s| s.parse().ok())
    }

    /// Parses a topic name received from another node.
    pub fn parse(name: &str) -> Option<Self> {
        let (kind, id) = name.split_once(':')?;
        let valid = match kind {
            "user" | "session" => id.parse::<i64>().is_ok(),
            "device" => id.split_once(':').is_some_and(|(u, d)| u.parse::<i64>().is_ok() && d.parse::<u32>().is_ok()),
            "voice" => !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            _ => false,
        };
        valid.then(|| Self(name.into()))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One event: a gateway event name and its JSON payload, serialized once for every receiver.
#[derive(Debug, Clone)]
pub struct BusEvent {
    /// Where it goes.
    pub topic: Topic,
    /// Gateway event name (`t`).
    pub name: Arc<str>,
    /// JSON payload (`d`).
    pub payload: Arc<str>,
}

impl BusEvent {
    /// Serializes `payload` once.
    pub fn new(topic: Topic, name: &str, payload: &impl Serialize) -> Result<Self, BusError> {
        let payload = serde_json::to_string(payload).map_err(|e| BusError::Encode(e.to_string()))?;
        Ok(Self { topic, name: name.into(), payload: payload.into() })
    }

    /// The same event for another topic: name and payload are shared, not copied.
    pub fn to(&self, topic: Topic) -> Self {
        Self { topic, name: self.name.clone(), payload: self.payload.clone() }
    }

    /// One event per topic with one payload, serialized once (a channel message for each of
    /// its readers).
    pub fn fan_out<'a>(
        topics: impl IntoIterator<Item = &'a Topic>,
        name: &str,
        payload: &impl Serialize,
    ) -> Result<Vec<Self>, BusError> {
        let payload: Arc<str> = serde_json::to_string(payload).map_err(|e| BusError::Encode(e.to_string()))?.into();
        let name: Arc<str> = name.into();
        Ok(topics.into_iter().map(|t| Self { topic: t.clone(), name: name.clone(), payload: payload.clone() }).collect())
    }
}

/// Failures of the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The payload could not be serialized.
    #[error("cannot encode event: {0}")]
    Encode(String),
    /// The transport failed (e.g. Redis unreachable).
    #[error("event bus unavailable: {0}")]
    Transport(String),
}

/// Receives the events of the topics this node subscribed to.
pub trait EventSink: Send + Sync + 'static {
    /// Delivers one event to the local subscribers of its topic. Must not block.
    fn deliver(&self, event: &BusEvent);
}

/// Carries events between the API and the gateway sessions, across nodes.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes an event to every subscriber of its topic, on every node.
    async fn publish(&self, event: BusEvent) -> Result<(), BusError>;
    /// Publishes several events, in order (a transport may batch them).
    async fn publish_all(&self, events: Vec<BusEvent>) -> Result<(), BusError> {
        for event in events {
            self.publish(event).await?;
        }
        Ok(())
    }
    /// This node now has local subscribers on `topic`.
    async fn subscribe(&self, topic: &Topic) -> Result<(), BusError>;
    /// This node no longer has local subscribers on `topic`.
    async fn unsubscribe(&self, topic: &Topic) -> Result<(), BusError>;
    /// Adds a place incoming events go (the gateway's hub, the session cache).
    fn attach(&self, sink: Arc<dyn EventSink>);
}

/// The single-process bus: publishing delivers to the local sinks at once.
#[derive(Default)]
pub struct InProcessBus {
    sinks: RwLock<Vec<Arc<dyn EventSink>>>,
}

impl fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcessBus").field("sinks", &self.sinks.read().len()).finish()
    }
}

impl InProcessBus {
    /// A bus with no sink yet (events published before a sink attaches are dropped, as no
    /// one could be listening).
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
        for sink in self.sinks.read().iter() {
            sink.deliver(&event);
        }
        Ok(())
    }

    async fn publish_all(&self, events: Vec<BusEvent>) -> Result<(), BusError> {
        let sinks = self.sinks.read();
        for event in &events {
            for sink in sinks.iter() {
                sink.deliver(event);
            }
        }
        Ok(())
    }

    async fn subscribe(&self, _topic: &Topic) -> Result<(), BusError> {
        // Every event already reaches the local sinks, which filter by topic.
        Ok(())
    }

    async fn unsubscribe(&self, _topic: &Topic) -> Result<(), BusError> {
        Ok(())
    }

    fn attach(&self, sink: Arc<dyn EventSink>) {
        self.sinks.write().push(sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String, String)>>);
    impl EventSink for Recorder {
        fn deliver(&self, e: &BusEvent) {
            self.0.lock().push((e.topic.to_string(), e.name.to_string(), e.payload.to_string()));
        }
    }

    #[tokio::test]
    async fn in_process_bus_delivers_to_the_attached_sink() {
        let bus = InProcessBus::new();
        let early = BusEvent::new(Topic::user(UserId(1)), "X", &serde_json::json!({"a": 1})).expect("event");
        bus.publish(early).await.expect("publish before attach is a no-op");
        let rec = Arc::new(Recorder::default());
        bus.attach(rec.clone());
        let ev = BusEvent::new(Topic::session(SessionId(5)), "Y", &serde_json::json!([1, 2])).expect("event");
        bus.publish(ev).await.expect("publish");
        assert_eq!(*rec.0.lock(), vec![("session:5".into(), "Y".into(), "[1,2]".into())]);
    }

    #[tokio::test]
    async fn a_fanned_out_event_shares_one_payload() {
        let bus = InProcessBus::new();
        let rec = Arc::new(Recorder::default());
        bus.attach(rec.clone());
        let topics = [Topic::user(UserId(1)), Topic::user(UserId(2))];
        let events = BusEvent::fan_out(&topics, "Z", &serde_json::json!({"b": 2})).expect("events");
        assert!(Arc::ptr_eq(&events[0].payload, &events[1].payload), "serialized once");
        bus.publish_all(events).await.expect("publish");
        assert_eq!(
            *rec.0.lock(),
            vec![("user:1".into(), "Z".into(), "{\"b\":2}".into()), ("user:2".into(), "Z".into(), "{\"b\":2}".into())]
        );
    }

    #[test]
    fn topics_parse_back() {
        assert_eq!(Topic::parse("user:12"), Some(Topic::user(UserId(12))));
        assert_eq!(Topic::session(SessionId(3)).as_session(), Some(SessionId(3)));
        assert_eq!(Topic::parse("channel:1"), None);
        assert_eq!(Topic::parse("user:x"), None);
        let device = Topic::device(UserId(4), copains_client_core::DeviceId(2));
        assert_eq!(Topic::parse(device.as_str()), Some(device));
    }
}
