//! A connection's session in the cluster, from before the upgrade to after
//! the last frame: resolving which session a client gets, taking it over
//! from the node that held it, keeping its record and presence written
//! while it lives, and releasing it when the connection ends.
//!
//! It talks to the store, the hub and the broker's control channel; it
//! never reads or writes the socket (that is [`super::reader`] and
//! [`super::writer`]).

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::auth::Identity;
use crate::broker::Control;
use crate::hub::Conn;
use crate::protocol;
use crate::store::{connected_presence_ttl, now_ms, SessionRecord, StoreError};
use crate::Node;

/// Who is connecting and which session they get, settled before the
/// upgrade (so that a store failure can still be answered with a status).
pub struct ConnectRequest {
    /// The authenticated user.
    pub identity: Identity,
    /// The session record to run with, this worker as its holder.
    pub record: SessionRecord,
    /// Whether `record` is an existing session being resumed.
    pub resumed: bool,
    /// The worker that held the session before, to be told to let go.
    pub previous_worker: Option<String>,
}

impl ConnectRequest {
    /// Find the session `sid` names, or make one. A sid that belongs to
    /// another user is not resumed: the client gets a fresh sid. Fails
    /// only when the store cannot be asked, so that a resume is never
    /// silently turned into a fresh session.
    pub async fn resolve(
        node: &Node,
        sid: String,
        identity: Identity,
    ) -> Result<ConnectRequest, StoreError> {
        let user = &identity.user;
        let worker = &node.config.worker_id;
        let fresh = |sid: String| SessionRecord {
            sid,
            user: user.clone(),
            worker: worker.clone(),
            created_ms: now_ms(),
            last_seen_ms: now_ms(),
            rooms: [protocol::BROADCAST_ROOM.to_owned(), protocol::inbox(user)]
                .into_iter()
                .collect(),
            metadata: identity.metadata.clone(),
        };
        let (record, resumed, previous_worker) = match node.store.load(&sid).await? {
            Some(mut record) if &record.user == user => {
                let previous = std::mem::replace(&mut record.worker, worker.clone());
                record.last_seen_ms = now_ms();
                if !identity.metadata.is_null() {
                    record.metadata = identity.metadata.clone();
                }
                (record, true, Some(previous).filter(|p| !p.is_empty()))
            }
            Some(_) => {
                tracing::info!(%sid, %user, "sid belongs to another user; new session");
                (fresh(uuid::Uuid::new_v4().to_string()), false, None)
            }
            None => (fresh(sid), false, None),
        };
        Ok(ConnectRequest {
            identity,
            record,
            resumed,
            previous_worker,
        })
    }
}

/// Make the connection known: registered in the hub (closing an older
/// connection of the same session here with 4001), the node that held the
/// session told to let go, the record and presence written.
pub async fn register(
    node: &Arc<Node>,
    record: SessionRecord,
    previous_worker: Option<String>,
    outbox: mpsc::Sender<crate::hub::Out>,
) -> Arc<Conn> {
    let conn = Arc::new(Conn {
        id: node.hub.next_id(),
        sid: record.sid.clone(),
        user: record.user.clone(),
        outbox,
        closer: Default::default(),
        record: Mutex::new(record),
    });
    if let Some(old) = node.hub.register(conn.clone()) {
        old.closer
            .close(protocol::CLOSE_SUPERSEDED, "session resumed elsewhere");
    }
    node.metrics.connections.inc();
    node.metrics.connections_total.inc();
    if let Some(worker) = previous_worker.filter(|w| w != &node.config.worker_id) {
        let kick = Control::Kick {
            sid: conn.sid.clone(),
        };
        if let Err(e) = node.broker.send_control(&worker, kick).await {
            node.redis_error(&e);
        }
    }
    persist(node, &conn.record()).await;
    conn
}

/// Write the record (this worker as holder) and mark the user present
/// in all its rooms. Failures only degrade: the next heartbeat retries.
pub async fn persist(node: &Node, record: &SessionRecord) {
    if let Err(e) = node.store.save(record, node.config.session_ttl).await {
        node.redis_error(&e);
        return;
    }
    let ttl = connected_presence_ttl(node.config.heartbeat_interval, node.config.grace_period);
    let marks = record.rooms.iter().map(|room| {
        node.store
            .set_presence(room, &record.user, &record.sid, ttl)
    });
    for outcome in futures_util::future::join_all(marks).await {
        if let Err(e) = outcome {
            node.redis_error(&e);
        }
    }
}

/// Write the record and mark the user present in `room` (just joined).
pub async fn persist_room(node: &Node, record: &SessionRecord, room: &str) {
    let ttl = connected_presence_ttl(node.config.heartbeat_interval, node.config.grace_period);
    let (saved, present) = tokio::join!(
        node.store.save(record, node.config.session_ttl),
        node.store
            .set_presence(room, &record.user, &record.sid, ttl)
    );
    if let Err(e) = saved.and(present) {
        node.redis_error(&e);
    }
}

/// The connection is gone: stop its deliveries in `live_rooms`, and leave
/// its session in the store for a resume (unless another connection took
/// it over).
pub async fn finish(node: &Node, conn: &Conn, live_rooms: impl IntoIterator<Item = Arc<str>>) {
    node.hub.unregister(conn);
    for room in live_rooms {
        if node.hub.remove_member(&room, conn.id) {
            node.broker.unsubscribe(&room).await;
        }
    }
    node.metrics.connections.dec();
    let superseded = matches!(conn.closer.reason(), Some((protocol::CLOSE_SUPERSEDED, _)));
    if superseded && node.hub.holds(&conn.sid) {
        // Resumed on this node: the new connection owns the record.
        return;
    }
    let record = conn.record();
    let store = &node.store;
    // Drops the sid from this worker's index; clears the holder only if
    // it is still this worker (not when resumed on another node).
    let release = store.release(&record.sid, &node.config.worker_id, node.config.session_ttl);
    let grace = node.config.grace_period;
    let (user, sid) = (&record.user, &record.sid);
    // The session lives on elsewhere when superseded: its presence too.
    let rooms = record.rooms.iter().filter(|_| !superseded);
    let presence = rooms.map(|room| async move {
        if grace.is_zero() {
            store.remove_presence(room, user, sid).await
        } else {
            store.set_presence(room, user, sid, grace).await
        }
    });
    let (released, marked) = tokio::join!(release, futures_util::future::join_all(presence));
    for outcome in std::iter::once(released).chain(marked) {
        if let Err(e) = outcome {
            node.redis_error(&e);
        }
    }
}
