//! Server-side resource bounds through the real server: gateway sessions per device and per
//! user, replay buffers in bytes, envelope queues (count, bytes, expiry), metrics labels, rate
//! limits on the gateway and on the remaining REST routes, the client address behind trusted
//! proxies, and bundle fetches that leave the caller's own prekeys alone.

mod common;

use base64::Engine as _;
use common::ws::{close_code, recv_json, send, Ws};
use common::{Backend, TestApp};
use copains_client_core::api::{Patch, UpdateProfile};
use copains_client_core::client::Client;
use copains_client_core::crypto::{E2eeDevice, MemoryBackend, Vault};
use copains_client_core::gateway::{close, event_name, op};
use copains_client_core::keys::{PreKeyCount, UploadKeys, UserBundles};
use copains_client_core::messages::{kind, Queue, ENVELOPE_MAX_BYTES};
use copains_client_core::{ApiErrorBody, DeviceId, ErrorCode, UserId};
use reqwest::StatusCode;
use serde_json::{json, Value};

backend_tests!(
    identify_past_the_device_cap_replaces_the_oldest_session,
    identify_past_the_user_cap_replaces_the_oldest_session_of_any_device,
    resume_needing_frames_past_the_byte_cap_asks_for_identify,
    a_send_to_a_full_queue_is_refused_whole,
    the_queue_byte_cap_counts_ciphertext,
    queue_pages_stop_at_four_mebibytes,
    housekeeping_deletes_envelopes_past_their_expiry,
    unknown_methods_do_not_create_metric_labels,
    identify_and_resume_are_rate_limited_per_user,
    identify_is_rate_limited_per_address_before_the_token_is_checked,
    gateway_ack_frames_are_rate_limited,
    queue_reads_and_deletes_are_rate_limited,
    forwarded_addresses_count_only_from_trusted_proxies,
    fetching_your_own_bundles_leaves_your_prekeys_alone,
);

async fn connect(app: &TestApp) -> Ws {
    let mut ws = tokio_tungstenite::connect_async(app.ws_url.as_str()).await.expect("connect").0;
    assert_eq!(recv_json(&mut ws).await["op"], op::HELLO);
    ws
}

/// A connection that went through IDENTIFY; returns it with its gateway session id.
async fn identified(app: &TestApp, token: &str) -> (Ws, String) {
    let mut ws = connect(app).await;
    send(&mut ws, json!({"op": op::IDENTIFY, "d": {"token": token}})).await;
    let ready = recv_json(&mut ws).await;
    assert_eq!(ready["t"], event_name::READY, "{ready}");
    let session = ready["d"]["session_id"].as_str().expect("session id").to_owned();
    (ws, session)
}

/// The connection is still served: a heartbeat is answered.
async fn assert_alive(ws: &mut Ws, what: &str) {
    send(ws, json!({"op": op::HEARTBEAT, "d": null})).await;
    loop {
        let frame = recv_json(ws).await;
        if frame["op"] == op::HEARTBEAT_ACK {
            return;
        }
        assert_eq!(frame["op"], op::DISPATCH, "{what}: unexpected {frame}");
    }
}

async fn bearer_of(client: &Client) -> String {
    client.access_token().await.expect("token")
}

async fn error_of(resp: reqwest::Response) -> (StatusCode, ErrorCode, Option<Value>) {
    let status = resp.status();
    let body: ApiErrorBody = resp.json().await.expect("error body");
    (status, body.error.code, body.error.details)
}

async fn identify_past_the_device_cap_replaces_the_oldest_session(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.gateway.max_sessions_per_device = 2).await;
    let alice = app.client();
    alice.register("alice", "password-alice", None).await.expect("register");
    let token = bearer_of(&alice).await;
    let (mut first, first_session) = identified(&app, &token).await;
    let (mut second, _) = identified(&app, &token).await;
    assert_alive(&mut first, "two sessions are within the cap").await;
    let (mut third, _) = identified(&app, &token).await;
    assert_eq!(close_code(&mut first).await, Some(close::SESSION_REPLACED), "the oldest session gives way");
    assert!(!close::is_resumable(close::SESSION_REPLACED) && !close::should_reconnect(close::SESSION_REPLACED));
    assert_alive(&mut second, "the second session stays").await;
    assert_alive(&mut third, "the new session stays").await;
    // The replaced session is gone, not waiting for a RESUME.
    let mut again = connect(&app).await;
    send(&mut again, json!({"op": op::RESUME, "d": {"token": token, "session_id": first_session, "seq": 1}})).await;
    let answer = recv_json(&mut again).await;
    assert_eq!(answer["op"], op::INVALID_SESSION, "{answer}");
    app.shutdown().await;
}

