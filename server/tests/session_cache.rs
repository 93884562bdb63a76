//! Authenticated requests read live sessions from an in-memory cache; every way a session
//! ends must still refuse its tokens at once, and a profile change must show at once from
//! every session. Each check first warms the cache with requests that succeed.

mod common;

use common::{Backend, TestApp};
use copains_client_core::api::{Patch, UpdateProfile};
use copains_client_core::client::Client;
use reqwest::StatusCode;

backend_tests!(a_cached_session_is_refused_at_once_however_it_ends, a_profile_change_shows_at_once_from_every_session,);

/// Makes requests that succeed (so the session is cached); returns the access token.
async fn warm(c: &Client) -> String {
    for _ in 0..3 {
        c.me().await.expect("live session");
    }
    c.access_token().await.expect("token")
}

/// `GET /users/@me` with `token` is refused.
async fn refused(app: &TestApp, token: &str, what: &str) {
    let resp = reqwest::Client::new().get(app.url("/api/v1/users/@me")).bearer_auth(token).send().await.expect("request");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
}

async fn login(app: &TestApp, name: &str, password: &str) -> Client {
    let c = app.client();
    c.login(name, password, Some("device")).await.expect("login");
    c
}

async fn a_cached_session_is_refused_at_once_however_it_ends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.client();
    first.register("alice", "a-long-password", Some("laptop")).await.expect("register");
    warm(&first).await;

    // Logout.
    let c = login(&app, "alice", "a-long-password").await;
    let token = warm(&c).await;
    c.logout().await.expect("logout");
    refused(&app, &token, "after logout").await;

    // Revoked from another session.
    let c = login(&app, "alice", "a-long-password").await;
    let token = warm(&c).await;
    first.revoke_session(c.session_id().await.expect("session")).await.expect("revoke");
    refused(&app, &token, "after revocation").await;

    // Its device removed.
    let c = login(&app, "alice", "a-long-password").await;
    let token = warm(&c).await;
    first.remove_device(c.device_id().await.expect("device")).await.expect("remove device");
    refused(&app, &token, "after device removal").await;

    // A password change ends every other session.
    let c = login(&app, "alice", "a-long-password").await;
    let token = warm(&c).await;
    first.change_password("a-long-password", "another-long-password").await.expect("change password");
    refused(&app, &token, "after a password change").await;
    warm(&first).await;

    // A refresh token used twice ends the session.
    let c = login(&app, "alice", "another-long-password").await;
    warm(&c).await;
    let stolen = c.refresh_token().await.expect("refresh token");
    c.refresh().await.expect("refresh");
    let token = warm(&c).await;
    let reuse = reqwest::Client::new()
        .post(app.url("/api/v1/auth/refresh"))
        .json(&serde_json::json!({ "refresh_token": stolen }))
        .send()
        .await
        .expect("reuse");
    assert_eq!(reuse.status(), StatusCode::UNAUTHORIZED);
    refused(&app, &token, "after refresh-token reuse").await;

    // Positive control: the session that did all this still works.
    assert_eq!(first.me().await.expect("still live").username, "alice");
    app.shutdown().await;
}

async fn a_profile_change_shows_at_once_from_every_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.client();
    a.register("bob", "a-long-password", Some("laptop")).await.expect("register");
    let b = login(&app, "bob", "a-long-password").await;
    warm(&a).await;
    warm(&b).await;
    let change = UpdateProfile { display_name: Patch::Set("Bobby".into()), ..Default::default() };
    a.update_profile(&change).await.expect("update");
    assert_eq!(b.me().await.expect("me").display_name.as_deref(), Some("Bobby"), "the other session sees the change");
    app.shutdown().await;
}
