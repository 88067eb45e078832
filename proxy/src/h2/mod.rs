//! The HTTP/2 path: clients that negotiated `h2` over TLS are served by
//! Pingora's HTTP/2 server and `ProxyHttp` request path, and proxied to
//! HTTP/1.1 upstreams through Pingora's connectors. Pingora does HTTP/2
//! well; what Ringway adds is the same decisions as the HTTP/1 path, from
//! the same modules: routing and sticky keys, client identity, admission
//! (rates, body size), passive health, stats, the access log.
//!
//! The phases read top to bottom as the life of a request, as in Pingora's
//! examples. HTTP/2 limits: concurrent streams per connection capped by
//! `limits.h2_max_concurrent_streams`; the `h2` crate bounds pending and
//! locally-reset streams, which stops rapid-reset floods (CVE-2023-44487);
//! an idle connection closes after `limits.keepalive_timeout`; a request
//! head must arrive within `header_timeout`, a body keep moving within
//! `body_timeout`. WebSockets stay on HTTP/1.1 (no extended CONNECT is
//! advertised), so browsers open a separate HTTP/1.1 connection for them.

mod io;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::apps::{HttpServerOptions, ServerApp};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{HttpProxy, ProxyHttp, Session};

use crate::access_log::Entry;
use crate::admission::Verdict;
use crate::conn::ConnInfo;
use crate::forwarding::Forwarding;
use crate::h1::fields::classify;
use crate::process::Process;
use crate::routing::{self, Selection};
use crate::runtime::{RouteRt, Runtime};
use crate::sticky;
use crate::stream::ClientStream;
use io::{watch_of, BodyWait, H2Io};

/// The Pingora applications, one per listener, made at start.
static APPS: OnceLock<Vec<Arc<HttpProxy<H2App>>>> = OnceLock::new();

/// Build the HTTP/2 applications for `listeners` listeners.
pub fn install(process: &Arc<Process>, conf: &Arc<ServerConf>, listeners: usize) {
    let apps = (0..listeners)
        .map(|i| {
            let rt = process.runtime.load();
            let limits = &rt.limits.settings;
            let mut proxy = pingora_proxy::http_proxy(
                conf,
                H2App {
                    process: process.clone(),
                    listener: i,
                },
            );
            let mut h2 = H2Options::new();
            h2.max_concurrent_streams(limits.h2_max_concurrent_streams)
                .max_header_list_size(limits.max_header_bytes as u32)
                .max_pending_accept_reset_streams(64)
                .max_local_error_reset_streams(Some(256));
            proxy.h2_options = Some(h2);
            let mut options = HttpServerOptions::default();
            options.h2_idle_timeout = Some(limits.keepalive_timeout);
            proxy.server_options = Some(options);
            Arc::new(proxy)
        })
        .collect();
    let _ = APPS.set(apps);
}

/// Serve an HTTP/2 connection (TLS, ALPN `h2`) to its end.
pub async fn serve(process: Arc<Process>, info: ConnInfo, stream: ClientStream) {
    let Some(app) = APPS.get().and_then(|a| a.get(info.listener)).cloned() else {
        return;
    };
    let limits = process.runtime.load().limits.settings.clone();
    let io = H2Io::new(stream, &info, limits.header_timeout, limits.body_timeout);
    let shutdown = process.shutdown_watch();
    ServerApp::process_new(&app, Box::new(io), &shutdown).await;
}

/// The `ProxyHttp` application of one listener.
pub struct H2App {
    process: Arc<Process>,
    listener: usize,
}

/// What one HTTP/2 request carries from phase to phase.
pub struct RequestCtx {
    started: Instant,
    runtime: Arc<Runtime>,
    route: Option<usize>,
    key: Option<Vec<u8>>,
    forwarding: Option<Forwarding>,
    selection: Option<Selection>,
    tried: Vec<SocketAddr>,
    body_bytes: u64,
    max_body: u64,
    entry: Entry,
    body_wait: Option<BodyWait>,
}

impl RequestCtx {
    fn route(&self) -> Option<&RouteRt> {
        self.route.and_then(|i| self.runtime.routes.get(i))
    }
}

