//! The client's encrypted key-value store ("vault").
//!
//! Everything the client keeps — identity keys, sessions, prekeys, contacts' identities,
//! message history — goes through here. Values are sealed with XChaCha20-Poly1305 under a key
//! derived from the user's passphrase with argon2id; record names are replaced by an
//! HMAC-SHA256 of them, so the file shows neither key material, nor message text, nor whom
//! the user talks to. Each value is bound to its slot (the HMAC is the AEAD's associated
//! data), so records cannot be swapped. Where the bytes live is a [`VaultBackend`]: SQLite on
//! native targets, IndexedDB later in the browser.

use std::cell::RefCell;
use std::collections::HashMap;

use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Errors of the vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The passphrase does not open this vault.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// A record failed authentication (tampered or corrupted file).
    #[error("vault record failed authentication")]
    Corrupt,
    /// The backend failed.
    #[error("vault storage: {0}")]
    Backend(String),
}

/// Where sealed records are kept. Keys and values are opaque bytes.
#[async_trait(?Send)]
pub trait VaultBackend {
    /// Reads a record.
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError>;
    /// Writes a record.
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), VaultError>;
    /// Deletes a record.
    async fn delete(&self, key: &[u8]) -> Result<(), VaultError>;
    /// Writes several records, all or none when the backend can (the default writes them
    /// one by one).
    async fn put_many(&self, records: &[(Vec<u8>, Vec<u8>)]) -> Result<(), VaultError> {
        for (k, v) in records {
            self.put(k, v).await?;
        }
        Ok(())
    }
    /// Writes and deletes records (no key in both lists), all or none when the backend can.
    async fn write_batch(&self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) -> Result<(), VaultError> {
        self.put_many(puts).await?;
        for k in deletes {
            self.delete(k).await?;
        }
        Ok(())
    }
}

/// A backend in memory (tests, and clients that keep nothing).
#[derive(Debug, Default)]
pub struct MemoryBackend(pub(crate) RefCell<HashMap<Vec<u8>, Vec<u8>>>);

#[async_trait(?Send)]
impl VaultBackend for MemoryBackend {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        Ok(self.0.borrow().get(key).cloned())
    }
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), VaultError> {
        self.0.borrow_mut().insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    async fn delete(&self, key: &[u8]) -> Result<(), VaultError> {
        self.0.borrow_mut().remove(key);
        Ok(())
    }
}

/// Plain (unsealed) slot for the KDF salt: it must be readable before the key exists.
const SALT_SLOT: &[u8] = b"vault/salt";
/// Plain slot for the vault key, sealed under the key derived from the passphrase: changing
/// the passphrase re-seals this one record.
const KEY_SLOT: &[u8] = b"vault/key";
const CHECK_NS: &str = "vault";
const CHECK_VALUE: &[u8] = b"lescopains vault v2";

/// Namespaces that belong to one device of the account (its keys, sessions, sent log). The
/// rest (history, contacts' identities and verification marks) outlives a device: a browser
/// that signs in again as a new device keeps the conversations it had.
const DEVICE_NAMESPACES: &[&str] = &[
    "own",
    "prekey",
    "signed",
    "kyber",
    "last_resort",
    "session",
    "sent",
    "repair",
    // Channels: sender keys, this device's outgoing key per channel, which channel each
    // received key belongs to, and messages waiting for their key.
    "sender_key",
    "channel_out",
    "channel_key",
    "channel_pending",
];

/// Records kept opened in memory per generation of the read cache (see [`ReadCache`]).
const CACHE_MAX: usize = 8192;

