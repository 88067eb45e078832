//! One client connection, from the upgrade to the last frame.
//!
//! Two halves run side by side:
//!
//! - the **reader** takes client frames, checks the rate limit, and does
//!   what they ask (join, leave, publish …), talking to the store and the
//!   broker. Everything it wants sent goes into the connection's outbox.
//! - the **writer** drains the outbox into the socket. It owns the
//!   ordering rule: per room it knows the last offset delivered, skips what
//!   was already sent, fills gaps from history, and holds a room's live
//!   messages while a join of that room is reading its replay. So a client
//!   sees each room in offset order, each message once.
//!
//! The outbox is bounded; when fan-out finds it full, the connection is
//! closed with 1013 (see [`crate::hub`]). Any close — the client's, a
//! kick, a slow consumer, shutdown, a missed heartbeat — goes through the
//! connection's [`Closer`](crate::hub::Closer), and both halves stop.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::auth::Identity;
use crate::broker::{now_us, Control};
use crate::history::{self, Position, StoredMessage, Verdict};
use crate::hub::{Conn, Delivery, Out};
use crate::protocol::{self, ClientFrame, ErrorCode, ProtocolError, RoomKind};
use crate::store::{connected_presence_ttl, now_ms, SessionRecord, StoreError};
use crate::Node;

/// How long a close frame may take to reach a client before the socket is dropped.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most outbox entries written between two flushes.
const WRITE_BATCH: usize = 64;
/// How long to wait for the client's answer to our close frame.
const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Frames refused by the rate limit within [`STRIKE_WINDOW`] before the
/// connection is closed with 1008.
pub const MAX_STRIKES: u32 = 10;
/// The window in which rate-limit strikes add up.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);

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

/// Serve one upgraded connection until it closes.
pub async fn run(socket: WebSocket, node: Arc<Node>, request: ConnectRequest) {
    node.connection_started();
    let (sink, stream) = socket.split();
    let (outbox, queue) = mpsc::channel(node.config.limits.outbound_queue);
    let ConnectRequest {
        identity,
        record,
        resumed,
        previous_worker,
    } = request;
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
    let session = Session {
        node: node.clone(),
        conn: conn.clone(),
        identity,
        live_rooms: HashSet::new(),
        bucket: TokenBucket::new(
            node.config.limits.rate_per_sec,
            node.config.limits.rate_burst,
        ),
        strikes: Strikes::default(),
        closing: false,
        last_activity: Arc::new(AtomicU64::new(0)),
        started: Instant::now(),
    };
    let record = conn.record();
    session.persist(&record).await;
    let rooms: Vec<String> = record.rooms.iter().cloned().collect();
    let welcome = protocol::welcome_frame(
        &conn.sid,
        &node.config.worker_id,
        &conn.user,
        resumed,
        &rooms,
    );
    let _ = conn.outbox.send(Out::Frame(welcome.into())).await;

    let writer = Writer {
        node: node.clone(),
        conn: conn.clone(),
        rooms: HashMap::new(),
        last_activity: session.last_activity.clone(),
        started: session.started,
    };
    let writer = tokio::spawn(writer.run(sink, queue));
    let mut session = session;
    if !resumed {
        for room in [
            protocol::BROADCAST_ROOM.to_owned(),
            protocol::inbox(&conn.user),
        ] {
            if let Err(e) = session.join(room, None, None).await {
                session.reply_error(e).await;
            }
        }
    }
    session.read(stream).await;
    if !session.closing {
        // Otherwise the writer closes with the queued code once it gets there.
        conn.closer.close(protocol::CLOSE_NORMAL, "");
    }
    let _ = writer.await;
    session.finish().await;
    node.connection_ended();
}

/// The reader half and the connection's own state.
struct Session {
    node: Arc<Node>,
    conn: Arc<Conn>,
    identity: Identity,
    /// Rooms whose live messages this connection receives (hub members).
    live_rooms: HashSet<Arc<str>>,
    bucket: TokenBucket,
    strikes: Strikes,
    /// A close was queued behind the frames already in the outbox; further
    /// client frames are ignored.
    closing: bool,
    /// Milliseconds after `started` of the last frame from the client.
    last_activity: Arc<AtomicU64>,
    started: Instant,
}

