//! The numbers an operator reads, taken from the live counters in one pass:
//! per server, per upstream, per listener, per certificate, and for the
//! process. `/stats.json`, `/metrics` and the dashboard all render a
//! [`Figures`] read at request time, so they show the same counters and a
//! server a reload removed is simply absent from the next read.
//!
//! Reads only; it never changes a counter or a server's state.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use crate::config::{Balance, CheckKind};
use crate::process::{Process, ReloadRecord};
use crate::stats::{quantile_of, BucketCounts, Histogram, ListenerStats};
use crate::upstream::ServerState;

use super::resources;

/// A latency histogram as read: per-bucket counts and the sum of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Per-bucket counts over `stats::LATENCY_BOUNDS` (last bucket open).
    pub counts: BucketCounts,
    /// Sum of every observation, in seconds.
    pub sum_secs: f64,
}

impl Latency {
    fn read(h: &Histogram) -> Self {
        Self {
            counts: h.counts(),
            sum_secs: h.sum_secs(),
        }
    }

    /// Observations in total.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Quantile `q` in milliseconds (the upper bound of its bucket); `None`
    /// without samples or when it lies in the open last bucket.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        quantile_of(&self.counts, q)
            .filter(|s| s.is_finite())
            .map(|s| s * 1000.0)
    }

    fn add(&mut self, other: &Latency) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_secs += other.sum_secs;
    }
}

/// Counters that add up across servers (the per-upstream totals).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    /// Requests in flight plus open tunnels.
    pub active_connections: i64,
    /// Open WebSocket tunnels.
    pub active_websockets: i64,
    /// WebSocket tunnels opened.
    pub websockets_total: u64,
    /// Requests sent (HTTP requests and upgrade attempts).
    pub requests_total: u64,
    /// Responses by class, 1xx … 5xx.
    pub responses: [u64; 5],
    /// Failed connects.
    pub connect_errors: u64,
    /// Requests moved to another server.
    pub retries: u64,
    /// Failures the server caused (passive health's count).
    pub failures: u64,
    /// Client → server bytes.
    pub bytes_in: u64,
    /// Server → client bytes.
    pub bytes_out: u64,
    /// Failed active health checks.
    pub check_failures: u64,
    /// Request time, head to end of response.
    pub request_latency: Latency,
    /// Time to open a new connection.
    pub connect_latency: Latency,
}

impl Traffic {
    fn add(&mut self, o: &Traffic) {
        self.active_connections += o.active_connections;
        self.active_websockets += o.active_websockets;
        self.websockets_total += o.websockets_total;
        self.requests_total += o.requests_total;
        for (a, b) in self.responses.iter_mut().zip(o.responses) {
            *a += b;
        }
        self.connect_errors += o.connect_errors;
        self.retries += o.retries;
        self.failures += o.failures;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.check_failures += o.check_failures;
        self.request_latency.add(&o.request_latency);
        self.connect_latency.add(&o.connect_latency);
    }
}

/// One server as read.
#[derive(Debug, Clone)]
pub struct ServerFigures {
    /// Its address.
    pub addr: SocketAddr,
    /// `up`, `down`, `draining` or `maint`.
    pub state: &'static str,
    /// The active checks' verdict.
    pub healthy: bool,
    /// Passive ejection keeps it out right now.
    pub ejected: bool,
    /// A backup server.
    pub backup: bool,
    /// Its weight.
    pub weight: u32,
    /// Highest `active_connections` seen.
    pub max_connections: i64,
    /// Seconds since its state last changed.
    pub last_change_secs: u64,
    /// Its counters.
    pub traffic: Traffic,
}

