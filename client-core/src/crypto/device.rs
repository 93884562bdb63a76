//! One device's end-to-end encryption: keys to upload, sessions from bundles (PQXDH),
//! encrypt and decrypt (Double Ratchet), retry requests, safety numbers. All of it is
//! libsignal; this module only feeds it keys and stores.

use std::time::SystemTime;

use libsignal_protocol::{
    create_sender_key_distribution_message, group_decrypt, group_encrypt, kem, message_decrypt, message_encrypt,
    process_prekey_bundle, process_sender_key_distribution_message, CiphertextMessage, CiphertextMessageType,
    DecryptionErrorMessage, GenericSignedPreKey, IdentityKey, IdentityKeyStore, KeyPair, KyberPreKeyId, KyberPreKeyRecord,
    KyberPreKeyStore, PlaintextContent, PreKeyBundle, PreKeyId, PreKeyRecord, PreKeySignalMessage, PreKeyStore, ProtocolAddress,
    PublicKey, SenderKeyDistributionMessage, SenderKeyMessage, SessionStore, SignalMessage, SignalProtocolError, SignedPreKeyId,
    SignedPreKeyRecord, SignedPreKeyStore, Timestamp,
};
use rand::Rng;
use uuid::Uuid;

use super::store::{ns, DeviceStore};
use super::vault::{Vault, VaultError};
use crate::bytes::Base64Bytes;
use crate::ids::{DeviceId, UserId};
use crate::keys::{DeviceBundle, PreKey, SignedPreKey, UploadKeys};
use crate::messages::{kind, Envelope, OutgoingEnvelope};

/// One-time prekeys generated per batch.
pub const PREKEY_BATCH: u32 = 100;

/// How long a signed EC prekey and a Kyber last-resort prekey are handed out before new ones
/// replace them (Signal's clients rotate every two days).
pub const SIGNED_PREKEY_MAX_AGE_MS: i64 = 2 * 24 * 3600 * 1000;

/// How long replaced signed prekeys are kept, so that PreKey messages a contact built from an
/// older bundle (sent while this device was offline) still decrypt.
pub const RETIRED_PREKEY_KEPT_MS: i64 = 30 * 24 * 3600 * 1000;

/// A replaced signed prekey: which store, its id, when it was replaced.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Retired {
    kyber: bool,
    id: u32,
    at: i64,
}

/// Errors of the device crypto.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// libsignal refused.
    #[error("signal protocol: {0}")]
    Protocol(#[from] SignalProtocolError),
    /// The vault failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// A bundle or envelope that cannot be used.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A session's identity key is not the one expected (or not the one on record).
    #[error("the session's identity key is not the expected one")]
    IdentityMismatch,
}

/// A decrypted envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decrypted {
    /// A message.
    Message(Vec<u8>),
    /// A retry request: the sender of this envelope says it could not decrypt the message
    /// this user's `device` sent at `timestamp`. Anyone can send one (the server too): answer
    /// only from the sent-message log ([`super::SentLog`]), never by timestamp alone, and only
    /// then drop the broken session ([`E2eeDevice::drop_failed_session`]).
    RetryRequest {
        /// Server timestamp of the message to send again.
        timestamp: i64,
        /// Which of this user's devices sent it, according to the request.
        device: DeviceId,
        /// The ratchet key of the session the requester failed on (serialized), if given.
        ratchet_key: Option<Vec<u8>>,
    },
    /// A message this device already decrypted (delivered twice, e.g. after a crash before
    /// its acknowledgement): nothing to show, and the session is fine.
    Duplicate,
}

/// A decrypted channel message (libsignal `SenderKeyMessage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupDecrypted {
    /// The plaintext.
    Message(Vec<u8>),
    /// This device has no key for it (yet): its distribution has not arrived, or never will.
    NoKey,
    /// Its message key was used already (libsignal keeps none): the same ciphertext again.
    Duplicate,
}

/// The Signal protocol address of a user's device.
pub fn address(user: UserId, device: DeviceId) -> Result<ProtocolAddress, CryptoError> {
    let device =
        libsignal_protocol::DeviceId::try_from(device.0).map_err(|_| CryptoError::Invalid(format!("device id {device}")))?;
    Ok(ProtocolAddress::new(user.to_string(), device))
}

/// The end-to-end state of this device.
#[derive(Debug)]
pub struct E2eeDevice {
    store: DeviceStore,
    /// The time the engine last gave (Unix milliseconds): libsignal stamps keys and checks
    /// session expiry with it. The device never reads a clock of its own once open.
    now: std::cell::Cell<i64>,
}

impl E2eeDevice {
    /// Opens the device's vault; a new vault gets a fresh identity. Returns the device and,
    /// when new, the full set of keys to upload.
    pub async fn open(vault: Vault, _user: UserId) -> Result<(Self, Option<UploadKeys>), CryptoError> {
        let registration_id = rand::rng().random_range(1..=16380);
        let (store, created) = DeviceStore::open(vault, registration_id).await?;
        let mut device = Self { store, now: std::cell::Cell::new(now_ms()) };
        let upload = if created { Some(device.keys_to_upload(true, PREKEY_BATCH).await?) } else { None };
        Ok((device, upload))
    }

