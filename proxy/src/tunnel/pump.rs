//! The byte pump of an upgraded connection: bytes both ways until both sides
//! have closed, the tunnel has idled past its limit, or it is told to end.
//!
//! It owns no buffer while idle. Each direction waits on its source with
//! `poll_read`, borrows a buffer from the thread's pool only for a read that
//! returns bytes, and gives it back as soon as they are written on; only a
//! peer that is slow to accept bytes makes a buffer stay. An idle tunnel is
//! therefore its two sockets, its frame trackers and a timer entry.
//!
//! Ending a tunnel on purpose (idle, drain, maintenance, shutdown) is clean:
//! in each direction the pump lets the current frame finish, then writes a
//! close frame with code 1001 — masked toward the server, as a client's must
//! be — shuts its write side, and gives both peers a moment to answer before
//! the sockets close. Clients see a WebSocket close, never a 1006.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use super::control::Order;
use super::frames::{close_frame_to_client, close_frame_to_server, FrameTracker, GOING_AWAY};
use crate::bufpool::{Pending, PooledBuf, BUF_SIZE};

/// How long a peer may take to finish the frame it is in the middle of when
/// the tunnel is ending; after that the connection is cut.
const FINISH_FRAME: Duration = Duration::from_secs(5);

/// How long both peers get to answer our close frames (and close) before the
/// sockets are dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both peers closed, or one failed.
    Closed,
    /// Nothing moved for the idle limit.
    Idle,
    /// Its server was drained, removed or put in maintenance.
    Drained,
    /// The proxy is shutting down or handing over to a new process.
    Shutdown,
}

impl End {
    /// The name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Idle => "idle",
            End::Drained => "drained",
            End::Shutdown => "shutdown",
        }
    }
}

/// Where a tunnel's bytes are counted.
pub struct Counters<'a> {
    /// Client → server bytes.
    pub to_server: &'a AtomicU64,
    /// Server → client bytes.
    pub to_client: &'a AtomicU64,
}

/// What the pump is told from outside while it runs.
pub struct Signals {
    /// The server's order (see `control`).
    pub order: watch::Receiver<Order>,
    /// Flips to true when the process starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// On shutdown, tunnels end spread over this window (so clients do not
    /// all reconnect in the same instant).
    pub shutdown_window: Duration,
}

/// One direction of the tunnel.
struct Dir {
    /// Bytes read and not yet written on (holds a pooled buffer).
    pending: Option<Pending>,
    frames: FrameTracker,
    /// The source closed (or failed).
    read_done: bool,
    /// Our close frame has been queued (or framing was lost: none will be).
    close_queued: bool,
    /// The destination's write side was shut down.
    write_shut: bool,
    needs_flush: bool,
    /// Mask close frames (client → server direction).
    masked: bool,
}

impl Dir {
    fn new(first: Option<Pending>, masked: bool) -> Self {
        Self {
            pending: first.filter(|p| !p.is_empty()),
            frames: FrameTracker::default(),
            read_done: false,
            close_queued: false,
            write_shut: false,
            needs_flush: false,
            masked,
        }
    }

    fn close_frame(&self) -> Pending {
        if self.masked {
            Pending::copy_of(&close_frame_to_server(GOING_AWAY, rand::random()))
        } else {
            Pending::copy_of(&close_frame_to_client(GOING_AWAY))
        }
    }

    /// Move bytes from `from` to `to` until blocked. Ready when this
    /// direction has nothing more to do (its destination shut). `closing`:
    /// stop at the next frame boundary and write a close frame there.
    fn poll<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        closing: bool,
        counter: &AtomicU64,
        moved: &mut bool,
    ) -> Poll<()> {
        loop {
            if let Some(p) = &mut self.pending {
                match Pin::new(&mut *to).poll_write(cx, p.bytes()) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(n)) if n > 0 => {
                        p.consume(n);
                        counter.fetch_add(n as u64, Relaxed);
                        *moved = true;
                        if p.is_empty() {
                            self.pending = None;
                            self.needs_flush = true;
                        }
                        continue;
                    }
                    Poll::Ready(_) => {
                        // The destination is gone: nothing more can go this way.
                        self.pending = None;
                        self.read_done = true;
                        self.write_shut = true;
                        return Poll::Ready(());
                    }
                }
            }
            if self.needs_flush {
                match Pin::new(&mut *to).poll_flush(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(_) => self.needs_flush = false,
                }
            }
            let mut limit = BUF_SIZE;
            if closing && !self.close_queued && !self.read_done {
                match self.frames.until_boundary(BUF_SIZE) {
                    Some(0) => {
                        self.pending = Some(self.close_frame());
                        self.close_queued = true;
                        continue;
                    }
                    Some(n) => limit = n,
                    None => {
                        self.close_queued = true;
                        continue;
                    }
                }
            }
            if self.read_done || self.close_queued || self.frames.saw_close && closing {
                if !self.write_shut {
                    match Pin::new(&mut *to).poll_shutdown(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(_) => self.write_shut = true,
                    }
                }
                return Poll::Ready(());
            }
            let mut buf = PooledBuf::take();
            let mut rb = ReadBuf::new(&mut buf[..limit]);
            match Pin::new(&mut *from).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                    let n = rb.filled().len();
                    self.frames.feed(&buf[..n]);
                    self.pending = Some(Pending::new(buf, n));
                    *moved = true;
                }
                Poll::Ready(_) => self.read_done = true,
            }
        }
    }
}

