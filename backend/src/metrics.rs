//! Prometheus metrics, one registry per running platform (no global state, so tests can run
//! several servers in one process).

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of an HTTP request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method, one of [`method_label`]'s values.
    pub method: &'static str,
    /// Route template (`/api/v1/users/@me`), never the raw path.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// The `method` label of a request: the standard methods by name, anything else as `other`.
/// Clients choose the method, so using it as is would let them add label values (and memory)
/// without bound.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route template.
    pub route: String,
}

/// Every metric the platform exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by method, route and status.
    pub http_requests: Family<RequestLabels, Counter>,
    /// Request latency by route.
    pub http_duration: Family<RouteLabels, Histogram>,
    /// Open gateway WebSocket connections.
    pub gateway_connections: Gauge,
    /// Gateway sessions (connected or waiting for a resume).
    pub gateway_sessions: Gauge,
    /// Distinct accounts with a gateway session on this node.
    pub gateway_users: Gauge,
    /// DISPATCH frames queued to gateway connections.
    pub gateway_events_sent: Counter,
    /// Connections closed for reading too slowly.
    pub gateway_slow_consumers: Counter,
    /// Resident memory of the process (read at each scrape).
    pub process_resident_memory: Gauge,
    /// Password hashes waiting for an argon2 worker (read at each scrape).
    pub password_hash_queue: Gauge,
    /// Password hashes running (read at each scrape).
    pub password_hash_in_flight: Gauge,
    /// Requests refused because the password hashing queue was full (read at each scrape).
    pub password_hash_rejected: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("copains");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by method, route and status", http_requests.clone());
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to ~3.3 s.
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register("http_request_duration_seconds", "HTTP request latency", http_duration.clone());
        let gateway_connections = Gauge::default();
        registry.register("gateway_connections", "Open gateway connections", gateway_connections.clone());
        let gateway_sessions = Gauge::default();
        registry.register("gateway_sessions", "Gateway sessions, connected or resumable", gateway_sessions.clone());
        let gateway_users = Gauge::default();
        registry.register("gateway_users", "Accounts with a gateway session on this node", gateway_users.clone());
        let gateway_events_sent = Counter::default();
        registry.register("gateway_events_sent", "Events dispatched to gateway sessions", gateway_events_sent.clone());
        let gateway_slow_consumers = Counter::default();
        registry.register(
            "gateway_slow_consumers",
            "Gateway connections closed because their queue filled",
            gateway_slow_consumers.clone(),
        );
        let process_resident_memory = Gauge::default();
        registry.register_with_unit(
            "process_resident_memory",
            "Resident set size of the process (VmRSS)",
            prometheus_client::registry::Unit::Bytes,
            process_resident_memory.clone(),
        );
        let password_hash_queue = Gauge::default();
        registry.register(
            "password_hash_queue",
            "Password hashes (register, login, password change) waiting for an argon2 worker",
            password_hash_queue.clone(),
        );
        let password_hash_in_flight = Gauge::default();
        registry.register("password_hash_in_flight", "Password hashes running", password_hash_in_flight.clone());
        let password_hash_rejected = Gauge::default();
        registry.register(
            "password_hash_rejected",
            "Requests answered 503 because the password hashing queue was full, since start",
            password_hash_rejected.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            gateway_connections,
            gateway_sessions,
            gateway_users,
            gateway_events_sent,
            gateway_slow_consumers,
            process_resident_memory,
            password_hash_queue,
            password_hash_in_flight,
            password_hash_rejected,
        }
    }

    /// Sets the gauges that are read rather than counted: the process's resident memory and
    /// the password hashing pool's figures.
    pub fn sample(&self, hashing: &crate::auth::HashingStats) {
        if let Some(bytes) = resident_memory_bytes() {
            self.process_resident_memory.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let as_gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.password_hash_queue.set(as_gauge(hashing.queued));
        self.password_hash_in_flight.set(as_gauge(hashing.in_flight));
        self.password_hash_rejected.set(i64::try_from(hashing.rejected).unwrap_or(i64::MAX));
    }

    /// Records one HTTP request. `method` comes from [`method_label`].
    pub fn observe_request(&self, method: &'static str, route: &str, status: u16, elapsed: Duration) {
        self.http_requests.get_or_create(&RequestLabels { method, route: route.to_owned(), status }).inc();
        self.http_duration.get_or_create(&RouteLabels { route: route.to_owned() }).observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The process's resident set size, from `/proc/self/status` (None where there is no procfs).
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&http::Method::GET), "GET");
        assert_eq!(method_label(&http::Method::DELETE), "DELETE");
        let foobar = http::Method::from_bytes(b"FOOBAR").expect("extension method");
        assert_eq!(method_label(&foobar), "other");
        let metrics = Metrics::new();
        metrics.observe_request(method_label(&foobar), "unmatched", 405, Duration::from_millis(1));
        let text = metrics.render();
        assert!(text.contains("method=\"other\"") && !text.contains("FOOBAR"), "{text}");
    }
}
