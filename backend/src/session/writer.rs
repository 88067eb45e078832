//! The writer half of a connection: the only code that writes to its
//! socket. It drains the outbox in batches (one flush per burst), sends
//! the heartbeat pings and closes the connection on a missed heartbeat,
//! and carries out the per-room [`Ordering`] machine's answers: frames to
//! send, and history fetches to fill gaps.
//!
//! Every close goes through here: a close asked for by anyone (kick,
//! slow consumer, shutdown, a reader verdict) is sent as a close frame; a
//! close the client began is answered with the reply tungstenite queued
//! when the reader saw it (RFC 6455 §5.5.1), so the client sees a clean
//! close either way.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::sync::mpsc;

use super::ordering::{Emit, Fetch, Numbered, Ordering, Overflow, Step};
use super::Activity;
use crate::history::StoredMessage;
use crate::hub::{Conn, Delivery, Out};
use crate::protocol;
use crate::Node;

/// How long a close frame may take to reach a client before the socket is dropped.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most outbox entries written between two flushes.
const WRITE_BATCH: usize = 64;
/// Waits between attempts to read missed messages from history while
/// Redis does not answer; after the last, the gap is reported lost.
const FETCH_RETRIES: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_millis(800),
    Duration::from_secs(2),
];

impl Numbered for Arc<Delivery> {
    fn epoch(&self) -> &str {
        &self.epoch
    }
    fn offset(&self) -> u64 {
        self.offset
    }
}

type Sink = SplitSink<WebSocket, Message>;

/// The socket failed or the connection is closing.
struct Stop;

/// The writer half.
pub(super) struct Writer {
    node: Arc<Node>,
    conn: Arc<Conn>,
    ordering: Ordering<Arc<Delivery>>,
    activity: Arc<Activity>,
}

impl Writer {
    /// A writer for `conn`, judging the client's liveness by `activity`.
    pub(super) fn new(node: Arc<Node>, conn: Arc<Conn>, activity: Arc<Activity>) -> Writer {
        Writer {
            ordering: Ordering::new(node.config.limits.outbound_queue),
            node,
            conn,
            activity,
        }
    }

    /// Write until the connection closes.
    pub(super) async fn run(mut self, mut sink: Sink, mut queue: mpsc::Receiver<Out>) {
        let interval = self.node.config.heartbeat_interval;
        let mut ping = tokio::time::interval(interval);
        ping.reset();
        loop {
            tokio::select! {
                biased;
                (code, reason) = self.conn.closer.closed() => {
                    let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
                    let close = async {
                        // Refused when the client closed first: then `close`
                        // flushes the reply tungstenite queued for it.
                        if sink.send(Message::Close(Some(frame))).await.is_err() {
                            let _ = sink.close().await;
                        }
                    };
                    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, close).await;
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
                    if self.activity.silent_for() > interval * 3 {
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
        let step = match out {
            Out::Frame(frame) => return self.text(sink, frame).await,
            Out::Live(delivery) => {
                let room = delivery.room.clone();
                match self.ordering.live(&room, delivery) {
                    Ok(step) => step,
                    Err(Overflow) => {
                        self.conn
                            .closer
                            .close(protocol::CLOSE_TRY_AGAIN, "outbound queue full");
                        return Err(Stop);
                    }
                }
            }
            Out::Joining(room) => {
                self.ordering.joining(&room);
                return Ok(());
            }
            Out::Joined {
                room,
                top,
                recovered,
                replay,
            } => self.ordering.joined(&room, top, recovered, replay),
            Out::JoinFailed(room) => self.ordering.join_failed(&room),
            Out::Left(room) => self.ordering.left(&room),
            Out::Mark(room) => {
                self.ordering.mark(&room);
                return Ok(());
            }
            Out::Check { room, top } => self.ordering.check(&room, top),
            Out::Close { code, reason } => {
                self.conn.closer.close(code, reason);
                return Err(Stop);
            }
        };
        self.carry_out(sink, step).await
    }

    /// Send what a step emits; do its fetch and carry out what follows.
    async fn carry_out(
        &mut self,
        sink: &mut Sink,
        mut step: Step<Arc<Delivery>>,
    ) -> Result<(), Stop> {
        loop {
            for emit in step.emits {
                self.emit(sink, emit).await?;
            }
            let Some(fetch) = step.fetch else {
                return Ok(());
            };
            // What is already written goes out before waiting on Redis.
            self.flush(sink).await?;
            let found = self.fetch(&fetch).await?;
            match &found {
                Some(messages) if !messages.is_empty() => self.node.metrics.gaps_filled.inc(),
                Some(_) => {}
                None => tracing::warn!(
                    room = %fetch.room,
                    epoch = %fetch.epoch,
                    upto = fetch.upto,
                    "live gap could not be filled from history"
                ),
            }
            step = self.ordering.fetched(&fetch, found);
        }
    }

    /// Read a fetch from history, retrying while Redis does not answer (a
    /// reconnect in progress) before calling the gap lost.
    async fn fetch(&self, f: &Fetch) -> Result<Option<Vec<StoredMessage>>, Stop> {
        let mut waits = FETCH_RETRIES.iter();
        loop {
            match self
                .node
                .broker
                .range(&f.room, &f.epoch, f.after, f.upto)
                .await
            {
                Ok(found) => return Ok(found),
                Err(e) => {
                    self.node.redis_error(&e);
                    let Some(wait) = waits.next() else {
                        return Ok(None);
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(*wait) => {}
                        _ = self.conn.closer.closed() => return Err(Stop),
                    }
                }
            }
        }
    }

    async fn emit(&self, sink: &mut Sink, emit: Emit<Arc<Delivery>>) -> Result<(), Stop> {
        match emit {
            Emit::Joined {
                room,
                position,
                recovered,
                reset,
            } => {
                let frame = if reset {
                    protocol::reset_frame(&room, &position)
                } else {
                    protocol::joined_frame(&room, &position, recovered)
                };
                self.text(sink, frame.into()).await
            }
            Emit::Stored {
                room,
                epoch,
                messages,
            } => {
                for m in messages {
                    let d = Delivery::new(room.clone(), epoch.clone(), m.offset, &m.body);
                    self.text(sink, d.frame).await?;
                }
                Ok(())
            }
            Emit::Live(d) => self.text(sink, d.frame.clone()).await,
            Emit::Left(room) => self.text(sink, protocol::left_frame(&room).into()).await,
        }
    }
}
