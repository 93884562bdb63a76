//! Voice media keys over the pairwise Signal sessions.
//!
//! A participant's media key share ([`MediaKeyShare`]) goes to each other participant's
//! device as a Signal message of the session with that device, inside `VOICE_KEYS`. The
//! devices are those the server lists in the room *and* their owner's signed device list names
//! for a member who may read the channel (the channel's recipients): a device the server slips
//! into the room gets nothing. A share received is opened with the session of the device it
//! says it comes from, and taken only if that device's signed list vouches for the session's
//! identity: the slot of the key is then bound to that user and device, whatever the SFU claims.
//!
//! A share is taken only for the slot the room gives its sending device: another participant
//! cannot replace someone else's key (and so silence them) by claiming their slot.
//!
//! The voice privacy code is computed over the identity keys the signed lists give the
//! participants, and over every device this device sealed its key for at that epoch: a device
//! the server had it seal for shows in the code even if the list shown to people leaves it
//! out.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Engine, MessagingError, Transport};
use crate::channel_messages::ChannelRecipients;
use crate::crypto::Decrypted;
use crate::ids::{ChannelId, DeviceId, EnvelopeId, UserId};
use crate::messages::kind;
use crate::messages::Envelope;
use crate::voice::MediaKeyShare;
use crate::voice_signal::{KeyShareOut, VoiceKey, VoiceParticipant};

/// What a voice key share says inside its Signal message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoiceKeyPayload {
    voice_key: VoiceKeyBody,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoiceKeyBody {
    /// The voice channel it is for (a share is never taken for another room).
    channel: ChannelId,
    /// The epoch it is for.
    epoch: u64,
    /// The key.
    share: MediaKeyShare,
}

/// The devices a media key was sealed for in one channel: (epoch, device → identity key).
pub(super) type Sealed = (u64, BTreeMap<(UserId, DeviceId), Vec<u8>>);

/// Key shares sealed for the devices of a room.
#[derive(Debug)]
pub struct SealedVoiceKeys {
    /// For `VOICE_KEYS` (send in frames of at most 100).
    pub keys: Vec<KeyShareOut>,
    /// The devices that got one, with the identity key their owner's signed list gives them.
    pub devices: Vec<(UserId, DeviceId, Vec<u8>)>,
}

/// A key share opened.
#[derive(Debug)]
pub struct OpenedVoiceKey {
    /// Who sent it (the device of the Signal session it came over, vouched for by its owner's
    /// signed list): frames that open with this key are theirs.
    pub from_user: UserId,
    /// Their device.
    pub from_device: DeviceId,
    /// The epoch it is for.
    pub epoch: u64,
    /// The key.
    pub share: MediaKeyShare,
}

impl<T: Transport> Engine<T> {
    /// Seals this device's media key `share` for the devices among `participants` that may
    /// have it: those of the channel's recipients (members who may read it, under their signed
    /// device lists), less this device. The server's participant list alone never adds one.
    pub async fn seal_voice_keys(
        &mut self,
        channel: ChannelId,
        epoch: u64,
        participants: &[VoiceParticipant],
        share: &MediaKeyShare,
        now: i64,
    ) -> Result<SealedVoiceKeys, MessagingError> {
        self.tick(now);
        let wanted: BTreeSet<(UserId, DeviceId)> =
            participants.iter().map(|p| (p.user_id, p.device_id)).filter(|d| *d != (self.me, self.my_device)).collect();
        if wanted.is_empty() {
            return Ok(SealedVoiceKeys { keys: Vec::new(), devices: Vec::new() });
        }
        let mut recipients: ChannelRecipients =
            self.api("GET", &format!("/api/v1/channels/{channel}/recipients"), None::<&()>).await?;
        recipients.devices.retain(|d| wanted.contains(&(d.user_id, d.device_id)));
        let targets = self.channel_targets(&recipients).await?;
        let payload = serde_json::to_vec(&VoiceKeyPayload { voice_key: VoiceKeyBody { channel, epoch, share: share.clone() } })
            .map_err(|e| MessagingError::Send(e.to_string()))?;
        let mut keys = Vec::with_capacity(targets.len());
        let mut devices = Vec::with_capacity(targets.len());
        self.device.vault().begin_batch();
        for (t, identity) in targets {
            let envelope = self.device.encrypt(t.user_id, t.device_id, &payload).await?;
            let mut ciphertext = Vec::with_capacity(1 + envelope.content.as_slice().len());
            ciphertext.push(envelope.kind);
            ciphertext.extend_from_slice(envelope.content.as_slice());
            keys.push(KeyShareOut { user_id: t.user_id, device_id: t.device_id, ciphertext: ciphertext.into() });
            devices.push((t.user_id, t.device_id, identity));
        }
        // The sessions' ratchet steps are on disk before the shares leave.
        self.device.vault().flush_batch().await?;
        let sealed = self.voice_sealed.entry(channel).or_insert_with(|| (epoch, BTreeMap::new()));
        if sealed.0 != epoch {
            *sealed = (epoch, BTreeMap::new());
        }
        sealed.1.extend(devices.iter().map(|(u, d, k)| ((*u, *d), k.clone())));
        Ok(SealedVoiceKeys { keys, devices })
    }

