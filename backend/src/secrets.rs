//! The server's own secrets for data it keeps about clients, from the key file: a key for
//! keyed hashes of client addresses (so bans and security events can match an address without
//! the database holding it), and versioned data keys that seal what must be kept readable for
//! a while (a session's last IP address, until the retention setting ends it) with
//! ChaCha20-Poly1305 (ring's AEAD).
//!
//! A sealed value reads `k<id>.<base64 of nonce ‖ ciphertext>`, `<id>` naming the data key; the
//! newest key seals, every key in the file opens. `copains admin rotate-key` adds a key and
//! seals every stored value again under it; a running server reads the key file again when it
//! meets a key it does not know.

use std::net::IpAddr;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use parking_lot::RwLock;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// What a session's sealed address is sealed for (its associated data): that session's
/// address, so a value moved to another row of the database does not open there.
pub fn session_ip(session: copains_client_core::SessionId) -> String {
    format!("session ip {session}")
}

/// One data key.
#[derive(Clone)]
pub struct DataKey {
    /// Its number (in sealed values).
    pub id: u32,
    /// Its 32 bytes.
    pub key: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Reads the data keys anew (from the key file), for a sealed value under a key not loaded.
pub type Reload = Box<dyn Fn() -> Option<Vec<DataKey>> + Send + Sync>;

/// The secrets. Cheap to share behind the state's `Arc`.
pub struct Secrets {
    fingerprint: hmac::Key,
    /// Newest first: the first seals.
    data: RwLock<Vec<(u32, LessSafeKey)>>,
    reload: Option<Reload>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").finish_non_exhaustive()
    }
}

/// Why a sealed value did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// Not `k<id>.<base64>`, or too short.
    #[error("not a sealed value")]
    Malformed,
    /// Sealed under a key the key file does not hold (any more).
    #[error("sealed under key {0}, which the key file does not hold")]
    UnknownKey(u32),
    /// The key is there but the value does not open under it (altered, or another purpose).
    #[error("the sealed value does not open")]
    Forged,
}

fn keys(data: &[DataKey]) -> Vec<(u32, LessSafeKey)> {
    data.iter().filter_map(|k| UnboundKey::new(&CHACHA20_POLY1305, &k.key).ok().map(|u| (k.id, LessSafeKey::new(u)))).collect()
}

impl Secrets {
    /// Secrets from the key file's values. `data` newest first (at least one). `reload`, if
    /// given, reads the data keys again when a value names an unknown one.
    pub fn new(fingerprint_key: [u8; 32], data: &[DataKey], reload: Option<Reload>) -> Self {
        Self {
            fingerprint: hmac::Key::new(hmac::HMAC_SHA256, &fingerprint_key),
            data: RwLock::new(keys(data)),
            reload,
            rng: SystemRandom::new(),
        }
    }

    /// Fresh random secrets (tests, and a server that keeps no key file).
    pub fn random() -> Self {
        let rng = SystemRandom::new();
        let mut fp = [0u8; 32];
        let mut key = [0u8; 32];
        // The system RNG does not fail on any platform this runs on; if it did, these keys
        // would be zeros only for a server that keeps no key file (tests).
        let _ = rng.fill(&mut fp);
        let _ = rng.fill(&mut key);
        Self::new(fp, &[DataKey { id: 1, key }], None)
    }

