//! Upstream pools and the state of each server in them.
//!
//! Owns what the proxy knows about a server between requests: its admin
//! state (up, draining, maint), what active health checks last concluded,
//! whether passive ejection has taken it out, and its counters. Routing asks
//! one question of it, [`ServerState::is_available`]; health checks and the
//! request path report into it. It never opens a connection itself.

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
        self.admin_state() == AdminState::Up
            && self.is_healthy()
            && !self.is_ejected(Instant::now())
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
        self.tracking().ejected_until.is_some_and(|t| now < t)
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
        if t.fails >= passive.max_fails && t.ejected_until.is_none_or(|u| u <= now) {
            t.ejected_until = Some(now + passive.fail_timeout);
            t.fails = 0;
            t.window_start = now;
            t.last_change = now;
            return true;
        }
        false
    }

    /// Passive health: a completed exchange clears the failure count.
    pub fn record_success(&self) {
        let mut t = self.tracking();
        if t.fails != 0 {
            t.fails = 0;
        }
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
}

/// A Ketama continuum plus what is needed to walk it safely.
pub struct Ring {
    /// The continuum itself (nginx-compatible points).
    pub continuum: Continuum,
    /// Number of points, to bound a walk (the continuum's iterator cycles).
    pub points: usize,
    /// Distinct servers on the ring.
    pub members: usize,
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
        let mut weight = 0usize;
        let buckets: Vec<Bucket> = servers
            .map(|s| {
                weight += s.weight as usize;
                Bucket::new(s.addr, s.weight)
            })
            .collect();
        Self {
            continuum: Continuum::new(&buckets),
            points: weight * 160,
            members: buckets.len(),
        }
    }

    /// The servers in ring order starting at `key`'s point, each once.
    pub fn walk(&self, key: &[u8]) -> Vec<SocketAddr> {
        let mut seen: Vec<SocketAddr> = Vec::with_capacity(self.members);
        if self.members == 0 {
            return seen;
        }
        for addr in self.continuum.node_iter(key).take(self.points + 1) {
            if !seen.contains(addr) {
                seen.push(*addr);
                if seen.len() == self.members {
                    break;
                }
            }
        }
        seen
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
        let rr = Mutex::new(vec![0; servers.len()]);
        Self {
            settings,
            servers,
            primary_ring,
            backup_ring,
            rr,
            tls,
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
}
