//! The HTTP/1.1 path: a client connection's requests, one after another —
//! read a head within its deadline, decide (route, client identity, limits,
//! redirect), then forward it to a server or hand a WebSocket upgrade to
//! [`crate::tunnel`].
//!
//! This is Ringway's own request path rather than Pingora's `ProxyHttp`:
//! measured side by side, Pingora's request path cost about a third of the
//! proxy's throughput (docs/ARCHITECTURE.md, "The HTTP/1 path"), and it
//! cannot enforce a deadline on a keep-alive connection's next request head.
//! Routing, limits, stats and logging are the same modules the HTTP/2 path
//! (Pingora's) calls, so every path shares them.
//!
//! Deadlines (from `[limits]`): the whole head within `header_timeout` of its
//! first byte (of the connection's start, for the first request); the next
//! request's first byte within `keepalive_timeout`; each body read within
//! `body_timeout`; each write to the client within `client_write_timeout`.

pub mod chunked;
pub mod exchange;
pub mod fields;
pub mod io;
pub mod request;
pub mod respond;
pub mod response;
pub mod upstream;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use self::exchange::{ClientTimeouts, Outbound};
use self::fields::{Field, Known};
use self::io::{IoFail, ReadBuf};
use self::request::{BodyFraming, HeadError, HeadLimits, RequestHead};
use self::respond::Local;
use crate::access_log::Entry;
use crate::admission::Verdict;
use crate::conn::ConnInfo;
use crate::forwarding::Forwarding;
use crate::process::Process;
use crate::runtime::Runtime;
use crate::sticky::{self, HeaderSource};
use crate::stream::ClientStream;

/// The request head's fields seen by sticky-key extraction.
struct HeadFields<'a> {
    head: &'a RequestHead,
    buf: &'a [u8],
}

impl<'a> HeaderSource<'a> for HeadFields<'a> {
    fn first(&self, name: &str) -> Option<&'a [u8]> {
        self.head.values(self.buf, name).next()
    }
    fn cookies(&self) -> impl Iterator<Item = &'a [u8]> {
        let buf = self.buf;
        self.head
            .fields
            .iter()
            .filter(|f| f.known == Known::Cookie)
            .map(move |f| f.value.of(buf))
    }
}

