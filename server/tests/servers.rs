//! Communities through the real server: servers, members, bans, roles, channels, invites and
//! group DMs. Every route against every standing (not a member, member, moderator, admin,
//! owner) as a table; no route reaches another server's things (IDOR); invites admit exactly
//! as many as they allow and never a banned user; the gateway tells exactly the members
//! concerned; channel views move with who may read.

mod common;

use std::collections::BTreeSet;

use common::ws::{identified, next_event};
use common::{Backend, TestApp};
use copains_client_core::api::AuthResponse;
use copains_client_core::gateway::event_name;
use copains_client_core::servers::{
    Ban, Channel, ChannelKind, Invite, InvitePreview, Member, Permissions, Role, Server, ServerState, INVITE_MAX_AGE_SECS,
};
use copains_client_core::{ApiErrorBody, ChannelId, ErrorCode, RoleId, ServerId, UserId};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sqlx::Row;

backend_tests!(
    a_new_server_has_everyone_and_default_channels,
    the_native_client_renames_a_channel_and_leaves_its_category,
    route_by_standing_matrix,
    no_route_reaches_another_servers_things,
    private_channels_are_listed_only_to_those_who_may_view_them,
    invites_admit_as_many_as_they_allow,
    expired_and_revoked_invites_are_not_found,
    banned_users_join_by_no_invite_until_the_ban_ends,
    ownership_moves_and_the_owner_cannot_leave_without_it,
    roles_obey_the_hierarchy,
    channels_categories_and_overwrites,
    bad_input_is_refused_and_writes_nothing,
    the_gateway_tells_exactly_the_members_concerned,
    views_grow_when_readers_may_change,
    group_dms,
    every_route_is_in_the_openapi_document,
);

const PASSWORD: &str = "a-long-password";

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.deletes_burst = 1_000_000;
        c.api.rate_limits.user_lookups_burst = 1_000_000;
    })
    .await
}

#[derive(Clone)]
struct U {
    id: UserId,
    token: String,
}

async fn register(app: &TestApp, name: &str) -> U {
    let auth: AuthResponse = app.client().register(name, PASSWORD, Some("test")).await.expect("register");
    U { id: auth.user.id, token: auth.tokens.access_token }
}

