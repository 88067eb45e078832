//! The processes of the proxy benchmark: the [`Rig`] every peer proxies to
//! (backend processes and the certificate), the [`Peer`]s themselves, and
//! their start (pinned with `taskset`, readiness waited on, an early exit
//! caught with its log), reload and stop. Every process is a
//! `ringway-tests` harness [`Child`] on the kill-on-panic list, and a stop
//! kills its whole tree (nginx' and HAProxy's workers are not our
//! children). It measures nothing.
//!
//! ringway-proxy's start adapts to the build under test: a `[log]` table
//! the build refuses is left out and the start retried (noted), and a TLS
//! listener it refuses gives [`Unsupported`], so the scenario reports "not
//! supported by this build" instead of failing the run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ringway_tests::backend::TlsFiles;
use ringway_tests::{free_addr, http_client, target_bin, Child};
use tokio::net::TcpStream;

use crate::peers::{self, AccessLog, PeerKind, Site, TlsPaths};
use crate::procs::{self, PidGuard, Watched};

/// A feature the peer's build does not have: the scenario is skipped for it.
#[derive(Debug, thiserror::Error)]
#[error("not supported by this build: {0}")]
pub struct Unsupported(pub String);

/// A process that did not come up, with everything it printed.
#[derive(Debug, thiserror::Error)]
#[error("{name} {what}:\n{log}")]
pub struct StartFailed {
    name: String,
    what: &'static str,
    /// Its output (and nginx' error log).
    pub log: String,
}

/// A running process and its tree, killed on drop.
pub struct Proc {
    child: Child,
    _guard: PidGuard,
}

