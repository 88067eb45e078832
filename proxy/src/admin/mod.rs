//! The admin listener: `/health` for liveness probes and `/stats.json`, the
//! per-upstream, per-server numbers an operator reads.
//!
//! Reads the runtime and the counters; changes nothing. (Server state
//! changes by POST, the HTML dashboard and Prometheus text arrive with the
//! stats work and will live here too.)

use std::sync::atomic::Ordering::Relaxed;

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};

use std::sync::Arc;

use crate::process::Process;
use crate::runtime::Runtime;
use crate::upstream::ServerState;

/// The admin HTTP application.
pub struct Admin {
    process: Arc<Process>,
}

impl Admin {
    /// Admin endpoints over the live process.
    pub fn new(process: Arc<Process>) -> Self {
        Self { process }
    }
}

/// The `/stats.json` document for one runtime.
pub fn stats_json(runtime: &Runtime) -> Value {
    let upstreams: serde_json::Map<String, Value> = runtime
        .pools
        .iter()
        .map(|(name, pool)| {
            let servers: Vec<Value> = pool.servers.iter().map(|s| server_json(s)).collect();
            let up = pool.servers.iter().filter(|s| s.is_available()).count();
            let doc = json!({
                "balance": pool.settings.balance,
                "servers_up": up,
                "servers": servers,
            });
            (name.clone(), doc)
        })
        .collect();
    json!({ "upstreams": upstreams })
}

fn server_json(s: &ServerState) -> Value {
    let st = &s.stats;
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
    json!({
        "addr": s.addr.to_string(),
        "state": s.state_name(),
        "healthy": s.is_healthy(),
        "backup": s.backup,
        "weight": s.weight,
        "active_connections": st.load(),
        "active_websockets": st.active_websockets.load(Relaxed).max(0),
        "requests_total": n(&st.requests_total),
        "responses": {
            "1xx": n(&st.responses[0]), "2xx": n(&st.responses[1]), "3xx": n(&st.responses[2]),
            "4xx": n(&st.responses[3]), "5xx": n(&st.responses[4]),
        },
        "connect_errors": n(&st.connect_errors),
        "retries": n(&st.retries),
        "bytes_in": n(&st.bytes_in),
        "bytes_out": n(&st.bytes_out),
        "check_failures": n(&st.check_failures),
        "last_change_secs": s.last_change_secs(),
        "latency_ms": { "p50": st.latency_quantile_ms(0.5), "p99": st.latency_quantile_ms(0.99) },
    })
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Content-Length", body.len())
        .header("Cache-Control", "no-store")
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        match path.as_str() {
            "/health" => respond(200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/stats.json" => {
                let mut doc = stats_json(&self.process.runtime.load());
                if let Some(last) = self
                    .process
                    .reloads
                    .last
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                {
                    doc["last_reload"] = serde_json::to_value(last).unwrap_or_default();
                }
                respond(200, "application/json", doc.to_string().into_bytes())
            }
            _ => respond(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}
