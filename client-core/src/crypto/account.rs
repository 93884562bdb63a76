//! The account identity: the key that vouches for a user's devices ([`crate::devices`]), the
//! recovery key that can stand in for every device, and the short-code exchange that links a
//! new device.
//!
//! Built from libsignal's keys and XEdDSA signatures (the account key is an
//! [`IdentityKeyPair`]), the `spake2` crate (the password-authenticated exchange keyed by the
//! link code: someone who does not know the code gets one guess per exchange, and a server
//! that relays it learns nothing it could test codes against offline), HKDF-SHA256 and
//! XChaCha20-Poly1305.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use data_encoding::BASE32_NOPAD;
use hkdf::Hkdf;
use libsignal_protocol::{Fingerprint, IdentityKey, IdentityKeyPair};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::bytes::Base64Bytes;
use crate::devices::{DeviceList, LinkRequest, SignedDeviceList, PAKE_MAX_BYTES};
use crate::ids::{DeviceId, UserId};

/// Why account material was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The list's signature does not verify under the account key it names.
    #[error("the device list's signature does not verify")]
    BadSignature,
    /// Not a device list, or not a key.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The list is someone else's.
    #[error("the device list belongs to another user")]
    WrongUser,
    /// The recovery key is not one (typo) or does not open the backup.
    #[error("this recovery key does not open the account's backup")]
    WrongRecoveryKey,
    /// The link exchange failed: the code typed on the other device was not this one's, or
    /// someone in between changed the messages.
    #[error("the code did not match")]
    WrongCode,
}

/// Digits of a link code.
pub const LINK_CODE_DIGITS: usize = 8;

/// The account key pair.
#[derive(Clone)]
pub struct AccountKey(IdentityKeyPair);

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountKey(<secret>)")
    }
}

impl AccountKey {
    /// A new account key.
    pub fn generate() -> Self {
        Self(IdentityKeyPair::generate(&mut rand::rng()))
    }

    /// From [`AccountKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AccountError> {
        IdentityKeyPair::try_from(bytes).map(Self).map_err(|_| AccountError::Malformed("account key pair".into()))
    }

    /// The pair, serialized (secret).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.serialize().to_vec()
    }

    /// The public key, serialized (33 bytes).
    pub fn public(&self) -> Vec<u8> {
        self.0.identity_key().serialize().to_vec()
    }

    /// Signs a list.
    pub fn sign(&self, list: &DeviceList) -> SignedDeviceList {
        let bytes = list.encode();
        let signature = self
            .0
            .private_key()
            .calculate_signature(&bytes, &mut rand::rng())
            .expect("signing with a valid Curve25519 key cannot fail");
        SignedDeviceList { account_key: self.public().into(), list: bytes.into(), signature: signature.to_vec().into() }
    }
}

/// Checks a signed list: its signature under the account key it names, its encoding, and that
/// it is `user`'s. Whether that account key is the one known for `user` is the caller's check.
pub fn verify_list(signed: &SignedDeviceList, user: UserId) -> Result<DeviceList, AccountError> {
    let key = IdentityKey::decode(signed.account_key.as_slice()).map_err(|_| AccountError::Malformed("account key".into()))?;
    if !key.public_key().verify_signature(signed.list.as_slice(), signed.signature.as_slice()) {
        return Err(AccountError::BadSignature);
    }
    let list = DeviceList::decode(signed.list.as_slice()).map_err(|e| AccountError::Malformed(e.to_string()))?;
    if list.user != user {
        return Err(AccountError::WrongUser);
    }
    Ok(list)
}

/// The safety number (60 digits) between two accounts: libsignal's `Fingerprint` over their
/// account keys, so it is the same on every device of either user.
pub fn safety_number(me: UserId, my_key: &[u8], them: UserId, their_key: &[u8]) -> Result<String, AccountError> {
    let key = |k: &[u8]| IdentityKey::decode(k).map_err(|_| AccountError::Malformed("account key".into()));
    let fp = Fingerprint::new(2, 5200, me.to_string().as_bytes(), &key(my_key)?, them.to_string().as_bytes(), &key(their_key)?)
        .map_err(|e| AccountError::Malformed(format!("fingerprint: {e}")))?;
    fp.display_string().map_err(|e| AccountError::Malformed(format!("fingerprint: {e}")))
}