impl Proc {
    /// Spawn `cmd` and wait until every address of `ports` accepts; an exit
    /// before that, or 20 s without it, is a [`StartFailed`].
    pub async fn start(
        name: &str,
        cmd: Command,
        ports: &[SocketAddr],
    ) -> Result<Proc, StartFailed> {
        let child = Child::spawn(cmd);
        let mut proc = Proc {
            _guard: PidGuard::new(child.pid(), name),
            child,
        };
        let until = Instant::now() + Duration::from_secs(20);
        for addr in ports {
            while TcpStream::connect(addr).await.is_err() {
                let what = match proc.child.try_wait() {
                    Some(_) => "exited at start",
                    None if Instant::now() > until => "did not listen within 20 s",
                    None => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let (name, log) = (name.to_owned(), proc.log());
                return Err(StartFailed { name, what, log });
            }
        }
        Ok(proc)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// It and its descendants, parents first.
    pub fn tree(&self) -> Vec<u32> {
        procs::tree(self.pid())
    }

    /// Everything it printed.
    pub fn log(&self) -> String {
        self.child.log()
    }

    /// Wait (up to 5 s) until its tree has at least `n` processes: nginx'
    /// and HAProxy's workers are forked after the listener is bound.
    async fn await_tree(&self, n: usize) {
        let until = Instant::now() + Duration::from_secs(5);
        while self.tree().len() < n && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        for pid in self.tree().into_iter().skip(1) {
            // SAFETY: kill(2) on a descendant of our child, read just now.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        self.child.kill();
    }
}

/// The fixed part of a comparison: the backend processes (pinned to the
/// load core) and the certificate every TLS peer serves.
pub struct Rig {
    /// WebSocket echo (and HTTP) listeners: one `ringway-fixture` process.
    pub ws: Vec<SocketAddr>,
    /// HTTP listeners: one nginx worker answering `return 200`, cheaper per
    /// request than the fixture, so the backend is not what is measured.
    pub http: Vec<SocketAddr>,
    /// ECDSA P-256 certificate for 127.0.0.1, and the CA the clients trust.
    pub cert: TlsFiles,
    fixture: Proc,
    origin: Proc,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// Start the backend on `core` and make the certificate.
    pub async fn start(core: usize) -> anyhow::Result<Rig> {
        let ws: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
        let mut cmd = procs::pinned(core, target_bin("ringway-fixture"));
        for (name, addr) in ["a", "b", "c"].iter().zip(&ws) {
            cmd.arg("--server").arg(format!("{name}={addr}"));
        }
        let fixture = Proc::start("ringway-fixture", cmd, &ws).await?;
        let dir = tempfile::tempdir()?;
        let http: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, peers::nginx_origin(dir.path(), &http))?;
        let mut cmd = procs::pinned(core, "nginx");
        cmd.arg("-p").arg(dir.path()).arg("-c").arg(&path);
        let origin = Proc::start("nginx origin", cmd, &http).await?;
        origin.await_tree(2).await;
        Ok(Rig {
            ws,
            http,
            cert: TlsFiles::generate(),
            fixture,
            origin,
            _dir: dir,
        })
    }

    /// The backend processes, metered as "backend".
    pub fn watched(&self) -> Vec<Watched> {
        let mut pids = vec![self.fixture.pid()];
        pids.extend(self.origin.tree());
        pids.into_iter()
            .map(|p| Watched::new("backend", p))
            .collect()
    }

    /// The certificate as the peers' configs name it.
    pub fn tls(&self) -> TlsPaths {
        TlsPaths {
            cert: self.cert.cert.clone(),
            key: self.cert.key.clone(),
        }
    }
}

/// A running system under test (for `direct`, nothing runs).
pub struct Peer {
    /// Which one.
    pub kind: PeerKind,
    /// What its config was written from (a reload rewrites it).
    pub site: Site,
    /// How its start adapted to the build ("[log] refused …").
    pub notes: Vec<String>,
    proc: Option<Proc>,
    _dir: tempfile::TempDir,
}

/// What a reload of ringway-proxy was seen to do.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadSeen {
    /// The new config is in use, after this long (signal to swapped, ms).
    Swapped(f64),
    /// The proxy refused the new config.
    Failed(String),
    /// This build does not reload.
    Unsupported(String),
    /// Neither `/stats.json` nor the log said anything within 5 s.
    NotSeen,
}

impl Peer {
    /// Start `kind` in front of `upstreams` (serving `tls` if given), pinned
    /// to `core`, and wait until it serves.
    pub async fn start(
        kind: PeerKind,
        upstreams: &[SocketAddr],
        tls: Option<TlsPaths>,
        access_log: AccessLog,
        core: usize,
    ) -> anyhow::Result<Peer> {
        let dir = tempfile::tempdir()?;
        let site = Site {
            listen: if kind == PeerKind::Direct {
                upstreams[0]
            } else {
                free_addr()
            },
            admin: free_addr(),
            upstreams: upstreams.to_vec(),
            tls,
            connect_timeout_s: 2,
            access_log,
            dir: dir.path().to_owned(),
        };
        let mut peer = Peer {
            kind,
            site,
            notes: Vec::new(),
            proc: None,
            _dir: dir,
        };
        if kind == PeerKind::Direct {
            return Ok(peer);
        }
        loop {
            let path = peer.write_config()?;
            match peer.spawn(&path, core).await {
                Ok(p) => {
                    peer.proc = Some(p);
                    return Ok(peer);
                }
                Err(e) if kind == PeerKind::Ringway && e.log.lines().any(names_log_table) => {
                    anyhow::ensure!(peer.site.access_log != AccessLog::Omit, "{e}");
                    let note = "the [log] table was refused: ran without it";
                    peer.notes.push(note.into());
                    peer.site.access_log = AccessLog::Omit;
                }
                Err(e) if kind == PeerKind::Ringway && peer.site.tls.is_some() => {
                    let line = e.log.lines().find(|l| l.to_lowercase().contains("tls"));
                    let line = line.or(e.log.lines().last()).unwrap_or("exited at start");
                    return Err(Unsupported(format!("TLS listener: {}", plain(line))).into());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn write_config(&self) -> anyhow::Result<PathBuf> {
        let path = self.site.dir.join(peers::file_name(self.kind));
        std::fs::write(&path, peers::config(self.kind, &self.site))?;
        if self.kind == PeerKind::Haproxy {
            if let Some(t) = &self.site.tls {
                let pem = std::fs::read_to_string(&t.cert)? + &std::fs::read_to_string(&t.key)?;
                std::fs::write(self.site.dir.join("combined.pem"), pem)?;
            }
        }
        Ok(path)
    }

    async fn spawn(&self, path: &Path, core: usize) -> Result<Proc, StartFailed> {
        let (dir, listen) = (&self.site.dir, self.site.listen);
        let mut cmd = match self.kind {
            PeerKind::Ringway => procs::pinned(core, target_bin("ringway-proxy")),
            other => procs::pinned(core, other.name()),
        };
        match self.kind {
            PeerKind::Ringway => cmd.arg("--config").arg(path).env("RUST_LOG", "info"),
            PeerKind::Nginx => cmd.arg("-p").arg(dir).arg("-c").arg(path),
            PeerKind::Haproxy => cmd.args(["-W", "-db", "-f"]).arg(path),
            PeerKind::Caddy => caddy_env(
                cmd.args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(path),
                dir,
            ),
            PeerKind::Direct => unreachable!("direct runs nothing"),
        };
        let ports: &[SocketAddr] = match self.kind {
            PeerKind::Ringway => &[listen, self.site.admin],
            _ => &[listen],
        };
        let proc = Proc::start(self.kind.name(), cmd, ports).await?;
        if matches!(self.kind, PeerKind::Nginx | PeerKind::Haproxy) {
            proc.await_tree(2).await;
        }
        Ok(proc)
    }

    /// The URL of its listener: `scheme` is `http` or `ws`, made `https` or
    /// `wss` when it serves TLS.
    pub fn url(&self, scheme: &str, path: &str) -> String {
        let s = if self.site.tls.is_some() { "s" } else { "" };
        format!("{scheme}{s}://{}{path}", self.site.listen)
    }

    /// Its processes, metered as "proxy".
    pub fn watched(&self) -> Vec<Watched> {
        let pids = self.proc.as_ref().map(Proc::tree).unwrap_or_default();
        pids.into_iter().map(|p| Watched::new("proxy", p)).collect()
    }

    /// The root of its process tree (whose tree RSS is its memory).
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log).unwrap_or_default()
    }

    /// Log lines that look like warnings or errors (start-up notices of
    /// each program left out), for the report.
    pub fn complaints(&self) -> Vec<String> {
        let log = self.log();
        let benign = [
            "server is listening only on the http port",
            "http/2 skipped because it requires tls",
            "http/3 skipped because it requires tls",
            "automatic https is completely disabled",
            "sighup received",
            "reload",
            "no ocsp stapling",
            "stopped (cumulated conns",
        ];
        log.lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                ["warn", "error", "alert", "crit"]
                    .iter()
                    .any(|w| l.contains(w))
                    && !benign.iter().any(|b| l.contains(b))
            })
            .map(|l| l.chars().take(300).collect())
            .collect()
    }

