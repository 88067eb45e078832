//! The proxy's TOML configuration: plain serde types, validated into the
//! runtime types the rest of the proxy uses.
//!
//! Owns every rule about what a config may say, and reports every broken
//! rule in one pass, each with the TOML path of the offending value
//! (`upstream.chat.servers[1].weight: …`), so an operator fixes a file in
//! one round. It reads the file and nothing else: no network, no Pingora.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A validated configuration, ready to build a runtime from.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[server]`: process-wide settings.
    pub server: ServerSettings,
    /// `[admin]`: the stats and control listener, if any.
    pub admin: Option<AdminSettings>,
    /// `[[listener]]`: where clients connect.
    pub listeners: Vec<Listener>,
    /// `[[route]]`: which upstream serves which host and path; first match wins.
    pub routes: Vec<Route>,
    /// `[upstream.NAME]`: the pools, by name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// `[limits]`: trusted proxies and per-client limits.
    pub limits: Option<Limits>,
}

/// `[server]`: settings of the process as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// How long a graceful shutdown waits for live requests and tunnels.
    pub grace_period: Duration,
    /// How long the runtimes get to stop after the grace period.
    pub graceful_shutdown_timeout: Duration,
}

/// `[admin]`: the listener for stats, metrics and control.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    /// Where the admin endpoints listen (loopback in the examples).
    pub listen: SocketAddr,
    /// Bearer token required for admin POSTs, when set.
    pub token: Option<String>,
}

/// `[[listener]]`: one address clients connect to.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// The address to bind.
    pub listen: SocketAddr,
    /// Default certificate when the listener terminates TLS.
    pub tls: Option<TlsFiles>,
    /// Extra certificates chosen by SNI.
    pub sni: Vec<SniCert>,
}

/// A certificate chain and its key, as PEM files.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// A certificate served for the listed server names.
#[derive(Debug, Clone, PartialEq)]
pub struct SniCert {
    /// Server names this certificate answers for.
    pub names: Vec<String>,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
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
        let host = strip_port(host).to_ascii_lowercase();
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(name) => host == *name,
            HostMatch::Suffix(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
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
    /// How long tunnels to a server removed by a reload may stay.
    pub drain_timeout: Duration,
    /// How many times a connect failure is retried on another server.
    pub retries: usize,
    /// The servers, in config order.
    pub servers: Vec<ServerSpec>,
    /// Active health checks, if configured.
    pub health_check: Option<HealthCheck>,
    /// Passive ejection settings.
    pub passive: Passive,
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
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Per-client-IP request rate (token bucket).
    pub requests_per_second: Option<u32>,
    /// Token bucket depth.
    pub burst: Option<u32>,
    /// Concurrent connections per client IP.
    pub max_connections_per_ip: Option<u32>,
    /// Per-client-IP WebSocket upgrade rate.
    pub websocket_upgrades_per_second: Option<u32>,
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

// ---- the file as written -------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    threads: Option<usize>,
    grace_period: Option<String>,
    graceful_shutdown_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    listen: String,
    tls: Option<RawTls>,
    #[serde(default)]
    sni: Vec<RawSni>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSni {
    names: Vec<String>,
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Option<String>,
    path_prefix: Option<String>,
    upstream: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    balance: Option<Balance>,
    hash_key: Option<Vec<String>>,
    balance_factor: Option<f64>,
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
    write_timeout: Option<String>,
    idle_timeout: Option<String>,
    keepalive_timeout: Option<String>,
    drain_timeout: Option<String>,
    retries: Option<usize>,
    servers: Vec<RawServerSpec>,
    health_check: Option<RawHealthCheck>,
    passive: Option<RawPassive>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerSpec {
    addr: String,
    weight: Option<u32>,
    backup: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawCheckKind {
    Http,
    Tcp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    kind: Option<RawCheckKind>,
    path: Option<String>,
    host: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<u32>,
    fall: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPassive {
    max_fails: Option<u32>,
    fail_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    trusted_proxies: Option<Vec<String>>,
    requests_per_second: Option<u32>,
    burst: Option<u32>,
    max_connections_per_ip: Option<u32>,
    websocket_upgrades_per_second: Option<u32>,
}

// ---- parsing and validation ----------------------------------------------

/// Collects errors as validation goes, so one pass reports them all.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Deserialize `value` (found at `path`) into `T`, recording a failure
    /// at the precise path inside it.
    fn typed<T: DeserializeOwned>(&mut self, path: &str, value: toml::Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                // toml appends context lines ("in `servers`"); the path says it better.
                let message = e.inner().to_string();
                let message = message.lines().next().unwrap_or_default();
                let message = message.replacen("unknown field", "unknown key", 1);
                let at = match inner.as_str() {
                    "." => path.to_owned(),
                    p if p.starts_with('[') => format!("{path}{p}"),
                    p => format!("{path}.{p}"),
                };
                self.add(at, message);
                None
            }
        }
    }

    fn duration(&mut self, path: &str, text: Option<&str>, default: Duration) -> Duration {
        let Some(text) = text else {
            return default;
        };
        match humantime::parse_duration(text) {
            Ok(d) => d,
            Err(e) => {
                self.add(
                    path,
                    format!(
                        "invalid duration {text:?}: {e} (write e.g. \"500ms\", \"2s\", \"1h\")"
                    ),
                );
                default
            }
        }
    }

    fn positive_duration(&mut self, path: &str, text: Option<&str>, default: Duration) -> Duration {
        let d = self.duration(path, text, default);
        if d.is_zero() {
            self.add(path, "must be greater than zero");
        }
        d
    }

    fn addr(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.add(path, format!("invalid address {text:?}: expected a literal IP:PORT such as \"127.0.0.1:9001\" or \"[::1]:9001\""));
                None
            }
        }
    }
}

