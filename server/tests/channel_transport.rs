//! The transport of end-to-end encrypted channel messages through the real server: a message
//! is stored once and reaches exactly the sessions of those who may read the channel, its key
//! distributions reach exactly their devices and before it, a send made for an outdated view
//! of the recipient devices is refused with the current ones and writes nothing, history starts
//! at one's join, and edits, deletes, reactions and pins obey the permissions. The server never
//! parses a ciphertext: these tests send opaque bytes.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::ws::{identified, recv_json, Ws};
use common::{Backend, TestApp};
use copains_client_core::api::AuthResponse;
use copains_client_core::channel_messages::{
    ChannelMessage, ChannelRecipients, ClaimedBundles, DeviceLists, Reaction, RecipientDevice, SenderKeysSent,
    CIPHERTEXT_MAX_BYTES, CLAIM_MAX,
};
use copains_client_core::crypto::{E2eeDevice, MemoryBackend, Vault};
use copains_client_core::gateway::event_name;
use copains_client_core::keys::PreKeyCount;
use copains_client_core::messages::kind;
use copains_client_core::servers::{Channel, Invite, Permissions, Role, Server, ServerState};
use copains_client_core::{ApiErrorBody, ChannelId, DeviceId, ErrorCode, MessageId, ServerId, UserId};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

backend_tests!(
    a_message_reaches_exactly_its_readers_after_its_distributions,
    the_ciphertext_is_stored_once_whatever_the_number_of_readers,
    a_send_on_an_old_view_is_refused_with_the_current_recipients,
    distributions_must_go_to_current_recipient_devices,
    bad_sends_are_refused_and_write_nothing,
    a_full_device_queue_refuses_the_whole_send,
    history_pages_before_after_around_and_in_threads,
    newcomers_get_no_history_from_before_they_joined,
    edits_and_deletes_by_standing,
    reactions_by_standing,
    pins_need_manage_messages,
    no_message_is_reached_through_another_channel,
    group_dm_messages_reach_their_members,
    linking_a_device_moves_the_view_and_a_pending_one_does_not,
    key_distributions_alone_go_to_current_recipient_devices_only,
    bundles_are_claimed_through_a_channel_for_its_recipient_devices_only,
    channel_key_claims_are_rate_limited_by_devices,
    a_message_is_fetched_by_id_thread_or_not,
);

const PASSWORD: &str = "a-long-password";

async fn spawn(backend: Backend) -> TestApp {
    spawn_with(backend, |_| {}).await
}

async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut copains::Config)) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.messages_burst = 1_000_000;
        c.api.rate_limits.messages_per_minute = 1_000_000;
        c.api.rate_limits.deletes_burst = 1_000_000;
        c.api.rate_limits.queue_reads_burst = 1_000_000;
        tweak(c);
    })
    .await
}

/// A user with one device that has keys (so it receives channel messages).
#[derive(Clone)]
struct U {
    id: UserId,
    device: DeviceId,
    registration_id: u32,
    token: String,
}

impl U {
    fn recipient(&self) -> RecipientDevice {
        RecipientDevice { user_id: self.id, device_id: self.device, registration_id: self.registration_id }
    }
}

async fn with_keys(app: &TestApp, auth: AuthResponse, client: &copains_client_core::client::Client) -> U {
    let vault = Vault::open(Box::new(MemoryBackend::default()), "pass").await.expect("vault");
    let (_device, upload) = E2eeDevice::open(vault, auth.user.id).await.expect("device");
    let upload = upload.expect("new device keys");
    client.put_keys(&upload).await.expect("keys");
    let _ = app;
    U {
        id: auth.user.id,
        device: auth.device_id,
        registration_id: upload.registration_id.expect("registration id"),
        token: auth.tokens.access_token,
    }
}

async fn register(app: &TestApp, name: &str) -> U {
    let client = app.client();
    let auth = client.register(name, PASSWORD, Some("first")).await.expect("register");
    with_keys(app, auth, &client).await
}

/// Another device of `name`, with keys (the user has no signed device list: it receives).
async fn another_device(app: &TestApp, name: &str) -> U {
    let client = app.client();
    let auth = client.login(name, PASSWORD, Some("second")).await.expect("login");
    with_keys(app, auth, &client).await
}

