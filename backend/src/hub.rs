//! The node's local registry: which connections are here, which rooms each
//! is in, and the fan-out of live messages to them.
//!
//! Fan-out never waits: a message is rendered once and offered to each
//! member's bounded outbox with `try_send`; a member whose outbox is full
//! is told to close with 1013 (it reads too slowly) instead of growing
//! memory. Ordering and de-duplication are the connection's job
//! ([`crate::session`]); the hub only keeps offsets in the order the broker
//! delivered them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, Notify};

use crate::broker::{age, Control, Events, LiveMessage};
use crate::history::{Position, StoredMessage};
use crate::metrics::Metrics;
use crate::protocol;
use crate::store::SessionRecord;

/// One live message, rendered once for every local member of its room.
#[derive(Debug)]
pub struct Delivery {
    /// The room.
    pub room: Arc<str>,
    /// Its epoch.
    pub epoch: Arc<str>,
    /// Its offset.
    pub offset: u64,
    /// The whole `message` frame.
    pub frame: Utf8Bytes,
}

impl Delivery {
    /// Render a stored or live message of `room`.
    pub fn new(room: Arc<str>, epoch: Arc<str>, offset: u64, body: &str) -> Delivery {
        let frame = protocol::message_frame(&room, &epoch, offset, body).into();
        Delivery {
            room,
            epoch,
            offset,
            frame,
        }
    }
}

/// What a connection's writer is asked to do, in order.
#[derive(Debug)]
pub enum Out {
    /// Send this frame as it is.
    Frame(Utf8Bytes),
    /// A live room message.
    Live(Arc<Delivery>),
    /// A join of this room began: hold its live messages until `Joined`.
    Joining(Arc<str>),
    /// The join is done: send `joined`, then the replay, then what was held.
    Joined {
        /// The room.
        room: Arc<str>,
        /// Its position when the replay was read.
        top: Position,
        /// The `recovered` flag to report.
        recovered: bool,
        /// The messages after the client's `since`.
        replay: Vec<StoredMessage>,
    },
    /// The join failed: drop what was held.
    JoinFailed(Arc<str>),
    /// The room was left: forget it and send `left`.
    Left(Arc<str>),
    /// Close the connection with this code once everything queued before
    /// it is written (the reader's own verdicts: 1008, 1009).
    Close {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: &'static str,
    },
    /// The room's top is about to be read for a [`Out::Check`]: note
    /// what was delivered so far.
    Mark(Arc<str>),
    /// Live messages may have been lost (the broker reconnected): make
    /// sure everything up to `top` was delivered.
    Check {
        /// The room.
        room: Arc<str>,
        /// Its position now.
        top: Position,
    },
}

/// A one-shot "close this connection with this code" signal. Both halves
/// of a connection (and anyone holding it) wait on it at once, so every
/// waiter is woken, not just one.
#[derive(Default)]
pub struct Closer {
    reason: OnceLock<(u16, &'static str)>,
    notify: Notify,
}

impl Closer {
    /// Ask for a close; the first request wins.
    pub fn close(&self, code: u16, reason: &'static str) {
        if self.reason.set((code, reason)).is_ok() {
            self.notify.notify_waiters();
        }
    }

    /// The close asked for, if any.
    pub fn reason(&self) -> Option<(u16, &'static str)> {
        self.reason.get().copied()
    }

    /// Whether a close was asked for.
    pub fn is_closing(&self) -> bool {
        self.reason.get().is_some()
    }

    /// Wait for a close request.
    pub async fn closed(&self) -> (u16, &'static str) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a close between the check
            // and the await still wakes us.
            notified.as_mut().enable();
            if let Some(r) = self.reason.get() {
                return *r;
            }
            notified.await;
        }
    }
}

/// One client connection as the rest of the node sees it.
pub struct Conn {
    /// Unique on this node.
    pub id: u64,
    /// Its session id.
    pub sid: String,
    /// Its user.
    pub user: String,
    /// The writer's queue.
    pub outbox: mpsc::Sender<Out>,
    /// How others ask it to close.
    pub closer: Closer,
    /// Its session record, refreshed into the store every heartbeat.
    pub record: Mutex<SessionRecord>,
}

impl Conn {
    /// A copy of the session record.
    pub fn record(&self) -> SessionRecord {
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Change the session record.
    pub fn update(&self, f: impl FnOnce(&mut SessionRecord)) -> SessionRecord {
        let mut r = self.record.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut r);
        r.clone()
    }
}

