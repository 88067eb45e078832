//! HTTP face of a node: the router, `/health`, the `/ws` endpoint and the
//! `X-WebSocket-*` headers that every response carries.
//!
//! The WebSocket side is the skeleton of protocol v1: a `welcome` frame,
//! `ping` → `pong`, and any other frame echoed back. Rooms, sessions and
//! resume arrive with the Redis-backed store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

/// Name of the node that answered.
pub const HEADER_WORKER_ID: HeaderName = HeaderName::from_static("x-websocket-worker-id");
/// WebSocket clients connected to this node.
pub const HEADER_LOCAL_CONNECTIONS: HeaderName =
    HeaderName::from_static("x-websocket-local-connections");
/// Sessions known cluster-wide (only local ones until the shared store lands).
pub const HEADER_TOTAL_SESSIONS: HeaderName = HeaderName::from_static("x-websocket-total-sessions");
/// Live nodes in the cluster (1 until cluster membership lands).
pub const HEADER_TOTAL_WORKERS: HeaderName = HeaderName::from_static("x-websocket-total-workers");

/// WebSocket close code sent to clients when the node shuts down (1001, going away).
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Longest `?sid=` accepted, in bytes.
pub const MAX_SID_LEN: usize = 128;

/// State shared by every request of one node. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    worker_id: String,
    local_connections: AtomicUsize,
    shutdown: watch::Sender<bool>,
    idle: Notify,
}

impl AppState {
    pub fn new(worker_id: impl Into<String>) -> Self {
        AppState {
            inner: Arc::new(Inner {
                worker_id: worker_id.into(),
                local_connections: AtomicUsize::new(0),
                shutdown: watch::Sender::new(false),
                idle: Notify::new(),
            }),
        }
    }

    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// WebSocket clients connected to this node right now.
    pub fn local_connections(&self) -> usize {
        self.inner.local_connections.load(Ordering::Acquire)
    }

    /// Sessions known to the cluster. Without the shared store, the local ones.
    pub fn total_sessions(&self) -> usize {
        self.local_connections()
    }

    /// Live nodes. Without cluster membership, this one.
    pub fn total_workers(&self) -> usize {
        1
    }

    /// Tell every WebSocket to close with 1001 (going away).
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Wait until no WebSocket is left, or `timeout`. True when none is left.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.inner.idle.notified();
                if self.local_connections() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    fn connection(&self) -> ConnectionGuard {
        self.inner.local_connections.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard {
            state: self.clone(),
        }
    }
}

/// Counts one live WebSocket; uncounts it when dropped, however the task ends.
struct ConnectionGuard {
    state: AppState,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let inner = &self.state.inner;
        if inner.local_connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            inner.idle.notify_waiters();
        }
    }
}

/// The node's routes, with the `X-WebSocket-*` headers on every response
/// (including 404s and refused upgrades).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ws", get(websocket))
        .layer(middleware::from_fn_with_state(state.clone(), node_headers))
        .with_state(state)
}

async fn node_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(state.worker_id()) {
        headers.insert(HEADER_WORKER_ID, v);
    }
    headers.insert(
        HEADER_LOCAL_CONNECTIONS,
        HeaderValue::from(state.local_connections()),
    );
    headers.insert(
        HEADER_TOTAL_SESSIONS,
        HeaderValue::from(state.total_sessions()),
    );
    headers.insert(
        HEADER_TOTAL_WORKERS,
        HeaderValue::from(state.total_workers()),
    );
    resp
}

/// The deployment guides' health shape. Without Redis there is nothing to
/// probe: the store and broker are in-process and healthy by construction.
pub fn health_body(state: &AppState) -> Value {
    json!({
        "status": "healthy",
        "websocket": {
            "worker_id": state.worker_id(),
            "session_store_healthy": true,
            "message_broker_healthy": true,
            "local_connections": state.local_connections(),
            "total_sessions": state.total_sessions(),
            "total_workers": state.total_workers(),
        },
        "redis": {
            "status": "not_configured",
            "latency_ms": null,
        },
    })
}

