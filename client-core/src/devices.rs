//! Devices the server cannot forge: the signed device list, device linking and the recovery
//! backup (wire types, and the list's canonical encoding).
//!
//! Every user has an *account key* (a Curve25519 key pair, held only by the user's linked
//! devices). It signs the list of the user's devices and their identity keys; the list carries
//! a version that only grows. The server keeps the latest list and serves it as it was signed
//! (`list` holds the exact signed bytes: no canonical JSON is needed). Clients encrypt only to
//! devices of a list that verifies under the account key they know for that user, and refuse a
//! list whose version went backwards.
//!
//! A new device is *pending* until a linked device (or the recovery key) vouches for it: it
//! runs a SPAKE2 exchange with a linked device over the server, keyed by a short code shown on
//! the new device, and receives the account key sealed under the exchange's key. Only the
//! holder of the code can open it, so the server cannot substitute a device of its own.

use serde::{Deserialize, Serialize};

use crate::bytes::Base64Bytes;
use crate::ids::{DeviceId, UserId};

/// What a signed device list starts with (domain separation of the account key's signatures).
pub const LIST_CONTEXT: &[u8] = b"LesCopains signed device list v1\0";

/// Largest serialized identity or account key (Curve25519, type byte + 32).
pub const KEY_BYTES: usize = 33;

/// Largest SPAKE2 message of a link request or answer, in bytes.
pub const PAKE_MAX_BYTES: usize = 64;

/// Largest sealed payload (link answer, recovery backup), in bytes.
pub const SEALED_MAX_BYTES: usize = 16 * 1024;

/// How long a link request stays open (milliseconds).
pub const LINK_REQUEST_TTL_MS: i64 = 10 * 60 * 1000;

/// A device in a signed list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedDevice {
    /// The device.
    pub device_id: DeviceId,
    /// Its serialized identity public key (33 bytes).
    pub identity_key: Vec<u8>,
}

/// A user's device list, as signed by the account key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList {
    /// Whose devices.
    pub user: UserId,
    /// Grows with every change.
    pub version: u64,
    /// The devices, by id (no id twice).
    pub devices: Vec<ListedDevice>,
}

/// Why bytes are not a device list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a device list: {0}")]
pub struct ListDecodeError(pub &'static str);

impl DeviceList {
    /// The canonical bytes that are signed: [`LIST_CONTEXT`], user id (i64, big endian),
    /// version (u64), device count (u8), then per device in increasing id order: id (u8), key
    /// length (u8), key.
    pub fn encode(&self) -> Vec<u8> {
        let mut devices: Vec<&ListedDevice> = self.devices.iter().collect();
        devices.sort_by_key(|d| d.device_id);
        let mut out = Vec::with_capacity(LIST_CONTEXT.len() + 17 + devices.len() * (2 + KEY_BYTES));
        out.extend_from_slice(LIST_CONTEXT);
        out.extend_from_slice(&self.user.0.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.push(devices.len() as u8);
        for d in devices {
            out.push(d.device_id.0 as u8);
            out.push(d.identity_key.len() as u8);
            out.extend_from_slice(&d.identity_key);
        }
        out
    }

    /// Reads canonical bytes; anything else (unsorted or repeated ids, bad lengths, trailing
    /// bytes) is refused, so one list has exactly one encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, ListDecodeError> {
        let rest = bytes.strip_prefix(LIST_CONTEXT).ok_or(ListDecodeError("wrong context"))?;
        let take = |rest: &mut &[u8], n: usize| -> Result<Vec<u8>, ListDecodeError> {
            if rest.len() < n {
                return Err(ListDecodeError("truncated"));
            }
            let (head, tail) = rest.split_at(n);
            *rest = tail;
            Ok(head.to_vec())
        };
        let mut rest = rest;
        let user = i64::from_be_bytes(take(&mut rest, 8)?.try_into().map_err(|_| ListDecodeError("truncated"))?);
        let version = u64::from_be_bytes(take(&mut rest, 8)?.try_into().map_err(|_| ListDecodeError("truncated"))?);
        let count = take(&mut rest, 1)?[0] as usize;
        let mut devices = Vec::with_capacity(count);
        for _ in 0..count {
            let id = u32::from(take(&mut rest, 1)?[0]);
            if !(1..=DeviceId::MAX).contains(&id) {
                return Err(ListDecodeError("device id out of range"));
            }
            if devices.last().is_some_and(|d: &ListedDevice| d.device_id.0 >= id) {
                return Err(ListDecodeError("device ids not in increasing order"));
            }
            let len = take(&mut rest, 1)?[0] as usize;
            if len != KEY_BYTES {
                return Err(ListDecodeError("identity key of the wrong length"));
            }
            devices.push(ListedDevice { device_id: DeviceId(id), identity_key: take(&mut rest, len)? });
        }
        if !rest.is_empty() {
            return Err(ListDecodeError("trailing bytes"));
        }
        if user <= 0 {
            return Err(ListDecodeError("user id out of range"));
        }
        Ok(Self { user: UserId(user), version, devices })
    }

    /// The identity key listed for `device`.
    pub fn key_of(&self, device: DeviceId) -> Option<&[u8]> {
        self.devices.iter().find(|d| d.device_id == device).map(|d| d.identity_key.as_slice())
    }

    /// The listed device ids, in order.
    pub fn ids(&self) -> Vec<DeviceId> {
        self.devices.iter().map(|d| d.device_id).collect()
    }
}

/// A device list with its signature, as the server keeps and serves it
/// (`GET /api/v1/users/{user_id}/device-list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedDeviceList {
    /// The account's public key (33 bytes).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub account_key: Base64Bytes,
    /// The list in its canonical encoding ([`DeviceList::encode`]).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub list: Base64Bytes,
    /// XEdDSA signature of `list` by the account key (64 bytes).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub signature: Base64Bytes,
}

