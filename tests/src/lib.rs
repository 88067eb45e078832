//! The end-to-end test harness: real processes on free loopback ports.
//!
//! - [`Fixture`]: the `ringway-fixture` upstream server (this crate's binary).
//! - [`Proxy`]: the real `ringway-proxy` binary with a config the test writes.
//! - [`Nginx`]: the system nginx, for compatibility checks.
//! - [`notify_socket::NotifySocket`]: a service manager's `NOTIFY_SOCKET`,
//!   to hear what a process announces (sd_notify).
//! - Clients: [`http_client`], WebSocket helpers ([`ws_connect`] …), and a
//!   byte-level client that checks the close handshake ([`strict_ws`]).
//! - Browsers: headless chromium driven by node scripts ([`browser`]).
//! - TLS: a test CA making certificates, and clients trusting it ([`tls`]).
//!
//! Every process is a [`Child`] that is killed when dropped, so a failing
//! test leaves nothing behind. Readiness is waited on (a port that answers,
//! an endpoint that says 200), never slept for.

pub mod backend;
pub mod browser;
pub mod chaos;
pub mod configs;
pub mod contracts;
pub mod edge;
pub mod load;
pub mod metrics;
pub mod notify_socket;
pub mod raw;
pub mod sticky;
pub mod strict_ws;
pub mod tls;
pub mod tokens;

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A WebSocket client connection as the helpers return it.
pub type WsClient = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The client key eager-101 fixtures answer without reading it.
pub const FIXED_WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port nothing listens on, never handed out twice in one test binary.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        let mut seen = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// `127.0.0.1:` + [`free_port`].
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A workspace binary built in the same target dir and profile as the
/// running executable: a test (`target/<profile>/deps/<test>`) or a tool
/// of the workspace (`target/<profile>/<tool>`).
pub fn target_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir");
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().expect("target dir")
    } else {
        dir
    };
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "binary {name} not built in {}: run \"cargo build --workspace --bins\" first (scripts/test.sh does this)",
        profile_dir.display()
    );
    bin
}

