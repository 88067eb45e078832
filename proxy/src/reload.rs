//! Reload in process, and the signals that drive the process from outside:
//! SIGHUP re-reads the config, SIGUSR1 reopens the access log, SIGUSR2
//! upgrades the binary (nginx's model).
//!
//! A reload re-reads the file, validates it as `--check` does, refuses it as
//! a whole when it changes what only a restart can (naming each key), builds
//! the new runtime from it and the old one — server state, TLS sessions and
//! open tunnels carried over — and swaps it in one atomic store. Any error
//! changes nothing and is logged with its TOML path, shown in `/stats.json`
//! (`last_reload`) and counted. A good reload logs each change on a line.
//!
//! The binary upgrade starts `<this binary> --config <file> --upgrade` as a
//! child (inside the same systemd unit), then hands it the listening sockets
//! through Pingora's SIGQUIT path; the new process announces itself
//! (`MAINPID=`) and the old one ends its tunnels cleanly and exits.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, Upstream};
use crate::process::{Process, ReloadRecord};
use crate::runtime::Runtime;

/// The background service watching SIGHUP, SIGUSR1 and SIGUSR2.
pub struct Reloader {
    process: Arc<Process>,
    config_path: PathBuf,
    binary: Option<PathBuf>,
}

impl Reloader {
    /// Reload from `config_path` on SIGHUP.
    pub fn new(process: Arc<Process>, config_path: PathBuf) -> Self {
        // The path this binary was started from, resolved now: after an
        // upgrade installs a new file there, SIGUSR2 runs the new one.
        let binary = std::env::args_os()
            .next()
            .map(PathBuf::from)
            .and_then(|p| std::fs::canonicalize(p).ok());
        Self {
            process,
            config_path,
            binary,
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (Ok(mut hup), Ok(mut usr1), Ok(mut usr2)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
            signal(SignalKind::user_defined2()),
        ) else {
            tracing::error!("cannot install the SIGHUP/SIGUSR1/SIGUSR2 handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    let _ = reload(&self.process, &self.config_path);
                }
                _ = usr1.recv() => {
                    tracing::info!("SIGUSR1: reopening the access log");
                    self.process.access_log.reopen();
                }
                _ = usr2.recv() => self.upgrade(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl Reloader {
    fn upgrade(&self) {
        let Some(binary) = &self.binary else {
            tracing::error!("SIGUSR2: cannot tell which binary to start");
            return;
        };
        tracing::info!(binary = %binary.display(), "SIGUSR2: starting the new binary with --upgrade");
        let child = std::process::Command::new(binary)
            .arg("--config")
            .arg(&self.config_path)
            .arg("--upgrade")
            .spawn();
        match child {
            Ok(child) => {
                tracing::info!(
                    pid = child.id(),
                    "new process started; handing the listeners over"
                );
                // Pingora's SIGQUIT path sends the listening sockets to the
                // new process (retrying until it listens) and shuts down.
                // SAFETY: sending ourselves a signal.
                unsafe { libc::kill(libc::getpid(), libc::SIGQUIT) };
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGUSR2: the new binary did not start; still running")
            }
        }
    }
}

/// Reload `process` from `path`. Returns the record it stored.
pub fn reload(process: &Process, path: &Path) -> ReloadRecord {
    crate::notify::reloading();
    let started = Instant::now();
    let current = process.runtime.load_full();
    let outcome = load_and_build(&current, path);
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let record = match outcome {
        Err(errors) => {
            for e in &errors {
                tracing::error!(error = %e, "reload failed; the running configuration is unchanged");
            }
            crate::notify::reloaded(Err(errors.first().map_or("", String::as_str)));
            ReloadRecord {
                seq: 0,
                time,
                result: "failed",
                errors,
                changes: Vec::new(),
                duration_ms,
            }
        }
        Ok((next, changes)) => {
            let next = Arc::new(next);
            if let Err(e) = process.access_log.reconfigure(&next.log) {
                tracing::error!(error = %e, "reload: log.access cannot be opened; the running configuration is unchanged");
                let record = ReloadRecord {
                    seq: 0,
                    time,
                    result: "failed",
                    errors: vec![format!("log.access: {e}")],
                    changes: Vec::new(),
                    duration_ms,
                };
                crate::notify::reloaded(Err("log.access cannot be opened"));
                process.record_reload(record.clone());
                return record;
            }
            process
                .admission
                .reconfigure(next.config.server.max_connections, &next.config.limits);
            process.runtime.store(next.clone());
            warn_expiring(&next);
            for c in &changes {
                tracing::info!(change = %c, "reload");
            }
            tracing::info!(
                changes = changes.len(),
                ms = format!("{duration_ms:.1}"),
                "reload done"
            );
            crate::notify::reloaded(Ok(()));
            ReloadRecord {
                seq: 0,
                time,
                result: "ok",
                errors: Vec::new(),
                changes,
                duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            }
        }
    };
    process.record_reload(record.clone());
    record
}

fn load_and_build(current: &Runtime, path: &Path) -> Result<(Runtime, Vec<String>), Vec<String>> {
    let next =
        Config::load(path).map_err(|e| e.0.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    let fixed = current.config.restart_required(&next);
    if !fixed.is_empty() {
        return Err(fixed
            .into_iter()
            .map(|k| format!("{k}: cannot change in a running process; restart, or start the new configuration with --upgrade"))
            .collect());
    }
    let runtime = Runtime::build(&next, Some(current), &crate::config::base_dir(path))
        .map_err(|e| e.0.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    let changes = describe_changes(current, &runtime);
    Ok((runtime, changes))
}

/// What a reload changes, one line per change.
pub fn describe_changes(old: &Runtime, new: &Runtime) -> Vec<String> {
    let (a, b) = (&*old.config, &*new.config);
    let mut out = Vec::new();
    let names: BTreeSet<&String> = a.upstreams.keys().chain(b.upstreams.keys()).collect();
    for name in names {
        match (a.upstreams.get(name), b.upstreams.get(name)) {
            (None, Some(u)) => out.push(format!(
                "upstream.{name}: added with {} servers",
                u.servers.len()
            )),
            (Some(_), None) => out.push(format!("upstream.{name}: removed")),
            (Some(x), Some(y)) => describe_pool(name, x, y, &mut out),
            (None, None) => {}
        }
    }
    if a.routes != b.routes {
        out.push(format!(
            "route: {} routes (was {})",
            b.routes.len(),
            a.routes.len()
        ));
    }
    if a.limits != b.limits {
        out.push("limits: changed".to_owned());
    }
    if a.log != b.log {
        out.push("log: changed".to_owned());
    }
    if a.admin.as_ref().map(|x| &x.token) != b.admin.as_ref().map(|x| &x.token) {
        out.push("admin.token: changed".to_owned());
    }
    for (i, (x, y)) in old.listeners.iter().zip(&new.listeners).enumerate() {
        if x.settings != y.settings {
            out.push(format!("listener[{i}]: settings changed"));
        }
        if let (Some(tx), Some(ty)) = (&x.tls, &y.tls) {
            for cert in &ty.certs {
                let before = tx.certs.iter().find(|c| c.at == cert.at);
                if before.is_none_or(|c| c.key.cert != cert.key.cert) {
                    out.push(format!("{}: certificate {} loaded", cert.at, cert.file));
                }
            }
        }
    }
    out
}

fn describe_pool(name: &str, x: &Upstream, y: &Upstream, out: &mut Vec<String>) {
    for s in &y.servers {
        match x.servers.iter().find(|o| o.addr == s.addr) {
            None => out.push(format!("upstream.{name}: server {} added", s.addr)),
            Some(o) if o != s => out.push(format!(
                "upstream.{name}: server {} changed (weight {} → {}, backup {} → {})",
                s.addr, o.weight, s.weight, o.backup, s.backup
            )),
            Some(_) => {}
        }
    }
    for o in &x.servers {
        if !y.servers.iter().any(|s| s.addr == o.addr) {
            out.push(format!(
                "upstream.{name}: server {} removed (its tunnels end within drain_timeout {:?})",
                o.addr, y.drain_timeout
            ));
        }
    }
    let settings_only = |u: &Upstream| Upstream {
        servers: Vec::new(),
        ..u.clone()
    };
    if settings_only(x) != settings_only(y) {
        out.push(format!("upstream.{name}: settings changed"));
    }
}

/// Certificates that have expired or expire within 14 days, one line each:
/// logged at start and after a reload, and printed by `--check`.
pub fn expiry_warnings(runtime: &Runtime) -> Vec<String> {
    let now = SystemTime::now();
    let mut out = Vec::new();
    for l in &runtime.listeners {
        for cert in l.tls.iter().flat_map(|t| &t.certs) {
            if cert.expiring(now) {
                let days = cert.expires_in(now) / 86_400;
                out.push(format!(
                    "{}: certificate {} expired or expires within 14 days ({days} days left)",
                    cert.at, cert.file
                ));
            }
        }
    }
    out
}

/// Log [`expiry_warnings`] as warnings.
pub fn warn_expiring(runtime: &Runtime) {
    for warning in expiry_warnings(runtime) {
        tracing::warn!("{warning}");
    }
}
