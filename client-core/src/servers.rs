//! Communities: servers (guilds), their roles and permissions, channels, members, invites and
//! bans (`/api/v1/servers`, `/api/v1/invites`, `/api/v1/channels`).
//!
//! Everything here is metadata the server needs to route and to enforce permissions; the
//! content of channel messages travels in [`crate::channel_messages`], end-to-end encrypted.
//!
//! Permissions follow Discord's model: a member's server-wide permissions are the union of
//! `@everyone`'s and their roles'; a channel's overwrites then deny and allow, `@everyone`
//! first, then the member's roles together, then the member; [`Permissions::ADMINISTRATOR`]
//! and ownership bypass all of it. [`permissions`] is the one function that computes it, for
//! the server and for clients alike.

use serde::{Deserialize, Serialize};

use crate::api::PublicUser;
use crate::ids::{ChannelId, RoleId, ServerId, UserId};

/// Longest server, channel and role name, in characters.
pub const NAME_MAX_CHARS: usize = 100;
/// Longest channel topic, in characters.
pub const TOPIC_MAX_CHARS: usize = 1024;
/// Longest ban or kick reason, in characters.
pub const REASON_MAX_CHARS: usize = 512;
/// Most channels (categories included) a server holds.
pub const CHANNELS_MAX: usize = 500;
/// Most roles a server holds (`@everyone` included).
pub const ROLES_MAX: usize = 250;
/// Most overwrites one channel holds.
pub const OVERWRITES_MAX: usize = 100;
/// Most servers a user is a member of.
pub const SERVERS_PER_USER_MAX: usize = 200;
/// Longest invite lifetime a creator may choose (seconds): 30 days. `None` never expires.
pub const INVITE_MAX_AGE_SECS: u64 = 30 * 24 * 3600;
/// Most uses an invite may be given. `None` is unlimited.
pub const INVITE_MAX_USES: u32 = 10_000;
/// Longest timed ban (seconds): a year. `None` is permanent.
pub const BAN_MAX_SECS: u64 = 365 * 24 * 3600;

/// Permission bitflags (Discord-like). Travel as a JSON number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Permissions(pub u64);

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Permissions {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
            .description(Some("Permission bitflags (Discord-like), a JSON number; only the known bits"))
            .minimum(Some(0))
            .maximum(Some(Permissions::ALL.0 as f64))
            .into()
    }
}
#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Permissions {}

impl Permissions {
    /// See the channel and read its messages.
    pub const VIEW_CHANNEL: Self = Self(1 << 0);
    /// Send messages (and reply, start threads) in the channel.
    pub const SEND_MESSAGES: Self = Self(1 << 1);
    /// Delete others' messages, pin and unpin.
    pub const MANAGE_MESSAGES: Self = Self(1 << 2);
    /// Create, edit and delete channels, and their overwrites.
    pub const MANAGE_CHANNELS: Self = Self(1 << 3);
    /// Create, edit, delete and assign roles below one's own highest role.
    pub const MANAGE_ROLES: Self = Self(1 << 4);
    /// Rename the server, see and revoke every invite.
    pub const MANAGE_SERVER: Self = Self(1 << 5);
    /// Remove members (they may come back with an invite).
    pub const KICK_MEMBERS: Self = Self(1 << 6);
    /// Ban and unban members.
    pub const BAN_MEMBERS: Self = Self(1 << 7);
    /// Time members out.
    pub const MODERATE_MEMBERS: Self = Self(1 << 8);
    /// Create invites.
    pub const CREATE_INVITES: Self = Self(1 << 9);
    /// Join voice channels.
    pub const CONNECT: Self = Self(1 << 10);
    /// Speak in voice channels.
    pub const SPEAK: Self = Self(1 << 11);
    /// Share a camera or a screen in voice channels.
    pub const STREAM: Self = Self(1 << 12);
    /// React to messages.
    pub const ADD_REACTIONS: Self = Self(1 << 13);
    /// Every permission, everywhere, overwrites notwithstanding.
    pub const ADMINISTRATOR: Self = Self(1 << 14);
    /// Read the server's audit log.
    pub const VIEW_AUDIT_LOG: Self = Self(1 << 15);