impl ServerFigures {
    fn read(s: &ServerState) -> Self {
        let st = &s.stats;
        let n = |c: &AtomicU64| c.load(Relaxed);
        Self {
            addr: s.addr,
            state: s.state_name(),
            healthy: s.is_healthy(),
            ejected: s.is_ejected(std::time::Instant::now()),
            backup: s.backup,
            weight: s.weight,
            max_connections: st.max_connections.load(Relaxed).max(0),
            last_change_secs: s.last_change_secs(),
            traffic: Traffic {
                active_connections: st.load(),
                active_websockets: st.active_websockets.load(Relaxed).max(0),
                websockets_total: n(&st.websockets_total),
                requests_total: n(&st.requests_total),
                responses: std::array::from_fn(|i| n(&st.responses[i])),
                connect_errors: n(&st.connect_errors),
                retries: n(&st.retries),
                failures: n(&st.failures),
                bytes_in: n(&st.bytes_in),
                bytes_out: n(&st.bytes_out),
                check_failures: n(&st.check_failures),
                request_latency: Latency::read(&st.request_latency),
                connect_latency: Latency::read(&st.connect_latency),
            },
        }
    }
}

/// One `[upstream.NAME]` as read.
#[derive(Debug, Clone)]
pub struct UpstreamFigures {
    /// `NAME`.
    pub name: String,
    /// Its balancing algorithm.
    pub balance: Balance,
    /// `http`, `tcp`, or `None` without active checks.
    pub health_check: Option<&'static str>,
    /// Its `drain_timeout`.
    pub drain_timeout: Duration,
    /// Its servers, in config order.
    pub servers: Vec<ServerFigures>,
    /// The servers' counters added up.
    pub totals: Traffic,
}

impl UpstreamFigures {
    /// Servers that take new traffic now.
    pub fn servers_up(&self) -> usize {
        self.servers.iter().filter(|s| s.state == "up").count()
    }
}

/// A server a reload removed whose tunnels are still open.
#[derive(Debug, Clone)]
pub struct RetiredFigures {
    /// Its address.
    pub addr: SocketAddr,
    /// Tunnels still open.
    pub open_tunnels: i64,
}

/// Why connections or requests were refused on a listener, as counted.
pub const REFUSAL_REASONS: [&str; 6] = [
    "max_connections",
    "per_ip",
    "rate",
    "proxy_protocol",
    "header_timeout",
    "bad_request",
];

/// One `[[listener]]` as read.
#[derive(Debug, Clone)]
pub struct ListenerFigures {
    /// Its address.
    pub listen: SocketAddr,
    /// Whether it terminates TLS.
    pub tls: bool,
    /// Connections open now.
    pub connections_open: i64,
    /// Connections accepted.
    pub connections_total: u64,
    /// Requests read.
    pub requests: u64,
    /// Completed TLS handshakes.
    pub tls_handshakes: u64,
    /// Failed or timed-out handshakes.
    pub tls_failures: u64,
    /// Refusals, in [`REFUSAL_REASONS`] order.
    pub refused: [u64; REFUSAL_REASONS.len()],
    /// Idle connections closed to make room at `max_connections`.
    pub reclaimed_idle: u64,
    /// Its certificates, default first.
    pub certificates: Vec<CertFigures>,
}

impl ListenerFigures {
    fn read(listen: SocketAddr, tls: bool, s: &ListenerStats) -> Self {
        let n = |c: &AtomicU64| c.load(Relaxed);
        Self {
            listen,
            tls,
            connections_open: s.connections_open.load(Relaxed).max(0),
            connections_total: n(&s.connections_total),
            requests: n(&s.requests),
            tls_handshakes: n(&s.tls_handshakes),
            tls_failures: n(&s.tls_failures),
            refused: [
                n(&s.refused_max_connections),
                n(&s.refused_per_ip),
                n(&s.refused_rate),
                n(&s.refused_proxy_protocol),
                n(&s.header_timeouts),
                n(&s.bad_requests),
            ],
            reclaimed_idle: n(&s.reclaimed_idle),
            certificates: Vec::new(),
        }
    }
}

/// One served certificate.
#[derive(Debug, Clone)]
pub struct CertFigures {
    /// Where it is configured (`listener[1].sni[0]`).
    pub at: String,
    /// Its file.
    pub file: String,
    /// Its DNS and IP names.
    pub names: Vec<String>,
    /// Its `notAfter`.
    pub not_after: SystemTime,
    /// Seconds until expiry at read time (negative once expired).
    pub expires_in_secs: i64,
    /// Expired, or expires within 14 days.
    pub expiring: bool,
}

