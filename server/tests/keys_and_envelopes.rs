//! Device keys and envelopes at the HTTP level: what the server accepts, what it refuses, and
//! that a refused request stores nothing.

mod common;

use common::{Backend, TestApp};
use copains_client_core::bytes::Base64Bytes;
use copains_client_core::client::Client;
use copains_client_core::crypto::{E2eeDevice, MemoryBackend, Vault};
use copains_client_core::gateway::Event;
use copains_client_core::keys::{PreKeyCount, UploadKeys, UserBundles};
use copains_client_core::messages::{kind, Queue, SendMismatch};
use copains_client_core::{ApiErrorBody, ErrorCode, UserId};
use reqwest::StatusCode;
use serde_json::{json, Value};

backend_tests!(
    bad_keys_are_refused_and_store_nothing,
    bundles_hand_out_each_prekey_once_then_the_last_resort,
    bad_envelopes_are_refused_and_store_nothing
);

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.bundle_fetches_burst = 1_000_000;
        c.api.rate_limits.messages_burst = 1_000_000;
    })
    .await
}

async fn account(app: &TestApp, name: &str) -> (Client, UserId, UploadKeys) {
    let client = app.client();
    let auth = client.register(name, "a-long-password", None).await.expect("register");
    let vault = Vault::open(Box::new(MemoryBackend::default()), "pass").await.expect("vault");
    let (_device, upload) = E2eeDevice::open(vault, auth.user.id).await.expect("device");
    (client, auth.user.id, upload.expect("new device keys"))
}

async fn put(app: &TestApp, client: &Client, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .put(app.url("/api/v1/keys"))
        .bearer_auth(client.access_token().await.expect("token"))
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn code(resp: reqwest::Response) -> (StatusCode, ErrorCode) {
    let status = resp.status();
    let body: ApiErrorBody = resp.json().await.expect("error body");
    (status, body.error.code)
}

fn flip(b64: &Value) -> Value {
    use base64::Engine as _;
    let mut bytes = base64::engine::general_purpose::STANDARD.decode(b64.as_str().expect("string")).expect("b64");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
}

async fn bad_keys_are_refused_and_store_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let (alice, _, upload) = account(&app, "alice").await;
    let good = serde_json::to_value(&upload).expect("json");

    let mut v = good.clone();
    v.as_object_mut().expect("object").remove("signed_pre_key");
    assert_eq!(
        code(put(&app, &alice, &v).await).await,
        (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationFailed),
        "incomplete"
    );

    let mut v = good.clone();
    v["signed_pre_key"]["signature"] = flip(&v["signed_pre_key"]["signature"]);
    assert_eq!(
        code(put(&app, &alice, &v).await).await,
        (StatusCode::BAD_REQUEST, ErrorCode::InvalidKeys),
        "bad signed prekey signature"
    );

    let mut v = good.clone();
    v["pq_pre_keys"][3]["signature"] = flip(&v["pq_pre_keys"][3]["signature"]);
    assert_eq!(code(put(&app, &alice, &v).await).await, (StatusCode::BAD_REQUEST, ErrorCode::InvalidKeys), "bad Kyber signature");

    let mut v = good.clone();
    v["identity_key"] = json!("BQID");
    assert_eq!(code(put(&app, &alice, &v).await).await, (StatusCode::BAD_REQUEST, ErrorCode::InvalidKeys), "short identity key");

    let mut v = good.clone();
    v["pq_last_resort_pre_key"]["public_key"] = v["signed_pre_key"]["public_key"].clone();
    assert_eq!(
        code(put(&app, &alice, &v).await).await,
        (StatusCode::BAD_REQUEST, ErrorCode::InvalidKeys),
        "EC key where Kyber goes"
    );

    let mut v = good.clone();
    v["pre_keys"][1]["key_id"] = v["pre_keys"][0]["key_id"].clone();
    assert_eq!(
        code(put(&app, &alice, &v).await).await,
        (StatusCode::BAD_REQUEST, ErrorCode::InvalidKeys),
        "duplicate ids in a batch"
    );

    let mut v = good.clone();
    let extra = v["pre_keys"][0].clone();
    let list = v["pre_keys"].as_array_mut().expect("array");
    let mut more = extra;
    more["key_id"] = json!(100_000);
    list.push(more);
    assert_eq!(
        code(put(&app, &alice, &v).await).await,
        (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationFailed),
        "101 in a batch"
    );

    let mut v = good.clone();
    v["identity_key"] = json!("not base64!");
    assert_eq!(
        code(put(&app, &alice, &v).await).await,
        (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest),
        "malformed base64"
    );

    let mut v = good.clone();
    v["registration_id"] = json!(0);
    assert_eq!(code(put(&app, &alice, &v).await).await, (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationFailed));

    assert_eq!(app.count("device_keys").await, 0, "nothing stored by refused uploads");
    assert_eq!(app.count("one_time_prekeys").await, 0);

    assert_eq!(put(&app, &alice, &good).await.status(), StatusCode::NO_CONTENT);
    let count: PreKeyCount = alice.api(reqwest::Method::GET, "/api/v1/keys/count", None::<&()>).await.expect("count");
    assert_eq!(count, PreKeyCount { pre_keys: 100, pq_pre_keys: 100 });

    assert_eq!(
        code(put(&app, &alice, &good).await).await,
        (StatusCode::CONFLICT, ErrorCode::Conflict),
        "prekey ids already uploaded"
    );
    let (_, _, other) = account(&app, "mallory").await;
    let mut v = serde_json::to_value(&other).expect("json");
    v["pre_keys"] = json!([]);
    v["pq_pre_keys"] = json!([]);
    assert_eq!(code(put(&app, &alice, &v).await).await.0, StatusCode::CONFLICT, "another identity for the same device");
    let count: PreKeyCount = alice.api(reqwest::Method::GET, "/api/v1/keys/count", None::<&()>).await.expect("count");
    assert_eq!(count, PreKeyCount { pre_keys: 100, pq_pre_keys: 100 }, "refused uploads changed nothing");
    app.shutdown().await;
}

