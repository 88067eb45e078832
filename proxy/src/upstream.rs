//! Upstream pools and the state of each server in them.
//!
//! Owns what the proxy knows about a server between requests: its admin
//! state (up, draining, maint), what active health checks last concluded,
//! whether passive ejection has taken it out, and its counters. Routing asks
//! one question of it, [`ServerState::is_available`]; health checks and the
//! request path report into it. It never opens a connection itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora_ketama::{Bucket, Continuum};

use crate::config;
use crate::stats::ServerStats;
use crate::tls::UpstreamTlsConfig;
use crate::tunnel::control::TunnelRegistry;

/// What an operator (or a later reload) has said about a server. Separate
/// from health: a server in maintenance stays out even when it is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminState {
    /// Takes traffic when healthy.
    Up = 0,
    /// Takes no new connections; live ones finish.
    Draining = 1,
    /// Taken out by an operator.
    Maint = 2,
}

/// One server of one pool: identity, weight, and its lasting state.
///
/// The state that must survive a reload while the server stays (counters,
/// health verdict, passive ejection, admin state, open tunnels) sits behind
/// `Arc`s, so a reload that only reweights a server builds a new
/// `ServerState` around the same state.
#[derive(Debug)]
pub struct ServerState {
    /// Where the server listens (a literal IP, so the Ketama ring matches nginx's).
    pub addr: SocketAddr,
    /// Share of the traffic relative to the pool's other servers.
    pub weight: u32,
    /// Takes traffic only when no primary server is available.
    pub backup: bool,
    /// Counters read by `/stats.json`, `/metrics` and by the balancers.
    pub stats: Arc<ServerStats>,
    /// Open tunnels and the order they follow (drain, maintenance).
    pub tunnels: Arc<TunnelRegistry>,
    shared: Arc<Lasting>,
}

/// The parts of a server's state that outlive one pool build.
#[derive(Debug)]
struct Lasting {
    admin: AtomicU8,
    healthy: AtomicBool,
    /// Fast paths for the request path: set while an ejection may be in
    /// force, and while failures are counted. Every request reads them;
    /// the lock is taken only when they say there is something to look at.
    maybe_ejected: AtomicBool,
    has_fails: AtomicBool,
    inner: Mutex<Tracking>,
}

/// The parts of a server's state that change together.
#[derive(Debug)]
struct Tracking {
    /// Consecutive health-check results of the current streak.
    streak_ok: u32,
    streak_fail: u32,
    /// Passive ejection: failures seen in the current window.
    fails: u32,
    window_start: Instant,
    ejected_until: Option<Instant>,
    last_change: Instant,
    /// When the server last became available (added, recovered, back from
    /// drain or maintenance): the start of its slow-start ramp.
    up_since: Instant,
}

impl ServerState {
    /// A server as configured: up, presumed healthy until checks say otherwise
    /// (as HAProxy and Pingora start), with fresh counters.
    pub fn new(spec: &config::ServerSpec) -> Self {
        let now = Instant::now();
        Self {
            addr: spec.addr,
            weight: spec.weight,
            backup: spec.backup,
            stats: Arc::new(ServerStats::default()),
            tunnels: Arc::default(),
            shared: Arc::new(Lasting {
                admin: AtomicU8::new(AdminState::Up as u8),
                healthy: AtomicBool::new(true),
                maybe_ejected: AtomicBool::new(false),
                has_fails: AtomicBool::new(false),
                inner: Mutex::new(Tracking {
                    streak_ok: 0,
                    streak_fail: 0,
                    fails: 0,
                    window_start: now,
                    ejected_until: None,
                    last_change: now,
                    up_since: now,
                }),
            }),
        }
    }

