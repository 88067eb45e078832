//! The processes the proxy benchmark compares, and the backend behind
//! them: their configs (pure functions, so the docs can quote them and
//! the tests can check them) and their start, readiness and stop.
//!
//! - [`Backend`]: three `ringway-fixture` listeners in one process (HTTP
//!   keep-alive and WebSocket echo) and, for the HTTP scenario, three
//!   listeners of one nginx worker answering `return 200` (cheaper per
//!   request than the fixture, so the backend is not what is measured).
//!   Pinned to the load core.
//! - [`Peer`]: ringway-proxy, nginx, HAProxy or Caddy with one worker /
//!   thread, pinned with `taskset` to the proxy core, hashing on
//!   `X-Session-Id` consistently, WebSocket idle limits of an hour; or
//!   `direct` (no proxy: the load goes to the first backend listener), the
//!   ceiling of the load core.
//!
//! Every process is a harness [`Child`] (killed when dropped, and when this
//! process dies) and its pids are on the kill-on-panic list; nginx' worker
//! is not our child, so [`Peer::stop`] stops the master gracefully and
//! then kills whatever of its tree is left.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ringway_tests::{free_addr, target_bin, wait_for_http_ok, wait_for_port, Child};
use serde::{Deserialize, Serialize};

use crate::procs::{self, PidGuard};

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    /// No proxy: the load core's own ceiling.
    Direct,
    /// ringway-proxy, release build.
    Ringway,
    /// nginx.
    Nginx,
    /// HAProxy.
    Haproxy,
    /// Caddy.
    Caddy,
}

impl PeerKind {
    /// Its name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Direct => "direct",
            PeerKind::Ringway => "ringway",
            PeerKind::Nginx => "nginx",
            PeerKind::Haproxy => "haproxy",
            PeerKind::Caddy => "caddy",
        }
    }

    /// The system binary it needs and the Debian package that has it.
    pub fn system_binary(self) -> Option<(&'static str, &'static str)> {
        match self {
            PeerKind::Nginx => Some(("nginx", "nginx")),
            PeerKind::Haproxy => Some(("haproxy", "haproxy")),
            PeerKind::Caddy => Some(("caddy", "caddy")),
            PeerKind::Direct | PeerKind::Ringway => None,
        }
    }
}

/// Where `name` is on the usual system paths, if installed.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| p.exists())
}

/// The version line a system binary prints (for the report).
pub fn version_of(kind: PeerKind) -> String {
    let out = match kind {
        PeerKind::Nginx => Command::new("nginx").arg("-v").output(),
        PeerKind::Haproxy => Command::new("haproxy").arg("-v").output(),
        PeerKind::Caddy => Command::new("caddy").arg("version").output(),
        PeerKind::Direct | PeerKind::Ringway => return String::new(),
    };
    out.map(|o| {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        text.lines().next().unwrap_or("").trim().to_owned()
    })
    .unwrap_or_default()
}

/// A command that runs `program` pinned to `core`.
fn pinned(core: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(core.to_string()).arg(program);
    cmd
}

// ---- configs ---------------------------------------------------------------

/// ringway-proxy: one thread, consistent hash on `X-Session-Id`, upgraded
/// tunnels idle up to an hour; `{LISTEN}`/`{ADMIN}` filled in.
pub fn ringway_toml(listen: SocketAddr, admin: SocketAddr, upstreams: &[SocketAddr]) -> String {
    let mut servers = String::new();
    for a in upstreams {
        let _ = writeln!(servers, "  {{ addr = \"{a}\" }},");
    }
    format!(
        r#"[server]
threads = 1
grace_period = "1s"

[admin]
listen = "{admin}"

[[listener]]
listen = "{listen}"

[[route]]
host = "*"
path_prefix = "/"
upstream = "app"

[upstream.app]
balance = "consistent-hash"
hash_key = ["header:x-session-id"]
balance_factor = 0
connect_timeout = "2s"
idle_timeout = "1h"
servers = [
{servers}]
"#
    )
}

/// nginx in front of `upstreams`: one worker, `hash $http_x_session_id
/// consistent`, keep-alive upstream, the Upgrade map, an hour of read
/// timeout for WebSockets.
pub fn nginx_proxy_conf(dir: &Path, listen: SocketAddr, upstreams: &[SocketAddr]) -> String {
    let servers: String = upstreams
        .iter()
        .map(|a| format!("    server {a};\n"))
        .collect();
    nginx_conf(
        dir,
        &format!(
            "  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n\
             \x20 upstream app {{\n    hash $http_x_session_id consistent;\n{servers}\
             \x20   keepalive 64;\n    keepalive_requests 1000000;\n  }}\n\
             \x20 server {{\n    listen {listen} backlog=4096;\n    location / {{\n\
             \x20     proxy_pass http://app;\n      proxy_http_version 1.1;\n\
             \x20     proxy_set_header Upgrade $http_upgrade;\n\
             \x20     proxy_set_header Connection $connection_upgrade;\n\
             \x20     proxy_read_timeout 3600s;\n      proxy_send_timeout 3600s;\n    }}\n  }}\n"
        ),
    )
}

