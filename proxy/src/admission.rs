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
    Process(Arc<AtomicUsize>),
    /// A place under a per-address cap.
    PerAddress(ConcurrencyGuard),
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let ConnSlot::Process(count) = self {
            count.fetch_sub(1, Relaxed);
        }
    }
}

/// The process' admission state.
#[derive(Debug)]
pub struct Admission {
    open: Arc<AtomicUsize>,
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
            open: Arc::new(AtomicUsize::new(0)),
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
        self.open.load(Relaxed)
    }

    /// A place for a newly accepted connection under `[server]
    /// max_connections`, or `None`: then the connection is closed at once.
    pub fn accept(&self) -> Option<ConnSlot> {
        let max = self.max_connections.load(Relaxed);
        self.open
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| ConnSlot::Process(self.open.clone()))
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
}