async fn call(app: &TestApp, u: &U, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = reqwest::Client::new().request(method, app.url(path)).bearer_auth(&u.token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.expect("request")
}

async fn status(app: &TestApp, u: &U, method: Method, path: &str, body: Option<Value>) -> StatusCode {
    call(app, u, method, path, body).await.status()
}

/// The body of a call that must answer `expected`.
async fn ok<T: DeserializeOwned>(app: &TestApp, u: &U, method: Method, path: &str, body: Option<Value>, expected: u16) -> T {
    let resp = call(app, u, method.clone(), path, body).await;
    let got = resp.status();
    let text = resp.text().await.expect("body");
    assert_eq!(got.as_u16(), expected, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
}

/// Status and error code of a refused call.
async fn refused(app: &TestApp, u: &U, method: Method, path: &str, body: Option<Value>) -> (u16, ErrorCode, String) {
    let resp = call(app, u, method, path, body).await;
    let got = resp.status().as_u16();
    let body: ApiErrorBody = resp.json().await.expect("error body");
    (got, body.error.code, body.error.message)
}

async fn view(app: &TestApp, channel: ChannelId) -> i64 {
    sqlx::query("SELECT view FROM channels WHERE id = $1")
        .bind(channel.0)
        .fetch_one(app.running().state().store.pool())
        .await
        .expect("view")
        .try_get::<i64, _>(0)
        .expect("view value")
}

async fn exec(app: &TestApp, sql: &str, binds: &[Value]) {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = match b {
            Value::Number(n) => q.bind(n.as_i64().expect("i64")),
            Value::String(s) => q.bind(s.clone()),
            other => panic!("bind {other}"),
        };
    }
    q.execute(app.running().state().store.pool()).await.expect("sql");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

/// Everyone a community test needs, registered once per test.
struct Cast {
    outsider: U,
    member: U,
    moderator: U,
    admin: U,
    owner: U,
    /// A plain member, acted upon.
    target: U,
    /// A user in no server, acted upon.
    stranger: U,
}

impl Cast {
    async fn new(app: &TestApp) -> Self {
        Self {
            outsider: register(app, "outsider").await,
            member: register(app, "member").await,
            moderator: register(app, "moderator").await,
            admin: register(app, "admin").await,
            owner: register(app, "owner").await,
            target: register(app, "target").await,
            stranger: register(app, "stranger").await,
        }
    }

    fn actors(&self) -> [(&'static str, &U); 5] {
        [
            ("non-member", &self.outsider),
            ("member", &self.member),
            ("moderator", &self.moderator),
            ("admin", &self.admin),
            ("owner", &self.owner),
        ]
    }
}

/// A server of the cast's owner with everyone in place: an `admin` role (administrator,
/// position 3), a `moderator` role (kick, ban, manage messages; position 2), a `low` role
/// (position 1), and an open invite.
struct Community {
    server: ServerId,
    admin_role: RoleId,
    mod_role: RoleId,
    low_role: RoleId,
    general: ChannelId,
    invite: String,
}

const MODERATOR: Permissions =
    Permissions(Permissions::KICK_MEMBERS.0 | Permissions::BAN_MEMBERS.0 | Permissions::MANAGE_MESSAGES.0);

async fn community(app: &TestApp, cast: &Cast) -> Community {
    let owner = &cast.owner;
    let server: Server = ok(app, owner, Method::POST, "/api/v1/servers", Some(json!({"name": "Les Copains"})), 201).await;
    let s = server.id;
    let invite: Invite = ok(app, owner, Method::POST, &format!("/api/v1/servers/{s}/invites"), Some(json!({})), 201).await;
    for u in [&cast.member, &cast.moderator, &cast.admin, &cast.target] {
        let joined: Server = ok(app, u, Method::POST, &format!("/api/v1/invites/{}", invite.code), None, 200).await;
        assert_eq!(joined.id, s);
    }
    let role =
        |name: &str, perms: Permissions, position: i32| json!({"name": name, "permissions": perms.0, "position": position});
    let roles = format!("/api/v1/servers/{s}/roles");
    let admin_role: Role = ok(app, owner, Method::POST, &roles, Some(role("admin", Permissions::ADMINISTRATOR, 3)), 201).await;
    let mod_role: Role = ok(app, owner, Method::POST, &roles, Some(role("moderator", MODERATOR, 2)), 201).await;
    let low_role: Role = ok(app, owner, Method::POST, &roles, Some(role("low", Permissions::NONE, 1)), 201).await;
    for (u, r) in [(&cast.admin, admin_role.id), (&cast.moderator, mod_role.id)] {
        let m: Member =
            ok(app, owner, Method::PUT, &format!("/api/v1/servers/{s}/members/{}/roles", u.id), Some(json!({"roles": [r]})), 200)
                .await;
        assert_eq!(m.roles, vec![r]);
    }
    let channels: Vec<Channel> = ok(app, owner, Method::GET, &format!("/api/v1/servers/{s}/channels"), None, 200).await;
    let general = channels.iter().find(|c| c.kind == ChannelKind::Text).expect("general").id;
    Community { server: s, admin_role: admin_role.id, mod_role: mod_role.id, low_role: low_role.id, general, invite: invite.code }
}

async fn a_new_server_has_everyone_and_default_channels(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let server: Server = ok(&app, &alice, Method::POST, "/api/v1/servers", Some(json!({"name": "  Book club  "})), 201).await;
    assert_eq!(server.name, "Book club");
    assert_eq!(server.owner_id, alice.id);
    assert_eq!(server.member_count, 1);
    let s = server.id;
    let state: ServerState = ok(&app, &alice, Method::GET, &format!("/api/v1/servers/{s}/state"), None, 200).await;
    assert_eq!(state.server, server);
    assert_eq!(state.roles.len(), 1);
    assert_eq!(state.roles[0].id.0, s.0, "@everyone's id is the server's");
    assert_eq!(state.roles[0].name, "@everyone");
    assert_eq!(state.roles[0].position, 0);
    assert_eq!(state.roles[0].permissions, Permissions::EVERYONE_DEFAULT);
    assert_eq!(state.me.user.id, alice.id);
    assert!(state.me.roles.is_empty());
    let shape: Vec<(String, ChannelKind, Option<String>)> = state
        .channels
        .iter()
        .map(|c| {
            let parent = c.parent_id.map(|p| state.channels.iter().find(|x| x.id == p).expect("parent").name.clone());
            (c.name.clone(), c.kind, parent)
        })
        .collect();
    for expected in [
        ("Text channels".to_owned(), ChannelKind::Category, None),
        ("general".to_owned(), ChannelKind::Text, Some("Text channels".to_owned())),
        ("Voice channels".to_owned(), ChannelKind::Category, None),
        ("general".to_owned(), ChannelKind::Voice, Some("Voice channels".to_owned())),
    ] {
        assert!(shape.contains(&expected), "{expected:?} in {shape:?}");
    }
    assert_eq!(shape.len(), 4);
    let listed: Vec<Server> = ok(&app, &alice, Method::GET, "/api/v1/servers", None, 200).await;
    assert_eq!(listed, vec![server.clone()]);
    let got: Server = ok(&app, &alice, Method::GET, &format!("/api/v1/servers/{s}"), None, 200).await;
    assert_eq!(got, server);
    app.shutdown().await;
}

#[derive(Debug, Clone, Copy)]
enum Case {
    GetServer,
    ServerState,
    ListMembers,
    GetMember,
    ListRoles,
    ListChannels,
    GetChannel,
    ListInvites,
    PreviewInvite,
    RenameServer,
    TransferServer,
    DeleteServer,
    Leave,
    KickMember,
    KickModerator,
    KickAdmin,
    KickOwner,
    BanMember,
    BanNonMember,
    BanAdmin,
    Unban,
    ListBans,
    CreateRole,
    EditModeratorRole,
    EditAdminRole,
    EditEveryone,
    DeleteLowRole,
    SetMemberRoles,
    CreateChannel,
    EditChannel,
    DeleteChannel,
    CreateInvite,
    RevokeInvite,
    JoinByInvite,
}

async fn run_case(app: &TestApp, cast: &Cast, c: &Community, case: Case, actor: &U) -> u16 {
    let s = c.server;
    let get = |path: String| async move { status(app, actor, Method::GET, &path, None).await };
    let st = match case {
        Case::GetServer => get(format!("/api/v1/servers/{s}")).await,
        Case::ServerState => get(format!("/api/v1/servers/{s}/state")).await,
        Case::ListMembers => get(format!("/api/v1/servers/{s}/members")).await,
        Case::GetMember => get(format!("/api/v1/servers/{s}/members/{}", cast.target.id)).await,
        Case::ListRoles => get(format!("/api/v1/servers/{s}/roles")).await,
        Case::ListChannels => get(format!("/api/v1/servers/{s}/channels")).await,
        Case::GetChannel => get(format!("/api/v1/channels/{}", c.general)).await,
        Case::ListInvites => get(format!("/api/v1/servers/{s}/invites")).await,
        Case::PreviewInvite => get(format!("/api/v1/invites/{}", c.invite)).await,
        Case::ListBans => get(format!("/api/v1/servers/{s}/bans")).await,
        Case::RenameServer => {
            status(app, actor, Method::PATCH, &format!("/api/v1/servers/{s}"), Some(json!({"name": "Renamed"}))).await
        }
        Case::TransferServer => {
            status(app, actor, Method::PATCH, &format!("/api/v1/servers/{s}"), Some(json!({"owner_id": cast.target.id}))).await
        }
        Case::DeleteServer => status(app, actor, Method::DELETE, &format!("/api/v1/servers/{s}"), None).await,
        Case::Leave => status(app, actor, Method::POST, &format!("/api/v1/servers/{s}/leave"), None).await,
        Case::KickMember | Case::KickModerator | Case::KickAdmin | Case::KickOwner => {
            let target = match case {
                Case::KickMember => &cast.target,
                Case::KickModerator => &cast.moderator,
                Case::KickAdmin => &cast.admin,
                _ => &cast.owner,
            };
            status(app, actor, Method::DELETE, &format!("/api/v1/servers/{s}/members/{}", target.id), None).await
        }
        Case::BanMember | Case::BanNonMember | Case::BanAdmin => {
            let target = match case {
                Case::BanMember => &cast.target,
                Case::BanNonMember => &cast.stranger,
                _ => &cast.admin,
            };
            let body = json!({"reason": "spam", "duration_secs": 3600});
            status(app, actor, Method::PUT, &format!("/api/v1/servers/{s}/bans/{}", target.id), Some(body)).await
        }
        Case::Unban => {
            let path = format!("/api/v1/servers/{s}/bans/{}", cast.stranger.id);
            assert_eq!(status(app, &cast.owner, Method::PUT, &path, None).await, StatusCode::NO_CONTENT);
            status(app, actor, Method::DELETE, &path, None).await
        }
        Case::CreateRole => {
            status(app, actor, Method::POST, &format!("/api/v1/servers/{s}/roles"), Some(json!({"name": "new"}))).await
        }
        Case::EditModeratorRole | Case::EditAdminRole => {
            let role = if matches!(case, Case::EditModeratorRole) { c.mod_role } else { c.admin_role };
            status(app, actor, Method::PATCH, &format!("/api/v1/servers/{s}/roles/{role}"), Some(json!({"name": "renamed"})))
                .await
        }
        Case::EditEveryone => {
            let perms = Permissions(Permissions::EVERYONE_DEFAULT.0 & !Permissions::ADD_REACTIONS.0);
            status(app, actor, Method::PATCH, &format!("/api/v1/servers/{s}/roles/{s}"), Some(json!({"permissions": perms.0})))
                .await
        }
        Case::DeleteLowRole => {
            status(app, actor, Method::DELETE, &format!("/api/v1/servers/{s}/roles/{}", c.low_role), None).await
        }
        Case::SetMemberRoles => {
            let path = format!("/api/v1/servers/{s}/members/{}/roles", cast.target.id);
            status(app, actor, Method::PUT, &path, Some(json!({"roles": [c.low_role]}))).await
        }
        Case::CreateChannel => {
            let body = json!({"name": "Off Topic", "kind": "text"});
            status(app, actor, Method::POST, &format!("/api/v1/servers/{s}/channels"), Some(body)).await
        }
        Case::EditChannel => {
            status(app, actor, Method::PATCH, &format!("/api/v1/channels/{}", c.general), Some(json!({"topic": "hello"}))).await
        }
        Case::DeleteChannel => status(app, actor, Method::DELETE, &format!("/api/v1/channels/{}", c.general), None).await,
        Case::CreateInvite => {
            status(app, actor, Method::POST, &format!("/api/v1/servers/{s}/invites"), Some(json!({"max_uses": 5}))).await
        }
        Case::RevokeInvite => status(app, actor, Method::DELETE, &format!("/api/v1/invites/{}", c.invite), None).await,
        Case::JoinByInvite => status(app, actor, Method::POST, &format!("/api/v1/invites/{}", c.invite), None).await,
    };
    st.as_u16()
}

/// Every route of the area against each standing: (case, [non-member, member, moderator,
/// admin, owner]). Each cell runs on a fresh server.
async fn route_by_standing_matrix(backend: Backend) {
    let app = spawn(backend).await;
    let cast = Cast::new(&app).await;
    const READ: [u16; 5] = [404, 200, 200, 200, 200];
    let table: &[(Case, [u16; 5])] = &[
        (Case::GetServer, READ),
        (Case::ServerState, READ),
        (Case::ListMembers, READ),
        (Case::GetMember, READ),
        (Case::ListRoles, READ),
        (Case::ListChannels, READ),
        (Case::GetChannel, READ),
        (Case::ListInvites, READ),
        (Case::PreviewInvite, [200, 200, 200, 200, 200]),
        (Case::RenameServer, [404, 403, 403, 200, 200]),
        (Case::TransferServer, [404, 403, 403, 403, 200]),
        (Case::DeleteServer, [404, 403, 403, 403, 204]),
        (Case::Leave, [404, 204, 204, 204, 409]),
        (Case::KickMember, [404, 403, 204, 204, 204]),
        // Hierarchy: no one acts on someone at or above them (themself included).
        (Case::KickModerator, [404, 403, 403, 204, 204]),
        (Case::KickAdmin, [404, 403, 403, 403, 204]),
        (Case::KickOwner, [404, 403, 403, 403, 403]),
        (Case::BanMember, [404, 403, 204, 204, 204]),
        (Case::BanNonMember, [404, 403, 204, 204, 204]),
        (Case::BanAdmin, [404, 403, 403, 403, 204]),
        (Case::Unban, [404, 403, 204, 204, 204]),
        (Case::ListBans, [404, 403, 200, 200, 200]),
        (Case::CreateRole, [404, 403, 403, 201, 201]),
        (Case::EditModeratorRole, [404, 403, 403, 200, 200]),
        (Case::EditAdminRole, [404, 403, 403, 403, 200]),
        (Case::EditEveryone, [404, 403, 403, 200, 200]),
        (Case::DeleteLowRole, [404, 403, 403, 204, 204]),
        (Case::SetMemberRoles, [404, 403, 403, 200, 200]),
        (Case::CreateChannel, [404, 403, 403, 201, 201]),
        (Case::EditChannel, [404, 403, 403, 200, 200]),
        (Case::DeleteChannel, [404, 403, 403, 204, 204]),
        (Case::CreateInvite, [404, 201, 201, 201, 201]),
        (Case::RevokeInvite, [404, 403, 403, 204, 204]),
        (Case::JoinByInvite, [200, 200, 200, 200, 200]),
    ];
    let mut wrong = Vec::new();
    for (case, expected) in table {
        for (i, (who, actor)) in cast.actors().into_iter().enumerate() {
            let c = community(&app, &cast).await;
            let got = run_case(&app, &cast, &c, *case, actor).await;
            if got != expected[i] {
                wrong.push(format!("{case:?} by {who}: expected {}, got {got}", expected[i]));
            }
        }
    }
    assert!(wrong.is_empty(), "matrix mismatches:\n{}", wrong.join("\n"));
    app.shutdown().await;
}

/// The owner of server A (every permission there) reaches nothing of server B: every read and
/// write on B's id, its channels, roles, members and invites answers exactly what a server
/// that does not exist answers.
async fn no_route_reaches_another_servers_things(backend: Backend) {
    let app = spawn(backend).await;
    let cast = Cast::new(&app).await;
    let b = community(&app, &cast).await;
    let mallory = register(&app, "mallory").await;
    let a: Server = ok(&app, &mallory, Method::POST, "/api/v1/servers", Some(json!({"name": "A"})), 201).await;
    let bs = b.server;
    let missing = ServerId(bs.0 + 1_000_000);
    let role_body = json!({"name": "x"});
    let routes = |s: ServerId, ch: ChannelId, role: RoleId, code: &str| -> Vec<(Method, String, Option<Value>)> {
        vec![
            (Method::GET, format!("/api/v1/servers/{s}"), None),
            (Method::GET, format!("/api/v1/servers/{s}/state"), None),
            (Method::PATCH, format!("/api/v1/servers/{s}"), Some(json!({"name": "pwned"}))),
            (Method::DELETE, format!("/api/v1/servers/{s}"), None),
            (Method::POST, format!("/api/v1/servers/{s}/leave"), None),
            (Method::DELETE, format!("/api/v1/users/@me/servers/{s}"), None),
            (Method::GET, format!("/api/v1/servers/{s}/members"), None),
            (Method::GET, format!("/api/v1/servers/{s}/members/{}", cast.target.id), None),
            (Method::DELETE, format!("/api/v1/servers/{s}/members/{}", cast.target.id), None),
            (Method::PUT, format!("/api/v1/servers/{s}/members/{}/roles", cast.target.id), Some(json!({"roles": []}))),
            (Method::GET, format!("/api/v1/servers/{s}/bans"), None),
            (Method::PUT, format!("/api/v1/servers/{s}/bans/{}", cast.target.id), Some(json!({}))),
            (Method::DELETE, format!("/api/v1/servers/{s}/bans/{}", cast.target.id), None),
            (Method::GET, format!("/api/v1/servers/{s}/roles"), None),
            (Method::POST, format!("/api/v1/servers/{s}/roles"), Some(role_body.clone())),
            (Method::PATCH, format!("/api/v1/servers/{s}/roles/{role}"), Some(role_body.clone())),
            (Method::DELETE, format!("/api/v1/servers/{s}/roles/{role}"), None),
            (Method::GET, format!("/api/v1/servers/{s}/channels"), None),
            (Method::POST, format!("/api/v1/servers/{s}/channels"), Some(json!({"name": "x", "kind": "text"}))),
            (Method::GET, format!("/api/v1/servers/{s}/invites"), None),
            (Method::POST, format!("/api/v1/servers/{s}/invites"), Some(json!({}))),
            (Method::GET, format!("/api/v1/channels/{ch}"), None),
            (Method::PATCH, format!("/api/v1/channels/{ch}"), Some(json!({"name": "pwned"}))),
            (Method::DELETE, format!("/api/v1/channels/{ch}"), None),
            (Method::PUT, format!("/api/v1/channels/{ch}/recipients/{}", cast.target.id), None),
            (Method::DELETE, format!("/api/v1/channels/{ch}/recipients/{}", cast.target.id), None),
            (Method::DELETE, format!("/api/v1/invites/{code}"), None),
        ]
    };
    let real = routes(bs, b.general, b.mod_role, &b.invite);
    let fake = routes(missing, ChannelId(b.general.0 + 1_000_000), RoleId(b.mod_role.0 + 1_000_000), "nosuchcode");
    for ((method, path, body), (fmethod, fpath, fbody)) in real.into_iter().zip(fake) {
        let got = refused(&app, &mallory, method.clone(), &path, body).await;
        let none = refused(&app, &mallory, fmethod, &fpath, fbody).await;
        assert_eq!(got.0, 404, "{method} {path}: {got:?}");
        assert_eq!(got, none, "{method} {path} answers as a server that does not exist");
    }
    // B's ids used inside A: refused the same way as ids that exist nowhere.
    let s = a.id;
    let set_roles = |role: RoleId| json!({"roles": [role]});
    let with_b = refused(
        &app,
        &mallory,
        Method::PUT,
        &format!("/api/v1/servers/{s}/members/{}/roles", mallory.id),
        Some(set_roles(b.mod_role)),
    )
    .await;
    assert_eq!(with_b.0, 422);
    assert!(with_b.2.contains("is not a role of this server"), "{with_b:?}");
    let parent = |p: ChannelId| json!({"name": "x", "kind": "text", "parent_id": p});
    let with_b = refused(&app, &mallory, Method::POST, &format!("/api/v1/servers/{s}/channels"), Some(parent(b.general))).await;
    let with_none =
        refused(&app, &mallory, Method::POST, &format!("/api/v1/servers/{s}/channels"), Some(parent(ChannelId(7)))).await;
    assert_eq!(with_b, with_none);
    let overwrite =
        |id: i64| json!({"name": "x", "kind": "text", "overwrites": [{"id": id.to_string(), "kind": "role", "deny": 1}]});
    let with_b =
        refused(&app, &mallory, Method::POST, &format!("/api/v1/servers/{s}/channels"), Some(overwrite(b.mod_role.0))).await;
    let with_none = refused(&app, &mallory, Method::POST, &format!("/api/v1/servers/{s}/channels"), Some(overwrite(7))).await;
    assert_eq!((with_b.0, with_b.1), (422, ErrorCode::ValidationFailed));
    assert_eq!(with_b.0, with_none.0);
    // A member overwrite naming B's member who is not in A.
    let member_ow =
        json!({"name": "x", "kind": "text", "overwrites": [{"id": cast.target.id.to_string(), "kind": "member", "allow": 1}]});
    assert_eq!(refused(&app, &mallory, Method::POST, &format!("/api/v1/servers/{s}/channels"), Some(member_ow)).await.0, 422);
    // B is untouched.
    let state: ServerState = ok(&app, &cast.owner, Method::GET, &format!("/api/v1/servers/{bs}/state"), None, 200).await;
    assert_eq!(state.server.name, "Les Copains");
    assert_eq!(state.server.member_count, 5);
    assert_eq!(state.roles.len(), 4);
    app.shutdown().await;
}

async fn private_channel(app: &TestApp, owner: &U, c: &Community, name: &str) -> Channel {
    let body = json!({
        "name": name,
        "kind": "text",
        "overwrites": [
            {"id": c.server.to_string(), "kind": "role", "deny": Permissions::VIEW_CHANNEL.0},
            {"id": c.mod_role.to_string(), "kind": "role", "allow": Permissions::VIEW_CHANNEL.0},
        ],
    });
    ok(app, owner, Method::POST, &format!("/api/v1/servers/{}/channels", c.server), Some(body), 201).await
}

async fn private_channels_are_listed_only_to_those_who_may_view_them(backend: Backend) {
    let app = spawn(backend).await;
    let cast = Cast::new(&app).await;
    let c = community(&app, &cast).await;
    let secret = private_channel(&app, &cast.owner, &c, "Mods Only").await;
    assert_eq!(secret.name, "mods-only");
    assert_eq!(secret.overwrites.len(), 2);
    let names = |list: &[Channel]| list.iter().map(|ch| ch.id).collect::<BTreeSet<_>>();
    for (who, u, sees) in [
        ("member", &cast.member, false),
        ("target", &cast.target, false),
        ("moderator", &cast.moderator, true),
        ("admin", &cast.admin, true),
        ("owner", &cast.owner, true),
    ] {
        let list: Vec<Channel> = ok(&app, u, Method::GET, &format!("/api/v1/servers/{}/channels", c.server), None, 200).await;
        assert_eq!(names(&list).contains(&secret.id), sees, "{who} lists it: {sees}");
        assert!(names(&list).contains(&c.general));
        let state: ServerState = ok(&app, u, Method::GET, &format!("/api/v1/servers/{}/state", c.server), None, 200).await;
        assert_eq!(names(&state.channels), names(&list), "{who}: state and list agree");
        let direct = status(&app, u, Method::GET, &format!("/api/v1/channels/{}", secret.id), None).await;
        assert_eq!(direct, if sees { StatusCode::OK } else { StatusCode::NOT_FOUND }, "{who}");
    }
    // What a member cannot see answers as what does not exist, for writes too.
    let hidden =
        refused(&app, &cast.member, Method::PATCH, &format!("/api/v1/channels/{}", secret.id), Some(json!({"name": "x"}))).await;
    let none = refused(&app, &cast.member, Method::PATCH, "/api/v1/channels/12345", Some(json!({"name": "x"}))).await;
    assert_eq!(hidden, none);
    // A member let in by a member overwrite sees it.
    let let_in = json!({"overwrites": [
        {"id": c.server.to_string(), "kind": "role", "deny": Permissions::VIEW_CHANNEL.0},
        {"id": c.mod_role.to_string(), "kind": "role", "allow": Permissions::VIEW_CHANNEL.0},
        {"id": cast.member.id.to_string(), "kind": "member", "allow": Permissions::VIEW_CHANNEL.0},
    ]});
    let _: Channel = ok(&app, &cast.owner, Method::PATCH, &format!("/api/v1/channels/{}", secret.id), Some(let_in), 200).await;
    let list: Vec<Channel> =
        ok(&app, &cast.member, Method::GET, &format!("/api/v1/servers/{}/channels", c.server), None, 200).await;
    assert!(names(&list).contains(&secret.id));
    let list: Vec<Channel> =
        ok(&app, &cast.target, Method::GET, &format!("/api/v1/servers/{}/channels", c.server), None, 200).await;
    assert!(!names(&list).contains(&secret.id));
    app.shutdown().await;
}

async fn invites_admit_as_many_as_they_allow(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let server: Server = ok(&app, &alice, Method::POST, "/api/v1/servers", Some(json!({"name": "S"})), 201).await;
    let s = server.id;
    let path = format!("/api/v1/servers/{s}/invites");
    let before = now_ms();
    let default: Invite = ok(&app, &alice, Method::POST, &path, Some(json!({})), 201).await;
    let week = 7 * 24 * 3600 * 1000;
    let expires = default.expires_at.expect("a default invite expires");
    assert!(expires >= before + week && expires <= now_ms() + week, "7 days by default");
    assert!(default.code.len() >= 8 && default.code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(default.max_uses, None);
    let forever: Invite = ok(&app, &alice, Method::POST, &path, Some(json!({"max_age_secs": null})), 201).await;
    assert_eq!(forever.expires_at, None);
    let minute: Invite = ok(&app, &alice, Method::POST, &path, Some(json!({"max_age_secs": 60})), 201).await;
    let expires = minute.expires_at.expect("expires");
    assert!(expires >= before + 60_000 && expires <= now_ms() + 60_000);
    assert_ne!(default.code, forever.code);

    // One use left, two joiners at once: exactly one gets in.
    let once: Invite = ok(&app, &alice, Method::POST, &path, Some(json!({"max_uses": 1})), 201).await;
    let bob = register(&app, "bob").await;
    let carol = register(&app, "carol").await;
    let join = |u: U| {
        let url = app.url(&format!("/api/v1/invites/{}", once.code));
        async move { reqwest::Client::new().post(url).bearer_auth(&u.token).send().await.expect("join").status().as_u16() }
    };
    let (b, c) = tokio::join!(join(bob.clone()), join(carol.clone()));
    let mut got = [b, c];
    got.sort_unstable();
    assert_eq!(got, [200, 404], "exactly one of two concurrent joiners");
    let info: Server = ok(&app, &alice, Method::GET, &format!("/api/v1/servers/{s}"), None, 200).await;
    assert_eq!(info.member_count, 2);
    // Used up: neither preview nor join.
    let dave = register(&app, "dave").await;
    assert_eq!(status(&app, &dave, Method::GET, &format!("/api/v1/invites/{}", once.code), None).await, StatusCode::NOT_FOUND);
    assert_eq!(status(&app, &dave, Method::POST, &format!("/api/v1/invites/{}", once.code), None).await, StatusCode::NOT_FOUND);
    // The one who got in follows it again: the server, without using anything.
    let winner = if b == 200 { &bob } else { &carol };
    assert_eq!(status(&app, winner, Method::POST, &format!("/api/v1/invites/{}", once.code), None).await, StatusCode::NOT_FOUND);
    let two: Invite = ok(&app, &alice, Method::POST, &path, Some(json!({"max_uses": 2})), 201).await;
    let _: Server = ok(&app, winner, Method::POST, &format!("/api/v1/invites/{}", two.code), None, 200).await;
    let _: Server = ok(&app, winner, Method::POST, &format!("/api/v1/invites/{}", two.code), None, 200).await;
    let listed: Vec<Invite> = ok(&app, &alice, Method::GET, &path, None, 200).await;
    assert_eq!(listed.iter().find(|i| i.code == two.code).expect("listed").uses, 0, "a member's join uses nothing");
    // Preview for anyone signed in.
    let preview: InvitePreview = ok(&app, &dave, Method::GET, &format!("/api/v1/invites/{}", two.code), None, 200).await;
    assert_eq!(preview.server_id, s);
    assert_eq!(preview.server_name, "S");
    assert_eq!(preview.member_count, 2);
    assert_eq!(preview.inviter.id, alice.id);
    // Members see their own invites; manage server sees all.
    let mine: Invite = ok(&app, winner, Method::POST, &path, Some(json!({})), 201).await;
    let theirs: Vec<Invite> = ok(&app, winner, Method::GET, &path, None, 200).await;
    assert_eq!(theirs, vec![mine.clone()]);
    let all: Vec<Invite> = ok(&app, &alice, Method::GET, &path, None, 200).await;
    assert!(all.iter().any(|i| i.code == mine.code) && all.len() >= 4);
    app.shutdown().await;
}

async fn expired_and_revoked_invites_are_not_found(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let server: Server = ok(&app, &alice, Method::POST, "/api/v1/servers", Some(json!({"name": "S"})), 201).await;
    let path = format!("/api/v1/servers/{}/invites", server.id);
    let invite: Invite = ok(&app, &alice, Method::POST, &path, Some(json!({"max_age_secs": 3600})), 201).await;
    exec(&app, "UPDATE invites SET expires_at = $1 WHERE code = $2", &[json!(now_ms() - 1), json!(invite.code)]).await;
    let unknown = refused(&app, &bob, Method::POST, "/api/v1/invites/doesnotexist", None).await;
    let expired = refused(&app, &bob, Method::POST, &format!("/api/v1/invites/{}", invite.code), None).await;
    assert_eq!(expired.0, 404);
    assert_eq!(expired, unknown, "expired answers as unknown");
    assert_eq!(status(&app, &bob, Method::GET, &format!("/api/v1/invites/{}", invite.code), None).await, StatusCode::NOT_FOUND);
    let listed: Vec<Invite> = ok(&app, &alice, Method::GET, &path, None, 200).await;
    assert!(listed.is_empty(), "an expired invite is not listed");
    let revoked: Invite = ok(&app, &alice, Method::POST, &path, Some(json!({})), 201).await;
    // Someone outside the server cannot revoke it, and learns nothing.
    assert_eq!(
        status(&app, &bob, Method::DELETE, &format!("/api/v1/invites/{}", revoked.code), None).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(&app, &alice, Method::DELETE, &format!("/api/v1/invites/{}", revoked.code), None).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(status(&app, &bob, Method::POST, &format!("/api/v1/invites/{}", revoked.code), None).await, StatusCode::NOT_FOUND);
    assert_eq!(app.count("members").await, 1);
    app.shutdown().await;
}

async fn banned_users_join_by_no_invite_until_the_ban_ends(backend: Backend) {
    let app = spawn(backend).await;
    let cast = Cast::new(&app).await;
    let c = community(&app, &cast).await;
    let s = c.server;
    let other: Invite =
        ok(&app, &cast.member, Method::POST, &format!("/api/v1/servers/{s}/invites"), Some(json!({"max_age_secs": null})), 201)
            .await;
    // A member banned with a reason is removed; a stranger can be banned before ever joining.
    let ban = |u: &U| format!("/api/v1/servers/{s}/bans/{}", u.id);
    assert_eq!(
        status(&app, &cast.moderator, Method::PUT, &ban(&cast.target), Some(json!({"reason": "spam"}))).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(status(&app, &cast.moderator, Method::PUT, &ban(&cast.stranger), None).await, StatusCode::NO_CONTENT);
    assert_eq!(status(&app, &cast.target, Method::GET, &format!("/api/v1/servers/{s}"), None).await, StatusCode::NOT_FOUND);
    let bans: Vec<Ban> = ok(&app, &cast.moderator, Method::GET, &format!("/api/v1/servers/{s}/bans"), None, 200).await;
    let banned: BTreeSet<UserId> = bans.iter().map(|b| b.user.id).collect();
    assert_eq!(banned, [cast.target.id, cast.stranger.id].into_iter().collect());
    let target_ban = bans.iter().find(|b| b.user.id == cast.target.id).expect("ban");
    assert_eq!(target_ban.reason.as_deref(), Some("spam"));
    assert_eq!(target_ban.moderator_id, cast.moderator.id);
    assert_eq!(target_ban.expires_at, None);
    for u in [&cast.target, &cast.stranger] {
        for code in [&c.invite, &other.code] {
            let (st, code, _) = refused(&app, u, Method::POST, &format!("/api/v1/invites/{code}"), None).await;
            assert_eq!((st, code), (403, ErrorCode::Forbidden), "banned, on every invite");
        }
    }
    let listed: Vec<Invite> = ok(&app, &cast.owner, Method::GET, &format!("/api/v1/servers/{s}/invites"), None, 200).await;
    assert!(listed.iter().all(|i| i.uses == if i.code == c.invite { 4 } else { 0 }), "refused joins use nothing");
    // Lifted: back in.
    assert_eq!(status(&app, &cast.admin, Method::DELETE, &ban(&cast.target), None).await, StatusCode::NO_CONTENT);
    assert_eq!(status(&app, &cast.admin, Method::DELETE, &ban(&cast.target), None).await, StatusCode::NOT_FOUND);
    let _: Server = ok(&app, &cast.target, Method::POST, &format!("/api/v1/invites/{}", c.invite), None, 200).await;
    // Timed: refused while it lasts, welcome once it ended.
    let timed = json!({"reason": "cool down", "duration_secs": 3600});
    let before = now_ms();
    assert_eq!(status(&app, &cast.moderator, Method::PUT, &ban(&cast.target), Some(timed)).await, StatusCode::NO_CONTENT);
    let bans: Vec<Ban> = ok(&app, &cast.moderator, Method::GET, &format!("/api/v1/servers/{s}/bans"), None, 200).await;
    let until = bans.iter().find(|b| b.user.id == cast.target.id).and_then(|b| b.expires_at).expect("timed");
    assert!(until >= before + 3_600_000 && until <= now_ms() + 3_600_000);
    assert_eq!(
        status(&app, &cast.target, Method::POST, &format!("/api/v1/invites/{}", c.invite), None).await,
        StatusCode::FORBIDDEN
    );
    exec(&app, "UPDATE bans SET expires_at = $1 WHERE user_id = $2", &[json!(now_ms() - 1), json!(cast.target.id.0)]).await;
    let bans: Vec<Ban> = ok(&app, &cast.moderator, Method::GET, &format!("/api/v1/servers/{s}/bans"), None, 200).await;
    assert!(bans.iter().all(|b| b.user.id != cast.target.id), "an ended ban is not listed");
    let _: Server = ok(&app, &cast.target, Method::POST, &format!("/api/v1/invites/{}", c.invite), None, 200).await;
    app.shutdown().await;
}

async fn ownership_moves_and_the_owner_cannot_leave_without_it(backend: Backend) {
    let app = spawn(backend).await;
    let cast = Cast::new(&app).await;
    let c = community(&app, &cast).await;
    let s = c.server;
    let (st, code, message) = refused(&app, &cast.owner, Method::POST, &format!("/api/v1/servers/{s}/leave"), None).await;
    assert_eq!((st, code), (409, ErrorCode::Conflict));
    assert!(message.contains("transfer"), "{message}");
    // Not to a non-member.
    let to = |u: &U| Some(json!({"owner_id": u.id}));
    assert_eq!(refused(&app, &cast.owner, Method::PATCH, &format!("/api/v1/servers/{s}"), to(&cast.stranger)).await.0, 422);
    let moved: Server = ok(&app, &cast.owner, Method::PATCH, &format!("/api/v1/servers/{s}"), to(&cast.member), 200).await;
    assert_eq!(moved.owner_id, cast.member.id);
    // The former owner is now a plain member: can leave, cannot delete.
    assert_eq!(status(&app, &cast.owner, Method::DELETE, &format!("/api/v1/servers/{s}"), None).await, StatusCode::FORBIDDEN);
    assert_eq!(
        status(&app, &cast.owner, Method::DELETE, &format!("/api/v1/users/@me/servers/{s}"), None).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(status(&app, &cast.owner, Method::GET, &format!("/api/v1/servers/{s}"), None).await, StatusCode::NOT_FOUND);
    let servers: Vec<Server> = ok(&app, &cast.owner, Method::GET, "/api/v1/servers", None, 200).await;
    assert!(servers.is_empty());
    // The new owner deletes it: everything goes.
    assert_eq!(status(&app, &cast.member, Method::DELETE, &format!("/api/v1/servers/{s}"), None).await, StatusCode::NO_CONTENT);
    assert_eq!(status(&app, &cast.member, Method::GET, &format!("/api/v1/servers/{s}"), None).await, StatusCode::NOT_FOUND);
    for table in ["servers", "members", "member_roles", "roles", "channels", "invites", "overwrites"] {
        assert_eq!(app.count(table).await, 0, "{table} emptied");
    }
    app.shutdown().await;
}

async fn roles_obey_the_hierarchy(backend: Backend) {
    let app = spawn(backend).await;
    let cast = Cast::new(&app).await;
    let c = community(&app, &cast).await;
    let s = c.server;
    let roles = format!("/api/v1/servers/{s}/roles");
    // The admin (position 3) creates and edits below 3 only.
    let role: Role = ok(
        &app,
        &cast.admin,
        Method::POST,
        &roles,
        Some(json!({"name": "helper", "position": 2, "color": 0xff8800, "hoist": true})),
        201,
    )
    .await;
    assert_eq!((role.name.as_str(), role.position, role.color, role.hoist), ("helper", 2, 0xff8800, true));
    assert_eq!(role.permissions, Permissions::NONE);
    let (st, code, _) = refused(&app, &cast.admin, Method::POST, &roles, Some(json!({"name": "peer", "position": 3}))).await;
    assert_eq!((st, code), (403, ErrorCode::Forbidden));
    assert_eq!(refused(&app, &cast.admin, Method::POST, &roles, Some(json!({"name": "x", "position": 0}))).await.0, 422);
    assert_eq!(
        refused(&app, &cast.admin, Method::PATCH, &format!("{roles}/{}", role.id), Some(json!({"position": 5}))).await.0,
        403
    );
    assert_eq!(
        refused(&app, &cast.admin, Method::PATCH, &format!("{roles}/{}", c.admin_role), Some(json!({"color": 1}))).await.0,
        403
    );
    // @everyone: permissions yes, name, position and deletion no.
    assert_eq!(refused(&app, &cast.owner, Method::PATCH, &format!("{roles}/{s}"), Some(json!({"name": "all"}))).await.0, 422);
    assert_eq!(refused(&app, &cast.owner, Method::PATCH, &format!("{roles}/{s}"), Some(json!({"position": 1}))).await.0, 422);
    assert_eq!(refused(&app, &cast.owner, Method::DELETE, &format!("{roles}/{s}"), None).await.0, 422);
    // A manager of roles below the admin cannot hand out what they do not hold.
    let manager: Role = ok(
        &app,
        &cast.owner,
        Method::POST,
        &roles,
        Some(json!({"name": "manager", "position": 2, "permissions": Permissions::MANAGE_ROLES.0})),
        201,
    )
    .await;
    let _: Member = ok(
        &app,
        &cast.owner,
        Method::PUT,
        &format!("/api/v1/servers/{s}/members/{}/roles", cast.member.id),
        Some(json!({"roles": [manager.id]})),
        200,
    )
    .await;
    let (st, _, msg) =
        refused(&app, &cast.member, Method::POST, &roles, Some(json!({"name": "x", "permissions": Permissions::BAN_MEMBERS.0})))
            .await;
    assert_eq!(st, 403, "{msg}");
    let kicker: Role = ok(
        &app,
        &cast.owner,
        Method::POST,
        &roles,
        Some(json!({"name": "kicker", "position": 1, "permissions": Permissions::KICK_MEMBERS.0})),
        201,
    )
    .await;
    assert_eq!(
        refused(
            &app,
            &cast.member,
            Method::PATCH,
            &format!("{roles}/{}", kicker.id),
            Some(json!({"permissions": Permissions::KICK_MEMBERS.0 | Permissions::BAN_MEMBERS.0}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        refused(
            &app,
            &cast.member,
            Method::PUT,
            &format!("/api/v1/servers/{s}/members/{}/roles", cast.target.id),
            Some(json!({"roles": [kicker.id]}))
        )
        .await
        .0,
        403,
        "a role carrying a permission the manager lacks"
    );
    let _: Member = ok(
        &app,
        &cast.member,
        Method::PUT,
        &format!("/api/v1/servers/{s}/members/{}/roles", cast.target.id),
        Some(json!({"roles": [c.low_role]})),
        200,
    )
    .await;
    assert_eq!(
        refused(
            &app,
            &cast.member,
            Method::PUT,
            &format!("/api/v1/servers/{s}/members/{}/roles", cast.target.id),
            Some(json!({"roles": [manager.id]}))
        )
        .await
        .0,
        403,
        "a role at the manager's own level"
    );
    assert_eq!(
        refused(
            &app,
            &cast.member,
            Method::PUT,
            &format!("/api/v1/servers/{s}/members/{}/roles", cast.admin.id),
            Some(json!({"roles": []}))
        )
        .await
        .0,
        403,
        "a member above"
    );
    // Bad role lists.
    let path = format!("/api/v1/servers/{s}/members/{}/roles", cast.target.id);
    assert_eq!(refused(&app, &cast.owner, Method::PUT, &path, Some(json!({"roles": [s.to_string()]}))).await.0, 422, "@everyone");
    assert_eq!(refused(&app, &cast.owner, Method::PUT, &path, Some(json!({"roles": [c.low_role, c.low_role]}))).await.0, 422);
    assert_eq!(
        refused(
            &app,
            &cast.owner,
            Method::PUT,
            &format!("/api/v1/servers/{s}/members/{}/roles", cast.stranger.id),
            Some(json!({"roles": []}))
        )
        .await
        .0,
        404
    );
    // Deleting a role takes it off its members and out of overwrites.
    let _: Channel = ok(
        &app,
        &cast.owner,
        Method::PATCH,
        &format!("/api/v1/channels/{}", c.general),
        Some(json!({"overwrites": [{"id": c.low_role.to_string(), "kind": "role", "allow": Permissions::SEND_MESSAGES.0}]})),
        200,
    )
    .await;
    assert_eq!(status(&app, &cast.owner, Method::DELETE, &format!("{roles}/{}", c.low_role), None).await, StatusCode::NO_CONTENT);
    let target: Member =
        ok(&app, &cast.owner, Method::GET, &format!("/api/v1/servers/{s}/members/{}", cast.target.id), None, 200).await;
    assert!(target.roles.is_empty());
    let general: Channel = ok(&app, &cast.owner, Method::GET, &format!("/api/v1/channels/{}", c.general), None, 200).await;
    assert!(general.overwrites.is_empty());
    assert_eq!(status(&app, &cast.owner, Method::DELETE, &format!("{roles}/{}", c.low_role), None).await, StatusCode::NOT_FOUND);
    let listed: Vec<Role> = ok(&app, &cast.member, Method::GET, &roles, None, 200).await;
    assert_eq!(listed.first().map(|r| r.id.0), Some(s.0), "@everyone first");
    assert!(listed.windows(2).all(|w| w[0].position <= w[1].position));
    app.shutdown().await;
}

async fn channels_categories_and_overwrites(backend: Backend) {
    let app = spawn(backend).await;
    let cast = Cast::new(&app).await;
    let c = community(&app, &cast).await;
    let s = c.server;
    let path = format!("/api/v1/servers/{s}/channels");
    let owner = &cast.owner;
    let everyone_deny_send = json!([{"id": s.to_string(), "kind": "role", "deny": Permissions::SEND_MESSAGES.0}]);
    let cat: Channel = ok(
        &app,
        owner,
        Method::POST,
        &path,
        Some(json!({"name": "Read Only", "kind": "category", "overwrites": everyone_deny_send})),
        201,
    )
    .await;
    assert_eq!(cat.name, "Read Only", "category names are kept");
    let news: Channel = ok(
        &app,
        owner,
        Method::POST,
        &path,
        Some(json!({"name": "  Big News ", "kind": "text", "parent_id": cat.id, "topic": "what's new"})),
        201,
    )
    .await;
    assert_eq!(news.name, "big-news");
    assert_eq!(news.parent_id, Some(cat.id));
    assert_eq!(news.topic.as_deref(), Some("what's new"));
    assert_eq!(news.overwrites, cat.overwrites, "a channel takes its category's overwrites");
    let second: Channel =
        ok(&app, owner, Method::POST, &path, Some(json!({"name": "more", "kind": "voice", "parent_id": cat.id})), 201).await;
    assert!(second.position > news.position, "after its last sibling");
    // Refusals.
    for (body, why) in [
        (json!({"name": "sub", "kind": "category", "parent_id": cat.id}), "a category in a category"),
        (json!({"name": "x", "kind": "text", "parent_id": news.id}), "parent not a category"),
        (json!({"name": "x", "kind": "group_dm"}), "group_dm"),
        (json!({"name": "", "kind": "text"}), "empty name"),
        (json!({"name": "x".repeat(101), "kind": "text"}), "long name"),
        (json!({"name": "x", "kind": "text", "topic": "t".repeat(1025)}), "long topic"),
        (
            json!({"name": "x", "kind": "text", "overwrites": [{"id": s.to_string(), "kind": "role", "allow": 1u64 << 40}]}),
            "unknown bits",
        ),
        (
            json!({"name": "x", "kind": "text", "overwrites": [{"id": s.to_string(), "kind": "role"}, {"id": s.to_string(), "kind": "role"}]}),
            "duplicate",
        ),
        (
            json!({"name": "x", "kind": "text", "overwrites": [{"id": cast.stranger.id.to_string(), "kind": "member"}]}),
            "not a member",
        ),
    ] {
        assert_eq!(refused(&app, owner, Method::POST, &path, Some(body)).await.0, 422, "{why}");
    }
    assert_eq!(refused(&app, owner, Method::POST, &path, Some(json!({"name": "x", "kind": "forum"}))).await.0, 400);
    // Edits: out of the category, rename, topic cleared.
    let edited: Channel = ok(
        &app,
        owner,
        Method::PATCH,
        &format!("/api/v1/channels/{}", news.id),
        Some(json!({"parent_id": null, "name": "Old News", "topic": ""})),
        200,
    )
    .await;
    assert_eq!((edited.parent_id, edited.name.as_str(), edited.topic.clone()), (None, "old-news", None));
    let moved: Channel =
        ok(&app, owner, Method::PATCH, &format!("/api/v1/channels/{}", news.id), Some(json!({"parent_id": cat.id})), 200).await;
    assert_eq!(moved.parent_id, Some(cat.id));
    assert_eq!(
        refused(&app, owner, Method::PATCH, &format!("/api/v1/channels/{}", cat.id), Some(json!({"parent_id": cat.id}))).await.0,
        422
    );
    // Deleting a category moves its channels out.
    assert_eq!(status(&app, owner, Method::DELETE, &format!("/api/v1/channels/{}", cat.id), None).await, StatusCode::NO_CONTENT);
    let after: Channel = ok(&app, owner, Method::GET, &format!("/api/v1/channels/{}", news.id), None, 200).await;
    assert_eq!(after.parent_id, None);
    assert_eq!(status(&app, owner, Method::GET, &format!("/api/v1/channels/{}", cat.id), None).await, StatusCode::NOT_FOUND);
    // The moderator may not manage channels, the admin may; overwrites can grant manage
    // channels in one channel.
    let grant = json!({"overwrites": [{"id": c.mod_role.to_string(), "kind": "role", "allow": Permissions::MANAGE_CHANNELS.0}]});
    assert_eq!(
        status(&app, &cast.moderator, Method::PATCH, &format!("/api/v1/channels/{}", news.id), Some(json!({"topic": "x"}))).await,
        StatusCode::FORBIDDEN
    );
    let _: Channel = ok(&app, &cast.admin, Method::PATCH, &format!("/api/v1/channels/{}", news.id), Some(grant), 200).await;
    let _: Channel =
        ok(&app, &cast.moderator, Method::PATCH, &format!("/api/v1/channels/{}", news.id), Some(json!({"topic": "x"})), 200)
            .await;
    app.shutdown().await;
}

async fn bad_input_is_refused_and_writes_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let cast = Cast::new(&app).await;
    let c = community(&app, &cast).await;
    let s = c.server;
    let tables = ["servers", "roles", "members", "member_roles", "channels", "overwrites", "invites", "bans", "channel_members"];
    let mut counts = Vec::new();
    for t in tables {
        counts.push(app.count(t).await);
    }
    let owner = &cast.owner;
    let cases: Vec<(Method, String, Option<Value>, u16)> = vec![
        (Method::POST, "/api/v1/servers".into(), Some(json!({"name": ""})), 422),
        (Method::POST, "/api/v1/servers".into(), Some(json!({"name": "   "})), 422),
        (Method::POST, "/api/v1/servers".into(), Some(json!({"name": "x".repeat(101)})), 422),
        (Method::POST, "/api/v1/servers".into(), Some(json!({"name": "a\u{0}b"})), 422),
        (Method::POST, "/api/v1/servers".into(), Some(json!({"nom": "x"})), 400),
        (Method::POST, "/api/v1/servers".into(), None, 400),
        (Method::GET, "/api/v1/servers/not-an-id".into(), None, 400),
        (Method::PATCH, format!("/api/v1/servers/{s}"), Some(json!({"name": ""})), 422),
        (Method::POST, format!("/api/v1/servers/{s}/roles"), Some(json!({"permissions": 1u64 << 20})), 422),
        (Method::POST, format!("/api/v1/servers/{s}/roles"), Some(json!({"color": 0x1000000})), 422),
        (Method::POST, format!("/api/v1/servers/{s}/roles"), Some(json!({"name": ""})), 422),
        (Method::PUT, format!("/api/v1/servers/{s}/bans/{}", cast.target.id), Some(json!({"reason": "x".repeat(513)})), 422),
        (Method::PUT, format!("/api/v1/servers/{s}/bans/{}", cast.target.id), Some(json!({"duration_secs": 0})), 422),
        (
            Method::PUT,
            format!("/api/v1/servers/{s}/bans/{}", cast.target.id),
            Some(json!({"duration_secs": 400 * 24 * 3600})),
            422,
        ),
        (Method::PUT, format!("/api/v1/servers/{s}/bans/{}", owner.id), Some(json!({})), 403),
        (Method::PUT, format!("/api/v1/servers/{s}/bans/424242"), Some(json!({})), 404),
        (Method::POST, format!("/api/v1/servers/{s}/invites"), Some(json!({"max_uses": 0})), 422),
        (Method::POST, format!("/api/v1/servers/{s}/invites"), Some(json!({"max_uses": 10_001})), 422),
        (Method::POST, format!("/api/v1/servers/{s}/invites"), Some(json!({"max_age_secs": INVITE_MAX_AGE_SECS + 1})), 422),
        (Method::POST, format!("/api/v1/servers/{s}/invites"), Some(json!({"max_age_secs": 0})), 422),
        (
            Method::PATCH,
            format!("/api/v1/channels/{}", c.general),
            Some(json!({"overwrites": [{"id": "1", "kind": "role"}]})),
            422,
        ),
        (
            Method::PATCH,
            format!("/api/v1/channels/{}", c.general),
            Some(json!({"overwrites": [{"id": s.to_string(), "kind": "nobody"}]})),
            400,
        ),
        (Method::PATCH, format!("/api/v1/channels/{}", c.general), Some(json!({"name": ""})), 422),
        (Method::GET, format!("/api/v1/servers/{s}/members?limit=0"), None, 400),
        (Method::GET, format!("/api/v1/servers/{s}/members?limit=1001"), None, 400),
        (Method::GET, format!("/api/v1/servers/{s}/members?after=x"), None, 400),
        (Method::POST, "/api/v1/channels".into(), Some(json!({"recipients": []})), 422),
        (Method::POST, "/api/v1/channels".into(), Some(json!({"recipients": [owner.id]})), 422),
        (Method::POST, "/api/v1/channels".into(), Some(json!({"recipients": [cast.member.id, cast.member.id]})), 422),
        (Method::POST, "/api/v1/channels".into(), Some(json!({"recipients": [cast.member.id, "424242"]})), 422),
    ];
    for (method, path, body, expected) in cases {
        let (st, code, message) = refused(&app, owner, method.clone(), &path, body).await;
        assert_eq!(st, expected, "{method} {path}: {code:?} {message}");
        assert!(!message.is_empty());
    }
    for (t, before) in tables.iter().zip(counts) {
        assert_eq!(app.count(t).await, before, "{t}: nothing written");
    }
    // Pagination of members.
    let page: Vec<Member> = ok(&app, owner, Method::GET, &format!("/api/v1/servers/{s}/members?limit=2"), None, 200).await;
    assert_eq!(page.len(), 2);
    let rest: Vec<Member> =
        ok(&app, owner, Method::GET, &format!("/api/v1/servers/{s}/members?after={}", page[1].user.id), None, 200).await;
    assert_eq!(rest.len(), 3);
    let all: Vec<Member> = ok(&app, owner, Method::GET, &format!("/api/v1/servers/{s}/members"), None, 200).await;
    let ids: Vec<UserId> = all.iter().map(|m| m.user.id).collect();
    assert_eq!(ids, page.iter().chain(&rest).map(|m| m.user.id).collect::<Vec<_>>());
    assert_eq!(all.iter().find(|m| m.user.id == cast.admin.id).expect("admin").roles, vec![c.admin_role]);
    app.shutdown().await;
}

async fn the_gateway_tells_exactly_the_members_concerned(backend: Backend) {
    let app = spawn(backend).await;
    let cast = Cast::new(&app).await;
    let c = community(&app, &cast).await;
    let s = c.server;
    let (mut member_ws, _) = identified(&app.ws_url, &cast.member.token).await;
    // A newcomer joins: members hear MEMBER_ADD, the newcomer SERVER_CREATE.
    let (mut stranger_ws, _) = identified(&app.ws_url, &cast.stranger.token).await;
    let _: Server = ok(&app, &cast.stranger, Method::POST, &format!("/api/v1/invites/{}", c.invite), None, 200).await;
    let added: Member = serde_json::from_value(next_event(&mut member_ws, event_name::MEMBER_ADD).await).expect("member");
    assert_eq!((added.server_id, added.user.id), (s, cast.stranger.id));
    let created: ServerState =
        serde_json::from_value(next_event(&mut stranger_ws, event_name::SERVER_CREATE).await).expect("state");
    assert_eq!(created.server.id, s);
    assert_eq!(created.me.user.id, cast.stranger.id);
    // A private channel reaches no plain member; a visible one does.
    let secret = private_channel(&app, &cast.owner, &c, "secret").await;
    let open: Channel = ok(
        &app,
        &cast.owner,
        Method::POST,
        &format!("/api/v1/servers/{s}/channels"),
        Some(json!({"name": "open", "kind": "text"})),
        201,
    )
    .await;
    let seen: Channel = serde_json::from_value(next_event(&mut member_ws, event_name::CHANNEL_CREATE).await).expect("channel");
    assert_eq!(seen.id, open.id, "the private channel was not announced to a plain member");
    // Given the role that sees it, the member is told the channel now exists for them.
    let _: Member = ok(
        &app,
        &cast.owner,
        Method::PUT,
        &format!("/api/v1/servers/{s}/members/{}/roles", cast.member.id),
        Some(json!({"roles": [c.mod_role]})),
        200,
    )
    .await;
    let update: Member = serde_json::from_value(next_event(&mut member_ws, event_name::MEMBER_UPDATE).await).expect("member");
    assert_eq!(update.roles, vec![c.mod_role]);
    let appeared: Channel =
        serde_json::from_value(next_event(&mut member_ws, event_name::CHANNEL_CREATE).await).expect("channel");
    assert_eq!(appeared.id, secret.id);
    // READY carries the servers, with the channels each may view.
    let (_ws, ready) = identified(&app.ws_url, &cast.target.token).await;
    let servers: Vec<ServerState> = serde_json::from_value(ready["d"]["servers"].clone()).expect("servers");
    assert_eq!(servers.len(), 1);
    let ids: BTreeSet<ChannelId> = servers[0].channels.iter().map(|ch| ch.id).collect();
    assert!(ids.contains(&open.id) && ids.contains(&c.general) && !ids.contains(&secret.id), "{ids:?}");
    assert_eq!(servers[0].roles.len(), 4);
    let (_ws, ready) = identified(&app.ws_url, &cast.moderator.token).await;
    let servers: Vec<ServerState> = serde_json::from_value(ready["d"]["servers"].clone()).expect("servers");
    assert!(servers[0].channels.iter().any(|ch| ch.id == secret.id));
    // A rename reaches every member.
    let _: Server =
        ok(&app, &cast.owner, Method::PATCH, &format!("/api/v1/servers/{s}"), Some(json!({"name": "Renamed"})), 200).await;
    let renamed: Server = serde_json::from_value(next_event(&mut member_ws, event_name::SERVER_UPDATE).await).expect("server");
    assert_eq!(renamed.name, "Renamed");
    // Kicked: the kicked hears SERVER_DELETE, the others MEMBER_REMOVE.
    assert_eq!(
        status(&app, &cast.owner, Method::DELETE, &format!("/api/v1/servers/{s}/members/{}", cast.stranger.id), None).await,
        StatusCode::NO_CONTENT
    );
    let gone = next_event(&mut stranger_ws, event_name::SERVER_DELETE).await;
    assert_eq!(gone["id"], s.to_string());
    let removed = next_event(&mut member_ws, event_name::MEMBER_REMOVE).await;
    assert_eq!(removed["user_id"], cast.stranger.id.to_string());
    // Deleting a channel tells those who saw it.
    assert_eq!(
        status(&app, &cast.owner, Method::DELETE, &format!("/api/v1/channels/{}", open.id), None).await,
        StatusCode::NO_CONTENT
    );
    let deleted = next_event(&mut member_ws, event_name::CHANNEL_DELETE).await;
    assert_eq!(deleted["id"], open.id.to_string());
    // Deleting the server tells everyone.
    assert_eq!(status(&app, &cast.owner, Method::DELETE, &format!("/api/v1/servers/{s}"), None).await, StatusCode::NO_CONTENT);
    let gone = next_event(&mut member_ws, event_name::SERVER_DELETE).await;
    assert_eq!(gone["id"], s.to_string());
    app.shutdown().await;
}

async fn views_grow_when_readers_may_change(backend: Backend) {
    let app = spawn(backend).await;
    let cast = Cast::new(&app).await;
    let c = community(&app, &cast).await;
    let s = c.server;
    let g = c.general;
    let mut last = view(&app, g).await;
    let mut grows = |now: i64, what: &str| {
        assert!(now > last, "{what}: view {now} after {last}");
        last = now;
    };
    let _: Server = ok(&app, &cast.stranger, Method::POST, &format!("/api/v1/invites/{}", c.invite), None, 200).await;
    grows(view(&app, g).await, "join");
    let _: Member = ok(
        &app,
        &cast.owner,
        Method::PUT,
        &format!("/api/v1/servers/{s}/members/{}/roles", cast.stranger.id),
        Some(json!({"roles": [c.low_role]})),
        200,
    )
    .await;
    grows(view(&app, g).await, "member roles");
    let _: Role = ok(
        &app,
        &cast.owner,
        Method::PATCH,
        &format!("/api/v1/servers/{s}/roles/{}", c.low_role),
        Some(json!({"permissions": Permissions::CONNECT.0})),
        200,
    )
    .await;
    grows(view(&app, g).await, "role permissions");
    let _: Channel = ok(
        &app,
        &cast.owner,
        Method::PATCH,
        &format!("/api/v1/channels/{g}"),
        Some(json!({"overwrites": [{"id": s.to_string(), "kind": "role", "deny": Permissions::SEND_MESSAGES.0}]})),
        200,
    )
    .await;
    grows(view(&app, g).await, "overwrites");
    assert_eq!(
        status(&app, &cast.owner, Method::DELETE, &format!("/api/v1/servers/{s}/members/{}", cast.stranger.id), None).await,
        StatusCode::NO_CONTENT
    );
    grows(view(&app, g).await, "kick");
    assert_eq!(
        status(&app, &cast.owner, Method::PUT, &format!("/api/v1/servers/{s}/bans/{}", cast.target.id), None).await,
        StatusCode::NO_CONTENT
    );
    grows(view(&app, g).await, "ban");
    assert_eq!(
        status(&app, &cast.member, Method::POST, &format!("/api/v1/servers/{s}/leave"), None).await,
        StatusCode::NO_CONTENT
    );
    grows(view(&app, g).await, "leave");
    // What changes no reader leaves it.
    let _: Channel = ok(
        &app,
        &cast.owner,
        Method::PATCH,
        &format!("/api/v1/channels/{g}"),
        Some(json!({"name": "lobby", "topic": "hi"})),
        200,
    )
    .await;
    let _: Server =
        ok(&app, &cast.owner, Method::PATCH, &format!("/api/v1/servers/{s}"), Some(json!({"name": "Other"})), 200).await;
    assert_eq!(view(&app, g).await, last, "renames keep the view");
    // Refused changes leave it too.
    assert_eq!(
        status(
            &app,
            &cast.moderator,
            Method::PUT,
            &format!("/api/v1/servers/{s}/members/{}/roles", cast.admin.id),
            Some(json!({"roles": []}))
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(view(&app, g).await, last);
    app.shutdown().await;
}

async fn group_dms(backend: Backend) {
    let app = spawn(backend).await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let carol = register(&app, "carol").await;
    let dave = register(&app, "dave").await;
    let (mut bob_ws, _) = identified(&app.ws_url, &bob.token).await;
    let (mut dave_ws, _) = identified(&app.ws_url, &dave.token).await;
    let dm: Channel =
        ok(&app, &alice, Method::POST, "/api/v1/channels", Some(json!({"recipients": [bob.id, carol.id], "name": "Trip"})), 201)
            .await;
    assert_eq!(dm.kind, ChannelKind::GroupDm);
    assert_eq!(dm.server_id, None);
    assert_eq!(dm.owner_id, Some(alice.id));
    assert_eq!(dm.name, "Trip");
    let members = |ch: &Channel| ch.recipients.iter().map(|u| u.id).collect::<Vec<_>>();
    assert_eq!(members(&dm), vec![alice.id, bob.id, carol.id]);
    let told: Channel = serde_json::from_value(next_event(&mut bob_ws, event_name::CHANNEL_CREATE).await).expect("channel");
    assert_eq!(told.id, dm.id);
    let path = format!("/api/v1/channels/{}", dm.id);
    let listed: Vec<Channel> = ok(&app, &bob, Method::GET, "/api/v1/users/@me/channels", None, 200).await;
    assert_eq!(listed, vec![dm.clone()]);
    // Outsiders see nothing of it.
    assert_eq!(status(&app, &dave, Method::GET, &path, None).await, StatusCode::NOT_FOUND);
    assert_eq!(status(&app, &dave, Method::PATCH, &path, Some(json!({"name": "mine"}))).await, StatusCode::NOT_FOUND);
    assert_eq!(status(&app, &dave, Method::PUT, &format!("{path}/recipients/{}", dave.id), None).await, StatusCode::NOT_FOUND);
    // Any member renames and adds; the view moves with members.
    let renamed: Channel = ok(&app, &bob, Method::PATCH, &path, Some(json!({"name": "Summer trip"})), 200).await;
    assert_eq!(renamed.name, "Summer trip");
    assert_eq!(refused(&app, &bob, Method::PATCH, &path, Some(json!({"topic": "x"}))).await.0, 422);
    let v = view(&app, dm.id).await;
    assert_eq!(status(&app, &bob, Method::PUT, &format!("{path}/recipients/{}", dave.id), None).await, StatusCode::NO_CONTENT);
    assert!(view(&app, dm.id).await > v);
    let joined: Channel = serde_json::from_value(next_event(&mut dave_ws, event_name::CHANNEL_CREATE).await).expect("channel");
    assert_eq!(joined.id, dm.id);
    let v = view(&app, dm.id).await;
    assert_eq!(
        status(&app, &bob, Method::PUT, &format!("{path}/recipients/{}", dave.id), None).await,
        StatusCode::NO_CONTENT,
        "already in"
    );
    assert_eq!(view(&app, dm.id).await, v, "nothing changed");
    assert_eq!(status(&app, &bob, Method::PUT, &format!("{path}/recipients/424242"), None).await, StatusCode::NOT_FOUND);
    // Only the owner removes others; anyone leaves.
    assert_eq!(status(&app, &bob, Method::DELETE, &format!("{path}/recipients/{}", dave.id), None).await, StatusCode::FORBIDDEN);
    assert_eq!(
        status(&app, &alice, Method::DELETE, &format!("{path}/recipients/{}", dave.id), None).await,
        StatusCode::NO_CONTENT
    );
    let gone = next_event(&mut dave_ws, event_name::CHANNEL_DELETE).await;
    assert_eq!(gone["id"], dm.id.to_string());
    assert_eq!(status(&app, &dave, Method::GET, &path, None).await, StatusCode::NOT_FOUND);
    // The owner leaves: the oldest member owns it.
    assert_eq!(
        status(&app, &alice, Method::DELETE, &format!("{path}/recipients/{}", alice.id), None).await,
        StatusCode::NO_CONTENT
    );
    let now: Channel = ok(&app, &carol, Method::GET, &path, None, 200).await;
    assert_eq!(now.owner_id, Some(bob.id));
    assert_eq!(members(&now), vec![bob.id, carol.id]);
    // Full at 25.
    let mut others = Vec::new();
    for i in 0..25 {
        others.push(register(&app, &format!("friend{i}")).await);
    }
    let ids: Vec<UserId> = others.iter().map(|u| u.id).collect();
    assert_eq!(
        refused(&app, &alice, Method::POST, "/api/v1/channels", Some(json!({"recipients": ids}))).await.0,
        422,
        "25 others"
    );
    let big: Channel =
        ok(&app, &alice, Method::POST, "/api/v1/channels", Some(json!({"recipients": ids[..24].to_vec()})), 201).await;
    assert_eq!(big.recipients.len(), 25);
    assert_eq!(big.name, "");
    assert_eq!(
        refused(&app, &alice, Method::PUT, &format!("/api/v1/channels/{}/recipients/{}", big.id, dave.id), None).await.0,
        409
    );
    // The last one out deletes it.
    assert_eq!(status(&app, &bob, Method::DELETE, &path, None).await, StatusCode::NO_CONTENT);
    assert_eq!(
        status(&app, &carol, Method::DELETE, &format!("{path}/recipients/{}", carol.id), None).await,
        StatusCode::NO_CONTENT
    );
    let mine: Vec<Channel> = ok(&app, &carol, Method::GET, "/api/v1/users/@me/channels", None, 200).await;
    assert!(mine.is_empty());
    assert_eq!(app.count(&format!("channels WHERE id = {}", dm.id)).await, 0);
    // READY carries the group DMs.
    let (_ws, ready) = identified(&app.ws_url, &alice.token).await;
    let dms: Vec<Channel> = serde_json::from_value(ready["d"]["group_dms"].clone()).expect("group dms");
    assert_eq!(dms.iter().map(|d| d.id).collect::<Vec<_>>(), vec![big.id]);
    app.shutdown().await;
}

async fn every_route_is_in_the_openapi_document(backend: Backend) {
    let app = spawn(backend).await;
    let doc: Value = reqwest::get(app.url("/api/v1/openapi.json")).await.expect("req").json().await.expect("json");
    for (path, methods) in [
        ("/api/v1/servers", &["get", "post"][..]),
        ("/api/v1/servers/{server_id}", &["get", "patch", "delete"]),
        ("/api/v1/servers/{server_id}/state", &["get"]),
        ("/api/v1/servers/{server_id}/leave", &["post"]),
        ("/api/v1/servers/{server_id}/members", &["get"]),
        ("/api/v1/servers/{server_id}/members/{user_id}", &["get", "delete"]),
        ("/api/v1/servers/{server_id}/members/{user_id}/roles", &["put"]),
        ("/api/v1/servers/{server_id}/bans", &["get"]),
        ("/api/v1/servers/{server_id}/bans/{user_id}", &["put", "delete"]),
        ("/api/v1/servers/{server_id}/members/{user_id}/timeout", &["put", "delete"]),
        ("/api/v1/servers/{server_id}/audit-log", &["get"]),
        ("/api/v1/admin/users", &["get"]),
        ("/api/v1/admin/users/{user_id}", &["get"]),
        ("/api/v1/admin/users/{user_id}/disable", &["post"]),
        ("/api/v1/admin/users/{user_id}/enable", &["post"]),
        ("/api/v1/admin/users/{user_id}/logout", &["post"]),
        ("/api/v1/admin/users/{user_id}/role", &["put"]),
        ("/api/v1/admin/stats", &["get"]),
        ("/api/v1/admin/audit-log", &["get"]),
        ("/api/v1/servers/{server_id}/roles", &["get", "post"]),
        ("/api/v1/servers/{server_id}/roles/{role_id}", &["patch", "delete"]),
        ("/api/v1/servers/{server_id}/channels", &["get", "post"]),
        ("/api/v1/servers/{server_id}/invites", &["get", "post"]),
        ("/api/v1/invites/{code}", &["get", "post", "delete"]),
        ("/api/v1/channels", &["post"]),
        ("/api/v1/channels/{channel_id}", &["get", "patch", "delete"]),
        ("/api/v1/channels/{channel_id}/recipients/{user_id}", &["put", "delete"]),
        ("/api/v1/users/@me/channels", &["get"]),
        ("/api/v1/channels/{channel_id}/recipients", &["get"]),
        ("/api/v1/channels/{channel_id}/sender-keys", &["post"]),
        ("/api/v1/channels/{channel_id}/bundles", &["post"]),
        ("/api/v1/channels/{channel_id}/device-lists", &["post"]),
        ("/api/v1/channels/{channel_id}/messages", &["get", "post"]),
    ] {
        for method in methods {
            assert!(doc["paths"][path][method].is_object(), "{method} {path} missing from the OpenAPI document");
        }
    }
    for schema in [
        "Server",
        "ServerState",
        "Channel",
        "Role",
        "Member",
        "Invite",
        "InvitePreview",
        "Ban",
        "NewTimeout",
        "AuditLog",
        "AuditEntry",
        "AuditAction",
        "NewGroupDm",
        "SendSenderKeys",
        "ClaimBundles",
        "ClaimedBundles",
        "ReadDeviceLists",
        "DeviceLists",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema}");
    }
    // Generated clients name each operation by its id: every one is unique. A parameter said
    // to be in the path is one of the path's; the others are in the query.
    let mut ids = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_owned()), "operationId {id} twice (at {method} {path})");
            for p in op["parameters"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let name = p["name"].as_str().expect("parameter name");
                if p["in"] == "path" {
                    assert!(path.contains(&format!("{{{name}}}")), "{method} {path}: {name} is not in the path");
                    // What the route checks of an id is in the document: decimal digits.
                    if name.ends_with("_id") {
                        let bounded = p["schema"]["pattern"].is_string() || p["schema"]["maximum"].is_u64();
                        assert!(bounded, "{method} {path}: {name} has neither pattern nor bounds");
                    }
                }
                if name == "limit" {
                    let range = (p["schema"]["minimum"].as_u64(), p["schema"]["maximum"].as_u64());
                    assert!(matches!(range, (Some(1), Some(max)) if max >= 100), "{method} {path}: limit {range:?}");
                }
            }
        }
    }
    // The pattern admits every id the server makes and nothing that is not one.
    let pattern = copains_client_core::ids::ID_PATTERN;
    let server_id = &doc["paths"]["/api/v1/servers/{server_id}"]["get"]["parameters"][0]["schema"]["pattern"];
    assert_eq!(server_id, pattern);
    let id = regex::Regex::new(pattern).expect("a regular expression");
    for good in ["0", "1", "118820194968666112", "9219999999999999999"] {
        assert!(id.is_match(good) && good.parse::<i64>().is_ok(), "{good}");
    }
    for bad in ["", "-1", "1a", " 1", "9223372036854775808", "99999999999999999999"] {
        assert!(!id.is_match(bad), "{bad}");
    }
    app.shutdown().await;
}

async fn the_native_client_renames_a_channel_and_leaves_its_category(backend: Backend) {
    use copains_client_core::servers::{ChannelKind, EditChannel};
    let app = spawn(backend).await;
    let client = app.client();
    client.register("owner", "a-long-password", Some("first")).await.expect("register");
    let server = client.create_server("Les Copains").await.expect("server");
    let state = client.server_state(server.id).await.expect("state");
    let text = state
        .channels
        .iter()
        .find(|c| c.kind == ChannelKind::Text && c.parent_id.is_some())
        .expect("a text channel in a category");
    // Only the name: the category stays (a parent left out is not a parent set to none).
    let renamed =
        client.edit_channel(text.id, &EditChannel { name: Some("lounge".into()), ..EditChannel::default() }).await.expect("edit");
    assert_eq!((renamed.name.as_str(), renamed.parent_id), ("lounge", text.parent_id));
    // Out of its category on purpose.
    let moved =
        client.edit_channel(text.id, &EditChannel { parent_id: Some(None), ..EditChannel::default() }).await.expect("edit");
    assert_eq!((moved.name.as_str(), moved.parent_id), ("lounge", None));
    app.shutdown().await;
}
