//! One request forwarded to an upstream server and its response relayed
//! back: the request head rewritten on the way (hop-by-hop fields out,
//! forwarding headers in), the bodies streamed in both directions with their
//! framing kept, interim `1xx` answers relayed, and the upstream connection
//! pooled again when the exchange ended cleanly.
//!
//! Heads are never re-serialized: the kept lines of the original head are
//! written as slices of the buffer they arrived in, next to the few lines the
//! proxy adds, in one vectored write together with the first body bytes.
//!
//! Every failure is attributed: the server's (refused, reset, timed out,
//! malformed — passive health counts it) or the client's (aborted, too
//! slow, too large — never counted against a server). A request that failed
//! on a pooled connection the server had already closed, before any byte of
//! the response, is retried once on a fresh connection when it is safe to.

use std::io::IoSlice;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use smallvec::SmallVec;
use tokio::io::AsyncWriteExt;

use super::chunked::{Chunked, Piece};
use super::fields::Known;
use super::io::{write_all, IoFail, ReadBuf};
use super::request::{BodyFraming, RequestHead};
use super::response::{self, ResponseFraming, ResponseHead, MAX_RESPONSE_HEAD};
use super::upstream::{self, connect, Connected};
use crate::forwarding::Forwarding;
use crate::stream::{ClientStream, UpstreamStream};
use crate::upstream::Pool;

/// How long to wait for a server's `100 Continue` before sending a body the
/// client announced with `Expect: 100-continue` (curl waits the same).
const CONTINUE_WAIT: Duration = Duration::from_secs(1);

/// The client-side deadlines of the listener the request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// Between body bytes from the client.
    pub body: Duration,
    /// Each write to the client.
    pub write: Duration,
}

/// What the request looks like to the exchange.
pub struct Outbound<'a> {
    /// The parsed head; its spans point into the client buffer's front.
    pub head: &'a RequestHead,
    /// Who the client is.
    pub fwd: &'a Forwarding,
    /// The largest body allowed on this route.
    pub max_body: u64,
    /// `Strict-Transport-Security` to add to the response.
    pub hsts: Option<&'a str>,
    /// Client deadlines.
    pub timeouts: ClientTimeouts,
}

/// Buffers one connection reuses for every exchange, so a request costs no
/// allocation for its upstream head or the response's field list.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The rewritten request head.
    pub upstream_head: Vec<u8>,
    /// Field spans of the response head being parsed.
    pub fields: Vec<super::fields::Field>,
}

/// How an exchange ended.
#[derive(Debug, Default)]
pub struct Exchanged {
    /// The status the client got (0 when it got nothing).
    pub status: u16,
    /// Whether the client connection may carry another request.
    pub keep_client: bool,
    /// Request body bytes sent upstream.
    pub bytes_in: u64,
    /// Response bytes (head and body) sent to the client.
    pub bytes_out: u64,
    /// What went wrong, for the log.
    pub error: Option<String>,
}

/// A failure, and whose it was.
enum Failure {
    /// The client aborted, stalled or overstepped; answer `status` if the
    /// response has not started (0: just close).
    Client(u16, String),
    /// The server failed; answer `status` if the response has not started.
    Server(u16, String),
}

impl Failure {
    fn server(status: u16, why: impl std::fmt::Display) -> Self {
        Failure::Server(status, why.to_string())
    }
}

