//! What the web client needs from the server, through the real server: its files at `/`
//! (cache policy per path, security headers, precompressed variants, the single-page app's
//! routes, no way out of the directory, a clear 503 when it is not built), and finding another
//! user by exact username or by id (case-insensitive, never by prefix, disabled accounts
//! hidden, rate limited per caller).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Backend, TestApp};
use copains_client_core::api::{AuthResponse, PublicUser};
use copains_client_core::{ApiErrorBody, ErrorCode};
use reqwest::header::{self, HeaderMap};
use reqwest::StatusCode;
use serde_json::Value;

backend_tests!(
    the_page_and_app_routes_get_index_html_with_no_cache,
    hashed_assets_are_immutable_and_wasm_is_application_wasm,
    precompressed_files_are_chosen_by_accept_encoding,
    unknown_platform_paths_keep_their_json_404,
    path_traversal_never_leaves_the_directory,
    the_page_answers_503_until_the_client_is_built,
    users_are_found_by_exact_username_in_any_case,
    users_are_found_by_id_and_me_routes_still_match,
    disabled_users_are_not_found,
    lookups_need_a_valid_token,
    lookups_are_rate_limited_per_caller,
);

const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
    img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; \
    base-uri 'none'; frame-ancestors 'none'; form-action 'self'";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const INDEX: &str = "<!doctype html><html><body><label>Username<input></label><label>Password<input></label>\
    <script type=\"module\" src=\"/assets/app-3f2a1b.js\"></script></body></html>";
const APP_JS: &str = "console.log('LesCopains');";
const WASM: &[u8] = b"\0asm\x01\0\0\0";
const SECRET: &str = "TOP-SECRET-OUTSIDE-THE-WEB-DIRECTORY";

/// A built client as Vite leaves it (with the `.br` and `.gz` siblings the build writes; their
/// content is only told apart here, the server never decodes them), next to a file outside it.
struct WebFixture {
    root: tempfile::TempDir,
}

impl WebFixture {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let dist = root.path().join("dist");
        let write = |path: &str, content: &[u8]| {
            let path = dist.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, content).expect("write");
        };
        write("index.html", INDEX.as_bytes());
        write("index.html.br", b"br:index.html");
        write("index.html.gz", b"gz:index.html");
        write("assets/app-3f2a1b.js", APP_JS.as_bytes());
        write("assets/app-3f2a1b.js.br", b"br:app.js");
        write("assets/app-3f2a1b.js.gz", b"gz:app.js");
        write("assets/copains_bg-9c8d7e.wasm", WASM);
        write("assets/copains_bg-9c8d7e.wasm.br", b"br:wasm");
        write("assets/style-11aa22.css", b"body{margin:0}");
        write("favicon.svg", b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
        std::fs::write(root.path().join("secret.txt"), SECRET).expect("write secret");
        std::fs::create_dir_all(root.path().join("dist/assets/nested")).expect("mkdir");
        Self { root }
    }

    fn dist(&self) -> PathBuf {
        self.root.path().join("dist")
    }
}

async fn spawn_with_web(backend: Backend, dir: &Path) -> TestApp {
    let dir = dir.to_path_buf();
    TestApp::spawn_with(backend, move |c| c.web.dir = dir).await
}

async fn get(app: &TestApp, path: &str, accept_encoding: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(app.url(path));
    if let Some(enc) = accept_encoding {
        req = req.header(header::ACCEPT_ENCODING, enc);
    }
    req.send().await.expect("request")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.to_str().expect("ascii header")).unwrap_or("")
}

