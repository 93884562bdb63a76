//! End-to-end encrypted direct messages for the native [`Client`].
//!
//! [`Client::enable_e2ee`] starts a messenger: a thread that owns this device's Signal
//! protocol state (libsignal's stores are not `Send`, and one owner keeps every ratchet step
//! in order). It uploads the device's keys, keeps a gateway connection, fetches the queue of
//! envelopes that arrived while offline, decrypts everything in order, acknowledges it, and
//! answers decryption failures with retry requests so that no message stays undecryptable.
//!
//! A retry request is answered only from the sent-message log ([`SentLog`]): to a device the
//! message was encrypted to, still with the identity key it had then, within a day. Anything
//! else is refused and reported ([`Incoming::RetryRefused`]), so neither another user nor the
//! server can have a message re-encrypted to a key of its choosing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use rand::RngCore;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::client::{Client, ClientError, GatewayHandle, GatewayUpdate};
use crate::crypto::sqlite::SqliteBackend;
use crate::crypto::{CryptoError, Decrypted, E2eeDevice, History, Refusal, SentEntry, SentLog, SentTo, Vault, VaultError};
use crate::error::ErrorCode;
use crate::gateway::{Ack, ClientMessage, Event};
use crate::ids::{DeviceId, EnvelopeId, UserId};
use crate::keys::{PreKeyCount, UserBundles};
use crate::messages::{Envelope, OutgoingEnvelope, Queue, SendMessage, SendMismatch, SendReceipt};

/// Errors of messaging.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// The server or the network.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Encryption.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The local store.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The messenger thread stopped.
    #[error("messenger stopped")]
    Stopped,
    /// The send could not be completed.
    #[error("{0}")]
    Send(String),
}

/// A decrypted direct message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectMessage {
    /// Unique id chosen by the sender (identical on every device).
    pub message_id: String,
    /// The other participant of the conversation.
    pub conversation: UserId,
    /// Who wrote it.
    pub author: UserId,
    /// From which device.
    pub author_device: DeviceId,
    /// True when this user wrote it (a copy from one of their other devices).
    pub outgoing: bool,
    /// The text.
    pub body: String,
    /// Server time of the send (Unix milliseconds).
    pub sent_at: i64,
}

/// What the messenger reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A message, in the order the server queued it for this device.
    Message(DirectMessage),
    /// A contact's device changed its identity key: its safety number changed.
    IdentityChanged {
        /// The contact.
        user: UserId,
        /// Their device.
        device: DeviceId,
    },
    /// An envelope could not be decrypted; a retry request went back to its sender.
    RetryRequested {
        /// The sender.
        user: UserId,
        /// Their device.
        device: DeviceId,
    },
    /// A device asked for a message again and was refused: it was not a recipient of a
    /// message sent at that time, the message is past the resend window, or the device's
    /// identity key is not the one the message was encrypted to. A stream of these from one
    /// sender means someone (possibly the server) is probing for messages.
    RetryRefused {
        /// Who asked.
        user: UserId,
        /// From which device.
        device: DeviceId,
        /// The timestamp they named.
        timestamp: i64,
        /// Why nothing was sent.
        reason: RetryRefusal,
    },
}

/// Why a retry request was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryRefusal {
    /// No message of this device at that timestamp was sent to the requesting device.
    NotARecipient,
    /// The message is older than the resend window (a day).
    Expired,
    /// The requesting device now has another identity key than the one the message was
    /// encrypted to.
    IdentityChanged,
    /// That message was already sent again to that device as often as allowed.
    AnsweredAlready,
}

impl From<Refusal> for RetryRefusal {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotARecipient => RetryRefusal::NotARecipient,
            Refusal::Expired => RetryRefusal::Expired,
        }
    }
}

/// Where the messenger reads the time (Unix milliseconds). Tests move it.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(crate::crypto::device::now_ms))
    }

    /// A clock that asks `now` for the time.
    pub fn from_fn(now: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// The plaintext inside every DM envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Content {
    /// Message id.
    id: String,
    /// The recipient (the conversation, seen from the author).
    to: UserId,
    /// Text.
    body: String,
}

