//! TLS at the edge, end to end against the real binary on loopback, with
//! certificates a test CA (rcgen, ECDSA P-256) makes in a temp dir: SNI
//! picks each name's certificate and TLS 1.1 is refused; HTTPS reaches the
//! upstream over h2 and HTTP/1.1 with `X-Forwarded-Proto: https` and HSTS;
//! WSS echoes through 5,000 upgrades; a plain listener redirects to HTTPS
//! but lets ACME challenges through; upstream TLS is verified (a wrong CA
//! or a wrong name is a 502 and a connect error); SIGHUP swaps
//! certificates under open tunnels; `--check` names each certificate
//! problem by its TOML path, and an expiring certificate is a warning.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use ringway_tests::raw::RawClient;
use ringway_tests::tls::{
    alpn, check, h1_get, h2_get, handshake, served_cert, wss_connect, wss_echo, Leaf, LeafOpts,
    TestCa,
};
use ringway_tests::{free_addr, wait_for_port, Fixture, FixtureOpts, Nginx, Proxy};
use serde_json::Value;

const HSTS: &str = "max-age=600; includeSubDomains";
const H1: &[&[u8]] = &[b"http/1.1"];
const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];

fn files(leaf: &Leaf) -> String {
    format!(
        "cert = \"{}\"\nkey = \"{}\"\n",
        leaf.cert.display(),
        leaf.key.display()
    )
}

/// A TLS listener on `{LISTEN}` with `default`, then `[[listener.sni]]`
/// entries (`names` as TOML list items).
fn tls_listener(default: &Leaf, sni: &[(&str, &Leaf)], extra: &str) -> String {
    let mut s = format!(
        "[[listener]]\nlisten = \"{{LISTEN}}\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n{extra}\n",
        default.cert.display(),
        default.key.display()
    );
    for (names, leaf) in sni {
        s += &format!("[[listener.sni]]\nnames = [{names}]\n{}\n", files(leaf));
    }
    s
}

/// A whole config: `listeners`, then one route per `(prefix, upstream
/// section)`; each upstream is named after its position (`u0`, `u1` …).
fn config(listeners: &str, upstreams: &[(&str, String)]) -> String {
    let mut s = format!(
        "[server]\nthreads = 2\ngrace_period = \"1s\"\n\n[admin]\nlisten = \"{{ADMIN}}\"\n\n{listeners}\n"
    );
    for (i, (prefix, _)) in upstreams.iter().enumerate() {
        s += &format!("[[route]]\npath_prefix = \"{prefix}\"\nupstream = \"u{i}\"\n\n");
    }
    for (i, (_, body)) in upstreams.iter().enumerate() {
        s += &format!("[upstream.u{i}]\nconnect_timeout = \"1s\"\n{body}\n");
    }
    s
}

fn servers(addr: SocketAddr) -> String {
    format!("servers = [ {{ addr = \"{addr}\" }} ]\n")
}

/// The usual edge: a TLS listener (default certificate for
/// `default.test`/`unknown.test`, SNI `a.test`, and `b.test` +
/// `*.apps.test`, HSTS), two plain listeners redirecting to it and to 443,
/// in front of one fixture server `app1`.
struct Edge {
    ca: TestCa,
    certs: [Leaf; 3],
    redirect: SocketAddr,
    redirect_443: SocketAddr,
    proxy: Proxy,
    _fx: Fixture,
}

