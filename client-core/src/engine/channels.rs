//! End-to-end encrypted channel messages (server channels and group DMs) with libsignal's
//! Sender Keys ([`crate::channel_messages`] is the wire side).
//!
//! **Sending.** Per channel this device keeps an outgoing sender key: its distribution id (a
//! fresh random UUID per key), the devices it handed the key to (user, device, registration
//! id), and the last view of the channel's recipient devices the server gave. Before a send,
//! the recipient devices are narrowed to those their owner's *signed* device list names (a
//! device the server adds on its own gets nothing), sessions are made with the ones that
//! have none (from bundles carrying the key the list gives), and:
//! - if a device served before is no longer a recipient (a member left, was kicked or banned,
//!   lost the permission to read, or removed a device), the key is replaced by a new one
//!   before anything is encrypted: what follows is unreadable to the devices that left;
//! - every recipient device not served yet gets the key's distribution message over its
//!   pairwise session, riding the send (`{"sender_key":{"channel","distribution"}}`);
//! - the message is one `SenderKeyMessage` for the whole channel.
//!
//! A send names the view it was made on; the server refuses an older one (409 `view_stale`
//! with the current recipients) and the send is made again on the new view.
//!
//! **Receiving.** A message is read only from a device its author's signed list names, only
//! with a key distributed for that very channel (a key is bound to the channel its
//! distribution named: the server cannot replay a message into another channel), and an edit
//! or a reaction only against the message it names inside its ciphertext (the original's
//! nonce). libsignal consumes a message key once used, so what was decrypted is kept in the
//! store by message (and edit) and reaction. A message whose key has not arrived is
//! `pending` and is read when the key comes; one that can never be read is `failed`.

use std::collections::{BTreeMap, BTreeSet};

use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Engine, Incoming, LinkState, MessagingError, Transport, BODY_MAX_BYTES};
use crate::bytes::Base64Bytes;
use crate::channel_messages::{
    ChannelMessage, ChannelRecipients, ClaimBundles, ClaimedBundles, DeviceAddress, DeviceLists, Distribution,
    EditChannelMessage, Mentions, MessageDeleted, MessagesDeleted, NewReaction, PinUpdate, Reaction, ReactionRemoved,
    ReadDeviceLists, RecipientDevice, SendChannelMessage, SendSenderKeys, SenderKeysSent, CLAIM_MAX, HISTORY_PAGE_MAX,
    MESSAGES_DELETED_MAX,
};
use crate::crypto::store::Trust;
use crate::crypto::{E2eeDevice, GroupDecrypted, VaultError};
use crate::error::ErrorCode;
use crate::gateway::event_name;
use crate::ids::{ChannelId, DeviceId, MessageId, UserId};

/// Longest reaction emoji, in bytes.
pub const EMOJI_MAX_BYTES: usize = 64;
/// Longest thread name, in characters.
pub const THREAD_NAME_MAX_CHARS: usize = 100;
/// Longest reply quote, in characters.
pub const EXCERPT_MAX_CHARS: usize = 200;
/// How many times a send is made again on a newer view before giving up.
const VIEW_ATTEMPTS: usize = 4;
/// Requests made at once when fetching many device lists or bundles.
const FETCH_CONCURRENCY: usize = 4;
/// Bytes of distribution content one request carries at most (base64 and JSON take it to
/// about 0.8 MiB, under the server's 1 MiB body limit with a largest ciphertext): the rest
/// goes first in `POST /api/v1/channels/{id}/sender-keys` requests.
pub(super) const DISTRIBUTION_BYTES_PER_REQUEST: usize = 560 * 1024;
/// How long the checked recipients of a view are reused for sends (sessions can age out).
const TARGETS_TTL_MS: i64 = 10 * 60 * 1000;

/// The devices of one view to hand the key to, as checked: reused while the view, the known
/// lists and the sessions stay as they were.
#[derive(Debug, Clone)]
pub(super) struct CheckedTargets {
    view: i64,
    checked_at: i64,
    targets: Vec<(RecipientDevice, Vec<u8>)>,
}

/// This device's outgoing key per channel, and the generation of the cached views
/// (device-scoped).
const OUT_NS: &str = "channel_out";
/// The channel each received key (sender, device, distribution) belongs to (device-scoped).
const KEY_NS: &str = "channel_key";
/// Messages waiting for the key (sender, device, distribution) (device-scoped).
const PENDING_NS: &str = "channel_pending";
/// Decrypted plaintexts, originals' nonces and nonce owners (shared with later devices of this
/// store, like the DM history).
const PLAIN_NS: &str = "channel_plain";
/// The last known metadata of each message (reactions, pins, thread counts).
const META_NS: &str = "channel_msg";

/// What to send in a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDraft {
    /// The text.
    pub body: String,
    /// The message it answers.
    #[serde(default)]
    pub reply_to: Option<MessageId>,
    /// The thread it goes to (the id of the message that starts it).
    #[serde(default)]
    pub thread_id: Option<MessageId>,
    /// The thread's name (with its first message).
    #[serde(default)]
    pub thread_name: Option<String>,
}

/// Which page of a channel's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// Messages before this one.
    #[serde(default)]
    pub before: Option<MessageId>,
    /// Messages after this one.
    #[serde(default)]
    pub after: Option<MessageId>,
    /// Messages around this one.
    #[serde(default)]
    pub around: Option<MessageId>,
    /// The messages of this thread (otherwise the channel's top-level messages).
    #[serde(default)]
    pub thread_id: Option<MessageId>,
    /// How many (default 50, at most 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Whether a channel message could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// Decrypted.
    Ok,
    /// Its key has not arrived (yet): it is read, and shown again, when the key comes.
    Pending,
    /// It cannot be read: not from a device its author's list names, a key of another
    /// channel, an edit or a reaction that does not match its message, or a message key
    /// already used.
    Failed,
}

/// The message a message answers, as its author quoted it (inside the ciphertext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    /// The message answered.
    pub id: MessageId,
    /// Its author.
    pub author_id: UserId,
    /// The beginning of its text.
    pub excerpt: String,
}

/// The reactions with one emoji.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionSummary {
    /// The emoji.
    pub emoji: String,
    /// How many people reacted with it.
    pub count: u32,
    /// Who, in the order they reacted.
    pub users: Vec<UserId>,
    /// This user is one of them.
    pub mine: bool,
}

/// A channel message as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEntry {
    /// The message.
    pub id: MessageId,
    /// Its channel.
    pub channel_id: ChannelId,
    /// Its author.
    pub author_id: UserId,
    /// The author's device that encrypted it.
    pub author_device: DeviceId,
    /// When the server accepted it (Unix milliseconds).
    pub created_at: i64,
    /// When it was last edited.
    pub edited_at: Option<i64>,
    /// The thread it is in.
    pub thread_id: Option<MessageId>,
    /// Pinned.
    pub pinned: bool,
    /// Messages in the thread it starts.
    pub thread_count: u32,
    /// Whether it could be read.
    pub state: EntryState,
    /// The text (empty unless `ok`).
    pub body: String,
    /// The message it answers.
    pub reply_to: Option<ReplyTo>,
    /// The name of the thread it starts or names.
    pub thread_name: Option<String>,
    /// Its reactions, by emoji, in the order they first came.
    pub reactions: Vec<ReactionSummary>,
    /// Who its author declared it mentions (what the server counted and notified).
    #[serde(default, skip_serializing_if = "Mentions::is_empty")]
    pub mentions: Mentions,
    /// The declared mentions are not those of the text (a client that lies to notify people
    /// the text does not name, or to hide a mention from the counts): shown as a warning.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mention_mismatch: bool,
}

/// The plaintext of a message or of an edit (inside the `SenderKeyMessage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MessagePlain {
    v: u32,
    /// 16 random bytes, hex: names this message for its edits and reactions.
    nonce: String,
    /// An edit: the nonce of the original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    edit_of: Option<String>,
    body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply_to: Option<ReplyTo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thread_name: Option<String>,
}

/// The plaintext of a reaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ReactionPlain {
    v: u32,
    nonce: String,
    /// The nonce of the message it is on.
    target: String,
    /// The author of the message it is on (nonces are one author's own).
    target_author: UserId,
    emoji: String,
}

/// The pairwise envelope that hands a device a sender key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SenderKeyPayload {
    sender_key: SenderKeyDistribution,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SenderKeyDistribution {
    channel: ChannelId,
    distribution: Base64Bytes,
}

/// A device a key was handed to: (user, device, registration id).
/// A device handed the key: user, device, registration id, and the first 8 bytes of the
/// identity key its signed list gave it (a device number reused by a new device is another
/// device).
type Served = (UserId, DeviceId, u32, u64);

fn served(t: &RecipientDevice, identity: &[u8]) -> Served {
    let mut fingerprint = [0u8; 8];
    // A serialized identity key: a type byte, then the 32-byte key.
    for (f, b) in fingerprint.iter_mut().zip(identity.iter().skip(1)) {
        *f = *b;
    }
    (t.user_id, t.device_id, t.registration_id, u64::from_be_bytes(fingerprint))
}

/// What a sender key slot is bound to: the channel its distribution named, and the identity
/// key of the pairwise session that handed it over (a message under it is read only while the
/// sender's signed list gives that device that key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum KeyBinding {
    Bound {
        channel: ChannelId,
        identity: Base64Bytes,
    },
    /// Written before identities were bound.
    Legacy(ChannelId),
}

impl KeyBinding {
    fn channel(&self) -> ChannelId {
        match self {
            KeyBinding::Bound { channel, .. } | KeyBinding::Legacy(channel) => *channel,
        }
    }
}

/// This device's outgoing key in one channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OutgoingKey {
    /// The current key's distribution id (`None`: none made yet).
    distribution: Option<String>,
    /// The devices that hold it.
    served: BTreeSet<Served>,
    /// The last view the server gave.
    recipients: Option<ChannelRecipients>,
    /// The generation the view was taken in: an event that may change readers makes a new one.
    generation: u64,
}

