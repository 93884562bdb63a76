//! The SFU driver with real WebRTC peers: three `rtc` PeerConnections on their own localhost
//! UDP sockets join one room through one SFU port, publish audio, a camera and a screen, and
//! each receives exactly the bytes the other two sent.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use copains_sfu::driver::{self, RemoveReason, SfuConfig, SfuError, SfuEvent, SfuHandle};
use copains_sfu::{Quality, RoomLimits, TrackKind};
use parking_lot::Mutex;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{configure_nack, configure_rtcp_reports, configure_twcc};
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
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const ROOM: u64 = 7;

fn codecs() -> MediaEngine {
    let mut me = MediaEngine::default();
    me.register_codec(
        RTCRtpCodecParameters {
            payload_type: 111,
            rtp_codec: RTCRtpCodec { mime_type: MIME_TYPE_OPUS.into(), clock_rate: 48_000, channels: 2, ..Default::default() },
        },
        RtpCodecKind::Audio,
    )
    .expect("opus");
    me.register_codec(
        RTCRtpCodecParameters {
            payload_type: 96,
            rtp_codec: RTCRtpCodec { mime_type: MIME_TYPE_VP8.into(), clock_rate: 90_000, ..Default::default() },
        },
        RtpCodecKind::Video,
    )
    .expect("vp8");
    let ext = |uri: &str| RTCRtpHeaderExtensionCapability { uri: uri.to_owned() };
    me.register_header_extension(ext(rtc::sdp::extmap::AUDIO_LEVEL_URI), RtpCodecKind::Audio, None).expect("level");
    me.register_header_extension(ext(rtc::sdp::extmap::SDES_MID_URI), RtpCodecKind::Audio, None).expect("mid");
    rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers(&mut me).expect("rid");
    me
}

/// What a client received: (publisher stream id, kind, payload).
type Received = Arc<Mutex<Vec<(String, RtpCodecKind, Vec<u8>, u16)>>>;

/// A sender: its kind, id and layers (rid, SSRC).
type Sender = (RtpCodecKind, RTCRtpSenderId, Vec<(String, u32)>);

struct Client {
    pid: u64,
    pc: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    /// Its senders: (kind, sender, [(rid, ssrc)]) (the camera sends three simulcast layers).
    senders: Vec<Sender>,
    /// Receivers' track ids by transceiver, to read the stream (publisher) of each packet.
    streams: HashMap<String, (String, RtpCodecKind)>,
    connected: bool,
}