/// Local connections and room memberships of one node.
pub struct Hub {
    rooms: RwLock<HashMap<Arc<str>, Vec<Arc<Conn>>>>,
    sessions: Mutex<HashMap<String, Arc<Conn>>>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
    /// Signalled when the broker resubscribed (see [`Events::resubscribed`]).
    pub resubscribed: Notify,
}

impl Hub {
    /// An empty hub counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Hub> {
        Arc::new(Hub {
            rooms: RwLock::default(),
            sessions: Mutex::default(),
            next_id: AtomicU64::new(1),
            metrics,
            resubscribed: Notify::new(),
        })
    }

    /// A fresh connection id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Register a connection under its sid; returns the connection it
    /// replaces (the same session connected twice to this node), if any.
    pub fn register(&self, conn: Arc<Conn>) -> Option<Arc<Conn>> {
        self.lock_sessions().insert(conn.sid.clone(), conn)
    }

    /// Forget a connection (only if it is still the one registered).
    pub fn unregister(&self, conn: &Conn) {
        let mut sessions = self.lock_sessions();
        if sessions.get(&conn.sid).is_some_and(|c| c.id == conn.id) {
            sessions.remove(&conn.sid);
        }
    }

    /// Whether a connection of session `sid` is registered on this node.
    pub fn holds(&self, sid: &str) -> bool {
        self.lock_sessions().contains_key(sid)
    }

    /// Deliver `room`'s live messages to `conn` from now on. True if it was
    /// not a member yet.
    pub fn add_member(&self, room: &Arc<str>, conn: &Arc<Conn>) -> bool {
        let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
        let members = rooms.entry(room.clone()).or_default();
        if members.iter().any(|c| c.id == conn.id) {
            return false;
        }
        members.push(conn.clone());
        true
    }

    /// Stop delivering `room` to connection `id`. True if it was a member.
    pub fn remove_member(&self, room: &str, id: u64) -> bool {
        let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
        let Some(members) = rooms.get_mut(room) else {
            return false;
        };
        let before = members.len();
        members.retain(|c| c.id != id);
        let removed = members.len() != before;
        if members.is_empty() {
            rooms.remove(room);
        }
        removed
    }

    /// Rooms with at least one local member.
    pub fn rooms(&self) -> Vec<Arc<str>> {
        self.rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Queue `out` (made per member) for every local member of `room`.
    pub fn offer(&self, room: &str, out: impl Fn() -> Out) {
        let rooms = self.rooms.read().unwrap_or_else(|p| p.into_inner());
        for conn in rooms.get(room).into_iter().flatten() {
            self.offer_to(conn, out());
        }
    }

    fn offer_to(&self, conn: &Conn, out: Out) {
        if let Err(mpsc::error::TrySendError::Full(_)) = conn.outbox.try_send(out) {
            if !conn.closer.is_closing() {
                self.metrics.slow_consumers.inc();
            }
            conn.closer
                .close(protocol::CLOSE_TRY_AGAIN, "outbound queue full");
        }
    }

    /// Every connection, for refreshes and shutdown.
    pub fn connections(&self) -> Vec<Arc<Conn>> {
        self.lock_sessions().values().cloned().collect()
    }

    /// Connections on this node.
    pub fn local_connections(&self) -> usize {
        self.lock_sessions().len()
    }

    /// Ask every connection to close with `code`.
    pub fn close_all(&self, code: u16, reason: &'static str) {
        for conn in self.connections() {
            conn.closer.close(code, reason);
        }
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Conn>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Events for Hub {
    fn message(&self, message: LiveMessage) {
        self.metrics.observe_delivery(age(message.published_us));
        let delivery = Arc::new(Delivery::new(
            message.room.clone(),
            message.epoch,
            message.offset,
            &message.body,
        ));
        self.offer(&message.room, || Out::Live(delivery.clone()));
    }

    fn control(&self, control: Control) {
        match control {
            Control::Kick { sid } => {
                if let Some(conn) = self.lock_sessions().get(&sid) {
                    conn.closer
                        .close(protocol::CLOSE_SUPERSEDED, "session resumed elsewhere");
                }
            }
        }
    }

    fn resubscribed(&self) {
        self.resubscribed.notify_one();
    }
}
