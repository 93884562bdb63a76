//! Voice media keys: every encoded audio and video frame is encrypted with SFrame (RFC 9605,
//! the `sframe` crate, AES-128-GCM with SHA-256) before it leaves the device, so the SFU
//! forwards frames it cannot read. Each participant has its own key per media epoch:
//!
//! - **On a join** every participant ratchets its key one step forward (HKDF, RFC 9605 §5.1)
//!   and hands only the new step to the newcomer, who cannot derive the steps before it: a
//!   newcomer never reads earlier media. The others follow the step on their own, from the key
//!   id of the frames.
//! - **On a leave** every participant draws a fresh random key (a new generation) and hands it
//!   to those who stay: a leaver never reads later media.
//!
//! A key id names the sender's room slot, its key generation and the ratchet step, so one key
//! store reads every participant's frames. Keys travel over the pairwise Signal sessions, as a
//! [`MediaKeyShare`]. The first bytes of a frame may stay in the clear (the codec's header, for
//! the SFU to tell keyframes); they are authenticated with the frame. One counter serves all of
//! a participant's tracks: frames under one key never share a nonce.
//!
//! The voice privacy code ([`privacy_code`]) is a digest of the channel, the epoch and the
//! participants' identity keys: the same on every screen when nobody is in the middle.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sframe::frame::validation::{ReplayAttackProtectionStore, Tolerance};
use sframe::frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter};
use sframe::ratchet::{
    RatchetBits, RatchetStepDiff, RatchetingDecryptionKey, RatchetingEncryptionKey, RatchetingKeyId, RatchetingKeyStore,
};
use sframe::CipherSuite;
use sha2::{Digest, Sha256};

use crate::bytes::Base64Bytes;
use crate::ids::{ChannelId, DeviceId, UserId};

/// The cipher suite of every frame.
pub const CIPHER_SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;
/// Bits of a key id that count ratchet steps.
const RATCHET_BITS: u8 = 8;
/// How far ahead of its stored key a receiver follows a sender's ratchet on its own (each step
/// is a key derivation a forged frame can make it run).
const MAX_RATCHET_STEPS: u64 = 16;
/// Ratchet steps of one generation: the join after the last one starts a new generation, sealed
/// for everyone. A receiver that saw no frame of a sender through a burst of joins is then never
/// more than [`MAX_RATCHET_STEPS`] behind it.
const STEPS_PER_GENERATION: u8 = MAX_RATCHET_STEPS as u8;
/// Frames a receiver accepts out of order (per key).
const REPLAY_TOLERANCE: usize = 1024;
/// Largest clear prefix of a frame (a VP8 keyframe's header is 10 bytes).
pub const CLEAR_BYTES_MAX: usize = 16;
/// Largest frame (a keyframe of a 1080p screen share, with room).
pub const FRAME_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Why a frame was not encrypted or not read. A frame that is not read is dropped, never
/// played: nothing unencrypted is ever sent or shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No key for it (yet): a sender without a key for the current epoch sends nothing.
    #[error("no media key")]
    NoKey,
    /// Too short to hold its clear prefix and an SFrame header, or too large.
    #[error("malformed frame")]
    Malformed,
    /// It does not decrypt: a wrong key, a forged or damaged frame.
    #[error("the frame does not decrypt")]
    Undecryptable,
    /// A frame seen already.
    #[error("a replayed frame")]
    Replayed,
    /// A key share that does not make a key.
    #[error("invalid media key")]
    InvalidKey,
}

/// How many bytes of an encoded frame stay in the clear: what an SFU needs to tell a keyframe
/// (VP8: the 10-byte keyframe header or the 3-byte frame tag) or a packet's kind (Opus: its
/// TOC byte). The same rule natively and in the browser's transform.
pub fn clear_bytes(audio: bool, frame: &[u8]) -> usize {
    if audio {
        return 1.min(frame.len());
    }
    let keyframe = frame.first().is_some_and(|b| b & 0x01 == 0);
    (if keyframe { 10 } else { 3 }).min(frame.len())
}

/// One participant's media key at one step, as handed to another participant (inside a
/// pairwise Signal message).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaKeyShare {
    /// The sender's room slot.
    pub slot: u32,
    /// The key's generation (a new one at every leave).
    pub generation: u32,
    /// The ratchet step the key material is at.
    pub step: u8,
    /// The key material of that step (32 random bytes for a fresh key, 16 after a ratchet).
    pub material: Base64Bytes,
}

