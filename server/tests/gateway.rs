//! The gateway through the real server: HELLO → IDENTIFY → READY, events with sequence
//! numbers, heartbeats, RESUME after a dropped connection with no event lost, RESUME taking a
//! session over from a connection still attached to it, slow consumers, revocation, shutdown,
//! and every malformed frame closed with its documented code. Heartbeat deadlines and the
//! resume window run on tokio's paused clock: the test moves time, nothing sleeps.

mod common;

use std::time::Duration;

use common::ws::{close_code, recv_json, send, Ws};
use common::{Backend, ClockHold, TestApp};
use copains_backend::bus::{BusEvent, Topic};
use copains_client_core::api::{Patch, UpdateProfile};
use copains_client_core::client::GatewayUpdate;
use copains_client_core::gateway::{close, event_name, op, Event};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

backend_tests!(
    hello_identify_ready_and_heartbeat,
    profile_updates_reach_every_device_in_order,
    resume_after_a_dropped_connection_loses_no_event,
    resume_of_an_unknown_session_asks_for_identify,
    resume_takes_over_a_connection_still_attached,
    malformed_frames_close_with_documented_codes,
    revoking_a_session_closes_its_socket,
    slow_consumer_is_closed_and_resumes_without_loss,
    shutdown_tells_connected_clients,
    envelopes_are_acknowledged_over_the_gateway,
);

/// Like `backend_tests!`, on a current-thread runtime whose clock starts paused.
macro_rules! paused_backend_tests {
    ($($name:ident),* $(,)?) => {
        mod paused_sqlite {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    super::$name(super::common::Backend::Sqlite).await
                }
            )*
        }
        mod paused_postgres {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    if !super::common::Backend::Postgres.available() {
                        eprintln!("COPAINS_TEST_DATABASE_URL is not set: PostgreSQL variant not run");
                        return;
                    }
                    super::$name(super::common::Backend::Postgres).await
                }
            )*
        }
    };
}

paused_backend_tests!(heartbeats_keep_a_connection_and_silence_ends_it, the_resume_window_runs_on_the_runtime_clock);

/// Fails the test if `fut` is not done within `limit` of real time: under a held clock, a
/// tokio timeout would never fire.
async fn within<F: std::future::Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    tokio::select! {
        out = fut => out,
        _ = real_sleep(limit) => panic!("{what}: not done within {limit:?} of real time"),
    }
}

/// Sleeps in real time, on a thread of its own: a tokio sleep never ends under a held clock.
async fn real_sleep(d: Duration) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(d);
        let _ = tx.send(());
    });
    let _ = rx.await;
}

/// Waits until the server holds `n` gateway connections (polling in real time).
async fn open_connections_become(app: &TestApp, n: usize) {
    let gateway = app.running().gateway().clone();
    while gateway.open_connections() != n {
        real_sleep(Duration::from_millis(10)).await;
    }
}

async fn connect(app: &TestApp) -> Ws {
    tokio_tungstenite::connect_async(app.ws_url.as_str()).await.expect("connect").0
}

async fn identified(app: &TestApp, token: &str) -> (Ws, Value) {
    let mut ws = connect(app).await;
    let hello = recv_json(&mut ws).await;
    assert_eq!(hello["op"], op::HELLO);
    send(&mut ws, json!({"op": op::IDENTIFY, "d": {"token": token}})).await;
    let ready = recv_json(&mut ws).await;
    assert_eq!(ready["t"], event_name::READY);
    (ws, ready)
}