impl Config {
    /// Read a config file and validate it.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Config::from_toml_str(&text)
    }

    /// Parse and validate TOML text, reporting every error found.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("TOML syntax: {}", e.to_string().trim_end()),
            }])
        })?;
        let mut p = Problems::default();

        let server = match table.remove("server") {
            Some(v) => p.typed::<RawServer>("server", v).unwrap_or_default(),
            None => RawServer::default(),
        };
        let admin = table
            .remove("admin")
            .and_then(|v| p.typed::<RawAdmin>("admin", v));
        let listeners: Vec<(String, RawListener)> = items(&mut p, &mut table, "listener");
        let routes: Vec<(String, RawRoute)> = items(&mut p, &mut table, "route");
        let mut upstream_names: Vec<String> = Vec::new();
        let mut upstreams: Vec<(String, RawUpstream)> = Vec::new();
        match table.remove("upstream") {
            Some(toml::Value::Table(t)) => {
                for (name, v) in t {
                    upstream_names.push(name.clone());
                    if let Some(u) = p.typed::<RawUpstream>(&format!("upstream.{name}"), v) {
                        upstreams.push((name, u));
                    }
                }
            }
            Some(_) => p.add("upstream", "must be a table of [upstream.NAME] sections"),
            None => {}
        }
        let limits = table
            .remove("limits")
            .and_then(|v| p.typed::<RawLimits>("limits", v));
        for key in table.keys() {
            p.add(
                key.as_str(),
                "unknown key (expected server, admin, listener, route, upstream, limits)",
            );
        }

        let config = Config {
            server: validate_server(&mut p, server),
            admin: admin.and_then(|a| {
                Some(AdminSettings {
                    listen: p.addr("admin.listen", &a.listen)?,
                    token: a.token,
                })
            }),
            listeners: validate_listeners(&mut p, listeners),
            routes: validate_routes(&mut p, routes, &upstream_names),
            upstreams: upstreams
                .into_iter()
                .map(|(name, raw)| {
                    let u = validate_upstream(&mut p, &name, raw);
                    (name, u)
                })
                .collect(),
            limits: limits.map(|l| validate_limits(&mut p, l)),
        };
        if p.0.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(p.0))
        }
    }
}