impl Client {
    async fn new(pid: u64) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let local = socket.local_addr().expect("addr");
        let mut me = codecs();
        let registry = rtc::interceptor::Registry::new();
        let registry = configure_nack(registry, &mut me);
        let registry = configure_rtcp_reports(registry);
        let registry = configure_twcc(registry, &mut me).expect("twcc");
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(
                SettingEngineBuilder::new().with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled).build(),
            )
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(Instant::now())
            .expect("pc");
        let mut senders = Vec::new();
        for (i, kind) in [RtpCodecKind::Audio, RtpCodecKind::Video, RtpCodecKind::Video].into_iter().enumerate() {
            let codec = match kind {
                RtpCodecKind::Audio => {
                    RTCRtpCodec { mime_type: MIME_TYPE_OPUS.into(), clock_rate: 48_000, channels: 2, ..Default::default() }
                }
                _ => RTCRtpCodec { mime_type: MIME_TYPE_VP8.into(), clock_rate: 90_000, ..Default::default() },
            };
            let rids: Vec<&str> = if i == 1 { vec!["q", "h", "f"] } else { vec![""] };
            let layers: Vec<(String, u32)> = rids
                .iter()
                .enumerate()
                .map(|(l, rid)| (rid.to_string(), (pid as u32) * 100 + i as u32 * 10 + l as u32 + 1))
                .collect();
            let encodings = layers
                .iter()
                .map(|(rid, ssrc)| RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters { rid: rid.clone(), ssrc: Some(*ssrc), ..Default::default() },
                    codec: codec.clone(),
                    ..Default::default()
                })
                .collect();
            let track = MediaStreamTrack::new(format!("client-{pid}"), format!("t{i}"), format!("t{i}"), kind, encodings);
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            };
            let t = pc.add_transceiver_from_track(track, Some(init)).expect("transceiver");
            senders.push((kind, RTCRtpSenderId::from(t), layers));
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
        .expect("candidate");
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json().expect("json")).expect("add candidate");
        Self { pid, pc, socket, local, senders, streams: HashMap::new(), connected: false }
    }

    fn offer(&mut self) -> String {
        let offer = self.pc.create_offer(None).expect("offer");
        self.pc.set_local_description(Instant::now(), offer.clone()).expect("local offer");
        offer.sdp
    }

    fn answered(&mut self, sdp: String) {
        self.pc
            .set_remote_description(Instant::now(), RTCSessionDescription::answer(sdp).expect("answer"))
            .expect("remote answer");
    }

    fn answer(&mut self, sdp: String) -> String {
        self.pc.set_remote_description(Instant::now(), RTCSessionDescription::offer(sdp).expect("offer")).expect("remote offer");
        let answer = self.pc.create_answer(None).expect("answer");
        self.pc.set_local_description(Instant::now(), answer.clone()).expect("local answer");
        answer.sdp
    }

    /// Handles everything the PC has to say; received RTP goes into `received`.
    async fn pump(&mut self, received: &Received) {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) => self.connected = true,
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Failed) => {
                    panic!("client {} failed", self.pid)
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let receiver = self.pc.rtp_receiver(init.receiver_id).expect("receiver");
                    let kind = receiver.track().kind();
                    let stream = init.stream_ids.first().cloned().unwrap_or_default();
                    self.streams.insert(init.track_id.clone(), (stream, kind));
                }
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            if let RTCMessage::RtpPacket(track_id, packet) = message {
                let (stream, kind) = self.streams.get(&track_id).cloned().unwrap_or((String::new(), RtpCodecKind::Unspecified));
                received.lock().push((stream, kind, packet.payload.to_vec(), packet.header.sequence_number));
            }
        }
        while let Some(out) = self.pc.poll_write() {
            let _ = self.socket.send_to(&out.message, out.transport.peer_addr).await;
        }
    }

    /// One packet on each of its tracks (and each layer of the camera): the payload names the
    /// sender, the track, the layer and the number. Video packets start with a VP8 descriptor
    /// marking a keyframe's first packet; audio carries a loud audio level.
    fn send_media(&mut self, n: u16, sent: &Mutex<HashSet<Vec<u8>>>) {
        if !self.connected {
            return;
        }
        let senders = self.senders.clone();
        for (i, (kind, sender, layers)) in senders.into_iter().enumerate() {
            let Some(mut s) = self.pc.rtp_sender(sender) else { continue };
            let params = s.get_parameters().rtp_parameters.clone();
            let pt = params.codecs.first().map(|c| c.payload_type).unwrap_or(96);
            let ext = |uri: &str| params.header_extensions.iter().find(|e| e.uri == uri).map(|e| e.id as u8);
            let (mid_id, rid_id, level_id) = (
                ext(rtc::sdp::extmap::SDES_MID_URI),
                ext(rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI),
                ext(rtc::sdp::extmap::AUDIO_LEVEL_URI),
            );
            let mid = self.pc.rtp_transceiver(i).and_then(|t| t.mid().clone()).unwrap_or_default();
            let Some(mut s) = self.pc.rtp_sender(sender) else { continue };
            for (rid, ssrc) in layers {
                let mut payload = match kind {
                    RtpCodecKind::Audio => vec![0xf8],
                    _ => vec![0x10, 0x00],
                };
                payload.extend_from_slice(format!("from {} track {i} layer {rid} packet {n}", self.pid).as_bytes());
                let mut header = rtc::rtp::header::Header {
                    version: 2,
                    marker: true,
                    payload_type: pt,
                    sequence_number: n,
                    timestamp: u32::from(n) * if kind == RtpCodecKind::Audio { 960 } else { 3000 },
                    ssrc,
                    ..Default::default()
                };
                if let Some(id) = mid_id {
                    header.set_extension(id, Bytes::from(mid.clone().into_bytes())).expect("mid");
                }
                if let (Some(id), false) = (rid_id, rid.is_empty()) {
                    header.set_extension(id, Bytes::from(rid.clone().into_bytes())).expect("rid");
                }
                if let (Some(id), RtpCodecKind::Audio) = (level_id, kind) {
                    header.set_extension(id, Bytes::from_static(&[0x80 | 10])).expect("level");
                }
                if s.write_rtp(Instant::now(), rtc::rtp::Packet { header, payload: Bytes::from(payload.clone()) }).is_ok() {
                    sent.lock().insert(payload);
                }
            }
        }
    }
}

