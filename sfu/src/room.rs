//! One voice room: its participants, the tracks they publish, what every other participant
//! receives of each track (its simulcast layer), and the decisions that follow from packets,
//! requests and the time. Inputs are method calls with `now` in milliseconds; decisions come
//! out of [`Room::poll_output`] and, for packets, as [`Forward`]s.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use crate::loudest::Loudest;
use crate::munger::Munger;
use crate::rtp::{Pid, RtpMeta, TrackId};
use crate::speaker::SpeakerDetector;

/// What a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// Opus.
    Audio,
    /// A camera (VP8, up to three simulcast layers).
    Camera,
    /// A screen share (VP8, up to three simulcast layers).
    Screen,
}

impl TrackKind {
    pub(crate) fn clock_rate(self) -> u32 {
        match self {
            TrackKind::Audio => 48_000,
            TrackKind::Camera | TrackKind::Screen => 90_000,
        }
    }

    fn is_video(self) -> bool {
        self != TrackKind::Audio
    }
}

/// The quality a subscriber asks for on a track (the layer it may get at most).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Quality {
    /// Nothing (a hidden tile, a deafened participant's audio).
    Off,
    /// The lowest layer.
    Low,
    /// The middle layer.
    Medium,
    /// The highest layer the publisher sends.
    High,
}

impl Quality {
    fn max_layer(self) -> Option<u8> {
        match self {
            Quality::Off => None,
            Quality::Low => Some(0),
            Quality::Medium => Some(1),
            Quality::High => Some(2),
        }
    }
}

/// Bounds of a room.
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    /// Participants at most.
    pub max_participants: usize,
    /// Tracks one participant publishes at most.
    pub max_tracks: usize,
    /// Simulcast layers of a video track at most.
    pub max_layers: u8,
    /// Microphones forwarded at once, the loudest ([`crate::loudest`]); 0 forwards them all.
    pub loudest_audio: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        Self { max_participants: 100, max_tracks: 4, max_layers: 3, loudest_audio: 5 }
    }
}

/// Why an input was refused (the room is unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomError {
    /// The room holds its maximum of participants.
    Full,
    /// That participant is in the room already.
    AlreadyIn,
    /// No such participant in the room.
    NotIn,
    /// The participant publishes its maximum of tracks.
    TooManyTracks,
    /// That track id is taken.
    DuplicateTrack,
    /// No such track, or not that participant's.
    UnknownTrack,
    /// Layers out of range (audio has one; video 1 to the maximum).
    BadLayers,
}

impl fmt::Display for RoomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoomError::Full => "the room is full",
            RoomError::AlreadyIn => "already in the room",
            RoomError::NotIn => "not in the room",
            RoomError::TooManyTracks => "too many tracks",
            RoomError::DuplicateTrack => "that track id is taken",
            RoomError::UnknownTrack => "no such track",
            RoomError::BadLayers => "a track's layers are out of range",
        })
    }
}

impl std::error::Error for RoomError {}

/// A packet to send to a subscriber: the incoming packet, renumbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Who gets it.
    pub sub: Pid,
    /// The track (the subscriber's outgoing stream of it).
    pub track: TrackId,
    /// Its sequence number on that stream.
    pub seq: u16,
    /// Its timestamp on that stream.
    pub timestamp: u32,
}

/// A decision for the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A new media epoch: someone joined or left, every participant re-keys.
    Epoch {
        /// The new epoch.
        epoch: u64,
        /// Who joined.
        joined: Option<Pid>,
        /// Who left.
        left: Option<Pid>,
    },
    /// `sub` now receives `track` of `publisher` (an outgoing stream to negotiate).
    Subscribe {
        /// The subscriber.
        sub: Pid,
        /// The track.
        track: TrackId,
        /// Its publisher.
        publisher: Pid,
        /// What it carries.
        kind: TrackKind,
    },
    /// `sub` no longer receives `track`.
    Unsubscribe {
        /// The subscriber.
        sub: Pid,
        /// The track.
        track: TrackId,
    },
    /// Ask the publisher for a keyframe on one layer (an RTCP PLI upstream).
    RequestKeyframe {
        /// The publisher.
        publisher: Pid,
        /// The track.
        track: TrackId,
        /// The layer.
        layer: u8,
    },
    /// The layer `sub` receives of `track` changed (`None`: nothing).
    LayerChanged {
        /// The subscriber.
        sub: Pid,
        /// The track.
        track: TrackId,
        /// The layer now forwarded.
        layer: Option<u8>,
    },
    /// A participant started or stopped speaking.
    Speaking {
        /// Who.
        pid: Pid,
        /// Whether they speak now.
        speaking: bool,
    },
}

/// A keyframe is asked for a layer at most this often.
pub const KEYFRAME_REQUEST_INTERVAL_MS: u64 = 500;
/// An upgrade needs this much headroom (in fifths: 6/5 = 1.2×) over the layer's rate.
const UPGRADE_HEADROOM_FIFTHS: u64 = 6;
/// A simulcast layer with no packet for this long is not being sent (a browser stops its upper
/// layers when its own uplink is short): subscribers move to a layer that is.
pub const LAYER_IDLE_MS: u64 = 1_500;

#[derive(Debug, Default)]
struct Participant {
    bandwidth_bps: Option<u64>,
    speaker: SpeakerDetector,
    tracks: Vec<TrackId>,
}

