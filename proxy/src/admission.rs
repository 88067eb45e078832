//! Who gets in: the process-wide connection cap, the per-address connection
//! and WebSocket caps, and the per-client request and upgrade rates — asked
//! by the accept loop, the connection handler, the HTTP/1 and HTTP/2 paths
//! and the tunnel, always through this one module, so every path enforces
//! the same limits the same way.
//!
//! Caps count the connection's peer (or the source its trusted PROXY header
//! gave): they are decided when the connection arrives, before any request
//! head. Rates count the client identity (`X-Forwarded-For` believed from
//! trusted proxies only, see `forwarding`). The decisions themselves live in
//! [`crate::limits`] (fixed-memory sketches, injectable clock); this module
//! applies them and holds the slots.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::Limits;
use crate::limits::{self, AtCap, ConcurrencyGuard, ConcurrencyLimiter, Decision, SketchShape};
use crate::runtime::{Limiter, RouteRt, Runtime};

/// A request or upgrade over its rate: the 429's headers.
#[derive(Debug, Clone)]
pub struct RateHeaders {
    pairs: Vec<(&'static str, String)>,
}

impl RateHeaders {
    /// As `(name, value)` pairs for a response head.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        self.pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// The answer to "may this request go on?".
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Yes.
    Allowed,
    /// No: answer 429 with these headers.
    Limited(RateHeaders),
}

/// Holds one place under a cap until dropped.
#[derive(Debug)]
pub enum ConnSlot {
    /// A place under `[server] max_connections`.
    Process(Arc<Places>),
    /// A place under a per-address cap.
    PerAddress(ConcurrencyGuard),
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let ConnSlot::Process(places) = self {
            places.open.fetch_sub(1, Relaxed);
            places.freed.notify_one();
        }
    }
}

/// The places under `[server] max_connections`, and the reclaiming of idle
/// ones. At the cap, as nginx does when its `worker_connections` run out, a
/// new connection asks an idle client connection (one waiting for its
/// first request byte or its next keep-alive request) to close and takes
/// its place; only when none gives way within [`RECLAIM_WAIT`] is the new
/// connection refused. A flood of idle connections therefore cannot lock
/// out a real client, while connections that are mid-request keep theirs.
#[derive(Debug, Default)]
pub struct Places {
    open: AtomicUsize,
    /// Reclaims asked for and not yet answered by an idle connection.
    asked: AtomicUsize,
    /// New connections waiting for a place.
    waiting: AtomicUsize,
    /// Wakes an idle connection to give its place up.
    idle: Notify,
    /// Wakes a waiting new connection when a place is given back.
    freed: Notify,
}

/// How long a connection that arrives at the cap waits for an idle one to
/// give way before it is refused.
pub const RECLAIM_WAIT: Duration = Duration::from_millis(200);

/// How many connections may wait for a place at once; beyond, new ones are
/// refused at once, so a burst cannot hold descriptors over the cap.
pub const RECLAIM_WAITERS: usize = 64;

/// The process' admission state.
#[derive(Debug)]
pub struct Admission {
    places: Arc<Places>,
    max_connections: AtomicUsize,
    per_ip_connections: Arc<ConcurrencyLimiter>,
    per_ip_websockets: Arc<ConcurrencyLimiter>,
}

fn cap_of(limit: Option<u32>) -> u32 {
    limit.unwrap_or(u32::MAX)
}

impl Admission {
    /// Admission with a cap of `max_connections` client connections and
    /// the per-address caps of `limits`.
    pub fn new(max_connections: usize, limits: &Limits) -> Self {
        Self {
            places: Arc::default(),
            max_connections: AtomicUsize::new(max_connections),
            per_ip_connections: ConcurrencyLimiter::new(
                cap_of(limits.max_connections_per_ip),
                SketchShape::default(),
            ),
            per_ip_websockets: ConcurrencyLimiter::new(
                cap_of(limits.max_websockets_per_ip),
                SketchShape::default(),
            ),
        }
    }

    /// Apply the caps of a reloaded config; live connections keep their
    /// places and count against the new caps.
    pub fn reconfigure(&self, max_connections: Option<u32>, limits: &Limits) {
        if let Some(max) = max_connections {
            self.max_connections.store(max as usize, Relaxed);
        }
        self.per_ip_connections
            .set_cap(cap_of(limits.max_connections_per_ip));
        self.per_ip_websockets
            .set_cap(cap_of(limits.max_websockets_per_ip));
    }

    /// The process cap.
    pub fn max_connections(&self) -> usize {
        self.max_connections.load(Relaxed)
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.places.open.load(Relaxed)
    }