#[track_caller]
fn assert_secure(headers: &HeaderMap, what: &str) {
    assert_eq!(header(headers, "content-security-policy"), CSP, "{what}");
    assert_eq!(header(headers, "x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header(headers, "referrer-policy"), "no-referrer", "{what}");
}

async fn error_of(resp: reqwest::Response) -> (StatusCode, ErrorCode) {
    let status = resp.status();
    let body: ApiErrorBody = resp.json().await.expect("JSON error body");
    assert!(!body.error.message.is_empty());
    (status, body.error.code)
}

async fn the_page_and_app_routes_get_index_html_with_no_cache(backend: Backend) {
    let web = WebFixture::new();
    let app = spawn_with_web(backend, &web.dist()).await;
    for path in ["/", "/index.html", "/channels/117632502289399808", "/settings/devices", "/assets"] {
        let resp = get(&app, path, None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let headers = resp.headers().clone();
        assert!(header(&headers, "content-type").starts_with("text/html"), "{path}: {headers:?}");
        assert_eq!(header(&headers, "cache-control"), "no-cache", "{path}: the page is revalidated at each load");
        assert!(header(&headers, "vary").to_ascii_lowercase().contains("accept-encoding"), "{path}");
        assert_secure(&headers, path);
        assert_eq!(resp.text().await.expect("body"), INDEX, "{path}");
    }

    // Revalidation: the page is served again only when it changed.
    let first = get(&app, "/", None).await;
    let modified = header(first.headers(), "last-modified").to_owned();
    assert!(!modified.is_empty(), "index.html carries Last-Modified");
    let again = reqwest::Client::new()
        .get(app.url("/settings"))
        .header(header::IF_MODIFIED_SINCE, &modified)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(again.headers(), "cache-control"), "no-cache");

    let head = reqwest::Client::new().head(app.url("/")).send().await.expect("HEAD");
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.text().await.expect("body"), "", "HEAD has no body");

    let post = reqwest::Client::new().post(app.url("/settings")).body("x").send().await.expect("POST");
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD reach the web client");
    assert_eq!(header(post.headers(), "allow"), "GET, HEAD");
    app.shutdown().await;
}

async fn hashed_assets_are_immutable_and_wasm_is_application_wasm(backend: Backend) {
    let web = WebFixture::new();
    let app = spawn_with_web(backend, &web.dist()).await;
    let cases: [(&str, &str, &[u8]); 3] = [
        ("/assets/app-3f2a1b.js", "text/javascript", APP_JS.as_bytes()),
        ("/assets/copains_bg-9c8d7e.wasm", "application/wasm", WASM),
        ("/assets/style-11aa22.css", "text/css", b"body{margin:0}"),
    ];
    for (path, mime, content) in cases {
        let resp = get(&app, path, None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let headers = resp.headers().clone();
        assert_eq!(header(&headers, "content-type").split(';').next(), Some(mime), "{path}");
        assert_eq!(header(&headers, "cache-control"), IMMUTABLE, "{path}");
        assert_eq!(header(&headers, "content-encoding"), "", "{path}: identity without Accept-Encoding");
        assert_secure(&headers, path);
        assert_eq!(resp.bytes().await.expect("body").as_ref(), content, "{path}");
    }

    // A hashed file that is not there (an old tab asking for a previous build's script) is a
    // 404, never the page cached for a year under a script's name.
    assert_eq!(get(&app, "/assets/nested", None).await.status(), StatusCode::NOT_FOUND, "a directory is not a file");
    let missing = get(&app, "/assets/app-000000.js", None).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_ne!(header(missing.headers(), "cache-control"), IMMUTABLE);
    assert!(!header(missing.headers(), "content-type").starts_with("text/html"));
    assert_secure(&missing.headers().clone(), "missing asset");
    assert!(!missing.text().await.expect("body").contains("<html"));

    // Files outside assets/ keep their names across builds: revalidated, not cached for a year.
    let icon = get(&app, "/favicon.svg", None).await;
    assert_eq!(icon.status(), StatusCode::OK);
    assert_eq!(header(icon.headers(), "content-type"), "image/svg+xml");
    assert_eq!(header(icon.headers(), "cache-control"), "no-cache");
    assert_secure(&icon.headers().clone(), "favicon");
    app.shutdown().await;
}

async fn precompressed_files_are_chosen_by_accept_encoding(backend: Backend) {
    let web = WebFixture::new();
    let app = spawn_with_web(backend, &web.dist()).await;
    let cases = [
        ("/assets/app-3f2a1b.js", Some("gzip, deflate, br"), "br", "br:app.js"),
        ("/assets/app-3f2a1b.js", Some("gzip"), "gzip", "gz:app.js"),
        ("/assets/app-3f2a1b.js", Some("br;q=0, gzip"), "gzip", "gz:app.js"),
        ("/assets/app-3f2a1b.js", Some("identity"), "", APP_JS),
        ("/assets/app-3f2a1b.js", None, "", APP_JS),
        ("/", Some("br, gzip"), "br", "br:index.html"),
        ("/", Some("gzip"), "gzip", "gz:index.html"),
        ("/some/app/route", Some("br"), "br", "br:index.html"),
        // No .gz of the wasm: the original is sent to a client that takes only gzip.
        ("/assets/copains_bg-9c8d7e.wasm", Some("br"), "br", "br:wasm"),
        ("/assets/copains_bg-9c8d7e.wasm", Some("gzip"), "", "\0asm\x01\0\0\0"),
    ];
    for (path, accept, encoding, body) in cases {
        let resp = get(&app, path, accept).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path} {accept:?}");
        let headers = resp.headers().clone();
        assert_eq!(header(&headers, "content-encoding"), encoding, "{path} {accept:?}");
        assert!(header(&headers, "vary").to_ascii_lowercase().contains("accept-encoding"), "{path} {accept:?}");
        assert_secure(&headers, path);
        if path.ends_with(".wasm") {
            assert_eq!(header(&headers, "content-type"), "application/wasm", "compressed or not");
        }
        assert_eq!(resp.bytes().await.expect("body").as_ref(), body.as_bytes(), "{path} {accept:?}");
    }
    app.shutdown().await;
}

async fn unknown_platform_paths_keep_their_json_404(backend: Backend) {
    let web = WebFixture::new();
    let app = spawn_with_web(backend, &web.dist()).await;
    for path in ["/api", "/api/", "/api/v1/nope", "/api/v2/users/@me", "/gateway/extra", "/healthz/x", "/metrics/x", "/readyz/x"]
    {
        let (status, code) = error_of(get(&app, path, None).await).await;
        assert_eq!((status, code), (StatusCode::NOT_FOUND, ErrorCode::UnknownRoute), "{path}");
    }
    let resp = reqwest::Client::new().post(app.url("/api/v1/nope")).send().await.expect("POST");
    assert_eq!(error_of(resp).await, (StatusCode::NOT_FOUND, ErrorCode::UnknownRoute));
    let resp = reqwest::Client::new().delete(app.url("/api/v1/auth/register")).send().await.expect("DELETE");
    assert_eq!(error_of(resp).await, (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::UnknownRoute));

    // The platform's own routes are untouched, and carry none of the page's headers.
    let health = get(&app, "/healthz", None).await;
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.json::<Value>().await.expect("json")["status"], "ok");
    let openapi = get(&app, "/api/v1/openapi.json", None).await;
    assert_eq!(openapi.status(), StatusCode::OK);
    // The API's own closed policy, not the page's.
    assert_eq!(header(openapi.headers(), "content-security-policy"), copains_backend::API_CONTENT_SECURITY_POLICY);
    let doc: Value = openapi.json().await.expect("json");
    assert!(doc["paths"]["/api/v1/users/lookup"]["get"].is_object(), "lookup is documented");
    assert!(doc["paths"]["/api/v1/users/{user_id}"]["get"].is_object(), "user by id is documented");
    assert!(doc["components"]["schemas"]["PublicUser"].is_object());
    app.shutdown().await;
}

