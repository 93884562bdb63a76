//! Platform administration (`/api/v1/admin/`): accounts, live figures and the platform audit
//! log. Admins reach every route; moderators the account routes, on members only.

use serde::{Deserialize, Serialize};

use crate::api::PlatformRole;
use crate::ids::UserId;

/// Accounts listed per page at most.
pub const ADMIN_USERS_PAGE_MAX: u32 = 200;
/// Entries of the platform audit log per page at most.
pub const PLATFORM_AUDIT_PAGE_MAX: u32 = 100;

/// An account as the platform's staff sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminUser {
    /// Snowflake id.
    pub id: UserId,
    /// Login name.
    pub username: String,
    /// Name shown instead of the username.
    pub display_name: Option<String>,
    /// Platform role.
    pub platform_role: PlatformRole,
    /// When the account was created (Unix milliseconds).
    pub created_at: i64,
    /// When it was disabled (Unix milliseconds); absent while it is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<i64>,
    /// Login sessions (signed-in devices) it has now.
    pub sessions: u32,
}

/// `GET /api/v1/admin/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminUsers {
    /// Accounts, by id.
    pub users: Vec<AdminUser>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `PUT /api/v1/admin/users/{user_id}/role`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetPlatformRole {
    /// The new role.
    pub role: PlatformRole,
}

/// `GET /api/v1/admin/stats`: live figures of this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlatformStats {
    /// Accounts, all of them.
    pub users: u64,
    /// Accounts disabled.
    pub disabled_users: u64,
    /// Servers (communities).
    pub servers: u64,
    /// Gateway sessions open on this node.
    pub gateway_sessions: u64,
    /// Distinct accounts with a gateway session open on this node.
    pub online_users: u64,
    /// Voice rooms with someone in them on this node.
    pub voice_rooms: u64,
    /// People in voice on this node.
    pub voice_participants: u64,
    /// Channel messages sent in the last minute (their count, never their content).
    pub messages_last_minute: u64,
    /// This node's resident memory (bytes), where the system tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_memory_bytes: Option<u64>,
    /// The last hour, a sample a minute, oldest first (since this node started).
    #[serde(default)]
    pub last_hour: Vec<StatsSample>,
    /// This node's health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<NodeHealth>,
}

/// What an operator looks at first about a node: is its database there and quick, is its
/// disk filling, how long has it run. Figures the system does not give are absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeHealth {
    /// The server's version.
    pub version: String,
    /// When this node started (Unix milliseconds).
    pub started_at: i64,
    /// False while it shuts down (`/readyz` fails then, so load balancers drain it).
    pub accepting: bool,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// The database answered a query just now.
    pub database_ok: bool,
    /// How long that query took (microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_latency_us: Option<u64>,
    /// The database's size on disk (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_bytes: Option<u64>,
    /// Free space on the data directory's file system, for this server (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free_bytes: Option<u64>,
    /// The size of that file system (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_total_bytes: Option<u64>,
    /// File descriptors this process has open (sockets included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    /// CPUs this process may use.
    pub cpus: u32,
}

/// One minute's figures of this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsSample {
    /// When (Unix milliseconds).
    pub at: i64,
    /// Distinct accounts connected.
    pub online_users: u64,
    /// Gateway sessions open.
    pub gateway_sessions: u64,
    /// People in voice.
    pub voice_participants: u64,
    /// Channel messages sent in the minute before.
    pub messages: u64,
}

