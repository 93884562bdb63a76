//! The WebRTC driver: the rooms of [`crate::room`] wired to webrtc-rs's sans-IO `rtc`
//! PeerConnections, one per participant, all on one UDP port.
//!
//! One task owns the socket, every PC and every room: a datagram goes to its PC (the first
//! STUN request by its ICE username, then by source address), what the PC reads goes through
//! the room, and what the room forwards is written to the subscribers' PCs at once. The SFU
//! reads RTP headers, the audio-level extension and the clear VP8 payload descriptor; the
//! payload itself is an SFrame ciphertext and is forwarded untouched.
//!
//! Signalling comes in as [`Command`]s (a client's offer at join, its answers to the SFU's
//! offers, quality requests, leaves) and goes out as [`SfuEvent`]s (the SFU's offers when a
//! participant's subscriptions change, epochs, speaking, removals).

mod peer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_RTX;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

pub use peer::{
    accept_offer, add_subscription, published_tracks, Accepted, OfferedTrack, SdpError, CLIENT_MLINES_MAX, SDP_MAX_BYTES, VP8_PT,
    VP8_RTX_PT,
};
use peer::{Freed, Inbound, Outbound, Peer};

use crate::room::{Forward, Output, Quality, Room, RoomError, RoomLimits, TrackKind};
use crate::rtp::{Pid, RtpMeta, TrackId};

/// A room's key (the voice channel).
pub type RoomKey = u64;

/// How the SFU is set up.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The UDP address to bind (every participant's media goes through this one port).
    pub bind: SocketAddr,
    /// The address clients are told to send to (the host candidate): the public IP when the
    /// SFU sits behind a 1:1 NAT, the bound address otherwise. Port 0 means the bound port.
    pub announce: Option<SocketAddr>,
    /// Bounds of every room.
    pub limits: RoomLimits,
    /// A participant whose PC is not connected this long after joining is removed.
    pub connect_timeout: Duration,
    /// The SFU's offers wait this long for more changes to bundle.
    pub offer_delay: Duration,
    /// After congestion on a subscriber's downlink, a higher layer is tried again this much
    /// later (doubling while tries fail; see [`crate::bwe`]).
    pub probe_after: Duration,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            announce: None,
            limits: RoomLimits::default(),
            connect_timeout: Duration::from_secs(15),
            offer_delay: Duration::from_millis(100),
            probe_after: crate::bwe::PROBE_AFTER,
        }
    }
}

/// What one participant's media may do. Enforced by dropping packets: a client that sends
/// anyway reaches nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaRules {
    /// Its audio is forwarded (it may speak and is not server-muted).
    pub audio: bool,
    /// Its camera and screen are forwarded (it may stream).
    pub video: bool,
    /// It receives others' audio (not server-deafened).
    pub hear: bool,
}

impl Default for MediaRules {
    fn default() -> Self {
        Self { audio: true, video: true, hear: true }
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SfuError {
    /// The room is full.
    #[error("the room is full")]
    RoomFull,
    /// This participant id is taken.
    #[error("already in a room")]
    AlreadyIn,
    /// No such participant.
    #[error("unknown voice session")]
    UnknownParticipant,
    /// The SDP was refused.
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    /// An answer came with no offer out.
    #[error("no offer is waiting for an answer")]
    NegotiationConflict,
    /// The offer publishes more tracks than a participant may.
    #[error("too many tracks")]
    TooManyTracks,
    /// The SFU stopped.
    #[error("the SFU is not running")]
    Unavailable,
}

/// What a join gives back.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The SFU's answer.
    pub answer: String,
    /// The room's epoch after the join.
    pub epoch: u64,
    /// The tracks published (mid, track id, kind).
    pub tracks: Vec<(String, TrackId, TrackKind)>,
}

/// A track in an SFU offer: which m-line carries whose track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferTrack {
    /// The m-line.
    pub mid: String,
    /// The track.
    pub track: TrackId,
    /// Its publisher.
    pub publisher: Pid,
    /// What it carries.
    pub kind: TrackKind,
}

