//! Accounts and sessions through the real server: register, login, refresh (with rotation
//! and reuse detection), logout, profile, password change, session revocation, and every
//! kind of bad input answered with the JSON error body. Expiry is tested with time as an
//! input: the store is asked what happens at a given instant, and the client's refresh
//! schedule runs on tokio's paused clock.

mod common;

use common::{Backend, TestApp};
use copains_client_core::api::{AuthResponse, Patch, UpdateProfile};
use copains_client_core::{ApiErrorBody, DeviceId, ErrorCode};
use reqwest::StatusCode;
use serde_json::{json, Value};

backend_tests!(
    register_login_profile_and_devices,
    refresh_rotates_and_reuse_revokes_the_session,
    logout_ends_the_session_and_its_device,
    password_change_ends_every_other_session,
    sessions_can_be_listed_and_revoked,
    bad_input_gets_clear_errors_and_writes_nothing,
    bad_tokens_are_refused,
    auth_routes_are_rate_limited,
    health_metrics_and_openapi,
    expired_sessions_are_purged_with_their_devices,
    an_expired_refresh_token_is_refused_without_being_consumed,
    housekeeping_ends_expired_sessions_and_says_so,
);

async fn post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new().post(app.url(path)).json(&body).send().await.expect("request")
}

async fn error_of(resp: reqwest::Response) -> (StatusCode, ErrorCode) {
    let status = resp.status();
    let body: ApiErrorBody = resp.json().await.expect("JSON error body");
    assert!(!body.error.message.is_empty());
    (status, body.error.code)
}

