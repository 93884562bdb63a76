//! A big end-to-end encrypted voice room through the real server: N people in one voice
//! channel, a few of them talking and two sharing a screen, everyone a full native client (its
//! own account and engine with Signal sessions, a gateway connection, a voice peer with
//! DTLS-SRTP and SFrame). Each runs the key choreography of docs/voice.md §6 (a fresh key at
//! VOICE_READY, a ratchet step sealed for a newcomer, a new generation for everyone after a
//! leave), sealing and opening every share with its engine. Listeners send nothing, so they
//! are dormant (§6): they draw no key, and the room's keys are the talkers' and the screens'.
//!
//! Figures: the server's CPU (its SFU and gateway) and the media loss while the room talks, and
//! how long until everyone is re-keyed after a leave (everyone who stays holds every sender's
//! new generation) and after a join (the newcomer holds every sender's key, and everyone holds
//! the newcomer's if it sends).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use copains_client_core::client::Client;
use copains_client_core::crypto::device::now_ms;
use copains_client_core::crypto::MemoryBackend;
use copains_client_core::engine::Engine;
use copains_client_core::gateway::{event_name, op};
use copains_client_core::servers::{Channel, ChannelKind};
use copains_client_core::voice::MediaSender;
use copains_client_core::voice_native::{Received, Source, VoicePeer};
use copains_client_core::voice_signal::{VoiceKey, VoiceKeys, VoiceParticipant};
use copains_client_core::{ChannelId, UserId};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::channels::{gather, register};
use crate::{open_identified, unique_name, Ws};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Packets of a screen share's frame.
const SCREEN_PACKETS_PER_FRAME: usize = 7;
/// Well within any heartbeat interval the server asks for.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// What every participant reports.
#[derive(Default)]
struct Board {
    /// Keys held: (holder, sender's slot) → (generation, when taken).
    keys: HashMap<(UserId, u32), (u32, Instant)>,
    /// Each participant's slot and its own key's generation (none: dormant, it sends nothing).
    own: HashMap<UserId, (u32, Option<u32>)>,
    /// Audio and video frames decrypted while measuring, and frames that did not open.
    audio: u64,
    video: u64,
    failed: u64,
    /// Open microphones' frames decrypted while measuring.
    open: u64,
    /// Shares that did not open.
    refused: u64,
    /// VOICE_ERRORs.
    errors: u64,
    /// How long each seal of a key for the room took (one client's share of a re-key).
    seals: Vec<Duration>,
}

struct Shared {
    board: Mutex<Board>,
    measuring: AtomicBool,
    sent_audio: AtomicU64,
    sent_video: AtomicU64,
    sent_open: AtomicU64,
    stop: AtomicBool,
}

enum Command {
    Join,
    Leave,
}

/// What a participant does: listen, talk (an Opus-sized frame every 20 ms), or share a screen
/// (seven 1,000-byte packets 15 times a second).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Listener,
    Speaker,
    Screen,
    /// A microphone open in a quiet room: frames as a speaker's, marked apart, at the level of
    /// background noise.
    OpenMic,
}

/// The first byte of a speaker's frame (an Opus TOC byte) and of an open microphone's.
const SPEAKER_FRAME: u8 = 0xf8;
const OPEN_MIC_FRAME: u8 = 0xf0;
/// The audio level of an open microphone's packets (−dBov): background noise.
const OPEN_MIC_LEVEL: u8 = 60;

struct Bot {
    id: UserId,
    channel: ChannelId,
    role: Role,
    engine: Engine<Client>,
    sink: futures_util::stream::SplitSink<Ws, Message>,
    frames: mpsc::UnboundedReceiver<Value>,
    /// The last sequence number seen, for heartbeats.
    seq: Arc<AtomicU64>,
    next_beat: Instant,
    peer: Option<VoicePeer>,
    session: Option<String>,
    slot: u32,
    generation: u32,
    room: Vec<VoiceParticipant>,
    epoch: u64,
    shared: Arc<Shared>,
}

impl Bot {
    async fn send(&mut self, v: Value) -> anyhow::Result<()> {
        self.sink.send(Message::Text(v.to_string().into())).await.context("gateway send")
    }