impl Edge {
    async fn start() -> Edge {
        let ca = TestCa::new("ringway edge test CA");
        let default = ca.leaf(
            "default",
            &["default.test", "unknown.test"],
            LeafOpts::default(),
        );
        let a = ca.leaf("a", &["a.test"], LeafOpts::default());
        let b = ca.leaf("b", &["b.test", "*.apps.test"], LeafOpts::default());
        let fx = Fixture::start(&["app1"], FixtureOpts::default()).await;
        let (redirect, redirect_443) = (free_addr(), free_addr());
        let listeners = format!(
            "{}[[listener]]\nlisten = \"{redirect}\"\nredirect_https = 8443\n\n\
             [[listener]]\nlisten = \"{redirect_443}\"\nredirect_https = 443\n",
            tls_listener(
                &default,
                &[("\"a.test\"", &a), ("\"b.test\", \"*.apps.test\"", &b)],
                &format!("hsts = \"{HSTS}\""),
            )
        );
        let text = config(&listeners, &[("/", servers(fx.addr("app1")))]);
        let proxy = Proxy::start(&text).await;
        for addr in [redirect, redirect_443] {
            wait_for_port(addr, Duration::from_secs(10)).await.unwrap();
        }
        Edge {
            ca,
            certs: [default, a, b],
            redirect,
            redirect_443,
            proxy,
            _fx: fx,
        }
    }
}

