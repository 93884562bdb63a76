//! REST request and response bodies (`/api/v1`).

use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;

use crate::ids::{DeviceId, SessionId, UserId};

/// Platform-wide role of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PlatformRole {
    /// An ordinary account.
    Member,
    /// Can moderate platform-wide.
    Moderator,
    /// Runs the platform.
    Admin,
}

impl PlatformRole {
    /// The stable lowercase name, as stored and as put in access tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Moderator => "moderator",
            Self::Admin => "admin",
        }
    }

    /// Parses [`PlatformRole::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "member" => Some(Self::Member),
            "moderator" => Some(Self::Moderator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A user as seen by themselves and by others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Snowflake id.
    pub id: UserId,
    /// Unique (case-insensitively) login name, as the user typed it.
    pub username: String,
    /// Optional name shown instead of the username.
    pub display_name: Option<String>,
    /// Optional short status line.
    pub status_text: Option<String>,
    /// Platform role.
    pub platform_role: PlatformRole,
    /// When the account was created (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    /// A guest account: when it ends (Unix milliseconds), and is removed with its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_expires_at: Option<i64>,
}

/// What anyone signed in may learn about another user (`GET /api/v1/users/lookup`,
/// `GET /api/v1/users/{user_id}`): no role, no creation date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicUser {
    /// Snowflake id.
    pub id: UserId,
    /// Login name, as the user typed it.
    pub username: String,
    /// Optional name shown instead of the username.
    pub display_name: Option<String>,
    /// Optional short status line.
    pub status_text: Option<String>,
}

impl From<User> for PublicUser {
    fn from(user: User) -> Self {
        Self { id: user.id, username: user.username, display_name: user.display_name, status_text: user.status_text }
    }
}

/// `POST /api/v1/auth/register` and `POST /api/v1/auth/login`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Credentials {
    /// Login name.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 2, max_length = 32, pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*[A-Za-z0-9_]$")
    )]
    pub username: String,
    /// Password (8 characters to 1024 bytes).
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 256))]
    pub password: String,
    /// Name for the device this login creates (e.g. "Firefox on Linux").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 64,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\-\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub device_name: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("device_name", &self.device_name)
            .finish()
    }
}

/// A pair of tokens: a short-lived access token (JWT) and an opaque, single-use refresh token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tokens {
    /// Bearer token for REST and the gateway; valid for `access_token_expires_in` seconds.
    pub access_token: String,
    /// Seconds until the access token expires.
    pub access_token_expires_in: u64,
    /// Single-use token for `POST /api/v1/auth/refresh`.
    pub refresh_token: String,
    /// When the refresh token expires (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub refresh_token_expires_at: OffsetDateTime,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &"<redacted>")
            .field("access_token_expires_in", &self.access_token_expires_in)
            .field("refresh_token", &"<redacted>")
            .field("refresh_token_expires_at", &self.refresh_token_expires_at)
            .finish()
    }
}

/// Answer to register (201) and login (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthResponse {
    /// The account.
    pub user: User,
    /// The device this login created.
    pub device_id: DeviceId,
    /// The login session bound to that device.
    pub session_id: SessionId,
    /// Access and refresh tokens.
    #[serde(flatten)]
    pub tokens: Tokens,
}

/// `POST /api/v1/auth/refresh`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshRequest {
    /// The current refresh token; it is consumed.
    pub refresh_token: String,
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshRequest { refresh_token: <redacted> }")
    }
}

/// A field of a PATCH body: absent (leave as is), `null` (clear) or a value (set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    /// Not in the body: leave unchanged.
    #[default]
    Keep,
    /// `null`: clear.
    Clear,
    /// A new value.
    Set(T),
}

impl<T> Patch<T> {
    /// True when the field was absent.
    pub fn is_keep(&self) -> bool {
        matches!(self, Patch::Keep)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            Some(v) => Patch::Set(v),
            None => Patch::Clear,
        })
    }
}

impl<T: Serialize> Serialize for Patch<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Patch::Set(v) => v.serialize(s),
            Patch::Clear | Patch::Keep => s.serialize_none(),
        }
    }
}

/// `PATCH /api/v1/users/@me`: each field absent (keep), `null` (clear) or a string (set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateProfile {
    /// New display name (1–64 characters), or `null` to clear.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, max_length = 64, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\-\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"))]
    pub display_name: Patch<String>,
    /// New status text (up to 190 characters), or `null` to clear.
    #[serde(default, skip_serializing_if = "Patch::is_keep")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, max_length = 190, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"))]
    pub status_text: Patch<String>,
}

/// `PATCH /api/v1/users/@me/devices/{id}`: rename a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RenameDevice {
    /// The new name (1–64 characters).
    pub name: String,
}

/// `POST /api/v1/users/@me/password`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangePassword {
    /// The password in use now.
    pub current_password: String,
    /// The new password (8 characters to 1024 bytes).
    pub new_password: String,
}

impl std::fmt::Debug for ChangePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangePassword { <redacted> }")
    }
}

/// A device of the current user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Device {
    /// Per-user device number.
    pub id: DeviceId,
    /// Name the user gave it.
    pub name: String,
    /// When it was created (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    /// When it last refreshed its tokens or connected to the gateway (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen_at: OffsetDateTime,
    /// In the user's current signed device list, with the identity key it has (as the server
    /// sees it: clients check the list's signature themselves). A device that is not is
    /// *pending*: nothing is routed to it.
    #[serde(default)]
    pub linked: bool,
}

/// A login session of the current user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionInfo {
    /// Session id.
    pub id: SessionId,
    /// The device the session is bound to.
    pub device: Device,
    /// When the session started (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    /// When its refresh token expires unless used (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: OffsetDateTime,
    /// True for the session making the request.
    pub current: bool,
}

/// `GET /readyz` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Readiness {
    /// "ready" or "unavailable".
    pub status: String,
    /// Whether the database answered.
    pub database: bool,
}
