//! Store-and-forward of end-to-end encrypted envelopes: the server sees who sends to which
//! device, when, and how many bytes; never the content.

use serde::{Deserialize, Serialize};

use crate::bytes::Base64Bytes;
use crate::ids::{DeviceId, UserId};

/// Kinds of envelope content (libsignal's `CiphertextMessageType` values).
pub mod kind {
    /// A Double Ratchet message on an established session.
    pub const WHISPER: u8 = 2;
    /// A PQXDH session-setup message carrying the first ratchet message.
    pub const PREKEY: u8 = 3;
    /// An unencrypted `PlaintextContent`: only a decryption-error (retry) request.
    pub const PLAINTEXT: u8 = 8;

    /// Whether the server accepts this kind in a DM send.
    pub fn is_valid(k: u8) -> bool {
        matches!(k, WHISPER | PREKEY | PLAINTEXT)
    }
}

/// Largest content of one envelope, in bytes (after base64 decoding).
pub const ENVELOPE_MAX_BYTES: usize = 64 * 1024;

/// One ciphertext for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OutgoingEnvelope {
    /// The device it is for.
    pub device_id: DeviceId,
    /// That device's registration id, as the sender's session knows it (detects stale sessions).
    pub registration_id: u32,
    /// See [`kind`].
    pub kind: u8,
    /// The libsignal ciphertext.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub content: Base64Bytes,
}

/// `POST /api/v1/messages`: one message, encrypted once per recipient device and once per the
/// sender's own other devices. The server refuses the send (409) unless both lists cover
/// exactly the current devices, so no device is silently skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// The recipient (not the sender: own devices go in `sync_messages`).
    pub recipient: UserId,
    /// One envelope per recipient device.
    pub messages: Vec<OutgoingEnvelope>,
    /// One envelope per other device of the sender.
    #[serde(default)]
    pub sync_messages: Vec<OutgoingEnvelope>,
    /// Addressed to some devices only (a retry request, or a message re-sent to the one device
    /// that could not decrypt it): devices left out are not reported missing, and the
    /// recipient may be the sender (for its own other devices, in `messages`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// Answer to a send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendReceipt {
    /// Server time of the send (Unix milliseconds), the same on every envelope.
    pub server_timestamp: i64,
}

/// The devices a send got wrong for one user (the `details` of a 409 `device_mismatch`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceMismatch {
    /// Devices that exist but got no envelope: fetch their bundles and add them.
    pub missing_devices: Vec<DeviceId>,
    /// Devices that got an envelope but no longer exist: drop their sessions.
    pub extra_devices: Vec<DeviceId>,
    /// Devices whose registration id changed (reinstalled): drop the session, fetch a bundle.
    pub stale_devices: Vec<DeviceId>,
}

impl DeviceMismatch {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing_devices.is_empty() && self.extra_devices.is_empty() && self.stale_devices.is_empty()
    }
}

/// `details` of a 409 `device_mismatch`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendMismatch {
    /// About the recipient's devices.
    pub recipient: DeviceMismatch,
    /// About the sender's own other devices.
    pub own: DeviceMismatch,
}

/// An envelope waiting for (or pushed to) one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Envelope {
    /// Id, for the acknowledgement (decimal string).
    pub id: crate::ids::EnvelopeId,
    /// Who sent it.
    pub sender: UserId,
    /// From which of their devices.
    pub sender_device: DeviceId,
    /// See [`kind`].
    pub kind: u8,
    /// The libsignal ciphertext.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub content: Base64Bytes,
    /// When the server accepted it (Unix milliseconds).
    pub server_timestamp: i64,
}

/// `GET /api/v1/messages`: the oldest queued envelopes of the calling device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Queue {
    /// Oldest first.
    pub envelopes: Vec<Envelope>,
    /// Whether more wait after these (acknowledge these, then fetch again).
    pub more: bool,
}
