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
}

/// What happened on the platform, as its audit log names it.
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
}

impl PlatformAction {
    /// Every action.
    pub const ALL: [PlatformAction; 5] =
        [Self::AdminCreated, Self::RoleChange, Self::UserDisable, Self::UserEnable, Self::UserLogout];

    /// Its name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdminCreated => "admin_created",
            Self::RoleChange => "role_change",
            Self::UserDisable => "user_disable",
            Self::UserEnable => "user_enable",
            Self::UserLogout => "user_logout",
        }
    }

    /// The action of a name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
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