/// Forward one request on `up` and relay the answer. The head is at the
/// front of `cbuf`; it is consumed here together with the body.
pub async fn forward(
    pool: &Pool,
    client: &mut ClientStream,
    cbuf: &mut ReadBuf,
    req: &Outbound<'_>,
    mut up: Connected,
    scratch: &mut Scratch,
) -> Exchanged {
    let head = req.head;
    let server = up.selection.server.clone();
    let settings = &pool.settings;
    let mut result = Exchanged::default();
    let upstream_head = &mut scratch.upstream_head;
    render_request_head(cbuf.data(), head, req.fwd, upstream_head);
    let fields = &mut scratch.fields;
    cbuf.consume(head.len);

    // A pooled connection the server closed while it idled fails at the
    // first write or read; then, if nothing of the request can have been
    // acted on, the request goes again on a fresh connection (and the stale
    // connection is not held against the server).
    let mut body_sent = false;
    let (resp, mut ubuf) = loop {
        let mut ubuf = ReadBuf::default();
        let attempt = async {
            let early = send_head(
                client,
                cbuf,
                req,
                upstream_head,
                &mut up,
                &mut ubuf,
                settings,
                &mut result,
                fields,
            )
            .await?;
            if let Some(final_head) = early {
                return Ok(final_head);
            }
            send_body(
                client,
                cbuf,
                req,
                &mut up.stream,
                settings.write_timeout,
                &mut result,
            )
            .await?;
            body_sent = true;
            read_final_head(
                &mut up.stream,
                &mut ubuf,
                head,
                client,
                req,
                settings.read_timeout,
                &mut result,
                fields,
            )
            .await
        };
        match attempt.await {
            Ok(resp) => break (resp, ubuf),
            Err(Failure::Server(_, why))
                if up.reused && ubuf.is_empty() && result.bytes_out == 0 && replayable(head) =>
            {
                tracing::debug!(server = %server.addr, why, "pooled connection was stale; retrying on a fresh one");
                match reconnect(pool, &up).await {
                    Some(fresh) => up = fresh,
                    None => {
                        return fail_before_response(
                            client,
                            req,
                            &mut result,
                            Failure::server(502, "upstream connect failed"),
                            &server,
                            pool,
                        )
                        .await
                    }
                }
            }
            Err(f) => {
                return fail_before_response(client, req, &mut result, f, &server, pool).await
            }
        }
    };
    if matches!(head.body, BodyFraming::None) {
        body_sent = true;
    }
    result.status = resp.status;
    server.stats.record_status(resp.status);
    if settings.passive.count_5xx && resp.status >= 500 {
        server.record_failure(&settings.passive);
    }

    // Relay the response.
    let dechunk = head.http10 && resp.framing == ResponseFraming::Chunked;
    let keep_client = head.keep_alive
        && body_sent
        && !matches!(resp.framing, ResponseFraming::UntilClose)
        && !dechunk;
    let relayed = relay_response(
        client,
        &mut up.stream,
        &mut ubuf,
        &resp,
        req,
        keep_client,
        dechunk,
        settings.read_timeout,
        &mut result,
    )
    .await;
    match relayed {
        Ok(()) => {
            result.keep_client = keep_client;
            if resp.status < 500 || !settings.passive.count_5xx {
                server.record_success();
            }
            if resp.keep_alive && body_sent && ubuf.is_empty() {
                upstream::put(
                    up.pool_key.clone(),
                    up.stream,
                    settings.keepalive_connections,
                );
            }
        }
        Err(Failure::Server(_, why)) => {
            server.record_failure(&settings.passive);
            result.error = Some(why);
        }
        Err(Failure::Client(_, why)) => result.error = Some(why),
    }
    server.stats.bytes_in.fetch_add(result.bytes_in, Relaxed);
    server.stats.bytes_out.fetch_add(result.bytes_out, Relaxed);
    scratch.fields = resp.fields;
    result
}

/// Whether the request may be sent again after a stale pooled connection
/// failed: an idempotent method whose body (if any) was never streamed.
fn replayable(head: &RequestHead) -> bool {
    head.method.is_idempotent() && matches!(head.body, BodyFraming::None)
}

async fn reconnect(pool: &Pool, up: &Connected) -> Option<Connected> {
    let server = &up.selection.server;
    let settings = &pool.settings;
    match connect(server.addr, settings.connect_timeout, pool.tls.as_deref()).await {
        Ok(stream) => Some(Connected {
            selection: crate::routing::Selection {
                server: server.clone(),
                guard: crate::stats::ActiveGuard::new(server.stats.clone()),
            },
            stream,
            reused: false,
            pool_key: up.pool_key.clone(),
            connect_time: Duration::ZERO,
        }),
        Err(e) => {
            if e.is_server_fault() {
                server.stats.connect_errors.fetch_add(1, Relaxed);
                server.record_failure(&settings.passive);
            }
            None
        }
    }
}