/// What is kept of a decrypted message version (`None`: it could not be read).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PlainRecord {
    plain: Option<MessagePlain>,
    /// What the version was read as: a record is shown only for that channel, author and
    /// device (the server cannot serve a read message again under another name).
    sealed: Sealed,
}

/// Where and by whom a ciphertext was sealed, as it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Sealed {
    channel: ChannelId,
    author: UserId,
    device: DeviceId,
    /// The message (a reaction's).
    message: MessageId,
}

impl Sealed {
    fn of_message(m: &ChannelMessage) -> Self {
        Self { channel: m.channel_id, author: m.author_id, device: m.author_device, message: m.id }
    }

    fn of_reaction(r: &Reaction) -> Self {
        Self { channel: r.channel_id, author: r.user_id, device: r.device_id, message: r.message_id }
    }
}

/// What is kept of a decrypted reaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReactionRecord {
    plain: Option<ReactionPlain>,
    /// As for a message.
    sealed: Sealed,
}

/// A message's identity inside the ciphertexts: the original's nonce and author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Origin {
    nonce: String,
    author: UserId,
}

/// What opening a ciphertext gave.
enum Opened {
    Plain(Vec<u8>),
    /// No key yet, under this pending slot.
    Pending(String),
    Failed(&'static str),
}

fn random_nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_distribution() -> Uuid {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn is_nonce(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether the key must be replaced: a device that holds it is no longer a recipient.
fn needs_rotation(served: &BTreeSet<Served>, current: &BTreeSet<Served>) -> bool {
    served.iter().any(|s| !current.contains(s))
}

fn key_slot(user: UserId, device: DeviceId, distribution: Uuid) -> String {
    format!("{user}.{device}/{distribution}")
}

fn plain_key(id: MessageId, edited_at: Option<i64>) -> String {
    format!("m/{id}/{}", edited_at.unwrap_or(0))
}

fn excerpt(body: &str) -> String {
    body.chars().take(EXCERPT_MAX_CHARS).collect()
}

/// Checks a decrypted message or edit against what the server says of it and what this device
/// saw before: `origin` is the message's known identity, `nonce_owner` the message that
/// already carries the nonce it names (an original's own, an edit's `edit_of`).
fn check_message(
    plain: &MessagePlain,
    m: &ChannelMessage,
    origin: Option<&Origin>,
    nonce_owner: Option<MessageId>,
) -> Result<(), &'static str> {
    if plain.v != 1 {
        return Err("unknown version");
    }
    if !is_nonce(&plain.nonce) {
        return Err("malformed nonce");
    }
    if plain.body.len() > BODY_MAX_BYTES {
        return Err("body too long");
    }
    if plain.thread_name.as_ref().is_some_and(|n| n.chars().count() > THREAD_NAME_MAX_CHARS) {
        return Err("thread name too long");
    }
    if plain.reply_to.as_ref().is_some_and(|r| r.excerpt.chars().count() > EXCERPT_MAX_CHARS) {
        return Err("reply quote too long");
    }
    let named = match &plain.edit_of {
        Some(original) => {
            if m.edited_at.is_none() {
                return Err("an edit served as an original");
            }
            if !is_nonce(original) {
                return Err("malformed edit nonce");
            }
            original
        }
        None => {
            if m.edited_at.is_some() {
                return Err("an original served as an edit");
            }
            &plain.nonce
        }
    };
    if let Some(origin) = origin {
        if origin.author != m.author_id {
            return Err("not by the message's author");
        }
        if &origin.nonce != named {
            return Err("an edit of another message");
        }
    }
    if nonce_owner.is_some_and(|owner| owner != m.id) {
        return Err("the nonce belongs to another message");
    }
    Ok(())
}

/// Checks a decrypted reaction.
fn check_reaction(plain: &ReactionPlain) -> Result<(), &'static str> {
    if plain.v != 1 || !is_nonce(&plain.nonce) || !is_nonce(&plain.target) {
        return Err("malformed reaction");
    }
    if plain.emoji.is_empty() || plain.emoji.len() > EMOJI_MAX_BYTES {
        return Err("emoji of the wrong size");
    }
    Ok(())
}

/// A reaction counts on the message whose nonce it names, and only there.
fn reaction_applies(plain: &ReactionPlain, origin: Option<&Origin>) -> bool {
    origin.is_some_and(|o| o.nonce == plain.target && o.author == plain.target_author)
}

/// Where a message's nonce is recorded: per channel and author (one member cannot take
/// another's nonce first).
fn nonce_key(channel: ChannelId, author: UserId, nonce: &str) -> String {
    format!("n/{channel}/{author}/{nonce}")
}

/// Groups reactions by emoji (a person counts once per emoji), in the order each emoji first
/// came.
fn summarize(me: UserId, reactions: &[(UserId, String)]) -> Vec<ReactionSummary> {
    let mut out: Vec<ReactionSummary> = Vec::new();
    for (user, emoji) in reactions {
        let index = match out.iter().position(|s| &s.emoji == emoji) {
            Some(i) => i,
            None => {
                out.push(ReactionSummary { emoji: emoji.clone(), count: 0, users: Vec::new(), mine: false });
                out.len() - 1
            }
        };
        let summary = &mut out[index];
        if !summary.users.contains(user) {
            summary.users.push(*user);
            summary.count += 1;
            summary.mine |= *user == me;
        }
    }
    out
}

/// Where a channel write goes.
enum Write {
    Send { thread_id: Option<MessageId>, mentions: Mentions },
    Edit { message: MessageId, mentions: Mentions },
    React { message: MessageId },
}

/// Whether a message's declared mentions differ from those its decrypted text makes (an edit
/// declares again for its new text, so this holds for edited messages too).
pub fn mentions_differ(body: &str, declared: &Mentions) -> bool {
    Mentions::in_text(body) != declared.clone().normalized()
}

/// Whether a decrypted pairwise plaintext hands over a sender key.
pub(super) fn is_sender_key(plaintext: &[u8]) -> bool {
    serde_json::from_slice::<SenderKeyPayload>(plaintext).is_ok()
}

fn corrupt(_: serde_json::Error) -> VaultError {
    VaultError::Corrupt
}

impl<T: Transport> Engine<T> {
    // ---- the store ---------------------------------------------------------------------

    async fn read_json<R: DeserializeOwned>(&self, ns: &str, key: &str) -> Result<Option<R>, MessagingError> {
        Ok(match self.device.vault().get(ns, key.as_bytes()).await? {
            Some(raw) => Some(serde_json::from_slice(&raw).map_err(corrupt)?),
            None => None,
        })
    }

    async fn write_json<V: Serialize>(&self, ns: &str, key: &str, value: &V) -> Result<(), MessagingError> {
        let raw = serde_json::to_vec(value).map_err(|e| VaultError::Backend(e.to_string()))?;
        Ok(self.device.vault().put(ns, key.as_bytes(), &raw).await?)
    }

    async fn generation(&self) -> Result<u64, MessagingError> {
        Ok(self.read_json(OUT_NS, "generation").await?.unwrap_or(0))
    }

    /// The channels' readers may have changed: every cached view is fetched again before the
    /// next send (a stale one would only cost a 409).
    async fn views_changed(&self) -> Result<(), MessagingError> {
        let next = self.generation().await?.wrapping_add(1);
        self.write_json(OUT_NS, "generation", &next).await
    }

    async fn outgoing(&self, channel: ChannelId) -> Result<OutgoingKey, MessagingError> {
        // One kept in an older shape is as good as none: a new key is made and handed out.
        let mut out: OutgoingKey = match self.read_json(OUT_NS, &format!("c/{channel}")).await {
            Ok(kept) => kept.unwrap_or_default(),
            Err(MessagingError::Vault(VaultError::Corrupt)) => OutgoingKey::default(),
            Err(e) => return Err(e),
        };
        if out.generation != self.generation().await? {
            out.recipients = None;
        }
        Ok(out)
    }

    async fn store_outgoing(&self, channel: ChannelId, out: &mut OutgoingKey) -> Result<(), MessagingError> {
        out.generation = self.generation().await?;
        self.write_json(OUT_NS, &format!("c/{channel}"), out).await
    }

    async fn meta(&self, id: MessageId) -> Result<Option<ChannelMessage>, MessagingError> {
        self.read_json(META_NS, &id.to_string()).await
    }

    async fn store_meta(&self, m: &ChannelMessage) -> Result<(), MessagingError> {
        self.write_json(META_NS, &m.id.to_string(), m).await
    }

    /// A message of `channel` this device read, as last known, with its current text (`None`
    /// when it is gone or was not read here).
    pub(super) async fn channel_text(
        &self,
        channel: ChannelId,
        id: MessageId,
    ) -> Result<Option<(ChannelMessage, String)>, MessagingError> {
        let Some(m) = self.meta(id).await?.filter(|m| m.channel_id == channel) else { return Ok(None) };
        let record: Option<PlainRecord> = self.read_json(PLAIN_NS, &plain_key(id, m.edited_at)).await?;
        Ok(match record.and_then(|r| r.plain.filter(|_| r.sealed == Sealed::of_message(&m))) {
            Some(p) => Some((m, p.body)),
            None => None,
        })
    }

    async fn origin(&self, id: MessageId) -> Result<Option<Origin>, MessagingError> {
        self.read_json(PLAIN_NS, &format!("o/{id}")).await
    }

    // ---- sending -----------------------------------------------------------------------