async fn hello_identify_ready_and_heartbeat(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.client();
    let auth = alice.register("alice", "password-alice", Some("Laptop")).await.expect("register");
    let mut ws = connect(&app).await;
    let hello = recv_json(&mut ws).await;
    assert_eq!(hello, json!({"op": 10, "d": {"heartbeat_interval_ms": 30000, "resume_window_ms": 120000}}));
    send(&mut ws, json!({"op": 1, "d": null})).await;
    assert_eq!(recv_json(&mut ws).await["op"], op::HEARTBEAT_ACK, "heartbeats are answered before IDENTIFY too");
    send(&mut ws, json!({"op": 2, "d": {"token": auth.tokens.access_token}})).await;
    let ready = recv_json(&mut ws).await;
    assert_eq!(ready["op"], op::DISPATCH);
    assert_eq!(ready["s"], 1);
    assert_eq!(ready["t"], "READY");
    assert_eq!(ready["d"]["user"]["id"], auth.user.id.to_string());
    assert_eq!(ready["d"]["device_id"], 1);
    assert_eq!(ready["d"]["login_session_id"], auth.session_id.to_string());
    assert_eq!(ready["d"]["devices"][0]["name"], "Laptop");
    assert_eq!(ready["d"]["session_id"].as_str().expect("session id").len(), 32);
    send(&mut ws, json!({"op": 1, "d": 1})).await;
    assert_eq!(recv_json(&mut ws).await, json!({"op": 11, "d": null}));
    let metrics = reqwest::get(app.url("/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("copains_gateway_connections 1"), "{metrics}");
    app.shutdown().await;
}

async fn profile_updates_reach_every_device_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let laptop = app.client();
    laptop.register("bob", "password-bob", None).await.expect("register");
    let phone = app.client();
    phone.login("bob", "password-bob", None).await.expect("login");
    let stranger = app.client();
    stranger.register("eve", "password-eve", None).await.expect("register");

    let mut gw_laptop = laptop.connect_gateway().await.expect("gateway");
    let mut gw_phone = phone.connect_gateway().await.expect("gateway");
    let mut gw_eve = stranger.connect_gateway().await.expect("gateway");
    for gw in [&mut gw_laptop, &mut gw_phone, &mut gw_eve] {
        let (seq, event) = gw.next_event().await.expect("ready");
        assert_eq!((seq, event.name()), (1, "READY"));
    }
    for i in 0..5 {
        let change = UpdateProfile { display_name: Patch::Keep, status_text: Patch::Set(format!("status {i}")) };
        laptop.update_profile(&change).await.expect("update");
    }
    for gw in [&mut gw_laptop, &mut gw_phone] {
        for i in 0..5u64 {
            let (seq, event) = gw.next_event().await.expect("event");
            assert_eq!(seq, 2 + i, "sequence numbers follow each other");
            let Event::UserUpdate(user) = event else { panic!("expected USER_UPDATE, got {event:?}") };
            assert_eq!(user.status_text, Some(format!("status {i}")));
        }
    }
    // Eve hears nothing of Bob's profile: her next event is her own.
    stranger
        .update_profile(&UpdateProfile { display_name: Patch::Set("Eve".into()), status_text: Patch::Keep })
        .await
        .expect("update");
    let (seq, event) = gw_eve.next_event().await.expect("event");
    assert_eq!(seq, 2);
    let Event::UserUpdate(user) = event else { panic!("expected USER_UPDATE") };
    assert_eq!(user.username, "eve");
    gw_laptop.close().await;
    gw_phone.close().await;
    gw_eve.close().await;
    app.shutdown().await;
}

async fn resume_after_a_dropped_connection_loses_no_event(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let carol = app.client();
    carol.register("carol", "password-carol", None).await.expect("register");
    let other_device = app.client();
    other_device.login("carol", "password-carol", None).await.expect("login");

    let mut gw = carol.connect_gateway().await.expect("gateway");
    assert_eq!(gw.next().await, Some(GatewayUpdate::Connected { resumed: false }));
    assert_eq!(gw.next_event().await.expect("ready").0, 1);
    other_device
        .update_profile(&UpdateProfile { display_name: Patch::Set("before".into()), status_text: Patch::Keep })
        .await
        .expect("update");
    assert_eq!(gw.next_event().await.expect("event").0, 2);

    gw.simulate_network_drop();
    assert_eq!(gw.next().await, Some(GatewayUpdate::Disconnected { code: None }));
    // Let the server notice the drop, then change things while Carol is offline.
    let gateway = app.running().gateway().clone();
    common::eventually(Duration::from_secs(5), "server sees the drop", || {
        let gateway = gateway.clone();
        async move { gateway.open_connections() == 0 }
    })
    .await;
    for i in 0..20 {
        let change = UpdateProfile { display_name: Patch::Set(format!("offline {i}")), status_text: Patch::Keep };
        other_device.update_profile(&change).await.expect("update");
    }
    gw.reconnect();
    for i in 0..20u64 {
        let (seq, event) = gw.next_event().await.expect("replayed event");
        assert_eq!(seq, 3 + i, "no gap, no duplicate");
        let Event::UserUpdate(user) = event else { panic!("expected USER_UPDATE, got {event:?}") };
        assert_eq!(user.display_name, Some(format!("offline {i}")));
    }
    // RESUMED closes the replay; the client reports the resumed connection with it.
    assert_eq!(gw.next().await, Some(GatewayUpdate::Connected { resumed: true }));
    let Some(GatewayUpdate::Event { seq, event: Event::Resumed(resumed) }) = gw.next().await else { panic!("expected RESUMED") };
    assert_eq!((seq, resumed.replayed), (23, 20));
    // Live again.
    other_device
        .update_profile(&UpdateProfile { display_name: Patch::Set("after".into()), status_text: Patch::Keep })
        .await
        .expect("update");
    let (seq, _) = gw.next_event().await.expect("live event");
    assert_eq!(seq, 24);
    gw.close().await;
    app.shutdown().await;
}

async fn resume_of_an_unknown_session_asks_for_identify(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dan = app.client();
    let auth = dan.register("dan", "password-dan", None).await.expect("register");
    let token = auth.tokens.access_token;
    let mut ws = connect(&app).await;
    recv_json(&mut ws).await;
    send(&mut ws, json!({"op": op::RESUME, "d": {"token": token, "session_id": "0123456789abcdef0123456789abcdef", "seq": 3}}))
        .await;
    assert_eq!(recv_json(&mut ws).await, json!({"op": 9, "d": {"resumable": false}}));
    send(&mut ws, json!({"op": op::IDENTIFY, "d": {"token": token}})).await;
    let ready = recv_json(&mut ws).await;
    assert_eq!(ready["t"], "READY");
    let session_id = ready["d"]["session_id"].as_str().expect("id").to_owned();
    drop(ws);

    // Another user cannot take over Dan's session, even knowing its id.
    let erin = app.client();
    let erin_auth = erin.register("erin", "password-erin", None).await.expect("register");
    let mut ws = connect(&app).await;
    recv_json(&mut ws).await;
    send(&mut ws, json!({"op": op::RESUME, "d": {"token": erin_auth.tokens.access_token, "session_id": session_id, "seq": 1}}))
        .await;
    assert_eq!(recv_json(&mut ws).await["op"], op::INVALID_SESSION);
    // A sequence number from the future is refused too.
    let mut ws = connect(&app).await;
    recv_json(&mut ws).await;
    send(&mut ws, json!({"op": op::RESUME, "d": {"token": token, "session_id": session_id, "seq": 99}})).await;
    assert_eq!(recv_json(&mut ws).await["op"], op::INVALID_SESSION);
    app.shutdown().await;
}

async fn resume_takes_over_a_connection_still_attached(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let kay = app.client();
    let auth = kay.register("kay", "password-kay", None).await.expect("register");
    let token = auth.tokens.access_token.clone();
    let bus = app.running().state().bus.clone();
    let publish = |n: u32| {
        let bus = bus.clone();
        async move {
            let event = BusEvent::new(Topic::user(auth.user.id), "TEST_EVENT", &json!({ "n": n })).expect("event");
            bus.publish(event).await.expect("publish");
        }
    };
    let (mut old, ready) = identified(&app, &token).await;
    let session_id = ready["d"]["session_id"].as_str().expect("id").to_owned();
    publish(2).await;
    publish(3).await;
    let seen = recv_json(&mut old).await;
    assert_eq!((seen["s"].as_u64(), seen["d"]["n"].as_u64()), (Some(2), Some(2)));

    // The old connection is still attached (it has just read an event) when a new one
    // resumes from sequence 2: the new one gets event 3 again and RESUMED.
    let mut new = connect(&app).await;
    recv_json(&mut new).await;
    send(&mut new, json!({"op": op::RESUME, "d": {"token": token, "session_id": session_id, "seq": 2}})).await;
    let replayed = recv_json(&mut new).await;
    assert_eq!((replayed["s"].as_u64(), replayed["d"]["n"].as_u64()), (Some(3), Some(3)));
    let resumed = recv_json(&mut new).await;
    assert_eq!(resumed["t"], event_name::RESUMED);
    assert_eq!((resumed["s"].as_u64(), resumed["d"]["replayed"].as_u64()), (Some(4), Some(1)));

    // The old connection is closed with the documented code (4000: replaced by a newer
    // connection), after whatever was already queued for it.
    assert_eq!(close_code(&mut old).await, Some(close::UNKNOWN_ERROR));
    assert!(close::is_resumable(close::UNKNOWN_ERROR));
    // Its end does not end the session: live events keep reaching the new connection.
    publish(5).await;
    let live = recv_json(&mut new).await;
    assert_eq!((live["s"].as_u64(), live["d"]["n"].as_u64()), (Some(5), Some(5)));
    round_trip(&mut new).await;
    let gateway = app.running().gateway().clone();
    common::eventually(Duration::from_secs(5), "the old connection's task ends", || {
        let gateway = gateway.clone();
        async move { gateway.open_connections() == 1 }
    })
    .await;
    app.shutdown().await;
}

async fn malformed_frames_close_with_documented_codes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let fay = app.client();
    let token = fay.register("fay", "password-fay", None).await.expect("register").tokens.access_token;

    let cases: Vec<(&str, Message, u16)> = vec![
        ("not JSON", Message::Text("hello?".into()), close::DECODE_ERROR),
        ("binary", Message::Binary(vec![1u8, 2, 3].into()), close::DECODE_ERROR),
        ("unknown op", Message::Text(json!({"op": 42, "d": null}).to_string().into()), close::UNKNOWN_OPCODE),
        ("server op", Message::Text(json!({"op": 0, "d": {}}).to_string().into()), close::UNKNOWN_OPCODE),
        ("bad payload", Message::Text(json!({"op": 2, "d": {"tok": 1}}).to_string().into()), close::DECODE_ERROR),
        ("bad token", Message::Text(json!({"op": 2, "d": {"token": "x.y.z"}}).to_string().into()), close::AUTHENTICATION_FAILED),
        ("too large", Message::Text("x".repeat(20_000).into()), close::FRAME_TOO_LARGE),
        (
            "ACK before IDENTIFY",
            Message::Text(json!({"op": op::ACK, "d": {"ids": ["1"]}}).to_string().into()),
            close::NOT_AUTHENTICATED,
        ),
        ("ACK of nothing", Message::Text(json!({"op": op::ACK, "d": {"ids": []}}).to_string().into()), close::DECODE_ERROR),
        (
            "ACK of too many",
            Message::Text(json!({"op": op::ACK, "d": {"ids": vec!["1"; 101]}}).to_string().into()),
            close::DECODE_ERROR,
        ),
        ("ACK of a non-id", Message::Text(json!({"op": op::ACK, "d": {"ids": ["x"]}}).to_string().into()), close::DECODE_ERROR),
    ];
    for (what, frame, expected) in cases {
        let mut ws = connect(&app).await;
        recv_json(&mut ws).await;
        ws.send(frame).await.expect("send");
        assert_eq!(close_code(&mut ws).await, Some(expected), "{what}");
    }

    let (mut ws, _) = identified(&app, &token).await;
    send(&mut ws, json!({"op": op::IDENTIFY, "d": {"token": token}})).await;
    assert_eq!(close_code(&mut ws).await, Some(close::ALREADY_AUTHENTICATED), "IDENTIFY twice");

    // After every one of those, the server still serves.
    let (_ws, ready) = identified(&app, &token).await;
    assert_eq!(ready["s"], 1);
    app.shutdown().await;
}