/// `[[NAME]]` arrays: each element deserialized on its own, so one bad
/// element does not hide the others.
fn items<T: DeserializeOwned>(
    p: &mut Problems,
    table: &mut toml::Table,
    name: &str,
) -> Vec<(String, T)> {
    match table.remove(name) {
        None => Vec::new(),
        Some(toml::Value::Array(values)) => values
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let path = format!("{name}[{i}]");
                p.typed::<T>(&path, v).map(|t| (path, t))
            })
            .collect(),
        Some(_) => {
            p.add(
                name,
                format!("must be an array of tables: write [[{name}]]"),
            );
            Vec::new()
        }
    }
}

fn validate_server(p: &mut Problems, raw: RawServer) -> ServerSettings {
    let threads = raw
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        p.add("server.threads", "must be at least 1");
    }
    ServerSettings {
        threads: threads.max(1),
        grace_period: p.duration(
            "server.grace_period",
            raw.grace_period.as_deref(),
            Duration::from_secs(30),
        ),
        graceful_shutdown_timeout: p.duration(
            "server.graceful_shutdown_timeout",
            raw.graceful_shutdown_timeout.as_deref(),
            Duration::from_secs(5),
        ),
    }
}

fn validate_listeners(p: &mut Problems, raw: Vec<(String, RawListener)>) -> Vec<Listener> {
    if raw.is_empty() && !p.0.iter().any(|e| e.path.starts_with("listener")) {
        p.add(
            "listener",
            "no [[listener]]: the proxy would accept no connections",
        );
    }
    let mut seen: Vec<(SocketAddr, String)> = Vec::new();
    let mut out = Vec::new();
    for (path, l) in raw {
        if !l.sni.is_empty() && l.tls.is_none() {
            p.add(
                format!("{path}.sni"),
                "SNI certificates need `tls` on the same listener",
            );
        }
        for (i, sni) in l.sni.iter().enumerate() {
            if sni.names.is_empty() {
                p.add(
                    format!("{path}.sni[{i}].names"),
                    "must name at least one server name",
                );
            }
        }
        let Some(listen) = p.addr(&format!("{path}.listen"), &l.listen) else {
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(a, _)| *a == listen) {
            p.add(
                format!("{path}.listen"),
                format!("{listen} is already used by {first}"),
            );
        }
        seen.push((listen, path.clone()));
        out.push(Listener {
            listen,
            tls: l.tls.map(|t| TlsFiles {
                cert: t.cert,
                key: t.key,
            }),
            sni: l
                .sni
                .into_iter()
                .map(|s| SniCert {
                    names: s.names,
                    cert: s.cert,
                    key: s.key,
                })
                .collect(),
        });
    }
    out
}

fn validate_routes(
    p: &mut Problems,
    raw: Vec<(String, RawRoute)>,
    upstreams: &[String],
) -> Vec<Route> {
    if raw.is_empty() && !p.0.iter().any(|e| e.path.starts_with("route")) {
        p.add("route", "no [[route]]: every request would get 404");
    }
    let mut out = Vec::new();
    for (path, r) in raw {
        if !upstreams.contains(&r.upstream) {
            p.add(
                format!("{path}.upstream"),
                format!("no upstream named {:?}", r.upstream),
            );
        }
        let path_prefix = r.path_prefix.unwrap_or_else(|| "/".to_owned());
        if !path_prefix.starts_with('/') {
            p.add(
                format!("{path}.path_prefix"),
                format!("{path_prefix:?} must start with '/'"),
            );
        }
        let host = match r.host.as_deref().map(str::to_ascii_lowercase) {
            None => HostMatch::Any,
            Some(h) if h == "*" => HostMatch::Any,
            Some(h) if h.starts_with("*.") && h.len() > 2 && !h[2..].contains('*') => {
                HostMatch::Suffix(h[1..].to_owned())
            }
            Some(h) if !h.is_empty() && !h.contains('*') && !h.contains(' ') => HostMatch::Exact(h),
            Some(h) => {
                p.add(
                    format!("{path}.host"),
                    format!("{h:?} is not \"*\", a host name or \"*.suffix\""),
                );
                HostMatch::Any
            }
        };
        out.push(Route {
            host,
            path_prefix,
            upstream: r.upstream,
        });
    }
    out
}

