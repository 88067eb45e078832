//! The proxy's TOML configuration: plain serde types, validated into the
//! runtime types the rest of the proxy uses.
//!
//! Owns every rule about what a config may say, and reports every broken
//! rule in one pass, each with the TOML path of the offending value
//! (`upstream.chat.servers[1].weight: …`), so an operator fixes a file in
//! one round. Every duration and count is bounded, so a config it accepts
//! cannot overflow a clock or panic a component when it is built and run.
//! It reads the file and nothing else: no network, no Pingora. Server names
//! are checked with rustls' own rules (`rustls-pki-types`, the crate the
//! TLS stack uses), so a name accepted here is one rustls accepts.
//! Certificate files are read by the TLS module.
//!
//! Layout: the public types live here; `raw` mirrors the TOML; `validate`
//! splits the file and checks `[server]`, `[log]` and `[admin]`;
//! `listeners`, `routes`, `upstreams` and `limits` check their sections;
//! `names` holds the pure string checks and `problems` the error collector
//! and bounded readers; `restart` says what a reload cannot change.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A validated configuration, ready to build a runtime from.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[server]`: process-wide settings.
    pub server: ServerSettings,
    /// `[log]`: the access log.
    pub log: LogSettings,
    /// `[admin]`: the stats and control listener, if any.
    pub admin: Option<AdminSettings>,
    /// `[[listener]]`: where clients connect.
    pub listeners: Vec<Listener>,
    /// `[[route]]`: which upstream serves which host and path; first match wins.
    pub routes: Vec<Route>,
    /// `[upstream.NAME]`: the pools, by name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// `[limits]`: client identity, timeouts, sizes and per-client limits.
    /// Always present: an edge proxy runs with its timeouts and size limits
    /// even when the file has no `[limits]` table.
    pub limits: Limits,
}

/// `[server]`: settings of the process as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Worker threads of the proxy service. Fixed at start.
    pub threads: usize,
    /// How long a graceful shutdown waits for live requests and tunnels. Fixed at start.
    pub grace_period: Duration,
    /// How long the runtimes get to stop after the grace period. Fixed at start.
    pub graceful_shutdown_timeout: Duration,
    /// The Unix socket a `--upgrade` process takes the listeners over on.
    /// `None`: `/tmp/ringway-upgrade-<first listener port>.sock`. Fixed at start.
    pub upgrade_sock: Option<PathBuf>,
    /// Client connections the whole process holds at most; beyond it new
    /// connections are closed at once and counted. `None`: derived at start
    /// from the open-file limit (two descriptors per proxied connection plus
    /// a reserve).
    pub max_connections: Option<u32>,
}

/// `[log]`: where the access log goes and how its lines look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `access = "stdout" | "off" | PATH`.
    pub access: AccessLog,
    /// `format = "json" | "logfmt"`.
    pub format: LogFormat,
    /// `query = true` logs the query string with the path (off by default:
    /// queries often carry tokens).
    pub query: bool,
    /// `buffer = N`: lines queued for the writer before new ones are dropped
    /// (and counted), so a slow disk never blocks a request.
    pub buffer_lines: usize,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    /// No access log.
    Off,
    /// Standard output (journald under systemd).
    Stdout,
    /// Appended to a file; SIGUSR1 reopens it (logrotate).
    File(PathBuf),
}

/// The shape of an access log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// `key=value` pairs, quoted where needed.
    Logfmt,
}

/// `[admin]`: the listener for stats, metrics and control.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    /// Where the admin endpoints listen (loopback unless a token is set). Fixed at start.
    pub listen: SocketAddr,
    /// Bearer token required for admin POSTs, when set.
    pub token: Option<String>,
}

/// `[[listener]]`: one address clients connect to.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// The address to bind. Fixed at start.
    pub listen: SocketAddr,
    /// TLS termination, when the listener has `tls`. On/off is fixed at start;
    /// certificates and the rest reload.
    pub tls: Option<ListenerTls>,
    /// Expect a PROXY protocol v1/v2 header first, from `limits.trusted_proxies`
    /// only. Fixed at start.
    pub proxy_protocol: bool,
    /// Plain listeners only: answer with a 308 to `https://` on this port.
    pub redirect_https: Option<u16>,
    /// Path prefixes proxied as usual despite `redirect_https`.
    pub redirect_except: Vec<String>,
}