async fn heartbeats_keep_a_connection_and_silence_ends_it(backend: Backend) {
    let _hold = ClockHold::new();
    let app = TestApp::spawn(backend).await;
    // As shipped: a heartbeat every 30 s, a connection silent for 45 s is closed.
    let interval = Duration::from_millis(copains::Config::default().gateway.heartbeat_interval_ms);
    assert_eq!(interval, Duration::from_secs(30));
    let allowance = interval + interval / 2;
    let gus = app.client();
    let token = gus.register("gus", "password-gus", None).await.expect("register").tokens.access_token;
    let real = Duration::from_secs(20);

    // Silent before IDENTIFY: still there just before the deadline (it answers a beat), and
    // closed, resumable, once a whole allowance passes without one.
    let mut ws = connect(&app).await;
    within(real, "HELLO", recv_json(&mut ws)).await;
    tokio::time::advance(allowance - Duration::from_millis(1)).await;
    send(&mut ws, json!({"op": op::HEARTBEAT, "d": null})).await;
    assert_eq!(within(real, "ACK", recv_json(&mut ws)).await["op"], op::HEARTBEAT_ACK, "open 1 ms before its deadline");
    tokio::time::advance(allowance).await;
    assert_eq!(within(real, "close", close_code(&mut ws)).await, Some(close::SESSION_TIMED_OUT));

    // After IDENTIFY: a client that beats every interval stays for many allowances.
    let (mut ws, _) = within(real, "READY", identified(&app, &token)).await;
    for _ in 0..6 {
        tokio::time::advance(interval).await;
        send(&mut ws, json!({"op": op::HEARTBEAT, "d": 1})).await;
        assert_eq!(within(real, "ACK", recv_json(&mut ws)).await["op"], op::HEARTBEAT_ACK);
    }
    // Then silence: closed with the resumable 4009.
    tokio::time::advance(allowance).await;
    assert_eq!(within(real, "close", close_code(&mut ws)).await, Some(close::SESSION_TIMED_OUT));
    assert!(close::is_resumable(close::SESSION_TIMED_OUT));
    within(real, "shutdown", app.shutdown()).await;
}