    /// The same server with a new weight or role, keeping every piece of
    /// its lasting state (a reload that reweights a server).
    pub fn respecified(&self, spec: &config::ServerSpec) -> Self {
        Self {
            addr: self.addr,
            weight: spec.weight,
            backup: spec.backup,
            stats: self.stats.clone(),
            tunnels: self.tunnels.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Whether `other` is the same server state (kept across a reload).
    pub fn same_state(&self, other: &ServerState) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    fn tracking(&self) -> std::sync::MutexGuard<'_, Tracking> {
        // A panic while holding this lock cannot leave the counters in an
        // unsafe state, so a poisoned lock is still usable.
        self.shared.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How far along its slow-start ramp the server is, 0..=1 (1 when
    /// `slow_start` is off or over).
    pub fn ramp(&self, slow_start: Option<Duration>, now: Instant) -> f64 {
        let Some(ramp) = slow_start.filter(|d| !d.is_zero()) else {
            return 1.0;
        };
        let since = now.saturating_duration_since(self.tracking().up_since);
        (since.as_secs_f64() / ramp.as_secs_f64()).clamp(0.0, 1.0)
    }

    /// Whether new connections may go here now: admin state up, last health
    /// verdict healthy, and not passively ejected.
    pub fn is_available(&self) -> bool {
        self.is_available_at(Instant::now())
    }

    /// [`ServerState::is_available`] at `now`, so that a selection that
    /// looks at many servers reads the clock once.
    pub fn is_available_at(&self, now: Instant) -> bool {
        self.admin_state() == AdminState::Up && self.is_healthy() && !self.is_ejected(now)
    }

    /// Pretend the server became available at `at` (tests of slow start).
    #[cfg(test)]
    pub(crate) fn became_available_at(&self, at: Instant) {
        self.tracking().up_since = at;
    }

    /// Available but for passive ejection (admin state up, checks passing):
    /// such a server is tried when every server is out.
    pub fn is_available_ignoring_ejection(&self) -> bool {
        self.admin_state() == AdminState::Up && self.is_healthy()
    }

    /// The last verdict of the active health checks.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Relaxed)
    }

    /// The operator-set state.
    pub fn admin_state(&self) -> AdminState {
        match self.shared.admin.load(Relaxed) {
            1 => AdminState::Draining,
            2 => AdminState::Maint,
            _ => AdminState::Up,
        }
    }

    /// Change the operator-set state.
    pub fn set_admin_state(&self, state: AdminState) {
        let before = self.shared.admin.swap(state as u8, Relaxed);
        if before != state as u8 {
            let mut t = self.tracking();
            t.last_change = Instant::now();
            if state == AdminState::Up {
                t.up_since = t.last_change;
            }
        }
    }

    /// Whether passive ejection currently keeps the server out.
    pub fn is_ejected(&self, now: Instant) -> bool {
        if !self.shared.maybe_ejected.load(Relaxed) {
            return false;
        }
        let t = self.tracking();
        let ejected = t.ejected_until.is_some_and(|u| now < u);
        if !ejected {
            self.shared.maybe_ejected.store(false, Relaxed);
        }
        ejected
    }

    /// Seconds since the server last changed state (health, ejection, admin).
    pub fn last_change_secs(&self) -> u64 {
        self.tracking().last_change.elapsed().as_secs()
    }

    /// Feed one active health-check result; flips health after `rise`
    /// successes or `fall` failures in a row. Returns the new verdict when it
    /// changed.
    pub fn observe_check(&self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if !ok {
            self.stats.check_failures.fetch_add(1, Relaxed);
        }
        let mut t = self.tracking();
        if ok {
            t.streak_ok += 1;
            t.streak_fail = 0;
        } else {
            t.streak_fail += 1;
            t.streak_ok = 0;
        }
        let healthy = self.is_healthy();
        let flip = (healthy && t.streak_fail >= fall) || (!healthy && t.streak_ok >= rise);
        if !flip {
            return None;
        }
        self.shared.healthy.store(!healthy, Relaxed);
        t.last_change = Instant::now();
        if !healthy {
            // Back from the dead: forget failures from before.
            t.fails = 0;
            t.ejected_until = None;
            self.shared.maybe_ejected.store(false, Relaxed);
            t.up_since = t.last_change;
        }
        Some(!healthy)
    }

    /// Passive health: count a failed attempt (connect error, reset, timeout)
    /// and eject the server for `fail_timeout` once `max_fails` failures fall
    /// in one `fail_timeout` window — nginx's `max_fails`/`fail_timeout`.
    /// Returns true when this failure ejected the server.
    pub fn record_failure(&self, passive: &config::Passive) -> bool {
        self.stats.failures.fetch_add(1, Relaxed);
        if passive.max_fails == 0 {
            return false;
        }
        let now = Instant::now();
        let mut t = self.tracking();
        if now.duration_since(t.window_start) > passive.fail_timeout {
            t.window_start = now;
            t.fails = 0;
        }
        t.fails += 1;
        self.shared.has_fails.store(true, Relaxed);
        if t.fails >= passive.max_fails && t.ejected_until.is_none_or(|u| u <= now) {
            t.ejected_until = Some(now + passive.fail_timeout);
            self.shared.maybe_ejected.store(true, Relaxed);
            t.fails = 0;
            t.window_start = now;
            t.last_change = now;
            return true;
        }
        false
    }

    /// Passive health: a completed exchange clears the failure count.
    pub fn record_success(&self) {
        if !self.shared.has_fails.swap(false, Relaxed) {
            return;
        }
        self.tracking().fails = 0;
    }

    /// The state word `/stats.json` shows.
    pub fn state_name(&self) -> &'static str {
        match self.admin_state() {
            AdminState::Draining => "draining",
            AdminState::Maint => "maint",
            AdminState::Up if self.is_available() => "up",
            AdminState::Up => "down",
        }
    }
}

/// One `[upstream.NAME]`: its settings, its servers and the rings built
/// from them. Rings hold every server, healthy or not, so a server's keys
/// come back to it when it recovers; selection walks past unavailable ones.
#[derive(Debug)]
pub struct Pool {
    /// The validated `[upstream.NAME]` section.
    pub settings: config::Upstream,
    /// Every server, in config order.
    pub servers: Vec<Arc<ServerState>>,
    /// Ketama ring over the primary servers.
    pub primary_ring: Ring,
    /// Ketama ring over the backup servers.
    pub backup_ring: Ring,
    /// Smooth weighted round-robin state (nginx's algorithm), one slot per server.
    pub(crate) rr: Mutex<Vec<i64>>,
    /// How servers are reached over TLS, when the pool has `tls = true`.
    pub tls: Option<Arc<UpstreamTlsConfig>>,
    /// The servers of `primary_ring` and of `backup_ring`, each in ring-member
    /// order, so a ring walk names a server by index with no search.
    pub(crate) tiers: [Tier; 2],
}

/// The servers of one ring (the primaries, or the backups) in the order the
/// ring numbers its members, and their configured weight in total.
#[derive(Debug)]
pub(crate) struct Tier {
    /// Member `m` of the ring is `members[m]`.
    pub(crate) members: Box<[Arc<ServerState>]>,
    /// The sum of every member's weight, available or not.
    pub(crate) total_weight: u64,
}

impl Tier {
    fn new<'a>(servers: impl Iterator<Item = &'a Arc<ServerState>>) -> Self {
        let members: Box<[Arc<ServerState>]> = servers.cloned().collect();
        let total_weight = members.iter().map(|s| u64::from(s.weight)).sum();
        Self {
            members,
            total_weight,
        }
    }
}