/// The TLS side of a listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    /// The default certificate (served without SNI or for unknown names).
    pub default: CertFiles,
    /// Certificates chosen by SNI (`[[listener.sni]]`).
    pub sni: Vec<SniCert>,
    /// `Strict-Transport-Security` value added to every response.
    pub hsts: Option<String>,
    /// Offer ALPN `h2` (HTTP/2 for plain requests; WebSockets stay on HTTP/1.1).
    pub http2: bool,
}

/// A certificate chain, its key and optionally an OCSP staple, as files.
#[derive(Debug, Clone, PartialEq)]
pub struct CertFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// DER OCSP response to staple.
    pub ocsp: Option<PathBuf>,
    /// The TOML path of this certificate (`listener[1].tls`), for errors
    /// found when the files are read.
    pub at: String,
}

/// A certificate served for the listed server names.
#[derive(Debug, Clone, PartialEq)]
pub struct SniCert {
    /// Server names this certificate answers for: exact, or `*.example.com`.
    pub names: Vec<String>,
    /// The files.
    pub files: CertFiles,
}

/// `[[route]]`: requests for `host` under `path_prefix` go to `upstream`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Which Host headers match.
    pub host: HostMatch,
    /// Which paths match (plain prefix).
    pub path_prefix: String,
    /// The name of the upstream pool.
    pub upstream: String,
    /// Per-route limits that replace the `[limits]` ones for this route.
    pub limits: RouteLimits,
}

/// `limits = { ... }` on a route: what differs from `[limits]` here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteLimits {
    /// Request rate per client on this route.
    pub requests: Option<RateLimit>,
    /// WebSocket upgrade rate per client on this route.
    pub websocket_upgrades: Option<RateLimit>,
    /// Largest request body on this route.
    pub max_body_bytes: Option<u64>,
}

/// A token bucket: `per_second` tokens refill each second, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate.
    pub per_second: u32,
    /// Bucket depth (at least `per_second`).
    pub burst: u32,
}

impl Route {
    /// Whether a request for `host` and `path` takes this route.
    pub fn matches(&self, host: &str, path: &str) -> bool {
        self.host.matches(host) && path.starts_with(&self.path_prefix)
    }
}

/// How a route matches the Host header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `"*"` or absent: every host.
    Any,
    /// One exact name, lowercased.
    Exact(String),
    /// `"*.example.com"`, stored as `".example.com"`: any subdomain, not the apex.
    Suffix(String),
}

impl HostMatch {
    /// Whether `host` (a Host header; any `:port` is ignored; case-insensitive) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = strip_port(host);
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(name) => host.eq_ignore_ascii_case(name),
            HostMatch::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split(']').next().map_or(host, |h| &h[1..]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// How a pool spreads requests over its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Ketama consistent hashing on the sticky key (nginx `hash … consistent`).
    ConsistentHash,
    /// Smooth weighted round-robin.
    RoundRobin,
    /// Fewest active connections per unit of weight.
    LeastConn,
}

/// One element of the sticky-key chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `cookie:NAME`
    Cookie(String),
    /// `query:NAME`
    Query(String),
    /// `header:NAME` (lowercased)
    Header(String),
    /// `client-ip`
    ClientIp,
}

/// `[upstream.NAME]`: one pool of servers and how to use it.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// `NAME`.
    pub name: String,
    /// The balancing algorithm.
    pub balance: Balance,
    /// Where the sticky key comes from; the first element present wins.
    pub hash_key: Vec<HashKey>,
    /// Bounded-load factor (> 1), or `None` when off.
    pub balance_factor: Option<f64>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Per-read timeout on a proxied HTTP exchange.
    pub read_timeout: Duration,
    /// Per-write timeout on a proxied HTTP exchange.
    pub write_timeout: Duration,
    /// An upgraded tunnel with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub keepalive_timeout: Duration,
    /// How long tunnels to a server removed by a reload, or drained, may stay.
    pub drain_timeout: Duration,
    /// How many times a connect failure is retried on another server.
    pub retries: usize,
    /// A new or recovered server's share ramps up over this long, when set.
    pub slow_start: Option<Duration>,
    /// Idle keep-alive connections kept per server (per worker thread).
    pub keepalive_connections: usize,
    /// Upstream TLS, when `tls = true`.
    pub tls: Option<UpstreamTls>,
    /// The servers, in config order.
    pub servers: Vec<ServerSpec>,
    /// Active health checks, if configured.
    pub health_check: Option<HealthCheck>,
    /// Passive ejection settings.
    pub passive: Passive,
}

