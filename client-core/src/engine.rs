//! The end-to-end encryption engine for direct messages, with no I/O of its own.
//!
//! [`Engine`] owns this device's Signal protocol state (libsignal over the encrypted
//! [`Vault`]) and the decrypted history. Its inputs are what the driver hands it: gateway
//! events ([`Engine::handle_envelope`]), the time (`now`, Unix milliseconds, given with every
//! call) and the answers to the REST requests it makes through the driver's [`Transport`]. Its
//! outputs are the events to show ([`Engine::take_events`]), the envelope ids to acknowledge
//! over the gateway ([`Engine::take_acks`]) and errors. It never opens a socket, reads a clock
//! or spawns a task, so the same code runs in the native client ([`crate::messaging`], over
//! reqwest and tokio) and in the browser (`crate::wasm`, over `fetch` and IndexedDB).
//!
//! A retry request is answered only from the sent-message log ([`SentLog`]): to a device the
//! message was encrypted to, still with the identity key it had then, within a day. Anything
//! else is refused and reported ([`Incoming::RetryRefused`]), so neither another user nor the
//! server can have a message re-encrypted to a key of its choosing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::crypto::account::{AccountError, AccountKey, PendingLink};
use crate::crypto::store::Trust;
use crate::crypto::{
    CryptoError, Decrypted, E2eeDevice, History, Refusal, SentEntry, SentLog, SentTo, Vault, VaultBackend, VaultError,
};
use crate::devices::LinkRequest;
use crate::error::{ApiErrorBody, ErrorCode};
use crate::ids::{DeviceId, EnvelopeId, SessionId, UserId};
use crate::keys::{PreKeyCount, UploadKeys, UserBundles};
use crate::messages::{Envelope, OutgoingEnvelope, Queue, SendMessage, SendMismatch, SendReceipt};

mod accounts;
mod channels;
mod search;
#[cfg(feature = "voice")]
mod voice;
use accounts::KnownAccount;
pub use accounts::{LinkState, OwnDevice, SafetyNumber};
pub use channels::{
    ChannelDraft, ChannelEntry, EntryState, HistoryQuery, ReactionSummary, ReplyTo, EMOJI_MAX_BYTES, THREAD_NAME_MAX_CHARS,
};
pub use search::{Has, HitPlace, SearchHit, SearchQuery, SearchResults, QUERY_MAX_CHARS, SEARCH_PAGE, SEARCH_PAGE_MAX};
#[cfg(feature = "voice")]
pub use voice::{OpenedVoiceKey, SealedVoiceKeys};

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// The server answered with an error.
    #[error("server answered {status}: {}", body.error.message)]
    Api {
        /// HTTP status.
        status: u16,
        /// The error body (a generic one if the server sent none).
        body: ApiErrorBody,
    },
    /// The request did not reach the server, or its answer could not be read.
    #[error("network: {0}")]
    Transport(String),
    /// Encryption.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The local store.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The messenger stopped.
    #[error("messenger stopped")]
    Stopped,
    /// The send could not be completed.
    #[error("{0}")]
    Send(String),
    /// A contact the user verified now has another account key: nothing is sent to them
    /// until the user accepts the new safety number ([`Engine::set_verified`] with `false`) or
    /// verifies it again.
    #[error("the safety number with user {user} changed; verify it before sending")]
    UntrustedIdentity {
        /// The contact.
        user: UserId,
    },
    /// Account material was refused (a list that does not verify, a wrong code or recovery
    /// key).
    #[error(transparent)]
    Account(#[from] AccountError),
    /// A device list was refused (older than the one known, gone, or not the account's).
    #[error("{0}")]
    DeviceList(String),
    /// This device is not linked to its account (yet): it can neither send nor approve.
    #[error("this device is not linked to the account yet")]
    NotLinked,
}