async fn register_login_profile_and_devices(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let resp =
        post(&app, "/api/v1/auth/register", json!({"username": "Alice", "password": "correct horse", "device_name": "Laptop"}))
            .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let reg: AuthResponse = resp.json().await.expect("auth response");
    assert_eq!(reg.user.username, "Alice");
    assert_eq!(reg.device_id.0, 1);
    assert_eq!(reg.tokens.access_token_expires_in, 900);
    assert_eq!(reg.tokens.access_token.split('.').count(), 3, "a JWT");

    let alice = app.client();
    let login = alice.login("alice", "correct horse", Some("Phone")).await.expect("login is case-insensitive");
    assert_eq!(login.user.id, reg.user.id);
    assert_eq!(login.device_id.0, 2, "each login is a new device");

    let me = alice.me().await.expect("me");
    assert_eq!(me, reg.user);

    let updated = alice
        .update_profile(&UpdateProfile {
            display_name: Patch::Set("  Alice A.  ".into()),
            status_text: Patch::Set("coding".into()),
        })
        .await
        .expect("update");
    assert_eq!(updated.display_name.as_deref(), Some("Alice A."));
    assert_eq!(updated.status_text.as_deref(), Some("coding"));
    let cleared =
        alice.update_profile(&UpdateProfile { display_name: Patch::Keep, status_text: Patch::Clear }).await.expect("clear");
    assert_eq!(cleared.display_name.as_deref(), Some("Alice A."), "absent field kept");
    assert_eq!(cleared.status_text, None, "null clears");
    assert_eq!(alice.me().await.expect("me"), cleared, "stored");

    let devices = alice.devices().await.expect("devices");
    assert_eq!(devices.iter().map(|d| (d.id.0, d.name.as_str())).collect::<Vec<_>>(), vec![(1, "Laptop"), (2, "Phone")]);

    let renamed = alice.rename_device(DeviceId(1), "  Work laptop ").await.expect("rename");
    assert_eq!((renamed.id.0, renamed.name.as_str()), (1, "Work laptop"));
    let devices = alice.devices().await.expect("devices");
    assert_eq!(devices.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), vec!["Work laptop", "Phone"], "stored");
    let err = alice.rename_device(DeviceId(1), "").await.expect_err("empty name");
    assert_eq!(err.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    let err = alice.rename_device(DeviceId(1), &"d".repeat(65)).await.expect_err("long name");
    assert_eq!(err.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    let err = alice.rename_device(DeviceId(9), "Tablet").await.expect_err("no such device");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    let raw = reqwest::Client::new()
        .patch(app.url("/api/v1/users/@me/devices/0"))
        .bearer_auth(alice.access_token().await.expect("token"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .expect("request");
    assert_eq!(error_of(raw).await, (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest), "device id 0");
    let bob = app.client();
    bob.register("bob", "correct horse", Some("Bob's phone")).await.expect("bob");
    let err = bob.rename_device(DeviceId(2), "mine now").await.expect_err("someone else's device");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(alice.devices().await.expect("devices")[1].name, "Phone", "untouched by others");

    let bad = alice
        .update_profile(&UpdateProfile { display_name: Patch::Set(" ".into()), status_text: Patch::Keep })
        .await
        .expect_err("blank display name");
    assert_eq!(bad.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    let raw = reqwest::Client::new()
        .patch(app.url("/api/v1/users/@me"))
        .bearer_auth(alice.access_token().await.expect("token"))
        .json(&json!({"display_name": "x", "admin": true}))
        .send()
        .await
        .expect("request");
    assert_eq!(error_of(raw).await, (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest), "unknown field");
    app.shutdown().await;
}

async fn refresh_rotates_and_reuse_revokes_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bob = app.client();
    bob.register("bob", "password-bob", None).await.expect("register");
    let first = bob.refresh_token().await.expect("refresh token");
    bob.refresh().await.expect("refresh");
    let second = bob.refresh_token().await.expect("rotated");
    assert_ne!(first, second, "rotated at each use");
    bob.me().await.expect("new access token works");

    // Reusing the first (already used) refresh token revokes the whole session.
    let (status, code) = error_of(post(&app, "/api/v1/auth/refresh", json!({"refresh_token": first})).await).await;
    assert_eq!((status, code), (StatusCode::UNAUTHORIZED, ErrorCode::InvalidRefreshToken));
    let err = bob.me().await.expect_err("session revoked: access token refused at once");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    let (status, _) = error_of(post(&app, "/api/v1/auth/refresh", json!({"refresh_token": second})).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the current token of a revoked session is dead too");
    assert_eq!(app.count("sessions").await, 0);
    assert_eq!(app.count("devices").await, 0, "the revoked session's device is gone");

    let (status, code) = error_of(post(&app, "/api/v1/auth/refresh", json!({"refresh_token": "nonsense"})).await).await;
    assert_eq!((status, code), (StatusCode::UNAUTHORIZED, ErrorCode::InvalidRefreshToken));
    app.shutdown().await;
}

async fn logout_ends_the_session_and_its_device(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let carol = app.client();
    carol.register("carol", "password-carol", None).await.expect("register");
    let other = app.client();
    other.login("carol", "password-carol", None).await.expect("second device");
    let token = carol.access_token().await.expect("token");
    let refresh = carol.refresh_token().await.expect("refresh");
    carol.logout().await.expect("logout");
    let resp = reqwest::Client::new().get(app.url("/api/v1/users/@me")).bearer_auth(&token).send().await.expect("req");
    assert_eq!(error_of(resp).await, (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized));
    let (status, _) = error_of(post(&app, "/api/v1/auth/refresh", json!({"refresh_token": refresh})).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let devices = other.devices().await.expect("devices");
    assert_eq!(devices.len(), 1, "the logged-out device is removed");
    let resp = reqwest::Client::new().post(app.url("/api/v1/auth/logout")).send().await.expect("req");
    assert_eq!(error_of(resp).await.0, StatusCode::UNAUTHORIZED, "logout needs a token");
    app.shutdown().await;
}

async fn password_change_ends_every_other_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.client();
    a.register("dave", "old-password", None).await.expect("register");
    let b = app.client();
    b.login("dave", "old-password", None).await.expect("login b");
    let c = app.client();
    c.login("dave", "old-password", None).await.expect("login c");

    let wrong = a.change_password("not-the-password", "new-password").await.expect_err("wrong current");
    assert_eq!(wrong.status(), Some(StatusCode::UNAUTHORIZED));
    let weak = a.change_password("old-password", "short").await.expect_err("weak");
    assert_eq!(weak.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    b.me().await.expect("nothing changed yet");

    a.change_password("old-password", "new-password").await.expect("change");
    a.me().await.expect("current session stays");
    assert_eq!(b.me().await.expect_err("b ended").status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(c.me().await.expect_err("c ended").status(), Some(StatusCode::UNAUTHORIZED));
    let old = app.client().login("dave", "old-password", None).await.expect_err("old password");
    assert_eq!(old.status(), Some(StatusCode::UNAUTHORIZED));
    app.client().login("dave", "new-password", None).await.expect("new password");
    app.shutdown().await;
}

async fn sessions_can_be_listed_and_revoked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.client();
    a.register("erin", "password-erin", Some("Desktop")).await.expect("register");
    let b = app.client();
    b.login("erin", "password-erin", Some("Tablet")).await.expect("login");
    let sessions = a.sessions().await.expect("sessions");
    assert_eq!(sessions.len(), 2);
    let current: Vec<_> = sessions.iter().filter(|s| s.current).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].device.name, "Desktop");
    let tablet = sessions.iter().find(|s| !s.current).expect("other").id;

    let mallory = app.client();
    mallory.register("mallory", "password-mallory", None).await.expect("register");
    let err = mallory.revoke_session(tablet).await.expect_err("not hers");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    b.me().await.expect("still alive");

    a.revoke_session(tablet).await.expect("revoke");
    assert_eq!(b.me().await.expect_err("revoked").status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(a.revoke_session(tablet).await.expect_err("twice").status(), Some(StatusCode::NOT_FOUND));
    let resp = reqwest::Client::new()
        .delete(app.url("/api/v1/users/@me/sessions/abc"))
        .bearer_auth(a.access_token().await.expect("token"))
        .send()
        .await
        .expect("req");
    assert_eq!(error_of(resp).await, (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest));
    assert_eq!(a.sessions().await.expect("sessions").len(), 1);
    app.shutdown().await;
}

async fn bad_input_gets_clear_errors_and_writes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let http = reqwest::Client::new();
    let register = app.url("/api/v1/auth/register");

    let resp = http.post(&register).header("content-type", "application/json").body("{not json").send().await.expect("req");
    assert_eq!(error_of(resp).await, (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest));
    let resp = post(&app, "/api/v1/auth/register", json!({"username": 5, "password": "password1"})).await;
    assert_eq!(error_of(resp).await, (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest), "wrong type");
    let resp = post(&app, "/api/v1/auth/register", json!({"username": "frank"})).await;
    assert_eq!(error_of(resp).await, (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest), "missing field");
    let resp = http.post(&register).body(r#"{"username":"frank","password":"password1"}"#).send().await.expect("req");
    assert_eq!(error_of(resp).await, (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest), "no content type");
    let huge = format!(r#"{{"username":"frank","password":"{}"}}"#, "x".repeat(1024 * 1024 + 10));
    let resp = http.post(&register).header("content-type", "application/json").body(huge).send().await.expect("req");
    assert_eq!(error_of(resp).await, (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge));

    for (username, password) in [
        ("f", "password1"),
        ("frank with spaces", "password1"),
        ("frank!", "password1"),
        (".frank", "password1"),
        ("frank", "short"),
    ] {
        let resp = post(&app, "/api/v1/auth/register", json!({"username": username, "password": password})).await;
        assert_eq!(error_of(resp).await, (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationFailed), "{username}");
    }
    let resp = post(&app, "/api/v1/auth/register", json!({"username": "frank", "password": "p".repeat(1025)})).await;
    assert_eq!(error_of(resp).await, (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationFailed), "1025 bytes");
    let resp =
        post(&app, "/api/v1/auth/register", json!({"username": "frank", "password": "password1", "device_name": ""})).await;
    assert_eq!(error_of(resp).await, (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationFailed), "device name");
    assert_eq!(app.count("users").await, 0, "no failed registration wrote anything");
    assert_eq!(app.count("devices").await, 0);

    let resp = post(&app, "/api/v1/auth/register", json!({"username": "frank", "password": "p".repeat(1024)})).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "1024 bytes is allowed");
    let resp = post(&app, "/api/v1/auth/register", json!({"username": "FRANK", "password": "password1"})).await;
    assert_eq!(error_of(resp).await, (StatusCode::CONFLICT, ErrorCode::UsernameTaken), "case-insensitive");
    assert_eq!(app.count("users").await, 1);
    assert_eq!(app.count("sessions").await, 1);

    let resp = post(&app, "/api/v1/auth/login", json!({"username": "frank", "password": "wrong-password"})).await;
    assert_eq!(error_of(resp).await, (StatusCode::UNAUTHORIZED, ErrorCode::InvalidCredentials));
    let resp = post(&app, "/api/v1/auth/login", json!({"username": "nobody", "password": "password1"})).await;
    assert_eq!(error_of(resp).await, (StatusCode::UNAUTHORIZED, ErrorCode::InvalidCredentials), "same answer for unknown users");
    let resp = post(&app, "/api/v1/auth/login", json!({"username": "frank", "password": "p".repeat(2000)})).await;
    assert_eq!(error_of(resp).await, (StatusCode::UNAUTHORIZED, ErrorCode::InvalidCredentials));
    assert_eq!(app.count("sessions").await, 1, "failed logins create no session");

    let resp = http.get(app.url("/api/v1/nope")).send().await.expect("req");
    assert_eq!(error_of(resp).await, (StatusCode::NOT_FOUND, ErrorCode::UnknownRoute));
    let resp = http.delete(app.url("/api/v1/auth/login")).send().await.expect("req");
    assert_eq!(error_of(resp).await.0, StatusCode::METHOD_NOT_ALLOWED);
    let resp = http.get(app.url("/gateway")).send().await.expect("req");
    assert_eq!(error_of(resp).await, (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest), "gateway without upgrade");
    app.shutdown().await;
}

async fn bad_tokens_are_refused(backend: Backend) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let app = TestApp::spawn(backend).await;
    let gina = app.client();
    let auth = gina.register("gina", "password-gina", None).await.expect("register");
    let good = auth.tokens.access_token.clone();
    let parts: Vec<&str> = good.split('.').collect();

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let expired = app
        .running()
        .state()
        .tokens
        .issue(auth.user.id, auth.device_id, auth.session_id, auth.user.platform_role, now - 3600)
        .expect("issue");
    let (other_key, _) = copains_backend::auth::JwtKeyPair::generate("x").expect("key");
    let forged = copains_backend::auth::TokenService::new(other_key, vec![], "copains", std::time::Duration::from_secs(900))
        .issue(auth.user.id, auth.device_id, auth.session_id, auth.user.platform_role, now)
        .expect("issue");
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).expect("b64")).expect("json");
    let none_header = b64.encode(json!({"alg": "none", "typ": "JWT", "kid": header["kid"]}).to_string());
    let alg_none = format!("{none_header}.{}.", parts[1]);
    let hs_header = b64.encode(json!({"alg": "HS256", "typ": "JWT", "kid": header["kid"]}).to_string());
    let alg_hs = format!("{hs_header}.{}.{}", parts[1], parts[2]);
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).expect("b64")).expect("json");
    claims["role"] = json!("admin");
    let tampered = format!("{}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2]);

    let http = reqwest::Client::new();
    for (what, value) in [
        ("garbage", "Bearer not-a-token".to_owned()),
        ("expired", format!("Bearer {expired}")),
        ("forged", format!("Bearer {forged}")),
        ("alg none", format!("Bearer {alg_none}")),
        ("alg HS256", format!("Bearer {alg_hs}")),
        ("tampered claims", format!("Bearer {tampered}")),
        ("wrong scheme", format!("Basic {good}")),
        ("empty bearer", "Bearer ".to_owned()),
    ] {
        let resp = http.get(app.url("/api/v1/users/@me")).header("authorization", value).send().await.expect("req");
        assert_eq!(error_of(resp).await, (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized), "{what}");
    }
    let resp = http.get(app.url("/api/v1/users/@me")).send().await.expect("req");
    assert_eq!(error_of(resp).await, (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized), "missing");
    let resp = http.get(app.url("/api/v1/users/@me")).bearer_auth(&good).send().await.expect("req");
    assert_eq!(resp.status(), StatusCode::OK, "the genuine token still works");
    app.shutdown().await;
}

