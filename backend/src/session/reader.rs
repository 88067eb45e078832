//! The reader half of a connection: client frames in, through the rate
//! limit, turned into what they ask — joins, leaves, publishes, presence —
//! against the store and the broker. Everything it wants the client to see
//! goes into the connection's outbox, in order, for the writer; it never
//! writes to the socket itself.
//!
//! What a frame may do is the token's say ([`crate::permissions`]): rooms
//! to join and publish into, one's own inbox only, no presence of `*`; and
//! the user's publish and direct rates ([`crate::admission`]). The token's
//! `exp` bounds the connection: it is closed with 4401 then, unless a
//! `refresh` frame brought a later one.
//!
//! A publish with an `id` is idempotent ([`crate::idempotency`]): the key
//! is the session and the `id`, so a retry after a lost ack or a timeout
//! is acked with the original position and stored once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use serde_json::value::RawValue;

use super::connect;
use super::limits::{Strikes, TokenBucket};
use super::Activity;
use crate::auth::Identity;
use crate::broker::{now_us, BrokerError};
use crate::history::Position;
use crate::hub::{Conn, Out};
use crate::idempotency::IdempotencyKey;
use crate::protocol::{self, ClientFrame, ErrorCode, ProtocolError, RoomKind};
use crate::store::now_ms;
use crate::Node;

/// How long to wait for the client's answer to our close frame.
const CLOSE_REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The reader half and the connection's own state.
pub(super) struct Reader {
    node: Arc<Node>,
    conn: Arc<Conn>,
    identity: Identity,
    /// Rooms whose live messages this connection receives (hub members).
    pub(super) live_rooms: HashSet<Arc<str>>,
    bucket: TokenBucket,
    strikes: Strikes,
    /// A close was queued behind the frames already in the outbox; further
    /// client frames are ignored.
    pub(super) closing: bool,
    /// When the client last sent anything, shared with the writer's
    /// heartbeat check.
    activity: Arc<Activity>,
}

impl Reader {
    /// A reader for `conn`, noting the client's signs of life in `activity`.
    pub(super) fn new(
        node: Arc<Node>,
        conn: Arc<Conn>,
        identity: Identity,
        activity: Arc<Activity>,
    ) -> Reader {
        let limits = node.config.limits;
        Reader {
            bucket: TokenBucket::new(limits.rate_per_sec, limits.rate_burst, Instant::now()),
            node,
            conn,
            identity,
            live_rooms: HashSet::new(),
            strikes: Strikes::default(),
            closing: false,
            activity,
        }
    }

    /// When the connection must close for its token's sake: `exp` plus the
    /// leeway; far away without a token (dev mode).
    fn expiry(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let Some(exp) = self.identity.expires else {
            return now + Duration::from_secs(100 * 365 * 24 * 3600);
        };
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let until = (Duration::from_secs(exp) + self.node.auth.leeway()).saturating_sub(unix_now);
        now + until
    }

    /// Join the rooms every fresh session is in: `*` and the user's inbox.
    pub(super) async fn join_implicit_rooms(&mut self) {
        for room in [
            protocol::BROADCAST_ROOM.to_owned(),
            protocol::inbox(&self.conn.user),
        ] {
            if let Err(e) = self.join(room, None, None).await {
                self.reply_error(e).await;
            }
        }
    }