async fn identify_past_the_user_cap_replaces_the_oldest_session_of_any_device(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.gateway.max_sessions_per_device = 5;
        c.gateway.max_sessions_per_user = 2;
    })
    .await;
    let laptop = app.client();
    laptop.register("bob", "password-bob", None).await.expect("register");
    let phone = app.client();
    phone.login("bob", "password-bob", None).await.expect("login");
    let eve = app.client();
    eve.register("eve", "password-eve", None).await.expect("register");
    let (mut on_laptop, _) = identified(&app, &bearer_of(&laptop).await).await;
    let (mut eve_ws, _) = identified(&app, &bearer_of(&eve).await).await;
    let (mut phone_1, _) = identified(&app, &bearer_of(&phone).await).await;
    assert_alive(&mut on_laptop, "two sessions for bob are within the cap").await;
    let (mut phone_2, _) = identified(&app, &bearer_of(&phone).await).await;
    assert_eq!(close_code(&mut on_laptop).await, Some(close::SESSION_REPLACED), "bob's oldest session, on another device");
    assert_alive(&mut phone_1, "bob's second session stays").await;
    assert_alive(&mut phone_2, "bob's new session stays").await;
    assert_alive(&mut eve_ws, "another user's sessions do not count").await;
    app.shutdown().await;
}

async fn resume_needing_frames_past_the_byte_cap_asks_for_identify(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.gateway.replay_buffer_bytes = 2048).await;
    let carol = app.client();
    carol.register("carol", "password-carol", None).await.expect("register");
    let token = bearer_of(&carol).await;
    let update = |i: usize| UpdateProfile { display_name: Patch::Keep, status_text: Patch::Set(format!("{i:0>150}")) };

    // Within the cap: a drop loses nothing.
    let (ws, session) = identified(&app, &token).await;
    drop(ws);
    for i in 0..2 {
        carol.update_profile(&update(i)).await.expect("update");
    }
    let mut ws = connect(&app).await;
    send(&mut ws, json!({"op": op::RESUME, "d": {"token": token, "session_id": session, "seq": 1}})).await;
    for seq in 2..=3 {
        let event = recv_json(&mut ws).await;
        assert_eq!((event["s"].as_u64(), event["t"].as_str()), (Some(seq), Some(event_name::USER_UPDATE)));
    }
    assert_eq!(recv_json(&mut ws).await["t"], event_name::RESUMED);
    drop(ws);

    // Ten updates of about 300 bytes each are more than 2 KiB: the first missed ones were dropped.
    for i in 0..10 {
        carol.update_profile(&update(i)).await.expect("update");
    }
    let mut ws = connect(&app).await;
    send(&mut ws, json!({"op": op::RESUME, "d": {"token": token, "session_id": session, "seq": 4}})).await;
    let answer = recv_json(&mut ws).await;
    assert_eq!(answer["op"], op::INVALID_SESSION, "{answer}");
    app.shutdown().await;
}

/// An account whose device has uploaded its keys; returns the client, its id and the upload.
async fn with_keys(app: &TestApp, name: &str) -> (Client, UserId, UploadKeys) {
    let client = app.client();
    let auth = client.register(name, "a-long-password", None).await.expect("register");
    let keys = device_keys(auth.user.id).await;
    client.put_keys(&keys).await.expect("keys");
    (client, auth.user.id, keys)
}

async fn device_keys(user: UserId) -> UploadKeys {
    let vault = Vault::open(Box::new(MemoryBackend::default()), "pass").await.expect("vault");
    let (_device, upload) = E2eeDevice::open(vault, user).await.expect("device");
    upload.expect("new device keys")
}

fn envelope(device: u32, registration_id: u32, content: &[u8]) -> Value {
    json!({
        "device_id": device,
        "registration_id": registration_id,
        "kind": kind::WHISPER,
        "content": base64::engine::general_purpose::STANDARD.encode(content),
    })
}

