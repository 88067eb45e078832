//! The client connection under Pingora's HTTP/2 server, and the deadlines
//! Pingora's HTTP/2 session lacks (its body read is marked TODO upstream
//! and its read timeout does nothing for HTTP/2): enforced here on the
//! frames the client sends, which [`FrameTrack`] follows by their 9-byte
//! headers without buffering them.
//!
//! - The first request's head must arrive within `header_timeout` of the
//!   connection's start; any later header block (HEADERS and its
//!   CONTINUATIONs) must complete within `header_timeout` of its first byte.
//! - While a stream waits for request body bytes, DATA must keep arriving:
//!   a gap longer than `body_timeout` closes the connection. PINGs and
//!   other control frames are not progress. The clock is per connection:
//!   DATA on one stream counts for all its streams.
//! - Idle connections close after `keepalive_timeout` (Pingora's
//!   `h2_idle_timeout`, set in the parent module).
//!
//! Past a deadline, reads fail and Pingora closes the connection.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::task::AtomicWaker;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::conn::ConnInfo;
use crate::stream::ClientStream;

/// What the request path tells a connection's reader about its streams.
#[derive(Debug, Default)]
pub(super) struct ConnWatch {
    /// Requests seen on the connection.
    pub(super) requests: AtomicU64,
    /// Streams whose request body is still arriving.
    waiting_bodies: AtomicI64,
    /// The reader, parked: woken when a body starts waiting, so that it
    /// arms the body deadline.
    reader: AtomicWaker,
}

/// The watches of open HTTP/2 connections, by client address (the request
/// path finds its connection's watch from the address Pingora reports).
static WATCHES: LazyLock<Mutex<HashMap<SocketAddr, Arc<ConnWatch>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The watch of the connection from `addr`, if it is an HTTP/2 one.
pub(super) fn watch_of(addr: Option<SocketAddr>) -> Option<Arc<ConnWatch>> {
    let addr = addr?;
    WATCHES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&addr)
        .cloned()
}

/// Holds a stream in `waiting_bodies` until its body has arrived.
pub(super) struct BodyWait(Arc<ConnWatch>);

impl BodyWait {
    /// Count a stream as waiting for its body, and let the reader know.
    pub(super) fn start(watch: Arc<ConnWatch>) -> Self {
        watch.waiting_bodies.fetch_add(1, Relaxed);
        watch.reader.wake();
        Self(watch)
    }
}

impl Drop for BodyWait {
    fn drop(&mut self) {
        self.0.waiting_bodies.fetch_sub(1, Relaxed);
    }
}

/// Where the client's byte stream stands, frame by frame: enough to tell
/// when a header block is open and when DATA payload arrives.
#[derive(Debug)]
struct FrameTrack {
    /// Bytes of the 24-byte connection preface still to come.
    preface_left: usize,
    /// The frame header being read, and how much of it has arrived.
    header: [u8; 9],
    header_len: usize,
    /// Payload bytes of the current frame still to come, and its type.
    payload_left: u32,
    kind: u8,
    /// Whether the current frame ends its header block.
    ends_headers: bool,
}

/// What a chunk of client bytes contained.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    /// A header block began (and is still open unless `head_done`).
    head_began: bool,
    /// A header block completed.
    head_done: bool,
    /// DATA payload arrived.
    data: bool,
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

impl FrameTrack {
    fn new() -> Self {
        Self {
            preface_left: 24,
            header: [0; 9],
            header_len: 0,
            payload_left: 0,
            kind: 0,
            ends_headers: false,
        }
    }

