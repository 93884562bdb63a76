//! libsignal's store traits over the [`Vault`].

use std::rc::Rc;

use async_trait::async_trait;
use libsignal_protocol::{
    Direction, GenericSignedPreKey, IdentityChange, IdentityKey, IdentityKeyPair, IdentityKeyStore, KyberPreKeyId,
    KyberPreKeyRecord, KyberPreKeyStore, PreKeyId, PreKeyRecord, PreKeyStore, ProtocolAddress, PublicKey, SenderKeyRecord,
    SenderKeyStore, SessionRecord, SessionStore, SignalProtocolError, SignedPreKeyId, SignedPreKeyRecord, SignedPreKeyStore,
};
use uuid::Uuid;

use super::vault::{Vault, VaultError};

type SignalResult<T> = Result<T, SignalProtocolError>;

fn storage(e: VaultError) -> SignalProtocolError {
    SignalProtocolError::InvalidState("vault", e.to_string())
}

/// Record namespaces.
pub(crate) mod ns {
    pub const OWN: &str = "own";
    pub const PREKEY: &str = "prekey";
    pub const SIGNED: &str = "signed";
    pub const KYBER: &str = "kyber";
    pub const LAST_RESORT: &str = "last_resort";
    pub const SESSION: &str = "session";
    pub const IDENTITY: &str = "identity";
    /// Sender keys (channels): this device's own, and those other devices distributed to it.
    pub const SENDER_KEY: &str = "sender_key";
}

/// A device's Signal protocol state, sealed in a vault: one sub-store per libsignal store
/// trait (libsignal takes each as its own `&mut`), all sharing the vault.
pub struct DeviceStore {
    /// The vault.
    pub vault: Rc<Vault>,
    /// Own identity and contacts' identities.
    pub identity: Identities,
    /// One-time EC prekeys.
    pub prekeys: PreKeys,
    /// Signed EC prekeys.
    pub signed: SignedPreKeys,
    /// Kyber prekeys.
    pub kyber: KyberPreKeys,
    /// Sessions.
    pub sessions: Sessions,
    /// Sender keys (channel messages).
    pub sender_keys: SenderKeys,
}

impl std::fmt::Debug for DeviceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceStore").field("registration_id", &self.identity.registration_id).finish_non_exhaustive()
    }
}

impl DeviceStore {
    /// Loads the device's identity from the vault, or creates one when the vault is new.
    /// Returns the store and whether it was created.
    pub async fn open(vault: Vault, registration_id_if_new: u32) -> Result<(Self, bool), VaultError> {
        let vault = Rc::new(vault);
        let (pair, registration_id, created) =
            match (vault.get(ns::OWN, b"identity").await?, vault.get(ns::OWN, b"registration_id").await?) {
                (Some(identity), Some(reg)) => {
                    let pair = IdentityKeyPair::try_from(identity.as_slice()).map_err(|_| VaultError::Corrupt)?;
                    let reg = u32::from_be_bytes(reg.as_slice().try_into().map_err(|_| VaultError::Corrupt)?);
                    (pair, reg, false)
                }
                _ => {
                    let pair = IdentityKeyPair::generate(&mut rand::rng());
                    vault.put(ns::OWN, b"identity", &pair.serialize()).await?;
                    vault.put(ns::OWN, b"registration_id", &registration_id_if_new.to_be_bytes()).await?;
                    (pair, registration_id_if_new, true)
                }
            };
        let store = Self {
            identity: Identities { vault: vault.clone(), pair, registration_id },
            prekeys: PreKeys(vault.clone()),
            signed: SignedPreKeys(vault.clone()),
            kyber: KyberPreKeys(vault.clone()),
            sessions: Sessions(vault.clone()),
            sender_keys: SenderKeys(vault.clone()),
            vault,
        };
        Ok((store, created))
    }

    /// Reads a counter kept in the vault (next prekey ids).
    pub async fn counter(&self, name: &str) -> Result<u32, VaultError> {
        Ok(match self.vault.get(ns::OWN, name.as_bytes()).await? {
            Some(v) => u32::from_be_bytes(v.as_slice().try_into().map_err(|_| VaultError::Corrupt)?),
            None => 1,
        })
    }