async fn bundles_hand_out_each_prekey_once_then_the_last_resort(backend: Backend) {
    let app = spawn(backend).await;
    let (bob, bob_id, mut upload) = account(&app, "bob").await;
    upload.pre_keys.truncate(2);
    upload.pq_pre_keys.truncate(2);
    let last_resort = upload.pq_last_resort_pre_key.as_ref().expect("last resort").key_id;
    bob.put_keys(&upload).await.expect("upload");
    let mut gw = bob.connect_gateway().await.expect("gateway");
    gw.next_event().await.expect("ready");

    let (carol, _, _) = account(&app, "carol").await;
    let fetch = |path: String| {
        let carol = carol.clone();
        async move { carol.api::<UserBundles>(reqwest::Method::GET, &path, None::<&()>).await }
    };
    let mut got = Vec::new();
    for _ in 0..3 {
        let b = fetch(format!("/api/v1/keys/{bob_id}")).await.expect("bundle");
        assert_eq!(b.devices.len(), 1);
        got.push((b.devices[0].pre_key.as_ref().map(|k| k.key_id), b.devices[0].pq_pre_key.key_id));
    }
    assert_eq!(got[0].0, Some(upload.pre_keys[0].key_id));
    assert_eq!(got[1].0, Some(upload.pre_keys[1].key_id));
    assert_eq!(got[2].0, None, "no one-time EC prekey left");
    assert_ne!(got[0].1, got[1].1);
    assert_eq!(got[2].1, last_resort, "the Kyber last-resort key stands in");
    let count: PreKeyCount = bob.api(reqwest::Method::GET, "/api/v1/keys/count", None::<&()>).await.expect("count");
    assert_eq!(count, PreKeyCount { pre_keys: 0, pq_pre_keys: 0 });
    // The device was told it runs low.
    let low = loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), gw.next_event()).await.expect("event");
        if let (_, Event::PreKeysLow(low)) = next.expect("open") {
            break low;
        }
    };
    assert_eq!(low.device_id.0, 1);

    let err = fetch(format!("/api/v1/keys/{}", 12345)).await.expect_err("unknown user");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    let err = fetch("/api/v1/keys/abc".into()).await.expect_err("bad id");
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    let err = fetch(format!("/api/v1/keys/{bob_id}/200")).await.expect_err("bad device");
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    let err = bob
        .api::<UserBundles>(reqwest::Method::GET, &format!("/api/v1/keys/{bob_id}/1"), None::<&()>)
        .await
        .expect_err("own bundle");
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    gw.close().await;
    app.shutdown().await;
}

