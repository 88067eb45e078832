//! Reload on SIGHUP, in process: under load, fifty reloads between two
//! server lists fail no request and cut no tunnel whose server stays; a
//! removed server's tunnels end with close frame 1001 after
//! `drain_timeout`, not before; a broken config changes nothing and says
//! why; what only a restart can change is refused by name; a server that
//! stays keeps its counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ringway_tests::configs::ProxyConfig;
use ringway_tests::load::{chatter, http_load, WsEnd};
use ringway_tests::sticky::{key_for, served_by, KeyVia};
use ringway_tests::{http_client, ws_connect, Fixture, FixtureOpts, Proxy};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn config(servers: &[SocketAddr], drain: &str) -> String {
    ProxyConfig {
        upstream_extra: format!("drain_timeout = \"{drain}\""),
        ..ProxyConfig::over(servers.iter().copied())
    }
    .toml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_reloads_under_load_fail_nothing_and_cut_only_removed_servers() {
    let fx = Fixture::start(&["a", "b", "c", "d"], FixtureOpts::default()).await;
    let (a, b, c, d) = (fx.addr("a"), fx.addr("b"), fx.addr("c"), fx.addr("d"));
    let one = config(&[a, b, c], "1s");
    let two = config(&[a, b, d], "1s");
    let proxy = Proxy::start(&one).await;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));

    // 200 tunnels chattering every 100 ms, spread over the ring.
    let mut tunnels = Vec::new();
    let mut on_c = 0;
    for i in 0..200 {
        let url = format!("ws://{}/ws?sid=t{i}", proxy.listen);
        let mut ws = ws_connect(&url, &[]).await.expect("tunnel opens");
        let server = ringway_tests::ws_whoami(&mut ws).await;
        on_c += usize::from(server == "c");
        tunnels.push((server, tokio::spawn(chatter(ws, stop.clone(), started))));
    }
    assert!(on_c > 0, "no tunnel landed on c; the test proves nothing");

    // Keep-alive HTTP from 4 connections, all the time.
    let (http, loaders) = http_load(proxy.url(""), 4, stop.clone());

    // Fifty reloads, alternating; after each, a probe key of the changed
    // server follows the new list.
    let client = http_client();
    let key_c = key_for(&[a, b, c], c);
    let key_d = key_for(&[a, b, d], d);
    let mut slowest = Duration::ZERO;
    for n in 0..50 {
        let (text, key, want) = if n % 2 == 0 {
            (&two, &key_d, "d")
        } else {
            (&one, &key_c, "c")
        };
        let signalled = Instant::now();
        let record = proxy.reload_with(text).await;
        assert_eq!(record["result"], "ok", "{record}");
        loop {
            let got = served_by(&client, &proxy.url(""), key, KeyVia::Query).await;
            if got.as_deref() == Ok(want) {
                break;
            }
            assert!(
                signalled.elapsed() < Duration::from_secs(5),
                "reload {n}: {key} still goes to {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        slowest = slowest.max(signalled.elapsed());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // The last reload (n = 49) restored list one; remove c for good now.
    let removed_at = Instant::now();
    proxy.reload_with(&two).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Relaxed);
    for l in loaders {
        l.await.unwrap();
    }
    let mut closed_early = 0;
    let mut closed_ok = 0;
    let mut broken = Vec::new();
    for (server, t) in tunnels {
        match t.await.unwrap() {
            None => {}
            Some(WsEnd::Closed(Some(1001), at)) if server == "c" => {
                if at < removed_at.duration_since(started) + Duration::from_secs(1) {
                    closed_early += 1;
                } else {
                    closed_ok += 1;
                }
            }
            Some(WsEnd::Failed(why)) => broken.push(format!("{server}: {why}")),
            Some(WsEnd::Closed(code, at)) => {
                broken.push(format!("{server}: closed {code:?} at {at:?}"))
            }
        }
    }
    println!(
        "requests: {}; tunnels on the removed server {on_c}, closed with 1001 after drain_timeout {closed_ok}, early {closed_early}; other tunnels broken {}; slowest switch {slowest:?}",
        http.summary(),
        broken.len()
    );
    // A reload touches no connection, so not even a retry is needed.
    let (retried, refused, failed) = (
        http.retried.load(Relaxed),
        http.refused.load(Relaxed),
        http.failed.load(Relaxed),
    );
    assert_eq!((retried, refused, failed), (0, 0, 0), "{}", http.summary());
    assert!(broken.is_empty(), "tunnels broken: {broken:?}");
    assert_eq!(closed_early, 0);
    assert_eq!(
        closed_ok, on_c,
        "every tunnel on c ends with 1001 once c is gone"
    );
}

#[tokio::test]
async fn a_removed_servers_tunnel_gets_1001_after_drain_timeout_not_before() {
    let fx = Fixture::start(&["a", "b"], FixtureOpts::default()).await;
    let (a, b) = (fx.addr("a"), fx.addr("b"));
    let proxy = Proxy::start(&config(&[a, b], "2s")).await;
    let key = key_for(&[a, b], a);
    let mut ws = ws_connect(&format!("ws://{}/ws?sid={key}", proxy.listen), &[])
        .await
        .unwrap();
    assert_eq!(ringway_tests::ws_whoami(&mut ws).await, "a");
    let removed = Instant::now();
    proxy.reload_with(&config(&[b], "2s")).await;
    let end = tokio::time::timeout(Duration::from_secs(15), ws.next()).await;
    let waited = removed.elapsed();
    match end {
        Ok(Some(Ok(Message::Close(Some(frame))))) => {
            assert_eq!(frame.code, CloseCode::Away, "{frame:?}");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(
        waited >= Duration::from_secs(2),
        "closed after {waited:?}, before drain_timeout"
    );
    // The client answers the close; the proxy then hangs up cleanly.
    let _ = ws.close(None).await;
    let stats = proxy.stats().await;
    assert_eq!(stats["last_reload"]["result"], "ok");
}

#[tokio::test]
async fn a_broken_config_changes_nothing_and_says_why() {
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let good = config(&[fx.addr("a")], "1s");
    let proxy = Proxy::start(&good).await;
    let broken = good.replace(
        "servers = [",
        "servers = [\n  { addr = \"127.0.0.1:1\", weight = 0 },",
    );
    let record = proxy.reload_with(&broken).await;
    assert_eq!(record["result"], "failed", "{record}");
    let errors = record["errors"].to_string();
    assert!(
        errors.contains("upstream.app.servers[0].weight"),
        "{errors}"
    );
    let r = http_client().get(proxy.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the old config still serves");
    let unreadable = proxy.fill(&good).replace("[[route]]", "[[route]\n");
    std::fs::write(&proxy.config_path, unreadable).unwrap();
    proxy.child.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = proxy.stats().await["last_reload"].clone();
        if last["seq"] == 2 {
            assert_eq!(last["result"], "failed");
            assert!(last["errors"].to_string().contains("TOML syntax"), "{last}");
            break;
        }
        assert!(Instant::now() < deadline, "second reload not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn what_only_a_restart_can_change_is_refused_by_name() {
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let good = config(&[fx.addr("a")], "1s");
    let proxy = Proxy::start(&good).await;
    let record = proxy
        .reload_with(&good.replace("threads = 2", "threads = 3"))
        .await;
    assert_eq!(record["result"], "failed");
    let errors = record["errors"].to_string();
    assert!(errors.contains("server.threads"), "{errors}");
    assert!(errors.contains("--upgrade"), "{errors}");
}

#[tokio::test]
async fn a_server_that_stays_keeps_its_counters() {
    let fx = Fixture::start(&["a", "b"], FixtureOpts::default()).await;
    let (a, b) = (fx.addr("a"), fx.addr("b"));
    let proxy = Proxy::start(&config(&[a], "1s")).await;
    let client = http_client();
    for _ in 0..5 {
        assert_eq!(
            client.get(proxy.url("/x")).send().await.unwrap().status(),
            200
        );
    }
    let count = |s: &serde_json::Value| -> u64 {
        s["upstreams"]["app"]["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["addr"] == a.to_string())
            .unwrap()["requests_total"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(count(&proxy.stats().await), 5);
    // Reweighted and joined by another server: still the same counters.
    let mut reweighted = ProxyConfig::over([a, b]);
    reweighted.servers[0].1 = 3;
    reweighted.upstream_extra = "drain_timeout = \"1s\"".into();
    let record = proxy.reload_with(&reweighted.toml()).await;
    assert_eq!(record["result"], "ok");
    assert!(
        record["changes"]
            .to_string()
            .contains(&format!("server {a} changed")),
        "{record}"
    );
    assert_eq!(count(&proxy.stats().await), 5);
    // Weight 3 against 1: twenty keys all missing `a` would be a 1e-12 event.
    for i in 0..20 {
        client
            .get(format!("{}?sid=r{i}", proxy.url("/x")))
            .send()
            .await
            .unwrap();
    }
    assert!(
        count(&proxy.stats().await) > 5,
        "the count restarted or stopped"
    );
}
