//! Friends and blocks, presence, typing and read states (`/api/v1/users/@me/relationships`,
//! `/api/v1/users/@me/presence`, `…/typing`, `…/read`; gateway op [`crate::gateway::op::ACTIVITY`]
//! and the `RELATIONSHIP_*`, `PRESENCE_*`, `TYPING_START` and `*_READ` events).
//!
//! All of it is metadata: who is friends with whom, who is online, who types where, how far
//! each user has read. None of it touches message content.

use serde::{Deserialize, Serialize};

use crate::api::PublicUser;
use crate::ids::{ChannelId, MessageId, UserId};

/// Most friends and pending requests (both ways) one user holds together.
pub const RELATIONSHIPS_MAX: usize = 1_000;
/// Outgoing friend requests one user may have pending at once.
pub const OUTGOING_REQUESTS_MAX: usize = 100;
/// Friend requests waiting for one user's answer: past it, new ones are refused (so that
/// strangers cannot fill the list).
pub const INCOMING_REQUESTS_MAX: usize = 200;
/// Users one user may block (a cap of its own: a full list of friends never stops a block).
pub const BLOCKS_MAX: usize = 5_000;
/// Notification settings (servers and channels that differ from the defaults) one user keeps.
pub const NOTIFICATION_SETTINGS_MAX: usize = 1_000;
/// DMs whose read marker one user keeps.
pub const DM_READ_STATES_MAX: usize = 10_000;
/// Longest custom status, in characters.
pub const CUSTOM_STATUS_MAX_CHARS: usize = 128;
/// How long a typing indicator lasts without a new `TYPING_START` (ms). Clients send one at
/// most every [`TYPING_RESEND_MS`] while the user types, and drop an indicator this long after
/// its last event, or when a message from that user arrives.
pub const TYPING_TIMEOUT_MS: i64 = 10_000;
/// How often a client repeats `TYPING_START` while its user keeps typing (ms).
pub const TYPING_RESEND_MS: i64 = 8_000;
/// Inactivity after which clients report their session idle (ms): five minutes.
pub const IDLE_AFTER_MS: i64 = 5 * 60_000;

/// How the current user stands with another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RelationshipKind {
    /// Friends (both accepted).
    Friend,
    /// The current user blocked them.
    Blocked,
    /// They asked the current user to be friends.
    Incoming,
    /// The current user asked them.
    Outgoing,
}

impl RelationshipKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Friend => "friend",
            Self::Blocked => "blocked",
            Self::Incoming => "incoming",
            Self::Outgoing => "outgoing",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "friend" => Self::Friend,
            "blocked" => Self::Blocked,
            "incoming" => Self::Incoming,
            "outgoing" => Self::Outgoing,
            _ => return None,
        })
    }
}

/// One relationship of the current user (`GET /api/v1/users/@me/relationships`, READY, and
/// the `RELATIONSHIP_ADD` event, which also announces a change of kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Relationship {
    /// The other user.
    pub user: PublicUser,
    /// How the current user stands with them.
    pub kind: RelationshipKind,
    /// Since when (Unix ms).
    pub since: i64,
}

/// `POST /api/v1/users/@me/relationships`: a friend request by username. If that user already
/// asked the current user, this accepts instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FriendRequest {
    /// The other user's username (case-insensitive).
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 2, max_length = 32, pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*[A-Za-z0-9_]$")
    )]
    pub username: String,
}

/// `PUT /api/v1/users/@me/relationships/{user_id}`: accept their request (`friend`) or block
/// them (`blocked`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetRelationship {
    /// `friend` (accepts an incoming request) or `blocked`.
    pub kind: SetRelationshipKind,
}

/// What `PUT /api/v1/users/@me/relationships/{user_id}` makes of a relationship.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SetRelationshipKind {
    /// Accept their request.
    Friend,
    /// Block them.
    Blocked,
}

/// `RELATIONSHIP_REMOVE`: the relationship with this user is gone (a request declined or
/// cancelled, a friend removed, a block lifted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RelationshipRemoved {
    /// The other user.
    pub user_id: UserId,
}

/// A status a user can be seen with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// Connected and active.
    Online,
    /// Connected, but away from the keyboard (or chose to look so).
    Idle,
    /// Do not disturb: connected, notifications muted.
    Dnd,
    /// Connected but shown offline to everyone else (a choice only: others see `offline`).
    Invisible,
    /// Not connected.
    Offline,
}

impl PresenceStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Idle => "idle",
            Self::Dnd => "dnd",
            Self::Invisible => "invisible",
            Self::Offline => "offline",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "online" => Self::Online,
            "idle" => Self::Idle,
            "dnd" => Self::Dnd,
            "invisible" => Self::Invisible,
            "offline" => Self::Offline,
            _ => return None,
        })
    }
}