/// What happened on the platform, as its audit log names it: staff actions and security
/// events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PlatformAction {
    /// An admin account was created from the command line, or one promoted to admin.
    AdminCreated,
    /// An account's platform role changed.
    RoleChange,
    /// An account was disabled (its sessions ended).
    UserDisable,
    /// An account was enabled again.
    UserEnable,
    /// Every session of an account was ended by staff.
    UserLogout,
    /// A sign-in with a wrong password (the target is the account, when there is one).
    LoginFailed,
    /// Failed sign-ins on an account started a wait (login throttling).
    LoginThrottled,
    /// A refresh token was presented a second time: taken from its device; the session was
    /// ended.
    RefreshTokenReuse,
    /// A banned account or client tried to sign in or register.
    BannedAttempt,
    /// An account or a client fingerprint was banned.
    BanCreated,
    /// A ban was lifted.
    BanLifted,
    /// The key file's data key was rotated (every sealed value sealed again).
    KeyRotation,
    /// A server was taken down (hidden from its members, kept).
    ServerTakeDown,
    /// A server taken down was restored.
    ServerRestore,
    /// An account was deleted with its data.
    UserDelete,
    /// A guest account was made through a guest invite.
    GuestCreated,
    /// A guest account ended and was removed with its data.
    GuestExpired,
}

impl PlatformAction {
    /// Every action.
    pub const ALL: [PlatformAction; 17] = [
        Self::AdminCreated,
        Self::RoleChange,
        Self::UserDisable,
        Self::UserEnable,
        Self::UserLogout,
        Self::LoginFailed,
        Self::LoginThrottled,
        Self::RefreshTokenReuse,
        Self::BannedAttempt,
        Self::BanCreated,
        Self::BanLifted,
        Self::KeyRotation,
        Self::ServerTakeDown,
        Self::ServerRestore,
        Self::UserDelete,
        Self::GuestCreated,
        Self::GuestExpired,
    ];

    /// Its name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdminCreated => "admin_created",
            Self::RoleChange => "role_change",
            Self::UserDisable => "user_disable",
            Self::UserEnable => "user_enable",
            Self::UserLogout => "user_logout",
            Self::LoginFailed => "login_failed",
            Self::LoginThrottled => "login_throttled",
            Self::RefreshTokenReuse => "refresh_token_reuse",
            Self::BannedAttempt => "banned_attempt",
            Self::BanCreated => "ban_created",
            Self::BanLifted => "ban_lifted",
            Self::KeyRotation => "key_rotation",
            Self::ServerTakeDown => "server_take_down",
            Self::ServerRestore => "server_restore",
            Self::UserDelete => "user_delete",
            Self::GuestCreated => "guest_created",
            Self::GuestExpired => "guest_expired",
        }
    }

    /// The action of a name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// How much it matters.
    pub fn severity(self) -> Severity {
        match self {
            Self::RefreshTokenReuse => Severity::Critical,
            Self::LoginFailed
            | Self::LoginThrottled
            | Self::BannedAttempt
            | Self::BanCreated
            | Self::UserDisable
            | Self::ServerTakeDown => Severity::Warning,
            _ => Severity::Info,
        }
    }
}

/// How much an audit entry matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A staff action or a routine event.
    Info,
    /// Worth a look: failed or throttled sign-ins, bans, a banned client trying again.
    Warning,
    /// Someone is likely attacking an account (a stolen refresh token).
    Critical,
}

impl Severity {
    /// Every severity, least first.
    pub const ALL: [Severity; 3] = [Self::Info, Self::Warning, Self::Critical];

    /// Its name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    /// The severity of a name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// An entry of the platform audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlatformAuditEntry {
    /// Its id (entries are numbered in the order they were written).
    pub id: String,
    /// What happened.
    pub action: PlatformAction,
    /// Who did it (absent: the command line on the server itself).
    pub actor_id: Option<UserId>,
    /// To whom.
    pub target_id: Option<UserId>,
    /// What changed (an object; empty when nothing more).
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::HashMap<String, serde_json::Value>))]
    pub details: serde_json::Value,
    /// How much it matters.
    pub severity: Severity,
    /// The keyed hash of the client's address (security events; the same address gives the
    /// same hash), never the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_hash: Option<String>,
    /// When (Unix milliseconds).
    pub created_at: i64,
}

/// `GET /api/v1/admin/audit-log`: entries, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlatformAuditLog {
    /// The entries.
    pub entries: Vec<PlatformAuditEntry>,
    /// Pass as `before` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// Bans listed per page at most.