impl std::fmt::Debug for MediaKeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaKeyShare")
            .field("slot", &self.slot)
            .field("generation", &self.generation)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

fn key_id(slot: u32, generation: u32, step: u8) -> Result<RatchetingKeyId, FrameError> {
    let bits = RatchetBits::try_new(RATCHET_BITS).map_err(|_| FrameError::InvalidKey)?;
    let base =
        RatchetingKeyId::try_new((u64::from(slot) << 32) | u64::from(generation), bits).map_err(|_| FrameError::InvalidKey)?;
    // The step sits in the low bits of the value.
    Ok(RatchetingKeyId::from_key_id(u64::from(base) | u64::from(step), bits))
}

/// This participant's sending side: its key and its one frame counter.
pub struct MediaSender {
    slot: u32,
    generation: u32,
    step: u8,
    /// The material of the current step (what a newcomer is handed).
    material: Vec<u8>,
    key: RatchetingEncryptionKey,
    counter: MonotonicCounter,
}

impl std::fmt::Debug for MediaSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSender").field("slot", &self.slot).field("generation", &self.generation).finish_non_exhaustive()
    }
}

impl MediaSender {
    /// A new random key for `slot` (joining a room, or after someone left: `generation` one
    /// above the last).
    pub fn fresh(slot: u32, generation: u32) -> Result<Self, FrameError> {
        let mut material = vec![0u8; 32];
        rand::rng().fill_bytes(&mut material);
        let key = RatchetingEncryptionKey::derive_from(CIPHER_SUITE, key_id(slot, generation, 0)?, &material)
            .map_err(|_| FrameError::InvalidKey)?;
        Ok(Self { slot, generation, step: 0, material, key, counter: MonotonicCounter::default() })
    }

    /// Someone joined: one ratchet step forward. Returns the share for the newcomer (the new
    /// step only).
    pub fn ratchet(&mut self) -> Result<MediaKeyShare, FrameError> {
        if self.step + 1 >= STEPS_PER_GENERATION {
            // Receivers who saw no frame since the generation began could not follow further
            // on their own: a new generation, for everyone.
            *self = Self::fresh(self.slot, self.generation.wrapping_add(1))?;
            return Ok(self.share());
        }
        let next_material = self.key.key_material().as_ref().to_vec();
        self.key = self.key.ratchet().map_err(|_| FrameError::InvalidKey)?;
        self.step += 1;
        self.material = next_material;
        Ok(self.share())
    }

    /// The current key, for a participant who should read what this one sends from now on.
    pub fn share(&self) -> MediaKeyShare {
        MediaKeyShare { slot: self.slot, generation: self.generation, step: self.step, material: self.material.clone().into() }
    }

    /// Encrypts one encoded frame, leaving its first `clear` bytes readable (and authenticated).
    pub fn encrypt(&mut self, frame: &[u8], clear: usize) -> Result<Vec<u8>, FrameError> {
        if clear > CLEAR_BYTES_MAX || clear > frame.len() || frame.len() > FRAME_MAX_BYTES {
            return Err(FrameError::Malformed);
        }
        let (meta, payload) = frame.split_at(clear);
        let view = MediaFrameView::try_with_meta_data(&mut self.counter, payload, meta).map_err(|_| FrameError::Undecryptable)?;
        let encrypted = view.encrypt(self.key.as_ref()).map_err(|_| FrameError::Undecryptable)?;
        Ok(encrypted.as_ref().to_vec())
    }
}

/// This participant's receiving side: the keys of the others, and replay protection.
pub struct MediaReceiver {
    keys: RatchetingKeyStore,
    replay: ReplayAttackProtectionStore,
    /// The generations held of each slot (to forget them all when its participant leaves,
    /// whatever generations it announced).
    held: std::collections::HashMap<u32, std::collections::BTreeSet<u32>>,
}

impl std::fmt::Debug for MediaReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaReceiver").finish_non_exhaustive()
    }
}

