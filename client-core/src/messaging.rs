//! End-to-end encrypted direct messages for the native [`Client`]: a thin driver around the
//! sans-IO [`Engine`].
//!
//! [`Client::enable_e2ee`] starts a messenger: a thread that owns the engine (libsignal's
//! stores are not `Send`, and one owner keeps every ratchet step in order). The driver keeps a
//! gateway connection, hands the engine the envelopes it receives and the time, makes the
//! engine's requests with the [`Client`], sends the acknowledgements it asks for, and passes
//! its events on. Everything the engine decides (what to decrypt, what to answer, what to
//! refuse) is the same code the browser runs.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Method;
use tokio::sync::{mpsc, oneshot};

use crate::client::{Client, ClientError, GatewayHandle, GatewayUpdate};
use crate::crypto::sqlite::SqliteBackend;
use crate::engine::{Answer, Engine, Transport};
pub use crate::engine::{
    ChannelDraft, ChannelEntry, DirectMessage, EntryState, Has, HistoryEntry, HistoryQuery, HitPlace, Incoming, LinkState,
    MessagingError, OwnDevice, ReactionSummary, ReplyTo, RetryRefusal, SafetyNumber, SearchHit, SearchQuery, SearchResults,
};
use crate::gateway::{Ack, ClientMessage, Event};
use crate::ids::{ChannelId, DeviceId, MessageId, UserId};
use crate::messages::Envelope;

impl From<ClientError> for MessagingError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api { status, body } => MessagingError::Api { status: status.as_u16(), body },
            other => MessagingError::Transport(other.to_string()),
        }
    }
}