/// The HTTP origin: one nginx worker answering `200 ok` on every address.
pub fn nginx_origin_conf(dir: &Path, listens: &[SocketAddr]) -> String {
    let listens: String = listens
        .iter()
        .map(|a| format!("    listen {a} backlog=4096;\n"))
        .collect();
    nginx_conf(
        dir,
        &format!("  server {{\n{listens}    location / {{ return 200 'ok'; }}\n  }}\n"),
    )
}

fn nginx_conf(dir: &Path, http_body: &str) -> String {
    let p = dir.display();
    format!(
        "daemon off;\nworker_processes 1;\nworker_rlimit_nofile 20000;\npid {p}/nginx.pid;\n\
         error_log {p}/error.log warn;\nevents {{ worker_connections 19000; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
         \x20 client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
         \x20 fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
         {http_body}}}\n"
    )
}

/// HAProxy: one thread, `balance hdr(X-Session-Id)` with consistent
/// hashing, `timeout tunnel 3600s`, `http-reuse safe`.
pub fn haproxy_cfg(listen: SocketAddr, upstreams: &[SocketAddr]) -> String {
    let servers: String = upstreams
        .iter()
        .enumerate()
        .map(|(i, a)| format!("    server b{} {a}\n", i + 1))
        .collect();
    format!(
        "global\n    nbthread 1\n    maxconn 9000\n\n\
         defaults\n    mode http\n    maxconn 9000\n    timeout connect 5s\n    timeout client 60s\n\
         \x20   timeout server 60s\n    timeout tunnel 3600s\n    timeout client-fin 5s\n\
         \x20   option http-keep-alive\n\n\
         frontend fe\n    bind {listen}\n    default_backend app\n\n\
         backend app\n    balance hdr(X-Session-Id)\n    hash-type consistent\n    http-reuse safe\n{servers}"
    )
}

/// Caddy: `lb_policy header X-Session-Id` over `upstreams`, no admin
/// endpoint, no automatic HTTPS.
pub fn caddyfile(listen: SocketAddr, upstreams: &[SocketAddr]) -> String {
    let ups: Vec<String> = upstreams.iter().map(|a| a.to_string()).collect();
    // Tabs, as `caddy fmt` writes them (Caddy warns about anything else).
    format!(
        "{{\n\tadmin off\n\tauto_https off\n}}\n\n\
         http://{listen} {{\n\tbind {ip}\n\treverse_proxy {ups} {{\n\
         \t\tlb_policy header X-Session-Id\n\t}}\n}}\n",
        ip = listen.ip(),
        ups = ups.join(" ")
    )
}

// ---- processes -------------------------------------------------------------

/// A running system under test (or `direct`, which runs nothing).
pub struct Peer {
    /// Which one.
    pub kind: PeerKind,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Its process and its descendants (nginx: master, worker), parents first.
    pub pids: Vec<u32>,
    /// Its config, as written (empty for `direct`).
    pub config: String,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    _guards: Vec<PidGuard>,
}

