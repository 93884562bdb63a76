//! End-to-end encrypted channel messages (server channels and group DMs) with Sender Keys.
//!
//! Each device has a sender key per channel. Before its first message to a device it sends
//! that device its `SenderKeyDistributionMessage` over their pairwise session — as a
//! [`Distribution`] riding the channel send, queued like any envelope. A message is then one
//! libsignal `SenderKeyMessage`, stored once and read by every member device.
//!
//! **No device is left without a key.** Every send names the sender's *view* of the channel's
//! recipient devices: the `view` number of [`ChannelRecipients`]. The server bumps it whenever
//! who may read the channel changes (a member joins or leaves, is kicked or banned, roles or
//! overwrites change, a member links or removes a device), and refuses a send made on an older
//! view with 409 `view_stale`, whose `details` are the current [`ChannelRecipients`]: the
//! client distributes its key to the devices it has not served yet, rotates it when a device it
//! served is gone, and sends again. The server never parses a ciphertext.

use serde::{Deserialize, Serialize};

use crate::bytes::Base64Bytes;
use crate::devices::SignedDeviceList;
use crate::ids::{ChannelId, DeviceId, MessageId, ReactionId, UserId};
use crate::keys::UserBundles;

/// Largest ciphertext of a message or a reaction, in bytes (after base64 decoding): a 16 KiB
/// text with its reply quote and the sender-key overhead.
pub const CIPHERTEXT_MAX_BYTES: usize = 40 * 1024;
/// Most key distributions one send carries (a channel's recipient devices).
pub const DISTRIBUTIONS_MAX: usize = 20_000;
/// Most devices one bundle claim names, and most users one device-list read names.
pub const CLAIM_MAX: usize = 1000;
/// Largest page of history.
pub const HISTORY_PAGE_MAX: usize = 100;
/// Most pins in one channel.
pub const PINS_MAX: usize = 250;
/// Most reactions on one message.
pub const REACTIONS_PER_MESSAGE_MAX: usize = 1000;

/// One device that may read a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecipientDevice {
    /// The member.
    pub user_id: UserId,
    /// Their device (one that receives: see the signed device lists).
    pub device_id: DeviceId,
    /// Its registration id.
    pub registration_id: u32,
}

/// `GET /api/v1/channels/{id}/recipients`, and the `details` of a 409 `view_stale`: every
/// device that may read the channel now, under view number `view`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelRecipients {
    /// The channel.
    pub channel_id: ChannelId,
    /// The view number: it grows whenever the set of readers may have changed.
    pub view: i64,
    /// The devices, sorted by user then device (the sender's own devices included).
    pub devices: Vec<RecipientDevice>,
}

/// A sender key distribution (or any pairwise envelope) for one device, riding a channel send:
/// queued for that device as an `ENVELOPE` in the same transaction as the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Distribution {
    /// The member.
    pub user_id: UserId,
    /// Their device.
    pub device_id: DeviceId,
    /// Its registration id, as the sender's session knows it.
    pub registration_id: u32,
    /// Envelope kind (see [`crate::messages::kind`]).
    pub kind: u8,
    /// The libsignal ciphertext.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub content: Base64Bytes,
}

/// `POST /api/v1/channels/{id}/sender-keys`: key distributions alone, checked against the view
/// as a send is and queued the same way. A client whose distributions would not fit in the
/// request of its write sends the rest first with this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SendSenderKeys {
    /// As for a send.
    pub view: i64,
    /// At least one.
    pub distributions: Vec<Distribution>,
}

/// The answer to [`SendSenderKeys`]: when the distributions were queued (their envelopes'
/// server timestamp, which a device that cannot decrypt one names when it asks for it again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SenderKeysSent {
    /// Milliseconds since the epoch.
    pub sent_at: i64,
}

/// One device of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceAddress {
    /// The member.
    pub user_id: UserId,
    /// Their device.
    pub device_id: DeviceId,
}