/// The resume window through the real server: the connection's detach and the reaper both
/// read the runtime's clock, so the test moves the window with `advance`.
async fn the_resume_window_runs_on_the_runtime_clock(backend: Backend) {
    let _hold = ClockHold::new();
    let app = TestApp::spawn(backend).await;
    // As shipped: a dropped session can be resumed for 2 minutes.
    let window = Duration::from_millis(copains::Config::default().gateway.resume_window_ms);
    assert_eq!(window, Duration::from_secs(120));
    // The reaper looks for expired sessions every quarter of the window, at most every 5 s.
    let reaper_period = Duration::from_secs(5);
    let real = Duration::from_secs(20);
    let lea = app.client();
    let auth = lea.register("lea", "password-lea", None).await.expect("register");
    let token = auth.tokens.access_token.clone();
    let bus = app.running().state().bus.clone();
    let (ws, ready) = within(real, "READY", identified(&app, &token)).await;
    let session_id = ready["d"]["session_id"].as_str().expect("id").to_owned();

    // Dropped; 1 ms before the window ends an event arrives, and a RESUME replays it.
    drop(ws);
    within(real, "the server sees the drop", open_connections_become(&app, 0)).await;
    tokio::time::advance(window - Duration::from_millis(1)).await;
    let event = BusEvent::new(Topic::user(auth.user.id), "TEST_EVENT", &json!({ "n": 2 })).expect("event");
    bus.publish(event).await.expect("publish");
    let mut ws = within(real, "connect", connect(&app)).await;
    within(real, "HELLO", recv_json(&mut ws)).await;
    send(&mut ws, json!({"op": op::RESUME, "d": {"token": token, "session_id": session_id, "seq": 1}})).await;
    let replayed = within(real, "replay", recv_json(&mut ws)).await;
    assert_eq!((replayed["s"].as_u64(), replayed["d"]["n"].as_u64()), (Some(2), Some(2)), "resumable until the window ends");
    let resumed = within(real, "RESUMED", recv_json(&mut ws)).await;
    assert_eq!((resumed["t"].as_str(), resumed["s"].as_u64()), (Some(event_name::RESUMED), Some(3)));

    // Dropped again: once the window (counted from this drop) and a reaper pass have gone
    // by, the session is forgotten and a RESUME is told to IDENTIFY.
    drop(ws);
    within(real, "the server sees the drop", open_connections_become(&app, 0)).await;
    tokio::time::advance(window + reaper_period).await;
    let mut ws = within(real, "connect", connect(&app)).await;
    within(real, "HELLO", recv_json(&mut ws)).await;
    send(&mut ws, json!({"op": op::RESUME, "d": {"token": token, "session_id": session_id, "seq": 3}})).await;
    assert_eq!(
        within(real, "INVALID_SESSION", recv_json(&mut ws)).await,
        json!({"op": op::INVALID_SESSION, "d": {"resumable": false}})
    );
    within(real, "shutdown", app.shutdown()).await;
}