/// Opened records (and known absences) by slot, in two generations: when the newer one is
/// full it becomes the older one, and what is read from the older one moves back into the
/// newer. What is used often stays (an approximate LRU at the cost of two maps), where
/// emptying the whole cache when full would throw the session and identity records away in
/// the middle of a history page's worth of search-index records.
#[derive(Default)]
struct ReadCache {
    new: HashMap<Vec<u8>, Option<Vec<u8>>>,
    old: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl ReadCache {
    fn get(&mut self, slot: &[u8]) -> Option<Option<Vec<u8>>> {
        if let Some(hit) = self.new.get(slot) {
            return Some(hit.clone());
        }
        let (slot, hit) = self.old.remove_entry(slot)?;
        self.insert(slot, hit.clone());
        Some(hit)
    }

    fn insert(&mut self, slot: Vec<u8>, value: Option<Vec<u8>>) {
        if self.new.len() >= CACHE_MAX && !self.new.contains_key(&slot) {
            self.old = std::mem::take(&mut self.new);
        }
        self.old.remove(&slot);
        self.new.insert(slot, value);
    }

    fn remove(&mut self, slot: &[u8]) {
        self.new.remove(slot);
        self.old.remove(slot);
    }

    fn clear(&mut self) {
        self.new.clear();
        self.old.clear();
    }
}

/// An opened vault.
pub struct Vault {
    backend: Box<dyn VaultBackend>,
    cipher: XChaCha20Poly1305,
    names: [u8; 32],
    /// The device whose records the device namespaces hold ([`Vault::scope_to_device`]).
    device: std::cell::Cell<Option<u64>>,
    /// Opened records (and known absences) by slot. The vault has one owner, so the cache
    /// stays true; it spares a read and an AEAD open for every session and identity lookup
    /// that libsignal makes per message. Writes go through to the backend at once.
    cache: RefCell<ReadCache>,
    /// While a batch is open ([`Vault::begin_batch`]): the writes not yet in the backend, by
    /// slot (the opened value and the sealed one; `None` for a delete).
    pending: RefCell<Option<PendingWrites>>,
}

/// Writes of an open batch, by slot: (opened value, sealed value), or `None` for a delete.
type PendingWrites = HashMap<Vec<u8>, Option<(Vec<u8>, Vec<u8>)>>;

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault")
    }
}

/// The key that seals the vault key, from the passphrase (argon2id, OWASP's parameters:
/// 19 MiB, 2 passes).
fn key_encryption_key(passphrase: &str, salt: &[u8]) -> Result<XChaCha20Poly1305, VaultError> {
    let params = Params::new(19 * 1024, 2, 1, Some(32)).map_err(|e| VaultError::Backend(e.to_string()))?;
    let mut kek = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, &mut kek)
        .map_err(|e| VaultError::Backend(e.to_string()))?;
    let cipher = XChaCha20Poly1305::new_from_slice(&kek).map_err(|_| VaultError::Corrupt);
    kek.fill(0);
    cipher
}

fn seal_with(cipher: &XChaCha20Poly1305, aad: &[u8], value: &[u8]) -> Result<Vec<u8>, VaultError> {
    let mut nonce = [0u8; 24];
    rand::rng().fill_bytes(&mut nonce);
    let ct = cipher.encrypt(XNonce::from_slice(&nonce), Payload { msg: value, aad }).map_err(|_| VaultError::Corrupt)?;
    let mut sealed = Vec::with_capacity(24 + ct.len());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ct);
    Ok(sealed)
}

fn open_with(cipher: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    if sealed.len() < 24 {
        return Err(VaultError::Corrupt);
    }
    let (nonce, ct) = sealed.split_at(24);
    cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad }).map_err(|_| VaultError::Corrupt)
}

impl Vault {
    /// Opens (or initialises, when empty) the vault in `backend` with `passphrase`.
    pub async fn open(backend: Box<dyn VaultBackend>, passphrase: &str) -> Result<Self, VaultError> {
        let (salt, wrapped) = (backend.get(SALT_SLOT).await?, backend.get(KEY_SLOT).await?);
        let (master, new) = match (salt, wrapped) {
            (Some(salt), Some(wrapped)) => {
                let kek = key_encryption_key(passphrase, &salt)?;
                // Another passphrase derives another key: the vault key does not open.
                let master = open_with(&kek, KEY_SLOT, &wrapped).map_err(|_| VaultError::WrongPassphrase)?;
                (master, false)
            }
            (None, None) => {
                let mut salt = vec![0u8; 16];
                rand::rng().fill_bytes(&mut salt);
                let mut master = vec![0u8; 64];
                rand::rng().fill_bytes(&mut master);
                let wrapped = seal_with(&key_encryption_key(passphrase, &salt)?, KEY_SLOT, &master)?;
                backend.write_batch(&[(SALT_SLOT.to_vec(), salt), (KEY_SLOT.to_vec(), wrapped)], &[]).await?;
                (master, true)
            }
            _ => return Err(VaultError::Corrupt),
        };
        if master.len() != 64 {
            return Err(VaultError::Corrupt);
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&master[..32]).map_err(|_| VaultError::Corrupt)?;
        let mut names = [0u8; 32];
        names.copy_from_slice(&master[32..]);
        let vault = Self {
            backend,
            cipher,
            names,
            device: std::cell::Cell::new(None),
            cache: RefCell::new(ReadCache::default()),
            pending: RefCell::new(None),
        };
        match vault.get(CHECK_NS, b"check").await? {
            Some(v) if v == CHECK_VALUE => {}
            None if new => vault.put(CHECK_NS, b"check", CHECK_VALUE).await?,
            _ => return Err(VaultError::Corrupt),
        }
        Ok(vault)
    }