impl MessagingError {
    /// The HTTP status of a server error.
    pub fn status(&self) -> Option<u16> {
        match self {
            MessagingError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An answer to a request: the HTTP status and the body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes (JSON, or empty).
    pub body: Vec<u8>,
}

/// How the engine's REST requests reach the server: the driver's authenticated client (it
/// adds the access token and refreshes it). The engine hands each request over and awaits the
/// answer; it keeps no connection of its own.
#[async_trait(?Send)]
pub trait Transport {
    /// Makes `method path` with a JSON `body`. `Ok` for any HTTP answer; `Err` only when no
    /// answer came.
    async fn request(&self, method: &str, path: &str, body: Option<String>) -> Result<Answer, String>;
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

/// One entry of a conversation's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryEntry {
    /// A message.
    Message(DirectMessage),
    /// An envelope that could not be decrypted (yet): a retry request went to its sender's
    /// device. It is marked `repaired` when the message arrives again.
    Undecryptable {
        /// The conversation (the sender).
        conversation: UserId,
        /// Who sent it.
        author: UserId,
        /// From which device.
        author_device: DeviceId,
        /// Server time of the envelope.
        sent_at: i64,
        /// The message came again and was decrypted (it follows in the history).
        repaired: bool,
    },
    /// The other participant's account key changed: their safety number changed. Kept in the
    /// conversation, where it happened, as Signal does.
    IdentityChanged {
        /// The conversation (the contact).
        conversation: UserId,
        /// When this device noticed (Unix milliseconds).
        sent_at: i64,
    },
}

impl HistoryEntry {
    /// The conversation the entry belongs to.
    pub fn conversation(&self) -> UserId {
        match self {
            HistoryEntry::Message(m) => m.conversation,
            HistoryEntry::Undecryptable { conversation, .. } | HistoryEntry::IdentityChanged { conversation, .. } => {
                *conversation
            }
        }
    }

    /// When the server received it.
    pub fn sent_at(&self) -> i64 {
        match self {
            HistoryEntry::Message(m) => m.sent_at,
            HistoryEntry::Undecryptable { sent_at, .. } => *sent_at,
            HistoryEntry::IdentityChanged { sent_at, .. } => *sent_at,
        }
    }
}

/// A conversation in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// The other participant.
    pub user: UserId,
    /// The newest entry, with its position.
    pub last: Option<(u64, HistoryEntry)>,
    /// Entries from the other participant since the conversation was last read.
    pub unread: u64,
}

/// What the engine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A message, in the order the server queued it for this device (at its position in the
    /// conversation's history).
    Message(DirectMessage),
    /// A contact's account key changed: their safety number changed.
    IdentityChanged {
        /// The contact.
        user: UserId,
    },
    /// This device is now linked to its account (it reads and sends from now on).
    Linked,
    /// A link answer did not open: the code typed on the other device was not this one's.
    /// Ask again ([`Engine::begin_link`]) for a new code.
    LinkFailed {
        /// Why.
        reason: String,
    },
    /// A pending device of this user asks to be linked (approve with the code it shows).
    LinkRequested(LinkRequest),
    /// This user's signed device list changed.
    OwnDevicesChanged {
        /// Devices linked since.
        added: Vec<DeviceId>,
        /// Devices removed since.
        removed: Vec<DeviceId>,
    },
    /// Another account key replaced this user's (the identity was reset from another device):
    /// this device is no longer linked.
    AccountReplaced,
    /// This device was removed from its account's list: it is no longer linked.
    DeviceRemoved,
    /// An envelope could not be decrypted; a retry request went back to its sender.
    RetryRequested {
        /// The sender.
        user: UserId,
        /// Their device.
        device: DeviceId,
        /// The entry kept in history for it (`None` for a copy from this user's own device).
        position: Option<u64>,
        /// Server time of the envelope.
        sent_at: i64,
    },
    /// A message that could not be decrypted came again and was read: the history entry at
    /// `position` of `conversation` is marked repaired.
    Repaired {
        /// The conversation.
        conversation: UserId,
        /// The undecryptable entry.
        position: u64,
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
    /// A channel message to show, new or changed (edited, reacted to, pinned, or read once
    /// its key came): it replaces the entry with the same id.
    ChannelEntry(ChannelEntry),
    /// A channel message was deleted.
    ChannelMessageDeleted {
        /// Its channel.
        channel: crate::ids::ChannelId,
        /// The message.
        id: crate::ids::MessageId,
    },
}

/// Why a retry request was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

/// How many times one message is sent again to one device on retry requests.
const RESEND_ANSWERS_MAX: u32 = 3;

/// Retry requests sent to one device per minute at most: a peer sending junk gets a few, not
/// one per envelope (each costs this user a send). The envelopes past it are still kept in
/// history as undecryptable.
const RETRY_REQUESTS_PER_MINUTE: u32 = 5;

/// Longest message text, in bytes.
pub const BODY_MAX_BYTES: usize = 16 * 1024;

/// Vault namespace of the per-conversation read marks (kept across devices of this machine).
const READ_NS: &str = "read";
/// Vault namespace of the undecryptable entries waiting for their message (per device).
const REPAIR_NS: &str = "repair";

/// The engine of one device.
pub struct Engine<T: Transport> {
    http: T,
    me: UserId,
    my_device: DeviceId,
    device: E2eeDevice,
    /// Keys to publish before anything else (a new device).
    upload: Option<UploadKeys>,
    /// Accounts checked during this run (signed lists verified against the known keys).
    accounts: HashMap<UserId, KnownAccount>,
    /// Senders (user, device, claimed identity key) a freshly fetched list did not vouch for.
    refused: HashSet<(UserId, DeviceId, Option<Vec<u8>>)>,
    /// Listed devices the server said are gone (a send named them extra), per user, until
    /// the list changes.
    gone: HashMap<UserId, BTreeSet<DeviceId>>,
    /// This device's copy of the account key (linked devices only).
    account: Option<AccountKey>,
    /// Where this device stands in its account.
    state: LinkState,
    /// This device's link exchange, while it waits for an answer.
    pending_link: Option<PendingLink>,
    /// Open link requests of this user's pending devices.
    link_requests: BTreeMap<DeviceId, LinkRequest>,
    /// Devices (by number and identity key) this device removed: a link request of theirs
    /// that arrives afterwards (asked in the moment between being unlisted and being deleted)
    /// is not offered. By key, as the server gives a freed number to the next new device.
    removed_here: HashSet<(DeviceId, Vec<u8>)>,
    /// The recovery key shown at sign-up, until the user confirms writing it down.
    recovery_unconfirmed: Option<String>,
    /// When link answers failed to open (recent ones).
    link_failures: Vec<i64>,
    /// Envelopes already processed (the queue and the live push may overlap).
    seen: HashSet<EnvelopeId>,
    /// Retry requests answered, by (requester, device, timestamp): a message goes again at
    /// most [`RESEND_ANSWERS_MAX`] times to one device.
    answered: HashMap<(UserId, DeviceId, i64), u32>,
    /// Retry requests sent per device in the current minute: (minute start, count).
    retry_requests: HashMap<(UserId, DeviceId), (i64, u32)>,
    /// Processed envelopes not yet acknowledged.
    acks: Vec<EnvelopeId>,
    /// Events not yet taken, with the history position of the entry each one shows.
    events: Vec<(Incoming, Option<u64>)>,
    /// The checked recipient devices of the last view of each channel (see `channels`);
    /// dropped whenever a list, a trust level or a session changes.
    checked_targets: HashMap<crate::ids::ChannelId, channels::CheckedTargets>,
    /// Bytes of key distributions one channel write carries at most.
    distribution_bytes: usize,
    /// The devices this device sealed its media key for, per voice channel, at the latest
    /// epoch it sealed for: the privacy code covers them.
    #[cfg(feature = "voice")]
    voice_sealed: HashMap<crate::ids::ChannelId, voice::Sealed>,
    /// The search index's document table, once a search has read it.
    search_docs: Option<crate::crypto::search::DocTable>,
    /// Channels whose newest messages were read for search during this run.
    search_caught_up: HashSet<crate::ids::ChannelId>,
    now: i64,
}

impl<T: Transport> std::fmt::Debug for Engine<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("me", &self.me).field("device", &self.my_device).finish_non_exhaustive()
    }
}

