//! Abuse controls through the real server: login throttling (on tokio's paused clock) answers
//! 429 with `Retry-After` and recovers, and writes security events with a keyed address hash,
//! never the address; API responses carry the security headers, HSTS behind an HTTPS proxy,
//! CORS only for configured origins; platform bans keep an account and the clients it used
//! out until lifted or ended; `rotate-key` seals every kept address again while the server
//! runs and leaves each readable; retention erases addresses and old audit entries.

mod common;

use std::time::Duration;

use common::{Backend, ClockHold, TestApp};
use copains_client_core::admin::{AdminSessions, BanKind, BansCreated, PlatformAction, PlatformAuditLog, PlatformBans, Severity};
use copains_client_core::api::PlatformRole;
use copains_client_core::{ErrorCode, UserId};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    bans_keep_an_account_and_its_clients_out_until_lifted,
    rotate_key_leaves_every_kept_address_readable_while_the_server_runs,
    retention_erases_addresses_and_old_audit_entries,
);

const PASSWORD: &str = "a-long-password";

/// A raw call with a user agent of its own (a client fingerprint is address and user agent).
async fn call(
    app: &TestApp,
    agent: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let client = reqwest::Client::builder().user_agent(agent).build().expect("client");
    let mut req = client.request(method, app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), headers)
}

/// Registers `name` from `agent`; returns its id and access token.
async fn register(app: &TestApp, agent: &str, name: &str) -> (UserId, String) {
    let (st, body, _) =
        call(app, agent, None, Method::POST, "/api/v1/auth/register", Some(json!({"username": name, "password": PASSWORD})))
            .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    (serde_json::from_value(body["user"]["id"].clone()).expect("id"), body["access_token"].as_str().expect("token").to_owned())
}

async fn login(app: &TestApp, agent: &str, name: &str, password: &str) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    call(app, agent, None, Method::POST, "/api/v1/auth/login", Some(json!({"username": name, "password": password}))).await
}

/// An admin (promoted as the command line does), signed in from `agent`.
async fn admin(app: &TestApp, name: &str) -> (UserId, String) {
    let (id, _) = register(app, "admin-browser", name).await;
    let store = &app.running().state().store;
    store.ensure_admin(UserId(0), name, name, None, 0).await.expect("promote").expect("exists");
    let (st, body, _) = login(app, "admin-browser", name, PASSWORD).await;
    assert_eq!(st, StatusCode::OK);
    (id, body["access_token"].as_str().expect("token").to_owned())
}

