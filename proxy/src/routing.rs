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
use std::time::Instant;

use http::{header::COOKIE, HeaderMap, Uri};

use crate::config::{Balance, HashKey, Route};
use crate::stats::ActiveGuard;
use crate::upstream::{Pool, Ring, ServerState, Tier};

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

impl Selection {
    /// Select `server`, taking one unit of its load.
    fn take(server: &Arc<ServerState>) -> Self {
        Self {
            guard: ActiveGuard::new(server.stats.clone()),
            server: server.clone(),
        }
    }
}

/// Choose a server of `pool` for a request with sticky key `key`, skipping
/// `tried` (servers that already refused this request's connection).
///
/// Primaries first; backups only when no primary is available. With
/// `consistent-hash` the key's Ketama point is walked until an available
/// server with room under the bounded-load cap is found; a request without
/// a key is spread round-robin.
///
/// Cost: with `consistent-hash`, a binary search for the key's point and a
/// walk that stops at the first acceptable server; bounded load adds one
/// pass over the tier only when the first available server is not idle
/// enough to be accepted on a lower bound of its cap (see [`hash_pick`]).
/// Round-robin and least-conn look at every server of the tier, as nginx's
/// do.
///
/// When every server is out and some only through passive ejection, those
/// are tried anyway (as nginx does) rather than answering 502 to everyone;
/// active-check verdicts and admin states still hold.
///
/// `slow_start`: a server that became available less than this ago gets a
/// share ramping up with the time since — a fraction of its weight under
/// round-robin and least-conn, a fraction of its bounded-load cap under
/// consistent hashing (with the factor taken as 1 when none is set).
pub fn select(pool: &Pool, key: Option<&[u8]>, tried: &[SocketAddr]) -> Option<Selection> {
    let now = Instant::now();
    let usable = |s: &ServerState| !tried.contains(&s.addr) && s.is_available_at(now);
    select_among(pool, key, now, &usable).or_else(|| {
        let ejected_only = |s: &ServerState| {
            !tried.contains(&s.addr) && s.is_available_ignoring_ejection() && s.is_ejected(now)
        };
        if !pool.servers.iter().any(|s| ejected_only(s)) {
            return None;
        }
        let revived =
            |s: &ServerState| !tried.contains(&s.addr) && s.is_available_ignoring_ejection();
        select_among(pool, key, now, &revived)
    })
}

/// The weight `s` balances with now, in thousandths: its configured weight,
/// scaled down while it ramps up after becoming available (`slow_start`).
/// (Smooth weighted round-robin is scale-free, so thousandths let a weight
/// of 1 ramp too.)
fn effective_weight(pool: &Pool, s: &ServerState, now: Instant) -> i64 {
    let full = i64::from(s.weight) * 1000;
    match pool.settings.slow_start {
        None => full,
        Some(ramp) => ((full as f64 * s.ramp(Some(ramp), now)).round() as i64).max(1),
    }
}

fn select_among(
    pool: &Pool,
    key: Option<&[u8]>,
    now: Instant,
    usable: &impl Fn(&ServerState) -> bool,
) -> Option<Selection> {
    for backup in [false, true] {
        let picked = match (pool.settings.balance, key) {
            (Balance::ConsistentHash, Some(key)) => {
                let ring = if backup {
                    &pool.backup_ring
                } else {
                    &pool.primary_ring
                };
                let tier = &pool.tiers[usize::from(backup)];
                let ramp = |s: &ServerState| s.ramp(pool.settings.slow_start, now);
                hash_pick(ring, tier, key, pool.settings.balance_factor, usable, ramp)
            }
            (Balance::LeastConn, _) => least_conn(pool, backup, usable, now).map(Selection::take),
            _ => round_robin(pool, backup, now, |_, s| usable(s)).map(Selection::take),
        };
        if picked.is_some() {
            return picked;
        }
    }
    None
}