    /// Writes a counter.
    pub async fn set_counter(&self, name: &str, value: u32) -> Result<(), VaultError> {
        self.vault.put(ns::OWN, name.as_bytes(), &value.to_be_bytes()).await
    }
}

/// How far the user trusts a contact's account key (Signal's three states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// Trusted on first use, never compared.
    #[default]
    Default,
    /// The user compared safety numbers and marked it verified.
    Verified,
    /// It was verified, and the account key changed since: nothing is sent to that contact
    /// until the user accepts the new key (back to `Default`) or verifies it again.
    Unverified,
}

/// Own identity, and the identities of contacts' devices.
pub struct Identities {
    vault: Rc<Vault>,
    pair: IdentityKeyPair,
    registration_id: u32,
}

impl Identities {
    /// This device's identity key pair.
    pub fn pair(&self) -> &IdentityKeyPair {
        &self.pair
    }

    /// This device's registration id.
    pub fn registration_id(&self) -> u32 {
        self.registration_id
    }
}

/// One-time EC prekeys.
pub struct PreKeys(Rc<Vault>);
/// Signed EC prekeys.
pub struct SignedPreKeys(Rc<Vault>);
/// Kyber prekeys (one-time and last resort).
pub struct KyberPreKeys(Rc<Vault>);
/// Sessions with contacts' devices.
pub struct Sessions(Rc<Vault>);
/// Sender keys by (sender's address, distribution id): the chain this device encrypts channel
/// messages with, and the chains other devices handed it. libsignal consumes a message key once
/// it decrypted with it, so each record only moves forward.
pub struct SenderKeys(Rc<Vault>);

fn sender_key_slot(sender: &ProtocolAddress, distribution: Uuid) -> String {
    format!("{sender}/{distribution}")
}

#[async_trait(?Send)]
impl SenderKeyStore for SenderKeys {
    async fn store_sender_key(
        &mut self,
        sender: &ProtocolAddress,
        distribution: Uuid,
        record: &SenderKeyRecord,
    ) -> SignalResult<()> {
        let key = sender_key_slot(sender, distribution);
        self.0.put(ns::SENDER_KEY, key.as_bytes(), &record.serialize()?).await.map_err(storage)
    }

    async fn load_sender_key(&mut self, sender: &ProtocolAddress, distribution: Uuid) -> SignalResult<Option<SenderKeyRecord>> {
        match self.0.get(ns::SENDER_KEY, sender_key_slot(sender, distribution).as_bytes()).await.map_err(storage)? {
            Some(raw) => Ok(Some(SenderKeyRecord::deserialize(&raw)?)),
            None => Ok(None),
        }
    }
}

impl Sessions {
    /// Forgets the session with `address` (it will be rebuilt from a fresh bundle).
    pub async fn delete(&self, address: &ProtocolAddress) -> Result<(), VaultError> {
        self.0.delete(ns::SESSION, address.to_string().as_bytes()).await
    }

    /// Overwrites the session with `address` with garbage (tests of the repair path).
    #[cfg(feature = "testing")]
    pub async fn corrupt(&self, address: &ProtocolAddress) -> Result<(), VaultError> {
        self.0.put(ns::SESSION, address.to_string().as_bytes(), b"\x00garbage").await
    }
}

#[async_trait(?Send)]
impl IdentityKeyStore for Identities {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        Ok(self.pair)
    }

    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        Ok(self.registration_id)
    }

    async fn save_identity(&mut self, address: &ProtocolAddress, identity: &IdentityKey) -> SignalResult<IdentityChange> {
        let key = address.to_string();
        let previous = self.vault.get(ns::IDENTITY, key.as_bytes()).await.map_err(storage)?;
        let serialized = identity.serialize();
        if previous.as_deref() == Some(&serialized[..]) {
            return Ok(IdentityChange::NewOrUnchanged);
        }
        self.vault.put(ns::IDENTITY, key.as_bytes(), &serialized).await.map_err(storage)?;
        Ok(if previous.is_some() { IdentityChange::ReplacedExisting } else { IdentityChange::NewOrUnchanged })
    }

    async fn is_trusted_identity(
        &self,
        _address: &ProtocolAddress,
        _identity: &IdentityKey,
        _direction: Direction,
    ) -> SignalResult<bool> {
        // A device's identity key is trusted because the contact's account key vouches for it:
        // the engine starts a session only from a bundle whose key is the one the contact's
        // signed device list names, and decrypts only from listed devices with their listed
        // key (see `Engine`). Trust decisions (verified, changed) are about the account key.
        Ok(true)
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        match self.vault.get(ns::IDENTITY, address.to_string().as_bytes()).await.map_err(storage)? {
            Some(raw) => Ok(Some(IdentityKey::decode(&raw)?)),
            None => Ok(None),
        }
    }
}