impl<T: Transport> Engine<T> {
    /// Opens this device's store in `backend` with `passphrase` (creating it, with new keys,
    /// when empty). `session` is the device's login session: it scopes the device's keys in a
    /// store that an earlier device of this account on the same machine left behind (its
    /// history stays readable). Nothing goes to the server until [`Engine::start`].
    pub async fn open(
        http: T,
        backend: Box<dyn VaultBackend>,
        passphrase: &str,
        me: UserId,
        my_device: DeviceId,
        session: SessionId,
        now: i64,
    ) -> Result<Self, MessagingError> {
        let vault = Vault::open(backend, passphrase).await?;
        vault.scope_to_device(session.0 as u64);
        let (device, upload) = E2eeDevice::open(vault, me).await?;
        device.set_now(now);
        Ok(Self {
            http,
            me,
            my_device,
            device,
            upload,
            accounts: HashMap::new(),
            refused: HashSet::new(),
            gone: HashMap::new(),
            account: None,
            state: LinkState::Pending,
            pending_link: None,
            link_requests: BTreeMap::new(),
            removed_here: HashSet::new(),
            recovery_unconfirmed: None,
            link_failures: Vec::new(),
            seen: HashSet::new(),
            answered: HashMap::new(),
            retry_requests: HashMap::new(),
            acks: Vec::new(),
            events: Vec::new(),
            checked_targets: HashMap::new(),
            distribution_bytes: channels::DISTRIBUTION_BYTES_PER_REQUEST,
            #[cfg(feature = "voice")]
            voice_sealed: HashMap::new(),
            search_docs: None,
            search_caught_up: HashSet::new(),
            now,
        })
    }

    /// Forgets the session with a device (and the checked channel recipients that counted
    /// on it).
    async fn forget_session(&mut self, user: UserId, device: DeviceId) -> Result<(), crate::crypto::CryptoError> {
        self.checked_targets.clear();
        self.device.forget_session(user, device).await
    }

    fn tick(&mut self, now: i64) {
        self.now = now;
        self.device.set_now(now);
    }

    /// The time last given (Unix milliseconds).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// This user.
    pub fn user(&self) -> UserId {
        self.me
    }

    /// This device.
    pub fn device_id(&self) -> DeviceId {
        self.my_device
    }

    /// The transport (for the driver's own calls).
    pub fn transport(&self) -> &T {
        &self.http
    }