/// Sends `method path` byte for byte (an HTTP client would resolve the dots first) and returns the
/// status and the whole answer.
fn raw_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    raw_request(addr, "GET", path)
}

fn raw_request(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

async fn path_traversal_never_leaves_the_directory(backend: Backend) {
    let web = WebFixture::new();
    let app = spawn_with_web(backend, &web.dist()).await;
    let addr = app.running().local_addr();
    // Sanity: the raw client reads what the server serves.
    let (status, answer) = tokio::task::spawn_blocking(move || raw_get(addr, "/assets/app-3f2a1b.js")).await.expect("join");
    assert_eq!(status, 200);
    assert!(answer.ends_with(APP_JS));
    let mut paths: Vec<String> = [
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/%2fsecret.txt",
        "//secret.txt",
        "/%00",
        "/assets/%00.js",
        "/index.html%00.js",
    ]
    .map(String::from)
    .to_vec();
    // Names the file system refuses (too long) are routes, not server errors.
    paths.push(format!("/{}", "a".repeat(300)));
    paths.push(format!("/assets/{}.js", "b".repeat(300)));
    for method in ["GET", "HEAD"] {
        for path in &paths {
            let request = path.clone();
            let (status, answer) = tokio::task::spawn_blocking(move || raw_request(addr, method, &request)).await.expect("join");
            assert!(!answer.contains(SECRET), "{method} {path} read a file outside the web directory");
            assert!(matches!(status, 200 | 400 | 404), "{method} {path}: {status}\n{answer}");
            if status == 200 && method == "GET" {
                assert!(answer.ends_with(INDEX), "{path}: only the page, as for any app route");
            }
        }
    }
    app.shutdown().await;
}

async fn the_page_answers_503_until_the_client_is_built(backend: Backend) {
    let root = tempfile::tempdir().expect("tempdir");
    let dist = root.path().join("dist");
    let app = spawn_with_web(backend, &dist).await;
    for path in ["/", "/index.html", "/channels/1"] {
        let resp = get(&app, path, Some("br, gzip")).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let headers = resp.headers().clone();
        assert!(header(&headers, "content-type").starts_with("text/html"), "{path}");
        assert_eq!(header(&headers, "cache-control"), "no-store", "{path}: never cached");
        assert_secure(&headers, path);
        let page = resp.text().await.expect("body");
        assert!(page.contains("not built") && page.contains("scripts/serve"), "{page}");
        assert!(!page.contains(&dist.display().to_string()), "the server's paths stay in its log");
    }
    assert_eq!(get(&app, "/assets/app-3f2a1b.js", None).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_of(get(&app, "/api/v1/nope", None).await).await, (StatusCode::NOT_FOUND, ErrorCode::UnknownRoute));
    assert_eq!(get(&app, "/healthz", None).await.status(), StatusCode::OK, "the API works without the client");

    // The directory without its index.html is not a build either.
    std::fs::create_dir_all(dist.join("assets")).expect("mkdir");
    std::fs::write(dist.join("assets/app-3f2a1b.js"), APP_JS).expect("write");
    assert_eq!(get(&app, "/", None).await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&app, "/assets/app-3f2a1b.js", None).await.status(), StatusCode::OK);

    // A build that appears while the server runs is served at once.
    std::fs::write(dist.join("index.html"), INDEX).expect("write");
    let resp = get(&app, "/", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.expect("body"), INDEX);
    app.shutdown().await;
}

