//! The browser client's files, served at `/` on the API's port.
//!
//! Vite builds the client into one directory: `index.html`, and content-hashed files under
//! `assets/` (with `.br` and `.gz` siblings). `index.html` is revalidated on every load so a
//! new build is picked up at once; hashed assets are cached for a year, since a new build gives
//! them new names. Any other path that is not a file is a route of the single-page app and gets
//! `index.html`, except the platform's own prefixes (`/api`, `/gateway`, health and metrics),
//! whose unknown paths keep their JSON 404.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use copains_backend::ApiError;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

/// Where the built web client is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Directory holding the built client (`index.html`, `assets/`); a relative path is taken
    /// from the working directory. Default `web/dist`.
    pub dir: PathBuf,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("web/dist") }
    }
}

/// The Content-Security-Policy of every web response. `'wasm-unsafe-eval'` lets the page
/// compile the client's WebAssembly without allowing `eval` of JavaScript; workers may be
/// started from blobs (the media encryption worker), nothing may frame the page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self'; img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; worker-src 'self' blob:; \
    object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Cache-Control of Vite's content-hashed files.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Paths that belong to the platform, never to the web client: an unknown one is a JSON 404.
const PLATFORM_PREFIXES: [&str; 5] = ["/api", "/gateway", "/healthz", "/readyz", "/metrics"];

const NOT_BUILT_PAGE: &str = "<!doctype html>
<html lang=\"en\">
<head><meta charset=\"utf-8\"><title>LesCopains: web client not built</title></head>
<body>
<h1>The web client is not built</h1>
<p>This LesCopains server is running, but it has no web client to serve yet.</p>
<p>If you run this server: build the client with <code>scripts/serve</code> (which builds it and
starts the server) or <code>scripts/build-web</code>, or set <code>web.dir</code>
(<code>COPAINS_WEB__DIR</code>) to where it was built. The server's log names the directory it
looked in.</p>
</body>
</html>
";

/// Serves the built client from one directory.
#[derive(Debug, Clone)]
pub struct WebClient {
    dir: PathBuf,
    files: ServeDir,
    index: ServeFile,
}

impl WebClient {
    /// Serves `dir`. Nothing is read yet: a build that appears later is served from then on.
    pub fn new(dir: &Path) -> Self {
        let files = ServeDir::new(dir)
            .precompressed_br()
            .precompressed_gzip()
            // A directory is not a page: it falls to the single-page app like any other route.
            .append_index_html_on_directories(false);
        let index = ServeFile::new(dir.join("index.html")).precompressed_br().precompressed_gzip();
        Self { dir: dir.to_path_buf(), files, index }
    }

    /// The directory served.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `index.html` is there now.
    pub fn is_built(&self) -> bool {
        self.dir.join("index.html").is_file()
    }

    /// Answers a request no route of the platform matched.
    pub async fn respond(&self, req: Request) -> Response {
        let path = req.uri().path();
        if is_platform_path(path) {
            return ApiError::UnknownRoute.into_response();
        }
        let (parts, _body) = req.into_parts();
        let response = if !matches!(parts.method, Method::GET | Method::HEAD) {
            let mut response = (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response();
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        } else if matches!(parts.uri.path(), "/" | "/index.html") {
            self.index(&parts).await
        } else if parts.uri.path().starts_with("/assets/") {
            // A missing hashed file is a 404, never the page: a year-long cache entry must not
            // hold HTML under a script's name (an old tab asking for the previous build's files).
            let response = if could_be_file(parts.uri.path()) { self.file(&parts).await } else { not_found() };
            match response.status() {
                StatusCode::NOT_FOUND => not_found(),
                status if status.is_success() || status == StatusCode::NOT_MODIFIED => {
                    cache(response, HeaderValue::from_static(IMMUTABLE))
                }
                _ => response,
            }
        } else {
            let response = if could_be_file(parts.uri.path()) { self.file(&parts).await } else { not_found() };
            match response.status() {
                StatusCode::NOT_FOUND => self.index(&parts).await,
                _ => cache(response, HeaderValue::from_static("no-cache")),
            }
        };
        secure(response)
    }

    async fn file(&self, parts: &Parts) -> Response {
        let Ok(response) = self.files.clone().oneshot(Request::from_parts(parts.clone(), Body::empty())).await;
        response.map(Body::new)
    }

    /// `index.html`, revalidated at each load; 503 and a page saying what to do when it is
    /// missing.
    async fn index(&self, parts: &Parts) -> Response {
        let Ok(response) = self.index.clone().oneshot(Request::from_parts(parts.clone(), Body::empty())).await;
        if response.status() == StatusCode::NOT_FOUND {
            return not_built();
        }
        cache(response.map(Body::new), HeaderValue::from_static("no-cache"))
    }
}

fn is_platform_path(path: &str) -> bool {
    PLATFORM_PREFIXES.iter().any(|prefix| match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    })
}

/// Whether `path` may name a file at all. The file system refuses a NUL byte or a name longer
/// than 255 bytes with an error `ServeDir` answers 500; such a path is a route of the app.
fn could_be_file(path: &str) -> bool {
    !path.contains("%00") && path.split('/').all(|segment| segment.len() <= 255)
}

fn cache(mut response: Response, policy: HeaderValue) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, policy);
    response
}

fn not_found() -> Response {
    let mut response = (StatusCode::NOT_FOUND, "not found\n").into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn not_built() -> Response {
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, NOT_BUILT_PAGE).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The headers every web response carries, whatever its status.
fn secure(mut response: Response) -> Response {
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The same path answers br, gzip or identity depending on the request.
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_paths_are_whole_segments() {
        for path in ["/api", "/api/", "/api/v1/nope", "/gateway", "/gateway/x", "/healthz", "/metrics/x", "/readyz"] {
            assert!(is_platform_path(path), "{path}");
        }
        for path in ["/", "/apis", "/api-docs", "/gateways", "/healthzz", "/settings", "/assets/api.js"] {
            assert!(!is_platform_path(path), "{path}");
        }
    }

    #[test]
    fn names_the_file_system_refuses_are_not_files() {
        assert!(could_be_file("/assets/app-3f2a1b.js"));
        assert!(could_be_file(&format!("/{}", "a".repeat(255))));
        assert!(!could_be_file(&format!("/{}", "a".repeat(256))));
        assert!(!could_be_file("/index.html%00.js"));
    }
}