    /// Handle client frames until the client closes, the socket fails, or
    /// a close is asked for (then wait briefly for the client's answer).
    /// A client's close frame is answered by the writer.
    pub(super) async fn read(&mut self, mut stream: SplitStream<WebSocket>) {
        let expiry = tokio::time::sleep_until(self.expiry());
        tokio::pin!(expiry);
        loop {
            let msg = tokio::select! {
                biased;
                () = &mut expiry, if !self.closing => {
                    self.conn.closer.close(protocol::CLOSE_TOKEN_EXPIRED, "token expired");
                    self.closing = true;
                    continue;
                }
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
            self.activity.touch();
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
                        let before = self.identity.expires;
                        self.handle(&text).await;
                        if self.identity.expires != before {
                            expiry.as_mut().reset(self.expiry());
                        }
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
        let now = Instant::now();
        if self.bucket.take(now) {
            return true;
        }
        self.node.metrics.rate_limited.inc();
        if Strikes::exceeded(self.strikes.add(now)) {
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
            ClientFrame::Refresh { token } => self.refresh(&token, id).await,
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

    pub(super) async fn reply_error(&self, e: ProtocolError) {
        let _ = self.conn.outbox.send(Out::Frame(e.frame().into())).await;
    }

    fn unavailable(&self, e: &dyn std::fmt::Display) -> ProtocolError {
        self.node.redis_error(e);
        ProtocolError::new(
            ErrorCode::Unavailable,
            "the message store is unreachable; nothing was done, retry later",
        )
    }

    /// A publish failed: say whether it certainly stored nothing, or may
    /// have (its answer never came), in which case only a retry with the
    /// same `id` is safe.
    fn publish_failed(&self, e: &BrokerError) -> ProtocolError {
        self.node.redis_error(e);
        if e.did_nothing() {
            ProtocolError::new(
                ErrorCode::Unavailable,
                "the message store is unreachable; nothing was stored, retry later",
            )
            .with_outcome(protocol::Outcome::NotStored)
        } else {
            ProtocolError::new(
                ErrorCode::Unavailable,
                "the message store did not answer in time; the message may or may not be stored: \
                 retry with the same `id` (a retry without one may store it twice)",
            )
            .with_outcome(protocol::Outcome::Unknown)
        }
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
            RoomKind::Plain if !self.identity.permissions.may_join(&room) => {
                return Err(ProtocolError::new(
                    ErrorCode::Forbidden,
                    "the token's `rooms.join` does not grant this room",
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
        connect::persist_room(&self.node, &record, &room).await;
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
            RoomKind::Plain if !self.identity.permissions.may_publish(&room) => {
                Err(ProtocolError::new(
                    ErrorCode::Forbidden,
                    "the token's `rooms.publish` does not grant this room",
                ))
            }
            RoomKind::Plain => {
                self.user_rate(
                    self.node.admission.allow_publish(&self.conn.user),
                    "publish",
                )?;
                self.store_and_ack(&room, data, id).await
            }
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
        self.user_rate(self.node.admission.allow_direct(&self.conn.user), "direct")?;
        self.store_and_ack(&protocol::inbox(&to), data, id).await
    }

    /// A user rate's verdict: over it, the frame is dropped (nothing stored).
    fn user_rate(&self, allowed: bool, what: &str) -> Result<(), ProtocolError> {
        if allowed {
            return Ok(());
        }
        self.node.metrics.rate_limited.inc();
        Err(ProtocolError::new(
            ErrorCode::RateLimited,
            format!("this user's {what} rate is exceeded; nothing was stored, slow down"),
        )
        .with_outcome(protocol::Outcome::NotStored))
    }

    /// A new token for this connection: same user, later `exp`; its grants
    /// replace the old ones for the frames that follow.
    async fn refresh(&mut self, token: &str, id: Option<&RawValue>) -> Result<(), ProtocolError> {
        if !self.node.auth.is_enabled() {
            let frame = protocol::refreshed_frame(None, id.map(RawValue::get));
            return self.send(frame).await;
        }
        let identity = self
            .node
            .auth
            .verify(token)
            .map_err(|e| ProtocolError::new(ErrorCode::Unauthorized, e.to_string()))?;
        if identity.user != self.conn.user {
            return Err(ProtocolError::new(
                ErrorCode::Unauthorized,
                "a refresh token must be for the connection's user",
            ));
        }
        let exp = identity.expires;
        self.identity = identity;
        self.send(protocol::refreshed_frame(exp, id.map(RawValue::get)))
            .await
    }

    async fn broadcast(&self, data: &RawValue, id: Option<&RawValue>) -> Result<(), ProtocolError> {
        if !self.identity.may_broadcast {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "broadcast needs a token with \"broadcast\": true",
            ));
        }
        self.user_rate(
            self.node.admission.allow_publish(&self.conn.user),
            "publish",
        )?;
        self.store_and_ack(protocol::BROADCAST_ROOM, data, id).await
    }

    async fn store_and_ack(
        &self,
        room: &str,
        data: &RawValue,
        id: Option<&RawValue>,
    ) -> Result<(), ProtocolError> {
        let body = protocol::message_body(&self.conn.user, now_ms(), data);
        let key = id.map(|id| IdempotencyKey::for_session(&self.conn.sid, id.get()));
        let published = self
            .node
            .broker
            .publish(room, &body, now_us(), key.as_ref())
            .await
            .map_err(|e| self.publish_failed(&e))?;
        if published.repeated {
            self.node.metrics.publishes_repeated.inc();
        }
        if let Some(id) = id {
            self.send(protocol::ack_frame(id.get(), room, &published.position))
                .await?;
        }
        Ok(())
    }

    async fn presence(&self, room: String) -> Result<(), ProtocolError> {
        let allowed = match protocol::room_kind(&room)? {
            RoomKind::Plain => self.identity.permissions.may_join(&room),
            RoomKind::Inbox(owner) => owner == self.conn.user,
            // Every user is in `*`: its presence is the whole user list.
            RoomKind::Broadcast => false,
        };
        if !allowed {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "presence is only for rooms the token may join and one's own inbox, never `*`",
            ));
        }
        let users = self
            .node
            .store
            .presence(&room)
            .await
            .map_err(|e| self.unavailable(&e))?;
        self.send(protocol::presence_frame(&room, &users)).await
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