    /// A place for a newly accepted connection under `[server]
    /// max_connections`, or `None` at the cap (then see [`Self::reclaim`]).
    pub fn accept(&self) -> Option<ConnSlot> {
        let max = self.max_connections.load(Relaxed);
        self.places
            .open
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| ConnSlot::Process(self.places.clone()))
    }

    /// At the cap: ask one idle connection to give its place up and wait
    /// up to [`RECLAIM_WAIT`] for a place. `None`: refuse the connection.
    pub async fn reclaim(&self) -> Option<ConnSlot> {
        let places = &self.places;
        if places.waiting.fetch_add(1, Relaxed) >= RECLAIM_WAITERS {
            places.waiting.fetch_sub(1, Relaxed);
            return None;
        }
        places.asked.fetch_add(1, Relaxed);
        places.idle.notify_one();
        let deadline = tokio::time::Instant::now() + RECLAIM_WAIT;
        let slot = loop {
            let freed = places.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.accept() {
                break Some(slot);
            }
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep_until(deadline) => break self.accept(),
            }
        };
        places.waiting.fetch_sub(1, Relaxed);
        if slot.is_none() {
            // Nobody gave way: take the request back, so that a connection
            // going idle later is not closed for nothing.
            let _ = places
                .asked
                .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        }
        slot
    }

    /// Resolves when a new connection may want an idle one's place; then
    /// [`Self::give_way`] says whether this one should close.
    pub async fn place_wanted(&self) {
        self.places.idle.notified().await
    }

    /// Whether an idle connection woken by [`Self::place_wanted`] should
    /// close now (one close per reclaim asked).
    pub fn give_way(&self) -> bool {
        self.places
            .asked
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// A place for a connection from `ip` under `max_connections_per_ip`
    /// (`None` when no cap is set), or the refusal when `ip` is at its cap.
    pub fn per_ip(&self, rt: &Runtime, ip: IpAddr) -> Result<Option<ConnSlot>, AtCap> {
        if rt.limits.settings.max_connections_per_ip.is_none() {
            return Ok(None);
        }
        self.per_ip_connections
            .try_acquire(&limits::client_key(ip))
            .map(|g| Some(ConnSlot::PerAddress(g)))
    }

    /// Whether a request from `client` may go on under the route's (or the
    /// global) request rate.
    pub fn request(&self, rt: &Runtime, route: &RouteRt, client: IpAddr) -> Verdict {
        let limiter = route.requests.as_ref().or(rt.limits.requests.as_ref());
        check(limiter, client)
    }

    /// Whether an upgrade from `client` (connected from `peer`) may go on,
    /// under the upgrade rate and the per-address WebSocket cap; the slot
    /// holds the WebSocket's place for the tunnel's life.
    pub fn upgrade(
        &self,
        rt: &Runtime,
        route: &RouteRt,
        client: IpAddr,
        peer: IpAddr,
    ) -> Result<Option<ConnSlot>, Verdict> {
        let limiter = route.upgrades.as_ref().or(rt.limits.upgrades.as_ref());
        if let Verdict::Limited(h) = check(limiter, client) {
            return Err(Verdict::Limited(h));
        }
        let Some(cap) = rt.limits.settings.max_websockets_per_ip else {
            return Ok(None);
        };
        match self
            .per_ip_websockets
            .try_acquire(&limits::client_key(peer))
        {
            Ok(g) => Ok(Some(ConnSlot::PerAddress(g))),
            Err(at) => Err(Verdict::Limited(RateHeaders {
                pairs: vec![
                    ("Retry-After", "1".to_owned()),
                    (
                        "X-Ringway-Limit",
                        format!("max_websockets_per_ip={cap}; held={}", at.held),
                    ),
                ],
            })),
        }
    }
}

fn check(limiter: Option<&Limiter>, client: IpAddr) -> Verdict {
    let Some(limiter) = limiter else {
        return Verdict::Allowed;
    };
    let decision = limiter
        .rate
        .check(&limits::client_key(client), limits::clock::now());
    match decision {
        Decision::Allowed { .. } => Verdict::Allowed,
        Decision::Limited { .. } => {
            let rendered = limiter.fields.render(&decision);
            let pairs = rendered
                .iter()
                .filter_map(|(name, value)| {
                    let name: &'static str = match name.as_str() {
                        "retry-after" => "Retry-After",
                        "ratelimit-policy" => "RateLimit-Policy",
                        "ratelimit" => "RateLimit",
                        _ => return None,
                    };
                    Some((name, value.to_str().ok()?.to_owned()))
                })
                .collect();
            Verdict::Limited(RateHeaders { pairs })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_cap_holds_and_frees() {
        let a = Admission::new(2, &Limits::default());
        let x = a.accept().unwrap();
        let y = a.accept().unwrap();
        assert!(a.accept().is_none());
        assert_eq!(a.open_connections(), 2);
        drop(x);
        let z = a.accept();
        assert!(z.is_some());
        drop((y, z));
        assert_eq!(a.open_connections(), 0);
    }

    /// An idle connection parked as `h1` parks one: it gives its place up
    /// when asked.
    async fn idle(a: Arc<Admission>, slot: ConnSlot) {
        loop {
            a.place_wanted().await;
            if a.give_way() {
                drop(slot);
                return;
            }
        }
    }

    #[tokio::test]
    async fn at_the_cap_an_idle_connection_gives_its_place_up() {
        let a = Arc::new(Admission::new(1, &Limits::default()));
        let held = a.accept().unwrap();
        let idler = tokio::spawn(idle(a.clone(), held));
        tokio::task::yield_now().await;
        assert!(a.accept().is_none());
        let slot = a.reclaim().await;
        assert!(slot.is_some(), "no place was given up");
        idler.await.unwrap();
        assert_eq!(a.open_connections(), 1);
    }

    #[test]
    fn an_idle_connection_on_another_thread_gives_way() {
        let a = Arc::new(Admission::new(1, &Limits::default()));
        let held = a.accept().unwrap();
        let a2 = a.clone();
        let t = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let h = tokio::spawn(idle(a2, held));
                h.await.unwrap();
            });
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let slot = rt.block_on(a.reclaim());
        assert!(slot.is_some(), "no place was given up");
        t.join().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn with_nobody_idle_a_reclaim_is_refused_and_taken_back() {
        let a = Admission::new(1, &Limits::default());
        let _busy = a.accept().unwrap();
        assert!(a.reclaim().await.is_none());
        // The request was taken back: a connection going idle later stays.
        assert!(!a.give_way());
    }
}