/// Process-wide figures.
#[derive(Debug, Clone)]
pub struct ProcessFigures {
    /// This build's version.
    pub version: &'static str,
    /// The process id.
    pub pid: u32,
    /// Wall-clock start.
    pub started_at: SystemTime,
    /// Time since start.
    pub uptime: Duration,
    /// Open file descriptors, when `/proc` tells.
    pub open_fds: Option<u64>,
    /// Resident memory in bytes, when `/proc` tells.
    pub rss_bytes: Option<u64>,
    /// Client connections allowed at once (`[server] max_connections`).
    pub max_connections: usize,
    /// Client connections open now, over every listener.
    pub open_connections: usize,
    /// Tunnels ended by a drain, a removal or maintenance.
    pub tunnels_drained: u64,
    /// Successful reloads.
    pub reloads_ok: u64,
    /// Failed reloads.
    pub reloads_failed: u64,
    /// The last reload, if any.
    pub last_reload: Option<ReloadRecord>,
    /// Access log lines written.
    pub access_log_written: u64,
    /// Access log lines dropped because the writer's queue was full.
    pub access_log_dropped: u64,
    /// Access log write or open errors.
    pub access_log_errors: u64,
    /// Whether admin POSTs need a Bearer token.
    pub token_required: bool,
}

/// Everything, read once.
#[derive(Debug, Clone)]
pub struct Figures {
    /// The process.
    pub process: ProcessFigures,
    /// The upstreams, by name order.
    pub upstreams: Vec<UpstreamFigures>,
    /// Servers removed by a reload with tunnels still open.
    pub retired: Vec<RetiredFigures>,
    /// The listeners, in config order.
    pub listeners: Vec<ListenerFigures>,
}

impl Figures {
    /// Read every counter of `process` now.
    pub fn read(process: &Process) -> Self {
        let rt = process.runtime.load();
        let now = SystemTime::now();
        let upstreams = rt
            .pools
            .iter()
            .map(|(name, pool)| {
                let servers: Vec<ServerFigures> = pool
                    .servers
                    .iter()
                    .map(|s| ServerFigures::read(s))
                    .collect();
                let mut totals = Traffic::default();
                for s in &servers {
                    totals.add(&s.traffic);
                }
                UpstreamFigures {
                    name: name.clone(),
                    balance: pool.settings.balance,
                    health_check: pool.health_check().map(|h| match h.kind {
                        CheckKind::Http { .. } => "http",
                        CheckKind::Tcp => "tcp",
                    }),
                    drain_timeout: pool.settings.drain_timeout,
                    servers,
                    totals,
                }
            })
            .collect();
        let retired = rt
            .retired
            .iter()
            .map(|s| RetiredFigures {
                addr: s.addr,
                open_tunnels: s.tunnels.open(),
            })
            .collect();
        let listeners = rt
            .listeners
            .iter()
            .zip(process.stats.listeners())
            .map(|(l, stats)| {
                let mut figures = ListenerFigures::read(l.settings.listen, l.tls.is_some(), stats);
                figures.certificates = l
                    .tls
                    .iter()
                    .flat_map(|t| &t.certs)
                    .map(|c| CertFigures {
                        at: c.at.clone(),
                        file: c.file.clone(),
                        names: c.names.clone(),
                        not_after: c.not_after,
                        expires_in_secs: c.expires_in(now),
                        expiring: c.expiring(now),
                    })
                    .collect();
                figures
            })
            .collect();
        let reloads = &process.reloads;
        let log = &process.access_log;
        let process_figures = ProcessFigures {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            started_at: process.started_at,
            uptime: process.started.elapsed(),
            open_fds: resources::open_fds(),
            rss_bytes: resources::rss_bytes(),
            max_connections: process.admission.max_connections(),
            open_connections: process.admission.open_connections(),
            tunnels_drained: process.stats.tunnels_drained.load(Relaxed),
            reloads_ok: reloads.ok.load(Relaxed),
            reloads_failed: reloads.failed.load(Relaxed),
            last_reload: reloads
                .last
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            access_log_written: log.written.load(Relaxed),
            access_log_dropped: log.dropped.load(Relaxed),
            access_log_errors: log.errors.load(Relaxed),
            token_required: rt.config.admin.as_ref().is_some_and(|a| a.token.is_some()),
        };
        Self {
            process: process_figures,
            upstreams,
            retired,
            listeners,
        }
    }
}

