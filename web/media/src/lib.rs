//! The web app's media worker: the SFrame code of `copains-client-core` (the same that native
//! clients run) built as a small WebAssembly module of its own. Every encoded audio and video
//! frame goes through [`MediaCrypto`] in the worker that runs the page's
//! `RTCRtpScriptTransform`s: encrypted before it is packetized, decrypted after it arrives.
//! Without a key nothing is sent (the frame is dropped), and a frame that does not open is
//! never played.
#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]

use copains_client_core::voice::{clear_bytes, MediaKeyShare, MediaReceiver, MediaSender};
use wasm_bindgen::prelude::*;

/// This participant's sending key and frame counter, and the other participants' keys.
#[wasm_bindgen]
pub struct MediaCrypto {
    sender: Option<MediaSender>,
    receiver: MediaReceiver,
    slot: u32,
    generation: u32,
    last_slot: u32,
    /// Someone left and this device's key for after the leave is not drawn yet: nothing is
    /// sent under a key the leaver holds.
    held: bool,
}

impl Default for MediaCrypto {
    fn default() -> Self {
        Self::new()
    }
}

fn share_json(share: &MediaKeyShare) -> Result<String, JsError> {
    serde_json::to_string(share).map_err(|e| JsError::new(&e.to_string()))
}

#[wasm_bindgen]
impl MediaCrypto {
    /// No key yet: nothing is sent and nothing opens.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Self {
        Self { sender: None, receiver: MediaReceiver::default(), slot: 0, generation: 0, last_slot: 0, held: false }
    }

    /// A fresh random key for `slot` at `generation` (joining, or after someone left: one
    /// generation up). Returns its share (JSON) for the others.
    pub fn fresh_key(&mut self, slot: u32, generation: u32) -> Result<String, JsError> {
        let sender = MediaSender::fresh(slot, generation).map_err(|e| JsError::new(&e.to_string()))?;
        let share = share_json(&sender.share())?;
        self.sender = Some(sender);
        self.slot = slot;
        self.generation = generation;
        Ok(share)
    }

    /// A fresh key one generation up (someone left). Returns its share.
    pub fn next_generation(&mut self) -> Result<String, JsError> {
        let generation = self.generation.wrapping_add(1);
        self.fresh_key(self.slot, generation)
    }

    /// Someone left: stop sending at once. The page calls this as the leave arrives, ahead of
    /// the seals still queued before it, and [`MediaCrypto::release`]s once the key for after
    /// the last leave it knows of is drawn.
    pub fn hold(&mut self) {
        self.held = true;
    }

    /// Sends again (see [`MediaCrypto::hold`]).
    pub fn release(&mut self) {
        self.held = false;
    }

    /// Someone joined: one ratchet step. Returns the new step's share (for the newcomer).
    pub fn ratchet(&mut self) -> Result<String, JsError> {
        let sender = self.sender.as_mut().ok_or_else(|| JsError::new("no key yet"))?;
        let share = sender.ratchet().map_err(|e| JsError::new(&e.to_string()))?;
        self.generation = share.generation;
        share_json(&share)
    }

    /// The current key's share, if any.
    pub fn share(&self) -> Option<String> {
        self.sender.as_ref().and_then(|s| share_json(&s.share()).ok())
    }

    /// Takes another participant's key share (JSON, as the engine opened it).
    pub fn add_key(&mut self, share: &str) -> Result<(), JsError> {
        let share: MediaKeyShare = serde_json::from_str(share).map_err(|e| JsError::new(&e.to_string()))?;
        self.receiver.add(&share).map_err(|e| JsError::new(&e.to_string()))
    }

    /// Forgets every key held of a slot, of every generation it announced (its participant
    /// left).
    pub fn forget_slot(&mut self, slot: u32) {
        self.receiver.forget_slot(slot);
    }

    /// Encrypts one encoded frame; `undefined` without a key or while held (drop the frame).
    pub fn encrypt(&mut self, frame: &[u8], audio: bool) -> Option<Vec<u8>> {
        if self.held {
            return None;
        }
        let sender = self.sender.as_mut()?;
        sender.encrypt(frame, clear_bytes(audio, frame)).ok()
    }

    /// Decrypts one received frame; `undefined` when it does not open (drop it). The slot of
    /// the key that opened it is then [`MediaCrypto::last_slot`].
    pub fn decrypt(&mut self, data: &[u8], audio: bool) -> Option<Vec<u8>> {
        let (slot, frame) = self.receiver.decrypt(data, clear_bytes(audio, data)).ok()?;
        self.last_slot = slot;
        Some(frame)
    }

    /// The slot of the key that opened the last frame.
    pub fn last_slot(&self) -> u32 {
        self.last_slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_open_only_with_the_senders_key_and_a_newcomer_reads_only_after_the_ratchet() {
        let mut ana = MediaCrypto::new();
        let mut ben = MediaCrypto::new();
        let share = ana.fresh_key(1, 0).expect("key");
        let mut keyframe = vec![0x10, 0, 0, 0x9d, 0x01, 0x2a, 0, 0, 0, 0];
        keyframe.extend_from_slice(b"a camera frame");
        assert!(ben.decrypt(&ana.encrypt(&keyframe, false).expect("sealed"), false).is_none(), "no key: nothing opens");
        ben.add_key(&share).expect("key");
        let sealed = ana.encrypt(&keyframe, false).expect("sealed");
        assert_eq!(&sealed[..10], &keyframe[..10], "the VP8 header stays clear for the SFU");
        assert!(!sealed.windows(6).any(|w| w == b"camera"), "the rest does not");
        assert_eq!(ben.decrypt(&sealed, false).as_deref(), Some(&keyframe[..]));
        assert_eq!(ben.last_slot(), 1);
        let mut tampered = sealed.clone();
        tampered[0] ^= 0x20;
        assert!(ben.decrypt(&tampered, false).is_none(), "the clear bytes are authenticated");

        // Someone joins: Ana ratchets and hands the newcomer the new step only.
        let before = ana.encrypt(b"\xf8old words", true).expect("sealed");
        let step = ana.ratchet().expect("ratchet");
        let mut cleo = MediaCrypto::new();
        cleo.add_key(&step).expect("key");
        let after = ana.encrypt(b"\xf8new words", true).expect("sealed");
        assert!(cleo.decrypt(&before, true).is_none(), "the newcomer cannot read what came before");
        assert_eq!(cleo.decrypt(&after, true).as_deref(), Some(&b"\xf8new words"[..]));
        assert_eq!(ben.decrypt(&after, true).as_deref(), Some(&b"\xf8new words"[..]), "the others follow the ratchet");

        // Someone leaves: a fresh key, given only to those who stay.
        let fresh = ana.next_generation().expect("fresh");
        ben.add_key(&fresh).expect("key");
        let later = ana.encrypt(b"\xf8after the leave", true).expect("sealed");
        assert!(cleo.decrypt(&later, true).is_none(), "the leaver reads nothing new");
        assert!(ben.decrypt(&later, true).is_some());
    }
}
