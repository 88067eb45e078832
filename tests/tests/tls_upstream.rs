//! The proxy as a TLS client of its upstreams, end to end against real
//! processes on loopback: WebSocket tunnels run over a verified upstream
//! TLS connection (nginx terminating TLS with a test CA's certificate in
//! front of the fixture's echo), 500 upgrade-then-echo cycles with none
//! failing and every one of them seen by nginx as a TLS upgrade; and
//! `verify = false` is logged at start naming its upstream, then reaches a
//! self-signed server that the same proxy, verifying, refuses. Ignored
//! until the proxy is fixed: a verifying upstream must not reuse an idle
//! connection that a `verify = false` upstream made to the same server.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use futures_util::SinkExt;
use ringway_tests::backend::eventually;
use ringway_tests::raw::RawClient;
use ringway_tests::tls::{h1_get, LeafOpts, TestCa};
use ringway_tests::{ws_connect, ws_echo, ws_whoami, Fixture, FixtureOpts, Nginx, Proxy};
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::Message;

/// A whole proxy config: one plain listener, then one route and one
/// upstream per `(prefix, name, upstream body)`.
fn config(upstreams: &[(&str, &str, String)]) -> String {
    config_on_threads(2, upstreams)
}

/// [`config`] with `threads` worker threads.
fn config_on_threads(threads: usize, upstreams: &[(&str, &str, String)]) -> String {
    let mut s = format!("[server]\nthreads = {threads}\ngrace_period = \"1s\"\n\n[admin]\nlisten = \"{{ADMIN}}\"\n\n\
                 [[listener]]\nlisten = \"{{LISTEN}}\"\n\n"
    );
    for (prefix, name, _) in upstreams {
        s += &format!("[[route]]\npath_prefix = \"{prefix}\"\nupstream = \"{name}\"\n\n");
    }
    for (_, name, body) in upstreams {
        s += &format!("[upstream.{name}]\nconnect_timeout = \"2s\"\nretries = 0\n{body}\n");
    }
    s
}

/// An nginx `server` on `listen` terminating TLS with `cert`/`key`,
/// proxying everything (upgrades included) to the fixture at `fixture`,
/// and logging each request's status and TLS version to `log`.
fn tls_front(listen: &str, cert: &Path, key: &Path, fixture: SocketAddr, log: &Path) -> String {
    format!(
        "log_format tls_front '$status $ssl_protocol $request_uri';\n\
         server {{\n listen {listen} ssl;\n ssl_certificate {};\n ssl_certificate_key {};\n \
         access_log {} tls_front;\n \
         location / {{\n  proxy_pass http://{fixture};\n  proxy_http_version 1.1;\n  \
         proxy_set_header Upgrade $http_upgrade;\n  proxy_set_header Connection \"upgrade\";\n  \
         proxy_read_timeout 60s;\n }}\n}}\n",
        cert.display(),
        key.display(),
        log.display()
    )
}

fn upstream_stat(stats: &serde_json::Value, name: &str, field: &str) -> u64 {
    stats["upstreams"][name]["servers"][0][field]
        .as_u64()
        .unwrap_or_else(|| panic!("upstreams.{name}.servers[0].{field} in {stats}"))
}

