//! Platform administration through the real server: every admin route against every platform
//! role as a table (no token, member, moderator, admin), acting on every role; a disabled
//! account is signed out everywhere at once and cannot sign in until enabled again; a role
//! change takes effect on the next request; bad filters are refused; each staff action lands
//! in the platform audit log.

mod common;

use common::ws::{close_code, identified, next_event};
use common::{Backend, TestApp};
use copains_client_core::admin::{AdminUser, AdminUsers, PlatformAction, PlatformAuditLog, PlatformStats};
use copains_client_core::api::PlatformRole;
use copains_client_core::client::Client;
use copains_client_core::gateway::close;
use copains_client_core::UserId;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    every_admin_route_by_platform_role,
    a_disabled_account_is_signed_out_everywhere_and_cannot_sign_in,
    a_role_change_takes_effect_and_is_audited,
    bad_admin_input_is_refused,
    a_server_taken_down_is_gone_for_its_members_until_restored,
    deleting_an_account_takes_its_data_and_frees_its_name,
    the_live_figures_keep_the_last_hour,
);

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.user_writes_burst = 1_000_000;
        c.api.rate_limits.auth_burst = 1_000_000;
    })
    .await
}

struct Account {
    id: UserId,
    client: Client,
}

/// A new account with `role` (staff roles given as the command line gives them: through the
/// store, audited).
async fn account(app: &TestApp, name: &str, role: PlatformRole) -> Account {
    let client = app.client();
    let auth = client.register(name, "a-long-password", None).await.expect("register");
    let store = &app.running().state().store;
    match role {
        PlatformRole::Member => {}
        PlatformRole::Admin => {
            store.ensure_admin(UserId(0), name, &name.to_lowercase(), None, 0).await.expect("promote").expect("exists");
        }
        PlatformRole::Moderator => {
            store
                .set_platform_role(auth.user.id, PlatformRole::Admin, auth.user.id, role, 0)
                .await
                .expect("role")
                .expect("exists");
        }
    }
    // The role is read from the session on each request: a fresh login reads the new one.
    let client = app.client();
    client.login(name, "a-long-password", None).await.expect("login");
    Account { id: auth.user.id, client }
}