    /// A reload from `path` with `read` (the `copains` binary's key file reader).
    pub fn reload_from(path: PathBuf, read: fn(&std::path::Path) -> anyhow::Result<Vec<DataKey>>) -> Reload {
        Box::new(move || match read(&path) {
            Ok(keys) => Some(keys),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the key file again");
                None
            }
        })
    }

    /// The part of an address that names a client: the whole IPv4 address, an IPv6 /64 (what
    /// one household or host is given; the rest changes at will).
    fn client_part(ip: IpAddr) -> Vec<u8> {
        match crate::ratelimit::client(ip) {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets()[..8].to_vec(),
        }
    }

    fn keyed(&self, parts: &[&[u8]]) -> String {
        let mut ctx = hmac::Context::with_key(&self.fingerprint);
        for part in parts {
            ctx.update(&(part.len() as u32).to_be_bytes());
            ctx.update(part);
        }
        let tag = ctx.sign();
        tag.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The keyed hash of a client address (32 hex digits): the same for the same address on
    /// every node, useless to anyone without the key file.
    pub fn ip_hash(&self, ip: IpAddr) -> String {
        self.keyed(&[b"copains ip", &Self::client_part(ip)])
    }

    /// A client fingerprint: the keyed hash of its address and user agent.
    pub fn fingerprint(&self, ip: IpAddr, user_agent: &str) -> String {
        self.keyed(&[b"copains fingerprint", &Self::client_part(ip), user_agent.as_bytes()])
    }

    /// Seals `plaintext` for `purpose` (bound as associated data: a value sealed for one
    /// purpose does not open as another) under the newest key.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> String {
        let data = self.data.read();
        let Some((id, key)) = data.first() else {
            return String::new();
        };
        let mut nonce = [0u8; NONCE_LEN];
        let _ = self.rng.fill(&mut nonce);
        let mut buf = plaintext.to_vec();
        if key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(purpose.as_bytes()), &mut buf).is_err() {
            return String::new();
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!("k{id}.{}", STANDARD_NO_PAD.encode(out))
    }

    /// Opens a value sealed for `purpose`.
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let (id, body) = sealed.strip_prefix('k').and_then(|s| s.split_once('.')).ok_or(OpenError::Malformed)?;
        let id: u32 = id.parse().map_err(|_| OpenError::Malformed)?;
        let raw = STANDARD_NO_PAD.decode(body).map_err(|_| OpenError::Malformed)?;
        if raw.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(OpenError::Malformed);
        }
        if !self.data.read().iter().any(|(k, _)| *k == id) {
            self.reload_keys();
        }
        let data = self.data.read();
        let key = data.iter().find(|(k, _)| *k == id).map(|(_, key)| key).ok_or(OpenError::UnknownKey(id))?;
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Malformed)?;
        let mut buf = ct.to_vec();
        let plain = key.open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut buf).map_err(|_| OpenError::Forged)?;
        Ok(plain.to_vec())
    }

    /// Whether `sealed` is under the newest key (else `rotate-key` seals it again).
    pub fn is_current(&self, sealed: &str) -> bool {
        let current = self.data.read().first().map(|(id, _)| *id);
        let id = sealed.strip_prefix('k').and_then(|s| s.split_once('.')).and_then(|(id, _)| id.parse::<u32>().ok());
        id.is_some() && id == current
    }

    /// Reads the data keys again (a rotation by the command line: the newest key there seals
    /// from now on).
    pub fn reload_keys(&self) {
        if let Some(keys_now) = self.reload.as_ref().and_then(|r| r()) {
            if !keys_now.is_empty() {
                *self.data.write() = keys(&keys_now);
            }
        }
    }

    /// The number of the key that seals.
    pub fn current_key_id(&self) -> Option<u32> {
        self.data.read().first().map(|(id, _)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_for_their_purpose_only_and_name_their_key() {
        let s = Secrets::random();
        let sealed = s.seal("ip", b"192.0.2.7");
        assert!(sealed.starts_with("k1."), "{sealed}");
        assert!(!sealed.contains("192.0.2.7"));
        assert_eq!(s.open("ip", &sealed).expect("open"), b"192.0.2.7");
        assert_eq!(s.open("other", &sealed), Err(OpenError::Forged));
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(s.open("ip", std::str::from_utf8(&altered).expect("utf8")), Err(OpenError::Forged));
        assert_eq!(s.open("ip", "k9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), Err(OpenError::UnknownKey(9)));
        assert_eq!(s.open("ip", "nonsense"), Err(OpenError::Malformed));
        assert_eq!(s.open("ip", "k1.AA"), Err(OpenError::Malformed));
        // Two seals of the same value differ (a fresh nonce each).
        assert_ne!(s.seal("ip", b"x"), s.seal("ip", b"x"));
    }

    #[test]
    fn a_rotated_key_seals_and_the_old_one_still_opens() {
        let old = DataKey { id: 1, key: [1; 32] };
        let new = DataKey { id: 2, key: [2; 32] };
        let before = Secrets::new([0; 32], std::slice::from_ref(&old), None);
        let sealed_old = before.seal("ip", b"a");
        let (n2, o2) = (new.clone(), old.clone());
        let after = Secrets::new([0; 32], &[old], Some(Box::new(move || Some(vec![n2.clone(), o2.clone()]))));
        // A value under key 2 makes the server read the key file again.
        let sealed_new = Secrets::new([0; 32], &[new], None).seal("ip", b"b");
        assert_eq!(after.open("ip", &sealed_new).expect("open after reload"), b"b");
        assert_eq!(after.current_key_id(), Some(2));
        assert_eq!(after.open("ip", &sealed_old).expect("old key still opens"), b"a");
        assert!(!after.is_current(&sealed_old));
        assert!(after.is_current(&after.seal("ip", b"c")));
    }

    #[test]
    fn address_hashes_are_keyed_and_group_an_ipv6_slash_64() {
        let a = Secrets::random();
        let b = Secrets::random();
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        assert_eq!(a.ip_hash(ip), a.ip_hash(ip));
        assert_ne!(a.ip_hash(ip), b.ip_hash(ip), "another key, another hash");
        assert_eq!(a.ip_hash(ip), a.ip_hash("::ffff:192.0.2.7".parse().expect("mapped")));
        let v6a: IpAddr = "2001:db8:1:2::1".parse().expect("v6");
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("v6");
        let v6c: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        assert_eq!(a.ip_hash(v6a), a.ip_hash(v6b));
        assert_ne!(a.ip_hash(v6a), a.ip_hash(v6c));
        assert_ne!(a.fingerprint(ip, "Firefox"), a.fingerprint(ip, "Chromium"));
        assert_ne!(a.fingerprint(ip, ""), a.ip_hash(ip), "separate purposes");
        assert_eq!(a.ip_hash(ip).len(), 32);
    }
}