    /// Sets the time (Unix milliseconds) for what follows.
    pub fn set_now(&self, now_ms: i64) {
        self.now.set(now_ms);
    }

    fn time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(self.now.get()).unwrap_or(0))
    }

    /// This device's identity key.
    pub fn identity_key(&self) -> IdentityKey {
        *self.store.identity.pair().identity_key()
    }

    /// The vault (for the client's own records, such as history).
    pub fn vault(&self) -> &Vault {
        &self.store.vault
    }

    /// This device's registration id.
    pub fn registration_id(&self) -> u32 {
        self.store.identity.registration_id()
    }

    /// Generates `count` one-time prekeys of each kind, and with `full` a new signed prekey,
    /// a new Kyber last-resort prekey and the identity; stores the private halves.
    pub async fn keys_to_upload(&mut self, full: bool, count: u32) -> Result<UploadKeys, CryptoError> {
        let mut rng = rand::rng();
        let identity = *self.store.identity.pair();
        let mut upload = UploadKeys::default();
        if full {
            upload.identity_key = Some(identity.identity_key().serialize().to_vec().into());
            upload.registration_id = Some(self.store.identity.registration_id());
            self.new_signed_prekeys(&mut upload, self.now.get()).await?;
        }
        let first = self.store.counter("next_prekey").await?;
        for id in first..first + count {
            let pair = KeyPair::generate(&mut rng);
            self.store.prekeys.save_pre_key(PreKeyId::from(id), &PreKeyRecord::new(PreKeyId::from(id), &pair)).await?;
            upload.pre_keys.push(PreKey { key_id: id, public_key: pair.public_key.serialize().to_vec().into() });
        }
        self.store.set_counter("next_prekey", first + count).await?;
        let first = self.store.counter("next_kyber").await?;
        for id in first..first + count {
            let record = kyber_prekey(KyberPreKeyId::from(id), &identity, self.now.get())?;
            self.store.kyber.save_kyber_pre_key(KyberPreKeyId::from(id), &record).await?;
            upload.pq_pre_keys.push(signed_of(&record, id)?);
        }
        self.store.set_counter("next_kyber", first + count).await?;
        Ok(upload)
    }

    /// Generates a signed EC prekey and a Kyber last-resort prekey into `upload`, records
    /// them as current and when they were made.
    async fn new_signed_prekeys(&mut self, upload: &mut UploadKeys, now_ms: i64) -> Result<(), CryptoError> {
        let mut rng = rand::rng();
        let identity = *self.store.identity.pair();
        let now = Timestamp::from_epoch_millis(u64::try_from(now_ms).unwrap_or(0));
        let signed_id = self.store.counter("next_signed").await?;
        let pair = KeyPair::generate(&mut rng);
        let signature = identity
            .private_key()
            .calculate_signature(&pair.public_key.serialize(), &mut rng)
            .map_err(SignalProtocolError::from)?;
        let record = SignedPreKeyRecord::new(SignedPreKeyId::from(signed_id), now, &pair, &signature);
        self.store.signed.save_signed_pre_key(SignedPreKeyId::from(signed_id), &record).await?;
        self.store.set_counter("next_signed", signed_id + 1).await?;
        upload.signed_pre_key = Some(SignedPreKey {
            key_id: signed_id,
            public_key: pair.public_key.serialize().to_vec().into(),
            signature: signature.to_vec().into(),
        });
        let kyber_id = self.store.counter("next_kyber").await?;
        let record = kyber_prekey(KyberPreKeyId::from(kyber_id), &identity, now_ms)?;
        self.store.kyber.save_kyber_pre_key(KyberPreKeyId::from(kyber_id), &record).await?;
        self.store.vault.put(ns::OWN, b"kyber_last_resort", &kyber_id.to_be_bytes()).await?;
        // Marked as last resort: it is reused by every contact, never deleted on use.
        self.store.vault.put(ns::LAST_RESORT, &kyber_id.to_be_bytes(), &[1]).await?;
        self.store.set_counter("next_kyber", kyber_id + 1).await?;
        upload.pq_last_resort_pre_key = Some(signed_of(&record, kyber_id)?);
        self.store.vault.put(ns::OWN, b"signed_at", &now_ms.to_be_bytes()).await?;
        Ok(())
    }

    /// When the signed prekeys are older than [`SIGNED_PREKEY_MAX_AGE_MS`], makes new ones
    /// and returns the upload that publishes them. The replaced ones stay usable for
    /// [`RETIRED_PREKEY_KEPT_MS`] (for PreKey messages already on their way), then are deleted.
    pub async fn rotate_signed_prekeys_if_due(&mut self, now_ms: i64) -> Result<Option<UploadKeys>, CryptoError> {
        let made_at = match self.store.vault.get(ns::OWN, b"signed_at").await? {
            Some(raw) => i64::from_be_bytes(raw.as_slice().try_into().map_err(|_| VaultError::Corrupt)?),
            None => {
                // A store from before rotation existed: count from now.
                self.store.vault.put(ns::OWN, b"signed_at", &now_ms.to_be_bytes()).await?;
                now_ms
            }
        };
        let mut retired: Vec<Retired> = match self.store.vault.get(ns::OWN, b"retired").await? {
            Some(raw) => serde_json::from_slice(&raw).map_err(|_| VaultError::Corrupt)?,
            None => Vec::new(),
        };
        let due = now_ms.saturating_sub(made_at) >= SIGNED_PREKEY_MAX_AGE_MS;
        let expired = retired.iter().any(|r| now_ms.saturating_sub(r.at) >= RETIRED_PREKEY_KEPT_MS);
        if !due && !expired {
            return Ok(None);
        }
        let mut upload = None;
        if due {
            let current_signed = self.store.counter("next_signed").await?.saturating_sub(1);
            let current_kyber = self.current_last_resort().await?;
            retired.push(Retired { kyber: false, id: current_signed, at: now_ms });
            if let Some(id) = current_kyber {
                // Stores made before the marker existed: mark it now, or its first use after
                // this rotation would delete it like a one-time key.
                self.store.vault.put(ns::LAST_RESORT, &id.to_be_bytes(), &[1]).await?;
                retired.push(Retired { kyber: true, id, at: now_ms });
            }
            let mut keys = UploadKeys::default();
            self.new_signed_prekeys(&mut keys, now_ms).await?;
            upload = Some(keys);
        }
        let mut kept = Vec::with_capacity(retired.len());
        for r in retired {
            if now_ms.saturating_sub(r.at) < RETIRED_PREKEY_KEPT_MS {
                kept.push(r);
            } else if r.kyber {
                self.store.vault.delete(ns::KYBER, &r.id.to_be_bytes()).await?;
                self.store.vault.delete(ns::LAST_RESORT, &r.id.to_be_bytes()).await?;
            } else {
                self.store.vault.delete(ns::SIGNED, &r.id.to_be_bytes()).await?;
            }
        }
        let list = serde_json::to_vec(&kept).map_err(|e| CryptoError::Invalid(e.to_string()))?;
        self.store.vault.put(ns::OWN, b"retired", &list).await?;
        Ok(upload)
    }

    /// The upload of [`Self::rotate_signed_prekeys_if_due`] did not reach the server: the
    /// next check rotates again (the unpublished keys are retired like the others).
    pub async fn rotation_not_published(&mut self) -> Result<(), CryptoError> {
        Ok(self.store.vault.put(ns::OWN, b"signed_at", &0i64.to_be_bytes()).await?)
    }

    async fn current_last_resort(&self) -> Result<Option<u32>, CryptoError> {
        Ok(match self.store.vault.get(ns::OWN, b"kyber_last_resort").await? {
            Some(raw) => Some(u32::from_be_bytes(raw.as_slice().try_into().map_err(|_| VaultError::Corrupt)?)),
            None => None,
        })
    }

    /// The registration id of the session with a device, if there is a usable one.
    pub async fn session_registration(&self, user: UserId, device: DeviceId) -> Result<Option<u32>, CryptoError> {
        let addr = address(user, device)?;
        match self.store.sessions.load_session(&addr).await {
            Ok(Some(record))
                if record.has_usable_sender_chain(self.time(), libsignal_protocol::SessionUsabilityRequirements::all())? =>
            {
                Ok(Some(record.remote_registration_id()?))
            }
            Ok(_) => Ok(None),
            // An unreadable session is as good as none: it will be rebuilt.
            Err(_) => Ok(None),
        }
    }

    /// Starts a session with a device from its bundle (PQXDH).
    pub async fn start_session(&mut self, user: UserId, bundle: &DeviceBundle) -> Result<(), CryptoError> {
        let addr = address(user, bundle.device_id)?;
        let pre_key = match &bundle.pre_key {
            Some(k) => Some((
                PreKeyId::from(k.key_id),
                PublicKey::deserialize(k.public_key.as_slice()).map_err(SignalProtocolError::from)?,
            )),
            None => None,
        };
        let device =
            libsignal_protocol::DeviceId::try_from(bundle.device_id.0).map_err(|_| CryptoError::Invalid("device id".into()))?;
        let bundle = PreKeyBundle::new(
            bundle.registration_id,
            device,
            pre_key,
            SignedPreKeyId::from(bundle.signed_pre_key.key_id),
            PublicKey::deserialize(bundle.signed_pre_key.public_key.as_slice()).map_err(SignalProtocolError::from)?,
            bundle.signed_pre_key.signature.0.clone(),
            KyberPreKeyId::from(bundle.pq_pre_key.key_id),
            kem::PublicKey::deserialize(bundle.pq_pre_key.public_key.as_slice())?,
            bundle.pq_pre_key.signature.0.clone(),
            IdentityKey::decode(bundle.identity_key.as_slice())?,
        )?;
        let mut rng = rand::rng();
        let now = self.time();
        let s = &mut self.store;
        match process_prekey_bundle(&addr, &mut s.sessions, &mut s.identity, &bundle, now, &mut rng).await {
            Err(SignalProtocolError::UntrustedIdentity(a)) => {
                // A device the user verified has a new key. Nothing is encrypted to it; the new
                // key is kept (the change is reported, the device is now "unverified"), so the
                // user sees the new safety number and can accept it or verify it again.
                s.identity.save_identity(&addr, bundle.identity_key()?).await?;
                Err(SignalProtocolError::UntrustedIdentity(a).into())
            }
            other => Ok(other?),
        }
    }

    /// Encrypts `plaintext` for a device with which a session exists.
    pub async fn encrypt(&mut self, user: UserId, device: DeviceId, plaintext: &[u8]) -> Result<OutgoingEnvelope, CryptoError> {
        let addr = address(user, device)?;
        let registration_id = self
            .store
            .sessions
            .load_session(&addr)
            .await?
            .ok_or_else(|| CryptoError::Invalid(format!("no session with {addr}")))?
            .remote_registration_id()?;
        let mut rng = rand::rng();
        let now = self.time();
        let s = &mut self.store;
        let message = message_encrypt(plaintext, &addr, &mut s.sessions, &mut s.identity, now, &mut rng).await?;
        let kind = match message.message_type() {
            CiphertextMessageType::PreKey => kind::PREKEY,
            CiphertextMessageType::Whisper => kind::WHISPER,
            other => return Err(CryptoError::Invalid(format!("unexpected ciphertext type {other:?}"))),
        };
        Ok(OutgoingEnvelope { device_id: device, registration_id, kind, content: message.serialize().to_vec().into() })
    }

    /// Decrypts an envelope (or handles a retry request carried by one).
    pub async fn decrypt(&mut self, envelope: &Envelope) -> Result<Decrypted, CryptoError> {
        let addr = address(envelope.sender, envelope.sender_device)?;
        let bytes = envelope.content.as_slice();
        let message = match envelope.kind {
            kind::PREKEY => CiphertextMessage::PreKeySignalMessage(PreKeySignalMessage::try_from(bytes)?),
            kind::WHISPER => CiphertextMessage::SignalMessage(SignalMessage::try_from(bytes)?),
            kind::PLAINTEXT => return self.on_retry_request(bytes).await,
            other => return Err(CryptoError::Invalid(format!("unknown envelope kind {other}"))),
        };
        let mut rng = rand::rng();
        let s = &mut self.store;
        match message_decrypt(
            &message,
            &addr,
            &mut s.sessions,
            &mut s.identity,
            &mut s.prekeys,
            &s.signed,
            &mut s.kyber,
            &mut rng,
        )
        .await
        {
            Ok(plaintext) => {
                if envelope.kind == kind::PREKEY {
                    self.check_session_identity(&addr).await?;
                }
                Ok(Decrypted::Message(plaintext))
            }
            Err(SignalProtocolError::DuplicatedMessage(..)) => Ok(Decrypted::Duplicate),
            Err(e) => Err(e.into()),
        }
    }

    /// A PreKey message whose base key matches an existing session is decrypted with that
    /// session, yet libsignal records the identity key written in the message's outer layer.
    /// A forged message can so make the record say one identity while the session holds
    /// another (what the safety number shows would not be whom messages go to). Such a
    /// session is dropped and the message refused: the next exchange starts a fresh session
    /// from a bundle, checked against the identity on record.
    async fn check_session_identity(&mut self, addr: &ProtocolAddress) -> Result<(), CryptoError> {
        let session_identity = match self.store.sessions.load_session(addr).await? {
            Some(record) => record.remote_identity_key_bytes()?,
            None => return Ok(()),
        };
        let stored = self.store.identity.get_identity(addr).await?.map(|k| k.serialize().to_vec());
        if session_identity.is_some() && session_identity != stored {
            self.store.sessions.delete(addr).await?;
            return Err(CryptoError::IdentityMismatch);
        }
        Ok(())
    }

    async fn on_retry_request(&mut self, bytes: &[u8]) -> Result<Decrypted, CryptoError> {
        let content = PlaintextContent::try_from(bytes)?;
        let request = libsignal_protocol::extract_decryption_error_message_from_serialized_content(content.body())?;
        Ok(Decrypted::RetryRequest {
            timestamp: i64::try_from(request.timestamp().epoch_millis()).unwrap_or(i64::MAX),
            device: DeviceId(request.device_id()),
            ratchet_key: request.ratchet_key().map(|k| k.serialize().to_vec()),
        })
    }

    /// After a retry request was found genuine: drops the session with the requester if it is
    /// the one they failed on (its current ratchet key is the one they name), so that the
    /// re-send starts a fresh one. A session already rebuilt is kept.
    pub async fn drop_failed_session(&mut self, user: UserId, device: DeviceId, ratchet_key: &[u8]) -> Result<(), CryptoError> {
        let addr = address(user, device)?;
        let ratchet = PublicKey::deserialize(ratchet_key).map_err(SignalProtocolError::from)?;
        if let Some(record) = self.store.sessions.load_session(&addr).await.ok().flatten() {
            if record.current_ratchet_key_matches(&ratchet)? {
                self.store.sessions.delete(&addr).await?;
            }
        }
        Ok(())
    }

    /// Encrypts for a device only if both its session and this device's record of its
    /// identity hold `identity` (serialized): a re-send goes to the key the message was first
    /// encrypted to, or nowhere.
    pub async fn encrypt_pinned(
        &mut self,
        user: UserId,
        device: DeviceId,
        plaintext: &[u8],
        identity: &[u8],
    ) -> Result<OutgoingEnvelope, CryptoError> {
        let addr = address(user, device)?;
        let session_identity = match self.store.sessions.load_session(&addr).await? {
            Some(record) => record.remote_identity_key_bytes()?,
            None => None,
        };
        let stored = self.identity_of(user, device).await?;
        if session_identity.as_deref() != Some(identity) || stored.as_deref() != Some(identity) {
            return Err(CryptoError::IdentityMismatch);
        }
        self.encrypt(user, device, plaintext).await
    }

    /// A retry request for an envelope that could not be decrypted, to send back to its
    /// sender's device (an unencrypted `PlaintextContent` holding a `DecryptionErrorMessage`).
    pub fn retry_request(envelope: &Envelope) -> Result<OutgoingEnvelope, CryptoError> {
        let original_type = match envelope.kind {
            kind::PREKEY => CiphertextMessageType::PreKey,
            kind::WHISPER => CiphertextMessageType::Whisper,
            other => return Err(CryptoError::Invalid(format!("no retry for kind {other}"))),
        };
        let request = DecryptionErrorMessage::for_original(
            envelope.content.as_slice(),
            original_type,
            Timestamp::from_epoch_millis(u64::try_from(envelope.server_timestamp).unwrap_or(0)),
            envelope.sender_device.0,
        )?;
        let content = PlaintextContent::from(request);
        Ok(OutgoingEnvelope {
            device_id: envelope.sender_device,
            // Unknown when the session is broken; the server does not check it for retries.
            registration_id: 0,
            kind: kind::PLAINTEXT,
            content: Base64Bytes(content.serialized().to_vec()),
        })
    }

    /// The identity key (serialized) this device holds for a contact's device, if any.
    pub async fn identity_of(&self, user: UserId, device: DeviceId) -> Result<Option<Vec<u8>>, CryptoError> {
        let addr = address(user, device)?;
        Ok(self.store.identity.get_identity(&addr).await?.map(|k| k.serialize().to_vec()))
    }

    /// The identity key (serialized) of the session with a device, if there is one.
    pub async fn session_identity(&self, user: UserId, device: DeviceId) -> Result<Option<Vec<u8>>, CryptoError> {
        Ok(match self.store.sessions.load_session(&address(user, device)?).await? {
            Some(record) => record.remote_identity_key_bytes()?,
            None => None,
        })
    }

    /// Forgets the session with a device.
    pub async fn forget_session(&mut self, user: UserId, device: DeviceId) -> Result<(), CryptoError> {
        Ok(self.store.sessions.delete(&address(user, device)?).await?)
    }

    /// The identity key a PreKey envelope claims for its sender (serialized); `None` for
    /// other kinds.
    pub fn prekey_sender_identity(envelope: &Envelope) -> Option<Vec<u8>> {
        if envelope.kind != kind::PREKEY {
            return None;
        }
        PreKeySignalMessage::try_from(envelope.content.as_slice()).ok().map(|m| m.identity_key().serialize().to_vec())
    }

    // ---- sender keys (channel messages) ---------------------------------------------------

    /// The `SenderKeyDistributionMessage` of this device's sender key `distribution`
    /// (serialized), the key made when new. It carries the chain where it stands now: a device
    /// given it reads what this device encrypts from now on, nothing before.
    pub async fn sender_key_distribution(
        &mut self,
        me: UserId,
        my_device: DeviceId,
        distribution: Uuid,
    ) -> Result<Vec<u8>, CryptoError> {
        let addr = address(me, my_device)?;
        let mut rng = rand::rng();
        let skdm = create_sender_key_distribution_message(&addr, distribution, &mut self.store.sender_keys, &mut rng).await?;
        Ok(skdm.serialized().to_vec())
    }

    /// The distribution id a `SenderKeyDistributionMessage` names.
    pub fn distribution_of_skdm(skdm: &[u8]) -> Result<Uuid, CryptoError> {
        Ok(SenderKeyDistributionMessage::try_from(skdm)?.distribution_id()?)
    }

    /// Takes the sender key `device` of `sender` handed this device (over their pairwise
    /// session). Returns its distribution id.
    pub async fn process_sender_key_distribution(
        &mut self,
        sender: UserId,
        device: DeviceId,
        skdm: &[u8],
    ) -> Result<Uuid, CryptoError> {
        let addr = address(sender, device)?;
        let message = SenderKeyDistributionMessage::try_from(skdm)?;
        let distribution = message.distribution_id()?;
        process_sender_key_distribution_message(&addr, &message, &mut self.store.sender_keys).await?;
        Ok(distribution)
    }

    /// Encrypts `plaintext` with this device's sender key `distribution` (a
    /// `SenderKeyMessage`, serialized). The chain moves one step.
    pub async fn group_encrypt(
        &mut self,
        me: UserId,
        my_device: DeviceId,
        distribution: Uuid,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let addr = address(me, my_device)?;
        let mut rng = rand::rng();
        let message = group_encrypt(&mut self.store.sender_keys, &addr, distribution, plaintext, &mut rng).await?;
        Ok(message.serialized().to_vec())
    }

    /// The distribution id a `SenderKeyMessage` names (`None`: not one).
    pub fn distribution_of_message(ciphertext: &[u8]) -> Option<Uuid> {
        SenderKeyMessage::try_from(ciphertext).ok().map(|m| m.distribution_id())
    }

    /// Decrypts a `SenderKeyMessage` of `device` of `sender`.
    pub async fn group_decrypt(
        &mut self,
        sender: UserId,
        device: DeviceId,
        ciphertext: &[u8],
    ) -> Result<GroupDecrypted, CryptoError> {
        let addr = address(sender, device)?;
        match group_decrypt(ciphertext, &mut self.store.sender_keys, &addr).await {
            Ok(plaintext) => Ok(GroupDecrypted::Message(plaintext)),
            Err(SignalProtocolError::NoSenderKeyState { .. }) => Ok(GroupDecrypted::NoKey),
            Err(SignalProtocolError::DuplicatedMessage(..)) => Ok(GroupDecrypted::Duplicate),
            Err(e) => Err(e.into()),
        }
    }

    /// Overwrites the session with a device with garbage (tests of the repair path).
    #[cfg(feature = "testing")]
    pub async fn corrupt_session(&self, user: UserId, device: DeviceId) -> Result<(), CryptoError> {
        Ok(self.store.sessions.corrupt(&address(user, device)?).await?)
    }
}