async fn respond(
    session: &mut Session,
    status: u16,
    headers: &[(&str, &str)],
    hsts: Option<&str>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    let body = format!("{status}\n");
    resp.insert_header("Content-Type", "text/plain; charset=utf-8")?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    for (k, v) in headers {
        resp.insert_header(k.to_string(), v.to_string())?;
    }
    if let Some(h) = hsts {
        resp.insert_header("Strict-Transport-Security", h)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(())
}

#[async_trait]
impl ProxyHttp for H2App {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            runtime: self.process.runtime.load_full(),
            route: None,
            key: None,
            forwarding: None,
            selection: None,
            tried: Vec::new(),
            body_bytes: 0,
            max_body: 0,
            entry: Entry::default(),
            body_wait: None,
        }
    }

    /// Route the request, work out who the client is and its sticky key,
    /// and admit it (rate, body size).
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let rt = ctx.runtime.clone();
        let listener = rt.listener(self.listener);
        let limits = &rt.limits.settings;
        self.process
            .stats
            .listener(self.listener)
            .requests
            .fetch_add(1, Relaxed);
        let client_addr = session.client_addr().and_then(|a| a.as_inet()).copied();
        if let Some(watch) = watch_of(client_addr) {
            watch.requests.fetch_add(1, Relaxed);
            if !session.is_body_empty() {
                ctx.body_wait = Some(BodyWait::start(watch));
            }
        }
        let req = session.req_header();
        let client = client_addr.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let h = &req.headers;
        let fwd = Forwarding::resolve(
            client,
            true,
            &limits.trusted_proxies,
            h.get_all("x-forwarded-for").iter().map(|v| v.as_bytes()),
            h.get("x-forwarded-proto").map(|v| v.as_bytes()),
            h.get("x-request-id").map(|v| v.as_bytes()),
        );
        let host = h
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .unwrap_or("")
            .to_owned();
        let path = req.uri.path().to_owned();
        let target = req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        ctx.entry = Entry::from_parts(
            &rt.log,
            self.listener,
            req.method.as_str(),
            &host,
            &target,
            &fwd,
        );
        let hsts = listener.hsts();
        let Some(index) = rt.routes.iter().position(|r| r.route.matches(&host, &path)) else {
            respond(session, 404, &[], hsts).await?;
            return Ok(true);
        };
        let route = &rt.routes[index];
        ctx.entry.upstream(route.pool.name());
        if let Verdict::Limited(headers) = self.process.admission.request(&rt, route, fwd.client_ip)
        {
            self.process
                .stats
                .listener(self.listener)
                .refused_rate
                .fetch_add(1, Relaxed);
            respond(session, 429, &headers.pairs(), hsts).await?;
            return Ok(true);
        }
        ctx.max_body = route.max_body_bytes(limits);
        let declared = h
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > ctx.max_body) {
            respond(session, 413, &[], hsts).await?;
            return Ok(true);
        }
        let query = req.uri.query().map(str::as_bytes);
        let key = sticky::extract(&route.pool.settings.hash_key, &h, query, fwd.client_ip);
        ctx.entry.key_source(key.as_ref().map(|k| k.source));
        ctx.key = key.map(|k| k.as_bytes().to_vec());
        session.set_read_timeout(Some(limits.body_timeout));
        session.set_write_timeout(Some(limits.client_write_timeout));
        ctx.forwarding = Some(fwd);
        ctx.route = Some(index);
        Ok(false)
    }

    /// Count body bytes; past the route's limit the request is refused.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if end_of_stream {
            ctx.body_wait = None;
        }
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > ctx.max_body {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
        }
        Ok(())
    }

    /// Choose the server (again, after a connect failure) and describe the
    /// connection to it, every timeout explicit, TLS verified.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(pool) = ctx.route().map(|r| r.pool.clone()) else {
            return Error::e_explain(ErrorType::InternalError, "no route chosen");
        };
        let selection =
            routing::select(&pool, ctx.key.as_deref(), &ctx.tried).ok_or_else(|| {
                Error::explain(ErrorType::HTTPStatus(502), "no upstream server available")
            })?;
        let addr = selection.server.addr;
        selection.server.stats.requests_total.fetch_add(1, Relaxed);
        ctx.entry.server(addr);
        ctx.selection = Some(selection);
        let s = &pool.settings;
        let mut peer = match &pool.tls {
            None => HttpPeer::new(addr, false, String::new()),
            Some(tls) => {
                let sni = tls.sni_text(addr);
                let mut peer = HttpPeer::new(addr, true, sni);
                peer.options.verify_cert = tls.verify;
                peer.options.verify_hostname = tls.verify;
                peer.options.ca = tls.pingora_ca();
                peer.group_key = tls.trust_key();
                peer
            }
        };
        peer.options.connection_timeout = Some(s.connect_timeout);
        peer.options.total_connection_timeout = Some(s.connect_timeout);
        peer.options.read_timeout = Some(s.read_timeout);
        peer.options.write_timeout = Some(s.write_timeout);
        peer.options.idle_timeout = Some(s.keepalive_timeout);
        Ok(Box::new(peer))
    }

    /// A connect failure is the server's: count it, retry elsewhere within
    /// the pool's budget (nothing was sent yet).
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(sel), Some(pool)) = (ctx.selection.take(), ctx.route().map(|r| r.pool.clone()))
        {
            sel.server.stats.connect_errors.fetch_add(1, Relaxed);
            sel.server.record_failure(&pool.settings.passive);
            ctx.tried.push(sel.server.addr);
            if ctx.tried.len() <= pool.settings.retries {
                sel.server.stats.retries.fetch_add(1, Relaxed);
                e.set_retry(true);
            }
        }
        e
    }

    /// A failure after connecting: the server's only when its side failed
    /// (Pingora reports the client's aborts here too); retried only for an
    /// idempotent request on a stale pooled connection.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let stale_pooled = client_reused
            && session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        if stale_pooled {
            e.retry.decide_reuse(true);
            return e;
        }
        if e.esource() == &ErrorSource::Upstream {
            if let (Some(sel), Some(pool)) = (ctx.selection.as_ref(), ctx.route()) {
                sel.server.record_failure(&pool.pool.settings.passive);
            }
        }
        e.set_retry(false);
        e
    }

    /// Tell the upstream who the client is; drop what an untrusted peer
    /// may not assert.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(fwd) = &ctx.forwarding else {
            return Ok(());
        };
        let xff: Vec<Vec<u8>> = session
            .req_header()
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        let names: Vec<String> = upstream_request
            .headers
            .keys()
            .map(|k| k.as_str().to_owned())
            .collect();
        for name in names {
            if fwd.drops(classify(&name)) {
                upstream_request.remove_header(&name);
            }
        }
        for (name, value) in fwd.pairs(xff.iter().map(Vec::as_slice)) {
            upstream_request.insert_header(name, value)?;
        }
        Ok(())
    }

    /// HSTS on every response of a listener that asks for it.
    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(h) = ctx.runtime.listener(self.listener).hsts() {
            if upstream_response
                .headers
                .get("strict-transport-security")
                .is_none()
            {
                upstream_response.insert_header("Strict-Transport-Security", h)?;
            }
        }
        Ok(())
    }

    /// Count the finished request and log it.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        ctx.body_wait = None;
        let status = session
            .response_written()
            .map_or(if e.is_some() { 502 } else { 0 }, |r| r.status.as_u16());
        let (bytes_in, bytes_out) = (
            session.body_bytes_read() as u64,
            session.body_bytes_sent() as u64,
        );
        if let Some(sel) = ctx.selection.take() {
            let stats = &sel.server.stats;
            stats.record_status(status);
            if e.is_none() {
                sel.server.record_success();
                if let Some(pool) = ctx.route() {
                    if pool.pool.settings.passive.count_5xx && status >= 500 {
                        sel.server.record_failure(&pool.pool.settings.passive);
                    }
                }
            }
            stats.bytes_in.fetch_add(bytes_in, Relaxed);
            stats.bytes_out.fetch_add(bytes_out, Relaxed);
            stats.record_latency(ctx.started.elapsed());
        }
        let error = e.map(|e| e.to_string());
        self.process.log(ctx.entry.finish(
            status,
            bytes_in,
            bytes_out,
            ctx.started,
            error.as_deref(),
        ));
    }
}
