//! Start-up: turn a validated config into a running Pingora server — the
//! proxy service on every listener, the health checker, the admin listener —
//! and refuse, by name, settings whose feature does not exist yet.

use pingora_core::apps::http_app::HttpServer;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;

use crate::admin::Admin;
use crate::config::Config;
use crate::health::HealthChecker;
use crate::notify;
use crate::runtime::Runtime;
use crate::service::RingwayProxy;

/// Why the proxy would not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config asks for features this build does not have yet; running
    /// without them silently would be worse than not running.
    #[error("not supported yet, refusing to start without them:\n{}", .0.join("\n"))]
    Unsupported(Vec<String>),
}

/// Settings that parse and validate but whose feature has not landed: each
/// entry names the TOML path. Empty when the config can run as written.
pub fn unsupported_settings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        if l.tls.is_some() {
            out.push(format!(
                "listener[{i}].tls: TLS termination is not implemented yet"
            ));
        }
    }
    {
        let limits = &config.limits;
        let rate_settings = [
            ("requests_per_second", limits.requests.is_some()),
            (
                "max_connections_per_ip",
                limits.max_connections_per_ip.is_some(),
            ),
            (
                "websocket_upgrades_per_second",
                limits.websocket_upgrades.is_some(),
            ),
        ];
        for (name, set) in rate_settings {
            if set {
                out.push(format!(
                    "limits.{name}: rate and connection limits are not implemented yet"
                ));
            }
        }
    }
    if config.admin.as_ref().is_some_and(|a| a.token.is_some()) {
        out.push("admin.token: admin POST actions are not implemented yet".to_owned());
    }
    out
}

/// Build the server for `config` and run it until a shutdown signal; this
/// call exits the process when the server stops.
/// `upgrade` takes the listeners over from a running instance (SIGQUIT).
pub fn run(config: Config, upgrade: bool) -> Result<(), StartError> {
    let unsupported = unsupported_settings(&config);
    if !unsupported.is_empty() {
        return Err(StartError::Unsupported(unsupported));
    }
    let first_port = config.listeners.first().map_or(0, |l| l.listen.port());
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout.as_secs()),
        upgrade_sock: format!("/tmp/ringway-upgrade-{first_port}.sock"),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let runtime = Runtime::build(&config, None).shared();

    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        RingwayProxy::new(runtime.clone()),
        "ringway proxy",
    );
    for listener in &config.listeners {
        proxy.add_tcp(&listener.listen.to_string());
    }
    server.add_service(proxy);

    let mut health = background_service("health checks", HealthChecker::new(runtime.clone()));
    health.threads = Some(1);
    server.add_service(health);

    server.add_service(notify::lifecycle_service(&config, upgrade)); // ringway:notify READY=1, WATCHDOG=1

    let mut hangup = background_service("SIGHUP", HangupGuard);
    hangup.threads = Some(1);
    server.add_service(hangup);

    if let Some(admin) = &config.admin {
        let mut svc = Service::new(
            "ringway admin".to_owned(),
            HttpServer::new_app(Admin::new(runtime)),
        );
        svc.add_tcp(&admin.listen.to_string());
        svc.threads = Some(1);
        server.add_service(svc);
    }
    tracing::info!(
        listeners = config.listeners.len(),
        upstreams = config.upstreams.len(),
        "ringway-proxy starting"
    );
    server.run(notify::run_args()); // ringway:notify STOPPING=1 on SIGTERM/SIGINT
    std::process::exit(0)
}

/// SIGHUP's default action kills a process, and Pingora installs no handler
/// for it; an operator's `systemctl reload` must not take the proxy down.
/// Until in-process reload lands, a SIGHUP is logged and ignored.
struct HangupGuard;

#[async_trait::async_trait]
impl BackgroundService for HangupGuard {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("could not install the SIGHUP handler");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    notify::reloading(); // ringway:notify RELOADING=1
                    tracing::warn!("SIGHUP received: in-process reload is not implemented yet; configuration unchanged");
                    notify::reloaded(Err("in-process reload is not implemented yet")); // ringway:notify READY=1
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