async fn call(app: &TestApp, u: &U, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = reqwest::Client::new().request(method, app.url(path)).bearer_auth(&u.token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.expect("request")
}

/// The body of a call that must answer `expected`.
async fn ok<T: DeserializeOwned>(app: &TestApp, u: &U, method: Method, path: &str, body: Option<Value>, expected: u16) -> T {
    let resp = call(app, u, method.clone(), path, body).await;
    let got = resp.status();
    let text = resp.text().await.expect("body");
    assert_eq!(got.as_u16(), expected, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
}

/// A call that must answer `expected` with no body.
async fn done(app: &TestApp, u: &U, method: Method, path: &str, body: Option<Value>, expected: u16) {
    let resp = call(app, u, method.clone(), path, body).await;
    let got = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    assert_eq!(got, expected, "{method} {path}: {text}");
}

/// Status, code and details of a refused call.
async fn refused(app: &TestApp, u: &U, method: Method, path: &str, body: Option<Value>) -> (u16, ErrorCode, Option<Value>) {
    let resp = call(app, u, method, path, body).await;
    let got = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body: ApiErrorBody = serde_json::from_str(&text).unwrap_or_else(|e| panic!("error body {e}: {text}"));
    (got, body.error.code, body.error.details)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Opaque "ciphertext" bytes, distinct per `tag`.
fn ciphertext(tag: &str) -> Vec<u8> {
    let mut bytes = b"\x03sender-key:".to_vec();
    bytes.extend_from_slice(tag.as_bytes());
    bytes
}

fn distribution(to: &U, tag: &str) -> Value {
    json!({
        "user_id": to.id, "device_id": to.device.0, "registration_id": to.registration_id,
        "kind": kind::WHISPER, "content": b64(format!("skdm for {tag}").as_bytes()),
    })
}

fn send_body(view: i64, tag: &str, distributions: Vec<Value>) -> Value {
    json!({ "ciphertext": b64(&ciphertext(tag)), "view": view, "distributions": distributions })
}

async fn recipients(app: &TestApp, u: &U, channel: ChannelId) -> ChannelRecipients {
    ok(app, u, Method::GET, &format!("/api/v1/channels/{channel}/recipients"), None, 200).await
}

/// Sends `tag` on the current view.
async fn send(app: &TestApp, u: &U, channel: ChannelId, tag: &str) -> ChannelMessage {
    let view = recipients(app, u, channel).await.view;
    ok(app, u, Method::POST, &format!("/api/v1/channels/{channel}/messages"), Some(send_body(view, tag, vec![])), 201).await
}

async fn reply(app: &TestApp, u: &U, channel: ChannelId, thread: MessageId, tag: &str) -> ChannelMessage {
    let view = recipients(app, u, channel).await.view;
    let mut body = send_body(view, tag, vec![]);
    body["thread_id"] = json!(thread);
    ok(app, u, Method::POST, &format!("/api/v1/channels/{channel}/messages"), Some(body), 201).await
}

async fn history(app: &TestApp, u: &U, channel: ChannelId, query: &str) -> Vec<ChannelMessage> {
    ok(app, u, Method::GET, &format!("/api/v1/channels/{channel}/messages{query}"), None, 200).await
}

async fn count(app: &TestApp, table: &str) -> i64 {
    app.count(table).await
}

/// A server owned by `owner`, its first text channel, and an invite.
struct Community {
    server: ServerId,
    general: ChannelId,
    invite: String,
}

async fn community(app: &TestApp, owner: &U) -> Community {
    let server: Server = ok(app, owner, Method::POST, "/api/v1/servers", Some(json!({"name": "Les Copains"})), 201).await;
    let state: ServerState = ok(app, owner, Method::GET, &format!("/api/v1/servers/{}/state", server.id), None, 200).await;
    let general =
        state.channels.iter().find(|c| c.kind == copains_client_core::servers::ChannelKind::Text).expect("a text channel").id;
    let invite: Invite =
        ok(app, owner, Method::POST, &format!("/api/v1/servers/{}/invites", server.id), Some(json!({})), 201).await;
    Community { server: server.id, general, invite: invite.code }
}

async fn join(app: &TestApp, u: &U, c: &Community) {
    let _: Server = ok(app, u, Method::POST, &format!("/api/v1/invites/{}", c.invite), None, 200).await;
}

/// A text channel with these overwrites.
async fn channel(app: &TestApp, owner: &U, server: ServerId, name: &str, overwrites: Value) -> ChannelId {
    let body = json!({"name": name, "kind": "text", "overwrites": overwrites});
    let channel: Channel = ok(app, owner, Method::POST, &format!("/api/v1/servers/{server}/channels"), Some(body), 201).await;
    channel.id
}

/// Only `allowed` (and the owner) may view it.
async fn private_channel(app: &TestApp, owner: &U, server: ServerId, allowed: &[&U]) -> ChannelId {
    let mut overwrites = vec![json!({"id": server.to_string(), "kind": "role", "allow": 0, "deny": Permissions::VIEW_CHANNEL.0})];
    for u in allowed {
        overwrites.push(json!({"id": u.id.to_string(), "kind": "member", "allow": Permissions::VIEW_CHANNEL.0, "deny": 0}));
    }
    channel(app, owner, server, "private", json!(overwrites)).await
}

/// Gives `u` a role with MANAGE_MESSAGES.
async fn make_moderator(app: &TestApp, owner: &U, server: ServerId, u: &U) {
    let role: Role = ok(
        app,
        owner,
        Method::POST,
        &format!("/api/v1/servers/{server}/roles"),
        Some(json!({"name": "moderators", "permissions": (Permissions::EVERYONE_DEFAULT | Permissions::MANAGE_MESSAGES).0})),
        201,
    )
    .await;
    let _: Value = ok(
        app,
        owner,
        Method::PUT,
        &format!("/api/v1/servers/{server}/members/{}/roles", u.id),
        Some(json!({"roles": [role.id]})),
        200,
    )
    .await;
}

async fn gateway(app: &TestApp, u: &U) -> Ws {
    identified(&app.ws_url, &u.token).await.0
}

/// The dispatched events (name, payload) up to and including the first `name` whose payload
/// satisfies `until`.
async fn events_until(ws: &mut Ws, name: &str, until: impl Fn(&Value) -> bool) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    loop {
        let frame = recv_json(ws).await;
        let Some(t) = frame["t"].as_str() else { continue };
        let d = frame["d"].clone();
        let last = t == name && until(&d);
        seen.push((t.to_owned(), d));
        if last {
            return seen;
        }
    }
}

fn is_message(id: MessageId) -> impl Fn(&Value) -> bool {
    move |d: &Value| d["id"] == json!(id)
}

/// The message events a session got up to the marker message `marker` (sent after the ones
/// that must not reach it).
async fn messages_before_marker(ws: &mut Ws, marker: MessageId) -> Vec<Value> {
    events_until(ws, event_name::MESSAGE_CREATE, is_message(marker))
        .await
        .into_iter()
        .filter(|(t, d)| t.starts_with("MESSAGE_") && d["id"] != json!(marker))
        .map(|(_, d)| d)
        .collect()
}

// ---- cases ----------------------------------------------------------------------------------

async fn a_message_reaches_exactly_its_readers_after_its_distributions(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner").await;
    let reader = register(&app, "reader").await;
    let member = register(&app, "member").await;
    let outsider = register(&app, "outsider").await;
    let c = community(&app, &owner).await;
    join(&app, &reader, &c).await;
    join(&app, &member, &c).await;
    let private = private_channel(&app, &owner, c.server, &[&reader]).await;
    let reader_phone = another_device(&app, "reader").await;

    let mut reader_ws = gateway(&app, &reader).await;
    let mut reader_phone_ws = gateway(&app, &reader_phone).await;
    let mut member_ws = gateway(&app, &member).await;
    let mut outsider_ws = gateway(&app, &outsider).await;
    let mut owner_ws = gateway(&app, &owner).await;

    let r = recipients(&app, &owner, private).await;
    assert_eq!(r.devices, {
        let mut d = vec![owner.recipient(), reader.recipient(), reader_phone.recipient()];
        d.sort();
        d
    });
    assert_eq!(refused(&app, &member, Method::GET, &format!("/api/v1/channels/{private}/recipients"), None).await.0, 404);
    assert_eq!(refused(&app, &outsider, Method::GET, &format!("/api/v1/channels/{private}/recipients"), None).await.0, 404);

    let body = send_body(r.view, "secret", vec![distribution(&reader, "reader")]);
    let sent: ChannelMessage =
        ok(&app, &owner, Method::POST, &format!("/api/v1/channels/{private}/messages"), Some(body), 201).await;
    assert_eq!((sent.channel_id, sent.author_id, sent.author_device), (private, owner.id, owner.device));
    assert_eq!(sent.ciphertext.as_slice(), ciphertext("secret"));
    assert_eq!((sent.thread_id, sent.pinned, sent.thread_count, sent.edited_at), (None, false, 0, None));

    // The reader's device: its distribution as an ENVELOPE, then the message.
    let seen = events_until(&mut reader_ws, event_name::MESSAGE_CREATE, is_message(sent.id)).await;
    let envelope = seen.iter().position(|(t, _)| t == event_name::ENVELOPE).expect("the distribution was pushed");
    assert_eq!(envelope, seen.iter().position(|(t, _)| t.starts_with("MESSAGE_")).expect("message") - 1, "{seen:?}");
    let (_, env) = &seen[envelope];
    assert_eq!(env["sender"], json!(owner.id));
    assert_eq!(env["sender_device"], json!(owner.device.0));
    assert_eq!(env["content"], json!(b64(b"skdm for reader")));
    let (_, msg) = seen.last().expect("message");
    assert_eq!(serde_json::from_value::<ChannelMessage>(msg.clone()).expect("message"), sent);
    // The reader's other device gets the message, not the envelope meant for the first one.
    let seen = events_until(&mut reader_phone_ws, event_name::MESSAGE_CREATE, is_message(sent.id)).await;
    assert!(!seen.iter().any(|(t, _)| t == event_name::ENVELOPE), "{seen:?}");
    // The author's own sessions hear of it too (their other devices show it).
    let seen = events_until(&mut owner_ws, event_name::MESSAGE_CREATE, is_message(sent.id)).await;
    assert!(!seen.iter().any(|(t, _)| t == event_name::ENVELOPE), "no distribution went to the author");

    // The member who may not view the channel and the outsider get nothing: a message in
    // the public channel is the first message event they see.
    let marker = send(&app, &owner, c.general, "marker").await;
    assert_eq!(messages_before_marker(&mut member_ws, marker.id).await, Vec::<Value>::new());
    let seen = events_until(&mut reader_ws, event_name::MESSAGE_CREATE, is_message(marker.id)).await;
    // (Presence may come meanwhile: the members' sessions are online.)
    let about_messages: Vec<_> = seen.iter().filter(|(t, _)| t.starts_with("MESSAGE_") || t == event_name::ENVELOPE).collect();
    assert_eq!(about_messages.len(), 1, "{seen:?}");
    // The outsider is in no server: their session gets no message at all (a DM-free probe:
    // the same marker must not arrive within a short wait).
    let nothing = tokio::time::timeout(Duration::from_millis(500), recv_json(&mut outsider_ws)).await;
    assert!(nothing.is_err(), "the outsider got {nothing:?}");
    app.shutdown().await;
}

async fn the_ciphertext_is_stored_once_whatever_the_number_of_readers(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner").await;
    let c = community(&app, &owner).await;
    let mut readers = Vec::new();
    for i in 0..6 {
        let u = register(&app, &format!("reader{i}")).await;
        join(&app, &u, &c).await;
        readers.push(u);
    }
    let r = recipients(&app, &owner, c.general).await;
    assert_eq!(r.devices.len(), 7);
    let distributions = readers.iter().map(|u| distribution(u, "all")).collect();
    let body = send_body(r.view, "once", distributions);
    let _: ChannelMessage =
        ok(&app, &owner, Method::POST, &format!("/api/v1/channels/{}/messages", c.general), Some(body), 201).await;
    for i in 0..4 {
        send(&app, &owner, c.general, &format!("later {i}")).await;
    }
    assert_eq!(count(&app, "channel_messages").await, 5, "one row per message, not per reader");
    assert_eq!(count(&app, "envelopes").await, 6, "one envelope per distribution");
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM channel_messages WHERE ciphertext = $1")
        .bind(ciphertext("once"))
        .fetch_one(app.running().state().store.pool())
        .await
        .expect("count");
    assert_eq!(stored, 1);
    // Every reader reads that one row.
    for u in &readers {
        assert_eq!(history(&app, u, c.general, "").await.len(), 5);
    }
    app.shutdown().await;
}

async fn a_send_on_an_old_view_is_refused_with_the_current_recipients(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner").await;
    let first = register(&app, "first").await;
    let c = community(&app, &owner).await;
    join(&app, &first, &c).await;
    let path = format!("/api/v1/channels/{}/messages", c.general);
    let before = recipients(&app, &owner, c.general).await;
    send(&app, &owner, c.general, "fine").await;

    // A member joins: the old view is stale, and the answer names the new device.
    let newcomer = register(&app, "newcomer").await;
    join(&app, &newcomer, &c).await;
    let (messages, envelopes) = (count(&app, "channel_messages").await, count(&app, "envelopes").await);
    let body = send_body(before.view, "stale", vec![distribution(&first, "first")]);
    let (status, code, details) = refused(&app, &owner, Method::POST, &path, Some(body)).await;
    assert_eq!((status, code), (409, ErrorCode::ViewStale));
    let current: ChannelRecipients = serde_json::from_value(details.expect("details")).expect("recipients");
    assert!(current.view > before.view);
    assert!(current.devices.contains(&newcomer.recipient()));
    assert_eq!(current, recipients(&app, &owner, c.general).await);
    assert_eq!((count(&app, "channel_messages").await, count(&app, "envelopes").await), (messages, envelopes), "nothing written");

    // A member adds a device: a new view again, which names it.
    let seen = current.view;
    let second = another_device(&app, "first").await;
    let (status, code, details) = refused(&app, &owner, Method::POST, &path, Some(send_body(seen, "stale", vec![]))).await;
    assert_eq!((status, code), (409, ErrorCode::ViewStale));
    let current: ChannelRecipients = serde_json::from_value(details.expect("details")).expect("recipients");
    assert!(current.view > seen);
    assert!(current.devices.contains(&second.recipient()));

    // A member removes a device: the view moves, and the device is no longer listed.
    let seen = current.view;
    done(&app, &first, Method::DELETE, &format!("/api/v1/users/@me/devices/{}", second.device.0), None, 204).await;
    let (status, code, details) = refused(&app, &owner, Method::POST, &path, Some(send_body(seen, "stale", vec![]))).await;
    assert_eq!((status, code), (409, ErrorCode::ViewStale));
    let current: ChannelRecipients = serde_json::from_value(details.expect("details")).expect("recipients");
    assert!(current.view > seen);
    assert!(!current.devices.contains(&second.recipient()));
    assert!(current.devices.contains(&first.recipient()));

    // On the current view the send goes through.
    let body = send_body(current.view, "fresh", vec![distribution(&newcomer, "newcomer")]);
    let _: ChannelMessage = ok(&app, &owner, Method::POST, &path, Some(body), 201).await;
    assert_eq!(count(&app, "channel_messages").await, messages + 1);
    app.shutdown().await;
}

async fn distributions_must_go_to_current_recipient_devices(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner").await;
    let reader = register(&app, "reader").await;
    let member = register(&app, "member").await;
    let outsider = register(&app, "outsider").await;
    let c = community(&app, &owner).await;
    join(&app, &reader, &c).await;
    join(&app, &member, &c).await;
    let private = private_channel(&app, &owner, c.server, &[&reader]).await;
    let path = format!("/api/v1/channels/{private}/messages");
    let view = recipients(&app, &owner, private).await.view;
    let before = (count(&app, "channel_messages").await, count(&app, "envelopes").await);

    let mut wrong_registration = distribution(&reader, "x");
    wrong_registration["registration_id"] = json!(reader.registration_id ^ 1);
    let mut no_such_device = distribution(&reader, "x");
    no_such_device["device_id"] = json!(9);
    for (what, d) in [
        ("an outsider's device", distribution(&outsider, "x")),
        ("a member who may not view the channel", distribution(&member, "x")),
        ("a wrong registration id", wrong_registration),
        ("a device that does not exist", no_such_device),
    ] {
        let (status, code, details) = refused(&app, &owner, Method::POST, &path, Some(send_body(view, "x", vec![d]))).await;
        assert_eq!((status, code), (409, ErrorCode::ViewStale), "{what}");
        let current: ChannelRecipients = serde_json::from_value(details.expect("details")).expect("recipients");
        assert_eq!(current.view, view, "{what}: the view itself is current");
    }
    assert_eq!((count(&app, "channel_messages").await, count(&app, "envelopes").await), before, "nothing written");
    app.shutdown().await;
}

async fn bad_sends_are_refused_and_write_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner").await;
    let member = register(&app, "member").await;
    let outsider = register(&app, "outsider").await;
    let c = community(&app, &owner).await;
    join(&app, &member, &c).await;
    let path = format!("/api/v1/channels/{}/messages", c.general);
    let view = recipients(&app, &owner, c.general).await.view;
    let root = send(&app, &owner, c.general, "root").await;
    let in_thread = reply(&app, &owner, c.general, root.id, "in thread").await;
    let before = (count(&app, "channel_messages").await, count(&app, "envelopes").await);

    let cases: Vec<(&str, &U, String, Value, u16, ErrorCode)> = vec![
        (
            "ciphertext over the limit",
            &owner,
            path.clone(),
            json!({"ciphertext": b64(&vec![7u8; CIPHERTEXT_MAX_BYTES + 1]), "view": view}),
            413,
            ErrorCode::PayloadTooLarge,
        ),
        (
            "malformed base64",
            &owner,
            path.clone(),
            json!({"ciphertext": "not base64!!", "view": view}),
            400,
            ErrorCode::MalformedRequest,
        ),
        ("empty ciphertext", &owner, path.clone(), json!({"ciphertext": "", "view": view}), 400, ErrorCode::MalformedRequest),
        ("no view", &owner, path.clone(), json!({"ciphertext": b64(b"x")}), 400, ErrorCode::MalformedRequest),
        (
            "unknown field",
            &owner,
            path.clone(),
            json!({"ciphertext": b64(b"x"), "view": view, "body": "hi"}),
            400,
            ErrorCode::MalformedRequest,
        ),
        (
            "plaintext distribution",
            &owner,
            path.clone(),
            {
                let mut d = distribution(&member, "x");
                d["kind"] = json!(kind::PLAINTEXT);
                send_body(view, "x", vec![d])
            },
            400,
            ErrorCode::MalformedRequest,
        ),
        (
            "two distributions for one device",
            &owner,
            path.clone(),
            send_body(view, "x", vec![distribution(&member, "a"), distribution(&member, "b")]),
            400,
            ErrorCode::MalformedRequest,
        ),
        (
            "a distribution to oneself",
            &owner,
            path.clone(),
            send_body(view, "x", vec![distribution(&owner, "me")]),
            400,
            ErrorCode::MalformedRequest,
        ),
        ("not a member", &outsider, path.clone(), send_body(view, "x", vec![]), 404, ErrorCode::NotFound),
        (
            "no such channel",
            &owner,
            "/api/v1/channels/12345/messages".into(),
            send_body(view, "x", vec![]),
            404,
            ErrorCode::NotFound,
        ),
        (
            "not a channel id",
            &owner,
            "/api/v1/channels/general/messages".into(),
            send_body(view, "x", vec![]),
            400,
            ErrorCode::MalformedRequest,
        ),
        (
            "no such thread",
            &owner,
            path.clone(),
            {
                let mut b = send_body(view, "x", vec![]);
                b["thread_id"] = json!("12345");
                b
            },
            404,
            ErrorCode::NotFound,
        ),
        (
            "a thread inside a thread",
            &owner,
            path.clone(),
            {
                let mut b = send_body(view, "x", vec![]);
                b["thread_id"] = json!(in_thread.id);
                b
            },
            404,
            ErrorCode::NotFound,
        ),
    ];
    for (what, u, path, body, status, code) in cases {
        let (got, got_code, _) = refused(&app, u, Method::POST, &path, Some(body)).await;
        assert_eq!((got, got_code), (status, code), "{what}");
    }

    // A read-only channel: members may read, not send.
    let announcements = channel(
        &app,
        &owner,
        c.server,
        "announcements",
        json!([{"id": c.server.to_string(), "kind": "role", "allow": 0, "deny": Permissions::SEND_MESSAGES.0}]),
    )
    .await;
    let view = recipients(&app, &member, announcements).await.view;
    let (status, code, _) = refused(
        &app,
        &member,
        Method::POST,
        &format!("/api/v1/channels/{announcements}/messages"),
        Some(send_body(view, "x", vec![])),
    )
    .await;
    assert_eq!((status, code), (403, ErrorCode::Forbidden));
    // A category holds no messages.
    let state: ServerState = ok(&app, &owner, Method::GET, &format!("/api/v1/servers/{}/state", c.server), None, 200).await;
    let category =
        state.channels.iter().find(|c| c.kind == copains_client_core::servers::ChannelKind::Category).expect("category");
    let view = recipients(&app, &owner, category.id).await.view;
    let (status, _, _) = refused(
        &app,
        &owner,
        Method::POST,
        &format!("/api/v1/channels/{}/messages", category.id),
        Some(send_body(view, "x", vec![])),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!((count(&app, "channel_messages").await, count(&app, "envelopes").await), before, "nothing written");
    assert_eq!(history(&app, &owner, c.general, &format!("?thread_id={}", root.id)).await.len(), 1);
    assert_eq!(history(&app, &owner, c.general, "").await[0].thread_count, 1, "refused replies are not counted");
    app.shutdown().await;
}

async fn a_full_device_queue_refuses_the_whole_send(backend: Backend) {
    let app = spawn_with(backend, |c| c.api.limits.queue_max_envelopes = 2).await;
    let owner = register(&app, "owner").await;
    let busy = register(&app, "busy").await;
    let idle = register(&app, "idle").await;
    let c = community(&app, &owner).await;
    join(&app, &busy, &c).await;
    join(&app, &idle, &c).await;
    let path = format!("/api/v1/channels/{}/messages", c.general);
    let view = recipients(&app, &owner, c.general).await.view;
    for i in 0..2 {
        let body = send_body(view, &format!("m{i}"), vec![distribution(&busy, "k")]);
        let _: ChannelMessage = ok(&app, &owner, Method::POST, &path, Some(body), 201).await;
    }
    let before = (count(&app, "channel_messages").await, count(&app, "envelopes").await);
    let body = send_body(view, "over", vec![distribution(&idle, "k"), distribution(&busy, "k")]);
    let (status, code, details) = refused(&app, &owner, Method::POST, &path, Some(body)).await;
    assert_eq!((status, code), (409, ErrorCode::QueueFull));
    assert_eq!(details.expect("details")["devices"], json!([{"user_id": busy.id.to_string(), "device_id": busy.device.0}]));
    assert_eq!((count(&app, "channel_messages").await, count(&app, "envelopes").await), before, "nothing written");
    app.shutdown().await;
}

async fn history_pages_before_after_around_and_in_threads(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner").await;
    let member = register(&app, "member").await;
    let c = community(&app, &owner).await;
    join(&app, &member, &c).await;
    let mut sent = Vec::new();
    for i in 0..30 {
        sent.push(send(&app, if i % 2 == 0 { &owner } else { &member }, c.general, &format!("m{i}")).await);
    }
    let root = sent[10].id;
    let mut replies = Vec::new();
    for i in 0..5 {
        replies.push(reply(&app, &member, c.general, root, &format!("r{i}")).await);
    }
    let ids = |page: &[ChannelMessage]| page.iter().map(|m| m.id).collect::<Vec<_>>();
    let newest_first = |range: std::ops::Range<usize>| sent[range].iter().rev().map(|m| m.id).collect::<Vec<_>>();

    // Top-level messages only, newest first; the thread's first message counts its replies.
    let page = history(&app, &member, c.general, "").await;
    assert_eq!(ids(&page), newest_first(0..30));
    assert_eq!(page.iter().find(|m| m.id == root).expect("root").thread_count, 5);
    assert_eq!(page.iter().filter(|m| m.thread_count > 0).count(), 1);
    assert_eq!(page[0].ciphertext.as_slice(), ciphertext("m29"));

    assert_eq!(ids(&history(&app, &member, c.general, "?limit=5").await), newest_first(25..30));
    assert_eq!(ids(&history(&app, &member, c.general, &format!("?limit=5&before={}", sent[25].id)).await), newest_first(20..25));
    assert_eq!(ids(&history(&app, &member, c.general, &format!("?limit=5&after={}", sent[3].id)).await), newest_first(4..9));
    assert_eq!(
        ids(&history(&app, &member, c.general, &format!("?before={}&after={}", sent[8].id, sent[3].id)).await),
        newest_first(4..8)
    );
    assert_eq!(ids(&history(&app, &member, c.general, &format!("?limit=7&around={}", sent[15].id)).await), newest_first(12..19));
    assert_eq!(ids(&history(&app, &member, c.general, &format!("?limit=6&around={}", sent[1].id)).await), newest_first(0..4));
    assert_eq!(ids(&history(&app, &member, c.general, &format!("?limit=1&around={}", sent[7].id)).await), newest_first(7..8));

    // A thread's messages, only with thread_id.
    let thread = history(&app, &owner, c.general, &format!("?thread_id={root}")).await;
    assert_eq!(ids(&thread), replies.iter().rev().map(|m| m.id).collect::<Vec<_>>());
    assert!(thread.iter().all(|m| m.thread_id == Some(root)));
    assert_eq!(
        ids(&history(&app, &owner, c.general, &format!("?thread_id={root}&limit=2&before={}", replies[3].id)).await),
        vec![replies[2].id, replies[1].id]
    );
    let (status, _, _) = refused(
        &app,
        &owner,
        Method::GET,
        // (An id no message has: a neighbour of a sent id may be the next message's.)
        &format!("/api/v1/channels/{}/messages?thread_id={}", c.general, MessageId(1)),
        None,
    )
    .await;
    assert_eq!(status, 404, "no such thread");
    let (status, _, _) =
        refused(&app, &owner, Method::GET, &format!("/api/v1/channels/{}/messages?thread_id={}", c.general, replies[0].id), None)
            .await;
    assert_eq!(status, 404, "a reply starts no thread");

    for bad in ["?limit=0", "?limit=101", "?limit=x", "?before=abc", &format!("?around={}&before={}", sent[5].id, sent[9].id)] {
        let (status, code, _) =
            refused(&app, &owner, Method::GET, &format!("/api/v1/channels/{}/messages{bad}", c.general), None).await;
        assert_eq!((status, code), (400, ErrorCode::MalformedRequest), "{bad}");
    }
    app.shutdown().await;
}

async fn newcomers_get_no_history_from_before_they_joined(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner").await;
    let c = community(&app, &owner).await;
    let old: Vec<ChannelMessage> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(send(&app, &owner, c.general, &format!("old {i}")).await);
        }
        v
    };
    let pinned = &old[0];
    done(&app, &owner, Method::PUT, &format!("/api/v1/channels/{}/pins/{}", c.general, pinned.id), None, 204).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let newcomer = register(&app, "newcomer").await;
    join(&app, &newcomer, &c).await;
    make_moderator(&app, &owner, c.server, &newcomer).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let new = send(&app, &owner, c.general, "new").await;

    assert_eq!(history(&app, &newcomer, c.general, "").await.iter().map(|m| m.id).collect::<Vec<_>>(), vec![new.id]);
    assert_eq!(history(&app, &owner, c.general, "").await.len(), 4, "the owner, there before, sees all");
    assert_eq!(
        history(&app, &newcomer, c.general, &format!("?around={}", old[1].id)).await.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![new.id]
    );
    let pins: Vec<ChannelMessage> =
        ok(&app, &newcomer, Method::GET, &format!("/api/v1/channels/{}/pins", c.general), None, 200).await;
    assert!(pins.is_empty(), "a pin from before is not shown either");

    // Nothing from before can be reached by id.
    let view = recipients(&app, &newcomer, c.general).await.view;
    let m = format!("/api/v1/channels/{}/messages/{}", c.general, old[1].id);
    let body = json!({"ciphertext": b64(b"x"), "view": view});
    for (method, path, body) in [
        (Method::PATCH, m.clone(), Some(body.clone())),
        (Method::DELETE, m.clone(), None),
        (Method::POST, format!("{m}/reactions"), Some(body.clone())),
        (Method::PUT, format!("/api/v1/channels/{}/pins/{}", c.general, old[1].id), None),
        (
            Method::POST,
            format!("/api/v1/channels/{}/messages", c.general),
            Some(json!({"ciphertext": b64(b"x"), "view": view, "thread_id": old[1].id})),
        ),
        (Method::GET, format!("/api/v1/channels/{}/messages?thread_id={}", c.general, old[1].id), None),
    ] {
        let (status, code, _) = refused(&app, &newcomer, method.clone(), &path, body).await;
        assert_eq!((status, code), (404, ErrorCode::NotFound), "{method} {path}");
    }
    assert_eq!(count(&app, "channel_messages").await, 4);
    app.shutdown().await;
}