async fn post_message(app: &TestApp, from: &Client, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url("/api/v1/messages"))
        .bearer_auth(bearer_of(from).await)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn a_send_to_a_full_queue_is_refused_whole(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.api.limits.queue_max_envelopes = 2).await;
    let (alice, _, _) = with_keys(&app, "alice").await;
    let (bob_laptop, bob_id, laptop_keys) = with_keys(&app, "bob").await;
    let bob_phone = app.client();
    bob_phone.login("bob", "a-long-password", None).await.expect("login");
    let phone_keys = device_keys(bob_id).await;
    bob_phone.put_keys(&phone_keys).await.expect("keys");
    let (laptop_reg, phone_reg) = (laptop_keys.registration_id.expect("reg"), phone_keys.registration_id.expect("reg"));
    let to_bob = json!({"recipient": bob_id, "messages": [envelope(1, laptop_reg, b"hello"), envelope(2, phone_reg, b"hello")]});

    for _ in 0..2 {
        assert_eq!(post_message(&app, &alice, &to_bob).await.status(), StatusCode::OK);
    }
    // The phone reads and acknowledges its two; the laptop stays offline with two queued.
    let queue: Queue = bob_phone.api(reqwest::Method::GET, "/api/v1/messages", None::<&()>).await.expect("queue");
    for e in &queue.envelopes {
        bob_phone.ack(e.id).await.expect("ack");
    }
    assert_eq!(app.count("envelopes").await, 2);

    let (status, code, details) = error_of(post_message(&app, &alice, &to_bob).await).await;
    assert_eq!((status, code), (StatusCode::CONFLICT, ErrorCode::QueueFull));
    assert_eq!(details, Some(json!({"devices": [{"user_id": bob_id.to_string(), "device_id": 1}]})), "only the laptop is full");
    assert_eq!(app.count("envelopes").await, 2, "nothing of the refused send was queued, not even for the phone");
    let store = &app.running().state().store;
    assert_eq!(store.queue_size(bob_id, DeviceId(1)).await.expect("size"), (2, 10));
    assert_eq!(store.queue_size(bob_id, DeviceId(2)).await.expect("size"), (0, 0), "counts rolled back with the refusal");
    let phone_queue: Queue = bob_phone.api(reqwest::Method::GET, "/api/v1/messages", None::<&()>).await.expect("queue");
    assert!(phone_queue.envelopes.is_empty());

    // Once the laptop acknowledges one, the send goes through.
    let laptop_queue: Queue = bob_laptop.api(reqwest::Method::GET, "/api/v1/messages", None::<&()>).await.expect("queue");
    assert_eq!(laptop_queue.envelopes.len(), 2);
    bob_laptop.ack(laptop_queue.envelopes[0].id).await.expect("ack");
    assert_eq!(post_message(&app, &alice, &to_bob).await.status(), StatusCode::OK);
    assert_eq!(app.count("envelopes").await, 3);
    app.shutdown().await;
}

async fn the_queue_byte_cap_counts_ciphertext(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.api.limits.queue_max_bytes = 3000).await;
    let (alice, _, _) = with_keys(&app, "alice").await;
    let (bob, bob_id, keys) = with_keys(&app, "bob").await;
    let reg = keys.registration_id.expect("reg");
    let of_size = |n: usize| json!({"recipient": bob_id, "messages": [envelope(1, reg, &vec![7u8; n])]});
    for _ in 0..2 {
        assert_eq!(post_message(&app, &alice, &of_size(1000)).await.status(), StatusCode::OK);
    }
    let (status, code, _) = error_of(post_message(&app, &alice, &of_size(1001)).await).await;
    assert_eq!((status, code), (StatusCode::CONFLICT, ErrorCode::QueueFull), "3001 bytes is one too many");
    assert_eq!(post_message(&app, &alice, &of_size(1000)).await.status(), StatusCode::OK, "3000 bytes fit exactly");
    assert_eq!(app.count("envelopes").await, 3);
    let store = &app.running().state().store;
    assert_eq!(store.queue_size(bob_id, DeviceId(1)).await.expect("size"), (3, 3000));
    // Acknowledging over the gateway frees the bytes too.
    let queue: Queue = bob.api(reqwest::Method::GET, "/api/v1/messages", None::<&()>).await.expect("queue");
    let (mut ws, _) = identified(&app, &bearer_of(&bob).await).await;
    send(&mut ws, json!({"op": op::ACK, "d": {"ids": [queue.envelopes[0].id.to_string()]}})).await;
    assert_alive(&mut ws, "ACK is not answered; the heartbeat after it is").await;
    assert_eq!(post_message(&app, &alice, &of_size(1000)).await.status(), StatusCode::OK);
    let (status, code, _) = error_of(post_message(&app, &alice, &of_size(1)).await).await;
    assert_eq!((status, code), (StatusCode::CONFLICT, ErrorCode::QueueFull));
    assert_eq!(store.queue_size(bob_id, DeviceId(1)).await.expect("size"), (3, 3000));
    app.shutdown().await;
}