impl Peer {
    /// Start `kind` in front of `upstreams`, pinned to `core`, and wait
    /// until it serves.
    pub async fn start(
        kind: PeerKind,
        upstreams: &[SocketAddr],
        core: usize,
    ) -> anyhow::Result<Peer> {
        if kind == PeerKind::Direct {
            return Ok(Peer {
                kind,
                listen: upstreams[0],
                pids: Vec::new(),
                config: String::new(),
                child: None,
                dir: None,
                _guards: Vec::new(),
            });
        }
        let dir = tempfile::tempdir().context("tempdir")?;
        let listen = free_addr();
        let (cmd, config) = match kind {
            PeerKind::Ringway => {
                let admin = free_addr();
                let config = ringway_toml(listen, admin, upstreams);
                let path = dir.path().join("ringway.toml");
                std::fs::write(&path, &config)?;
                let mut cmd = pinned(core, target_bin("ringway-proxy"));
                cmd.arg("--config").arg(&path).env("RUST_LOG", "info");
                let child = Child::spawn(cmd);
                let ready = async {
                    wait_for_http_ok(&format!("http://{admin}/health"), Duration::from_secs(20))
                        .await?;
                    wait_for_port(listen, Duration::from_secs(20)).await
                };
                return Peer::ready(kind, listen, child, config, dir, ready).await;
            }
            PeerKind::Nginx => {
                let config = nginx_proxy_conf(dir.path(), listen, upstreams);
                let path = dir.path().join("nginx.conf");
                std::fs::write(&path, &config)?;
                nginx_check(dir.path(), &path)?;
                let mut cmd = pinned(core, "nginx");
                cmd.arg("-p").arg(dir.path()).arg("-c").arg(&path);
                (cmd, config)
            }
            PeerKind::Haproxy => {
                let config = haproxy_cfg(listen, upstreams);
                let path = dir.path().join("haproxy.cfg");
                std::fs::write(&path, &config)?;
                let check = Command::new("haproxy")
                    .arg("-c")
                    .arg("-f")
                    .arg(&path)
                    .output()?;
                if !check.status.success() {
                    bail!(
                        "haproxy -c failed:\n{}{}",
                        String::from_utf8_lossy(&check.stdout),
                        String::from_utf8_lossy(&check.stderr)
                    );
                }
                let mut cmd = pinned(core, "haproxy");
                cmd.arg("-db").arg("-f").arg(&path);
                (cmd, config)
            }
            PeerKind::Caddy => {
                let config = caddyfile(listen, upstreams);
                let path = dir.path().join("Caddyfile");
                std::fs::write(&path, &config)?;
                let mut cmd = pinned(core, "caddy");
                cmd.args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&path)
                    .env("GOMAXPROCS", "1")
                    .env("HOME", dir.path())
                    .env("XDG_DATA_HOME", dir.path().join("data"))
                    .env("XDG_CONFIG_HOME", dir.path().join("config"));
                (cmd, config)
            }
            PeerKind::Direct => unreachable!("handled above"),
        };
        let child = Child::spawn(cmd);
        let ready = wait_for_port(listen, Duration::from_secs(20));
        Peer::ready(kind, listen, child, config, dir, ready).await
    }

    async fn ready(
        kind: PeerKind,
        listen: SocketAddr,
        child: Child,
        config: String,
        dir: tempfile::TempDir,
        ready: impl std::future::Future<Output = Result<(), String>>,
    ) -> anyhow::Result<Peer> {
        let root = child.pid();
        let mut peer = Peer {
            kind,
            listen,
            pids: vec![root],
            config,
            child: Some(child),
            dir: Some(dir),
            _guards: vec![PidGuard::new(root, kind.name())],
        };
        if let Err(e) = ready.await {
            bail!("{} did not start: {e}\n{}", kind.name(), peer.log());
        }
        if kind == PeerKind::Nginx {
            // The worker is forked after the master binds.
            let until = Instant::now() + Duration::from_secs(5);
            while procs::tree(root).len() < 2 && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        peer.pids = procs::tree(root);
        for &pid in &peer.pids[1..] {
            peer._guards.push(PidGuard::new(pid, kind.name()));
        }
        Ok(peer)
    }

    /// The HTTP URL of its listener.
    pub fn http_url(&self) -> String {
        format!("http://{}/", self.listen)
    }

    /// The WebSocket URL of its listener.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.listen)
    }

    /// Everything it logged: stdout/stderr, and nginx' error log.
    pub fn log(&self) -> String {
        let mut out = self.child.as_ref().map(|c| c.log()).unwrap_or_default();
        if let Some(dir) = &self.dir {
            out.push_str(
                &std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default(),
            );
        }
        out
    }

    /// Log lines that look like warnings or errors (startup notices of
    /// each program filtered out), for the report.
    pub fn complaints(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                (l.contains("warn")
                    || l.contains("error")
                    || l.contains("alert")
                    || l.contains("crit"))
                    && !l.contains("admin endpoint disabled")
                    && !l.contains("server is listening only on the http port")
                    && !l.contains("http/2 skipped because it requires tls")
                    && !l.contains("http/3 skipped because it requires tls")
                    && !l.contains("automatic https is completely disabled")
            })
            .map(|l| l.chars().take(300).collect())
            .collect()
    }

    /// Stop it and everything it started (see the `Drop` impl).
    pub fn stop(self) {}
}

impl Drop for Peer {
    /// Stop the process and its descendants: nginx' master gets SIGTERM
    /// first and up to 3 s to take its worker down, then whatever is left
    /// of the tree is killed.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if self.kind == PeerKind::Nginx {
            child.signal(libc::SIGTERM);
            let until = Instant::now() + Duration::from_secs(3);
            while child.try_wait().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        child.kill();
        for &pid in self.pids.iter().skip(1) {
            kill_if_named(pid, self.kind.name());
        }
    }
}