// ---- user lookup ---------------------------------------------------------------------------

async fn register(app: &TestApp, username: &str) -> AuthResponse {
    app.client().register(username, "correct horse", None).await.expect("register")
}

async fn get_as(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    reqwest::Client::new().get(app.url(path)).bearer_auth(token).send().await.expect("request")
}

async fn lookup(app: &TestApp, token: &str, username: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(app.url("/api/v1/users/lookup"))
        .query(&[("username", username)])
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

async fn users_are_found_by_exact_username_in_any_case(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.client();
    let alice_id = alice.register("Alice", "correct horse", None).await.expect("register").user.id;
    alice
        .update_profile(&copains_client_core::api::UpdateProfile {
            display_name: copains_client_core::api::Patch::Set("Alice A.".into()),
            status_text: copains_client_core::api::Patch::Keep,
        })
        .await
        .expect("profile");
    register(&app, "al_ce.b").await;
    let bob = register(&app, "bob").await;
    let token = &bob.tokens.access_token;

    for name in ["Alice", "alice", "ALICE", "aLiCe"] {
        let resp = lookup(&app, token, name).await;
        assert_eq!(resp.status(), StatusCode::OK, "{name}");
        let body: Value = resp.json().await.expect("json");
        let mut keys: Vec<&str> = body.as_object().expect("object").keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["display_name", "id", "status_text", "username"], "a public profile, nothing more");
        assert_eq!(body["id"], alice_id.to_string(), "ids are strings");
        assert_eq!(body["username"], "Alice", "as she typed it");
        assert_eq!(body["display_name"], "Alice A.");
        assert_eq!(body["status_text"], Value::Null);
    }
    let me: PublicUser = lookup(&app, token, "BOB").await.json().await.expect("json");
    assert_eq!(me.id, bob.user.id, "one finds oneself too");

    // Exact names only: no prefix, no suffix, no pattern (`_` and `%` are not wildcards).
    for name in ["ali", "alic", "lice", "alice2", "al_ce", "al_ce.", "bo", "Al_ce.B.c"] {
        let resp = lookup(&app, token, name).await;
        if name.ends_with('.') {
            assert_eq!(error_of(resp).await, (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationFailed), "{name}");
        } else {
            assert_eq!(error_of(resp).await, (StatusCode::NOT_FOUND, ErrorCode::NotFound), "{name}");
        }
    }
    assert_eq!(lookup(&app, token, "AL_CE.b").await.status(), StatusCode::OK, "a name with '_' is found whole");

    // Strings that cannot be a username are refused before any search.
    let long = "a".repeat(33);
    for name in ["", "a", long.as_str(), "ali%", "al ce", "alice ", "élise", "a*"] {
        let resp = lookup(&app, token, name).await;
        assert_eq!(error_of(resp).await, (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationFailed), "{name:?}");
    }
    let resp = get_as(&app, token, "/api/v1/users/lookup").await;
    assert_eq!(error_of(resp).await, (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest), "no username parameter");
    let resp = get_as(&app, token, "/api/v1/users/lookup?name=alice").await;
    assert_eq!(error_of(resp).await.0, StatusCode::BAD_REQUEST);
    app.shutdown().await;
}

