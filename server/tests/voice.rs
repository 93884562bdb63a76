//! Voice through the real server: native voice peers join a voice channel over the gateway,
//! the SFU of `copains` forwards their SFrame-encrypted audio and video, media keys travel in
//! VOICE_KEYS to the room's devices only, everyone who may view the channel sees the voice
//! states, and every refusal comes as a documented VOICE_ERROR code on a connection that stays
//! open. A participant whose gateway dies is removed within seconds (paused clock); a kicked
//! member, a member who loses the permission to connect and one a moderator disconnects are
//! taken out of the room.
//!
//! Media keys are sealed by each client's engine in the pairwise Signal sessions, for the
//! devices their owners' signed lists name; the server relays them to the room only.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::ws::{close_code, recv_json, send, Ws};
use common::{Backend, ClockHold, TestApp};
use copains_client_core::client::Client;
use copains_client_core::crypto::MemoryBackend;
use copains_client_core::engine::Engine;
use copains_client_core::gateway::{close, event_name, op};
use copains_client_core::servers::{ChannelKind, EditChannel, NewInvite, Overwrite, OverwriteKind, Permissions};
use copains_client_core::voice::MediaSender;
use copains_client_core::voice_native::{Received, Source, VoicePeer};
use copains_client_core::voice_signal::{code, VoiceKey, VoiceParticipant};
use copains_client_core::{ChannelId, DeviceId, ServerId, UserId};
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

backend_tests!(
    three_people_hear_and_see_each_other_and_everyone_sees_who_is_in_voice,
    voice_ops_are_refused_with_their_codes_and_the_connection_stays,
    kicked_disconnected_and_unpermitted_members_leave_the_room,
    a_timed_out_member_is_muted_in_voice_until_the_timeout_is_lifted,
    a_newcomer_learns_who_is_speaking_already,
    ice_servers_come_with_expiring_turn_credentials,
);

mod paused {
    #[tokio::test(start_paused = true)]
    async fn a_participant_whose_gateway_dies_is_removed_within_seconds() {
        super::a_participant_whose_gateway_dies_is_removed_within_seconds(super::common::Backend::Sqlite).await
    }
}

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Someone with a client, a gateway connection read by a task of its own, and a voice peer.
struct Person {
    name: &'static str,
    id: UserId,
    client: Client,
    sink: SplitSink<Ws, Message>,
    frames: mpsc::UnboundedReceiver<Value>,
    closed: mpsc::UnboundedReceiver<Option<u16>>,
    /// Every event seen, in order (name, payload, whether a check took it already).
    seen: Vec<(String, Value, bool)>,
    /// The task reading the connection.
    reader: tokio::task::JoinHandle<()>,
    peer: Option<VoicePeer>,
    got: Vec<Received>,
    voice_session: Option<String>,
    slot: u32,
    /// This device's end-to-end encryption.
    engine: Engine<Client>,
    /// Who each slot's key came from (the device of the Signal session it came over).
    key_owner: HashMap<u32, UserId>,
    /// The room as the latest VOICE_READY or VOICE_EPOCH listed it.
    room: Vec<VoiceParticipant>,
}

fn now() -> i64 {
    copains_client_core::crypto::device::now_ms()
}

async fn person(app: &TestApp, name: &'static str) -> Person {
    let client = app.client();
    let auth = client.register(name, "a-long-password", Some("laptop")).await.expect("register");
    let session = client.session_id().await.expect("session");
    let device = client.device_id().await.expect("device");
    let backend = Box::new(MemoryBackend::default());
    let mut engine =
        Engine::open(client.clone(), backend, "vault passphrase", auth.user.id, device, session, now()).await.expect("engine");
    engine.start(now()).await.expect("keys published");
    let mut p = connect(app, name, auth.user.id, client, engine).await;
    p.expect(event_name::READY).await;
    p
}

async fn connect(app: &TestApp, name: &'static str, id: UserId, client: Client, engine: Engine<Client>) -> Person {
    let token = client.access_token().await.expect("token");
    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url.as_str()).await.expect("connect");
    let hello = recv_json(&mut ws).await;
    assert_eq!(hello["op"], op::HELLO);
    send(&mut ws, json!({"op": op::IDENTIFY, "d": {"token": token}})).await;
    let (sink, mut stream) = ws.split();
    let (tx, frames) = mpsc::unbounded_channel();
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Text(t)) => {
                    let _ = tx.send(serde_json::from_str::<Value>(t.as_str()).expect("json"));
                }
                Ok(Message::Close(c)) => {
                    let _ = closed_tx.send(c.map(|c| u16::from(c.code)));
                    return;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = closed_tx.send(None);
    });
    Person {
        name,
        id,
        client,
        sink,
        frames,
        closed,
        seen: Vec::new(),
        reader,
        peer: None,
        got: Vec::new(),
        voice_session: None,
        slot: 0,
        engine,
        key_owner: HashMap::new(),
        room: Vec::new(),
    }
}

