//! The Pingora glue: one `ProxyHttp` implementation whose phases, top to
//! bottom, are the life of a request. Each phase delegates to a named
//! concept — `routing` for the route, key and server, `tunnel` for
//! upgrades, `forwarding` for headers, `stats` for counting — and holds no
//! logic of its own beyond the order of those calls.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::{ProxyHttp, Session};

use crate::forwarding::Forwarding;
use crate::routing::{self, Selection};
use crate::runtime::{Runtime, SharedRuntime};
use crate::tunnel;
use crate::upstream::Pool;

/// The proxy application Pingora drives.
pub struct RingwayProxy {
    runtime: SharedRuntime,
}

impl RingwayProxy {
    /// A proxy serving whatever runtime `runtime` holds when each request starts.
    pub fn new(runtime: SharedRuntime) -> Self {
        Self { runtime }
    }
}

/// What one request carries from phase to phase.
pub struct RequestCtx {
    started: Instant,
    /// The runtime snapshot this request runs under (see `runtime`).
    runtime: Arc<Runtime>,
    pool: Option<Arc<Pool>>,
    key: Option<String>,
    forwarding: Option<Forwarding>,
    /// The server currently chosen, holding one unit of its load.
    selection: Option<Selection>,
    /// Servers whose connection failed for this request.
    tried: Vec<SocketAddr>,
}

fn host_of(session: &Session) -> &str {
    let req = session.req_header();
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())
        .unwrap_or("")
}

#[async_trait]
impl ProxyHttp for RingwayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            runtime: self.runtime.load_full(),
            pool: None,
            key: None,
            forwarding: None,
            selection: None,
            tried: Vec::new(),
        }
    }

    /// Route the request, work out who the client is and its sticky key,
    /// and take WebSocket upgrades down the tunnel path.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let path = session.req_header().uri.path().to_owned();
        let Some(route) = routing::find_route(&ctx.runtime.routes, host_of(session), &path) else {
            session.respond_error(404).await?;
            return Ok(true);
        };
        let Some(pool) = ctx.runtime.pools.get(&route.upstream).cloned() else {
            return Error::e_explain(ErrorType::InternalError, "route to a missing pool");
        };
        let peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let req = session.req_header();
        let fwd = Forwarding::resolve(&req.headers, peer_ip, tls, &ctx.runtime.trusted_proxies);
        let key = routing::sticky_key(
            &pool.settings.hash_key,
            &req.headers,
            &req.uri,
            fwd.client_ip,
        );
        if tunnel::is_websocket_upgrade(session) {
            let outcome = tunnel::serve(session, &pool, key.as_deref(), &fwd).await;
            tracing::debug!(?outcome, "tunnel finished");
            return Ok(true);
        }
        ctx.key = key;
        ctx.forwarding = Some(fwd);
        ctx.pool = Some(pool);
        Ok(false)
    }

    /// Choose the server (again, on a retry after a connect failure) and
    /// describe the connection to it, with every timeout explicit.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(pool) = ctx.pool.clone() else {
            return Error::e_explain(ErrorType::InternalError, "no pool chosen");
        };
        let Some(selection) =
            routing::select(&pool, ctx.key.as_deref().map(str::as_bytes), &ctx.tried)
        else {
            return Error::e_explain(ErrorType::HTTPStatus(502), "no upstream server available");
        };
        let addr = selection.server.addr;
        selection.server.stats.requests_total.fetch_add(1, Relaxed);
        ctx.selection = Some(selection);
        let s = &pool.settings;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(s.connect_timeout);
        peer.options.total_connection_timeout = Some(s.connect_timeout);
        peer.options.read_timeout = Some(s.read_timeout);
        peer.options.write_timeout = Some(s.write_timeout);
        peer.options.idle_timeout = Some(s.keepalive_timeout);
        Ok(Box::new(peer))
    }

    /// Count the failure against the server (passive ejection) and retry
    /// on another one while the pool's retry budget lasts; nothing has been
    /// sent yet, so a retry is always safe.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(sel), Some(pool)) = (ctx.selection.take(), ctx.pool.as_ref()) {
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

    /// A failure after the request reached the server: count it, and never
    /// retry — the server may have acted on it. The one exception is
    /// Pingora's: an idempotent request on a pooled keep-alive connection
    /// the server had already closed, whose bytes reached no application.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if let (Some(sel), Some(pool)) = (ctx.selection.as_ref(), ctx.pool.as_ref()) {
            sel.server.record_failure(&pool.settings.passive);
        }
        let stale_pooled = client_reused
            && session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        if stale_pooled {
            e.retry.decide_reuse(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    /// Tell the upstream who the client is.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(fwd) = &ctx.forwarding {
            for (name, value) in fwd.headers() {
                upstream_request.insert_header(name, value)?;
            }
        }
        Ok(())
    }

    /// Count the finished request against its server.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let Some(sel) = ctx.selection.take() else {
            return;
        };
        let stats = &sel.server.stats;
        match session.response_written() {
            Some(resp) => stats.record_status(resp.status.as_u16()),
            None if e.is_some() => stats.record_status(502),
            None => {}
        }
        if e.is_none() {
            sel.server.record_success();
        }
        stats
            .bytes_in
            .fetch_add(session.body_bytes_read() as u64, Relaxed);
        stats
            .bytes_out
            .fetch_add(session.body_bytes_sent() as u64, Relaxed);
        stats.record_latency(ctx.started.elapsed());
    }
}