/// `PUT /api/v1/users/@me/device-list`: publish a new version of the caller's device list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PublishDeviceList {
    /// The new list, signed.
    pub signed: SignedDeviceList,
    /// Required (the account's password) to replace the account key with another one: the
    /// user lost every linked device and the recovery key, and starts a new account identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_password: Option<String>,
}

/// A recovery backup: the account key sealed under a key derived from the recovery key,
/// which only the user holds (`GET`/`PUT /api/v1/users/@me/recovery`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecoveryBackup {
    /// Opaque to the server.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    #[cfg_attr(feature = "openapi", schema(min_length = 4, max_length = 21_844))]
    pub sealed: Base64Bytes,
}

/// `POST /api/v1/users/@me/link-requests`: a pending device asks to be linked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewLinkRequest {
    /// The new device's SPAKE2 message (at most 64 bytes).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    #[cfg_attr(feature = "openapi", schema(min_length = 4, max_length = 84))]
    pub pake: Base64Bytes,
}

/// A pending device's open link request, as the user's devices see it (and as the
/// `LINK_REQUEST` gateway event carries it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LinkRequest {
    /// The device asking.
    pub device_id: DeviceId,
    /// Its name.
    pub device_name: String,
    /// Its identity key as the server has it (33 bytes); the exchange binds it, so a key
    /// swapped by the server makes the exchange fail.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub identity_key: Base64Bytes,
    /// Its SPAKE2 message.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub pake: Base64Bytes,
    /// When it was made (Unix milliseconds).
    pub created_at: i64,
    /// When it lapses (Unix milliseconds).
    pub expires_at: i64,
}

/// `POST /api/v1/users/@me/link-requests/{device_id}/answer`: a linked device's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewLinkAnswer {
    /// The linked device's SPAKE2 message (at most 64 bytes).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    #[cfg_attr(feature = "openapi", schema(min_length = 4, max_length = 84))]
    pub pake: Base64Bytes,
    /// The account key (and the current signed list) sealed under the exchange's key
    /// (at most 16 KiB).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    #[cfg_attr(feature = "openapi", schema(min_length = 4, max_length = 21_844))]
    pub sealed: Base64Bytes,
}

/// An answer as the pending device receives it (`LINK_ANSWER` gateway event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LinkAnswer {
    /// The device that answered.
    pub from_device: DeviceId,
    /// Its SPAKE2 message.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub pake: Base64Bytes,
    /// The sealed payload.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Byte))]
    pub sealed: Base64Bytes,
}

/// The calling device's own link request (`GET /api/v1/users/@me/link-requests/@me`), with
/// the answer once one came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OwnLinkRequest {
    /// The request.
    pub request: LinkRequest,
    /// The answer, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<LinkAnswer>,
}

/// `DEVICE_LIST_UPDATE` gateway event: a user's device list has a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceListUpdate {
    /// Whose list.
    pub user_id: UserId,
    /// The new version.
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> DeviceList {
        DeviceList {
            user: UserId(42),
            version: 7,
            devices: vec![
                ListedDevice { device_id: DeviceId(3), identity_key: vec![5; 33] },
                ListedDevice { device_id: DeviceId(1), identity_key: vec![5; 33] },
            ],
        }
    }

    #[test]
    fn encoding_round_trips_in_id_order() {
        let bytes = list().encode();
        let back = DeviceList::decode(&bytes).expect("valid");
        assert_eq!(back.user, UserId(42));
        assert_eq!(back.version, 7);
        assert_eq!(back.ids(), vec![DeviceId(1), DeviceId(3)]);
        assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn non_canonical_bytes_are_refused() {
        let good = list().encode();
        assert!(DeviceList::decode(&good[1..]).is_err(), "context");
        assert!(DeviceList::decode(&good[..good.len() - 1]).is_err(), "truncated");
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(DeviceList::decode(&trailing).is_err(), "trailing");
        // Swap the two devices: ids out of order.
        let at = LIST_CONTEXT.len() + 17;
        let mut swapped = good.clone();
        let (first, second) = (swapped[at..at + 35].to_vec(), swapped[at + 35..at + 70].to_vec());
        swapped[at..at + 35].copy_from_slice(&second);
        swapped[at + 35..at + 70].copy_from_slice(&first);
        assert!(DeviceList::decode(&swapped).is_err(), "order");
        let mut zero = good.clone();
        zero[at] = 0;
        assert!(DeviceList::decode(&zero).is_err(), "id 0");
        let mut short_key = good;
        short_key[at + 1] = 32;
        assert!(DeviceList::decode(&short_key).is_err(), "key length");
    }
}