async fn call(app: &TestApp, who: Option<&Account>, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, app.url(path));
    if let Some(who) = who {
        req = req.bearer_auth(who.client.access_token().await.expect("token"));
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn every_admin_route_by_platform_role(backend: Backend) {
    let app = spawn(backend).await;
    let admin = account(&app, "ada", PlatformRole::Admin).await;
    let moderator = account(&app, "mo", PlatformRole::Moderator).await;
    let member = account(&app, "mel", PlatformRole::Member).await;
    let other_admin = account(&app, "abe", PlatformRole::Admin).await;
    let other_mod = account(&app, "mia", PlatformRole::Moderator).await;

    // Read routes: (path, who may) — 401 without a token, 403 for the others.
    let staff: &[&str] = &["moderator", "admin"];
    let reads: Vec<(String, &[&str])> = vec![
        ("/api/v1/admin/users".into(), staff),
        (format!("/api/v1/admin/users/{}", member.id), staff),
        (format!("/api/v1/admin/users/{}/sessions", member.id), staff),
        ("/api/v1/admin/bans".into(), staff),
        ("/api/v1/admin/servers".into(), &["admin"]),
        ("/api/v1/admin/stats".into(), &["admin"]),
        ("/api/v1/admin/audit-log".into(), &["admin"]),
    ];
    for (path, allowed) in &reads {
        assert_eq!(call(&app, None, Method::GET, path, None).await.0, StatusCode::UNAUTHORIZED, "{path} without a token");
        for (name, who) in [("member", &member), ("moderator", &moderator), ("admin", &admin)] {
            let (st, body) = call(&app, Some(who), Method::GET, path, None).await;
            let want = if allowed.contains(&name) { StatusCode::OK } else { StatusCode::FORBIDDEN };
            assert_eq!(st, want, "{name} GET {path}: {body}");
        }
    }

    // Actions: (actor, target, allowed). Nobody acts on their own account or a role at or above
    // theirs; moderators on members only.
    let cases: [(&str, &Account, &Account, bool); 8] = [
        ("member on member", &member, &member, false),
        ("moderator on member", &moderator, &member, true),
        ("moderator on moderator", &moderator, &other_mod, false),
        ("moderator on admin", &moderator, &admin, false),
        ("admin on moderator", &admin, &other_mod, true),
        ("admin on member", &admin, &member, true),
        ("admin on admin", &admin, &other_admin, false),
        ("admin on self", &admin, &admin, false),
    ];
    for (why, actor, target, allowed) in cases {
        for action in ["logout", "disable", "enable"] {
            let path = format!("/api/v1/admin/users/{}/{action}", target.id);
            assert_eq!(call(&app, None, Method::POST, &path, None).await.0, StatusCode::UNAUTHORIZED);
            let (st, body) = call(&app, Some(actor), Method::POST, &path, None).await;
            if allowed {
                assert_eq!(st, StatusCode::NO_CONTENT, "{why}: {action}: {body}");
            } else {
                assert_eq!(st, StatusCode::FORBIDDEN, "{why}: {action}: {body}");
            }
        }
        // The target signs in again for the next case (its sessions ended).
        if allowed {
            target.client.login(&target_name(&app, target.id).await, "a-long-password", None).await.expect("sign in again");
        }
        let role = format!("/api/v1/admin/users/{}/role", target.id);
        let (st, body) = call(&app, Some(actor), Method::PUT, &role, Some(json!({"role": "member"}))).await;
        let may_set_role = allowed && why.starts_with("admin");
        let want = if may_set_role { StatusCode::OK } else { StatusCode::FORBIDDEN };
        assert_eq!(st, want, "{why}: role: {body}");
        if may_set_role && target.id == other_mod.id {
            // Back to moderator for what follows.
            let (st, _) = call(&app, Some(actor), Method::PUT, &role, Some(json!({"role": "moderator"}))).await;
            assert_eq!(st, StatusCode::OK);
        }
    }
    app.shutdown().await;
}

async fn target_name(app: &TestApp, id: UserId) -> String {
    app.running().state().store.admin_user(id).await.expect("read").expect("exists").username
}

async fn a_disabled_account_is_signed_out_everywhere_and_cannot_sign_in(backend: Backend) {
    let app = spawn(backend).await;
    let admin = account(&app, "ada", PlatformRole::Admin).await;
    let member = account(&app, "mel", PlatformRole::Member).await;
    let phone = app.client();
    phone.login("mel", "a-long-password", None).await.expect("a second device");
    let (mut gw, _) = identified(&app.ws_url, &phone.access_token().await.expect("token")).await;

    let (st, body) = call(&app, Some(&admin), Method::POST, &format!("/api/v1/admin/users/{}/disable", member.id), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    // Every session ends at once: the open connection closes as revoked, tokens stop working.
    assert_eq!(close_code(&mut gw).await, Some(close::SESSION_REVOKED));
    for c in [&member.client, &phone] {
        let err = c.me().await.expect_err("signed out");
        assert_eq!(err.status(), Some(reqwest::StatusCode::UNAUTHORIZED), "{err}");
    }
    let err = app.client().login("mel", "a-long-password", None).await.expect_err("disabled");
    assert_eq!(err.status(), Some(reqwest::StatusCode::FORBIDDEN));
    let (_, body) = call(&app, Some(&admin), Method::GET, &format!("/api/v1/admin/users/{}", member.id), None).await;
    let seen: AdminUser = serde_json::from_value(body).expect("user");
    assert!(seen.disabled_at.is_some());
    assert_eq!(seen.sessions, 0);
    let (st, _) = call(&app, Some(&admin), Method::POST, &format!("/api/v1/admin/users/{}/disable", member.id), None).await;
    assert_eq!(st, StatusCode::CONFLICT, "disabled already");

    let (st, _) = call(&app, Some(&admin), Method::POST, &format!("/api/v1/admin/users/{}/enable", member.id), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    app.client().login("mel", "a-long-password", None).await.expect("enabled again");
    let (st, _) = call(&app, Some(&admin), Method::POST, &format!("/api/v1/admin/users/{}/enable", member.id), None).await;
    assert_eq!(st, StatusCode::CONFLICT, "not disabled");

    // The figures count accounts and who is online.
    let (st, body) = call(&app, Some(&admin), Method::GET, "/api/v1/admin/stats", None).await;
    assert_eq!(st, StatusCode::OK);
    let stats: PlatformStats = serde_json::from_value(body).expect("stats");
    assert_eq!((stats.users, stats.disabled_users), (2, 0));
    app.shutdown().await;
}

async fn a_role_change_takes_effect_and_is_audited(backend: Backend) {
    let app = spawn(backend).await;
    let admin = account(&app, "ada", PlatformRole::Admin).await;
    let member = account(&app, "mel", PlatformRole::Member).await;
    let path = format!("/api/v1/admin/users/{}/role", member.id);
    assert_eq!(call(&app, Some(&member), Method::GET, "/api/v1/admin/users", None).await.0, StatusCode::FORBIDDEN);
    let (mut gw, _) = identified(&app.ws_url, &member.client.access_token().await.expect("token")).await;
    let (st, body) = call(&app, Some(&admin), Method::PUT, &path, Some(json!({"role": "moderator"}))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let changed: AdminUser = serde_json::from_value(body).expect("user");
    assert_eq!(changed.platform_role, PlatformRole::Moderator);
    // The account's devices learn it (and every node's session cache reads it anew).
    let told = next_event(&mut gw, "USER_UPDATE").await;
    assert_eq!(told["platform_role"], "moderator");
    // The same session, its next request: a moderator now.
    assert_eq!(call(&app, Some(&member), Method::GET, "/api/v1/admin/users", None).await.0, StatusCode::OK);
    assert_eq!(member.client.me().await.expect("me").platform_role, PlatformRole::Moderator);
    let (st, _) = call(&app, Some(&admin), Method::POST, &format!("/api/v1/admin/users/{}/logout", member.id), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    let (st, body) = call(&app, Some(&admin), Method::GET, "/api/v1/admin/audit-log", None).await;
    assert_eq!(st, StatusCode::OK);
    let log: PlatformAuditLog = serde_json::from_value(body).expect("log");
    let mine: Vec<_> = log.entries.iter().filter(|e| e.actor_id == Some(admin.id)).collect();
    assert_eq!(mine.iter().map(|e| e.action).collect::<Vec<_>>(), vec![PlatformAction::UserLogout, PlatformAction::RoleChange]);
    assert_eq!(mine[1].target_id, Some(member.id));
    assert_eq!(mine[1].details, json!({"old": "member", "new": "moderator"}));
    // Both of Mel's sessions (the one registering made, and the one signed in after).
    assert_eq!(mine[0].details["sessions_ended"], json!(2));
    // The promotion of the admin by the command line's path (no actor) is there too.
    assert!(log
        .entries
        .iter()
        .any(|e| e.action == PlatformAction::AdminCreated && e.actor_id.is_none() && e.target_id == Some(admin.id)));
    let (_, body) = call(&app, Some(&admin), Method::GET, "/api/v1/admin/audit-log?action=role_change&limit=1", None).await;
    let one: PlatformAuditLog = serde_json::from_value(body).expect("log");
    assert_eq!(one.entries.len(), 1);
    assert_eq!(one.entries[0].action, PlatformAction::RoleChange);
    app.shutdown().await;
}

async fn bad_admin_input_is_refused(backend: Backend) {
    let app = spawn(backend).await;
    let admin = account(&app, "ada", PlatformRole::Admin).await;
    let member = account(&app, "mel", PlatformRole::Member).await;
    for path in [
        "/api/v1/admin/users?limit=0",
        "/api/v1/admin/users?limit=201",
        "/api/v1/admin/users?limit=-1",
        "/api/v1/admin/users?cursor=abc",
        &format!("/api/v1/admin/users?query={}", "x".repeat(65)),
        "/api/v1/admin/users/not-an-id",
        "/api/v1/admin/audit-log?limit=101",
        "/api/v1/admin/audit-log?action=nope",
        "/api/v1/admin/audit-log?actor_id=x",
    ] {
        let (st, body) = call(&app, Some(&admin), Method::GET, path, None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path}: {body}");
    }
    let role = format!("/api/v1/admin/users/{}/role", member.id);
    for body in [json!({"role": "god"}), json!({}), json!({"role": "admin", "extra": 1})] {
        let (st, answer) = call(&app, Some(&admin), Method::PUT, &role, Some(body.clone())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }
    let (st, _) = call(&app, Some(&admin), Method::POST, "/api/v1/admin/users/42/disable", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Search: by name, paged by cursor.
    let (_, body) = call(&app, Some(&admin), Method::GET, "/api/v1/admin/users?query=ME", None).await;
    let found: AdminUsers = serde_json::from_value(body).expect("users");
    assert_eq!(found.users.iter().map(|u| u.id).collect::<Vec<_>>(), vec![member.id]);
    let (_, body) = call(&app, Some(&admin), Method::GET, "/api/v1/admin/users?limit=1", None).await;
    let first: AdminUsers = serde_json::from_value(body).expect("users");
    let cursor = first.next_cursor.expect("a next page");
    let (_, body) = call(&app, Some(&admin), Method::GET, &format!("/api/v1/admin/users?limit=1&cursor={cursor}"), None).await;
    let second: AdminUsers = serde_json::from_value(body).expect("users");
    assert_eq!(second.users.len(), 1);
    assert_ne!(second.users[0].id, first.users[0].id);
    assert!(second.next_cursor.is_none());
    // A search term is a search term, not a pattern.
    let (_, body) = call(&app, Some(&admin), Method::GET, "/api/v1/admin/users?query=%25", None).await;
    let none: AdminUsers = serde_json::from_value(body).expect("users");
    assert!(none.users.is_empty());
    app.shutdown().await;
}

/// Taken down by an admin, a server is gone for its members at once (`SERVER_DELETE`; its
/// routes, channels and invites answer 404; it is not listed, not in READY), its owner
/// included; nothing is deleted, and restored it is back as it was (`SERVER_CREATE`). Only
/// admins may; twice is a conflict; both are audited.
async fn a_server_taken_down_is_gone_for_its_members_until_restored(backend: Backend) {
    let app = spawn(backend).await;
    let admin = account(&app, "ada", PlatformRole::Admin).await;
    let moderator = account(&app, "mo", PlatformRole::Moderator).await;
    let owner = account(&app, "own", PlatformRole::Member).await;
    let guest = account(&app, "gus", PlatformRole::Member).await;
    let (st, server) = call(&app, Some(&owner), Method::POST, "/api/v1/servers", Some(json!({"name": "Spam Central"}))).await;
    assert_eq!(st, StatusCode::CREATED);
    let sid = server["id"].as_str().expect("id").to_owned();
    let (st, invite) = call(&app, Some(&owner), Method::POST, &format!("/api/v1/servers/{sid}/invites"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED);
    let code = invite["code"].as_str().expect("code").to_owned();
    assert_eq!(call(&app, Some(&guest), Method::POST, &format!("/api/v1/invites/{code}"), None).await.0, StatusCode::OK);
    let (st, channels) = call(&app, Some(&guest), Method::GET, &format!("/api/v1/servers/{sid}/channels"), None).await;
    assert_eq!(st, StatusCode::OK);
    let channel = channels.as_array().expect("channels").iter().find(|c| c["kind"] == "text").expect("a text channel")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Its view is read (and cached) before: taken down, the server answers for it at once.
    assert_eq!(
        call(&app, Some(&guest), Method::GET, &format!("/api/v1/channels/{channel}/messages"), None).await.0,
        StatusCode::OK
    );

    // Listed for admins, found by name.
    let (st, list) = call(&app, Some(&admin), Method::GET, "/api/v1/admin/servers?query=spam%20c", None).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(list["servers"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["servers"][0]["member_count"], json!(2));
    assert_eq!(list["servers"][0]["owner_username"], json!("own"));

    let (mut gw, _) = identified(&app.ws_url, &guest.client.access_token().await.expect("token")).await;
    let down = format!("/api/v1/admin/servers/{sid}/take-down");
    assert_eq!(call(&app, Some(&moderator), Method::POST, &down, Some(json!({}))).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(&app, Some(&owner), Method::POST, &down, Some(json!({}))).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        call(&app, Some(&admin), Method::POST, &down, Some(json!({"reason": "x".repeat(513)}))).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (st, taken) = call(&app, Some(&admin), Method::POST, &down, Some(json!({"reason": "phishing"}))).await;
    assert_eq!(st, StatusCode::OK, "{taken}");
    assert!(taken["taken_down_at"].is_i64());
    assert_eq!(taken["taken_down_reason"], json!("phishing"));
    assert_eq!(call(&app, Some(&admin), Method::POST, &down, Some(json!({}))).await.0, StatusCode::CONFLICT);
    let gone = next_event(&mut gw, "SERVER_DELETE").await;
    assert_eq!(gone["id"], json!(sid));

    // Gone for every member, the owner too; nothing reachable through it.
    for who in [&owner, &guest] {
        for path in [
            format!("/api/v1/servers/{sid}"),
            format!("/api/v1/servers/{sid}/channels"),
            format!("/api/v1/channels/{channel}/messages"),
        ] {
            assert_eq!(call(&app, Some(who), Method::GET, &path, None).await.0, StatusCode::NOT_FOUND, "{path}");
        }
        let (_, mine) = call(&app, Some(who), Method::GET, "/api/v1/servers", None).await;
        assert_eq!(mine, json!([]));
    }
    let (_, ready) = identified(&app.ws_url, &owner.client.access_token().await.expect("token")).await;
    assert_eq!(ready["d"]["servers"], json!([]), "not in READY");
    assert_eq!(call(&app, Some(&guest), Method::GET, &format!("/api/v1/invites/{code}"), None).await.0, StatusCode::NOT_FOUND);
    let other = account(&app, "ola", PlatformRole::Member).await;
    assert_eq!(call(&app, Some(&other), Method::POST, &format!("/api/v1/invites/{code}"), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.count("servers").await, 1, "kept");
    // Its owner's account is not deleted while it is down: the evidence would go with it.
    let owned = |who: UserId| format!("/api/v1/admin/servers?owner_id={who}");
    let (st, list) = call(&app, Some(&admin), Method::GET, &owned(owner.id), None).await;
    assert_eq!((st, list["servers"][0]["id"].clone()), (StatusCode::OK, json!(sid)), "{list}");
    let (_, list) = call(&app, Some(&admin), Method::GET, &owned(guest.id), None).await;
    assert_eq!(list["servers"], json!([]));
    let (st, _) = call(&app, Some(&admin), Method::GET, "/api/v1/admin/servers?owner_id=nobody", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, body) = call(&app, Some(&admin), Method::DELETE, &format!("/api/v1/admin/users/{}", owner.id), None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert_eq!(app.count(&format!("members WHERE server_id = {sid}")).await, 2, "nobody removed");
    assert!(owner.client.me().await.is_ok(), "still signed in");

    // Restored: back as it was.
    let restore = format!("/api/v1/admin/servers/{sid}/restore");
    assert_eq!(call(&app, Some(&moderator), Method::POST, &restore, None).await.0, StatusCode::FORBIDDEN);
    let (st, back) = call(&app, Some(&admin), Method::POST, &restore, None).await;
    assert_eq!(st, StatusCode::OK, "{back}");
    assert!(back.get("taken_down_at").is_none());
    assert_eq!(call(&app, Some(&admin), Method::POST, &restore, None).await.0, StatusCode::CONFLICT);
    let created = next_event(&mut gw, "SERVER_CREATE").await;
    assert_eq!(created["server"]["id"], json!(sid), "{created}");
    assert!(created["channels"].as_array().is_some_and(|c| !c.is_empty()));
    assert_eq!(
        call(&app, Some(&guest), Method::GET, &format!("/api/v1/channels/{channel}/messages"), None).await.0,
        StatusCode::OK
    );
    assert_eq!(call(&app, Some(&other), Method::POST, &format!("/api/v1/invites/{code}"), None).await.0, StatusCode::OK);

    let (_, log) = call(&app, Some(&admin), Method::GET, "/api/v1/admin/audit-log", None).await;
    let log: PlatformAuditLog = serde_json::from_value(log).expect("log");
    assert_eq!(log.entries[0].action, PlatformAction::ServerRestore);
    assert_eq!(log.entries[1].action, PlatformAction::ServerTakeDown);
    assert_eq!(log.entries[1].details["reason"], json!("phishing"));
    assert_eq!(log.entries[1].target_id, Some(owner.id));
    app.shutdown().await;
}

/// A server of `owner`'s with `others` joined by invite; returns its id and its text channel.
async fn server_with(app: &TestApp, owner: &Account, name: &str, others: &[&Account]) -> (String, String) {
    let (st, server) = call(app, Some(owner), Method::POST, "/api/v1/servers", Some(json!({"name": name}))).await;
    assert_eq!(st, StatusCode::CREATED);
    let sid = server["id"].as_str().expect("id").to_owned();
    let (_, invite) = call(app, Some(owner), Method::POST, &format!("/api/v1/servers/{sid}/invites"), Some(json!({}))).await;
    let code = invite["code"].as_str().expect("code");
    for who in others {
        assert_eq!(call(app, Some(who), Method::POST, &format!("/api/v1/invites/{code}"), None).await.0, StatusCode::OK);
    }
    let (_, channels) = call(app, Some(owner), Method::GET, &format!("/api/v1/servers/{sid}/channels"), None).await;
    let text = channels.as_array().expect("channels").iter().find(|c| c["kind"] == "text").expect("text")["id"].clone();
    (sid, text.as_str().expect("id").to_owned())
}

/// A channel message with a ciphertext the server cannot read (nobody here has device keys).
async fn post(app: &TestApp, who: &Account, channel: &str) -> String {
    let (st, recipients) = call(app, Some(who), Method::GET, &format!("/api/v1/channels/{channel}/recipients"), None).await;
    assert_eq!(st, StatusCode::OK);
    let body = json!({"ciphertext": "c2VhbGVk", "view": recipients["view"], "distributions": []});
    let (st, sent) = call(app, Some(who), Method::POST, &format!("/api/v1/channels/{channel}/messages"), Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{sent}");
    sent["id"].as_str().expect("id").to_owned()
}

/// An admin deletes an account: its sessions end, the server it owns goes with everything in it,
/// it leaves the others, its messages are deleted for everyone (with events), its name is free
/// again, and the audit log says so. Nobody else can.
async fn deleting_an_account_takes_its_data_and_frees_its_name(backend: Backend) {
    let app = spawn(backend).await;
    let admin = account(&app, "ada", PlatformRole::Admin).await;
    let moderator = account(&app, "mo", PlatformRole::Moderator).await;
    let vic = account(&app, "vic", PlatformRole::Member).await;
    let fay = account(&app, "fay", PlatformRole::Member).await;
    let (vics, _) = server_with(&app, &vic, "Vic's place", &[&fay]).await;
    let (fays, general) = server_with(&app, &fay, "Fay's place", &[&vic]).await;
    let gone = [post(&app, &vic, &general).await, post(&app, &vic, &general).await];
    let kept = post(&app, &fay, &general).await;
    let (mut gw, _) = identified(&app.ws_url, &fay.client.access_token().await.expect("token")).await;

    let path = format!("/api/v1/admin/users/{}", vic.id);
    assert_eq!(call(&app, None, Method::DELETE, &path, None).await.0, StatusCode::UNAUTHORIZED);
    for who in [&fay, &moderator] {
        assert_eq!(call(&app, Some(who), Method::DELETE, &path, None).await.0, StatusCode::FORBIDDEN);
    }
    let own = format!("/api/v1/admin/users/{}", admin.id);
    assert_eq!(call(&app, Some(&admin), Method::DELETE, &own, None).await.0, StatusCode::FORBIDDEN);
    let (st, done) = call(&app, Some(&admin), Method::DELETE, &path, None).await;
    assert_eq!(st, StatusCode::OK, "{done}");
    assert_eq!(done, json!({"servers_deleted": 1, "messages_deleted": 2, "sessions_ended": 2}));
    assert_eq!(call(&app, Some(&admin), Method::DELETE, &path, None).await.0, StatusCode::NOT_FOUND);

    // Fay is told: Vic's server is gone, Vic left hers, Vic's messages are deleted.
    let mut deleted = Vec::new();
    let (mut server_gone, mut member_gone) = (false, false);
    while deleted.len() < 2 || !server_gone || !member_gone {
        let frame = common::ws::recv_json(&mut gw).await;
        match frame["t"].as_str() {
            Some("SERVER_DELETE") => server_gone |= frame["d"]["id"] == json!(vics),
            Some("MEMBER_REMOVE") => member_gone |= frame["d"]["server_id"] == json!(fays),
            Some("MESSAGE_DELETE_BULK") => {
                assert_eq!(frame["d"]["channel_id"], json!(general), "{frame}");
                deleted.extend(frame["d"]["ids"].as_array().expect("ids").iter().map(|id| id.as_str().expect("id").to_owned()));
            }
            _ => {}
        }
    }
    deleted.sort();
    let mut want = gone.to_vec();
    want.sort();
    assert_eq!(deleted, want);
    let (_, history) = call(&app, Some(&fay), Method::GET, &format!("/api/v1/channels/{general}/messages"), None).await;
    let ids: Vec<&str> = history.as_array().expect("history").iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, vec![kept.as_str()]);
    assert_eq!(app.count("servers").await, 1);
    assert_eq!(app.count(&format!("members WHERE user_id = {}", vic.id)).await, 0);
    assert_eq!(app.count(&format!("sessions WHERE user_id = {}", vic.id)).await, 0);

    // Vic is signed out and gone; the name can be taken again.
    assert_eq!(vic.client.me().await.expect_err("signed out").status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(call(&app, Some(&admin), Method::GET, &path, None).await.0, StatusCode::NOT_FOUND);
    app.client().register("vic", "a-long-password", None).await.expect("the name is free");
    let (_, log) = call(&app, Some(&admin), Method::GET, "/api/v1/admin/audit-log?action=user_delete", None).await;
    let log: PlatformAuditLog = serde_json::from_value(log).expect("log");
    assert_eq!(log.entries.len(), 1);
    assert_eq!((log.entries[0].target_id, log.entries[0].details["username"].clone()), (Some(vic.id), json!("vic")));
    app.shutdown().await;
}

/// The live figures carry the last hour, a sample a minute: who was online and how many
/// messages went by, sixty samples at most, oldest first.
async fn the_live_figures_keep_the_last_hour(backend: Backend) {
    let app = spawn(backend).await;
    let admin = account(&app, "ada", PlatformRole::Admin).await;
    let ann = account(&app, "ann", PlatformRole::Member).await;
    let (_, general) = server_with(&app, &ann, "Busy", &[]).await;
    let (_gw, _) = identified(&app.ws_url, &ann.client.access_token().await.expect("token")).await;
    for _ in 0..3 {
        post(&app, &ann, &general).await;
    }
    let state = app.running().state();
    // An hour and a minute of samples, ending now.
    let end = copains_backend::store::now_ms();
    for minute in (0..61).rev() {
        copains_backend::sample_stats(state, end - minute * 60_000).await;
    }
    let (st, stats) = call(&app, Some(&admin), Method::GET, "/api/v1/admin/stats", None).await;
    assert_eq!(st, StatusCode::OK);
    let stats: PlatformStats = serde_json::from_value(stats).expect("stats");
    // The loop's own samples (one at start) and these: the last sixty.
    assert_eq!(stats.last_hour.len(), 60);
    assert_eq!(stats.last_hour.first().map(|s| s.at), Some(end - 59 * 60_000), "the oldest ones dropped");
    assert_eq!(stats.last_hour.last().map(|s| s.at), Some(end));
    assert!(stats.last_hour.windows(2).all(|w| w[0].at < w[1].at), "oldest first");
    let last = stats.last_hour.last().expect("now");
    assert!(last.online_users >= 1 && last.gateway_sessions >= 1, "ann is connected: {last:?}");
    assert_eq!(last.messages, 3, "the minute before now");
    assert_eq!(stats.last_hour[stats.last_hour.len() - 3].messages, 0, "two minutes before: none yet");
    // The node's health: its database answers and has a size; the data directory's disk.
    let health = stats.health.expect("health");
    let kind = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!((health.database.as_str(), health.database_ok, health.accepting), (kind, true, true));
    assert!(health.database_latency_us.is_some() && health.database_bytes.is_some_and(|b| b > 0), "{health:?}");
    assert!(health.started_at <= copains_backend::store::now_ms());
    if cfg!(target_os = "linux") {
        let (free, total) = (health.disk_free_bytes.expect("free"), health.disk_total_bytes.expect("total"));
        assert!(free > 0 && free <= total, "{health:?}");
        assert!(health.open_files.is_some_and(|n| n > 3), "{health:?}");
    }
    app.shutdown().await;
}