    /// Publishes the keys of a new device, works out where it stands in its account
    /// ([`Engine::link_state`]: the account's first device creates the account identity), then
    /// tops up prekeys ([`Engine::maintain`]).
    pub async fn start(&mut self, now: i64) -> Result<(), MessagingError> {
        self.tick(now);
        if let Some(upload) = &self.upload {
            self.put_keys(upload).await?;
            self.upload = None;
        }
        self.sync_own_account().await?;
        self.maintain(now).await
    }

    /// Publishes new one-time prekeys when few are left, and new signed prekeys when the
    /// current ones are due for rotation (on `PREKEYS_LOW`, and now and then).
    pub async fn maintain(&mut self, now: i64) -> Result<(), MessagingError> {
        self.tick(now);
        if let Some(rotated) = self.device.rotate_signed_prekeys_if_due(now).await? {
            if let Err(e) = self.put_keys(&rotated).await {
                self.device.rotation_not_published().await?;
                return Err(e);
            }
        }
        let count: PreKeyCount = self.api("GET", "/api/v1/keys/count", None::<&()>).await?;
        if count.pre_keys < 20 || count.pq_pre_keys < 20 {
            let upload = self.device.keys_to_upload(false, crate::crypto::device::PREKEY_BATCH).await?;
            self.put_keys(&upload).await?;
        }
        Ok(())
    }

