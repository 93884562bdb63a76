//! The sans-IO heart of a gateway session: sequence numbers, the replay buffer that makes
//! RESUME lose nothing, and the heartbeat deadline. No sockets, no clocks of its own: time
//! comes in as an argument.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use copains_client_core::gateway::dispatch_text;

/// Why a RESUME cannot continue the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeError {
    /// The client claims a sequence number the server never sent.
    FutureSeq,
    /// Events after the client's sequence number were already dropped from the buffer (to
    /// keep it within its event or byte cap).
    TooOld,
}

/// Sequence numbers and the replay buffer of one session.
#[derive(Debug)]
pub struct SessionCore {
    seq: u64,
    /// Serialized DISPATCH frames by sequence number, oldest first.
    buffer: VecDeque<(u64, Arc<str>)>,
    /// Sum of the frame lengths in `buffer`.
    buffered_bytes: usize,
    capacity: usize,
    max_bytes: usize,
}

impl SessionCore {
    /// A session keeping at most `capacity` events, and at most `max_bytes` bytes of frames,
    /// for replay. Past either cap the oldest frames go first.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self { seq: 0, buffer: VecDeque::new(), buffered_bytes: 0, capacity: capacity.max(1), max_bytes }
    }

    /// Bytes of frames kept for replay.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// The last sequence number handed out.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Builds the next DISPATCH frame and keeps it for replay.
    pub fn dispatch(&mut self, name: &str, payload: &str) -> Arc<str> {
        let frame = self.dispatch_unbuffered(name, payload);
        if frame.len() > self.max_bytes {
            // A frame larger than the whole buffer cannot be kept, and what came before it
            // could never be replayed without it.
            self.buffer.clear();
            self.buffered_bytes = 0;
            return frame;
        }
        while self.buffer.len() >= self.capacity || self.buffered_bytes + frame.len() > self.max_bytes {
            let Some((_, dropped)) = self.buffer.pop_front() else { break };
            self.buffered_bytes -= dropped.len();
        }
        self.buffered_bytes += frame.len();
        self.buffer.push_back((self.seq, frame.clone()));
        frame
    }

    /// Builds the next DISPATCH frame without keeping it (READY: a client that missed it
    /// has no session id to resume with).
    pub fn dispatch_unbuffered(&mut self, name: &str, payload: &str) -> Arc<str> {
        self.seq += 1;
        dispatch_text(self.seq, name, payload).into()
    }

    /// The client says it has processed every frame up to `seq` (the sequence number of its
    /// heartbeats): those frames are no longer needed for a RESUME and are let go, so that a
    /// connected session's buffer holds about one heartbeat interval of events instead of
    /// its whole cap. A number the server never sent is ignored.
    pub fn acknowledge(&mut self, seq: u64) {
        if seq > self.seq {
            return;
        }
        while let Some((s, frame)) = self.buffer.front() {
            if *s > seq {
                break;
            }
            self.buffered_bytes -= frame.len();
            self.buffer.pop_front();
        }
        // A burst can leave a large, mostly empty ring behind; give it back once drained.
        if self.buffer.is_empty() && self.buffer.capacity() > 64 {
            self.buffer.shrink_to(16);
        }
    }

    /// The frames after `last_seen`, for a RESUME.
    pub fn replay_after(&self, last_seen: u64) -> Result<Vec<Arc<str>>, ResumeError> {
        if last_seen > self.seq {
            return Err(ResumeError::FutureSeq);
        }
        if last_seen == self.seq {
            return Ok(Vec::new());
        }
        // The first missed event must still be in the buffer.
        match self.buffer.front() {
            Some((oldest, _)) if *oldest <= last_seen + 1 => {}
            _ => return Err(ResumeError::TooOld),
        }
        Ok(self.buffer.iter().filter(|(s, _)| *s > last_seen).map(|(_, f)| f.clone()).collect())
    }
}

/// When the connection must next hear from the client.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatClock {
    allowance: Duration,
    deadline: Instant,
}

impl HeartbeatClock {
    /// A client must send a heartbeat every `interval`; it gets half an interval of slack.
    pub fn new(interval: Duration, now: Instant) -> Self {
        let allowance = interval + interval / 2;
        Self { allowance, deadline: now + allowance }
    }

    /// A heartbeat arrived.
    pub fn beat(&mut self, now: Instant) {
        self.deadline = now + self.allowance;
    }