/// How waiting for a request head ended without one.
enum NoHead {
    /// Closed or idle: close quietly.
    Quiet,
    /// Answer this status, then close.
    Refuse(u16, &'static str),
}

/// Serve requests on one client connection until it closes, a request says
/// so, a deadline passes, the process shuts down, or a WebSocket upgrade
/// takes the connection over.
pub async fn serve(
    process: Arc<Process>,
    info: ConnInfo,
    mut client: ClientStream,
    mut cbuf: ReadBuf,
    guards: crate::conn::ConnGuards,
) {
    let info = &info;
    let mut first = true;
    let mut scratch = exchange::Scratch::default();
    let mut fields: Vec<Field> = Vec::new();
    loop {
        let rt = process.runtime.load_full();
        let limits = &rt.limits.settings;
        let head = match read_head(&process, &mut client, &mut cbuf, &rt, info, first, fields).await
        {
            Ok(head) => head,
            Err(NoHead::Quiet) => return,
            Err(NoHead::Refuse(status, why)) => {
                tracing::debug!(peer = %info.peer, status, why, "request refused");
                let listener = rt.listener(info.listener);
                let answer = Local {
                    hsts: listener.hsts(),
                    ..Local::error(status)
                };
                let _ = answer.send(&mut client, limits.client_write_timeout).await;
                process.stats.listener(info.listener).refused_head(status);
                return;
            }
        };
        first = false;
        let started = std::time::Instant::now();
        let outcome = handle(
            &process,
            &rt,
            info,
            &mut client,
            &mut cbuf,
            &head,
            &mut scratch,
        )
        .await;
        let head_len = head.len;
        fields = head.recycle();
        match outcome {
            Handled::Next => {
                if process.is_shutting_down() {
                    return;
                }
            }
            Handled::Answered => {
                // Only the head was read (a request with a body closes
                // instead), so dropping it leaves the next request first.
                cbuf.consume(head_len);
                if process.is_shutting_down() {
                    return;
                }
            }
            Handled::Close => return,
            Handled::Tunnel(tunnel) => {
                // The tunnel runs as its own small task; this connection
                // task and its buffers end here.
                tokio::spawn(tunnel.run(client, process.clone(), guards));
                return;
            }
        }
        let _ = started;
    }
}

/// Wait for and parse the next request head.
async fn read_head(
    process: &Process,
    client: &mut ClientStream,
    cbuf: &mut ReadBuf,
    rt: &Runtime,
    info: &ConnInfo,
    first: bool,
    fields: Vec<Field>,
) -> Result<RequestHead, NoHead> {
    let limits = &rt.limits.settings;
    let head_limits = HeadLimits {
        max_line: limits.max_request_line_bytes,
        max_head: limits.max_header_bytes,
    };
    // The head's deadline: from the connection's start for its first
    // request, from the first byte for later ones.
    let mut deadline = if first {
        Some(info.accepted + limits.header_timeout)
    } else {
        None
    };
    if cbuf.is_empty() {
        let idle_until = match deadline {
            Some(d) => d,
            None => Instant::now() + limits.keepalive_timeout,
        };
        if !wait_first_byte(process, client, idle_until, info.listener).await {
            return Err(NoHead::Quiet);
        }
    }
    let mut fields = Some(fields);
    loop {
        if !cbuf.is_empty() {
            match request::parse(cbuf.data(), head_limits, fields.take().unwrap_or_default()) {
                Ok(head) => return Ok(head),
                Err(HeadError::Partial) => fields = Some(Vec::new()),
                Err(e) => return Err(NoHead::Refuse(e.status(), "malformed or oversized head")),
            }
        }
        let by = *deadline.get_or_insert_with(|| Instant::now() + limits.header_timeout);
        match cbuf.fill_by(client, head_limits.max_head + 1, by).await {
            Ok(_) => {}
            Err(IoFail::Timeout) if cbuf.is_empty() => return Err(NoHead::Quiet),
            Err(IoFail::Timeout) => {
                process
                    .stats
                    .listener(info.listener)
                    .header_timeouts
                    .fetch_add(1, Relaxed);
                return Err(NoHead::Refuse(408, "request head not complete in time"));
            }
            Err(IoFail::TooLarge) => return Err(NoHead::Refuse(431, "request head too large")),
            Err(_) => return Err(NoHead::Quiet),
        }
    }
}

/// Wait until the client sends something, holding no buffer, or until
/// `until` or shutdown, or until a new connection at `max_connections`
/// wants this idle one's place. Returns whether bytes are waiting.
async fn wait_first_byte(
    process: &Process,
    client: &mut ClientStream,
    until: Instant,
    listener: usize,
) -> bool {
    let mut shutdown = process.shutdown_watch();
    if *shutdown.borrow() {
        return false;
    }
    loop {
        let ready = async {
            match &*client {
                // A one-byte peek, not readiness alone (a fresh socket can
                // report readable with nothing to read): an idle plain
                // connection owns no buffer, and one that was closed ends.
                ClientStream::Plain(tcp) => matches!(tcp.peek(&mut [0u8; 1]).await, Ok(1)),
                // TLS may hold decrypted bytes already; the first fill reads them.
                ClientStream::Tls(_) => true,
            }
        };
        tokio::select! {
            ready = ready => return ready,
            _ = tokio::time::sleep_until(until) => return false,
            _ = shutdown.changed() => return false,
            _ = process.admission.place_wanted() => {
                if process.admission.give_way() {
                    process
                        .stats
                        .listener(listener)
                        .reclaimed_idle
                        .fetch_add(1, Relaxed);
                    return false;
                }
            }
        }
    }
}

/// What happened to a request.
enum Handled {
    /// Done; the connection may carry the next one.
    Next,
    /// Answered by the proxy itself without reading past the head, which is
    /// still in the buffer; the connection may carry the next one.
    Answered,
    /// Done; close the connection.
    Close,
    /// The upgrade succeeded: a tunnel takes the connection over.
    Tunnel(Box<crate::tunnel::Established>),
}

/// Decide and carry out one request.
async fn handle(
    process: &Process,
    rt: &Runtime,
    info: &ConnInfo,
    client: &mut ClientStream,
    cbuf: &mut ReadBuf,
    head: &RequestHead,
    scratch: &mut exchange::Scratch,
) -> Handled {
    let started = std::time::Instant::now();
    let listener = rt.listener(info.listener);
    let limits = &rt.limits.settings;
    let lstats = process.stats.listener(info.listener);
    lstats.requests.fetch_add(1, Relaxed);
    let buf = cbuf.data();
    let fwd = Forwarding::resolve(
        info.client.ip(),
        info.tls,
        &limits.trusted_proxies,
        head.fields
            .iter()
            .filter(|f| f.known == Known::XForwardedFor)
            .map(|f| f.value.of(buf)),
        head.value(buf, Known::XForwardedProto),
        head.value(buf, Known::XRequestId),
    );
    let host = std::str::from_utf8(head.host(buf)).unwrap_or("");
    let path = std::str::from_utf8(head.path(buf)).unwrap_or("/");
    let mut entry = Entry::start(&rt.log, info, head, buf, &fwd);
    let close_after_local = head.body != BodyFraming::None || !head.keep_alive;
    let local = |status: u16| Local {
        hsts: listener.hsts(),
        close: close_after_local,
        head_only: head.method == http::Method::HEAD,
        ..Local::error(status)
    };

    if let Some(location) = listener.redirect_for(host, head.target.of(buf)) {
        let answer = Local {
            headers: &[("Location", &location)],
            ..local(308)
        };
        let ok = answer
            .send(client, limits.client_write_timeout)
            .await
            .is_ok();
        process.log(entry.finish(308, 0, 0, started, None));
        return after_local(ok, close_after_local);
    }
    let Some(route) = rt.find_route(host, path) else {
        let ok = local(404)
            .send(client, limits.client_write_timeout)
            .await
            .is_ok();
        process.log(entry.finish(404, 0, 0, started, None));
        return after_local(ok, close_after_local);
    };
    entry.upstream(route.pool.name());

    match process.admission.request(rt, route, fwd.client_ip) {
        Verdict::Allowed => {}
        Verdict::Limited(headers) => {
            lstats.refused_rate.fetch_add(1, Relaxed);
            let pairs = headers.pairs();
            let answer = Local {
                headers: &pairs,
                ..local(429)
            };
            let ok = answer
                .send(client, limits.client_write_timeout)
                .await
                .is_ok();
            process.log(entry.finish(429, 0, 0, started, Some("rate limited")));
            return after_local(ok, close_after_local);
        }
    }

    let key = sticky::extract(
        &route.pool.settings.hash_key,
        &HeadFields { head, buf },
        head.target.of(buf).splitn(2, |&b| b == b'?').nth(1),
        fwd.client_ip,
    );
    entry.key_source(key.as_ref().map(|k| k.source));

    if head.websocket {
        let key_bytes = key.map(|k| k.as_bytes().to_vec());
        return match crate::tunnel::upgrade(
            process, rt, route, info, client, cbuf, head, &fwd, key_bytes, entry,
        )
        .await
        {
            crate::tunnel::Upgraded::Tunnel(t) => Handled::Tunnel(t),
            crate::tunnel::Upgraded::Answered => Handled::Close,
        };
    }

    let max_body = route.max_body_bytes(limits);
    if let BodyFraming::Length(n) = head.body {
        if n > max_body {
            let ok = local(413)
                .send(client, limits.client_write_timeout)
                .await
                .is_ok();
            let _ = ok;
            process.log(entry.finish(413, 0, 0, started, Some("request body too large")));
            return Handled::Close;
        }
    }
    let pool = route.pool.clone();
    let connected = upstream::open(&pool, key.as_ref().map(|k| k.as_bytes()), true, None).await;
    let up = match connected {
        Ok(up) => up,
        Err(e) => {
            let status = e.status();
            let ok = local(status)
                .send(client, limits.client_write_timeout)
                .await
                .is_ok();
            process.log(entry.finish(status, 0, 0, started, Some(&e.to_string())));
            return after_local(ok, close_after_local);
        }
    };
    entry.server(up.selection.server.addr);
    let server = up.selection.server.clone();
    let out = Outbound {
        head,
        fwd: &fwd,
        max_body,
        hsts: listener.hsts(),
        timeouts: ClientTimeouts {
            body: limits.body_timeout,
            write: limits.client_write_timeout,
        },
    };
    let done = exchange::forward(&pool, client, cbuf, &out, up, scratch).await;
    server.stats.record_latency(started.elapsed());
    process.log(entry.finish(
        done.status,
        done.bytes_in,
        done.bytes_out,
        started,
        done.error.as_deref(),
    ));
    if done.keep_client {
        Handled::Next
    } else {
        Handled::Close
    }
}

fn after_local(sent: bool, close: bool) -> Handled {
    if sent && !close {
        Handled::Answered
    } else {
        Handled::Close
    }
}

/// `Duration` helper for logs.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