// ---- sealing -----------------------------------------------------------------------------

fn cipher(secret: &[u8], info: &[u8]) -> XChaCha20Poly1305 {
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(None, secret).expand(info, &mut key).expect("32 bytes is a valid HKDF-SHA256 length");
    let cipher = XChaCha20Poly1305::new_from_slice(&key).expect("32-byte key");
    key.fill(0);
    cipher
}

fn seal(secret: &[u8], info: &[u8], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 24];
    rand::rng().fill_bytes(&mut nonce);
    let ct = cipher(secret, info)
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        .expect("encryption in memory cannot fail");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    out
}

fn open(secret: &[u8], info: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 24 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(24);
    cipher(secret, info).decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad }).ok()
}

// ---- recovery ----------------------------------------------------------------------------

const RECOVERY_INFO: &[u8] = b"LesCopains recovery backup v1";
const RECOVERY_BYTES: usize = 20;

/// A recovery key: 160 random bits, shown as 32 base32 characters in groups of four.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryKey([u8; RECOVERY_BYTES]);

impl std::fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryKey(<secret>)")
    }
}

impl RecoveryKey {
    /// A new one.
    pub fn generate() -> Self {
        let mut k = [0u8; RECOVERY_BYTES];
        rand::rng().fill_bytes(&mut k);
        Self(k)
    }

    /// As shown to the user: `ABCD-EFGH-…` (8 groups of 4).
    pub fn display(&self) -> String {
        let text = BASE32_NOPAD.encode(&self.0);
        text.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("-")
    }

    /// Reads what the user typed: case, spaces and dashes do not matter.
    pub fn parse(typed: &str) -> Result<Self, AccountError> {
        let clean: String = typed.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_uppercase()).collect();
        let bytes = BASE32_NOPAD.decode(clean.as_bytes()).map_err(|_| AccountError::WrongRecoveryKey)?;
        Ok(Self(bytes.try_into().map_err(|_| AccountError::WrongRecoveryKey)?))
    }

    /// Seals the account key for `user`: the backup the server keeps.
    pub fn seal(&self, user: UserId, account: &AccountKey) -> Vec<u8> {
        seal(&self.0, RECOVERY_INFO, &user.0.to_be_bytes(), &account.to_bytes())
    }

    /// Opens `user`'s backup.
    pub fn open(&self, user: UserId, sealed: &[u8]) -> Result<AccountKey, AccountError> {
        let raw = open(&self.0, RECOVERY_INFO, &user.0.to_be_bytes(), sealed).ok_or(AccountError::WrongRecoveryKey)?;
        AccountKey::from_bytes(&raw)
    }
}

// ---- linking -----------------------------------------------------------------------------

const LINK_SEAL_INFO: &[u8] = b"LesCopains link v1 seal";

/// A new link code: [`LINK_CODE_DIGITS`] random digits, shown as `1234-5678`.
pub fn new_link_code() -> String {
    let mut digits = String::with_capacity(LINK_CODE_DIGITS + 1);
    for i in 0..LINK_CODE_DIGITS {
        if i == LINK_CODE_DIGITS / 2 {
            digits.push('-');
        }
        // Rejection sampling: no bias toward low digits.
        let d = loop {
            let b = (rand::rng().next_u32() & 0xff) as u8;
            if b < 250 {
                break b % 10;
            }
        };
        digits.push(char::from(b'0' + d));
    }
    digits
}

/// The digits of a code as typed (anything else is ignored); `None` when there are not
/// exactly [`LINK_CODE_DIGITS`].
pub fn normalize_code(typed: &str) -> Option<String> {
    let digits: String = typed.chars().filter(char::is_ascii_digit).collect();
    (digits.len() == LINK_CODE_DIGITS && typed.chars().all(|c| c.is_ascii_digit() || c.is_whitespace() || c == '-'))
        .then_some(digits)
}

