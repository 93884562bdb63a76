//! A native voice peer (feature `voice-native`): one WebRTC PeerConnection (webrtc-rs `rtc`,
//! sans-IO, on its own UDP socket) that publishes a microphone, a camera (one layer or three
//! simulcast layers) and a screen, and receives what the SFU forwards. Every frame is SFrame-
//! encrypted before it is packetized and decrypted after it arrives ([`crate::voice`]): what
//! leaves this peer is ciphertext but for the codec's first bytes, as in the browser.
//!
//! Frames travel one per RTP packet (the synthetic sources of tests, benchmarks and bots fit
//! in one); the SDP it offers is the one an outside client offers (docs/voice.md).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc,
};
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability,
    RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;

use crate::voice::{FrameError, MediaReceiver, MediaSender};

/// What a track of this peer carries (the order of its m-lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The microphone (Opus).
    Microphone,
    /// The camera (VP8).
    Camera,
    /// The screen (VP8).
    Screen,
}

/// The simulcast rids of a camera, lowest layer first.
pub const CAMERA_RIDS: [&str; 3] = ["q", "h", "f"];

/// VP8's payload type in this peer's offers, and its retransmission stream's (RTX).
const VP8_PT: u8 = 96;
const VP8_RTX_PT: u8 = 97;

/// Why the peer could not do something.
#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    /// WebRTC refused (a bad SDP, a state that does not allow it).
    #[error("webrtc: {0}")]
    Rtc(String),
    /// The frame could not be encrypted.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// Not connected yet, or no such track.
    #[error("not sending")]
    NotSending,
}

fn rtc_error(e: impl std::fmt::Display) -> VoiceError {
    VoiceError::Rtc(e.to_string())
}

/// A packet received from the SFU, and what decrypting it gave.
#[derive(Debug)]
pub struct Received {
    /// The publisher, as the SFU's stream id names it (a claim of the SFU; `frame` says who
    /// really sent it).
    pub stream: String,
    /// Audio or video.
    pub audio: bool,
    /// The RTP sequence number.
    pub seq: u16,
    /// The payload exactly as forwarded.
    pub payload: Vec<u8>,
    /// The sender's slot and the frame, or why it could not be read.
    pub frame: Result<(u32, Vec<u8>), FrameError>,
    /// When it was read off the socket and decrypted.
    pub at: Instant,
}

pub use crate::voice::clear_bytes;

/// The length of a VP8 payload descriptor (RFC 7741 §4.2), if the payload holds one whole.
fn vp8_descriptor_len(payload: &[u8]) -> Option<usize> {
    let first = *payload.first()?;
    if first & 0x80 == 0 {
        return Some(1).filter(|n| *n <= payload.len());
    }
    let x = *payload.get(1)?;
    let mut at = 2;
    if x & 0x80 != 0 {
        at += if payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
    }
    if x & 0x40 != 0 {
        at += 1;
    }
    if x & 0x30 != 0 {
        at += 1;
    }
    Some(at).filter(|n| *n <= payload.len())
}

/// A sender: its source, id and layers (rid, SSRC).
type SenderLayers = (Source, RTCRtpSenderId, Vec<(String, u32)>);

/// A voice peer.
pub struct VoicePeer {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    /// Its senders, in [`Source`] order: (source, sender, [(rid, ssrc)]).
    senders: Vec<SenderLayers>,
    /// Next sequence number by SSRC.
    seqs: HashMap<u32, u16>,
    /// Received tracks: (stream, audio) by track id.
    streams: HashMap<String, (String, bool)>,
    connected: bool,
    failed: bool,
    started: Instant,
    /// The audio level its microphone packets carry (RFC 6464, −dBov: 0 loudest, 127 silence).
    audio_level: u8,
    /// This peer's key and frame counter.
    pub media: MediaSender,
    /// The others' keys.
    pub keys: MediaReceiver,
}

