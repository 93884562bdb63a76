//! Retransmission streams (RTX, RFC 4588) for a webrtc-rs `rtc` PeerConnection, read so that
//! everything that counts packets sees a retransmitted packet as the packet it repairs.
//!
//! `rtc` de-encapsulates RTX on its way to the application, after the interceptor chain. Its
//! NACK generator, in the chain, never sees a packet recovered over RTX as the packet it asked
//! for, so it asks again and again (fifteen times and more on a lossy link), and it does not
//! know the repair streams of simulcast layers at all: those are named by the
//! `repaired-rtp-stream-id` header extension (RFC 8852), which `rtc` does not read, so their
//! packets are dropped. [`RtxReader`] sits in the chain ahead of the NACK generator and turns
//! every RTX packet back into its original (the original's SSRC, payload type and sequence
//! number, the two-byte original sequence number taken off the payload) for both kinds of
//! repair stream:
//! - **declared**: `a=ssrc-group:FID <primary> <rtx>` in the SDP, which `rtc` hands to the
//!   interceptors with the primary stream;
//! - **by rid**: the layer's repair stream carries `mid` and `repaired-rtp-stream-id`, matched
//!   to the layer whose packets carried the same `mid` and `rtp-stream-id`.
//!
//! An RTX packet with no original sequence number (padding, as a bandwidth probe) is dropped,
//! after [`configure_twcc_receiver`]'s recorder has seen it.
//!
//! [`RtxWriter`] is the other side, for a sender of simulcast layers: `rtc` sends a layer's
//! retransmissions on their own SSRC with no extension, which a receiver cannot tie to any
//! layer when the SDP declares no SSRC (rid simulcast, as browsers send it). It names them as
//! browsers do, with the layer's `mid` and its rid as `repaired-rtp-stream-id`.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use rtc::interceptor::{
    Interceptor, NackGeneratorBuilder, NackResponderBuilder, Packet, Slot, StreamInfo, TaggedPacket, TwccReceiverBuilder,
};
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_RTX};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind, TYPE_RTCP_FB_TRANSPORT_CC,
};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::{SDES_MID_URI, SDES_REPAIR_RTP_STREAM_ID_URI, SDES_RTP_STREAM_ID_URI, TRANSPORT_CC_URI};
use rtc::shared::error::Error;

/// Where [`RtxReader`] goes in a registry: after the FEC decoder (6,000), before the NACK
/// generator (7,000), which must see repaired packets as what they repair.
pub const SLOT: usize = 6_500;

/// Repair streams one PeerConnection follows at most (a client publishes a few video layers;
/// the SFU's subscriptions declare theirs).
pub const REPAIRS_MAX: usize = 256;

/// How many times a lost packet is asked for at most (as libwebrtc does).
pub const NACKS_PER_PACKET: u16 = 10;

/// Retransmission for video, in a media engine and a registry: NACK feedback (negotiated, then
/// answered from a send history and generated for what is received, each lost packet asked for
/// [`NACKS_PER_PACKET`] times at most), the RTX codec `payload_type` (`apt` = `primary`), an
/// [`RtxReader`] ahead of the NACK generator, and an [`RtxWriter`] with `layers` (for a
/// sender of simulcast layers without declared SSRCs).
pub fn configure(
    registry: rtc::interceptor::Registry,
    media_engine: &mut MediaEngine,
    payload_type: u8,
    primary: u8,
    layers: bool,
) -> Result<rtc::interceptor::Registry, Error> {
    for parameter in ["", "pli"] {
        media_engine.register_feedback(RTCPFeedback { typ: "nack".into(), parameter: parameter.into() }, RtpCodecKind::Video);
    }
    media_engine.register_codec(
        RTCRtpCodecParameters {
            payload_type,
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_RTX.into(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: format!("apt={primary}"),
                rtcp_feedback: vec![],
            },
        },
        RtpCodecKind::Video,
    )?;
    let registry = registry
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(Slot::from(SLOT), RtxReader::default())
        .with(Slot::NackGenerator, NackGeneratorBuilder::new().with_max_nacks_per_packet(NACKS_PER_PACKET).build());
    Ok(if layers { registry.with(Slot::from(WRITER_SLOT), RtxWriter::default()) } else { registry })
}

/// Where [`configure_twcc_receiver`] puts the recorder of transport-wide arrivals: wire-ward
/// of [`RtxReader`], which drops the padding a sender probes bandwidth with on its RTX
/// streams, and still application-ward of the pacer (3,000), so its feedback is paced.
pub const TWCC_RECEIVER_SLOT: usize = 6_400;

