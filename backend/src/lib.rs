//! `ringway-backend`: the WebSocket node behind `ringway-proxy`.
//!
//! **This is a skeleton.** It already has the node's outer contracts, so the
//! proxy, the end-to-end harness and the deployment files can rely on them:
//!
//! - CLI/env: `--listen` / `PORT` (a bare port means `127.0.0.1:PORT`),
//!   `--worker-id` / `WORKER_ID` (default `<hostname>-<pid>`);
//! - `GET /health` in the deployment guides' shape (`redis.status` is
//!   `"not_configured"`);
//! - `GET /ws`: a `welcome` frame (`sid` from `?sid=` or a fresh UUID v4),
//!   `ping` → `pong`, anything else echoed back;
//! - `X-WebSocket-Worker-ID`, `-Local-Connections`, `-Total-Sessions`,
//!   `-Total-Workers` on every HTTP response;
//! - graceful shutdown: WebSockets are closed with 1001 (going away).
//!
//! Coming next, over Redis (`REDIS_URL`; without it, single-node in memory):
//! `store` (sessions with a TTL refreshed while alive, resume on any node),
//! `broker` (pub/sub across nodes, reconnect and resubscribe by itself),
//! `history` (per-room streams with epoch/offset, exact replay or
//! `recovered:false`), `hub`/`protocol`/`session` (rooms, publish, direct
//! messages: protocol v1 in `docs/PROTOCOL.md`), `cluster` (node heartbeats,
//! exactly one survivor cleans a dead node), `auth` (JWT), and
//! `/api/websocket/stats` and `/metrics`.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::net::TcpListener;

pub mod config;
pub mod http;

pub use config::Config;
pub use http::{router, AppState};

/// How long shutdown waits for WebSockets to finish their close handshake.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Bind the configured address.
pub async fn bind(config: &Config) -> io::Result<TcpListener> {
    TcpListener::bind(config.listen).await
}

/// Serve a node on `listener` until `shutdown` resolves; then stop
/// accepting, close every WebSocket with 1001 and wait (at most
/// [`CLOSE_WAIT`]) for them to go.
pub async fn serve<F>(listener: TcpListener, state: AppState, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let app = router(state.clone());
    let signalled = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: closing websockets");
            signalled.begin_shutdown();
        })
        .await?;
    if !state.wait_idle(CLOSE_WAIT).await {
        tracing::warn!(
            left = state.local_connections(),
            "websockets still open after {CLOSE_WAIT:?}; dropping them"
        );
    }
    Ok(())
}

/// Bind and serve `config` until `shutdown` resolves.
pub async fn run<F>(config: Config, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let listener = bind(&config).await?;
    if config.redis_url.is_some() {
        tracing::warn!("REDIS_URL is set, but this build has no Redis support yet: running single-node, in memory");
    }
    tracing::info!(
        listen = %listener.local_addr()?,
        worker_id = %config.worker_id,
        "ringway-backend listening"
    );
    serve(listener, AppState::new(config.worker_id), shutdown).await
}
