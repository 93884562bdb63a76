//! One participant's PeerConnection on the SFU side: how it is built (ICE-lite, fixed
//! credentials, the one shared host candidate, Opus and VP8 only), what its offer publishes,
//! and the keyframe requests its subscribers send back.

use std::collections::{HashMap, VecDeque};
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use rand::distr::{Alphanumeric, SampleString};
use rtc::interceptor::{
    Attribute, CongestionControlBuilder, Interceptor, Packet, Slot, StreamInfo, TaggedPacket, TwccSenderBuilder,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{configure_rtcp_reports, configure_simulcast_extension_headers};
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverId, RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::AUDIO_LEVEL_URI;
use rtc::shared::error::Error;

use crate::bwe::{Downlink, DownlinkEstimator};
use crate::room::TrackKind;
use crate::rtp::{Pid, TrackId};

/// Opus's payload type (the SFU's offers use it; answers to a client's offer keep the client's).
pub const OPUS_PT: u8 = 111;
/// VP8's payload type in the SFU's offers.
pub const VP8_PT: u8 = 96;
/// The payload type of VP8's retransmission stream (RTX) in the SFU's offers.
pub const VP8_RTX_PT: u8 = 97;
/// An offer from a client is refused beyond this size.
pub const SDP_MAX_BYTES: usize = 64 * 1024;
/// A client offers this many m-lines at most (mic, camera, screen, and some slack).
pub const CLIENT_MLINES_MAX: usize = 8;

/// Addresses one participant's media may come from at once (its ICE candidates).
pub const ADDRESSES_MAX: usize = 8;

/// Why a client's SDP was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpError(pub String);

/// The opus and VP8 codecs, header extensions and RTCP feedback every PC negotiates, and the
/// interceptors behind them: NACK (answered from a send history over VP8's retransmission
/// stream where the client takes one, generated for what is received, each lost packet asked
/// for a few times at most, a packet recovered over RTX counted as received:
/// [`copains_rtx`]), sender and receiver reports, transport-wide congestion control feedback to
/// publishers and from subscribers (read into `downlink`), and the keyframe requests (PLI,
/// FIR) of subscribers handed to the SFU.
fn engine(downlink: &Arc<Mutex<Downlink>>) -> Result<(MediaEngine, rtc::interceptor::Registry), Error> {
    let fb = |typ: &str, parameter: &str| RTCPFeedback { typ: typ.into(), parameter: parameter.into() };
    let mut me = MediaEngine::default();
    me.register_codec(
        RTCRtpCodecParameters {
            payload_type: OPUS_PT,
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.into(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
        },
        RtpCodecKind::Audio,
    )?;
    me.register_codec(
        RTCRtpCodecParameters {
            payload_type: VP8_PT,
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.into(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![fb("ccm", "fir")],
            },
        },
        RtpCodecKind::Video,
    )?;
    let ext = |uri: &str| RTCRtpHeaderExtensionCapability { uri: uri.to_owned() };
    me.register_header_extension(ext(AUDIO_LEVEL_URI), RtpCodecKind::Audio, None)?;
    me.register_header_extension(ext(rtc::sdp::extmap::SDES_MID_URI), RtpCodecKind::Audio, None)?;
    configure_simulcast_extension_headers(&mut me)?;
    let registry = rtc::interceptor::Registry::new();
    // What the SFU sends declares its SSRCs: its retransmissions need no naming.
    let registry = copains_rtx::configure(registry, &mut me, VP8_RTX_PT, VP8_PT, false)?;
    let registry = configure_rtcp_reports(registry);
    // Feedback for what publishers send (their browser's bandwidth estimate needs it), and
    // transport-wide sequence numbers on the video the SFU forwards, whose feedback estimates
    // the subscriber's downlink. Nothing paces: the SFU forwards as packets come, and a
    // downlink short of bandwidth gets smaller simulcast layers instead (`crate::bwe`). Audio
    // has no layers to choose: feedback on it would only cost every listener's packets.
    let registry = copains_rtx::configure_twcc_receiver(registry, &mut me)?;
    let registry = registry
        .with(
            Slot::CongestionControl,
            VideoOnly::with_feedback_budget(CongestionControlBuilder::new(DownlinkEstimator::new(downlink.clone())).build()),
        )
        .with(Slot::TwccSender, VideoOnly::new(TwccSenderBuilder::new().build()));
    let registry = registry.with(Slot::from(14_000), KeyframeRequests::default());
    Ok((me, registry))
}

/// A fresh ICE username fragment and password (the ufrag routes the first STUN request).
pub fn credentials() -> (String, String) {
    let mut rng = rand::rng();
    (Alphanumeric.sample_string(&mut rng, 16), Alphanumeric.sample_string(&mut rng, 32))
}

/// An ICE-lite PeerConnection whose only candidate is the SFU's shared host address.
pub fn build(
    ufrag: &str,
    pwd: &str,
    host: SocketAddr,
    downlink: &Arc<Mutex<Downlink>>,
    now: Instant,
) -> Result<RTCPeerConnection, Error> {
    let (me, registry) = engine(downlink)?;
    let settings = SettingEngineBuilder::new()
        .with_lite(true)
        .with_ice_credentials(ufrag.to_owned(), pwd.to_owned())
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(settings)
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .build(now)?;
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".into(),
            address: host.ip().to_string(),
            port: host.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
    Ok(pc)
}

/// A client's first offer, taken by a fresh PC.
pub struct Accepted {
    /// The PC, its remote offer and local answer applied.
    pub pc: RTCPeerConnection,
    /// Its ICE username fragment (the first STUN request is routed by it).
    pub ufrag: String,
    /// The SFU's answer.
    pub answer: String,
    /// What the offer publishes.
    pub offered: Vec<OfferedTrack>,
    /// The audio-level extension id the offer negotiated, if any.
    pub audio_level_id: Option<u8>,
    /// What the feedback on what the PC sends says of the client's downlink.
    pub downlink: Arc<Mutex<Downlink>>,
}

/// Reads a client's join offer ([`published_tracks`]), then gives it to a fresh PC and answers:
/// everything the SFU does with the client's SDP before it touches a room.
pub fn accept_offer(offer: &str, host: SocketAddr, now: Instant) -> Result<Accepted, SdpError> {
    let offered = published_tracks(offer)?;
    let invalid = |e: Error| SdpError(e.to_string());
    let (ufrag, pwd) = credentials();
    let downlink = Arc::new(Mutex::new(Downlink::new(crate::bwe::PROBE_AFTER)));
    let mut pc = build(&ufrag, &pwd, host, &downlink, now).map_err(invalid)?;
    let description = rtc::peer_connection::sdp::RTCSessionDescription::offer(offer.to_owned()).map_err(invalid)?;
    pc.set_remote_description(now, description).map_err(invalid)?;
    let answer = pc.create_answer(None).map_err(invalid)?;
    pc.set_local_description(now, answer.clone()).map_err(invalid)?;
    let receivers: Vec<_> = pc.get_receivers().collect();
    let audio_level_id = receivers.into_iter().find_map(|id| {
        pc.rtp_receiver(id).and_then(|mut r| {
            r.get_parameters().rtp_parameters.header_extensions.iter().find(|e| e.uri == AUDIO_LEVEL_URI).map(|e| e.id as u8)
        })
    });
    Ok(Accepted { pc, ufrag, answer: answer.sdp, offered, audio_level_id, downlink })
}

/// Adds `publisher`'s `track` to `pc`, written with `ssrc` (video: retransmitted with
/// `rtx_ssrc` where the client takes RTX), on a sendonly m-line: `reuse`, an m-line whose last
/// track was removed (its sender kept, with its SSRCs), or a new one.
pub fn add_subscription(
    pc: &mut RTCPeerConnection,
    publisher: Pid,
    track: TrackId,
    kind: TrackKind,
    (ssrc, rtx_ssrc): (u32, Option<u32>),
    reuse: Option<RTCRtpTransceiverId>,
) -> Result<RTCRtpTransceiverId, Error> {
    let (codec_kind, codec) = match kind {
        TrackKind::Audio => (
            RtpCodecKind::Audio,
            RTCRtpCodec { mime_type: MIME_TYPE_OPUS.into(), clock_rate: 48_000, channels: 2, ..Default::default() },
        ),
        _ => (RtpCodecKind::Video, RTCRtpCodec { mime_type: MIME_TYPE_VP8.into(), clock_rate: 90_000, ..Default::default() }),
    };
    let media = MediaStreamTrack::new(
        publisher.to_string(),
        track.to_string(),
        format!("{kind:?}"),
        codec_kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                rtx: rtx_ssrc.map(|ssrc| RTCRtpRtxParameters { ssrc }),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    );
    if let Some(transceiver) = reuse {
        pc.rtp_transceiver(transceiver).ok_or(Error::ErrRTPSenderNotExisted)?.set_direction(RTCRtpTransceiverDirection::Sendonly);
        pc.rtp_sender(RTCRtpSenderId::from(transceiver)).ok_or(Error::ErrRTPSenderNotExisted)?.replace_track(media)?;
        return Ok(transceiver);
    }
    let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, streams: vec![], send_encodings: vec![] };
    pc.add_transceiver_from_track(media, Some(init))
}

/// An m-line whose track was removed (made inactive, its sender kept). It carries a new track
/// of its kind once the client has answered the offer that made it inactive: the client has
/// then seen the old track end, and sees the new one start.
#[derive(Debug, Clone, Copy)]
pub struct Freed {
    /// The transceiver.
    pub transceiver: RTCRtpTransceiverId,
    /// Whether it carries audio (otherwise video: a camera or a screen).
    pub audio: bool,
    /// The SSRC its sender writes.
    pub ssrc: u32,
    /// The SSRC of its retransmissions (video).
    pub rtx_ssrc: Option<u32>,
    /// The revision of the offer that made it inactive, once sent.
    pub revision: Option<u64>,
    /// Whether that offer's answer is back.
    pub settled: bool,
    /// What was last written on it.
    pub last: Option<Written>,
}

/// A track a client's offer publishes: an m-line it sends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedTrack {
    /// Its m-line's mid.
    pub mid: String,
    /// What it carries: the audio m-line is the microphone, the first video one the camera and
    /// the second the screen.
    pub kind: TrackKind,
    /// Its simulcast rids, lowest layer first (empty: one layer).
    pub rids: Vec<String>,
}

