//! The backend half of the harness: a private `redis-server` (standalone,
//! TLS, or a three-master cluster), `ringway-backend` nodes as processes,
//! and a protocol-v1 client ([`Peer`]) that speaks JSON frames.
//!
//! Like the rest of the harness, every process is killed when its handle
//! drops, and readiness is polled (a `PING` that answers, a `/health` that
//! says 200), never slept for.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

pub use crate::tokens::{mint_token, unix_now, user_token, TEST_JWT_SECRET};
use crate::{free_port, http_client, target_bin, wait_for_http_ok, ws_connect, Child, WsClient};

fn system_binary(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: run \"apt-get install -y redis-server\" (scripts/test.sh does this)")
}

/// TLS material for a `rediss://` server: a CA and a server certificate
/// for `127.0.0.1`, written as PEM files into a private directory.
pub struct TlsFiles {
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The server certificate.
    pub cert: PathBuf,
    /// The server key.
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsFiles {
    /// Make a fresh CA and a server certificate signed by it.
    pub fn generate() -> TlsFiles {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ringway test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &ca, &ca_key).expect("server cert");
        let files = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            _dir: dir,
        };
        std::fs::write(&files.ca, ca.pem()).expect("write ca");
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}

/// How a [`RedisServer`] listens.
#[derive(Default)]
pub struct RedisOpts {
    /// `requirepass`.
    pub password: Option<String>,
    /// Serve TLS only (the plain port is disabled).
    pub tls: Option<std::sync::Arc<TlsFiles>>,
    /// Keep data across a restart (AOF, fsync on every write), as a
    /// production Redis would; otherwise it restarts empty.
    pub persistent: bool,
    /// Extra `--name value` arguments.
    pub args: Vec<String>,
}