impl Person {
    async fn send(&mut self, v: Value) {
        self.sink.send(Message::Text(v.to_string().into())).await.expect("send");
    }

    /// Handles one frame: answers the SFU's offers, takes key shares, keeps every event.
    async fn handle(&mut self, frame: Value) -> Option<(String, Value)> {
        let name = frame["t"].as_str()?.to_owned();
        let d = frame["d"].clone();
        match name.as_str() {
            event_name::VOICE_SDP => {
                if let Some(peer) = self.peer.as_mut() {
                    let answer = peer.answer_offer(d["sdp"].as_str().expect("sdp").to_owned()).expect("answer the SFU");
                    let msg = json!({"op": op::VOICE_SDP, "d": {
                        "voice_session_id": d["voice_session_id"], "type": "answer", "sdp": answer, "revision": d["revision"]}});
                    self.send(msg).await;
                }
            }
            event_name::VOICE_READY | event_name::VOICE_EPOCH => {
                self.room = serde_json::from_value(d["participants"].clone()).expect("participants");
            }
            event_name::VOICE_KEY => {
                let key: VoiceKey = serde_json::from_value(d.clone()).expect("VOICE_KEY");
                let opened =
                    self.engine.open_voice_key(&key, &self.room, now()).await.expect("a key share from a vouched device opens");
                assert_eq!((opened.from_user, opened.from_device), (key.from_user, key.from_device));
                if let Some(peer) = self.peer.as_mut() {
                    peer.keys.add(&opened.share).expect("key taken");
                    self.key_owner.insert(opened.share.slot, opened.from_user);
                }
            }
            _ => {}
        }
        self.seen.push((name.clone(), d.clone(), false));
        Some((name, d))
    }

    /// The first event named `name` not taken by an earlier check (others are handled and
    /// kept on the way).
    async fn expect(&mut self, name: &str) -> Value {
        self.expect_where(name, |_| true).await
    }

    /// The first event named `name` whose payload passes `pred`, not taken by an earlier check.
    async fn expect_where(&mut self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut from = 0;
        loop {
            if let Some(i) = (from..self.seen.len()).find(|&i| !self.seen[i].2 && self.seen[i].0 == name && pred(&self.seen[i].1))
            {
                self.seen[i].2 = true;
                return self.seen[i].1.clone();
            }
            from = self.seen.len();
            let frame = tokio::time::timeout_at(deadline, self.frames.recv())
                .await
                .unwrap_or_else(|_| panic!("{}: no {name} in time; seen {:?}", self.name, self.names()))
                .expect("connection open");
            self.handle(frame).await;
        }
    }