impl Default for MediaReceiver {
    fn default() -> Self {
        Self {
            keys: RatchetingKeyStore::new(RatchetBits::new(RATCHET_BITS), RatchetStepDiff::from(MAX_RATCHET_STEPS)),
            replay: ReplayAttackProtectionStore::new(Tolerance::new(REPLAY_TOLERANCE)),
            held: std::collections::HashMap::new(),
        }
    }
}

impl MediaReceiver {
    /// Takes another participant's key (replacing what this receiver had of that slot and
    /// generation).
    pub fn add(&mut self, share: &MediaKeyShare) -> Result<(), FrameError> {
        // 32 random bytes for a fresh key; a ratchet step's material is the AEAD key's size.
        if !(16..=32).contains(&share.material.as_slice().len()) {
            return Err(FrameError::InvalidKey);
        }
        let id = key_id(share.slot, share.generation, share.step)?;
        let key = RatchetingDecryptionKey::derive_from(CIPHER_SUITE, id, share.material.as_slice())
            .map_err(|_| FrameError::InvalidKey)?;
        self.keys.remove(id.generation());
        self.keys.insert(key);
        self.held.entry(share.slot).or_default().insert(share.generation);
        Ok(())
    }

    /// Forgets every key held of a slot, of every generation (its participant left; a new
    /// participant may take the slot).
    pub fn forget_slot(&mut self, slot: u32) {
        for generation in self.held.remove(&slot).unwrap_or_default() {
            if let Ok(id) = key_id(slot, generation, 0) {
                self.keys.remove(id.generation());
            }
        }
    }

    /// Decrypts one frame whose first `clear` bytes were left readable. Returns the sender's
    /// slot with the frame.
    pub fn decrypt(&mut self, data: &[u8], clear: usize) -> Result<(u32, Vec<u8>), FrameError> {
        if clear > CLEAR_BYTES_MAX || data.len() <= clear || data.len() > FRAME_MAX_BYTES + 64 {
            return Err(FrameError::Malformed);
        }
        let (meta, sealed) = data.split_at(clear);
        let view = EncryptedFrameView::try_with_meta_data(sealed, meta).map_err(|_| FrameError::Malformed)?;
        let slot = (view.header().key_id() >> (32 + u32::from(RATCHET_BITS))) as u32;
        match view.validated_decrypt(&mut self.keys, &mut self.replay) {
            Ok(frame) => {
                let mut out = Vec::with_capacity(meta.len() + frame.payload().len());
                out.extend_from_slice(frame.meta_data());
                out.extend_from_slice(frame.payload());
                Ok((slot, out))
            }
            Err(e) => Err(match e {
                sframe::error::SframeError::MissingDecryptionKey { .. } => FrameError::NoKey,
                sframe::error::SframeError::FrameValidationFailed(_) => FrameError::Replayed,
                _ => FrameError::Undecryptable,
            }),
        }
    }
}