    /// No permission.
    pub const NONE: Self = Self(0);
    /// Mention `@everyone` and roles (which notifies every reader, or every member of the role).
    pub const MENTION_EVERYONE: Self = Self(1 << 16);
    /// Every permission defined.
    pub const ALL: Self = Self((1 << 17) - 1);

    /// What `@everyone` may do in a new server.
    pub const EVERYONE_DEFAULT: Self = Self(
        Self::VIEW_CHANNEL.0
            | Self::SEND_MESSAGES.0
            | Self::CREATE_INVITES.0
            | Self::CONNECT.0
            | Self::SPEAK.0
            | Self::STREAM.0
            | Self::ADD_REACTIONS.0,
    );

    /// The names, in bit order (for display and documentation).
    pub const NAMES: [(&'static str, Self); 17] = [
        ("view_channel", Self::VIEW_CHANNEL),
        ("send_messages", Self::SEND_MESSAGES),
        ("manage_messages", Self::MANAGE_MESSAGES),
        ("manage_channels", Self::MANAGE_CHANNELS),
        ("manage_roles", Self::MANAGE_ROLES),
        ("manage_server", Self::MANAGE_SERVER),
        ("kick_members", Self::KICK_MEMBERS),
        ("ban_members", Self::BAN_MEMBERS),
        ("moderate_members", Self::MODERATE_MEMBERS),
        ("create_invites", Self::CREATE_INVITES),
        ("connect", Self::CONNECT),
        ("speak", Self::SPEAK),
        ("stream", Self::STREAM),
        ("add_reactions", Self::ADD_REACTIONS),
        ("administrator", Self::ADMINISTRATOR),
        ("view_audit_log", Self::VIEW_AUDIT_LOG),
        ("mention_everyone", Self::MENTION_EVERYONE),
    ];

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether only defined bits are set.
    pub fn is_valid(self) -> bool {
        self.0 & !Self::ALL.0 == 0
    }
}

impl std::ops::BitOr for Permissions {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitAnd for Permissions {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        Self(self.0 & rhs.0)
    }
}

impl std::ops::Not for Permissions {
    type Output = Self;
    fn not(self) -> Self {
        Self(!self.0 & Self::ALL.0)
    }
}

/// Whom an overwrite applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OverwriteKind {
    /// A role (`@everyone` is the role whose id is the server's).
    Role,
    /// One member.
    Member,
}

/// A channel's exception to server-wide permissions, for a role or a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Overwrite {
    /// The role's or the member's id: a decimal string on the wire like every snowflake (a
    /// JSON number would lose bits in JavaScript); a bare number is accepted too.
    #[serde(with = "id_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^([0-9]{1,18}|[1-8][0-9]{18}|9[01][0-9]{17}|92[01][0-9]{16})$"))]
    pub id: i64,
    /// Role or member.
    pub kind: OverwriteKind,
    /// Granted here.
    #[serde(default)]
    pub allow: Permissions,
    /// Taken away here (allow wins where both are set at the same level).
    #[serde(default)]
    pub deny: Permissions,
}

/// What [`permissions`] needs to know about one member.
#[derive(Debug, Clone, Copy)]
pub struct MemberContext<'a> {
    /// The member.
    pub user: UserId,
    /// Whether they own the server.
    pub is_owner: bool,
    /// `@everyone`'s permissions.
    pub everyone: Permissions,
    /// Their roles (not `@everyone`): id and permissions.
    pub roles: &'a [(RoleId, Permissions)],
}