    fn names(&self) -> Vec<&str> {
        self.seen.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    /// Handles what arrived, then runs the voice peer for `span`.
    async fn pump(&mut self, span: Duration) {
        while let Ok(frame) = self.frames.try_recv() {
            self.handle(frame).await;
        }
        if let Some(peer) = self.peer.as_mut() {
            peer.run_until(Instant::now() + span, &mut self.got).await;
        }
    }

    /// Joins `channel` with a fresh voice peer; returns `VOICE_READY`.
    async fn join(&mut self, channel: ChannelId) -> Value {
        let mut peer = VoicePeer::bind(LOCALHOST, MediaSender::fresh(0, 0).expect("key"), false).await.expect("peer");
        let offer = peer.offer().expect("offer");
        self.send(json!({"op": op::VOICE_JOIN, "d": {"channel_id": channel, "sdp": offer}})).await;
        let ready = self.expect(event_name::VOICE_READY).await;
        self.slot = ready["slot"].as_u64().expect("slot") as u32;
        // The slot names this participant's key: a key of its own for the room.
        peer.media = MediaSender::fresh(self.slot, 0).expect("key");
        peer.apply_answer(ready["sdp"].as_str().expect("answer").to_owned()).expect("answer applies");
        self.voice_session = Some(ready["voice_session_id"].as_str().expect("id").to_owned());
        self.peer = Some(peer);
        ready
    }

    /// Seals this participant's key for `participants` with its engine and sends what it
    /// sealed in one VOICE_KEYS; returns to whom it was sealed.
    async fn share_key(&mut self, channel: ChannelId, epoch: u64, participants: &[VoiceParticipant]) -> Vec<(UserId, DeviceId)> {
        let share = self.peer.as_ref().expect("in voice").media.share();
        let sealed = self.engine.seal_voice_keys(channel, epoch, participants, &share, now()).await.expect("sealed");
        let msg =
            json!({"op": op::VOICE_KEYS, "d": {"voice_session_id": self.voice_session, "epoch": epoch, "keys": sealed.keys}});
        self.send(msg).await;
        sealed.devices.iter().map(|(u, d, _)| (*u, *d)).collect()
    }

    /// The `VOICE_ERROR` code answering the frame just sent.
    async fn error_code(&mut self) -> u64 {
        self.expect(event_name::VOICE_ERROR).await["code"].as_u64().expect("code")
    }
}

/// The plaintext of `who`'s `source` frame `n`: the codec's first bytes, then words that must
/// never be readable on the way.
fn frame(who: &str, source: Source, n: u32) -> Vec<u8> {
    let mut f = match source {
        Source::Microphone => vec![0xf8],
        _ => vec![0x00; 10],
    };
    f.extend_from_slice(format!("secret {source:?} of {who} #{n}").as_bytes());
    f
}

/// A server of `owner`'s joined by `members`; its voice channel.
async fn community(owner: &Person, members: &[&Person]) -> (ServerId, ChannelId) {
    let server = owner.client.create_server("les copains").await.expect("server");
    let state = owner.client.server_state(server.id).await.expect("state");
    let voice = state.channels.iter().find(|c| c.kind == ChannelKind::Voice).expect("a voice channel").id;
    let invite = owner.client.create_invite(server.id, &NewInvite::default()).await.expect("invite");
    for m in members {
        m.client.join(&invite.code).await.expect("join");
    }
    (server.id, voice)
}

async fn three_people_hear_and_see_each_other_and_everyone_sees_who_is_in_voice(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut ana = person(&app, "ana").await;
    let mut ben = person(&app, "ben").await;
    let mut cleo = person(&app, "cleo").await;
    let mut dan = person(&app, "dan").await;
    let (server, voice) = community(&ana, &[&ben, &cleo, &dan]).await;

    // Dan stays out of voice and watches the channel fill.
    let ready = ana.join(voice).await;
    assert_eq!(ready["channel_id"], voice.to_string());
    assert_eq!(ready["server_id"], server.to_string());
    assert_eq!(ready["participants"].as_array().expect("list").len(), 1);
    let kinds: Vec<&str> =
        ready["tracks"].as_array().expect("tracks").iter().map(|t| t["kind"].as_str().expect("kind")).collect();
    assert_eq!(kinds, ["audio", "camera", "screen"], "the offer's mic, camera and screen are published");
    let seen = dan.expect_where(event_name::VOICE_STATE_UPDATE, |d| d["user_id"] == ana.id.to_string()).await;
    assert_eq!(seen["channel_id"], voice.to_string());
    assert_eq!(seen["self_mute"], false);

    ben.join(voice).await;
    let epoch = ana.expect(event_name::VOICE_EPOCH).await;
    assert_eq!(epoch["cause"], "join");
    assert_eq!(epoch["subject"]["user_id"], ben.id.to_string());
    cleo.join(voice).await;
    let epoch = ana.expect_where(event_name::VOICE_EPOCH, |d| d["subject"]["user_id"] == cleo.id.to_string()).await;
    assert_eq!(epoch["participants"].as_array().expect("list").len(), 3);
    let slots: HashSet<u32> = [ana.slot, ben.slot, cleo.slot].into();
    assert_eq!(slots.len(), 3, "every participant has a slot of its own");

    // Each seals its key for the room as the server lists it, with two more the server could
    // slip in: Dan, who may read the channel but is not in the room (the server drops his
    // share), and a device of Dan's that his signed list does not name (never sealed).
    let epoch_now = epoch["epoch"].as_u64().expect("epoch");
    let mut listed: Vec<VoiceParticipant> = serde_json::from_value(epoch["participants"].clone()).expect("participants");
    let in_room = listed.clone();
    listed.push(VoiceParticipant { user_id: dan.id, device_id: DeviceId(1), slot: 90 });
    listed.push(VoiceParticipant { user_id: dan.id, device_id: DeviceId(7), slot: 91 });
    for p in [&mut ana, &mut ben, &mut cleo] {
        let to = p.share_key(voice, epoch_now, &listed).await;
        let mut expected: Vec<(UserId, DeviceId)> =
            in_room.iter().map(|v| (v.user_id, v.device_id)).filter(|(u, _)| *u != p.id).collect();
        expected.push((dan.id, DeviceId(1)));
        expected.sort();
        assert_eq!(to, expected, "{}: sealed for the listed devices the signed lists name, never Dan's device 7", p.name);
    }
    // The privacy code is the same on every screen.
    let mut codes = HashSet::new();
    for p in [&mut ana, &mut ben, &mut cleo] {
        codes.insert(p.engine.voice_privacy_code(voice, epoch_now, &in_room, now()).await.expect("code").expect("all vouched"));
    }
    assert_eq!(codes.len(), 1, "one privacy code for the three: {codes:?}");
    assert_eq!(codes.iter().next().map(|c| c.len()), Some(35), "six groups of five digits");
    // Dan sealed nothing: over the same list his code differs, because theirs covers the
    // device the server had them seal for (his) even though the room's list leaves it out.
    let dans = dan.engine.voice_privacy_code(voice, epoch_now, &in_room, now()).await.expect("code").expect("vouched");
    assert!(!codes.contains(&dans), "a device keys were sealed for shows in the privacy code");
    // Ben cannot take over Ana's slot: a share for it, sealed in his own session, is refused.
    let forged = MediaSender::fresh(ana.slot, 5).expect("key").share();
    let to_cleo: Vec<VoiceParticipant> = in_room.iter().copied().filter(|p| p.user_id == cleo.id).collect();
    let sealed = ben.engine.seal_voice_keys(voice, epoch_now, &to_cleo, &forged, now()).await.expect("sealed");
    let key = VoiceKey {
        voice_session_id: cleo.voice_session.clone().expect("in voice"),
        channel_id: voice,
        epoch: epoch_now,
        from_user: ben.id,
        from_device: DeviceId(1),
        ciphertext: sealed.keys[0].ciphertext.clone(),
    };
    let room = cleo.room.clone();
    assert!(cleo.engine.open_voice_key(&key, &room, now()).await.is_err(), "a share for another's slot is refused");

    // Twenty milliseconds a tick: everyone speaks and shows a camera, until each has opened
    // the other two's audio and video and heard from the SFU who speaks.
    let mut n = 0;
    let start = Instant::now();
    let mut done = false;
    while !done && start.elapsed() < Duration::from_secs(20) {
        n += 1;
        for p in [&mut ana, &mut ben, &mut cleo] {
            p.pump(Duration::from_millis(7)).await;
            let name = p.name;
            if let Some(peer) = p.peer.as_mut().filter(|peer| peer.is_connected()) {
                for source in [Source::Microphone, Source::Camera] {
                    peer.send_frames(source, &[&frame(name, source, n)]).await.expect("sent");
                }
            }
        }
        let ids: HashMap<&str, UserId> = [("ana", ana.id), ("ben", ben.id), ("cleo", cleo.id)].into();
        done = [&ana, &ben, &cleo].iter().all(|p| {
            let heard: HashSet<(String, bool)> = p
                .got
                .iter()
                .filter_map(|r| r.frame.as_ref().ok().map(|(_, f)| (String::from_utf8_lossy(f).into_owned(), r.audio)))
                .filter_map(|(text, audio)| {
                    text.split(" of ").nth(1).map(|rest| (rest.split(' ').next().unwrap_or("").to_owned(), audio))
                })
                .collect();
            let speakers: HashSet<String> = p
                .seen
                .iter()
                .filter(|(n, d, _)| n == event_name::VOICE_SPEAKING && d["speaking"] == true)
                .filter_map(|(_, d, _)| d["user_id"].as_str().map(str::to_owned))
                .collect();
            ["ana", "ben", "cleo"].iter().filter(|o| **o != p.name).all(|o| {
                heard.contains(&(o.to_string(), true))
                    && heard.contains(&(o.to_string(), false))
                    && speakers.contains(&ids[o].to_string())
            })
        });
    }
    assert!(done, "each of the three decrypts the other two's audio and video and hears that they speak");
    for p in [&ana, &ben, &cleo] {
        // Every frame that arrived opened with a key whose Signal session names its sender.
        let names: HashMap<UserId, &str> = [(ana.id, "ana"), (ben.id, "ben"), (cleo.id, "cleo")].into();
        for r in &p.got {
            let (slot, f) = r.frame.as_ref().expect("every frame forwarded opens");
            let text = String::from_utf8_lossy(f);
            let owner = names[&p.key_owner[slot]];
            assert!(text.contains(&format!(" of {owner} #")), "{text} was sent by the key's owner");
            assert!(!r.payload.windows(6).any(|w| w == b"secret"), "no plaintext on the wire");
        }
    }

    // Ben mutes and turns his camera on; Dan sees it.
    let vs = ben.voice_session.clone();
    ben.send(json!({"op": op::VOICE_STATE, "d": {"self_mute": true, "self_video": true}})).await;
    let state =
        dan.expect_where(event_name::VOICE_STATE_UPDATE, |d| d["user_id"] == ben.id.to_string() && d["self_mute"] == true).await;
    assert_eq!(state["self_video"], true);

    // A fresh connection of Dan's lists the three in READY.
    let token = dan.client.access_token().await.expect("token");
    let (mut again, ready) = common::ws::identified(&app.ws_url, &token).await;
    let states = ready["d"]["servers"][0]["voice_states"].as_array().expect("voice states").clone();
    let users: HashSet<String> = states.iter().map(|s| s["user_id"].as_str().expect("user").to_owned()).collect();
    assert_eq!(users, [ana.id, ben.id, cleo.id].iter().map(|u| u.to_string()).collect::<HashSet<String>>());
    again.close(None).await.ok();

    // Ben asks for the lowest layer of what he receives: accepted without an error.
    ben.send(json!({"op": op::VOICE_QUALITY, "d": {"voice_session_id": vs, "tracks": [{"track_id": 8, "quality": "low"}]}}))
        .await;

    // Ana leaves: the others start a new epoch without her, Dan sees her go.
    ana.send(json!({"op": op::VOICE_LEAVE, "d": {}})).await;
    let epoch = ben.expect_where(event_name::VOICE_EPOCH, |d| d["cause"] == "leave").await;
    assert_eq!(epoch["subject"]["user_id"], ana.id.to_string());
    assert_eq!(epoch["participants"].as_array().expect("list").len(), 2);
    let gone = dan
        .expect_where(event_name::VOICE_STATE_UPDATE, |d| d["user_id"] == ana.id.to_string() && d["channel_id"].is_null())
        .await;
    assert_eq!(gone["server_id"], server.to_string());
    assert!(!ben.names().contains(&event_name::VOICE_ERROR), "no op of Ben's was refused: {:?}", ben.seen);
    dan.pump(Duration::from_millis(10)).await;
    assert!(!dan.names().contains(&event_name::VOICE_KEY), "no key share reaches someone outside the room");
    app.shutdown().await;
}

async fn voice_ops_are_refused_with_their_codes_and_the_connection_stays(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut ana = person(&app, "ana").await;
    let mut eve = person(&app, "eve").await;
    let (server, voice) = community(&ana, &[]).await;
    let text = ana
        .client
        .server_state(server)
        .await
        .expect("state")
        .channels
        .iter()
        .find(|c| c.kind == ChannelKind::Text)
        .expect("text")
        .id;
    let peer = VoicePeer::bind(LOCALHOST, MediaSender::fresh(0, 0).expect("key"), false).await;
    let offer = peer.expect("peer").offer().expect("offer");

    let join = |channel: ChannelId, sdp: &str| json!({"op": op::VOICE_JOIN, "d": {"channel_id": channel, "sdp": sdp}});
    ana.send(join(text, &offer)).await;
    assert_eq!(ana.error_code().await, u64::from(code::NOT_VOICE_CHANNEL));
    eve.send(join(voice, &offer)).await;
    assert_eq!(eve.error_code().await, u64::from(code::NO_PERMISSION), "not a member: no such channel for her");
    ana.send(join(voice, "v=0\r\nnot an offer")).await;
    assert_eq!(ana.error_code().await, u64::from(code::INVALID_SDP));
    ana.send(json!({"op": op::VOICE_STATE, "d": {"self_mute": true}})).await;
    assert_eq!(ana.error_code().await, u64::from(code::NOT_CONNECTED));
    let answer = json!({"op": op::VOICE_SDP, "d": {"voice_session_id": "00", "type": "answer", "sdp": "v=0", "revision": 1}});
    ana.send(answer).await;
    assert_eq!(ana.error_code().await, u64::from(code::UNKNOWN_SESSION));
    ana.send(json!({"op": op::VOICE_ICE, "d": {"voice_session_id": "00", "candidate": null}})).await;
    assert_eq!(ana.error_code().await, u64::from(code::UNKNOWN_SESSION));

    // A voice channel for one: the second person finds it full.
    ana.client.edit_channel(voice, &EditChannel { user_limit: Some(1), ..EditChannel::default() }).await.expect("limit");
    let invite = ana.client.create_invite(server, &NewInvite::default()).await.expect("invite");
    eve.client.join(&invite.code).await.expect("join");
    ana.join(voice).await;
    let vs = ana.voice_session.clone();
    let eve_peer = VoicePeer::bind(LOCALHOST, MediaSender::fresh(0, 0).expect("key"), false).await;
    let eve_offer = eve_peer.expect("peer").offer().expect("offer");
    eve.send(join(voice, &eve_offer)).await;
    assert_eq!(eve.error_code().await, u64::from(code::ROOM_FULL));

    // Joined: an offer of the client's own is a conflict (only the SFU offers), an answer to
    // a revision never offered too.
    ana.send(json!({"op": op::VOICE_SDP, "d": {"voice_session_id": vs, "type": "offer", "sdp": offer, "revision": 1}})).await;
    assert_eq!(ana.error_code().await, u64::from(code::NEGOTIATION_CONFLICT));
    ana.send(json!({"op": op::VOICE_SDP, "d": {"voice_session_id": vs, "type": "answer", "sdp": "v=0", "revision": 99}})).await;
    assert_eq!(ana.error_code().await, u64::from(code::NEGOTIATION_CONFLICT));
    // Without the permission to stream, no camera (the room has space again).
    let deny = Overwrite { id: server.0, kind: OverwriteKind::Role, allow: Permissions(0), deny: Permissions::STREAM };
    let change = EditChannel { overwrites: Some(vec![deny]), user_limit: Some(0), ..EditChannel::default() };
    ana.client.edit_channel(voice, &change).await.expect("deny");
    eve.join(voice).await;
    eve.send(json!({"op": op::VOICE_STATE, "d": {"self_video": true}})).await;
    assert_eq!(eve.error_code().await, u64::from(code::NO_PERMISSION));
    eve.send(json!({"op": op::VOICE_STATE, "d": {"self_mute": true}})).await;
    let muted =
        ana.expect_where(event_name::VOICE_STATE_UPDATE, |d| d["user_id"] == eve.id.to_string() && d["self_mute"] == true).await;
    assert_eq!(muted["self_video"], false);

    // Answers count with the other voice ops, not against the join budget (the SFU's offers
    // bound them): twelve answers not asked for are twelve conflicts, never a rate limit.
    for _ in 0..12 {
        ana.send(json!({"op": op::VOICE_SDP, "d": {"voice_session_id": vs, "type": "answer", "sdp": "v=0", "revision": 99}}))
            .await;
        assert_eq!(ana.error_code().await, u64::from(code::NEGOTIATION_CONFLICT));
    }
    // Joins are limited per minute.
    let mut limited = false;
    for _ in 0..12 {
        ana.send(join(text, &offer)).await;
        if ana.error_code().await == u64::from(code::RATE_LIMITED) {
            limited = true;
            break;
        }
    }
    assert!(limited, "an eleventh SDP in a minute is refused");

    // Malformed voice frames are frame errors (the documented close codes); a non-voice op
    // over 16 KiB is too large even though voice ops may be bigger.
    ana.send(json!({"op": op::VOICE_KEYS, "d": {"voice_session_id": vs, "epoch": 0, "keys": []}})).await;
    let code_seen = tokio::time::timeout(Duration::from_secs(10), ana.closed.recv()).await.expect("closed in time").flatten();
    assert_eq!(code_seen, Some(close::DECODE_ERROR));
    let token = eve.client.access_token().await.expect("token");
    let (mut ws, _) = common::ws::identified(&app.ws_url, &token).await;
    send(&mut ws, json!({"op": op::HEARTBEAT, "d": null, "pad": "x".repeat(20_000)})).await;
    assert_eq!(close_code(&mut ws).await, Some(close::FRAME_TOO_LARGE));
    // Eve's first connection, refused a few times, is still served.
    eve.send(json!({"op": op::HEARTBEAT, "d": null})).await;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), eve.frames.recv()).await.expect("ack in time").expect("open");
        if frame["op"] == op::HEARTBEAT_ACK {
            break;
        }
    }
    app.shutdown().await;
}