/// Runs a client: its socket, its timers, the SFU's offers for it, and a packet on every track
/// every 20 ms.
async fn run_client(
    mut client: Client,
    sfu: SfuHandle,
    mut offers: mpsc::UnboundedReceiver<String>,
    received: Received,
    sent: Arc<Mutex<HashSet<Vec<u8>>>>,
    stop: Instant,
) {
    let offer = client.offer();
    let joined = sfu.join(ROOM, client.pid, offer).await.expect("join");
    client.answered(joined.answer);
    let mut buf = vec![0u8; 2048];
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut n: u16 = 0;
    while Instant::now() < stop {
        client.pump(&received).await;
        let timeout = client.pc.poll_timeout().unwrap_or_else(|| Instant::now() + Duration::from_millis(50));
        tokio::select! {
            r = client.socket.recv_from(&mut buf) => {
                let (len, from) = r.expect("recv");
                let local = client.local;
                let _ = client.pc.handle_read(TaggedBytesMut {
                    now: Instant::now(),
                    transport: TransportContext { local_addr: local, peer_addr: from, transport_protocol: TransportProtocol::UDP, ecn: None },
                    message: BytesMut::from(&buf[..len]),
                });
            }
            Some(offer) = offers.recv() => {
                let answer = client.answer(offer);
                sfu.answer(client.pid, answer).await.expect("answer taken");
            }
            _ = ticker.tick() => {
                n = n.wrapping_add(1);
                client.send_media(n, &sent);
            }
            () = tokio::time::sleep_until(timeout.into()) => {
                let _ = client.pc.handle_timeout(Instant::now());
            }
        }
    }
    sfu.leave(client.pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_each_receive_exactly_what_the_other_two_send() {
    let config = SfuConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..SfuConfig::default() };
    let (sfu, mut events) = driver::start(config).await.expect("sfu");
    let pids = [1u64, 2, 3];
    let sent = Arc::new(Mutex::new(HashSet::new()));
    let mut offer_tx = HashMap::new();
    let mut received = HashMap::new();
    let stop = Instant::now() + Duration::from_secs(6);
    let mut tasks = Vec::new();
    for pid in pids {
        let (tx, rx) = mpsc::unbounded_channel();
        offer_tx.insert(pid, tx);
        let got: Received = Arc::default();
        received.insert(pid, got.clone());
        let client = Client::new(pid).await;
        tasks.push(tokio::spawn(run_client(client, sfu.clone(), rx, got, sent.clone(), stop)));
    }
    let mut epochs = Vec::new();
    let mut connected = HashSet::new();
    let mut speaking = HashSet::new();
    // Client 2 asks for the lowest layer of client 1's camera after 3 s, and the best again
    // after 4.5 s; client 3 never asks.
    let mut camera_of_1 = None;
    let started = Instant::now();
    let (low_at, high_at) = (started + Duration::from_secs(3), started + Duration::from_millis(4500));
    let mut asked = 0;
    let dispatch = async {
        loop {
            let next = if asked == 0 { low_at } else { high_at };
            tokio::select! {
                event = events.recv() => match event.expect("sfu running") {
                    SfuEvent::Offer { pid, sdp, tracks, .. } => {
                        assert!(tracks.iter().all(|t| t.publisher != pid), "nobody receives their own tracks");
                        if pid == 2 {
                            camera_of_1 = tracks.iter().find(|t| t.publisher == 1 && t.kind == TrackKind::Camera).map(|t| t.track);
                        }
                        let _ = offer_tx[&pid].send(sdp);
                    }
                    SfuEvent::Epoch { epoch, .. } => epochs.push(epoch),
                    SfuEvent::Connected { pid } => {
                        connected.insert(pid);
                    }
                    SfuEvent::Speaking { pid, speaking: true, .. } => {
                        speaking.insert(pid);
                    }
                    SfuEvent::Removed { .. } | SfuEvent::Speaking { .. } => {}
                },
                () = tokio::time::sleep_until(next.into()), if asked < 2 => {
                    let track = camera_of_1.expect("client 2 receives client 1's camera");
                    sfu.quality(2, track, if asked == 0 { Quality::Low } else { Quality::High });
                    asked += 1;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(7), dispatch).await;
    for task in tasks {
        task.await.expect("client");
    }
    assert_eq!(connected, pids.into_iter().collect::<HashSet<_>>(), "every PC connected");
    assert_eq!(&epochs[..3], &[1, 2, 3], "each join starts an epoch");
    assert_eq!(speaking, pids.into_iter().collect::<HashSet<_>>(), "everyone's audio level says they speak");
    let sent = sent.lock();
    for pid in pids {
        let got = received[&pid].lock();
        for (stream, _, payload, _) in got.iter() {
            assert!(sent.contains(payload), "client {pid} received bytes nobody sent: {payload:?}");
            let from: u64 = stream.parse().expect("the stream names the publisher");
            assert!(String::from_utf8_lossy(payload).contains(&format!("from {from} ")), "stream and payload agree");
            assert_ne!(from, pid, "nobody receives their own media");
        }
        for other in pids.iter().filter(|p| **p != pid) {
            for (kind, track) in [(RtpCodecKind::Audio, 0), (RtpCodecKind::Video, 1), (RtpCodecKind::Video, 2)] {
                let count = got
                    .iter()
                    .filter(|(s, k, p, _)| {
                        s == &other.to_string()
                            && *k == kind
                            && String::from_utf8_lossy(p).contains(&format!("from {other} track {track} "))
                    })
                    .count();
                assert!(count >= 20, "client {pid} got {count} packets of track {track} from {other}");
            }
        }
    }
    // The camera of client 1 as client 2 and client 3 received it: layer by layer, renumbered.
    let camera = |sub: u64| -> Vec<(String, u16)> {
        received[&sub]
            .lock()
            .iter()
            .filter_map(|(s, _, p, seq)| {
                let text = String::from_utf8_lossy(p).into_owned();
                (s == "1" && text.contains("from 1 track 1 ")).then(|| {
                    let layer = text.split("layer ").nth(1).and_then(|r| r.split(' ').next()).unwrap_or_default().to_owned();
                    (layer, *seq)
                })
            })
            .collect()
    };
    let switched = camera(2);
    let layers: Vec<&str> = switched.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(layers.first(), Some(&"f"), "the best layer by default");
    let low = layers.iter().position(|l| *l == "q").expect("client 2 moved to the lowest layer");
    assert!(layers[low..].contains(&"f"), "and back to the best");
    assert_eq!(layers.last(), Some(&"f"));
    assert!(!layers.contains(&"h"), "never the middle layer");
    for pair in switched.windows(2) {
        assert_eq!(pair[1].1, pair[0].1.wrapping_add(1), "one continuous sequence across the switches");
    }
    assert!(camera(3).iter().all(|(l, _)| l == "f"), "client 3 keeps the best layer");
}

#[tokio::test(start_paused = true)]
async fn bad_signalling_is_refused_and_a_peer_that_never_connects_is_removed() {
    let limits = RoomLimits { max_participants: 1, ..RoomLimits::default() };
    let config = SfuConfig { bind: "127.0.0.1:0".parse().expect("addr"), limits, ..SfuConfig::default() };
    let (sfu, mut events) = driver::start(config).await.expect("sfu");
    assert!(matches!(sfu.join(ROOM, 1, "garbage".into()).await, Err(SfuError::InvalidSdp(_))));
    assert_eq!(sfu.answer(9, "v=0".into()).await, Err(SfuError::UnknownParticipant));
    let mut one = Client::new(1).await;
    let joined = sfu.join(ROOM, 1, one.offer()).await.expect("join");
    assert!(joined.answer.contains("a=ice-lite"), "the SFU is ICE-lite");
    assert!(joined.answer.contains(&format!("{} {}", sfu.media_addr.ip(), sfu.media_addr.port())), "its one host candidate");
    assert_eq!(
        joined.tracks.iter().map(|t| t.2).collect::<Vec<_>>(),
        vec![TrackKind::Audio, TrackKind::Camera, TrackKind::Screen]
    );
    assert_eq!(sfu.join(ROOM, 1, one.offer()).await.err(), Some(SfuError::AlreadyIn));
    let mut two = Client::new(2).await;
    assert_eq!(sfu.join(ROOM, 2, two.offer()).await.err(), Some(SfuError::RoomFull));
    assert_eq!(sfu.answer(1, joined.answer.clone()).await, Err(SfuError::NegotiationConflict), "no offer is out");

    // Client 1's PC is never run: once the connect timeout passes, the SFU removes it.
    let removed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let SfuEvent::Removed { pid, reason, .. } = events.recv().await.expect("sfu running") {
                return (pid, reason);
            }
        }
    })
    .await
    .expect("removed");
    assert_eq!(removed, (1, RemoveReason::ConnectTimeout));
    // The room has room again.
    assert!(sfu.join(ROOM, 2, two.offer()).await.is_ok());
}
