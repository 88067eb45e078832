//! The node's HTTP face: `/` (a demo page), `/ws` (the upgrade, after the connect policy),
//! `/health` (the deployment guides' JSON, from a real Redis round trip
//! and pub/sub probe), `/api/websocket/stats`, `/metrics`, the publish API
//! ([`crate::api`], when `API_KEY` is set), and the `X-WebSocket-*`
//! headers on every response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admission::Refusal;
use crate::auth::{self, AuthError};
use crate::protocol;
use crate::session::{self, ConnectRequest};
use crate::Node;

/// Name of the node that answered.
pub const HEADER_WORKER_ID: HeaderName = HeaderName::from_static("x-websocket-worker-id");
/// WebSocket clients connected to this node.
pub const HEADER_LOCAL_CONNECTIONS: HeaderName =
    HeaderName::from_static("x-websocket-local-connections");
/// Sessions connected cluster-wide (as of the last heartbeat).
pub const HEADER_TOTAL_SESSIONS: HeaderName = HeaderName::from_static("x-websocket-total-sessions");
/// Live workers in the cluster (as of the last heartbeat).
pub const HEADER_TOTAL_WORKERS: HeaderName = HeaderName::from_static("x-websocket-total-workers");

/// Read buffer of each WebSocket. tungstenite's default, 128 KiB, is
/// touched whole by the first read, so an idle connection cost ~147 KiB of
/// RSS; at 8 KiB it is ~23 KiB, and echo CPU per message fell too. The
/// write buffer keeps its default: at 8 KiB, burst fan-out lost a third
/// (`docs/BENCHMARKS.md`, "WebSocket server stack"). Larger messages still
/// go through whole.
const SOCKET_BUFFER: usize = 8 * 1024;

/// How long `/health` waits for each probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The node's routes, with the `X-WebSocket-*` headers on every response
/// (404s and refused upgrades included).
pub fn router(node: Arc<Node>) -> Router {
    let router = Router::new();
    let router = if node.config.api_key.is_some() {
        crate::api::routes(router, node.config.limits.max_message_size)
    } else {
        router
    };
    router
        .route("/", get(demo))
        .route("/ws", get(websocket))
        .route("/health", get(health))
        .route("/api/websocket/stats", get(stats))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(node.clone(), node_headers))
        .with_state(node)
}

async fn node_headers(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&node.config.worker_id) {
        headers.insert(HEADER_WORKER_ID, v);
    }
    headers.insert(
        HEADER_LOCAL_CONNECTIONS,
        HeaderValue::from(node.hub.local_connections()),
    );
    headers.insert(
        HEADER_TOTAL_SESSIONS,
        HeaderValue::from(node.cluster.total_sessions()),
    );
    headers.insert(
        HEADER_TOTAL_WORKERS,
        HeaderValue::from(node.cluster.total_workers()),
    );
    resp
}

#[derive(Deserialize)]
struct WsQuery {
    sid: Option<String>,
    token: Option<String>,
    user: Option<String>,
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Response {
    (status, Json(json!({"error": why.into()}))).into_response()
}

/// A connection cap answered as `docs/PROTOCOL.md` says: 503 with
/// `Retry-After` for a full node (another may have room), 429 for one
/// address or one user over its cap.
fn refuse_cap(refusal: Refusal) -> Response {
    let (status, limit) = match refusal {
        Refusal::NodeFull => (StatusCode::SERVICE_UNAVAILABLE, "max_connections"),
        Refusal::PerIp => (StatusCode::TOO_MANY_REQUESTS, "max_connections_per_ip"),
        Refusal::PerUser => (StatusCode::TOO_MANY_REQUESTS, "max_connections_per_user"),
    };
    let body = json!({"error": refusal.to_string(), "limit": limit});
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

/// `GET /`: a small chat page speaking protocol v1, so a fresh cluster can
/// be tried (and a node killed under it) from a browser.
async fn demo() -> Html<&'static str> {
    Html(include_str!("demo.html"))
}

/// `GET /ws`: check the connect policy, then upgrade.
async fn websocket(
    State(node): State<Arc<Node>>,
    Query(query): Query<WsQuery>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if node.is_shutting_down() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "node shutting down");
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !auth::origin_allowed(node.config.allowed_origins.as_deref(), origin) {
        return refuse(StatusCode::FORBIDDEN, "origin not allowed");
    }
    // Embedded without connect info (a test's router): loopback.
    let peer_ip = peer.map_or(std::net::Ipv4Addr::LOCALHOST.into(), |p| p.0 .0.ip());
    let client_ip = node.admission.client_ip(peer_ip, &headers);
    let mut permit = match node.admission.enter(client_ip) {
        Ok(permit) => permit,
        Err(refusal) => {
            tracing::debug!(%client_ip, %refusal, "connection refused");
            return refuse_cap(refusal);
        }
    };
    let sid = match query.sid {
        Some(sid) if protocol::valid_sid(&sid) => sid,
        Some(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "sid must be 1-128 characters of A-Z a-z 0-9 - _ . : ~",
            )
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = query.token.as_deref().or(bearer);
    let identity = match node.auth.identify(token, query.user.as_deref(), &sid) {
        Ok(identity) => identity,
        Err(AuthError::BadUser { from_token: false }) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                AuthError::BadUser { from_token: false }.to_string(),
            )
        }
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, e.to_string()),
    };
    if let Err(refusal) = node.admission.bind_user(&mut permit, &identity.user) {
        tracing::debug!(user = %identity.user, %refusal, "connection refused");
        return refuse_cap(refusal);
    }
    let request = match ConnectRequest::resolve(&node, sid, identity).await {
        Ok(request) => request,
        Err(e) => {
            node.redis_error(&e);
            let mut resp = refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "session store unreachable; retry shortly",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp;
        }
    };
    let limit = node.config.limits.max_message_size;
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(SOCKET_BUFFER)
        .on_upgrade(move |socket| session::run(socket, node, request, permit))
}

