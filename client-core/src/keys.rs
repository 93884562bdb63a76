//! Signal protocol key distribution: what a device uploads and what a sender fetches.
//! Keys travel in libsignal's serialization, base64-encoded (standard alphabet, padded).

use serde::{Deserialize, Serialize};

use crate::bytes::Base64Bytes;
use crate::ids::{DeviceId, UserId};

/// An EC (Curve25519) one-time prekey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PreKey {
    /// Id chosen by the device (unique per device and kind).
    pub key_id: u32,
    /// Serialized public key (33 bytes, type byte 0x05).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub public_key: Base64Bytes,
}

/// A prekey signed by the device's identity key (EC signed prekey, or Kyber prekey).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedPreKey {
    /// Id chosen by the device.
    pub key_id: u32,
    /// Serialized public key (EC: 33 bytes; Kyber-1024: 1569 bytes).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub public_key: Base64Bytes,
    /// XEdDSA signature of `public_key` by the identity key (64 bytes).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub signature: Base64Bytes,
}

/// `PUT /api/v1/keys`: the calling device's keys. The first upload must carry the identity
/// key, registration id, signed prekey and Kyber last-resort prekey; later uploads may carry
/// only new one-time prekeys (and must repeat the same identity key if they carry one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UploadKeys {
    /// Serialized identity public key (33 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    pub identity_key: Option<Base64Bytes>,
    /// Registration id (1..=16380).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 16_380))]
    pub registration_id: Option<u32>,
    /// Signed EC prekey (replaces the current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_pre_key: Option<SignedPreKey>,
    /// Signed Kyber last-resort prekey (replaces the current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pq_last_resort_pre_key: Option<SignedPreKey>,
    /// One-time EC prekeys to add.
    #[serde(default)]
    pub pre_keys: Vec<PreKey>,
    /// One-time signed Kyber prekeys to add.
    #[serde(default)]
    pub pq_pre_keys: Vec<SignedPreKey>,
}

/// `GET /api/v1/keys/count`: one-time prekeys the calling device has left on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreKeyCount {
    /// One-time EC prekeys.
    pub pre_keys: u32,
    /// One-time Kyber prekeys.
    pub pq_pre_keys: u32,
}

/// The prekey bundle of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceBundle {
    /// The device.
    pub device_id: DeviceId,
    /// Its registration id.
    pub registration_id: u32,
    /// Its identity public key.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub identity_key: Base64Bytes,
    /// Its signed EC prekey.
    pub signed_pre_key: SignedPreKey,
    /// A one-time EC prekey, if any was left (handed out only once).
    pub pre_key: Option<PreKey>,
    /// A one-time Kyber prekey, or the last-resort one when none is left.
    pub pq_pre_key: SignedPreKey,
}

/// `GET /api/v1/keys/{user_id}`: a bundle for every device of the user that has keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserBundles {
    /// The user.
    pub user_id: UserId,
    /// One bundle per device.
    pub devices: Vec<DeviceBundle>,
}

/// Payload of the `PREKEYS_LOW` gateway event: upload more one-time prekeys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreKeysLow {
    /// The device that runs low.
    pub device_id: DeviceId,
    /// What it has left.
    pub count: PreKeyCount,
}