/// The voice privacy code of a room at an epoch: SHA-256 over the channel, the epoch and the
/// identity keys of the participants' devices (in a canonical order), shown as six groups of
/// five digits. Every participant computes it from what it knows; equal codes on every screen
/// mean everyone encrypts to the same devices.
pub fn privacy_code(channel: ChannelId, epoch: u64, participants: &[(UserId, DeviceId, Vec<u8>)]) -> String {
    let mut sorted: Vec<&(UserId, DeviceId, Vec<u8>)> = participants.iter().collect();
    sorted.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
    let mut h = Sha256::new();
    h.update(b"LesCopains voice privacy code v1\0");
    h.update(channel.0.to_be_bytes());
    h.update(epoch.to_be_bytes());
    for (user, device, key) in sorted {
        h.update(user.0.to_be_bytes());
        h.update(device.0.to_be_bytes());
        h.update((key.len() as u32).to_be_bytes());
        h.update(key);
    }
    let digest = h.finalize();
    digest
        .chunks(5)
        .take(6)
        .map(|c| {
            let n = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Vec<u8> {
        // A VP8-like frame: 10 header bytes, then the compressed data.
        (0..200).map(|i| (i as u8).wrapping_mul(n)).collect()
    }

    #[test]
    fn a_frame_reads_with_the_senders_key_and_keeps_its_clear_prefix() {
        let mut alice = MediaSender::fresh(1, 0).expect("key");
        let mut bob = MediaReceiver::default();
        bob.add(&alice.share()).expect("share");
        let plain = frame(3);
        let sealed = alice.encrypt(&plain, 10).expect("encrypt");
        assert_eq!(&sealed[..10], &plain[..10], "the codec header stays readable");
        assert!(!sealed.windows(32).any(|w| plain.windows(32).any(|p| p == w && p != &plain[..32])), "the rest does not");
        assert_eq!(bob.decrypt(&sealed, 10), Ok((1, plain.clone())));
        // Once only.
        assert_eq!(bob.decrypt(&sealed, 10), Err(FrameError::Replayed));
        // The clear prefix is authenticated: a changed header does not read.
        let mut tampered = alice.encrypt(&plain, 10).expect("encrypt");
        tampered[0] ^= 1;
        assert_eq!(bob.decrypt(&tampered, 10), Err(FrameError::Undecryptable));
        // Audio: one clear byte (the Opus TOC).
        let opus = vec![0x78, 1, 2, 3, 4];
        let sealed = alice.encrypt(&opus, 1).expect("encrypt");
        assert_eq!(bob.decrypt(&sealed, 1), Ok((1, opus)));
    }

    #[test]
    fn a_newcomer_reads_nothing_from_before_it_joined() {
        let mut alice = MediaSender::fresh(1, 0).expect("key");
        let mut bob = MediaReceiver::default();
        bob.add(&alice.share()).expect("share");
        let before = alice.encrypt(&frame(1), 10).expect("encrypt");
        // Carol joins: Alice ratchets and hands Carol the new step only.
        let share = alice.ratchet().expect("ratchet");
        assert_eq!(share.step, 1);
        let mut carol = MediaReceiver::default();
        carol.add(&share).expect("share");
        let after = alice.encrypt(&frame(2), 10).expect("encrypt");
        assert_eq!(carol.decrypt(&before, 10), Err(FrameError::NoKey), "the step before is not Carol's");
        assert_eq!(carol.decrypt(&after, 10), Ok((1, frame(2))));
        // Bob follows the ratchet from the frame's key id, with no message.
        assert_eq!(bob.decrypt(&before, 10), Ok((1, frame(1))));
        assert_eq!(bob.decrypt(&after, 10), Ok((1, frame(2))));
    }

    #[test]
    fn a_receiver_that_saw_no_frame_through_a_burst_of_joins_still_reads() {
        // Forty join while Alice is silent: Bob holds her first key, plus what she seals for
        // everyone when a generation runs out of steps (a share at step 0).
        let mut alice = MediaSender::fresh(1, 0).expect("key");
        let mut bob = MediaReceiver::default();
        bob.add(&alice.share()).expect("share");
        let mut generations = 0;
        for _ in 0..40 {
            let share = alice.ratchet().expect("ratchet");
            assert!(share.step < STEPS_PER_GENERATION);
            if share.step == 0 {
                generations += 1;
                bob.add(&share).expect("share");
            }
        }
        assert_eq!(generations, 2, "a new generation every {STEPS_PER_GENERATION} joins");
        let sealed = alice.encrypt(&frame(5), 10).expect("encrypt");
        assert_eq!(bob.decrypt(&sealed, 10), Ok((1, frame(5))));
    }

    #[test]
    fn forgetting_a_slot_forgets_every_generation_it_announced() {
        // A hostile participant announces a far generation, then an ordinary one, then leaves:
        // nothing of its slot may still open (a colluding SFU could play it as the slot's next
        // owner).
        let mut far = MediaSender::fresh(4, 1_000).expect("key");
        let mut near = MediaSender::fresh(4, 3).expect("key");
        let mut bob = MediaReceiver::default();
        bob.add(&far.share()).expect("share");
        bob.add(&near.share()).expect("share");
        let (a, b) = (far.encrypt(&frame(1), 10).expect("encrypt"), near.encrypt(&frame(2), 10).expect("encrypt"));
        bob.forget_slot(4);
        assert_eq!(bob.decrypt(&a, 10), Err(FrameError::NoKey));
        assert_eq!(bob.decrypt(&b, 10), Err(FrameError::NoKey));
        // Other slots are untouched.
        let mut carol = MediaSender::fresh(5, 0).expect("key");
        bob.add(&carol.share()).expect("share");
        bob.forget_slot(4);
        assert_eq!(bob.decrypt(&carol.encrypt(&frame(3), 10).expect("encrypt"), 10), Ok((5, frame(3))));
    }

    #[test]
    fn a_leaver_reads_nothing_after_it_left() {
        let mut alice = MediaSender::fresh(1, 0).expect("key");
        let mut bob = MediaReceiver::default();
        let mut dave = MediaReceiver::default();
        bob.add(&alice.share()).expect("share");
        dave.add(&alice.share()).expect("share");
        assert!(dave.decrypt(&alice.encrypt(&frame(1), 10).expect("encrypt"), 10).is_ok());
        // Dave leaves: Alice draws a new key (the next generation) and hands it to Bob only.
        alice = MediaSender::fresh(1, 1).expect("key");
        bob.add(&alice.share()).expect("share");
        let after = alice.encrypt(&frame(2), 10).expect("encrypt");
        assert_eq!(bob.decrypt(&after, 10), Ok((1, frame(2))));
        assert_eq!(dave.decrypt(&after, 10), Err(FrameError::NoKey));
        // Nor with a key of that generation made up (the server or Dave guessing).
        let made_up = MediaSender::fresh(1, 1).expect("key");
        dave.add(&made_up.share()).expect("share");
        assert_eq!(dave.decrypt(&after, 10), Err(FrameError::Undecryptable));
    }

    #[test]
    fn bad_frames_and_keys_are_refused_without_panicking() {
        let mut alice = MediaSender::fresh(2, 0).expect("key");
        let mut bob = MediaReceiver::default();
        bob.add(&alice.share()).expect("share");
        assert_eq!(alice.encrypt(&frame(1), CLEAR_BYTES_MAX + 1), Err(FrameError::Malformed));
        assert_eq!(alice.encrypt(&[1, 2], 3), Err(FrameError::Malformed));
        let sealed = alice.encrypt(&frame(1), 10).expect("encrypt");
        for cut in 0..sealed.len() {
            assert!(bob.decrypt(&sealed[..cut], 10).is_err(), "a frame cut at {cut}");
        }
        assert_eq!(bob.decrypt(&[], 0), Err(FrameError::Malformed));
        let mut x: u32 = 7;
        for len in 0..80 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            assert!(bob.decrypt(&junk, 1).is_err());
        }
        let mut wrong = alice.share();
        wrong.material = vec![1; 15].into();
        assert_eq!(bob.add(&wrong), Err(FrameError::InvalidKey));
        // Another participant's key does not read Alice's frames.
        let mallory = MediaSender::fresh(2, 0).expect("key");
        let mut fooled = MediaReceiver::default();
        fooled.add(&mallory.share()).expect("share");
        assert_eq!(fooled.decrypt(&alice.encrypt(&frame(4), 10).expect("encrypt"), 10), Err(FrameError::Undecryptable));
    }

    #[test]
    fn every_track_of_a_sender_shares_one_counter() {
        let mut alice = MediaSender::fresh(1, 0).expect("key");
        let audio = alice.encrypt(&[1, 2, 3], 1).expect("audio");
        let video = alice.encrypt(&frame(1), 10).expect("video");
        let header = |sealed: &[u8], clear: usize| {
            EncryptedFrameView::try_with_meta_data(&sealed[clear..], &sealed[..clear]).expect("frame").header().counter()
        };
        assert_ne!(header(&audio, 1), header(&video, 10), "two frames, two nonces");
    }

    #[test]
    fn the_privacy_code_is_the_same_for_everyone_and_changes_with_the_room() {
        let people = vec![(UserId(1), DeviceId(1), vec![5; 33]), (UserId(2), DeviceId(3), vec![6; 33])];
        let mut shuffled = people.clone();
        shuffled.reverse();
        let code = privacy_code(ChannelId(9), 4, &people);
        assert_eq!(code, privacy_code(ChannelId(9), 4, &shuffled));
        assert_eq!(code.split(' ').count(), 6);
        assert!(code.split(' ').all(|g| g.len() == 5 && g.chars().all(|c| c.is_ascii_digit())));
        assert_ne!(code, privacy_code(ChannelId(9), 5, &people), "another epoch");
        assert_ne!(code, privacy_code(ChannelId(8), 4, &people), "another channel");
        let mut other_key = people.clone();
        other_key[1].2 = vec![7; 33];
        assert_ne!(code, privacy_code(ChannelId(9), 4, &other_key), "a device in the middle");
    }
}
