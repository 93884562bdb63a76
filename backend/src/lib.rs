//! The LesCopains REST API and its storage.
//!
//! [`AppState::new`] takes the configuration and the dependencies (store, bus, token service,
//! metrics); [`router`] returns the axum router the `copains` binary serves (alone, or merged
//! with the gateway).
#![forbid(unsafe_code)]

pub mod auth;
pub mod bus;
pub mod client_ip;
pub mod config;
pub mod domain;
pub mod error;
pub mod extract;
pub mod ids;
pub mod metrics;
pub mod openapi;
pub mod presence;
pub mod ratelimit;
pub mod routes;
pub mod secrets;
pub mod state;
pub mod store;
pub mod voice;

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

pub use config::BackendConfig;
pub use error::{ApiError, ApiResult};
pub use state::AppState;
pub use store::Store;

/// The REST API, health and metrics routes, with body limits, metrics and JSON errors for
/// unknown routes, wrong methods and panics.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.limits.body_max_bytes;
    Router::new()
        .merge(routes::auth::router())
        .merge(routes::users::router())
        .merge(routes::keys::router())
        .merge(routes::devices::router())
        .merge(routes::messages::router())
        .merge(routes::servers::router())
        .merge(routes::moderation::router())
        .merge(routes::admin::router())
        .merge(routes::channels::router())
        .merge(routes::invites::router())
        .merge(routes::channel_messages::router())
        .merge(routes::voice::router())
        .merge(routes::social::router())
        .merge(routes::health::router())
        .fallback(|| async { ApiError::UnknownRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Layers every route of the composed platform gets: request metrics, security headers,
/// CORS for the configured origins, and panic containment.
pub fn outer_layers(router: Router, state: AppState) -> Router {
    let origins = state.config.security.parsed_cors_origins().unwrap_or_else(|e| {
        tracing::error!(error = %e, "CORS origins ignored");
        Vec::new()
    });
    let router = router.layer(middleware::from_fn_with_state(state.clone(), track_request));
    let router = if origins.is_empty() {
        router
    } else {
        use axum::http::{header, Method};
        router.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .expose_headers([header::RETRY_AFTER])
                .max_age(Duration::from_secs(600)),
        )
    };
    // Outermost, so that a panic's 500 and a CORS preflight carry them too.
    router
        .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
            tracing::error!("a request handler panicked");
            ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(middleware::from_fn_with_state(state, security_headers))
}

/// The Content-Security-Policy of API responses (JSON, never a page): nothing loads, nothing
/// frames it. The web client's pages set their own.
pub const API_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// Strict-Transport-Security, sent when the request came over HTTPS (a trusted proxy says so).
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Headers every response carries unless its route set them: no sniffing, no referrer, no
/// framing, a closed CSP; HSTS when the request came over HTTPS through a trusted proxy.
async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    use axum::http::{header, HeaderValue};
    let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let https = peer.is_some_and(|p| state.config.trusted_proxies.iter().any(|b| b.contains(p)))
        && req.headers().get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, API_CONTENT_SECURITY_POLICY),
    ] {
        headers.entry(name).or_insert(HeaderValue::from_static(value));
    }
    if https {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    response
}

async fn track_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = metrics::method_label(req.method());
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    state.metrics.observe_request(method, &route, response.status().as_u16(), started.elapsed());
    response
}

/// How often the housekeeping loop looks for guest accounts whose time is up.
pub const GUEST_CHECK_EVERY: Duration = Duration::from_secs(5 * 60);

/// Periodic housekeeping (see [`housekeep`]) every `every`, and the guest accounts' end every
/// [`GUEST_CHECK_EVERY`], until `shutdown` resolves.
pub async fn run_maintenance(state: AppState, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    routes::moderation::schedule_running_timeouts(&state).await;
    let mut tick = tokio::time::interval(every);
    // After a long pause (a suspended machine, a paused test clock), one pass, not one per
    // missed tick.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut guests_checked: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let now = store::now_ms();
        housekeep(&state, now).await;
        sample_stats(&state, now).await;
        if guests_checked.is_none_or(|at| at.elapsed() >= GUEST_CHECK_EVERY) {
            guests_checked = Some(tokio::time::Instant::now());
            // The clock as of now (the pass above may have taken a while).
            routes::invites::expire_guests(&state, store::now_ms()).await;
        }
    }
}

/// Samples this node's live figures as of `now` into the last hour kept for the admin
/// console (60 samples; the housekeeping loop takes one a minute).
pub async fn sample_stats(state: &AppState, now: i64) {
    let messages = match state.store.platform_counts(now - 60_000, now + 1).await {
        Ok((_, _, _, messages)) => messages,
        Err(e) => {
            tracing::warn!(error = %e, "cannot count the last minute's messages");
            return;
        }
    };
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let sample = copains_client_core::admin::StatsSample {
        at: now,
        online_users: count(state.metrics.gateway_users.get()),
        gateway_sessions: count(state.metrics.gateway_sessions.get()),
        voice_participants: state.voice.get().map_or(0, |v| v.counts().1 as u64),
        messages: count(messages),
    };
    let mut last_hour = state.last_hour.lock();
    if last_hour.len() >= 60 {
        last_hour.pop_front();
    }
    last_hour.push_back(sample);
}

/// One housekeeping pass as of `now` (Unix ms; an input, so tests can run it a month ahead):
/// sessions and refresh tokens past their expiry, envelopes older than
/// `limits.envelope_ttl_secs` (delivered or not), expired link requests, audit entries and
/// sealed client addresses past their retention, ended bans, idle rate-limit and throttle keys.
pub async fn housekeep(state: &AppState, now: i64) {
    match state.store.purge_expired(now).await {
        Ok(ended) => {
            for (user, session) in ended {
                tracing::info!(user = %user, session = %session, "expired session removed");
                routes::auth::announce_revocation(state, user, session).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "maintenance: purge of sessions failed"),
    }
    match state.store.purge_envelopes_before(now.saturating_sub(state.config.limits.envelope_ttl_ms())).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(envelopes = n, "expired envelopes removed"),
        Err(e) => tracing::warn!(error = %e, "maintenance: purge of envelopes failed"),
    }
    match state.store.purge_link_requests(now).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(requests = n, "expired link requests removed"),
        Err(e) => tracing::warn!(error = %e, "maintenance: purge of link requests failed"),
    }
    let security = &state.config.security;
    match state
        .store
        .purge_security(now.saturating_sub(security.audit_retention_ms()), now.saturating_sub(security.ip_retention_ms()), now)
        .await
    {
        Ok((0, 0, 0)) => {}
        Ok((entries, addresses, bans)) => {
            tracing::info!(entries, addresses, bans, "retention: old audit entries, addresses and ended bans removed")
        }
        Err(e) => tracing::warn!(error = %e, "maintenance: retention of security data failed"),
    }
    // A rotation on the command line: the new data key seals from now on.
    state.secrets.reload_keys();
    state.limiters.shrink();
    state.throttle.shrink();
}