/// The exchange's identities: the new device (with the identity key it will be listed with)
/// and the account. A server that shows the linked device another key than the new device's
/// own makes the two sides derive different keys, and nothing opens.
fn link_identities(user: UserId, device: DeviceId, identity_key: &[u8]) -> (Identity, Identity) {
    let mut a = b"LesCopains link v1 new device\0".to_vec();
    a.extend_from_slice(&user.0.to_be_bytes());
    a.extend_from_slice(&device.0.to_be_bytes());
    a.extend_from_slice(identity_key);
    let mut b = b"LesCopains link v1 account\0".to_vec();
    b.extend_from_slice(&user.0.to_be_bytes());
    (Identity::new(&a), Identity::new(&b))
}

/// What a linked device hands a new one: the account key, and the list it knows (the new
/// device adds itself to it).
#[derive(Serialize, Deserialize)]
struct LinkPayload {
    account_key: Base64Bytes,
    list: SignedDeviceList,
}

/// The new device's side of a link exchange, between its request and the answer.
pub struct PendingLink {
    spake: Spake2<Ed25519Group>,
    aad: Vec<u8>,
}

impl std::fmt::Debug for PendingLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingLink")
    }
}

impl PendingLink {
    /// Starts the exchange on the new device with the code it shows. Returns the state and
    /// the message for the request.
    pub fn start(code: &str, user: UserId, device: DeviceId, identity_key: &[u8]) -> Result<(Self, Vec<u8>), AccountError> {
        let digits = normalize_code(code).ok_or(AccountError::WrongCode)?;
        let (a, b) = link_identities(user, device, identity_key);
        let (spake, message) = Spake2::<Ed25519Group>::start_a(&Password::new(digits.as_bytes()), &a, &b);
        let mut aad = user.0.to_be_bytes().to_vec();
        aad.extend_from_slice(&device.0.to_be_bytes());
        Ok((Self { spake, aad }, message))
    }

    /// Finishes with the linked device's answer: the account key and the list it sent, or
    /// [`AccountError::WrongCode`].
    pub fn finish(self, pake: &[u8], sealed: &[u8]) -> Result<(AccountKey, SignedDeviceList), AccountError> {
        if pake.len() > PAKE_MAX_BYTES {
            return Err(AccountError::WrongCode);
        }
        let key = self.spake.finish(pake).map_err(|_| AccountError::WrongCode)?;
        let raw = open(&key, LINK_SEAL_INFO, &self.aad, sealed).ok_or(AccountError::WrongCode)?;
        let payload: LinkPayload = serde_json::from_slice(&raw).map_err(|e| AccountError::Malformed(e.to_string()))?;
        let account = AccountKey::from_bytes(payload.account_key.as_slice())?;
        if payload.list.account_key.as_slice() != account.public().as_slice() {
            return Err(AccountError::Malformed("the list is not signed by the account key sent".into()));
        }
        Ok((account, payload.list))
    }
}

