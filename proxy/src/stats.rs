//! Per-server counters, shared by the request path and the admin endpoint.
//!
//! Owns the numbers an operator reads in `/stats.json`: counts and gauges as
//! atomics (the hot path never takes a lock to count), and a coarse latency
//! histogram from which p50/p99 are read. It never decides anything: routing
//! reads `active_connections` for bounded load and least-conn, nothing else.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets; the last bucket
/// is open. Coarse on purpose: a fixed array of atomics costs nothing to
/// update, and the same buckets feed `/stats.json` quantiles and the
/// Prometheus `_seconds` histograms, so both always agree.
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.000_25, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
    30.0,
];

/// A bounded latency histogram: counts per bucket and a sum; no samples kept.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Add one observation.
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let idx = LATENCY_BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[idx].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// Per-bucket counts (not cumulative), the last one open-ended.
    pub fn counts(&self) -> BucketCounts {
        std::array::from_fn(|i| self.buckets[i].load(Relaxed))
    }

    /// The sum of all observations, in seconds.
    pub fn sum_secs(&self) -> f64 {
        self.sum_micros.load(Relaxed) as f64 / 1e6
    }

    /// The quantile `q` (0..1) in seconds, as the upper bound of the bucket
    /// holding it; `None` before the first observation.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile_of(&self.counts(), q)
    }
}

/// Per-bucket counts of a [`Histogram`] (or of several added up), as read at
/// one instant: what `/stats.json` quantiles and `/metrics` buckets are
/// computed from.
pub type BucketCounts = [u64; LATENCY_BOUNDS.len() + 1];

/// The quantile `q` (0..1) in seconds of a histogram given by its per-bucket
/// `counts`: the upper bound of the bucket holding it (infinite for the open
/// last bucket); `None` when there are no observations.
pub fn quantile_of(counts: &BucketCounts, q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(*LATENCY_BOUNDS.get(i).unwrap_or(&f64::INFINITY));
        }
    }
    None
}

/// Counters for one upstream server. Lives as long as the server is in the
/// running config, so a reload that keeps the server keeps its numbers.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Requests in flight plus open tunnels: the load that bounded-load and
    /// least-conn balance on.
    pub active_connections: AtomicI64,
    /// The highest `active_connections` seen since the server joined the
    /// config (HAProxy's `smax`).
    pub max_connections: AtomicI64,
    /// Open upgraded (WebSocket) tunnels.
    pub active_websockets: AtomicI64,
    /// WebSocket tunnels opened since the server joined the config.
    pub websockets_total: AtomicU64,
    /// Requests sent to this server (HTTP requests and upgrade attempts).
    pub requests_total: AtomicU64,
    /// Responses by class: index 0 = 1xx … index 4 = 5xx.
    pub responses: [AtomicU64; 5],
    /// Connections to this server that failed to establish.
    pub connect_errors: AtomicU64,
    /// Requests moved to another server (connect failure, or an upgrade
    /// answered 503).
    pub retries: AtomicU64,
    /// Bytes received from clients and sent to this server.
    pub bytes_in: AtomicU64,
    /// Bytes received from this server and sent to clients.
    pub bytes_out: AtomicU64,
    /// Failed active health checks.
    pub check_failures: AtomicU64,
    /// Failures the server caused, as passive health counts them: connect
    /// errors, resets, timeouts, malformed answers (and 5xx with
    /// `count_5xx`); never client aborts.
    pub failures: AtomicU64,
    /// Time from a request's head to the end of its response.
    pub request_latency: Histogram,
    /// Time to open a new connection to this server (TLS included).
    pub connect_latency: Histogram,
}

impl ServerStats {
    /// Count a response status for the class counters.
    pub fn record_status(&self, status: u16) {
        if (100..600).contains(&status) {
            self.responses[usize::from(status / 100 - 1)].fetch_add(1, Relaxed);
        }
    }

    /// Add one request latency sample (request start to response end).
    pub fn record_latency(&self, took: Duration) {
        self.request_latency.observe(took);
    }

    /// Add one connect-time sample.
    pub fn record_connect(&self, took: Duration) {
        self.connect_latency.observe(took);
    }

    /// The request latency quantile `q` in ms; `None` before the first sample.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        self.request_latency.quantile(q).map(|s| s * 1000.0)
    }

    /// Current load as seen by the balancers.
    pub fn load(&self) -> i64 {
        self.active_connections.load(Relaxed).max(0)
    }

    /// Raise the recorded peak to `now` if it is higher.
    fn note_load(&self, now: i64) {
        self.max_connections.fetch_max(now, Relaxed);
    }
}

/// Counters for one `[[listener]]`, kept for the life of the process (the
/// set of listeners cannot change without a restart).
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Client connections open now.
    pub connections_open: AtomicI64,
    /// Client connections accepted since start.
    pub connections_total: AtomicU64,
    /// Requests read (HTTP/1 and HTTP/2).
    pub requests: AtomicU64,
    /// Completed TLS handshakes.
    pub tls_handshakes: AtomicU64,
    /// Failed or timed-out TLS handshakes.
    pub tls_failures: AtomicU64,
    /// Connections refused by `[server] max_connections`.
    pub refused_max_connections: AtomicU64,
    /// Idle connections closed to make room for a new one at
    /// `[server] max_connections`.
    pub reclaimed_idle: AtomicU64,
    /// Connections refused by `max_connections_per_ip`.
    pub refused_per_ip: AtomicU64,
    /// Requests and upgrades answered 429.
    pub refused_rate: AtomicU64,
    /// Connections closed for a PROXY header that was missing, bad or untrusted.
    pub refused_proxy_protocol: AtomicU64,
    /// Request heads that missed `header_timeout` (answered 408).
    pub header_timeouts: AtomicU64,
    /// Heads refused as malformed or oversized (400, 414, 431 …).
    pub bad_requests: AtomicU64,
}

