//! Friends, blocks, presence, typing and read states through the real server: every visibility
//! rule of presence as a matrix (friend, shared server, shared group DM, stranger, blocked,
//! blocker), what a block forbids, presence across devices, idleness and a RESUME, read markers
//! synced between two devices of one user, and typing indicators with their rate limit.
//! Presence timings are shortened in the configuration; the tracker's own clock rules (grace,
//! coalescing, custom status expiry) are unit-tested on plain instants in `backend/src/presence.rs`.

mod common;

use common::ws::{identified, next_event, recv_json, send, Ws};
use common::{Backend, TestApp};
use copains_client_core::api::AuthResponse;
use copains_client_core::gateway::{event_name, op};
use copains_client_core::social::{PresenceSettings, PresenceStatus, ReadState, Relationship, RelationshipKind};
use copains_client_core::{ChannelId, MessageId, UserId};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

backend_tests!(
    friend_requests_are_sent_accepted_declined_cancelled_and_removed,
    presence_is_seen_by_friends_and_shared_members_only,
    presence_follows_devices_idleness_choices_and_a_resume,
    joining_or_leaving_a_server_shows_or_hides_presence_at_once,
    a_block_forbids_dms_requests_group_dms_and_typing,
    read_markers_sync_between_devices_and_never_move_back,
    typing_reaches_the_readers_and_is_rate_limited,
    mentions_are_counted_until_read_and_everyone_needs_the_permission,
    notification_settings_are_kept_per_server_and_channel_for_every_device,
    bad_input_is_refused,
);

const PASSWORD: &str = "a-long-password";

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.deletes_burst = 1_000_000;
        c.api.rate_limits.user_lookups_burst = 1_000_000;
        c.api.rate_limits.presence_burst = 1_000;
        c.api.rate_limits.read_marks_burst = 1_000;
        c.api.rate_limits.typing_burst = 3;
        c.api.rate_limits.typing_per_minute = 1;
        c.api.presence.flush_ms = 50;
        c.api.presence.grace_ms = 1_000;
    })
    .await
}

#[derive(Clone)]
struct U {
    id: UserId,
    name: String,
    token: String,
}

async fn register(app: &TestApp, name: &str) -> U {
    let auth: AuthResponse = app.client().register(name, PASSWORD, Some("test")).await.expect("register");
    U { id: auth.user.id, name: name.into(), token: auth.tokens.access_token }
}

/// The same account on another device.
async fn login(app: &TestApp, u: &U) -> U {
    let auth: AuthResponse = app.client().login(&u.name, PASSWORD, Some("second")).await.expect("login");
    U { id: auth.user.id, name: u.name.clone(), token: auth.tokens.access_token }
}