/// A private `redis-server` on a free loopback port, keeping nothing on disk.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    opts: RedisOpts,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// A plain server with no password.
    pub async fn start() -> RedisServer {
        Self::start_with(RedisOpts::default()).await
    }

    /// A server that is not running yet: its port is reserved and its URL
    /// known; [`RedisServer::restart`] starts it.
    pub fn not_started(opts: RedisOpts) -> RedisServer {
        RedisServer {
            port: free_port(),
            opts,
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A server as `opts` say.
    pub async fn start_with(opts: RedisOpts) -> RedisServer {
        let mut server = Self::not_started(opts);
        server.restart().await;
        server
    }

    /// `redis://` (or `rediss://`) URL with the password, if any.
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.opts.password {
            Some(pw) => format!("{scheme}://:{pw}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// Kill it (SIGKILL: nothing is saved).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// Start it (again) on the same port, empty, and wait until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new(system_binary("redis-server"));
        let aof = if self.opts.persistent {
            ["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            ["--appendonly", "no", "--appendfsync", "no"]
        };
        cmd.args(["--bind", "127.0.0.1", "--save", ""])
            .args(aof)
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--protected-mode", "no"]);
        match &self.opts.tls {
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port"])
                    .arg(self.port.to_string())
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                cmd.arg("--port").arg(self.port.to_string());
            }
        }
        if let Some(pw) = &self.opts.password {
            cmd.arg("--requirepass").arg(pw);
        }
        cmd.args(&self.opts.args);
        let child = Child::spawn(cmd);
        let start = Instant::now();
        while !self.answers().await {
            // A restart replays its AOF first (answering LOADING meanwhile);
            // after a long run under load that takes a while.
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "redis-server on {} did not answer PING:\n{}",
                self.port,
                child.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child = Some(child);
    }

    /// Serve on `port` from now on (`CONFIG SET port`): the same process,
    /// data and `run_id` at another address — a promoted replica taking
    /// over its primary's address, as a failover does.
    pub async fn move_to_port(&mut self, port: u16) {
        self.cmd(&["CONFIG", "SET", "port", &port.to_string()]);
        self.port = port;
        let start = Instant::now();
        while !self.answers().await {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis did not move to {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it answers `PING` within `within` (a plain server only).
    pub async fn answers_within(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.answers())
            .await
            .unwrap_or(false)
    }

    /// Whether it answers `PING` now.
    pub async fn answers(&self) -> bool {
        let mut args = vec!["PING".to_owned()];
        if self.opts.tls.is_some() {
            return self.cli(&args).is_ok_and(|out| out.trim() == "PONG");
        }
        if let Some(pw) = &self.opts.password {
            args = vec!["AUTH".into(), pw.clone()];
        }
        let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_secs(1),
            TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        else {
            return false;
        };
        let cmd = format!(
            "*{}\r\n{}",
            args.len(),
            args.iter()
                .map(|a| format!("${}\r\n{a}\r\n", a.len()))
                .collect::<String>()
        );
        if s.write_all(cmd.as_bytes()).await.is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await,
            Ok(Ok(n)) if buf[..n].starts_with(b"+OK") || buf[..n].starts_with(b"+PONG")
        )
    }

    /// Run `redis-cli` against it; its stdout.
    pub fn cli(&self, args: &[String]) -> Result<String, String> {
        let mut cmd = Command::new(system_binary("redis-cli"));
        cmd.args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string());
        if let Some(tls) = &self.opts.tls {
            cmd.arg("--tls").arg("--cacert").arg(&tls.ca);
        }
        if let Some(pw) = &self.opts.password {
            cmd.arg("--no-auth-warning").arg("-a").arg(pw);
        }
        let out = cmd.args(args).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// [`RedisServer::cli`] with string slices.
    pub fn cmd(&self, args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.cli(&args)
            .unwrap_or_else(|e| panic!("redis-cli {args:?}: {e}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of three masters (no replicas) on free loopback ports,
/// made with `redis-server --cluster-enabled yes` and `redis-cli --cluster create`.
pub struct RedisCluster {
    /// The masters.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Start three nodes and join them; wait until the cluster says ok.
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let server = RedisServer::start_with(RedisOpts {
                args: vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ],
                ..RedisOpts::default()
            })
            .await;
            nodes.push(server);
        }
        // Each node needs its own cluster config file; redis puts it in --dir.
        let mut create: Vec<String> = vec!["--cluster".into(), "create".into()];
        create.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        create.extend([
            "--cluster-replicas".into(),
            "0".into(),
            "--cluster-yes".into(),
        ]);
        nodes[0]
            .cli(&create)
            .unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"));
        let start = Instant::now();
        loop {
            let ok = nodes.iter().all(|n| {
                n.cli(&["CLUSTER".into(), "INFO".into()])
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if ok {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the cluster did not reach cluster_state:ok"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        RedisCluster { nodes }
    }

    /// `redis-cluster://h1:p1,h2:p2,h3:p3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://{}", hosts.join(","))
    }
}

/// A `ringway-backend` process.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its `WORKER_ID`.
    pub worker_id: String,
    /// The process.
    pub child: Child,
    env: Vec<(String, String)>,
}

/// Variables the backend reads, cleared so the test's own environment
/// cannot leak into a node.
const BACKEND_ENV: &[&str] = &[
    "PORT",
    "WORKER_ID",
    "NODE_ID",
    "REDIS_URL",
    "REDIS_TLS_CA",
    "WEBSOCKET_SESSION_TTL",
    "WS_GRACE_PERIOD",
    "WS_HEARTBEAT_INTERVAL",
    "JWT_SECRET",
    "ALLOWED_ORIGINS",
    "WS_MAX_MESSAGE_SIZE",
    "WS_RATE_LIMIT",
    "WS_RATE_BURST",
    "WS_OUTBOUND_QUEUE",
    "HISTORY_SIZE",
    "HISTORY_TTL",
    "HISTORY_MAX_RECOVER",
    "REDIS_DURABLE",
    "HOST",
    "JWT_AUDIENCE",
    "JWT_ISSUER",
    "JWT_LEEWAY",
    "API_KEY",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_USER",
    "MAX_CONNECTIONS_PER_IP",
    "TRUSTED_PROXIES",
    "USER_PUBLISH_RATE",
    "USER_PUBLISH_BURST",
    "USER_DIRECT_RATE",
    "USER_DIRECT_BURST",
];

/// The HTTP status of a refused WebSocket upgrade (a test fails if it is
/// accepted).
pub async fn refused_status(url: &str, headers: &[(&str, &str)]) -> u16 {
    match ws_connect(url, headers).await {
        Ok(_) => panic!("{url} was accepted"),
        Err(e) => e
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP refusal: {e}")),
    }
}

impl Backend {
    /// Start a node named `worker_id` with these environment variables
    /// (`PORT` and `WORKER_ID` are set here), wait until `/health` answers 200.
    pub async fn start(worker_id: &str, env: &[(&str, &str)]) -> Backend {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Self::start_at(addr, worker_id, env).await
    }

    /// [`Backend::start`] on a given address (to bring a node back).
    pub async fn start_at(addr: SocketAddr, worker_id: &str, env: &[(&str, &str)]) -> Backend {
        let backend = Self::spawn_at(addr, worker_id, env);
        if let Err(e) = wait_for_http_ok(&backend.url("/health"), Duration::from_secs(20)).await {
            panic!("backend {worker_id}: {e}\n{}", backend.child.log());
        }
        backend
    }

    /// [`Backend::start_at`] without waiting: for a test that watches the
    /// start-up itself.
    pub fn spawn_at(addr: SocketAddr, worker_id: &str, env: &[(&str, &str)]) -> Backend {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut cmd = Command::new(target_bin("ringway-backend"));
        for var in BACKEND_ENV.iter().chain(crate::MANAGER_ENV) {
            cmd.env_remove(var);
        }
        cmd.env("PORT", addr.to_string())
            .env("WORKER_ID", worker_id)
            .env("RUST_LOG", "info,ringway_backend=debug")
            .envs(env.iter().map(|(k, v)| (k, v)));
        let child = Child::spawn(cmd);
        Backend {
            addr,
            worker_id: worker_id.to_owned(),
            child,
            env,
        }
    }

    /// Start the same node again (same address, id and settings) after it stopped.
    pub async fn restart(&mut self) {
        self.child.kill();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        *self = Backend::start_at(self.addr, &self.worker_id.clone(), &env).await;
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://ADDR/ws?` + `query`.
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws?{query}", self.addr)
    }

    /// `GET path`: status and JSON body.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = http_client()
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The `status` field of `/health`.
    pub async fn health_status(&self) -> String {
        let (_, body) = self.get_json("/health").await;
        body["status"].as_str().unwrap_or("").to_owned()
    }
}

/// Poll `check` every 50 ms until it is true or `within` has passed.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A protocol-v1 client: one WebSocket, JSON frames in and out.
pub struct Peer {
    ws: WsClient,
    /// Frames read past by [`Peer::recv_until`], handed out first by [`Peer::recv`].
    pending: VecDeque<Value>,
    /// The last request id [`Peer::publish`] used.
    next_id: u64,
    /// The `welcome` frame.
    pub welcome: Value,
}

/// How long a [`Peer`] waits for a frame.
pub const FRAME_WAIT: Duration = Duration::from_secs(10);

impl Peer {
    /// Connect to `url` and read the `welcome` frame. A fresh session is
    /// also joined to `*` and its inbox: those two `joined` frames are read
    /// too, so the next frame is the answer to whatever the test sends.
    pub async fn connect(url: &str) -> Result<Peer, String> {
        Self::connect_with(url, &[]).await
    }

    /// [`Peer::connect`] with extra request headers.
    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Peer, String> {
        let ws = ws_connect(url, headers).await?;
        let mut peer = Peer {
            ws,
            pending: VecDeque::new(),
            next_id: 0,
            welcome: Value::Null,
        };
        let welcome = peer.recv().await?;
        if welcome["type"] != "welcome" {
            return Err(format!("expected welcome, got {welcome}"));
        }
        if welcome["resumed"] == false {
            for _ in 0..2 {
                let joined = peer.recv().await?;
                if joined["type"] != "joined" {
                    return Err(format!("expected the implicit joins, got {joined}"));
                }
            }
        }
        peer.welcome = welcome;
        Ok(peer)
    }

    /// The session id the server gave.
    pub fn sid(&self) -> String {
        self.welcome["sid"].as_str().unwrap_or("").to_owned()
    }

    /// Send a JSON frame.
    pub async fn send(&mut self, frame: Value) -> Result<(), String> {
        self.send_text(&frame.to_string()).await
    }

    /// Send raw text.
    pub async fn send_text(&mut self, text: &str) -> Result<(), String> {
        self.send_message(Message::Text(text.into())).await
    }

    /// Send a raw WebSocket message, within [`FRAME_WAIT`].
    pub async fn send_message(&mut self, msg: Message) -> Result<(), String> {
        match tokio::time::timeout(FRAME_WAIT, self.ws.send(msg)).await {
            Ok(sent) => sent.map_err(|e| format!("send: {e}")),
            Err(_) => Err(format!("send did not complete within {FRAME_WAIT:?}")),
        }
    }

    /// The next JSON frame, within [`FRAME_WAIT`]. A close is an error
    /// naming its code.
    pub async fn recv(&mut self) -> Result<Value, String> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(frame);
        }
        self.recv_socket().await
    }

    async fn recv_socket(&mut self) -> Result<Value, String> {
        // One deadline for the frame, however many pings come first.
        let deadline = tokio::time::Instant::now() + FRAME_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Err(format!("no frame within {FRAME_WAIT:?}")),
                Ok(None) => return Err("connection ended".into()),
                Ok(Some(Err(e))) => return Err(format!("websocket error: {e}")),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return serde_json::from_str(&t).map_err(|e| format!("{t}: {e}"))
                }
                Ok(Some(Ok(Message::Close(c)))) => {
                    return Err(format!("closed: {:?}", c.map(|c| u16::from(c.code))))
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The first frame of type `kind`; frames before it stay queued for
    /// [`Peer::recv`], in order.
    pub async fn recv_until(&mut self, kind: &str) -> Result<Value, String> {
        self.recv_until_any(&[kind]).await
    }

    /// The first frame of any of these types; frames before it stay queued.
    pub async fn recv_until_any(&mut self, kinds: &[&str]) -> Result<Value, String> {
        let wanted = |f: &Value| kinds.iter().any(|k| f["type"] == *k);
        if let Some(i) = self.pending.iter().position(wanted) {
            return Ok(self.pending.remove(i).expect("index in range"));
        }
        loop {
            let frame = self.recv_socket().await?;
            if wanted(&frame) {
                return Ok(frame);
            }
            self.pending.push_back(frame);
        }
    }

    /// Keep the connection alive for `time` (reading answers the server's
    /// pings), queueing whatever frames arrive for [`Peer::recv`].
    pub async fn pump(&mut self, time: Duration) -> Result<(), String> {
        let until = tokio::time::Instant::now() + time;
        loop {
            match tokio::time::timeout_at(until, self.recv_socket()).await {
                Err(_) => return Ok(()),
                Ok(Ok(frame)) => self.pending.push_back(frame),
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// Whether no frame arrives within `quiet` (pings are not frames).
    pub async fn is_silent(&mut self, quiet: Duration) -> Result<(), Value> {
        match tokio::time::timeout(quiet, self.recv()).await {
            Err(_) => Ok(()),
            Ok(Ok(frame)) => Err(frame),
            Ok(Err(e)) => Err(Value::String(e)),
        }
    }

    /// `join` (with `since` = `(epoch, offset)` if given); the `joined` frame.
    pub async fn join(&mut self, room: &str, since: Option<(&str, u64)>) -> Result<Value, String> {
        let mut frame = json!({"type": "join", "room": room});
        if let Some((epoch, offset)) = since {
            frame["since"] = json!({"epoch": epoch, "offset": offset});
        }
        self.send(frame).await?;
        let joined = self.recv().await?;
        if joined["type"] != "joined" || joined["room"] != room {
            return Err(format!("expected joined {room}, got {joined}"));
        }
        Ok(joined)
    }

    /// `publish` with a fresh `id`; the `ack` frame.
    pub async fn publish(&mut self, room: &str, data: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = format!("p{}", self.next_id);
        self.publish_with_id(room, data, &id).await
    }

    /// `publish` with this `id` (a retry sends the same one); the `ack`
    /// frame, or the error frame that answered it as `Err`.
    pub async fn publish_with_id(
        &mut self,
        room: &str,
        data: Value,
        id: &str,
    ) -> Result<Value, String> {
        self.send(json!({"type": "publish", "room": room, "data": data, "id": id}))
            .await?;
        let frame = self.recv_until_any(&["ack", "error"]).await?;
        match frame["type"].as_str() {
            Some("ack") if frame["id"] == id => Ok(frame),
            _ => Err(frame.to_string()),
        }
    }

    /// `publish` with a fresh `id`, sent again with the same `id` while it
    /// is answered `unavailable` (Redis restarting), for up to 20 s; the ack.
    pub async fn publish_retrying(&mut self, room: &str, data: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = format!("p{}", self.next_id);
        let start = Instant::now();
        loop {
            match self.publish_with_id(room, data.clone(), &id).await {
                Ok(ack) => return Ok(ack),
                Err(e)
                    if e.contains("unavailable") && start.elapsed() < Duration::from_secs(20) =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `publish` without waiting for anything.
    pub async fn publish_no_ack(&mut self, room: &str, data: Value) -> Result<(), String> {
        self.send(json!({"type": "publish", "room": room, "data": data}))
            .await
    }

    /// Read until the server closes; the close code (`None` for a close
    /// without a frame, or a dropped connection).
    pub async fn closed_with(&mut self, within: Duration) -> Result<Option<u16>, String> {
        let read = async {
            loop {
                match self.ws.next().await {
                    None | Some(Err(_)) => return None,
                    Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
                    Some(Ok(_)) => continue,
                }
            }
        };
        tokio::time::timeout(within, read)
            .await
            .map_err(|_| format!("not closed within {within:?}"))
    }

    /// Close from our side.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The `data` of every `message` frame in `frames`, for room `room`.
pub fn messages_in(frames: &[Value], room: &str) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| f["type"] == "message" && f["room"] == room)
        .map(|f| f["data"].clone())
        .collect()
}
