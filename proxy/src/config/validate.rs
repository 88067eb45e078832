//! Validation: raw TOML values into the public config types, collecting every
//! problem with its TOML path in one pass.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;

use super::raw::*;
use super::*;

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
            log: LogSettings {
                access: AccessLog::Stdout,
                format: LogFormat::Json,
                query: false,
                buffer_lines: 65536,
            },
            limits: limits
                .map(|l| validate_limits(&mut p, l))
                .unwrap_or_default(),
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
        upgrade_sock: None,
        max_connections: None,
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
        let at = path.clone();
        out.push(Listener {
            listen,
            tls: l.tls.map(|t| ListenerTls {
                default: CertFiles {
                    cert: t.cert,
                    key: t.key,
                    ocsp: None,
                    at: format!("{at}.tls"),
                },
                sni: l
                    .sni
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| SniCert {
                        names: s.names,
                        files: CertFiles {
                            cert: s.cert,
                            key: s.key,
                            ocsp: None,
                            at: format!("{at}.sni[{i}]"),
                        },
                    })
                    .collect(),
                hsts: None,
                http2: true,
            }),
            proxy_protocol: false,
            redirect_https: None,
            redirect_except: vec!["/.well-known/acme-challenge/".to_owned()],
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
            limits: RouteLimits::default(),
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
            count_5xx: false,
        },
        Some(ps) => Passive {
            max_fails: ps.max_fails.unwrap_or(3),
            fail_timeout: p.positive_duration(
                &at("passive.fail_timeout"),
                ps.fail_timeout.as_deref(),
                Duration::from_secs(10),
            ),
            count_5xx: false,
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
        slow_start: None,
        keepalive_connections: 64,
        tls: None,
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
        requests: raw.requests_per_second.map(|r| RateLimit {
            per_second: r,
            burst: raw.burst.unwrap_or(r.saturating_mul(2)),
        }),
        websocket_upgrades: raw.websocket_upgrades_per_second.map(|r| RateLimit {
            per_second: r,
            burst: r,
        }),
        max_connections_per_ip: raw.max_connections_per_ip,
        ..Limits::default()
    }
}