/// The tracks a client's offer publishes, or why the offer is refused: too big, not SDP, more
/// m-lines than a client needs, more than one audio or two video m-lines sent, a data channel,
/// or more than three simulcast layers.
pub fn published_tracks(sdp: &str) -> Result<Vec<OfferedTrack>, SdpError> {
    let refuse = |why: &str| Err(SdpError(why.to_owned()));
    if sdp.len() > SDP_MAX_BYTES {
        return refuse("the offer is larger than 64 KiB");
    }
    let parsed = rtc::sdp::description::session::SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| SdpError(format!("not a session description: {e}")))?;
    if parsed.media_descriptions.len() > CLIENT_MLINES_MAX {
        return refuse("more than 8 m-lines");
    }
    let (mut audio, mut video) = (0, 0);
    let mut tracks = Vec::new();
    for media in &parsed.media_descriptions {
        let sends = media.attribute("sendonly").is_some() || media.attribute("sendrecv").is_some();
        let kind = match media.media_name.media.as_str() {
            "audio" => TrackKind::Audio,
            "video" => TrackKind::Camera,
            _ => return refuse("only audio and video m-lines are accepted"),
        };
        let Some(Some(mid)) = media.attribute("mid") else { return refuse("an m-line has no mid") };
        if !sends || media.media_name.port.value == 0 {
            continue;
        }
        let kind = match kind {
            TrackKind::Audio => {
                audio += 1;
                if audio > 1 {
                    return refuse("more than one audio track sent");
                }
                TrackKind::Audio
            }
            _ => {
                video += 1;
                match video {
                    1 => TrackKind::Camera,
                    2 => TrackKind::Screen,
                    _ => return refuse("more than two video tracks sent"),
                }
            }
        };
        let rids = simulcast_rids(media)?;
        if kind == TrackKind::Audio && !rids.is_empty() {
            return refuse("simulcast audio");
        }
        tracks.push(OfferedTrack { mid: mid.to_owned(), kind, rids });
    }
    Ok(tracks)
}