    /// Seals the vault key under `new_passphrase` (after checking `old_passphrase`). One
    /// record changes; the rest of the vault stays as it is.
    pub async fn change_passphrase(&self, old_passphrase: &str, new_passphrase: &str) -> Result<(), VaultError> {
        let (Some(salt), Some(wrapped)) = (self.backend.get(SALT_SLOT).await?, self.backend.get(KEY_SLOT).await?) else {
            return Err(VaultError::Corrupt);
        };
        let master = open_with(&key_encryption_key(old_passphrase, &salt)?, KEY_SLOT, &wrapped)
            .map_err(|_| VaultError::WrongPassphrase)?;
        let mut new_salt = vec![0u8; 16];
        rand::rng().fill_bytes(&mut new_salt);
        let rewrapped = seal_with(&key_encryption_key(new_passphrase, &new_salt)?, KEY_SLOT, &master)?;
        self.backend.write_batch(&[(SALT_SLOT.to_vec(), new_salt), (KEY_SLOT.to_vec(), rewrapped)], &[]).await
    }

    /// Makes the device namespaces (keys, sessions, sent log) those of `device`, an id unique
    /// to one device's life (its login session id: a device id can be given again after
    /// removal). A vault that served an earlier device of this account on this machine starts
    /// that state afresh and keeps the history and the contacts' identities.
    pub fn scope_to_device(&self, device: u64) {
        self.device.set(Some(device));
        self.cache.borrow_mut().clear();
    }

    fn slot(&self, ns: &str, key: &[u8]) -> Vec<u8> {
        // A keyed hash of the name: the file does not show which records exist.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.names).expect("HMAC takes any key length");
        mac.update(ns.as_bytes());
        if let Some(device) = self.device.get().filter(|_| DEVICE_NAMESPACES.contains(&ns)) {
            mac.update(b"@");
            mac.update(&device.to_be_bytes());
        }
        mac.update(&[0]);
        mac.update(key);
        mac.finalize().into_bytes().to_vec()
    }

    /// Reads and opens a record.
    pub async fn get(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        let slot = self.slot(ns, key);
        if let Some(pending) = self.pending.borrow().as_ref().and_then(|p| p.get(&slot)) {
            return Ok(pending.as_ref().map(|(value, _)| value.clone()));
        }
        if let Some(hit) = self.cache.borrow_mut().get(&slot) {
            return Ok(hit);
        }
        let value = match self.backend.get(&slot).await? {
            None => None,
            Some(sealed) => Some(open_with(&self.cipher, &slot, &sealed)?),
        };
        self.remember(slot, value.clone());
        Ok(value)
    }

    fn remember(&self, slot: Vec<u8>, value: Option<Vec<u8>>) {
        self.cache.borrow_mut().insert(slot, value);
    }

    fn seal(&self, slot: &[u8], value: &[u8]) -> Result<Vec<u8>, VaultError> {
        seal_with(&self.cipher, slot, value)
    }

    /// Seals and writes a record.
    pub async fn put(&self, ns: &str, key: &[u8], value: &[u8]) -> Result<(), VaultError> {
        self.put_many(ns, &[(key, value)]).await
    }

    /// Seals and writes several records of one namespace together (atomically on SQLite).
    pub async fn put_many(&self, ns: &str, records: &[(&[u8], &[u8])]) -> Result<(), VaultError> {
        if let Some(pending) = self.pending.borrow_mut().as_mut() {
            for (key, value) in records {
                let slot = self.slot(ns, key);
                let s = self.seal(&slot, value)?;
                pending.insert(slot, Some((value.to_vec(), s)));
            }
            return Ok(());
        }
        let mut sealed = Vec::with_capacity(records.len());
        for (key, value) in records {
            let slot = self.slot(ns, key);
            let s = self.seal(&slot, value)?;
            // Forget first: if the write fails, the next read goes to the backend.
            self.cache.borrow_mut().remove(&slot);
            sealed.push((slot, s));
        }
        self.backend.put_many(&sealed).await?;
        for ((slot, _), (_, value)) in sealed.into_iter().zip(records) {
            self.remember(slot, Some(value.to_vec()));
        }
        Ok(())
    }