/// The linked device's side: answers `request` with the code the user typed, sealing the
/// account key and the current list. Returns the answer's SPAKE2 message and sealed payload.
pub fn answer_link(
    code: &str,
    user: UserId,
    request: &LinkRequest,
    account: &AccountKey,
    list: &SignedDeviceList,
) -> Result<(Vec<u8>, Vec<u8>), AccountError> {
    let digits = normalize_code(code).ok_or(AccountError::WrongCode)?;
    if request.pake.as_slice().len() > PAKE_MAX_BYTES {
        return Err(AccountError::Malformed("link request".into()));
    }
    let (a, b) = link_identities(user, request.device_id, request.identity_key.as_slice());
    let (spake, message) = Spake2::<Ed25519Group>::start_b(&Password::new(digits.as_bytes()), &a, &b);
    let key = spake.finish(request.pake.as_slice()).map_err(|_| AccountError::Malformed("link request".into()))?;
    let payload = LinkPayload { account_key: account.to_bytes().into(), list: list.clone() };
    let raw = serde_json::to_vec(&payload).map_err(|e| AccountError::Malformed(e.to_string()))?;
    let mut aad = user.0.to_be_bytes().to_vec();
    aad.extend_from_slice(&request.device_id.0.to_be_bytes());
    Ok((message, seal(&key, LINK_SEAL_INFO, &aad, &raw)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::ListedDevice;

    fn list(user: UserId, version: u64) -> DeviceList {
        DeviceList { user, version, devices: vec![ListedDevice { device_id: DeviceId(1), identity_key: vec![5; 33] }] }
    }

    #[test]
    fn a_signed_list_verifies_and_a_tampered_one_does_not() {
        let account = AccountKey::generate();
        let signed = account.sign(&list(UserId(9), 1));
        assert_eq!(verify_list(&signed, UserId(9)).expect("valid").version, 1);
        assert_eq!(verify_list(&signed, UserId(10)), Err(AccountError::WrongUser));
        let mut tampered = signed.clone();
        let at = tampered.list.0.len() - 1;
        tampered.list.0[at] ^= 1;
        assert_eq!(verify_list(&tampered, UserId(9)), Err(AccountError::BadSignature));
        let other = AccountKey::generate();
        let mut swapped = signed;
        swapped.account_key = other.public().into();
        assert_eq!(verify_list(&swapped, UserId(9)), Err(AccountError::BadSignature));
    }

    #[test]
    fn recovery_key_round_trips_through_its_display_and_opens_only_its_backup() {
        let account = AccountKey::generate();
        let key = RecoveryKey::generate();
        let shown = key.display();
        assert_eq!(shown.len(), 32 + 7);
        let sealed = key.seal(UserId(3), &account);
        let typed = shown.to_lowercase().replace('-', " ");
        let opened = RecoveryKey::parse(&typed).expect("valid").open(UserId(3), &sealed).expect("valid");
        assert_eq!(opened.public(), account.public());
        assert_eq!(RecoveryKey::generate().open(UserId(3), &sealed).expect_err("refused"), AccountError::WrongRecoveryKey);
        assert_eq!(key.open(UserId(4), &sealed).expect_err("refused"), AccountError::WrongRecoveryKey, "bound to the user");
        assert!(RecoveryKey::parse("not a key").is_err());
    }

    fn request(device: DeviceId, identity_key: Vec<u8>, pake: Vec<u8>) -> LinkRequest {
        LinkRequest {
            device_id: device,
            device_name: "new".into(),
            identity_key: identity_key.into(),
            pake: pake.into(),
            created_at: 0,
            expires_at: 1,
        }
    }

    #[test]
    fn linking_hands_over_the_account_key_with_the_right_code_only() {
        let user = UserId(7);
        let account = AccountKey::generate();
        let signed = account.sign(&list(user, 1));
        let code = new_link_code();
        assert_eq!(normalize_code(&code).expect("valid").len(), LINK_CODE_DIGITS);
        let identity = vec![5; 33];

        let (pending, pake_a) = PendingLink::start(&code, user, DeviceId(2), &identity).expect("valid");
        let (pake_b, sealed) =
            answer_link(&code, user, &request(DeviceId(2), identity.clone(), pake_a), &account, &signed).expect("valid");
        let (got, got_list) = pending.finish(&pake_b, &sealed).expect("valid");
        assert_eq!(got.public(), account.public());
        assert_eq!(got_list, signed);

        // A wrong code: nothing opens.
        let (pending, pake_a) = PendingLink::start(&code, user, DeviceId(2), &identity).expect("valid");
        let wrong = if code.starts_with('0') { "1111-1111" } else { "0000-0000" };
        let (pake_b, sealed) =
            answer_link(wrong, user, &request(DeviceId(2), identity.clone(), pake_a), &account, &signed).expect("valid");
        assert_eq!(pending.finish(&pake_b, &sealed).expect_err("refused"), AccountError::WrongCode);

        // The server shows the linked device another identity key: nothing opens either.
        let (pending, pake_a) = PendingLink::start(&code, user, DeviceId(2), &identity).expect("valid");
        let (pake_b, sealed) =
            answer_link(&code, user, &request(DeviceId(2), vec![6; 33], pake_a), &account, &signed).expect("valid");
        assert_eq!(pending.finish(&pake_b, &sealed).expect_err("refused"), AccountError::WrongCode);
    }

    #[test]
    fn the_safety_number_is_symmetric() {
        let (a, b) = (AccountKey::generate(), AccountKey::generate());
        let ab = safety_number(UserId(1), &a.public(), UserId(2), &b.public()).expect("valid");
        let ba = safety_number(UserId(2), &b.public(), UserId(1), &a.public()).expect("valid");
        assert_eq!(ab, ba);
        assert_eq!(ab.len(), 60);
    }
}
