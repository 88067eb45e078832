//! Routing decisions: which route a request takes, which sticky key it
//! carries, and which server of the pool receives it.
//!
//! Everything here is a pure decision over plain data (`http` header maps,
//! the pool's rings and counters): no Pingora session, no socket, so each
//! rule is unit-tested on its own. Architecture invariant: routing never
//! touches the network.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use http::{header::COOKIE, HeaderMap, Uri};

use crate::config::{Balance, HashKey, Route};
use crate::stats::ActiveGuard;
use crate::upstream::{Pool, ServerState};

/// The first route matching `host` and `path`, in config order (first match wins).
pub fn find_route<'a>(routes: &'a [Route], host: &str, path: &str) -> Option<&'a Route> {
    routes.iter().find(|r| r.matches(host, path))
}

/// The sticky key of a request: the first element of the `hash_key` chain
/// present in the request. Values are taken raw, not percent-decoded, as
/// nginx's `$cookie_NAME` and `$arg_NAME` are, so the same key lands on the
/// same server as under nginx. Empty values count as absent.
pub fn sticky_key(
    chain: &[HashKey],
    headers: &HeaderMap,
    uri: &Uri,
    client_ip: Option<IpAddr>,
) -> Option<String> {
    chain.iter().find_map(|kind| match kind {
        HashKey::Cookie(name) => cookie(headers, name),
        HashKey::Query(name) => query_param(uri, name),
        HashKey::Header(name) => headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
        HashKey::ClientIp => client_ip.map(|ip| ip.to_string()),
    })
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// A chosen server with one unit of its load already taken.
#[derive(Debug)]
pub struct Selection {
    /// The server that gets the request.
    pub server: Arc<ServerState>,
    /// Holds the load the request adds until the request or tunnel ends.
    pub guard: ActiveGuard,
}

/// Choose a server of `pool` for a request with sticky key `key`, skipping
/// `tried` (servers that already refused this request's connection).
///
/// Primaries first; backups only when no primary is available. With
/// `consistent-hash` the key's Ketama point is walked until an available
/// server with room under the bounded-load cap is found; a request without
/// a key is spread round-robin.
pub fn select(pool: &Pool, key: Option<&[u8]>, tried: &[SocketAddr]) -> Option<Selection> {
    for backup in [false, true] {
        let available: Vec<&Arc<ServerState>> = pool
            .servers
            .iter()
            .filter(|s| s.backup == backup && !tried.contains(&s.addr) && s.is_available())
            .collect();
        if available.is_empty() {
            continue;
        }
        let ring = if backup {
            &pool.backup_ring
        } else {
            &pool.primary_ring
        };
        let picked = match (pool.settings.balance, key) {
            (Balance::ConsistentHash, Some(key)) => {
                let walk = ring.walk(key);
                return Some(hash_pick(&walk, &available, pool.settings.balance_factor));
            }
            (Balance::LeastConn, _) => least_conn(pool, &available),
            _ => round_robin(pool, &available),
        };
        return Some(Selection {
            guard: ActiveGuard::new(picked.stats.clone()),
            server: picked.clone(),
        });
    }
    None
}

/// Walk the ring order `walk`, keeping only `available` servers; with a
/// balance factor, take the first whose load is under its cap
/// `ceil(factor × (total + 1) × weight / total_weight)` — bounded-load
/// consistent hashing (Mirrokni et al.), as HAProxy's `hash-balance-factor`.
/// The cap check and the increment are one atomic step, so concurrent
/// requests cannot overshoot a cap together.
fn hash_pick(
    walk: &[SocketAddr],
    available: &[&Arc<ServerState>],
    factor: Option<f64>,
) -> Selection {
    let ordered: Vec<&Arc<ServerState>> = walk
        .iter()
        .filter_map(|a| available.iter().find(|s| s.addr == *a).copied())
        .collect();
    // Servers added since the ring was built cannot be missing, but stay safe.
    let ordered = if ordered.is_empty() {
        available.to_vec()
    } else {
        ordered
    };
    if let Some(factor) = factor {
        let total: i64 = available.iter().map(|s| s.stats.load()).sum();
        let total_weight: u64 = available.iter().map(|s| u64::from(s.weight)).sum();
        for s in &ordered {
            let share = (total + 1) as f64 * f64::from(s.weight) / total_weight as f64;
            let cap = (factor * share).ceil() as i64;
            let took = s
                .stats
                .active_connections
                .fetch_update(Relaxed, Relaxed, |n| (n < cap).then_some(n + 1));
            if took.is_ok() {
                return Selection {
                    guard: ActiveGuard::adopt(s.stats.clone()),
                    server: (*s).clone(),
                };
            }
        }
    }
    let s = ordered[0];
    Selection {
        guard: ActiveGuard::new(s.stats.clone()),
        server: s.clone(),
    }
}

/// nginx's smooth weighted round-robin over `available`.
fn round_robin<'a>(pool: &Pool, available: &[&'a Arc<ServerState>]) -> &'a Arc<ServerState> {
    let mut current = pool.rr.lock().unwrap_or_else(|p| p.into_inner());
    let mut total = 0i64;
    let mut best: Option<(usize, &Arc<ServerState>)> = None;
    for s in available {
        let Some(i) = pool.servers.iter().position(|p| Arc::ptr_eq(p, s)) else {
            continue;
        };
        let w = i64::from(s.weight);
        current[i] += w;
        total += w;
        if best.is_none_or(|(b, _)| current[i] > current[b]) {
            best = Some((i, s));
        }
    }
    match best {
        Some((i, s)) => {
            current[i] -= total;
            s
        }
        None => available[0],
    }
}

