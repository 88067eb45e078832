//! One client connection, from the upgrade to the last frame.
//!
//! - [`connect`]: the connection's session in the cluster — resolved
//!   before the upgrade, registered, kept written, released at the end.
//! - [`reader`]: client frames in, through the [`limits`], turned into
//!   joins, publishes … against the store and the broker; what the client
//!   should see goes into the connection's outbox.
//! - [`writer`]: the outbox out to the socket, heartbeats, and every close.
//!   Per room it runs the [`ordering`] machine, so a client sees each room
//!   in offset order, each message once, or is told plainly that it cannot.
//!
//! The outbox is bounded; when fan-out finds it full, the connection is
//! closed with 1013 (see [`crate::hub`]). Any close — the client's, a
//! kick, a slow consumer, shutdown, a missed heartbeat — goes through the
//! connection's [`Closer`](crate::hub::Closer), and both halves stop.

pub mod connect;
pub mod limits;
pub mod ordering;
mod reader;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocket;
use futures_util::StreamExt;
use tokio::sync::mpsc;

pub use connect::ConnectRequest;
pub use limits::{MAX_STRIKES, STRIKE_WINDOW};

use crate::hub::Out;
use crate::protocol;
use crate::Node;

/// When the client last sent anything: written by the reader, read by the
/// writer's heartbeat check.
pub(crate) struct Activity {
    started: Instant,
    /// Milliseconds after `started`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// The client sent something just now.
    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(ms, AtomicOrdering::Relaxed);
    }

    /// How long the client has been silent.
    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(AtomicOrdering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Serve one upgraded connection until it closes, holding its places in
/// the node's connection caps (`permit`) until then.
pub async fn run(
    socket: WebSocket,
    node: Arc<Node>,
    request: ConnectRequest,
    permit: crate::admission::Permit,
) {
    node.connection_started();
    let (sink, stream) = socket.split();
    let (outbox, queue) = mpsc::channel(node.config.limits.outbound_queue);
    let ConnectRequest {
        identity,
        record,
        resumed,
        previous_worker,
    } = request;
    let conn = connect::register(&node, record, previous_worker, outbox).await;
    let rooms: Vec<String> = conn.record().rooms.iter().cloned().collect();
    let welcome = protocol::welcome_frame(
        &conn.sid,
        &node.config.worker_id,
        &conn.user,
        resumed,
        &rooms,
    );
    let _ = conn.outbox.send(Out::Frame(welcome.into())).await;

    let activity = Arc::new(Activity::new());
    let writer = writer::Writer::new(node.clone(), conn.clone(), activity.clone());
    let writer = tokio::spawn(writer.run(sink, queue));
    let mut reader = reader::Reader::new(node.clone(), conn.clone(), identity, activity);
    if !resumed {
        reader.join_implicit_rooms().await;
    }
    reader.read(stream).await;
    if !reader.closing {
        // Otherwise the writer closes with the queued code once it gets there.
        conn.closer.close(protocol::CLOSE_NORMAL, "");
    }
    let _ = writer.await;
    connect::finish(&node, &conn, reader.live_rooms.drain()).await;
    drop(permit);
    node.connection_ended();
}