/// `POST /api/v1/channels/{id}/bundles`: prekey bundles of some of the channel's recipient
/// devices, to start the sessions a key distribution rides (one request for many devices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimBundles {
    /// 1 to [`CLAIM_MAX`] devices.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 1000))]
    pub devices: Vec<DeviceAddress>,
}

/// The answer to [`ClaimBundles`]: a bundle for each named device that is a recipient of the
/// channel now and receives, grouped by user (the others are left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimedBundles {
    /// By user, in user order.
    pub users: Vec<UserBundles>,
}

/// `POST /api/v1/channels/{id}/device-lists`: the signed device lists of some of the
/// channel's readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReadDeviceLists {
    /// 1 to [`CLAIM_MAX`] users.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 1000))]
    pub users: Vec<UserId>,
}

/// One member's signed device list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberDeviceList {
    /// The member.
    pub user_id: UserId,
    /// Their list, as `GET /api/v1/users/{id}/device-list` gives it.
    pub signed: SignedDeviceList,
}

/// The answer to [`ReadDeviceLists`]: the list of each named user who reads the channel and
/// has one (the others are left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceLists {
    /// In user order.
    pub lists: Vec<MemberDeviceList>,
}

/// `POST /api/v1/channels/{id}/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SendChannelMessage {
    /// The libsignal `SenderKeyMessage` (text, reply quote, thread name: all inside).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    #[cfg_attr(feature = "openapi", schema(min_length = 4))]
    pub ciphertext: Base64Bytes,
    /// The view of the recipient devices the sender encrypted for ([`ChannelRecipients::view`]).
    pub view: i64,
    /// The thread (the id of the message that starts it), for a message in a thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<MessageId>,
    /// Key distributions to devices that do not have the sender's current key yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distributions: Vec<Distribution>,
    /// Who the text mentions, declared in the clear so that the server can count and notify
    /// (it cannot read the text; readers' clients check it against the text they decrypt).
    #[serde(default, skip_serializing_if = "Mentions::is_empty")]
    pub mentions: Mentions,
}

/// Most users one message may mention.
pub const MENTION_USERS_MAX: usize = 50;
/// Most roles one message may mention.
pub const MENTION_ROLES_MAX: usize = 20;

/// Who a message mentions: `<@user id>`, `<@&role id>` and `@everyone` in its text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Mentions {
    /// Users (at most [`MENTION_USERS_MAX`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserId>,
    /// Roles of the channel's server (at most [`MENTION_ROLES_MAX`]; needs `MENTION_EVERYONE`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<crate::ids::RoleId>,
    /// `@everyone`: every reader of the channel (needs `MENTION_EVERYONE` in a server).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub everyone: bool,
}

impl Mentions {
    /// Whether it mentions nobody.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.roles.is_empty() && !self.everyone
    }

    /// The mentions a text makes: `<@123>` a user, `<@&123>` a role, `@everyone` (not inside a
    /// word or an address) everyone.
    /// Sorted, each once, at most the maximum of each kind (the first ones written).
    pub fn in_text(text: &str) -> Self {
        let everyone = text.match_indices("@everyone").any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + "@everyone".len()..].chars().next();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
                && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
        });
        let mut out = Self { everyone, ..Self::default() };
        let mut rest = text;
        while let Some(at) = rest.find("<@") {
            rest = &rest[at + 2..];
            let (role, digits) = match rest.strip_prefix('&') {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
            // One spelling per id: no leading zero (`<@012>` would name 12 here and nobody on a
            // screen that reads ids as text).
            if end == 0 || !digits[end..].starts_with('>') || (end > 1 && digits.starts_with('0')) {
                continue;
            }
            let Ok(id) = digits[..end].parse::<i64>() else { continue };
            if role {
                if !out.roles.contains(&crate::ids::RoleId(id)) && out.roles.len() < MENTION_ROLES_MAX {
                    out.roles.push(crate::ids::RoleId(id));
                }
            } else if !out.users.contains(&UserId(id)) && out.users.len() < MENTION_USERS_MAX {
                out.users.push(UserId(id));
            }
        }
        out.normalized()
    }

    /// Sorted and without repeats (two declarations that mean the same compare equal).
    pub fn normalized(mut self) -> Self {
        self.users.sort();
        self.users.dedup();
        self.roles.sort();
        self.roles.dedup();
        self
    }
}

