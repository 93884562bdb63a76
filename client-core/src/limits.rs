//! Input limits shared by the server (which enforces them) and clients (which can check
//! before sending).

/// Usernames: 2 to 32 characters of `a-z`, `0-9`, `_`, `.`, `-`, compared case-insensitively.
pub const USERNAME_MIN: usize = 2;
/// See [`USERNAME_MIN`].
pub const USERNAME_MAX: usize = 32;
/// Passwords: at least 8 characters, at most 1024 bytes.
pub const PASSWORD_MIN_CHARS: usize = 8;
/// See [`PASSWORD_MIN_CHARS`].
pub const PASSWORD_MAX_BYTES: usize = 1024;
/// Display names: 1 to 64 characters.
pub const DISPLAY_NAME_MAX: usize = 64;
/// Status text: up to 190 characters.
pub const STATUS_TEXT_MAX: usize = 190;
/// Device names: 1 to 64 characters.
pub const DEVICE_NAME_MAX: usize = 64;
/// Default request body limit for REST routes.
pub const BODY_MAX_BYTES: usize = 1024 * 1024;
/// Largest gateway frame a client may send.
pub const GATEWAY_FRAME_MAX_BYTES: usize = 16 * 1024;
/// Envelope ids in one gateway `ACK` frame.
pub const ACK_IDS_MAX: usize = 100;
