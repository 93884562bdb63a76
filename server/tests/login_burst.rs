//! Bursts of logins through the real server: password hashing never runs more than its bound
//! at once, and a full queue answers 503 with `Retry-After` and the JSON error body at once
//! instead of holding the request (or growing memory).

mod common;

use common::{Backend, TestApp};
use copains_client_core::{ApiErrorBody, ErrorCode};
use reqwest::StatusCode;
use serde_json::json;

backend_tests!(a_burst_of_logins_never_hashes_more_than_the_bound_at_once, a_full_hashing_queue_answers_503_with_retry_after);

const BOUND: usize = 2;

async fn login(http: &reqwest::Client, app: &TestApp, username: &str, password: &str) -> reqwest::Response {
    http.post(app.url("/api/v1/auth/login"))
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .expect("the server answers")
}

async fn a_burst_of_logins_never_hashes_more_than_the_bound_at_once(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.api.password_hashing.max_concurrent = BOUND;
        c.api.password_hashing.max_queued = 200;
    })
    .await;
    app.client().register("burster", "correct horse battery", None).await.expect("register");
    let http = reqwest::Client::new();
    // 100 at once: right, wrong and unknown-user logins all cost a hash.
    let logins = (0..100).map(|i| {
        let (user, password) = match i % 4 {
            0 | 1 => ("burster", "correct horse battery"),
            2 => ("burster", "wrong horse battery"),
            _ => ("nobody_here", "correct horse battery"),
        };
        let (http, app) = (&http, &app);
        async move { (i, login(http, app, user, password).await.status()) }
    });
    for (i, status) in futures_util::future::join_all(logins).await {
        let expected = if i % 4 < 2 { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
        assert_eq!(status, expected, "login {i}");
    }
    let stats = app.running().state().passwords.stats();
    assert_eq!(stats.workers, BOUND);
    assert!((1..=BOUND).contains(&stats.max_in_flight), "at most {BOUND} hashes at once, saw {}", stats.max_in_flight);
    assert_eq!((stats.in_flight, stats.queued, stats.rejected), (0, 0, 0), "{stats:?}");
    app.shutdown().await;
}

async fn a_full_hashing_queue_answers_503_with_retry_after(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.api.password_hashing.max_concurrent = 1;
        c.api.password_hashing.max_queued = 1;
        // Slow hashes (about half a second each): the 50 logins all arrive while the first
        // two hold both places.
        c.api.password_hashing.iterations = 50;
    })
    .await;
    app.client().register("queuer", "correct horse battery", None).await.expect("register");
    // A bound on the wait: a request that hung would fail here rather than stall the suite.
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build().expect("client");
    let logins = (0..50).map(|_| login(&http, &app, "queuer", "correct horse battery"));
    let mut ok = 0;
    let mut busy = 0u64;
    for resp in futures_util::future::join_all(logins).await {
        match resp.status() {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                let retry_after: u64 = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .expect("Retry-After in whole seconds");
                assert!((1..=60).contains(&retry_after), "{retry_after}");
                let body: ApiErrorBody = resp.json().await.expect("JSON error body");
                assert_eq!(body.error.code, ErrorCode::Unavailable);
                assert!(body.error.message.contains("busy"), "{}", body.error.message);
                busy += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok >= 2, "the running and the queued login succeed ({ok} did)");
    assert!(busy >= 1, "50 logins against room for 2 must see 503s");
    let stats = app.running().state().passwords.stats();
    assert_eq!(stats.rejected, busy);
    assert_eq!(stats.max_in_flight, 1);

    // The queue drains: the next login goes through, and /metrics shows what happened.
    assert_eq!(login(&http, &app, "queuer", "correct horse battery").await.status(), StatusCode::OK);
    let metrics = http.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains(&format!("copains_password_hash_rejected {busy}")), "{metrics}");
    assert!(metrics.contains("copains_password_hash_queue 0"), "{metrics}");
    let rss = metrics
        .lines()
        .find_map(|l| l.strip_prefix("copains_process_resident_memory_bytes "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("RSS gauge");
    assert!(rss > 1024 * 1024, "{rss}");
    app.shutdown().await;
}