/// SIGKILL `pid` if it still runs a program whose name contains `name`
/// (a pid we recorded may have been reused since).
fn kill_if_named(pid: u32, name: &str) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.contains(name) {
        // SAFETY: kill(2) on a process of ours, checked by name just now.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

fn nginx_check(prefix: &Path, conf: &Path) -> anyhow::Result<()> {
    let check = Command::new("nginx")
        .arg("-t")
        .arg("-q")
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(conf)
        .output()
        .context("run nginx -t")?;
    if !check.status.success() {
        bail!(
            "nginx -t failed:\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    Ok(())
}

/// What answers plain HTTP in the HTTP scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HttpBackend {
    /// One nginx worker, `return 200 'ok'` on three listeners.
    Nginx,
    /// The `ringway-fixture` listeners that also serve the WebSockets.
    Fixture,
}

/// The backend of every peer, pinned to the load core.
pub struct Backend {
    /// Upstreams of the HTTP scenario.
    pub http: Vec<SocketAddr>,
    /// Upstreams of the WebSocket scenarios (fixture echo).
    pub ws: Vec<SocketAddr>,
    /// Process ids to meter, by name.
    pub pids: Vec<(String, u32)>,
    fixture: Child,
    origin: Option<Peer>,
    _guards: Vec<PidGuard>,
}

impl Backend {
    /// Start the fixture (and the nginx origin if asked) on `core`.
    pub async fn start(http: HttpBackend, core: usize) -> anyhow::Result<Backend> {
        let ws: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
        let mut cmd = pinned(core, target_bin("ringway-fixture"));
        for (name, addr) in ["a", "b", "c"].iter().zip(&ws) {
            cmd.arg("--server").arg(format!("{name}={addr}"));
        }
        let fixture = Child::spawn(cmd);
        for addr in &ws {
            if let Err(e) = wait_for_port(*addr, Duration::from_secs(10)).await {
                bail!("ringway-fixture did not start: {e}\n{}", fixture.log());
            }
        }
        let mut pids = vec![("backend".to_owned(), fixture.pid())];
        let guards = vec![PidGuard::new(fixture.pid(), "ringway-fixture")];
        let (http_addrs, origin) = match http {
            HttpBackend::Fixture => (ws.clone(), None),
            HttpBackend::Nginx => {
                let listens: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
                let origin = start_origin(&listens, core).await?;
                pids.extend(origin.pids.iter().map(|p| ("backend".to_owned(), *p)));
                (listens, Some(origin))
            }
        };
        Ok(Backend {
            http: http_addrs,
            ws,
            pids,
            fixture,
            origin,
            _guards: guards,
        })
    }

    /// Stop both processes.
    pub fn stop(mut self) {
        self.origin.take();
        self.fixture.kill();
    }
}

async fn start_origin(listens: &[SocketAddr], core: usize) -> anyhow::Result<Peer> {
    let dir = tempfile::tempdir().context("tempdir")?;
    let config = nginx_origin_conf(dir.path(), listens);
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, &config)?;
    nginx_check(dir.path(), &path)?;
    let mut cmd = pinned(core, "nginx");
    cmd.arg("-p").arg(dir.path()).arg("-c").arg(&path);
    let child = Child::spawn(cmd);
    let ready = async {
        for a in listens {
            wait_for_port(*a, Duration::from_secs(10)).await?;
        }
        Ok(())
    };
    Peer::ready(PeerKind::Nginx, listens[0], child, config, dir, ready).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ups() -> Vec<SocketAddr> {
        vec![
            "127.0.0.1:9001".parse().unwrap(),
            "127.0.0.1:9002".parse().unwrap(),
        ]
    }

    #[test]
    fn configs_hash_on_the_session_header() {
        let l: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let t = ringway_toml(l, "127.0.0.1:9090".parse().unwrap(), &ups());
        assert!(t.contains("threads = 1") && t.contains("hash_key = [\"header:x-session-id\"]"));
        assert!(t.contains("{ addr = \"127.0.0.1:9002\" },"));
        let n = nginx_proxy_conf(Path::new("/tmp/x"), l, &ups());
        assert!(
            n.contains("hash $http_x_session_id consistent;") && n.contains("worker_processes 1;")
        );
        assert!(n.contains("proxy_read_timeout 3600s;") && n.contains("server 127.0.0.1:9002;"));
        let h = haproxy_cfg(l, &ups());
        assert!(h.contains("balance hdr(X-Session-Id)") && h.contains("nbthread 1"));
        assert!(h.contains("server b2 127.0.0.1:9002"));
        let c = caddyfile(l, &ups());
        assert!(c.contains("reverse_proxy 127.0.0.1:9001 127.0.0.1:9002 {"));
        assert!(c.contains("lb_policy header X-Session-Id"));
        let o = nginx_origin_conf(Path::new("/tmp/x"), &ups());
        assert!(
            o.contains("listen 127.0.0.1:9001 backlog=4096;") && o.contains("return 200 'ok';")
        );
    }
}