    /// Seals this participant's current key for `to` and sends it.
    async fn share(&mut self, to: Vec<VoiceParticipant>, epoch: u64, share: copains_client_core::voice::MediaKeyShare) {
        if to.is_empty() {
            return;
        }
        let started = Instant::now();
        match self.engine.seal_voice_keys(self.channel, epoch, &to, &share, now_ms()).await {
            Ok(sealed) => {
                self.shared.board.lock().seals.push(started.elapsed());
                let session = self.session.clone().unwrap_or_default();
                for frame in VoiceKeys::frames(&session, epoch, sealed.keys) {
                    let _ = self.send(json!({"op": op::VOICE_KEYS, "d": frame})).await;
                }
            }
            Err(e) => eprintln!("  seal failed: {e}"),
        }
    }

    fn others(&self, list: &[VoiceParticipant]) -> Vec<VoiceParticipant> {
        list.iter().filter(|p| p.slot != self.slot).cloned().collect()
    }

    async fn handle(&mut self, frame: Value) -> anyhow::Result<()> {
        let Some(name) = frame["t"].as_str() else { return Ok(()) };
        let d = &frame["d"];
        match name {
            event_name::VOICE_READY => {
                self.slot = d["slot"].as_u64().context("slot")? as u32;
                self.epoch = d["epoch"].as_u64().context("epoch")?;
                self.room = serde_json::from_value(d["participants"].clone())?;
                self.session = d["voice_session_id"].as_str().map(str::to_owned);
                self.generation = 0;
                let peer = self.peer.as_mut().context("no peer")?;
                peer.apply_answer(d["sdp"].as_str().context("sdp")?.to_owned())?;
                if self.role == Role::Listener {
                    // Dormant: a listener draws no key (it would draw one to start sending).
                    self.shared.board.lock().own.insert(self.id, (self.slot, None));
                    return Ok(());
                }
                peer.media = MediaSender::fresh(self.slot, 0)?;
                let share = peer.media.share();
                self.shared.board.lock().own.insert(self.id, (self.slot, Some(0)));
                let to = self.others(&self.room);
                self.share(to, self.epoch, share).await;
            }
            event_name::VOICE_SDP => {
                if let Some(peer) = self.peer.as_mut() {
                    let answer = peer.answer_offer(d["sdp"].as_str().context("sdp")?.to_owned())?;
                    let msg = json!({"op": op::VOICE_SDP, "d": {"voice_session_id": d["voice_session_id"], "type": "answer", "sdp": answer, "revision": d["revision"]}});
                    self.send(msg).await?;
                }
            }
            event_name::VOICE_EPOCH => {
                let epoch = d["epoch"].as_u64().context("epoch")?;
                if epoch <= self.epoch || self.peer.is_none() {
                    return Ok(());
                }
                let after: Vec<VoiceParticipant> = serde_json::from_value(d["participants"].clone())?;
                let same = |a: &VoiceParticipant, b: &VoiceParticipant| {
                    a.user_id == b.user_id && a.device_id == b.device_id && a.slot == b.slot
                };
                let gone: Vec<VoiceParticipant> =
                    self.room.iter().filter(|p| !after.iter().any(|q| same(p, q))).cloned().collect();
                let newcomers: Vec<VoiceParticipant> =
                    after.iter().filter(|p| !self.room.iter().any(|q| same(p, q)) && p.slot != self.slot).cloned().collect();
                self.room = after;
                self.epoch = epoch;
                let peer = self.peer.as_mut().context("no peer")?;
                let sends = self.role != Role::Listener;
                if gone.is_empty() && d["cause"] == "join" {
                    if !sends {
                        return Ok(());
                    }
                    let share = peer.media.ratchet()?;
                    let to = if share.step == 0 { self.others(&self.room) } else { newcomers };
                    self.generation = share.generation;
                    self.shared.board.lock().own.insert(self.id, (self.slot, Some(self.generation)));
                    self.share(to, epoch, share).await;
                } else {
                    for g in &gone {
                        peer.keys.forget_slot(g.slot);
                    }
                    if !sends {
                        return Ok(());
                    }
                    self.generation += 1;
                    peer.media = MediaSender::fresh(self.slot, self.generation)?;
                    let share = peer.media.share();
                    self.shared.board.lock().own.insert(self.id, (self.slot, Some(self.generation)));
                    let to = self.others(&self.room);
                    self.share(to, epoch, share).await;
                }
            }
            event_name::VOICE_ERROR => {
                self.shared.board.lock().errors += 1;
            }
            event_name::VOICE_DISCONNECT => {
                eprintln!("  {} was disconnected: {d}", self.id);
                self.peer = None;
                self.session = None;
                self.shared.board.lock().own.remove(&self.id);
            }
            event_name::VOICE_KEY => {
                let key: VoiceKey = serde_json::from_value(d.clone())?;
                match self.engine.open_voice_key(&key, &self.room, now_ms()).await {
                    Ok(opened) => {
                        if let Some(peer) = self.peer.as_mut() {
                            peer.keys.add(&opened.share)?;
                            self.shared
                                .board
                                .lock()
                                .keys
                                .insert((self.id, opened.share.slot), (opened.share.generation, Instant::now()));
                        }
                    }
                    Err(_) => self.shared.board.lock().refused += 1,
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut got: Vec<Received> = Vec::new();
        let mut next_audio = Instant::now();
        let mut next_video = Instant::now();
        let mut n: u64 = 0;
        let mut frames: u64 = 0;
        while !self.shared.stop.load(Ordering::Relaxed) {
            if Instant::now() >= self.next_beat {
                self.next_beat += HEARTBEAT;
                let seq = self.seq.load(Ordering::Relaxed);
                let _ = self.send(json!({"op": op::HEARTBEAT, "d": seq})).await;
            }
            while let Ok(c) = commands.try_recv() {
                match c {
                    Command::Join => {
                        let sources: &[Source] = match self.role {
                            Role::Listener => &[],
                            Role::Speaker | Role::OpenMic => &[Source::Microphone],
                            Role::Screen => &[Source::Screen],
                        };
                        let Ok(media) = MediaSender::fresh(0, 0) else { return };
                        let Ok(mut peer) = VoicePeer::bind_with(LOCALHOST, media, false, sources).await else { return };
                        if self.role == Role::OpenMic {
                            peer.set_audio_level(OPEN_MIC_LEVEL);
                        }
                        let Ok(offer) = peer.offer() else { return };
                        self.peer = Some(peer);
                        let _ = self.send(json!({"op": op::VOICE_JOIN, "d": {"channel_id": self.channel, "sdp": offer}})).await;
                    }
                    Command::Leave => {
                        let _ = self.send(json!({"op": op::VOICE_LEAVE, "d": {}})).await;
                        if let Some(mut p) = self.peer.take() {
                            p.close().await;
                        }
                        self.shared.board.lock().own.remove(&self.id);
                        self.session = None;
                    }
                }
            }
            while let Ok(frame) = self.frames.try_recv() {
                if let Err(e) = self.handle(frame).await {
                    eprintln!("  event not handled: {e}");
                }
            }
            let Some(peer) = self.peer.as_mut() else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let now = Instant::now();
            if peer.is_connected() && self.session.is_some() {
                if matches!(self.role, Role::Speaker | Role::OpenMic) && now >= next_audio {
                    next_audio += Duration::from_millis(20);
                    let speaker = self.role == Role::Speaker;
                    let mut frame = vec![if speaker { SPEAKER_FRAME } else { OPEN_MIC_FRAME }];
                    frame.extend_from_slice(&n.to_be_bytes());
                    frame.resize(60, 0);
                    n += 1;
                    if peer.send_frames(Source::Microphone, &[&frame]).await.is_ok()
                        && self.shared.measuring.load(Ordering::Relaxed)
                    {
                        let sent = if speaker { &self.shared.sent_audio } else { &self.shared.sent_open };
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if self.role == Role::Screen && now >= next_video {
                    // A screen at 15 frames a second, each frame seven packets of 1,000 bytes
                    // (about 0.85 Mbit/s; the native peer sends a frame as one packet, so each
                    // packet is its own frame here, a VP8 interframe tag first).
                    next_video += Duration::from_micros(66_667);
                    frames += 1;
                    for i in 0..SCREEN_PACKETS_PER_FRAME {
                        // A keyframe every second (a new subscriber starts at one).
                        let keyframe = i == 0 && frames.is_multiple_of(15);
                        let mut frame = if keyframe { vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a] } else { vec![0x31, 0x02, 0x00] };
                        frame.extend_from_slice(&n.to_be_bytes());
                        frame.resize(1_000, 0x5a);
                        n += 1;
                        if peer.send_frames(Source::Screen, &[&frame]).await.is_ok()
                            && self.shared.measuring.load(Ordering::Relaxed)
                        {
                            self.shared.sent_video.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            } else {
                next_audio = now;
                next_video = now;
            }
            peer.run_until(Instant::now() + Duration::from_millis(10), &mut got).await;
            if self.shared.measuring.load(Ordering::Relaxed) && !got.is_empty() {
                let first = |r: &Received| r.frame.as_ref().ok().and_then(|(_, f)| f.first().copied());
                let audio = got.iter().filter(|r| r.audio && first(r) == Some(SPEAKER_FRAME)).count() as u64;
                let open = got.iter().filter(|r| r.audio && first(r) == Some(OPEN_MIC_FRAME)).count() as u64;
                let video = got.iter().filter(|r| !r.audio && r.frame.is_ok()).count() as u64;
                let mut b = self.shared.board.lock();
                b.audio += audio;
                b.open += open;
                b.video += video;
                b.failed += got.iter().filter(|r| r.frame.is_err()).count() as u64;
            }
            got.clear();
        }
        if let Some(mut p) = self.peer.take() {
            p.close().await;
        }
    }
}

/// A participant: its engine opened (keys published) and its gateway identified.
async fn bot(url: &str, client: Client, channel: ChannelId, role: Role, shared: Arc<Shared>) -> anyhow::Result<Bot> {
    let user = client.user().await.context("logged in")?.id;
    let device = client.device_id().await.context("device")?;
    let session = client.session_id().await.context("session")?;
    let mut engine =
        Engine::open(client.clone(), Box::new(MemoryBackend::default()), "bench", user, device, session, now_ms()).await?;
    engine.start(now_ms()).await?;
    let token = client.access_token().await?;
    let ws = open_identified(&format!("{}/gateway", url.replacen("http", "ws", 1)), &token).await?;
    let (sink, mut stream) = ws.split();
    let (tx, frames) = mpsc::unbounded_channel();
    let seq = Arc::new(AtomicU64::new(0));
    let last = seq.clone();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            if let Message::Text(t) = msg {
                if let Ok(v) = serde_json::from_str::<Value>(t.as_str()) {
                    if let Some(s) = v["s"].as_u64() {
                        last.store(s, Ordering::Relaxed);
                    }
                    let _ = tx.send(v);
                }
            }
        }
    });
    Ok(Bot {
        id: user,
        channel,
        role,
        engine,
        sink,
        frames,
        seq,
        next_beat: Instant::now() + HEARTBEAT,
        peer: None,
        session: None,
        slot: 0,
        generation: 0,
        room: Vec::new(),
        epoch: 0,
        shared,
    })
}

/// A participant to start on a worker thread (an engine is not `Send`: each lives on the
/// thread that made it).
struct Spawn {
    client: Client,
    role: Role,
    commands: mpsc::UnboundedReceiver<Command>,
    ready: tokio::sync::oneshot::Sender<anyhow::Result<UserId>>,
}

/// A thread running participants on a runtime of its own.
fn worker(url: String, channel: ChannelId, shared: Arc<Shared>) -> (mpsc::UnboundedSender<Spawn>, std::thread::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Spawn>();
    let handle = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let mut running = Vec::new();
            while let Some(s) = rx.recv().await {
                let (url, shared) = (url.clone(), shared.clone());
                running.push(tokio::task::spawn_local(async move {
                    match bot(&url, s.client, channel, s.role, shared).await {
                        Ok(b) => {
                            let _ = s.ready.send(Ok(b.id));
                            b.run(s.commands).await;
                        }
                        Err(e) => {
                            let _ = s.ready.send(Err(e));
                        }
                    }
                }));
            }
            for r in running {
                let _ = r.await;
            }
        });
    });
    (tx, handle)
}