    /// Follow `bytes`, the next ones the client sent.
    fn feed(&mut self, mut bytes: &[u8]) -> Seen {
        let mut seen = Seen::default();
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                bytes = &bytes[n..];
            } else if self.header_len < 9 {
                let n = (9 - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len == 9 {
                    let h = self.header;
                    self.payload_left = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                    self.kind = h[3];
                    let in_head = self.kind == HEADERS || self.kind == CONTINUATION;
                    self.ends_headers = in_head && h[4] & END_HEADERS != 0;
                    seen.head_began |= self.kind == HEADERS;
                    if self.payload_left == 0 {
                        self.end_frame(&mut seen);
                    }
                }
            } else {
                let n = (self.payload_left as usize).min(bytes.len());
                self.payload_left -= n as u32;
                bytes = &bytes[n..];
                seen.data |= self.kind == DATA && n > 0;
                if self.payload_left == 0 {
                    self.end_frame(&mut seen);
                }
            }
        }
        seen
    }

    fn end_frame(&mut self, seen: &mut Seen) {
        if self.ends_headers {
            seen.head_done = true;
        }
        self.header_len = 0;
    }
}

/// A client's TLS stream in the shape Pingora's HTTP/2 server takes, with
/// the client's address (after any PROXY header) and TLS facts attached,
/// and the deadlines of the module doc.
pub(super) struct H2Io {
    inner: ClientStream,
    socket: Arc<SocketDigest>,
    ssl: Arc<SslDigest>,
    id: UniqueIDType,
    established: std::time::SystemTime,
    client: SocketAddr,
    watch: Arc<ConnWatch>,
    frames: FrameTrack,
    first_request_by: Instant,
    header_timeout: Duration,
    body_timeout: Duration,
    /// When the open header block began, if one is open.
    head_since: Option<Instant>,
    /// The last DATA payload byte, or the last time no body was waited for.
    body_progress: Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Drop for H2Io {
    fn drop(&mut self) {
        WATCHES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.client);
    }
}

impl std::fmt::Debug for H2Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("H2Io")
    }
}

impl H2Io {
    /// Wrap an accepted client connection that negotiated `h2`.
    pub(super) fn new(
        inner: ClientStream,
        info: &ConnInfo,
        header_timeout: Duration,
        body_timeout: Duration,
    ) -> Self {
        use std::os::fd::AsRawFd;
        let fd = inner.tcp().as_raw_fd();
        let socket = SocketDigest::from_raw_fd(fd);
        let _ = socket
            .peer_addr
            .set(Some(pingora_core::protocols::l4::socket::SocketAddr::Inet(
                info.client,
            )));
        let (version, cipher) = match &inner {
            ClientStream::Tls(s) => {
                let conn = s.get_ref().1;
                (
                    conn.protocol_version()
                        .map_or("", |v| v.as_str().unwrap_or("")),
                    conn.negotiated_cipher_suite()
                        .and_then(|c| c.suite().as_str())
                        .unwrap_or(""),
                )
            }
            ClientStream::Plain(_) => ("", ""),
        };
        let watch = Arc::new(ConnWatch::default());
        WATCHES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.client, watch.clone());
        let first_request_by = info.accepted + header_timeout;
        Self {
            inner,
            socket: Arc::new(socket),
            ssl: Arc::new(SslDigest::new(cipher, version, None, None, Vec::new())),
            id: fd,
            established: std::time::SystemTime::now(),
            client: info.client,
            watch,
            frames: FrameTrack::new(),
            first_request_by,
            header_timeout,
            body_timeout,
            head_since: None,
            body_progress: Instant::now(),
            timer: Box::pin(tokio::time::sleep_until(first_request_by)),
        }
    }

    /// The instant reads must have made progress by, if any deadline applies.
    fn deadline(&mut self) -> Option<Instant> {
        let first = (self.watch.requests.load(Relaxed) == 0).then_some(self.first_request_by);
        let head = self.head_since.map(|t| t + self.header_timeout);
        let body = if self.watch.waiting_bodies.load(Relaxed) > 0 {
            Some(self.body_progress + self.body_timeout)
        } else {
            // Nothing waits: a body that starts waiting later gets its
            // whole timeout from then.
            self.body_progress = Instant::now();
            None
        };
        [first, head, body].into_iter().flatten().min()
    }

    fn saw(&mut self, bytes: &[u8]) {
        let seen = self.frames.feed(bytes);
        let now = Instant::now();
        if seen.head_began && self.head_since.is_none() {
            self.head_since = Some(now);
        }
        if seen.head_done {
            self.head_since = None;
        }
        if seen.data {
            self.body_progress = now;
        }
    }
}