/// Open a WebSocket through the proxy, echo twice (once asking who
/// answers), and close it cleanly, waiting for the close to come back.
async fn echo_cycle(url: String, i: usize) -> Result<(), String> {
    let mut ws = ws_connect(&url, &[]).await?;
    ws_echo(&mut ws, &format!("hello-{i}")).await?;
    let who = ws_whoami(&mut ws).await;
    if who != "app1" {
        return Err(format!("cycle {i}: answered by {who:?}"));
    }
    ws.send(Message::Close(None))
        .await
        .map_err(|e| format!("cycle {i}: close: {e}"))?;
    // The fixture ends its side without answering the close frame, so
    // the tunnel ending (a close frame or the connection ending) is what
    // is awaited.
    let closed = async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(_)) => return Ok(()),
                Ok(_) => continue,
                Err(WsError::ConnectionClosed)
                | Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    return Ok(())
                }
                Err(e) => return Err(format!("cycle {i}: while closing: {e}")),
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .map_err(|_| format!("cycle {i}: no close within 10 s"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_echo_500_times_over_verified_upstream_tls() {
    const CYCLES: usize = 500;
    let ca = TestCa::new("ringway upstream tunnel CA");
    let leaf = ca.leaf(
        "upstream",
        &[],
        LeafOpts {
            ips: vec![[127, 0, 0, 1].into()],
            ..LeafOpts::default()
        },
    );
    let fx = Fixture::start(&["app1"], FixtureOpts::default()).await;
    let access = ca.path("nginx-access.log");
    let nginx = Nginx::start(&tls_front(
        "{LISTEN}",
        &leaf.cert,
        &leaf.key,
        fx.addr("app1"),
        &access,
    ))
    .await;
    let upstream = format!(
        "tls = true\nca_file = \"{}\"\nservers = [ {{ addr = \"{}\" }} ]\n",
        ca.ca_file.display(),
        nginx.listen
    );
    let proxy = Proxy::start(&config(&[("/", "tunnel", upstream)])).await;

    let start = Instant::now();
    let failures: Vec<String> = stream::iter(0..CYCLES)
        .map(|i| echo_cycle(format!("ws://{}/ws?sid=t{i}", proxy.listen), i))
        .buffer_unordered(50)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    println!(
        "{CYCLES} WebSocket upgrade-echo-close cycles over upstream TLS in {:?}",
        start.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {CYCLES} failed, e.g. {:?}\nproxy log:\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        proxy.child.log()
    );

    // nginx logs a tunnel when it ends: every one was a 101 over TLS.
    let lines = || {
        std::fs::read_to_string(&access)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let all_logged = eventually(Duration::from_secs(20), || async {
        lines().len() >= CYCLES
    })
    .await;
    let lines = lines();
    assert!(
        all_logged,
        "nginx logged {} of {CYCLES} tunnels",
        lines.len()
    );
    let tls_upgrades = lines
        .iter()
        .filter(|l| l.starts_with("101 TLSv1.") && l.contains(" /ws?sid=t"))
        .count();
    assert_eq!(
        tls_upgrades,
        CYCLES,
        "not every request nginx saw was a TLS upgrade: {:?}",
        &lines[..lines.len().min(5)]
    );
    let stats = proxy.stats().await;
    assert_eq!(upstream_stat(&stats, "tunnel", "connect_errors"), 0);
}

/// nginx serving a self-signed certificate (for `self-signed.test`) in
/// front of the fixture, and a CA that signed nothing here.
struct SelfSignedUpstream {
    nginx: Nginx,
    some_ca: TestCa,
    _fx: Fixture,
    _dir: tempfile::TempDir,
}

impl SelfSignedUpstream {
    async fn start() -> SelfSignedUpstream {
        let dir = tempfile::tempdir().unwrap();
        let self_signed = rcgen::generate_simple_self_signed(vec!["self-signed.test".to_owned()])
            .expect("a self-signed certificate");
        let (cert, key) = (dir.path().join("self.pem"), dir.path().join("self.key"));
        std::fs::write(&cert, self_signed.cert.pem()).unwrap();
        std::fs::write(&key, self_signed.key_pair.serialize_pem()).unwrap();
        let fx = Fixture::start(&["app1"], FixtureOpts::default()).await;
        let nginx = Nginx::start(&tls_front(
            "{LISTEN}",
            &cert,
            &key,
            fx.addr("app1"),
            &dir.path().join("access.log"),
        ))
        .await;
        SelfSignedUpstream {
            nginx,
            some_ca: TestCa::new("a CA that signed nothing here"),
            _fx: fx,
            _dir: dir,
        }
    }

    /// Two upstreams on this one server: `/unverified` → `trusting`
    /// (`verify = false`), `/verified` → `checking` (verified against a CA
    /// that did not sign the server's certificate).
    fn config(&self, threads: usize) -> String {
        let servers = format!("servers = [ {{ addr = \"{}\" }} ]\n", self.nginx.listen);
        config_on_threads(
            threads,
            &[
                (
                    "/unverified",
                    "trusting",
                    format!("tls = true\nverify = false\n{servers}"),
                ),
                (
                    "/verified",
                    "checking",
                    format!(
                        "tls = true\nca_file = \"{}\"\n{servers}",
                        self.some_ca.ca_file.display()
                    ),
                ),
            ],
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_false_warns_at_start_and_reaches_a_self_signed_upstream() {
    let up = SelfSignedUpstream::start().await;
    let text = up.config(2);
    let proxy = Proxy::start(&text).await;

    // At start, before any request: one warning, naming the upstream that
    // does not verify, and none naming the one that does.
    let log = proxy.child.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("NOT verified"))
        .collect();
    assert!(
        !warnings.is_empty() && warnings.iter().all(|l| l.contains("upstream.trusting")),
        "no start-up warning naming upstream.trusting:\n{log}"
    );
    assert!(
        !log.contains("upstream.checking"),
        "the verifying upstream was warned about:\n{log}"
    );

    // The same server, verified, is refused: the certificate really is one
    // that verification rejects.
    let mut c = RawClient::connect(proxy.listen).await;
    let resp = h1_get(&mut c.stream, "127.0.0.1", "/verified/echo-headers")
        .await
        .unwrap();
    assert_eq!(resp.status, 502, "{resp:?}");
    assert!(
        proxy.child.log().contains("invalid peer certificate"),
        "{}",
        proxy.child.log()
    );

    // The unverified upstream is reached, for requests and for tunnels.
    let mut c = RawClient::connect(proxy.listen).await;
    let resp = h1_get(&mut c.stream, "127.0.0.1", "/unverified/echo-headers")
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{resp:?}\n{}", proxy.child.log());
    assert_eq!(resp.header("x-served-by"), Some("app1"), "{resp:?}");
    let mut ws = ws_connect(&format!("ws://{}/unverified/ws", proxy.listen), &[])
        .await
        .unwrap();
    ws_echo(&mut ws, "through a self-signed upstream")
        .await
        .unwrap();
    assert_eq!(ws_whoami(&mut ws).await, "app1");

    let stats = proxy.stats().await;
    assert_eq!(upstream_stat(&stats, "checking", "connect_errors"), 1);
    assert_eq!(upstream_stat(&stats, "trusting", "connect_errors"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifying_upstream_never_reuses_a_connection_made_without_verification() {
    let up = SelfSignedUpstream::start().await;
    // One worker thread: one (thread-local) idle pool for both upstreams.
    let proxy = Proxy::start(&up.config(1)).await;
    let mut c = RawClient::connect(proxy.listen).await;
    let resp = h1_get(&mut c.stream, "127.0.0.1", "/unverified/echo-headers")
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    drop(c);
    // Whatever idles in the pool now, the verifying upstream must only
    // ever reach this server through a handshake that verified it.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let mut c = RawClient::connect(proxy.listen).await;
        let resp = h1_get(&mut c.stream, "127.0.0.1", "/verified/echo-headers")
            .await
            .unwrap();
        statuses.push(resp.status);
    }
    assert!(
        statuses.iter().all(|s| *s == 502),
        "the verifying upstream got answers from an unverified server: {statuses:?}"
    );
    let stats = proxy.stats().await;
    assert_eq!(upstream_stat(&stats, "checking", "connect_errors"), 5);
}