async fn listener_stat(proxy: &Proxy, field: &str) -> u64 {
    proxy.stats().await["listeners"][0][field]
        .as_u64()
        .unwrap_or_else(|| panic!("listeners[0].{field} in /stats.json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_each_names_certificate_and_tls_1_1_is_refused() {
    let edge = Edge::start().await;
    let [default, a, b] = &edge.certs;
    for (name, sni, want) in [
        ("a.test", true, a),
        ("b.test", true, b),
        ("x.apps.test", true, b),
        ("unknown.test", true, default),
        ("default.test", false, default),
    ] {
        let tls = handshake(edge.proxy.listen, edge.ca.client(H1), name, sni)
            .await
            .unwrap();
        assert!(
            served_cert(&tls) == want.der,
            "{name} (SNI sent: {sni}) got another certificate"
        );
    }

    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        println!("NOTE: openssl is not installed: the TLS 1.1 refusal is not checked");
        return;
    }
    let s_client = |version: &'static str| {
        let addr = edge.proxy.listen.to_string();
        async move {
            let mut cmd = tokio::process::Command::new("openssl");
            cmd.args([
                "s_client",
                "-connect",
                &addr,
                "-servername",
                "a.test",
                version,
            ])
            // Let the client offer TLS 1.1 at all: the refusal must be the server's.
            .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
            .env("OPENSSL_CONF", "/dev/null")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
            let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
                .await
                .expect("openssl s_client within 10 s")
                .expect("run openssl");
            (out.status.success(), ringway_tests::printed(&out))
        }
    };
    // The tool works against this listener at TLS 1.2 …
    let (ok, text) = s_client("-tls1_2").await;
    assert!(ok && text.contains("TLSv1.2"), "{text}");
    // … and a TLS 1.1 ClientHello reaches the server, which refuses it.
    let failures = listener_stat(&edge.proxy, "tls_failures").await;
    let (ok, text) = s_client("-tls1_1").await;
    assert!(!ok, "TLS 1.1 was accepted:\n{text}");
    assert!(
        text.contains("alert") && text.contains("Cipher is (NONE)"),
        "{text}"
    );
    let start = Instant::now();
    while listener_stat(&edge.proxy, "tls_failures").await == failures {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the proxy saw no failed handshake: the client gave up on its own?\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_reaches_the_upstream_over_h2_and_http1_as_https() {
    let edge = Edge::start().await;
    let listen = edge.proxy.listen;

    let tls = handshake(listen, edge.ca.client(H2_H1), "a.test", true)
        .await
        .unwrap();
    assert_eq!(alpn(&tls).as_deref(), Some("h2"));
    let h2 = h2_get(tls, "a.test", "/echo-headers?via=h2").await.unwrap();

    let mut tls = handshake(listen, edge.ca.client(H1), "a.test", true)
        .await
        .unwrap();
    assert_eq!(alpn(&tls).as_deref(), Some("http/1.1"));
    let h1 = h1_get(&mut tls, "a.test", "/echo-headers?via=h1")
        .await
        .unwrap();

    for (via, resp) in [("h2", h2), ("h1", h1)] {
        assert_eq!(resp.status, 200, "{via}: {resp:?}");
        assert_eq!(resp.header("x-served-by"), Some("app1"), "{via}: {resp:?}");
        assert_eq!(
            resp.header("strict-transport-security"),
            Some(HSTS),
            "{via}: {resp:?}"
        );
        let seen: Value = serde_json::from_str(&resp.body).expect("fixture JSON");
        assert_eq!(seen["x-forwarded-proto"], "https", "{via}: {seen}");
        assert_eq!(seen["_path"], format!("/echo-headers?via={via}"), "{seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_echoes_through_5000_upgrades() {
    const CYCLES: usize = 5_000;
    let edge = Edge::start().await;
    // One client config: resumption is allowed, as a browser would.
    let config = edge.ca.client(H1);
    let before = listener_stat(&edge.proxy, "tls_handshakes").await;
    let start = Instant::now();
    let failures: Vec<String> = stream::iter(0..CYCLES)
        .map(|i| {
            let config = config.clone();
            let listen = edge.proxy.listen;
            async move {
                let mut ws =
                    wss_connect(listen, config, "a.test", &format!("/ws?sid=c{i}")).await?;
                wss_echo(&mut ws, &format!("hello-{i}")).await
            }
        })
        .buffer_unordered(50)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    println!(
        "{CYCLES} WSS upgrade-then-echo cycles in {:?}",
        start.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {CYCLES} failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let handshakes = listener_stat(&edge.proxy, "tls_handshakes").await - before;
    assert!(handshakes >= CYCLES as u64, "{handshakes} TLS handshakes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_listener_redirects_to_https_but_proxies_acme_challenges() {
    let edge = Edge::start().await;
    let target = "/a/b?x=1&y=two";
    for (addr, location) in [
        (edge.redirect, format!("https://a.test:8443{target}")),
        (edge.redirect_443, format!("https://a.test{target}")),
    ] {
        let mut c = RawClient::connect(addr).await;
        let resp = h1_get(&mut c.stream, "a.test:8080", target).await.unwrap();
        assert_eq!(resp.status, 308, "{resp:?}");
        assert_eq!(resp.header("location"), Some(location.as_str()), "{resp:?}");

        let mut c = RawClient::connect(addr).await;
        let resp = h1_get(&mut c.stream, "a.test", "/.well-known/acme-challenge/x")
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.body, "app1", "the challenge reaches the upstream");
        assert_eq!(resp.header("strict-transport-security"), None, "{resp:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_answers_its_request_once_on_a_keep_alive_connection() {
    let edge = Edge::start().await;
    let mut c = RawClient::connect(edge.redirect).await;
    let resp = h1_get(&mut c.stream, "a.test", "/first").await.unwrap();
    assert_eq!(resp.status, 308, "{resp:?}");
    let resp = h1_get(
        &mut c.stream,
        "a.test",
        "/.well-known/acme-challenge/second",
    )
    .await
    .unwrap();
    assert_eq!(
        (resp.status, resp.body.as_str()),
        (200, "app1"),
        "the second request got another answer: {resp:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_is_verified_by_ca_and_by_ip_name() {
    let ca = TestCa::new("ringway upstream CA");
    let stranger = TestCa::new("some other CA");
    let ip = LeafOpts {
        ips: vec![[127, 0, 0, 1].into()],
        ..LeafOpts::default()
    };
    let good = ca.leaf("good", &[], ip.clone());
    let foreign = stranger.leaf("foreign", &[], ip);
    let named = ca.leaf("named", &["other.test"], LeafOpts::default());
    let (foreign_at, named_at) = (free_addr(), free_addr());
    let server = |listen: String, leaf: &Leaf, body: &str| {
        format!(
            "server {{\n listen {listen} ssl;\n ssl_certificate {};\n ssl_certificate_key {};\n \
             location / {{ return 200 \"{body}\"; }}\n}}\n",
            leaf.cert.display(),
            leaf.key.display()
        )
    };
    let nginx = Nginx::start(&format!(
        "{}{}{}",
        server("{LISTEN}".into(), &good, "nginx-good"),
        server(foreign_at.to_string(), &foreign, "nginx-foreign"),
        server(named_at.to_string(), &named, "nginx-named"),
    ))
    .await;
    let upstream = |addr: SocketAddr| {
        format!(
            "tls = true\nca_file = \"{}\"\nretries = 0\n{}",
            ca.ca_file.display(),
            servers(addr)
        )
    };
    let text = config(
        "[[listener]]\nlisten = \"{LISTEN}\"\n",
        &[
            ("/good", upstream(nginx.listen)),
            ("/foreign", upstream(foreign_at)),
            ("/named", upstream(named_at)),
        ],
    );
    let proxy = Proxy::start(&text).await;
    let client = ringway_tests::http_client();
    let get = |path: &str| client.get(proxy.url(path)).send();
    let resp = get("/good").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "nginx-good");
    for (i, path) in [(1, "/foreign"), (2, "/named")] {
        let mut c = RawClient::connect(proxy.listen).await;
        let resp = h1_get(&mut c.stream, "127.0.0.1", path).await.unwrap();
        assert_eq!(resp.status, 502, "{path}");
        let body = resp.body;
        assert!(!body.contains("nginx"), "{path}: {body}");
        let stats = proxy.stats().await;
        let server = &stats["upstreams"][format!("u{i}")]["servers"][0];
        assert_eq!(server["connect_errors"], 1, "{path}: {server}");
    }
    let stats = proxy.stats().await;
    assert_eq!(stats["upstreams"]["u0"]["servers"][0]["connect_errors"], 0);
    // Refused by verification, for the reason each case stages.
    let log = proxy.child.log();
    assert!(
        log.contains("invalid peer certificate: UnknownIssuer"),
        "{log}"
    );
    assert!(
        log.contains("certificate not valid for name \"127.0.0.1\""),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_certificates_and_open_tunnels_keep_echoing() {
    let ca = TestCa::new("ringway reload CA");
    let site = |serial: u64, cn: &str| {
        let opts = LeafOpts {
            serial: Some(serial),
            common_name: Some(cn.into()),
            ..LeafOpts::default()
        };
        ca.leaf("site", &["a.test"], opts)
    };
    let first = site(1, "first");
    let fx = Fixture::start(&["app1"], FixtureOpts::default()).await;
    let text = config(
        &tls_listener(&first, &[], ""),
        &[("/", servers(fx.addr("app1")))],
    );
    let proxy = Proxy::start(&text).await;
    let served = || async {
        let tls = handshake(proxy.listen, ca.client(H1), "a.test", true)
            .await
            .unwrap();
        served_cert(&tls)
    };
    assert!(served().await == first.der);
    let mut ws = wss_connect(proxy.listen, ca.client(H1), "a.test", "/ws")
        .await
        .unwrap();
    wss_echo(&mut ws, "before").await.unwrap();

    let second = site(2, "second");
    assert!(second.der != first.der);
    // Files alone change nothing: the proxy serves what it loaded.
    assert!(
        served().await == first.der,
        "certificate changed without SIGHUP"
    );
    let record = proxy.reload_with(&text).await;
    assert_eq!(record["result"], "ok", "{record}");
    assert!(
        served().await == second.der,
        "new handshakes kept the old certificate"
    );
    for i in 0..10 {
        wss_echo(&mut ws, &format!("after-{i}")).await.unwrap();
    }
}

/// Write `text` (with `{LISTEN}`/`{ADMIN}` filled) next to the CA's files
/// and run `--check` on it.
fn check_text(ca: &TestCa, text: &str) -> (Option<i32>, String) {
    let path = ca.path("ringway.toml");
    let text = text
        .replace("{LISTEN}", &free_addr().to_string())
        .replace("{ADMIN}", &free_addr().to_string());
    std::fs::write(&path, text).unwrap();
    check(&path)
}

#[test]
fn check_names_each_certificate_problem_by_its_path() {
    let ca = TestCa::new("ringway check CA");
    let good = ca.leaf("good", &["a.test"], LeafOpts::default());
    let other = ca.leaf("other", &["b.test"], LeafOpts::default());
    let upstream = [("/", servers("127.0.0.1:9".parse().unwrap()))];
    let with = |default: &Leaf, sni: &[(&str, &Leaf)]| {
        check_text(&ca, &config(&tls_listener(default, sni, ""), &upstream))
    };
    let (code, text) = with(&good, &[("\"b.test\"", &other)]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("configuration ok"), "{text}");
    assert!(!text.contains("warning:"), "{text}");

    let missing = Leaf {
        cert: ca.path("missing.pem"),
        ..good.clone()
    };
    let no_cert = Leaf {
        cert: good.key.clone(),
        ..good.clone()
    };
    let no_key = Leaf {
        key: good.cert.clone(),
        ..good.clone()
    };
    let mismatched = Leaf {
        key: other.key.clone(),
        ..good.clone()
    };
    let sni_missing_key = Leaf {
        key: ca.path("missing.key"),
        ..other.clone()
    };
    let cases: Vec<((Option<i32>, String), &str)> = vec![
        (with(&missing, &[]), "listener[0].tls.cert: cannot read"),
        (with(&no_cert, &[]), "listener[0].tls.cert: "),
        (with(&no_key, &[]), "listener[0].tls.key: "),
        (with(&mismatched, &[]), "listener[0].tls.key: "),
        (
            with(&good, &[("\"b.test\"", &sni_missing_key)]),
            "listener[0].sni[0].key: cannot read",
        ),
        (
            with(&good, &[("\"b.test\", \"zzz.test\"", &other)]),
            "listener[0].sni[0].names[1]: \"zzz.test\" is not covered by",
        ),
        (
            with(&good, &[("\"b.test\"", &other), ("\"B.test\"", &other)]),
            "listener[0].sni[1].names[0]: duplicate server name \"b.test\": already listed at listener[0].sni[0].names[0]",
        ),
    ];
    let words = [
        "cannot read",
        "holds no PEM certificate",
        "holds no PEM private key",
        "does not match the certificate",
        "cannot read",
        "not covered",
        "duplicate server name",
    ];
    for (((code, text), at), word) in cases.iter().zip(words) {
        assert_eq!(*code, Some(1), "{text}");
        assert!(text.contains(at), "expected {at:?}:\n{text}");
        assert!(text.contains(word), "expected {word:?}:\n{text}");
        assert!(text.contains("configuration is invalid"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_certificate_is_a_warning_in_check_and_in_stats() {
    let ca = TestCa::new("ringway expiry CA");
    let soon = LeafOpts {
        expires_in: Some(Duration::from_secs(5 * 86_400 + 3600)),
        ..LeafOpts::default()
    };
    let short = ca.leaf("short", &["a.test"], soon);
    let long = ca.leaf("long", &["b.test"], LeafOpts::default());
    let fx = Fixture::start(&["app1"], FixtureOpts::default()).await;
    let text = config(
        &tls_listener(&short, &[("\"b.test\"", &long)], ""),
        &[("/", servers(fx.addr("app1")))],
    );
    let (code, out) = check_text(&ca, &text);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("configuration ok"), "{out}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].contains("listener[0].tls: certificate")
            && warnings[0].contains("within 14 days (5 days left)"),
        "{out}"
    );

    let proxy = Proxy::start(&text).await;
    let stats = proxy.stats().await;
    let certs = &stats["listeners"][0]["certificates"];
    assert_eq!(certs[0]["at"], "listener[0].tls", "{certs}");
    assert_eq!(certs[0]["expiring"], true, "{certs}");
    assert_eq!(certs[0]["days_left"], 5, "{certs}");
    assert_eq!(certs[1]["at"], "listener[0].sni[0]", "{certs}");
    assert_eq!(certs[1]["expiring"], false, "{certs}");
    assert!(
        proxy.child.log().contains("expires within 14 days"),
        "{}",
        proxy.child.log()
    );
}