/// The rids of an m-line's `a=simulcast:send`, in the order listed (lowest first), without
/// paused (`~`) ones or alternatives (`,`).
fn simulcast_rids(media: &rtc::sdp::description::media::MediaDescription) -> Result<Vec<String>, SdpError> {
    let Some(Some(value)) = media.attribute("simulcast") else { return Ok(Vec::new()) };
    let Some(list) = value.strip_prefix("send ") else { return Ok(Vec::new()) };
    let rids: Vec<String> = list
        .split(';')
        .filter_map(|alt| alt.split(',').next())
        .filter(|rid| !rid.is_empty() && !rid.starts_with('~'))
        .map(str::to_owned)
        .collect();
    if rids.len() > 3 || rids.iter().any(|r| r.len() > 16) {
        return Err(SdpError("more than three simulcast layers".into()));
    }
    Ok(rids)
}

/// A stream a participant publishes, by SSRC.
#[derive(Debug, Clone, Copy)]
pub struct Inbound {
    /// The track.
    pub track: TrackId,
    /// Its layer.
    pub layer: u8,
    /// What it carries.
    pub kind: TrackKind,
    /// Where keyframe requests for it go.
    pub receiver: RTCRtpReceiverId,
}

/// A track a participant receives: the stream the SFU sends it.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The transceiver carrying it.
    pub transceiver: RTCRtpTransceiverId,
    /// Its sender.
    pub sender: RTCRtpSenderId,
    /// The SSRC the SFU writes.
    pub ssrc: u32,
    /// The SSRC of its retransmissions (video).
    pub rtx_ssrc: Option<u32>,
    /// Who publishes it.
    pub publisher: Pid,
    /// What it carries.
    pub kind: TrackKind,
    /// The revision of the first offer that carried it.
    pub offered_in: Option<u64>,
    /// Whether the answer to that offer has been applied (nothing is written before).
    pub ready: bool,
    /// The payload type and the audio-level extension id negotiated on it.
    pub payload_type: u8,
    /// The audio-level extension id negotiated on it, if any.
    pub audio_level_id: Option<u8>,
    /// On a reused m-line: what was last written on it before (so the numbering of the SSRC
    /// goes on: a receiver's SRTP replay window and rollover counter would refuse a restart).
    pub after: Option<Written>,
    /// What is added to the room's numbering, fixed at the first packet written.
    pub shift: Option<(u16, u32)>,
    /// What was last written.
    pub last: Option<Written>,
}