/// `tls = true` on an upstream: how servers are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// SNI and verified name; `None`: each server's IP address (verified
    /// against the certificate's IP SANs). Never empty: Pingora's rustls
    /// connector skips verification on an empty SNI.
    pub sni: Option<String>,
    /// PEM CA bundle to trust; `None`: the system roots.
    pub ca_file: Option<PathBuf>,
    /// `verify = false` written out turns verification off (logged loudly).
    pub verify: bool,
}

/// One server of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Literal `IP:PORT` (the Ketama ring hashes it as nginx does).
    pub addr: SocketAddr,
    /// Relative share, 1..=1000.
    pub weight: u32,
    /// Used only when no primary server is available.
    pub backup: bool,
}

/// `[upstream.NAME.health_check]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What a probe does.
    pub kind: CheckKind,
    /// Time between probes of one server.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// Consecutive successes that bring a server back.
    pub rise: u32,
    /// Consecutive failures that take a server out.
    pub fall: u32,
}

/// The kind of active probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// GET `path` over HTTP/1.1; any 2xx is healthy.
    Http {
        /// Request path.
        path: String,
        /// Host header to send (default `localhost`).
        host: Option<String>,
    },
    /// A TCP connect.
    Tcp,
}

/// `[upstream.NAME.passive]`: nginx's `max_fails` / `fail_timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passive {
    /// Failures within `fail_timeout` that eject a server; 0 disables.
    pub max_fails: u32,
    /// The failure window, and how long an ejected server stays out.
    pub fail_timeout: Duration,
    /// Count 5xx answers as failures too (off: a 5xx is an answer).
    pub count_5xx: bool,
}

/// `[limits]`: who the client is, how long it may take, how much it may send,
/// and how often. Timeouts and sizes always apply (defaults in
/// shared/DESIGN.md); rate and connection caps only when set.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Peers whose `X-Forwarded-For` and PROXY headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `requests_per_second` + `burst`: request rate per client identity.
    pub requests: Option<RateLimit>,
    /// `websocket_upgrades_per_second` (+ `websocket_upgrades_burst`, default
    /// the rate): upgrade rate per client identity.
    pub websocket_upgrades: Option<RateLimit>,
    /// Concurrent connections per peer (or PROXY-header) address.
    pub max_connections_per_ip: Option<u32>,
    /// Concurrent WebSocket tunnels per peer (or PROXY-header) address.
    pub max_websockets_per_ip: Option<u32>,
    /// The whole request head must arrive within this (first and keep-alive requests).
    pub header_timeout: Duration,
    /// The TLS handshake must finish within this.
    pub tls_handshake_timeout: Duration,
    /// An idle client connection between requests is closed after this.
    pub keepalive_timeout: Duration,
    /// A client that accepts no bytes for this long is dropped.
    pub client_write_timeout: Duration,
    /// A request body that delivers no bytes for this long is abandoned.
    pub body_timeout: Duration,
    /// Longest request line (414 beyond).
    pub max_request_line_bytes: usize,
    /// Largest request head (431 beyond).
    pub max_header_bytes: usize,
    /// Largest request body (413 beyond); routes may override.
    pub max_body_bytes: u64,
    /// Concurrent HTTP/2 streams per client connection.
    pub h2_max_concurrent_streams: u32,
}

impl Default for Limits {
    /// The defaults of shared/DESIGN.md: every timeout and size on, no rate caps.
    fn default() -> Self {
        Limits {
            trusted_proxies: Vec::new(),
            requests: None,
            websocket_upgrades: None,
            max_connections_per_ip: None,
            max_websockets_per_ip: None,
            header_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            client_write_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_request_line_bytes: 8192,
            max_header_bytes: 65536,
            max_body_bytes: 10 * 1024 * 1024,
            h2_max_concurrent_streams: 128,
        }
    }
}

/// One problem in a config, at a TOML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `upstream.chat.servers[1].weight`; empty for file-level problems.
    pub path: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

mod limits;
mod listeners;
mod names;
mod problems;
mod raw;
mod restart;
mod routes;
#[cfg(test)]
mod tests;
mod upstreams;
mod validate;

/// The directory relative paths in a config are read from: the config
/// file's own directory, as nginx resolves them against its prefix, so
/// `/etc/ringway/ringway.toml` naming `certs/site.pem` means
/// `/etc/ringway/certs/site.pem` whatever directory the proxy starts in.
pub fn base_dir(config_path: &std::path::Path) -> std::path::PathBuf {
    config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(
            || std::path::PathBuf::from("."),
            std::path::Path::to_path_buf,
        )
}