impl ListenerStats {
    /// Count a head refused with `status`.
    pub fn refused_head(&self, status: u16) {
        if status != 408 {
            self.bad_requests.fetch_add(1, Relaxed);
        }
    }
}

/// Holds one open connection in its listener's gauge.
#[derive(Debug)]
pub struct OpenConnection(std::sync::Arc<ListenerStats>);

impl OpenConnection {
    /// Count a new connection on `stats`.
    pub fn new(stats: std::sync::Arc<ListenerStats>) -> Self {
        stats.connections_open.fetch_add(1, Relaxed);
        stats.connections_total.fetch_add(1, Relaxed);
        Self(stats)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

/// Holds one unit of `active_connections` (and optionally of
/// `active_websockets`) for as long as it lives, so every exit path of a
/// request or tunnel gives its load back.
#[derive(Debug)]
pub struct ActiveGuard {
    stats: std::sync::Arc<ServerStats>,
    websocket: bool,
}

impl ActiveGuard {
    /// Take one connection slot on `stats`.
    pub fn new(stats: std::sync::Arc<ServerStats>) -> Self {
        let now = stats.active_connections.fetch_add(1, Relaxed) + 1;
        stats.note_load(now);
        Self {
            stats,
            websocket: false,
        }
    }

    /// Wrap a slot the caller already added to `active_connections` (the
    /// bounded-load check increments atomically with its cap test).
    pub fn adopt(stats: std::sync::Arc<ServerStats>) -> Self {
        stats.note_load(stats.active_connections.load(Relaxed));
        Self {
            stats,
            websocket: false,
        }
    }

    /// Mark the held connection as an open WebSocket tunnel.
    pub fn mark_websocket(&mut self) {
        if !self.websocket {
            self.websocket = true;
            self.stats.active_websockets.fetch_add(1, Relaxed);
            self.stats.websockets_total.fetch_add(1, Relaxed);
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.stats.active_connections.fetch_sub(1, Relaxed);
        if self.websocket {
            self.stats.active_websockets.fetch_sub(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn quantiles_come_from_bucket_bounds() {
        let s = ServerStats::default();
        assert_eq!(s.latency_quantile_ms(0.5), None);
        for _ in 0..98 {
            s.record_latency(Duration::from_micros(800));
        }
        s.record_latency(Duration::from_millis(40));
        s.record_latency(Duration::from_millis(40));
        assert_eq!(s.latency_quantile_ms(0.5), Some(1.0));
        assert_eq!(s.latency_quantile_ms(0.99), Some(50.0));
    }

    #[test]
    fn guard_gives_load_back_on_drop() {
        let s = Arc::new(ServerStats::default());
        {
            let mut g = ActiveGuard::new(s.clone());
            g.mark_websocket();
            assert_eq!(s.load(), 1);
            assert_eq!(s.active_websockets.load(Relaxed), 1);
        }
        assert_eq!(s.load(), 0);
        assert_eq!(s.active_websockets.load(Relaxed), 0);
        assert_eq!(s.websockets_total.load(Relaxed), 1);
    }

    #[test]
    fn peak_load_is_kept_after_the_load_falls() {
        let s = Arc::new(ServerStats::default());
        let a = ActiveGuard::new(s.clone());
        let b = ActiveGuard::new(s.clone());
        s.active_connections.fetch_add(1, Relaxed);
        let c = ActiveGuard::adopt(s.clone());
        drop((a, b, c));
        assert_eq!(s.load(), 0);
        assert_eq!(s.max_connections.load(Relaxed), 3);
        let _d = ActiveGuard::new(s.clone());
        assert_eq!(s.max_connections.load(Relaxed), 3);
    }

    #[test]
    fn quantiles_of_added_up_counts() {
        let (a, b) = (Histogram::default(), Histogram::default());
        for _ in 0..9 {
            a.observe(Duration::from_micros(100));
        }
        b.observe(Duration::from_secs(60));
        let mut sum = a.counts();
        for (s, c) in sum.iter_mut().zip(b.counts()) {
            *s += c;
        }
        assert_eq!(quantile_of(&sum, 0.5), Some(0.000_25));
        assert_eq!(quantile_of(&sum, 0.9), Some(0.000_25));
        assert_eq!(quantile_of(&sum, 0.99), Some(f64::INFINITY));
        assert_eq!(quantile_of(&[0; LATENCY_BOUNDS.len() + 1], 0.5), None);
    }

    #[test]
    fn status_classes() {
        let s = ServerStats::default();
        s.record_status(101);
        s.record_status(404);
        s.record_status(503);
        s.record_status(999);
        let v: Vec<u64> = s.responses.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(v, vec![1, 0, 0, 1, 1]);
    }
}