    /// The instant after which the connection is dead.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the client missed its heartbeat.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq_of(frame: &str) -> u64 {
        let v: serde_json::Value = serde_json::from_str(frame).expect("json");
        v["s"].as_u64().expect("s")
    }

    #[test]
    fn acknowledged_frames_leave_the_buffer() {
        let mut core = SessionCore::new(1024, 1 << 20);
        core.dispatch_unbuffered("READY", "{}");
        for i in 0..200 {
            core.dispatch("MESSAGE_CREATE", &format!("{{\"n\":{i}}}"));
        }
        let all = core.buffered_bytes();
        core.acknowledge(150);
        assert_eq!(core.replay_after(150).expect("151.. still here").len(), 51);
        assert_eq!(core.replay_after(149), Err(ResumeError::TooOld), "the client said it had 150");
        assert!(core.buffered_bytes() < all / 3);
        core.acknowledge(9_999);
        assert_eq!(core.replay_after(150).expect("a number never sent changes nothing").len(), 51);
        core.acknowledge(201);
        assert_eq!((core.buffered_bytes(), core.replay_after(201).expect("up to date").len()), (0, 0));
        core.dispatch("MESSAGE_CREATE", "{}");
        assert_eq!(core.replay_after(201).expect("the next one").len(), 1);
    }

    #[test]
    fn dispatch_numbers_frames_and_replays_what_was_missed() {
        let mut core = SessionCore::new(8, 1 << 20);
        let ready = core.dispatch_unbuffered("READY", "{}");
        assert_eq!(seq_of(&ready), 1);
        for i in 0..5 {
            core.dispatch("USER_UPDATE", &format!("{{\"i\":{i}}}"));
        }
        assert_eq!(core.seq(), 6);
        let replay = core.replay_after(3).expect("replay");
        assert_eq!(replay.iter().map(|f| seq_of(f)).collect::<Vec<_>>(), vec![4, 5, 6]);
        assert_eq!(core.replay_after(6).expect("nothing missed"), Vec::<Arc<str>>::new());
        assert_eq!(core.replay_after(1).expect("all but READY").len(), 5);
        assert_eq!(core.replay_after(7), Err(ResumeError::FutureSeq));
    }

    #[test]
    fn a_full_buffer_makes_old_positions_unresumable() {
        let mut core = SessionCore::new(3, 1 << 20);
        core.dispatch_unbuffered("READY", "{}");
        for _ in 0..6 {
            core.dispatch("E", "null");
        }
        // Buffer holds 5, 6, 7.
        assert_eq!(core.replay_after(4).expect("4 is the last seen: 5.. still here").len(), 3);
        assert_eq!(core.replay_after(3), Err(ResumeError::TooOld));
        assert_eq!(core.replay_after(0), Err(ResumeError::TooOld));
    }

    #[test]
    fn the_byte_cap_drops_old_frames_and_makes_their_positions_unresumable() {
        let frame_len = {
            let mut probe = SessionCore::new(8, 1 << 20);
            probe.dispatch("E", "\"0123456789\"").len()
        };
        // Room for three frames of this size, not four; plenty of events.
        let mut core = SessionCore::new(1024, 3 * frame_len + frame_len / 2);
        core.dispatch_unbuffered("READY", "{}");
        for _ in 0..3 {
            core.dispatch("E", "\"0123456789\"");
        }
        assert_eq!(core.buffered_bytes(), 3 * frame_len);
        assert_eq!(core.replay_after(1).expect("2, 3, 4 all kept").len(), 3);
        core.dispatch("E", "\"0123456789\"");
        assert_eq!(core.buffered_bytes(), 3 * frame_len, "the oldest frame made room");
        assert_eq!(core.replay_after(1), Err(ResumeError::TooOld), "frame 2 was dropped");
        assert_eq!(core.replay_after(2).expect("3, 4, 5 kept").len(), 3);

        // A frame bigger than the cap is not kept, and nothing before it can be replayed.
        let big = format!("\"{}\"", "x".repeat(4 * frame_len));
        core.dispatch("E", &big);
        assert_eq!(core.buffered_bytes(), 0);
        assert_eq!(core.replay_after(5), Err(ResumeError::TooOld));
        assert_eq!(core.replay_after(6).expect("nothing missed"), Vec::<Arc<str>>::new());
        core.dispatch("E", "null");
        assert_eq!(core.replay_after(6).map(|f| f.len()), Ok(1), "later frames are kept again");
    }

    #[test]
    fn heartbeat_deadline_moves_with_each_beat() {
        let t0 = Instant::now();
        let interval = Duration::from_secs(30);
        let mut hb = HeartbeatClock::new(interval, t0);
        assert!(!hb.expired(t0 + Duration::from_secs(44)));
        assert!(hb.expired(t0 + Duration::from_secs(45)));
        hb.beat(t0 + Duration::from_secs(40));
        assert!(!hb.expired(t0 + Duration::from_secs(84)));
        assert!(hb.expired(t0 + Duration::from_secs(85)));
        assert_eq!(hb.deadline(), t0 + Duration::from_secs(85));
    }

    /// The deadline as the connection driver waits on it (`sleep_until` on the runtime's
    /// clock), on a paused clock that the test moves.
    #[tokio::test(start_paused = true)]
    async fn a_missed_heartbeat_is_noticed_at_the_deadline_on_the_runtime_clock() {
        use tokio::time::{advance, sleep_until, Instant as RtInstant};
        let interval = Duration::from_secs(30);
        let mut hb = HeartbeatClock::new(interval, RtInstant::now().into_std());
        // A client beating every interval is never late, however long it stays.
        for _ in 0..10 {
            advance(interval).await;
            assert!(!hb.expired(RtInstant::now().into_std()));
            hb.beat(RtInstant::now().into_std());
        }
        // Then silence: the wait on the deadline ends 45 s after the last beat, not earlier
        // (nothing else is pending, so the paused clock jumps straight to it).
        let last_beat = RtInstant::now();
        sleep_until(RtInstant::from_std(hb.deadline())).await;
        assert_eq!(RtInstant::now() - last_beat, interval + interval / 2);
        assert!(hb.expired(RtInstant::now().into_std()));
    }
}