async fn a_newcomer_learns_who_is_speaking_already(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut ana = person(&app, "ana").await;
    let mut ben = person(&app, "ben").await;
    let (_, voice) = community(&ana, &[&ben]).await;
    ana.join(voice).await;
    // Ana talks alone until the SFU says she speaks (the speaker hears it too).
    let start = Instant::now();
    let mut n = 0;
    let speaking = |p: &Person| p.seen.iter().any(|(t, d, _)| t == event_name::VOICE_SPEAKING && d["speaking"] == true);
    while !speaking(&ana) && start.elapsed() < Duration::from_secs(20) {
        n += 1;
        ana.pump(Duration::from_millis(20)).await;
        if let Some(peer) = ana.peer.as_mut().filter(|peer| peer.is_connected()) {
            peer.send_frames(Source::Microphone, &[&frame("ana", Source::Microphone, n)]).await.expect("sent");
        }
    }
    assert!(speaking(&ana), "Ana's audio level makes her a speaker");
    // Ben joins while she is still speaking (it holds a second after her last loud packet):
    // no change comes, yet he is told right after VOICE_READY.
    ben.join(voice).await;
    let told = ben.expect(event_name::VOICE_SPEAKING).await;
    assert_eq!(told["user_id"], ana.id.to_string());
    assert_eq!(told["speaking"], true);
    assert_eq!(told["channel_id"], voice.to_string());
    app.shutdown().await;
}