/// A member's permissions on the server (`overwrites: None`) or in a channel (its overwrites).
/// In a channel, no [`Permissions::VIEW_CHANNEL`] means no permission at all there.
pub fn permissions(server: ServerId, member: MemberContext<'_>, overwrites: Option<&[Overwrite]>) -> Permissions {
    if member.is_owner {
        return Permissions::ALL;
    }
    let mut perms = member.roles.iter().fold(member.everyone, |p, (_, r)| p | *r);
    if perms.contains(Permissions::ADMINISTRATOR) {
        return Permissions::ALL;
    }
    let Some(overwrites) = overwrites else { return perms };
    let apply = |perms: Permissions, allow: Permissions, deny: Permissions| (perms & !deny) | allow;
    if let Some(o) = overwrites.iter().find(|o| o.kind == OverwriteKind::Role && o.id == server.0) {
        perms = apply(perms, o.allow, o.deny);
    }
    let (mut allow, mut deny) = (Permissions::NONE, Permissions::NONE);
    for o in overwrites.iter().filter(|o| o.kind == OverwriteKind::Role && member.roles.iter().any(|(r, _)| r.0 == o.id)) {
        allow = allow | o.allow;
        deny = deny | o.deny;
    }
    perms = apply(perms, allow, deny);
    if let Some(o) = overwrites.iter().find(|o| o.kind == OverwriteKind::Member && o.id == member.user.0) {
        perms = apply(perms, o.allow, o.deny);
    }
    if !perms.contains(Permissions::VIEW_CHANNEL) {
        return Permissions::NONE;
    }
    perms
}

/// A server (guild).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Server {
    /// Id (also the id of its `@everyone` role).
    pub id: ServerId,
    /// Name.
    pub name: String,
    /// Its owner (every permission; cannot be kicked, banned or acted on).
    pub owner_id: UserId,
    /// When it was created (Unix milliseconds).
    pub created_at: i64,
    /// How many members it has.
    pub member_count: u64,
}

/// A role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Role {
    /// Id (`@everyone`'s is the server's).
    pub id: RoleId,
    /// The server.
    pub server_id: ServerId,
    /// Name (`@everyone` for the default role).
    pub name: String,
    /// RGB colour, 0 for none.
    pub color: u32,
    /// Position in the hierarchy: higher outranks lower; `@everyone` is 0.
    pub position: i32,
    /// Server-wide permissions.
    pub permissions: Permissions,
    /// Shown apart in the member list.
    pub hoist: bool,
}

/// Kinds of channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Text chat.
    Text,
    /// Voice room (it has a text chat too).
    Voice,
    /// Groups channels (no messages of its own).
    Category,
    /// A group DM (no server).
    GroupDm,
}

/// A channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Channel {
    /// Id.
    pub id: ChannelId,
    /// The server (`None` for a group DM).
    pub server_id: Option<ServerId>,
    /// Name (a group DM's may be empty: clients then list its members).
    pub name: String,
    /// Kind.
    pub kind: ChannelKind,
    /// The category it sits in.
    pub parent_id: Option<ChannelId>,
    /// Order among its siblings (lower first).
    pub position: i32,
    /// Topic.
    pub topic: Option<String>,
    /// Overwrites (for group DMs: none).
    pub overwrites: Vec<Overwrite>,
    /// Members of a group DM (empty for server channels).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<PublicUser>,
    /// The owner of a group DM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<UserId>,
    /// The newest message's id, if any (for unread marks).
    pub last_message_id: Option<crate::ids::MessageId>,
    /// A voice channel's cap on participants (0: none but the server's own, 100).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub user_limit: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Largest `user_limit` of a voice channel.
pub const USER_LIMIT_MAX: u32 = 99;

/// A member of a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    /// Who.
    pub user: PublicUser,
    /// The server.
    pub server_id: ServerId,
    /// Their roles (`@everyone` not listed).
    pub roles: Vec<RoleId>,
    /// When they joined (Unix milliseconds).
    pub joined_at: i64,
    /// Until when they are timed out (Unix milliseconds): no sending, reacting or speaking
    /// before then. Absent when no timeout runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_until: Option<i64>,
}

/// A server with everything a member sees of it (READY, `SERVER_CREATE`,
/// `GET /api/v1/servers/{id}/state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerState {
    /// The server.
    pub server: Server,
    /// Every role.
    pub roles: Vec<Role>,
    /// The channels this member may view.
    pub channels: Vec<Channel>,
    /// This member.
    pub me: Member,
    /// Who is in the voice channels this member may view (filled by the gateway).
    #[serde(default)]
    pub voice_states: Vec<crate::voice_signal::VoiceState>,
}