fn engine() -> Result<MediaEngine, VoiceError> {
    let mut me = MediaEngine::default();
    me.register_codec(
        RTCRtpCodecParameters {
            payload_type: 111,
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.into(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
        },
        RtpCodecKind::Audio,
    )
    .map_err(rtc_error)?;
    me.register_codec(
        RTCRtpCodecParameters {
            payload_type: VP8_PT,
            rtp_codec: RTCRtpCodec { mime_type: MIME_TYPE_VP8.into(), clock_rate: 90_000, ..Default::default() },
        },
        RtpCodecKind::Video,
    )
    .map_err(rtc_error)?;
    let ext = |uri: &str| RTCRtpHeaderExtensionCapability { uri: uri.to_owned() };
    me.register_header_extension(ext(rtc::sdp::extmap::AUDIO_LEVEL_URI), RtpCodecKind::Audio, None).map_err(rtc_error)?;
    me.register_header_extension(ext(rtc::sdp::extmap::SDES_MID_URI), RtpCodecKind::Audio, None).map_err(rtc_error)?;
    configure_simulcast_extension_headers(&mut me).map_err(rtc_error)?;
    Ok(me)
}

impl VoicePeer {
    /// A peer on a fresh localhost-or-`ip` UDP socket, publishing a microphone, a camera
    /// (`simulcast`: three layers, [`CAMERA_RIDS`]) and a screen, with `media` as its key.
    pub async fn bind(ip: std::net::IpAddr, media: MediaSender, simulcast: bool) -> Result<Self, VoiceError> {
        Self::bind_with(ip, media, simulcast, &[Source::Microphone, Source::Camera, Source::Screen]).await
    }

    /// Like [`VoicePeer::bind`], publishing only `sources` (none: a listener, whose offer holds
    /// one receive-only audio m-line).
    pub async fn bind_with(
        ip: std::net::IpAddr,
        media: MediaSender,
        simulcast: bool,
        sources: &[Source],
    ) -> Result<Self, VoiceError> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let local = socket.local_addr()?;
        let mut me = engine()?;
        let registry = rtc::interceptor::Registry::new();
        // Lost video is asked for again, and comes back over VP8's retransmission stream where
        // the SFU sends one, read by `copains_rtx` as the packet it repairs; the retransmissions
        // of this peer's camera layers are named by their rid, as browsers name them.
        let registry = copains_rtx::configure(registry, &mut me, VP8_RTX_PT, VP8_PT, true).map_err(rtc_error)?;
        let registry = configure_rtcp_reports(registry);
        let registry = configure_twcc(registry, &mut me).map_err(rtc_error)?;
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(
                SettingEngineBuilder::new().with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled).build(),
            )
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(Instant::now())
            .map_err(rtc_error)?;
        let mut senders = Vec::new();
        if sources.is_empty() {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            };
            pc.add_transceiver_from_kind(RtpCodecKind::Audio, Some(init)).map_err(rtc_error)?;
        }
        for &source in sources {
            let (kind, codec) = match source {
                Source::Microphone => (
                    RtpCodecKind::Audio,
                    RTCRtpCodec { mime_type: MIME_TYPE_OPUS.into(), clock_rate: 48_000, channels: 2, ..Default::default() },
                ),
                _ => (
                    RtpCodecKind::Video,
                    RTCRtpCodec { mime_type: MIME_TYPE_VP8.into(), clock_rate: 90_000, ..Default::default() },
                ),
            };
            let rids: Vec<&str> = if source == Source::Camera && simulcast { CAMERA_RIDS.to_vec() } else { vec![""] };
            let layers: Vec<(String, u32)> = rids
                .iter()
                .map(|rid| {
                    let ssrc = loop {
                        let s = rand::random::<u32>();
                        if s != 0 && s != u32::MAX {
                            break s;
                        }
                    };
                    (rid.to_string(), ssrc)
                })
                .collect();
            let encodings = layers
                .iter()
                .map(|(rid, ssrc)| RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        rid: rid.clone(),
                        ssrc: Some(*ssrc),
                        // Video is retransmitted on a stream of its own (RTX) where the SFU takes it.
                        rtx: (kind == RtpCodecKind::Video).then(|| RTCRtpRtxParameters { ssrc: ssrc.wrapping_add(1) }),
                        ..Default::default()
                    },
                    codec: codec.clone(),
                    ..Default::default()
                })
                .collect();
            let name = format!("{source:?}").to_lowercase();
            let track = MediaStreamTrack::new("lescopains".into(), name.clone(), name, kind, encodings);
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            };
            let transceiver = pc.add_transceiver_from_track(track, Some(init)).map_err(rtc_error)?;
            senders.push((source, RTCRtpSenderId::from(transceiver), layers));
        }
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".into(),
                address: local.ip().to_string(),
                port: local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(rtc_error)?;
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json().map_err(rtc_error)?).map_err(rtc_error)?;
        Ok(Self {
            pc,
            socket,
            local,
            senders,
            seqs: HashMap::new(),
            streams: HashMap::new(),
            connected: false,
            failed: false,
            started: Instant::now(),
            audio_level: 10,
            media,
            keys: MediaReceiver::default(),
        })
    }

    /// The offer to join with.
    pub fn offer(&mut self) -> Result<String, VoiceError> {
        let offer = self.pc.create_offer(None).map_err(rtc_error)?;
        self.pc.set_local_description(Instant::now(), offer.clone()).map_err(rtc_error)?;
        Ok(offer.sdp)
    }

    /// The SFU's answer to the join offer.
    pub fn apply_answer(&mut self, sdp: String) -> Result<(), VoiceError> {
        let answer = RTCSessionDescription::answer(sdp).map_err(rtc_error)?;
        self.pc.set_remote_description(Instant::now(), answer).map_err(rtc_error)
    }

    /// Answers an offer of the SFU (its subscriptions changed).
    pub fn answer_offer(&mut self, sdp: String) -> Result<String, VoiceError> {
        let offer = RTCSessionDescription::offer(sdp).map_err(rtc_error)?;
        self.pc.set_remote_description(Instant::now(), offer).map_err(rtc_error)?;
        let answer = self.pc.create_answer(None).map_err(rtc_error)?;
        self.pc.set_local_description(Instant::now(), answer.clone()).map_err(rtc_error)?;
        Ok(answer.sdp)
    }

    /// Sets the audio level its microphone packets carry from now on (RFC 6464, −dBov: 0 the
    /// loudest, 127 silence; 10 by default). The SFU forwards the loudest microphones of a room.
    pub fn set_audio_level(&mut self, level: u8) {
        self.audio_level = level.min(127);
    }

    /// Whether media flows to and from the SFU.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the connection failed.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Encrypts and sends one encoded frame per layer of `source` (the camera's layers lowest
    /// first; one frame for the others). Nothing is sent before the connection is up, and
    /// never a frame that could not be encrypted.
    pub async fn send_frames(&mut self, source: Source, frames: &[&[u8]]) -> Result<(), VoiceError> {
        if !self.connected {
            return Err(VoiceError::NotSending);
        }
        let Some(index) = self.senders.iter().position(|(s, _, _)| *s == source) else { return Err(VoiceError::NotSending) };
        let (_, sender, layers) = self.senders[index].clone();
        let audio = source == Source::Microphone;
        let mid = self.pc.rtp_transceiver(index).and_then(|t| t.mid().clone()).unwrap_or_default();
        let elapsed = self.started.elapsed().as_millis() as u64;
        let timestamp = (elapsed * if audio { 48 } else { 90 }) as u32;
        // What the sender negotiated, read once for every layer.
        let (payload_type, mid_id, rid_id, level_id) = {
            let Some(mut s) = self.pc.rtp_sender(sender) else { return Err(VoiceError::NotSending) };
            let params = &s.get_parameters().rtp_parameters;
            let ext = |uri: &str| params.header_extensions.iter().find(|e| e.uri == uri).map(|e| e.id as u8);
            (
                params.codecs.first().map(|c| c.payload_type).ok_or(VoiceError::NotSending)?,
                ext(rtc::sdp::extmap::SDES_MID_URI),
                ext(rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI),
                ext(rtc::sdp::extmap::AUDIO_LEVEL_URI),
            )
        };
        for ((rid, ssrc), frame) in layers.iter().zip(frames) {
            let sealed = self.media.encrypt(frame, clear_bytes(audio, frame))?;
            let payload = if audio {
                sealed
            } else {
                // A one-byte VP8 payload descriptor: start of partition 0.
                let mut p = Vec::with_capacity(sealed.len() + 1);
                p.push(0x10);
                p.extend_from_slice(&sealed);
                p
            };
            let seq = self.seqs.entry(*ssrc).or_insert_with(rand::random::<u16>);
            *seq = seq.wrapping_add(1);
            let sequence_number = *seq;
            let Some(mut s) = self.pc.rtp_sender(sender) else { return Err(VoiceError::NotSending) };
            let mut header = rtc::rtp::header::Header {
                version: 2,
                marker: true,
                payload_type,
                sequence_number,
                timestamp,
                ssrc: *ssrc,
                ..Default::default()
            };
            if let Some(id) = mid_id {
                header.set_extension(id, Bytes::from(mid.clone().into_bytes())).map_err(rtc_error)?;
            }
            if let (Some(id), false) = (rid_id, rid.is_empty()) {
                header.set_extension(id, Bytes::from(rid.clone().into_bytes())).map_err(rtc_error)?;
            }
            if let (Some(id), true) = (level_id, audio) {
                // The voice-activity bit and the level (by default 10 dB below full scale: a
                // synthetic source speaks loudly).
                header.set_extension(id, Bytes::copy_from_slice(&[0x80 | self.audio_level])).map_err(rtc_error)?;
            }
            s.write_rtp(Instant::now(), rtc::rtp::Packet { header, payload: Bytes::from(payload) }).map_err(rtc_error)?;
        }
        self.flush().await;
        Ok(())
    }

    async fn flush(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            let _ = self.socket.send_to(&out.message, out.transport.peer_addr).await;
        }
    }

    /// Handles what the PC has to say; received packets are decrypted into `out`.
    async fn pump(&mut self, out: &mut Vec<Received>) {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) => self.connected = true,
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed,
                ) => {
                    self.connected = false;
                    self.failed = true;
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let audio = self.pc.rtp_receiver(init.receiver_id).is_some_and(|r| r.track().kind() == RtpCodecKind::Audio);
                    let stream = init.stream_ids.first().cloned().unwrap_or_default();
                    self.streams.insert(init.track_id.clone(), (stream, audio));
                }
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            let RTCMessage::RtpPacket(track_id, packet) = message else { continue };
            let Some((stream, audio)) = self.streams.get(&track_id).cloned() else { continue };
            let payload = packet.payload.to_vec();
            let frame = if audio {
                self.keys.decrypt(&payload, 1)
            } else {
                match vp8_descriptor_len(&payload) {
                    Some(skip) => {
                        let sealed = &payload[skip..];
                        self.keys.decrypt(sealed, clear_bytes(false, sealed))
                    }
                    None => Err(FrameError::Malformed),
                }
            };
            out.push(Received { stream, audio, seq: packet.header.sequence_number, payload, frame, at: Instant::now() });
        }
        self.flush().await;
    }

    /// Runs the connection until `deadline`: reads the socket, fires the timers, and decrypts
    /// what arrives into `out`.
    pub async fn run_until(&mut self, deadline: Instant, out: &mut Vec<Received>) {
        let mut buf = vec![0u8; 2048];
        loop {
            self.pump(out).await;
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let timer = self.pc.poll_timeout().unwrap_or(now + Duration::from_millis(50)).min(deadline);
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((len, from)) = received else { continue };
                    let _ = self.pc.handle_read(TaggedBytesMut {
                        now: Instant::now(),
                        transport: TransportContext {
                            local_addr: self.local,
                            peer_addr: from,
                            transport_protocol: TransportProtocol::UDP,
                            ecn: None,
                        },
                        message: BytesMut::from(&buf[..len]),
                    });
                }
                () = tokio::time::sleep_until(timer.into()) => {
                    let _ = self.pc.handle_timeout(Instant::now());
                }
            }
        }
    }

    /// Closes the connection.
    pub async fn close(&mut self) {
        let _ = self.pc.close();
        self.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clear_bytes_and_the_vp8_descriptor_are_read_within_bounds() {
        assert_eq!(clear_bytes(true, &[0xf8, 1, 2]), 1);
        assert_eq!(clear_bytes(true, &[]), 0);
        assert_eq!(clear_bytes(false, &[0x00; 20]), 10, "a keyframe");
        assert_eq!(clear_bytes(false, &[0x01; 20]), 3, "a delta frame");
        assert_eq!(clear_bytes(false, &[0x00; 4]), 4, "never more than the frame");
        assert_eq!(vp8_descriptor_len(&[0x10, 0]), Some(1));
        assert_eq!(vp8_descriptor_len(&[0x90, 0x80, 0x81, 0x02, 0]), Some(4), "extended, 15-bit picture id");
        assert_eq!(vp8_descriptor_len(&[0x90, 0xf0, 0x01, 0x02, 0x03]), Some(5));
        assert_eq!(vp8_descriptor_len(&[0x90, 0xf0, 0x81]), None, "truncated");
        assert_eq!(vp8_descriptor_len(&[]), None);
    }
}