/// A Ketama continuum plus what is needed to walk it cheaply: for every
/// point, the index of the member that owns it, so that a walk is a binary
/// search for the key's point followed by index steps, never an address
/// comparison.
pub struct Ring {
    /// The continuum itself (nginx-compatible points).
    pub continuum: Continuum,
    /// Number of points on the continuum (points of equal hash are merged,
    /// as nginx does, so at most 160 per unit of weight).
    pub points: usize,
    /// Distinct servers on the ring.
    pub members: usize,
    /// Point `p` (in continuum order) belongs to member `owner[p]`: the
    /// position of its server in the iterator [`Ring::new`] was given.
    owner: Box<[u32]>,
    /// Member `m`'s address.
    addrs: Box<[SocketAddr]>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("points", &self.points)
            .field("members", &self.members)
            .finish()
    }
}

impl Ring {
    /// Build the ring nginx would build for `hash … consistent` over these
    /// servers: 160 points per unit of weight.
    pub fn new<'a>(servers: impl Iterator<Item = &'a ServerState>) -> Self {
        let (addrs, buckets): (Vec<SocketAddr>, Vec<Bucket>) = servers
            .map(|s| (s.addr, Bucket::new(s.addr, s.weight)))
            .unzip();
        // The continuum numbers its nodes in the order of `buckets`.
        let continuum = Continuum::new(&buckets);
        let member_of: HashMap<SocketAddr, u32> = addrs
            .iter()
            .enumerate()
            .rev() // a repeated address keeps its first index
            .map(|(m, a)| (*a, m as u32))
            .collect();
        // `get_addr` steps through the continuum in order and wraps to 0
        // after the last point: one lap reads every point's owner.
        let mut owner = Vec::new();
        let mut idx = 0usize;
        while let Some(addr) = continuum.get_addr(&mut idx) {
            owner.push(member_of.get(addr).copied().unwrap_or(0));
            if idx == 0 {
                break;
            }
        }
        Self {
            continuum,
            points: owner.len(),
            members: addrs.len(),
            owner: owner.into_boxed_slice(),
            addrs: addrs.into_boxed_slice(),
        }
    }

    /// The members in ring order starting at `key`'s point, each once, as
    /// indices (see [`Ring::member_addr`]). Lazy: the point is found by
    /// binary search and the walk goes only as far as it is driven, so a
    /// caller that takes the first member pays `O(log points)`.
    pub fn walk_members(&self, key: &[u8]) -> RingWalk<'_> {
        let start = if self.points == 0 {
            0
        } else {
            self.continuum.node_idx(key)
        };
        RingWalk {
            ring: self,
            pos: start,
            left: self.points,
            found: 0,
            seen: Seen::new(self.members),
        }
    }

    /// The address of member `m`.
    pub fn member_addr(&self, m: usize) -> SocketAddr {
        self.addrs[m]
    }

    /// The servers in ring order starting at `key`'s point, each once.
    pub fn walk(&self, key: &[u8]) -> Vec<SocketAddr> {
        self.walk_members(key).map(|m| self.addrs[m]).collect()
    }
}