async fn kicked_disconnected_and_unpermitted_members_leave_the_room(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut ana = person(&app, "ana").await;
    let mut ben = person(&app, "ben").await;
    let mut cleo = person(&app, "cleo").await;
    let (server, voice) = community(&ana, &[&ben, &cleo]).await;
    ana.join(voice).await;
    ben.join(voice).await;
    cleo.join(voice).await;

    // Kicked: out of the room at once.
    ana.client.kick(server, ben.id).await.expect("kick");
    let bye = ben.expect(event_name::VOICE_DISCONNECT).await;
    assert_eq!(bye["reason"], "kicked");
    let epoch = cleo.expect_where(event_name::VOICE_EPOCH, |d| d["cause"] == "leave").await;
    assert_eq!(epoch["subject"]["user_id"], ben.id.to_string());

    // The channel no longer lets members connect: Cleo goes, the owner stays.
    let deny = Overwrite { id: server.0, kind: OverwriteKind::Role, allow: Permissions(0), deny: Permissions::CONNECT };
    ana.client.edit_channel(voice, &EditChannel { overwrites: Some(vec![deny]), ..EditChannel::default() }).await.expect("deny");
    let bye = cleo.expect(event_name::VOICE_DISCONNECT).await;
    assert_eq!(bye["reason"], "permission_lost");
    let voice_ = app.running().gateway().voice().expect("voice").clone();
    common::eventually(Duration::from_secs(10), "one participant left", || {
        let v = voice_.clone();
        async move { v.participants() == 1 }
    })
    .await;

    // A moderator over REST: Ana mutes Ben once he is back, then disconnects him.
    ana.client.edit_channel(voice, &EditChannel { overwrites: Some(vec![]), ..EditChannel::default() }).await.expect("allow");
    let invite = ana.client.create_invite(server, &NewInvite::default()).await.expect("invite");
    ben.client.join(&invite.code).await.expect("join again");
    ben.join(voice).await;
    let url = app.url(&format!("/api/v1/servers/{server}/members/{}/voice", ben.id));
    let token = ana.client.access_token().await.expect("token");
    let http = reqwest::Client::new();
    let muted = http.patch(&url).bearer_auth(&token).json(&json!({"mute": true})).send().await.expect("mute");
    assert_eq!(muted.status(), 200);
    let state: Value = muted.json().await.expect("state");
    assert_eq!(state["mute"], true);
    let seen =
        ana.expect_where(event_name::VOICE_STATE_UPDATE, |d| d["user_id"] == ben.id.to_string() && d["mute"] == true).await;
    assert_eq!(seen["channel_id"], voice.to_string());
    let cut = http.patch(&url).bearer_auth(&token).json(&json!({"channel_id": null})).send().await.expect("disconnect");
    assert_eq!(cut.status(), 200);
    let bye = ben.expect(event_name::VOICE_DISCONNECT).await;
    assert_eq!(bye["reason"], "disconnected");
    // Ben may not do the same to Ana.
    let ben_token = ben.client.access_token().await.expect("token");
    let ana_url = app.url(&format!("/api/v1/servers/{server}/members/{}/voice", ana.id));
    let refused = http.patch(&ana_url).bearer_auth(&ben_token).json(&json!({"mute": true})).send().await.expect("send");
    assert_eq!(refused.status(), 403);
    let nobody = http.patch(&url).bearer_auth(&token).json(&json!({"mute": true})).send().await.expect("send");
    assert_eq!(nobody.status(), 404, "Ben is no longer in voice");
    app.shutdown().await;
}

