//! Validation of one `[upstream.NAME]`: balancing, sticky keys, timeouts,
//! servers, upstream TLS, active health checks and passive ejection.
//!
//! Bounds here protect what is built from a pool: Pingora's Ketama builder
//! (weight 0 panics it, pingora issue #1006; node indexes are `u16`; 160
//! points per unit of weight), its health checker (a Host with a control
//! character panics it) and the clocks that timeouts are added to.

use std::net::SocketAddr;
use std::time::Duration;

use super::names;
use super::problems::{Problems, Span};
use super::raw::{RawCheckKind, RawHealthCheck, RawPassive, RawUpstream};
use super::{Balance, CheckKind, HashKey, HealthCheck, Passive, ServerSpec, Upstream, UpstreamTls};

/// Most servers in one pool (Ketama node indexes are 16-bit).
const MAX_SERVERS: usize = 10_000;
/// Largest total weight of one pool: the ring holds 160 points per unit of
/// weight, so this caps a ring at 16 million points (128 MB).
const MAX_TOTAL_WEIGHT: u64 = 100_000;
/// Largest bounded-load factor; beyond it the bound never binds.
const MAX_BALANCE_FACTOR: f64 = 100.0;

/// `[upstream.NAME]`, with every absent key at its default.
pub(super) fn validate_upstream(p: &mut Problems, name: &str, mut raw: RawUpstream) -> Upstream {
    let at = |field: &str| format!("upstream.{name}.{field}");
    let hash_key = match &raw.hash_key {
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
        Some(f) if f.is_finite() && f > 1.0 && f <= MAX_BALANCE_FACTOR => Some(f),
        Some(f) => {
            p.add(at("balance_factor"), format!("{f} must be 0 (off) or greater than 1 and at most {MAX_BALANCE_FACTOR} (1.25 caps a server at 125% of the mean load)"));
            None
        }
    };
    let timeout = |p: &mut Problems, key: &str, text: &Option<String>, span, secs| {
        p.duration(&at(key), text.as_deref(), span, Duration::from_secs(secs))
    };
    let positive = Span::Positive;
    Upstream {
        name: name.to_owned(),
        balance: raw.balance.unwrap_or(Balance::ConsistentHash),
        hash_key,
        balance_factor,
        connect_timeout: timeout(p, "connect_timeout", &raw.connect_timeout, positive, 2),
        read_timeout: timeout(p, "read_timeout", &raw.read_timeout, positive, 60),
        write_timeout: timeout(p, "write_timeout", &raw.write_timeout, positive, 60),
        idle_timeout: timeout(p, "idle_timeout", &raw.idle_timeout, positive, 3600),
        keepalive_timeout: timeout(p, "keepalive_timeout", &raw.keepalive_timeout, positive, 60),
        drain_timeout: timeout(p, "drain_timeout", &raw.drain_timeout, Span::ZeroOk, 60),
        retries: p.count(&at("retries"), raw.retries, 0..=16, 2),
        slow_start: p
            .duration_opt(&at("slow_start"), raw.slow_start.as_deref(), Span::ZeroOk)
            .filter(|d| !d.is_zero()),
        keepalive_connections: p.count(
            &at("keepalive_connections"),
            raw.keepalive_connections,
            0..=10_000,
            64,
        ),
        tls: upstream_tls(p, name, &raw),
        servers: servers(p, name, &raw),
        health_check: raw.health_check.take().map(|h| health_check(p, name, h)),
        passive: passive(p, name, raw.passive.take().unwrap_or_default()),
    }
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

/// `tls = true` and the keys that only make sense with it.
fn upstream_tls(p: &mut Problems, name: &str, raw: &RawUpstream) -> Option<UpstreamTls> {
    let at = |field: &str| format!("upstream.{name}.{field}");
    if raw.tls != Some(true) {
        for (key, set) in [
            ("sni", raw.sni.is_some()),
            ("ca_file", raw.ca_file.is_some()),
            ("verify", raw.verify.is_some()),
        ] {
            if set {
                p.add(at(key), "only valid with tls = true");
            }
        }
        return None;
    }
    if let Some(sni) = &raw.sni {
        if let Err(why) = names::upstream_sni(sni) {
            p.add(at("sni"), why);
        }
    }
    if raw
        .ca_file
        .as_ref()
        .is_some_and(|f| f.as_os_str().is_empty())
    {
        p.add(at("ca_file"), "must name a file");
    }
    Some(UpstreamTls {
        sni: raw.sni.clone(),
        ca_file: raw.ca_file.clone(),
        verify: raw.verify.unwrap_or(true),
    })
}

fn servers(p: &mut Problems, name: &str, raw: &RawUpstream) -> Vec<ServerSpec> {
    let at = format!("upstream.{name}.servers");
    let mut servers: Vec<ServerSpec> = Vec::new();
    let mut seen: Vec<(SocketAddr, usize)> = Vec::new();
    for (i, s) in raw.servers.iter().enumerate() {
        let path = format!("{at}[{i}]");
        let weight: Option<u32> = match s.weight {
            Some(w) if w <= 0 => {
                p.add(format!("{path}.weight"), format!("weight {w} must be at least 1 (0 panics Pingora's Ketama builder, pingora issue #1006)"));
                None
            }
            w => p.count_opt(&format!("{path}.weight"), w.or(Some(1)), 1..=1000),
        };
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
            weight: weight.unwrap_or(1),
            backup: s.backup.unwrap_or(false),
        });
    }
    if raw.servers.is_empty() {
        p.add(at, "pool has no servers");
    } else if raw.servers.iter().all(|s| s.backup.unwrap_or(false)) {
        p.add(
            at,
            "pool has only backup servers: at least one must be a primary",
        );
    } else if raw.servers.len() > MAX_SERVERS {
        p.add(
            at,
            format!(
                "{} servers is more than the {MAX_SERVERS} a pool may have",
                raw.servers.len()
            ),
        );
    } else {
        let total: u64 = servers.iter().map(|s| u64::from(s.weight)).sum();
        if total > MAX_TOTAL_WEIGHT {
            p.add(at, format!("total weight {total} is above {MAX_TOTAL_WEIGHT}: the hash ring holds 160 points per unit of weight"));
        }
    }
    servers
}