/// Why a participant was removed by the SFU itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// It left ([`Command::Leave`]).
    Left,
    /// Its PC failed or closed.
    MediaFailed,
    /// Its PC never connected.
    ConnectTimeout,
}

/// What the SFU tells signalling.
#[derive(Debug, Clone)]
pub enum SfuEvent {
    /// An offer for the participant (its subscriptions changed); relay it and send back the
    /// answer with [`SfuHandle::answer`].
    Offer {
        /// To whom.
        pid: Pid,
        /// The offer.
        sdp: String,
        /// Its revision (increasing per participant).
        revision: u64,
        /// What its m-lines carry.
        tracks: Vec<OfferTrack>,
    },
    /// The participant's media is connected.
    Connected {
        /// Who.
        pid: Pid,
    },
    /// The participant is out of its room.
    Removed {
        /// Who.
        pid: Pid,
        /// The room.
        room: RoomKey,
        /// Why.
        reason: RemoveReason,
    },
    /// A room's media epoch changed.
    Epoch {
        /// The room.
        room: RoomKey,
        /// The new epoch.
        epoch: u64,
        /// Who joined.
        joined: Option<Pid>,
        /// Who left.
        left: Option<Pid>,
    },
    /// Someone started or stopped speaking.
    Speaking {
        /// The room.
        room: RoomKey,
        /// Who.
        pid: Pid,
        /// Whether they speak.
        speaking: bool,
    },
}

/// What signalling asks of the SFU.
#[derive(Debug)]
pub enum Command {
    /// A participant joins a room with its offer.
    Join {
        /// The room.
        room: RoomKey,
        /// Its id (unique while in a room).
        pid: Pid,
        /// Its offer.
        offer: String,
        /// What it may send and hear from the start.
        rules: MediaRules,
        /// The answer, or why not.
        reply: oneshot::Sender<Result<Joined, SfuError>>,
    },
    /// A participant's answer to the SFU's last offer.
    Answer {
        /// Who.
        pid: Pid,
        /// Its answer.
        sdp: String,
        /// Done, or why not.
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    /// A participant's quality wish for a track it receives.
    Quality {
        /// Who.
        pid: Pid,
        /// The track.
        track: TrackId,
        /// The quality.
        quality: Quality,
    },
    /// What a participant may send and hear (permissions, a moderator's mute or deafen).
    Rules {
        /// Who.
        pid: Pid,
        /// The rules.
        rules: MediaRules,
    },
    /// A participant leaves.
    Leave {
        /// Who.
        pid: Pid,
    },
}

/// Sends commands to a running SFU.
#[derive(Debug, Clone)]
pub struct SfuHandle {
    commands: mpsc::UnboundedSender<Command>,
    /// The address clients send media to.
    pub media_addr: SocketAddr,
}

impl SfuHandle {
    /// Joins `pid` to `room` with its offer.
    pub async fn join(&self, room: RoomKey, pid: Pid, offer: String) -> Result<Joined, SfuError> {
        self.join_with(room, pid, offer, MediaRules::default()).await
    }

    /// Joins `pid` to `room` with its offer, under `rules` from its first packet.
    pub async fn join_with(&self, room: RoomKey, pid: Pid, offer: String, rules: MediaRules) -> Result<Joined, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Join { room, pid, offer, rules, reply }).map_err(|_| SfuError::Unavailable)?;
        rx.await.map_err(|_| SfuError::Unavailable)?
    }

    /// Applies `pid`'s answer to the SFU's last offer.
    pub async fn answer(&self, pid: Pid, sdp: String) -> Result<(), SfuError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Answer { pid, sdp, reply }).map_err(|_| SfuError::Unavailable)?;
        rx.await.map_err(|_| SfuError::Unavailable)?
    }

    /// Sets the quality `pid` wants of `track`.
    pub fn quality(&self, pid: Pid, track: TrackId, quality: Quality) {
        let _ = self.commands.send(Command::Quality { pid, track, quality });
    }

    /// Sets what `pid` may send and hear; what it may not send is dropped at the SFU.
    pub fn rules(&self, pid: Pid, rules: MediaRules) {
        let _ = self.commands.send(Command::Rules { pid, rules });
    }

    /// Takes `pid` out of its room.
    pub fn leave(&self, pid: Pid) {
        let _ = self.commands.send(Command::Leave { pid });
    }
}