/// The last packet written on an m-line.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// Its sequence number.
    pub seq: u16,
    /// Its timestamp.
    pub ts: u32,
    /// When.
    pub at: Instant,
}

impl Outbound {
    /// The sequence number and timestamp to write for the room's `seq` and `ts`.
    pub fn renumber(&mut self, seq: u16, ts: u32, now: Instant, clock_rate: u32) -> (u16, u32) {
        let (seq_shift, ts_shift) = *self.shift.get_or_insert_with(|| match self.after {
            Some(w) => {
                let ticks = (now.saturating_duration_since(w.at).as_millis() as u64 * u64::from(clock_rate) / 1000)
                    .clamp(1, u64::from(u32::MAX / 2)) as u32;
                (w.seq.wrapping_add(1).wrapping_sub(seq), w.ts.wrapping_add(ticks).wrapping_sub(ts))
            }
            None => (0, 0),
        });
        let out = (seq.wrapping_add(seq_shift), ts.wrapping_add(ts_shift));
        if self.last.is_none_or(|l| crate::rtp::seq_newer(out.0, l.seq)) {
            self.last = Some(Written { seq: out.0, ts: out.1, at: now });
        }
        out
    }
}

/// Answers refused to one offer before the SFU stops reading the next (a refused answer leaves
/// the offer waiting: without a bound, a client could have the SFU's one task parse SDP
/// without end).
pub const ANSWER_TRIES: u8 = 3;