/// Everything a finished command printed, stdout then stderr: for
/// assertions on a command's words and for failure messages.
pub fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A spawned process, killed (SIGKILL) and reaped on drop. Its output goes
/// to a log file that [`Child::log`] reads back for failure messages.
pub struct Child {
    inner: Option<std::process::Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Child {
    /// Start `cmd` with stdout and stderr going to a fresh log file.
    pub fn spawn(mut cmd: Command) -> Child {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("output.log");
        let file = std::fs::File::create(&log).expect("log file");
        // If the test process dies without unwinding (killed, aborted),
        // its children die with it instead of holding ports.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let inner = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Child {
            inner: Some(inner),
            log,
            _dir: dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.inner.as_ref().map_or(0, |c| c.id())
    }

    /// Send a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.inner {
            // SAFETY: plain kill(2) on a child we own.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Kill and reap now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.inner.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process has exited; its status if so.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.inner
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait until `addr` accepts a TCP connection.
pub async fn wait_for_port(addr: SocketAddr, within: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if start.elapsed() > within {
            return Err(format!("{addr} did not accept within {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until `GET url` answers 200.
pub async fn wait_for_http_ok(url: &str, within: Duration) -> Result<(), String> {
    let client = http_client();
    let start = Instant::now();
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status() == 200 {
                return Ok(());
            }
        }
        if start.elapsed() > within {
            return Err(format!("{url} did not answer 200 within {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET url` and its JSON body; panics, naming the URL, if either fails.
pub async fn get_json(url: &str) -> serde_json::Value {
    let resp = http_client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// An HTTP client for tests: keep-alive pool, no proxy from the environment.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .build()
        .expect("http client")
}

/// How a [`Fixture`] misbehaves, if at all.
#[derive(Debug, Clone, Copy)]
pub struct FixtureOpts {
    /// Write `101` before reading the request (Pingora #946's trigger).
    pub eager_101: bool,
    /// Accept and reset every connection.
    pub reset: bool,
    /// Status of `GET /health`.
    pub health_status: u16,
    /// Answer upgrades with this status instead of 101.
    pub upgrade_status: Option<u16>,
}

impl Default for FixtureOpts {
    fn default() -> Self {
        Self {
            eager_101: false,
            reset: false,
            health_status: 200,
            upgrade_status: None,
        }
    }
}

/// A `ringway-fixture` process serving named upstream servers.
pub struct Fixture {
    /// Server name → address.
    pub addrs: BTreeMap<String, SocketAddr>,
    /// The process.
    pub child: Child,
}

impl Fixture {
    /// Start servers with these names, each on a free port.
    pub async fn start(names: &[&str], opts: FixtureOpts) -> Fixture {
        let servers: Vec<(&str, SocketAddr)> = names.iter().map(|n| (*n, free_addr())).collect();
        Self::start_at(&servers, opts).await
    }

    /// Start servers at given addresses (to bring a stopped one back).
    pub async fn start_at(servers: &[(&str, SocketAddr)], opts: FixtureOpts) -> Fixture {
        let mut cmd = Command::new(target_bin("ringway-fixture"));
        for (name, addr) in servers {
            cmd.arg("--server").arg(format!("{name}={addr}"));
        }
        if opts.eager_101 {
            cmd.arg("--eager-101");
        }
        if opts.reset {
            cmd.arg("--reset");
        }
        cmd.arg("--health-status")
            .arg(opts.health_status.to_string());
        if let Some(status) = opts.upgrade_status {
            cmd.arg("--upgrade-status").arg(status.to_string());
        }
        let child = Child::spawn(cmd);
        for (_, addr) in servers {
            if let Err(e) = wait_for_port(*addr, Duration::from_secs(10)).await {
                panic!("fixture: {e}\n{}", child.log());
            }
        }
        Fixture {
            addrs: servers.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
            child,
        }
    }

    /// The address of server `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs[name]
    }

    /// The name of the server at `addr`.
    pub fn name_of(&self, addr: SocketAddr) -> Option<&str> {
        self.addrs
            .iter()
            .find(|(_, a)| **a == addr)
            .map(|(n, _)| n.as_str())
    }

    /// Stop every server of this fixture.
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

/// A running `ringway-proxy`.
pub struct Proxy {
    /// The client-facing listener.
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The process.
    pub child: Child,
    /// Where its config was written.
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Write `config_toml` (with `{LISTEN}` and `{ADMIN}` filled in with
    /// free addresses), start the proxy on it, wait until it serves.
    pub async fn start(config_toml: &str) -> Proxy {
        Self::start_with_env(config_toml, &[]).await
    }

    /// [`Proxy::start`] with extra environment variables (they override the
    /// harness' `RUST_LOG=info`).
    pub async fn start_with_env(config_toml: &str, env: &[(&str, &str)]) -> Proxy {
        let proxy = Proxy::spawn(config_toml, env);
        let ready = async {
            wait_for_http_ok(&proxy.admin_url("/health"), Duration::from_secs(20)).await?;
            wait_for_port(proxy.listen, Duration::from_secs(20)).await
        };
        if let Err(e) = ready.await {
            let text = std::fs::read_to_string(&proxy.config_path).unwrap_or_default();
            panic!(
                "proxy did not start: {e}\nconfig:\n{text}\nlog:\n{}",
                proxy.child.log()
            );
        }
        proxy
    }

    /// [`Proxy::start`] with extra environment variables, without waiting:
    /// for a test that watches the start-up itself.
    pub fn spawn(config_toml: &str, env: &[(&str, &str)]) -> Proxy {
        let (listen, admin) = (free_addr(), free_addr());
        let text = config_toml
            .replace("{LISTEN}", &listen.to_string())
            .replace("{ADMIN}", &admin.to_string());
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("ringway.toml");
        std::fs::write(&config_path, &text).expect("write config");
        let child = Child::spawn(proxy_command(&config_path, &[], env));
        Proxy {
            listen,
            admin,
            child,
            config_path,
            _dir: dir,
        }
    }

    /// A second proxy on the same config started with `--upgrade`, to take
    /// the listeners over once this one gets SIGQUIT. Not waited on.
    pub fn spawn_successor(&self, env: &[(&str, &str)]) -> Child {
        Child::spawn(proxy_command(&self.config_path, &["--upgrade"], env))
    }

    /// `http://LISTEN` + `path_and_query`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.listen)
    }

    /// `http://ADMIN` + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The admin `/stats.json` document.
    pub async fn stats(&self) -> serde_json::Value {
        get_json(&self.admin_url("/stats.json")).await
    }

    /// The admin `/metrics` exposition, parsed by a Prometheus text parser.
    pub async fn metrics(&self) -> metrics::Scrape {
        metrics::scrape(&self.admin_url("/metrics")).await
    }

    /// `config_toml` with this proxy's `{LISTEN}` and `{ADMIN}` filled in.
    pub fn fill(&self, config_toml: &str) -> String {
        config_toml
            .replace("{LISTEN}", &self.listen.to_string())
            .replace("{ADMIN}", &self.admin.to_string())
    }

    /// Write `config_toml` (placeholders filled) over the config file and
    /// send SIGHUP; returns the reload record once `/stats.json` shows a
    /// new one (the reload is synchronous in the proxy, so this is prompt).
    pub async fn reload_with(&self, config_toml: &str) -> serde_json::Value {
        let before = self.stats().await["last_reload"].clone();
        std::fs::write(&self.config_path, self.fill(config_toml)).expect("write config");
        self.child.signal(libc::SIGHUP);
        let start = Instant::now();
        loop {
            let now = self.stats().await["last_reload"].clone();
            if !now.is_null() && now != before {
                return now;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no reload within 10 s\n{}",
                self.child.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What a service manager hands its service (sd_notify), cleared for
/// every process a test starts unless the test sets it: a test run under
/// systemd must not make its children talk to the real manager.
pub const MANAGER_ENV: &[&str] = &["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

fn proxy_command(config: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(target_bin("ringway-proxy"));
    for var in MANAGER_ENV {
        cmd.env_remove(var);
    }
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied());
    cmd
}

/// The system nginx, run in the foreground with a private prefix.
pub struct Nginx {
    /// Where it listens (the `{LISTEN}` of the caller's config).
    pub listen: SocketAddr,
    /// The process.
    pub child: Child,
    _dir: tempfile::TempDir,
}

fn nginx_binary() -> PathBuf {
    let candidates = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("nginx is not installed: run \"apt-get install -y nginx\" (scripts/test.sh does this)")
        })
}

impl Nginx {
    /// Run nginx with `http_block_body` inside `http { }`; `{LISTEN}` in it
    /// becomes a free address.
    pub async fn start(http_block_body: &str) -> Nginx {
        let bin = nginx_binary();
        let listen = free_addr();
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().display().to_string();
        let body = http_block_body.replace("{LISTEN}", &listen.to_string());
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\n\
             error_log {p}/error.log warn;\nevents {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
               fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
               keepalive_requests 1000000;\n{body}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, &conf).expect("write nginx.conf");
        let check = Command::new(&bin)
            .arg("-t")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .output()
            .expect("run nginx -t");
        assert!(
            check.status.success(),
            "nginx -t failed:\n{}\n{conf}",
            String::from_utf8_lossy(&check.stderr)
        );
        let mut cmd = Command::new(&bin);
        cmd.arg("-p").arg(dir.path()).arg("-c").arg(&conf_path);
        let child = Child::spawn(cmd);
        if let Err(e) = wait_for_port(listen, Duration::from_secs(10)).await {
            panic!("nginx: {e}\n{}", child.log());
        }
        Nginx {
            listen,
            child,
            _dir: dir,
        }
    }
}

/// Open a WebSocket to `url` with extra request headers (a `Host` given
/// here replaces the URL's). The error names the status of a refused upgrade.
pub async fn ws_connect(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    for (k, v) in headers {
        let name: http::HeaderName = k.parse().map_err(|e| format!("{e}"))?;
        req.headers_mut()
            .insert(name, v.parse().map_err(|e| format!("{e}"))?);
    }
    let connect = tokio_tungstenite::connect_async(req);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok((ws, _resp))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => Err(format!(
            "{url}: upgrade refused with {}",
            resp.status().as_u16()
        )),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Err(_) => Err(format!("{url}: handshake timed out")),
    }
}

/// [`ws_connect`] with the fixed key that eager-101 fixtures expect.
pub async fn ws_connect_fixed_key(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, String> {
    let mut all = headers.to_vec();
    all.push(("Sec-WebSocket-Key", FIXED_WS_KEY));
    ws_connect(url, &all).await
}

/// Receive the next text message, within 10 s.
pub async fn ws_recv_text(ws: &mut WsClient) -> Result<String, String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Err(_) => return Err("no message within 10 s".into()),
            Ok(None) => return Err("connection ended".into()),
            Ok(Some(Err(e))) => return Err(format!("websocket error: {e}")),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.to_string()),
            Ok(Some(Ok(Message::Close(c)))) => return Err(format!("closed: {c:?}")),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Ask a fixture's WebSocket echo which server it is.
pub async fn ws_whoami(ws: &mut WsClient) -> String {
    ws.send(Message::Text("whoami".into()))
        .await
        .expect("send whoami");
    ws_recv_text(ws).await.expect("whoami reply")
}

/// Send `msg` and expect it echoed back unchanged.
pub async fn ws_echo(ws: &mut WsClient, msg: &str) -> Result<(), String> {
    ws.send(Message::Text(msg.into()))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let got = ws_recv_text(ws).await?;
    if got == msg {
        Ok(())
    } else {
        Err(format!("sent {msg:?}, got {got:?}"))
    }
}
