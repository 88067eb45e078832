//! The admin listener against real processes: its counters match what the
//! clients sent, in `/stats.json` and in `/metrics` (parsed by a Prometheus
//! text parser); the control API needs the token and the admin's own Host
//! and Origin, and off loopback the token is required to start at all;
//! drain and maint reach the traffic and survive a reload; a server a
//! reload removes leaves no series behind.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::SinkExt;
use ringway_tests::backend::eventually;
use ringway_tests::configs::ProxyConfig;
use ringway_tests::metrics::{one, sum};
use ringway_tests::raw::RawClient;
use ringway_tests::sticky::{keys, map_keys, served_by, KeyVia};
use ringway_tests::{
    free_addr, http_client, target_bin, ws_connect, ws_echo, Fixture, FixtureOpts, Proxy,
};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "ringway-test-token-0123456789abcdef";

/// Send one HTTP/1.1 request on `conn` and read its whole response;
/// returns the status and the number of bytes the response took.
async fn exchange(conn: &mut RawClient, method: &str, path: &str, body: &[u8]) -> (u16, u64) {
    let before = conn.received;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.send(&[head.as_bytes(), body].concat()).await;
    let head = conn.read_head().await.unwrap();
    let length = head.header("content-length").unwrap().parse().unwrap();
    conn.read_body(length).await.unwrap();
    assert!(conn.buf.is_empty(), "no pipelining here");
    (head.status, conn.received - before)
}

fn servers(doc: &Value) -> &Vec<Value> {
    doc["upstreams"]["app"]["servers"].as_array().unwrap()
}

fn total(doc: &Value, field: &str) -> u64 {
    servers(doc)
        .iter()
        .map(|s| s[field].as_u64().unwrap())
        .sum()
}

fn server(doc: &Value, addr: SocketAddr) -> &Value {
    servers(doc)
        .iter()
        .find(|s| s["addr"] == addr.to_string())
        .unwrap_or_else(|| panic!("{addr} not in {doc}"))
}

