//! Which microphones are forwarded: the loudest few of a room, from the audio-level header
//! extension alone (RFC 6464, never the payload).
//!
//! A room where everyone has an open microphone would otherwise have the SFU forward every
//! participant's audio to every other, 50 packets a second each, though only a few talk: the
//! cost grows with the square of the room. Like Jitsi's "route loudest only" and Google Meet's
//! three audio streams, only the `slots` loudest microphones are forwarded; the others' packets
//! are dropped at the SFU. A subscriber sees a forwarded stream resume after such a gap as it
//! would after discontinuous transmission (contiguous sequence numbers, the timestamp moved by
//! the time gone by: [`crate::munger::Munger::switch`]).
//!
//! A microphone holds its slot while it sends. A newcomer takes a free slot, or the slot of one
//! that stopped sending, or that of the quietest holder when it is louder than that holder by
//! a margin (so that two similar background noises do not take turns). Digital silence (level
//! 127, a muted track) never takes a slot. Loudness is smoothed over a few packets, rising from
//! silence for a microphone that starts or comes back after a pause, so one loud click does not
//! take a slot from a talker.

use std::collections::BTreeMap;

/// A slot's holder with no packet for this long gives it up to the next who asks.
pub const STALE_MS: u64 = 300;
/// How much louder (dB) than the quietest holder one must be to take its slot.
pub const MARGIN_DB: f32 = 6.0;
/// The weight of a new packet's loudness in the smoothed value.
const ALPHA: f32 = 0.3;

#[derive(Debug, Clone, Copy)]
struct Mic {
    /// Smoothed loudness in dB above silence (127 − the level in −dBov).
    loudness: f32,
    last_ms: u64,
    routed: bool,
}

/// The loudest microphones of one room, keyed by track.
#[derive(Debug, Clone, Default)]
pub struct Loudest<K> {
    slots: usize,
    mics: BTreeMap<K, Mic>,
}

impl<K: Ord + Copy> Loudest<K> {
    /// At most `slots` microphones forwarded at once (0: none is bounded, all are forwarded).
    pub fn new(slots: usize) -> Self {
        Self { slots, mics: BTreeMap::new() }
    }

    /// Takes a packet of `track` with its audio level (−dBov, 127 silence) at `now_ms`; whether
    /// it is forwarded. A packet without a level is forwarded and takes no slot: nothing tells
    /// how loud it is.
    pub fn admit(&mut self, track: K, level: Option<u8>, now_ms: u64) -> bool {
        if self.slots == 0 {
            return true;
        }
        let Some(level) = level else { return true };
        let loud = f32::from(127 - level.min(127));
        // A microphone that starts, or sends again after a pause, rises from silence.
        let mic = self.mics.entry(track).or_insert(Mic { loudness: 0.0, last_ms: now_ms, routed: false });
        if now_ms.saturating_sub(mic.last_ms) > STALE_MS {
            mic.loudness = 0.0;
        }
        mic.loudness += (loud - mic.loudness) * ALPHA;
        mic.last_ms = now_ms;
        if mic.routed {
            return true;
        }
        if level >= 127 {
            return false;
        }
        let loudness = mic.loudness;
        let mut held = 0;
        let mut stale: Option<(K, u64)> = None;
        let mut quietest: Option<(K, f32)> = None;
        for (k, m) in self.mics.iter().filter(|(_, m)| m.routed) {
            held += 1;
            if now_ms.saturating_sub(m.last_ms) > STALE_MS {
                if stale.is_none_or(|(_, at)| m.last_ms < at) {
                    stale = Some((*k, m.last_ms));
                }
            } else if quietest.is_none_or(|(_, l)| m.loudness < l) {
                quietest = Some((*k, m.loudness));
            }
        }
        let evict = if held < self.slots {
            None
        } else if let Some((k, _)) = stale {
            Some(k)
        } else {
            match quietest {
                Some((k, l)) if loudness > l + MARGIN_DB => Some(k),
                _ => return false,
            }
        };
        if let Some(k) = evict {
            if let Some(m) = self.mics.get_mut(&k) {
                m.routed = false;
            }
        }
        if let Some(m) = self.mics.get_mut(&track) {
            m.routed = true;
        }
        true
    }

    /// Forgets a track that ended.
    pub fn remove(&mut self, track: K) {
        self.mics.remove(&track);
    }