fn signed_of(record: &KyberPreKeyRecord, id: u32) -> Result<SignedPreKey, CryptoError> {
    Ok(SignedPreKey {
        key_id: id,
        public_key: record.public_key()?.serialize().to_vec().into(),
        signature: record.signature()?.into(),
    })
}

/// A Kyber prekey signed by the identity, stamped with `now_ms` (libsignal's
/// `KyberPreKeyRecord::generate` reads the system clock, which a browser build has not).
fn kyber_prekey(
    id: KyberPreKeyId,
    identity: &libsignal_protocol::IdentityKeyPair,
    now_ms: i64,
) -> Result<KyberPreKeyRecord, CryptoError> {
    let mut rng = rand::rng();
    let pair = kem::KeyPair::generate(kem::KeyType::Kyber1024, &mut rng);
    let signature =
        identity.private_key().calculate_signature(&pair.public_key.serialize(), &mut rng).map_err(SignalProtocolError::from)?;
    let at = Timestamp::from_epoch_millis(u64::try_from(now_ms).unwrap_or(0));
    Ok(KyberPreKeyRecord::new(id, at, &pair, &signature))
}

/// Now, in Unix milliseconds (the system clock; the browser's in a browser build).
pub fn now_ms() -> i64 {
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now() as i64
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::vault::MemoryBackend;
    use crate::ids::EnvelopeId;
    use libsignal_protocol::KyberPayload;

    async fn device(user: i64) -> (E2eeDevice, UploadKeys) {
        let vault = Vault::open(Box::new(MemoryBackend::default()), "pass").await.expect("vault");
        let (d, up) = E2eeDevice::open(vault, UserId(user)).await.expect("device");
        (d, up.expect("new"))
    }

    fn bundle(up: &UploadKeys) -> DeviceBundle {
        DeviceBundle {
            device_id: DeviceId(1),
            registration_id: up.registration_id.expect("reg"),
            identity_key: up.identity_key.clone().expect("identity"),
            signed_pre_key: up.signed_pre_key.clone().expect("signed"),
            pre_key: up.pre_keys.first().cloned(),
            pq_pre_key: up.pq_pre_keys[0].clone(),
        }
    }

    fn envelope(from: i64, e: &OutgoingEnvelope, content: Vec<u8>) -> Envelope {
        Envelope {
            id: EnvelopeId(1),
            sender: UserId(from),
            sender_device: DeviceId(1),
            kind: e.kind,
            content: content.into(),
            server_timestamp: 1,
        }
    }

    #[test]
    fn tampered_or_truncated_ciphertext_is_an_error_and_the_real_one_still_decrypts() {
        tokio::runtime::Builder::new_current_thread().build().expect("rt").block_on(async {
            let (mut alice, _) = device(1).await;
            let (mut bob, bob_keys) = device(2).await;
            alice.start_session(UserId(2), &bundle(&bob_keys)).await.expect("PQXDH");
            let out = alice.encrypt(UserId(2), DeviceId(1), b"hello bob").await.expect("encrypt");
            assert_eq!(out.kind, kind::PREKEY);
            let bytes = out.content.0.clone();

            let mut flipped = bytes.clone();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 0x40;
            let cases = [flipped, bytes[..bytes.len() / 2].to_vec(), Vec::new(), vec![0xff; 7], bytes[1..].to_vec()];
            for bad in cases {
                assert!(bob.decrypt(&envelope(1, &out, bad)).await.is_err());
            }
            let mut whisper_kind = envelope(1, &out, bytes.clone());
            whisper_kind.kind = kind::WHISPER;
            assert!(bob.decrypt(&whisper_kind).await.is_err(), "wrong kind");

            let ok = bob.decrypt(&envelope(1, &out, bytes.clone())).await.expect("genuine message");
            assert_eq!(ok, Decrypted::Message(b"hello bob".to_vec()));
            assert_eq!(
                bob.decrypt(&envelope(1, &out, bytes)).await.expect("replay"),
                Decrypted::Duplicate,
                "a replayed PreKey message is recognised"
            );

            // Out-of-order delivery on an established session.
            let reply = bob.encrypt(UserId(1), DeviceId(1), b"r0").await.expect("encrypt");
            alice.decrypt(&envelope(2, &reply, reply.content.0.clone())).await.expect("reply");
            let m1 = alice.encrypt(UserId(2), DeviceId(1), b"m1").await.expect("encrypt");
            let m2 = alice.encrypt(UserId(2), DeviceId(1), b"m2").await.expect("encrypt");
            assert_eq!(
                bob.decrypt(&envelope(1, &m2, m2.content.0.clone())).await.expect("m2"),
                Decrypted::Message(b"m2".to_vec())
            );
            assert_eq!(
                bob.decrypt(&envelope(1, &m1, m1.content.0.clone())).await.expect("m1"),
                Decrypted::Message(b"m1".to_vec())
            );
            assert_eq!(
                bob.decrypt(&envelope(1, &m1, m1.content.0.clone())).await.expect("m1 again"),
                Decrypted::Duplicate,
                "replayed"
            );
            let m3 = alice.encrypt(UserId(2), DeviceId(1), b"m3").await.expect("encrypt");
            assert_eq!(
                bob.decrypt(&envelope(1, &m3, m3.content.0.clone())).await.expect("m3"),
                Decrypted::Message(b"m3".to_vec()),
                "the session survives a replay"
            );
        });
    }

    #[test]
    fn a_prekey_message_that_swaps_the_identity_under_a_session_is_refused() {
        tokio::runtime::Builder::new_current_thread().build().expect("rt").block_on(async {
            let (mut alice, alice_keys) = device(1).await;
            let (mut bob, _) = device(2).await;
            bob.start_session(UserId(1), &bundle(&alice_keys)).await.expect("PQXDH");
            let hi = bob.encrypt(UserId(1), DeviceId(1), b"hi").await.expect("encrypt");
            assert_eq!(
                alice.decrypt(&envelope(2, &hi, hi.content.0.clone())).await.expect("decrypt"),
                Decrypted::Message(b"hi".to_vec())
            );
            let bob_identity = alice.identity_of(UserId(2), DeviceId(1)).await.expect("identity").expect("known");

            // The server builds a session to Alice under Bob's address with a key of its own. (The
            // engine never lets it this far: Bob's signed device list names his key. This is
            // the layer below it, on its own.)
            let (mut mallory, _) = device(3).await;
            let mut other = bundle(&alice_keys);
            other.pre_key = alice_keys.pre_keys.get(1).cloned();
            other.pq_pre_key = alice_keys.pq_pre_keys[1].clone();
            mallory.start_session(UserId(1), &other).await.expect("PQXDH");
            let first = mallory.encrypt(UserId(1), DeviceId(1), b"one").await.expect("encrypt");
            alice.decrypt(&envelope(2, &first, first.content.0.clone())).await.expect("decrypt");
            let swapped = alice.session_identity(UserId(2), DeviceId(1)).await.expect("session").expect("identity");
            assert_ne!(swapped, bob_identity);
            // A re-send pinned to Bob's identity does not go into that session.
            assert!(matches!(
                alice.encrypt_pinned(UserId(2), DeviceId(1), b"secret", &bob_identity).await,
                Err(CryptoError::IdentityMismatch)
            ));

            // Then a PreKey message on the same base key, whose outer layer names Bob's real
            // identity: libsignal decrypts it with the server's session but would record Bob's
            // key, making the record (and the safety number) say Bob while the session is the
            // server's. It is refused and that session dropped.
            let second = mallory.encrypt(UserId(1), DeviceId(1), b"two").await.expect("encrypt");
            assert_eq!(second.kind, kind::PREKEY);
            let pk = PreKeySignalMessage::try_from(second.content.as_slice()).expect("prekey message");
            let kyber = pk.kyber_pre_key_id().zip(pk.kyber_ciphertext()).map(|(id, ct)| KyberPayload::new(id, ct.clone()));
            let forged = PreKeySignalMessage::new(
                pk.message_version(),
                pk.registration_id(),
                pk.pre_key_id(),
                pk.signed_pre_key_id(),
                kyber,
                *pk.base_key(),
                IdentityKey::decode(&bob_identity).expect("identity"),
                pk.message().clone(),
            )
            .expect("forged");
            let result = alice.decrypt(&envelope(2, &second, forged.serialized().to_vec())).await;
            assert!(matches!(result, Err(CryptoError::IdentityMismatch)), "{result:?}");
            assert_eq!(alice.session_identity(UserId(2), DeviceId(1)).await.expect("session"), None, "session dropped");
        });
    }

    #[test]
    fn signed_prekeys_rotate_and_old_ones_serve_messages_in_flight_until_retired() {
        tokio::runtime::Builder::new_current_thread().build().expect("rt").block_on(async {
            let (mut bob, first) = device(2).await;
            let now = now_ms();
            assert!(bob.rotate_signed_prekeys_if_due(now).await.expect("check").is_none(), "fresh keys are not rotated");

            // Alice builds a session from Bob's first bundle (its last-resort Kyber key) but
            // her message arrives after Bob rotated.
            let (mut alice, _) = device(1).await;
            let mut old_bundle = bundle(&first);
            old_bundle.pq_pre_key = first.pq_last_resort_pre_key.clone().expect("last resort");
            alice.start_session(UserId(2), &old_bundle).await.expect("PQXDH");
            let in_flight = alice.encrypt(UserId(2), DeviceId(1), b"sent before the rotation").await.expect("encrypt");

            let later = now + SIGNED_PREKEY_MAX_AGE_MS + 1;
            let rotated = bob.rotate_signed_prekeys_if_due(later).await.expect("rotate").expect("due");
            let new_signed = rotated.signed_pre_key.clone().expect("new signed prekey");
            let new_kyber = rotated.pq_last_resort_pre_key.clone().expect("new last resort");
            assert_ne!(new_signed.key_id, first.signed_pre_key.as_ref().expect("signed").key_id);
            assert!(rotated.identity_key.is_none() && rotated.pre_keys.is_empty(), "only the signed prekeys change");
            assert!(bob.rotate_signed_prekeys_if_due(later + 1000).await.expect("check").is_none(), "not twice");
            let (mut erin, erin_keys) = device(5).await;
            erin.rotation_not_published().await.expect("mark");
            let again =
                erin.rotate_signed_prekeys_if_due(now_ms()).await.expect("check").expect("rotated again after a failed upload");
            assert_ne!(again.signed_pre_key.map(|k| k.key_id), erin_keys.signed_pre_key.map(|k| k.key_id));

            let got = bob.decrypt(&envelope(1, &in_flight, in_flight.content.0.clone())).await.expect("old keys still serve");
            assert_eq!(got, Decrypted::Message(b"sent before the rotation".to_vec()));

            // A contact starting now gets the new keys, and they work.
            let (mut carol, _) = device(3).await;
            let mut new_bundle = bundle(&first);
            new_bundle.pre_key = None;
            new_bundle.signed_pre_key = new_signed;
            new_bundle.pq_pre_key = new_kyber;
            carol.start_session(UserId(2), &new_bundle).await.expect("PQXDH with rotated keys");
            let m = carol.encrypt(UserId(2), DeviceId(1), b"hi").await.expect("encrypt");
            assert_eq!(
                bob.decrypt(&envelope(3, &m, m.content.0.clone())).await.expect("decrypt"),
                Decrypted::Message(b"hi".to_vec())
            );

            // Once retired, the old keys are gone: a message built from the old bundle fails.
            bob.rotate_signed_prekeys_if_due(later + RETIRED_PREKEY_KEPT_MS).await.expect("retire");
            let (mut dave, _) = device(4).await;
            let mut stale = bundle(&first);
            stale.pre_key = None;
            stale.pq_pre_key = first.pq_last_resort_pre_key.clone().expect("last resort");
            dave.start_session(UserId(2), &stale).await.expect("PQXDH");
            let m = dave.encrypt(UserId(2), DeviceId(1), b"too late").await.expect("encrypt");
            assert!(bob.decrypt(&envelope(4, &m, m.content.0.clone())).await.is_err(), "retired keys no longer decrypt");
        });
    }
}