async fn edits_and_deletes_by_standing(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner").await;
    let author = register(&app, "author").await;
    let other = register(&app, "other").await;
    let moderator = register(&app, "moderator").await;
    let c = community(&app, &owner).await;
    for u in [&author, &other, &moderator] {
        join(&app, u, &c).await;
    }
    make_moderator(&app, &owner, c.server, &moderator).await;
    let mut other_ws = gateway(&app, &other).await;
    let message = send(&app, &author, c.general, "first draft").await;
    let path = format!("/api/v1/channels/{}/messages/{}", c.general, message.id);
    let view = recipients(&app, &author, c.general).await.view;
    let edit = json!({"ciphertext": b64(&ciphertext("second draft")), "view": view});

    for u in [&other, &moderator, &owner] {
        let (status, code, _) = refused(&app, u, Method::PATCH, &path, Some(edit.clone())).await;
        assert_eq!((status, code), (403, ErrorCode::Forbidden), "only the author edits");
    }
    let (status, code, _) =
        refused(&app, &author, Method::PATCH, &path, Some(json!({"ciphertext": b64(b"x"), "view": view - 1}))).await;
    assert_eq!((status, code), (409, ErrorCode::ViewStale));
    // From the author's other device: its sender key made the new ciphertext.
    let laptop = another_device(&app, "author").await;
    let view = recipients(&app, &laptop, c.general).await.view;
    let edit = json!({"ciphertext": b64(&ciphertext("second draft")), "view": view});
    let edited: ChannelMessage = ok(&app, &laptop, Method::PATCH, &path, Some(edit), 200).await;
    assert_eq!(edited.ciphertext.as_slice(), ciphertext("second draft"));
    assert_eq!((edited.id, edited.created_at, edited.author_device), (message.id, message.created_at, laptop.device));
    assert!(edited.edited_at.is_some());
    let seen = events_until(&mut other_ws, event_name::MESSAGE_UPDATE, is_message(message.id)).await;
    assert_eq!(serde_json::from_value::<ChannelMessage>(seen.last().expect("update").1.clone()).expect("message"), edited);
    assert_eq!(history(&app, &other, c.general, "").await[0], edited);

    // Deletes: not by another member; by the author; by a member with MANAGE_MESSAGES.
    let (status, code, _) = refused(&app, &other, Method::DELETE, &path, None).await;
    assert_eq!((status, code), (403, ErrorCode::Forbidden));
    done(&app, &author, Method::DELETE, &path, None, 204).await;
    let seen = events_until(&mut other_ws, event_name::MESSAGE_DELETE, is_message(message.id)).await;
    assert_eq!(seen.last().expect("delete").1, json!({"id": message.id, "channel_id": c.general}));
    let (status, _, _) = refused(&app, &author, Method::DELETE, &path, None).await;
    assert_eq!(status, 404, "already gone");
    let (status, _, _) = refused(&app, &author, Method::PATCH, &path, Some(json!({"ciphertext": b64(b"x"), "view": view}))).await;
    assert_eq!(status, 404, "a deleted message cannot be edited");

    let second = send(&app, &other, c.general, "rude").await;
    done(&app, &moderator, Method::DELETE, &format!("/api/v1/channels/{}/messages/{}", c.general, second.id), None, 204).await;
    // A thread goes with its first message; a reply's deletion is counted off.
    let root = send(&app, &other, c.general, "root").await;
    let r1 = reply(&app, &author, c.general, root.id, "r1").await;
    reply(&app, &author, c.general, root.id, "r2").await;
    done(&app, &author, Method::DELETE, &format!("/api/v1/channels/{}/messages/{}", c.general, r1.id), None, 204).await;
    assert_eq!(history(&app, &other, c.general, "").await[0].thread_count, 1);
    done(&app, &owner, Method::DELETE, &format!("/api/v1/channels/{}/messages/{}", c.general, root.id), None, 204).await;
    assert_eq!(count(&app, "channel_messages").await, 0);
    app.shutdown().await;
}