async fn bad_envelopes_are_refused_and_store_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let (alice, alice_id, keys) = account(&app, "alice").await;
    alice.put_keys(&keys).await.expect("keys");
    let (bob, bob_id, keys) = account(&app, "bob").await;
    bob.put_keys(&keys).await.expect("keys");
    let bob_reg = keys.registration_id.expect("reg");
    let post = |body: Value| {
        let alice = alice.clone();
        let url = app.url("/api/v1/messages");
        async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(alice.access_token().await.expect("token"))
                .json(&body)
                .send()
                .await
                .expect("request")
        }
    };
    let env = |device: u32, reg: u32| json!({"device_id": device, "registration_id": reg, "kind": kind::WHISPER, "content": "AAECAw=="});

    assert_eq!(
        code(post(json!({"recipient": "999", "messages": [env(1, 1)]})).await).await,
        (StatusCode::NOT_FOUND, ErrorCode::NotFound)
    );
    assert_eq!(
        code(post(json!({"recipient": alice_id, "messages": [env(1, 1)]})).await).await.0,
        StatusCode::BAD_REQUEST,
        "to oneself"
    );
    assert_eq!(code(post(json!({"recipient": bob_id, "messages": []})).await).await.0, StatusCode::BAD_REQUEST, "no envelope");
    let resp = post(json!({"recipient": bob_id, "messages": [env(2, bob_reg)]})).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let body: ApiErrorBody = resp.json().await.expect("body");
    assert_eq!(body.error.code, ErrorCode::DeviceMismatch);
    let details: SendMismatch = serde_json::from_value(body.error.details.expect("details")).expect("mismatch");
    assert_eq!(details.recipient.missing_devices.iter().map(|d| d.0).collect::<Vec<_>>(), vec![1]);
    assert_eq!(details.recipient.extra_devices.iter().map(|d| d.0).collect::<Vec<_>>(), vec![2]);
    let resp = post(json!({"recipient": bob_id, "messages": [env(1, bob_reg + 1)]})).await;
    let body: ApiErrorBody = resp.json().await.expect("body");
    let details: SendMismatch = serde_json::from_value(body.error.details.expect("details")).expect("mismatch");
    assert_eq!(details.recipient.stale_devices.iter().map(|d| d.0).collect::<Vec<_>>(), vec![1]);

    // Alice's second device must get a copy too.
    let alice2 = app.client();
    alice2.login("alice", "a-long-password", None).await.expect("login");
    let vault = Vault::open(Box::new(MemoryBackend::default()), "pass").await.expect("vault");
    let (_d, k2) = E2eeDevice::open(vault, alice_id).await.expect("device");
    alice2.put_keys(&k2.expect("keys")).await.expect("keys");
    let resp = post(json!({"recipient": bob_id, "messages": [env(1, bob_reg)]})).await;
    let body: ApiErrorBody = resp.json().await.expect("body");
    let details: SendMismatch = serde_json::from_value(body.error.details.expect("details")).expect("mismatch");
    assert_eq!(details.own.missing_devices.iter().map(|d| d.0).collect::<Vec<_>>(), vec![2]);

    let mut e = env(1, bob_reg);
    e["content"] = json!("%%%");
    assert_eq!(
        code(post(json!({"recipient": bob_id, "messages": [e]})).await).await.0,
        StatusCode::BAD_REQUEST,
        "malformed base64"
    );
    let mut e = env(1, bob_reg);
    e["kind"] = json!(99);
    assert_eq!(code(post(json!({"recipient": bob_id, "messages": [e]})).await).await.0, StatusCode::BAD_REQUEST, "unknown kind");
    let mut e = env(1, bob_reg);
    use base64::Engine as _;
    e["content"] = json!(base64::engine::general_purpose::STANDARD.encode(vec![0u8; 64 * 1024 + 1]));
    assert_eq!(code(post(json!({"recipient": bob_id, "messages": [e]})).await).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        code(post(json!({"recipient": bob_id, "messages": [env(1, bob_reg), env(1, bob_reg)]})).await).await.0,
        StatusCode::BAD_REQUEST,
        "two for one device"
    );
    assert_eq!(app.count("envelopes").await, 0, "refused sends stored nothing");

    // A correct send: one for Bob's device, one for Alice's other device.
    let stale = post(json!({"recipient": bob_id, "messages": [env(1, bob_reg)], "sync_messages": [env(2, 0)]})).await;
    assert_eq!(
        code(stale).await,
        (StatusCode::CONFLICT, ErrorCode::DeviceMismatch),
        "wrong registration id for alice's device 2"
    );
    assert_eq!(app.count("envelopes").await, 0);
    let b: UserBundles =
        alice.api(reqwest::Method::GET, &format!("/api/v1/keys/{alice_id}/2"), None::<&()>).await.expect("bundle");
    let sync_reg = b.devices[0].registration_id;
    let ok = post(json!({"recipient": bob_id, "messages": [env(1, bob_reg)], "sync_messages": [env(2, sync_reg)]})).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let queue: Queue = bob.api(reqwest::Method::GET, "/api/v1/messages", None::<&()>).await.expect("queue");
    assert_eq!(queue.envelopes.len(), 1);
    let envelope = &queue.envelopes[0];
    assert_eq!(
        (envelope.sender, envelope.sender_device.0, envelope.content.clone()),
        (alice_id, 1, Base64Bytes(vec![0, 1, 2, 3]))
    );

    let after: Queue =
        bob.api(reqwest::Method::GET, &format!("/api/v1/messages?after={}", envelope.id), None::<&()>).await.expect("page");
    assert!(after.envelopes.is_empty() && !after.more, "nothing after the last envelope");
    let err = bob.api::<Queue>(reqwest::Method::GET, "/api/v1/messages?after=xyz", None::<&()>).await.expect_err("bad cursor");
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    let err = alice.ack(envelope.id).await.expect_err("someone else's envelope");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    bob.ack(envelope.id).await.expect("ack");
    let err = bob.ack(envelope.id).await.expect_err("replayed ack");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    let err = bob.api::<Queue>(reqwest::Method::GET, "/api/v1/messages?limit=0", None::<&()>).await.expect_err("limit");
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    let resp = reqwest::Client::new()
        .delete(app.url("/api/v1/messages/xyz"))
        .bearer_auth(bob.access_token().await.expect("token"))
        .send()
        .await
        .expect("req");
    assert_eq!(code(resp).await.0, StatusCode::BAD_REQUEST);
    app.shutdown().await;
}