/// The state of the SFU's own offers on a PC.
#[derive(Debug, Default)]
pub struct Negotiation {
    /// The revision of the last offer sent.
    pub revision: u64,
    /// An offer is out and its answer not back.
    pub awaiting_answer: bool,
    /// Answers to the offer out that were refused: past [`ANSWER_TRIES`], the next are refused
    /// unread.
    pub refused_answers: u8,
    /// The tracks changed since the last offer: send one when due.
    pub due: Option<Instant>,
}

/// One participant's PC and what the SFU knows of it.
pub struct Peer {
    /// Its room.
    pub room: u64,
    /// The PeerConnection.
    pub pc: RTCPeerConnection,
    /// Its ICE username fragment.
    pub ufrag: String,
    /// The addresses its STUN requests came from (the last [`ADDRESSES_MAX`]).
    pub addrs: Vec<SocketAddr>,
    /// When it joined.
    pub joined_at: Instant,
    /// Whether the PC is connected.
    pub connected: bool,
    /// What its offer publishes.
    pub published: Vec<(OfferedTrack, TrackId)>,
    /// Its incoming streams, by SSRC.
    pub inbound: HashMap<u32, Inbound>,
    /// The audio-level extension id of its offer.
    pub audio_level_id: Option<u8>,
    /// The tracks it receives.
    pub outbound: HashMap<TrackId, Outbound>,
    /// Its m-lines whose track was removed, to be reused.
    pub freed: Vec<Freed>,
    /// Its SFU offers.
    pub negotiation: Negotiation,
    /// What it may send and hear.
    pub rules: super::MediaRules,
    /// When the PC next wants `handle_timeout`.
    pub timeout: Option<Instant>,
    /// Its downlink, from the feedback on what it is forwarded.
    pub downlink: Arc<Mutex<Downlink>>,
    /// The budget the room was last given for it.
    pub budget: Option<u64>,
}

impl Peer {
    /// An SSRC none of its m-lines writes.
    pub fn fresh_ssrc(&self) -> u32 {
        loop {
            let s = rand::random::<u32>();
            let taken = |o: Option<u32>| o == Some(s);
            if s != 0
                && !self.outbound.values().any(|o| o.ssrc == s || taken(o.rtx_ssrc))
                && !self.freed.iter().any(|f| f.ssrc == s || taken(f.rtx_ssrc))
            {
                return s;
            }
        }
    }
}

