//! Start-up: turn a validated config into a running proxy — the process
//! state, the listeners and their worker threads, the HTTP/2 applications,
//! the health checker, the reloader, the admin listener — under Pingora's
//! server, which owns signals, graceful shutdown and the `--upgrade`
//! hand-over.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora_core::apps::http_app::HttpServer;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;

use crate::access_log::AccessLog;
use crate::admin::Admin;
use crate::admission::Admission;
use crate::config::{Config, ConfigErrors};
use crate::health::HealthChecker;
use crate::listen::Listeners;
use crate::process::Process;
use crate::reload::Reloader;
use crate::runtime::Runtime;

/// Why the proxy would not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Files the config names could not be used.
    #[error("{0}")]
    Config(ConfigErrors),
    /// `[server] max_connections` does not fit the open-file limit.
    #[error("{0}")]
    Limits(String),
    /// The access log cannot be opened.
    #[error("log.access: {0}")]
    AccessLog(std::io::Error),
    /// The upgrade socket's directory does not exist, so a later binary
    /// upgrade could not hand the listeners over.
    #[error("server.upgrade_sock: the directory {0} does not exist")]
    UpgradeSock(String),
}

/// Descriptors kept free beyond two per client connection: health checks,
/// pooled upstream connections, the admin listener, logs.
fn fd_reserve(config: &Config) -> u64 {
    let servers: usize = config.upstreams.values().map(|u| u.servers.len()).sum();
    64 + (servers as u64) * (config.server.threads as u64 + 2)
}

/// Raise the soft open-file limit to the hard one and work out how many
/// client connections fit: two descriptors each, plus the reserve. A
/// configured `max_connections` that does not fit is refused by name.
pub fn connection_cap(config: &Config) -> Result<usize, StartError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read a plain struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    let nofile = lim.rlim_cur;
    let reserve = fd_reserve(config);
    let fits = nofile.saturating_sub(reserve) / 2;
    match config.server.max_connections {
        Some(max) if u64::from(max) > fits => Err(StartError::Limits(format!(
            "server.max_connections: {max} connections need {} file descriptors (2 each plus {reserve} in reserve) but the open-file limit is {nofile}; lower it or raise LimitNOFILE",
            u64::from(max) * 2 + reserve
        ))),
        Some(max) => Ok(max as usize),
        None if fits == 0 => Err(StartError::Limits(format!(
            "the open-file limit ({nofile}) leaves no room for client connections"
        ))),
        None => Ok(fits.min(1_000_000) as usize),
    }
}

/// The default upgrade socket: one per first listener port, so two proxies
/// on one machine do not collide.
fn upgrade_sock(config: &Config) -> PathBuf {
    config.server.upgrade_sock.clone().unwrap_or_else(|| {
        let port = config.listeners.first().map_or(0, |l| l.listen.port());
        PathBuf::from(format!("/tmp/ringway-upgrade-{port}.sock"))
    })
}

/// Build the server for `config` (read from `config_path`) and run it until
/// shutdown. `upgrade` takes the listeners over from a running instance.
pub fn run(config: Config, config_path: &Path, upgrade: bool) -> Result<(), StartError> {
    let max_connections = connection_cap(&config)?;
    let sock = upgrade_sock(&config);
    if let Some(dir) = sock
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        return Err(StartError::UpgradeSock(dir.display().to_string()));
    }
    let runtime = Runtime::build(&config, None, &crate::config::base_dir(config_path))
        .map_err(StartError::Config)?;
    crate::reload::warn_expiring(&runtime);
    let access_log = AccessLog::start(&runtime.log).map_err(StartError::AccessLog)?;
    let listen: Vec<SocketAddr> = config.listeners.iter().map(|l| l.listen).collect();
    let process = Arc::new(Process::new(
        runtime.shared(),
        Admission::new(max_connections, &config.limits),
        listen.len(),
        access_log,
    ));

    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout.as_secs()),
        upgrade_sock: sock.display().to_string(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    crate::h2::install(&process, &server.configuration, listen.len());

    server.add_service(Listeners::new(
        process.clone(),
        listen,
        config.server.threads,
    ));
    // READY=1 (with MAINPID= after --upgrade) once every address listens,
    // then the watchdog.
    server.add_service(crate::notify::lifecycle_service(&config, upgrade));

    let mut health =
        background_service("health checks", HealthChecker::new(process.runtime.clone()));
    health.threads = Some(1);
    server.add_service(health);

    let mut reloader = background_service(
        "reload",
        Reloader::new(process.clone(), config_path.to_path_buf()),
    );
    reloader.threads = Some(1);
    server.add_service(reloader);

    if let Some(admin) = &config.admin {
        let mut svc = Service::new(
            "ringway admin".to_owned(),
            HttpServer::new_app(Admin::new(process.clone(), admin.listen)),
        );
        svc.add_tcp(&admin.listen.to_string());
        svc.threads = Some(1);
        server.add_service(svc);
    }
    tracing::info!(
        listeners = config.listeners.len(),
        upstreams = config.upstreams.len(),
        max_connections,
        "ringway-proxy starting"
    );
    // Pingora's signal handling, with STOPPING=1 when a signal ends the service.
    server.run(crate::notify::run_args());
    Ok(())
}