#[async_trait(?Send)]
impl Transport for Client {
    async fn request(&self, method: &str, path: &str, body: Option<String>) -> Result<Answer, String> {
        let method = Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        self.raw(method, path, body).await.map_err(|e| e.to_string())
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

/// A call on the engine, run on the messenger's thread.
type EngineCall =
    Box<dyn for<'a> FnOnce(&'a mut Engine<Client>, i64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> + Send>;

enum Command {
    Run(EngineCall),
    Send {
        to: UserId,
        body: String,
        reply: oneshot::Sender<Result<DirectMessage, MessagingError>>,
    },
    History {
        conversation: UserId,
        before: Option<u64>,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<(u64, HistoryEntry)>, MessagingError>>,
    },
    Conversations {
        reply: oneshot::Sender<Result<Vec<UserId>, MessagingError>>,
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
        let session = self.session_id().await.ok_or(ClientError::NotLoggedIn)?;
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
                rt.block_on(run(client, (user, device, session), path, passphrase, clock, command_rx, incoming_tx, ready_tx));
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

    /// Runs `call` on the engine (on the messenger's thread) and returns what it gives.
    async fn with_engine<R: Send + 'static>(
        &self,
        call: impl for<'a> FnOnce(&'a mut Engine<Client>, i64) -> std::pin::Pin<Box<dyn std::future::Future<Output = R> + 'a>>
            + Send
            + 'static,
    ) -> Result<R, MessagingError> {
        let (reply, rx) = oneshot::channel();
        let run: EngineCall = Box::new(move |engine, now| {
            Box::pin(async move {
                let _ = reply.send(call(engine, now).await);
            })
        });
        self.commands.send(Command::Run(run)).map_err(|_| MessagingError::Stopped)?;
        rx.await.map_err(|_| MessagingError::Stopped)
    }

    /// Where this device stands in its account.
    pub async fn link_state(&self) -> Result<LinkState, MessagingError> {
        self.with_engine(|e, _| Box::pin(async move { e.link_state() })).await
    }

    /// The recovery key made when this device created the account, until confirmed.
    pub async fn unconfirmed_recovery_key(&self) -> Result<Option<String>, MessagingError> {
        self.with_engine(|e, _| Box::pin(async move { e.unconfirmed_recovery_key() })).await
    }

    /// Asks to be linked; returns the code to show.
    pub async fn begin_link(&self) -> Result<String, MessagingError> {
        self.with_engine(|e, now| Box::pin(async move { e.begin_link(now).await })).await?
    }

    /// Approves a pending device of this user with the code it shows.
    pub async fn approve_link(&self, device: DeviceId, code: &str) -> Result<(), MessagingError> {
        let code = code.to_owned();
        self.with_engine(move |e, now| Box::pin(async move { e.approve_link(device, &code, now).await })).await?
    }

    /// Links this device with the account's recovery key.
    pub async fn link_with_recovery_key(&self, key: &str) -> Result<(), MessagingError> {
        let key = key.to_owned();
        self.with_engine(move |e, now| Box::pin(async move { e.link_with_recovery_key(&key, now).await })).await?
    }

    /// Starts a new account identity with this device alone; returns the new recovery key.
    pub async fn reset_identity(&self, password: &str) -> Result<String, MessagingError> {
        let password = password.to_owned();
        self.with_engine(move |e, now| Box::pin(async move { e.reset_identity(&password, now).await })).await?
    }

    /// Makes a new recovery key.
    pub async fn new_recovery_key(&self) -> Result<String, MessagingError> {
        self.with_engine(|e, now| Box::pin(async move { e.new_recovery_key(now).await })).await?
    }

    /// This user's devices, linked or pending.
    pub async fn own_devices(&self) -> Result<Vec<OwnDevice>, MessagingError> {
        self.with_engine(|e, now| Box::pin(async move { e.own_devices(now).await })).await?
    }

    /// Removes a device from the account (out of the signed list, then off the server).
    pub async fn remove_device(&self, device: DeviceId) -> Result<(), MessagingError> {
        self.with_engine(move |e, now| Box::pin(async move { e.remove_device(device, now).await })).await?
    }

    /// The safety number with `user` (one per account).
    pub async fn safety_number(&self, user: UserId) -> Result<SafetyNumber, MessagingError> {
        self.with_engine(move |e, now| Box::pin(async move { e.safety_number(user, now).await })).await?
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
        let entries = self.entries(conversation, before, limit).await?;
        Ok(entries
            .into_iter()
            .filter_map(|(pos, e)| match e {
                HistoryEntry::Message(m) => Some((pos, m)),
                HistoryEntry::Undecryptable { .. } | HistoryEntry::IdentityChanged { .. } => None,
            })
            .collect())
    }

    /// [`Messenger::history`] with every entry, the undecryptable ones included.
    pub async fn entries(
        &self,
        conversation: UserId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, HistoryEntry)>, MessagingError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::History { conversation, before, limit, reply }).map_err(|_| MessagingError::Stopped)?;
        rx.await.map_err(|_| MessagingError::Stopped)?
    }

    /// The users this device has a conversation with, the most recently active first.
    pub async fn conversations(&self) -> Result<Vec<UserId>, MessagingError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Conversations { reply }).map_err(|_| MessagingError::Stopped)?;
        rx.await.map_err(|_| MessagingError::Stopped)?
    }

    /// Marks a contact verified (after comparing safety numbers): if their account key
    /// changes, nothing is sent to them until the user accepts the new safety number.
    pub async fn verify(&self, user: UserId) -> Result<(), MessagingError> {
        self.set_verified(user, true).await
    }

    /// Marks a contact verified or not; `false` also accepts a changed safety number.
    pub async fn set_verified(&self, user: UserId, verified: bool) -> Result<(), MessagingError> {
        self.with_engine(move |e, _| Box::pin(async move { e.set_verified(user, verified).await })).await?
    }

    // ---- channels ------------------------------------------------------------------------

    /// Sends a message to a channel or a group DM (end-to-end encrypted with this device's
    /// sender key). Returns it as shown.
    pub async fn channel_send(&self, channel: ChannelId, draft: ChannelDraft) -> Result<ChannelEntry, MessagingError> {
        self.with_engine(move |e, now| Box::pin(async move { e.channel_send(channel, draft, now).await })).await?
    }

    /// Lowers how many bytes of key distributions one request carries (the rest goes first, in
    /// `sender-keys` requests): lets tests take the path a channel of hundreds of devices
    /// takes with a handful.
    #[doc(hidden)]
    pub async fn set_distribution_bytes_per_request(&self, bytes: usize) -> Result<(), MessagingError> {
        self.with_engine(move |e, _| Box::pin(async move { e.set_distribution_bytes_per_request(bytes) })).await
    }

    /// Sends a plain message to a channel.
    pub async fn channel_say(&self, channel: ChannelId, body: &str) -> Result<ChannelEntry, MessagingError> {
        self.channel_send(channel, ChannelDraft { body: body.to_owned(), ..ChannelDraft::default() }).await
    }

    /// Edits one of this user's channel messages.
    pub async fn channel_edit(&self, channel: ChannelId, message: MessageId, body: &str) -> Result<ChannelEntry, MessagingError> {
        let body = body.to_owned();
        self.with_engine(move |e, now| Box::pin(async move { e.channel_edit(channel, message, &body, now).await })).await?
    }

    /// Deletes a channel message.
    pub async fn channel_delete(&self, channel: ChannelId, message: MessageId) -> Result<(), MessagingError> {
        self.with_engine(move |e, now| Box::pin(async move { e.channel_delete(channel, message, now).await })).await?
    }

    /// Reacts to a channel message.
    pub async fn channel_react(
        &self,
        channel: ChannelId,
        message: MessageId,
        emoji: &str,
    ) -> Result<ChannelEntry, MessagingError> {
        let emoji = emoji.to_owned();
        self.with_engine(move |e, now| Box::pin(async move { e.channel_react(channel, message, &emoji, now).await })).await?
    }

    /// Takes back this user's reactions with `emoji` on a channel message.
    pub async fn channel_unreact(
        &self,
        channel: ChannelId,
        message: MessageId,
        emoji: &str,
    ) -> Result<ChannelEntry, MessagingError> {
        let emoji = emoji.to_owned();
        self.with_engine(move |e, now| Box::pin(async move { e.channel_unreact(channel, message, &emoji, now).await })).await?
    }

    /// A page of a channel's history, decrypted, oldest first.
    pub async fn channel_history(&self, channel: ChannelId, query: HistoryQuery) -> Result<Vec<ChannelEntry>, MessagingError> {
        self.with_engine(move |e, now| Box::pin(async move { e.channel_history(channel, query, now).await })).await?
    }

    /// The pinned messages of a channel, decrypted.
    pub async fn channel_pins(&self, channel: ChannelId) -> Result<Vec<ChannelEntry>, MessagingError> {
        self.with_engine(move |e, now| Box::pin(async move { e.channel_pins(channel, now).await })).await?
    }

    /// Searches this device's history (the query never leaves the device).
    pub async fn search(&self, query: SearchQuery) -> Result<SearchResults, MessagingError> {
        self.with_engine(move |e, _| Box::pin(async move { e.search(&query).await })).await?
    }

    /// Reads one more page of a channel's history for search; `true` when all of it is read.
    pub async fn search_crawl(&self, channel: ChannelId, fresh: bool) -> Result<bool, MessagingError> {
        self.with_engine(move |e, now| Box::pin(async move { e.search_crawl(channel, fresh, now).await })).await?
    }

    /// The distribution id of this device's current sender key in a channel.
    pub async fn channel_distribution(&self, channel: ChannelId) -> Result<Option<String>, MessagingError> {
        self.with_engine(move |e, _| Box::pin(async move { e.channel_distribution(channel).await })).await?
    }

    /// Tries to decrypt a stored channel message handed over directly (tests: what a device
    /// could read of a ciphertext it got outside the server's delivery).
    #[cfg(feature = "testing")]
    pub async fn try_decrypt_channel_message(
        &self,
        message: crate::channel_messages::ChannelMessage,
    ) -> Result<Option<String>, MessagingError> {
        self.with_engine(move |e, _| Box::pin(async move { e.try_decrypt_channel_message(&message).await })).await?
    }

    /// The next channel entry (skipping other notices).
    pub async fn next_channel_entry(&mut self) -> Option<ChannelEntry> {
        loop {
            if let Incoming::ChannelEntry(entry) = self.incoming.recv().await? {
                return Some(entry);
            }
        }
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

/// How often a running messenger checks its prekeys (count and age).
const KEY_MAINTENANCE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

type Ready = oneshot::Sender<Result<(), MessagingError>>;

#[allow(clippy::too_many_arguments)]
async fn run(
    client: Client,
    (me, my_device, session): (UserId, DeviceId, crate::ids::SessionId),
    path: PathBuf,
    passphrase: String,
    clock: Clock,
    mut commands: mpsc::UnboundedReceiver<Command>,
    out: mpsc::UnboundedSender<Incoming>,
    ready: Ready,
) {
    let opened = async {
        let backend = SqliteBackend::open(&path).await?;
        let mut engine =
            Engine::open(client.clone(), Box::new(backend), &passphrase, me, my_device, session, clock.now_ms()).await?;
        engine.start(clock.now_ms()).await?;
        Ok::<_, MessagingError>(engine)
    };
    let mut engine = match opened.await {
        Ok(e) => e,
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
        deliver(&mut engine, &gateway, &out);
        tokio::select! {
            _ = maintenance.tick() => {
                if let Err(e) = engine.maintain(clock.now_ms()).await {
                    tracing::warn!(error = %e, "key maintenance failed");
                }
            }
            update = gateway.next() => match update {
                None | Some(GatewayUpdate::Closed { .. }) => return,
                Some(GatewayUpdate::Disconnected { .. }) => draining = true,
                Some(GatewayUpdate::Connected { .. }) => {
                    if let Err(e) = engine.poll_link(clock.now_ms()).await {
                        tracing::warn!(error = %e, "could not look for a link answer");
                    }
                    let result = engine.drain_queue(clock.now_ms()).await;
                    for e in std::mem::take(&mut held) {
                        engine.handle_envelope(e, clock.now_ms()).await;
                    }
                    draining = false;
                    if let Some(ready) = ready.take() {
                        deliver(&mut engine, &gateway, &out);
                        let _ = ready.send(result);
                    }
                }
                Some(GatewayUpdate::Event { event: Event::Envelope(e), .. }) => {
                    if draining { held.push(e) } else { engine.handle_envelope(e, clock.now_ms()).await }
                }
                Some(GatewayUpdate::Event { event: Event::PreKeysLow(_), .. }) => {
                    if let Err(e) = engine.maintain(clock.now_ms()).await {
                        tracing::warn!(error = %e, "prekey top-up failed");
                    }
                }
                Some(GatewayUpdate::Event { event: Event::Unknown { name, data }, .. }) => {
                    if let Err(e) = engine.handle_event(&name, data, clock.now_ms()).await {
                        tracing::warn!(error = %e, event = %name, "event not handled");
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
                    let result = engine.send_dm(to, &body, clock.now_ms()).await;
                    let _ = reply.send(result);
                }
                Some(Command::Run(call)) => call(&mut engine, clock.now_ms()).await,
                Some(Command::History { conversation, before, limit, reply }) => {
                    let _ = reply.send(engine.history(conversation, before, limit).await);
                }
                Some(Command::Conversations { reply }) => {
                    let list = engine.conversations().await.map(|l| l.into_iter().map(|c| c.user).collect());
                    let _ = reply.send(list);
                }
                #[cfg(feature = "testing")]
                Some(Command::CorruptSession { user, device, reply }) => {
                    let _ = reply.send(engine.e2ee_device().corrupt_session(user, device).await.map_err(Into::into));
                }
                #[cfg(feature = "testing")]
                Some(Command::DropConnection) => gateway.simulate_network_drop(),
                #[cfg(feature = "testing")]
                Some(Command::Reconnect) => gateway.reconnect(),
            },
        }
    }
}

/// Passes the engine's events on and acknowledges what it processed.
fn deliver(engine: &mut Engine<Client>, gateway: &GatewayHandle, out: &mpsc::UnboundedSender<Incoming>) {
    for event in engine.take_events() {
        let _ = out.send(event);
    }
    for ids in engine.take_acks().chunks(crate::limits::ACK_IDS_MAX) {
        gateway.send(ClientMessage::Ack(Ack { ids: ids.to_vec() }));
    }
}