async fn call(app: &TestApp, u: &U, method: Method, path: &str, body: Option<Value>) -> (StatusCode, String) {
    let mut req = reqwest::Client::new().request(method, app.url(path)).bearer_auth(&u.token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

async fn ok<T: DeserializeOwned>(app: &TestApp, u: &U, method: Method, path: &str, body: Option<Value>) -> T {
    let (status, text) = call(app, u, method.clone(), path, body).await;
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    serde_json::from_str(if text.is_empty() { "null" } else { &text }).expect("json body")
}

async fn status(app: &TestApp, u: &U, method: Method, path: &str, body: Option<Value>) -> StatusCode {
    call(app, u, method, path, body).await.0
}

async fn befriend(app: &TestApp, a: &U, b: &U) {
    let r: Relationship = ok(app, a, Method::POST, "/api/v1/users/@me/relationships", Some(json!({"username": b.name}))).await;
    assert_eq!(r.kind, RelationshipKind::Outgoing);
    let r: Relationship =
        ok(app, b, Method::PUT, &format!("/api/v1/users/@me/relationships/{}", a.id), Some(json!({"kind": "friend"}))).await;
    assert_eq!(r.kind, RelationshipKind::Friend);
}

async fn block(app: &TestApp, a: &U, b: &U) {
    let r: Relationship =
        ok(app, a, Method::PUT, &format!("/api/v1/users/@me/relationships/{}", b.id), Some(json!({"kind": "blocked"}))).await;
    assert_eq!(r.kind, RelationshipKind::Blocked);
}

/// A server owned by `owner` that `members` joined.
async fn server_with(app: &TestApp, owner: &U, members: &[&U]) -> (String, ChannelId) {
    let server: Value = ok(app, owner, Method::POST, "/api/v1/servers", Some(json!({"name": "Club"}))).await;
    let id = server["id"].as_str().expect("id").to_owned();
    let invite: Value = ok(app, owner, Method::POST, &format!("/api/v1/servers/{id}/invites"), Some(json!({}))).await;
    let code = invite["code"].as_str().expect("code");
    for m in members {
        let _: Value = ok(app, m, Method::POST, &format!("/api/v1/invites/{code}"), None).await;
    }
    let channels: Vec<Value> = ok(app, owner, Method::GET, &format!("/api/v1/servers/{id}/channels"), None).await;
    let text = channels.iter().find(|c| c["kind"] == "text").expect("a text channel");
    (id, text["id"].as_str().expect("id").parse().expect("channel id"))
}

/// Posts a (meaningless to the server) ciphertext in a channel, as a member's client would.
async fn post_message(app: &TestApp, u: &U, channel: ChannelId) -> MessageId {
    post_mentioning(app, u, channel, json!({})).await.expect("sent")
}

/// The same, declaring `mentions`; the status of a refusal.
async fn post_mentioning(app: &TestApp, u: &U, channel: ChannelId, mentions: Value) -> Result<MessageId, StatusCode> {
    let recipients: Value = ok(app, u, Method::GET, &format!("/api/v1/channels/{channel}/recipients"), None).await;
    let body = json!({"ciphertext": "AAECAwQFBgc=", "view": recipients["view"], "mentions": mentions});
    let (code, text) = call(app, u, Method::POST, &format!("/api/v1/channels/{channel}/messages"), Some(body)).await;
    if code != StatusCode::CREATED {
        return Err(code);
    }
    let sent: Value = serde_json::from_str(&text).expect("json");
    Ok(sent["id"].as_str().expect("id").parse().expect("message id"))
}

/// The mentions waiting for `u` in `channel`, as a new session's READY says.
async fn waiting_mentions(app: &TestApp, u: &U, channel: ChannelId) -> u32 {
    let (_, ready) = identified(&app.ws_url, &u.token).await;
    let states: Vec<ReadState> = serde_json::from_value(ready["d"]["read_states"].clone()).expect("read states");
    states.iter().find(|r| r.channel_id == channel).map_or(0, |r| r.mention_count)
}

/// The presences of a `PRESENCE_UPDATE` or of READY, by user.
fn presences(d: &Value) -> Vec<(UserId, PresenceStatus)> {
    d["presences"]
        .as_array()
        .expect("presences")
        .iter()
        .map(|p| {
            (
                p["user_id"].as_str().expect("id").parse().expect("user"),
                serde_json::from_value(p["status"].clone()).expect("status"),
            )
        })
        .collect()
}

/// The next presence of `of` this socket hears.
async fn next_presence(ws: &mut Ws, of: UserId) -> PresenceStatus {
    loop {
        let d = next_event(ws, event_name::PRESENCE_UPDATE).await;
        if let Some((_, s)) = presences(&d).into_iter().find(|(u, _)| *u == of) {
            return s;
        }
    }
}

/// Reads presence events until `of` is seen as `status` (the flush may repeat a state first).
async fn until_presence(ws: &mut Ws, of: UserId, status: PresenceStatus) {
    while next_presence(ws, of).await != status {}
}

/// Reads up to this user's next `USER_UPDATE` (caused by a profile change made now) and
/// returns every presence of `of` seen on the way: what a socket heard before a point in time.
async fn heard_before_marker(app: &TestApp, u: &U, ws: &mut Ws, of: UserId) -> Vec<PresenceStatus> {
    let _: Value = ok(app, u, Method::PATCH, "/api/v1/users/@me", Some(json!({"status_text": "marker"}))).await;
    let mut heard = Vec::new();
    loop {
        let frame = recv_json(ws).await;
        if frame["t"] == event_name::USER_UPDATE {
            return heard;
        }
        if frame["t"] == event_name::PRESENCE_UPDATE {
            heard.extend(presences(&frame["d"]).into_iter().filter(|(u, _)| *u == of).map(|(_, s)| s));
        }
    }
}

async fn friend_requests_are_sent_accepted_declined_cancelled_and_removed(backend: Backend) {
    let app = spawn(backend).await;
    let ann = register(&app, "ann").await;
    let ben = register(&app, "ben").await;
    let cid = register(&app, "cid").await;
    let (mut ben_ws, _) = identified(&app.ws_url, &ben.token).await;
    // Ann asks Ben, by username in any case; Ben hears of it.
    let r: Relationship = ok(&app, &ann, Method::POST, "/api/v1/users/@me/relationships", Some(json!({"username": "BEN"}))).await;
    assert_eq!((r.user.id, r.kind), (ben.id, RelationshipKind::Outgoing));
    let told: Relationship = serde_json::from_value(next_event(&mut ben_ws, event_name::RELATIONSHIP_ADD).await).expect("rel");
    assert_eq!((told.user.id, told.kind), (ann.id, RelationshipKind::Incoming));
    // Asking again changes nothing.
    let again: Relationship =
        ok(&app, &ann, Method::POST, "/api/v1/users/@me/relationships", Some(json!({"username": "ben"}))).await;
    assert_eq!(again.kind, RelationshipKind::Outgoing);
    // Ben accepts: friends both ways.
    let accepted: Relationship =
        ok(&app, &ben, Method::PUT, &format!("/api/v1/users/@me/relationships/{}", ann.id), Some(json!({"kind": "friend"})))
            .await;
    assert_eq!(accepted.kind, RelationshipKind::Friend);
    let ann_list: Vec<Relationship> = ok(&app, &ann, Method::GET, "/api/v1/users/@me/relationships", None).await;
    assert_eq!(ann_list.iter().map(|r| (r.user.id, r.kind)).collect::<Vec<_>>(), [(ben.id, RelationshipKind::Friend)]);
    let (status_code, _) =
        call(&app, &ann, Method::POST, "/api/v1/users/@me/relationships", Some(json!({"username": "ben"}))).await;
    assert_eq!(status_code, StatusCode::CONFLICT, "already friends");
    // Removing ends it on both sides, and Ben hears of it.
    assert_eq!(
        status(&app, &ann, Method::DELETE, &format!("/api/v1/users/@me/relationships/{}", ben.id), None).await,
        StatusCode::NO_CONTENT
    );
    let gone = next_event(&mut ben_ws, event_name::RELATIONSHIP_REMOVE).await;
    assert_eq!(gone["user_id"], ann.id.to_string());
    let ben_list: Vec<Relationship> = ok(&app, &ben, Method::GET, "/api/v1/users/@me/relationships", None).await;
    assert!(ben_list.is_empty());
    // Declined: Cid asks Ann, Ann declines; both lists are empty.
    let _: Relationship = ok(&app, &cid, Method::POST, "/api/v1/users/@me/relationships", Some(json!({"username": "ann"}))).await;
    assert_eq!(
        status(&app, &ann, Method::DELETE, &format!("/api/v1/users/@me/relationships/{}", cid.id), None).await,
        StatusCode::NO_CONTENT
    );
    let cid_list: Vec<Relationship> = ok(&app, &cid, Method::GET, "/api/v1/users/@me/relationships", None).await;
    assert!(cid_list.is_empty());
    // Cancelled: Ann asks Cid and takes it back.
    let _: Relationship = ok(&app, &ann, Method::POST, "/api/v1/users/@me/relationships", Some(json!({"username": "cid"}))).await;
    assert_eq!(
        status(&app, &ann, Method::DELETE, &format!("/api/v1/users/@me/relationships/{}", cid.id), None).await,
        StatusCode::NO_CONTENT
    );
    let cid_list: Vec<Relationship> = ok(&app, &cid, Method::GET, "/api/v1/users/@me/relationships", None).await;
    assert!(cid_list.is_empty());
    // Asking someone who asked first accepts.
    let _: Relationship = ok(&app, &cid, Method::POST, "/api/v1/users/@me/relationships", Some(json!({"username": "ann"}))).await;
    let crossed: Relationship =
        ok(&app, &ann, Method::POST, "/api/v1/users/@me/relationships", Some(json!({"username": "cid"}))).await;
    assert_eq!(crossed.kind, RelationshipKind::Friend);
    // Accepting nothing, or a removal of nothing, is a 404; READY lists what stands.
    assert_eq!(
        status(&app, &ben, Method::PUT, &format!("/api/v1/users/@me/relationships/{}", cid.id), Some(json!({"kind": "friend"})))
            .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(&app, &ben, Method::DELETE, &format!("/api/v1/users/@me/relationships/{}", cid.id), None).await,
        StatusCode::NOT_FOUND
    );
    let (_, ready) = identified(&app.ws_url, &ann.token).await;
    let listed: Vec<Relationship> = serde_json::from_value(ready["d"]["relationships"].clone()).expect("relationships");
    assert_eq!(listed.iter().map(|r| (r.user.id, r.kind)).collect::<Vec<_>>(), [(cid.id, RelationshipKind::Friend)]);
    app.shutdown().await;
}

async fn presence_is_seen_by_friends_and_shared_members_only(backend: Backend) {
    let app = spawn(backend).await;
    let ann = register(&app, "ann").await;
    let friend = register(&app, "friend").await;
    let member = register(&app, "member").await;
    let grouped = register(&app, "grouped").await;
    let stranger = register(&app, "stranger").await;
    let blocked = register(&app, "blocked").await;
    let blocker = register(&app, "blocker").await;
    befriend(&app, &friend, &ann).await;
    // Member, Blocked and Blocker share a server with Ann; Grouped a group DM.
    server_with(&app, &member, &[&ann, &blocked, &blocker]).await;
    let _: Value = ok(&app, &grouped, Method::POST, "/api/v1/channels", Some(json!({"recipients": [ann.id]}))).await;
    block(&app, &ann, &blocked).await;
    block(&app, &blocker, &ann).await;
    let watchers = [(&friend, true), (&member, true), (&grouped, true), (&stranger, false), (&blocked, false), (&blocker, false)];
    let mut sockets = Vec::new();
    for (w, _) in &watchers {
        sockets.push(identified(&app.ws_url, &w.token).await.0);
    }
    // Ann comes online: those who may see her hear it; the others hear nothing of her.
    let (mut ann_ws, ann_ready) = identified(&app.ws_url, &ann.token).await;
    for ((w, sees), ws) in watchers.iter().zip(sockets.iter_mut()) {
        if *sees {
            assert_eq!(next_presence(ws, ann.id).await, PresenceStatus::Online, "{} sees Ann come online", w.name);
        }
    }
    for ((w, sees), ws) in watchers.iter().zip(sockets.iter_mut()) {
        if !*sees {
            assert!(heard_before_marker(&app, w, ws, ann.id).await.is_empty(), "{} hears nothing of Ann", w.name);
        }
    }
    // READY: each sees Ann exactly when the rule says, and Ann sees exactly them back.
    let ann_sees: Vec<UserId> = presences(&ann_ready["d"]).into_iter().map(|(u, _)| u).collect();
    for (w, sees) in &watchers {
        let (_, ready) = identified(&app.ws_url, &w.token).await;
        let seen = presences(&ready["d"]).iter().any(|(u, s)| *u == ann.id && *s == PresenceStatus::Online);
        assert_eq!(seen, *sees, "{} sees Ann in READY", w.name);
        assert_eq!(ann_sees.contains(&w.id), *sees, "Ann sees {} in READY", w.name);
    }
    // Unblocking lets Blocked see Ann again at once; becoming friends lets Stranger.
    assert_eq!(
        status(&app, &ann, Method::DELETE, &format!("/api/v1/users/@me/relationships/{}", blocked.id), None).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(next_presence(&mut sockets[4], ann.id).await, PresenceStatus::Online);
    befriend(&app, &stranger, &ann).await;
    assert_eq!(next_presence(&mut sockets[3], ann.id).await, PresenceStatus::Online);
    // And a block hides her again: Friend blocks Ann and is told she is offline.
    block(&app, &friend, &ann).await;
    assert_eq!(next_presence(&mut sockets[0], ann.id).await, PresenceStatus::Offline);
    ann_ws.close(None).await.expect("close");
    app.shutdown().await;
}

async fn presence_follows_devices_idleness_choices_and_a_resume(backend: Backend) {
    let app = spawn(backend).await;
    let ann = register(&app, "ann").await;
    let ben = register(&app, "ben").await;
    befriend(&app, &ann, &ben).await;
    let (mut ben_ws, _) = identified(&app.ws_url, &ben.token).await;
    let (mut phone, phone_ready) = identified(&app.ws_url, &ann.token).await;
    assert_eq!(next_presence(&mut ben_ws, ann.id).await, PresenceStatus::Online);
    // Idle on her only session: idle; a second, active device: online again.
    send(&mut phone, json!({"op": op::ACTIVITY, "d": {"idle": true}})).await;
    assert_eq!(next_presence(&mut ben_ws, ann.id).await, PresenceStatus::Idle);
    let laptop_user = login(&app, &ann).await;
    let (mut laptop, _) = identified(&app.ws_url, &laptop_user.token).await;
    assert_eq!(next_presence(&mut ben_ws, ann.id).await, PresenceStatus::Online);
    // The laptop closes: idle again (the phone still is).
    laptop.close(None).await.expect("close");
    assert_eq!(next_presence(&mut ben_ws, ann.id).await, PresenceStatus::Idle);
    send(&mut phone, json!({"op": op::ACTIVITY, "d": {"idle": false}})).await;
    assert_eq!(next_presence(&mut ben_ws, ann.id).await, PresenceStatus::Online);
    // Do not disturb with a custom status, kept by the server and told to her other devices.
    let (mut second, _) = identified(&app.ws_url, &laptop_user.token).await;
    let settings = json!({"status": "dnd", "custom_status": {"text": "  focusing  "}});
    let saved: PresenceSettings = ok(&app, &ann, Method::PUT, "/api/v1/users/@me/presence", Some(settings)).await;
    assert_eq!(saved.custom_status.as_ref().map(|c| c.text.as_str()), Some("focusing"));
    let told: PresenceSettings =
        serde_json::from_value(next_event(&mut second, event_name::PRESENCE_SETTINGS_UPDATE).await).expect("settings");
    assert_eq!(told, saved);
    let d = next_event(&mut ben_ws, event_name::PRESENCE_UPDATE).await;
    assert_eq!(d["presences"][0]["status"], "dnd");
    assert_eq!(d["presences"][0]["custom_status"]["text"], "focusing");
    let fetched: PresenceSettings = ok(&app, &ann, Method::GET, "/api/v1/users/@me/presence", None).await;
    assert_eq!(fetched, saved);
    // Invisible: Ben sees her offline, though she is connected.
    let _: PresenceSettings =
        ok(&app, &ann, Method::PUT, "/api/v1/users/@me/presence", Some(json!({"status": "invisible"}))).await;
    assert_eq!(next_presence(&mut ben_ws, ann.id).await, PresenceStatus::Offline);
    let _: PresenceSettings = ok(&app, &ann, Method::PUT, "/api/v1/users/@me/presence", Some(json!({"status": "online"}))).await;
    assert_eq!(next_presence(&mut ben_ws, ann.id).await, PresenceStatus::Online);
    second.close(None).await.expect("close");
    // The phone's connection drops (no close frame) and RESUMEs within the grace: Ben hears no
    // flap. Dropped again, and not resumed, she goes offline once the grace passed.
    drop(phone);
    let (mut resumed, _) = tokio_tungstenite::connect_async(&app.ws_url).await.expect("connect");
    let _hello = recv_json(&mut resumed).await;
    let resume = json!({"token": ann.token, "session_id": phone_ready["d"]["session_id"], "seq": phone_ready["s"]});
    send(&mut resumed, json!({"op": op::RESUME, "d": resume})).await;
    next_event(&mut resumed, event_name::RESUMED).await;
    assert!(heard_before_marker(&app, &ben, &mut ben_ws, ann.id).await.is_empty(), "a resumed session does not flap");
    drop(resumed);
    assert_eq!(next_presence(&mut ben_ws, ann.id).await, PresenceStatus::Offline, "offline once the grace passed");
    app.shutdown().await;
}

async fn joining_or_leaving_a_server_shows_or_hides_presence_at_once(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner").await;
    let newcomer = register(&app, "newcomer").await;
    let server: Value = ok(&app, &owner, Method::POST, "/api/v1/servers", Some(json!({"name": "Club"}))).await;
    let id = server["id"].as_str().expect("id").to_owned();
    let invite: Value = ok(&app, &owner, Method::POST, &format!("/api/v1/servers/{id}/invites"), Some(json!({}))).await;
    let (mut owner_ws, _) = identified(&app.ws_url, &owner.token).await;
    let (mut new_ws, _) = identified(&app.ws_url, &newcomer.token).await;
    // Strangers until the join; then each hears the other online, without waiting for a change.
    let _: Value =
        ok(&app, &newcomer, Method::POST, &format!("/api/v1/invites/{}", invite["code"].as_str().expect("code")), None).await;
    assert_eq!(next_presence(&mut owner_ws, newcomer.id).await, PresenceStatus::Online);
    assert_eq!(next_presence(&mut new_ws, owner.id).await, PresenceStatus::Online);
    // Kicked: strangers again, each told the other is offline.
    assert_eq!(
        status(&app, &owner, Method::DELETE, &format!("/api/v1/servers/{id}/members/{}", newcomer.id), None).await,
        StatusCode::NO_CONTENT
    );
    until_presence(&mut owner_ws, newcomer.id, PresenceStatus::Offline).await;
    until_presence(&mut new_ws, owner.id, PresenceStatus::Offline).await;
    app.shutdown().await;
}

async fn a_block_forbids_dms_requests_group_dms_and_typing(backend: Backend) {
    let app = spawn(backend).await;
    let ann = register(&app, "ann").await;
    let ben = register(&app, "ben").await;
    let cid = register(&app, "cid").await;
    befriend(&app, &ann, &ben).await;
    let (mut ann_ws, _) = identified(&app.ws_url, &ann.token).await;
    // Ben blocks Ann: their friendship ends; Ann is told it ended, not that she is blocked.
    block(&app, &ben, &ann).await;
    let gone = next_event(&mut ann_ws, event_name::RELATIONSHIP_REMOVE).await;
    assert_eq!(gone["user_id"], ben.id.to_string());
    let ann_list: Vec<Relationship> = ok(&app, &ann, Method::GET, "/api/v1/users/@me/relationships", None).await;
    assert!(ann_list.is_empty(), "the blocked user holds nothing about the block");
    let envelopes_before = app.count("envelopes").await;
    let dm = |to: UserId| json!({"recipient": to, "messages": [{"device_id": 1, "registration_id": 1, "kind": 2, "content": "AAECAwQ="}]});
    // Ann can neither DM Ben, ask him, put him in a group DM, nor tell him she types.
    for (method, path, body) in [
        (Method::POST, "/api/v1/messages".to_owned(), Some(dm(ben.id))),
        (Method::POST, "/api/v1/users/@me/relationships".to_owned(), Some(json!({"username": "ben"}))),
        (Method::POST, "/api/v1/channels".to_owned(), Some(json!({"recipients": [ben.id, cid.id]}))),
        (Method::POST, format!("/api/v1/users/{}/typing", ben.id), None),
    ] {
        let (code, body) = call(&app, &ann, method.clone(), &path, body).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert!(!body.contains("block"), "the blocked user is not told why: {body}");
    }
    let group: Value = ok(&app, &cid, Method::POST, "/api/v1/channels", Some(json!({"recipients": [ann.id]}))).await;
    let add = format!("/api/v1/channels/{}/recipients/{}", group["id"].as_str().expect("id"), ben.id);
    assert_eq!(status(&app, &ann, Method::PUT, &add, None).await, StatusCode::FORBIDDEN);
    // Ben, the blocker, cannot DM her either until he unblocks, and is told why.
    let (code, body) = call(&app, &ben, Method::POST, "/api/v1/messages", Some(dm(ann.id))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(body.contains("unblock"), "{body}");
    assert_eq!(app.count("envelopes").await, envelopes_before, "nothing was queued");
    // Others are unaffected: Cid adds Ben to the group with Ann.
    assert_eq!(status(&app, &cid, Method::PUT, &add, None).await, StatusCode::NO_CONTENT);
    // Unblocked, Ann may ask again.
    assert_eq!(
        status(&app, &ben, Method::DELETE, &format!("/api/v1/users/@me/relationships/{}", ann.id), None).await,
        StatusCode::NO_CONTENT
    );
    let r: Relationship = ok(&app, &ann, Method::POST, "/api/v1/users/@me/relationships", Some(json!({"username": "ben"}))).await;
    assert_eq!(r.kind, RelationshipKind::Outgoing);
    app.shutdown().await;
}

async fn read_markers_sync_between_devices_and_never_move_back(backend: Backend) {
    let app = spawn(backend).await;
    let ann = register(&app, "ann").await;
    let ann2 = login(&app, &ann).await;
    let ben = register(&app, "ben").await;
    let outsider = register(&app, "outsider").await;
    let (server, channel) = server_with(&app, &ben, &[&ann]).await;
    let first = post_message(&app, &ben, channel).await;
    let second = post_message(&app, &ben, channel).await;
    let (mut other_device, _) = identified(&app.ws_url, &ann2.token).await;
    // Read on one device, the other hears it.
    let marked: ReadState =
        ok(&app, &ann, Method::PUT, &format!("/api/v1/channels/{channel}/read"), Some(json!({"message_id": second}))).await;
    assert_eq!(marked, ReadState { channel_id: channel, last_read_id: second, mention_count: 0 });
    let told: ReadState = serde_json::from_value(next_event(&mut other_device, event_name::CHANNEL_READ).await).expect("read");
    assert_eq!(told, marked);
    // An older message does not move it back.
    let kept: ReadState =
        ok(&app, &ann, Method::PUT, &format!("/api/v1/channels/{channel}/read"), Some(json!({"message_id": first}))).await;
    assert_eq!(kept.last_read_id, second);
    // DMs: by server timestamp.
    let dm: Value = ok(&app, &ann2, Method::PUT, &format!("/api/v1/users/{}/read", ben.id), Some(json!({"at": 1_000}))).await;
    assert_eq!(dm["last_read_at"], 1_000);
    let dm: Value = ok(&app, &ann2, Method::PUT, &format!("/api/v1/users/{}/read", ben.id), Some(json!({"at": 500}))).await;
    assert_eq!(dm["last_read_at"], 1_000, "never back");
    // A new session of either device starts from what was read anywhere.
    let (_, ready) = identified(&app.ws_url, &ann.token).await;
    let states: Vec<ReadState> = serde_json::from_value(ready["d"]["read_states"].clone()).expect("read states");
    assert_eq!(states, [ReadState { channel_id: channel, last_read_id: second, mention_count: 0 }]);
    assert_eq!(ready["d"]["dm_read_states"], json!([{"user_id": ben.id.to_string(), "last_read_at": 1_000}]));
    // Someone who cannot read the channel, or a message of another channel, gets a 404.
    let path = format!("/api/v1/channels/{channel}/read");
    assert_eq!(status(&app, &outsider, Method::PUT, &path, Some(json!({"message_id": second}))).await, StatusCode::NOT_FOUND);
    let (_, elsewhere) = server_with(&app, &ben, &[]).await;
    let foreign = post_message(&app, &ben, elsewhere).await;
    assert_eq!(status(&app, &ann, Method::PUT, &path, Some(json!({"message_id": foreign}))).await, StatusCode::NOT_FOUND);
    // Leaving the server drops its markers from READY.
    assert_eq!(status(&app, &ann, Method::POST, &format!("/api/v1/servers/{server}/leave"), None).await, StatusCode::NO_CONTENT);
    let (_, ready) = identified(&app.ws_url, &ann.token).await;
    assert_eq!(ready["d"]["read_states"], json!([]));
    app.shutdown().await;
}

async fn typing_reaches_the_readers_and_is_rate_limited(backend: Backend) {
    let app = spawn(backend).await;
    let ann = register(&app, "ann").await;
    let ben = register(&app, "ben").await;
    let outsider = register(&app, "outsider").await;
    let (_, channel) = server_with(&app, &ben, &[&ann]).await;
    let (mut ben_ws, _) = identified(&app.ws_url, &ben.token).await;
    let (mut ann_ws, _) = identified(&app.ws_url, &ann.token).await;
    assert_eq!(
        status(&app, &ann, Method::POST, &format!("/api/v1/channels/{channel}/typing"), None).await,
        StatusCode::NO_CONTENT
    );
    let typing = next_event(&mut ben_ws, event_name::TYPING_START).await;
    assert_eq!(
        (typing["user_id"].as_str(), typing["channel_id"].as_str()),
        (Some(ann.id.to_string().as_str()), Some(channel.to_string().as_str()))
    );
    assert_eq!(status(&app, &ann, Method::POST, &format!("/api/v1/users/{}/typing", ben.id), None).await, StatusCode::NO_CONTENT);
    let typing = next_event(&mut ben_ws, event_name::TYPING_START).await;
    assert_eq!(typing["user_id"], ann.id.to_string());
    assert!(typing.get("channel_id").is_none(), "a DM's typing names no channel");
    // The typer's own sessions do not hear themselves.
    let _: Value = ok(&app, &ann, Method::PATCH, "/api/v1/users/@me", Some(json!({"status_text": "marker"}))).await;
    loop {
        let frame = recv_json(&mut ann_ws).await;
        assert_ne!(frame["t"], event_name::TYPING_START);
        if frame["t"] == event_name::USER_UPDATE {
            break;
        }
    }
    // Outsiders may not type there; the third indicator within the burst is the last.
    assert_eq!(
        status(&app, &outsider, Method::POST, &format!("/api/v1/channels/{channel}/typing"), None).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(&app, &ann, Method::POST, &format!("/api/v1/channels/{channel}/typing"), None).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(&app, &ann, Method::POST, &format!("/api/v1/channels/{channel}/typing"), None).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    app.shutdown().await;
}

async fn mentions_are_counted_until_read_and_everyone_needs_the_permission(backend: Backend) {
    let app = spawn(backend).await;
    let ben = register(&app, "ben").await;
    let ann = register(&app, "ann").await;
    let cid = register(&app, "cid").await;
    let outsider = register(&app, "outsider").await;
    let (server, channel) = server_with(&app, &ben, &[&ann, &cid]).await;
    let (mut ann_ws, _) = identified(&app.ws_url, &ann.token).await;
    // Ben names Ann (and someone who does not read the channel: nobody is told of that).
    let named = post_mentioning(&app, &ben, channel, json!({"users": [ann.id, outsider.id, ann.id]})).await.expect("sent");
    let created = next_event(&mut ann_ws, event_name::MESSAGE_CREATE).await;
    assert_eq!(created["id"], named.to_string());
    assert_eq!(created["mentions"]["users"], json!([ann.id.to_string(), outsider.id.to_string()]), "as declared, once each");
    assert_eq!((waiting_mentions(&app, &ann, channel).await, waiting_mentions(&app, &cid, channel).await), (1, 0));
    assert_eq!(waiting_mentions(&app, &outsider, channel).await, 0);
    // @everyone and roles need MENTION_EVERYONE, which members lack by default and the owner has.
    assert_eq!(post_mentioning(&app, &ann, channel, json!({"everyone": true})).await, Err(StatusCode::FORBIDDEN));
    post_mentioning(&app, &ben, channel, json!({"everyone": true})).await.expect("the owner may");
    assert_eq!((waiting_mentions(&app, &ann, channel).await, waiting_mentions(&app, &cid, channel).await), (2, 1));
    assert_eq!(waiting_mentions(&app, &ben, channel).await, 0, "the author is not counted");
    let role: Value =
        ok(&app, &ben, Method::POST, &format!("/api/v1/servers/{server}/roles"), Some(json!({"name": "crew"}))).await;
    let role_id = role["id"].as_str().expect("role id").to_owned();
    let _: Value = ok(
        &app,
        &ben,
        Method::PUT,
        &format!("/api/v1/servers/{server}/members/{}/roles", cid.id),
        Some(json!({"roles": [role_id]})),
    )
    .await;
    let last = post_mentioning(&app, &ben, channel, json!({"roles": [role_id]})).await.expect("role mention");
    assert_eq!((waiting_mentions(&app, &ann, channel).await, waiting_mentions(&app, &cid, channel).await), (2, 2));
    // Refused: another server's role, too many users; nothing is stored for them.
    let (other_server, _) = server_with(&app, &ben, &[]).await;
    let foreign: Value =
        ok(&app, &ben, Method::POST, &format!("/api/v1/servers/{other_server}/roles"), Some(json!({"name": "x"}))).await;
    let mentions_before = app.count("message_mentions").await;
    assert_eq!(post_mentioning(&app, &ben, channel, json!({"roles": [foreign["id"]]})).await, Err(StatusCode::BAD_REQUEST));
    let crowd: Vec<String> = (1..=51).map(|i| i.to_string()).collect();
    assert_eq!(post_mentioning(&app, &ben, channel, json!({"users": crowd})).await, Err(StatusCode::BAD_REQUEST));
    assert_eq!(app.count("message_mentions").await, mentions_before);
    // Reading past them clears the count, on every device.
    let read: ReadState =
        ok(&app, &cid, Method::PUT, &format!("/api/v1/channels/{channel}/read"), Some(json!({"message_id": named}))).await;
    assert_eq!(read.mention_count, 2, "the two after the marker still wait");
    let read: ReadState =
        ok(&app, &cid, Method::PUT, &format!("/api/v1/channels/{channel}/read"), Some(json!({"message_id": last}))).await;
    assert_eq!(read.mention_count, 0);
    assert_eq!(waiting_mentions(&app, &cid, channel).await, 0);
    // History shows what was declared.
    let page: Vec<Value> = ok(&app, &ann, Method::GET, &format!("/api/v1/channels/{channel}/messages?limit=10"), None).await;
    let first = page.iter().find(|m| m["id"] == named.to_string()).expect("in history");
    assert_eq!(first["mentions"]["users"][0], ann.id.to_string());
    // An edit declares again, for its new text: Ann, named in the edit, has one more waiting.
    let recipients: Value = ok(&app, &ben, Method::GET, &format!("/api/v1/channels/{channel}/recipients"), None).await;
    let edited: Value = ok(
        &app,
        &ben,
        Method::PATCH,
        &format!("/api/v1/channels/{channel}/messages/{last}"),
        Some(json!({"ciphertext": "AAECAwQFBgc=", "view": recipients["view"], "mentions": {"users": [ann.id]}})),
    )
    .await;
    assert_eq!(edited["mentions"], json!({"users": [ann.id.to_string()]}));
    assert_eq!(waiting_mentions(&app, &ann, channel).await, 3);
    // Someone who blocked the author is not notified.
    block(&app, &ann, &ben).await;
    let before = waiting_mentions(&app, &ann, channel).await;
    post_mentioning(&app, &ben, channel, json!({"users": [ann.id]})).await.expect("sent");
    assert_eq!(waiting_mentions(&app, &ann, channel).await, before);
    app.shutdown().await;
}

async fn notification_settings_are_kept_per_server_and_channel_for_every_device(backend: Backend) {
    let app = spawn(backend).await;
    let ann = register(&app, "ann").await;
    let ann2 = login(&app, &ann).await;
    let ben = register(&app, "ben").await;
    let outsider = register(&app, "outsider").await;
    let (server, channel) = server_with(&app, &ben, &[&ann]).await;
    let (mut other_device, _) = identified(&app.ws_url, &ann2.token).await;
    let on = |id: &str| format!("/api/v1/users/@me/notification-settings/{id}");
    // Only mentions from the server; the channel muted for an hour.
    let saved: Value = ok(&app, &ann, Method::PUT, &on(&server), Some(json!({"level": "mentions"}))).await;
    assert_eq!(saved, json!({"target_id": server, "level": "mentions"}));
    let told = next_event(&mut other_device, event_name::NOTIFICATION_SETTINGS_UPDATE).await;
    assert_eq!(told, saved);
    let hour = now_ms() + 3_600_000;
    let muted: Value =
        ok(&app, &ann, Method::PUT, &on(&channel.to_string()), Some(json!({"muted": true, "muted_until": hour}))).await;
    assert_eq!(muted["muted_until"], hour);
    let (_, ready) = identified(&app.ws_url, &ann.token).await;
    let mut expected = vec![
        json!({"target_id": channel.to_string(), "muted": true, "muted_until": hour}),
        json!({"target_id": server, "level": "mentions"}),
    ];
    expected.sort_by_key(|v| v["target_id"].as_str().and_then(|t| t.parse::<i64>().ok()));
    assert_eq!(ready["d"]["notification_settings"], Value::Array(expected));
    // Back to the defaults: nothing kept.
    let _: Value = ok(&app, &ann, Method::PUT, &on(&server), Some(json!({}))).await;
    let _: Value = ok(&app, &ann, Method::PUT, &on(&channel.to_string()), Some(json!({}))).await;
    assert_eq!(app.count("notification_settings").await, 0);
    // Refused: a server or channel the caller is not in, an end without a mute, an end past.
    assert_eq!(status(&app, &outsider, Method::PUT, &on(&server), Some(json!({"level": "all"}))).await, StatusCode::NOT_FOUND);
    assert_eq!(
        status(&app, &outsider, Method::PUT, &on(&channel.to_string()), Some(json!({"muted": true}))).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(&app, &ann, Method::PUT, &on(&server), Some(json!({"muted_until": hour}))).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        status(&app, &ann, Method::PUT, &on(&server), Some(json!({"muted": true, "muted_until": 5}))).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(status(&app, &ann, Method::PUT, &on(&server), Some(json!({"level": "loud"}))).await, StatusCode::BAD_REQUEST);
    assert_eq!(app.count("notification_settings").await, 0);
    app.shutdown().await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

async fn bad_input_is_refused(backend: Backend) {
    let app = spawn(backend).await;
    let ann = register(&app, "ann").await;
    let ben = register(&app, "ben").await;
    let rel = "/api/v1/users/@me/relationships";
    let cases: Vec<(Method, String, Option<Value>, u16)> = vec![
        (Method::POST, rel.into(), Some(json!({"username": "ann"})), 400),
        (Method::POST, rel.into(), Some(json!({"username": "nobody-here"})), 404),
        (Method::POST, rel.into(), Some(json!({"username": "no spaces allowed"})), 422),
        (Method::POST, rel.into(), Some(json!({"user": "ben"})), 400),
        (Method::PUT, format!("{rel}/{}", ben.id), Some(json!({"kind": "incoming"})), 400),
        (Method::PUT, format!("{rel}/{}", ben.id), Some(json!({"kind": "friend"})), 404),
        (Method::PUT, format!("{rel}/{}", ann.id), Some(json!({"kind": "blocked"})), 400),
        (Method::PUT, format!("{rel}/123456789"), Some(json!({"kind": "blocked"})), 404),
        (Method::PUT, format!("{rel}/abc"), Some(json!({"kind": "blocked"})), 400),
        (Method::DELETE, format!("{rel}/{}", ben.id), None, 404),
        (Method::PUT, "/api/v1/users/@me/presence".into(), Some(json!({"status": "offline"})), 422),
        (
            Method::PUT,
            "/api/v1/users/@me/presence".into(),
            Some(json!({"status": "online", "custom_status": {"text": "   "}})),
            422,
        ),
        (
            Method::PUT,
            "/api/v1/users/@me/presence".into(),
            Some(json!({"status": "online", "custom_status": {"text": "x".repeat(129)}})),
            422,
        ),
        (
            Method::PUT,
            "/api/v1/users/@me/presence".into(),
            Some(json!({"status": "online", "custom_status": {"text": "a\nb"}})),
            422,
        ),
        (
            Method::PUT,
            "/api/v1/users/@me/presence".into(),
            Some(json!({"status": "online", "custom_status": {"text": "ok", "expires_at": 1}})),
            422,
        ),
        (Method::PUT, "/api/v1/users/@me/presence".into(), Some(json!({"status": "away"})), 400),
        (Method::PUT, format!("/api/v1/users/{}/read", ben.id), Some(json!({"at": -1})), 400),
        (Method::PUT, format!("/api/v1/users/{}/read", ben.id), Some(json!({"at": 4_000_000_000_000_i64})), 400),
        (Method::PUT, format!("/api/v1/users/{}/read", ann.id), Some(json!({"at": 1})), 400),
        (Method::PUT, "/api/v1/users/99999/read".into(), Some(json!({"at": 1})), 404),
        (Method::PUT, "/api/v1/channels/99999/read".into(), Some(json!({"message_id": "1"})), 404),
        (Method::POST, "/api/v1/channels/99999/typing".into(), None, 404),
        (Method::POST, format!("/api/v1/users/{}/typing", ann.id), None, 400),
    ];
    for (method, path, body, expected) in cases {
        let (code, text) = call(&app, &ann, method.clone(), &path, body.clone()).await;
        assert_eq!(code.as_u16(), expected, "{method} {path} {body:?}: {text}");
        let parsed: Value = serde_json::from_str(&text).expect("a JSON error body");
        assert!(parsed["error"]["code"].is_string(), "{text}");
    }
    assert_eq!(app.count("relationships").await, 0, "nothing half-written");
    assert_eq!(app.count("presence_settings").await, 0);
    app.shutdown().await;
}