    /// Rewrite the config with the other connect timeout and make the peer
    /// load it as its operators do: SIGHUP (ringway-proxy, nginx), SIGUSR2
    /// to the master (HAProxy `-W`), `caddy reload` (Caddy).
    pub async fn reload(&mut self) -> anyhow::Result<()> {
        let Some(proc) = &self.proc else {
            return Ok(());
        };
        self.site.connect_timeout_s = if self.site.connect_timeout_s == 2 {
            3
        } else {
            2
        };
        let path = self.write_config()?;
        match self.kind {
            PeerKind::Ringway | PeerKind::Nginx => proc.child.signal(libc::SIGHUP),
            PeerKind::Haproxy => proc.child.signal(libc::SIGUSR2),
            PeerKind::Caddy => {
                let mut cmd = tokio::process::Command::new("caddy");
                cmd.args(["reload", "--force", "--adapter", "caddyfile", "--config"])
                    .arg(&path)
                    .arg("--address")
                    .arg(self.site.admin.to_string());
                caddy_env(cmd.as_std_mut(), &self.site.dir);
                let out = cmd.output().await?;
                anyhow::ensure!(
                    out.status.success(),
                    "caddy reload: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            PeerKind::Direct => {}
        }
        Ok(())
    }

    /// [`Peer::reload`] ringway-proxy and watch for the outcome: a new
    /// `last_reload` in `/stats.json` (its `duration_ms` if present, else the
    /// time until it appeared), or else the first log line about the reload.
    pub async fn reload_seen(&mut self) -> anyhow::Result<ReloadSeen> {
        let stats_url = format!("http://{}/stats.json", self.site.admin);
        let last_reload = || async {
            let doc: serde_json::Value = http_client()
                .get(&stats_url)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            doc.get("last_reload").cloned()
        };
        let before = last_reload().await;
        let logged = self.log().len();
        let t0 = Instant::now();
        self.reload().await?;
        while t0.elapsed() < Duration::from_secs(5) {
            if let Some(now) = last_reload().await.filter(|n| Some(n) != before.as_ref()) {
                let ok = now
                    .get("result")
                    .and_then(|r| r.as_str())
                    .is_none_or(|r| r == "ok");
                let ms = now.get("duration_ms").and_then(|d| d.as_f64());
                return Ok(match ok {
                    true => ReloadSeen::Swapped(ms.unwrap_or(t0.elapsed().as_secs_f64() * 1e3)),
                    false => ReloadSeen::Failed(now.to_string()),
                });
            }
            let log = self.log();
            if let Some(line) = log
                .get(logged..)
                .and_then(|l| l.lines().find(|l| l.to_lowercase().contains("reload")))
            {
                return Ok(reload_line(line, t0.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(ReloadSeen::NotSeen)
    }
}

/// Whether `line` is ringway-proxy's config error naming the `[log]` table.
fn names_log_table(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("log:") || t.starts_with("log.")
}

/// `line` without terminal colour codes (`ESC [ … letter`).
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out.trim().to_owned()
}

/// What a log line about a reload says happened.
fn reload_line(line: &str, after: Duration) -> ReloadSeen {
    let line = plain(line);
    let l = line.to_lowercase();
    if l.contains("not implemented") || l.contains("ignored") || l.contains("unchanged") {
        ReloadSeen::Unsupported(line)
    } else if l.contains("fail") || l.contains("refus") || l.contains("error") {
        ReloadSeen::Failed(line)
    } else {
        ReloadSeen::Swapped(after.as_secs_f64() * 1e3)
    }
}

fn caddy_env<'a>(cmd: &'a mut Command, dir: &Path) -> &'a mut Command {
    cmd.env("GOMAXPROCS", "1")
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_build_from_its_messages() {
        assert!(names_log_table(
            "  log: unknown key (expected server, admin)"
        ));
        assert!(!names_log_table(
            "  listener[0].tls: TLS termination is not implemented yet"
        ));
        let unsupported = "WARN SIGHUP received: in-process reload is not implemented yet; configuration unchanged";
        assert!(matches!(
            reload_line(unsupported, Duration::ZERO),
            ReloadSeen::Unsupported(_)
        ));
        assert!(matches!(
            reload_line("ERROR reload failed: upstream.app", Duration::ZERO),
            ReloadSeen::Failed(_)
        ));
        assert_eq!(
            reload_line("INFO reloaded config", Duration::from_millis(7)),
            ReloadSeen::Swapped(7.0)
        );
    }
}
