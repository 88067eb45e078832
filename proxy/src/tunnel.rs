//! WebSocket upgrades, end to end: pick a server, send it the upgrade,
//! relay its answer, then pump bytes both ways until one side closes or the
//! tunnel has been idle for `idle_timeout`.
//!
//! Why our own code and not Pingora's upgrade path: Pingora 0.9.1 tears a
//! tunnel down right after the 101 when the upstream's 101 is readable
//! before the request's empty body has been queued (pingora issue #946),
//! its downstream read timeout cuts idle tunnels at 60 s, and its 64 KiB
//! body buffers make an idle tunnel cost ~70 KiB. Here the 101 is read by
//! us, so the race does not exist; idle time is ours to bound; and the
//! buffers are ours to size. Everything after the client's request header
//! lives in this module: the one place to change how tunnels are pumped.
//!
//! It never decides routing (it asks [`routing::select`]) and never keeps
//! state beyond one tunnel.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::BytesMut;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_proxy::Session;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::forwarding::{self, Forwarding};
use crate::routing::{self, Selection};
use crate::stats::ServerStats;
use crate::upstream::Pool;

/// Size of each direction's relay buffer. WebSocket frames are usually
/// small; 8 KiB keeps an idle tunnel cheap without slowing bulk frames much.
const RELAY_BUFFER: usize = 8 * 1024;

/// Largest upstream response head we accept, as nginx's default
/// `proxy_buffer_size` order of magnitude.
const MAX_RESPONSE_HEAD: usize = 32 * 1024;

