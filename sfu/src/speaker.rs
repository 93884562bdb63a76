//! Who is speaking, from the audio-level header extension alone (RFC 6464: the level of each
//! packet in −dBov, 0 the loudest, 127 silence), never from the payload. A participant speaks
//! when enough of their recent packets are loud; they stop once they have been quiet for a
//! while (so that a pause between two words does not flicker).

use std::collections::VecDeque;

/// Packets louder than this (−dBov, lower is louder) count as voice.
pub const LOUD_LEVEL: u8 = 35;
/// The window the share of loud packets is taken over.
pub const WINDOW_MS: u64 = 500;
/// The share of loud packets in the window that makes one speak.
pub const LOUD_SHARE: f32 = 0.4;
/// How long one is still speaking after the last loud window.
pub const HOLD_MS: u64 = 1000;
/// Fewer packets than this in the window say nothing (a stream just started, or DTX).
const MIN_PACKETS: usize = 5;
/// Most samples kept (50 packets a second for half a second, with room to spare).
const MAX_SAMPLES: usize = 256;

/// The speaking state of one participant.
#[derive(Debug, Clone, Default)]
pub struct SpeakerDetector {
    samples: VecDeque<(u64, bool)>,
    speaking: bool,
    last_loud_ms: u64,
}

impl SpeakerDetector {
    /// Takes one packet's level at `now_ms`; returns the new state when it changes.
    pub fn observe(&mut self, now_ms: u64, level: u8) -> Option<bool> {
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now_ms, level <= LOUD_LEVEL));
        self.evaluate(now_ms)
    }

    /// Re-evaluates at `now_ms` with no new packet (one who stopped sending stops speaking).
    pub fn tick(&mut self, now_ms: u64) -> Option<bool> {
        self.evaluate(now_ms)
    }

    /// Whether they speak now.
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    fn evaluate(&mut self, now_ms: u64) -> Option<bool> {
        while self.samples.front().is_some_and(|(at, _)| now_ms.saturating_sub(*at) > WINDOW_MS) {
            self.samples.pop_front();
        }
        let loud = self.samples.iter().filter(|(_, l)| *l).count();
        let voice = self.samples.len() >= MIN_PACKETS && loud as f32 >= LOUD_SHARE * self.samples.len() as f32;
        if voice {
            self.last_loud_ms = now_ms;
        }
        let speaking = voice || (self.speaking && now_ms.saturating_sub(self.last_loud_ms) < HOLD_MS);
        if speaking != self.speaking {
            self.speaking = speaking;
            return Some(speaking);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds 20 ms packets of `level` from `from` for `ms`; returns the changes seen.
    fn feed(d: &mut SpeakerDetector, from: u64, ms: u64, level: u8) -> Vec<(u64, bool)> {
        (0..ms / 20).filter_map(|i| d.observe(from + i * 20, level).map(|s| (from + i * 20, s))).collect()
    }

    #[test]
    fn speech_starts_within_a_few_packets_and_ends_after_the_hold() {
        let mut d = SpeakerDetector::default();
        assert_eq!(feed(&mut d, 0, 1000, 127), vec![], "silence");
        let started = feed(&mut d, 1000, 1000, 20);
        assert_eq!(started.len(), 1);
        // Within 200 ms, against half a second of silence still in the window.
        assert!(started[0].0 <= 1200 && started[0].1, "{started:?}");
        // A 300 ms pause between words: still speaking.
        assert_eq!(feed(&mut d, 2000, 300, 127), vec![]);
        assert_eq!(feed(&mut d, 2300, 500, 20), vec![]);
        // Silence: stops once the hold is over, not before.
        let stopped = feed(&mut d, 2800, 3000, 127);
        assert_eq!(stopped.len(), 1);
        assert!(!stopped[0].1);
        assert!(stopped[0].0 >= 2800 + HOLD_MS && stopped[0].0 <= 2800 + HOLD_MS + WINDOW_MS, "{stopped:?}");
    }

    #[test]
    fn one_who_stops_sending_stops_speaking() {
        let mut d = SpeakerDetector::default();
        feed(&mut d, 0, 1000, 10);
        assert!(d.speaking());
        assert_eq!(d.tick(1500), None, "within the hold");
        assert_eq!(d.tick(3000), Some(false));
    }

    #[test]
    fn a_few_loud_packets_in_silence_are_not_speech() {
        let mut d = SpeakerDetector::default();
        for i in 0..100u64 {
            let level = if i % 10 == 0 { 5 } else { 127 };
            assert_eq!(d.observe(i * 20, level), None);
        }
    }
}