async fn open_websockets(proxy: &Proxy) -> u64 {
    total(&proxy.stats().await, "active_websockets")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_what_the_clients_sent() {
    let fx = Fixture::start(
        &["a", "b"],
        FixtureOpts {
            health_status: 503,
            ..FixtureOpts::default()
        },
    )
    .await;
    let config = ProxyConfig {
        balance: "round-robin",
        ..ProxyConfig::over(fx.addrs.values().copied())
    };
    let proxy = Proxy::start(&config.toml()).await;

    // The harness' readiness probe was a connection too.
    let accepted_before = proxy.stats().await["listeners"][0]["connections_total"]
        .as_u64()
        .unwrap();
    // 18 GETs and 6 POSTs of 1000 bytes answered 200, 6 answered 503.
    let mut conn = RawClient::connect(proxy.listen).await;
    let (mut received, mut statuses) = (0u64, Vec::new());
    let body = vec![b'x'; 1000];
    for i in 0..30 {
        let (status, n) = match i % 10 {
            0..=5 => exchange(&mut conn, "GET", "/hello", b"").await,
            6 | 7 => exchange(&mut conn, "POST", "/upload", &body).await,
            _ => exchange(&mut conn, "GET", "/health", b"").await,
        };
        received += n;
        statuses.push(status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 24);
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 6);

    let doc = proxy.stats().await;
    let app = &doc["upstreams"]["app"];
    assert_eq!(total(&doc, "requests_total"), 30, "{doc}");
    assert_eq!(app["totals"]["requests_total"], 30, "{doc}");
    assert_eq!(app["totals"]["responses"]["2xx"], 24, "{doc}");
    assert_eq!(app["totals"]["responses"]["5xx"], 6, "{doc}");
    assert_eq!(app["totals"]["bytes_in"], 6 * 1000, "{doc}");
    assert_eq!(app["totals"]["bytes_out"], received, "{doc}");
    // Round-robin: each server got half.
    for s in servers(&doc) {
        assert_eq!(s["requests_total"], 15, "{doc}");
        assert!(s["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{doc}");
        assert!(s["connect_ms"]["p99"].as_f64().is_some(), "{doc}");
    }
    let listener = &doc["listeners"][0];
    assert_eq!(listener["requests"], 30, "{doc}");
    assert_eq!(
        listener["connections_total"].as_u64(),
        Some(accepted_before + 1),
        "{doc}"
    );
    assert_eq!(listener["connections_open"], 1, "{doc}");
    assert!(doc["process"]["open_fds"].as_u64().unwrap() > 0, "{doc}");
    assert!(doc["process"]["rss_bytes"].as_u64().unwrap() > 0, "{doc}");
    assert_eq!(
        doc["process"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{doc}"
    );

    // The same numbers in /metrics.
    let m = proxy.metrics().await;
    assert_eq!(
        sum(&m, "ringway_server_requests_total", &[("upstream", "app")]),
        30.0
    );
    assert_eq!(
        sum(&m, "ringway_server_responses_total", &[("code", "2xx")]),
        24.0
    );
    assert_eq!(
        sum(&m, "ringway_server_responses_total", &[("code", "5xx")]),
        6.0
    );
    assert_eq!(sum(&m, "ringway_server_bytes_in_total", &[]), 6000.0);
    assert_eq!(
        sum(&m, "ringway_server_bytes_out_total", &[]),
        received as f64
    );
    assert_eq!(
        sum(&m, "ringway_server_request_duration_seconds", &[]),
        30.0
    );
    let listen = proxy.listen.to_string();
    assert_eq!(
        one(
            &m,
            "ringway_listener_requests_total",
            &[("listener", &listen)]
        ),
        30.0
    );
    for s in servers(&doc) {
        let addr = s["addr"].as_str().unwrap();
        let l = [("upstream", "app"), ("server", addr)];
        assert_eq!(one(&m, "ringway_server_requests_total", &l), 15.0);
        assert_eq!(
            one(&m, "ringway_server_state", &[l[0], l[1], ("state", "up")]),
            1.0
        );
    }
    drop(conn);

    // WebSockets: the gauge follows the open tunnels up and down.
    let url = format!("ws://{}/ws", proxy.listen);
    let mut tunnels = Vec::new();
    for _ in 0..3 {
        let mut ws = ws_connect(&url, &[]).await.unwrap();
        ws_echo(&mut ws, "hi").await.unwrap();
        tunnels.push(ws);
    }
    assert_eq!(open_websockets(&proxy).await, 3);
    let m = proxy.metrics().await;
    assert_eq!(sum(&m, "ringway_server_active_websockets", &[]), 3.0);
    assert_eq!(sum(&m, "ringway_server_websockets_total", &[]), 3.0);
    for mut ws in tunnels.drain(..2) {
        ws.send(Message::Close(None)).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            open_websockets(&proxy).await == 1
        })
        .await,
        "{}",
        proxy.stats().await
    );
    assert_eq!(
        sum(
            &proxy.metrics().await,
            "ringway_server_active_websockets",
            &[]
        ),
        1.0
    );
    drop(tunnels);
    assert!(
        eventually(Duration::from_secs(10), || async {
            open_websockets(&proxy).await == 0
        })
        .await
    );
    let doc = proxy.stats().await;
    assert_eq!(total(&doc, "requests_total"), 33, "{doc}");
    assert_eq!(total(&doc, "websockets_total"), 3, "{doc}");
    assert_eq!(total(&doc, "max_connections"), 3, "{doc}");
}

/// `POST path` on the admin listener with extra headers: status, headers, JSON.
async fn post(
    proxy: &Proxy,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Value) {
    let mut req = http_client().post(proxy.admin_url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

fn drain_path(addr: SocketAddr) -> String {
    format!("/api/upstreams/app/servers/{addr}/drain")
}

#[tokio::test]
async fn control_needs_the_token_and_the_admins_own_origin() {
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let a = fx.addr("a");
    let config = ProxyConfig {
        admin_extra: format!("token = \"{TOKEN}\""),
        ..ProxyConfig::over([a])
    };
    let proxy = Proxy::start(&config.toml()).await;
    let bearer = format!("Bearer {TOKEN}");
    let path = drain_path(a);

    let (status, headers, body) = post(&proxy, &path, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="ringway""#);
    let (status, headers, _) = post(&proxy, &path, &[("Authorization", "Bearer wrong")]).await;
    assert_eq!(status, 401);
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with(r#"Bearer realm="ringway""#),
        "{challenge}"
    );
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert_eq!(server(&proxy.stats().await, a)["state"], "up");

    // A right token from a foreign page or a rebound name is still refused.
    let foreign_host = [
        ("Authorization", bearer.as_str()),
        ("Host", "rebound.example"),
    ];
    let (status, _, body) = post(&proxy, &path, &foreign_host).await;
    assert_eq!(status, 403, "{body}");
    let evil = [
        ("Authorization", bearer.as_str()),
        ("Origin", "http://evil.example"),
    ];
    let (status, _, body) = post(&proxy, &path, &evil).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(server(&proxy.stats().await, a)["state"], "up");

    let own_origin = format!("http://{}", proxy.admin);
    let own = [
        ("Authorization", bearer.as_str()),
        ("Origin", own_origin.as_str()),
    ];
    let (status, _, body) = post(&proxy, &path, &own).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "draining");
    assert_eq!(body["previous_state"], "up");
    assert_eq!(server(&proxy.stats().await, a)["state"], "draining");

    let auth = [("Authorization", bearer.as_str())];
    for unknown in [
        "/api/upstreams/nope/servers/127.0.0.1:1/ready".to_owned(),
        "/api/upstreams/app/servers/127.0.0.1:1/ready".to_owned(),
        format!("/api/upstreams/app/servers/{a}/reboot"),
    ] {
        assert_eq!(post(&proxy, &unknown, &auth).await.0, 404, "{unknown}");
    }
    let get = http_client()
        .get(proxy.admin_url(&path))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    let (status, headers, _) = post(&proxy, "/stats.json", &auth).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET, HEAD");
    let (status, _, _) = post(
        &proxy,
        &format!("/api/upstreams/app/servers/{a}/ready"),
        &auth,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(server(&proxy.stats().await, a)["state"], "up");
}

#[tokio::test]
async fn on_loopback_without_a_token_the_host_and_origin_checks_remain() {
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let a = fx.addr("a");
    let proxy = Proxy::start(&ProxyConfig::over([a]).toml()).await;
    assert_eq!(proxy.stats().await["admin"]["token_required"], false);
    let path = drain_path(a);
    let port = proxy.admin.port();
    let evil = [("Origin", "http://evil.example")];
    assert_eq!(post(&proxy, &path, &evil).await.0, 403);
    let rebound = format!("rebound.example:{port}");
    assert_eq!(
        post(&proxy, &path, &[("Host", rebound.as_str())]).await.0,
        403
    );
    assert_eq!(server(&proxy.stats().await, a)["state"], "up");
    // The loopback names of the listener are its own.
    let localhost = format!("localhost:{port}");
    let (status, _, body) = post(&proxy, &path, &[("Host", localhost.as_str())]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server(&proxy.stats().await, a)["state"], "draining");
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ringway.toml");
    let config = ProxyConfig::over([free_addr()])
        .toml()
        .replace("{ADMIN}", &format!("0.0.0.0:{}", free_addr().port()))
        .replace("{LISTEN}", &free_addr().to_string());
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(target_bin("ringway-proxy"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("admin.token: required when admin.listen is not a loopback address"),
        "{stderr}"
    );
}

async fn whoami(proxy: &Proxy, sid: &str) -> String {
    let base = format!("http://{}", proxy.listen);
    served_by(&http_client(), &base, sid, KeyVia::Query)
        .await
        .unwrap()
}

/// Wait until `ws` is closed by the proxy; the close code it got.
async fn closed_with(ws: &mut ringway_tests::WsClient, within: Duration) -> Option<u16> {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("tunnel still open after {within:?}"),
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_maint_reach_traffic_and_survive_a_reload() {
    let fx = Fixture::start(&["a", "b"], FixtureOpts::default()).await;
    let (a, b) = (fx.addr("a"), fx.addr("b"));
    let mut config = ProxyConfig {
        upstream_extra: "drain_timeout = \"1s\"".into(),
        ..ProxyConfig::over([a, b])
    };
    let proxy = Proxy::start(&config.toml()).await;
    // Keys that land on a, found by asking.
    let base = format!("http://{}", proxy.listen);
    let candidates = keys("k", 40);
    let answers = map_keys(&http_client(), &base, &candidates, KeyVia::Query, 8).await;
    let on_a: Vec<&String> = candidates
        .iter()
        .zip(answers)
        .filter(|(_, who)| who.as_deref() == Ok("a"))
        .map(|(k, _)| k)
        .take(5)
        .collect();
    assert_eq!(on_a.len(), 5);
    let mut tunnel = ws_connect(&format!("ws://{}/ws?sid={}", proxy.listen, on_a[0]), &[])
        .await
        .unwrap();
    assert_eq!(ringway_tests::ws_whoami(&mut tunnel).await, "a");

    // Drain: a's keys walk the ring to b; its tunnel ends after drain_timeout.
    let (status, _, _) = post(&proxy, &drain_path(a), &[]).await;
    assert_eq!(status, 200);
    for sid in &on_a {
        assert_eq!(whoami(&proxy, sid).await, "b", "{sid}");
    }
    assert_eq!(
        closed_with(&mut tunnel, Duration::from_secs(10)).await,
        Some(1001)
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            proxy.stats().await["tunnels_drained"] == 1
        })
        .await
    );

    // The state survives a reload that keeps the server (here: reweighted).
    config.servers = vec![(a, 2), (b, 1)];
    let reload = proxy.reload_with(&config.toml()).await;
    assert_eq!(reload["result"], "ok", "{reload}");
    let doc = proxy.stats().await;
    assert_eq!(server(&doc, a)["state"], "draining", "{doc}");
    assert_eq!(server(&doc, a)["weight"], 2, "{doc}");
    assert_eq!(whoami(&proxy, on_a[1]).await, "b");

    // Ready: a's keys come back. Maint: its tunnels end at once.
    let ready = format!("/api/upstreams/app/servers/{a}/ready");
    assert_eq!(post(&proxy, &ready, &[]).await.0, 200);
    assert_eq!(whoami(&proxy, on_a[1]).await, "a");
    let mut tunnel = ws_connect(&format!("ws://{}/ws?sid={}", proxy.listen, on_a[2]), &[])
        .await
        .unwrap();
    assert_eq!(ringway_tests::ws_whoami(&mut tunnel).await, "a");
    let maint = format!("/api/upstreams/app/servers/{a}/maint");
    let (status, _, body) = post(&proxy, &maint, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body["tunnels_end_in_secs"], 0.0);
    assert_eq!(
        closed_with(&mut tunnel, Duration::from_secs(10)).await,
        Some(1001)
    );
    assert_eq!(whoami(&proxy, on_a[3]).await, "b");
    let reload = proxy.reload_with(&config.toml()).await;
    assert_eq!(reload["result"], "ok", "{reload}");
    assert_eq!(server(&proxy.stats().await, a)["state"], "maint");
    // A tunnel is counted once its close handshake is over.
    drop(tunnel);
    assert!(
        eventually(Duration::from_secs(5), || async {
            proxy.stats().await["tunnels_drained"] == 2
        })
        .await
    );
    let m = proxy.metrics().await;
    let a_text = a.to_string();
    let labels = [
        ("upstream", "app"),
        ("server", a_text.as_str()),
        ("state", "maint"),
    ];
    assert_eq!(one(&m, "ringway_server_state", &labels), 1.0);
    assert_eq!(one(&m, "ringway_reloads_total", &[("result", "ok")]), 2.0);
    assert_eq!(one(&m, "ringway_last_reload_success", &[]), 1.0);
    assert_eq!(one(&m, "ringway_tunnels_drained_total", &[]), 2.0);
}

#[tokio::test]
async fn a_server_removed_by_a_reload_leaves_no_series() {
    let fx = Fixture::start(&["a", "b"], FixtureOpts::default()).await;
    let (a, b) = (fx.addr("a"), fx.addr("b"));
    let mut config = ProxyConfig::over([a, b]);
    let proxy = Proxy::start(&config.toml()).await;
    for i in 0..10 {
        whoami(&proxy, &format!("s{i}")).await;
    }
    let b_text = b.to_string();
    let m = proxy.metrics().await;
    assert_eq!(
        one(
            &m,
            "ringway_server_weight",
            &[("upstream", "app"), ("server", &b_text)]
        ),
        1.0
    );
    config.servers = vec![(a, 1)];
    let reload = proxy.reload_with(&config.toml()).await;
    assert_eq!(reload["result"], "ok", "{reload}");
    assert!(reload["changes"].to_string().contains(&b_text), "{reload}");
    let m = proxy.metrics().await;
    let left: Vec<_> = m
        .samples
        .iter()
        .filter(|s| s.labels.get("server") == Some(b_text.as_str()))
        .map(|s| s.metric.clone())
        .collect();
    assert!(
        left.is_empty(),
        "series of the removed server remain: {left:?}"
    );
    assert_eq!(
        one(
            &m,
            "ringway_server_weight",
            &[("upstream", "app"), ("server", &a.to_string())]
        ),
        1.0
    );
    let doc = proxy.stats().await;
    assert_eq!(servers(&doc).len(), 1, "{doc}");

    // A failed reload is counted and named, and changes nothing.
    let reload = proxy.reload_with("[[listener]]\nlisten = \"nope\"\n").await;
    assert_eq!(reload["result"], "failed", "{reload}");
    assert!(reload["errors"].to_string().contains("listen"), "{reload}");
    let m = proxy.metrics().await;
    assert_eq!(
        one(&m, "ringway_reloads_total", &[("result", "failed")]),
        1.0
    );
    assert_eq!(one(&m, "ringway_last_reload_success", &[]), 0.0);
    assert_eq!(servers(&proxy.stats().await).len(), 1);
}