/// The measured rate of one layer, over windows of a second.
#[derive(Debug, Clone, Copy, Default)]
struct Rate {
    window_start_ms: u64,
    bytes: u64,
    bps: u64,
}

impl Rate {
    fn add(&mut self, now_ms: u64, bytes: usize) {
        if self.window_start_ms == 0 {
            self.window_start_ms = now_ms.max(1);
        }
        self.bytes = self.bytes.saturating_add(bytes as u64);
        let elapsed = now_ms.saturating_sub(self.window_start_ms);
        if elapsed >= 1000 {
            self.bps = self.bytes.saturating_mul(8_000) / elapsed;
            self.bytes = 0;
            self.window_start_ms = now_ms.max(1);
        }
    }
}

#[derive(Debug)]
struct Track {
    owner: Pid,
    kind: TrackKind,
    layers: u8,
    rates: [Rate; 3],
    last_keyframe_request_ms: [Option<u64>; 3],
    /// When each layer last had a packet.
    last_packet_ms: [Option<u64>; 3],
    /// The layers being sent, as of the last tick (a bit per layer), once known.
    live: Option<u8>,
    /// Audio: its last packet was not forwarded (not among the loudest).
    dropping: bool,
}

impl Track {
    /// The layers that had a packet within [`LAYER_IDLE_MS`] of `now_ms`.
    fn live_layers(&self, now_ms: u64) -> u8 {
        (0..self.layers.min(3)).fold(0, |mask, l| match self.last_packet_ms[usize::from(l)] {
            Some(at) if now_ms.saturating_sub(at) < LAYER_IDLE_MS => mask | 1 << l,
            _ => mask,
        })
    }
}

#[derive(Debug, Default)]
struct Subscription {
    requested: Option<Quality>,
    target: Option<u8>,
    current: Option<u8>,
    munger: Munger,
    /// Audio dropped since the last packet forwarded (not among the loudest): the next one
    /// forwarded starts a new run, following what was sent.
    gap: bool,
}

/// One room.
#[derive(Debug, Default)]
pub struct Room {
    limits: RoomLimits,
    epoch: u64,
    participants: BTreeMap<Pid, Participant>,
    tracks: BTreeMap<TrackId, Track>,
    /// By (track, subscriber): a track's subscribers are one range.
    subs: BTreeMap<(TrackId, Pid), Subscription>,
    loudest: Loudest<TrackId>,
    out: VecDeque<Output>,
}

impl Room {
    /// An empty room with these limits.
    pub fn new(limits: RoomLimits) -> Self {
        Self { limits, loudest: Loudest::new(limits.loudest_audio), ..Self::default() }
    }

