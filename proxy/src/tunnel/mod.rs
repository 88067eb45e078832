//! WebSocket upgrades, end to end: admit the upgrade (rate and per-client
//! caps), pick a server, send it the upgrade request, relay its answer —
//! interim `1xx` included — and, on a real `101` to `websocket`, pump bytes
//! both ways until the tunnel ends.
//!
//! Why our own code and not Pingora's upgrade path: Pingora 0.9.1 tears a
//! tunnel down right after the 101 when the upstream's 101 is readable
//! before the request's empty body has been queued (pingora issue #946), its
//! downstream read timeout cuts idle tunnels at 60 s, and its 64 KiB buffers
//! make an idle tunnel cost ~70 KiB. Here the 101 is read by us, so the race
//! does not exist; idle time is ours to bound; and an idle tunnel holds no
//! buffer at all ([`pump`]).
//!
//! Rules kept here: an upgrade request may not carry a body (a client could
//! otherwise make the server wait for bytes that never come and have the
//! server blamed); bytes the client sent right behind its upgrade request
//! are forwarded after the `101`, not dropped; a `101` that does not say
//! `Upgrade: websocket` is a 502; a refused upgrade is relayed and the
//! connection closed, never parsed for a next request; a `503` (a backend
//! shutting down or cut off from Redis) is retried once on the next server
//! of the ring before the client sees it. The tunnel registers with its
//! server ([`control`]) so a drain, a maintenance order or a reload that
//! removes the server can end it cleanly with close frames ([`frames`]).

pub mod control;
pub mod frames;
pub mod pump;

use std::io::IoSlice;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::access_log::Entry;
use crate::admission::{ConnSlot, Verdict};
use crate::bufpool::Pending;
use crate::conn::ConnInfo;
use crate::forwarding::Forwarding;
use crate::h1::exchange::render_request_head;
use crate::h1::io::{write_all, IoFail, ReadBuf};
use crate::h1::request::{BodyFraming, RequestHead};
use crate::h1::respond::Local;
use crate::h1::response::{self, ResponseFraming, ResponseHead, MAX_RESPONSE_HEAD};
use crate::h1::upstream::{self, Connected};
use crate::process::Process;
use crate::routing::Selection;
use crate::runtime::{RouteRt, Runtime};
use crate::stream::{ClientStream, UpstreamStream};

use self::pump::{Counters, End, Signals};

/// An upgrade that succeeded: everything the pump needs, owned, so it runs
/// as its own small task once the HTTP connection task has ended.
pub struct Established {
    upstream: UpstreamStream,
    to_server: Option<Pending>,
    to_client: Option<Pending>,
    selection: Selection,
    idle: Duration,
    shutdown_window: Duration,
    _slot: Option<ConnSlot>,
    entry: Entry,
    started: std::time::Instant,
}

/// How an upgrade attempt ended.
pub enum Upgraded {
    /// The tunnel is ready to run.
    Tunnel(Box<Established>),
    /// The client was answered (refusal, error); close the connection.
    Answered,
}