async fn queue_pages_stop_at_four_mebibytes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, _, _) = with_keys(&app, "alice").await;
    let (bob, bob_id, keys) = with_keys(&app, "bob").await;
    let reg = keys.registration_id.expect("reg");
    let largest = vec![1u8; ENVELOPE_MAX_BYTES];
    for _ in 0..70 {
        let body = json!({"recipient": bob_id, "messages": [envelope(1, reg, &largest)]});
        assert_eq!(post_message(&app, &alice, &body).await.status(), StatusCode::OK);
    }
    let first: Queue = bob.api(reqwest::Method::GET, "/api/v1/messages?limit=500", None::<&()>).await.expect("page");
    assert_eq!(first.envelopes.len(), 64, "64 envelopes of 64 KiB make 4 MiB");
    assert!(first.more);
    let last = first.envelopes.last().expect("last").id;
    let rest: Queue =
        bob.api(reqwest::Method::GET, &format!("/api/v1/messages?limit=500&after={last}"), None::<&()>).await.expect("page");
    assert_eq!((rest.envelopes.len(), rest.more), (6, false));
    let small: Queue = bob.api(reqwest::Method::GET, "/api/v1/messages?limit=10", None::<&()>).await.expect("page");
    assert_eq!((small.envelopes.len(), small.more), (10, true), "the count limit still applies");
    app.shutdown().await;
}

async fn housekeeping_deletes_envelopes_past_their_expiry(backend: Backend) {
    const DAY_MS: i64 = 24 * 3600 * 1000;
    let app = TestApp::spawn_with(backend, |c| {
        c.api.limits.queue_max_envelopes = 1;
        // Sessions outlive the envelopes here, so that only the envelope expiry is at work.
        c.api.auth.refresh_token_ttl_secs = 90 * 24 * 3600;
    })
    .await;
    let (alice, _, _) = with_keys(&app, "alice").await;
    let (bob, bob_id, keys) = with_keys(&app, "bob").await;
    let to_bob = json!({"recipient": bob_id, "messages": [envelope(1, keys.registration_id.expect("reg"), b"old")]});
    let sent_at = copains_backend::store::now_ms();
    assert_eq!(post_message(&app, &alice, &to_bob).await.status(), StatusCode::OK);
    assert_eq!(error_of(post_message(&app, &alice, &to_bob).await).await.1, ErrorCode::QueueFull);

    let state = app.running().state();
    copains_backend::housekeep(state, sent_at + 29 * DAY_MS).await;
    assert_eq!(app.count("envelopes").await, 1, "29 days old: kept");
    assert_eq!(app.count("sessions").await, 2, "sessions untouched");
    copains_backend::housekeep(state, sent_at + 31 * DAY_MS).await;
    assert_eq!(app.count("envelopes").await, 0, "31 days old: deleted");
    assert_eq!(app.count("sessions").await, 2);
    assert_eq!(state.store.queue_size(bob_id, DeviceId(1)).await.expect("size"), (0, 0), "the queue's counts follow");

    // The queue's count went down with it: Bob's device can receive again.
    let fresh = json!({"recipient": bob_id, "messages": [envelope(1, keys.registration_id.expect("reg"), b"new")]});
    assert_eq!(post_message(&app, &alice, &fresh).await.status(), StatusCode::OK);
    let queue: Queue = bob.api(reqwest::Method::GET, "/api/v1/messages", None::<&()>).await.expect("queue");
    assert_eq!(queue.envelopes.iter().map(|e| e.content.0.clone()).collect::<Vec<_>>(), vec![b"new".to_vec()]);
    app.shutdown().await;
}

async fn unknown_methods_do_not_create_metric_labels(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let http = reqwest::Client::new();
    let foobar = reqwest::Method::from_bytes(b"FOOBAR").expect("method");
    for path in ["/api/v1/users/@me", "/no/such/route"] {
        let resp = http.request(foobar.clone(), app.url(path)).send().await.expect("request");
        assert!(resp.status().is_client_error(), "{path}: {}", resp.status());
    }
    let get = http.get(app.url("/healthz")).send().await.expect("request");
    assert_eq!(get.status(), StatusCode::OK);
    let metrics = http.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(!metrics.contains("FOOBAR"), "{metrics}");
    assert!(metrics.contains("method=\"other\""), "unknown methods are counted as other: {metrics}");
    assert!(metrics.contains("method=\"GET\""), "{metrics}");
    app.shutdown().await;
}