async fn reactions_by_standing(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner").await;
    let member = register(&app, "member").await;
    let other = register(&app, "other").await;
    let moderator = register(&app, "moderator").await;
    let c = community(&app, &owner).await;
    for u in [&member, &other, &moderator] {
        join(&app, u, &c).await;
    }
    make_moderator(&app, &owner, c.server, &moderator).await;
    let mut owner_ws = gateway(&app, &owner).await;
    let message = send(&app, &owner, c.general, "react to me").await;
    let path = format!("/api/v1/channels/{}/messages/{}/reactions", c.general, message.id);
    let view = recipients(&app, &member, c.general).await.view;
    let body = |tag: &str| json!({"ciphertext": b64(&ciphertext(tag)), "view": view});

    let mine: Reaction = ok(&app, &member, Method::POST, &path, Some(body("👍")), 201).await;
    assert_eq!(
        (mine.message_id, mine.channel_id, mine.user_id, mine.device_id),
        (message.id, c.general, member.id, member.device)
    );
    let seen = events_until(&mut owner_ws, event_name::REACTION_ADD, |d| d["id"] == json!(mine.id)).await;
    assert_eq!(serde_json::from_value::<Reaction>(seen.last().expect("reaction").1.clone()).expect("reaction"), mine);
    let theirs: Reaction = ok(&app, &other, Method::POST, &path, Some(body("🎉")), 201).await;
    let page = history(&app, &owner, c.general, "").await;
    assert_eq!(page[0].reactions, vec![mine.clone(), theirs.clone()]);
    let (status, code, _) =
        refused(&app, &member, Method::POST, &path, Some(json!({"ciphertext": b64(b"x"), "view": view - 1}))).await;
    assert_eq!((status, code), (409, ErrorCode::ViewStale));

    // Removing: one's own, or any with MANAGE_MESSAGES.
    let (status, code, _) = refused(&app, &member, Method::DELETE, &format!("{path}/{}", theirs.id), None).await;
    assert_eq!((status, code), (403, ErrorCode::Forbidden));
    done(&app, &member, Method::DELETE, &format!("{path}/{}", mine.id), None, 204).await;
    let seen = events_until(&mut owner_ws, event_name::REACTION_REMOVE, |d| d["id"] == json!(mine.id)).await;
    assert_eq!(seen.last().expect("removal").1, json!({"id": mine.id, "message_id": message.id, "channel_id": c.general}));
    done(&app, &moderator, Method::DELETE, &format!("{path}/{}", theirs.id), None, 204).await;
    let (status, _, _) = refused(&app, &moderator, Method::DELETE, &format!("{path}/{}", theirs.id), None).await;
    assert_eq!(status, 404);

    // No reaction permission: 403. A deleted message: 404.
    let quiet = channel(
        &app,
        &owner,
        c.server,
        "quiet",
        json!([{"id": c.server.to_string(), "kind": "role", "allow": 0, "deny": Permissions::ADD_REACTIONS.0}]),
    )
    .await;
    let in_quiet = send(&app, &owner, quiet, "no reactions here").await;
    let quiet_view = recipients(&app, &member, quiet).await.view;
    let (status, code, _) = refused(
        &app,
        &member,
        Method::POST,
        &format!("/api/v1/channels/{quiet}/messages/{}/reactions", in_quiet.id),
        Some(json!({"ciphertext": b64(b"x"), "view": quiet_view})),
    )
    .await;
    assert_eq!((status, code), (403, ErrorCode::Forbidden));
    let kept: Reaction = ok(&app, &member, Method::POST, &path, Some(body("❤")), 201).await;
    done(&app, &owner, Method::DELETE, &format!("/api/v1/channels/{}/messages/{}", c.general, message.id), None, 204).await;
    let (status, code, _) = refused(&app, &member, Method::POST, &path, Some(body("late"))).await;
    assert_eq!((status, code), (404, ErrorCode::NotFound));
    let (status, _, _) = refused(&app, &member, Method::DELETE, &format!("{path}/{}", kept.id), None).await;
    assert_eq!(status, 404);
    assert_eq!(count(&app, "reactions").await, 0, "the message's reactions went with it");
    app.shutdown().await;
}