/// Walk `ring` from `key`'s point, keeping only usable servers; with a
/// balance factor, take the first whose load is under its cap
/// `ceil(factor × (total + 1) × weight / total_weight)` over the usable
/// servers of the tier — bounded-load consistent hashing (Mirrokni et al.),
/// as HAProxy's `hash-balance-factor`. When every usable server is at its
/// cap, the first one takes the request anyway. `None` when no server of
/// the tier is usable.
///
/// The cap check and the increment are one atomic step, so concurrent
/// requests cannot overshoot a cap together.
///
/// The totals cost one pass over the tier, so they are computed only when
/// needed: a server's own load is a lower bound of `total`, and the tier's
/// configured weight an upper bound of `total_weight`, which gives a lower
/// bound of its cap. A server under that bound (an idle one, always) is
/// accepted at once — the exact cap would accept it too.
fn hash_pick(
    ring: &Ring,
    tier: &Tier,
    key: &[u8],
    factor: Option<f64>,
    usable: &impl Fn(&ServerState) -> bool,
    ramp: impl Fn(&ServerState) -> f64,
) -> Option<Selection> {
    let mut walk = ring
        .walk_members(key)
        .filter_map(|m| tier.members.get(m))
        .filter(|s| usable(s));
    let first = walk.next()?;
    // A server ramping up (slow_start) is capped even without a factor.
    let first_ramp = ramp(first);
    let factor = match factor {
        Some(f) => f,
        None if first_ramp < 1.0 => 1.0,
        None => return Some(Selection::take(first)),
    };
    let lower_cap = |load: i64| {
        ramped(
            cap(factor, load, first.weight, tier.total_weight),
            first_ramp,
        )
    };
    if let Some(taken) = take_under_cap(first, lower_cap) {
        return Some(taken);
    }
    let (total, total_weight) = tier
        .members
        .iter()
        .filter(|s| usable(s))
        .fold((0i64, 0u64), |(load, weight), s| {
            (load + s.stats.load(), weight + u64::from(s.weight))
        });
    std::iter::once(first)
        .chain(walk)
        .find_map(|s| {
            let r = ramp(s);
            take_under_cap(s, |_| ramped(cap(factor, total, s.weight, total_weight), r))
        })
        .or_else(|| Some(Selection::take(first)))
}

/// A cap scaled by a slow-start ramp, never below one connection.
fn ramped(cap: i64, ramp: f64) -> i64 {
    if ramp >= 1.0 {
        cap
    } else {
        ((cap as f64 * ramp).ceil() as i64).max(1)
    }
}

/// The bounded-load cap of a server of `weight` when the tier carries
/// `total` active connections over `total_weight` of available weight.
fn cap(factor: f64, total: i64, weight: u32, total_weight: u64) -> i64 {
    let share = (total + 1) as f64 * f64::from(weight) / total_weight as f64;
    (factor * share).ceil() as i64
}

/// Take one unit of `s`'s load if its load is under `cap(load)`, in one
/// atomic step.
fn take_under_cap(s: &Arc<ServerState>, cap: impl Fn(i64) -> i64) -> Option<Selection> {
    s.stats
        .active_connections
        .fetch_update(Relaxed, Relaxed, |n| (n < cap(n.max(0))).then_some(n + 1))
        .ok()
        .map(|_| Selection {
            guard: ActiveGuard::adopt(s.stats.clone()),
            server: s.clone(),
        })
}