async fn identify_and_resume_are_rate_limited_per_user(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.identify_burst = 2;
        c.api.rate_limits.identify_per_minute = 1;
    })
    .await;
    let dave = app.client();
    dave.register("dave", "password-dave", None).await.expect("register");
    let erin = app.client();
    erin.register("erin", "password-erin", None).await.expect("register");
    let token = bearer_of(&dave).await;
    let (ws, session) = identified(&app, &token).await;
    drop(ws);
    // A RESUME counts like an IDENTIFY.
    let mut resumed = connect(&app).await;
    send(&mut resumed, json!({"op": op::RESUME, "d": {"token": token, "session_id": session, "seq": 1}})).await;
    assert_eq!(recv_json(&mut resumed).await["t"], event_name::RESUMED);
    let mut third = connect(&app).await;
    send(&mut third, json!({"op": op::IDENTIFY, "d": {"token": token}})).await;
    assert_eq!(close_code(&mut third).await, Some(close::RATE_LIMITED));
    let mut fourth = connect(&app).await;
    send(&mut fourth, json!({"op": op::RESUME, "d": {"token": token, "session_id": session, "seq": 1}})).await;
    assert_eq!(close_code(&mut fourth).await, Some(close::RATE_LIMITED));
    assert!(close::is_resumable(close::RATE_LIMITED) && close::should_reconnect(close::RATE_LIMITED));
    assert_alive(&mut resumed, "the limit refuses new attempts; the resumed connection stays").await;
    // Another user has a budget of their own.
    identified(&app, &bearer_of(&erin).await).await;
    app.shutdown().await;
}

async fn identify_is_rate_limited_per_address_before_the_token_is_checked(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.identify_per_ip_burst = 2;
        c.api.rate_limits.identify_per_ip_per_minute = 1;
    })
    .await;
    let frank = app.client();
    frank.register("frank", "password-frank", None).await.expect("register");
    let grace = app.client();
    grace.register("grace", "password-grace", None).await.expect("register");
    let (mut first, _) = identified(&app, &bearer_of(&frank).await).await;
    let mut bad = connect(&app).await;
    send(&mut bad, json!({"op": op::IDENTIFY, "d": {"token": "not-a-token"}})).await;
    assert_eq!(close_code(&mut bad).await, Some(close::AUTHENTICATION_FAILED), "within the budget, the token is checked");
    // The address has used its budget: even a valid token of another user is refused, and a bad
    // one is refused without being checked.
    let mut third = connect(&app).await;
    send(&mut third, json!({"op": op::IDENTIFY, "d": {"token": bearer_of(&grace).await}})).await;
    assert_eq!(close_code(&mut third).await, Some(close::RATE_LIMITED));
    let mut fourth = connect(&app).await;
    send(&mut fourth, json!({"op": op::IDENTIFY, "d": {"token": "not-a-token"}})).await;
    assert_eq!(close_code(&mut fourth).await, Some(close::RATE_LIMITED));
    assert_alive(&mut first, "established connections are not affected").await;
    app.shutdown().await;
}

async fn gateway_ack_frames_are_rate_limited(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.gateway_acks_burst = 2;
        c.api.rate_limits.gateway_acks_per_minute = 1;
    })
    .await;
    let heidi = app.client();
    heidi.register("heidi", "password-heidi", None).await.expect("register");
    let (mut ws, _) = identified(&app, &bearer_of(&heidi).await).await;
    for _ in 0..2 {
        send(&mut ws, json!({"op": op::ACK, "d": {"ids": ["12345"]}})).await;
    }
    assert_alive(&mut ws, "two ACK frames are within the budget").await;
    send(&mut ws, json!({"op": op::ACK, "d": {"ids": ["12345"]}})).await;
    assert_eq!(close_code(&mut ws).await, Some(close::RATE_LIMITED));
    app.shutdown().await;
}

async fn assert_rate_limited(resp: reqwest::Response, what: &str) {
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let (status, code, _) = error_of(resp).await;
    assert_eq!((status, code), (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited), "{what}");
    assert!(retry_after.is_some_and(|s| s >= 1), "{what}: Retry-After in seconds");
}