async fn pins_need_manage_messages(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner").await;
    let member = register(&app, "member").await;
    let moderator = register(&app, "moderator").await;
    let c = community(&app, &owner).await;
    join(&app, &member, &c).await;
    join(&app, &moderator, &c).await;
    make_moderator(&app, &owner, c.server, &moderator).await;
    let mut member_ws = gateway(&app, &member).await;
    let message = send(&app, &member, c.general, "pin me").await;
    let pin = format!("/api/v1/channels/{}/pins/{}", c.general, message.id);
    let pins = format!("/api/v1/channels/{}/pins", c.general);

    let (status, code, _) = refused(&app, &member, Method::PUT, &pin, None).await;
    assert_eq!((status, code), (403, ErrorCode::Forbidden), "not even one's own message");
    done(&app, &moderator, Method::PUT, &pin, None, 204).await;
    let seen = events_until(&mut member_ws, event_name::PINS_UPDATE, |_| true).await;
    assert_eq!(seen.last().expect("pin").1, json!({"channel_id": c.general, "message_id": message.id, "pinned": true}));
    done(&app, &moderator, Method::PUT, &pin, None, 204).await;
    let listed: Vec<ChannelMessage> = ok(&app, &member, Method::GET, &pins, None, 200).await;
    assert_eq!(listed.iter().map(|m| (m.id, m.pinned)).collect::<Vec<_>>(), vec![(message.id, true)]);
    assert!(history(&app, &member, c.general, "").await[0].pinned);

    let (status, code, _) = refused(&app, &member, Method::DELETE, &pin, None).await;
    assert_eq!((status, code), (403, ErrorCode::Forbidden));
    done(&app, &owner, Method::DELETE, &pin, None, 204).await;
    let seen = events_until(&mut member_ws, event_name::PINS_UPDATE, |_| true).await;
    assert_eq!(seen.last().expect("unpin").1["pinned"], json!(false));
    assert!(ok::<Vec<ChannelMessage>>(&app, &member, Method::GET, &pins, None, 200).await.is_empty());
    let (status, _, _) = refused(&app, &owner, Method::PUT, &format!("/api/v1/channels/{}/pins/12345", c.general), None).await;
    assert_eq!(status, 404);
    app.shutdown().await;
}