/// Handle an upgrade request whose head is at the front of `cbuf`.
#[allow(clippy::too_many_arguments)]
pub async fn upgrade(
    process: &Process,
    rt: &Runtime,
    route: &RouteRt,
    info: &ConnInfo,
    client: &mut ClientStream,
    cbuf: &mut ReadBuf,
    head: &RequestHead,
    fwd: &Forwarding,
    key: Option<Vec<u8>>,
    mut entry: Entry,
) -> Upgraded {
    let started = std::time::Instant::now();
    let limits = &rt.limits.settings;
    let listener = rt.listener(info.listener);
    let write_timeout = limits.client_write_timeout;
    entry.upgrade();
    let refuse = |status: u16, headers: &'static [(&'static str, &'static str)]| Local {
        headers,
        hsts: listener.hsts(),
        ..Local::error(status)
    };

    if head.body != BodyFraming::None {
        let _ = refuse(400, &[]).send(client, write_timeout).await;
        process.log(entry.finish(400, 0, 0, started, Some("upgrade request with a body")));
        return Upgraded::Answered;
    }
    let slot = match process
        .admission
        .upgrade(rt, route, fwd.client_ip, info.client.ip())
    {
        Ok(slot) => slot,
        Err(Verdict::Limited(headers)) => {
            process
                .stats
                .listener(info.listener)
                .refused_rate
                .fetch_add(1, Relaxed);
            let pairs = headers.pairs();
            let answer = Local {
                headers: &pairs,
                ..refuse(429, &[])
            };
            let _ = answer.send(client, write_timeout).await;
            process.log(entry.finish(429, 0, 0, started, Some("upgrade limited")));
            return Upgraded::Answered;
        }
        Err(Verdict::Allowed) => unreachable!("an allowed upgrade carries its slot"),
    };

    let pool = &route.pool;
    let settings = &pool.settings;
    let mut request = Vec::with_capacity(512);
    render_request_head(cbuf.data(), head, fwd, &mut request);
    request.truncate(request.len() - 2);
    request.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    cbuf.consume(head.len);

    let mut retried_503 = false;
    let mut tried_after_503: Option<std::net::SocketAddr> = None;
    loop {
        let opened = upstream::open(pool, key.as_deref(), false, tried_after_503).await;
        let mut up = match opened {
            Ok(up) => up,
            Err(e) => {
                let status = e.status();
                let _ = refuse(status, &[]).send(client, write_timeout).await;
                process.log(entry.finish(status, 0, 0, started, Some(&e.to_string())));
                return Upgraded::Answered;
            }
        };
        let server = up.selection.server.clone();
        entry.server(server.addr);
        let answer = handshake(&mut up, &request, client, settings, write_timeout).await;
        let (resp, mut ubuf) = match answer {
            Ok(r) => r,
            Err(Handshake::Server(status, why)) => {
                tracing::warn!(upstream = pool.name(), server = %server.addr, why, "upstream failed the upgrade");
                server.record_failure(&settings.passive);
                server.stats.record_status(status);
                let _ = refuse(status, &[]).send(client, write_timeout).await;
                process.log(entry.finish(status, 0, 0, started, Some(&why)));
                return Upgraded::Answered;
            }
            Err(Handshake::Client(why)) => {
                process.log(entry.finish(0, 0, 0, started, Some(&why)));
                return Upgraded::Answered;
            }
        };
        server.stats.record_status(resp.status);
        if resp.status == 503 && !retried_503 {
            // A rolling restart: the node is leaving (or cut off from Redis);
            // its ring neighbour takes the session.
            retried_503 = true;
            tried_after_503 = Some(server.addr);
            server.stats.retries.fetch_add(1, Relaxed);
            tracing::info!(upstream = pool.name(), server = %server.addr, "upgrade answered 503; trying the next server");
            continue;
        }
        if resp.status != 101 {
            let sent = relay_refusal(
                client,
                &mut up.stream,
                &mut ubuf,
                &resp,
                settings.read_timeout,
                write_timeout,
            )
            .await;
            process.log(entry.finish(resp.status, 0, sent, started, None));
            return Upgraded::Answered;
        }
        if !resp.websocket {
            server.record_failure(&settings.passive);
            let _ = refuse(502, &[]).send(client, write_timeout).await;
            process.log(entry.finish(502, 0, 0, started, Some("101 without Upgrade: websocket")));
            return Upgraded::Answered;
        }
        server.record_success();
        let head_len = resp.len;
        if let Err(e) = write_all(
            client,
            &mut [IoSlice::new(&ubuf.data()[..head_len])],
            write_timeout,
        )
        .await
        {
            process.log(entry.finish(
                101,
                0,
                0,
                started,
                Some(&format!("client left during the upgrade: {e}")),
            ));
            return Upgraded::Answered;
        }
        ubuf.consume(head_len);
        server.stats.bytes_out.fetch_add(head_len as u64, Relaxed);
        server
            .stats
            .bytes_in
            .fetch_add(request.len() as u64, Relaxed);
        let to_server = (!cbuf.is_empty()).then(|| Pending::copy_of(&cbuf.take_all()));
        let to_client = (!ubuf.is_empty()).then(|| Pending::copy_of(&ubuf.take_all()));
        let mut selection = up.selection;
        selection.guard.mark_websocket();
        return Upgraded::Tunnel(Box::new(Established {
            upstream: up.stream,
            to_server,
            to_client,
            selection,
            idle: settings.idle_timeout,
            shutdown_window: rt.shutdown_window(),
            _slot: slot,
            entry,
            started,
        }));
    }
}

impl Established {
    /// Pump the tunnel until it ends, then log it. Runs as its own task.
    pub async fn run(
        self,
        mut client: ClientStream,
        process: Arc<Process>,
        _guards: crate::conn::ConnGuards,
    ) {
        let Established {
            mut upstream,
            to_server,
            to_client,
            selection,
            idle,
            shutdown_window,
            _slot,
            entry,
            started,
        } = self;
        let server = selection.server.clone();
        let (order, _open) = server.tunnels.join();
        let signals = Signals {
            order,
            shutdown: process.shutdown_watch(),
            shutdown_window,
        };
        let counters = Counters {
            to_server: &server.stats.bytes_in,
            to_client: &server.stats.bytes_out,
        };
        let opened = std::time::Instant::now();
        let end = pump::run(
            &mut client,
            &mut upstream,
            to_server,
            to_client,
            idle,
            signals,
            counters,
        )
        .await;
        if end == End::Drained {
            process.stats.tunnels_drained.fetch_add(1, Relaxed);
        }
        drop(selection);
        process.log(entry.finish_tunnel(started, opened.elapsed(), end.as_str()));
    }
}

/// Why a handshake with the server failed.
enum Handshake {
    /// The server's fault: answer the client with this status.
    Server(u16, String),
    /// The client went away while interim answers were relayed.
    Client(String),
}