    /// Sends a message to a channel (or a group DM). Returns it as shown.
    pub async fn channel_send(
        &mut self,
        channel: ChannelId,
        draft: ChannelDraft,
        now: i64,
    ) -> Result<ChannelEntry, MessagingError> {
        self.tick(now);
        if self.state != LinkState::Linked {
            return Err(MessagingError::NotLinked);
        }
        if draft.body.trim().is_empty() {
            return Err(MessagingError::Send("the message is empty".into()));
        }
        if draft.body.len() > BODY_MAX_BYTES {
            return Err(MessagingError::Send(format!("the message is longer than {BODY_MAX_BYTES} bytes")));
        }
        let thread_name = draft.thread_name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
        if thread_name.as_ref().is_some_and(|n| n.chars().count() > THREAD_NAME_MAX_CHARS) {
            return Err(MessagingError::Send(format!("the thread name is longer than {THREAD_NAME_MAX_CHARS} characters")));
        }
        let reply_to = match draft.reply_to {
            Some(id) => Some(self.reply_quote(channel, id).await?),
            None => None,
        };
        // Who the text mentions goes beside the ciphertext, for the server to count and notify.
        let mentions = Mentions::in_text(&draft.body);
        let plain = MessagePlain { v: 1, nonce: random_nonce(), edit_of: None, body: draft.body, reply_to, thread_name };
        let plaintext = serde_json::to_vec(&plain).map_err(|e| MessagingError::Send(e.to_string()))?;
        self.device.vault().begin_batch();
        let result = async {
            let raw = self.seal_and_post(channel, &plaintext, Write::Send { thread_id: draft.thread_id, mentions }).await?;
            let m: ChannelMessage = serde_json::from_slice(&raw)
                .map_err(|e| MessagingError::Transport(format!("unreadable answer to a channel send: {e}")))?;
            self.keep_own(channel, None, &m, &plain).await?;
            self.read_message(&m).await
        }
        .await;
        self.commit_after_send().await;
        result
    }

    /// Replaces the text of one of this user's messages. Returns it as shown.
    pub async fn channel_edit(
        &mut self,
        channel: ChannelId,
        message: MessageId,
        body: &str,
        now: i64,
    ) -> Result<ChannelEntry, MessagingError> {
        self.tick(now);
        if self.state != LinkState::Linked {
            return Err(MessagingError::NotLinked);
        }
        if body.trim().is_empty() {
            return Err(MessagingError::Send("the message is empty".into()));
        }
        if body.len() > BODY_MAX_BYTES {
            return Err(MessagingError::Send(format!("the message is longer than {BODY_MAX_BYTES} bytes")));
        }
        let meta = self.known_message(channel, message).await?;
        if meta.author_id != self.me {
            return Err(MessagingError::Send("only the author edits a message".into()));
        }
        let origin = self
            .origin_of(channel, message)
            .await?
            .ok_or_else(|| MessagingError::Send("the message could not be read here, so it cannot be edited".into()))?;
        let current: Option<PlainRecord> = self.read_json(PLAIN_NS, &plain_key(message, meta.edited_at)).await?;
        let current = current.and_then(|r| r.plain);
        let plain = MessagePlain {
            v: 1,
            nonce: random_nonce(),
            edit_of: Some(origin.nonce),
            body: body.to_owned(),
            reply_to: current.as_ref().and_then(|c| c.reply_to.clone()),
            thread_name: current.and_then(|c| c.thread_name),
        };
        let plaintext = serde_json::to_vec(&plain).map_err(|e| MessagingError::Send(e.to_string()))?;
        self.device.vault().begin_batch();
        let result = async {
            let raw = self.seal_and_post(channel, &plaintext, Write::Edit { message, mentions: Mentions::in_text(body) }).await?;
            let m: ChannelMessage = serde_json::from_slice(&raw)
                .map_err(|e| MessagingError::Transport(format!("unreadable answer to an edit: {e}")))?;
            self.keep_own(channel, Some(message), &m, &plain).await?;
            self.read_message(&m).await
        }
        .await;
        self.commit_after_send().await;
        result
    }

    /// Deletes a message (this user's, or any with the permission to manage messages).
    pub async fn channel_delete(&mut self, channel: ChannelId, message: MessageId, now: i64) -> Result<(), MessagingError> {
        self.tick(now);
        self.call("DELETE", &format!("/api/v1/channels/{channel}/messages/{message}"), None::<&()>).await?;
        self.device.vault().delete(META_NS, message.to_string().as_bytes()).await?;
        self.unindex_channel_message(message).await
    }

    /// Reacts to a message with `emoji`. Returns the message as shown.
    pub async fn channel_react(
        &mut self,
        channel: ChannelId,
        message: MessageId,
        emoji: &str,
        now: i64,
    ) -> Result<ChannelEntry, MessagingError> {
        self.tick(now);
        if self.state != LinkState::Linked {
            return Err(MessagingError::NotLinked);
        }
        if emoji.is_empty() || emoji.len() > EMOJI_MAX_BYTES {
            return Err(MessagingError::Send(format!("an emoji is 1 to {EMOJI_MAX_BYTES} bytes")));
        }
        let origin = self
            .origin_of(channel, message)
            .await?
            .ok_or_else(|| MessagingError::Send("the message could not be read here, so it cannot be reacted to".into()))?;
        let plain = ReactionPlain {
            v: 1,
            nonce: random_nonce(),
            target: origin.nonce,
            target_author: origin.author,
            emoji: emoji.to_owned(),
        };
        let plaintext = serde_json::to_vec(&plain).map_err(|e| MessagingError::Send(e.to_string()))?;
        self.device.vault().begin_batch();
        let result = async {
            let raw = self.seal_and_post(channel, &plaintext, Write::React { message }).await?;
            let r: Reaction = serde_json::from_slice(&raw)
                .map_err(|e| MessagingError::Transport(format!("unreadable answer to a reaction: {e}")))?;
            let sealed = Sealed::of_reaction(&r);
            let mine = Sealed { channel, author: self.me, device: self.my_device, message };
            let key = format!("r/{}", r.id);
            if sealed != mine || self.read_json::<ReactionRecord>(PLAIN_NS, &key).await?.is_some() {
                return Err(MessagingError::Transport("the server answered a reaction with another one".into()));
            }
            self.write_json(PLAIN_NS, &key, &ReactionRecord { plain: Some(plain.clone()), sealed }).await?;
            let mut m = self.fresh_message(channel, message).await?;
            if !m.reactions.iter().any(|x| x.id == r.id) {
                m.reactions.push(r);
            }
            self.read_message(&m).await
        }
        .await;
        self.commit_after_send().await;
        result
    }