async fn users_are_found_by_id_and_me_routes_still_match(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let token = &bob.tokens.access_token;

    let resp = get_as(&app, token, &format!("/api/v1/users/{}", alice.user.id)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let found: PublicUser = resp.json().await.expect("json");
    assert_eq!(found, PublicUser::from(alice.user.clone()));
    let by_name: PublicUser = lookup(&app, token, "alice").await.json().await.expect("json");
    assert_eq!(by_name, found, "both routes answer the same profile");

    let (status, code) = error_of(get_as(&app, token, "/api/v1/users/117632502289399808").await).await;
    assert_eq!((status, code), (StatusCode::NOT_FOUND, ErrorCode::NotFound), "unknown id");
    for bad in ["abc", "12a", "1.5", "99999999999999999999999", "@you"] {
        let (status, code) = error_of(get_as(&app, token, &format!("/api/v1/users/{bad}")).await).await;
        assert_eq!((status, code), (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest), "{bad}");
    }

    // The fixed routes under /users/@me are not taken for ids.
    let me: Value = get_as(&app, token, "/api/v1/users/@me").await.json().await.expect("json");
    assert_eq!(me["username"], "bob");
    assert_eq!(me["platform_role"], "member", "@me is the full user, not the public profile");
    assert_eq!(get_as(&app, token, "/api/v1/users/@me/devices").await.status(), StatusCode::OK);
    assert_eq!(get_as(&app, token, "/api/v1/users/@me/sessions").await.status(), StatusCode::OK);
    let resp = reqwest::Client::new().post(app.url(&format!("/api/v1/users/{}", alice.user.id))).bearer_auth(token).send().await;
    assert_eq!(error_of(resp.expect("POST")).await.0, StatusCode::METHOD_NOT_ALLOWED);
    app.shutdown().await;
}

async fn disabled_users_are_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let token = &bob.tokens.access_token;
    assert_eq!(lookup(&app, token, "alice").await.status(), StatusCode::OK);
    // No admin route disables accounts yet: the test does what it will do.
    sqlx::query(&format!("UPDATE users SET disabled_at = 1 WHERE id = {}", alice.user.id.0))
        .execute(app.running().state().store.pool())
        .await
        .expect("disable");
    assert_eq!(error_of(lookup(&app, token, "alice").await).await, (StatusCode::NOT_FOUND, ErrorCode::NotFound));
    let resp = get_as(&app, token, &format!("/api/v1/users/{}", alice.user.id)).await;
    assert_eq!(error_of(resp).await, (StatusCode::NOT_FOUND, ErrorCode::NotFound));
    assert_eq!(lookup(&app, token, "bob").await.status(), StatusCode::OK, "others still are");
    app.shutdown().await;
}