fn health_check(p: &mut Problems, name: &str, h: RawHealthCheck) -> HealthCheck {
    let at = |field: &str| format!("upstream.{name}.health_check.{field}");
    let kind = match h.kind {
        Some(RawCheckKind::Tcp) => {
            for (key, set) in [("path", h.path.is_some()), ("host", h.host.is_some())] {
                if set {
                    p.add(at(key), "only valid with kind = \"http\"");
                }
            }
            CheckKind::Tcp
        }
        Some(RawCheckKind::Http) | None => {
            let path = h.path.unwrap_or_else(|| "/health".to_owned());
            if let Err(why) = names::request_path(&path) {
                p.add(at("path"), why);
            }
            if let Some(host) = &h.host {
                if let Err(why) = names::host_header(host) {
                    p.add(at("host"), why);
                }
            }
            CheckKind::Http { path, host: h.host }
        }
    };
    HealthCheck {
        kind,
        interval: p.duration(
            &at("interval"),
            h.interval.as_deref(),
            Span::Positive,
            Duration::from_secs(2),
        ),
        timeout: p.duration(
            &at("timeout"),
            h.timeout.as_deref(),
            Span::Positive,
            Duration::from_secs(1),
        ),
        rise: p.count(&at("rise"), h.rise, 1..=100, 2),
        fall: p.count(&at("fall"), h.fall, 1..=100, 3),
    }
}

fn passive(p: &mut Problems, name: &str, raw: RawPassive) -> Passive {
    let at = |field: &str| format!("upstream.{name}.passive.{field}");
    Passive {
        max_fails: p.count(&at("max_fails"), raw.max_fails, 0..=1000, 3),
        fail_timeout: p.duration(
            &at("fail_timeout"),
            raw.fail_timeout.as_deref(),
            Span::Positive,
            Duration::from_secs(10),
        ),
        count_5xx: raw.count_5xx.unwrap_or(false),
    }
}
