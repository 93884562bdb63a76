//! Renumbering of one forwarded stream. A subscriber sees one continuous RTP stream per track
//! (its own SSRC, contiguous sequence numbers, a monotonic timestamp) while the SFU switches
//! between the publisher's simulcast layers, each with its own numbering: at a switch, the
//! offsets are moved so that the new layer's first packet follows the last one forwarded.

use crate::rtp::{seq_newer, ts_newer};

/// Renumbers the packets of one subscription.
#[derive(Debug, Clone, Default)]
pub struct Munger {
    state: Option<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    seq_offset: u16,
    ts_offset: u32,
    /// The highest sequence number and timestamp sent, as sent.
    last_seq: u16,
    last_ts: u32,
    /// When the last packet was sent (ms).
    last_at_ms: u64,
    /// The first incoming sequence number of the current layer: anything older is dropped.
    first_seq: u16,
}

impl Munger {
    /// Starts (or moves) the stream at a packet of a new source (the first packet, or the
    /// keyframe of the layer switched to): it follows what was sent last, spaced by the time
    /// gone by at `clock_rate`. Returns the packet's (sequence number, timestamp) to send.
    pub fn switch(&mut self, seq: u16, ts: u32, now_ms: u64, clock_rate: u32) -> (u16, u32) {
        let (out_seq, out_ts) = match self.state {
            None => (seq, ts),
            Some(s) => {
                let elapsed = now_ms.saturating_sub(s.last_at_ms);
                let ticks = (elapsed.saturating_mul(u64::from(clock_rate)) / 1000).clamp(1, u64::from(u32::MAX / 2)) as u32;
                (s.last_seq.wrapping_add(1), s.last_ts.wrapping_add(ticks))
            }
        };
        self.state = Some(State {
            seq_offset: seq.wrapping_sub(out_seq),
            ts_offset: ts.wrapping_sub(out_ts),
            last_seq: out_seq,
            last_ts: out_ts,
            last_at_ms: now_ms,
            first_seq: seq,
        });
        (out_seq, out_ts)
    }

    /// Renumbers a packet of the current source; `None` for one from before the current
    /// source's first packet (a late packet of the layer switched from is never mixed in).
    pub fn forward(&mut self, seq: u16, ts: u32, now_ms: u64) -> Option<(u16, u32)> {
        let s = self.state.as_mut()?;
        if seq_newer(s.first_seq, seq) {
            return None;
        }
        let out_seq = seq.wrapping_sub(s.seq_offset);
        let out_ts = ts.wrapping_sub(s.ts_offset);
        if seq_newer(out_seq, s.last_seq) {
            s.last_seq = out_seq;
            s.last_at_ms = now_ms;
        }
        if ts_newer(out_ts, s.last_ts) {
            s.last_ts = out_ts;
        }
        Some((out_seq, out_ts))
    }

    /// Whether the stream has started.
    pub fn started(&self) -> bool {
        self.state.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_continues_the_numbering() {
        let mut m = Munger::default();
        assert_eq!(m.switch(1000, 90_000, 0, 90_000), (1000, 90_000));
        assert_eq!(m.forward(1001, 93_000, 33), Some((1001, 93_000)));
        // Another layer, with its own numbers, 33 ms later.
        let (seq, ts) = m.switch(60_000, 5, 66, 90_000);
        assert_eq!(seq, 1002);
        assert_eq!(ts, 93_000 + 33 * 90);
        assert_eq!(m.forward(60_001, 3005, 99), Some((1003, 93_000 + 33 * 90 + 3000)));
        // A late packet of the new layer from before its keyframe: dropped.
        assert_eq!(m.forward(59_999, 0, 100), None);
    }

    #[test]
    fn numbering_wraps() {
        let mut m = Munger::default();
        m.switch(65_534, u32::MAX - 10, 0, 48_000);
        assert_eq!(m.forward(65_535, u32::MAX, 20), Some((65_535, u32::MAX)));
        assert_eq!(m.forward(0, 9, 40), Some((0, 9)));
        let (seq, _) = m.switch(7, 7, 60, 48_000);
        assert_eq!(seq, 1);
    }
}