/// `POST /api/v1/servers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewServer {
    /// Name (1–100 characters).
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 100,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\-\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: String,
}

/// `PATCH /api/v1/servers/{id}` (manage server; `owner_id` only by the owner: transfer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EditServer {
    /// New name.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 100,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\-\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: Option<String>,
    /// Transfer ownership to this member (owner only).
    #[serde(default)]
    pub owner_id: Option<UserId>,
}

/// `POST /api/v1/servers/{id}/channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    /// Name (1–100 characters; text and voice channel names are lowercased, spaces become `-`).
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 100,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\-\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: String,
    /// `text`, `voice` or `category`.
    pub kind: ChannelKind,
    /// The category to put it in.
    #[serde(default)]
    pub parent_id: Option<ChannelId>,
    /// Topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// Position (default: after the last sibling).
    #[serde(default)]
    pub position: Option<i32>,
    /// Overwrites (default: the category's).
    #[serde(default)]
    pub overwrites: Option<Vec<Overwrite>>,
    /// A voice channel's cap on participants (0 to 99; 0: none).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 99))]
    pub user_limit: Option<u32>,
}

/// `PATCH /api/v1/channels/{id}`. `parent_id: null` moves a channel out of its category;
/// absent leaves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EditChannel {
    /// New name.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 100,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\-\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: Option<String>,
    /// New topic (empty clears it).
    #[serde(default)]
    pub topic: Option<String>,
    /// New position.
    #[serde(default)]
    pub position: Option<i32>,
    /// New category (`null`: none).
    #[serde(default, with = "double_option", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<ChannelId>))]
    pub parent_id: Option<Option<ChannelId>>,
    /// Replaces every overwrite.
    #[serde(default)]
    pub overwrites: Option<Vec<Overwrite>>,
    /// A voice channel's cap on participants (0 to 99; 0: none).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 99))]
    pub user_limit: Option<u32>,
}

/// `POST /api/v1/servers/{id}/roles` and `PATCH …/roles/{role_id}` (fields absent are kept;
/// on create they default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EditRole {
    /// Name.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 100,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\-\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: Option<String>,
    /// RGB colour.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 0xFF_FFFF))]
    pub color: Option<u32>,
    /// Permissions (only ones the actor holds may be granted).
    #[serde(default)]
    pub permissions: Option<Permissions>,
    /// Position (below the actor's highest role; not 0).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub position: Option<i32>,
    /// Shown apart.
    #[serde(default)]
    pub hoist: Option<bool>,
}

/// `PUT /api/v1/servers/{id}/members/{user_id}/roles`: the member's roles, all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetMemberRoles {
    /// Role ids (not `@everyone`).
    pub roles: Vec<RoleId>,
}

/// `POST /api/v1/servers/{id}/invites`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewInvite {
    /// Uses before it stops working (`None`: unlimited).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000))]
    pub max_uses: Option<u32>,
    /// Seconds before it expires (`None`: never; default 7 days when the field is absent).
    #[serde(default, with = "double_option", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2_592_000))]
    pub max_age_secs: Option<Option<u64>>,
    /// A guest invite: whoever redeems it without an account gets one that lasts this many
    /// seconds (1 hour to 30 days; 86 400 is a day), then is removed with its data. Only the
    /// server's owner or a platform admin makes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 3600, maximum = 2592000))]
    #[cfg_attr(feature = "openapi", schema(minimum = 3600, maximum = 2_592_000))]
    pub guest_ttl_secs: Option<u64>,
}

/// The shortest and longest life of a guest account, in seconds (an hour; 30 days).
pub const GUEST_TTL_SECS: std::ops::RangeInclusive<u64> = 3600..=30 * 24 * 3600;

/// `GET /api/v1/invites/{code}/guest`: a guest invite as anyone sees it, signed in or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuestInvite {
    /// The code.
    pub code: String,
    /// The server's name.
    pub server_name: String,
    /// Its member count.
    pub member_count: u64,
    /// How long a guest account made with it lasts, in seconds.
    pub guest_ttl_secs: u64,
}