async fn no_message_is_reached_through_another_channel(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner").await;
    let member = register(&app, "member").await;
    let c = community(&app, &owner).await;
    join(&app, &member, &c).await;
    make_moderator(&app, &owner, c.server, &member).await;
    let elsewhere = channel(&app, &owner, c.server, "elsewhere", json!([])).await;
    let private = private_channel(&app, &owner, c.server, &[]).await;
    let hidden = send(&app, &owner, private, "hidden").await;
    let visible = send(&app, &member, c.general, "visible").await;
    let view = recipients(&app, &member, elsewhere).await.view;
    let reaction: Reaction = ok(
        &app,
        &member,
        Method::POST,
        &format!("/api/v1/channels/{}/messages/{}/reactions", c.general, visible.id),
        Some(json!({"ciphertext": b64(b"r"), "view": recipients(&app, &member, c.general).await.view})),
        201,
    )
    .await;
    let other_message = send(&app, &member, elsewhere, "another").await;
    let body = json!({"ciphertext": b64(b"x"), "view": view});
    // A message of one channel through another's path; a message of a channel one cannot
    // read through a channel one can; a reaction through another message.
    for (what, id) in [("another channel's message", visible.id), ("a hidden channel's message", hidden.id)] {
        let m = format!("/api/v1/channels/{elsewhere}/messages/{id}");
        for (method, path, body) in [
            (Method::PATCH, m.clone(), Some(body.clone())),
            (Method::DELETE, m.clone(), None),
            (Method::POST, format!("{m}/reactions"), Some(body.clone())),
            (Method::DELETE, format!("{m}/reactions/{}", reaction.id), None),
            (Method::PUT, format!("/api/v1/channels/{elsewhere}/pins/{id}"), None),
            (Method::DELETE, format!("/api/v1/channels/{elsewhere}/pins/{id}"), None),
        ] {
            let (status, code, _) = refused(&app, &member, method.clone(), &path, body).await;
            assert_eq!((status, code), (404, ErrorCode::NotFound), "{what}: {method} {path}");
        }
    }
    let (status, _, _) = refused(
        &app,
        &member,
        Method::DELETE,
        &format!("/api/v1/channels/{elsewhere}/messages/{}/reactions/{}", other_message.id, reaction.id),
        None,
    )
    .await;
    assert_eq!(status, 404, "a reaction through another message");
    // The hidden channel itself answers as if it did not exist.
    for path in [
        format!("/api/v1/channels/{private}/messages"),
        format!("/api/v1/channels/{private}/pins"),
        format!("/api/v1/channels/{private}/recipients"),
    ] {
        let (status, code, _) = refused(&app, &member, Method::GET, &path, None).await;
        assert_eq!((status, code), (404, ErrorCode::NotFound), "{path}");
    }
    assert_eq!(count(&app, "channel_messages").await, 3);
    assert_eq!(count(&app, "reactions").await, 1);
    app.shutdown().await;
}