    /// Fetches and processes the queue of envelopes that arrived while this device was
    /// offline. Live envelopes that arrive meanwhile must wait (the driver holds them) so that
    /// order is kept.
    pub async fn drain_queue(&mut self, now: i64) -> Result<(), MessagingError> {
        self.tick(now);
        // Acknowledgements go out after the drain, so page with a cursor: the queue still
        // holds the pages already processed.
        let mut after: Option<EnvelopeId> = None;
        loop {
            let path = match after {
                Some(id) => format!("/api/v1/messages?limit=200&after={id}"),
                None => "/api/v1/messages?limit=200".to_owned(),
            };
            let queue: Queue = self.api("GET", &path, None::<&()>).await?;
            // A page that does not move the cursor ends the drain (a server answering `more`
            // with nothing new cannot keep the device looping).
            let more = queue.more && queue.envelopes.last().is_some_and(|e| Some(e.id) > after);
            after = queue.envelopes.last().map(|e| e.id).or(after);
            for e in queue.envelopes {
                self.process(e).await;
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// Processes one envelope pushed by the gateway.
    pub async fn handle_envelope(&mut self, envelope: Envelope, now: i64) {
        self.tick(now);
        self.process(envelope).await;
    }

    /// The events since the last call, in order.
    pub fn take_events(&mut self) -> Vec<Incoming> {
        std::mem::take(&mut self.events).into_iter().map(|(e, _)| e).collect()
    }

    /// [`Engine::take_events`], each with the history position of the entry it shows (a
    /// message's, an undecryptable envelope's).
    pub fn take_events_positioned(&mut self) -> Vec<(Incoming, Option<u64>)> {
        std::mem::take(&mut self.events)
    }

    /// The processed envelopes to acknowledge (gateway `ACK`, up to 100 ids per frame). An ACK
    /// lost with a dropped connection only means the envelopes come again from the queue, and
    /// they are recognised as duplicates then.
    pub fn take_acks(&mut self) -> Vec<EnvelopeId> {
        std::mem::take(&mut self.acks)
    }

    /// Sends a direct message to `to` (every one of their devices, and this user's other
    /// devices). Returns the message as it is kept in history.
    pub async fn send_dm(&mut self, to: UserId, body: &str, now: i64) -> Result<DirectMessage, MessagingError> {
        self.send_dm_positioned(to, body, now).await.map(|(m, _)| m)
    }

    /// [`Engine::send_dm`], with the message's position in the history (`None` if the
    /// history could not keep it).
    pub async fn send_dm_positioned(
        &mut self,
        to: UserId,
        body: &str,
        now: i64,
    ) -> Result<(DirectMessage, Option<u64>), MessagingError> {
        self.tick(now);
        // The ratchet steps are flushed before the envelopes leave (`post`); the sent-message
        // log and the history entry then go in one write.
        if self.state != LinkState::Linked {
            return Err(MessagingError::NotLinked);
        }
        self.device.vault().begin_batch();
        let result = self.send_dm_batched(to, body.to_owned()).await;
        if let Err(e) = self.device.vault().commit_batch().await {
            tracing::warn!(error = %e, "could not keep a sent message in the store");
        }
        result
    }

    /// Up to `limit` entries of the conversation with `conversation` before position `before`
    /// (from the newest when `None`), oldest first, each with its position. The history is
    /// read from this device's encrypted store, so it survives restarts.
    pub async fn history(
        &self,
        conversation: UserId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, HistoryEntry)>, MessagingError> {
        Ok(History::new(self.device.vault()).page(&conversation.to_string(), before, limit).await?)
    }

    /// The conversations, the most recently active first, with their newest entry and how
    /// many entries from the other participant are unread.
    pub async fn conversations(&self) -> Result<Vec<Conversation>, MessagingError> {
        let history = History::new(self.device.vault());
        let mut out = Vec::new();
        for c in history.conversations().await? {
            let Ok(user) = c.parse::<UserId>() else { continue };
            let last: Option<(u64, HistoryEntry)> = history.page(&c, None, 1).await?.pop();
            let read = self.read_mark(user).await?;
            let len = history.len(&c).await?;
            let mut unread = 0;
            // Count back from the end, own messages aside (a page at a time).
            let mut end = len;
            while end > read {
                let page: Vec<(u64, HistoryEntry)> = history.page(&c, Some(end), 50).await?;
                for (pos, e) in page.iter().rev() {
                    if *pos < read {
                        break;
                    }
                    match e {
                        HistoryEntry::Message(m) if m.outgoing => {}
                        HistoryEntry::IdentityChanged { .. } => {}
                        _ => unread += 1,
                    }
                }
                end = page.first().map_or(read, |p| p.0);
            }
            out.push(Conversation { user, last, unread });
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.last.as_ref().map_or(0, |l| l.1.sent_at())));
        Ok(out)
    }

    async fn read_mark(&self, conversation: UserId) -> Result<u64, MessagingError> {
        Ok(match self.device.vault().get(READ_NS, conversation.to_string().as_bytes()).await? {
            Some(b) => u64::from_le_bytes(b.as_slice().try_into().map_err(|_| VaultError::Corrupt)?),
            None => 0,
        })
    }

    /// Marks everything in the conversation read.
    pub async fn mark_read(&self, conversation: UserId) -> Result<(), MessagingError> {
        let len = History::new(self.device.vault()).len(&conversation.to_string()).await?;
        self.device.vault().put(READ_NS, conversation.to_string().as_bytes(), &len.to_le_bytes()).await?;
        Ok(())
    }

    /// Seals the store's key under a new passphrase (after the account's password changed).
    pub async fn change_passphrase(&self, old: &str, new: &str) -> Result<(), MessagingError> {
        Ok(self.device.vault().change_passphrase(old, new).await?)
    }

    /// The device's Signal state (tests of failure paths).
    #[cfg(feature = "testing")]
    pub fn e2ee_device(&self) -> &E2eeDevice {
        &self.device
    }

    // ---- processing --------------------------------------------------------------------

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
        // Nothing is encrypted to a device that is not linked: what reaches one anyway (sync
        // copies the server made up, say) is not read into the history this store shares.
        if self.state != LinkState::Linked {
            tracing::warn!(sender = %envelope.sender, "envelope for a device that is not linked; dropped");
            self.acks.push(envelope.id);
            return;
        }
        // Only from a device the sender's account vouches for, with the key it gives it: a
        // device the server added on its own is in no signed list. (A changed account key found
        // here is announced, and kept in history, before the message it came with.)
        match self.check_sender(&envelope).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(sender = %envelope.sender, device = %envelope.sender_device,
                    "envelope from a device its account does not vouch for; dropped");
                self.acks.push(envelope.id);
                return;
            }
            Err(e) => {
                // Not acknowledged: it comes again from the queue.
                tracing::warn!(error = %e, sender = %envelope.sender, "could not check the sender's device list");
                self.seen.remove(&envelope.id);
                return;
            }
        }
        self.device.vault().begin_batch();
        let mut events = Vec::new();
        let decrypted = self.device.decrypt(&envelope).await;
        match decrypted {
            // A sender key for a channel (messages that waited for it are read now).
            Ok(Decrypted::Message(plaintext)) if channels::is_sender_key(&plaintext) => {
                // Sent again after a retry request: the entry kept for it is marked repaired.
                if let Ok(Some(repaired)) = self.mark_repaired(envelope.sender, envelope.sender_device).await {
                    events.push((repaired, None));
                }
                events.extend(self.take_sender_key(envelope.sender, envelope.sender_device, &plaintext).await);
            }
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
                        Ok(Some(position)) => {
                            if let Ok(Some(repaired)) = self.mark_repaired(envelope.sender, envelope.sender_device).await {
                                events.push((repaired, None));
                            }
                            events.push((Incoming::Message(message), Some(position)));
                        }
                        Ok(None) => tracing::debug!("message already in history"),
                        // The ratchet has moved on: this envelope cannot be decrypted again, so
                        // the user sees the message now even if history could not keep it.
                        Err(e) => {
                            tracing::warn!(error = %e, "could not store a message in history");
                            events.push((Incoming::Message(message), None));
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
                        events.push((Incoming::RetryRefused { user, device: from, timestamp, reason }, None));
                    }
                    Err(e) => tracing::warn!(error = %e, "could not answer a retry request"),
                }
            }
            Err(e) => {
                if self.may_request_retry(envelope.sender, envelope.sender_device) {
                    tracing::warn!(error = %e, sender = %envelope.sender, "envelope could not be decrypted; asking for a retry");
                    if let Err(e) = self.request_retry(&envelope).await {
                        tracing::warn!(error = %e, "retry request failed");
                    }
                } else {
                    tracing::warn!(error = %e, sender = %envelope.sender, "envelope could not be decrypted; too many retry requests to that device this minute");
                }
                let position = match self.remember_undecryptable(&envelope).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not keep an undecryptable entry");
                        None
                    }
                };
                events.push((
                    Incoming::RetryRequested {
                        user: envelope.sender,
                        device: envelope.sender_device,
                        position,
                        sent_at: envelope.server_timestamp,
                    },
                    position,
                ));
            }
        }
        match self.device.vault().commit_batch().await {
            Ok(()) => {
                self.acks.push(envelope.id);
                self.events.extend(events);
            }
            Err(e) => {
                // Not acknowledged: it comes again from the queue and is processed again.
                tracing::error!(error = %e, "could not store what an envelope changed; it will be processed again");
                self.seen.remove(&envelope.id);
            }
        }
    }

    /// Adds a message to the history and returns its position; `None` if it was already there.
    async fn remember(&self, message: &DirectMessage) -> Result<Option<u64>, VaultError> {
        let entry = HistoryEntry::Message(message.clone());
        History::new(self.device.vault()).append(&message.conversation.to_string(), &message.message_id, &entry).await
    }

    /// Keeps an entry for an envelope that could not be decrypted (not for copies from this
    /// user's own devices: their conversation is unknown), and notes it as waiting for the
    /// re-sent message from that device.
    async fn remember_undecryptable(&self, envelope: &Envelope) -> Result<Option<u64>, VaultError> {
        if envelope.sender == self.me {
            return Ok(None);
        }
        let conversation = envelope.sender;
        let entry = HistoryEntry::Undecryptable {
            conversation,
            author: envelope.sender,
            author_device: envelope.sender_device,
            sent_at: envelope.server_timestamp,
            repaired: false,
        };
        let history = History::new(self.device.vault());
        let Some(position) = history.append(&conversation.to_string(), &format!("undecryptable/{}", envelope.id), &entry).await?
        else {
            return Ok(None);
        };
        let key = format!("{}.{}", envelope.sender, envelope.sender_device);
        let mut waiting: Vec<u64> = match self.device.vault().get(REPAIR_NS, key.as_bytes()).await? {
            Some(raw) => serde_json::from_slice(&raw).map_err(|_| VaultError::Corrupt)?,
            None => Vec::new(),
        };
        waiting.push(position);
        let raw = serde_json::to_vec(&waiting).map_err(|e| VaultError::Backend(e.to_string()))?;
        self.device.vault().put(REPAIR_NS, key.as_bytes(), &raw).await?;
        Ok(Some(position))
    }

    /// A message from `user`'s `device` was read: the oldest entry waiting for a re-send from
    /// that device is marked repaired.
    async fn mark_repaired(&self, user: UserId, device: DeviceId) -> Result<Option<Incoming>, VaultError> {
        let key = format!("{user}.{device}");
        let vault = self.device.vault();
        let Some(raw) = vault.get(REPAIR_NS, key.as_bytes()).await? else { return Ok(None) };
        let mut waiting: Vec<u64> = serde_json::from_slice(&raw).map_err(|_| VaultError::Corrupt)?;
        if waiting.is_empty() {
            return Ok(None);
        }
        let position = waiting.remove(0);
        if waiting.is_empty() {
            vault.delete(REPAIR_NS, key.as_bytes()).await?;
        } else {
            let raw = serde_json::to_vec(&waiting).map_err(|e| VaultError::Backend(e.to_string()))?;
            vault.put(REPAIR_NS, key.as_bytes(), &raw).await?;
        }
        let history = History::new(vault);
        let conversation = user.to_string();
        let mut page: Vec<(u64, HistoryEntry)> = history.page(&conversation, Some(position + 1), 1).await?;
        match page.pop() {
            Some((p, HistoryEntry::Undecryptable { conversation: c, author, author_device, sent_at, .. })) if p == position => {
                let entry = HistoryEntry::Undecryptable { conversation: c, author, author_device, sent_at, repaired: true };
                history.replace(&conversation, position, &entry).await?;
                Ok(Some(Incoming::Repaired { conversation: user, position }))
            }
            _ => Ok(None),
        }
    }

    /// Whether an envelope comes from a device of the sender's signed list, with the
    /// identity key the list gives it.
    async fn check_sender(&mut self, envelope: &Envelope) -> Result<bool, MessagingError> {
        let claimed = match E2eeDevice::prekey_sender_identity(envelope) {
            Some(k) => Some(k),
            // An unreadable session names nobody: decryption fails and the retry path repairs it.
            None if envelope.kind == crate::messages::kind::WHISPER => {
                self.device.session_identity(envelope.sender, envelope.sender_device).await.unwrap_or(None)
            }
            // A retry request: answered only from the sent-message log, to devices and keys the
            // message went to.
            None => None,
        };
        self.is_vouched(envelope.sender, envelope.sender_device, claimed.as_deref()).await
    }

    /// Counts a retry request to `device` of `user`; `false` past the minute's allowance.
    fn may_request_retry(&mut self, user: UserId, device: DeviceId) -> bool {
        if self.retry_requests.len() > 10_000 {
            self.retry_requests.retain(|_, (start, _)| self.now - *start < 60_000);
        }
        let (start, count) = self.retry_requests.entry((user, device)).or_insert((self.now, 0));
        if self.now - *start >= 60_000 {
            (*start, *count) = (self.now, 0);
        }
        *count += 1;
        *count <= RETRY_REQUESTS_PER_MINUTE
    }

    async fn request_retry(&mut self, envelope: &Envelope) -> Result<(), MessagingError> {
        let request = E2eeDevice::retry_request(envelope)?;
        // The session is broken: the next message to this device starts a fresh one.
        self.forget_session(envelope.sender, envelope.sender_device).await?;
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
        let found = match SentLog::new(self.device.vault()).find(user, device, timestamp, self.now).await {
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
                let bundles: UserBundles = self.api("GET", &format!("/api/v1/keys/{user}/{device}"), None::<&()>).await?;
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
        self.log_sent_to(message_id, sent_at, content, recipients).await;
    }

    /// [`Self::log_sent`] with the recipients' identities already known.
    async fn log_sent_to(&self, message_id: &str, sent_at: i64, content: &[u8], recipients: Vec<SentTo>) {
        let entry = SentEntry {
            message_id: message_id.to_owned(),
            sent_at,
            logged_at: self.now,
            content: content.to_vec().into(),
            recipients,
        };
        // A message that is not in the log can only not be re-sent: the send itself stands.
        if let Err(e) = SentLog::new(self.device.vault()).record(&entry, self.now).await {
            tracing::warn!(error = %e, "could not keep a sent message for retries");
        }
    }

    /// The devices of `user` to encrypt to: those of their signed list (less this device, and
    /// those the server said are gone), each with a session from a bundle that carries the key
    /// the list gives it. A verified contact whose account key changed gets nothing.
    async fn recipients(&mut self, user: UserId) -> Result<Vec<DeviceId>, MessagingError> {
        let account = self.account_of(user, false).await?.ok_or_else(|| {
            MessagingError::Send(format!("user {user} has not set up a signed device list yet; nothing can be sent to them"))
        })?;
        if user != self.me && account.trust == Trust::Unverified {
            self.events.push((Incoming::IdentityChanged { user }, None));
            return Err(MessagingError::UntrustedIdentity { user });
        }
        let gone = self.gone.get(&user).cloned().unwrap_or_default();
        let devices: Vec<(DeviceId, Vec<u8>)> = account
            .devices
            .iter()
            .filter(|(d, _)| !(gone.contains(d) || (user == self.me && *d == self.my_device)))
            .map(|(d, k)| (*d, k.0.clone()))
            .collect();
        let mut missing = Vec::new();
        for (d, key) in &devices {
            match self.device.session_identity(user, *d).await? {
                Some(k) if &k == key && self.device.session_registration(user, *d).await?.is_some() => {}
                Some(_) => {
                    self.forget_session(user, *d).await?;
                    missing.push(*d);
                }
                None => missing.push(*d),
            }
        }
        if !missing.is_empty() {
            // One request for all of them on a first contact, else one per device.
            let path =
                if missing.len() > 1 { format!("/api/v1/keys/{user}") } else { format!("/api/v1/keys/{user}/{}", missing[0]) };
            let bundles: UserBundles = match self.api("GET", &path, None::<&()>).await {
                Ok(b) => b,
                Err(MessagingError::Api { status: 404, .. }) => UserBundles { user_id: user, devices: Vec::new() },
                Err(e) => return Err(e),
            };
            for d in &missing {
                let listed = devices.iter().find(|(x, _)| x == d).map(|(_, k)| k.as_slice());
                match bundles.devices.iter().find(|b| b.device_id == *d) {
                    Some(b) if Some(b.identity_key.as_slice()) == listed => self.device.start_session(user, b).await?,
                    Some(_) => {
                        return Err(MessagingError::DeviceList(format!(
                            "the server gave a key for device {d} of user {user} that its signed list does not; refused"
                        )))
                    }
                    // The server has no keys for it: it left (the list will say so).
                    None => {
                        self.gone.entry(user).or_default().insert(*d);
                    }
                }
            }
        }
        let gone = self.gone.get(&user).cloned().unwrap_or_default();
        Ok(devices.into_iter().map(|(d, _)| d).filter(|d| !gone.contains(d)).collect())
    }

    async fn encrypt_for(
        &mut self,
        user: UserId,
        devices: &[DeviceId],
        plaintext: &[u8],
    ) -> Result<Vec<OutgoingEnvelope>, MessagingError> {
        let mut out = Vec::with_capacity(devices.len());
        for &d in devices {
            out.push(self.device.encrypt(user, d, plaintext).await?);
        }
        Ok(out)
    }

    async fn send_dm_batched(&mut self, to: UserId, body: String) -> Result<(DirectMessage, Option<u64>), MessagingError> {
        if to == self.me {
            return Err(MessagingError::Send("a direct message goes to someone else".into()));
        }
        if body.trim().is_empty() {
            return Err(MessagingError::Send("the message is empty".into()));
        }
        if body.len() > BODY_MAX_BYTES {
            return Err(MessagingError::Send(format!("the message is longer than {BODY_MAX_BYTES} bytes")));
        }
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let content = Content { id: id.iter().map(|b| format!("{b:02x}")).collect(), to, body };
        let plaintext = serde_json::to_vec(&content).map_err(|e| MessagingError::Send(e.to_string()))?;
        for _attempt in 0..4 {
            let theirs = self.recipients(to).await?;
            let mine = self.recipients(self.me).await?;
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
                    let position = match self.remember(&message).await {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not store a sent message in history");
                            None
                        }
                    };
                    return Ok((message, position));
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

    /// The server's view of `user`'s devices differs: a missing device must be in their signed
    /// list (fetched again) or nothing is sent; an extra one is left out until the list
    /// changes; a stale session is rebuilt.
    async fn apply_mismatch(&mut self, user: UserId, m: &crate::messages::DeviceMismatch) -> Result<(), MessagingError> {
        for d in m.extra_devices.iter().chain(&m.stale_devices) {
            self.forget_session(user, *d).await?;
        }
        if !m.missing_devices.is_empty() || !m.stale_devices.is_empty() {
            // A device that is new, or has new keys: the list must say so.
            self.gone.remove(&user);
            let account = self.account_of(user, true).await?;
            for d in &m.missing_devices {
                if (user, *d) == (self.me, self.my_device) || account.as_ref().is_none_or(|a| a.key_of(*d).is_none()) {
                    return Err(MessagingError::DeviceList(format!(
                        "the server wants messages to device {d} of user {user}, which their signed device list does not name; nothing was sent"
                    )));
                }
            }
        }
        if !m.extra_devices.is_empty() {
            self.gone.entry(user).or_default().extend(m.extra_devices.iter().copied());
        }
        Ok(())
    }

    async fn post(&self, body: &SendMessage) -> Result<SendReceipt, PostError> {
        // What an envelope was encrypted with (a ratchet step, a new session) is on disk
        // before the envelope leaves: a counter is never used twice after a crash.
        self.device.vault().flush_batch().await.map_err(|e| PostError::Other(e.into()))?;
        match self.api::<SendReceipt>("POST", "/api/v1/messages", Some(body)).await {
            Ok(r) => Ok(r),
            Err(MessagingError::Api { body: err, .. }) if err.error.code == ErrorCode::DeviceMismatch => {
                let details: SendMismatch = err.error.details.and_then(|d| serde_json::from_value(d).ok()).unwrap_or_default();
                Err(PostError::Mismatch(details))
            }
            Err(e) => Err(PostError::Other(e)),
        }
    }

    async fn put_keys(&self, keys: &UploadKeys) -> Result<(), MessagingError> {
        self.call("PUT", "/api/v1/keys", Some(keys)).await.map(drop)
    }

    async fn call(&self, method: &str, path: &str, body: Option<&(impl Serialize + ?Sized)>) -> Result<Vec<u8>, MessagingError> {
        let body = body.map(serde_json::to_string).transpose().map_err(|e| MessagingError::Transport(e.to_string()))?;
        let answer = self.http.request(method, path, body).await.map_err(MessagingError::Transport)?;
        if (200..300).contains(&answer.status) {
            return Ok(answer.body);
        }
        let body = serde_json::from_slice::<ApiErrorBody>(&answer.body)
            .unwrap_or_else(|_| ApiErrorBody::new(ErrorCode::Internal, format!("HTTP {} without an error body", answer.status)));
        Err(MessagingError::Api { status: answer.status, body })
    }

    async fn api<R: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<R, MessagingError> {
        let raw = self.call(method, path, body).await?;
        serde_json::from_slice(&raw).map_err(|e| MessagingError::Transport(format!("unreadable answer to {path}: {e}")))
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