/// `POST /api/v1/invites/{code}/guest`: a guest account joining by a guest invite. Its
/// username is made by the server (`guest-…`); the password opens the guest's local store and
/// lets it sign in again from another browser while the account lasts.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GuestJoin {
    /// The password (8 characters to 1024 bytes).
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 256))]
    pub password: String,
    /// The name shown (1 to 32 characters).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 32,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\-\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub display_name: Option<String>,
    /// The first device's name.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 64,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\-\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub device_name: Option<String>,
}

impl std::fmt::Debug for GuestJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestJoin").field("display_name", &self.display_name).finish_non_exhaustive()
    }
}

/// An invite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Invite {
    /// The code (what the link carries).
    pub code: String,
    /// The server.
    pub server_id: ServerId,
    /// Who made it.
    pub inviter_id: UserId,
    /// Times used.
    pub uses: u32,
    /// Uses allowed (`None`: unlimited).
    pub max_uses: Option<u32>,
    /// When it expires (Unix milliseconds; `None`: never).
    pub expires_at: Option<i64>,
    /// When it was made.
    pub created_at: i64,
    /// A guest invite: how long the accounts it makes last, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_ttl_secs: Option<u64>,
}

/// `GET /api/v1/invites/{code}`: what an invite leads to, for anyone signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvitePreview {
    /// The code.
    pub code: String,
    /// The server's id.
    pub server_id: ServerId,
    /// The server's name.
    pub server_name: String,
    /// Its member count.
    pub member_count: u64,
    /// Who invites.
    pub inviter: PublicUser,
    /// When it expires.
    pub expires_at: Option<i64>,
}

/// `PUT /api/v1/servers/{id}/bans/{user_id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewBan {
    /// Why (shown to moderators, kept in the audit log).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 512, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"))]
    pub reason: Option<String>,
    /// Seconds it lasts (`None`: until lifted).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 31_536_000))]
    pub duration_secs: Option<u64>,
    /// Also delete their messages of this many last seconds in the server (up to 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(maximum = 604800))]
    #[cfg_attr(feature = "openapi", schema(maximum = 604_800))]
    pub delete_message_secs: Option<u64>,
}

/// The longest span of recent messages a purge deletes (7 days).
pub const PURGE_MAX_SECS: u64 = 7 * 24 * 3600;

/// `DELETE /api/v1/servers/{server_id}/members/{user_id}/messages`: how many went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessagesPurged {
    /// Messages deleted (theirs, and the replies in threads they started).
    pub deleted: u64,
}

/// A ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ban {
    /// Who is banned.
    pub user: PublicUser,
    /// Why.
    pub reason: Option<String>,
    /// Who banned them.
    pub moderator_id: UserId,
    /// When.
    pub created_at: i64,
    /// When it ends (`None`: until lifted).
    pub expires_at: Option<i64>,
}

/// Longest timeout: 28 days.
pub const TIMEOUT_MAX_SECS: u64 = 28 * 24 * 3600;

/// `PUT /api/v1/servers/{id}/members/{user_id}/timeout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewTimeout {
    /// Seconds it lasts (1 to 28 days). A new timeout replaces the one running.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2419200))]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2_419_200))]
    pub duration_secs: u64,
    /// Why (shown to moderators, kept in the audit log; at most 512 characters).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 512))]
    #[cfg_attr(feature = "openapi", schema(max_length = 512, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"))]
    pub reason: Option<String>,
    /// Longer for a repeat: the duration doubles for each timeout the member was given in this
    /// server before (still at most 28 days).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub escalate: bool,
}