impl Session {
    async fn read(&mut self, mut stream: SplitStream<WebSocket>) {
        loop {
            let msg = tokio::select! {
                biased;
                _ = self.conn.closer.closed() => {
                    // Our close frame is on its way; give the client a moment to answer.
                    let _ = tokio::time::timeout(CLOSE_REPLY_TIMEOUT, async {
                        while let Some(Ok(m)) = stream.next().await {
                            if matches!(m, Message::Close(_)) { break; }
                        }
                    }).await;
                    return;
                }
                msg = stream.next() => msg,
            };
            self.last_activity
                .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
            match msg {
                None | Some(Ok(Message::Close(_))) => return,
                Some(Err(e)) => {
                    if is_too_big(&e) {
                        self.close_after_queued(protocol::CLOSE_TOO_BIG, "message too big");
                        continue;
                    }
                    tracing::debug!(error = %e, "websocket read failed");
                    return;
                }
                Some(Ok(Message::Text(_) | Message::Binary(_))) if self.closing => {}
                Some(Ok(Message::Text(text))) => {
                    self.node.metrics.messages_in.inc();
                    if self.admit() {
                        self.handle(&text).await;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    self.node.metrics.messages_in.inc();
                    if self.admit() {
                        self.reply_error(ProtocolError::new(
                            ErrorCode::BinaryUnsupported,
                            "binary frames are not part of the protocol; send JSON text",
                        ))
                        .await;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            }
        }
    }

    /// The rate limit: true if the frame may be handled. Refused frames
    /// get `rate_limited`; too many refusals in a window close with 1008.
    fn admit(&mut self) -> bool {
        if self.bucket.take() {
            return true;
        }
        self.node.metrics.rate_limited.inc();
        if self.strikes.add() > MAX_STRIKES {
            self.close_after_queued(protocol::CLOSE_POLICY, "rate limit exceeded");
            return false;
        }
        let frame =
            protocol::error_frame(ErrorCode::RateLimited, "too many frames; slow down", None);
        let _ = self.conn.outbox.try_send(Out::Frame(frame.into()));
        false
    }

    /// Close once the frames already queued (the error frames that explain
    /// why) are written; if the queue is full, close now.
    fn close_after_queued(&mut self, code: u16, reason: &'static str) {
        self.closing = true;
        if self
            .conn
            .outbox
            .try_send(Out::Close { code, reason })
            .is_err()
        {
            self.conn.closer.close(code, reason);
        }
    }

    async fn handle(&mut self, text: &str) {
        let request = match protocol::parse(text) {
            Ok(r) => r,
            Err(e) => return self.reply_error(e).await,
        };
        let id = request.id;
        let outcome = match request.frame {
            ClientFrame::Join { room, since } => self.join(room, since, id).await,
            ClientFrame::Leave { room } => self.leave(room).await,
            ClientFrame::Publish { room, data } => self.publish(room, data, id).await,
            ClientFrame::Direct { to, data } => self.direct(to, data, id).await,
            ClientFrame::Broadcast { data } => self.broadcast(data, id).await,
            ClientFrame::Presence { room } => self.presence(room).await,
            ClientFrame::Ping => self.send(protocol::PONG_FRAME.to_owned()).await,
        };
        if let Err(e) = outcome {
            self.reply_error(e.with_id(id)).await;
        }
    }

    async fn send(&self, frame: String) -> Result<(), ProtocolError> {
        let _ = self.conn.outbox.send(Out::Frame(frame.into())).await;
        Ok(())
    }

    async fn reply_error(&self, e: ProtocolError) {
        let _ = self.conn.outbox.send(Out::Frame(e.frame().into())).await;
    }

    fn unavailable(&self, e: &dyn std::fmt::Display) -> ProtocolError {
        self.node.redis_error(e);
        ProtocolError::new(
            ErrorCode::Unavailable,
            "the message store is unreachable; nothing was done, retry later",
        )
    }

    async fn join(
        &mut self,
        room: String,
        since: Option<Position>,
        id: Option<&RawValue>,
    ) -> Result<(), ProtocolError> {
        match protocol::room_kind(&room)? {
            RoomKind::Inbox(owner) if owner != self.conn.user => {
                return Err(ProtocolError::new(
                    ErrorCode::Forbidden,
                    "only its user may join an inbox",
                ))
            }
            _ => {}
        }
        let _ = id;
        let room: Arc<str> = Arc::from(room);
        let _ = self.conn.outbox.send(Out::Joining(room.clone())).await;
        let newly = self.node.hub.add_member(&room, &self.conn);
        if newly {
            if let Err(e) = self.node.broker.subscribe(&room).await {
                self.node.hub.remove_member(&room, self.conn.id);
                let _ = self.conn.outbox.send(Out::JoinFailed(room)).await;
                return Err(self.unavailable(&e));
            }
        }
        let max = self.node.config.history.max_recover;
        let recovery = match self.node.broker.recover(&room, since.as_ref(), max).await {
            Ok(r) => r,
            Err(e) => {
                if newly {
                    self.node.hub.remove_member(&room, self.conn.id);
                    self.node.broker.unsubscribe(&room).await;
                }
                let _ = self.conn.outbox.send(Out::JoinFailed(room)).await;
                return Err(self.unavailable(&e));
            }
        };
        self.live_rooms.insert(room.clone());
        let recovered = since.is_some() && recovery.replay.is_some();
        if since.is_some() {
            let result = if recovered { "recovered" } else { "lost" };
            self.node
                .metrics
                .recoveries
                .with_label_values(&[result])
                .inc();
        }
        // Recorded before `joined` goes out: a client that saw it is in the
        // session's rooms and in the room's presence, even if this node dies next.
        let record = self.conn.update(|r| {
            r.rooms.insert(room.to_string());
        });
        self.persist_room(&record, &room).await;
        let _ = self
            .conn
            .outbox
            .send(Out::Joined {
                room: room.clone(),
                top: recovery.top,
                recovered,
                replay: recovery.replay.unwrap_or_default(),
            })
            .await;
        Ok(())
    }

    async fn leave(&mut self, room: String) -> Result<(), ProtocolError> {
        protocol::room_kind(&room)?;
        let room: Arc<str> = Arc::from(room);
        if self.live_rooms.remove(&room) && self.node.hub.remove_member(&room, self.conn.id) {
            self.node.broker.unsubscribe(&room).await;
        }
        let record = self.conn.update(|r| {
            r.rooms.remove(&*room);
        });
        let store = &self.node.store;
        let ttl = self.node.config.session_ttl;
        let (saved, gone) = tokio::join!(
            store.save(&record, ttl),
            store.remove_presence(&room, &self.conn.user, &self.conn.sid)
        );
        if let Err(e) = saved.and(gone) {
            self.node.redis_error(&e);
        }
        let _ = self.conn.outbox.send(Out::Left(room)).await;
        Ok(())
    }

    async fn publish(
        &self,
        room: String,
        data: &RawValue,
        id: Option<&RawValue>,
    ) -> Result<(), ProtocolError> {
        match protocol::room_kind(&room)? {
            RoomKind::Plain => self.store_and_ack(&room, data, id).await,
            RoomKind::Inbox(_) => Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "inboxes take `direct` frames, not `publish`",
            )),
            RoomKind::Broadcast => Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "the broadcast room takes `broadcast` frames, not `publish`",
            )),
        }
    }

    async fn direct(
        &self,
        to: String,
        data: &RawValue,
        id: Option<&RawValue>,
    ) -> Result<(), ProtocolError> {
        if !protocol::valid_user(&to) {
            return Err(ProtocolError::new(
                ErrorCode::BadRequest,
                "`to` must be a user id (1-64 characters of A-Z a-z 0-9 - _ . : ~ @ +)",
            ));
        }
        self.store_and_ack(&protocol::inbox(&to), data, id).await
    }

    async fn broadcast(&self, data: &RawValue, id: Option<&RawValue>) -> Result<(), ProtocolError> {
        if !self.identity.may_broadcast {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "broadcast needs a token with \"broadcast\": true",
            ));
        }
        self.store_and_ack(protocol::BROADCAST_ROOM, data, id).await
    }

    async fn store_and_ack(
        &self,
        room: &str,
        data: &RawValue,
        id: Option<&RawValue>,
    ) -> Result<(), ProtocolError> {
        let body = protocol::message_body(&self.conn.user, now_ms(), data);
        let position = self
            .node
            .broker
            .publish(room, &body, now_us())
            .await
            .map_err(|e| self.unavailable(&e))?;
        if let Some(id) = id {
            self.send(protocol::ack_frame(id.get(), room, &position))
                .await?;
        }
        Ok(())
    }

    async fn presence(&self, room: String) -> Result<(), ProtocolError> {
        protocol::room_kind(&room)?;
        let users = self
            .node
            .store
            .presence(&room)
            .await
            .map_err(|e| self.unavailable(&e))?;
        self.send(protocol::presence_frame(&room, &users)).await
    }

    /// Write the record (this worker as holder) and mark the user present
    /// in all its rooms. Failures only degrade: the next heartbeat retries.
    async fn persist(&self, record: &SessionRecord) {
        let node = &self.node;
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

    async fn persist_room(&self, record: &SessionRecord, room: &str) {
        let node = &self.node;
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

    /// The connection is gone: stop its deliveries, and leave its session
    /// in the store for a resume (unless another connection took it over).
    async fn finish(self) {
        let node = &self.node;
        node.hub.unregister(&self.conn);
        for room in &self.live_rooms {
            if node.hub.remove_member(room, self.conn.id) {
                node.broker.unsubscribe(room).await;
            }
        }
        node.metrics.connections.dec();
        let superseded = matches!(
            self.conn.closer.reason(),
            Some((protocol::CLOSE_SUPERSEDED, _))
        );
        if superseded && node.hub.holds(&self.conn.sid) {
            // Resumed on this node: the new connection owns the record.
            return;
        }
        let record = self.conn.record();
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
}

fn is_too_big(e: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(err) = source {
        if let Some(tungstenite::Error::Capacity(_)) = err.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// What the writer knows about one room of its connection.
enum RoomState {
    /// A join is reading history: live messages wait here. `before` is
    /// the position it had if it was already joined.
    Joining {
        held: Vec<Arc<Delivery>>,
        before: Option<Position>,
    },
    /// Delivering; the position of the last message sent.
    Active(Position),
}

/// The writer half.
struct Writer {
    node: Arc<Node>,
    conn: Arc<Conn>,
    rooms: HashMap<Arc<str>, RoomState>,
    last_activity: Arc<AtomicU64>,
    started: Instant,
}

type Sink = SplitSink<WebSocket, Message>;

/// The socket failed or the connection is closing.
struct Stop;

impl Writer {
    async fn run(mut self, mut sink: Sink, mut queue: mpsc::Receiver<Out>) {
        let interval = self.node.config.heartbeat_interval;
        let mut ping = tokio::time::interval(interval);
        ping.reset();
        loop {
            tokio::select! {
                biased;
                (code, reason) = self.conn.closer.closed() => {
                    let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
                    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
                    return;
                }
                out = queue.recv() => {
                    let Some(out) = out else { return };
                    // Write what is queued, then flush once: one syscall for a
                    // burst, and no waiting on Nagle for a lone frame.
                    let mut written = self.handle(&mut sink, out).await;
                    for _ in 1..WRITE_BATCH {
                        let Ok(out) = queue.try_recv() else { break };
                        if written.is_err() {
                            break;
                        }
                        written = self.handle(&mut sink, out).await;
                    }
                    if let Ok(()) = written {
                        written = self.flush(&mut sink).await;
                    }
                    // A failed write ends the connection; a requested close
                    // is sent by the first branch on the next turn.
                    if written.is_err() && !self.conn.closer.is_closing() {
                        self.conn.closer.close(protocol::CLOSE_NORMAL, "");
                        return;
                    }
                }
                _ = ping.tick() => {
                    let last = Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
                    if self.started.elapsed().saturating_sub(last) > interval * 3 {
                        self.conn.closer.close(protocol::CLOSE_HEARTBEAT_TIMEOUT, "no heartbeat from client");
                        continue;
                    }
                    let pinged = self.write(&mut sink, Message::Ping(Default::default())).await;
                    if pinged.is_err() || self.flush(&mut sink).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Queue one message for the socket (written out by [`Writer::flush`],
    /// or earlier when the write buffer fills), giving up if a close is
    /// asked for meanwhile: a slow client must not keep a close from happening.
    async fn write(&self, sink: &mut Sink, msg: Message) -> Result<(), Stop> {
        tokio::select! {
            sent = sink.feed(msg) => sent.map_err(|_| Stop),
            _ = self.conn.closer.closed() => Err(Stop),
        }
    }

    /// Push everything queued to the socket.
    async fn flush(&self, sink: &mut Sink) -> Result<(), Stop> {
        tokio::select! {
            flushed = sink.flush() => flushed.map_err(|_| Stop),
            _ = self.conn.closer.closed() => Err(Stop),
        }
    }

    async fn text(&self, sink: &mut Sink, frame: Utf8Bytes) -> Result<(), Stop> {
        self.write(sink, Message::Text(frame)).await?;
        self.node.metrics.messages_out.inc();
        Ok(())
    }

    async fn handle(&mut self, sink: &mut Sink, out: Out) -> Result<(), Stop> {
        match out {
            Out::Frame(frame) => self.text(sink, frame).await,
            Out::Live(delivery) => match self.rooms.get_mut(&delivery.room) {
                None => Ok(()),
                Some(RoomState::Joining { held, .. }) => {
                    if held.len() >= self.node.config.limits.outbound_queue {
                        self.conn
                            .closer
                            .close(protocol::CLOSE_TRY_AGAIN, "outbound queue full");
                        return Err(Stop);
                    }
                    held.push(delivery);
                    Ok(())
                }
                Some(RoomState::Active(_)) => self.deliver(sink, delivery).await,
            },
            Out::Joining(room) => {
                let before = match self.rooms.remove(&room) {
                    Some(RoomState::Active(p)) => Some(p),
                    Some(RoomState::Joining { before, .. }) => before,
                    None => None,
                };
                self.rooms.insert(
                    room,
                    RoomState::Joining {
                        held: Vec::new(),
                        before,
                    },
                );
                Ok(())
            }
            Out::Joined {
                room,
                top,
                recovered,
                replay,
            } => {
                let held = match self.rooms.remove(&room) {
                    Some(RoomState::Joining { held, .. }) => held,
                    _ => Vec::new(),
                };
                self.text(sink, protocol::joined_frame(&room, &top, recovered).into())
                    .await?;
                self.send_stored(sink, &room, &top.epoch, replay).await?;
                self.rooms.insert(room, RoomState::Active(top));
                for delivery in held {
                    self.deliver(sink, delivery).await?;
                }
                Ok(())
            }
            Out::JoinFailed(room) => {
                if let Some(RoomState::Joining {
                    held,
                    before: Some(before),
                }) = self.rooms.remove(&room)
                {
                    self.rooms.insert(room, RoomState::Active(before));
                    for delivery in held {
                        self.deliver(sink, delivery).await?;
                    }
                }
                Ok(())
            }
            Out::Close { code, reason } => {
                self.conn.closer.close(code, reason);
                Err(Stop)
            }
            Out::Left(room) => {
                self.rooms.remove(&room);
                self.text(sink, protocol::left_frame(&room).into()).await
            }
            Out::Check { room, top } => {
                let behind = match self.rooms.get(&room) {
                    Some(RoomState::Active(at)) => at.epoch != top.epoch || at.offset < top.offset,
                    _ => false,
                };
                if behind {
                    self.catch_up(sink, &room, &top.epoch, top.offset).await?;
                }
                Ok(())
            }
        }
    }

    /// A live message for an active room, by the ordering rule.
    async fn deliver(&mut self, sink: &mut Sink, d: Arc<Delivery>) -> Result<(), Stop> {
        let Some(RoomState::Active(at)) = self.rooms.get(&d.room) else {
            return Ok(());
        };
        match history::verdict(at, &d.epoch, d.offset) {
            Verdict::Skip => return Ok(()),
            Verdict::Deliver => {}
            Verdict::Fill { .. } | Verdict::Restart => {
                self.catch_up(sink, &d.room, &d.epoch, d.offset - 1).await?;
            }
        }
        self.text(sink, d.frame.clone()).await?;
        self.set_position(&d.room, &d.epoch, d.offset);
        Ok(())
    }

    /// Deliver everything up to `upto` of `epoch` from history; if that
    /// cannot be done whole, say so with `joined … recovered:false` and go on
    /// from `upto`. A new epoch is announced the same way.
    async fn catch_up(
        &mut self,
        sink: &mut Sink,
        room: &Arc<str>,
        epoch: &str,
        upto: u64,
    ) -> Result<(), Stop> {
        let Some(RoomState::Active(at)) = self.rooms.get(room) else {
            return Ok(());
        };
        let restart = at.epoch != epoch;
        let from = if restart { 0 } else { at.offset };
        let missed = if upto > from {
            // What is already written goes out before waiting on Redis.
            self.flush(sink).await?;
            match self.node.broker.range(room, epoch, from, upto).await {
                Ok(found) => found,
                Err(e) => {
                    self.node.redis_error(&e);
                    None
                }
            }
        } else {
            Some(Vec::new())
        };
        let announce = |offset| {
            protocol::joined_frame(
                room,
                &Position {
                    epoch: epoch.to_owned(),
                    offset,
                },
                false,
            )
        };
        match missed {
            Some(messages) => {
                if restart {
                    self.text(sink, announce(0).into()).await?;
                }
                if !messages.is_empty() {
                    self.node.metrics.gaps_filled.inc();
                }
                self.send_stored(sink, room, epoch, messages).await?;
            }
            None => {
                tracing::warn!(%room, epoch, upto, "live gap could not be filled from history");
                self.text(sink, announce(upto).into()).await?;
            }
        }
        self.set_position(room, epoch, upto);
        Ok(())
    }

    async fn send_stored(
        &self,
        sink: &mut Sink,
        room: &Arc<str>,
        epoch: &str,
        messages: Vec<StoredMessage>,
    ) -> Result<(), Stop> {
        let epoch: Arc<str> = Arc::from(epoch);
        for m in messages {
            let d = Delivery::new(room.clone(), epoch.clone(), m.offset, &m.body);
            self.text(sink, d.frame).await?;
        }
        Ok(())
    }

    fn set_position(&mut self, room: &Arc<str>, epoch: &str, offset: u64) {
        self.rooms.insert(
            room.clone(),
            RoomState::Active(Position {
                epoch: epoch.to_owned(),
                offset,
            }),
        );
    }
}

/// A token bucket: `rate` frames per second, bursts of `burst`.
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32) -> Self {
        TokenBucket {
            tokens: burst as f64,
            rate,
            burst: burst as f64,
            last: Instant::now(),
        }
    }

    /// Take one token if there is one.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Rate-limit refusals counted over a window.
#[derive(Default)]
struct Strikes {
    since: Option<Instant>,
    count: u32,
}

impl Strikes {
    /// Count one refusal; the count within the current window.
    fn add(&mut self) -> u32 {
        let now = Instant::now();
        match self.since {
            Some(start) if now.duration_since(start) < STRIKE_WINDOW => self.count += 1,
            _ => {
                self.since = Some(now);
                self.count = 1;
            }
        }
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let mut b = TokenBucket::new(1000.0, 5);
        assert!((0..5).all(|_| b.take()));
        assert!(!b.take());
        std::thread::sleep(Duration::from_millis(20));
        assert!(b.take(), "refilled at 1000/s");
    }

    #[test]
    fn strikes_add_up_within_the_window() {
        let mut s = Strikes::default();
        assert_eq!(s.add(), 1);
        assert_eq!(s.add(), 2);
        s.since = Some(Instant::now() - STRIKE_WINDOW);
        assert_eq!(s.add(), 1, "a new window starts");
    }
}