/// Starts the SFU: binds its UDP port and spawns the task that runs it. It stops when every
/// handle is dropped.
pub async fn start(config: SfuConfig) -> std::io::Result<(SfuHandle, mpsc::UnboundedReceiver<SfuEvent>)> {
    let socket = UdpSocket::bind(config.bind).await?;
    let bound = socket.local_addr()?;
    let media_addr = match config.announce {
        Some(a) if a.port() == 0 => SocketAddr::new(a.ip(), bound.port()),
        Some(a) => a,
        None => bound,
    };
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (events, event_rx) = mpsc::unbounded_channel();
    let driver = Driver::new(config, media_addr, Arc::new(socket), events);
    tokio::spawn(driver.run(command_rx));
    Ok((SfuHandle { commands, media_addr }, event_rx))
}

/// The time, from tokio's clock (which tests can pause).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// How often rooms are ticked (speakers, layer choices).
const TICK: Duration = Duration::from_millis(100);

struct Driver {
    config: SfuConfig,
    /// The host candidate: what every PC is told it reads on.
    local: SocketAddr,
    socket: Arc<UdpSocket>,
    events: mpsc::UnboundedSender<SfuEvent>,
    rooms: HashMap<RoomKey, Room>,
    peers: HashMap<Pid, Peer>,
    by_ufrag: HashMap<String, Pid>,
    by_addr: HashMap<SocketAddr, Pid>,
    /// Milliseconds are counted from here for the rooms.
    origin: Instant,
    next_tick: Instant,
    forward: Vec<Forward>,
    /// Datagrams the socket could not take at once (dropped, as UDP would).
    dropped_writes: u64,
}