/// The request head as it goes upstream: `METHOD target HTTP/1.1`, every
/// field but the hop-by-hop ones, the ones `Connection` nominates and the
/// forwarding ones this hop rewrites, then the forwarding headers.
pub fn render_request_head(buf: &[u8], head: &RequestHead, fwd: &Forwarding, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.of(buf));
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let nominated = head
        .fields
        .iter()
        .filter(|f| f.known == Known::Connection)
        .map(|f| f.value.of(buf));
    let nominated: SmallVec<[&[u8]; 2]> = nominated.collect();
    let is_nominated = |name: &[u8]| {
        nominated
            .iter()
            .any(|v| super::request::tokens(v).any(|t| t.eq_ignore_ascii_case(name)))
    };
    let mut has_host = false;
    for f in &head.fields {
        if f.known.is_hop_by_hop() || fwd.drops(f.known) {
            continue;
        }
        let name = f.name.of(buf);
        if f.known == Known::Other && !nominated.is_empty() && is_nominated(name) {
            continue;
        }
        has_host |= f.known == Known::Host;
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(f.value.of(buf));
        out.extend_from_slice(b"\r\n");
    }
    if let (false, Some(authority)) = (has_host, head.authority) {
        out.extend_from_slice(b"Host: ");
        out.extend_from_slice(authority.of(buf));
        out.extend_from_slice(b"\r\n");
    }
    let xff = head
        .fields
        .iter()
        .filter(|f| f.known == Known::XForwardedFor)
        .map(|f| f.value.of(buf));
    fwd.write_h1(out, xff);
    out.extend_from_slice(b"\r\n");
}

/// Write the request head upstream, with the body bytes already read when
/// the client is not waiting for `100 Continue`. For `Expect: 100-continue`
/// wait up to [`CONTINUE_WAIT`] for the server's interim answer (relayed) or
/// its final one, which is returned: then the body is not sent at all.
#[allow(clippy::too_many_arguments)]
async fn send_head(
    client: &mut ClientStream,
    cbuf: &mut ReadBuf,
    req: &Outbound<'_>,
    upstream_head: &[u8],
    up: &mut Connected,
    ubuf: &mut ReadBuf,
    settings: &crate::config::Upstream,
    result: &mut Exchanged,
    fields: &mut Vec<super::fields::Field>,
) -> Result<Option<ResponseHead>, Failure> {
    let head = req.head;
    let write_timeout = settings.write_timeout;
    let first = match head.body {
        BodyFraming::Length(total) => {
            if total > req.max_body {
                return Err(Failure::Client(413, "request body too large".into()));
            }
            (cbuf.data().len() as u64).min(total) as usize
        }
        _ => 0,
    };
    let wait_continue = head.expect_continue && first == 0 && head.body != BodyFraming::None;
    let mut slices = [
        IoSlice::new(upstream_head),
        IoSlice::new(&cbuf.data()[..first]),
    ];
    write_all(&mut up.stream, &mut slices, write_timeout)
        .await
        .map_err(|e| Failure::server(502, format!("writing the request: {e}")))?;
    cbuf.consume(first);
    result.bytes_in += first as u64;
    if !wait_continue {
        return Ok(None);
    }
    match tokio::time::timeout(
        CONTINUE_WAIT,
        read_final_head(
            &mut up.stream,
            ubuf,
            head,
            client,
            req,
            settings.read_timeout,
            result,
            fields,
        ),
    )
    .await
    {
        // Waited long enough, or the server answered 100 (relayed): send the body.
        Err(_) => Ok(None),
        Ok(Ok(final_head)) => Ok(Some(final_head)),
        Ok(Err(f)) => Err(f),
    }
}