/// Whether everyone in `who` holds, from everyone else in `who` who sends (is not dormant), a
/// key taken after `since` of at least the generation `floor` gives (by sender).
fn keyed(
    board: &Board,
    who: &[UserId],
    since: Instant,
    floor: &HashMap<UserId, u32>,
    pairs: &dyn Fn(UserId, UserId) -> bool,
) -> bool {
    who.iter().all(|h| {
        who.iter().filter(|p| *p != h && pairs(*h, **p)).all(|p| {
            let Some((slot, generation)) = board.own.get(p) else { return false };
            if generation.is_none() {
                return true;
            }
            board.keys.get(&(*h, *slot)).is_some_and(|(g, at)| *at >= since && *g >= floor.get(p).copied().unwrap_or(0))
        })
    })
}

async fn wait_until(shared: &Shared, limit: Duration, done: impl Fn(&Board) -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if done(&shared.board.lock()) {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// CPU time (user + system) of process `pid`.
fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    crate::sfu::cpu_time(&format!("/proc/{pid}/stat"))
}

/// The room: `size` people join one after the other, `speakers` talk and `screens` share,
/// `seconds` are measured, then one leaves and someone new joins (each `rounds` times).
pub async fn run(
    url: &str,
    size: usize,
    speakers: usize,
    screens: usize,
    open_mics: usize,
    seconds: u64,
    server_pid: Option<u32>,
) -> anyhow::Result<()> {
    anyhow::ensure!(size >= speakers + screens + open_mics + 2, "--size must leave at least two listeners");
    let prefix = unique_name("vr");
    eprintln!("registering {} accounts…", size + 1);
    let clients = register(url, size + 1, &prefix).await?;
    let community = gather(clients, "voice room").await?;
    let owner = &community.clients[0];
    let channels: Vec<Channel> =
        owner.api(Method::GET, &format!("/api/v1/servers/{}/channels", community.server), None::<&()>).await?;
    let channel = channels.iter().find(|c| c.kind == ChannelKind::Voice).context("no voice channel")?.id;
    let shared = Arc::new(Shared {
        board: Mutex::new(Board::default()),
        measuring: AtomicBool::new(false),
        sent_audio: AtomicU64::new(0),
        sent_video: AtomicU64::new(0),
        sent_open: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    eprintln!("opening {} engines and gateways…", size + 1);
    let mut controls = Vec::new();
    let mut ids = Vec::new();
    let workers: Vec<_> = (0..2).map(|_| worker(url.to_owned(), channel, shared.clone())).collect();
    for (i, c) in community.clients.iter().enumerate() {
        let role = if i < speakers {
            Role::Speaker
        } else if i < speakers + screens {
            Role::Screen
        } else if i < speakers + screens + open_mics {
            Role::OpenMic
        } else {
            Role::Listener
        };
        let (tx, commands) = mpsc::unbounded_channel();
        let (ready, started) = tokio::sync::oneshot::channel();
        workers[i % workers.len()].0.send(Spawn { client: c.clone(), role, commands, ready }).ok().context("worker")?;
        ids.push(started.await.context("worker")??);
        controls.push(tx);
    }
    let (newcomer, newcomer_id) = (controls.pop().context("newcomer")?, ids.pop().context("newcomer")?);

    eprintln!("{size} join one after the other…");
    let t0 = Instant::now();
    for (i, c) in controls.iter().enumerate() {
        c.send(Command::Join)?;
        let want = i + 1;
        wait_until(&shared, Duration::from_secs(60), |b| b.own.len() >= want).await.context("a join was not answered")?;
        if want % 10 == 0 {
            eprintln!("  {want} in after {:.1} s", t0.elapsed().as_secs_f64());
        }
    }
    let everyone = ids.clone();
    let all_keyed =
        wait_until(&shared, Duration::from_secs(300), |b| keyed(b, &everyone, t0, &HashMap::new(), &|_, _| true)).await;
    if all_keyed.is_none() {
        let b = shared.board.lock();
        let missing: Vec<(UserId, UserId)> = everyone
            .iter()
            .flat_map(|h| everyone.iter().filter(move |p| *p != h).map(move |p| (*h, *p)))
            .filter(|(h, p)| b.own.get(p).is_none_or(|(slot, g)| g.is_some() && !b.keys.contains_key(&(*h, *slot))))
            .collect();
        anyhow::bail!(
            "the room never got everyone's keys: {} pairs missing (e.g. {:?}); shares refused: {}",
            missing.len(),
            &missing[..missing.len().min(5)],
            b.refused
        );
    }
    eprintln!("  all {size} in and keyed after {:.1} s", t0.elapsed().as_secs_f64());

    // The room talks.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu0 = server_pid.map(process_cpu).transpose()?;
    {
        let mut b = shared.board.lock();
        (b.audio, b.video, b.failed, b.open) = (0, 0, 0, 0);
    }
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let cpu = match (server_pid, cpu0) {
        (Some(pid), Some(c0)) => Some(process_cpu(pid)? - c0),
        _ => None,
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (audio, video) = (shared.sent_audio.load(Ordering::Relaxed), shared.sent_video.load(Ordering::Relaxed));
    let open = shared.sent_open.load(Ordering::Relaxed);
    let (got_audio, got_video, failed, got_open) = {
        let b = shared.board.lock();
        (b.audio, b.video, b.failed, b.open)
    };
    // Every frame sent goes to everyone else.
    let listeners = size as u64 - 1;
    let loss = |got: u64, sent: u64| (1.0 - got as f64 / (sent * listeners).max(1) as f64).max(0.0) * 100.0;

    // A listener leaves: everyone who stays must hold every sender's next generation.
    let leaver = size - 1;
    let stays: Vec<UserId> = ids.iter().copied().filter(|u| *u != ids[leaver]).collect();
    let floor: HashMap<UserId, u32> = shared.board.lock().own.iter().filter_map(|(u, (_, g))| Some((*u, (*g)? + 1))).collect();
    shared.board.lock().seals.clear();
    let t_leave = Instant::now();
    controls[leaver].send(Command::Leave)?;
    let leave = wait_until(&shared, Duration::from_secs(60), |b| keyed(b, &stays, t_leave, &floor, &|_, _| true)).await;
    let mut seals = std::mem::take(&mut shared.board.lock().seals);
    seals.sort();
    let seal_ms = |p: f64| {
        seals
            .get(((seals.len() as f64 * p) as usize).min(seals.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let (seal_p50, seal_max) = (seal_ms(0.5), seal_ms(1.0));

    // Someone new joins: they hold everyone's key, everyone holds theirs.
    let t_join = Instant::now();
    newcomer.send(Command::Join)?;
    let mut room = stays.clone();
    room.push(newcomer_id);
    let join = wait_until(&shared, Duration::from_secs(60), |b| {
        keyed(b, &room, t_join, &HashMap::new(), &|h, p| h == newcomer_id || p == newcomer_id)
    })
    .await;

    let (refused, errors) = {
        let b = shared.board.lock();
        (b.refused, b.errors)
    };
    shared.stop.store(true, Ordering::Relaxed);
    for (tx, handle) in workers {
        drop(tx);
        let _ = tokio::task::spawn_blocking(move || handle.join()).await;
    }
    let ms = |d: Option<Duration>| d.map_or("not within 60 s".to_owned(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3));
    println!(
        "voice room of {size}, {speakers} speaking, {screens} sharing a screen, {open_mics} open microphones, {seconds} s: audio {audio} packets sent, {got_audio} decrypted of {} ({:.2} % loss); screen {video} packets sent, {got_video} decrypted of {} ({:.2} % loss); {failed} did not open{}{}; re-keyed after a leave in {} (one client sealing its new key for the {} others: median {seal_p50:.0} ms, slowest {seal_max:.0} ms), after a join in {}; shares refused: {refused}; voice errors: {errors}",
        audio * listeners,
        loss(got_audio, audio),
        video * listeners,
        loss(got_video, video),
        cpu.map_or(String::new(), |c| format!(", server CPU {} ms ({:.0} % of a core)", c.as_millis(), c.as_secs_f64() * 100.0 / seconds as f64)),
        if open_mics == 0 {
            String::new()
        } else {
            format!(
                "; {open_mics} open microphones: {open} packets sent, {got_open} forwarded and decrypted ({:.1} % of {})",
                got_open as f64 * 100.0 / (open * listeners).max(1) as f64,
                open * listeners
            )
        },
        ms(leave),
        size - 2,
        ms(join),
    );
    Ok(())
}
