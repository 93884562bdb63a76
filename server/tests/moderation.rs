//! Server moderation through the real server with real end-to-end encrypted clients:
//! timeouts refuse a member's sends and reactions (the server cannot read them, it refuses
//! them by who sends) until they are lifted or end on the clock, survive leaving and joining
//! again, and go only to members below the moderator; every moderation and settings change
//! lands in the server's audit log, which filters and pages, and which only those allowed
//! read.

mod common;

use std::time::Duration;

use common::ws::{identified, next_event};
use common::{Backend, TestApp};
use copains_client_core::client::Client;
use copains_client_core::engine::MessagingError;
use copains_client_core::messaging::{ChannelDraft, Messenger};
use copains_client_core::servers::{AuditAction, AuditLog, ChannelKind, Member, NewInvite, Permissions, TIMEOUT_MAX_SECS};
use copains_client_core::{ApiErrorBody, ChannelId, RoleId, ServerId, UserId};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    a_timeout_refuses_sends_and_reactions_until_it_is_lifted,
    timeouts_follow_the_hierarchy_and_refuse_bad_input_writing_nothing,
    the_audit_log_records_filters_pages_and_is_read_only_by_those_allowed,
    a_purge_deletes_a_members_recent_messages_for_everyone,
    pins_deletions_and_removed_reactions_by_moderators_are_audited,
    an_escalating_timeout_doubles_for_each_earlier_one,
);

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.messages_per_minute = 1_000_000;
        c.api.rate_limits.messages_burst = 1_000_000;
        c.api.rate_limits.deletes_burst = 1_000_000;
    })
    .await
}

struct Person {
    client: Client,
    id: UserId,
    messenger: Option<Messenger>,
}

impl Person {
    fn messenger(&self) -> &Messenger {
        self.messenger.as_ref().expect("e2ee on")
    }
}

async fn register(app: &TestApp, name: &str, e2ee: bool) -> Person {
    let client = app.client();
    let auth = client.register(name, "a-long-password", Some("first")).await.expect("register");
    let messenger = if e2ee {
        Some(client.enable_e2ee(app.data_dir.path().join(format!("{name}.vault")), "vault passphrase").await.expect("e2ee"))
    } else {
        None
    };
    Person { client, id: auth.user.id, messenger }
}