async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(health_body(&state))
}

#[derive(Debug, Default, Deserialize)]
struct WsParams {
    sid: Option<String>,
}

/// A client-chosen session id: printable ASCII without spaces, at most
/// [`MAX_SID_LEN`] bytes. Empty means "none given".
fn valid_sid(sid: &str) -> bool {
    !sid.is_empty() && sid.len() <= MAX_SID_LEN && sid.bytes().all(|b| b.is_ascii_graphic())
}

async fn websocket(
    State(state): State<AppState>,
    Query(params): Query<WsParams>,
    ws: WebSocketUpgrade,
) -> Response {
    if state.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let sid = match params.sid.filter(|s| !s.is_empty()) {
        None => uuid::Uuid::new_v4().to_string(),
        Some(s) if valid_sid(&s) => s,
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("sid must be 1..={MAX_SID_LEN} printable ASCII characters\n"),
            )
                .into_response()
        }
    };
    ws.on_upgrade(move |socket| client(socket, state, sid))
}

/// True for a text frame that is a JSON object with `"type":"ping"`.
fn is_ping(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(|t| t == "ping"))
        .unwrap_or(false)
}

async fn client(mut socket: WebSocket, state: AppState, sid: String) {
    let _counted = state.connection();
    let welcome = json!({
        "type": "welcome",
        "sid": sid,
        "worker_id": state.worker_id(),
        "user": null,
        "resumed": false,
    });
    if socket
        .send(Message::Text(welcome.to_string()))
        .await
        .is_err()
    {
        return;
    }
    tracing::debug!(%sid, "websocket open");
    let mut shutdown = state.inner.shutdown.subscribe();
    loop {
        tokio::select! {
            msg = socket.recv() => {
                let reply = match msg {
                    Some(Ok(Message::Text(text))) if is_ping(&text) => {
                        Message::Text(r#"{"type":"pong"}"#.to_owned())
                    }
                    Some(Ok(Message::Text(text))) => Message::Text(text),
                    Some(Ok(Message::Binary(data))) => Message::Binary(data),
                    // Control frames are answered by the WebSocket layer itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        tracing::debug!(%sid, error = %e, "websocket error");
                        break;
                    }
                };
                if socket.send(reply).await.is_err() {
                    break;
                }
            }
            _ = shutdown.wait_for(|down| *down) => {
                let frame = CloseFrame {
                    code: CLOSE_GOING_AWAY,
                    reason: "server shutting down".into(),
                };
                let _ = socket.send(Message::Close(Some(frame))).await;
                break;
            }
        }
    }
    tracing::debug!(%sid, "websocket closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids() {
        assert!(valid_sid("demo"));
        assert!(valid_sid("3f1c7a2e-6f0b-4a8e-9d2c-1b2a3c4d5e6f"));
        assert!(!valid_sid(""));
        assert!(!valid_sid("has space"));
        assert!(!valid_sid(&"x".repeat(MAX_SID_LEN + 1)));
    }

    #[test]
    fn pings() {
        assert!(is_ping(r#"{"type":"ping"}"#));
        assert!(is_ping(r#" { "type" : "ping", "id": 7 } "#));
        assert!(!is_ping(r#"{"type":"pong"}"#));
        assert!(!is_ping("ping"));
        assert!(!is_ping(r#"["ping"]"#));
    }

    #[test]
    fn health_shape() {
        let state = AppState::new("n1");
        let body = health_body(&state);
        assert_eq!(body["status"], "healthy");
        assert_eq!(body["websocket"]["worker_id"], "n1");
        assert_eq!(body["websocket"]["total_workers"], 1);
        assert_eq!(body["redis"]["status"], "not_configured");
        assert!(body["redis"]["latency_ms"].is_null());
    }
}