async fn lookups_need_a_valid_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = register(&app, "alice").await;
    let paths = ["/api/v1/users/lookup?username=alice".to_owned(), format!("/api/v1/users/{}", alice.user.id)];
    for path in &paths {
        let resp = reqwest::Client::new().get(app.url(path)).send().await.expect("request");
        assert_eq!(error_of(resp).await, (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized), "{path}: no token");
        let resp = get_as(&app, "not.a.token", path).await;
        assert_eq!(error_of(resp).await, (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized), "{path}: bad token");
    }
    // A token of an ended session stops working at once.
    let client = app.client();
    client.login("alice", "correct horse", None).await.expect("login");
    let token = client.access_token().await.expect("token");
    assert_eq!(get_as(&app, &token, &paths[0]).await.status(), StatusCode::OK);
    client.logout().await.expect("logout");
    assert_eq!(error_of(get_as(&app, &token, &paths[0]).await).await.0, StatusCode::UNAUTHORIZED);
    app.shutdown().await;
}

async fn lookups_are_rate_limited_per_caller(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.api.rate_limits.user_lookups_burst = 3;
        c.api.rate_limits.user_lookups_per_minute = 1;
    })
    .await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let carol = register(&app, "carol").await;
    let token = &bob.tokens.access_token;
    // Both routes, found or not, draw on the same budget.
    assert_eq!(lookup(&app, token, "alice").await.status(), StatusCode::OK);
    assert_eq!(lookup(&app, token, "nobody").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get_as(&app, token, &format!("/api/v1/users/{}", alice.user.id)).await.status(), StatusCode::OK);
    for resp in [lookup(&app, token, "alice").await, get_as(&app, token, &format!("/api/v1/users/{}", alice.user.id)).await] {
        let retry_after: u64 = header(resp.headers(), "retry-after").parse().expect("Retry-After in seconds");
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert_eq!(error_of(resp).await, (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited));
    }
    // Another caller has a budget of its own.
    assert_eq!(lookup(&app, &carol.tokens.access_token, "alice").await.status(), StatusCode::OK);
    app.shutdown().await;
}

// ---- the binary ----------------------------------------------------------------------------

#[path = "common/binary.rs"]
mod binary;

use binary::{clean_env, Served, BIN};

#[test]
fn copains_config_shows_the_web_directory_and_its_override() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = clean_env(&mut Command::new(BIN)).arg("config").current_dir(dir.path()).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.contains("[web]\ndir = \"web/dist\""), "default: {text}");

    let out = clean_env(&mut Command::new(BIN))
        .arg("config")
        .current_dir(dir.path())
        .env("COPAINS_WEB__DIR", "/srv/copains/web")
        .output()
        .expect("run");
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.contains("[web]\ndir = \"/srv/copains/web\""), "environment: {text}");
}

#[test]
fn serve_warns_once_when_the_client_is_not_built_and_answers_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut served = Served::start(dir.path(), &dir.path().join("data"));
    let addr = served.addr.clone();
    let addr: std::net::SocketAddr = addr.parse().expect("address");
    let (first, _) = raw_get(addr, "/");
    let (second, page) = raw_get(addr, "/settings");
    served.terminate();
    let _ = served.child.wait();
    served.collect_output();
    let lines = &served.lines;
    assert_eq!((first, second), (503, 503));
    assert!(page.contains("scripts/serve"));
    let warnings: Vec<&String> = lines.iter().filter(|l| l.contains("web client is not built")).collect();
    assert_eq!(warnings.len(), 1, "one warning at start, none per request: {lines:#?}");
    let warning: Value = serde_json::from_str(warnings[0]).expect("JSON log line");
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["fields"]["dir"], "web/dist", "names the directory it looked in");
}