/// Hands a subscriber's keyframe requests (PLI, FIR) to the SFU: inbound RTCP otherwise ends
/// in the interceptor chain.
#[derive(Default)]
struct KeyframeRequests {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication>()
        || any.is::<rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> =
                packets.iter().filter(|p| is_keyframe_request(p.as_ref())).cloned().collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.writes.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Transport-wide feedback statuses a client may report per second (a 20 Mb/s downlink of
/// 1,200-byte packets is about 2,100 a second) ...
pub const FEEDBACK_STATUSES_PER_SECOND: f64 = 20_000.0;
/// ... and at once.
pub const FEEDBACK_STATUSES_BURST: f64 = 4_096.0;

/// The transport-wide feedback statuses a client may still report (a token bucket). Each
/// status becomes work (an acknowledgement, a lookup in the send history), and a run-length
/// chunk of two bytes can claim 8,191 of them.
struct FeedbackBudget {
    tokens: f64,
    refilled: Option<Instant>,
}

impl Default for FeedbackBudget {
    fn default() -> Self {
        Self { tokens: FEEDBACK_STATUSES_BURST, refilled: None }
    }
}

impl FeedbackBudget {
    /// Whether a feedback packet is read (and its statuses spent): not if its chunks claim
    /// more statuses than it counts, nor past the budget.
    fn take(&mut self, now: Instant, feedback: &rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc) -> bool {
        use rtc::rtcp::transport_feedbacks::transport_layer_cc::PacketStatusChunk;
        let covered: usize = feedback
            .packet_chunks
            .iter()
            .map(|c| match c {
                PacketStatusChunk::RunLengthChunk(r) => usize::from(r.run_length),
                PacketStatusChunk::StatusVectorChunk(v) => v.symbol_list.len(),
            })
            .sum();
        let count = usize::from(feedback.packet_status_count);
        // The last chunk may cover up to 13 statuses past the count (a run may not, but 14 is
        // the most any well-formed packet can have left over).
        if covered > count + 14 {
            return false;
        }
        if let Some(at) = self.refilled {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * FEEDBACK_STATUSES_PER_SECOND).min(FEEDBACK_STATUSES_BURST);
        }
        self.refilled = Some(now);
        let cost = covered.max(count) as f64;
        if cost > self.tokens {
            return false;
        }
        self.tokens -= cost;
        true
    }
}

/// An interceptor of the SFU's own sending side that sees only the video streams it sends:
/// transport-wide sequence numbers and the send history of congestion control are for video
/// (an audio packet in the history would never be acknowledged, and would read as lost).
/// With a budget, the transport-wide feedback a client sends is bounded before `inner` reads
/// it, so a client cannot make the SFU's one task work for everyone else's media.
struct VideoOnly<I> {
    inner: I,
    feedback: Option<FeedbackBudget>,
}

impl<I> VideoOnly<I> {
    fn new(inner: I) -> Self {
        Self { inner, feedback: None }
    }

    fn with_feedback_budget(inner: I) -> Self {
        Self { inner, feedback: Some(FeedbackBudget::default()) }
    }
}

impl<I: Interceptor> Protocol<TaggedPacket, TaggedPacket, ()> for VideoOnly<I> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
        if let (Some(budget), Packet::Rtcp(packets)) = (&mut self.feedback, &mut msg.message.packet) {
            let now = msg.now;
            packets.retain(|p| p.as_any().downcast_ref::<TransportLayerCc>().is_none_or(|f| budget.take(now, f)));
        }
        self.inner.handle_read(msg)
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.inner.poll_read()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.inner.handle_write(msg)
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.inner.poll_write()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.inner.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn close(&mut self) -> Result<(), Self::Error> {
        self.inner.close()
    }
}

impl<I: Interceptor> Interceptor for VideoOnly<I> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if info.mime_type.to_ascii_lowercase().starts_with("video/") {
            self.inner.bind_local_stream(info);
            // Its retransmissions are bytes on the same downlink: numbered and counted too.
            if let Some(rtx) = info.ssrc_rtx {
                self.inner.bind_local_stream(&StreamInfo { ssrc: rtx, ssrc_rtx: None, ..info.clone() });
            }
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_local_stream(info);
        if let Some(rtx) = info.ssrc_rtx {
            self.inner.unbind_local_stream(&StreamInfo { ssrc: rtx, ssrc_rtx: None, ..info.clone() });
        }
    }

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_remote_stream(info);
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_remote_stream(info);
    }
}