/// A custom status: a line of text, until an optional time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CustomStatus {
    /// The text (1 to [`CUSTOM_STATUS_MAX_CHARS`] characters).
    pub text: String,
    /// When it ends by itself (Unix ms); `None`: until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// What the user chose to be seen as (`GET`/`PUT /api/v1/users/@me/presence`, READY, and the
/// `PRESENCE_SETTINGS_UPDATE` event to the user's other devices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PresenceSettings {
    /// `online` (idle follows activity), `idle`, `dnd` or `invisible`; never `offline`.
    pub status: PresenceStatus,
    /// The custom status, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_status: Option<CustomStatus>,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self { status: PresenceStatus::Online, custom_status: None }
    }
}

/// How one user is seen by another: `online`, `idle`, `dnd` or `offline` (never `invisible`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Presence {
    /// The user.
    pub user_id: UserId,
    /// Their status as others see it.
    pub status: PresenceStatus,
    /// Their custom status (none while offline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_status: Option<CustomStatus>,
}

/// `PRESENCE_UPDATE`: the presences that changed since the last one, coalesced (each user at
/// most once, latest state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceUpdate {
    /// The new presences.
    pub presences: Vec<Presence>,
}

/// Gateway op `ACTIVITY` (client → server): whether this session's user is idle (no input for
/// [`IDLE_AFTER_MS`], or the screen locked). A user is idle when every one of their sessions is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activity {
    /// Idle or not.
    pub idle: bool,
}

/// `TYPING_START`: someone types in a channel the user reads, or in a DM with the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TypingStart {
    /// Who types.
    pub user_id: UserId,
    /// Where: a channel or group DM; `None` for the DM with `user_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<ChannelId>,
    /// When (Unix ms, the server's clock).
    pub at: i64,
}

/// `PUT /api/v1/channels/{channel_id}/read`: everything up to this message is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    /// The last message read.
    pub message_id: MessageId,
}

/// How far the user has read a channel or group DM, and how many mentions of them wait after
/// that (READY, for every channel with a marker or a mention; the answer to a mark; and the
/// `CHANNEL_READ` event to the user's devices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadState {
    /// The channel.
    pub channel_id: ChannelId,
    /// The last message read (`0`: none yet). Never moves back.
    pub last_read_id: MessageId,
    /// Messages after it that mention the user (by name, by a role of theirs, or `@everyone`).
    #[serde(default)]
    pub mention_count: u32,
}

/// `PUT /api/v1/users/{user_id}/read`: every message of the DM with that user up to this server
/// timestamp is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MarkDmRead {
    /// The server timestamp (Unix ms) of the last message read.
    pub at: i64,
}

/// How far the user has read the DM with another user (READY, the answer to a mark, and the
/// `DM_READ` event to the user's devices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DmReadState {
    /// The other user.
    pub user_id: UserId,
    /// The server timestamp of the last message read. Never moves back.
    pub last_read_at: i64,
}

/// What a user wants to be notified of in a server or a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NotificationLevel {
    /// Every message.
    All,
    /// Messages that mention the user.
    Mentions,
    /// Nothing.
    Nothing,
}

impl NotificationLevel {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Mentions => "mentions",
            Self::Nothing => "nothing",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "all" => Self::All,
            "mentions" => Self::Mentions,
            "nothing" => Self::Nothing,
            _ => return None,
        })
    }
}

/// `PUT /api/v1/users/@me/notification-settings/{target_id}`: the user's settings for a server or
/// a channel (all fields absent: back to the defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetNotificationSettings {
    /// The level; `None`: the server's (for a channel), or the default (all in a group DM and a
    /// server of few members, mentions otherwise: the client's choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<NotificationLevel>,
    /// Muted: no notification and no unread mark.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub muted: bool,
    /// The end of the mute (Unix ms, in the future, within a year); `None`: until lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<i64>,
}

/// The settings of one server or channel (READY, the answer to a change, and the
/// `NOTIFICATION_SETTINGS_UPDATE` event to the user's devices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotificationSettings {
    /// The server or channel (a decimal id).
    pub target_id: String,
    /// The settings.
    #[serde(flatten)]
    pub settings: SetNotificationSettings,
}

/// What READY carries of all this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocialReady {
    /// Friends, requests and blocks.
    #[serde(default)]
    pub relationships: Vec<Relationship>,
    /// What the user chose to be seen as.
    #[serde(default)]
    pub presence: PresenceSettings,
    /// Everyone the user may see who is not offline.
    #[serde(default)]
    pub presences: Vec<Presence>,
    /// Read states of channels and group DMs.
    #[serde(default)]
    pub read_states: Vec<ReadState>,
    /// Read states of DMs.
    #[serde(default)]
    pub dm_read_states: Vec<DmReadState>,
    /// Notification settings that differ from the defaults.
    #[serde(default)]
    pub notification_settings: Vec<NotificationSettings>,
}