async fn a_timed_out_member_is_muted_in_voice_until_the_timeout_is_lifted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut ana = person(&app, "ana").await;
    let mut ben = person(&app, "ben").await;
    let (server, voice) = community(&ana, &[&ben]).await;
    ana.join(voice).await;
    ben.join(voice).await;
    let url = app.url(&format!("/api/v1/servers/{server}/members/{}/timeout", ben.id));
    let token = ana.client.access_token().await.expect("token");
    let http = reqwest::Client::new();
    // Timed out: he stays and listens, but the SFU forwards none of his audio (speak is gone).
    let put = http.put(&url).bearer_auth(&token).json(&json!({"duration_secs": 600})).send().await.expect("timeout");
    assert_eq!(put.status(), 204);
    let muted =
        ana.expect_where(event_name::VOICE_STATE_UPDATE, |d| d["user_id"] == ben.id.to_string() && d["mute"] == true).await;
    assert_eq!(muted["channel_id"], voice.to_string());
    let voice_ = app.running().gateway().voice().expect("voice").clone();
    assert_eq!(voice_.participants(), 2, "a timeout does not remove anyone from voice");
    // Lifted: he may speak again.
    let lifted = http.delete(&url).bearer_auth(&token).send().await.expect("lift");
    assert_eq!(lifted.status(), 204);
    ana.expect_where(event_name::VOICE_STATE_UPDATE, |d| d["user_id"] == ben.id.to_string() && d["mute"] == false).await;
    app.shutdown().await;
}