    /// Takes back this user's reactions with `emoji` on a message. Returns the message as shown.
    pub async fn channel_unreact(
        &mut self,
        channel: ChannelId,
        message: MessageId,
        emoji: &str,
        now: i64,
    ) -> Result<ChannelEntry, MessagingError> {
        self.tick(now);
        // The server's list of reactions: one made on another device is taken back too.
        let mut m = self.fresh_message(channel, message).await?;
        self.device.vault().begin_batch();
        let result = async {
            // Read first: the reactions' emoji are only known decrypted.
            self.read_message(&m).await?;
            let mut gone = Vec::new();
            for r in m.reactions.iter().filter(|r| r.user_id == self.me) {
                let record: Option<ReactionRecord> = self.read_json(PLAIN_NS, &format!("r/{}", r.id)).await?;
                if record.and_then(|r| r.plain).is_some_and(|p| p.emoji == emoji) {
                    gone.push(r.id);
                }
            }
            for id in &gone {
                let path = format!("/api/v1/channels/{channel}/messages/{message}/reactions/{id}");
                match self.call("DELETE", &path, None::<&()>).await {
                    Ok(_) | Err(MessagingError::Api { status: 404, .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            m.reactions.retain(|r| !gone.contains(&r.id));
            self.read_message(&m).await
        }
        .await;
        self.commit_after_send().await;
        result
    }

    async fn commit_after_send(&mut self) {
        if let Err(e) = self.device.vault().commit_batch().await {
            tracing::warn!(error = %e, "could not keep a channel write in the store");
            // The index's table in memory may hold documents that were not written.
            self.search_docs = None;
        }
    }

    /// Keeps what this device sent: a sender key message cannot be decrypted by its own sender.
    async fn keep_own(
        &self,
        channel: ChannelId,
        edited: Option<MessageId>,
        m: &ChannelMessage,
        plain: &MessagePlain,
    ) -> Result<(), MessagingError> {
        let key = plain_key(m.id, m.edited_at);
        // The server's answer must be this very write: never a record over another message.
        if (m.channel_id, m.author_id, m.author_device) != (channel, self.me, self.my_device)
            || edited.is_some_and(|id| id != m.id)
            || edited.is_some() != m.edited_at.is_some()
            || self.read_json::<PlainRecord>(PLAIN_NS, &key).await?.is_some()
        {
            return Err(MessagingError::Transport("the server answered with another message".into()));
        }
        self.write_json(PLAIN_NS, &key, &PlainRecord { plain: Some(plain.clone()), sealed: Sealed::of_message(m) }).await?;
        let named = plain.edit_of.clone().unwrap_or_else(|| plain.nonce.clone());
        if self.origin(m.id).await?.is_none() {
            self.write_json(PLAIN_NS, &format!("o/{}", m.id), &Origin { nonce: named.clone(), author: self.me }).await?;
        }
        self.write_json(PLAIN_NS, &nonce_key(m.channel_id, self.me, &named), &m.id).await
    }

    /// A message of `channel` this device knows, fetched when it does not.
    async fn known_message(&mut self, channel: ChannelId, id: MessageId) -> Result<ChannelMessage, MessagingError> {
        if let Some(m) = self.meta(id).await? {
            if m.channel_id == channel {
                return Ok(m);
            }
        }
        let page: Vec<ChannelMessage> =
            self.api("GET", &format!("/api/v1/channels/{channel}/messages?around={id}&limit=1"), None::<&()>).await?;
        match page.into_iter().find(|m| m.id == id && m.channel_id == channel) {
            Some(m) => {
                self.store_meta(&m).await?;
                Ok(m)
            }
            None => Err(MessagingError::Send(format!("no message {id} in that channel"))),
        }
    }

    /// The nonce and author a message names itself by, reading it first if this device has not
    /// yet (`None`: it cannot be read here, or not yet).
    async fn origin_of(&mut self, channel: ChannelId, id: MessageId) -> Result<Option<Origin>, MessagingError> {
        if let Some(origin) = self.origin(id).await? {
            return Ok(Some(origin));
        }
        let m = self.fresh_message(channel, id).await?;
        self.read_batch(std::slice::from_ref(&m)).await?;
        self.origin(id).await
    }

    /// A message of `channel` as the server has it now (its reactions and pins), or as this
    /// device last knew it when the server does not list it.
    async fn fresh_message(&mut self, channel: ChannelId, id: MessageId) -> Result<ChannelMessage, MessagingError> {
        // By id: a message of a thread this device never loaded is found as well.
        match self.api::<ChannelMessage>("GET", &format!("/api/v1/channels/{channel}/messages/{id}"), None::<&()>).await {
            Ok(m) if m.id == id && m.channel_id == channel => {
                self.store_meta(&m).await?;
                Ok(m)
            }
            Ok(_) => Err(MessagingError::Transport("the server answered with another message".into())),
            Err(MessagingError::Api { status: 404, .. }) => Err(MessagingError::Send(format!("no message {id} in that channel"))),
            Err(e) => match self.meta(id).await?.filter(|m| m.channel_id == channel) {
                // Offline: what this device knows of it.
                Some(m) if matches!(e, MessagingError::Transport(_)) => Ok(m),
                _ => Err(e),
            },
        }
    }

    async fn reply_quote(&mut self, channel: ChannelId, id: MessageId) -> Result<ReplyTo, MessagingError> {
        let mut m = self.known_message(channel, id).await?;
        if self.read_json::<PlainRecord>(PLAIN_NS, &plain_key(id, m.edited_at)).await?.is_none() {
            // Not read here yet (its event may still be on its way): read it now.
            m = self.fresh_message(channel, id).await?;
            self.read_batch(std::slice::from_ref(&m)).await?;
        }
        let record: Option<PlainRecord> = self.read_json(PLAIN_NS, &plain_key(id, m.edited_at)).await?;
        let excerpt = record.and_then(|r| r.plain).map(|p| excerpt(&p.body)).unwrap_or_default();
        Ok(ReplyTo { id, author_id: m.author_id, excerpt })
    }

    /// Encrypts `plaintext` with this device's key for `channel` and makes the write, handing
    /// the key to the recipient devices that lack it and replacing it first when a device
    /// that held it is gone. Made again on a newer view when the server says the one used is
    /// stale. Returns the answer's body.
    async fn seal_and_post(&mut self, channel: ChannelId, plaintext: &[u8], write: Write) -> Result<Vec<u8>, MessagingError> {
        let (me, my_device) = (self.me, self.my_device);
        for _attempt in 0..VIEW_ATTEMPTS {
            let mut out = self.outgoing(channel).await?;
            let recipients = match out.recipients.clone() {
                Some(r) if r.channel_id == channel => r,
                _ => self.api("GET", &format!("/api/v1/channels/{channel}/recipients"), None::<&()>).await?,
            };
            let targets = match self.checked_targets.get(&channel) {
                Some(c) if c.view == recipients.view && self.now.saturating_sub(c.checked_at) < TARGETS_TTL_MS => {
                    c.targets.clone()
                }
                _ => {
                    let targets = self.channel_targets(&recipients).await?;
                    let checked = CheckedTargets { view: recipients.view, checked_at: self.now, targets: targets.clone() };
                    self.checked_targets.insert(channel, checked);
                    targets
                }
            };
            let current: BTreeSet<Served> = targets.iter().map(|(t, key)| served(t, key)).collect();
            let distribution = match out.distribution.as_deref().map(str::parse::<Uuid>) {
                Some(Ok(d)) if !needs_rotation(&out.served, &current) => d,
                _ => {
                    // A new key: the devices that left never get it.
                    let d = new_distribution();
                    out.distribution = Some(d.to_string());
                    out.served.clear();
                    let own = KeyBinding::Bound { channel, identity: self.device.identity_key().serialize().to_vec().into() };
                    self.write_json(KEY_NS, &key_slot(me, my_device, d), &own).await?;
                    d
                }
            };
            let skdm = self.device.sender_key_distribution(me, my_device, distribution).await?;
            let payload = serde_json::to_vec(&SenderKeyPayload {
                sender_key: SenderKeyDistribution { channel, distribution: skdm.into() },
            })
            .map_err(|e| MessagingError::Send(e.to_string()))?;
            let mut distributions = Vec::new();
            let mut newly = Vec::new();
            for (t, key) in targets.iter().filter(|(t, key)| !out.served.contains(&served(t, key))) {
                let envelope = match self.device.encrypt(t.user_id, t.device_id, &payload).await {
                    Ok(e) => e,
                    Err(e) => {
                        // A session that went away since the view was checked: check again.
                        self.checked_targets.remove(&channel);
                        return Err(e.into());
                    }
                };
                distributions.push(Distribution {
                    user_id: t.user_id,
                    device_id: t.device_id,
                    registration_id: envelope.registration_id,
                    kind: envelope.kind,
                    content: envelope.content.clone(),
                });
                newly.push((served(t, key), key.clone()));
            }
            let ciphertext: Base64Bytes = self.device.group_encrypt(me, my_device, distribution, plaintext).await?.into();
            self.store_outgoing(channel, &mut out).await?;
            // The chain steps and the sessions' ratchet steps are on disk before the request
            // leaves: a key is never used twice after a crash.
            self.device.vault().flush_batch().await?;
            let view = recipients.view;
            // Distributions that do not fit in the write's request go first, on their own.
            let mut stale = None;
            let budget = self.distribution_bytes;
            while distributions.iter().map(|d| d.content.as_slice().len()).sum::<usize>() > budget {
                let mut size = 0;
                let take = distributions
                    .iter()
                    .take_while(|d| {
                        size += d.content.as_slice().len();
                        size <= budget
                    })
                    .count()
                    .max(1);
                let chunk: Vec<Distribution> = distributions.drain(..take).collect();
                let sent: Vec<_> = newly.drain(..take).collect();
                let body = SendSenderKeys { view, distributions: chunk };
                match self.api::<SenderKeysSent>("POST", &format!("/api/v1/channels/{channel}/sender-keys"), Some(&body)).await {
                    Ok(queued) => {
                        // Logged under the envelopes' server timestamp: the one a retry request names.
                        self.log_distributions(channel, distribution, queued.sent_at, &payload, &sent).await;
                        out.served.extend(sent.into_iter().map(|(served, _)| served));
                        self.store_outgoing(channel, &mut out).await?;
                    }
                    Err(MessagingError::Api { status: 409, body }) if body.error.code == ErrorCode::ViewStale => {
                        stale = Some(body);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            let answer = match stale {
                Some(body) => Err(MessagingError::Api { status: 409, body }),
                None => self.post_write(channel, &write, ciphertext, view, distributions).await,
            };
            match answer {
                Ok(raw) => {
                    if !newly.is_empty() {
                        let field = if matches!(write, Write::Edit { .. }) { "edited_at" } else { "created_at" };
                        let sent_at = serde_json::from_slice::<serde_json::Value>(&raw)
                            .ok()
                            .and_then(|v| v.get(field).and_then(serde_json::Value::as_i64));
                        if let Some(sent_at) = sent_at {
                            self.log_distributions(channel, distribution, sent_at, &payload, &newly).await;
                        }
                    }
                    out.served.extend(newly.into_iter().map(|(served, _)| served));
                    out.recipients = Some(recipients);
                    self.store_outgoing(channel, &mut out).await?;
                    return Ok(raw);
                }
                Err(MessagingError::Api { status: 409, body }) if body.error.code == ErrorCode::ViewStale => {
                    let current: ChannelRecipients = body
                        .error
                        .details
                        .and_then(|d| serde_json::from_value(d).ok())
                        .filter(|r: &ChannelRecipients| r.channel_id == channel)
                        .ok_or_else(|| MessagingError::Transport("a stale view answered without the current one".into()))?;
                    out.recipients = Some(current);
                    self.store_outgoing(channel, &mut out).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(MessagingError::Send("the channel's members kept changing; try again".into()))
    }

    /// See [`crate::messaging::Messenger::set_distribution_bytes_per_request`].
    pub fn set_distribution_bytes_per_request(&mut self, bytes: usize) {
        self.distribution_bytes = bytes.max(1);
    }

    /// Makes a write (a send, an edit or a reaction) with its ciphertext and distributions.
    async fn post_write(
        &self,
        channel: ChannelId,
        write: &Write,
        ciphertext: Base64Bytes,
        view: i64,
        distributions: Vec<Distribution>,
    ) -> Result<Vec<u8>, MessagingError> {
        match write {
            Write::Send { thread_id, mentions } => {
                let body =
                    SendChannelMessage { ciphertext, view, thread_id: *thread_id, distributions, mentions: mentions.clone() };
                self.call("POST", &format!("/api/v1/channels/{channel}/messages"), Some(&body)).await
            }
            Write::Edit { message, mentions } => {
                let body = EditChannelMessage { ciphertext, view, distributions, mentions: mentions.clone() };
                self.call("PATCH", &format!("/api/v1/channels/{channel}/messages/{message}"), Some(&body)).await
            }
            Write::React { message } => {
                let body = NewReaction { ciphertext, view, distributions };
                self.call("POST", &format!("/api/v1/channels/{channel}/messages/{message}/reactions"), Some(&body)).await
            }
        }
    }

    /// Keeps distributions that went out for retry requests, like a direct message: a device
    /// that could not decrypt its distribution asks again and gets it again.
    async fn log_distributions(
        &self,
        channel: ChannelId,
        distribution: Uuid,
        sent_at: i64,
        payload: &[u8],
        sent: &[(Served, Vec<u8>)],
    ) {
        let to: Vec<crate::crypto::SentTo> = sent
            .iter()
            .map(|((user, device, _, _), identity)| crate::crypto::SentTo {
                user: *user,
                device: *device,
                identity: identity.clone().into(),
            })
            .collect();
        self.log_sent_to(&format!("sender_key/{channel}/{distribution}/{sent_at}"), sent_at, payload, to).await;
    }

    /// The devices of a view to hand the key to: those their owner's signed list names (with
    /// a session from a bundle carrying the key the list gives), less this device. Each comes
    /// with the identity key the list gives it.
    pub(super) async fn channel_targets(
        &mut self,
        recipients: &ChannelRecipients,
    ) -> Result<Vec<(RecipientDevice, Vec<u8>)>, MessagingError> {
        let mut by_user: BTreeMap<UserId, Vec<RecipientDevice>> = BTreeMap::new();
        for d in &recipients.devices {
            if (d.user_id, d.device_id) != (self.me, self.my_device) {
                by_user.entry(d.user_id).or_default().push(*d);
            }
        }
        // Lists: fetched for users this run does not know yet, and for users with a device the
        // known list does not name (once: a device refused again is remembered).
        let mut fetch = Vec::new();
        for (user, devices) in &by_user {
            let stale = match self.accounts.get(user) {
                None => true,
                Some(k) => {
                    devices.iter().any(|d| k.key_of(d.device_id).is_none() && !self.refused.contains(&(*user, d.device_id, None)))
                }
            };
            if stale {
                fetch.push(*user);
            }
        }
        // In batches of the channel's readers (a user left out has no list: nothing is handed
        // to their devices).
        let channel = recipients.channel_id;
        let path = format!("/api/v1/channels/{channel}/device-lists");
        let bodies: Vec<ReadDeviceLists> = fetch.chunks(CLAIM_MAX).map(|c| ReadDeviceLists { users: c.to_vec() }).collect();
        for answer in self.post_many::<_, DeviceLists>(&path, bodies).await {
            for m in answer?.lists {
                if !fetch.contains(&m.user_id) {
                    continue;
                }
                let list = crate::crypto::account::verify_list(&m.signed, m.user_id).map_err(MessagingError::Account)?;
                self.accept_list(m.user_id, m.signed, &list).await?;
            }
        }
        // Devices the lists name, and sessions with them.
        let mut ready: Vec<(RecipientDevice, Vec<u8>)> = Vec::new();
        let mut missing: BTreeMap<UserId, Vec<(RecipientDevice, Vec<u8>)>> = BTreeMap::new();
        for (user, devices) in &by_user {
            let Some(account) = self.accounts.get(user).cloned() else { continue };
            if *user != self.me && account.trust == Trust::Unverified {
                self.events.push((Incoming::IdentityChanged { user: *user }, None));
                return Err(MessagingError::UntrustedIdentity { user: *user });
            }
            for d in devices {
                let Some(key) = account.key_of(d.device_id).map(<[u8]>::to_vec) else {
                    self.refused.insert((*user, d.device_id, None));
                    continue;
                };
                let session_key = self.device.session_identity(*user, d.device_id).await?;
                let registration = self.device.session_registration(*user, d.device_id).await?;
                if session_key.as_deref() == Some(key.as_slice()) && registration == Some(d.registration_id) {
                    ready.push((*d, key));
                } else {
                    if session_key.is_some() {
                        self.forget_session(*user, d.device_id).await?;
                    }
                    missing.entry(*user).or_default().push((*d, key));
                }
            }
        }
        if !missing.is_empty() {
            // Bundles for many devices per request, claimed through the channel.
            let wanted: Vec<DeviceAddress> =
                missing.values().flatten().map(|(d, _)| DeviceAddress { user_id: d.user_id, device_id: d.device_id }).collect();
            let bodies: Vec<ClaimBundles> = wanted.chunks(CLAIM_MAX).map(|c| ClaimBundles { devices: c.to_vec() }).collect();
            let path = format!("/api/v1/channels/{channel}/bundles");
            for answer in self.post_many::<_, ClaimedBundles>(&path, bodies).await {
                for bundles in answer?.users {
                    let Some(devices) = missing.get(&bundles.user_id) else { continue };
                    for (d, key) in devices {
                        match bundles.devices.iter().find(|b| b.device_id == d.device_id) {
                            Some(b) if b.identity_key.as_slice() == key.as_slice() => {
                                self.device.start_session(bundles.user_id, b).await?;
                                ready.push((*d, key.clone()));
                            }
                            Some(_) => tracing::warn!(user = %bundles.user_id, device = %d.device_id,
                                "the server gave a key its signed list does not; no sender key for that device"),
                            None => {}
                        }
                    }
                }
            }
        }
        ready.sort_by_key(|(d, _)| (d.user_id, d.device_id));
        Ok(ready)
    }

    /// POSTs each of `bodies` to `path`, a few at a time, in order.
    async fn post_many<B: Serialize, R: DeserializeOwned>(&self, path: &str, bodies: Vec<B>) -> Vec<Result<R, MessagingError>> {
        use futures_util::stream::{self, StreamExt};
        let this = self;
        stream::iter(bodies.into_iter().map(|body| async move { this.api::<R>("POST", path, Some(&body)).await }))
            .buffered(FETCH_CONCURRENCY)
            .collect()
            .await
    }

    // ---- receiving ---------------------------------------------------------------------

    /// Takes a sender key handed over a pairwise session (called while processing the
    /// envelope, inside its write batch). Messages that waited for it are read now.
    pub(super) async fn take_sender_key(
        &mut self,
        sender: UserId,
        device: DeviceId,
        plaintext: &[u8],
    ) -> Vec<(Incoming, Option<u64>)> {
        // The identity of the session it came over (its sender checked against the signed list).
        let identity = match self.device.session_identity(sender, device).await {
            Ok(Some(identity)) => identity,
            Ok(None) => {
                tracing::warn!(sender = %sender, "a sender key from a device with no session; not taken");
                return Vec::new();
            }
            Err(e) => {
                tracing::warn!(error = %e, sender = %sender, "a sender key was not taken");
                return Vec::new();
            }
        };
        match self.take_sender_key_inner(sender, device, &identity, plaintext).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, sender = %sender, "a sender key was not taken");
                Vec::new()
            }
        }
    }

    async fn take_sender_key_inner(
        &mut self,
        sender: UserId,
        device: DeviceId,
        identity: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<(Incoming, Option<u64>)>, MessagingError> {
        let payload: SenderKeyPayload =
            serde_json::from_slice(plaintext).map_err(|e| MessagingError::Transport(format!("unreadable sender key: {e}")))?;
        let channel = payload.sender_key.channel;
        let skdm = payload.sender_key.distribution.as_slice();
        let distribution = E2eeDevice::distribution_of_skdm(skdm)?;
        let slot = key_slot(sender, device, distribution);
        if let Some(bound) = self.read_json::<KeyBinding>(KEY_NS, &slot).await? {
            let bound = bound.channel();
            if bound != channel {
                // One key, one channel: a key named for two would let its messages be replayed
                // from one into the other.
                return Err(MessagingError::Send(format!(
                    "a sender key of channel {bound} was handed again for channel {channel}; refused"
                )));
            }
        }
        self.device.process_sender_key_distribution(sender, device, skdm).await?;
        self.write_json(KEY_NS, &slot, &KeyBinding::Bound { channel, identity: identity.to_vec().into() }).await?;
        let waiting: Vec<MessageId> = self.read_json(PENDING_NS, &slot).await?.unwrap_or_default();
        self.device.vault().delete(PENDING_NS, slot.as_bytes()).await?;
        let mut events = Vec::new();
        for id in waiting {
            if let Some(m) = self.meta(id).await? {
                let entry = self.read_message(&m).await?;
                events.push((Incoming::ChannelEntry(entry), None));
            }
        }
        Ok(events)
    }

    /// Opens a channel ciphertext of `device` of `author` said to be of `channel`.
    async fn open_sealed(
        &mut self,
        channel: ChannelId,
        author: UserId,
        device: DeviceId,
        ciphertext: &[u8],
    ) -> Result<Opened, MessagingError> {
        let Some(distribution) = E2eeDevice::distribution_of_message(ciphertext) else {
            return Ok(Opened::Failed("not a sender key message"));
        };
        if !self.is_vouched(author, device, None).await? {
            return Ok(Opened::Failed("from a device its author's signed list does not name"));
        }
        let slot = key_slot(author, device, distribution);
        match self.read_json::<KeyBinding>(KEY_NS, &slot).await? {
            None => return Ok(Opened::Pending(slot)),
            Some(bound) if bound.channel() != channel => return Ok(Opened::Failed("encrypted with the key of another channel")),
            Some(KeyBinding::Bound { identity, .. }) => {
                // The key came from the device the list names under that number now, not from
                // an earlier device that had the number.
                if !self.is_vouched(author, device, Some(identity.as_slice())).await? {
                    return Ok(Opened::Failed("the key's device is no longer the one its author's list names"));
                }
            }
            Some(KeyBinding::Legacy(_)) => {}
        }
        Ok(match self.device.group_decrypt(author, device, ciphertext).await {
            Ok(GroupDecrypted::Message(p)) => Opened::Plain(p),
            Ok(GroupDecrypted::NoKey) => Opened::Pending(slot),
            Ok(GroupDecrypted::Duplicate) => Opened::Failed("its message key was used already"),
            Err(e) => {
                tracing::warn!(error = %e, author = %author, "a channel message did not decrypt");
                Opened::Failed("it does not decrypt")
            }
        })
    }

    async fn wait_for_key(&self, slot: &str, id: MessageId) -> Result<(), MessagingError> {
        let mut waiting: Vec<MessageId> = self.read_json(PENDING_NS, slot).await?.unwrap_or_default();
        if !waiting.contains(&id) {
            waiting.push(id);
            // A bound: a server sending junk under one key cannot grow the list forever.
            if waiting.len() > 10_000 {
                waiting.remove(0);
            }
            self.write_json(PENDING_NS, slot, &waiting).await?;
        }
        Ok(())
    }

    /// The text of a message version: from the store, or decrypted (and kept).
    async fn message_plain(&mut self, m: &ChannelMessage) -> Result<(EntryState, Option<MessagePlain>), MessagingError> {
        let key = plain_key(m.id, m.edited_at);
        let sealed = Sealed::of_message(m);
        if let Some(record) = self.read_json::<PlainRecord>(PLAIN_NS, &key).await? {
            return Ok(match record.plain {
                Some(p) if record.sealed == sealed => (EntryState::Ok, Some(p)),
                Some(_) => {
                    tracing::warn!(message = %m.id, "a read message served under another channel, author or device");
                    (EntryState::Failed, None)
                }
                None => (EntryState::Failed, None),
            });
        }
        let failed = |why: &str| {
            tracing::warn!(message = %m.id, channel = %m.channel_id, why, "channel message refused");
            PlainRecord { plain: None, sealed }
        };
        let record = match self.open_sealed(m.channel_id, m.author_id, m.author_device, m.ciphertext.as_slice()).await? {
            Opened::Pending(slot) => {
                self.wait_for_key(&slot, m.id).await?;
                return Ok((EntryState::Pending, None));
            }
            Opened::Failed(why) => failed(why),
            Opened::Plain(bytes) => match serde_json::from_slice::<MessagePlain>(&bytes) {
                Err(_) => failed("not a message"),
                Ok(plain) => {
                    let origin = self.origin(m.id).await?;
                    let named = plain.edit_of.clone().unwrap_or_else(|| plain.nonce.clone());
                    let owner: Option<MessageId> =
                        self.read_json(PLAIN_NS, &nonce_key(m.channel_id, m.author_id, &named)).await?;
                    match check_message(&plain, m, origin.as_ref(), owner) {
                        Err(why) => failed(why),
                        Ok(()) => {
                            if origin.is_none() {
                                let origin = Origin { nonce: named.clone(), author: m.author_id };
                                self.write_json(PLAIN_NS, &format!("o/{}", m.id), &origin).await?;
                            }
                            self.write_json(PLAIN_NS, &nonce_key(m.channel_id, m.author_id, &named), &m.id).await?;
                            PlainRecord { plain: Some(plain), sealed }
                        }
                    }
                }
            },
        };
        self.write_json(PLAIN_NS, &key, &record).await?;
        Ok(match record.plain {
            Some(p) => (EntryState::Ok, Some(p)),
            None => (EntryState::Failed, None),
        })
    }

    /// The emoji of a reaction, from the store or decrypted (and kept); `None` while its key
    /// has not come, or when it cannot be read.
    async fn reaction_plain(&mut self, m: &ChannelMessage, r: &Reaction) -> Result<Option<ReactionPlain>, MessagingError> {
        let key = format!("r/{}", r.id);
        let sealed = Sealed::of_reaction(r);
        if let Some(record) = self.read_json::<ReactionRecord>(PLAIN_NS, &key).await? {
            return Ok(record.plain.filter(|_| record.sealed == sealed));
        }
        if r.message_id != m.id || r.channel_id != m.channel_id {
            return Ok(None);
        }
        let plain = match self.open_sealed(m.channel_id, r.user_id, r.device_id, r.ciphertext.as_slice()).await? {
            Opened::Pending(slot) => {
                self.wait_for_key(&slot, m.id).await?;
                return Ok(None);
            }
            Opened::Failed(why) => {
                tracing::warn!(reaction = %r.id, why, "reaction refused");
                None
            }
            Opened::Plain(bytes) => match serde_json::from_slice::<ReactionPlain>(&bytes) {
                Ok(p) if check_reaction(&p).is_ok() => Some(p),
                _ => {
                    tracing::warn!(reaction = %r.id, "reaction refused: malformed");
                    None
                }
            },
        };
        self.write_json(PLAIN_NS, &key, &ReactionRecord { plain: plain.clone(), sealed }).await?;
        Ok(plain)
    }

    /// Reads a message (its text and its reactions) and keeps what the server says of it.
    async fn read_message(&mut self, m: &ChannelMessage) -> Result<ChannelEntry, MessagingError> {
        self.store_meta(m).await?;
        let (state, plain) = self.message_plain(m).await?;
        let origin = self.origin(m.id).await?;
        let mut reactions = Vec::new();
        for r in &m.reactions {
            if let Some(p) = self.reaction_plain(m, r).await? {
                if state == EntryState::Ok && reaction_applies(&p, origin.as_ref()) {
                    reactions.push((r.user_id, p.emoji));
                }
            }
        }
        if let (EntryState::Ok, Some(p)) = (state, &plain) {
            self.index_channel_message(m, &p.body, p.thread_name.as_deref(), p.reply_to.is_some()).await;
        }
        let (body, reply_to, thread_name) = match plain {
            Some(p) => (p.body, p.reply_to, p.thread_name),
            None => (String::new(), None, None),
        };
        let body_for_check = body.clone();
        let reply_to = match reply_to {
            Some(quote) => self.checked_quote(m.channel_id, quote).await?,
            None => None,
        };
        Ok(ChannelEntry {
            id: m.id,
            channel_id: m.channel_id,
            author_id: m.author_id,
            author_device: m.author_device,
            created_at: m.created_at,
            edited_at: m.edited_at,
            thread_id: m.thread_id,
            pinned: m.pinned,
            thread_count: m.thread_count,
            state,
            body,
            reply_to,
            thread_name,
            reactions: summarize(self.me, &reactions),
            mention_mismatch: state == EntryState::Ok && mentions_differ(&body_for_check, &m.mentions),
            mentions: m.mentions.clone(),
        })
    }

    /// A reply's quote as this device can vouch for it: when it has read the quoted message,
    /// its real author and text stand in for what the reply claims (a member cannot put words
    /// in another's mouth); a quote of a message it never read is shown as the reply gives it.
    async fn checked_quote(&self, channel: ChannelId, quote: ReplyTo) -> Result<Option<ReplyTo>, MessagingError> {
        let Some(m) = self.meta(quote.id).await? else { return Ok(Some(quote)) };
        if m.channel_id != channel {
            return Ok(None);
        }
        let record: Option<PlainRecord> = self.read_json(PLAIN_NS, &plain_key(m.id, m.edited_at)).await?;
        Ok(Some(match record.and_then(|r| r.plain.filter(|_| r.sealed == Sealed::of_message(&m))) {
            Some(p) => ReplyTo { id: m.id, author_id: m.author_id, excerpt: excerpt(&p.body) },
            None => quote,
        }))
    }

    /// Reads messages in a write batch of their own (a decrypted message is kept with the
    /// key step that read it).
    pub(super) async fn read_batch(&mut self, messages: &[ChannelMessage]) -> Result<Vec<ChannelEntry>, MessagingError> {
        self.device.vault().begin_batch();
        let mut out = Vec::with_capacity(messages.len());
        let mut failure = None;
        for m in messages {
            match self.read_message(m).await {
                Ok(e) => out.push(e),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Err(e) = self.device.vault().commit_batch().await {
            // The index's table in memory may hold documents that were not written.
            self.search_docs = None;
            return Err(e.into());
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// A page of a channel's history (what the server keeps from when this user joined),
    /// oldest first.
    pub async fn channel_history(
        &mut self,
        channel: ChannelId,
        query: HistoryQuery,
        now: i64,
    ) -> Result<Vec<ChannelEntry>, MessagingError> {
        self.tick(now);
        let limit = query.limit.unwrap_or(50).clamp(1, HISTORY_PAGE_MAX as u32);
        let mut path = format!("/api/v1/channels/{channel}/messages?limit={limit}");
        for (name, value) in
            [("before", query.before), ("after", query.after), ("around", query.around), ("thread_id", query.thread_id)]
        {
            if let Some(v) = value {
                path.push_str(&format!("&{name}={v}"));
            }
        }
        let mut page: Vec<ChannelMessage> = self.api("GET", &path, None::<&()>).await?;
        page.retain(|m| m.channel_id == channel);
        page.sort_by_key(|m| m.id);
        self.read_batch(&page).await
    }

    /// The pinned messages of a channel.
    pub async fn channel_pins(&mut self, channel: ChannelId, now: i64) -> Result<Vec<ChannelEntry>, MessagingError> {
        self.tick(now);
        let mut pins: Vec<ChannelMessage> = self.api("GET", &format!("/api/v1/channels/{channel}/pins"), None::<&()>).await?;
        pins.retain(|m| m.channel_id == channel);
        self.read_batch(&pins).await
    }

    /// Handles a gateway event about channels and their messages; other names are ignored.
    pub(super) async fn channel_event(&mut self, name: &str, data: serde_json::Value) -> Result<(), MessagingError> {
        let invalid = |e: serde_json::Error| MessagingError::Transport(format!("unreadable {name} event: {e}"));
        match name {
            event_name::MESSAGE_CREATE | event_name::MESSAGE_UPDATE => {
                let m: ChannelMessage = serde_json::from_value(data).map_err(invalid)?;
                let mut entries = self.read_batch(std::slice::from_ref(&m)).await?;
                if let Some(entry) = entries.pop() {
                    self.events.push((Incoming::ChannelEntry(entry), None));
                }
            }
            event_name::MESSAGE_DELETE => {
                let gone: MessageDeleted = serde_json::from_value(data).map_err(invalid)?;
                // Only a message of the channel the event names.
                if self.meta(gone.id).await?.is_some_and(|m| m.channel_id != gone.channel_id) {
                    return Ok(());
                }
                self.device.vault().delete(META_NS, gone.id.to_string().as_bytes()).await?;
                self.unindex_channel_message(gone.id).await?;
                self.events.push((Incoming::ChannelMessageDeleted { channel: gone.channel_id, id: gone.id }, None));
            }
            event_name::MESSAGE_DELETE_BULK => {
                let gone: MessagesDeleted = serde_json::from_value(data).map_err(invalid)?;
                for id in gone.ids.into_iter().take(MESSAGES_DELETED_MAX) {
                    // Only messages of the channel the event names.
                    if self.meta(id).await?.is_some_and(|m| m.channel_id != gone.channel_id) {
                        continue;
                    }
                    self.device.vault().delete(META_NS, id.to_string().as_bytes()).await?;
                    self.unindex_channel_message(id).await?;
                    self.events.push((Incoming::ChannelMessageDeleted { channel: gone.channel_id, id }, None));
                }
            }
            event_name::REACTION_ADD => {
                let r: Reaction = serde_json::from_value(data).map_err(invalid)?;
                // A message this device has not seen is read, with its reactions, when it is.
                if let Some(mut m) = self.meta(r.message_id).await?.filter(|m| m.channel_id == r.channel_id) {
                    if !m.reactions.iter().any(|x| x.id == r.id) {
                        m.reactions.push(r);
                    }
                    self.push_entry(&m).await?;
                }
            }
            event_name::REACTION_REMOVE => {
                let r: ReactionRemoved = serde_json::from_value(data).map_err(invalid)?;
                if let Some(mut m) = self.meta(r.message_id).await?.filter(|m| m.channel_id == r.channel_id) {
                    m.reactions.retain(|x| x.id != r.id);
                    self.push_entry(&m).await?;
                }
            }
            event_name::PINS_UPDATE => {
                let p: PinUpdate = serde_json::from_value(data).map_err(invalid)?;
                if let Some(mut m) = self.meta(p.message_id).await?.filter(|m| m.channel_id == p.channel_id) {
                    m.pinned = p.pinned;
                    self.push_entry(&m).await?;
                }
            }
            event_name::MEMBER_ADD
            | event_name::MEMBER_UPDATE
            | event_name::MEMBER_REMOVE
            | event_name::SERVER_CREATE
            | event_name::SERVER_DELETE
            | event_name::ROLE_CREATE
            | event_name::ROLE_UPDATE
            | event_name::ROLE_DELETE
            | event_name::CHANNEL_CREATE
            | event_name::CHANNEL_UPDATE
            | event_name::CHANNEL_DELETE => self.views_changed().await?,
            _ => {}
        }
        Ok(())
    }

    async fn push_entry(&mut self, m: &ChannelMessage) -> Result<(), MessagingError> {
        let mut entries = self.read_batch(std::slice::from_ref(m)).await?;
        if let Some(entry) = entries.pop() {
            self.events.push((Incoming::ChannelEntry(entry), None));
        }
        Ok(())
    }

    /// Opens a channel ciphertext directly (tests: what a device can read of a ciphertext it
    /// was handed outside the server's delivery). `None` when it cannot.
    #[cfg(feature = "testing")]
    pub async fn try_decrypt_channel_message(&mut self, m: &ChannelMessage) -> Result<Option<String>, MessagingError> {
        Ok(match self.open_sealed(m.channel_id, m.author_id, m.author_device, m.ciphertext.as_slice()).await? {
            Opened::Plain(bytes) => serde_json::from_slice::<MessagePlain>(&bytes).ok().map(|p| p.body),
            Opened::Pending(_) | Opened::Failed(_) => None,
        })
    }

    /// The distribution id of this device's current key in `channel` (tests of rotation).
    pub async fn channel_distribution(&self, channel: ChannelId) -> Result<Option<String>, MessagingError> {
        Ok(self.read_json::<OutgoingKey>(OUT_NS, &format!("c/{channel}")).await?.and_then(|o| o.distribution))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: i64, author: i64, edited_at: Option<i64>) -> ChannelMessage {
        ChannelMessage {
            id: MessageId(id),
            channel_id: ChannelId(7),
            author_id: UserId(author),
            author_device: DeviceId(1),
            ciphertext: Base64Bytes(Vec::new()),
            created_at: 1,
            edited_at,
            thread_id: None,
            pinned: false,
            thread_count: 0,
            mentions: Mentions::default(),
            reactions: Vec::new(),
        }
    }

    #[test]
    fn mentions_are_read_from_the_text_and_a_different_declaration_is_told() {
        let text = "hi <@12> and <@&40>, <@12> again, @everyone; not <@x>, <@> or <@&7 nor a <@3";
        let found = Mentions::in_text(text);
        assert_eq!(found, Mentions { users: vec![UserId(12)], roles: vec![crate::ids::RoleId(40)], everyone: true });
        assert!(!mentions_differ(text, &found));
        // Declared in another order: the same.
        let reordered = Mentions { users: vec![UserId(12), UserId(12)], roles: vec![crate::ids::RoleId(40)], everyone: true };
        assert!(!mentions_differ(text, &reordered));
        // Someone notified whom the text does not name, or a mention hidden from the server.
        let extra = Mentions { users: vec![UserId(12), UserId(99)], ..found.clone() };
        assert!(mentions_differ(text, &extra));
        assert!(mentions_differ(text, &Mentions::default()));
        assert!(!mentions_differ("plain text", &Mentions::default()));
        // One spelling per id, and @everyone only as a word of its own.
        assert_eq!(Mentions::in_text("<@012> <@0>"), Mentions { users: vec![UserId(0)], ..Mentions::default() });
        assert!(!Mentions::in_text("write to me@everyone.org or @everyones").everyone);
        assert!(Mentions::in_text("(@everyone)").everyone);
        // At most the maximum of each kind.
        let many: String = (1..80).map(|i| format!("<@{i}> ")).collect();
        assert_eq!(Mentions::in_text(&many).users.len(), crate::channel_messages::MENTION_USERS_MAX);
    }

    fn plain(nonce: &str, edit_of: Option<&str>) -> MessagePlain {
        MessagePlain {
            v: 1,
            nonce: nonce.to_owned(),
            edit_of: edit_of.map(str::to_owned),
            body: "hi".into(),
            reply_to: None,
            thread_name: None,
        }
    }

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";
    const C: &str = "00112233445566778899aabbccddeeff";

    /// A server that knows nothing: every request is answered 404.
    struct Empty;

    #[async_trait::async_trait(?Send)]
    impl Transport for Empty {
        async fn request(&self, _: &str, _: &str, _: Option<String>) -> Result<super::super::Answer, String> {
            Ok(super::super::Answer { status: 404, body: Vec::new() })
        }
    }

    fn sealed(channel: i64, id: i64, ciphertext: Vec<u8>) -> ChannelMessage {
        ChannelMessage { channel_id: ChannelId(channel), ciphertext: Base64Bytes(ciphertext), ..message(id, 1, None) }
    }

    #[test]
    fn a_key_serves_the_channel_its_distribution_named_and_no_other() {
        tokio::runtime::Builder::new_current_thread().build().expect("rt").block_on(async {
            use crate::crypto::{MemoryBackend, Vault};
            let vault = Vault::open(Box::new(MemoryBackend::default()), "a").await.expect("vault");
            let (mut alice, _) = E2eeDevice::open(vault, UserId(1)).await.expect("device");
            let mut bob = Engine::open(
                Empty,
                Box::new(MemoryBackend::default()),
                "b",
                UserId(2),
                DeviceId(1),
                crate::ids::SessionId(1),
                1,
            )
            .await
            .expect("engine");
            bob.state = LinkState::Linked;
            // Bob knows Alice's signed list: her device 1 with its key.
            let key = alice.identity_key().serialize().to_vec();
            bob.accounts.insert(
                UserId(1),
                super::super::KnownAccount {
                    account_key: Base64Bytes(vec![5; 33]),
                    list: crate::devices::SignedDeviceList {
                        account_key: Base64Bytes(Vec::new()),
                        list: Base64Bytes(Vec::new()),
                        signature: Base64Bytes(Vec::new()),
                    },
                    version: 1,
                    devices: vec![(DeviceId(1), Base64Bytes(key.clone()))],
                    trust: Trust::Default,
                },
            );
            let distribution = new_distribution();
            let skdm = alice.sender_key_distribution(UserId(1), DeviceId(1), distribution).await.expect("skdm");
            let encrypt = |nonce: &str| serde_json::to_vec(&plain(nonce, None)).expect("json");

            // A message that comes before its key waits, and is read when the key comes.
            let first = alice.group_encrypt(UserId(1), DeviceId(1), distribution, &encrypt(A)).await.expect("encrypt");
            let entry = bob.read_batch(&[sealed(7, 10, first)]).await.expect("read").remove(0);
            assert_eq!(entry.state, EntryState::Pending);
            let payload = |channel: i64| {
                serde_json::to_vec(&SenderKeyPayload {
                    sender_key: SenderKeyDistribution { channel: ChannelId(channel), distribution: skdm.clone().into() },
                })
                .expect("json")
            };
            let events = bob.take_sender_key_inner(UserId(1), DeviceId(1), &key, &payload(7)).await.expect("key taken");
            assert!(
                matches!(&events[..], [(Incoming::ChannelEntry(e), _)] if e.state == EntryState::Ok && e.body == "hi" && e.id == MessageId(10)),
                "{events:?}"
            );

            // The server replays a message of channel 7 into channel 8: refused.
            let second = alice.group_encrypt(UserId(1), DeviceId(1), distribution, &encrypt(B)).await.expect("encrypt");
            let moved = bob.read_batch(&[sealed(8, 11, second.clone())]).await.expect("read").remove(0);
            assert_eq!(moved.state, EntryState::Failed, "a key of channel 7 reads nothing in channel 8");
            // The same key handed again for channel 8 is refused too.
            assert!(bob.take_sender_key_inner(UserId(1), DeviceId(1), &key, &payload(8)).await.is_err());
            // In its own channel the next one reads (the refusal consumed nothing).
            let third = alice.group_encrypt(UserId(1), DeviceId(1), distribution, &encrypt(C)).await.expect("encrypt");
            let ok = bob.read_batch(&[sealed(7, 12, third)]).await.expect("read").remove(0);
            assert_eq!((ok.state, ok.body.as_str()), (EntryState::Ok, "hi"));
            // Read again, it comes from the store (its message key is gone).
            let again = bob.read_batch(&[sealed(7, 12, Vec::new())]).await.expect("read").remove(0);
            assert_eq!(again.state, EntryState::Ok);
            // Served again under another channel, author or device, the kept text is not shown
            // (and stays as it was for the real one).
            for moved in [
                ChannelMessage { channel_id: ChannelId(8), ..sealed(7, 12, Vec::new()) },
                ChannelMessage { author_id: UserId(3), ..sealed(7, 12, Vec::new()) },
                ChannelMessage { author_device: DeviceId(2), ..sealed(7, 12, Vec::new()) },
            ] {
                let e = bob.read_batch(&[moved]).await.expect("read").remove(0);
                assert_eq!((e.state, e.body.as_str()), (EntryState::Failed, ""));
            }
            let again = bob.read_batch(&[sealed(7, 12, Vec::new())]).await.expect("read").remove(0);
            assert_eq!((again.state, again.body.as_str()), (EntryState::Ok, "hi"));
            // A copy of a read ciphertext under another id does not decrypt twice.
            let fourth = alice.group_encrypt(UserId(1), DeviceId(1), distribution, &encrypt("aa".repeat(16).as_str())).await.expect("encrypt");
            assert_eq!(bob.read_batch(&[sealed(7, 13, fourth.clone())]).await.expect("read")[0].state, EntryState::Ok);
            assert_eq!(bob.read_batch(&[sealed(7, 14, fourth)]).await.expect("read")[0].state, EntryState::Failed);
            // A device the list does not name is not read.
            let forged = ChannelMessage { author_device: DeviceId(9), ..sealed(7, 15, second) };
            assert_eq!(bob.read_batch(&[forged]).await.expect("read")[0].state, EntryState::Failed);
            // Alice's list now gives device 1 another identity key (a new device took the
            // number): what the old device's key sealed is no longer read as hers.
            let fifth = alice.group_encrypt(UserId(1), DeviceId(1), distribution, &encrypt(&"bb".repeat(16))).await.expect("encrypt");
            if let Some(account) = bob.accounts.get_mut(&UserId(1)) {
                account.devices = vec![(DeviceId(1), Base64Bytes(vec![5; 33]))];
            }
            assert_eq!(bob.read_batch(&[sealed(7, 16, fifth)]).await.expect("read")[0].state, EntryState::Failed);

            // Search finds what was read, once each, and nothing refused; it asks the server
            // nothing (this one answers every request with a 404).
            let found = bob.search(&super::super::SearchQuery { text: "HI".into(), ..Default::default() }).await.expect("search");
            let ids: Vec<MessageId> = found
                .hits
                .iter()
                .map(|h| match h.place {
                    super::super::HitPlace::Channel { message_id, .. } => message_id,
                    super::super::HitPlace::Dm { .. } => panic!("no DM here"),
                })
                .collect();
            assert_eq!(ids, [MessageId(13), MessageId(12), MessageId(10)]);
            assert!(found.hits.iter().all(|h| h.body == "hi" && h.author_id == UserId(1)));
        });
    }

    #[test]
    fn the_key_rotates_only_when_a_device_that_held_it_is_gone() {
        let served: BTreeSet<Served> = [(UserId(1), DeviceId(1), 10, 7), (UserId(2), DeviceId(1), 20, 8)].into();
        let mut current = served.clone();
        assert!(!needs_rotation(&served, &current), "same devices");
        current.insert((UserId(3), DeviceId(1), 30, 9));
        assert!(!needs_rotation(&served, &current), "a newcomer only gets the key");
        current.remove(&(UserId(2), DeviceId(1), 20, 8));
        assert!(needs_rotation(&served, &current), "someone left");
        let mut reinstalled = served.clone();
        reinstalled.remove(&(UserId(2), DeviceId(1), 20, 8));
        reinstalled.insert((UserId(2), DeviceId(1), 21, 8));
        assert!(needs_rotation(&served, &reinstalled), "a device number with a new registration is another device");
        let mut new_identity = served.clone();
        new_identity.remove(&(UserId(2), DeviceId(1), 20, 8));
        new_identity.insert((UserId(2), DeviceId(1), 20, 11));
        assert!(needs_rotation(&served, &new_identity), "a device number with a new identity key is another device");
        let key = [5u8, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        let t = RecipientDevice { user_id: UserId(2), device_id: DeviceId(1), registration_id: 20 };
        assert_eq!(super::served(&t, &key), (UserId(2), DeviceId(1), 20, 0x0102_0304_0506_0708));
        assert!(!needs_rotation(&BTreeSet::new(), &BTreeSet::new()));
    }

    #[test]
    fn an_edit_binds_to_its_original_only() {
        let origin = Origin { nonce: A.into(), author: UserId(1) };
        // The original, then its edit.
        assert_eq!(check_message(&plain(A, None), &message(5, 1, None), None, None), Ok(()));
        assert_eq!(check_message(&plain(B, Some(A)), &message(5, 1, Some(9)), Some(&origin), Some(MessageId(5))), Ok(()));
        // The same edit served as the edit of another message of the same author.
        let other = Origin { nonce: C.into(), author: UserId(1) };
        assert!(check_message(&plain(B, Some(A)), &message(6, 1, Some(9)), Some(&other), None).is_err());
        // ... of a message this device has not seen, whose nonce another message holds.
        assert!(check_message(&plain(B, Some(A)), &message(6, 1, Some(9)), None, Some(MessageId(5))).is_err());
        // ... of another author's message.
        let theirs = Origin { nonce: A.into(), author: UserId(2) };
        assert!(check_message(&plain(B, Some(A)), &message(5, 1, Some(9)), Some(&theirs), None).is_err());
        // An edit served as an original, an original as an edit.
        assert!(check_message(&plain(B, Some(A)), &message(5, 1, None), Some(&origin), None).is_err());
        assert!(check_message(&plain(A, None), &message(5, 1, Some(9)), None, None).is_err());
        // An original whose nonce another message carries (a copy under a new id).
        assert!(check_message(&plain(A, None), &message(8, 1, None), None, Some(MessageId(5))).is_err());
        // Malformed.
        assert!(check_message(&plain("short", None), &message(5, 1, None), None, None).is_err());
        let mut long = plain(A, None);
        long.body = "x".repeat(BODY_MAX_BYTES + 1);
        assert!(check_message(&long, &message(5, 1, None), None, None).is_err());
        let mut named = plain(A, None);
        named.thread_name = Some("n".repeat(THREAD_NAME_MAX_CHARS + 1));
        assert!(check_message(&named, &message(5, 1, None), None, None).is_err());
        let mut v2 = plain(A, None);
        v2.v = 2;
        assert!(check_message(&v2, &message(5, 1, None), None, None).is_err());
    }

    #[test]
    fn a_reaction_counts_on_the_message_it_names_only() {
        let reaction = ReactionPlain { v: 1, nonce: B.into(), target: A.into(), target_author: UserId(1), emoji: "👍".into() };
        assert_eq!(check_reaction(&reaction), Ok(()));
        assert!(reaction_applies(&reaction, Some(&Origin { nonce: A.into(), author: UserId(1) })));
        assert!(!reaction_applies(&reaction, Some(&Origin { nonce: C.into(), author: UserId(1) })), "moved to another message");
        assert!(
            !reaction_applies(&reaction, Some(&Origin { nonce: A.into(), author: UserId(2) })),
            "moved to another author's message that reuses the nonce"
        );
        assert!(!reaction_applies(&reaction, None), "on a message not read");
        let big = ReactionPlain { emoji: "x".repeat(EMOJI_MAX_BYTES + 1), ..reaction.clone() };
        assert!(check_reaction(&big).is_err());
        let empty = ReactionPlain { emoji: String::new(), ..reaction };
        assert!(check_reaction(&empty).is_err());
    }

    #[test]
    fn reactions_are_grouped_by_emoji_and_counted_once_per_person() {
        let me = UserId(1);
        let list = vec![
            (UserId(2), "👍".to_owned()),
            (UserId(1), "🎉".to_owned()),
            (UserId(3), "👍".to_owned()),
            (UserId(2), "👍".to_owned()),
        ];
        let s = summarize(me, &list);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].emoji.as_str(), s[0].count, s[0].mine), ("👍", 2, false));
        assert_eq!(s[0].users, vec![UserId(2), UserId(3)]);
        assert_eq!((s[1].emoji.as_str(), s[1].count, s[1].mine), ("🎉", 1, true));
    }

    #[test]
    fn sender_key_payloads_are_told_from_direct_messages() {
        let payload = serde_json::json!({"sender_key": {"channel": "7", "distribution": "AAEC"}}).to_string();
        assert!(is_sender_key(payload.as_bytes()));
        let dm = serde_json::json!({"id": "ab", "to": "2", "body": "hi"}).to_string();
        assert!(!is_sender_key(dm.as_bytes()));
    }

    #[test]
    fn entries_travel_as_snake_case_json() {
        let entry = ChannelEntry {
            id: MessageId(5),
            channel_id: ChannelId(7),
            author_id: UserId(1),
            author_device: DeviceId(2),
            created_at: 3,
            edited_at: None,
            thread_id: None,
            pinned: false,
            thread_count: 0,
            state: EntryState::Pending,
            body: String::new(),
            reply_to: None,
            thread_name: None,
            reactions: Vec::new(),
            mentions: Mentions::default(),
            mention_mismatch: false,
        };
        let v = serde_json::to_value(&entry).expect("json");
        assert_eq!(v["state"], "pending");
        assert_eq!(v["id"], "5");
        assert_eq!(v["author_device"], 2);
        assert!(v["reply_to"].is_null());
    }
}