/// What a member of a server did, as its audit log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// The server's name or settings changed.
    ServerUpdate,
    /// A channel was created.
    ChannelCreate,
    /// A channel's name, topic, place, limit or overwrites changed.
    ChannelUpdate,
    /// A channel was deleted.
    ChannelDelete,
    /// A role was created.
    RoleCreate,
    /// A role changed.
    RoleUpdate,
    /// A role was deleted.
    RoleDelete,
    /// A member was kicked.
    MemberKick,
    /// A user was banned.
    MemberBan,
    /// A ban was lifted.
    MemberUnban,
    /// A member was timed out.
    MemberTimeout,
    /// A member's timeout was lifted before its end.
    MemberTimeoutRemove,
    /// A member's roles changed.
    MemberRolesUpdate,
    /// A member was server muted, deafened, or let speak or hear again.
    MemberVoiceUpdate,
    /// A member was disconnected from voice.
    MemberVoiceDisconnect,
    /// A member was moved to another voice channel.
    MemberVoiceMove,
    /// A moderator deleted someone else's message.
    MessageDelete,
    /// An invite was created.
    InviteCreate,
    /// An invite was revoked.
    InviteDelete,
    /// A member's recent messages were deleted (`details.deleted`, `within_secs`).
    MessagesPurge,
    /// A message was pinned (`details.channel_id`, `author_id`).
    MessagePin,
    /// A message was unpinned (`details.channel_id`, `author_id`).
    MessageUnpin,
    /// A moderator removed someone else's reaction (`details.channel_id`, `message_id`).
    ReactionRemove,
}

impl AuditAction {
    /// Every action.
    pub const ALL: [AuditAction; 23] = [
        Self::ServerUpdate,
        Self::ChannelCreate,
        Self::ChannelUpdate,
        Self::ChannelDelete,
        Self::RoleCreate,
        Self::RoleUpdate,
        Self::RoleDelete,
        Self::MemberKick,
        Self::MemberBan,
        Self::MemberUnban,
        Self::MemberTimeout,
        Self::MemberTimeoutRemove,
        Self::MemberRolesUpdate,
        Self::MemberVoiceUpdate,
        Self::MemberVoiceDisconnect,
        Self::MemberVoiceMove,
        Self::MessageDelete,
        Self::InviteCreate,
        Self::InviteDelete,
        Self::MessagesPurge,
        Self::MessagePin,
        Self::MessageUnpin,
        Self::ReactionRemove,
    ];

    /// Its name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServerUpdate => "server_update",
            Self::ChannelCreate => "channel_create",
            Self::ChannelUpdate => "channel_update",
            Self::ChannelDelete => "channel_delete",
            Self::RoleCreate => "role_create",
            Self::RoleUpdate => "role_update",
            Self::RoleDelete => "role_delete",
            Self::MemberKick => "member_kick",
            Self::MemberBan => "member_ban",
            Self::MemberUnban => "member_unban",
            Self::MemberTimeout => "member_timeout",
            Self::MemberTimeoutRemove => "member_timeout_remove",
            Self::MemberRolesUpdate => "member_roles_update",
            Self::MemberVoiceUpdate => "member_voice_update",
            Self::MemberVoiceDisconnect => "member_voice_disconnect",
            Self::MemberVoiceMove => "member_voice_move",
            Self::MessageDelete => "message_delete",
            Self::InviteCreate => "invite_create",
            Self::InviteDelete => "invite_delete",
            Self::MessagesPurge => "messages_purge",
            Self::MessagePin => "message_pin",
            Self::MessageUnpin => "message_unpin",
            Self::ReactionRemove => "reaction_remove",
        }
    }

    /// The action of a name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// An entry of a server's audit log. It names who did what to whom, never what anyone wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Its id (entries are numbered in the order they were written).
    pub id: String,
    /// What was done.
    pub action: AuditAction,
    /// Who did it.
    pub actor_id: UserId,
    /// To what: a user, channel, role or message id (an invite shows in `details`, by its first
    /// characters only).
    pub target_id: Option<String>,
    /// Why, as the actor said.
    pub reason: Option<String>,
    /// What changed: names, durations, the fields set (an object; empty when nothing more).
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::HashMap<String, serde_json::Value>))]
    pub details: serde_json::Value,
    /// When (Unix milliseconds).
    pub created_at: i64,
}