/// The server with the fewest active connections per unit of weight; ties
/// are broken round-robin so equal servers share evenly.
fn least_conn<'a>(pool: &Pool, available: &[&'a Arc<ServerState>]) -> &'a Arc<ServerState> {
    let per_weight = |s: &ServerState| s.stats.load() as f64 / f64::from(s.weight);
    let min = available
        .iter()
        .map(|s| per_weight(s))
        .fold(f64::INFINITY, f64::min);
    let tied: Vec<&Arc<ServerState>> = available
        .iter()
        .filter(|s| per_weight(s) <= min)
        .copied()
        .collect();
    round_robin(pool, &tied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Upstream};
    use std::time::Duration;

    fn pool(balance: Balance, factor: Option<f64>, specs: &[(&str, u32, bool)]) -> Pool {
        let settings = Upstream {
            name: "t".into(),
            balance,
            hash_key: vec![HashKey::ClientIp],
            balance_factor: factor,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(1),
            retries: 2,
            slow_start: None,
            keepalive_connections: 64,
            tls: None,
            servers: specs
                .iter()
                .map(|(a, w, b)| config::ServerSpec {
                    addr: a.parse().unwrap(),
                    weight: *w,
                    backup: *b,
                })
                .collect(),
            health_check: None,
            passive: config::Passive {
                max_fails: 3,
                fail_timeout: Duration::from_secs(10),
                count_5xx: false,
            },
        };
        Pool::new(settings, None, &[], None)
    }

    fn three(balance: Balance, factor: Option<f64>) -> Pool {
        pool(
            balance,
            factor,
            &[
                ("127.0.0.1:9001", 1, false),
                ("127.0.0.1:9002", 1, false),
                ("127.0.0.1:9003", 1, false),
            ],
        )
    }

    #[test]
    fn key_chain_takes_first_present() {
        let chain = vec![
            HashKey::Cookie("sid".into()),
            HashKey::Query("sid".into()),
            HashKey::Header("x-session-id".into()),
            HashKey::ClientIp,
        ];
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let uri: Uri = "/ws?a=1&sid=q%20v".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-session-id", "hdr".parse().unwrap());
        assert_eq!(
            sticky_key(&chain, &h, &uri, Some(ip)).as_deref(),
            Some("q%20v")
        );
        h.append(COOKIE, "theme=dark".parse().unwrap());
        h.append(COOKIE, "x=1; sid=ck".parse().unwrap());
        assert_eq!(
            sticky_key(&chain, &h, &uri, Some(ip)).as_deref(),
            Some("ck")
        );
        let bare: Uri = "/ws?sid=".parse().unwrap();
        let h2: HeaderMap = [("x-session-id".parse().unwrap(), "hdr".parse().unwrap())]
            .into_iter()
            .collect();
        assert_eq!(
            sticky_key(&chain, &h2, &bare, Some(ip)).as_deref(),
            Some("hdr")
        );
        let none = HeaderMap::new();
        assert_eq!(
            sticky_key(&chain, &none, &bare, Some(ip)).as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(sticky_key(&chain[..3], &none, &bare, Some(ip)), None);
    }

    #[test]
    fn consistent_hash_is_the_ketama_point_and_walks_past_down_servers() {
        let p = three(Balance::ConsistentHash, None);
        for i in 0..200 {
            let key = format!("k{i}");
            let first = p.primary_ring.continuum.node(key.as_bytes()).unwrap();
            let s = select(&p, Some(key.as_bytes()), &[]).unwrap();
            assert_eq!(s.server.addr, first);
        }
        let key = b"k7";
        let walk = p.primary_ring.walk(key);
        p.server(walk[0]).unwrap().observe_check(false, 1, 1);
        assert_eq!(select(&p, Some(key), &[]).unwrap().server.addr, walk[1]);
        assert_eq!(
            select(&p, Some(key), &[walk[1]]).unwrap().server.addr,
            walk[2]
        );
        p.server(walk[0]).unwrap().observe_check(true, 1, 1);
        assert_eq!(select(&p, Some(key), &[]).unwrap().server.addr, walk[0]);
    }

    #[test]
    fn bounded_load_caps_each_server() {
        let p = three(Balance::ConsistentHash, Some(1.25));
        let held: Vec<Selection> = (0..300)
            .map(|_| select(&p, Some(b"same"), &[]).unwrap())
            .collect();
        let cap = (1.25f64 * 100.0).ceil() as i64;
        for s in &p.servers {
            assert!(s.stats.load() <= cap, "{} holds {}", s.addr, s.stats.load());
        }
        assert_eq!(held.len(), 300);
        drop(held);
        assert!(p.servers.iter().all(|s| s.stats.load() == 0));
    }

    #[test]
    fn backups_only_when_every_primary_is_down() {
        let p = pool(
            Balance::ConsistentHash,
            None,
            &[
                ("127.0.0.1:1", 1, false),
                ("127.0.0.1:2", 1, false),
                ("127.0.0.1:3", 1, true),
            ],
        );
        for _ in 0..20 {
            assert!(!select(&p, Some(b"x"), &[]).unwrap().server.backup);
        }
        p.servers[0].observe_check(false, 1, 1);
        assert!(!select(&p, Some(b"x"), &[]).unwrap().server.backup);
        p.servers[1].observe_check(false, 1, 1);
        assert!(select(&p, Some(b"x"), &[]).unwrap().server.backup);
        p.servers[2].observe_check(false, 1, 1);
        assert!(select(&p, Some(b"x"), &[]).is_none());
    }

    #[test]
    fn round_robin_follows_weights() {
        let p = pool(
            Balance::RoundRobin,
            None,
            &[("127.0.0.1:1", 1, false), ("127.0.0.1:2", 3, false)],
        );
        let picks: Vec<u16> = (0..8)
            .map(|_| select(&p, None, &[]).unwrap().server.addr.port())
            .collect();
        assert_eq!(picks.iter().filter(|&&p| p == 2).count(), 6);
        assert_eq!(picks.iter().filter(|&&p| p == 1).count(), 2);
    }

    #[test]
    fn least_conn_prefers_the_idlest() {
        let p = three(Balance::LeastConn, None);
        let a = select(&p, None, &[]).unwrap();
        let b = select(&p, None, &[]).unwrap();
        let c = select(&p, None, &[]).unwrap();
        let mut ports = vec![a.server.addr, b.server.addr, c.server.addr];
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 3);
        let freed = b.server.addr;
        drop(b);
        assert_eq!(select(&p, None, &[]).unwrap().server.addr, freed);
    }

    #[test]
    fn routes_first_match_wins() {
        let routes = vec![
            Route {
                host: config::HostMatch::Exact("api.example.com".into()),
                path_prefix: "/".into(),
                upstream: "api".into(),
                limits: Default::default(),
            },
            Route {
                host: config::HostMatch::Suffix(".example.com".into()),
                path_prefix: "/ws".into(),
                upstream: "chat".into(),
                limits: Default::default(),
            },
            Route {
                host: config::HostMatch::Any,
                path_prefix: "/static".into(),
                upstream: "files".into(),
                limits: Default::default(),
            },
        ];
        let up = |h: &str, p: &str| find_route(&routes, h, p).map(|r| r.upstream.as_str());
        assert_eq!(up("api.example.com", "/ws"), Some("api"));
        assert_eq!(up("chat.example.com:8080", "/ws/x"), Some("chat"));
        assert_eq!(up("chat.example.com", "/static/a"), Some("files"));
        assert_eq!(up("other.org", "/ws"), None);
    }
}