/// nginx's smooth weighted round-robin over the servers of one tier that
/// `eligible` admits (it is given each server's index in the pool).
fn round_robin(
    pool: &Pool,
    backup: bool,
    now: Instant,
    eligible: impl Fn(usize, &ServerState) -> bool,
) -> Option<&Arc<ServerState>> {
    let mut current = pool.rr.lock().unwrap_or_else(|p| p.into_inner());
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for (i, s) in pool.servers.iter().enumerate() {
        if s.backup != backup || !eligible(i, s) {
            continue;
        }
        let w = effective_weight(pool, s, now);
        current[i] += w;
        total += w;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let b = best?;
    current[b] -= total;
    Some(&pool.servers[b])
}

/// The server with the fewest active connections per unit of weight; ties
/// are broken round-robin so equal servers share evenly.
fn least_conn<'a>(
    pool: &'a Pool,
    backup: bool,
    usable: &impl Fn(&ServerState) -> bool,
    now: Instant,
) -> Option<&'a Arc<ServerState>> {
    let per_weight =
        |s: &ServerState| s.stats.load() as f64 / effective_weight(pool, s, now) as f64;
    let loads: Vec<Option<f64>> = pool
        .servers
        .iter()
        .map(|s| (s.backup == backup && usable(s)).then(|| per_weight(s)))
        .collect();
    let min = loads.iter().flatten().copied().reduce(f64::min)?;
    round_robin(pool, backup, now, |i, _| loads[i].is_some_and(|l| l <= min))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Upstream};
    use std::collections::{HashMap, HashSet};
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

    /// A deterministic stream of pseudo-random numbers (SplitMix64).
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    /// `n` servers on distinct addresses; weights 1..=3; the last `backups` are backups.
    fn big(factor: Option<f64>, n: usize, backups: usize) -> Pool {
        let addrs: Vec<String> = (0..n)
            .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250 + 1))
            .collect();
        let specs: Vec<(&str, u32, bool)> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (a.as_str(), (i % 3) as u32 + 1, i >= n - backups))
            .collect();
        pool(Balance::ConsistentHash, factor, &specs)
    }

    /// Selection as it was first written (every available server collected,
    /// the continuum walked point by point, the cap's totals summed on every
    /// pick): the model the indexed selection must agree with. Pure: takes
    /// no load.
    fn reference_pick(pool: &Pool, key: &[u8], tried: &[SocketAddr]) -> Option<SocketAddr> {
        for backup in [false, true] {
            let available: HashMap<SocketAddr, &Arc<ServerState>> = pool
                .servers
                .iter()
                .filter(|s| s.backup == backup && !tried.contains(&s.addr) && s.is_available())
                .map(|s| (s.addr, s))
                .collect();
            if available.is_empty() {
                continue;
            }
            let ring = if backup {
                &pool.backup_ring
            } else {
                &pool.primary_ring
            };
            let total: i64 = available.values().map(|s| s.stats.load()).sum();
            let weight: u64 = available.values().map(|s| u64::from(s.weight)).sum();
            let under_cap = |s: &ServerState| match pool.settings.balance_factor {
                None => true,
                Some(factor) => {
                    let share = (total + 1) as f64 * f64::from(s.weight) / weight as f64;
                    s.stats.load() < (factor * share).ceil() as i64
                }
            };
            let mut seen = HashSet::new();
            let mut first = None;
            for a in ring.continuum.node_iter(key).take(ring.points) {
                let Some(s) = available.get(a).filter(|_| seen.insert(*a)) else {
                    continue;
                };
                first.get_or_insert(*a);
                if under_cap(s) {
                    return Some(*a);
                }
            }
            return first;
        }
        None
    }

    #[test]
    fn a_thousand_servers_select_as_the_reference_does() {
        let mut p = big(None, 1000, 20);
        let mut next = rng(7);
        for s in &p.servers {
            if next() % 10 == 0 {
                s.observe_check(false, 1, 1);
            }
        }
        // Loads around the caps, so bounded load both accepts and walks on.
        let held: Vec<ActiveGuard> = p
            .servers
            .iter()
            .flat_map(|s| {
                let n = next() % 11;
                (0..n).map(|_| ActiveGuard::new(s.stats.clone()))
            })
            .collect();
        for factor in [None, Some(1.25), Some(2.0)] {
            p.settings.balance_factor = factor;
            let mut walked_past_first = 0;
            for i in 0..300 {
                let key = format!("user-{i}");
                let ring = &p.primary_ring;
                let head: Vec<SocketAddr> = ring
                    .walk_members(key.as_bytes())
                    .take(3)
                    .map(|m| ring.member_addr(m))
                    .collect();
                let tried = &head[..(next() % 3) as usize];
                let expected = reference_pick(&p, key.as_bytes(), tried);
                let got = select(&p, Some(key.as_bytes()), tried).map(|s| s.server.addr);
                assert_eq!(
                    got, expected,
                    "key {key}, factor {factor:?}, tried {tried:?}"
                );
                if got != Some(head[tried.len()]) {
                    walked_past_first += 1;
                }
            }
            // The scenario really exercises walking past down or full servers.
            assert!(walked_past_first > 15, "{factor:?}: {walked_past_first}");
        }
        drop(held);
    }

    #[test]
    fn bounded_load_holds_on_a_thousand_servers_with_some_down() {
        let p = big(Some(1.25), 1000, 0);
        let down: Vec<&Arc<ServerState>> = p.servers.iter().step_by(10).collect();
        for s in &down {
            s.observe_check(false, 1, 1);
        }
        // Few distinct keys: without the cap a handful of servers would take it all.
        let held: Vec<Selection> = (0..6000)
            .map(|i| select(&p, Some(format!("hot-{}", i % 50).as_bytes()), &[]).unwrap())
            .collect();
        let weight: u64 = p
            .servers
            .iter()
            .filter(|s| s.is_available())
            .map(|s| u64::from(s.weight))
            .sum();
        for s in &p.servers {
            let cap = (1.25 * 6000.0 * f64::from(s.weight) / weight as f64).ceil() as i64;
            assert!(
                s.stats.load() <= cap,
                "{} holds {} > {cap}",
                s.addr,
                s.stats.load()
            );
        }
        assert!(down.iter().all(|s| s.stats.load() == 0));
        let busy = p.servers.iter().filter(|s| s.stats.load() > 0).count();
        assert!(
            busy > 500,
            "the cap spread the hot keys over {busy} servers only"
        );
        drop(held);
        assert!(p.servers.iter().all(|s| s.stats.load() == 0));
    }

    #[test]
    fn a_thousand_servers_walk_to_backups_only_when_every_primary_is_out() {
        let p = big(Some(1.25), 1000, 10);
        let primaries: Vec<&Arc<ServerState>> = p.servers.iter().filter(|s| !s.backup).collect();
        let (last, rest) = primaries.split_last().unwrap();
        for s in rest {
            s.set_admin_state(crate::upstream::AdminState::Maint);
        }
        for i in 0..50 {
            let key = format!("k{i}");
            assert_eq!(
                select(&p, Some(key.as_bytes()), &[]).unwrap().server.addr,
                last.addr
            );
        }
        let s = select(&p, Some(b"k1"), &[last.addr]).unwrap();
        assert!(s.server.backup);
        assert_eq!(
            Some(s.server.addr),
            p.backup_ring.walk(b"k1").first().copied()
        );
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

    #[test]
    fn servers_out_only_by_passive_ejection_are_tried_anyway() {
        let p = three(Balance::ConsistentHash, None);
        let passive = p.settings.passive.clone();
        for s in &p.servers {
            for _ in 0..passive.max_fails {
                s.record_failure(&passive);
            }
            assert!(!s.is_available());
        }
        assert!(
            select(&p, Some(b"k"), &[]).is_some(),
            "all ejected: try them anyway"
        );
        // A server out by its health check stays out even then.
        for s in &p.servers {
            s.observe_check(false, 1, 1);
        }
        assert!(select(&p, Some(b"k"), &[]).is_none());
    }

    fn with_slow_start(mut p: Pool, ramp: Duration) -> Pool {
        p.settings.slow_start = Some(ramp);
        p
    }

    #[test]
    fn slow_start_ramps_a_new_server_by_weight_under_round_robin() {
        let p = with_slow_start(three(Balance::RoundRobin, None), Duration::from_secs(100));
        let now = Instant::now();
        let long_ago = now.checked_sub(Duration::from_secs(1000)).unwrap();
        p.servers[0].became_available_at(long_ago);
        p.servers[1].became_available_at(long_ago);
        p.servers[2].became_available_at(now.checked_sub(Duration::from_secs(10)).unwrap());
        let mut fresh = 0;
        for _ in 0..210 {
            if select(&p, None, &[]).unwrap().server.addr == p.servers[2].addr {
                fresh += 1;
            }
        }
        // 10 % of its weight: about 10 of 210.
        assert!(fresh < 30, "the ramping server got {fresh} of 210");
        assert!(fresh > 0);
    }

    #[test]
    fn slow_start_caps_a_new_server_under_consistent_hashing() {
        // Factor 2: room enough on the others for the share the ramp holds back.
        let p = with_slow_start(
            three(Balance::ConsistentHash, Some(2.0)),
            Duration::from_secs(100),
        );
        let now = Instant::now();
        let long_ago = now.checked_sub(Duration::from_secs(1000)).unwrap();
        for s in &p.servers {
            s.became_available_at(long_ago);
        }
        let target = p.servers[0].addr;
        p.servers[0].became_available_at(now.checked_sub(Duration::from_secs(20)).unwrap());
        // Keys that hash to the ramping server.
        let keys: Vec<String> = (0..)
            .map(|i| format!("k{i}"))
            .filter(|k| p.primary_ring.continuum.node(k.as_bytes()) == Some(target))
            .take(60)
            .collect();
        let held: Vec<Selection> = (0..300)
            .map(|i| select(&p, Some(format!("other{i}").as_bytes()), &[]).unwrap())
            .chain(
                keys.iter()
                    .map(|k| select(&p, Some(k.as_bytes()), &[]).unwrap()),
            )
            .collect();
        let load = p.servers[0].stats.load();
        let mean = held.len() as i64 / 3;
        assert!(load < mean / 2, "ramping server holds {load}, mean {mean}");
    }
}