/// `GET /health`: a real store round trip and a pub/sub probe, timed.
/// 200 while the node can serve (`healthy`, or `degraded` when Redis is
/// unreachable but local clients are served); 503 while shutting down.
async fn health(State(node): State<Arc<Node>>) -> Response {
    let (store, broker) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, node.store.ping()),
        tokio::time::timeout(PROBE_TIMEOUT, node.broker.probe()),
    );
    let store = store
        .map_err(|_| "timed out".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let broker = broker
        .map_err(|_| "timed out".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()));
    if store.is_err() || broker.is_err() {
        node.metrics.redis_errors.inc();
    }
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let conflict = node
        .cluster
        .worker_id_conflict(node.config.heartbeat_interval * 3);
    let status = if node.is_shutting_down() {
        "shutting_down"
    } else if store.is_ok() && broker.is_ok() && !conflict {
        "healthy"
    } else {
        "degraded"
    };
    let redis = if node.mode == "memory" {
        json!({"status": "not_configured", "mode": "memory", "latency_ms": null})
    } else {
        let mut r = json!({
            "status": if store.is_ok() { "connected" } else { "disconnected" },
            "mode": node.mode,
            "latency_ms": store.as_ref().ok().map(|d| ms(*d)),
            "pubsub": if broker.is_ok() { "connected" } else { "disconnected" },
            "pubsub_latency_ms": broker.as_ref().ok().map(|d| ms(*d)),
        });
        if let Some(e) = store.as_ref().err().or(broker.as_ref().err()) {
            r["error"] = Value::from(e.as_str());
        }
        r
    };
    let body = json!({
        "status": status,
        "websocket": {
            "worker_id": node.config.worker_id,
            "session_store_healthy": store.is_ok(),
            "message_broker_healthy": broker.is_ok(),
            "local_connections": node.hub.local_connections(),
            "total_sessions": node.cluster.total_sessions(),
            "total_workers": node.cluster.total_workers(),
            "worker_id_conflict": conflict,
        },
        "redis": redis,
    });
    let code = if node.is_shutting_down() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

/// `GET /api/websocket/stats`: this node and the cluster.
async fn stats(State(node): State<Arc<Node>>) -> Json<Value> {
    let m = &node.metrics;
    let workers = node.cluster.workers();
    Json(json!({
        "worker_id": node.config.worker_id,
        "node_id": node.config.node_id,
        "mode": node.mode,
        "uptime_secs": node.uptime().as_secs(),
        "local": {
            "connections": node.hub.local_connections(),
            "rooms": node.hub.rooms().len(),
            "connections_total": m.connections_total.get(),
            "messages_in": m.messages_in.get(),
            "messages_out": m.messages_out.get(),
            "slow_consumer_closes": m.slow_consumers.get(),
            "rate_limited": m.rate_limited.get(),
            "redis_errors": m.redis_errors.get(),
            "gaps_filled": m.gaps_filled.get(),
            "publishes_repeated": m.publishes_repeated.get(),
            "broker_connected": node.broker.is_connected(),
            "store_healthy": node.cluster.store_healthy(),
            "worker_id_conflict": node.cluster.worker_id_conflict(node.config.heartbeat_interval * 3),
            "dead_workers_cleaned": node.cluster.cleaned(),
        },
        "cluster": {
            "total_workers": node.cluster.total_workers(),
            "total_sessions": node.cluster.total_sessions(),
            "workers": workers,
        },
    }))
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(node): State<Arc<Node>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        node.metrics.render(),
    )
        .into_response()
}
