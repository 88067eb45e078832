//! Active health checks: a background service that probes every server of
//! every pool on its pool's interval and feeds the verdicts to
//! [`ServerState::observe_check`](crate::upstream::ServerState::observe_check).
//!
//! The probes themselves are Pingora's (`HttpHealthCheck`, `TcpHealthCheck`);
//! this module owns only the schedule and the rise/fall bookkeeping, which
//! live in our server state so routing, stats and passive ejection see one
//! truth. It reads the runtime anew on every tick, so a reload's pools are
//! checked from the next tick on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::Backend;

use crate::config::{CheckKind, HealthCheck as CheckSettings};
use crate::runtime::{Runtime, SharedRuntime};
use crate::upstream::ServerState;

/// How often the scheduler looks for due checks. Small against any sane
/// interval, so a check runs at most this late.
const TICK: Duration = Duration::from_millis(100);

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

/// Build the Pingora probe for one pool's settings.
fn probe_for(settings: &CheckSettings) -> Arc<dyn HealthCheck + Send + Sync> {
    match &settings.kind {
        CheckKind::Tcp => {
            let mut check = TcpHealthCheck::new();
            check.peer_template.options.connection_timeout = Some(settings.timeout);
            check.peer_template.options.total_connection_timeout = Some(settings.timeout);
            Arc::from(check as Box<dyn HealthCheck + Send + Sync>)
        }
        CheckKind::Http { path, host } => {
            let mut check = HttpHealthCheck::new(host.as_deref().unwrap_or("localhost"), false);
            if let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) {
                let _ = req.append_header("Host", host.as_deref().unwrap_or("localhost"));
                let _ = req.append_header("User-Agent", "ringway-health-check");
                check.req = req;
            }
            check.peer_template.options.connection_timeout = Some(settings.timeout);
            check.peer_template.options.total_connection_timeout = Some(settings.timeout);
            check.peer_template.options.read_timeout = Some(settings.timeout);
            check.peer_template.options.write_timeout = Some(settings.timeout);
            check.validator = Some(Box::new(expect_2xx));
            Arc::new(check)
        }
    }
}

fn expect_2xx(resp: &ResponseHeader) -> pingora_core::Result<()> {
    if resp.status.is_success() {
        Ok(())
    } else {
        pingora_core::Error::e_explain(
            pingora_core::ErrorType::CustomCode("non-2xx health check", resp.status.as_u16()),
            "health check answered with a non-2xx status",
        )
    }
}

/// Run one probe with a hard deadline; `true` means healthy.
async fn run_probe(
    probe: &(dyn HealthCheck + Send + Sync),
    addr: SocketAddr,
    timeout: Duration,
) -> bool {
    let backend = Backend {
        addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(addr),
        weight: 1,
        ext: Default::default(),
    };
    // Connect and read timeouts apply per step; the outer deadline bounds the whole.
    let limit = timeout.saturating_mul(2);
    matches!(
        tokio::time::timeout(limit, probe.check(&backend)).await,
        Ok(Ok(()))
    )
}

/// Probe one server and record the result as one check of its streak.
async fn check_server(
    pool: &str,
    server: &ServerState,
    probe: &(dyn HealthCheck + Send + Sync),
    settings: &CheckSettings,
) {
    let ok = run_probe(probe, server.addr, settings.timeout).await;
    if let Some(healthy) = server.observe_check(ok, settings.rise, settings.fall) {
        report(pool, server, healthy);
    }
}

/// One round now, outside the schedule: every server of every pool that has
/// a health check is probed once (concurrently) and the verdicts recorded as
/// scheduled checks would. It exists so tests can prove that every config
/// the validator accepts can be probed without a panic; a panic inside a
/// probe is re-raised here rather than swallowed by its task.
pub async fn check_once(runtime: &Runtime) {
    let mut probes = tokio::task::JoinSet::new();
    for (name, pool) in &runtime.pools {
        let Some(settings) = pool.health_check() else {
            continue;
        };
        let probe = probe_for(settings);
        for server in &pool.servers {
            let (name, server, probe, settings) = (
                name.clone(),
                server.clone(),
                probe.clone(),
                settings.clone(),
            );
            probes.spawn(async move { check_server(&name, &server, &*probe, &settings).await });
        }
    }
    while let Some(done) = probes.join_next().await {
        if let Err(e) = done {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}

fn report(pool: &str, server: &ServerState, healthy: bool) {
    if healthy {
        tracing::info!(upstream = pool, server = %server.addr, "server is healthy again");
    } else {
        tracing::warn!(upstream = pool, server = %server.addr, "server failed its health checks; taking it out");
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Per (pool, server): when the next check is due.
        let mut due: HashMap<(String, SocketAddr), Instant> = HashMap::new();
        // Per pool: the probe and the settings it was built from.
        let mut probes: HashMap<String, (CheckSettings, Arc<dyn HealthCheck + Send + Sync>)> =
            HashMap::new();
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
                let probe = match probes.get(name) {
                    Some((built_for, probe)) if built_for == settings => probe.clone(),
                    _ => {
                        let probe = probe_for(settings);
                        probes.insert(name.clone(), (settings.clone(), probe.clone()));
                        probe
                    }
                };
                for server in &pool.servers {
                    let next = due.entry((name.clone(), server.addr)).or_insert(now);
                    if *next > now {
                        continue;
                    }
                    *next = now + settings.interval.max(settings.timeout);
                    let (server, probe, settings, pool_name) = (
                        server.clone(),
                        probe.clone(),
                        settings.clone(),
                        name.clone(),
                    );
                    tokio::spawn(async move {
                        check_server(&pool_name, &server, &*probe, &settings).await;
                    });
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
