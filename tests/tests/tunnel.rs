//! WebSocket tunnels through the proxy: the Pingora #946 race is gone (an
//! upstream that writes its 101 before reading the request loses no
//! tunnel), idle tunnels live as long as `idle_timeout` says and no longer,
//! and requests reach upstreams with the forwarding headers and without
//! hop-by-hop ones.

use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use ringway_tests::configs::ProxyConfig;
use ringway_tests::{
    http_client, ws_connect, ws_connect_fixed_key, ws_echo, Fixture, FixtureOpts, Proxy,
};

const CYCLES: usize = 5_000;

/// Run `CYCLES` connect → echo → close cycles, 50 at a time; return the failures.
async fn cycles(proxy: &Proxy, fixed_key: bool) -> Vec<String> {
    let results: Vec<Result<(), String>> = stream::iter(0..CYCLES)
        .map(|i| {
            let url = format!("ws://{}/ws?sid=c{i}", proxy.listen);
            async move {
                let mut ws = if fixed_key {
                    ws_connect_fixed_key(&url, &[]).await?
                } else {
                    ws_connect(&url, &[]).await?
                };
                ws_echo(&mut ws, &format!("hello-{i}")).await
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    results.into_iter().filter_map(Result::err).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eager_101_upstreams_lose_no_tunnel() {
    let fx = Fixture::start(
        &["e1", "e2", "e3"],
        FixtureOpts {
            eager_101: true,
            ..FixtureOpts::default()
        },
    )
    .await;
    let proxy = Proxy::start(&ProxyConfig::over(fx.addrs.values().copied()).toml()).await;
    let failures = cycles(&proxy, true).await;
    assert!(
        failures.is_empty(),
        "{} of {CYCLES} failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn normal_upstreams_lose_no_tunnel() {
    let fx = Fixture::start(&["w1", "w2", "w3"], FixtureOpts::default()).await;
    let proxy = Proxy::start(&ProxyConfig::over(fx.addrs.values().copied()).toml()).await;
    let failures = cycles(&proxy, false).await;
    assert!(
        failures.is_empty(),
        "{} of {CYCLES} failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_tunnel_is_closed_after_idle_timeout() {
    let fx = Fixture::start(&["i1"], FixtureOpts::default()).await;
    let config = ProxyConfig {
        upstream_extra: "idle_timeout = \"2s\"".into(),
        ..ProxyConfig::over(fx.addrs.values().copied())
    };
    let proxy = Proxy::start(&config.toml()).await;
    let mut ws = ws_connect(&format!("ws://{}/ws", proxy.listen), &[])
        .await
        .unwrap();
    ws_echo(&mut ws, "before").await.unwrap();
    let start = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(20), ws.next()).await;
    let took = start.elapsed();
    assert!(ended.is_ok(), "the idle tunnel was not closed");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "closed after {took:?}, want about 2 s"
    );
}

/// Pingora cuts idle upgraded connections at 60 s by default; ours live
/// for `idle_timeout` (default 1 h).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quiet_tunnel_outlives_pingoras_60_seconds() {
    let fx = Fixture::start(&["q1"], FixtureOpts::default()).await;
    let proxy = Proxy::start(&ProxyConfig::over(fx.addrs.values().copied()).toml()).await;
    let mut ws = ws_connect(&format!("ws://{}/ws", proxy.listen), &[])
        .await
        .unwrap();
    ws_echo(&mut ws, "before").await.unwrap();
    tokio::time::sleep(Duration::from_secs(65)).await;
    ws_echo(&mut ws, "after 65 s of silence").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstreams_see_forwarding_headers_and_no_hop_by_hop_ones() {
    let fx = Fixture::start(&["h1"], FixtureOpts::default()).await;
    let servers = || ProxyConfig::over(fx.addrs.values().copied());
    let client = http_client();

    // Loopback untrusted: the client's own X-Forwarded-For is replaced.
    let proxy = Proxy::start(&servers().toml()).await;
    let seen: serde_json::Value = client
        .get(proxy.url("/echo-headers?x=1"))
        .header("Host", "chat.example.com")
        .header("X-Forwarded-For", "6.6.6.6")
        .header("Connection", "keep-alive, X-Secret")
        .header("X-Secret", "hop")
        .header("X-Keep", "end-to-end")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["host"], "chat.example.com", "{seen}");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert_eq!(seen["x-real-ip"], "127.0.0.1", "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "http", "{seen}");
    assert_eq!(
        seen["x-request-id"].as_str().map(str::len),
        Some(32),
        "{seen}"
    );
    assert_eq!(seen["x-keep"], "end-to-end", "{seen}");
    assert!(
        seen.get("x-secret").is_none(),
        "nominated hop-by-hop header leaked: {seen}"
    );
    assert_eq!(seen["_path"], "/echo-headers?x=1", "{seen}");

    // Loopback trusted: the chain is kept and extended, the client found in it.
    let trusted = ProxyConfig {
        trusted_proxies: vec!["127.0.0.0/8"],
        ..servers()
    };
    let proxy = Proxy::start(&trusted.toml()).await;
    let seen: serde_json::Value = client
        .get(proxy.url("/echo-headers"))
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Request-Id", "req-42")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["x-forwarded-for"], "6.6.6.6, 127.0.0.1", "{seen}");
    assert_eq!(seen["x-real-ip"], "6.6.6.6", "{seen}");
    assert_eq!(seen["x-request-id"], "req-42", "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_matching_no_route_gets_404_from_the_proxy() {
    let fx = Fixture::start(&["r1"], FixtureOpts::default()).await;
    let config = ProxyConfig {
        route_host: "*.example.com",
        ..ProxyConfig::over(fx.addrs.values().copied())
    };
    let proxy = Proxy::start(&config.toml()).await;
    let client = http_client();
    let status = |host: &'static str| {
        let req = client.get(proxy.url("/who")).header("Host", host);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("chat.example.com").await, 200);
    assert_eq!(status("example.org").await, 404);
    let ws = ws_connect(
        &format!("ws://{}/ws", proxy.listen),
        &[("Host", "nope.org")],
    )
    .await;
    assert!(
        ws.is_err_and(|e| e.contains("404")),
        "upgrade without a route is refused with 404"
    );
}