pub const PLATFORM_BANS_PAGE_MAX: u32 = 200;
/// Longest reason of a ban, in characters.
pub const BAN_REASON_MAX_CHARS: usize = 512;

/// What a platform ban keeps out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BanKind {
    /// An account: it cannot sign in (its sessions ended when banned).
    Account,
    /// A client fingerprint (keyed hash of address and user agent): nobody signs in or
    /// registers from it.
    Fingerprint,
}

/// A platform ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlatformBan {
    /// Its id.
    pub id: String,
    /// What it keeps out.
    pub kind: BanKind,
    /// The account (an account ban), or the account whose client it was (a fingerprint ban).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// That account's username, if it still exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The fingerprint (a fingerprint ban): a keyed hash, never an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Why, as staff wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who banned (absent: the command line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<UserId>,
    /// When (Unix milliseconds).
    pub created_at: i64,
    /// When it ends (Unix milliseconds); absent: permanent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// `GET /api/v1/admin/bans`: bans in force, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlatformBans {
    /// The bans.
    pub bans: Vec<PlatformBan>,
    /// Pass as `before` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// `POST /api/v1/admin/bans`: ban an account, and with it the clients it signed in from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewPlatformBan {
    /// The account.
    pub user_id: UserId,
    /// Why (at most 512 characters; shown to staff, never to the account).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 512))]
    pub reason: Option<String>,
    /// How long, in seconds (60 to 31 536 000, a year); absent: permanent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 60, maximum = 31536000))]
    pub duration_secs: Option<u64>,
    /// Also ban the fingerprints of the clients its sessions were last seen from, so that
    /// it cannot come back with a new account from them. Default true.
    #[serde(default = "yes")]
    pub fingerprints: bool,
}

fn yes() -> bool {
    true
}

/// `POST /api/v1/admin/bans`: what was banned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BansCreated {
    /// The account ban, then one per fingerprint.
    pub bans: Vec<PlatformBan>,
}

/// A signed-in session of an account, as staff see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminSession {
    /// The session.
    pub id: crate::ids::SessionId,
    /// Its device's number.
    pub device_id: u32,
    /// Its device's name.
    pub device_name: String,
    /// When it began (Unix milliseconds).
    pub created_at: i64,
    /// When it was last used (Unix milliseconds).
    pub last_used_at: i64,
    /// The address it was last seen from (admins only; kept for the retention setting, then
    /// erased).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// When that address was seen (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_seen_at: Option<i64>,
    /// Its client's fingerprint (a keyed hash of address and user agent), which a ban names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// `GET /api/v1/admin/users/{user_id}/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminSessions {
    /// The sessions, oldest first.
    pub sessions: Vec<AdminSession>,
}

/// Servers listed per page at most.
pub const ADMIN_SERVERS_PAGE_MAX: u32 = 200;

/// A server as platform admins see it (its name and sizes; nothing of what is said in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminServer {
    /// Its id.
    pub id: crate::ids::ServerId,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner_id: UserId,
    /// The owner's username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_username: Option<String>,
    /// Members.
    pub member_count: u64,
    /// Channels.
    pub channel_count: u64,
    /// When it was created (Unix milliseconds).
    pub created_at: i64,
    /// When it was taken down (Unix milliseconds); absent while it is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_down_at: Option<i64>,
    /// Why, as the admin wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_down_reason: Option<String>,
}

/// `GET /api/v1/admin/servers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminServers {
    /// Servers, by id.
    pub servers: Vec<AdminServer>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /api/v1/admin/servers/{server_id}/take-down`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TakeDown {
    /// Why (at most 512 characters; admins see it).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 512))]
    pub reason: Option<String>,
}

/// `DELETE /api/v1/admin/users/{user_id}`: what went with the account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserDeleted {
    /// Servers it owned, deleted with everything in them.
    pub servers_deleted: u64,
    /// Channel messages deleted: its own, and the replies in threads it started.
    pub messages_deleted: u64,
    /// Sessions ended.
    pub sessions_ended: u64,
}