async fn revoking_a_session_closes_its_socket(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let main = app.client();
    main.register("hal", "password-hal", None).await.expect("register");
    let lost = app.client();
    let lost_auth = lost.login("hal", "password-hal", Some("Lost phone")).await.expect("login");
    let mut gw_main = main.connect_gateway().await.expect("gateway");
    gw_main.next_event().await.expect("ready");
    let (mut ws_lost, _) = identified(&app, &lost_auth.tokens.access_token).await;

    main.revoke_session(lost_auth.session_id).await.expect("revoke");
    let note = recv_json(&mut ws_lost).await;
    assert_eq!(note["t"], "SESSION_REVOKED", "the revoked device is told why");
    assert_eq!(close_code(&mut ws_lost).await, Some(close::SESSION_REVOKED));
    let (_, event) = gw_main.next_event().await.expect("event");
    let Event::SessionRevoked(revoked) = event else { panic!("expected SESSION_REVOKED, got {event:?}") };
    assert_eq!(revoked.session_id, lost_auth.session_id);

    // Its token cannot come back through the gateway either.
    let mut ws = connect(&app).await;
    recv_json(&mut ws).await;
    send(&mut ws, json!({"op": op::IDENTIFY, "d": {"token": lost_auth.tokens.access_token}})).await;
    assert_eq!(close_code(&mut ws).await, Some(close::AUTHENTICATION_FAILED));

    // The client library stops reconnecting after a revocation.
    let lost_again = app.client();
    let auth = lost_again.login("hal", "password-hal", None).await.expect("login");
    let mut gw = lost_again.connect_gateway().await.expect("gateway");
    gw.next_event().await.expect("ready");
    main.revoke_session(auth.session_id).await.expect("revoke");
    loop {
        match gw.next().await {
            Some(GatewayUpdate::Closed { code }) => {
                assert_eq!(code, Some(close::SESSION_REVOKED));
                break;
            }
            Some(GatewayUpdate::Event { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(gw.next().await, None);
    gw_main.close().await;
    app.shutdown().await;
}

async fn slow_consumer_is_closed_and_resumes_without_loss(backend: Backend) {
    const EVENTS: usize = 1500;
    let app = TestApp::spawn_with(backend, |c| {
        c.gateway.outgoing_queue = 8;
        // Room to replay all 1500 events of 16 KiB (~24 MiB).
        c.gateway.replay_buffer = 4096;
        c.gateway.replay_buffer_bytes = 64 * 1024 * 1024;
        c.gateway.write_timeout_ms = 500;
    })
    .await;
    let ivy = app.client();
    let auth = ivy.register("ivy", "password-ivy", None).await.expect("register");
    let token = auth.tokens.access_token.clone();
    let (mut ws, ready) = identified(&app, &token).await;
    let session_id = ready["d"]["session_id"].as_str().expect("id").to_owned();

    // Publish far more than socket buffers and the queue hold while the client reads nothing.
    let payload = json!({ "blob": "x".repeat(16 * 1024) });
    let bus = app.running().state().bus.clone();
    for i in 0..EVENTS {
        let mut p = payload.clone();
        p["i"] = json!(i);
        bus.publish(BusEvent::new(Topic::user(auth.user.id), "TEST_EVENT", &p).expect("event")).await.expect("publish");
    }
    let metrics = reqwest::get(app.url("/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("copains_gateway_slow_consumers_total 1"), "{metrics}");

    // Now read what made it through, until the connection ends.
    let mut next = 0usize;
    let mut last_seq = 1u64;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("progress") {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("json");
                assert_eq!(v["d"]["i"], next, "in order");
                last_seq = v["s"].as_u64().expect("seq");
                next += 1;
            }
            Some(Ok(Message::Close(c))) => {
                if let Some(c) = c {
                    assert_eq!(u16::from(c.code), close::SLOW_CONSUMER);
                }
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    assert!(next < EVENTS, "the connection was cut before everything was delivered");

    let mut ws = connect(&app).await;
    recv_json(&mut ws).await;
    send(&mut ws, json!({"op": op::RESUME, "d": {"token": token, "session_id": session_id, "seq": last_seq}})).await;
    while next < EVENTS {
        let v = recv_json(&mut ws).await;
        assert_eq!(v["d"]["i"], next, "the rest arrives, in order, once");
        next += 1;
    }
    let resumed = recv_json(&mut ws).await;
    assert_eq!(resumed["t"], "RESUMED");
    app.shutdown().await;
}

async fn shutdown_tells_connected_clients(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let jo = app.client();
    let token = jo.register("jo", "password-jo", None).await.expect("register").tokens.access_token;
    let (mut ws, _) = identified(&app, &token).await;
    let running = app.running.as_ref().expect("running");
    let state = running.state().clone();
    let closing = tokio::spawn(async move { close_code(&mut ws).await });
    let ws_url = app.ws_url.clone();
    let TestApp { running, .. } = app;
    running.expect("running").shutdown().await.expect("shutdown");
    assert_eq!(closing.await.expect("join"), Some(close::SERVER_SHUTDOWN));
    assert!(!state.accepting.load(std::sync::atomic::Ordering::SeqCst));
    assert!(tokio_tungstenite::connect_async(ws_url.as_str()).await.is_err(), "no longer listening");
}

/// Sends a heartbeat and reads until its answer: every frame sent before it was handled.
async fn round_trip(ws: &mut Ws) {
    send(ws, json!({"op": op::HEARTBEAT, "d": null})).await;
    loop {
        if recv_json(ws).await["op"] == op::HEARTBEAT_ACK {
            return;
        }
    }
}

async fn envelopes_are_acknowledged_over_the_gateway(backend: Backend) {
    use copains_client_core::crypto::{E2eeDevice, MemoryBackend, Vault};
    let app = TestApp::spawn(backend).await;
    let mut people = Vec::new();
    for name in ["alice", "bob"] {
        let client = app.client();
        let auth = client.register(name, "a-long-password", None).await.expect("register");
        let vault = Vault::open(Box::new(MemoryBackend::default()), "pass").await.expect("vault");
        let (_device, upload) = E2eeDevice::open(vault, auth.user.id).await.expect("device");
        let upload = upload.expect("new device");
        client.put_keys(&upload).await.expect("keys");
        people.push((client, auth, upload.registration_id.expect("registration id")));
    }
    let (alice, alice_auth, _) = &people[0];
    let (bob, bob_auth, bob_reg) = &people[1];
    let (mut bob_ws, _) = identified(&app, &bob_auth.tokens.access_token).await;
    let (mut alice_ws, _) = identified(&app, &alice_auth.tokens.access_token).await;

    let envelope = json!({"device_id": 1, "registration_id": bob_reg, "kind": 2, "content": "AAECAw=="});
    let _: Value = alice
        .api(reqwest::Method::POST, "/api/v1/messages", Some(&json!({"recipient": bob_auth.user.id, "messages": [envelope]})))
        .await
        .expect("send");
    let pushed = recv_json(&mut bob_ws).await;
    assert_eq!(pushed["t"], event_name::ENVELOPE);
    let id = pushed["d"]["id"].as_str().expect("envelope id").to_owned();
    assert_eq!(app.count("envelopes").await, 1);

    send(&mut alice_ws, json!({"op": op::ACK, "d": {"ids": [id]}})).await;
    round_trip(&mut alice_ws).await;
    assert_eq!(app.count("envelopes").await, 1, "nobody acknowledges another device's envelope");

    send(&mut bob_ws, json!({"op": op::ACK, "d": {"ids": [id, "12345"]}})).await;
    round_trip(&mut bob_ws).await;
    assert_eq!(app.count("envelopes").await, 0, "acknowledged; the unknown id is ignored");
    send(&mut bob_ws, json!({"op": op::ACK, "d": {"ids": [id]}})).await;
    round_trip(&mut bob_ws).await;
    let queue: copains_client_core::messages::Queue =
        bob.api(reqwest::Method::GET, "/api/v1/messages", None::<&()>).await.expect("queue");
    assert!(queue.envelopes.is_empty(), "a repeated ACK is harmless and the connection stays up");
    app.shutdown().await;
}
