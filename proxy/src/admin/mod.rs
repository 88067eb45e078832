//! The admin listener: what an operator reads and the few orders they give.
//!
//! - `GET /health`: liveness (`{"status":"ok"}`).
//! - `GET /stats.json`: every counter ([`document`]).
//! - `GET /metrics`: the same counters as Prometheus text ([`metrics`]).
//! - `GET /` and `GET /stats`: the HTML dashboard ([`dashboard`]).
//! - `POST /api/upstreams/{upstream}/servers/{addr}/{drain|maint|ready}`:
//!   runtime control ([`control`]), allowed only past [`guard`]: the Host
//!   and Origin checks (CSRF, DNS rebinding) and the Bearer token.
//!
//! This file routes requests and shapes answers. Reading is done once per
//! request by [`figures`]; nothing here writes a counter, and only
//! [`control`] changes a server's state.

pub mod control;
pub mod dashboard;
pub mod document;
pub mod figures;
pub mod guard;
pub mod metrics;
mod resources;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};

use self::figures::Figures;
use self::guard::Denied;
use self::metrics::Exposition;
use crate::process::Process;

/// Request bodies the admin reads at most (control requests carry none).
const MAX_BODY: usize = 64 * 1024;

/// The admin HTTP application.
pub struct Admin {
    process: Arc<Process>,
    listen: SocketAddr,
    exposition: Option<Exposition>,
}

impl Admin {
    /// Admin endpoints over the live process, served on `listen` (the
    /// address a control request's `Host` must name).
    pub fn new(process: Arc<Process>, listen: SocketAddr) -> Self {
        let exposition = match Exposition::new(process.clone()) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!(error = %e, "admin: cannot set up /metrics");
                None
            }
        };
        Self {
            process,
            listen,
            exposition,
        }
    }
}

/// The parts of a request the admin looks at.
struct Request<'a> {
    method: &'a Method,
    path: &'a str,
    host: Option<&'a str>,
    origin: Option<&'a str>,
    authorization: Option<&'a [u8]>,
}

/// An answer before it becomes an HTTP response.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn json(status: u16, doc: &Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: doc.to_string().into_bytes(),
            headers: Vec::new(),
        }
    }

    fn error(status: u16, message: &str) -> Self {
        Self::json(status, &json!({ "error": message }))
    }

    fn not_allowed(allow: &'static str) -> Self {
        let mut a = Self::error(405, &format!("method not allowed; use {allow}"));
        a.headers.push(("Allow", allow.to_owned()));
        a
    }

    fn denied(d: &Denied) -> Self {
        let mut a = Self::error(d.status(), &d.message());
        if let Some(challenge) = d.challenge() {
            a.headers.push(("WWW-Authenticate", challenge));
        }
        a
    }

    fn into_response(self) -> Response<Vec<u8>> {
        let mut b = Response::builder()
            .status(self.status)
            .header("Content-Type", self.content_type)
            .header("Content-Length", self.body.len())
            .header("Cache-Control", "no-store");
        for (k, v) in self.headers {
            b = b.header(k, v);
        }
        b.body(self.body).unwrap_or_default()
    }
}

/// Paths answered to `GET` (and `HEAD`) only.
fn is_read_path(path: &str) -> bool {
    matches!(path, "/health" | "/stats.json" | "/metrics") || dashboard::asset(path).is_some()
}

impl Admin {
    fn answer(&self, req: &Request<'_>) -> Answer {
        if control::is_control_path(req.path) {
            return if req.method == Method::POST {
                self.control(req)
            } else {
                Answer::not_allowed("POST")
            };
        }
        if !is_read_path(req.path) {
            return Answer::error(404, "not found");
        }
        if req.method != Method::GET && req.method != Method::HEAD {
            return Answer::not_allowed("GET, HEAD");
        }
        match req.path {
            "/health" => Answer::json(200, &json!({ "status": "ok" })),
            "/stats.json" => Answer::json(200, &document::render(&Figures::read(&self.process))),
            "/metrics" => match self.exposition.as_ref().map(Exposition::render) {
                Some(Ok(text)) => Answer {
                    status: 200,
                    content_type: metrics::CONTENT_TYPE,
                    body: text.into_bytes(),
                    headers: Vec::new(),
                },
                Some(Err(e)) => Answer::error(500, &format!("encoding the metrics: {e}")),
                None => Answer::error(500, "metrics are not available (see the log)"),
            },
            path => match dashboard::asset(path) {
                Some(asset) => Answer {
                    status: 200,
                    content_type: asset.content_type,
                    body: asset.body.to_vec(),
                    headers: dashboard::SECURITY_HEADERS
                        .iter()
                        .map(|(k, v)| (*k, (*v).to_owned()))
                        .collect(),
                },
                None => Answer::error(404, "not found"),
            },
        }
    }

    fn control(&self, req: &Request<'_>) -> Answer {
        let rt = self.process.runtime.load();
        let token = rt.config.admin.as_ref().and_then(|a| a.token.as_deref());
        let allowed = guard::check_exposure(self.listen, token.is_some())
            .and_then(|()| guard::check_origin(self.listen, req.host, req.origin))
            .and_then(|()| guard::check_token(token, req.authorization));
        if let Err(denied) = allowed {
            tracing::warn!(path = req.path, host = ?req.host, origin = ?req.origin, reason = %denied.message(), "admin: control request refused");
            return Answer::denied(&denied);
        }
        let Some(cmd) = control::parse(req.path) else {
            return Answer::error(
                404,
                "expected /api/upstreams/{upstream}/servers/{addr}/{drain|maint|ready}",
            );
        };
        match control::apply(&rt, &cmd) {
            Ok(doc) => Answer::json(200, &doc),
            Err(e) => Answer::error(404, &e.to_string()),
        }
    }
}

/// Read and discard a request body, up to [`MAX_BODY`]; false when it is
/// larger or unreadable.
async fn drain_body(session: &mut ServerSession) -> bool {
    let mut seen = 0usize;
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                seen += chunk.len();
                if seen > MAX_BODY {
                    return false;
                }
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if !session.is_body_empty() && !drain_body(session).await {
            session.set_keepalive(None);
            return Answer::error(413, "request body too large").into_response();
        }
        let head = session.req_header();
        let text = |name: http::HeaderName| head.headers.get(name).and_then(|v| v.to_str().ok());
        let req = Request {
            method: &head.method,
            path: head.uri.path(),
            host: text(http::header::HOST).or_else(|| head.uri.authority().map(|a| a.as_str())),
            origin: text(http::header::ORIGIN),
            authorization: head
                .headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        };
        self.answer(&req).into_response()
    }
}
