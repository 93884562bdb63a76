//! Guest accounts through the real server: a server's owner makes a guest invite; anyone
//! redeems it without an account and gets one, joined to the server, that ends after the
//! invite's time; the housekeeping loop (every five minutes, on tokio's paused clock here)
//! removes it then with its data, and the platform audit log says so.

mod common;

use std::time::Duration;

use common::{Backend, ClockHold, TestApp};
use copains_client_core::admin::PlatformAction;
use copains_client_core::api::AuthResponse;
use copains_client_core::UserId;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn call(app: &TestApp, token: Option<&str>, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn register(app: &TestApp, name: &str) -> (UserId, String) {
    let body = json!({"username": name, "password": "a-long-password"});
    let (st, auth) = call(app, None, Method::POST, "/api/v1/auth/register", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{auth}");
    let auth: AuthResponse = serde_json::from_value(auth).expect("auth");
    (auth.user.id, auth.tokens.access_token)
}

#[tokio::test(start_paused = true)]
async fn a_guest_joins_by_a_guest_invite_and_is_removed_when_its_time_is_up() {
    let _hold = ClockHold::new();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.gateway.heartbeat_interval_ms = 3_600_000;
        c.api.auth.access_token_ttl_secs = 7 * 24 * 3600;
    })
    .await;
    let (_, owner) = register(&app, "owner").await;
    let (_, member) = register(&app, "member").await;
    let (_, server) = call(&app, Some(&owner), Method::POST, "/api/v1/servers", Some(json!({"name": "Open house"}))).await;
    let sid = server["id"].as_str().expect("id").to_owned();
    let invites = format!("/api/v1/servers/{sid}/invites");
    let (_, plain) = call(&app, Some(&owner), Method::POST, &invites, Some(json!({}))).await;
    let plain = plain["code"].as_str().expect("code").to_owned();
    assert_eq!(call(&app, Some(&member), Method::POST, &format!("/api/v1/invites/{plain}"), None).await.0, StatusCode::OK);

    // Only the owner (or a platform admin) makes guest invites; a day, by the invite.
    let (st, _) = call(&app, Some(&member), Method::POST, &invites, Some(json!({"guest_ttl_secs": 86_400}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = call(&app, Some(&owner), Method::POST, &invites, Some(json!({"guest_ttl_secs": 60}))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, invite) = call(&app, Some(&owner), Method::POST, &invites, Some(json!({"guest_ttl_secs": 86_400}))).await;
    assert_eq!(st, StatusCode::CREATED, "{invite}");
    assert_eq!(invite["guest_ttl_secs"], json!(86_400));
    let code = invite["code"].as_str().expect("code").to_owned();

    // Strangers see a guest invite, and only a guest invite.
    let (st, preview) = call(&app, None, Method::GET, &format!("/api/v1/invites/{code}/guest"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!((preview["server_name"].clone(), preview["member_count"].clone()), (json!("Open house"), json!(2)));
    assert_eq!(call(&app, None, Method::GET, &format!("/api/v1/invites/{plain}/guest"), None).await.0, StatusCode::NOT_FOUND);
    let guest = format!("/api/v1/invites/{code}/guest");
    let (st, _) =
        call(&app, None, Method::POST, &format!("/api/v1/invites/{plain}/guest"), Some(json!({"password": "long enough"}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "not a guest invite: no account");
    assert_eq!(
        call(&app, None, Method::POST, &guest, Some(json!({"password": "short"}))).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(app.count("users").await, 2, "nothing made by refusals");

    let start = copains_backend::store::now_ms();
    let (st, made) =
        call(&app, None, Method::POST, &guest, Some(json!({"password": "long enough", "display_name": "Visitor"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{made}");
    let made: AuthResponse = serde_json::from_value(made).expect("auth");
    assert!(made.user.username.starts_with("guest-"), "{}", made.user.username);
    assert_eq!(made.user.display_name.as_deref(), Some("Visitor"));
    assert_eq!(made.user.guest_expires_at, Some(start + 86_400_000));
    let token = made.tokens.access_token.clone();
    let (st, servers) = call(&app, Some(&token), Method::GET, "/api/v1/servers", None).await;
    assert_eq!((st, servers[0]["id"].clone()), (StatusCode::OK, json!(sid)), "joined");
    // It may sign in again with its password while it lasts.
    let login = json!({"username": made.user.username, "password": "long enough"});
    assert_eq!(call(&app, None, Method::POST, "/api/v1/auth/login", Some(login.clone())).await.0, StatusCode::OK);
    // A guest visits this one server: it makes none, joins no other, and is given none.
    let (st, body) = call(&app, Some(&token), Method::POST, "/api/v1/servers", Some(json!({"name": "Mine"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    let (_, elsewhere) = call(&app, Some(&member), Method::POST, "/api/v1/servers", Some(json!({"name": "Elsewhere"}))).await;
    let elsewhere = elsewhere["id"].as_str().expect("id").to_owned();
    let (_, other_invite) =
        call(&app, Some(&member), Method::POST, &format!("/api/v1/servers/{elsewhere}/invites"), Some(json!({}))).await;
    let other_code = other_invite["code"].as_str().expect("code");
    let (st, body) = call(&app, Some(&token), Method::POST, &format!("/api/v1/invites/{other_code}"), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    let transfer = json!({"owner_id": made.user.id.to_string()});
    let (st, body) = call(&app, Some(&owner), Method::PATCH, &format!("/api/v1/servers/{sid}"), Some(transfer)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Nor does it gather people into group DMs.
    let member_id = call(&app, Some(&member), Method::GET, "/api/v1/users/@me", None).await.1["id"].clone();
    let (st, body) = call(&app, Some(&token), Method::POST, "/api/v1/channels", Some(json!({"recipients": [member_id]}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    let (_, servers) = call(&app, Some(&token), Method::GET, "/api/v1/servers", None).await;
    assert_eq!(servers.as_array().map(Vec::len), Some(1), "still in its one server: {servers}");
    let (_, server) = call(&app, Some(&owner), Method::GET, &format!("/api/v1/servers/{sid}"), None).await;
    assert_ne!(server["owner_id"], json!(made.user.id.to_string()), "{server}");

    // A guest banned from the server does not come back as a new guest from the same client.
    let (st, other) = call(&app, None, Method::POST, &guest, Some(json!({"password": "long enough too"}))).await;
    assert_eq!(st, StatusCode::CREATED);
    let other: AuthResponse = serde_json::from_value(other).expect("auth");
    let ban = format!("/api/v1/servers/{sid}/bans/{}", other.user.id);
    assert_eq!(call(&app, Some(&owner), Method::PUT, &ban, None).await.0, StatusCode::NO_CONTENT);
    let (st, refused) = call(&app, None, Method::POST, &guest, Some(json!({"password": "long enough three"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{refused}");
    let users_before = app.count("users").await;

    let store = &app.running().state().store;
    let gone = || async { store.user(made.user.id).await.expect("read").is_none() };
    // A minute before its end: still there, however often the loop runs.
    for _ in 0..30 {
        tokio::time::advance(Duration::from_secs(47 * 60)).await;
        tokio::task::yield_now().await;
    }
    tokio::time::advance(Duration::from_secs(86_400 - 30 * 47 * 60 - 60)).await;
    settle().await;
    assert!(!gone().await, "a minute before the end");
    // Five minutes past its end at most, it is removed with its membership and audited.
    tokio::time::advance(Duration::from_secs(6 * 60)).await;
    let mut waited = 0;
    while !gone().await {
        // The loop checks every five minutes of the clock: ten more at most.
        assert!(waited < 600, "the guest was not removed");
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        waited += 1;
    }
    assert_eq!(app.count(&format!("members WHERE user_id = {}", made.user.id)).await, 0);
    assert_eq!(call(&app, None, Method::POST, "/api/v1/auth/login", Some(login)).await.0, StatusCode::UNAUTHORIZED);
    let log = store.platform_audit(10, None, Some(PlatformAction::GuestExpired), None, None, None).await.expect("log");
    let ended: Vec<_> = log.entries.iter().map(|e| (e.target_id, e.actor_id)).collect();
    assert!(ended.contains(&(Some(made.user.id), None)), "{ended:?}");
    assert_eq!(ended.len(), 2, "both guests ended");
    assert_eq!(app.count("users").await, users_before - 2, "the members stay");
    let created = store.platform_audit(10, None, Some(PlatformAction::GuestCreated), None, None, None).await.expect("log");
    assert_eq!(created.entries.len(), 2);
    app.shutdown().await;
}

/// Lets the server's tasks run (the clock stays where it is).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}