async fn group_dm_messages_reach_their_members(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let carol = register(&app, "carol").await;
    let dave = register(&app, "dave").await;
    let dm: Channel =
        ok(&app, &alice, Method::POST, "/api/v1/channels", Some(json!({"recipients": [bob.id, carol.id], "name": "trio"})), 201)
            .await;
    let r = recipients(&app, &bob, dm.id).await;
    let mut expected = vec![alice.recipient(), bob.recipient(), carol.recipient()];
    expected.sort();
    assert_eq!(r.devices, expected);
    let mut carol_ws = gateway(&app, &carol).await;
    let body = send_body(r.view, "hello trio", vec![distribution(&alice, "a"), distribution(&carol, "c")]);
    let sent: ChannelMessage =
        ok(&app, &bob, Method::POST, &format!("/api/v1/channels/{}/messages", dm.id), Some(body), 201).await;
    let seen = events_until(&mut carol_ws, event_name::MESSAGE_CREATE, is_message(sent.id)).await;
    assert!(seen.iter().any(|(t, d)| t == event_name::ENVELOPE && d["content"] == json!(b64(b"skdm for c"))));
    let (status, code, _) =
        refused(&app, &dave, Method::POST, &format!("/api/v1/channels/{}/messages", dm.id), Some(send_body(r.view, "x", vec![])))
            .await;
    assert_eq!((status, code), (404, ErrorCode::NotFound));
    assert_eq!(history(&app, &carol, dm.id, "").await, vec![sent.clone()]);

    // Dave is added: the view moves; he reads from his arrival on.
    done(&app, &alice, Method::PUT, &format!("/api/v1/channels/{}/recipients/{}", dm.id, dave.id), None, 204).await;
    let (status, code, details) =
        refused(&app, &bob, Method::POST, &format!("/api/v1/channels/{}/messages", dm.id), Some(send_body(r.view, "x", vec![])))
            .await;
    assert_eq!((status, code), (409, ErrorCode::ViewStale));
    let current: ChannelRecipients = serde_json::from_value(details.expect("details")).expect("recipients");
    assert!(current.devices.contains(&dave.recipient()));
    assert!(history(&app, &dave, dm.id, "").await.is_empty());
    app.shutdown().await;
}

/// A user whose device runs the real engine (a signed device list: only linked devices
/// receive).
async fn engine_user(app: &TestApp, name: &str, n: u32, login: bool) -> (U, copains_client_core::messaging::Messenger) {
    let client = app.client();
    let auth = if login {
        client.login(name, PASSWORD, Some("another")).await.expect("login")
    } else {
        client.register(name, PASSWORD, Some("first")).await.expect("register")
    };
    let store = app.data_dir.path().join(format!("{name}-{n}.vault"));
    let messenger = client.enable_e2ee(store, "vault passphrase").await.expect("e2ee");
    let u =
        U { id: auth.user.id, device: auth.device_id, registration_id: 0, token: client.access_token().await.expect("token") };
    (u, messenger)
}

async fn linking_a_device_moves_the_view_and_a_pending_one_does_not(backend: Backend) {
    use copains_client_core::messaging::{Incoming, LinkState};
    let app = spawn(backend).await;
    let (alice, alice_engine) = engine_user(&app, "alice", 1, false).await;
    let owner = register(&app, "owner").await;
    let c = community(&app, &owner).await;
    join(&app, &alice, &c).await;
    let before = recipients(&app, &owner, c.general).await;
    assert_eq!(before.devices.iter().filter(|d| d.user_id == alice.id).count(), 1);

    // A device signed in with the password alone has keys but is not linked: no recipient,
    // and the view stays.
    let (laptop, mut laptop_engine) = engine_user(&app, "alice", 2, true).await;
    assert_eq!(laptop_engine.link_state().await.expect("state"), LinkState::Pending);
    let pending = recipients(&app, &owner, c.general).await;
    assert_eq!(pending, before, "a pending device reads nothing");
    send(&app, &owner, c.general, "still fine").await;

    // Linked by the first device: a new view that names it.
    let code = laptop_engine.begin_link().await.expect("code");
    alice_engine.approve_link(laptop.device, &code).await.expect("approve");
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), laptop_engine.next()).await.expect("in time").expect("open");
        if matches!(n, Incoming::Linked) {
            break;
        }
    }
    let path = format!("/api/v1/channels/{}/messages", c.general);
    let (status, code, details) = refused(&app, &owner, Method::POST, &path, Some(send_body(before.view, "old", vec![]))).await;
    assert_eq!((status, code), (409, ErrorCode::ViewStale));
    let current: ChannelRecipients = serde_json::from_value(details.expect("details")).expect("recipients");
    assert!(current.view > before.view);
    assert!(current.devices.iter().any(|d| d.user_id == alice.id && d.device_id == laptop.device));
    assert_eq!(current.devices.iter().filter(|d| d.user_id == alice.id).count(), 2);
    alice_engine.close().await;
    laptop_engine.close().await;
    app.shutdown().await;
}

/// A server of `owner`'s that `reader` and `member` joined, with a channel only `reader` (and
/// the owner) may view, and an `outsider`; `reader` has a second device when `phone`.
struct Cast {
    app: TestApp,
    owner: U,
    reader: U,
    reader_phone: Option<U>,
    member: U,
    outsider: U,
    private: ChannelId,
}

async fn cast(backend: Backend, phone: bool) -> Cast {
    let app = spawn(backend).await;
    let owner = register(&app, "owner").await;
    let reader = register(&app, "reader").await;
    let reader_phone = if phone { Some(another_device(&app, "reader").await) } else { None };
    let member = register(&app, "member").await;
    let outsider = register(&app, "outsider").await;
    let c = community(&app, &owner).await;
    join(&app, &reader, &c).await;
    join(&app, &member, &c).await;
    let private = private_channel(&app, &owner, c.server, &[&reader]).await;
    Cast { app, owner, reader, reader_phone, member, outsider, private }
}

async fn key_distributions_alone_go_to_current_recipient_devices_only(backend: Backend) {
    let Cast { app, owner, reader, member, outsider, private, .. } = cast(backend, false).await;
    let path = format!("/api/v1/channels/{private}/sender-keys");
    let view = recipients(&app, &owner, private).await.view;
    let mut reader_ws = gateway(&app, &reader).await;
    let before = (count(&app, "channel_messages").await, count(&app, "envelopes").await);

    // Refused, nothing queued: a device that is no recipient, an old view, no distribution,
    // one to the sender itself; a member who may not read the channel and an outsider get 404.
    for (what, d, v) in [
        ("a member who may not view the channel", distribution(&member, "x"), view),
        ("an outsider's device", distribution(&outsider, "x"), view),
        ("an old view", distribution(&reader, "x"), view - 1),
    ] {
        let body = json!({"view": v, "distributions": [d]});
        let (status, code, details) = refused(&app, &owner, Method::POST, &path, Some(body)).await;
        assert_eq!((status, code), (409, ErrorCode::ViewStale), "{what}");
        let current: ChannelRecipients = serde_json::from_value(details.expect("details")).expect("recipients");
        assert_eq!(current.view, view, "{what}");
    }
    let empty = json!({"view": view, "distributions": []});
    assert_eq!(refused(&app, &owner, Method::POST, &path, Some(empty)).await.0, 400);
    let to_self = json!({"view": view, "distributions": [distribution(&owner, "x")]});
    assert_eq!(refused(&app, &owner, Method::POST, &path, Some(to_self)).await.0, 400);
    for who in [&member, &outsider] {
        let body = json!({"view": view, "distributions": [distribution(&owner, "x")]});
        assert_eq!(refused(&app, who, Method::POST, &path, Some(body)).await.0, 404);
    }
    assert_eq!((count(&app, "channel_messages").await, count(&app, "envelopes").await), before, "nothing written");

    // Accepted: queued for the reader's device and pushed to it; no message is stored.
    let body = json!({"view": view, "distributions": [distribution(&reader, "alone")]});
    let queued: SenderKeysSent = ok(&app, &owner, Method::POST, &path, Some(body), 200).await;
    let seen = events_until(&mut reader_ws, event_name::ENVELOPE, |_| true).await;
    let (_, env) = seen.last().expect("envelope");
    assert_eq!(env["sender"], json!(owner.id));
    // The answer names the envelope's timestamp: what a retry request for it would name.
    assert_eq!(env["server_timestamp"], json!(queued.sent_at));
    assert_eq!(env["content"], json!(b64(b"skdm for alone")));
    assert_eq!(count(&app, "channel_messages").await, before.0);
    assert_eq!(count(&app, "envelopes").await, before.1 + 1);
    app.shutdown().await;
}