    /// The current media epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The participants, in id order.
    pub fn participants(&self) -> impl Iterator<Item = Pid> + '_ {
        self.participants.keys().copied()
    }

    /// Whether `track` is published in this room.
    pub fn has_track(&self, track: TrackId) -> bool {
        self.tracks.contains_key(&track)
    }

    /// The layer `sub` receives of `track` now.
    pub fn layer_of(&self, sub: Pid, track: TrackId) -> Option<u8> {
        self.subs.get(&(track, sub)).and_then(|s| s.current)
    }

    /// The next decision, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// A participant joins: a new epoch, and they receive every track published.
    pub fn join(&mut self, pid: Pid, now_ms: u64) -> Result<u64, RoomError> {
        if self.participants.contains_key(&pid) {
            return Err(RoomError::AlreadyIn);
        }
        if self.participants.len() >= self.limits.max_participants {
            return Err(RoomError::Full);
        }
        self.participants.insert(pid, Participant::default());
        self.epoch += 1;
        self.out.push_back(Output::Epoch { epoch: self.epoch, joined: Some(pid), left: None });
        let tracks: Vec<TrackId> = self.tracks.keys().copied().collect();
        for track in tracks {
            self.subscribe(pid, track, now_ms);
        }
        Ok(self.epoch)
    }

    /// A participant leaves (or is removed): their tracks and subscriptions go, and a new
    /// epoch starts.
    pub fn leave(&mut self, pid: Pid) -> Result<u64, RoomError> {
        let participant = self.participants.remove(&pid).ok_or(RoomError::NotIn)?;
        for track in participant.tracks {
            self.drop_track(track);
        }
        self.subs.retain(|(_, sub), _| *sub != pid);
        if participant.speaker.speaking() {
            self.out.push_back(Output::Speaking { pid, speaking: false });
        }
        self.epoch += 1;
        self.out.push_back(Output::Epoch { epoch: self.epoch, joined: None, left: Some(pid) });
        Ok(self.epoch)
    }

    /// A participant publishes a track with `layers` simulcast layers; every other participant
    /// receives it.
    pub fn publish(&mut self, pid: Pid, track: TrackId, kind: TrackKind, layers: u8, now_ms: u64) -> Result<(), RoomError> {
        let participant = self.participants.get_mut(&pid).ok_or(RoomError::NotIn)?;
        if self.tracks.contains_key(&track) {
            return Err(RoomError::DuplicateTrack);
        }
        if participant.tracks.len() >= self.limits.max_tracks {
            return Err(RoomError::TooManyTracks);
        }
        let layers_ok = match kind {
            TrackKind::Audio => layers == 1,
            TrackKind::Camera | TrackKind::Screen => (1..=self.limits.max_layers.min(3)).contains(&layers),
        };
        if !layers_ok {
            return Err(RoomError::BadLayers);
        }
        participant.tracks.push(track);
        self.tracks.insert(
            track,
            Track {
                owner: pid,
                kind,
                layers,
                rates: [Rate::default(); 3],
                last_keyframe_request_ms: [None; 3],
                last_packet_ms: [None; 3],
                live: None,
                dropping: false,
            },
        );
        let others: Vec<Pid> = self.participants.keys().copied().filter(|p| *p != pid).collect();
        for sub in others {
            self.subscribe(sub, track, now_ms);
        }
        Ok(())
    }

    /// A participant stops publishing a track.
    pub fn unpublish(&mut self, pid: Pid, track: TrackId) -> Result<(), RoomError> {
        if self.tracks.get(&track).is_none_or(|t| t.owner != pid) {
            return Err(RoomError::UnknownTrack);
        }
        if let Some(p) = self.participants.get_mut(&pid) {
            p.tracks.retain(|t| *t != track);
        }
        self.drop_track(track);
        Ok(())
    }

    /// A subscriber asks for a quality of a track.
    pub fn request_quality(&mut self, sub: Pid, track: TrackId, quality: Quality, now_ms: u64) -> Result<(), RoomError> {
        let s = self.subs.get_mut(&(track, sub)).ok_or(RoomError::UnknownTrack)?;
        s.requested = Some(quality);
        self.select(sub, track, now_ms);
        Ok(())
    }

    /// A subscriber's estimated downlink bandwidth (`None`: no limit known).
    pub fn set_bandwidth(&mut self, sub: Pid, bps: Option<u64>, now_ms: u64) -> Result<(), RoomError> {
        self.participants.get_mut(&sub).ok_or(RoomError::NotIn)?.bandwidth_bps = bps;
        let tracks: Vec<TrackId> = self.subs.keys().filter(|(_, s)| *s == sub).map(|(t, _)| *t).collect();
        for track in tracks {
            self.select(sub, track, now_ms);
        }
        Ok(())
    }

    /// A subscriber lost a picture (an RTCP PLI or FIR): the layer it receives is asked for a
    /// keyframe (at most every [`KEYFRAME_REQUEST_INTERVAL_MS`]).
    pub fn keyframe_request(&mut self, sub: Pid, track: TrackId, now_ms: u64) -> Result<(), RoomError> {
        let s = self.subs.get(&(track, sub)).ok_or(RoomError::UnknownTrack)?;
        if let Some(layer) = s.current.or(s.target) {
            self.request_keyframe(track, layer, now_ms);
        }
        Ok(())
    }

    /// The time passes: who stopped sending stops speaking.
    pub fn tick(&mut self, now_ms: u64) {
        for (pid, p) in &mut self.participants {
            if let Some(speaking) = p.speaker.tick(now_ms) {
                self.out.push_back(Output::Speaking { pid: *pid, speaking });
            }
        }
        // A simulcast layer that started or stopped: its subscribers choose again.
        let mut changed = Vec::new();
        for (id, t) in &mut self.tracks {
            if t.kind.is_video() && t.layers > 1 {
                let live = Some(t.live_layers(now_ms));
                if live != t.live {
                    t.live = live;
                    changed.push(*id);
                }
            }
        }
        for track in changed {
            let subs: Vec<Pid> = self.subs.range((track, Pid::MIN)..=(track, Pid::MAX)).map(|((_, s), _)| *s).collect();
            for sub in subs {
                self.select(sub, track, now_ms);
            }
        }
    }

    /// An incoming packet: where it goes, renumbered, into `forward` (cleared first). A packet
    /// of a track that is not its sender's, or of a layer the track does not have, goes
    /// nowhere.
    pub fn route_rtp(&mut self, now_ms: u64, meta: &RtpMeta, forward: &mut Vec<Forward>) {
        forward.clear();
        let Some(track) = self.tracks.get_mut(&meta.track) else { return };
        if track.owner != meta.pid || meta.layer >= track.layers {
            return;
        }
        let layer = usize::from(meta.layer);
        track.rates[layer].add(now_ms, meta.len);
        track.last_packet_ms[layer] = Some(now_ms);
        let (kind, track_id) = (track.kind, meta.track);
        if kind == TrackKind::Audio {
            if let (Some(level), Some(p)) = (meta.audio_level, self.participants.get_mut(&meta.pid)) {
                if let Some(speaking) = p.speaker.observe(now_ms, level) {
                    self.out.push_back(Output::Speaking { pid: meta.pid, speaking });
                }
            }
            let forwarded = self.loudest.admit(track_id, meta.audio_level, now_ms);
            let was_dropping = self.tracks.get_mut(&track_id).is_some_and(|t| std::mem::replace(&mut t.dropping, !forwarded));
            if !forwarded {
                if !was_dropping {
                    // The first packet of a run not forwarded: each subscriber's stream pauses.
                    for ((_, _), s) in self.subs.range_mut((track_id, Pid::MIN)..=(track_id, Pid::MAX)) {
                        s.gap = true;
                    }
                }
                return;
            }
        }
        let mut waiting = false;
        for ((_, sub), s) in self.subs.range_mut((track_id, Pid::MIN)..=(track_id, Pid::MAX)) {
            let renumbered = if s.gap && s.current.is_some() && s.target.is_some() {
                s.gap = false;
                Some(s.munger.switch(meta.seq, meta.timestamp, now_ms, kind.clock_rate()))
            } else if s.current == Some(meta.layer) && s.target.is_some() {
                s.munger.forward(meta.seq, meta.timestamp, now_ms)
            } else if s.target == Some(meta.layer) && (!kind.is_video() || meta.keyframe_start) {
                s.current = Some(meta.layer);
                s.gap = false;
                self.out.push_back(Output::LayerChanged { sub: *sub, track: track_id, layer: s.current });
                Some(s.munger.switch(meta.seq, meta.timestamp, now_ms, kind.clock_rate()))
            } else {
                waiting |= s.target == Some(meta.layer) && s.current.is_none();
                None
            };
            if let Some((seq, timestamp)) = renumbered {
                forward.push(Forward { sub: *sub, track: track_id, seq, timestamp });
            }
        }
        if waiting {
            // A subscriber with nothing yet waits for this layer's keyframe: ask again.
            self.request_keyframe(track_id, meta.layer, now_ms);
        }
    }

    fn subscribe(&mut self, sub: Pid, track: TrackId, now_ms: u64) {
        let Some(t) = self.tracks.get(&track) else { return };
        let (publisher, kind) = (t.owner, t.kind);
        self.subs.insert((track, sub), Subscription::default());
        self.out.push_back(Output::Subscribe { sub, track, publisher, kind });
        self.select(sub, track, now_ms);
    }

    fn drop_track(&mut self, track: TrackId) {
        self.tracks.remove(&track);
        self.loudest.remove(track);
        let subs: Vec<Pid> = self.subs.range((track, Pid::MIN)..=(track, Pid::MAX)).map(|((_, s), _)| *s).collect();
        for sub in subs {
            self.subs.remove(&(track, sub));
            self.out.push_back(Output::Unsubscribe { sub, track });
        }
    }

    /// Chooses the layer `sub` should receive of `track`: at most the one asked for, and the
    /// best that fits the subscriber's share of its bandwidth (an upgrade needs headroom), of
    /// the layers being sent; the lowest being sent if none of those is.
    fn select(&mut self, sub: Pid, track: TrackId, now_ms: u64) {
        let Some(t) = self.tracks.get(&track) else { return };
        let video_subs =
            self.subs.iter().filter(|((tr, s), _)| *s == sub && self.tracks.get(tr).is_some_and(|t| t.kind.is_video())).count();
        let share = self.participants.get(&sub).and_then(|p| p.bandwidth_bps).map(|bw| bw / video_subs.max(1) as u64);
        let Some(s) = self.subs.get_mut(&(track, sub)) else { return };
        let requested = s.requested.unwrap_or(Quality::High);
        let target = requested.max_layer().map(|max| {
            let max = max.min(t.layers - 1);
            if !t.kind.is_video() {
                return 0;
            }
            // Nothing sent for a while (a paused camera): the choice stays.
            if t.live == Some(0) {
                return s.target.unwrap_or(max);
            }
            // Nothing known yet (no tick since the track began): as if every layer were sent.
            let sent = |l: u8| t.live.is_none_or(|live| live & (1 << l) != 0);
            let current = s.current.unwrap_or(0);
            let fits = |l: u8| {
                let Some(share) = share else { return true };
                let bps = t.rates[usize::from(l)].bps;
                let needed = if l > current { bps * UPGRADE_HEADROOM_FIFTHS / 5 } else { bps };
                l == 0 || bps == 0 || share >= needed
            };
            (0..=max).rev().find(|&l| sent(l) && fits(l)).or_else(|| (0..t.layers).find(|&l| sent(l))).unwrap_or(0)
        });
        if target == s.target {
            return;
        }
        s.target = target;
        match target {
            None => {
                if s.current.take().is_some() {
                    self.out.push_back(Output::LayerChanged { sub, track, layer: None });
                }
            }
            Some(layer) if s.current != Some(layer) && t.kind.is_video() => self.request_keyframe(track, layer, now_ms),
            Some(_) => {}
        }
    }

    fn request_keyframe(&mut self, track: TrackId, layer: u8, now_ms: u64) {
        let Some(t) = self.tracks.get_mut(&track) else { return };
        if !t.kind.is_video() {
            return;
        }
        let Some(last) = t.last_keyframe_request_ms.get_mut(usize::from(layer)) else { return };
        if last.is_some_and(|at| now_ms.saturating_sub(at) < KEYFRAME_REQUEST_INTERVAL_MS) {
            return;
        }
        *last = Some(now_ms);
        self.out.push_back(Output::RequestKeyframe { publisher: t.owner, track, layer });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn drain(room: &mut Room) -> Vec<Output> {
        std::iter::from_fn(|| room.poll_output()).collect()
    }

    fn packet(pid: Pid, track: TrackId, layer: u8, seq: u16, ts: u32, key: bool) -> RtpMeta {
        RtpMeta { pid, track, layer, seq, timestamp: ts, marker: false, audio_level: None, keyframe_start: key, len: 1000 }
    }

    /// Three participants; 1 publishes audio (track 10) and a 3-layer camera (track 11).
    fn room_of_three() -> Room {
        let mut room = Room::new(RoomLimits::default());
        for pid in 1..=3 {
            room.join(pid, 0).expect("join");
        }
        room.publish(1, 10, TrackKind::Audio, 1, 0).expect("audio");
        room.publish(1, 11, TrackKind::Camera, 3, 0).expect("camera");
        drain(&mut room);
        room
    }

    #[test]
    fn joins_and_leaves_make_epochs_and_subscriptions() {
        let mut room = Room::new(RoomLimits::default());
        assert_eq!(room.join(1, 0), Ok(1));
        room.publish(1, 10, TrackKind::Audio, 1, 0).expect("publish");
        assert_eq!(drain(&mut room), vec![Output::Epoch { epoch: 1, joined: Some(1), left: None }]);
        assert_eq!(room.join(2, 0), Ok(2));
        assert_eq!(
            drain(&mut room),
            vec![
                Output::Epoch { epoch: 2, joined: Some(2), left: None },
                Output::Subscribe { sub: 2, track: 10, publisher: 1, kind: TrackKind::Audio },
            ]
        );
        assert_eq!(room.join(2, 0), Err(RoomError::AlreadyIn));
        assert_eq!(room.leave(1), Ok(3));
        assert_eq!(
            drain(&mut room),
            vec![Output::Unsubscribe { sub: 2, track: 10 }, Output::Epoch { epoch: 3, joined: None, left: Some(1) }]
        );
        assert_eq!(room.leave(1), Err(RoomError::NotIn));
        assert_eq!(room.participants().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn the_room_and_the_tracks_are_bounded() {
        let mut room = Room::new(RoomLimits::default());
        for pid in 0..100 {
            room.join(pid, 0).expect("join");
        }
        assert_eq!(room.join(100, 0), Err(RoomError::Full));
        assert_eq!(room.epoch(), 100, "a refused join makes no epoch");
        assert_eq!(room.publish(0, 1, TrackKind::Audio, 3, 0), Err(RoomError::BadLayers));
        assert_eq!(room.publish(0, 1, TrackKind::Camera, 4, 0), Err(RoomError::BadLayers));
        assert_eq!(room.publish(0, 1, TrackKind::Camera, 0, 0), Err(RoomError::BadLayers));
        for track in 1..=4 {
            room.publish(0, track, TrackKind::Screen, 1, 0).expect("publish");
        }
        assert_eq!(room.publish(0, 5, TrackKind::Audio, 1, 0), Err(RoomError::TooManyTracks));
        assert_eq!(room.publish(1, 4, TrackKind::Audio, 1, 0), Err(RoomError::DuplicateTrack));
        assert_eq!(room.publish(200, 9, TrackKind::Audio, 1, 0), Err(RoomError::NotIn));
        assert_eq!(room.unpublish(1, 4), Err(RoomError::UnknownTrack), "another's track");
    }

    #[test]
    fn audio_reaches_every_other_participant_renumbered_from_its_first_packet() {
        let mut room = room_of_three();
        let mut fwd = Vec::new();
        room.route_rtp(0, &packet(1, 10, 0, 500, 9000, false), &mut fwd);
        assert_eq!(
            fwd,
            vec![
                Forward { sub: 2, track: 10, seq: 500, timestamp: 9000 },
                Forward { sub: 3, track: 10, seq: 500, timestamp: 9000 }
            ]
        );
        // Another's packet claiming the track, or a layer audio does not have: nowhere.
        room.route_rtp(20, &packet(2, 10, 0, 501, 9960, false), &mut fwd);
        assert!(fwd.is_empty());
        room.route_rtp(20, &packet(1, 10, 1, 501, 9960, false), &mut fwd);
        assert!(fwd.is_empty());
        room.route_rtp(20, &packet(1, 99, 0, 501, 9960, false), &mut fwd);
        assert!(fwd.is_empty());
    }

    #[test]
    fn video_starts_at_a_keyframe_of_the_layer_chosen() {
        let mut room = room_of_three();
        room.request_quality(2, 11, Quality::Low, 0).expect("quality");
        // Participant 2 now wants layer 0: a keyframe is asked for it.
        assert_eq!(drain(&mut room), vec![Output::RequestKeyframe { publisher: 1, track: 11, layer: 0 }]);
        let mut fwd = Vec::new();
        room.route_rtp(10, &packet(1, 11, 0, 100, 1000, false), &mut fwd);
        assert!(fwd.iter().all(|f| f.sub != 2), "no keyframe yet");
        room.route_rtp(20, &packet(1, 11, 0, 101, 1000, true), &mut fwd);
        assert!(fwd.contains(&Forward { sub: 2, track: 11, seq: 101, timestamp: 1000 }));
        assert_eq!(room.layer_of(2, 11), Some(0));
        assert!(drain(&mut room).contains(&Output::LayerChanged { sub: 2, track: 11, layer: Some(0) }));
        // Quality off: nothing more.
        room.request_quality(2, 11, Quality::Off, 30).expect("off");
        room.route_rtp(40, &packet(1, 11, 0, 102, 4000, true), &mut fwd);
        assert!(fwd.iter().all(|f| f.sub != 2));
        assert_eq!(room.layer_of(2, 11), None);
    }

    #[test]
    fn keyframe_requests_are_throttled() {
        let mut room = room_of_three();
        // (The subscriptions asked for a keyframe at 0.)
        room.keyframe_request(2, 11, 1000).expect("pli");
        room.keyframe_request(3, 11, 1100).expect("pli");
        room.keyframe_request(2, 11, 1400).expect("pli");
        assert_eq!(
            drain(&mut room),
            vec![Output::RequestKeyframe { publisher: 1, track: 11, layer: 2 }],
            "one request per layer per 500 ms"
        );
        room.keyframe_request(2, 11, 1600).expect("pli");
        assert_eq!(drain(&mut room), vec![Output::RequestKeyframe { publisher: 1, track: 11, layer: 2 }]);
        assert_eq!(room.keyframe_request(2, 99, 1700), Err(RoomError::UnknownTrack));
        assert_eq!(room.keyframe_request(1, 11, 1700), Err(RoomError::UnknownTrack), "one's own track");
    }

    /// A camera sending all three layers at 100 kbit/s, 300 kbit/s and 1.2 Mbit/s for `ms`,
    /// one packet per layer every 10 ms, a keyframe every second; returns what `sub` got.
    fn stream(room: &mut Room, from: u64, ms: u64, seqs: &mut [u16; 3], sub: Pid) -> Vec<Forward> {
        let sizes = [125usize, 375, 1500];
        let mut got = Vec::new();
        let mut fwd = Vec::new();
        for step in 0..ms / 10 {
            let now = from + step * 10;
            for layer in 0..3u8 {
                let l = usize::from(layer);
                seqs[l] = seqs[l].wrapping_add(1);
                let key = now.is_multiple_of(1000);
                let ts = (now as u32).wrapping_mul(90).wrapping_add(u32::from(layer) * 7_777_777);
                let meta = RtpMeta { len: sizes[l], ..packet(1, 11, layer, seqs[l], ts, key) };
                room.route_rtp(now, &meta, &mut fwd);
                got.extend(fwd.iter().filter(|f| f.sub == sub));
            }
        }
        got
    }

    #[test]
    fn a_subscriber_short_of_bandwidth_moves_down_a_layer_at_its_keyframe_and_back_up_with_headroom() {
        let mut room = room_of_three();
        let mut seqs = [1000, 30_000, 65_000];
        let got = stream(&mut room, 1000, 2000, &mut seqs, 2);
        assert_eq!(room.layer_of(2, 11), Some(2), "the highest layer while nothing limits it");
        assert!(!got.is_empty());
        room.set_bandwidth(2, Some(400_000), 3000).expect("bwe");
        assert!(drain(&mut room).contains(&Output::RequestKeyframe { publisher: 1, track: 11, layer: 1 }));
        let after = stream(&mut room, 3000, 2000, &mut seqs, 2);
        assert_eq!(room.layer_of(2, 11), Some(1));
        // Up again only with 20 % headroom over the top layer's rate.
        room.set_bandwidth(2, Some(1_300_000), 5000).expect("bwe");
        let held = stream(&mut room, 5000, 2000, &mut seqs, 2);
        assert_eq!(room.layer_of(2, 11), Some(1), "1.3 Mbit/s is not 1.2 × 1.2 Mbit/s");
        room.set_bandwidth(2, Some(1_600_000), 7000).expect("bwe");
        let back = stream(&mut room, 7000, 2000, &mut seqs, 2);
        assert_eq!(room.layer_of(2, 11), Some(2));
        // One continuous stream for the subscriber throughout.
        let all: Vec<Forward> = got.into_iter().chain(after).chain(held).chain(back).collect();
        for pair in all.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq.wrapping_add(1), "{pair:?}");
            assert!(crate::rtp::ts_newer(pair[1].timestamp, pair[0].timestamp) || pair[1].timestamp == pair[0].timestamp);
        }
    }

    #[test]
    fn a_subscriber_gets_the_layers_being_sent_when_the_best_one_is_not() {
        let mut room = room_of_three();
        let mut fwd = Vec::new();
        let mut got = |room: &mut Room, now: u64, layer: u8, seq: u16, key: bool| -> bool {
            room.route_rtp(now, &packet(1, 11, layer, seq, now as u32 * 90, key), &mut fwd);
            fwd.iter().any(|f| f.sub == 2)
        };
        // The publisher's browser sends only its lowest layer (its uplink estimate is low).
        for i in 0..10u16 {
            assert!(!got(&mut room, u64::from(i) * 30, 0, i, i == 0), "waiting for the best layer");
        }
        room.tick(300);
        assert!(drain(&mut room).contains(&Output::RequestKeyframe { publisher: 1, track: 11, layer: 0 }));
        assert!(!got(&mut room, 330, 0, 10, false), "from a keyframe");
        assert!(got(&mut room, 360, 0, 11, true), "the lowest layer, the only one sent");
        assert_eq!(room.layer_of(2, 11), Some(0));
        // Then it adds its best layer: the subscriber moves up at that layer's keyframe.
        for i in 0..5u16 {
            got(&mut room, 400 + u64::from(i) * 30, 0, 12 + i, false);
            got(&mut room, 400 + u64::from(i) * 30, 2, 500 + i, i == 4);
        }
        room.tick(600);
        assert!(drain(&mut room).contains(&Output::RequestKeyframe { publisher: 1, track: 11, layer: 2 }));
        assert!(got(&mut room, 630, 2, 505, true));
        assert_eq!(room.layer_of(2, 11), Some(2));
        // And back down once the best layer stops for longer than a moment.
        for i in 0..60u16 {
            got(&mut room, 660 + u64::from(i) * 30, 0, 20 + i, i == 59);
        }
        room.tick(660 + 59 * 30);
        assert_eq!(room.layer_of(2, 11), Some(2), "not before the lower layer's keyframe");
        assert!(got(&mut room, 2500, 0, 80, true));
        assert_eq!(room.layer_of(2, 11), Some(0));
    }

    #[test]
    fn switches_with_reordering_keep_the_stream_continuous() {
        let mut room = room_of_three();
        let mut fwd = Vec::new();
        let mut seqs = [65_500u16, 10, 40_000];
        let mut ts = [u32::MAX - 50_000, 123, 2_000_000_000u32];
        let mut out: Vec<Forward> = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut now = 0u64;
        for round in 0..50 {
            let quality = [Quality::Low, Quality::Medium, Quality::High][(next() % 3) as usize];
            room.request_quality(2, 11, quality, now).expect("quality");
            for step in 0..60u64 {
                now += 10;
                let mut batch = Vec::new();
                for layer in 0..3u8 {
                    let l = usize::from(layer);
                    seqs[l] = seqs[l].wrapping_add(1);
                    ts[l] = ts[l].wrapping_add(900);
                    batch.push(packet(1, 11, layer, seqs[l], ts[l], step % 20 == (round % 20) as u64));
                }
                // Now and then two packets of a layer swap places.
                if next() % 4 == 0 {
                    let l = (next() % 3) as usize;
                    let mut late = batch[l];
                    late.seq = late.seq.wrapping_sub(1);
                    late.keyframe_start = false;
                    batch.push(late);
                }
                for p in &batch {
                    room.route_rtp(now, p, &mut fwd);
                    out.extend(fwd.iter().filter(|f| f.sub == 2));
                }
            }
        }
        assert!(out.len() > 1000);
        let mut highest = out[0].seq;
        let mut ts_highest = out[0].timestamp;
        for f in &out[1..] {
            // A late packet may come after a newer one, but never from before the stream's
            // newest by more than a few, and the sequence never jumps.
            if crate::rtp::seq_newer(f.seq, highest) {
                assert_eq!(f.seq, highest.wrapping_add(1), "a gap in the stream at {f:?}");
                highest = f.seq;
                assert!(!crate::rtp::ts_newer(ts_highest, f.timestamp), "time went back at {f:?}");
                ts_highest = f.timestamp;
            } else {
                assert!(highest.wrapping_sub(f.seq) < 4, "a packet from an old layer: {f:?}");
            }
        }
    }

    #[test]
    fn speaking_comes_from_the_audio_level_only() {
        let mut room = room_of_three();
        let mut fwd = Vec::new();
        for i in 0..50u64 {
            let meta = RtpMeta { audio_level: Some(20), ..packet(1, 10, 0, i as u16, (i * 960) as u32, false) };
            room.route_rtp(i * 20, &meta, &mut fwd);
        }
        assert!(drain(&mut room).contains(&Output::Speaking { pid: 1, speaking: true }));
        room.tick(3000);
        assert_eq!(drain(&mut room), vec![Output::Speaking { pid: 1, speaking: false }]);
        // Leaving while speaking says so.
        for i in 0..50u64 {
            let meta = RtpMeta { audio_level: Some(20), ..packet(1, 10, 0, i as u16, (i * 960) as u32, false) };
            room.route_rtp(4000 + i * 20, &meta, &mut fwd);
        }
        drain(&mut room);
        room.leave(1).expect("leave");
        assert!(drain(&mut room).contains(&Output::Speaking { pid: 1, speaking: false }));
    }

    #[test]
    fn only_the_loudest_microphones_are_forwarded_and_a_resumed_one_continues_its_stream() {
        let mut room = Room::new(RoomLimits { loudest_audio: 2, ..RoomLimits::default() });
        for pid in 1..=4 {
            room.join(pid, 0).expect("join");
            room.publish(pid, pid * 10, TrackKind::Audio, 1, 0).expect("audio");
        }
        drain(&mut room);
        let mut fwd = Vec::new();
        // Everyone has an open microphone: 1 and 2 talk, 3 and 4 hear their room.
        let levels = |i: u64| [(1, 20), (2, 25), (3, if i < 50 { 70 } else { 15 }), (4, 72)];
        // (round, sequence number, timestamp) of what each subscriber got of each track.
        type Heard = BTreeMap<(Pid, TrackId), Vec<(u64, u16, u32)>>;
        let mut heard: Heard = BTreeMap::new();
        for i in 0..100u64 {
            for (pid, level) in levels(i) {
                let meta =
                    RtpMeta { audio_level: Some(level), ..packet(pid, pid * 10, 0, 1000 + i as u16, (i * 960) as u32, false) };
                room.route_rtp(i * 20, &meta, &mut fwd);
                for f in &fwd {
                    heard.entry((f.sub, f.track)).or_default().push((i, f.seq, f.timestamp));
                }
            }
        }
        // Until 3 talks, nobody hears 3 or 4; 4 hears 1 and 2 throughout the first half.
        let first_half =
            |sub: Pid, track: TrackId| heard.get(&(sub, track)).map_or(0, |v| v.iter().filter(|(i, _, _)| *i < 50).count());
        assert_eq!(first_half(4, 10), 50);
        assert_eq!(first_half(4, 20), 50);
        assert_eq!(first_half(1, 30), 0);
        assert_eq!(first_half(1, 40), 0);
        assert!(heard.keys().all(|(_, track)| *track != 40), "4 stays the quietest: never forwarded");
        // 3 talks louder than 2 by more than the margin: it takes 2's slot within a few packets
        // (loudness is smoothed: one loud packet does not take a talker's slot).
        let from = heard.get(&(4, 30)).expect("3 is heard once it talks")[0].0;
        assert!((50..=57).contains(&from), "{from}");
        assert_eq!(heard[&(4, 20)].iter().filter(|(i, _, _)| *i > from).count(), 0, "2 gave way");
        // 2's stream for 3 and 4 simply stops; 1's goes on. A subscriber of 2 that later hears it
        // again (2 becomes loudest) sees the stream go on: the next sequence number, the
        // timestamp moved by the time gone by.
        for i in 100..120u64 {
            for (pid, level) in [(2, 5), (3, 60), (1, 60)] {
                let meta =
                    RtpMeta { audio_level: Some(level), ..packet(pid, pid * 10, 0, 1000 + i as u16, (i * 960) as u32, false) };
                room.route_rtp(i * 20, &meta, &mut fwd);
                for f in &fwd {
                    heard.entry((f.sub, f.track)).or_default().push((i, f.seq, f.timestamp));
                }
            }
        }
        let two = &heard[&(4, 20)];
        let resumed = two.iter().position(|(i, _, _)| *i >= 100).expect("2 is heard again");
        let (before, after) = (two[resumed - 1], two[resumed]);
        assert_eq!(after.1, before.1.wrapping_add(1), "no gap in sequence numbers: {before:?} {after:?}");
        let elapsed_ticks = (after.0 - before.0) as u32 * 960;
        assert_eq!(after.2.wrapping_sub(before.2), elapsed_ticks, "the timestamp follows the time gone by");
        assert!(two[resumed..].windows(2).all(|w| w[1].1 == w[0].1.wrapping_add(1) && w[1].2 == w[0].2.wrapping_add(960)));
        // No subscriber gets more than two microphones in a 20 ms round, but for the round of a
        // handover (the one giving way was forwarded earlier in it): two handovers here.
        let mut per_round: BTreeMap<(Pid, u64), usize> = BTreeMap::new();
        for ((sub, _), v) in &heard {
            for (i, _, _) in v {
                *per_round.entry((*sub, *i)).or_default() += 1;
            }
        }
        assert!(per_round.values().all(|n| *n <= 3), "{per_round:?}");
        let handovers: BTreeSet<u64> = per_round.iter().filter(|(_, n)| **n == 3).map(|((_, i), _)| *i).collect();
        assert!(handovers.len() <= 2, "{handovers:?}");
    }

    #[test]
    fn any_sequence_of_inputs_keeps_the_room_consistent() {
        let mut room = Room::new(RoomLimits { max_participants: 6, max_tracks: 3, max_layers: 3, loudest_audio: 2 });
        let mut x: u64 = 42;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut fwd = Vec::new();
        for now in 0..100_000u64 {
            let pid = next(8);
            let track = next(12);
            match next(9) {
                0 => {
                    let _ = room.join(pid, now);
                }
                1 => {
                    let _ = room.leave(pid);
                }
                2 => {
                    let kind = [TrackKind::Audio, TrackKind::Camera, TrackKind::Screen][next(3) as usize];
                    let _ = room.publish(pid, track, kind, next(5) as u8, now);
                }
                3 => {
                    let _ = room.unpublish(pid, track);
                }
                4 => {
                    let q = [Quality::Off, Quality::Low, Quality::Medium, Quality::High][next(4) as usize];
                    let _ = room.request_quality(pid, track, q, now);
                }
                5 => {
                    let _ = room.set_bandwidth(pid, Some(next(3_000_000)), now);
                }
                6 => {
                    let _ = room.keyframe_request(pid, track, now);
                }
                7 => room.tick(now),
                _ => {
                    let meta = RtpMeta {
                        pid,
                        track,
                        layer: next(4) as u8,
                        seq: next(65_536) as u16,
                        timestamp: next(u64::from(u32::MAX)) as u32,
                        marker: next(2) == 0,
                        audio_level: Some(next(128) as u8),
                        keyframe_start: next(3) == 0,
                        len: next(1500) as usize,
                    };
                    room.route_rtp(now, &meta, &mut fwd);
                    for f in &fwd {
                        assert!(room.participants.contains_key(&f.sub), "forwarded to someone gone");
                        assert_ne!(f.sub, pid, "forwarded to its sender");
                    }
                }
            }
            while room.poll_output().is_some() {}
            assert!(room.participants.len() <= 6);
            for (track, sub) in room.subs.keys() {
                let t = room.tracks.get(track).expect("a subscription to a track that is gone");
                assert_ne!(t.owner, *sub);
                assert!(room.participants.contains_key(sub));
            }
            for (id, t) in &room.tracks {
                assert!(room.participants.get(&t.owner).is_some_and(|p| p.tracks.contains(id)));
            }
            assert!(room.loudest.tracks().all(|t| room.tracks.contains_key(&t)), "a microphone of a track that is gone");
            assert!(room.loudest.routed().count() <= 2, "more microphones forwarded than the bound");
        }
    }
}