impl Driver {
    fn new(config: SfuConfig, local: SocketAddr, socket: Arc<UdpSocket>, events: mpsc::UnboundedSender<SfuEvent>) -> Self {
        let now = now();
        Self {
            config,
            local,
            socket,
            events,
            rooms: HashMap::new(),
            peers: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            origin: now,
            next_tick: now + TICK,
            forward: Vec::with_capacity(128),
            dropped_writes: 0,
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let socket = self.socket.clone();
        let mut buf = vec![0u8; 2048];
        loop {
            let deadline = self.deadline();
            tokio::select! {
                received = socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => self.on_datagram(&buf[..n], from, now()),
                    Err(e) => tracing::debug!(error = %e, "sfu: receive failed"),
                },
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command, now()),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline.into()) => self.on_timeout(now()),
            }
        }
        let pids: Vec<Pid> = self.peers.keys().copied().collect();
        for pid in pids {
            self.remove(pid, RemoveReason::Left, now());
        }
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// The next moment something is due: a PC's timer, a tick, an offer, a connect deadline.
    fn deadline(&self) -> Instant {
        let mut at = self.next_tick;
        for peer in self.peers.values() {
            let offer = peer.negotiation.due.filter(|_| !peer.negotiation.awaiting_answer);
            for t in [peer.timeout, offer, (!peer.connected).then(|| peer.joined_at + self.config.connect_timeout)]
                .into_iter()
                .flatten()
            {
                at = at.min(t);
            }
        }
        at
    }

    fn send(&mut self, to: SocketAddr, data: &[u8]) {
        if self.socket.try_send_to(data, to).is_err() {
            self.dropped_writes += 1;
        }
    }

    /// Sends what a PC has to write.
    fn flush(&mut self, pid: Pid) {
        while let Some(out) = self.peers.get_mut(&pid).and_then(|p| p.pc.poll_write()) {
            self.send(out.transport.peer_addr, &out.message);
        }
        if let Some(peer) = self.peers.get_mut(&pid) {
            peer.timeout = peer.pc.poll_timeout();
        }
    }

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr, now: Instant) {
        let pid = match peer::binding_request_ufrag(data) {
            Some(ufrag) => {
                let Some(&pid) = self.by_ufrag.get(&ufrag) else { return };
                // The address is this peer's unless another one already holds it. A client
                // checks from each of its candidates: the last few addresses stay mapped, so
                // media from the pair it nominates is never dropped meanwhile.
                let holder = *self.by_addr.entry(from).or_insert(pid);
                if holder != pid {
                    return;
                }
                if let Some(peer) = self.peers.get_mut(&pid) {
                    if !peer.addrs.contains(&from) {
                        peer.addrs.push(from);
                        if peer.addrs.len() > peer::ADDRESSES_MAX {
                            let oldest = peer.addrs.remove(0);
                            self.by_addr.remove(&oldest);
                        }
                    }
                }
                pid
            }
            None => match self.by_addr.get(&from) {
                Some(&pid) => pid,
                None => return,
            },
        };
        let local = self.local;
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        let _ = peer.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: local,
                peer_addr: from,
                transport_protocol: TransportProtocol::UDP,
                ecn: None,
            },
            message: BytesMut::from(data),
        });
        self.pump(pid, now);
    }

    /// Handles what a PC has to say after an input: events, then reads, then writes.
    fn pump(&mut self, pid: Pid, now: Instant) {
        while let Some(event) = self.peers.get_mut(&pid).and_then(|p| p.pc.poll_event()) {
            self.on_event(pid, event, now);
        }
        while let Some(read) = self.peers.get_mut(&pid).and_then(|p| p.pc.poll_read()) {
            self.on_read(pid, read, now);
        }
        self.flush(pid);
    }

    fn on_event(&mut self, pid: Pid, event: RTCPeerConnectionEvent, now: Instant) {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                RTCPeerConnectionState::Connected => {
                    if let Some(peer) = self.peers.get_mut(&pid) {
                        if !peer.connected {
                            peer.connected = true;
                            let _ = self.events.send(SfuEvent::Connected { pid });
                        }
                    }
                }
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                    self.remove(pid, RemoveReason::MediaFailed, now);
                }
                _ => {}
            },
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                let Some(peer) = self.peers.get_mut(&pid) else { return };
                let transceiver: usize = init.receiver_id.into();
                let Some(mid) = peer.pc.rtp_transceiver(transceiver).and_then(|t| t.mid().clone()) else { return };
                let Some((offered, track)) = peer.published.iter().find(|(t, _)| t.mid == mid) else { return };
                let layer = match &init.rid {
                    Some(rid) => match offered.rids.iter().position(|r| r == rid) {
                        Some(i) => i as u8,
                        None => return,
                    },
                    None => 0,
                };
                peer.inbound.insert(init.ssrc, Inbound { track: *track, layer, kind: offered.kind, receiver: init.receiver_id });
            }
            _ => {}
        }
    }

    fn on_read(&mut self, pid: Pid, read: TaggedRTCMessage, now: Instant) {
        match read.message {
            RTCMessage::RtpPacket(_, packet) => self.on_rtp(pid, packet, now),
            RTCMessage::RtcpPacket(track_id, _) => {
                // A keyframe request from a subscriber, on the stream of one of its tracks.
                let Ok(track) = track_id.parse::<TrackId>() else { return };
                let now_ms = self.now_ms(now);
                let Some(room) = self.peers.get(&pid).map(|p| p.room) else { return };
                if let Some(r) = self.rooms.get_mut(&room) {
                    let _ = r.keyframe_request(pid, track, now_ms);
                }
                self.drain_room(room, now);
            }
            _ => {}
        }
    }

    fn on_rtp(&mut self, pid: Pid, packet: rtc::rtp::Packet, now: Instant) {
        let now_ms = self.now_ms(now);
        let Some(peer) = self.peers.get(&pid) else { return };
        let Some(inbound) = peer.inbound.get(&packet.header.ssrc).copied() else { return };
        let allowed = match inbound.kind {
            TrackKind::Audio => peer.rules.audio,
            TrackKind::Camera | TrackKind::Screen => peer.rules.video,
        };
        if !allowed {
            return;
        }
        let level_ext = peer.audio_level_id.and_then(|id| packet.header.get_extension(id));
        let meta = RtpMeta {
            pid,
            track: inbound.track,
            layer: inbound.layer,
            seq: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            audio_level: level_ext.as_ref().and_then(|b| b.first()).map(|b| b & 0x7f),
            keyframe_start: inbound.kind != TrackKind::Audio && crate::vp8::is_keyframe_start(&packet.payload),
            len: packet.payload.len() + 12,
        };
        let room_key = peer.room;
        let layers = peer.published.iter().find(|(_, t)| *t == inbound.track).map_or(1, |(o, _)| o.rids.len().max(1) as u8);
        let Some(room) = self.rooms.get_mut(&room_key) else { return };
        if !room.has_track(inbound.track) {
            // Its first packet: now the others subscribe.
            if room.publish(pid, inbound.track, inbound.kind, layers, now_ms).is_err() {
                return;
            }
        }
        let mut forward = std::mem::take(&mut self.forward);
        room.route_rtp(now_ms, &meta, &mut forward);
        for f in &forward {
            let Some(sub) = self.peers.get_mut(&f.sub) else { continue };
            if inbound.kind == TrackKind::Audio && !sub.rules.hear {
                continue;
            }
            let Some(out) = sub.outbound.get_mut(&f.track).filter(|o| o.ready) else { continue };
            let (seq, timestamp) = out.renumber(f.seq, f.timestamp, now, inbound.kind.clock_rate());
            let mut header = rtc::rtp::header::Header {
                version: 2,
                marker: packet.header.marker,
                payload_type: out.payload_type,
                sequence_number: seq,
                timestamp,
                ssrc: out.ssrc,
                ..Default::default()
            };
            if let (Some(id), Some(level)) = (out.audio_level_id, level_ext.as_ref()) {
                let _ = header.set_extension(id, level.clone());
            }
            let sender = out.sender;
            let forwarded = rtc::rtp::Packet { header, payload: packet.payload.clone() };
            if let Some(mut s) = sub.pc.rtp_sender(sender) {
                let _ = s.write_rtp(now, forwarded);
            }
            let sub = f.sub;
            self.flush(sub);
        }
        self.forward = forward;
        self.drain_room(room_key, now);
    }

    fn on_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Join { room, pid, offer, rules, reply } => {
                let result = self.join(room, pid, &offer, now);
                if let Some(peer) = self.peers.get_mut(&pid) {
                    peer.rules = rules;
                }
                let _ = reply.send(result);
                self.pump(pid, now);
                self.drain_room(room, now);
            }
            Command::Answer { pid, sdp, reply } => {
                let _ = reply.send(self.answer(pid, sdp, now));
                self.pump(pid, now);
                if let Some(room) = self.peers.get(&pid).map(|p| p.room) {
                    self.drain_room(room, now);
                }
            }
            Command::Quality { pid, track, quality } => {
                let now_ms = self.now_ms(now);
                let Some(room) = self.peers.get(&pid).map(|p| p.room) else { return };
                if let Some(r) = self.rooms.get_mut(&room) {
                    let _ = r.request_quality(pid, track, quality, now_ms);
                }
                self.drain_room(room, now);
            }
            Command::Rules { pid, rules } => {
                if let Some(peer) = self.peers.get_mut(&pid) {
                    peer.rules = rules;
                }
            }
            Command::Leave { pid } => self.remove(pid, RemoveReason::Left, now),
        }
    }

    fn join(&mut self, room_key: RoomKey, pid: Pid, offer: &str, now: Instant) -> Result<Joined, SfuError> {
        if self.peers.contains_key(&pid) {
            return Err(SfuError::AlreadyIn);
        }
        if self.rooms.get(&room_key).is_some_and(|r| r.participants().count() >= self.config.limits.max_participants) {
            return Err(SfuError::RoomFull);
        }
        let peer::Accepted { pc, ufrag, answer, offered, audio_level_id, downlink } =
            peer::accept_offer(offer, self.local, now).map_err(|e| SfuError::InvalidSdp(e.0))?;
        downlink.lock().set_probe_after(self.config.probe_after);
        if offered.len() > self.config.limits.max_tracks {
            return Err(SfuError::TooManyTracks);
        }
        let published: Vec<(OfferedTrack, TrackId)> =
            offered.into_iter().enumerate().map(|(i, t)| (t, pid.wrapping_mul(8).wrapping_add(i as u64))).collect();
        let now_ms = self.now_ms(now);
        let limits = self.config.limits;
        let room = self.rooms.entry(room_key).or_insert_with(|| Room::new(limits));
        let epoch = room.join(pid, now_ms).map_err(|e| match e {
            RoomError::Full => SfuError::RoomFull,
            _ => SfuError::AlreadyIn,
        })?;
        // A track joins the room at its first packet (see `on_rtp`): a camera or a screen that
        // stays off costs nobody an m-line.
        let tracks = published.iter().map(|(t, track)| (t.mid.clone(), *track, t.kind)).collect();
        self.by_ufrag.insert(ufrag.clone(), pid);
        self.peers.insert(
            pid,
            Peer {
                room: room_key,
                pc,
                ufrag,
                addrs: Vec::new(),
                joined_at: now,
                connected: false,
                published,
                inbound: HashMap::new(),
                audio_level_id,
                outbound: HashMap::new(),
                freed: Vec::new(),
                negotiation: Default::default(),
                rules: MediaRules::default(),
                timeout: None,
                downlink,
                budget: None,
            },
        );
        Ok(Joined { answer, epoch, tracks })
    }

    fn answer(&mut self, pid: Pid, sdp: String, now: Instant) -> Result<(), SfuError> {
        let peer = self.peers.get_mut(&pid).ok_or(SfuError::UnknownParticipant)?;
        if !peer.negotiation.awaiting_answer {
            return Err(SfuError::NegotiationConflict);
        }
        if peer.negotiation.refused_answers >= peer::ANSWER_TRIES {
            return Err(SfuError::InvalidSdp(format!(
                "{} answers to this offer were refused: leave and join again",
                peer::ANSWER_TRIES
            )));
        }
        let applied = if sdp.len() > SDP_MAX_BYTES {
            Err(SfuError::InvalidSdp("the answer is larger than 64 KiB".into()))
        } else {
            RTCSessionDescription::answer(sdp)
                .and_then(|description| peer.pc.set_remote_description(now, description))
                .map_err(|e| SfuError::InvalidSdp(e.to_string()))
        };
        if let Err(e) = applied {
            peer.negotiation.refused_answers += 1;
            return Err(e);
        }
        peer.negotiation.awaiting_answer = false;
        // The m-lines this answer saw go inactive can carry new tracks now (an answer is to the
        // last offer, which carried every freed m-line it found).
        for f in &mut peer.freed {
            f.settled |= f.revision.is_some();
        }
        let mut fresh_video = Vec::new();
        let ids: Vec<TrackId> = peer.outbound.keys().copied().collect();
        let answered = peer.negotiation.revision;
        for track in ids {
            let Some(out) = peer.outbound.get(&track) else { continue };
            // Only a track the answered offer carried: a reused m-line still has the codecs of
            // its last track, and an older offer showed it inactive.
            if out.ready || out.offered_in.is_none_or(|r| r > answered) {
                continue;
            }
            let sender = out.sender;
            let Some(mut s) = peer.pc.rtp_sender(sender) else { continue };
            let params = s.get_parameters().rtp_parameters.clone();
            // The media codec: not its retransmission stream's.
            let Some(codec) = params.codecs.iter().find(|c| !c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_RTX)) else {
                continue;
            };
            let audio_level_id =
                params.header_extensions.iter().find(|e| e.uri == rtc::sdp::extmap::AUDIO_LEVEL_URI).map(|e| e.id as u8);
            let payload_type = codec.payload_type;
            if let Some(out) = peer.outbound.get_mut(&track) {
                out.ready = true;
                out.payload_type = payload_type;
                out.audio_level_id = audio_level_id;
                if out.kind != TrackKind::Audio {
                    fresh_video.push(track);
                }
            }
        }
        if peer.negotiation.due.is_none() && peer.outbound.values().any(|o| !o.ready) {
            peer.negotiation.due = Some(now + self.config.offer_delay);
        }
        // A new subscriber starts at a keyframe.
        let room_key = peer.room;
        let now_ms = self.now_ms(now);
        if let Some(room) = self.rooms.get_mut(&room_key) {
            for track in fresh_video {
                let _ = room.keyframe_request(pid, track, now_ms);
            }
        }
        Ok(())
    }

    fn on_timeout(&mut self, now: Instant) {
        let pids: Vec<Pid> = self.peers.keys().copied().collect();
        for pid in pids {
            let Some(peer) = self.peers.get_mut(&pid) else { continue };
            if !peer.connected && now >= peer.joined_at + self.config.connect_timeout {
                self.remove(pid, RemoveReason::ConnectTimeout, now);
                continue;
            }
            if peer.timeout.is_some_and(|t| t <= now) {
                let _ = peer.pc.handle_timeout(now);
                self.pump(pid, now);
            }
            let Some(peer) = self.peers.get_mut(&pid) else { continue };
            if peer.negotiation.due.is_some_and(|t| t <= now) && !peer.negotiation.awaiting_answer {
                peer.negotiation.due = None;
                self.offer(pid, now);
            }
        }
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            let now_ms = self.now_ms(now);
            // Each downlink's budget, to its room when it changes.
            for (&pid, peer) in &mut self.peers {
                let budget = {
                    let mut downlink = peer.downlink.lock();
                    downlink.tick(now);
                    downlink.budget()
                };
                if budget != peer.budget {
                    peer.budget = budget;
                    if let Some(room) = self.rooms.get_mut(&peer.room) {
                        let _ = room.set_bandwidth(pid, budget, now_ms);
                    }
                }
            }
            let keys: Vec<RoomKey> = self.rooms.keys().copied().collect();
            for key in keys {
                if let Some(room) = self.rooms.get_mut(&key) {
                    room.tick(now_ms);
                }
                self.drain_room(key, now);
            }
        }
    }

    /// Sends the SFU's offer to `pid` for its current subscriptions.
    fn offer(&mut self, pid: Pid, now: Instant) {
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        let offer = match peer.pc.create_offer(None) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "sfu: cannot create an offer");
                return;
            }
        };
        if let Err(e) = peer.pc.set_local_description(now, offer.clone()) {
            tracing::warn!(error = %e, "sfu: cannot apply its offer");
            return;
        }
        peer.negotiation.awaiting_answer = true;
        peer.negotiation.refused_answers = 0;
        peer.negotiation.revision += 1;
        let revision = peer.negotiation.revision;
        for f in &mut peer.freed {
            f.revision.get_or_insert(revision);
        }
        for out in peer.outbound.values_mut() {
            out.offered_in.get_or_insert(revision);
        }
        let mut tracks = Vec::new();
        for (track, out) in &peer.outbound {
            if let Some(mid) = peer.pc.rtp_transceiver(out.transceiver).and_then(|t| t.mid().clone()) {
                tracks.push(OfferTrack { mid, track: *track, publisher: out.publisher, kind: out.kind });
            }
        }
        tracks.sort_by(|a, b| a.mid.cmp(&b.mid));
        let revision = peer.negotiation.revision;
        let _ = self.events.send(SfuEvent::Offer { pid, sdp: offer.sdp, revision, tracks });
        self.flush(pid);
    }

    /// Carries out what a room decided.
    fn drain_room(&mut self, key: RoomKey, now: Instant) {
        while let Some(output) = self.rooms.get_mut(&key).and_then(Room::poll_output) {
            match output {
                Output::Epoch { epoch, joined, left } => {
                    let _ = self.events.send(SfuEvent::Epoch { room: key, epoch, joined, left });
                }
                Output::Speaking { pid, speaking } => {
                    let _ = self.events.send(SfuEvent::Speaking { room: key, pid, speaking });
                }
                Output::Subscribe { sub, track, publisher, kind } => self.subscribe(sub, track, publisher, kind, now),
                Output::Unsubscribe { sub, track } => {
                    let Some(peer) = self.peers.get_mut(&sub) else { continue };
                    if let Some(out) = peer.outbound.remove(&track) {
                        // Inactive, its sender kept: the m-line is reused for a later track.
                        if let Some(mut t) = peer.pc.rtp_transceiver(out.transceiver) {
                            t.set_direction(rtc::rtp_transceiver::RTCRtpTransceiverDirection::Inactive);
                        }
                        peer.freed.push(Freed {
                            transceiver: out.transceiver,
                            audio: out.kind == TrackKind::Audio,
                            ssrc: out.ssrc,
                            rtx_ssrc: out.rtx_ssrc,
                            revision: None,
                            settled: false,
                            // Nothing written since its reuse: what was written before.
                            last: out.last.or(out.after),
                        });
                        peer.negotiation.due.get_or_insert(now + self.config.offer_delay);
                    }
                }
                Output::RequestKeyframe { publisher, track, layer } => {
                    let Some(peer) = self.peers.get_mut(&publisher) else { continue };
                    let Some((&ssrc, inbound)) = peer.inbound.iter().find(|(_, i)| i.track == track && i.layer == layer) else {
                        continue;
                    };
                    let receiver = inbound.receiver;
                    if let Some(mut r) = peer.pc.rtp_receiver(receiver) {
                        let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                            sender_ssrc: 0,
                            media_ssrc: ssrc,
                        };
                        let _ = r.write_rtcp(now, vec![Box::new(pli)]);
                    }
                    self.flush(publisher);
                }
                Output::LayerChanged { .. } => {}
            }
        }
    }

    fn subscribe(&mut self, sub: Pid, track: TrackId, publisher: Pid, kind: TrackKind, now: Instant) {
        let Some(peer) = self.peers.get_mut(&sub) else { return };
        let audio = kind == TrackKind::Audio;
        let reuse = peer.freed.iter().position(|f| f.settled && f.audio == audio).map(|i| peer.freed.remove(i));
        let (ssrc, rtx_ssrc) = match reuse {
            Some(f) => {
                tracing::debug!(sub, track, ssrc = f.ssrc, "sfu: a freed m-line carries a new track");
                (f.ssrc, f.rtx_ssrc)
            }
            None => {
                let ssrc = peer.fresh_ssrc();
                let rtx = (!audio).then(|| loop {
                    let r = peer.fresh_ssrc();
                    if r != ssrc {
                        break r;
                    }
                });
                (ssrc, rtx)
            }
        };
        let transceiver =
            match peer::add_subscription(&mut peer.pc, publisher, track, kind, (ssrc, rtx_ssrc), reuse.map(|f| f.transceiver)) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "sfu: cannot add a subscription");
                    return;
                }
            };
        peer.outbound.insert(
            track,
            Outbound {
                transceiver,
                sender: RTCRtpSenderId::from(transceiver),
                ssrc,
                rtx_ssrc,
                publisher,
                kind,
                offered_in: None,
                ready: false,
                payload_type: 0,
                audio_level_id: None,
                after: reuse.and_then(|f| f.last),
                shift: None,
                last: None,
            },
        );
        peer.negotiation.due.get_or_insert(now + self.config.offer_delay);
    }

    /// Takes `pid` out: its room re-keys and drops its tracks, its PC closes.
    fn remove(&mut self, pid: Pid, reason: RemoveReason, now: Instant) {
        let Some(mut peer) = self.peers.remove(&pid) else { return };
        self.by_ufrag.remove(&peer.ufrag);
        for addr in &peer.addrs {
            self.by_addr.remove(addr);
        }
        let _ = peer.pc.close();
        while let Some(out) = peer.pc.poll_write() {
            self.send(out.transport.peer_addr, &out.message);
        }
        let room_key = peer.room;
        if let Some(room) = self.rooms.get_mut(&room_key) {
            let _ = room.leave(pid);
        }
        self.drain_room(room_key, now);
        if self.rooms.get(&room_key).is_some_and(|r| r.participants().next().is_none()) {
            self.rooms.remove(&room_key);
        }
        let _ = self.events.send(SfuEvent::Removed { pid, room: room_key, reason });
    }
}