/// Stream the rest of the request body from the client upstream, keeping
/// its framing; refuse it (413) past the route's `max_body_bytes`.
async fn send_body(
    client: &mut ClientStream,
    cbuf: &mut ReadBuf,
    req: &Outbound<'_>,
    up: &mut UpstreamStream,
    write_timeout: Duration,
    result: &mut Exchanged,
) -> Result<(), Failure> {
    match req.head.body {
        BodyFraming::None => Ok(()),
        BodyFraming::Length(total) => {
            let mut left = total - result.bytes_in;
            while left > 0 {
                if cbuf.is_empty() {
                    cbuf.fill_within(client, usize::MAX, req.timeouts.body)
                        .await
                        .map_err(|e| client_read_failure(e, "request body"))?;
                }
                let n = (cbuf.data().len() as u64).min(left) as usize;
                write_all(up, &mut [IoSlice::new(&cbuf.data()[..n])], write_timeout)
                    .await
                    .map_err(|e| Failure::server(502, format!("writing the request body: {e}")))?;
                cbuf.consume(n);
                left -= n as u64;
                result.bytes_in += n as u64;
            }
            Ok(())
        }
        BodyFraming::Chunked => {
            let mut chunked = Chunked::new();
            loop {
                if cbuf.is_empty() {
                    cbuf.fill_within(client, usize::MAX, req.timeouts.body)
                        .await
                        .map_err(|e| client_read_failure(e, "request body"))?;
                }
                let used = chunked
                    .consume(cbuf.data())
                    .map_err(|e| Failure::Client(400, e.to_string()))?;
                if chunked.data_total() > req.max_body {
                    return Err(Failure::Client(413, "request body too large".into()));
                }
                write_all(up, &mut [IoSlice::new(&cbuf.data()[..used])], write_timeout)
                    .await
                    .map_err(|e| Failure::server(502, format!("writing the request body: {e}")))?;
                cbuf.consume(used);
                result.bytes_in += used as u64;
                if chunked.is_done() {
                    return Ok(());
                }
            }
        }
    }
}

fn client_read_failure(e: IoFail, what: &str) -> Failure {
    match e {
        IoFail::Timeout => Failure::Client(408, format!("client too slow sending the {what}")),
        other => Failure::Client(0, format!("client aborted the {what}: {other}")),
    }
}

/// Read the upstream's answer up to its final (non-1xx) head, relaying any
/// interim `1xx` to the client as it comes (RFC 9110 §15.2).
#[allow(clippy::too_many_arguments)]
async fn read_final_head(
    up: &mut UpstreamStream,
    ubuf: &mut ReadBuf,
    head: &RequestHead,
    client: &mut ClientStream,
    req: &Outbound<'_>,
    read_timeout: Duration,
    result: &mut Exchanged,
    fields: &mut Vec<super::fields::Field>,
) -> Result<ResponseHead, Failure> {
    let is_head = head.method == http::Method::HEAD;
    loop {
        let parsed = loop {
            match response::parse(ubuf.data(), is_head, std::mem::take(fields)) {
                Ok(r) => break r,
                Err(response::ResponseError::Partial) => {}
                Err(e) => return Err(Failure::server(502, e)),
            }
            match ubuf.fill_within(up, MAX_RESPONSE_HEAD, read_timeout).await {
                Ok(_) => {}
                Err(IoFail::Timeout) => {
                    return Err(Failure::server(504, "timed out waiting for the response"))
                }
                Err(e) => return Err(Failure::server(502, format!("reading the response: {e}"))),
            }
        };
        if (100..200).contains(&parsed.status) && parsed.status != 101 {
            // Interim: relay as is and wait for the final answer.
            let bytes = ubuf.data()[..parsed.len].to_vec();
            ubuf.consume(parsed.len);
            *fields = parsed.fields;
            if !head.http10 {
                write_all(client, &mut [IoSlice::new(&bytes)], req.timeouts.write)
                    .await
                    .map_err(|e| Failure::Client(0, format!("writing to the client: {e}")))?;
                result.bytes_out += bytes.len() as u64;
            }
            continue;
        }
        return Ok(parsed);
    }
}

