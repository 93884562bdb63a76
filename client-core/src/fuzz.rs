//! Entry points for fuzzing (the targets in `fuzz/`) and for the seeded walks the test suites
//! run on every build: each takes any bytes, drives the code a hostile peer reaches with them,
//! and panics only when an invariant breaks. Also the [`Mutator`] those walks use.

use crate::gateway::{ClientMessage, ServerMessage};

/// A frame from a client, as the gateway reads it: refused, or read into a message that
/// serializes back to itself and respects its own size limit's order (no op carries more than
/// the voice frame limit). Returns whether it was read.
pub fn client_frame(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let Ok(message) = ClientMessage::parse(text) else { return false };
    assert!(message.frame_limit() <= crate::voice_signal::VOICE_FRAME_MAX_BYTES);
    let again = ClientMessage::parse(&message.to_text()).expect("a message reads back from its own text");
    assert_eq!(again, message, "a message changed on its way through its text");
    true
}

/// A frame from the server, as a client reads it (the server may be hostile): refused, or read
/// without a panic into a message whose dispatch keeps the frame's event name. Returns whether
/// it was read.
pub fn server_frame(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    match ServerMessage::parse(text) {
        Ok(ServerMessage::Dispatch { event, .. }) => {
            // Only `t`, read the way the frame was (other fields skipped, whatever they hold).
            #[derive(serde::Deserialize)]
            struct Name {
                t: Option<String>,
            }
            let t = serde_json::from_str::<Name>(text).ok().and_then(|n| n.t);
            assert_eq!(t.as_deref(), Some(event.name()), "an event changed its name");
            true
        }
        Ok(_) => true,
        Err(_) => false,
    }
}

/// What a receiver does with a media frame that came through the SFU (which may be hostile):
/// the bytes as a frame of their own, and one real sealed frame changed by them (bits flipped
/// from an offset, or cut short). Nothing but the untouched frame may open, and it opens to
/// what was sealed, under its sender's slot: the clear bytes an SFU reads are authenticated
/// too. Returns whether the changed frame opened (only when nothing was changed).
#[cfg(feature = "voice")]
pub fn sframe_open(data: &[u8]) -> bool {
    use crate::voice::{clear_bytes, MediaReceiver, MediaSender, CLEAR_BYTES_MAX};
    let Some((&first, rest)) = data.split_first() else { return false };
    let audio = first & 1 == 0;
    // A VP8 keyframe header and some payload, or an Opus TOC byte and some payload.
    let frame: &[u8] = if audio {
        &[0x78, 0x0b, 0xe4, 0xc1, 0x36, 0xec, 0xc5, 0x80, 0x00, 0x11]
    } else {
        &[0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, 0x39, 0x6b, 0x00, 0x27, 0x1c, 0x24, 0x0c, 0x2c]
    };
    let mut sender = MediaSender::fresh(3, 1).expect("a fresh key");
    let mut receiver = MediaReceiver::default();
    receiver.add(&sender.share()).expect("a share of a fresh key is taken");
    let clear = clear_bytes(audio, frame);
    let sealed = sender.encrypt(frame, clear).expect("a frame seals");

    let _ = receiver.decrypt(rest, usize::from(first >> 2) % (CLEAR_BYTES_MAX + 2));

    let mut tampered = sealed.clone();
    if first & 2 == 0 {
        let offset = usize::from(first >> 2);
        for (i, b) in rest.iter().enumerate() {
            let at = (offset + i) % tampered.len();
            tampered[at] ^= b;
        }
    } else {
        tampered.truncate(rest.len() % tampered.len());
    }
    let Ok((slot, opened)) = receiver.decrypt(&tampered, clear) else { return false };
    assert_eq!(tampered, sealed, "a changed frame opened");
    assert_eq!(slot, 3, "a frame opened under another slot");
    assert_eq!(opened, frame, "a frame opened to something else");
    true
}

/// A seeded, repeatable source of changes to a valid input, for the walks the test suites run
/// (libFuzzer explores further; these keep every build honest): bytes flipped, dropped or
/// inserted from a set of tokens, whole lines dropped, repeated, swapped or taken from another
/// seed, and cuts.
#[derive(Debug, Clone)]
pub struct Mutator {
    state: u64,
}

impl Mutator {
    /// A mutator starting from `seed` (the same seed, the same walk).
    pub fn new(seed: u64) -> Self {
        Self { state: seed | 1 }
    }

    /// The next pseudo-random number (xorshift64).
    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// `seeds[k]` (for some k) changed one to eight times; `tokens` are what inserted bytes
    /// and replaced words are drawn from.
    pub fn mutate(&mut self, seeds: &[&[u8]], tokens: &[&[u8]]) -> Vec<u8> {
        let mut out = seeds[self.below(seeds.len())].to_vec();
        for _ in 0..=self.below(8) {
            let lines: Vec<&[u8]> = out.split_inclusive(|b| *b == b'\n').collect();
            let change = self.below(9);
            let mut next: Vec<u8> = Vec::with_capacity(out.len() + 64);
            match change {
                // Lines: drop one, repeat one, swap two, take one from another seed.
                0..=3 if !lines.is_empty() => {
                    let (a, b) = (self.below(lines.len()), self.below(lines.len()));
                    let donor_seed = seeds[self.below(seeds.len())];
                    let donor: Vec<&[u8]> = donor_seed.split_inclusive(|b| *b == b'\n').collect();
                    let donor_line = donor.get(self.below(donor.len())).copied().unwrap_or(b"");
                    for (i, line) in lines.iter().enumerate() {
                        match change {
                            0 if i == a => {}
                            1 if i == a => {
                                next.extend_from_slice(line);
                                next.extend_from_slice(line);
                            }
                            2 if i == a => next.extend_from_slice(lines[b]),
                            2 if i == b => next.extend_from_slice(lines[a]),
                            3 if i == a => next.extend_from_slice(donor_line),
                            _ => next.extend_from_slice(line),
                        }
                    }
                }
                // Bytes: flip one, drop a run, insert a token, cut the end.
                4 if !out.is_empty() => {
                    next = out.clone();
                    let at = self.below(next.len());
                    next[at] ^= 1 << self.below(8);
                }
                5 if !out.is_empty() => {
                    next = out.clone();
                    let at = self.below(next.len());
                    let len = self.below(16).min(next.len() - at);
                    next.drain(at..at + len);
                }
                6 | 7 if !tokens.is_empty() => {
                    next = out.clone();
                    let at = self.below(next.len() + 1);
                    let token = tokens[self.below(tokens.len())];
                    next.splice(at..at, token.iter().copied());
                }
                _ => {
                    next = out.clone();
                    let at = self.below(next.len() + 1);
                    next.truncate(at);
                }
            }
            out = next;
        }
        out
    }
}