    /// Every track it remembers.
    #[cfg(test)]
    pub(crate) fn tracks(&self) -> impl Iterator<Item = K> + '_ {
        self.mics.keys().copied()
    }

    /// The tracks holding a slot.
    pub fn routed(&self) -> impl Iterator<Item = K> + '_ {
        self.mics.iter().filter(|(_, m)| m.routed).map(|(k, _)| *k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One 20 ms packet from each of `levels` (track i at levels[i]) at `at`; which were admitted.
    fn round(l: &mut Loudest<u32>, at: u64, levels: &[(u32, u8)]) -> Vec<u32> {
        levels.iter().filter(|(t, level)| l.admit(*t, Some(*level), at)).map(|(t, _)| *t).collect()
    }

    #[test]
    fn only_the_loudest_are_forwarded_and_a_talker_keeps_its_slot() {
        let mut l = Loudest::new(2);
        // Four open microphones with background noise, two of them first.
        let noise = [(1, 70), (2, 72), (3, 71), (4, 73)];
        for i in 0..50 {
            let got = round(&mut l, i * 20, &noise);
            assert_eq!(got, vec![1, 2], "the first two take the slots; similar noise does not take them over");
        }
        // Track 3 starts talking: it takes the slot of the quietest holder (2) within a few packets.
        let mut taken_at = None;
        for i in 50..100 {
            let got = round(&mut l, i * 20, &[(1, 70), (2, 72), (3, 20), (4, 73)]);
            match taken_at {
                None if got.contains(&3) => {
                    taken_at = Some(i);
                    assert_eq!(l.routed().collect::<Vec<_>>(), vec![1, 3], "the quietest holder gave way");
                }
                None => assert_eq!(got, vec![1, 2]),
                Some(_) => assert_eq!(got, vec![1, 3]),
            }
        }
        assert!(taken_at.is_some_and(|i| i <= 52), "{taken_at:?}");
        // Track 4 talks as loudly: it does not take the talker's slot, but the noise's.
        round(&mut l, 100 * 20, &[(1, 70), (2, 72), (3, 20), (4, 20)]);
        assert_eq!(l.routed().collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(round(&mut l, 101 * 20, &[(1, 70), (2, 72), (3, 20), (4, 20)]), vec![3, 4]);
    }

    #[test]
    fn silence_never_takes_a_slot_and_one_who_stops_sending_gives_theirs_up() {
        let mut l = Loudest::new(2);
        for i in 0..10 {
            assert_eq!(round(&mut l, i * 20, &[(1, 127), (2, 30), (3, 40)]), vec![2, 3], "muted: level 127");
        }
        // Track 2 stops sending (muted). A free slot goes to the next who asks once it is stale.
        for i in 10..40 {
            let got = round(&mut l, i * 20, &[(3, 40), (4, 60)]);
            let stale = i * 20 > 9 * 20 + STALE_MS;
            assert_eq!(got.contains(&4), stale, "at {} ms: {got:?}", i * 20);
        }
        // Back: 2 is louder than 4 by more than the margin, and takes 4's slot once its
        // loudness has risen from silence, within a few packets.
        let back = (40..50).find(|i| round(&mut l, i * 20, &[(2, 30), (3, 40), (4, 60)]).contains(&2)).expect("2 is back");
        assert!(back <= 44, "{back}");
        assert_eq!(round(&mut l, 50 * 20, &[(2, 30), (3, 40), (4, 60)]), vec![2, 3]);
    }

    #[test]
    fn one_loud_click_does_not_take_a_talkers_slot() {
        let mut l = Loudest::new(1);
        for i in 0..10 {
            assert_eq!(round(&mut l, i * 20, &[(1, 40), (2, 90)]), vec![1]);
        }
        // A click at 30 dB against 1's 40 dB: smoothed, 2 is far from 6 dB louder than 1.
        assert_eq!(round(&mut l, 200, &[(1, 40), (2, 30)]), vec![1]);
        // Nor a click at full scale from one that was not sending: it rises from silence.
        assert!(!l.admit(3, Some(0), 220));
        for t in (220..=560).step_by(20) {
            assert!(l.admit(1, Some(40), t), "the talker talks on");
        }
        assert!(!l.admit(2, Some(0), 560), "nor one that paused");
    }

    #[test]
    fn no_level_or_no_bound_forwards_everything() {
        let mut l = Loudest::new(1);
        assert!(l.admit(1u32, Some(10), 0));
        assert!(l.admit(2, None, 0), "no level: forwarded, no slot taken");
        assert!(!l.admit(3, Some(60), 0));
        assert_eq!(l.routed().collect::<Vec<_>>(), vec![1]);
        let mut unbounded = Loudest::new(0);
        assert!((0..10u32).all(|t| unbounded.admit(t, Some(127), 0)));
        l.remove(1);
        assert!(l.admit(3, Some(60), 20), "the slot of a track that ended is free");
    }
}