async fn auth_routes_are_rate_limited(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.auth_burst = 3;
        c.api.rate_limits.auth_per_minute = 1;
    })
    .await;
    for _ in 0..3 {
        let resp = post(&app, "/api/v1/auth/login", json!({"username": "nobody", "password": "password1"})).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = post(&app, "/api/v1/auth/login", json!({"username": "nobody", "password": "password1"})).await;
    let retry_after: u64 =
        resp.headers().get("retry-after").expect("Retry-After").to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=61).contains(&retry_after), "{retry_after}");
    assert_eq!(error_of(resp).await, (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited));
    app.shutdown().await;
}

async fn health_metrics_and_openapi(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let http = reqwest::Client::new();
    assert_eq!(http.get(app.url("/healthz")).send().await.expect("req").status(), StatusCode::OK);
    let ready: Value = http.get(app.url("/readyz")).send().await.expect("req").json().await.expect("json");
    assert_eq!(ready, json!({"status": "ready", "database": true}));
    app.client().register("henri", "password-henri", None).await.expect("register");

    let metrics = http.get(app.url("/metrics")).send().await.expect("req").text().await.expect("text");
    assert!(
        metrics.contains(r#"copains_http_requests_total{method="POST",route="/api/v1/auth/register",status="201"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("copains_http_request_duration_seconds_bucket"));
    assert!(metrics.contains("copains_gateway_connections 0"));
    assert!(metrics.contains("copains_gateway_events_sent_total"));

    let doc: Value = http.get(app.url("/api/v1/openapi.json")).send().await.expect("req").json().await.expect("json");
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"));
    for path in [
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/users/@me",
        "/api/v1/users/@me/password",
        "/api/v1/users/@me/sessions",
        "/api/v1/users/@me/sessions/{session_id}",
        "/api/v1/users/@me/devices",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"]["AuthResponse"].is_object());
    assert!(doc["components"]["schemas"]["ApiErrorBody"].is_object());
    app.shutdown().await;
}

/// When the refresh token of `auth` expires, in milliseconds since the Unix epoch (as the
/// store keeps times).
fn refresh_expiry_ms(auth: &AuthResponse) -> i64 {
    i64::try_from(auth.tokens.refresh_token_expires_at.unix_timestamp_nanos() / 1_000_000).expect("ms")
}

async fn expired_sessions_are_purged_with_their_devices(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let store = app.running().state().store.clone();
    let laptop = app.client();
    let laptop_auth = laptop.register("lea", "password-lea", Some("Laptop")).await.expect("register");
    let phone = app.client();
    let phone_auth = phone.login("lea", "password-lea", Some("Phone")).await.expect("login");
    let laptop_expiry = refresh_expiry_ms(&laptop_auth);
    let phone_expiry = refresh_expiry_ms(&phone_auth);
    // The login hashed a password after the registration answered: its expiry is later.
    assert!(laptop_expiry < phone_expiry, "{laptop_expiry} < {phone_expiry}");

    // The phone refreshes once: its first refresh token is used, and expires when it was
    // going to; the session moves to the new token's expiry.
    let phone_first = phone.refresh_token().await.expect("token");
    phone.refresh().await.expect("refresh");
    assert_eq!(app.count("refresh_tokens").await, 3, "the laptop's, the phone's used one, the phone's current one");

    assert_eq!(store.purge_expired(laptop_expiry - 1).await.expect("purge"), vec![], "nothing has expired yet");
    assert_eq!((app.count("sessions").await, app.count("devices").await), (2, 2));

    // At its expiry, the laptop's session goes, with its device and its refresh token.
    let ended = store.purge_expired(laptop_expiry).await.expect("purge");
    assert_eq!(ended, vec![(laptop_auth.user.id, laptop_auth.session_id)]);
    assert_eq!((app.count("sessions").await, app.count("devices").await), (1, 1));
    let devices = phone.devices().await.expect("devices");
    assert_eq!(devices.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), vec!["Phone"]);
    let laptop_refresh = laptop.refresh_token().await.expect("token");
    let (status, code) = error_of(post(&app, "/api/v1/auth/refresh", json!({"refresh_token": laptop_refresh})).await).await;
    assert_eq!((status, code), (StatusCode::UNAUTHORIZED, ErrorCode::InvalidRefreshToken));

    // At the phone's first expiry, only its used token goes: the session lives on.
    assert_eq!(store.purge_expired(phone_expiry).await.expect("purge"), vec![]);
    assert_eq!(app.count("refresh_tokens").await, 1);
    assert_ne!(phone.refresh_token().await, Some(phone_first));
    phone.refresh().await.expect("the current token still works");
    phone.me().await.expect("the phone is still signed in");
    app.shutdown().await;
}

async fn an_expired_refresh_token_is_refused_without_being_consumed(backend: Backend) {
    use copains_backend::auth::{hash_refresh_token, new_refresh_token};
    use copains_backend::store::Rotation;

    let app = TestApp::spawn(backend).await;
    let store = app.running().state().store.clone();
    let max = app.client();
    let auth = max.register("max", "password-max", None).await.expect("register");
    let expiry = refresh_expiry_ms(&auth);
    let token = max.refresh_token().await.expect("token");
    let later = expiry + 7 * 24 * 3600 * 1000;

    // Presented at its expiry, the token is refused as invalid: not taken for a reuse (which
    // would revoke the session), and not consumed.
    let (_, unused_hash) = new_refresh_token();
    let outcome = store.rotate_refresh_token(&hash_refresh_token(&token), &unused_hash, expiry, later).await.expect("rotate");
    assert!(matches!(outcome, Rotation::Invalid), "{outcome:?}");
    assert_eq!(app.count("sessions").await, 1, "the session is not revoked");
    assert_eq!(app.count("refresh_tokens").await, 1, "no token was added");

    // A millisecond earlier it is still good: it is exchanged for a new one, which works.
    let (next, next_hash) = new_refresh_token();
    let outcome = store.rotate_refresh_token(&hash_refresh_token(&token), &next_hash, expiry - 1, later).await.expect("rotate");
    assert!(matches!(outcome, Rotation::Rotated { session_id, .. } if session_id == auth.session_id), "{outcome:?}");
    let resp = post(&app, "/api/v1/auth/refresh", json!({"refresh_token": next})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    app.shutdown().await;
}

async fn housekeeping_ends_expired_sessions_and_says_so(backend: Backend) {
    use copains_client_core::client::GatewayUpdate;
    use copains_client_core::gateway::{close, Event};

    let app = TestApp::spawn(backend).await;
    let laptop = app.client();
    let laptop_auth = laptop.register("noa", "password-noa", Some("Laptop")).await.expect("register");
    let phone = app.client();
    let phone_auth = phone.login("noa", "password-noa", Some("Phone")).await.expect("login");
    let laptop_expiry = refresh_expiry_ms(&laptop_auth);
    assert!(laptop_expiry < refresh_expiry_ms(&phone_auth));
    let mut laptop_gw = laptop.connect_gateway().await.expect("gateway");
    laptop_gw.next_event().await.expect("ready");
    let mut phone_gw = phone.connect_gateway().await.expect("gateway");
    phone_gw.next_event().await.expect("ready");

    // The pass that runs every minute, run as of a given instant.
    copains_backend::housekeep(app.running().state(), laptop_expiry - 1).await;
    assert_eq!(app.count("sessions").await, 2, "nothing expired a millisecond early");
    laptop.me().await.expect("the laptop is still signed in");

    copains_backend::housekeep(app.running().state(), laptop_expiry).await;
    assert_eq!(app.count("sessions").await, 1);
    // The other device is told, ...
    let (_, event) = phone_gw.next_event().await.expect("event");
    let Event::SessionRevoked(revoked) = event else { panic!("expected SESSION_REVOKED, got {event:?}") };
    assert_eq!(revoked.session_id, laptop_auth.session_id);
    // ... the expired session's connection closes for good, ...
    loop {
        match laptop_gw.next().await {
            Some(GatewayUpdate::Closed { code }) => {
                assert_eq!(code, Some(close::SESSION_REVOKED));
                break;
            }
            Some(GatewayUpdate::Event { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // ... and its access token, although not expired itself, is refused at once.
    let err = laptop.me().await.expect_err("session ended");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    phone.me().await.expect("the phone is still signed in");
    phone_gw.close().await;
    app.shutdown().await;
}

/// Tests on tokio's paused clock: time moves only when the test advances it.
mod paused_clock {
    use super::common::{Backend, ClockHold, TestApp};
    use std::time::Duration;

    /// The client refreshes its access token on its own when 80% of its lifetime has passed
    /// (at least 5 s before expiry), on the runtime's clock.
    #[tokio::test(start_paused = true)]
    async fn client_refreshes_before_expiry() {
        let _hold = ClockHold::new();
        let app = TestApp::spawn(Backend::Sqlite).await;
        let ttl = Duration::from_secs(app.running().state().config.auth.access_token_ttl_secs);
        assert_eq!(ttl, Duration::from_secs(900), "as shipped");
        let kim = app.client();
        kim.register("kim", "password-kim", None).await.expect("register");
        let first = kim.refresh_token().await.expect("token");
        kim.me().await.expect("me");
        assert_eq!(kim.refresh_token().await.as_deref(), Some(first.as_str()), "no refresh needed yet");
        tokio::time::advance(ttl * 4 / 5 - Duration::from_millis(1)).await;
        kim.me().await.expect("me");
        assert_eq!(kim.refresh_token().await.as_deref(), Some(first.as_str()), "1 ms before 80% of the lifetime");
        tokio::time::advance(Duration::from_millis(1)).await;
        kim.me().await.expect("me after refresh");
        let second = kim.refresh_token().await.expect("token");
        assert_ne!(second, first, "rotated by the automatic refresh");
        // The new access token starts a new lifetime.
        tokio::time::advance(ttl * 4 / 5 - Duration::from_millis(1)).await;
        kim.me().await.expect("me");
        assert_eq!(kim.refresh_token().await, Some(second), "not again before the new token's 80%");
        app.shutdown().await;
    }

    /// The server runs its housekeeping pass at start and then once a minute, on the
    /// runtime's clock.
    #[tokio::test(start_paused = true)]
    async fn housekeeping_runs_every_minute() {
        use copains_client_core::client::GatewayUpdate;
        use copains_client_core::gateway::close;

        let _hold = ClockHold::new();
        // Sessions that are expired as soon as they start, and no heartbeat deadline within
        // the minute this test moves through.
        let app = TestApp::spawn_with(Backend::Sqlite, |c| {
            c.api.auth.refresh_token_ttl_secs = 0;
            c.gateway.heartbeat_interval_ms = 3_600_000;
        })
        .await;
        let ivo = app.client();
        ivo.register("ivo", "password-ivo", None).await.expect("register");
        let mut gw = ivo.connect_gateway().await.expect("gateway");
        gw.next_event().await.expect("ready");

        // The pass at start ran before this session existed; the next one is a minute later.
        // 1 ms before it, nothing happens: no close within 300 ms of real time (ample for a
        // pass, which the same connection shows right after) ...
        tokio::time::advance(Duration::from_secs(60) - Duration::from_millis(1)).await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let _ = tx.send(());
        });
        tokio::select! {
            update = gw.next() => panic!("before the minute: {update:?}"),
            _ = rx => {}
        }
        assert_eq!(app.count("sessions").await, 1);
        // ... and at the minute, the pass ends the expired session.
        tokio::time::advance(Duration::from_millis(1)).await;
        loop {
            match gw.next().await {
                Some(GatewayUpdate::Closed { code }) => {
                    assert_eq!(code, Some(close::SESSION_REVOKED), "the expired session was ended");
                    break;
                }
                Some(GatewayUpdate::Event { .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(app.count("sessions").await, 0);
        app.shutdown().await;
    }
}