async fn queue_reads_and_deletes_are_rate_limited(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.queue_reads_burst = 2;
        c.api.rate_limits.queue_reads_per_minute = 1;
        c.api.rate_limits.deletes_burst = 2;
        c.api.rate_limits.deletes_per_minute = 1;
    })
    .await;
    let ivan = app.client();
    ivan.register("ivan", "password-ivan", None).await.expect("register");
    let http = reqwest::Client::new();
    let bearer = bearer_of(&ivan).await;
    for _ in 0..2 {
        let resp = http.get(app.url("/api/v1/messages")).bearer_auth(&bearer).send().await.expect("request");
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert_rate_limited(
        http.get(app.url("/api/v1/messages")).bearer_auth(&bearer).send().await.expect("request"),
        "GET messages",
    )
    .await;

    // Every DELETE route draws on one budget per user.
    let resp = http.delete(app.url("/api/v1/messages/12345")).bearer_auth(&bearer).send().await.expect("request");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = http.delete(app.url("/api/v1/users/@me/devices/99")).bearer_auth(&bearer).send().await.expect("request");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    for path in ["/api/v1/messages/12345", "/api/v1/users/@me/sessions/12345", "/api/v1/users/@me/devices/99"] {
        let resp = http.delete(app.url(path)).bearer_auth(&bearer).send().await.expect("request");
        assert_rate_limited(resp, path).await;
    }
    app.shutdown().await;
}

async fn login_status(app: &TestApp, forwarded_for: &str) -> StatusCode {
    reqwest::Client::new()
        .post(app.url("/api/v1/auth/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"username": "nobody", "password": "wrong-password"}))
        .send()
        .await
        .expect("request")
        .status()
}

async fn forwarded_addresses_count_only_from_trusted_proxies(backend: Backend) {
    let tight = |c: &mut copains::Config| {
        c.api.rate_limits.auth_burst = 1;
        c.api.rate_limits.auth_per_minute = 1;
    };
    // Behind a trusted proxy (the test client's own address), each forwarded client has its
    // own budget, and what the client itself put left of it does not count.
    let app = TestApp::spawn_with(backend, |c| {
        tight(c);
        c.api.trusted_proxies = vec!["127.0.0.1".parse().expect("block")];
    })
    .await;
    assert_eq!(login_status(&app, "203.0.113.5").await, StatusCode::UNAUTHORIZED);
    assert_eq!(login_status(&app, "203.0.113.5").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login_status(&app, "198.51.100.1, 203.0.113.5").await, StatusCode::TOO_MANY_REQUESTS, "forged entry ignored");
    assert_eq!(login_status(&app, "203.0.113.6").await, StatusCode::UNAUTHORIZED, "another client");
    app.shutdown().await;

    // Without trusted proxies the header is ignored: changing it gains nothing.
    let app = TestApp::spawn_with(backend, tight).await;
    assert_eq!(login_status(&app, "203.0.113.5").await, StatusCode::UNAUTHORIZED);
    assert_eq!(login_status(&app, "203.0.113.6").await, StatusCode::TOO_MANY_REQUESTS);
    app.shutdown().await;
}

async fn fetching_your_own_bundles_leaves_your_prekeys_alone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (laptop, judy_id, _) = with_keys(&app, "judy").await;
    let phone = app.client();
    phone.login("judy", "a-long-password", None).await.expect("login");
    phone.put_keys(&device_keys(judy_id).await).await.expect("keys");
    let count = |client: &Client| {
        let client = client.clone();
        async move { client.api::<PreKeyCount>(reqwest::Method::GET, "/api/v1/keys/count", None::<&()>).await.expect("count") }
    };
    let (laptop_before, phone_before) = (count(&laptop).await, count(&phone).await);
    assert!(laptop_before.pre_keys > 0 && laptop_before.pq_pre_keys > 0);

    let bundles: UserBundles =
        laptop.api(reqwest::Method::GET, &format!("/api/v1/keys/{judy_id}"), None::<&()>).await.expect("own bundles");
    assert_eq!(bundles.devices.iter().map(|d| d.device_id.0).collect::<Vec<_>>(), vec![2], "only the other device");
    assert!(bundles.devices[0].pre_key.is_some());
    assert_eq!(count(&laptop).await, laptop_before, "the caller's own one-time prekeys are untouched");
    let phone_after = count(&phone).await;
    assert_eq!(
        (phone_after.pre_keys, phone_after.pq_pre_keys),
        (phone_before.pre_keys - 1, phone_before.pq_pre_keys - 1),
        "the other device gave one of each"
    );
    app.shutdown().await;
}