/// A fixed set of figures for the renderers' unit tests.
#[cfg(test)]
pub fn sample() -> Figures {
    let mut traffic = Traffic {
        requests_total: 5,
        responses: [0, 4, 0, 0, 1],
        ..Traffic::default()
    };
    traffic.request_latency.counts[2] = 5;
    let server = ServerFigures {
        addr: "127.0.0.1:9001".parse().unwrap(),
        state: "draining",
        healthy: true,
        ejected: false,
        backup: false,
        weight: 3,
        max_connections: 2,
        last_change_secs: 4,
        traffic,
    };
    Figures {
        process: ProcessFigures {
            version: "0.1.0",
            pid: 1,
            started_at: SystemTime::UNIX_EPOCH,
            uptime: Duration::from_secs(9),
            open_fds: Some(12),
            rss_bytes: None,
            max_connections: 100,
            open_connections: 1,
            tunnels_drained: 2,
            reloads_ok: 1,
            reloads_failed: 0,
            last_reload: None,
            access_log_written: 10,
            access_log_dropped: 1,
            access_log_errors: 0,
            token_required: true,
        },
        upstreams: vec![UpstreamFigures {
            name: "chat".into(),
            balance: crate::config::Balance::ConsistentHash,
            health_check: Some("http"),
            drain_timeout: Duration::from_secs(60),
            servers: vec![server],
            totals: traffic,
        }],
        retired: vec![RetiredFigures {
            addr: "127.0.0.1:9009".parse().unwrap(),
            open_tunnels: 3,
        }],
        listeners: vec![ListenerFigures {
            listen: "0.0.0.0:8443".parse().unwrap(),
            tls: true,
            connections_open: 1,
            connections_total: 8,
            requests: 6,
            tls_handshakes: 8,
            tls_failures: 0,
            refused: [0, 0, 2, 0, 0, 1],
            reclaimed_idle: 4,
            certificates: vec![CertFigures {
                at: "listener[0].tls".into(),
                file: "cert.pem".into(),
                names: vec!["example.com".into()],
                not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 3),
                expires_in_secs: -1,
                expiring: true,
            }],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerSpec;
    use std::sync::atomic::Ordering::Relaxed;

    fn server(addr: &str) -> ServerState {
        ServerState::new(&ServerSpec {
            addr: addr.parse().unwrap(),
            weight: 2,
            backup: false,
        })
    }

    #[test]
    fn a_server_reads_as_its_counters_say() {
        let s = server("127.0.0.1:1");
        s.stats.requests_total.fetch_add(7, Relaxed);
        s.stats.record_status(200);
        s.stats.record_status(502);
        s.stats.bytes_out.fetch_add(99, Relaxed);
        s.stats.record_latency(Duration::from_micros(700));
        let f = ServerFigures::read(&s);
        assert_eq!(f.state, "up");
        assert_eq!(f.weight, 2);
        assert_eq!(f.traffic.requests_total, 7);
        assert_eq!(f.traffic.responses, [0, 1, 0, 0, 1]);
        assert_eq!(f.traffic.bytes_out, 99);
        assert_eq!(f.traffic.request_latency.count(), 1);
        assert_eq!(f.traffic.request_latency.quantile_ms(0.5), Some(1.0));
    }

    #[test]
    fn totals_add_servers_up() {
        let (a, b) = (server("127.0.0.1:1"), server("127.0.0.1:2"));
        a.stats.requests_total.fetch_add(3, Relaxed);
        b.stats.requests_total.fetch_add(4, Relaxed);
        a.stats.record_latency(Duration::from_micros(100));
        b.stats.record_latency(Duration::from_secs(100));
        let mut t = Traffic::default();
        t.add(&ServerFigures::read(&a).traffic);
        t.add(&ServerFigures::read(&b).traffic);
        assert_eq!(t.requests_total, 7);
        assert_eq!(t.request_latency.count(), 2);
        assert_eq!(t.request_latency.quantile_ms(0.5), Some(0.25));
        // The open last bucket has no finite bound to report.
        assert_eq!(t.request_latency.quantile_ms(0.99), None);
    }
}