/// Read and discard whatever a peer still sends (its close frame) until it
/// closes; Ready at EOF or error.
fn poll_discard<R: AsyncRead + Unpin>(cx: &mut Context<'_>, from: &mut R) -> Poll<()> {
    loop {
        let mut buf = PooledBuf::take();
        let mut rb = ReadBuf::new(&mut buf[..]);
        match Pin::new(&mut *from).poll_read(cx, &mut rb) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(())) if !rb.filled().is_empty() => continue,
            Poll::Ready(_) => return Poll::Ready(()),
        }
    }
}

/// Pump `client` ⇄ `upstream` until the tunnel ends. `to_server` and
/// `to_client` are bytes already read on each side that still have to go
/// across (sent with the upgrade request; sent right after the `101`).
#[allow(clippy::too_many_arguments)]
pub async fn run<C, U>(
    client: &mut C,
    upstream: &mut U,
    to_server: Option<Pending>,
    to_client: Option<Pending>,
    idle: Duration,
    mut signals: Signals,
    counters: Counters<'_>,
) -> End
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = Dir::new(to_server, true);
    let mut down = Dir::new(to_client, false);
    let mut last_move = Instant::now();
    let mut end: Option<End> = None;
    let mut end_at: Option<(Instant, End)> = order_deadline(*signals.order.borrow_and_update());
    if *signals.shutdown.borrow_and_update() {
        end_at = earliest(end_at, Some((Instant::now(), End::Shutdown)));
    }
    let mut hard_stop: Option<Instant> = None;
    let timer = tokio::time::sleep_until(last_move + idle);
    tokio::pin!(timer);

    // Running (and, once `end` is set, finishing frames and sending closes).
    loop {
        let closing = end.is_some();
        let wake_at = match (end, hard_stop) {
            (Some(_), Some(h)) => h,
            _ => {
                let idle_at = last_move + idle;
                end_at.map_or(idle_at, |(t, _)| t.min(idle_at))
            }
        };
        if timer.deadline() != wake_at {
            timer.as_mut().reset(wake_at);
        }
        let step = poll_fn(|cx| {
            let mut moved = false;
            let a = up.poll(
                cx,
                client,
                upstream,
                closing,
                counters.to_server,
                &mut moved,
            );
            let b = down.poll(
                cx,
                upstream,
                client,
                closing,
                counters.to_client,
                &mut moved,
            );
            if moved {
                last_move = Instant::now();
            }
            if a.is_ready() && b.is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        tokio::select! {
            _ = step => break,
            _ = &mut timer => {
                let now = Instant::now();
                if end.is_some() {
                    break; // a peer did not finish its frame in time
                }
                if let Some((t, why)) = end_at.filter(|(t, _)| *t <= now) {
                    let _ = t;
                    end = Some(why);
                } else if now >= last_move + idle {
                    end = Some(End::Idle);
                }
                if end.is_some() {
                    hard_stop = Some(now + FINISH_FRAME);
                }
            }
            changed = signals.order.changed(), if end.is_none() => {
                if changed.is_ok() {
                    end_at = order_deadline(*signals.order.borrow_and_update())
                        .or(end_at.filter(|(_, w)| *w == End::Shutdown));
                }
            }
            changed = signals.shutdown.changed(), if end.is_none() => {
                if changed.is_ok() && *signals.shutdown.borrow_and_update() {
                    let window = signals.shutdown_window.as_millis() as u64;
                    let spread = Duration::from_millis(if window > 0 { rand::random::<u64>() % window } else { 0 });
                    end_at = earliest(end_at, Some((Instant::now() + spread, End::Shutdown)));
                }
            }
        }
    }

    // Give both peers a moment to answer our close frames and hang up.
    if end.is_some() {
        let grace = tokio::time::sleep(CLOSE_GRACE);
        let drain = poll_fn(|cx| {
            let a = poll_discard(cx, client);
            let b = poll_discard(cx, upstream);
            if a.is_ready() && b.is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        tokio::select! {
            _ = drain => {}
            _ = grace => {}
        }
    }
    end.unwrap_or(End::Closed)
}

fn order_deadline(order: Order) -> Option<(Instant, End)> {
    match order {
        Order::Keep => None,
        Order::CloseAt(t) => Some((t, End::Drained)),
        Order::CloseNow => Some((Instant::now(), End::Drained)),
    }
}

fn earliest(a: Option<(Instant, End)>, b: Option<(Instant, End)>) -> Option<(Instant, End)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 < x.0 { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// An I/O error that only means the peer went away.
pub fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof
    )
}