/// `GET /api/v1/servers/{id}/audit-log`: entries, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditLog {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// The users the entries name (actors, and targets that are users), for display.
    pub users: Vec<PublicUser>,
    /// Pass as `before` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// `POST /api/v1/channels` (group DM): its members besides the creator (1–24).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewGroupDm {
    /// The other members.
    pub recipients: Vec<UserId>,
    /// Optional name.
    #[serde(default)]
    pub name: Option<String>,
}

/// Most members of a group DM, its creator included.
pub const GROUP_DM_MAX_MEMBERS: usize = 25;

/// `SERVER_DELETE` / `CHANNEL_DELETE` / `ROLE_DELETE` payloads and the like: what went away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Removed {
    /// The id of what went away (the server, channel or role).
    pub id: String,
    /// Its server, for a channel or a role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<ServerId>,
}

/// `MEMBER_REMOVE` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberRemoved {
    /// The server.
    pub server_id: ServerId,
    /// Who left, was kicked or banned.
    pub user_id: UserId,
}

/// An `i64` id written as a decimal string, read from a string or a number.
mod id_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Str(String),
            Num(i64),
        }
        match Repr::deserialize(d)? {
            Repr::Str(s) => s.parse().map_err(serde::de::Error::custom),
            Repr::Num(n) => Ok(n),
        }
    }
}