/// A lazy walk of a [`Ring`]: member indices in ring order from a key's
/// point, each member once. Built by [`Ring::walk_members`].
pub struct RingWalk<'a> {
    ring: &'a Ring,
    /// The next point to read.
    pos: usize,
    /// Points not read yet: a walk ends after one lap.
    left: usize,
    /// Members yielded so far: a walk ends when it has seen them all.
    found: usize,
    seen: Seen,
}

impl Iterator for RingWalk<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.left > 0 && self.found < self.ring.members {
            let m = self.ring.owner[self.pos] as usize;
            self.pos += 1;
            if self.pos == self.ring.points {
                self.pos = 0;
            }
            self.left -= 1;
            if self.seen.insert(m) {
                self.found += 1;
                return Some(m);
            }
        }
        None
    }
}

/// The members a walk has yielded. Small rings use an inline bit set; a
/// large ring allocates its bit set only once the walk goes past its first
/// member, so the common walk (first member taken) never allocates.
enum Seen {
    Inline(u128),
    Large {
        first: Option<usize>,
        bits: Vec<u64>,
        members: usize,
    },
}

impl Seen {
    fn new(members: usize) -> Self {
        if members <= 128 {
            Seen::Inline(0)
        } else {
            Seen::Large {
                first: None,
                bits: Vec::new(),
                members,
            }
        }
    }

    /// Record member `m`; false when it was already recorded.
    fn insert(&mut self, m: usize) -> bool {
        match self {
            Seen::Inline(bits) => {
                let bit = 1u128 << m;
                let new = *bits & bit == 0;
                *bits |= bit;
                new
            }
            Seen::Large {
                first,
                bits,
                members,
            } => {
                let Some(f) = *first else {
                    *first = Some(m);
                    return true;
                };
                if m == f {
                    return false;
                }
                if bits.is_empty() {
                    *bits = vec![0; members.div_ceil(64)];
                    bits[f / 64] |= 1 << (f % 64);
                }
                let (word, bit) = (m / 64, 1u64 << (m % 64));
                let new = bits[word] & bit == 0;
                bits[word] |= bit;
                new
            }
        }
    }
}

impl Pool {
    /// Build a pool from its validated section, reusing the state of servers
    /// that `previous` already had (same address; `retired` holds servers an
    /// earlier reload removed whose tunnels still run), so that health
    /// verdicts, counters, admin state and tunnels survive a reload.
    pub fn new(
        settings: config::Upstream,
        previous: Option<&Pool>,
        retired: &[Arc<ServerState>],
        tls: Option<Arc<UpstreamTlsConfig>>,
    ) -> Self {
        let servers: Vec<Arc<ServerState>> = settings
            .servers
            .iter()
            .map(|spec| {
                let old = previous
                    .and_then(|p| p.server(spec.addr))
                    .or_else(|| retired.iter().find(|s| s.addr == spec.addr).cloned());
                match old {
                    Some(s) if s.weight == spec.weight && s.backup == spec.backup => s,
                    Some(s) => Arc::new(s.respecified(spec)),
                    None => Arc::new(ServerState::new(spec)),
                }
            })
            .collect();
        let primary_ring = Ring::new(servers.iter().filter(|s| !s.backup).map(|s| &**s));
        let backup_ring = Ring::new(servers.iter().filter(|s| s.backup).map(|s| &**s));
        let tiers = [
            Tier::new(servers.iter().filter(|s| !s.backup)),
            Tier::new(servers.iter().filter(|s| s.backup)),
        ];
        let rr = Mutex::new(vec![0; servers.len()]);
        Self {
            settings,
            servers,
            primary_ring,
            backup_ring,
            rr,
            tls,
            tiers,
        }
    }