async fn audit(app: &TestApp, token: &str, query: &str) -> PlatformAuditLog {
    let (st, body, _) =
        call(app, "admin-browser", Some(token), Method::GET, &format!("/api/v1/admin/audit-log{query}"), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    serde_json::from_value(body).expect("audit log")
}

fn code(body: &Value) -> ErrorCode {
    serde_json::from_value(body["error"]["code"].clone()).expect("error code")
}

/// Failed sign-ins from one address start doubling waits after five; an attempt during a wait
/// is refused with 429 and `Retry-After` before any password is checked (the right one too);
/// once the wait is over the owner signs in, and counting starts over. Each failure is a
/// security event with a keyed hash of the address, never the address.
#[tokio::test(start_paused = true)]
async fn login_throttling_answers_429_with_retry_after_and_recovers() {
    let _hold = ClockHold::new();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.gateway.heartbeat_interval_ms = 3_600_000).await;
    let (ann, _) = register(&app, "guesser", "ann").await;
    for n in 1..=5 {
        let (st, body, _) = login(&app, "guesser", "ann", "wrong password").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "failure {n}: {body}");
    }
    // The sixth failure starts a one-second wait.
    assert_eq!(login(&app, "guesser", "ann", "wrong password").await.0, StatusCode::UNAUTHORIZED);
    let (st, body, headers) = login(&app, "guesser", "ann", PASSWORD).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "the right password waits too: {body}");
    assert_eq!(code(&body), ErrorCode::RateLimited);
    assert_eq!(headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    // A name that does not exist is throttled the same way (the wait tells nothing).
    for _ in 0..6 {
        login(&app, "guesser", "nobody-here", "wrong password").await;
    }
    assert_eq!(login(&app, "guesser", "nobody-here", "x").await.0, StatusCode::TOO_MANY_REQUESTS);

    tokio::time::advance(Duration::from_millis(1_001)).await;
    let (st, body, _) = login(&app, "guesser", "ann", PASSWORD).await;
    assert_eq!(st, StatusCode::OK, "after the wait: {body}");
    // A success clears the count: five more failures cost nothing.
    for _ in 0..5 {
        assert_eq!(login(&app, "guesser", "ann", "wrong again").await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login(&app, "guesser", "ann", PASSWORD).await.0, StatusCode::OK);

    // The events, as an admin reads them.
    let (_, token) = admin(&app, "ada").await;
    let failed = audit(&app, &token, "?action=login_failed").await;
    let on_ann: Vec<_> = failed.entries.iter().filter(|e| e.target_id == Some(ann)).collect();
    assert_eq!(on_ann.len(), 10, "five, then five more after the success");
    assert!(on_ann.iter().all(|e| e.severity == Severity::Warning && e.actor_id.is_none()));
    let hash = on_ann[0].ip_hash.clone().expect("an address hash");
    assert_eq!(hash.len(), 32);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    let throttled = audit(&app, &token, "?action=login_throttled").await;
    assert_eq!(throttled.entries.iter().filter(|e| e.target_id == Some(ann)).count(), 1);
    assert!(throttled.entries.iter().any(|e| e.target_id.is_none()), "the unknown name's wait is recorded too");
    assert_eq!(throttled.entries[0].details["wait_secs"], json!(1));
    // Filtering by severity; nowhere the address itself.
    let warnings = audit(&app, &token, "?severity=warning&limit=100").await;
    assert!(warnings.entries.iter().all(|e| e.severity >= Severity::Warning));
    assert!(warnings.entries.len() >= 12);
    let raw = serde_json::to_string(&audit(&app, &token, "?limit=100").await).expect("json");
    assert!(!raw.contains("127.0.0.1"), "no address in the log");
    assert_eq!(
        call(&app, "x", Some(&token), Method::GET, "/api/v1/admin/audit-log?severity=loud", None).await.0,
        StatusCode::BAD_REQUEST
    );
    app.shutdown().await;
}

/// API responses carry the security headers; HSTS only for a request that came over HTTPS
/// through a trusted proxy; CORS answers a configured origin only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_responses_carry_security_headers_and_cors_is_configured() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.api.security.cors_origins = vec!["https://chat.example.org".into()];
        c.api.trusted_proxies = vec!["127.0.0.1/32".parse().expect("block")];
    })
    .await;
    let http = reqwest::Client::new();
    for path in ["/api/v1/users/@me", "/api/v1/openapi.json", "/api/v1/no-such-route", "/healthz"] {
        let resp = http.get(app.url(path)).send().await.expect("request");
        let h = resp.headers();
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert_eq!(get("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(get("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(get("x-frame-options"), "DENY", "{path}");
        assert_eq!(get("content-security-policy"), copains_backend::API_CONTENT_SECURITY_POLICY, "{path}");
        assert!(h.get("strict-transport-security").is_none(), "{path}: plain HTTP gets no HSTS");
    }
    let over_https = http.get(app.url("/healthz")).header("x-forwarded-proto", "https").send().await.expect("request");
    assert_eq!(over_https.headers().get("strict-transport-security").and_then(|v| v.to_str().ok()), Some(copains_backend::HSTS));

    let preflight = |origin: &'static str| {
        http.request(Method::OPTIONS, app.url("/api/v1/auth/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://chat.example.org").await.expect("preflight");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
        Some("https://chat.example.org")
    );
    let refused = preflight("https://elsewhere.example").await.expect("preflight");
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    app.shutdown().await;

    // An origin that is not one refuses to start.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = copains::Config { data_dir: dir.path().to_path_buf(), ..copains::Config::default() };
    config.bind = "127.0.0.1:0".parse().expect("addr");
    config.gateway.voice.udp_bind = "127.0.0.1:0".parse().expect("addr");
    config.api.security.cors_origins = vec!["chat.example.org/".into()];
    let err = copains::start(config).await.expect_err("refused");
    assert!(format!("{err:#}").contains("cors_origins"), "{err:#}");
}

async fn bans_keep_an_account_and_its_clients_out_until_lifted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin_token) = admin(&app, "ada").await;
    let (mel, mel_token) = register(&app, "mel-browser", "mel").await;
    let (_, mel_phone) = {
        let (st, body, _) = login(&app, "mel-phone", "mel", PASSWORD).await;
        assert_eq!(st, StatusCode::OK);
        (st, body["access_token"].as_str().expect("token").to_owned())
    };
    let ban = |body: Value| call(&app, "admin-browser", Some(&admin_token), Method::POST, "/api/v1/admin/bans", Some(body));

    // Bad input first: nothing is banned.
    assert_eq!(ban(json!({"user_id": mel, "duration_secs": 10})).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(ban(json!({"user_id": mel, "reason": "x".repeat(513)})).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(ban(json!({"user_id": "12"})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(ban(json!({"user": mel})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(app.count("platform_bans").await, 0);
    // A member cannot ban.
    let (st, _, _) =
        call(&app, "mel-browser", Some(&mel_token), Method::POST, "/api/v1/admin/bans", Some(json!({"user_id": mel}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    let (st, body, _) = ban(json!({"user_id": mel, "reason": "spam waves"})).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let created: BansCreated = serde_json::from_value(body).expect("bans");
    assert_eq!(created.bans.len(), 3, "the account and its two clients: {created:?}");
    assert_eq!(created.bans[0].kind, BanKind::Account);
    assert!(created.bans[1..].iter().all(|b| b.kind == BanKind::Fingerprint && b.user_id == Some(mel)));
    assert_eq!(created.bans[0].reason.as_deref(), Some("spam waves"));
    assert_eq!(ban(json!({"user_id": mel})).await.0, StatusCode::CONFLICT, "banned already");

    // Its sessions ended; it cannot sign in, from anywhere, even with the right password.
    let (st, _, _) = call(&app, "mel-browser", Some(&mel_token), Method::GET, "/api/v1/users/@me", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _, _) = call(&app, "mel-phone", Some(&mel_phone), Method::GET, "/api/v1/users/@me", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, body, _) = login(&app, "a-new-browser", "mel", PASSWORD).await;
    assert_eq!((st, code(&body)), (StatusCode::FORBIDDEN, ErrorCode::Banned), "{body}");
    // The wrong password still says only that: a ban is not told to a guesser.
    assert_eq!(login(&app, "a-new-browser", "mel", "wrong password").await.0, StatusCode::UNAUTHORIZED);
    // A new account from a banned client is refused; from another client it is not.
    let new = |agent: &'static str, name: &'static str| {
        call(&app, agent, None, Method::POST, "/api/v1/auth/register", Some(json!({"username": name, "password": PASSWORD})))
    };
    let (st, body, _) = new("mel-phone", "mel2").await;
    assert_eq!((st, code(&body)), (StatusCode::FORBIDDEN, ErrorCode::Banned), "{body}");
    assert_eq!(new("someone-else", "sam").await.0, StatusCode::CREATED);
    // Platform staff on a banned client (an address shared with the banned member) still sign
    // in: those who lift bans are not locked out by one.
    assert_eq!(login(&app, "mel-phone", "ada", PASSWORD).await.0, StatusCode::OK);

    // Listed for staff, and audited: the ban and each attempt.
    let (st, body, _) = call(&app, "admin-browser", Some(&admin_token), Method::GET, "/api/v1/admin/bans", None).await;
    assert_eq!(st, StatusCode::OK);
    let listed: PlatformBans = serde_json::from_value(body).expect("bans");
    assert_eq!(listed.bans.len(), 3);
    assert_eq!(listed.bans.iter().find(|b| b.kind == BanKind::Account).and_then(|b| b.username.as_deref()), Some("mel"));
    let log = audit(&app, &admin_token, "").await;
    let created_entry = log.entries.iter().find(|e| e.action == PlatformAction::BanCreated).expect("ban audited");
    assert_eq!((created_entry.target_id, created_entry.details["fingerprints"].clone()), (Some(mel), json!(2)));
    assert_eq!(log.entries.iter().filter(|e| e.action == PlatformAction::BannedAttempt).count(), 2);

    // Lifting the phone's ban lets a new account register from it; lifting the account's lets
    // mel back in.
    let phone_ban = &created.bans.iter().find(|b| b.kind == BanKind::Fingerprint).expect("a fingerprint ban").id;
    for ban in created.bans.iter().filter(|b| b.kind == BanKind::Fingerprint) {
        let (st, _, _) =
            call(&app, "admin-browser", Some(&admin_token), Method::DELETE, &format!("/api/v1/admin/bans/{}", ban.id), None)
                .await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
    let (st, _, _) =
        call(&app, "admin-browser", Some(&admin_token), Method::DELETE, &format!("/api/v1/admin/bans/{phone_ban}"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "lifted already");
    assert_eq!(new("mel-phone", "mel3").await.0, StatusCode::CREATED);
    assert_eq!(login(&app, "a-new-browser", "mel", PASSWORD).await.0, StatusCode::FORBIDDEN, "the account ban stands");
    let account_ban = &created.bans[0].id;
    let (st, _, _) =
        call(&app, "admin-browser", Some(&admin_token), Method::DELETE, &format!("/api/v1/admin/bans/{account_ban}"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(login(&app, "a-new-browser", "mel", PASSWORD).await.0, StatusCode::OK);
    assert_eq!(app.count("platform_bans").await, 0);

    // A timed ban ends by itself: in force up to its end, gone after (and the housekeeping
    // job removes it).
    let (st, body, _) = ban(json!({"user_id": mel, "duration_secs": 3600, "fingerprints": false})).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let (st, body, _) = login(&app, "a-new-browser", "mel", PASSWORD).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let until = body["error"]["details"]["until"].as_i64().expect("until");
    let store = &app.running().state().store;
    assert!(store.ban_in_force(Some(mel), "", until - 1).await.expect("ban").is_some());
    assert!(store.ban_in_force(Some(mel), "", until).await.expect("ban").is_none());
    copains_backend::housekeep(app.running().state(), until).await;
    assert_eq!(app.count("platform_bans").await, 0);

    // A moderator bans members only.
    let store = &app.running().state().store;
    let (mo, _) = register(&app, "mod-browser", "mo").await;
    store.set_platform_role(mo, PlatformRole::Admin, mo, PlatformRole::Moderator, 0).await.expect("role").expect("set");
    let (_, body, _) = login(&app, "mod-browser", "mo", PASSWORD).await;
    let mo_token = body["access_token"].as_str().expect("token").to_owned();
    let ada = created_entry.actor_id.expect("actor");
    let (st, _, _) =
        call(&app, "mod-browser", Some(&mo_token), Method::POST, "/api/v1/admin/bans", Some(json!({"user_id": ada}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let sam = store.user_by_username("sam").await.expect("read").expect("sam").user.id;
    let (st, body, _) =
        call(&app, "mod-browser", Some(&mo_token), Method::POST, "/api/v1/admin/bans", Some(json!({"user_id": sam}))).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    // A moderator lifts neither an admin's ban nor sees an admin's sessions.
    let (st, body, _) = ban(json!({"user_id": mel, "fingerprints": false})).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let admins_ban = body["bans"][0]["id"].as_str().expect("id").to_owned();
    let (st, _, _) =
        call(&app, "mod-browser", Some(&mo_token), Method::DELETE, &format!("/api/v1/admin/bans/{admins_ban}"), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) =
        call(&app, "mod-browser", Some(&mo_token), Method::GET, &format!("/api/v1/admin/users/{ada}/sessions"), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let mel3 = store.user_by_username("mel3").await.expect("read").expect("mel3").user.id;
    let (st, body, _) =
        call(&app, "mod-browser", Some(&mo_token), Method::GET, &format!("/api/v1/admin/users/{mel3}/sessions"), None).await;
    assert_eq!(st, StatusCode::OK);
    let seen: AdminSessions = serde_json::from_value(body).expect("sessions");
    assert_eq!(seen.sessions.len(), 1);
    assert!(seen.sessions[0].ip.is_none() && seen.sessions[0].fingerprint.is_some(), "no address for a moderator: {seen:?}");
    app.shutdown().await;
}

/// Addresses sealed before a rotation open after it, on the running server, and every value
/// is under the new key; the server seals under it from then on.
async fn rotate_key_leaves_every_kept_address_readable_while_the_server_runs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin_token) = admin(&app, "ada").await;
    let mut people = Vec::new();
    for name in ["ann", "ben", "cy"] {
        people.push(register(&app, "browser", name).await.0);
    }
    let sessions = |user: UserId| {
        let token = admin_token.clone();
        let app = &app;
        async move {
            let (st, body, _) =
                call(app, "admin-browser", Some(&token), Method::GET, &format!("/api/v1/admin/users/{user}/sessions"), None)
                    .await;
            assert_eq!(st, StatusCode::OK, "{body}");
            serde_json::from_value::<AdminSessions>(body).expect("sessions")
        }
    };
    for &p in &people {
        let s = sessions(p).await;
        assert_eq!(s.sessions.len(), 1);
        assert_eq!(s.sessions[0].ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(s.sessions[0].fingerprint.as_deref().map(str::len), Some(32));
    }
    let store = &app.running().state().store;
    let sealed_before: Vec<(i64, String)> = store.sealed_not_under(999, 100).await.expect("sealed");
    assert_eq!(sealed_before.len(), 5, "an address per session (ada has two)");
    assert!(sealed_before.iter().all(|(_, s)| s.starts_with("k1.") && !s.contains("127.0.0.1")));

    let done = std::sync::atomic::AtomicU64::new(0);
    let rotation =
        copains::admin::rotate_key(&app.config, |n, _| done.store(n, std::sync::atomic::Ordering::SeqCst)).await.expect("rotate");
    assert_eq!((rotation.new_key, rotation.resealed, rotation.erased), (2, 5, 0));
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 5, "progress reached the end");
    assert!(store.sealed_not_under(2, 100).await.expect("sealed").is_empty(), "every value under the new key");
    // The running server opens them (reading the key file again), and seals under it now.
    for &p in &people {
        assert_eq!(sessions(p).await.sessions[0].ip.as_deref(), Some("127.0.0.1"));
    }
    assert_eq!(app.running().state().secrets.current_key_id(), Some(2));
    register(&app, "browser", "dee").await;
    assert!(store.sealed_not_under(2, 100).await.expect("sealed").is_empty());
    let log = audit(&app, &admin_token, "?action=key_rotation").await;
    assert_eq!(log.entries.len(), 1);
    assert_eq!(log.entries[0].details["resealed"], json!(5));

    // A second rotation drops key 1 (nothing is sealed under it), keeps 2.
    let again = copains::admin::rotate_key(&app.config, |_, _| {}).await.expect("rotate again");
    assert_eq!((again.new_key, again.dropped.clone()), (3, vec![1]));
    let kept = copains::keyfile::read_data_keys(&app.config.key_file()).expect("keys");
    assert_eq!(kept.iter().map(|k| k.id).collect::<Vec<_>>(), vec![3, 2]);
    for &p in &people {
        assert_eq!(sessions(p).await.sessions[0].ip.as_deref(), Some("127.0.0.1"));
    }
    app.shutdown().await;
}

/// The housekeeping job erases addresses past `ip_retention_secs` (their hashes stay) and audit
/// entries past `audit_retention_days`.
async fn retention_erases_addresses_and_old_audit_entries(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.api.auth.refresh_token_ttl_secs = 400 * 24 * 3600;
        c.api.security.ip_retention_secs = 3600;
        c.api.security.audit_retention_days = 30;
    })
    .await;
    let (ann, _) = register(&app, "browser", "ann").await;
    login(&app, "browser", "ann", "wrong password").await;
    let (_, admin_token) = admin(&app, "ada").await;
    let state = app.running().state();
    let now = copains_backend::store::now_ms();
    copains_backend::housekeep(state, now + 3_599_000).await;
    let (_, body, _) =
        call(&app, "admin-browser", Some(&admin_token), Method::GET, &format!("/api/v1/admin/users/{ann}/sessions"), None).await;
    assert_eq!(body["sessions"][0]["ip"], json!("127.0.0.1"), "within the retention: {body}");
    copains_backend::housekeep(state, now + 3_601_000).await;
    let (_, body, _) =
        call(&app, "admin-browser", Some(&admin_token), Method::GET, &format!("/api/v1/admin/users/{ann}/sessions"), None).await;
    assert!(body["sessions"][0].get("ip").is_none(), "erased: {body}");
    assert!(body["sessions"][0]["fingerprint"].is_string(), "the hash stays");
    assert_eq!(app.count("platform_audit WHERE action = 'login_failed'").await, 1, "within the audit retention");
    copains_backend::housekeep(state, now + 31 * 86_400_000).await;
    assert_eq!(app.count("platform_audit").await, 0);
    app.shutdown().await;
}