/// The local ufrag of a STUN Binding Request (`USERNAME` is `<ours>:<theirs>`), if `buf` is one.
pub fn binding_request_ufrag(buf: &[u8]) -> Option<String> {
    use rtc::stun::message::{is_stun_message, Message, BINDING_REQUEST};
    if !is_stun_message(buf) {
        return None;
    }
    let mut message = Message::new();
    message.unmarshal_binary(buf).ok()?;
    if message.typ != BINDING_REQUEST {
        return None;
    }
    let username = rtc::stun::textattrs::TextAttribute::get_from_as(&message, rtc::stun::attributes::ATTR_USERNAME).ok()?;
    username.text.split(':').next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client offer with these m-lines: (media, direction, extra attribute lines).
    fn offer(mlines: &[(&str, &str, &[&str])]) -> String {
        let mut sdp = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
        for (i, (media, direction, extra)) in mlines.iter().enumerate() {
            let (fmt, map) = if *media == "audio" { ("111", "opus/48000/2") } else { ("96", "VP8/90000") };
            sdp += &format!("m={media} 9 UDP/TLS/RTP/SAVPF {fmt}\r\nc=IN IP4 0.0.0.0\r\na=mid:{i}\r\na={direction}\r\na=rtpmap:{fmt} {map}\r\n");
            for line in *extra {
                sdp += &format!("{line}\r\n");
            }
        }
        sdp
    }

    #[test]
    fn a_client_offer_publishes_a_mic_a_camera_with_its_layers_and_a_screen() {
        let sdp = offer(&[
            ("audio", "sendonly", &[]),
            ("video", "sendonly", &["a=rid:q send", "a=rid:h send", "a=rid:f send", "a=simulcast:send q;h;f"]),
            ("video", "sendonly", &[]),
            ("video", "recvonly", &[]),
        ]);
        let tracks = published_tracks(&sdp).expect("valid");
        assert_eq!(
            tracks,
            vec![
                OfferedTrack { mid: "0".into(), kind: TrackKind::Audio, rids: vec![] },
                OfferedTrack { mid: "1".into(), kind: TrackKind::Camera, rids: vec!["q".into(), "h".into(), "f".into()] },
                OfferedTrack { mid: "2".into(), kind: TrackKind::Screen, rids: vec![] },
            ]
        );
        // A paused layer is not counted; alternatives keep their first rid.
        let sdp = offer(&[("video", "sendonly", &["a=simulcast:send ~q;h,x;f"])]);
        assert_eq!(published_tracks(&sdp).expect("valid")[0].rids, vec!["h".to_string(), "f".to_string()]);
    }

    #[test]
    fn hostile_offers_are_refused_with_a_reason() {
        let refused = |sdp: &str| published_tracks(sdp).expect_err("refused").0;
        assert!(refused("hello").contains("not a session description"));
        assert!(refused(&"v=0\r\n".repeat(20_000)).contains("64 KiB"));
        let nine: Vec<(&str, &str, &[&str])> = (0..9).map(|_| ("video", "recvonly", &[] as &[&str])).collect();
        assert!(refused(&offer(&nine)).contains("8 m-lines"));
        assert!(refused(&offer(&[("audio", "sendonly", &[]), ("audio", "sendrecv", &[])])).contains("one audio"));
        let three: Vec<(&str, &str, &[&str])> = (0..3).map(|_| ("video", "sendonly", &[] as &[&str])).collect();
        assert!(refused(&offer(&three)).contains("two video"));
        assert!(refused(&offer(&[("video", "sendonly", &["a=simulcast:send a;b;c;d"])])).contains("three simulcast"));
        assert!(refused(&offer(&[("audio", "sendonly", &["a=simulcast:send a;b"])])).contains("simulcast audio"));
        let data =
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n";
        assert!(refused(data).contains("only audio and video"));
        let no_mid = offer(&[("audio", "sendonly", &[])]).replace("a=mid:0\r\n", "");
        assert!(refused(&no_mid).contains("no mid"));
    }

    #[test]
    fn feedback_claiming_more_than_it_counts_or_more_than_the_budget_is_dropped() {
        use rtc::rtcp::transport_feedbacks::transport_layer_cc::{PacketStatusChunk, RunLengthChunk, TransportLayerCc};
        let feedback = |count: u16, run: u16| TransportLayerCc {
            packet_status_count: count,
            packet_chunks: vec![PacketStatusChunk::RunLengthChunk(RunLengthChunk { run_length: run, ..Default::default() })],
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut guard = FeedbackBudget::default();
        // Two bytes claiming 8,191 statuses for a packet that counts one: never read.
        assert!(!guard.take(t0, &feedback(1, 8191)));
        // Honest feedback is read until the burst is spent...
        let taken = (0..100).filter(|_| guard.take(t0, &feedback(100, 100))).count();
        assert_eq!(taken, 40, "4,096 statuses at once");
        // ... then 20,000 a second: 100 ms later, 2,000 more.
        let later = t0 + std::time::Duration::from_millis(100);
        let taken = (0..100).filter(|_| guard.take(later, &feedback(100, 100))).count();
        assert_eq!(taken, 20);
    }

    #[test]
    fn a_reused_m_line_goes_on_with_its_ssrcs_numbering() {
        let t0 = Instant::now();
        let out = |after| Outbound {
            transceiver: RTCRtpTransceiverId::from(0usize),
            sender: RTCRtpSenderId::from(RTCRtpTransceiverId::from(0usize)),
            ssrc: 7,
            rtx_ssrc: None,
            publisher: 1,
            kind: TrackKind::Audio,
            offered_in: Some(1),
            ready: true,
            payload_type: OPUS_PT,
            audio_level_id: None,
            after,
            shift: None,
            last: None,
        };
        // A fresh m-line writes the room's numbers as they are.
        let mut fresh = out(None);
        assert_eq!(fresh.renumber(500, 9_000, t0, 48_000), (500, 9_000));
        // A reused one goes on from the last packet written on it, spaced by the time since.
        let last = Written { seq: 65_535, ts: u32::MAX - 100, at: t0 };
        let mut reused = out(Some(last));
        let later = t0 + std::time::Duration::from_millis(40);
        assert_eq!(reused.renumber(500, 9_000, later, 48_000), (0, (u32::MAX - 100).wrapping_add(1920)));
        assert_eq!(reused.renumber(501, 9_960, later, 48_000), (1, (u32::MAX - 100).wrapping_add(2880)));
        // A retransmission of an older packet keeps its number and does not move the last.
        assert_eq!(reused.renumber(500, 9_000, later, 48_000), (0, (u32::MAX - 100).wrapping_add(1920)));
        assert_eq!(reused.last.map(|w| w.seq), Some(1));
    }

    #[test]
    fn publishers_get_transport_wide_feedback_and_layers_by_rid() {
        // What Chromium's bandwidth estimate for its uplink needs, and what simulcast needs.
        let offer = include_str!("../../../fuzz/seeds/sdp_offer/chromium-mic-camera-screen.sdp");
        let accepted = accept_offer(offer, "127.0.0.1:50000".parse().expect("addr"), Instant::now()).expect("taken");
        assert!(accepted.answer.contains(rtc::sdp::extmap::TRANSPORT_CC_URI), "{}", accepted.answer);
        assert!(accepted.answer.contains("a=rtcp-fb:96 transport-cc"), "{}", accepted.answer);
        assert!(accepted.answer.contains("a=simulcast:recv q;h;f"), "{}", accepted.answer);
        assert_eq!(
            accepted.offered.iter().map(|t| t.kind).collect::<Vec<_>>(),
            [TrackKind::Audio, TrackKind::Camera, TrackKind::Screen]
        );
    }

    #[test]
    fn any_bytes_are_refused_or_read_without_a_panic() {
        // A seeded walk over mutations of a real offer, and over random bytes.
        let base = offer(&[
            ("audio", "sendonly", &[]),
            ("video", "sendonly", &["a=rid:q send", "a=rid:f send", "a=simulcast:send q;f"]),
        ]);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut bytes = base.clone().into_bytes();
            for _ in 0..(next() % 8 + 1) {
                let at = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[at] = next() as u8,
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, b"\r\n=:;~ a"[(next() % 8) as usize]),
                }
            }
            let _ = published_tracks(&String::from_utf8_lossy(&bytes));
            let random: Vec<u8> = (0..(next() % 300)).map(|_| next() as u8).collect();
            let _ = published_tracks(&String::from_utf8_lossy(&random));
            let _ = binding_request_ufrag(&random);
        }
    }
}