/// Transport-wide congestion control feedback on what is received (audio and video), as
/// `rtc`'s `configure_twcc_receiver_only` gives it, but recorded before [`RtxReader`]: a
/// browser probes its bandwidth with padding on its retransmission streams once RTX is
/// negotiated, and a probe that no feedback acknowledges leaves its estimate, and its
/// simulcast, at the lowest layer.
pub fn configure_twcc_receiver(
    registry: rtc::interceptor::Registry,
    media_engine: &mut MediaEngine,
) -> Result<rtc::interceptor::Registry, Error> {
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        media_engine.register_feedback(RTCPFeedback { typ: TYPE_RTCP_FB_TRANSPORT_CC.into(), parameter: String::new() }, kind);
        media_engine.register_header_extension(RTCRtpHeaderExtensionCapability { uri: TRANSPORT_CC_URI.into() }, kind, None)?;
    }
    Ok(registry.with(Slot::from(TWCC_RECEIVER_SLOT), TwccReceiverBuilder::new().build()))
}

/// Where [`RtxWriter`] goes: wire-ward of the NACK responder (4,000), whose retransmissions it
/// names, and application-ward of the pacer (3,000).
pub const WRITER_SLOT: usize = 3_500;

/// The stream a repair stream repairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Original {
    ssrc: u32,
    payload_type: u8,
}

/// A video stream bound to the chain.
#[derive(Debug, Clone)]
struct Bound {
    payload_type: u8,
    received: Received,
}

/// The sequence numbers one stream received lately: the newest, and a bit for each of the
/// [`Received::WINDOW`] before it.
#[derive(Debug, Clone, Default)]
struct Received {
    newest: Option<u16>,
    bits: [u64; 16],
}

impl Received {
    const WINDOW: u16 = 1024;

    fn bit(&mut self, seq: u16) -> (&mut u64, u64) {
        let i = usize::from(seq % Self::WINDOW);
        (&mut self.bits[i / 64], 1 << (i % 64))
    }

    /// Marks `seq` received; `false` if it already was, or is too old to tell (a browser
    /// probes bandwidth with copies of packets it sent: they carry nothing new).
    fn insert(&mut self, seq: u16) -> bool {
        let Some(newest) = self.newest else {
            self.newest = Some(seq);
            let (word, bit) = self.bit(seq);
            *word |= bit;
            return true;
        };
        let ahead = seq.wrapping_sub(newest);
        if ahead != 0 && ahead < 0x8000 {
            // Newer: what lies between is not received (yet).
            if ahead >= Self::WINDOW {
                self.bits = [0; 16];
            } else {
                for s in 1..ahead {
                    let (word, bit) = self.bit(newest.wrapping_add(s));
                    *word &= !bit;
                }
            }
            self.newest = Some(seq);
        } else if newest.wrapping_sub(seq) >= Self::WINDOW {
            return false;
        }
        let (word, bit) = self.bit(seq);
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }
}

/// The header extension ids a layer is named by.
#[derive(Debug, Clone, Copy, Default)]
struct Ids {
    mid: Option<u8>,
    rid: Option<u8>,
    rrid: Option<u8>,
}