enum Command {
    Send {
        to: UserId,
        body: String,
        reply: oneshot::Sender<Result<DirectMessage, MessagingError>>,
    },
    SafetyNumbers {
        user: UserId,
        reply: oneshot::Sender<Result<Vec<(DeviceId, String)>, MessagingError>>,
    },
    History {
        conversation: UserId,
        before: Option<u64>,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<(u64, DirectMessage)>, MessagingError>>,
    },
    Conversations {
        reply: oneshot::Sender<Result<Vec<UserId>, MessagingError>>,
    },
    Verify {
        user: UserId,
        device: DeviceId,
        reply: oneshot::Sender<Result<(), MessagingError>>,
    },
    #[cfg(feature = "testing")]
    CorruptSession {
        user: UserId,
        device: DeviceId,
        reply: oneshot::Sender<Result<(), MessagingError>>,
    },
    #[cfg(feature = "testing")]
    DropConnection,
    #[cfg(feature = "testing")]
    Reconnect,
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// A running messenger.
pub struct Messenger {
    commands: mpsc::UnboundedSender<Command>,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    ready: Option<oneshot::Receiver<Result<(), MessagingError>>>,
}

impl std::fmt::Debug for Messenger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Messenger")
    }
}

impl Client {
    /// Opens (or creates) this device's encrypted store at `path` with `passphrase`, uploads
    /// the device's keys if they are new, and starts receiving. Returns once the device is
    /// connected and its offline queue is drained.
    pub async fn enable_e2ee(&self, path: impl Into<PathBuf>, passphrase: &str) -> Result<Messenger, MessagingError> {
        self.enable_e2ee_with_clock(path, passphrase, Clock::system()).await
    }

    /// [`Client::enable_e2ee`] with the time read from `clock`.
    pub async fn enable_e2ee_with_clock(
        &self,
        path: impl Into<PathBuf>,
        passphrase: &str,
        clock: Clock,
    ) -> Result<Messenger, MessagingError> {
        let user = self.user().await.ok_or(ClientError::NotLoggedIn)?.id;
        let device = self.device_id().await.ok_or(ClientError::NotLoggedIn)?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let (ready_tx, ready) = oneshot::channel();
        let client = self.clone();
        let path = path.into();
        let passphrase = passphrase.to_owned();
        std::thread::Builder::new()
            .name(format!("messenger-{user}-{device}"))
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    let _ = ready_tx.send(Err(MessagingError::Stopped));
                    return;
                };
                rt.block_on(run(client, user, device, path, passphrase, clock, command_rx, incoming_tx, ready_tx));
            })
            .map_err(|_| MessagingError::Stopped)?;
        let mut messenger = Messenger { commands, incoming, ready: Some(ready) };
        if let Some(ready) = messenger.ready.take() {
            ready.await.map_err(|_| MessagingError::Stopped)??;
        }
        Ok(messenger)
    }
}