fn parse_hash_key(p: &mut Problems, path: &str, text: &str) -> Option<HashKey> {
    if text == "client-ip" {
        return Some(HashKey::ClientIp);
    }
    let parsed = match text.split_once(':') {
        Some((_, "")) => None,
        Some(("cookie", name)) => Some(HashKey::Cookie(name.to_owned())),
        Some(("query", name)) => Some(HashKey::Query(name.to_owned())),
        Some(("header", name)) if http::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
            Some(HashKey::Header(name.to_ascii_lowercase()))
        }
        _ => None,
    };
    if parsed.is_none() {
        p.add(
            path,
            format!("unknown hash key {text:?}: expected \"cookie:NAME\", \"query:NAME\", \"header:NAME\" or \"client-ip\""),
        );
    }
    parsed
}

fn validate_upstream(p: &mut Problems, name: &str, raw: RawUpstream) -> Upstream {
    let at = |field: &str| format!("upstream.{name}.{field}");
    let hash_key = match raw.hash_key {
        None => vec![HashKey::ClientIp],
        Some(keys) => {
            if keys.is_empty() {
                p.add(at("hash_key"), "must list at least one key source");
            }
            keys.iter()
                .enumerate()
                .filter_map(|(i, k)| parse_hash_key(p, &format!("{}[{i}]", at("hash_key")), k))
                .collect()
        }
    };
    let balance_factor = match raw.balance_factor {
        None | Some(0.0) => None,
        Some(f) if f.is_finite() && f > 1.0 => Some(f),
        Some(f) => {
            p.add(at("balance_factor"), format!("{f} must be 0 (off) or greater than 1 (1.25 caps a server at 125% of the mean load)"));
            None
        }
    };
    let mut servers: Vec<ServerSpec> = Vec::new();
    let mut seen: Vec<(SocketAddr, usize)> = Vec::new();
    for (i, s) in raw.servers.iter().enumerate() {
        let path = format!("{}[{i}]", at("servers"));
        let weight = s.weight.unwrap_or(1);
        if weight == 0 {
            p.add(format!("{path}.weight"), "weight must be at least 1 (0 panics Pingora's Ketama builder, pingora issue #1006)");
        } else if weight > 1000 {
            p.add(
                format!("{path}.weight"),
                format!("weight {weight} is above the maximum of 1000"),
            );
        }
        let Some(addr) = p.addr(&format!("{path}.addr"), &s.addr) else {
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(a, _)| *a == addr) {
            p.add(
                path.clone(),
                format!("duplicate server {addr}: already listed as servers[{first}]"),
            );
            continue;
        }
        seen.push((addr, i));
        servers.push(ServerSpec {
            addr,
            weight: weight.clamp(1, 1000),
            backup: s.backup.unwrap_or(false),
        });
    }
    if raw.servers.is_empty() {
        p.add(at("servers"), "pool has no servers");
    } else if raw.servers.iter().all(|s| s.backup.unwrap_or(false)) {
        p.add(
            at("servers"),
            "pool has only backup servers: at least one must be a primary",
        );
    }
    let health_check = raw.health_check.map(|h| {
        let kind = match h.kind {
            Some(RawCheckKind::Tcp) => {
                if h.path.is_some() {
                    p.add(at("health_check.path"), "only valid with kind = \"http\"");
                }
                if h.host.is_some() {
                    p.add(at("health_check.host"), "only valid with kind = \"http\"");
                }
                CheckKind::Tcp
            }
            Some(RawCheckKind::Http) | None => {
                let path = h.path.unwrap_or_else(|| "/health".to_owned());
                if !path.starts_with('/') {
                    p.add(
                        at("health_check.path"),
                        format!("{path:?} must start with '/'"),
                    );
                }
                CheckKind::Http { path, host: h.host }
            }
        };
        let rise = h.rise.unwrap_or(2);
        let fall = h.fall.unwrap_or(3);
        if rise == 0 {
            p.add(at("health_check.rise"), "must be at least 1");
        }
        if fall == 0 {
            p.add(at("health_check.fall"), "must be at least 1");
        }
        HealthCheck {
            kind,
            interval: p.positive_duration(
                &at("health_check.interval"),
                h.interval.as_deref(),
                Duration::from_secs(2),
            ),
            timeout: p.positive_duration(
                &at("health_check.timeout"),
                h.timeout.as_deref(),
                Duration::from_secs(1),
            ),
            rise: rise.max(1),
            fall: fall.max(1),
        }
    });
    let passive = match raw.passive {
        None => Passive {
            max_fails: 3,
            fail_timeout: Duration::from_secs(10),
        },
        Some(ps) => Passive {
            max_fails: ps.max_fails.unwrap_or(3),
            fail_timeout: p.positive_duration(
                &at("passive.fail_timeout"),
                ps.fail_timeout.as_deref(),
                Duration::from_secs(10),
            ),
        },
    };
    let secs = Duration::from_secs;
    Upstream {
        name: name.to_owned(),
        balance: raw.balance.unwrap_or(Balance::ConsistentHash),
        hash_key,
        balance_factor,
        connect_timeout: p.positive_duration(
            &at("connect_timeout"),
            raw.connect_timeout.as_deref(),
            secs(2),
        ),
        read_timeout: p.positive_duration(
            &at("read_timeout"),
            raw.read_timeout.as_deref(),
            secs(60),
        ),
        write_timeout: p.positive_duration(
            &at("write_timeout"),
            raw.write_timeout.as_deref(),
            secs(60),
        ),
        idle_timeout: p.positive_duration(
            &at("idle_timeout"),
            raw.idle_timeout.as_deref(),
            secs(3600),
        ),
        keepalive_timeout: p.positive_duration(
            &at("keepalive_timeout"),
            raw.keepalive_timeout.as_deref(),
            secs(60),
        ),
        drain_timeout: p.duration(&at("drain_timeout"), raw.drain_timeout.as_deref(), secs(60)),
        retries: raw.retries.unwrap_or(2),
        servers,
        health_check,
        passive,
    }
}