/// `PATCH /api/v1/channels/{id}/messages/{message_id}` (the author only): a new ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EditChannelMessage {
    /// The new ciphertext.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    #[cfg_attr(feature = "openapi", schema(min_length = 4))]
    pub ciphertext: Base64Bytes,
    /// As for a send.
    pub view: i64,
    /// As for a send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distributions: Vec<Distribution>,
    /// Who the new text mentions (it replaces the declaration of the send: readers check the
    /// declaration against the text they decrypt, edited or not).
    #[serde(default, skip_serializing_if = "Mentions::is_empty")]
    pub mentions: Mentions,
}

/// `POST /api/v1/channels/{id}/messages/{message_id}/reactions`: the emoji, encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewReaction {
    /// The encrypted reaction.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    #[cfg_attr(feature = "openapi", schema(min_length = 4))]
    pub ciphertext: Base64Bytes,
    /// As for a send.
    pub view: i64,
    /// As for a send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distributions: Vec<Distribution>,
}

/// A reaction (its emoji is inside the ciphertext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reaction {
    /// Id.
    pub id: ReactionId,
    /// The message.
    pub message_id: MessageId,
    /// The channel.
    pub channel_id: ChannelId,
    /// Who reacted.
    pub user_id: UserId,
    /// From which device (whose sender key encrypted it).
    pub device_id: DeviceId,
    /// The encrypted reaction.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub ciphertext: Base64Bytes,
    /// When (Unix milliseconds).
    pub created_at: i64,
}

/// A channel message as stored: ciphertext and routing metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelMessage {
    /// Id (snowflake: ordered by time).
    pub id: MessageId,
    /// The channel.
    pub channel_id: ChannelId,
    /// Who wrote it.
    pub author_id: UserId,
    /// From which device (whose sender key encrypted it).
    pub author_device: DeviceId,
    /// The libsignal `SenderKeyMessage`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub ciphertext: Base64Bytes,
    /// When the server accepted it (Unix milliseconds).
    pub created_at: i64,
    /// When it was last edited (the ciphertext is then the edited one).
    pub edited_at: Option<i64>,
    /// The thread it belongs to.
    pub thread_id: Option<MessageId>,
    /// Pinned in its channel.
    pub pinned: bool,
    /// Messages in the thread it starts (0: none).
    pub thread_count: u32,
    /// Who its author declared it mentions (see [`Mentions`]).
    #[serde(default, skip_serializing_if = "Mentions::is_empty")]
    pub mentions: Mentions,
    /// Its reactions, oldest first.
    pub reactions: Vec<Reaction>,
}

/// `MESSAGE_DELETE` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageDeleted {
    /// The message.
    pub id: MessageId,
    /// Its channel.
    pub channel_id: ChannelId,
}

/// `MESSAGE_DELETE_BULK` payload: each reader is told of the messages it could read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessagesDeleted {
    /// The messages, at most [`MESSAGES_DELETED_MAX`].
    pub ids: Vec<MessageId>,
    /// Their channel.
    pub channel_id: ChannelId,
}

/// The most message ids one `MESSAGE_DELETE_BULK` names (more go in several).
pub const MESSAGES_DELETED_MAX: usize = 1000;

/// `REACTION_REMOVE` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReactionRemoved {
    /// The reaction.
    pub id: ReactionId,
    /// Its message.
    pub message_id: MessageId,
    /// Its channel.
    pub channel_id: ChannelId,
}

/// `PINS_UPDATE` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PinUpdate {
    /// The channel.
    pub channel_id: ChannelId,
    /// The message.
    pub message_id: MessageId,
    /// Pinned now, or not.
    pub pinned: bool,
}