/// Deserializes `Option<Option<T>>` so that a field set to `null` is `Some(None)` and an
/// absent one (with `#[serde(default)]`) is `None`.
pub mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serializes the inner option (an absent field should be skipped by the caller).
    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<Option<T>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    /// `null` → `Some(None)`; a value → `Some(Some(v))`.
    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: ServerId = ServerId(1);
    const MOD: RoleId = RoleId(10);
    const MUTED: RoleId = RoleId(11);
    const ME: UserId = UserId(100);

    fn ctx<'a>(roles: &'a [(RoleId, Permissions)], owner: bool) -> MemberContext<'a> {
        MemberContext { user: ME, is_owner: owner, everyone: Permissions::EVERYONE_DEFAULT, roles }
    }

    fn ow(id: i64, kind: OverwriteKind, allow: Permissions, deny: Permissions) -> Overwrite {
        Overwrite { id, kind, allow, deny }
    }

    use OverwriteKind::{Member as M, Role as R};
    use Permissions as P;

    /// The permission function, as a table: (case, roles, owner, overwrites, expected).
    #[test]
    fn permission_table() {
        let moderator = [(MOD, P::MANAGE_MESSAGES | P::KICK_MEMBERS)];
        let admin = [(MOD, P::ADMINISTRATOR)];
        let muted = [(MUTED, P::NONE)];
        let both = [(MOD, P::MANAGE_MESSAGES), (MUTED, P::NONE)];
        let none: [(RoleId, P); 0] = [];
        let e = P::EVERYONE_DEFAULT;
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, &[(RoleId, P)], bool, Option<Vec<Overwrite>>, P)> = vec![
            ("everyone, server-wide", &none, false, None, e),
            ("role adds to everyone", &moderator, false, None, e | P::MANAGE_MESSAGES | P::KICK_MEMBERS),
            ("owner has all", &none, true, Some(vec![ow(SERVER.0, R, P::NONE, P::ALL)]), P::ALL),
            ("administrator has all, even denied", &admin, false, Some(vec![ow(SERVER.0, R, P::NONE, P::VIEW_CHANNEL)]), P::ALL),
            ("no overwrite: server-wide", &none, false, Some(vec![]), e),
            ("everyone denied send", &none, false, Some(vec![ow(SERVER.0, R, P::NONE, P::SEND_MESSAGES)]), e & !P::SEND_MESSAGES),
            (
                "role allow beats everyone deny",
                &moderator,
                false,
                Some(vec![ow(SERVER.0, R, P::NONE, P::SEND_MESSAGES), ow(MOD.0, R, P::SEND_MESSAGES, P::NONE)]),
                e | P::MANAGE_MESSAGES | P::KICK_MEMBERS,
            ),
            (
                "role allow beats another role's deny",
                &both,
                false,
                Some(vec![ow(MUTED.0, R, P::NONE, P::SEND_MESSAGES), ow(MOD.0, R, P::SEND_MESSAGES, P::NONE)]),
                e | P::MANAGE_MESSAGES,
            ),
            (
                "role deny",
                &muted,
                false,
                Some(vec![ow(MUTED.0, R, P::NONE, P::SEND_MESSAGES | P::ADD_REACTIONS)]),
                e & !(P::SEND_MESSAGES | P::ADD_REACTIONS),
            ),
            (
                "member deny beats role allow",
                &moderator,
                false,
                Some(vec![ow(MOD.0, R, P::SEND_MESSAGES, P::NONE), ow(ME.0, M, P::NONE, P::SEND_MESSAGES)]),
                (e | P::MANAGE_MESSAGES | P::KICK_MEMBERS) & !P::SEND_MESSAGES,
            ),
            (
                "member allow beats role deny",
                &muted,
                false,
                Some(vec![ow(MUTED.0, R, P::NONE, P::SEND_MESSAGES), ow(ME.0, M, P::SEND_MESSAGES, P::NONE)]),
                e,
            ),
            ("private channel: nothing", &none, false, Some(vec![ow(SERVER.0, R, P::NONE, P::VIEW_CHANNEL)]), P::NONE),
            (
                "private channel, role let in",
                &moderator,
                false,
                Some(vec![ow(SERVER.0, R, P::NONE, P::VIEW_CHANNEL), ow(MOD.0, R, P::VIEW_CHANNEL, P::NONE)]),
                e | P::MANAGE_MESSAGES | P::KICK_MEMBERS,
            ),
            (
                "private channel, member let in",
                &none,
                false,
                Some(vec![ow(SERVER.0, R, P::NONE, P::VIEW_CHANNEL), ow(ME.0, M, P::VIEW_CHANNEL, P::NONE)]),
                e,
            ),
            (
                "overwrite of a role the member lacks: ignored",
                &none,
                false,
                Some(vec![ow(MOD.0, R, P::MANAGE_MESSAGES, P::NONE)]),
                e,
            ),
            ("overwrite of another member: ignored", &none, false, Some(vec![ow(ME.0 + 1, M, P::NONE, P::VIEW_CHANNEL)]), e),
        ];
        for (name, roles, owner, overwrites, expected) in cases {
            let got = permissions(SERVER, ctx(roles, owner), overwrites.as_deref());
            assert_eq!(got, expected, "{name}: got {:b}, expected {:b}", got.0, expected.0);
        }
    }

    #[test]
    fn permissions_travel_as_numbers_and_unknown_bits_are_invalid() {
        assert_eq!(serde_json::to_string(&(P::VIEW_CHANNEL | P::SEND_MESSAGES)).expect("json"), "3");
        let o = ow(123_456_789_012_345_678, R, P::VIEW_CHANNEL, P::NONE);
        let text = serde_json::to_string(&o).expect("json");
        assert_eq!(text, r#"{"id":"123456789012345678","kind":"role","allow":1,"deny":0}"#);
        assert_eq!(serde_json::from_str::<Overwrite>(&text).expect("json"), o);
        assert_eq!(serde_json::from_str::<Overwrite>(r#"{"id":5,"kind":"member"}"#).expect("json").id, 5);
        assert!(P::ALL.is_valid());
        assert!(!P(1 << 40).is_valid());
        assert_eq!(P::NAMES.iter().fold(P::NONE, |a, (_, p)| a | *p), P::ALL);
    }

    #[test]
    fn double_option_tells_null_from_absent() {
        let absent: EditChannel = serde_json::from_str("{}").expect("json");
        assert_eq!(absent.parent_id, None);
        let null: EditChannel = serde_json::from_str(r#"{"parent_id":null}"#).expect("json");
        assert_eq!(null.parent_id, Some(None));
        let set: EditChannel = serde_json::from_str(r#"{"parent_id":"5"}"#).expect("json");
        assert_eq!(set.parent_id, Some(Some(ChannelId(5))));
    }
}