fn validate_limits(p: &mut Problems, raw: RawLimits) -> Limits {
    let trusted_proxies = raw
        .trusted_proxies
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, net)| {
            let parsed = net
                .parse::<IpNet>()
                .or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from));
            if parsed.is_err() {
                p.add(
                    format!("limits.trusted_proxies[{i}]"),
                    format!("{net:?} is not an IP address or CIDR such as \"10.0.0.0/8\""),
                );
            }
            parsed.ok()
        })
        .collect();
    let values = [
        ("requests_per_second", raw.requests_per_second),
        ("burst", raw.burst),
        ("max_connections_per_ip", raw.max_connections_per_ip),
        (
            "websocket_upgrades_per_second",
            raw.websocket_upgrades_per_second,
        ),
    ];
    for (name, value) in values {
        if value == Some(0) {
            p.add(
                format!("limits.{name}"),
                "must be at least 1 (leave it out for no limit)",
            );
        }
    }
    if let (Some(rate), Some(burst)) = (raw.requests_per_second, raw.burst) {
        if burst < rate {
            p.add("limits.burst", format!("burst {burst} is below requests_per_second {rate}: the bucket could never hold one second of traffic"));
        }
    }
    Limits {
        trusted_proxies,
        requests_per_second: raw.requests_per_second,
        burst: raw.burst,
        max_connections_per_ip: raw.max_connections_per_ip,
        websocket_upgrades_per_second: raw.websocket_upgrades_per_second,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of DESIGN.md, verbatim.
    const EXAMPLE: &str = include_str!("../../conf/ringway.toml");

    fn errors(text: &str) -> Vec<ConfigError> {
        Config::from_toml_str(text)
            .expect_err("config should be rejected")
            .0
    }

    /// A valid minimal config with `upstream` lines spliced into its pool.
    fn with_upstream(lines: &str) -> String {
        format!(
            "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[route]]\nupstream = \"chat\"\n[upstream.chat]\n{lines}\n"
        )
    }

    fn assert_error(text: &str, path: &str, fragment: &str) {
        let errs = errors(text);
        assert!(
            errs.iter()
                .any(|e| e.path == path && e.message.contains(fragment)),
            "want an error at {path} containing {fragment:?}, got:\n{}",
            ConfigErrors(errs)
        );
    }

    #[test]
    fn the_design_example_loads() {
        let c = Config::from_toml_str(EXAMPLE).unwrap();
        assert_eq!(c.server.threads, 2);
        assert_eq!(c.server.grace_period, Duration::from_secs(30));
        assert_eq!(
            c.admin.as_ref().unwrap().listen,
            "127.0.0.1:9090".parse().unwrap()
        );
        assert_eq!(c.listeners.len(), 2);
        assert!(c.listeners[1].tls.is_some());
        assert_eq!(c.routes[0].host, HostMatch::Any);
        let chat = &c.upstreams["chat"];
        assert_eq!(chat.balance, Balance::ConsistentHash);
        assert_eq!(
            chat.hash_key,
            vec![
                HashKey::Cookie("sid".into()),
                HashKey::Query("sid".into()),
                HashKey::Header("x-session-id".into()),
                HashKey::ClientIp
            ]
        );
        assert_eq!(chat.balance_factor, Some(1.25));
        assert_eq!(chat.idle_timeout, Duration::from_secs(3600));
        assert_eq!(
            chat.servers.iter().map(|s| s.weight).collect::<Vec<_>>(),
            vec![1, 2, 1]
        );
        assert!(chat.servers[2].backup);
        let hc = chat.health_check.as_ref().unwrap();
        assert_eq!(
            hc.kind,
            CheckKind::Http {
                path: "/health".into(),
                host: None
            }
        );
        assert_eq!((hc.rise, hc.fall), (2, 3));
        assert_eq!(chat.passive.max_fails, 3);
        let limits = c.limits.unwrap();
        assert_eq!(
            limits.trusted_proxies,
            vec!["127.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        assert_eq!(limits.burst, Some(400));
    }

    #[test]
    fn syntax_errors_say_where() {
        let errs = errors("[server\nthreads = 2");
        assert!(errs[0].message.contains("TOML syntax"), "{errs:?}");
        assert!(errs[0].message.contains("line 1"), "{errs:?}");
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        assert_error(
            &with_upstream("servers = [{ addr = \"127.0.0.1:1\", wieght = 2 }]"),
            "upstream.chat.servers[0].wieght",
            "unknown key",
        );
        assert_error(
            &with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]\nsticky = true"),
            "upstream.chat.sticky",
            "unknown key",
        );
        assert_error(
            &format!(
                "{}\n[extra]\na = 1\n",
                with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]")
            ),
            "extra",
            "unknown key",
        );
        assert_error(
            &format!(
                "[server]\nthreds = 2\n{}",
                with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]")
            ),
            "server.threds",
            "unknown key",
        );
    }

    #[test]
    fn wrong_types_are_named_with_their_path() {
        assert_error(
            &with_upstream("servers = [{ addr = \"127.0.0.1:1\", weight = \"heavy\" }]"),
            "upstream.chat.servers[0].weight",
            "invalid type",
        );
    }

    #[test]
    fn unparsable_addresses() {
        assert_error(
            &with_upstream("servers = [{ addr = \"127.0.0.1\" }]"),
            "upstream.chat.servers[0].addr",
            "invalid address",
        );
        assert_error(
            &with_upstream("servers = [{ addr = \"localhost:80\" }]"),
            "upstream.chat.servers[0].addr",
            "literal IP:PORT",
        );
        let text = "[[listener]]\nlisten = \"0.0.0.0\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nservers = [{ addr = \"127.0.0.1:1\" }]\n[admin]\nlisten = \"nope\"\n";
        assert_error(text, "listener[0].listen", "invalid address");
        assert_error(text, "admin.listen", "invalid address");
    }

    #[test]
    fn weight_zero_is_rejected() {
        assert_error(
            &with_upstream("servers = [{ addr = \"127.0.0.1:1\", weight = 0 }]"),
            "upstream.chat.servers[0].weight",
            "#1006",
        );
    }

    #[test]
    fn duplicate_servers_are_rejected() {
        assert_error(
            &with_upstream("servers = [{ addr = \"127.0.0.1:1\" }, { addr = \"127.0.0.1:2\" }, { addr = \"127.0.0.1:1\" }]"),
            "upstream.chat.servers[2]",
            "already listed as servers[0]",
        );
    }

    #[test]
    fn a_route_to_a_missing_upstream_is_rejected() {
        let text = "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[route]]\nupstream = \"nope\"\n[upstream.chat]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
        assert_error(text, "route[0].upstream", "no upstream named \"nope\"");
    }

    #[test]
    fn empty_and_backup_only_pools_are_rejected() {
        assert_error(
            &with_upstream("servers = []"),
            "upstream.chat.servers",
            "no servers",
        );
        assert_error(
            &with_upstream("servers = [{ addr = \"127.0.0.1:1\", backup = true }]"),
            "upstream.chat.servers",
            "only backup",
        );
    }

    #[test]
    fn bad_durations_are_rejected() {
        assert_error(
            &with_upstream(
                "connect_timeout = \"2 parsecs\"\nservers = [{ addr = \"127.0.0.1:1\" }]",
            ),
            "upstream.chat.connect_timeout",
            "invalid duration \"2 parsecs\"",
        );
        assert_error(
            &with_upstream("connect_timeout = \"0s\"\nservers = [{ addr = \"127.0.0.1:1\" }]"),
            "upstream.chat.connect_timeout",
            "greater than zero",
        );
        assert_error(&with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]\n[upstream.chat.health_check]\ninterval = \"often\""), "upstream.chat.health_check.interval", "invalid duration");
    }

    #[test]
    fn unknown_hash_key_kinds_are_rejected() {
        assert_error(
            &with_upstream(
                "hash_key = [\"cookie:sid\", \"ear:lobe\"]\nservers = [{ addr = \"127.0.0.1:1\" }]",
            ),
            "upstream.chat.hash_key[1]",
            "unknown hash key \"ear:lobe\"",
        );
        assert_error(
            &with_upstream("hash_key = [\"cookie:\"]\nservers = [{ addr = \"127.0.0.1:1\" }]"),
            "upstream.chat.hash_key[0]",
            "unknown hash key",
        );
    }

    #[test]
    fn balance_factor_in_zero_one_is_rejected() {
        for bad in ["0.5", "1.0", "-2.0"] {
            assert_error(
                &with_upstream(&format!(
                    "balance_factor = {bad}\nservers = [{{ addr = \"127.0.0.1:1\" }}]"
                )),
                "upstream.chat.balance_factor",
                "greater than 1",
            );
        }
        let off = Config::from_toml_str(&with_upstream(
            "balance_factor = 0\nservers = [{ addr = \"127.0.0.1:1\" }]",
        ))
        .unwrap();
        assert_eq!(off.upstreams["chat"].balance_factor, None);
        let off = Config::from_toml_str(&with_upstream(
            "balance_factor = 0.0\nservers = [{ addr = \"127.0.0.1:1\" }]",
        ))
        .unwrap();
        assert_eq!(off.upstreams["chat"].balance_factor, None);
    }

    #[test]
    fn listeners_and_routes_are_required_and_distinct() {
        let text = "[upstream.chat]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
        assert_error(text, "listener", "no [[listener]]");
        assert_error(text, "route", "no [[route]]");
        let twice = format!(
            "[[listener]]\nlisten = \"127.0.0.1:8080\"\n{}",
            with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]")
        );
        assert_error(&twice, "listener[1].listen", "already used by listener[0]");
    }

    #[test]
    fn limits_are_validated() {
        let base = with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]");
        assert_error(
            &format!("{base}[limits]\nrequests_per_second = 200\nburst = 100\n"),
            "limits.burst",
            "below requests_per_second",
        );
        assert_error(
            &format!("{base}[limits]\nmax_connections_per_ip = 0\n"),
            "limits.max_connections_per_ip",
            "at least 1",
        );
        assert_error(
            &format!("{base}[limits]\ntrusted_proxies = [\"10.0.0.0/33\"]\n"),
            "limits.trusted_proxies[0]",
            "not an IP address or CIDR",
        );
    }

    #[test]
    fn sni_needs_tls() {
        let text = "[[listener]]\nlisten = \"127.0.0.1:8443\"\n[[listener.sni]]\nnames = [\"a.example\"]\ncert = \"c\"\nkey = \"k\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
        assert_error(text, "listener[0].sni", "need `tls`");
    }

    #[test]
    fn tcp_checks_take_no_path() {
        assert_error(&with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]\n[upstream.chat.health_check]\nkind = \"tcp\"\npath = \"/x\""), "upstream.chat.health_check.path", "only valid with kind = \"http\"");
    }

    #[test]
    fn independent_errors_are_all_reported() {
        let text = "[server]\nthreads = \"two\"\n[[listener]]\nlisten = \"nope\"\n[[route]]\nupstream = \"ghost\"\n[upstream.a]\nservers = [{ addr = \"127.0.0.1:1\", weight = 0 }]\n[upstream.b]\nservers = [{ addr = \"127.0.0.1:1\", colour = 1 }]\n";
        let errs = errors(text);
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "server.threads",
            "listener[0].listen",
            "route[0].upstream",
            "upstream.a.servers[0].weight",
            "upstream.b.servers[0].colour",
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
    }

    #[test]
    fn a_structurally_broken_upstream_still_counts_as_existing_for_routes() {
        let errs = errors(&with_upstream(
            "servers = [{ addr = \"127.0.0.1:1\", colour = 1 }]",
        ));
        assert!(
            errs.iter().all(|e| e.path != "route[0].upstream"),
            "{errs:?}"
        );
    }

    #[test]
    fn host_matching() {
        let suffix = HostMatch::Suffix(".example.com".into());
        assert!(suffix.matches("a.example.com"));
        assert!(suffix.matches("B.A.Example.com:8443"));
        assert!(!suffix.matches("example.com"));
        assert!(!suffix.matches("notexample.com"));
        let exact = HostMatch::Exact("chat.example.com".into());
        assert!(exact.matches("Chat.Example.com:80"));
        assert!(!exact.matches("x.chat.example.com"));
        assert!(HostMatch::Any.matches(""));
        let route = Route {
            host: HostMatch::Any,
            path_prefix: "/ws".into(),
            upstream: "u".into(),
        };
        assert!(route.matches("h", "/ws/room"));
        assert!(!route.matches("h", "/api"));
    }

    #[test]
    fn route_hosts_parse() {
        let text = "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[route]]\nhost = \"*.Example.com\"\nupstream = \"u\"\n[[route]]\nhost = \"a*b\"\nupstream = \"u\"\n[upstream.u]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
        assert_error(text, "route[1].host", "is not");
        let ok = text.replace("host = \"a*b\"\n", "");
        let c = Config::from_toml_str(&ok).unwrap();
        assert_eq!(c.routes[0].host, HostMatch::Suffix(".example.com".into()));
    }
}
