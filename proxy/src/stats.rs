//! Per-server counters, shared by the request path and the admin endpoint.
//!
//! Owns the numbers an operator reads in `/stats.json`: counts and gauges as
//! atomics (the hot path never takes a lock to count), and a coarse latency
//! histogram from which p50/p99 are read. It never decides anything: routing
//! reads `active_connections` for bounded load and least-conn, nothing else.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (ms) of the latency histogram buckets; the last bucket is open.
/// Coarse on purpose: a fixed array of atomics costs nothing to update.
const LATENCY_BOUNDS_MS: [f64; 16] = [
    0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
    10000.0, 30000.0,
];

/// Counters for one upstream server. Lives as long as the server is in the
/// running config, so a reload that keeps the server keeps its numbers.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Requests in flight plus open tunnels: the load that bounded-load and
    /// least-conn balance on.
    pub active_connections: AtomicI64,
    /// Open upgraded (WebSocket) tunnels.
    pub active_websockets: AtomicI64,
    /// Requests sent to this server (HTTP requests and upgrade attempts).
    pub requests_total: AtomicU64,
    /// Responses by class: index 0 = 1xx … index 4 = 5xx.
    pub responses: [AtomicU64; 5],
    /// Connections to this server that failed to establish.
    pub connect_errors: AtomicU64,
    /// Requests that were moved to another server after a connect failure here.
    pub retries: AtomicU64,
    /// Bytes received from clients and sent to this server.
    pub bytes_in: AtomicU64,
    /// Bytes received from this server and sent to clients.
    pub bytes_out: AtomicU64,
    /// Failed active health checks.
    pub check_failures: AtomicU64,
    latency: [AtomicU64; LATENCY_BOUNDS_MS.len() + 1],
}

impl ServerStats {
    /// Count a response status for the class counters.
    pub fn record_status(&self, status: u16) {
        if (100..600).contains(&status) {
            self.responses[usize::from(status / 100 - 1)].fetch_add(1, Relaxed);
        }
    }

    /// Add one latency sample (time from request start to response end).
    pub fn record_latency(&self, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let idx = LATENCY_BOUNDS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.latency[idx].fetch_add(1, Relaxed);
    }

    /// The latency quantile `q` (0..1) in ms, as the upper bound of the bucket
    /// holding it; `None` before the first sample.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self.latency.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(*LATENCY_BOUNDS_MS.get(i).unwrap_or(&f64::INFINITY));
            }
        }
        None
    }

    /// Current load as seen by the balancers.
    pub fn load(&self) -> i64 {
        self.active_connections.load(Relaxed).max(0)
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
        stats.active_connections.fetch_add(1, Relaxed);
        Self {
            stats,
            websocket: false,
        }
    }

    /// Wrap a slot the caller already added to `active_connections` (the
    /// bounded-load check increments atomically with its cap test).
    pub fn adopt(stats: std::sync::Arc<ServerStats>) -> Self {
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