/// Reads RTX packets as the packets they repair (the crate's documentation).
#[derive(Default)]
pub struct RtxReader {
    /// Repair SSRC → the stream it repairs.
    repairs: HashMap<u32, Original>,
    /// The video streams bound to the chain: only their packets name layers, and what each
    /// received is remembered so that a copy that comes back over RTX is not read twice.
    bound: HashMap<u32, Bound>,
    /// (mid, rid) → the layer's stream, learnt from its packets.
    layers: HashMap<(Vec<u8>, Vec<u8>), Original>,
    ids: Ids,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl RtxReader {
    /// What a repair packet repairs, if `header` is one: by its declared SSRC, or by the `mid`
    /// and `repaired-rtp-stream-id` it carries (then remembered by its SSRC).
    fn original(&mut self, header: &rtc::rtp::Header) -> Option<Original> {
        if let Some(original) = self.repairs.get(&header.ssrc) {
            return Some(*original);
        }
        if self.bound.contains_key(&header.ssrc) {
            return None;
        }
        let rrid = header.get_extension(self.ids.rrid?)?;
        let mid = header.get_extension(self.ids.mid?)?;
        let original = *self.layers.get(&(mid.to_vec(), rrid.to_vec()))?;
        // A repair stream never shares the payload type of what it repairs.
        if original.payload_type == header.payload_type || self.repairs.len() >= REPAIRS_MAX {
            return None;
        }
        self.repairs.insert(header.ssrc, original);
        Some(original)
    }

    /// Remembers which layer a bound stream's packet names, while it names one.
    fn learn_layer(&mut self, header: &rtc::rtp::Header, payload_type: u8) {
        let (Some(mid_id), Some(rid_id)) = (self.ids.mid, self.ids.rid) else { return };
        let (Some(mid), Some(rid)) = (header.get_extension(mid_id), header.get_extension(rid_id)) else { return };
        let key = (mid.to_vec(), rid.to_vec());
        if self.layers.len() < REPAIRS_MAX || self.layers.contains_key(&key) {
            self.layers.insert(key, Original { ssrc: header.ssrc, payload_type });
        }
    }
}

/// Turns `packet`, an RTX packet, into the original it carries; `false` if it carries none.
fn deencapsulate(packet: &mut rtc::rtp::Packet, original: Original) -> bool {
    if packet.payload.len() < 2 {
        return false;
    }
    packet.header.sequence_number = u16::from_be_bytes([packet.payload[0], packet.payload[1]]);
    packet.header.ssrc = original.ssrc;
    packet.header.payload_type = original.payload_type;
    // The RTX packet's padding was its own.
    packet.header.padding = false;
    packet.payload = packet.payload.slice(2..);
    true
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtxReader {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &mut msg.message.packet {
            if let Some(original) = self.original(&packet.header) {
                let fresh = deencapsulate(packet, original)
                    && self.bound.get_mut(&original.ssrc).is_some_and(|b| b.received.insert(packet.header.sequence_number));
                if !fresh {
                    return Ok(());
                }
            } else if let Some(bound) = self.bound.get_mut(&packet.header.ssrc) {
                bound.received.insert(packet.header.sequence_number);
                let payload_type = bound.payload_type;
                if packet.header.extension {
                    self.learn_layer(&packet.header, payload_type);
                }
            }
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

impl Interceptor for RtxReader {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.ids = ids(info, self.ids);
        // `rtc` binds a declared repair stream in its own right too: it is not a stream of media.
        if self.repairs.contains_key(&info.ssrc) {
            return;
        }
        if let (Some(rtx), Some(_)) = (info.ssrc_rtx, info.payload_type_rtx) {
            if rtx != info.ssrc && (self.repairs.len() < REPAIRS_MAX || self.repairs.contains_key(&rtx)) {
                self.repairs.insert(rtx, Original { ssrc: info.ssrc, payload_type: info.payload_type });
            }
        }
        if self.bound.len() < REPAIRS_MAX && info.mime_type.to_ascii_lowercase().starts_with("video/") {
            self.bound.insert(info.ssrc, Bound { payload_type: info.payload_type, received: Received::default() });
        }
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.bound.remove(&info.ssrc);
        self.repairs.retain(|rtx, original| *rtx != info.ssrc && original.ssrc != info.ssrc);
        self.layers.retain(|_, original| original.ssrc != info.ssrc);
    }
}

/// Names the retransmissions of a layer sent without a declared SSRC (the crate's
/// documentation).
#[derive(Default)]
pub struct RtxWriter {
    /// Repair SSRC → the SSRC it repairs.
    repairs: HashMap<u32, u32>,
    /// A sent stream's SSRC → the `mid` and `rtp-stream-id` its packets carry.
    names: HashMap<u32, (bytes::Bytes, bytes::Bytes)>,
    ids: Ids,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtxWriter {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let (Packet::Rtp(packet), Ids { mid: Some(mid_id), rid: Some(rid_id), rrid: Some(rrid_id) }) =
            (&mut msg.message.packet, self.ids)
        {
            let header = &mut packet.header;
            if let Some(original) = self.repairs.get(&header.ssrc) {
                if let Some((mid, rid)) = self.names.get(original) {
                    // A retransmission that cannot be named still goes (a receiver that
                    // declared its SSRC reads it anyway).
                    let _ = header.set_extension(mid_id, mid.clone());
                    let _ = header.set_extension(rrid_id, rid.clone());
                }
            } else if self.names.len() < REPAIRS_MAX || self.names.contains_key(&header.ssrc) {
                if let (Some(mid), Some(rid)) = (header.get_extension(mid_id), header.get_extension(rid_id)) {
                    self.names.insert(header.ssrc, (mid, rid));
                }
            }
        }
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.writes.pop_front()
    }
}

impl Interceptor for RtxWriter {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.ids = ids(info, self.ids);
        if let (Some(rtx), Some(_)) = (info.ssrc_rtx, info.payload_type_rtx) {
            if self.repairs.len() < REPAIRS_MAX {
                self.repairs.insert(rtx, info.ssrc);
            }
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.repairs.retain(|_, original| *original != info.ssrc);
        self.names.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// The ids of the extensions that name layers, as `info` negotiated them (else `known`).
fn ids(info: &StreamInfo, known: Ids) -> Ids {
    let mut ids = known;
    for ext in &info.rtp_header_extensions {
        let id = u8::try_from(ext.id).ok();
        match ext.uri.as_str() {
            SDES_MID_URI => ids.mid = id,
            SDES_RTP_STREAM_ID_URI => ids.rid = id,
            SDES_REPAIR_RTP_STREAM_ID_URI => ids.rrid = id,
            _ => {}
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::interceptor::{AttributedPacket, RTPHeaderExtension};
    use rtc::shared::TransportContext;

    const MID: u8 = 1;
    const RID: u8 = 2;
    const RRID: u8 = 3;

    fn extensions() -> Vec<RTPHeaderExtension> {
        vec![
            RTPHeaderExtension { uri: SDES_MID_URI.into(), id: MID.into() },
            RTPHeaderExtension { uri: SDES_RTP_STREAM_ID_URI.into(), id: RID.into() },
            RTPHeaderExtension { uri: SDES_REPAIR_RTP_STREAM_ID_URI.into(), id: RRID.into() },
        ]
    }

    fn info(ssrc: u32, payload_type: u8, rtx: Option<(u32, u8)>) -> StreamInfo {
        StreamInfo {
            ssrc,
            payload_type,
            ssrc_rtx: rtx.map(|r| r.0),
            payload_type_rtx: rtx.map(|r| r.1),
            rtp_header_extensions: extensions(),
            mime_type: "video/VP8".into(),
            clock_rate: 90_000,
            ..Default::default()
        }
    }

    fn packet(ssrc: u32, payload_type: u8, seq: u16, exts: &[(u8, &str)], payload: &[u8]) -> TaggedPacket {
        let mut header = rtc::rtp::Header { version: 2, ssrc, payload_type, sequence_number: seq, ..Default::default() };
        for (id, value) in exts {
            header.set_extension(*id, Bytes::copy_from_slice(value.as_bytes())).expect("extension");
        }
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet { header, payload: Bytes::copy_from_slice(payload) })),
        }
    }

    fn read(reader: &mut RtxReader, msg: TaggedPacket) -> Option<rtc::rtp::Packet> {
        reader.handle_read(msg).expect("read");
        let out = reader.poll_read()?;
        assert!(reader.poll_read().is_none());
        match out.message.packet {
            Packet::Rtp(p) => Some(p),
            _ => panic!("something else out of an rtp packet"),
        }
    }

    #[test]
    fn a_declared_repair_stream_reads_as_its_original() {
        let mut reader = RtxReader::default();
        reader.bind_remote_stream(&info(1000, 96, Some((2000, 97))));
        reader.bind_remote_stream(&info(2000, 97, None));
        // The original stream passes untouched.
        let p = read(&mut reader, packet(1000, 96, 7, &[], b"media")).expect("passes");
        assert_eq!((p.header.ssrc, p.header.sequence_number, &p.payload[..]), (1000, 7, &b"media"[..]));
        // A retransmission of packet 5 (its own sequence number 40) is packet 5 again.
        let p = read(&mut reader, packet(2000, 97, 40, &[], b"\x00\x05media")).expect("recovered");
        assert_eq!(
            (p.header.ssrc, p.header.payload_type, p.header.sequence_number, &p.payload[..]),
            (1000, 96, 5, &b"media"[..])
        );
        // Padding alone (a probe) carries nothing: dropped.
        assert!(read(&mut reader, packet(2000, 97, 41, &[], b"\x00")).is_none());
        // Nor does a copy of a packet that arrived (a probe made of sent packets), or that
        // came back already, or that is too old to tell.
        assert!(read(&mut reader, packet(2000, 97, 43, &[], b"\x00\x07media")).is_none());
        assert!(read(&mut reader, packet(2000, 97, 44, &[], b"\x00\x05media")).is_none());
        read(&mut reader, packet(1000, 96, 3000, &[], b"media")).expect("passes");
        assert!(read(&mut reader, packet(2000, 97, 45, &[], b"\x00\x06media")).is_none());
        // Within the window, a packet still missing comes back once.
        let p = read(&mut reader, packet(2000, 97, 46, &[], b"\x0b\xb0media")).expect("recovered");
        assert_eq!(p.header.sequence_number, 2992);
        assert!(read(&mut reader, packet(2000, 97, 47, &[], b"\x0b\xb0media")).is_none());
        // Once the original stream is gone, so is its repair stream's meaning.
        reader.unbind_remote_stream(&info(1000, 96, Some((2000, 97))));
        let p = read(&mut reader, packet(2000, 97, 42, &[], b"\x00\x06x")).expect("passes");
        assert_eq!(p.header.ssrc, 2000);
    }

    #[test]
    fn a_simulcast_layers_repair_stream_is_found_by_mid_and_repaired_rid() {
        let mut reader = RtxReader::default();
        // Two layers of mid 1 and a layer "h" of mid 2, established from their packets.
        reader.bind_remote_stream(&info(10, 96, None));
        reader.bind_remote_stream(&info(11, 96, None));
        reader.bind_remote_stream(&info(12, 96, None));
        read(&mut reader, packet(10, 96, 1, &[(MID, "1"), (RID, "q")], b"q"));
        read(&mut reader, packet(11, 96, 1, &[(MID, "1"), (RID, "h")], b"h"));
        read(&mut reader, packet(12, 96, 1, &[(MID, "2"), (RID, "h")], b"s"));
        // The repair stream of mid 1's "h" layer.
        let p = read(&mut reader, packet(77, 97, 300, &[(MID, "1"), (RRID, "h")], b"\x01\x00hh")).expect("recovered");
        assert_eq!((p.header.ssrc, p.header.payload_type, p.header.sequence_number, &p.payload[..]), (11, 96, 256, &b"hh"[..]));
        // Remembered by its SSRC once the extensions are gone.
        let p = read(&mut reader, packet(77, 97, 301, &[], b"\x01\x01x")).expect("recovered");
        assert_eq!((p.header.ssrc, p.header.sequence_number), (11, 257));
        // A layer nobody sent, or a "repair" in the original's own payload type, is left alone.
        let p = read(&mut reader, packet(78, 97, 1, &[(MID, "1"), (RRID, "f")], b"\x00\x01x")).expect("passes");
        assert_eq!(p.header.ssrc, 78);
        let p = read(&mut reader, packet(79, 96, 1, &[(MID, "2"), (RRID, "h")], b"\x00\x01x")).expect("passes");
        assert_eq!(p.header.ssrc, 79);
        // A bound stream's packets are never taken for repairs, whatever they carry.
        let p = read(&mut reader, packet(10, 97, 2, &[(MID, "1"), (RRID, "h")], b"\x00\x01x")).expect("passes");
        assert_eq!((p.header.ssrc, p.header.sequence_number), (10, 2));
    }

    #[test]
    fn a_layers_retransmissions_are_named_so_a_reader_finds_the_layer() {
        let mut writer = RtxWriter::default();
        writer.bind_local_stream(&info(10, 96, Some((20, 97))));
        let write = |writer: &mut RtxWriter, msg: TaggedPacket| -> TaggedPacket {
            writer.handle_write(msg).expect("write");
            writer.poll_write().expect("written")
        };
        // The layer's own packets name it; its retransmission carries no extension of its own.
        let sent = write(&mut writer, packet(10, 96, 5, &[(MID, "0"), (RID, "h")], b"media"));
        let rtx = write(&mut writer, packet(20, 97, 1, &[], b"\x00\x05media"));
        let Packet::Rtp(p) = &rtx.message.packet else { panic!("rtp") };
        assert_eq!(p.header.get_extension(MID).as_deref(), Some(&b"0"[..]));
        assert_eq!(p.header.get_extension(RRID).as_deref(), Some(&b"h"[..]));
        assert_eq!(p.header.get_extension(RID), None);
        // A receiver that lost packet 5, and knows the layer only by the rid of its others,
        // reads the retransmission back as packet 5 of the layer.
        let mut reader = RtxReader::default();
        reader.bind_remote_stream(&info(10, 96, None));
        drop(sent);
        read(&mut reader, write(&mut writer, packet(10, 96, 6, &[(MID, "0"), (RID, "h")], b"next")));
        let p = read(&mut reader, rtx).expect("recovered");
        assert_eq!((p.header.ssrc, p.header.sequence_number, &p.payload[..]), (10, 5, &b"media"[..]));
    }

    #[test]
    fn what_it_follows_is_bounded() {
        let mut reader = RtxReader::default();
        for ssrc in 0..(REPAIRS_MAX as u32 * 2) {
            reader.bind_remote_stream(&info(ssrc, 96, Some((ssrc + 1_000_000, 97))));
            read(&mut reader, packet(ssrc, 96, 1, &[(MID, "1"), (RID, &ssrc.to_string())], b"x"));
        }
        assert!(reader.repairs.len() <= REPAIRS_MAX);
        assert!(reader.bound.len() <= REPAIRS_MAX);
        assert!(reader.layers.len() <= REPAIRS_MAX);
    }
}