impl AsyncRead for H2Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let fresh = &buf.filled()[before..];
                if !fresh.is_empty() {
                    self.saw(fresh);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.watch.reader.register(cx.waker());
                let Some(deadline) = self.deadline() else {
                    return Poll::Pending;
                };
                if self.timer.deadline() != deadline {
                    self.timer.as_mut().reset(deadline);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "client missed its HTTP/2 header or body deadline",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for H2Io {
    async fn shutdown(&mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.inner.shutdown().await;
    }
}

impl UniqueID for H2Io {
    fn id(&self) -> UniqueIDType {
        self.id
    }
}

impl Ssl for H2Io {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(self.ssl.clone())
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        Some(ALPN::H2)
    }
}

impl GetTimingDigest for H2Io {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        vec![Some(TimingDigest {
            established_ts: self.established,
            ..Default::default()
        })]
    }
}

impl GetProxyDigest for H2Io {
    fn get_proxy_digest(&self) -> Option<Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for H2Io {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.socket.clone())
    }
}

#[async_trait]
impl Peek for H2Io {}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: usize) -> Vec<u8> {
        let len = (payload as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
        f.resize(9 + payload, 0xab);
        f
    }

    fn after_preface() -> FrameTrack {
        let mut t = FrameTrack::new();
        assert_eq!(t.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Seen::default());
        t
    }

    #[test]
    fn a_whole_header_block_begins_and_ends() {
        let mut t = after_preface();
        let seen = t.feed(&frame(HEADERS, END_HEADERS, 20));
        assert!(seen.head_began && seen.head_done && !seen.data);
    }

    #[test]
    fn a_header_block_stays_open_until_its_last_continuation() {
        let mut t = after_preface();
        let seen = t.feed(&frame(HEADERS, 0, 10));
        assert!(seen.head_began && !seen.head_done);
        assert!(!t.feed(&frame(CONTINUATION, 0, 10)).head_done);
        assert!(t.feed(&frame(CONTINUATION, END_HEADERS, 10)).head_done);
    }

    #[test]
    fn a_header_frame_cut_short_is_still_open() {
        let mut t = after_preface();
        let f = frame(HEADERS, END_HEADERS, 30);
        let seen = t.feed(&f[..20]);
        assert!(seen.head_began && !seen.head_done);
        assert!(t.feed(&f[20..]).head_done);
    }

    #[test]
    fn data_payload_is_progress_and_pings_are_not() {
        let mut t = after_preface();
        assert!(!t.feed(&frame(0x6, 0, 8)).data, "PING");
        assert!(!t.feed(&frame(0x8, 0, 4)).data, "WINDOW_UPDATE");
        assert!(t.feed(&frame(DATA, 0, 100)).data);
        assert!(!t.feed(&frame(DATA, 1, 0)).data, "an empty DATA frame");
    }

    #[test]
    fn frames_split_byte_by_byte_are_followed() {
        let mut t = after_preface();
        let mut bytes = frame(0x4, 0, 6); // SETTINGS
        bytes.extend(frame(HEADERS, END_HEADERS, 5));
        bytes.extend(frame(DATA, 0, 3));
        let (mut began, mut done, mut data) = (0, 0, 0);
        for b in &bytes {
            let seen = t.feed(std::slice::from_ref(b));
            began += usize::from(seen.head_began);
            done += usize::from(seen.head_done);
            data += usize::from(seen.data);
        }
        assert_eq!((began, done, data), (1, 1, 3));
    }
}