#[async_trait(?Send)]
impl PreKeyStore for PreKeys {
    async fn get_pre_key(&self, id: PreKeyId) -> SignalResult<PreKeyRecord> {
        let raw = self.0.get(ns::PREKEY, &u32::from(id).to_be_bytes()).await.map_err(storage)?;
        PreKeyRecord::deserialize(&raw.ok_or(SignalProtocolError::InvalidPreKeyId)?)
    }
    async fn save_pre_key(&mut self, id: PreKeyId, record: &PreKeyRecord) -> SignalResult<()> {
        self.0.put(ns::PREKEY, &u32::from(id).to_be_bytes(), &record.serialize()?).await.map_err(storage)
    }
    async fn remove_pre_key(&mut self, id: PreKeyId) -> SignalResult<()> {
        self.0.delete(ns::PREKEY, &u32::from(id).to_be_bytes()).await.map_err(storage)
    }
}

#[async_trait(?Send)]
impl SignedPreKeyStore for SignedPreKeys {
    async fn get_signed_pre_key(&self, id: SignedPreKeyId) -> SignalResult<SignedPreKeyRecord> {
        let raw = self.0.get(ns::SIGNED, &u32::from(id).to_be_bytes()).await.map_err(storage)?;
        SignedPreKeyRecord::deserialize(&raw.ok_or(SignalProtocolError::InvalidSignedPreKeyId)?)
    }
    async fn save_signed_pre_key(&mut self, id: SignedPreKeyId, record: &SignedPreKeyRecord) -> SignalResult<()> {
        self.0.put(ns::SIGNED, &u32::from(id).to_be_bytes(), &record.serialize()?).await.map_err(storage)
    }
}

#[async_trait(?Send)]
impl KyberPreKeyStore for KyberPreKeys {
    async fn get_kyber_pre_key(&self, id: KyberPreKeyId) -> SignalResult<KyberPreKeyRecord> {
        let raw = self.0.get(ns::KYBER, &u32::from(id).to_be_bytes()).await.map_err(storage)?;
        KyberPreKeyRecord::deserialize(&raw.ok_or(SignalProtocolError::InvalidKyberPreKeyId)?)
    }
    async fn save_kyber_pre_key(&mut self, id: KyberPreKeyId, record: &KyberPreKeyRecord) -> SignalResult<()> {
        self.0.put(ns::KYBER, &u32::from(id).to_be_bytes(), &record.serialize()?).await.map_err(storage)
    }
    async fn mark_kyber_pre_key_used(&mut self, id: KyberPreKeyId, _ec: SignedPreKeyId, _base: &PublicKey) -> SignalResult<()> {
        // One-time Kyber keys are deleted once used; last-resort keys (the current one, and
        // replaced ones until they are retired) stay.
        let raw_id = u32::from(id).to_be_bytes();
        let current = self.0.get(ns::OWN, b"kyber_last_resort").await.map_err(storage)?;
        let last_resort =
            current.as_deref() == Some(&raw_id[..]) || self.0.get(ns::LAST_RESORT, &raw_id).await.map_err(storage)?.is_some();
        if !last_resort {
            self.0.delete(ns::KYBER, &u32::from(id).to_be_bytes()).await.map_err(storage)?;
        }
        Ok(())
    }
}

#[async_trait(?Send)]
impl SessionStore for Sessions {
    async fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        match self.0.get(ns::SESSION, address.to_string().as_bytes()).await.map_err(storage)? {
            Some(raw) => Ok(Some(SessionRecord::deserialize(&raw)?)),
            None => Ok(None),
        }
    }
    async fn store_session(&mut self, address: &ProtocolAddress, record: &SessionRecord) -> SignalResult<()> {
        self.0.put(ns::SESSION, address.to_string().as_bytes(), &record.serialize()?).await.map_err(storage)
    }
}
