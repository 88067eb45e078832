//! The per-server registry of open tunnels: how many there are, and the one
//! order they all follow — keep running, close at a deadline (drain, or the
//! server was removed by a reload), or close now (maintenance).
//!
//! One `watch` channel per server is the whole registry: a tunnel subscribes
//! when it opens (a few bytes) and wakes only when the order changes, so
//! draining a server with thousands of tunnels is one store, not a walk over
//! a list. An order can be taken back (`ready`, or a reload that brings the
//! server back) before its deadline, and the tunnels simply keep running.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// What every tunnel to one server is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Keep running.
    Keep,
    /// End with close frames at this instant.
    CloseAt(Instant),
    /// End with close frames now.
    CloseNow,
}

/// The tunnels of one server.
#[derive(Debug)]
pub struct TunnelRegistry {
    order: watch::Sender<Order>,
    open: AtomicI64,
}

impl Default for TunnelRegistry {
    fn default() -> Self {
        Self {
            order: watch::Sender::new(Order::Keep),
            open: AtomicI64::new(0),
        }
    }
}

impl TunnelRegistry {
    /// Register a new tunnel; it follows the returned receiver until the
    /// returned guard drops.
    pub fn join(&self) -> (watch::Receiver<Order>, OpenTunnel<'_>) {
        self.open.fetch_add(1, Relaxed);
        (self.order.subscribe(), OpenTunnel(self))
    }

    /// Tunnels open right now.
    pub fn open(&self) -> i64 {
        self.open.load(Relaxed).max(0)
    }

    /// The current order.
    pub fn order(&self) -> Order {
        *self.order.borrow()
    }

    /// End every tunnel `after` from now, unless an earlier end is already set.
    pub fn drain(&self, after: Duration) {
        let at = Instant::now() + after;
        self.order.send_modify(|o| {
            *o = match *o {
                Order::CloseNow => Order::CloseNow,
                Order::CloseAt(t) if t <= at => Order::CloseAt(t),
                _ => Order::CloseAt(at),
            }
        });
    }

    /// End every tunnel now.
    pub fn close_now(&self) {
        self.order.send_replace(Order::CloseNow);
    }

    /// Take back a drain or close order: tunnels still open keep running.
    pub fn keep(&self) {
        self.order.send_if_modified(|o| {
            let changed = *o != Order::Keep;
            *o = Order::Keep;
            changed
        });
    }
}

/// Counts one open tunnel in its registry while alive.
#[derive(Debug)]
pub struct OpenTunnel<'a>(&'a TunnelRegistry);

impl Drop for OpenTunnel<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn orders_reach_subscribers_and_can_be_taken_back() {
        let reg = TunnelRegistry::default();
        let (mut rx, guard) = reg.join();
        assert_eq!(reg.open(), 1);
        reg.drain(Duration::from_secs(60));
        rx.changed().await.unwrap();
        let first = *rx.borrow_and_update();
        assert!(matches!(first, Order::CloseAt(_)));
        // A later drain does not postpone an earlier deadline.
        reg.drain(Duration::from_secs(600));
        assert_eq!(reg.order(), first);
        reg.keep();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), Order::Keep);
        reg.close_now();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), Order::CloseNow);
        drop(guard);
        assert_eq!(reg.open(), 0);
    }
}