async fn a_participant_whose_gateway_dies_is_removed_within_seconds(backend: Backend) {
    // Only `advance` moves the clock (the database and the sockets are real).
    let hold = ClockHold::new();
    let app = TestApp::spawn(backend).await;
    let mut ana = person(&app, "ana").await;
    let mut ben = person(&app, "ben").await;
    let (_, voice) = community(&ana, &[&ben]).await;
    ana.join(voice).await;
    ben.join(voice).await;
    let v = app.running().gateway().voice().expect("voice").clone();
    assert_eq!(v.participants(), 2);

    // Ben's connection drops without a close frame: the socket is simply gone.
    ben.reader.abort();
    let Person { sink, frames, closed, reader, .. } = ben;
    let _ = reader.await;
    drop((sink, frames, closed));
    // The server notices the drop (in real time); the session stays resumable, and Ben stays
    // for now.
    let gateway = app.running().gateway().clone();
    while gateway.open_connections() != 1 {
        real_pause().await;
    }
    real_pause().await;
    let gone = ana.expect_where(event_name::VOICE_STATE_UPDATE, |d| d["channel_id"].is_null());
    tokio::time::advance(Duration::from_secs(4)).await;
    real_pause().await;
    assert_eq!(v.participants(), 2, "a gateway that may still resume keeps its voice session for a while");
    tokio::time::advance(Duration::from_secs(2)).await;
    let left = gone.await;
    assert_eq!(v.participants(), 1, "removed within seconds of its gateway dying");
    assert!(left["user_id"].is_string());
    drop(hold);
    app.shutdown().await;
}