/// Send the response head and body to the client.
#[allow(clippy::too_many_arguments)]
async fn relay_response(
    client: &mut ClientStream,
    up: &mut UpstreamStream,
    ubuf: &mut ReadBuf,
    resp: &ResponseHead,
    req: &Outbound<'_>,
    keep_client: bool,
    dechunk: bool,
    read_timeout: Duration,
    result: &mut Exchanged,
) -> Result<(), Failure> {
    let write = req.timeouts.write;
    let mut extra: SmallVec<[u8; 128]> = SmallVec::new();
    if !keep_client {
        extra.extend_from_slice(b"Connection: close\r\n");
    } else if req.head.http10 {
        extra.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    if let Some(hsts) = req.hsts {
        if !resp
            .fields
            .iter()
            .any(|f| f.known == Known::StrictTransportSecurity)
        {
            extra.extend_from_slice(b"Strict-Transport-Security: ");
            extra.extend_from_slice(hsts.as_bytes());
            extra.extend_from_slice(b"\r\n");
        }
    }
    extra.extend_from_slice(b"\r\n");

    // The head's kept lines, the added ones, and the first body bytes go
    // out in one vectored write.
    let resp_len = resp.len;
    let (first, chunked_state) = {
        let data = ubuf.data();
        let head_bytes = &data[..resp_len];
        let mut slices: SmallVec<[IoSlice<'_>; 12]> = SmallVec::new();
        let mut run_start = 0usize;
        for (i, f) in resp.fields.iter().enumerate() {
            let drop_it = f.known.is_hop_by_hop()
                || (dechunk
                    && (f.known == Known::TransferEncoding || f.known == Known::ContentLength));
            if drop_it {
                let start = f.name.start as usize;
                if start > run_start {
                    slices.push(IoSlice::new(&head_bytes[run_start..start]));
                }
                run_start = resp.line_end(i);
            }
        }
        let fields_end = resp_len - 2;
        if fields_end > run_start {
            slices.push(IoSlice::new(&head_bytes[run_start..fields_end]));
        }
        slices.push(IoSlice::new(&extra));
        let head_total: usize = slices.iter().map(|s| s.len()).sum();
        let body = &data[resp_len..];
        let (first, chunked_state) = match resp.framing {
            _ if dechunk => (0, None),
            ResponseFraming::None => (0, None),
            ResponseFraming::Length(n) => ((body.len() as u64).min(n) as usize, None),
            ResponseFraming::UntilClose => (body.len(), None),
            ResponseFraming::Chunked => {
                let mut c = Chunked::new();
                let used = c.consume(body).map_err(|e| Failure::server(502, e))?;
                (used, Some(c))
            }
        };
        slices.push(IoSlice::new(&body[..first]));
        write_all(client, &mut slices, write)
            .await
            .map_err(client_write)?;
        result.bytes_out += (head_total + first) as u64;
        (first, chunked_state)
    };
    ubuf.consume(resp_len + first);
    if dechunk {
        // An HTTP/1.0 client: only the data bytes follow, then a close.
        return relay_dechunked(client, up, ubuf, read_timeout, write, result).await;
    }

    match resp.framing {
        ResponseFraming::None => Ok(()),
        ResponseFraming::Length(n) => {
            let mut left = n - first as u64;
            while left > 0 {
                fill_upstream(up, ubuf, read_timeout).await?;
                let k = (ubuf.data().len() as u64).min(left) as usize;
                write_all(client, &mut [IoSlice::new(&ubuf.data()[..k])], write)
                    .await
                    .map_err(client_write)?;
                ubuf.consume(k);
                left -= k as u64;
                result.bytes_out += k as u64;
            }
            Ok(())
        }
        ResponseFraming::Chunked => {
            let mut c = chunked_state.unwrap_or_default();
            while !c.is_done() {
                fill_upstream(up, ubuf, read_timeout).await?;
                let used = c
                    .consume(ubuf.data())
                    .map_err(|e| Failure::server(502, e))?;
                write_all(client, &mut [IoSlice::new(&ubuf.data()[..used])], write)
                    .await
                    .map_err(client_write)?;
                ubuf.consume(used);
                result.bytes_out += used as u64;
            }
            Ok(())
        }
        ResponseFraming::UntilClose => loop {
            match ubuf.fill_within(up, usize::MAX, read_timeout).await {
                Ok(_) => {}
                Err(IoFail::Closed) => {
                    let _ = client.shutdown().await;
                    return Ok(());
                }
                Err(IoFail::Timeout) => {
                    return Err(Failure::server(504, "response body timed out"))
                }
                Err(e) => {
                    return Err(Failure::server(
                        502,
                        format!("reading the response body: {e}"),
                    ))
                }
            }
            let k = ubuf.data().len();
            write_all(client, &mut [IoSlice::new(ubuf.data())], write)
                .await
                .map_err(client_write)?;
            ubuf.consume(k);
            result.bytes_out += k as u64;
        },
    }
}

/// Relay a chunked body as its data bytes only, then close (HTTP/1.0 client).
async fn relay_dechunked(
    client: &mut ClientStream,
    up: &mut UpstreamStream,
    ubuf: &mut ReadBuf,
    read_timeout: Duration,
    write: Duration,
    result: &mut Exchanged,
) -> Result<(), Failure> {
    let mut c = Chunked::new();
    while !c.is_done() {
        if ubuf.is_empty() {
            fill_upstream(up, ubuf, read_timeout).await?;
        }
        match c
            .advance(ubuf.data())
            .map_err(|e| Failure::server(502, e))?
        {
            Some(Piece::Data(n)) => {
                write_all(client, &mut [IoSlice::new(&ubuf.data()[..n])], write)
                    .await
                    .map_err(client_write)?;
                result.bytes_out += n as u64;
                ubuf.consume(n);
            }
            Some(Piece::Framing(n)) => ubuf.consume(n),
            None => fill_upstream(up, ubuf, read_timeout).await?,
        }
    }
    let _ = client.shutdown().await;
    Ok(())
}

async fn fill_upstream(
    up: &mut UpstreamStream,
    ubuf: &mut ReadBuf,
    read_timeout: Duration,
) -> Result<(), Failure> {
    if !ubuf.is_empty() {
        return Ok(());
    }
    match ubuf.fill_within(up, usize::MAX, read_timeout).await {
        Ok(_) => Ok(()),
        Err(IoFail::Timeout) => Err(Failure::server(504, "response body timed out")),
        Err(e) => Err(Failure::server(
            502,
            format!("response body cut short: {e}"),
        )),
    }
}

fn client_write(e: IoFail) -> Failure {
    Failure::Client(0, format!("writing to the client: {e}"))
}

/// Answer a failure that happened before any response byte was sent (when
/// the client is still there to hear it), and count it where it belongs.
async fn fail_before_response(
    client: &mut ClientStream,
    req: &Outbound<'_>,
    result: &mut Exchanged,
    failure: Failure,
    server: &crate::upstream::ServerState,
    pool: &Pool,
) -> Exchanged {
    let (status, why) = match failure {
        Failure::Server(status, why) => {
            server.record_failure(&pool.settings.passive);
            server.stats.record_status(status);
            tracing::warn!(upstream = pool.name(), server = %server.addr, error = %why, "upstream failed the request");
            (status, why)
        }
        Failure::Client(status, why) => (status, why),
    };
    result.keep_client = false;
    result.error = Some(why);
    if status != 0 && result.status == 0 {
        let answer = super::respond::Local {
            hsts: req.hsts,
            ..super::respond::Local::error(status)
        };
        if answer.send(client, req.timeouts.write).await.is_ok() {
            result.status = status;
        }
    }
    std::mem::take(result)
}