    /// The pool's name (`NAME` in `[upstream.NAME]`).
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Look a server up by address.
    pub fn server(&self, addr: SocketAddr) -> Option<Arc<ServerState>> {
        self.servers.iter().find(|s| s.addr == addr).cloned()
    }

    /// How long a health check may take, how often, and its thresholds.
    pub fn health_check(&self) -> Option<&config::HealthCheck> {
        self.settings.health_check.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(addr: &str) -> config::ServerSpec {
        config::ServerSpec {
            addr: addr.parse().unwrap(),
            weight: 1,
            backup: false,
        }
    }

    #[test]
    fn health_flips_after_fall_and_rise() {
        let s = ServerState::new(&spec("127.0.0.1:1"));
        assert_eq!(s.observe_check(false, 2, 3), None);
        assert_eq!(s.observe_check(false, 2, 3), None);
        assert_eq!(s.observe_check(false, 2, 3), Some(false));
        assert!(!s.is_available());
        assert_eq!(s.state_name(), "down");
        assert_eq!(s.observe_check(true, 2, 3), None);
        assert_eq!(s.observe_check(false, 2, 3), None);
        assert_eq!(s.observe_check(true, 2, 3), None);
        assert_eq!(s.observe_check(true, 2, 3), Some(true));
        assert!(s.is_available());
        assert_eq!(s.stats.check_failures.load(Relaxed), 4);
    }

    #[test]
    fn passive_ejection_needs_max_fails_in_window() {
        let s = ServerState::new(&spec("127.0.0.1:1"));
        let passive = config::Passive {
            max_fails: 3,
            fail_timeout: Duration::from_secs(30),
            count_5xx: false,
        };
        assert!(!s.record_failure(&passive));
        assert!(!s.record_failure(&passive));
        s.record_success();
        assert!(!s.record_failure(&passive));
        assert!(!s.record_failure(&passive));
        assert!(s.record_failure(&passive));
        assert!(!s.is_available());
        let off = config::Passive {
            max_fails: 0,
            fail_timeout: Duration::from_secs(30),
            count_5xx: false,
        };
        let t = ServerState::new(&spec("127.0.0.1:2"));
        for _ in 0..10 {
            assert!(!t.record_failure(&off));
        }
        assert!(t.is_available());
    }

    #[test]
    fn ejection_ends_after_fail_timeout() {
        let s = ServerState::new(&spec("127.0.0.1:1"));
        let passive = config::Passive {
            max_fails: 1,
            fail_timeout: Duration::from_millis(50),
            count_5xx: false,
        };
        assert!(s.record_failure(&passive));
        assert!(!s.is_available());
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.is_available());
    }

    #[test]
    fn ring_walk_visits_each_server_once() {
        let servers: Vec<ServerState> = (1..=5)
            .map(|i| ServerState::new(&spec(&format!("127.0.0.1:{i}"))))
            .collect();
        let ring = Ring::new(servers.iter());
        let walk = ring.walk(b"some-key");
        assert_eq!(walk.len(), 5);
        assert_eq!(Some(walk[0]), ring.continuum.node(b"some-key"));
        let mut sorted = walk.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 5);
    }

    #[test]
    fn large_ring_walk_is_the_continuum_order_without_repeats() {
        let servers: Vec<ServerState> = (0..1000)
            .map(|i| {
                let mut sp = spec(&format!("10.1.{}.{}:80", i / 250, i % 250 + 1));
                sp.weight = i % 2 + 1;
                ServerState::new(&sp)
            })
            .collect();
        let ring = Ring::new(servers.iter());
        assert_eq!(ring.members, 1000);
        for k in 0..5 {
            let key = format!("key-{k}");
            let mut seen = std::collections::HashSet::new();
            let expected: Vec<SocketAddr> = ring
                .continuum
                .node_iter(key.as_bytes())
                .take(ring.points)
                .filter(|a| seen.insert(**a))
                .copied()
                .collect();
            assert_eq!(ring.walk(key.as_bytes()), expected);
            let first = ring.walk_members(key.as_bytes()).next().unwrap();
            assert_eq!(servers[first].addr, ring.member_addr(first));
            assert_eq!(
                Some(ring.member_addr(first)),
                ring.continuum.node(key.as_bytes())
            );
        }
    }

    #[test]
    fn empty_ring_walks_nowhere() {
        let ring = Ring::new(std::iter::empty());
        assert_eq!(ring.points, 0);
        assert!(ring.walk(b"x").is_empty());
    }
}
