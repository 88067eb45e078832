//! Active health checks: a background service that probes every server of
//! every pool on its pool's interval and feeds the verdicts to
//! [`ServerState::observe_check`](crate::upstream::ServerState::observe_check).
//!
//! Probes connect exactly as requests do — the same connector, the same
//! upstream TLS verification — so a server passes its check only if
//! requests would reach it. A probe that fails for a reason local to this
//! process (out of file descriptors, out of memory) is inconclusive: it
//! never marks a server down, so a connection flood on the proxy cannot
//! make healthy backends look dead. It reads the runtime anew on every
//! tick, so a reload's pools are checked from the next tick on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{CheckKind, HealthCheck as CheckSettings};
use crate::h1::upstream::{connect, ConnectError};
use crate::runtime::{Runtime, SharedRuntime};
use crate::tls::UpstreamTlsConfig;
use crate::upstream::{Pool, ServerState};

/// How often the scheduler looks for due checks. Small against any sane
/// interval, so a check runs at most this late.
const TICK: Duration = Duration::from_millis(100);

/// What one probe concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The server answered as required.
    Up,
    /// The server refused, timed out, or answered wrongly.
    Down,
    /// This process could not run the probe (no descriptor…): no verdict.
    Inconclusive,
}

/// The background service that runs the checks.
pub struct HealthChecker {
    runtime: SharedRuntime,
}

impl HealthChecker {
    /// A checker over whatever runtime `runtime` holds at each tick.
    pub fn new(runtime: SharedRuntime) -> Self {
        Self { runtime }
    }
}

/// Probe `addr` once as `settings` say, within its timeout.
pub async fn probe(
    settings: &CheckSettings,
    addr: SocketAddr,
    tls: Option<&UpstreamTlsConfig>,
) -> Probe {
    let attempt = async {
        let mut stream = match connect(addr, settings.timeout, tls).await {
            Ok(s) => s,
            Err(ConnectError::Local(_)) => return Probe::Inconclusive,
            Err(_) => return Probe::Down,
        };
        let CheckKind::Http { path, host } = &settings.kind else {
            return Probe::Up;
        };
        let host = host.as_deref().unwrap_or("localhost");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringway-health-check\r\nConnection: close\r\n\r\n"
        );
        if stream.write_all(request.as_bytes()).await.is_err() || stream.flush().await.is_err() {
            return Probe::Down;
        }
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(_)) => {
                    return match resp.code {
                        Some(code) if (200..300).contains(&code) => Probe::Up,
                        _ => Probe::Down,
                    };
                }
                Ok(httparse::Status::Partial) if buf.len() < 16 * 1024 => {}
                _ => return Probe::Down,
            }
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return Probe::Down,
            }
        }
    };
    // Connect and read each have the timeout; the outer deadline bounds the whole.
    tokio::time::timeout(settings.timeout.saturating_mul(2), attempt)
        .await
        .unwrap_or(Probe::Down)
}

fn report(pool: &str, server: &ServerState, healthy: bool) {
    if healthy {
        tracing::info!(upstream = pool, server = %server.addr, "server is healthy again");
    } else {
        tracing::warn!(upstream = pool, server = %server.addr, "server failed its health checks; taking it out");
    }
}

/// Probe one server and record the verdict.
async fn check_server(
    pool_name: String,
    settings: CheckSettings,
    server: Arc<ServerState>,
    tls: Option<Arc<UpstreamTlsConfig>>,
) {
    match probe(&settings, server.addr, tls.as_deref()).await {
        Probe::Inconclusive => {
            tracing::warn!(upstream = %pool_name, server = %server.addr, "health check could not run (local resources); verdict unchanged");
        }
        verdict => {
            if let Some(healthy) =
                server.observe_check(verdict == Probe::Up, settings.rise, settings.fall)
            {
                report(&pool_name, &server, healthy);
            }
        }
    }
}

/// Check every server of every pool with a health check once, now, and
/// wait for the verdicts (the property test drives the checker this way).
pub async fn check_once(runtime: &Runtime) {
    let mut all = Vec::new();
    for (name, pool) in &runtime.pools {
        let Some(settings) = pool.health_check() else {
            continue;
        };
        for server in &pool.servers {
            all.push(check_server(
                name.clone(),
                settings.clone(),
                server.clone(),
                pool.tls.clone(),
            ));
        }
    }
    futures_util::future::join_all(all).await;
}

fn due_servers<'a>(
    pool: &'a Pool,
    now: Instant,
    due: &mut HashMap<(String, SocketAddr), Instant>,
    settings: &CheckSettings,
) -> Vec<&'a Arc<ServerState>> {
    let mut out = Vec::new();
    for server in &pool.servers {
        let next = due
            .entry((pool.name().to_owned(), server.addr))
            .or_insert(now);
        if *next > now {
            continue;
        }
        *next = now + settings.interval.max(settings.timeout);
        out.push(server);
    }
    out
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Per (pool, server): when the next check is due.
        let mut due: HashMap<(String, SocketAddr), Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            let runtime = self.runtime.load_full();
            let now = Instant::now();
            for (name, pool) in &runtime.pools {
                let Some(settings) = pool.health_check() else {
                    continue;
                };
                for server in due_servers(pool, now, &mut due, settings) {
                    tokio::spawn(check_server(
                        name.clone(),
                        settings.clone(),
                        server.clone(),
                        pool.tls.clone(),
                    ));
                }
            }
            due.retain(|(pool, addr), _| {
                runtime
                    .pools
                    .get(pool)
                    .is_some_and(|p| p.server(*addr).is_some())
            });
        }
    }
}