impl Messenger {
    /// Sends a direct message to `to` (every one of their devices, and this user's other
    /// devices). Returns the message as it will appear in history.
    pub async fn send_dm(&self, to: UserId, body: &str) -> Result<DirectMessage, MessagingError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Send { to, body: body.to_owned(), reply }).map_err(|_| MessagingError::Stopped)?;
        rx.await.map_err(|_| MessagingError::Stopped)?
    }

    /// The next incoming message or notice.
    pub async fn next(&mut self) -> Option<Incoming> {
        self.incoming.recv().await
    }

    /// The next message, skipping notices.
    pub async fn next_message(&mut self) -> Option<DirectMessage> {
        loop {
            if let Incoming::Message(m) = self.incoming.recv().await? {
                return Some(m);
            }
        }
    }

    /// Safety numbers with each device of `user` this device has a session with.
    pub async fn safety_numbers(&self, user: UserId) -> Result<Vec<(DeviceId, String)>, MessagingError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::SafetyNumbers { user, reply }).map_err(|_| MessagingError::Stopped)?;
        rx.await.map_err(|_| MessagingError::Stopped)?
    }

    /// Up to `limit` messages of the conversation with `conversation` before position
    /// `before` (from the newest when `None`), oldest first, each with its position. The
    /// history is read from this device's encrypted store, so it survives restarts.
    pub async fn history(
        &self,
        conversation: UserId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, DirectMessage)>, MessagingError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::History { conversation, before, limit, reply }).map_err(|_| MessagingError::Stopped)?;
        rx.await.map_err(|_| MessagingError::Stopped)?
    }

    /// The users this device has a conversation with, in the order the conversations started.
    pub async fn conversations(&self) -> Result<Vec<UserId>, MessagingError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Conversations { reply }).map_err(|_| MessagingError::Stopped)?;
        rx.await.map_err(|_| MessagingError::Stopped)?
    }

    /// Marks a contact's device verified (after comparing safety numbers): a later identity
    /// change of that device is refused until verified again.
    pub async fn verify(&self, user: UserId, device: DeviceId) -> Result<(), MessagingError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Verify { user, device, reply }).map_err(|_| MessagingError::Stopped)?;
        rx.await.map_err(|_| MessagingError::Stopped)?
    }

    /// Damages the session with a device (to exercise the repair path in tests).
    #[cfg(feature = "testing")]
    pub async fn corrupt_session(&self, user: UserId, device: DeviceId) -> Result<(), MessagingError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::CorruptSession { user, device, reply }).map_err(|_| MessagingError::Stopped)?;
        rx.await.map_err(|_| MessagingError::Stopped)?
    }

    /// Drops the gateway connection abruptly and stays offline until [`Messenger::reconnect`].
    #[cfg(feature = "testing")]
    pub fn go_offline(&self) {
        let _ = self.commands.send(Command::DropConnection);
    }

    /// Reconnects after [`Messenger::go_offline`]; missed envelopes are fetched from the queue.
    #[cfg(feature = "testing")]
    pub fn reconnect(&self) {
        let _ = self.commands.send(Command::Reconnect);
    }

    /// Stops the messenger (the store stays on disk).
    pub async fn close(self) {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Close { reply }).is_ok() {
            let _ = rx.await;
        }
    }
}

/// How many times one message is sent again to one device on retry requests.
const RESEND_ANSWERS_MAX: u32 = 3;

/// How often a running messenger checks its prekeys (count and age).
const KEY_MAINTENANCE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