/// Send the upgrade request and read the server's final answer, relaying
/// interim `1xx` answers to the client.
async fn handshake(
    up: &mut Connected,
    request: &[u8],
    client: &mut ClientStream,
    settings: &crate::config::Upstream,
    write_timeout: Duration,
) -> Result<(ResponseHead, ReadBuf), Handshake> {
    write_all(
        &mut up.stream,
        &mut [IoSlice::new(request)],
        settings.write_timeout,
    )
    .await
    .map_err(|e| Handshake::Server(502, format!("writing the upgrade request: {e}")))?;
    let mut ubuf = ReadBuf::default();
    loop {
        let parsed = loop {
            match response::parse(ubuf.data(), false, Vec::new()) {
                Ok(r) => break r,
                Err(response::ResponseError::Partial) => {}
                Err(e) => return Err(Handshake::Server(502, e.to_string())),
            }
            match ubuf
                .fill_within(&mut up.stream, MAX_RESPONSE_HEAD, settings.read_timeout)
                .await
            {
                Ok(_) => {}
                Err(IoFail::Timeout) => {
                    return Err(Handshake::Server(
                        504,
                        "timed out waiting for the upgrade response".into(),
                    ))
                }
                Err(e) => {
                    return Err(Handshake::Server(
                        502,
                        format!("reading the upgrade response: {e}"),
                    ))
                }
            }
        };
        if (100..200).contains(&parsed.status) && parsed.status != 101 {
            let len = parsed.len;
            write_all(
                client,
                &mut [IoSlice::new(&ubuf.data()[..len])],
                write_timeout,
            )
            .await
            .map_err(|e| Handshake::Client(format!("writing an interim response: {e}")))?;
            ubuf.consume(len);
            continue;
        }
        return Ok((parsed, ubuf));
    }
}

/// Relay a refused upgrade's answer (an auth failure, a 404 …) and its body,
/// then close: returns the bytes sent.
async fn relay_refusal(
    client: &mut ClientStream,
    up: &mut UpstreamStream,
    ubuf: &mut ReadBuf,
    resp: &ResponseHead,
    read_timeout: Duration,
    write_timeout: Duration,
) -> u64 {
    let mut want = match resp.framing {
        ResponseFraming::None => 0,
        ResponseFraming::Length(n) => n,
        ResponseFraming::Chunked | ResponseFraming::UntilClose => u64::MAX,
    };
    let mut sent = 0u64;
    let first = (ubuf.data().len() as u64).min(resp.len as u64 + want) as usize;
    if write_all(
        client,
        &mut [IoSlice::new(&ubuf.data()[..first])],
        write_timeout,
    )
    .await
    .is_err()
    {
        return 0;
    }
    sent += first as u64;
    want = want.saturating_sub((first - resp.len) as u64);
    ubuf.consume(first);
    let mut chunked =
        (resp.framing == ResponseFraming::Chunked).then(crate::h1::chunked::Chunked::new);
    if let Some(c) = &mut chunked {
        // Bytes already relayed may hold part (or all) of the chunked body.
        let _ = c.consume(&[]);
    }
    while want > 0 && chunked.as_ref().is_none_or(|c| !c.is_done()) {
        if ubuf
            .fill_within(up, usize::MAX, read_timeout)
            .await
            .is_err()
        {
            break;
        }
        let n = (ubuf.data().len() as u64).min(want) as usize;
        if write_all(
            client,
            &mut [IoSlice::new(&ubuf.data()[..n])],
            write_timeout,
        )
        .await
        .is_err()
        {
            break;
        }
        if let Some(c) = &mut chunked {
            let _ = c.consume(&ubuf.data()[..n]);
        }
        ubuf.consume(n);
        sent += n as u64;
        want -= n as u64;
    }
    use tokio::io::AsyncWriteExt;
    let _ = client.shutdown().await;
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of_future<F: std::future::Future>(_: &F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An idle tunnel is its task state, its two sockets and a timer entry:
    /// the pump's state must stay small (the proxy's target is a few KiB
    /// per idle tunnel in all), and holds no buffer.
    #[tokio::test]
    async fn the_pump_state_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (b, _) = l.accept().await.unwrap();
        let mut c = ClientStream::Plain(a);
        let mut u = UpstreamStream::Plain(b);
        let (_order_tx, order) = tokio::sync::watch::channel(control::Order::Keep);
        let (_stop_tx, shutdown) = tokio::sync::watch::channel(false);
        let bytes = std::sync::atomic::AtomicU64::new(0);
        let fut = pump::run(
            &mut c,
            &mut u,
            None,
            None,
            Duration::from_secs(1),
            Signals {
                order,
                shutdown,
                shutdown_window: Duration::ZERO,
            },
            Counters {
                to_server: &bytes,
                to_client: &bytes,
            },
        );
        let size = size_of_future(&fut);
        assert!(size <= 1536, "the pump's state grew to {size} bytes");
        assert!(std::mem::size_of::<Established>() <= 512);
    }
}