/// Lets the server's tasks run in real time for a moment (the paused clock stays still).
async fn real_pause() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let _ = tx.send(());
    });
    let _ = rx.await;
}

async fn ice_servers_come_with_expiring_turn_credentials(backend: Backend) {
    let secret = "a coturn static-auth-secret";
    let app = TestApp::spawn_with(backend, |c| {
        c.gateway.voice.stun_urls = vec!["stun:turn.example.org:3478".into()];
        c.gateway.voice.turn_urls = vec!["turn:turn.example.org:3478?transport=udp".into(), "turns:turn.example.org:5349".into()];
        c.gateway.voice.turn_secret = Some(secret.into());
        c.gateway.voice.turn_ttl_secs = 3600;
    })
    .await;
    let client = app.client();
    let auth = client.register("ana", "a-long-password", None).await.expect("register");
    let http = reqwest::Client::new();
    let url = app.url("/api/v1/voice/ice-servers");
    assert_eq!(http.get(&url).send().await.expect("send").status(), 401);
    let token = client.access_token().await.expect("token");
    let answer = http.get(&url).bearer_auth(&token).send().await.expect("send");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.expect("json");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let expires = body["expires_at"].as_u64().expect("expiry");
    assert!((now + 3590..=now + 3610).contains(&expires), "valid for the configured hour");
    assert_eq!(body["ice_servers"][0]["urls"][0], "stun:turn.example.org:3478");
    let turn = &body["ice_servers"][1];
    assert_eq!(turn["urls"].as_array().expect("urls").len(), 2);
    let username = turn["username"].as_str().expect("username");
    assert_eq!(username, format!("{expires}:{}", auth.user.id));
    assert_eq!(turn["credential"], copains_signaling::voice::turn_credential(secret, username), "coturn can check it");
    app.shutdown().await;
}