struct State {
    client: Client,
    me: UserId,
    my_device: DeviceId,
    device: E2eeDevice,
    out: mpsc::UnboundedSender<Incoming>,
    /// Known devices of contacts (and of this user), from bundles and device mismatches.
    devices: BTreeMap<UserId, Vec<DeviceId>>,
    /// Envelopes already processed (the queue and the live push may overlap).
    seen: HashSet<EnvelopeId>,
    /// Retry requests answered, by (requester, device, timestamp): a message goes again at
    /// most [`RESEND_ANSWERS_MAX`] times to one device.
    answered: HashMap<(UserId, DeviceId, i64), u32>,
    clock: Clock,
    /// Processed envelopes not yet acknowledged.
    acks: Vec<EnvelopeId>,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    client: Client,
    me: UserId,
    my_device: DeviceId,
    path: PathBuf,
    passphrase: String,
    clock: Clock,
    mut commands: mpsc::UnboundedReceiver<Command>,
    out: mpsc::UnboundedSender<Incoming>,
    ready: oneshot::Sender<Result<(), MessagingError>>,
) {
    let mut state = match start(&client, me, my_device, &path, &passphrase, clock, out).await {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut gateway = match client.connect_gateway().await {
        Ok(g) => g,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let mut ready = Some(ready);
    // Live envelopes wait while the queue is drained, so that order is kept.
    let mut draining = true;
    let mut held: Vec<Envelope> = Vec::new();
    // Signed prekeys age while the app runs: check for rotation now and then.
    let mut maintenance = tokio::time::interval(KEY_MAINTENANCE_EVERY);
    maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    maintenance.reset();
    loop {
        state.flush_acks(&gateway);
        tokio::select! {
            _ = maintenance.tick() => {
                if let Err(e) = state.top_up().await {
                    tracing::warn!(error = %e, "key maintenance failed");
                }
            }
            update = gateway.next() => match update {
                None | Some(GatewayUpdate::Closed { .. }) => return,
                Some(GatewayUpdate::Disconnected { .. }) => draining = true,
                Some(GatewayUpdate::Connected { .. }) => {
                    let result = state.drain_queue().await;
                    for e in std::mem::take(&mut held) {
                        state.process(e).await;
                    }
                    draining = false;
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(result);
                    }
                }
                Some(GatewayUpdate::Event { event: Event::Envelope(e), .. }) => {
                    if draining { held.push(e) } else { state.process(e).await }
                }
                Some(GatewayUpdate::Event { event: Event::PreKeysLow(_), .. }) => {
                    if let Err(e) = state.top_up().await {
                        tracing::warn!(error = %e, "prekey top-up failed");
                    }
                }
                Some(_) => {}
            },
            command = commands.recv() => match command {
                None => return,
                Some(Command::Close { reply }) => {
                    gateway.close().await;
                    let _ = reply.send(());
                    return;
                }
                Some(Command::Send { to, body, reply }) => {
                    // The ratchet steps are flushed before the envelopes leave (`post`); the
                    // sent-message log and the history entry then go in one write.
                    state.device.vault().begin_batch();
                    let result = state.send_dm(to, body).await;
                    if let Err(e) = state.device.vault().commit_batch().await {
                        tracing::warn!(error = %e, "could not keep a sent message in the store");
                    }
                    state.report_identity_changes();
                    let _ = reply.send(result);
                }
                Some(Command::SafetyNumbers { user, reply }) => {
                    let _ = reply.send(state.safety_numbers(user).await);
                }
                Some(Command::History { conversation, before, limit, reply }) => {
                    let history = History::new(state.device.vault());
                    let _ = reply.send(history.page(&conversation.to_string(), before, limit).await.map_err(Into::into));
                }
                Some(Command::Conversations { reply }) => {
                    let list = History::new(state.device.vault()).conversations().await;
                    let _ = reply.send(list.map(|l| l.iter().filter_map(|c| c.parse().ok()).collect()).map_err(Into::into));
                }
                Some(Command::Verify { user, device, reply }) => {
                    let _ = reply.send(state.device.set_verified(user, device, true).await.map_err(Into::into));
                }
                #[cfg(feature = "testing")]
                Some(Command::CorruptSession { user, device, reply }) => {
                    let _ = reply.send(state.device.corrupt_session(user, device).await.map_err(Into::into));
                }
                #[cfg(feature = "testing")]
                Some(Command::DropConnection) => gateway.simulate_network_drop(),
                #[cfg(feature = "testing")]
                Some(Command::Reconnect) => gateway.reconnect(),
            },
        }
    }
}

async fn start(
    client: &Client,
    me: UserId,
    my_device: DeviceId,
    path: &std::path::Path,
    passphrase: &str,
    clock: Clock,
    out: mpsc::UnboundedSender<Incoming>,
) -> Result<State, MessagingError> {
    let backend = SqliteBackend::open(path).await?;
    let vault = Vault::open(Box::new(backend), passphrase).await?;
    let (device, upload) = E2eeDevice::open(vault, me).await?;
    if let Some(upload) = upload {
        client.put_keys(&upload).await?;
    }
    let mut state = State {
        client: client.clone(),
        me,
        my_device,
        device,
        out,
        devices: BTreeMap::new(),
        seen: HashSet::new(),
        answered: HashMap::new(),
        clock,
        acks: Vec::new(),
    };
    state.top_up().await?;
    Ok(state)
}

impl State {
    /// Publishes new one-time prekeys when few are left, and new signed prekeys when the
    /// current ones are due for rotation.
    async fn top_up(&mut self) -> Result<(), MessagingError> {
        if let Some(rotated) = self.device.rotate_signed_prekeys_if_due(self.clock.now_ms()).await? {
            if let Err(e) = self.client.put_keys(&rotated).await {
                self.device.rotation_not_published().await?;
                return Err(e.into());
            }
        }
        let count: PreKeyCount = self.client.api(Method::GET, "/api/v1/keys/count", None::<&()>).await?;
        if count.pre_keys < 20 || count.pq_pre_keys < 20 {
            let upload = self.device.keys_to_upload(false, crate::crypto::device::PREKEY_BATCH).await?;
            self.client.put_keys(&upload).await?;
        }
        Ok(())
    }

    async fn drain_queue(&mut self) -> Result<(), MessagingError> {
        // Acknowledgements go out after the drain, so page with a cursor: the queue still
        // holds the pages already processed.
        let mut after: Option<EnvelopeId> = None;
        loop {
            let path = match after {
                Some(id) => format!("/api/v1/messages?limit=200&after={id}"),
                None => "/api/v1/messages?limit=200".to_owned(),
            };
            let queue: Queue = self.client.api(Method::GET, &path, None::<&()>).await?;
            let more = queue.more;
            after = queue.envelopes.last().map(|e| e.id).or(after);
            for e in queue.envelopes {
                self.process(e).await;
            }
            if !more {
                return Ok(());
            }
        }
    }

    async fn process(&mut self, envelope: Envelope) {
        if !self.seen.insert(envelope.id) {
            // Processed already, but still queued: its ACK may have been lost with a dropped
            // connection. Acknowledge it again.
            self.acks.push(envelope.id);
            return;
        }
        if self.seen.len() > 10_000 {
            self.seen.clear();
            self.seen.insert(envelope.id);
        }
        // The ratchet step and the history entry are written together, and only then is the
        // envelope acknowledged: a crash in between leaves it queued and undecrypted, to be
        // read again, rather than decrypted and lost (libsignal would take it as a duplicate).
        self.device.vault().begin_batch();
        match self.device.decrypt(&envelope).await {
            Ok(Decrypted::Message(plaintext)) => match serde_json::from_slice::<Content>(&plaintext) {
                Ok(content) => {
                    let outgoing = envelope.sender == self.me;
                    let message = DirectMessage {
                        message_id: content.id,
                        conversation: if outgoing { content.to } else { envelope.sender },
                        author: envelope.sender,
                        author_device: envelope.sender_device,
                        outgoing,
                        body: content.body,
                        sent_at: envelope.server_timestamp,
                    };
                    match self.remember(&message).await {
                        Ok(true) => {
                            let _ = self.out.send(Incoming::Message(message));
                        }
                        Ok(false) => tracing::debug!("message already in history"),
                        // The ratchet has moved on: this envelope cannot be decrypted again, so
                        // the user sees the message now even if history could not keep it.
                        Err(e) => {
                            tracing::warn!(error = %e, "could not store a message in history");
                            let _ = self.out.send(Incoming::Message(message));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "decrypted envelope holds no message"),
            },
            Ok(Decrypted::Duplicate) => tracing::debug!(envelope = %envelope.id, "duplicate envelope dropped"),
            Ok(Decrypted::RetryRequest { timestamp, device, ratchet_key }) => {
                let (user, from) = (envelope.sender, envelope.sender_device);
                match self.resend(user, from, device, timestamp, ratchet_key.as_deref()).await {
                    Ok(None) => {}
                    Ok(Some(reason)) => {
                        tracing::warn!(user = %user, device = %from, ?reason, "retry request refused");
                        let _ = self.out.send(Incoming::RetryRefused { user, device: from, timestamp, reason });
                    }
                    Err(e) => tracing::warn!(error = %e, "could not answer a retry request"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, sender = %envelope.sender, "envelope could not be decrypted; asking for a retry");
                if let Err(e) = self.request_retry(&envelope).await {
                    tracing::warn!(error = %e, "retry request failed");
                }
                let _ = self.out.send(Incoming::RetryRequested { user: envelope.sender, device: envelope.sender_device });
            }
        }
        self.report_identity_changes();
        match self.device.vault().commit_batch().await {
            Ok(()) => self.acks.push(envelope.id),
            Err(e) => {
                // Not acknowledged: it comes again from the queue and is processed again.
                tracing::error!(error = %e, "could not store what an envelope changed; it will be processed again");
                self.seen.remove(&envelope.id);
            }
        }
    }

    /// Acknowledges processed envelopes over the gateway, up to 100 per frame. An ACK lost
    /// with a dropped connection only means the envelopes come again from the queue, and
    /// they are recognised as duplicates then.
    fn flush_acks(&mut self, gateway: &GatewayHandle) {
        for ids in self.acks.chunks(crate::limits::ACK_IDS_MAX) {
            gateway.send(ClientMessage::Ack(Ack { ids: ids.to_vec() }));
        }
        self.acks.clear();
    }

    /// Adds a message to the history; `false` if it was already there.
    async fn remember(&self, message: &DirectMessage) -> Result<bool, VaultError> {
        History::new(self.device.vault()).append(&message.conversation.to_string(), &message.message_id, message).await
    }

    fn report_identity_changes(&mut self) {
        for (user, device) in self.device.take_identity_changes() {
            let _ = self.out.send(Incoming::IdentityChanged { user, device });
        }
    }

    async fn request_retry(&mut self, envelope: &Envelope) -> Result<(), MessagingError> {
        let request = E2eeDevice::retry_request(envelope)?;
        // The session is broken: the next message to this device starts a fresh one.
        self.device.forget_session(envelope.sender, envelope.sender_device).await?;
        self.post(&SendMessage { recipient: envelope.sender, messages: vec![request], sync_messages: Vec::new(), partial: true })
            .await
            .map(drop)
            .map_err(Into::into)
    }

    /// Answers a retry request from `device` of `user` for what `original_device` of this
    /// user sent at `timestamp`: re-sends it only if it was sent to that very device, within
    /// the resend window, and the device still has the identity key it had then. Returns why
    /// it was refused otherwise.
    async fn resend(
        &mut self,
        user: UserId,
        device: DeviceId,
        original_device: DeviceId,
        timestamp: i64,
        ratchet_key: Option<&[u8]>,
    ) -> Result<Option<RetryRefusal>, MessagingError> {
        if original_device != self.my_device {
            // A genuine request goes to the device that sent the message, and names it.
            return Ok(Some(RetryRefusal::NotARecipient));
        }
        let answers = self.answered.entry((user, device, timestamp)).or_insert(0);
        if *answers >= RESEND_ANSWERS_MAX {
            return Ok(Some(RetryRefusal::AnsweredAlready));
        }
        let found = match SentLog::new(self.device.vault()).find(user, device, timestamp, self.clock.now_ms()).await {
            Ok(found) => found,
            Err(refusal) => return Ok(Some(refusal.into())),
        };
        *answers += 1;
        if self.answered.len() > 10_000 {
            self.answered.clear();
        }
        // Only now, for a genuine request: drop the session the requester failed on.
        if let Some(ratchet) = ratchet_key {
            self.device.drop_failed_session(user, device, ratchet).await?;
        }
        for entry in &found {
            if self.device.session_registration(user, device).await?.is_none() {
                // A fresh session, from a bundle checked against the identity the message was
                // first encrypted to before it is installed: a swapped bundle gets nothing.
                let bundles: UserBundles =
                    self.client.api(Method::GET, &format!("/api/v1/keys/{user}/{device}"), None::<&()>).await?;
                let Some(bundle) = bundles.devices.iter().find(|b| b.device_id == device) else {
                    return Ok(Some(RetryRefusal::NotARecipient));
                };
                if bundle.identity_key.as_slice() != entry.identity.as_slice() {
                    return Ok(Some(RetryRefusal::IdentityChanged));
                }
                self.device.start_session(user, bundle).await?;
            }
            // The session that encrypts must hold that identity too, not only the record.
            let envelope = match self.device.encrypt_pinned(user, device, &entry.content, &entry.identity).await {
                Ok(envelope) => envelope,
                Err(CryptoError::IdentityMismatch) => return Ok(Some(RetryRefusal::IdentityChanged)),
                Err(e) => return Err(e.into()),
            };
            self.post(&SendMessage { recipient: user, messages: vec![envelope], sync_messages: Vec::new(), partial: true })
                .await?;
        }
        Ok(None)
    }

    /// Keeps a sent message in the log for retry requests, with the devices it went to.
    async fn log_sent(&self, message_id: &str, sent_at: i64, content: &[u8], envelopes: &[(UserId, &OutgoingEnvelope)]) {
        let mut recipients = Vec::with_capacity(envelopes.len());
        for (user, e) in envelopes {
            // The identity of the session that encrypted it (the record agrees: see
            // `E2eeDevice::decrypt`).
            match self.device.session_identity(*user, e.device_id).await {
                Ok(Some(identity)) => recipients.push(SentTo { user: *user, device: e.device_id, identity: identity.into() }),
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "identity not found for the sent-message log"),
            }
        }
        let entry = SentEntry {
            message_id: message_id.to_owned(),
            sent_at,
            logged_at: self.clock.now_ms(),
            content: content.to_vec().into(),
            recipients,
        };
        // A message that is not in the log can only not be re-sent: the send itself stands.
        if let Err(e) = SentLog::new(self.device.vault()).record(&entry, self.clock.now_ms()).await {
            tracing::warn!(error = %e, "could not keep a sent message for retries");
        }
    }

    async fn ensure_session(&mut self, user: UserId, device: DeviceId) -> Result<(), MessagingError> {
        if self.device.session_registration(user, device).await?.is_some() {
            return Ok(());
        }
        let bundles: UserBundles = self.client.api(Method::GET, &format!("/api/v1/keys/{user}/{device}"), None::<&()>).await?;
        // Only the device asked for: an answer naming others installs nothing for them.
        for b in bundles.devices.iter().filter(|b| b.device_id == device) {
            self.device.start_session(user, b).await?;
        }
        Ok(())
    }

    async fn known_devices(&mut self, user: UserId) -> Result<Vec<DeviceId>, MessagingError> {
        if let Some(d) = self.devices.get(&user) {
            return Ok(d.clone());
        }
        // First contact: one bundle per device, and a session with each.
        let fetched: Result<UserBundles, _> = self.client.api(Method::GET, &format!("/api/v1/keys/{user}"), None::<&()>).await;
        let devices = match fetched {
            Ok(bundles) => {
                for b in &bundles.devices {
                    if self.device.session_registration(user, b.device_id).await?.is_none() {
                        self.device.start_session(user, b).await?;
                    }
                }
                bundles.devices.iter().map(|b| b.device_id).collect()
            }
            // This user has no other device with keys.
            Err(ClientError::Api { status: StatusCode::NOT_FOUND, .. }) if user == self.me => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        self.devices.insert(user, devices.clone());
        Ok(devices)
    }

    async fn encrypt_for(
        &mut self,
        user: UserId,
        devices: &[DeviceId],
        plaintext: &[u8],
    ) -> Result<Vec<OutgoingEnvelope>, MessagingError> {
        let mut out = Vec::with_capacity(devices.len());
        for &d in devices {
            if user == self.me && d == self.my_device {
                continue;
            }
            self.ensure_session(user, d).await?;
            out.push(self.device.encrypt(user, d, plaintext).await?);
        }
        Ok(out)
    }

    async fn send_dm(&mut self, to: UserId, body: String) -> Result<DirectMessage, MessagingError> {
        if to == self.me {
            return Err(MessagingError::Send("a direct message goes to someone else".into()));
        }
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let content = Content { id: id.iter().map(|b| format!("{b:02x}")).collect(), to, body };
        let plaintext = serde_json::to_vec(&content).map_err(|e| MessagingError::Send(e.to_string()))?;
        for _attempt in 0..4 {
            let theirs = self.known_devices(to).await?;
            let mine = self.known_devices(self.me).await?;
            let messages = self.encrypt_for(to, &theirs, &plaintext).await?;
            let sync_messages = self.encrypt_for(self.me, &mine, &plaintext).await?;
            let send = SendMessage { recipient: to, messages, sync_messages, partial: false };
            match self.post(&send).await {
                Ok(receipt) => {
                    let sent_to: Vec<(UserId, &OutgoingEnvelope)> =
                        send.messages.iter().map(|e| (to, e)).chain(send.sync_messages.iter().map(|e| (self.me, e))).collect();
                    self.log_sent(&content.id, receipt.server_timestamp, &plaintext, &sent_to).await;
                    let message = DirectMessage {
                        message_id: content.id,
                        conversation: to,
                        author: self.me,
                        author_device: self.my_device,
                        outgoing: true,
                        body: content.body,
                        sent_at: receipt.server_timestamp,
                    };
                    // The server accepted it: the send succeeded even if history cannot keep
                    // it (an error here would make the caller send it twice).
                    if let Err(e) = self.remember(&message).await {
                        tracing::warn!(error = %e, "could not store a sent message in history");
                    }
                    return Ok(message);
                }
                Err(PostError::Mismatch(m)) => {
                    self.apply_mismatch(to, &m.recipient).await?;
                    self.apply_mismatch(self.me, &m.own).await?;
                }
                Err(PostError::Other(e)) => return Err(e),
            }
        }
        Err(MessagingError::Send("the device lists kept changing; try again".into()))
    }

    async fn apply_mismatch(&mut self, user: UserId, m: &crate::messages::DeviceMismatch) -> Result<(), MessagingError> {
        let list = self.devices.entry(user).or_default();
        for d in &m.extra_devices {
            list.retain(|x| x != d);
        }
        for d in &m.missing_devices {
            if !list.contains(d) {
                list.push(*d);
            }
        }
        list.sort();
        for d in m.extra_devices.iter().chain(&m.stale_devices) {
            self.device.forget_session(user, *d).await?;
        }
        Ok(())
    }

    async fn post(&self, body: &SendMessage) -> Result<SendReceipt, PostError> {
        // What an envelope was encrypted with (a ratchet step, a new session) is on disk
        // before the envelope leaves: a counter is never used twice after a crash.
        self.device.vault().flush_batch().await.map_err(|e| PostError::Other(e.into()))?;
        match self.client.api::<SendReceipt>(Method::POST, "/api/v1/messages", Some(body)).await {
            Ok(r) => Ok(r),
            Err(ClientError::Api { body: err, .. }) if err.error.code == ErrorCode::DeviceMismatch => {
                let details: SendMismatch = err.error.details.and_then(|d| serde_json::from_value(d).ok()).unwrap_or_default();
                Err(PostError::Mismatch(details))
            }
            Err(e) => Err(PostError::Other(e.into())),
        }
    }

    async fn safety_numbers(&mut self, user: UserId) -> Result<Vec<(DeviceId, String)>, MessagingError> {
        let devices = self.known_devices(user).await?;
        let mut out = Vec::new();
        for d in devices {
            if let Some(number) = self.device.safety_number(user, d).await? {
                out.push((d, number));
            }
        }
        Ok(out)
    }
}

enum PostError {
    Mismatch(SendMismatch),
    Other(MessagingError),
}

impl From<MessagingError> for PostError {
    fn from(e: MessagingError) -> Self {
        PostError::Other(e)
    }
}

impl From<PostError> for MessagingError {
    fn from(e: PostError) -> Self {
        match e {
            PostError::Mismatch(_) => MessagingError::Send("device lists changed".into()),
            PostError::Other(e) => e,
        }
    }
}