    /// Opens a key share another participant sent this device. Refused when the sending
    /// device is not in its owner's signed list, when the session's identity is not the one
    /// that list gives it, when the share was sealed for another channel, or when its slot is
    /// not the one `participants` (the room as this device knows it) gives the sender.
    pub async fn open_voice_key(
        &mut self,
        key: &VoiceKey,
        participants: &[VoiceParticipant],
        now: i64,
    ) -> Result<OpenedVoiceKey, MessagingError> {
        self.tick(now);
        let refused = |why: &str| MessagingError::Send(format!("voice key refused: {why}"));
        let (from_user, from_device) = (key.from_user, key.from_device);
        if !self.is_vouched(from_user, from_device, None).await? {
            return Err(refused("from a device its owner's signed list does not name"));
        }
        let bytes = key.ciphertext.as_slice();
        let Some((&kind, content)) = bytes.split_first() else { return Err(refused("empty")) };
        if kind != kind::PREKEY && kind != kind::WHISPER {
            return Err(refused("not a Signal message"));
        }
        let envelope = Envelope {
            id: EnvelopeId(0),
            sender: from_user,
            sender_device: from_device,
            kind,
            content: content.to_vec().into(),
            server_timestamp: now,
        };
        self.device.vault().begin_batch();
        let decrypted = self.device.decrypt(&envelope).await;
        self.device.vault().flush_batch().await?;
        let plaintext = match decrypted? {
            Decrypted::Message(p) => p,
            Decrypted::Duplicate => return Err(refused("a share seen already")),
            Decrypted::RetryRequest { .. } => return Err(refused("not a key share")),
        };
        let identity = self.device.session_identity(from_user, from_device).await?.ok_or_else(|| refused("no session"))?;
        if !self.is_vouched(from_user, from_device, Some(&identity)).await? {
            return Err(refused("the session's identity is not the one its owner's signed list gives"));
        }
        let payload: VoiceKeyPayload = serde_json::from_slice(&plaintext).map_err(|_| refused("unreadable"))?;
        if payload.voice_key.channel != key.channel_id {
            return Err(refused("sealed for another channel"));
        }
        let slot = payload.voice_key.share.slot;
        if !participants.iter().any(|p| (p.user_id, p.device_id, p.slot) == (from_user, from_device, slot)) {
            return Err(refused("for a slot the room does not give its sender"));
        }
        Ok(OpenedVoiceKey { from_user, from_device, epoch: payload.voice_key.epoch, share: payload.voice_key.share })
    }

    /// The voice privacy code of `channel` at `epoch` for `participants` (this device
    /// included), over the identity keys their owners' signed lists give them, and the devices
    /// this device sealed its key for at that epoch. `None` when a participant's list does not
    /// name it (a device nobody vouches for is in the room).
    pub async fn voice_privacy_code(
        &mut self,
        channel: ChannelId,
        epoch: u64,
        participants: &[VoiceParticipant],
        now: i64,
    ) -> Result<Option<String>, MessagingError> {
        self.tick(now);
        let mut keys = Vec::with_capacity(participants.len());
        for p in participants {
            let key = if (p.user_id, p.device_id) == (self.me, self.my_device) {
                Some(self.device.identity_key().serialize().to_vec())
            } else {
                match self.account_of(p.user_id, false).await? {
                    Some(a) if a.key_of(p.device_id).is_some() => a.key_of(p.device_id).map(<[u8]>::to_vec),
                    _ => self.account_of(p.user_id, true).await?.and_then(|a| a.key_of(p.device_id).map(<[u8]>::to_vec)),
                }
            };
            let Some(key) = key else { return Ok(None) };
            keys.push((p.user_id, p.device_id, key));
        }
        if let Some((_, sealed)) = self.voice_sealed.get(&channel).filter(|(e, _)| *e == epoch) {
            for ((user, device), key) in sealed {
                if !keys.iter().any(|(u, d, _)| (u, d) == (user, device)) {
                    keys.push((*user, *device, key.clone()));
                }
            }
        }
        Ok(Some(crate::voice::privacy_code(channel, epoch, &keys)))
    }
}