    /// Opens a batch: until [`Vault::commit_batch`], writes and deletes are kept in memory
    /// (reads see them) and then reach the backend together, all or none. Processing one
    /// received message (the ratchet step, its history entry) is one batch: a crash before the
    /// commit leaves the message undecrypted and still queued, not decrypted and lost.
    pub fn begin_batch(&self) {
        let mut pending = self.pending.borrow_mut();
        if pending.is_none() {
            *pending = Some(HashMap::new());
        }
    }

    /// Writes what the open batch holds and keeps the batch open (before anything leaves the
    /// device that depends on it, such as an envelope encrypted with a new ratchet step).
    pub async fn flush_batch(&self) -> Result<(), VaultError> {
        let Some(writes) = self.pending.borrow_mut().as_mut().map(std::mem::take) else { return Ok(()) };
        if writes.is_empty() {
            return Ok(());
        }
        let (mut puts, mut deletes) = (Vec::new(), Vec::new());
        for (slot, write) in &writes {
            match write {
                Some((_, sealed)) => puts.push((slot.clone(), sealed.clone())),
                None => deletes.push(slot.clone()),
            }
        }
        if let Err(e) = self.backend.write_batch(&puts, &deletes).await {
            // Nothing of it was written: forget it, and what the cache may say of it.
            self.cache.borrow_mut().clear();
            return Err(e);
        }
        for (slot, write) in writes {
            self.remember(slot, write.map(|(value, _)| value));
        }
        Ok(())
    }

    /// Writes what the batch holds and closes it.
    pub async fn commit_batch(&self) -> Result<(), VaultError> {
        let result = self.flush_batch().await;
        *self.pending.borrow_mut() = None;
        result
    }

    /// Drops what the open batch holds, unwritten, and closes it.
    pub fn abort_batch(&self) {
        *self.pending.borrow_mut() = None;
    }