/// A raw call as `p`: status and JSON body.
async fn call(app: &TestApp, p: &Person, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let token = p.client.access_token().await.expect("token");
    let mut req = reqwest::Client::new().request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A server of `owner` with `members` in it, a `moderator` role (time out members, view audit
/// log; position 2) given to `moderator`, an `admin` role (administrator; position 3), and
/// its text channel.
struct Setup {
    server: ServerId,
    general: ChannelId,
    admin_role: RoleId,
    invite: String,
}

async fn setup(app: &TestApp, owner: &Person, moderator: &Person, members: &[&Person]) -> Setup {
    let server = owner.client.create_server("les copains").await.expect("server");
    let state = owner.client.server_state(server.id).await.expect("state");
    let general = state.channels.iter().find(|c| c.kind == ChannelKind::Text).expect("text channel").id;
    let invite = owner.client.create_invite(server.id, &NewInvite::default()).await.expect("invite");
    for m in std::iter::once(&moderator).chain(members.iter()) {
        m.client.join(&invite.code).await.expect("join");
    }
    let s = server.id;
    let perms = Permissions(Permissions::MODERATE_MEMBERS.0 | Permissions::VIEW_AUDIT_LOG.0 | Permissions::MANAGE_MESSAGES.0);
    let (st, role) = call(
        app,
        owner,
        Method::POST,
        &format!("/api/v1/servers/{s}/roles"),
        Some(json!({"name": "moderator", "permissions": perms.0, "position": 2})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{role}");
    let (st, admin) = call(
        app,
        owner,
        Method::POST,
        &format!("/api/v1/servers/{s}/roles"),
        Some(json!({"name": "admin", "permissions": Permissions::ADMINISTRATOR.0, "position": 3})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{admin}");
    let path = format!("/api/v1/servers/{s}/members/{}/roles", moderator.id);
    let (st, body) = call(app, owner, Method::PUT, &path, Some(json!({"roles": [role["id"]]}))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    Setup { server: s, general, admin_role: RoleId(admin["id"].as_str().expect("id").parse().expect("id")), invite: invite.code }
}

fn say(body: &str) -> ChannelDraft {
    ChannelDraft { body: body.to_owned(), ..ChannelDraft::default() }
}

/// The status and message of a refused send.
fn refusal(e: MessagingError) -> (u16, String) {
    match e {
        MessagingError::Api { status, body } => (status, body.error.message),
        other => panic!("not refused by the server: {other}"),
    }
}

fn timeout_path(s: &Setup, who: &Person) -> String {
    format!("/api/v1/servers/{}/members/{}/timeout", s.server, who.id)
}

async fn member(app: &TestApp, as_: &Person, s: &Setup, who: &Person) -> Member {
    let (st, body) = call(app, as_, Method::GET, &format!("/api/v1/servers/{}/members/{}", s.server, who.id), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    serde_json::from_value(body).expect("member")
}

async fn a_timeout_refuses_sends_and_reactions_until_it_is_lifted(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner", true).await;
    let moderator = register(&app, "moderator", false).await;
    let bob = register(&app, "bob", true).await;
    let s = setup(&app, &owner, &moderator, &[&bob]).await;
    let hello = owner.messenger().channel_send(s.general, say("hello bob")).await.expect("send");
    let earlier = bob.messenger().channel_send(s.general, say("before")).await.expect("bob may send");

    let (mut gw, _) = identified(&app.ws_url, &owner.client.access_token().await.expect("token")).await;
    let (st, body) =
        call(&app, &moderator, Method::PUT, &timeout_path(&s, &bob), Some(json!({"duration_secs": 600, "reason": "spam"}))).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    // Every member learns it, with when it ends.
    let update = next_event(&mut gw, "MEMBER_UPDATE").await;
    assert_eq!(update["user"]["id"], json!(bob.id.to_string()));
    let until = update["timeout_until"].as_i64().expect("timeout_until");
    let m = member(&app, &owner, &s, &bob).await;
    assert_eq!(m.timeout_until, Some(until));

    // No sending, no reacting; reading goes on.
    let (status, message) = refusal(bob.messenger().channel_send(s.general, say("during")).await.expect_err("refused"));
    assert_eq!(status, 403);
    assert!(message.contains("timed out"), "{message}");
    let (status, _) = refusal(bob.messenger().channel_react(s.general, hello.id, "👍").await.expect_err("refused"));
    assert_eq!(status, 403);
    // A new text for an old message would be a message all the same.
    let (status, _) = refusal(bob.messenger().channel_edit(s.general, earlier.id, "rewritten").await.expect_err("refused"));
    assert_eq!(status, 403);
    let seen = bob.messenger().channel_history(s.general, Default::default()).await.expect("history");
    assert!(seen.iter().any(|e| e.body == "hello bob"), "bob still reads: {seen:?}");

    // Leaving and coming back does not end it.
    bob.client.leave_server(s.server).await.expect("leave");
    bob.client.join(&s.invite).await.expect("join again");
    assert_eq!(member(&app, &owner, &s, &bob).await.timeout_until, Some(until));
    let (status, _) = refusal(bob.messenger().channel_send(s.general, say("after rejoining")).await.expect_err("refused"));
    assert_eq!(status, 403);
    // (Back in the server, he reads from his new join on.)
    let welcome = owner.messenger().channel_send(s.general, say("welcome back")).await.expect("send");
    let (status, _) = refusal(bob.messenger().channel_react(s.general, welcome.id, "👍").await.expect_err("refused"));
    assert_eq!(status, 403);

    // Lifted: sends and reactions again, and every member learns it.
    let (st, body) = call(&app, &moderator, Method::DELETE, &timeout_path(&s, &bob), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    loop {
        let update = next_event(&mut gw, "MEMBER_UPDATE").await;
        if update["user"]["id"] == json!(bob.id.to_string()) && update.get("timeout_until").is_none() {
            break;
        }
    }
    assert_eq!(member(&app, &owner, &s, &bob).await.timeout_until, None);
    bob.messenger().channel_send(s.general, say("free again")).await.expect("send after the lift");
    bob.messenger().channel_react(s.general, welcome.id, "👍").await.expect("react after the lift");
    // Lifting what is not running is not found.
    let (st, _) = call(&app, &moderator, Method::DELETE, &timeout_path(&s, &bob), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    app.shutdown().await;
}

async fn timeouts_follow_the_hierarchy_and_refuse_bad_input_writing_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner", false).await;
    let moderator = register(&app, "moderator", false).await;
    let admin = register(&app, "admin", false).await;
    let carol = register(&app, "carol", false).await;
    let outsider = register(&app, "outsider", false).await;
    let s = setup(&app, &owner, &moderator, &[&admin, &carol]).await;
    let path = format!("/api/v1/servers/{}/members/{}/roles", s.server, admin.id);
    let (st, body) = call(&app, &owner, Method::PUT, &path, Some(json!({"roles": [s.admin_role.to_string()]}))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let entries = || async { app.count("audit_log").await };
    let before = entries().await;
    let timeouts = || async { app.count("member_timeouts").await };

    let ten = json!({"duration_secs": 600});
    // Who may time out whom: (actor, target, status).
    for (actor, target, want, why) in [
        (&carol, &moderator, StatusCode::FORBIDDEN, "a member without the permission"),
        (&moderator, &moderator, StatusCode::FORBIDDEN, "oneself"),
        (&moderator, &owner, StatusCode::FORBIDDEN, "the owner"),
        (&moderator, &admin, StatusCode::FORBIDDEN, "someone above"),
        (&owner, &admin, StatusCode::FORBIDDEN, "an administrator, even by the owner"),
        (&outsider, &carol, StatusCode::NOT_FOUND, "from outside the server"),
        (&moderator, &outsider, StatusCode::NOT_FOUND, "someone not in the server"),
    ] {
        let (st, body) = call(&app, actor, Method::PUT, &timeout_path(&s, target), Some(ten.clone())).await;
        assert_eq!(st, want, "{why}: {body}");
        let _: ApiErrorBody = serde_json::from_value(body).expect("error body");
    }
    // Bad input: (body, status).
    for (body, want) in [
        (json!({"duration_secs": 0}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"duration_secs": TIMEOUT_MAX_SECS + 1}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"duration_secs": 60, "reason": "x".repeat(513)}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"duration_secs": -5}), StatusCode::BAD_REQUEST),
        (json!({"duration_secs": "soon"}), StatusCode::BAD_REQUEST),
        (json!({"reason": "no duration"}), StatusCode::BAD_REQUEST),
        (json!({"duration_secs": 60, "extra": 1}), StatusCode::BAD_REQUEST),
    ] {
        let (st, answer) = call(&app, &moderator, Method::PUT, &timeout_path(&s, &carol), Some(body.clone())).await;
        assert_eq!(st, want, "{body}: {answer}");
    }
    let bad = format!("/api/v1/servers/{}/members/not-an-id/timeout", s.server);
    assert_eq!(call(&app, &moderator, Method::PUT, &bad, Some(ten.clone())).await.0, StatusCode::BAD_REQUEST);
    // Nothing was written by any of these.
    assert_eq!(entries().await, before);
    assert_eq!(timeouts().await, 0);
    assert_eq!(member(&app, &owner, &s, &carol).await.timeout_until, None);

    // The longest allowed passes; a second replaces the first.
    let (st, body) =
        call(&app, &moderator, Method::PUT, &timeout_path(&s, &carol), Some(json!({"duration_secs": TIMEOUT_MAX_SECS}))).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    let long = member(&app, &owner, &s, &carol).await.timeout_until.expect("timed out");
    let (st, _) = call(&app, &moderator, Method::PUT, &timeout_path(&s, &carol), Some(json!({"duration_secs": 60}))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let short = member(&app, &owner, &s, &carol).await.timeout_until.expect("timed out");
    assert!(short < long, "the new timeout replaced the long one");
    assert_eq!(timeouts().await, 1);
    assert_eq!(entries().await, before + 2);
    app.shutdown().await;
}

async fn the_audit_log_records_filters_pages_and_is_read_only_by_those_allowed(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner", false).await;
    let moderator = register(&app, "moderator", false).await;
    let carol = register(&app, "carol", false).await;
    let dan = register(&app, "dan", false).await;
    let outsider = register(&app, "outsider", false).await;
    let s = setup(&app, &owner, &moderator, &[&carol, &dan]).await;
    let server = s.server;
    let log = format!("/api/v1/servers/{server}/audit-log");
    let read = |p: &'static str, query: String| {
        let p = match p {
            "owner" => &owner,
            "moderator" => &moderator,
            "carol" => &carol,
            _ => &outsider,
        };
        let (app, path) = (&app, format!("{log}{query}"));
        async move { call(app, p, Method::GET, &path, None).await }
    };

    // Moderation and settings changes, each with its entry.
    let (st, _) = call(
        &app,
        &moderator,
        Method::PUT,
        &timeout_path(&s, &carol),
        Some(json!({"duration_secs": 300, "reason": "calm down"})),
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) =
        call(&app, &owner, Method::DELETE, &format!("/api/v1/servers/{server}/members/{}?reason=bye", dan.id), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) =
        call(&app, &owner, Method::PATCH, &format!("/api/v1/channels/{}", s.general), Some(json!({"name": "lounge"}))).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) =
        call(&app, &owner, Method::PUT, &format!("/api/v1/servers/{server}/bans/{}", dan.id), Some(json!({"reason": "again"})))
            .await;
    assert_eq!(st, StatusCode::NO_CONTENT);

    let (st, body) = read("moderator", String::new()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // The invite shows by its first characters: the code itself lets anyone in.
    assert!(!body.to_string().contains(&s.invite), "the invite code is not in the log: {body}");
    let invite =
        body["entries"].as_array().expect("entries").iter().find(|e| e["action"] == "invite_create").expect("invite entry");
    assert_eq!(invite["details"]["invite"], json!(format!("{}…", &s.invite[..4])));
    let page: AuditLog = serde_json::from_value(body).expect("audit log");
    let actions: Vec<AuditAction> = page.entries.iter().map(|e| e.action).collect();
    // Newest first: the ban, the rename, the kick, the timeout, then the setup's role changes.
    assert_eq!(
        &actions[..4],
        &[AuditAction::MemberBan, AuditAction::ChannelUpdate, AuditAction::MemberKick, AuditAction::MemberTimeout]
    );
    assert!(actions[4..].contains(&AuditAction::RoleCreate) && actions[4..].contains(&AuditAction::MemberRolesUpdate));
    let [ban, rename, kick, timeout] = &page.entries[..4] else { unreachable!() };
    assert_eq!(
        (ban.actor_id, ban.target_id.as_deref(), ban.reason.as_deref()),
        (owner.id, Some(&*dan.id.to_string()), Some("again"))
    );
    assert_eq!(rename.target_id.as_deref(), Some(&*s.general.to_string()));
    assert_eq!(rename.details["name"], json!({"old": "general", "new": "lounge"}));
    assert_eq!(kick.reason.as_deref(), Some("bye"));
    assert_eq!(timeout.actor_id, moderator.id);
    assert_eq!(timeout.reason.as_deref(), Some("calm down"));
    assert_eq!(timeout.details["duration_secs"], json!(300));
    assert_eq!(timeout.details["count"], json!(1));
    // The users the entries name come along, for display.
    for u in [&owner, &moderator, &carol, &dan] {
        assert!(page.users.iter().any(|p| p.id == u.id), "{} named", u.id);
    }
    assert!(page.next_before.is_none(), "one page holds it all");

    // Filters.
    let (_, body) = read("moderator", "?action=member_kick".into()).await;
    let only: AuditLog = serde_json::from_value(body).expect("log");
    assert_eq!(only.entries.iter().map(|e| e.action).collect::<Vec<_>>(), vec![AuditAction::MemberKick]);
    let (_, body) = read("moderator", format!("?actor_id={}", moderator.id)).await;
    let by: AuditLog = serde_json::from_value(body).expect("log");
    assert_eq!(by.entries.iter().map(|e| e.action).collect::<Vec<_>>(), vec![AuditAction::MemberTimeout]);
    let (_, body) = read("moderator", format!("?target_id={}", dan.id)).await;
    let on: AuditLog = serde_json::from_value(body).expect("log");
    assert_eq!(on.entries.iter().map(|e| e.action).collect::<Vec<_>>(), vec![AuditAction::MemberBan, AuditAction::MemberKick]);

    // Pages: one at a time, the same entries in the same order, then no next page.
    let mut paged = Vec::new();
    let mut before = String::new();
    loop {
        let (st, body) = read("moderator", format!("?limit=2{before}")).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let p: AuditLog = serde_json::from_value(body).expect("log");
        assert!(p.entries.len() <= 2);
        paged.extend(p.entries.iter().map(|e| e.id.clone()));
        match p.next_before {
            Some(b) => before = format!("&before={b}"),
            None => break,
        }
    }
    assert_eq!(paged, page.entries.iter().map(|e| e.id.clone()).collect::<Vec<_>>());

    // Who may read it, and bad filters.
    assert_eq!(read("owner", String::new()).await.0, StatusCode::OK);
    assert_eq!(read("carol", String::new()).await.0, StatusCode::FORBIDDEN, "no view audit log permission");
    assert_eq!(read("outsider", String::new()).await.0, StatusCode::NOT_FOUND, "not a member: no existence leak");
    for q in
        ["?limit=0", "?limit=101", "?limit=x", "?action=nope", "?actor_id=abc", "?before=x", "?target_id=a%20b", "?target_id=abc"]
    {
        let (st, body) = read("moderator", q.into()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {body}");
    }
    app.shutdown().await;
}

/// A message as `p` through the REST route (nobody here has device keys: a whole send);
/// returns its id.
async fn post(app: &TestApp, p: &Person, channel: ChannelId) -> String {
    let (_, recipients) = call(app, p, Method::GET, &format!("/api/v1/channels/{channel}/recipients"), None).await;
    let body = json!({"ciphertext": "c2VhbGVk", "view": recipients["view"], "distributions": []});
    let (st, sent) = call(app, p, Method::POST, &format!("/api/v1/channels/{channel}/messages"), Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{sent}");
    sent["id"].as_str().expect("id").to_owned()
}

async fn history(app: &TestApp, p: &Person, channel: ChannelId) -> Vec<String> {
    let (st, page) = call(app, p, Method::GET, &format!("/api/v1/channels/{channel}/messages"), None).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    page.as_array().expect("page").iter().map(|m| m["id"].as_str().expect("id").to_owned()).collect()
}

/// A moderator's pin, unpin, deletion of someone's message and removal of someone's reaction
/// each leave an entry naming the author; one's own reaction or message leaves none.
async fn pins_deletions_and_removed_reactions_by_moderators_are_audited(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner", false).await;
    let moderator = register(&app, "moderator", false).await;
    let bob = register(&app, "bob", false).await;
    let s = setup(&app, &owner, &moderator, &[&bob]).await;
    let message = post(&app, &bob, s.general).await;
    let pin = format!("/api/v1/channels/{}/pins/{message}", s.general);
    assert_eq!(call(&app, &moderator, Method::PUT, &pin, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(call(&app, &moderator, Method::PUT, &pin, None).await.0, StatusCode::NO_CONTENT, "pinned already");
    assert_eq!(call(&app, &moderator, Method::DELETE, &pin, None).await.0, StatusCode::NO_CONTENT);
    let reactions = format!("/api/v1/channels/{}/messages/{message}/reactions", s.general);
    let mut made = Vec::new();
    for who in [&bob, &moderator] {
        let (_, recipients) = call(&app, who, Method::GET, &format!("/api/v1/channels/{}/recipients", s.general), None).await;
        let body = json!({"ciphertext": "c2VhbGVk", "view": recipients["view"]});
        let (st, reaction) = call(&app, who, Method::POST, &reactions, Some(body)).await;
        assert_eq!(st, StatusCode::CREATED, "{reaction}");
        made.push(reaction["id"].as_str().expect("id").to_owned());
    }
    for id in &made {
        assert_eq!(call(&app, &moderator, Method::DELETE, &format!("{reactions}/{id}"), None).await.0, StatusCode::NO_CONTENT);
    }
    let own = post(&app, &moderator, s.general).await;
    for id in [&own, &message] {
        let path = format!("/api/v1/channels/{}/messages/{id}", s.general);
        assert_eq!(call(&app, &moderator, Method::DELETE, &path, None).await.0, StatusCode::NO_CONTENT);
    }

    let (st, log) = call(&app, &owner, Method::GET, &format!("/api/v1/servers/{}/audit-log", s.server), None).await;
    assert_eq!(st, StatusCode::OK, "{log}");
    let log: AuditLog = serde_json::from_value(log).expect("log");
    let recent: Vec<_> =
        log.entries.iter().take(4).map(|e| (e.action, e.actor_id, e.target_id.clone(), e.details["author_id"].clone())).collect();
    let bobs = json!(bob.id.to_string());
    assert_eq!(
        recent,
        vec![
            (AuditAction::MessageDelete, moderator.id, Some(message.clone()), bobs.clone()),
            (AuditAction::ReactionRemove, moderator.id, Some(bob.id.to_string()), Value::Null),
            (AuditAction::MessageUnpin, moderator.id, Some(message.clone()), bobs.clone()),
            (AuditAction::MessagePin, moderator.id, Some(message.clone()), bobs),
        ],
        "one entry each, none for the moderator's own reaction or message"
    );
    assert_eq!(log.entries[1].details["message_id"], json!(message));
    assert!(log.users.iter().any(|u| u.id == bob.id), "the author is named");
    let (_, only) =
        call(&app, &owner, Method::GET, &format!("/api/v1/servers/{}/audit-log?action=message_pin", s.server), None).await;
    assert_eq!(only["entries"].as_array().map(Vec::len), Some(1));
    app.shutdown().await;
}

/// A moderator with manage messages deletes a member's recent messages in every channel: the
/// readers are told, the history no longer has them, the audit log says how many; others
/// may not, nor on someone above them; a ban can take the messages with it.
async fn a_purge_deletes_a_members_recent_messages_for_everyone(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner", false).await;
    let moderator = register(&app, "moderator", false).await;
    let bob = register(&app, "bob", false).await;
    let cy = register(&app, "cy", false).await;
    let s = setup(&app, &owner, &moderator, &[&bob, &cy]).await;
    let mut bobs = Vec::new();
    for _ in 0..3 {
        bobs.push(post(&app, &bob, s.general).await);
    }
    let cys = post(&app, &cy, s.general).await;
    let path = |who: &Person, q: &str| format!("/api/v1/servers/{}/members/{}/messages{q}", s.server, who.id);

    assert_eq!(call(&app, &cy, Method::DELETE, &path(&bob, ""), None).await.0, StatusCode::FORBIDDEN, "no permission");
    assert_eq!(call(&app, &moderator, Method::DELETE, &path(&owner, ""), None).await.0, StatusCode::FORBIDDEN, "above");
    for (q, want) in [
        ("?within_secs=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("?within_secs=604801", StatusCode::UNPROCESSABLE_ENTITY),
        ("?within_secs=x", StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(call(&app, &moderator, Method::DELETE, &path(&bob, q), None).await.0, want, "{q}");
    }
    assert_eq!(history(&app, &owner, s.general).await.len(), 4, "nothing deleted by refusals");

    let (mut gw, _) = identified(&app.ws_url, &owner.client.access_token().await.expect("token")).await;
    let (st, body) = call(&app, &moderator, Method::DELETE, &path(&bob, "?within_secs=600"), None).await;
    assert_eq!((st, body), (StatusCode::OK, json!({"deleted": 3})));
    // One event for the lot (per channel and reader), not one per message.
    let bulk = next_event(&mut gw, "MESSAGE_DELETE_BULK").await;
    assert_eq!(bulk["channel_id"], json!(s.general.to_string()), "{bulk}");
    let mut told: Vec<String> =
        bulk["ids"].as_array().expect("ids").iter().map(|id| id.as_str().expect("id").to_owned()).collect();
    told.sort();
    bobs.sort();
    assert_eq!(told, bobs);
    assert_eq!(history(&app, &owner, s.general).await, vec![cys.clone()]);
    let (_, log) =
        call(&app, &owner, Method::GET, &format!("/api/v1/servers/{}/audit-log?action=messages_purge", s.server), None).await;
    let log: AuditLog = serde_json::from_value(log).expect("log");
    assert_eq!(log.entries.len(), 1);
    assert_eq!(
        (log.entries[0].details["deleted"].clone(), log.entries[0].target_id.clone()),
        (json!(3), Some(bob.id.to_string()))
    );

    // A ban that deletes the last hour of messages with it; a span over 7 days bans nobody.
    post(&app, &cy, s.general).await;
    let ban = format!("/api/v1/servers/{}/bans/{}", s.server, cy.id);
    let (st, _) = call(&app, &owner, Method::PUT, &ban, Some(json!({"delete_message_secs": 604_801}))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(member_status(&app, &owner, &s, &cy).await, StatusCode::OK, "still a member");
    let (st, body) = call(&app, &owner, Method::PUT, &ban, Some(json!({"delete_message_secs": 3600}))).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    assert!(history(&app, &owner, s.general).await.is_empty());
    app.shutdown().await;
}

/// With `escalate`, a timeout lasts the duration asked times two for each timeout the member
/// was given in the server before (lifted ones count), never over 28 days; without, as asked.
async fn an_escalating_timeout_doubles_for_each_earlier_one(backend: Backend) {
    let app = spawn(backend).await;
    let owner = register(&app, "owner", false).await;
    let moderator = register(&app, "moderator", false).await;
    let bob = register(&app, "bob", false).await;
    let s = setup(&app, &owner, &moderator, &[&bob]).await;
    let lasts = |m: Member| {
        let left = m.timeout_until.expect("timed out") - copains_backend::store::now_ms();
        (left + 30_000) / 60_000 // in whole minutes, whatever the seconds the calls took
    };
    let mut minutes = Vec::new();
    for escalate in [true, true, true, false, true] {
        let body = json!({"duration_secs": 600, "escalate": escalate});
        let (st, _) = call(&app, &moderator, Method::PUT, &timeout_path(&s, &bob), Some(body)).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
        minutes.push(lasts(member(&app, &owner, &s, &bob).await));
        let (st, _) = call(&app, &moderator, Method::DELETE, &timeout_path(&s, &bob), None).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
    assert_eq!(minutes, vec![10, 20, 40, 10, 160]);
    // The longest, whatever the history.
    let body = json!({"duration_secs": TIMEOUT_MAX_SECS, "escalate": true});
    assert_eq!(call(&app, &moderator, Method::PUT, &timeout_path(&s, &bob), Some(body)).await.0, StatusCode::NO_CONTENT);
    assert_eq!(lasts(member(&app, &owner, &s, &bob).await), (TIMEOUT_MAX_SECS / 60) as i64);
    app.shutdown().await;
}

async fn member_status(app: &TestApp, as_: &Person, s: &Setup, who: &Person) -> StatusCode {
    call(app, as_, Method::GET, &format!("/api/v1/servers/{}/members/{}", s.server, who.id), None).await.0
}

/// Tests on tokio's paused clock: time moves only when the test advances it.
mod paused_clock {
    use super::*;
    use common::ClockHold;

    /// A send as `p` through the REST route itself, at the channel's current view: in a server
    /// where nobody has device keys yet it needs no key distribution, so it is a whole send.
    async fn raw_send(app: &TestApp, p: &Person, channel: ChannelId) -> StatusCode {
        let (st, recipients) = call(app, p, Method::GET, &format!("/api/v1/channels/{channel}/recipients"), None).await;
        assert_eq!(st, StatusCode::OK, "{recipients}");
        assert_eq!(recipients["devices"], json!([]), "nobody has device keys here");
        let body = json!({"ciphertext": "c2VhbGVk", "view": recipients["view"], "distributions": []});
        call(app, p, Method::POST, &format!("/api/v1/channels/{channel}/messages"), Some(body)).await.0
    }

    /// A timeout ends by itself: refused up to its last millisecond, allowed after, and every
    /// member is told when it ends.
    #[tokio::test(start_paused = true)]
    async fn a_timeout_ends_on_the_clock() {
        let _hold = ClockHold::new();
        let app = TestApp::spawn_with(Backend::Sqlite, |c| {
            c.gateway.heartbeat_interval_ms = 3_600_000;
        })
        .await;
        let owner = register(&app, "owner", false).await;
        let moderator = register(&app, "moderator", false).await;
        let bob = register(&app, "bob", false).await;
        let s = setup(&app, &owner, &moderator, &[&bob]).await;
        assert_eq!(raw_send(&app, &bob, s.general).await, StatusCode::CREATED);
        let (mut gw, _) = identified(&app.ws_url, &owner.client.access_token().await.expect("token")).await;
        let (st, _) = call(&app, &moderator, Method::PUT, &timeout_path(&s, &bob), Some(json!({"duration_secs": 60}))).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
        next_event(&mut gw, "MEMBER_UPDATE").await;

        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(raw_send(&app, &bob, s.general).await, StatusCode::FORBIDDEN, "a second before the end");
        assert!(member(&app, &owner, &s, &bob).await.timeout_until.is_some());

        // Just past the end (the server's clock reads milliseconds).
        tokio::time::advance(Duration::from_millis(1_001)).await;
        // The end is announced (the timer ran) ...
        loop {
            let update = next_event(&mut gw, "MEMBER_UPDATE").await;
            if update["user"]["id"] == json!(bob.id.to_string()) {
                assert!(update.get("timeout_until").is_none(), "{update}");
                break;
            }
        }
        // ... and the member may send again.
        assert_eq!(member(&app, &owner, &s, &bob).await.timeout_until, None);
        assert_eq!(raw_send(&app, &bob, s.general).await, StatusCode::CREATED, "once it ended");
        app.shutdown().await;
    }
}