async fn prekeys_left(app: &TestApp, u: &U) -> PreKeyCount {
    ok(app, u, Method::GET, "/api/v1/keys/count", None, 200).await
}

async fn bundles_are_claimed_through_a_channel_for_its_recipient_devices_only(backend: Backend) {
    let Cast { app, owner, reader, reader_phone, member, outsider, private } = cast(backend, true).await;
    let reader_phone = reader_phone.expect("second device");
    let path = format!("/api/v1/channels/{private}/bundles");
    let address = |u: &U| json!({"user_id": u.id, "device_id": u.device.0});
    let left = (prekeys_left(&app, &owner).await, prekeys_left(&app, &member).await, prekeys_left(&app, &outsider).await);

    // The reader names every device it can think of: only the channel's other recipient
    // devices come back (the owner's, and its own other one), each with one bundle.
    let body = json!({"devices": [address(&owner), address(&member), address(&outsider), address(&reader), address(&reader_phone), address(&owner)]});
    let claimed: ClaimedBundles = ok(&app, &reader, Method::POST, &path, Some(body), 200).await;
    let got: Vec<(UserId, Vec<DeviceId>)> =
        claimed.users.iter().map(|u| (u.user_id, u.devices.iter().map(|d| d.device_id).collect())).collect();
    let mut want = vec![(owner.id, vec![owner.device]), (reader.id, vec![reader_phone.device])];
    want.sort();
    assert_eq!(got, want);
    let owner_bundle = &claimed.users.iter().find(|u| u.user_id == owner.id).expect("owner").devices[0];
    assert_eq!(owner_bundle.registration_id, owner.registration_id);
    assert!(owner_bundle.pre_key.is_some(), "a one-time prekey was handed out");
    // One one-time prekey of each kind taken from the owner's device, none from the others.
    let now = (prekeys_left(&app, &owner).await, prekeys_left(&app, &member).await, prekeys_left(&app, &outsider).await);
    assert_eq!(now.0.pre_keys, left.0.pre_keys - 1);
    assert_eq!(now.0.pq_pre_keys, left.0.pq_pre_keys - 1);
    assert_eq!((now.1, now.2), (left.1, left.2));

    // Nothing to claim: an empty answer.
    let body = json!({"devices": [address(&member)]});
    let claimed: ClaimedBundles = ok(&app, &reader, Method::POST, &path, Some(body), 200).await;
    assert!(claimed.users.is_empty());
    // Not readable by the caller: 404 and nothing taken; bad sizes: 400.
    for who in [&member, &outsider] {
        let body = json!({"devices": [address(&owner)]});
        assert_eq!(refused(&app, who, Method::POST, &path, Some(body)).await.0, 404);
    }
    assert_eq!(prekeys_left(&app, &owner).await, now.0);
    assert_eq!(refused(&app, &reader, Method::POST, &path, Some(json!({"devices": []}))).await.0, 400);
    let too_many: Vec<Value> = (0..=CLAIM_MAX).map(|_| address(&owner)).collect();
    assert_eq!(refused(&app, &reader, Method::POST, &path, Some(json!({"devices": too_many}))).await.0, 400);
    assert_eq!(refused(&app, &reader, Method::POST, &path, Some(json!({"devices": [{"user_id": "x"}]}))).await.0, 400);

    // Device lists: only for readers (none of these users has published one yet), 404 for
    // those who may not read, 400 for bad sizes.
    let lists_path = format!("/api/v1/channels/{private}/device-lists");
    let lists: DeviceLists =
        ok(&app, &reader, Method::POST, &lists_path, Some(json!({"users": [owner.id, member.id, outsider.id]})), 200).await;
    assert!(lists.lists.is_empty());
    assert_eq!(refused(&app, &outsider, Method::POST, &lists_path, Some(json!({"users": [owner.id]}))).await.0, 404);
    assert_eq!(refused(&app, &reader, Method::POST, &lists_path, Some(json!({"users": []}))).await.0, 400);
    app.shutdown().await;
}

async fn channel_key_claims_are_rate_limited_by_devices(backend: Backend) {
    let app = spawn_with(backend, |c| {
        c.api.rate_limits.channel_key_claims_burst = 3;
        c.api.rate_limits.channel_key_claims_per_minute = 1;
    })
    .await;
    let owner = register(&app, "owner").await;
    let a = register(&app, "anna").await;
    let b = register(&app, "bert").await;
    let c = community(&app, &owner).await;
    join(&app, &a, &c).await;
    join(&app, &b, &c).await;
    let path = format!("/api/v1/channels/{}/bundles", c.general);
    let body = json!({"devices": [{"user_id": a.id, "device_id": a.device.0}, {"user_id": b.id, "device_id": b.device.0}]});
    let _: ClaimedBundles = ok(&app, &owner, Method::POST, &path, Some(body.clone()), 200).await;
    // Two more devices: over the three the burst allows.
    let (status, code, _) = refused(&app, &owner, Method::POST, &path, Some(body)).await;
    assert_eq!((status, code), (429, ErrorCode::RateLimited));
    app.shutdown().await;
}

async fn a_message_is_fetched_by_id_thread_or_not(backend: Backend) {
    let Cast { app, owner, reader, member, outsider, private, .. } = cast(backend, false).await;
    let root = send(&app, &owner, private, "root").await;
    let in_thread = reply(&app, &owner, private, root.id, "in thread").await;
    // The channel's last message is the newest one, wherever it is.
    let channel: Channel = ok(&app, &reader, Method::GET, &format!("/api/v1/channels/{private}"), None, 200).await;
    assert_eq!(channel.last_message_id, Some(in_thread.id));
    for m in [&root, &in_thread] {
        let path = format!("/api/v1/channels/{private}/messages/{}", m.id);
        let got: ChannelMessage = ok(&app, &reader, Method::GET, &path, None, 200).await;
        assert_eq!(got.id, m.id);
        assert_eq!(got.ciphertext, m.ciphertext);
        assert_eq!(got.thread_id, m.thread_id);
        // Not to those who may not read the channel.
        for who in [&member, &outsider] {
            assert_eq!(refused(&app, who, Method::GET, &path, None).await.0, 404);
        }
    }
    // Not through another channel, nor an id that is no message.
    let general = community(&app, &member).await.general;
    let elsewhere = format!("/api/v1/channels/{general}/messages/{}", root.id);
    assert_eq!(refused(&app, &member, Method::GET, &elsewhere, None).await.0, 404);
    let none = format!("/api/v1/channels/{private}/messages/12345");
    assert_eq!(refused(&app, &reader, Method::GET, &none, None).await.0, 404);
    assert_eq!(refused(&app, &reader, Method::GET, &format!("/api/v1/channels/{private}/messages/x"), None).await.0, 400);
    app.shutdown().await;
}