    /// Deletes a record.
    pub async fn delete(&self, ns: &str, key: &[u8]) -> Result<(), VaultError> {
        let slot = self.slot(ns, key);
        if let Some(pending) = self.pending.borrow_mut().as_mut() {
            pending.insert(slot, None);
            return Ok(());
        }
        self.cache.borrow_mut().remove(&slot);
        self.backend.delete(&slot).await?;
        self.remember(slot, None);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A backend that shares its map so a test can reopen the "file" and look inside.
    #[derive(Clone, Default)]
    pub(crate) struct Shared(pub(crate) std::rc::Rc<MemoryBackend>);

    #[async_trait(?Send)]
    impl VaultBackend for Shared {
        async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
            self.0.get(key).await
        }
        async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), VaultError> {
            self.0.put(key, value).await
        }
        async fn delete(&self, key: &[u8]) -> Result<(), VaultError> {
            self.0.delete(key).await
        }
    }

    pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn sealed_at_rest_and_bound_to_the_passphrase() {
        block_on(async {
            let shared = Shared::default();
            let vault = Vault::open(Box::new(shared.clone()), "correct horse").await.expect("open");
            vault.put("session", b"alice.1", b"TOP SECRET session state").await.expect("put");
            assert_eq!(vault.get("session", b"alice.1").await.expect("get").as_deref(), Some(&b"TOP SECRET session state"[..]));
            assert_eq!(vault.get("session", b"bob.1").await.expect("get"), None);

            // Nothing readable in the raw records: neither names nor values.
            for (k, v) in shared.0 .0.borrow().iter() {
                for needle in [&b"TOP SECRET"[..], b"alice", b"session"] {
                    assert!(!k.windows(needle.len()).any(|w| w == needle));
                    assert!(!v.windows(needle.len()).any(|w| w == needle));
                }
            }

            let err = Vault::open(Box::new(shared.clone()), "wrong horse").await.expect_err("wrong passphrase");
            assert!(matches!(err, VaultError::WrongPassphrase));
            let reopened = Vault::open(Box::new(shared.clone()), "correct horse").await.expect("reopen");
            assert!(reopened.get("session", b"alice.1").await.expect("get").is_some());

            // Tampering is detected.
            {
                let mut map = shared.0 .0.borrow_mut();
                let slot = reopened.slot("session", b"alice.1");
                let v = map.get_mut(&slot).expect("record");
                let last = v.len() - 1;
                v[last] ^= 1;
            }
            let fresh = Vault::open(Box::new(shared.clone()), "correct horse").await.expect("reopen");
            assert!(matches!(fresh.get("session", b"alice.1").await, Err(VaultError::Corrupt)));
        });
    }

    #[test]
    fn a_batch_is_read_back_at_once_and_written_all_together() {
        block_on(async {
            let shared = Shared::default();
            let vault = Vault::open(Box::new(shared.clone()), "pw").await.expect("open");
            vault.put("session", b"bob.1", b"before").await.expect("put");
            vault.put("prekey", b"7", b"one-time").await.expect("put");
            let on_disk = |shared: &Shared| shared.0 .0.borrow().len();
            let before = on_disk(&shared);

            vault.begin_batch();
            vault.put("session", b"bob.1", b"after").await.expect("put");
            vault.put("history", b"m1", b"hello").await.expect("put");
            vault.delete("prekey", b"7").await.expect("delete");
            // Reads see the batch; the backend does not yet.
            assert_eq!(vault.get("session", b"bob.1").await.expect("get").as_deref(), Some(&b"after"[..]));
            assert_eq!(vault.get("prekey", b"7").await.expect("get"), None);
            assert_eq!(on_disk(&shared), before);
            let fresh = Vault::open(Box::new(shared.clone()), "pw").await.expect("reopen");
            assert_eq!(fresh.get("session", b"bob.1").await.expect("get").as_deref(), Some(&b"before"[..]), "not written yet");

            vault.commit_batch().await.expect("commit");
            let fresh = Vault::open(Box::new(shared.clone()), "pw").await.expect("reopen");
            assert_eq!(fresh.get("session", b"bob.1").await.expect("get").as_deref(), Some(&b"after"[..]));
            assert_eq!(fresh.get("history", b"m1").await.expect("get").as_deref(), Some(&b"hello"[..]));
            assert_eq!(fresh.get("prekey", b"7").await.expect("get"), None);
            // Closed: writes go straight through again.
            vault.put("session", b"bob.1", b"later").await.expect("put");
            let fresh = Vault::open(Box::new(shared.clone()), "pw").await.expect("reopen");
            assert_eq!(fresh.get("session", b"bob.1").await.expect("get").as_deref(), Some(&b"later"[..]));
        });
    }

    #[test]
    fn a_new_passphrase_reseals_the_key_and_keeps_every_record() {
        block_on(async {
            let shared = Shared::default();
            let vault = Vault::open(Box::new(shared.clone()), "old pass").await.expect("open");
            vault.put("history", b"m1", b"hello").await.expect("put");
            let err = vault.change_passphrase("not it", "new pass").await.expect_err("old passphrase checked");
            assert!(matches!(err, VaultError::WrongPassphrase));
            vault.change_passphrase("old pass", "new pass").await.expect("change");
            assert!(matches!(Vault::open(Box::new(shared.clone()), "old pass").await, Err(VaultError::WrongPassphrase)));
            let reopened = Vault::open(Box::new(shared.clone()), "new pass").await.expect("new passphrase opens");
            assert_eq!(reopened.get("history", b"m1").await.expect("get").as_deref(), Some(&b"hello"[..]));
        });
    }

    #[test]
    fn device_state_is_scoped_and_history_is_shared() {
        block_on(async {
            let shared = Shared::default();
            let vault = Vault::open(Box::new(shared.clone()), "pw").await.expect("open");
            vault.scope_to_device(1);
            vault.put("session", b"bob.1", b"device one's session").await.expect("put");
            vault.put("history", b"m1", b"hello").await.expect("put");
            let next = Vault::open(Box::new(shared.clone()), "pw").await.expect("reopen");
            next.scope_to_device(2);
            assert_eq!(next.get("session", b"bob.1").await.expect("get"), None, "a new device starts its sessions afresh");
            assert_eq!(next.get("history", b"m1").await.expect("get").as_deref(), Some(&b"hello"[..]));
            next.scope_to_device(1);
            assert!(next.get("session", b"bob.1").await.expect("get").is_some());
        });
    }
}