/// Is this request a WebSocket upgrade (HTTP/1.1, `Upgrade: websocket`)?
pub fn is_websocket_upgrade(session: &Session) -> bool {
    session.is_upgrade_req()
        && session
            .req_header()
            .headers
            .get(http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// How a tunnel attempt ended, for the access log and for the caller's
/// stats. Errors before the 101 were already answered to the client.
#[derive(Debug)]
pub enum Outcome {
    /// The upgrade succeeded and the tunnel ran until it closed.
    Closed { server: SocketAddr, idle: bool },
    /// The upstream refused the upgrade; its response was relayed.
    Refused { server: SocketAddr, status: u16 },
    /// No server could be reached; the client got this status.
    Failed { status: u16 },
}

/// Serve one upgrade request. On return the downstream connection has been
/// answered and must not be reused.
pub async fn serve(
    session: &mut Session,
    pool: &Pool,
    key: Option<&str>,
    fwd: &Forwarding,
) -> Outcome {
    let settings = &pool.settings;
    let mut tried: Vec<SocketAddr> = Vec::new();
    let (mut upstream, selection) = loop {
        let Some(sel) = routing::select(pool, key.map(str::as_bytes), &tried) else {
            return fail(session, 502, "no upstream server available").await;
        };
        sel.server.stats.requests_total.fetch_add(1, Relaxed);
        match timeout(
            settings.connect_timeout,
            TcpStream::connect(sel.server.addr),
        )
        .await
        {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                break (stream, sel);
            }
            outcome => {
                tracing::warn!(server = %sel.server.addr, error = ?outcome.err(), "upstream connect failed");
                sel.server.stats.connect_errors.fetch_add(1, Relaxed);
                sel.server.record_failure(&settings.passive);
                tried.push(sel.server.addr);
                if tried.len() > settings.retries {
                    return fail(session, 502, "upstream connect failed").await;
                }
                sel.server.stats.retries.fetch_add(1, Relaxed);
            }
        }
    };
    let Selection { server, mut guard } = selection;
    let stats = server.stats.clone();

    let head = request_head(session, fwd);
    stats.bytes_in.fetch_add(head.len() as u64, Relaxed);
    let answer = async {
        timeout(settings.write_timeout, upstream.write_all(&head))
            .await
            .map_err(|_| "timed out writing the upgrade request")?
            .map_err(|_| "failed writing the upgrade request")?;
        timeout(settings.read_timeout, read_response_head(&mut upstream))
            .await
            .map_err(|_| "timed out waiting for the upgrade response")?
    }
    .await;
    let (status, content_length, buf, head_len) = match answer {
        Ok(parsed) => parsed,
        Err(why) => {
            tracing::warn!(server = %server.addr, why, "upstream failed the upgrade");
            server.record_failure(&settings.passive);
            stats.record_status(502);
            return fail(session, 502, why).await;
        }
    };
    stats.record_status(status);
    server.record_success();

    let Some(mut downstream) = take_downstream(session) else {
        return Outcome::Failed { status: 500 };
    };
    if status != 101 {
        relay_refusal(
            &mut downstream,
            &mut upstream,
            buf,
            head_len,
            content_length,
            settings.read_timeout,
            &stats,
        )
        .await;
        return Outcome::Refused {
            server: server.addr,
            status,
        };
    }
    guard.mark_websocket();
    stats.bytes_out.fetch_add(buf.len() as u64, Relaxed);
    if write_flush(&mut downstream, &buf).await.is_err() {
        return Outcome::Closed {
            server: server.addr,
            idle: false,
        };
    }
    let idle = pump(downstream, upstream, settings.idle_timeout, &stats).await;
    drop(guard);
    Outcome::Closed {
        server: server.addr,
        idle,
    }
}

/// Answer the client with a bare error status and close.
async fn fail(session: &mut Session, status: u16, why: &str) -> Outcome {
    tracing::debug!(status, why, "upgrade not proxied");
    session.set_keepalive(None);
    let _ = session.respond_error(status).await;
    Outcome::Failed { status }
}

/// The upgrade request as it goes upstream: the client's request line and
/// end-to-end headers, the upgrade pair, and the forwarding headers.
fn request_head(session: &Session, fwd: &Forwarding) -> Vec<u8> {
    let req = session.req_header();
    let mut out = Vec::with_capacity(512);
    let target = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let connection = req
        .headers
        .get(http::header::CONNECTION)
        .and_then(|v| v.to_str().ok());
    let replaced = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-real-ip",
        "x-request-id",
    ];
    for (name, value) in req.headers.iter() {
        let name = name.as_str();
        if forwarding::is_hop_by_hop(name, connection) || replaced.contains(&name) {
            continue;
        }
        push_header(&mut out, name, value.as_bytes());
    }
    push_header(&mut out, "Connection", b"Upgrade");
    push_header(&mut out, "Upgrade", b"websocket");
    for (name, value) in fwd.headers() {
        push_header(&mut out, name, value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Read until a full response head has arrived. Returns the status, the
/// body's Content-Length if any, everything read so far, and the head's length.
async fn read_response_head(
    upstream: &mut TcpStream,
) -> Result<(u16, Option<u64>, BytesMut, usize), &'static str> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let n = upstream
            .read_buf(&mut buf)
            .await
            .map_err(|_| "upstream reset the connection")?;
        if n == 0 {
            return Err("upstream closed before answering");
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = resp.code.ok_or("upstream response without status")?;
                let content_length = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
                return Ok((status, content_length, buf, len));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => continue,
            Ok(httparse::Status::Partial) => return Err("upstream response head too large"),
            Err(_) => return Err("upstream sent an invalid response head"),
        }
    }
}

/// Take the client's connection out of Pingora's HTTP session, leaving an
/// inert session behind (already at EOF, keep-alive off) so Pingora's own
/// finishing steps have nothing to do. Only HTTP/1 can upgrade.
fn take_downstream(session: &mut Session) -> Option<Stream> {
    let inert = ServerSession::new_http1(Box::new(tokio::io::duplex(1).0));
    match std::mem::replace(&mut *session.downstream_session, inert) {
        ServerSession::H1(h1) => {
            session.set_keepalive(None);
            Some(h1.into_inner())
        }
        other => {
            *session.downstream_session = other;
            None
        }
    }
}

/// Relay a non-101 answer (an auth failure, a 404 …) to the client, then
/// close: a refused upgrade ends the client connection, as with nginx.
async fn relay_refusal(
    downstream: &mut Stream,
    upstream: &mut TcpStream,
    buf: BytesMut,
    head_len: usize,
    content_length: Option<u64>,
    read_timeout: Duration,
    stats: &ServerStats,
) {
    let mut sent = buf.len() as u64;
    if write_flush(downstream, &buf).await.is_err() {
        return;
    }
    let mut remaining = content_length.map(|cl| cl.saturating_sub((buf.len() - head_len) as u64));
    let mut chunk = vec![0u8; RELAY_BUFFER];
    while remaining != Some(0) {
        let want = remaining.map_or(chunk.len(), |r| r.min(chunk.len() as u64) as usize);
        let n = match timeout(read_timeout, upstream.read(&mut chunk[..want])).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        if write_flush(downstream, &chunk[..n]).await.is_err() {
            break;
        }
        sent += n as u64;
        remaining = remaining.map(|r| r - n as u64);
    }
    stats.bytes_out.fetch_add(sent, Relaxed);
    downstream.shutdown().await.ok();
}

async fn write_flush(w: &mut (impl AsyncWrite + Unpin), data: &[u8]) -> std::io::Result<()> {
    w.write_all(data).await?;
    w.flush().await
}

/// Copy bytes both ways until both directions have finished or nothing
/// moved for `idle`. Returns whether the idle limit ended it. Each
/// direction runs its own loop (a read is never abandoned between its read
/// and its write, so no byte is lost), and a half-close is passed on.
async fn pump(
    downstream: Stream,
    upstream: TcpStream,
    idle: Duration,
    stats: &ServerStats,
) -> bool {
    let (mut down_rd, mut down_wr) = tokio::io::split(downstream);
    let (mut up_rd, mut up_wr) = upstream.into_split();
    let start = Instant::now();
    let last_activity = AtomicU64::new(0);
    let both = async {
        tokio::join!(
            relay(
                &mut down_rd,
                &mut up_wr,
                &stats.bytes_in,
                start,
                &last_activity
            ),
            relay(
                &mut up_rd,
                &mut down_wr,
                &stats.bytes_out,
                start,
                &last_activity
            ),
        )
    };
    let watchdog = async {
        loop {
            let last = start + Duration::from_millis(last_activity.load(Relaxed));
            if last.elapsed() >= idle {
                return;
            }
            tokio::time::sleep_until(last + idle).await;
        }
    };
    tokio::select! {
        _ = both => false,
        _ = watchdog => true,
    }
}

/// One direction of a tunnel: read, write, flush, until `from` ends; then
/// pass the half-close to `to`. Counts bytes into `counter` and stamps
/// `last_activity` (ms since `start`) on every move.
async fn relay(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    counter: &AtomicU64,
    start: Instant,
    last_activity: &AtomicU64,
) {
    let mut buf = vec![0u8; RELAY_BUFFER];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        if write_flush(to, &buf[..n]).await.is_err() {
            break;
        }
        counter.fetch_add(n as u64, Relaxed);
        last_activity.store(start.elapsed().as_millis() as u64, Relaxed);
    }
    let _ = to.shutdown().await;
}
