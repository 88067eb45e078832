//! Health: an active check takes a stopped server out within
//! fall × interval (+2 s) and brings it back within rise × interval (+2 s);
//! its keys walk to the ring successor meanwhile. Passive ejection takes out
//! a server that accepts and resets; connect failures are retried elsewhere.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pingora_ketama::{Bucket, Continuum};
use ringway_tests::configs::ProxyConfig;
use ringway_tests::sticky::{served_by, KeyVia};
use ringway_tests::{free_addr, http_client, Fixture, FixtureOpts, Proxy};

fn walk(ring: &Continuum, key: &str, n: usize) -> Vec<SocketAddr> {
    let mut seen = Vec::new();
    for a in ring.node_iter(key.as_bytes()).take(10_000) {
        if !seen.contains(a) {
            seen.push(*a);
        }
        if seen.len() == n {
            break;
        }
    }
    seen
}

/// Keys whose ring owner is `owner`, with their ring successors.
fn keys_owned_by(
    ring: &Continuum,
    owner: SocketAddr,
    servers: usize,
    n: usize,
) -> Vec<(String, SocketAddr)> {
    (0..)
        .map(|i| format!("h{i}"))
        .filter_map(|k| {
            let w = walk(ring, &k, servers);
            (w[0] == owner).then(|| (k, w[1]))
        })
        .take(n)
        .collect()
}

fn server_state(stats: &serde_json::Value, addr: SocketAddr) -> String {
    stats["upstreams"]["app"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["addr"] == addr.to_string())
        .map(|s| s["state"].as_str().unwrap().to_owned())
        .unwrap()
}

/// Poll `cond` until it holds or `within` passes; returns how long it took.
async fn eventually<F, Fut>(within: Duration, mut cond: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if cond().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_server_leaves_and_returns_with_its_keys() {
    // One process per server, so one can be stopped alone.
    let mut a = Fixture::start(&["a"], FixtureOpts::default()).await;
    let b = Fixture::start(&["b"], FixtureOpts::default()).await;
    let c = Fixture::start(&["c"], FixtureOpts::default()).await;
    let addrs = [a.addr("a"), b.addr("b"), c.addr("c")];
    let name = |addr: SocketAddr| ["a", "b", "c"][addrs.iter().position(|x| *x == addr).unwrap()];
    let (interval, rise, fall) = (1u64, 2u64, 2u64);
    let config = ProxyConfig {
        health_check: format!(
            "[upstream.app.health_check]\nkind = \"http\"\npath = \"/health\"\ninterval = \"{interval}s\"\ntimeout = \"500ms\"\nrise = {rise}\nfall = {fall}\n"
        ),
        // Keep passive ejection out of this test: only active checks act.
        passive: "[upstream.app.passive]\nmax_fails = 0\n".into(),
        ..ProxyConfig::over(addrs)
    };
    let proxy = Proxy::start(&config.toml()).await;
    let ring = Continuum::new(&addrs.iter().map(|a| Bucket::new(*a, 1)).collect::<Vec<_>>());
    let owned = keys_owned_by(&ring, addrs[0], 3, 50);
    let client = http_client();
    let base = proxy.url("");
    let all_served = |want_owner: bool| {
        let (client, base, owned) = (client.clone(), base.clone(), owned.clone());
        async move {
            for (key, successor) in &owned {
                let want = if want_owner { "a" } else { name(*successor) };
                match served_by(&client, &base, key, KeyVia::Query).await {
                    Ok(got) if got == want => {}
                    _ => return false,
                }
            }
            true
        }
    };
    assert!(all_served(true).await, "keys start on their owner");

    a.kill();
    let deadline = Duration::from_secs(fall * interval + 2);
    let took = eventually(deadline, || async {
        server_state(&proxy.stats().await, addrs[0]) == "down"
    })
    .await;
    assert!(
        took.is_some(),
        "not marked down within {deadline:?}: {}",
        proxy.stats().await
    );
    assert!(
        all_served(false).await,
        "keys of a down server go to their ring successor"
    );

    let _a = Fixture::start_at(&[("a", addrs[0])], FixtureOpts::default()).await;
    let deadline = Duration::from_secs(rise * interval + 2);
    let took = eventually(deadline, || all_served(true)).await;
    assert!(
        took.is_some(),
        "keys did not return within {deadline:?}: {}",
        proxy.stats().await
    );
    assert_eq!(server_state(&proxy.stats().await, addrs[0]), "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_that_resets_connections_is_ejected_passively() {
    let good = Fixture::start(&["g1", "g2"], FixtureOpts::default()).await;
    let bad = Fixture::start(
        &["bad"],
        FixtureOpts {
            reset: true,
            ..FixtureOpts::default()
        },
    )
    .await;
    let addrs = [good.addr("g1"), good.addr("g2"), bad.addr("bad")];
    let config = ProxyConfig {
        // A TCP check passes: the bad server accepts. Only passive can catch it.
        health_check: "[upstream.app.health_check]\nkind = \"tcp\"\ninterval = \"1s\"\n".into(),
        passive: "[upstream.app.passive]\nmax_fails = 3\nfail_timeout = \"60s\"\n".into(),
        ..ProxyConfig::over(addrs)
    };
    let proxy = Proxy::start(&config.toml()).await;
    let ring = Continuum::new(&addrs.iter().map(|a| Bucket::new(*a, 1)).collect::<Vec<_>>());
    let owned = keys_owned_by(&ring, addrs[2], 3, 30);
    let client = http_client();
    let mut failures = 0;
    for (key, _) in &owned {
        if served_by(&client, &proxy.url(""), key, KeyVia::Query)
            .await
            .is_err()
        {
            failures += 1;
        }
    }
    // A reset that lands before the connect completes is a connect failure,
    // retried on another server (the client never sees it); one after the
    // request was written is a 502. Either way it counts toward max_fails.
    assert!(
        failures <= 3,
        "{failures} failures: ejection should come after max_fails = 3"
    );
    let stats = proxy.stats().await;
    assert_eq!(server_state(&stats, addrs[2]), "down", "{stats}");
    let bad_entry = stats["upstreams"]["app"]["servers"][2].clone();
    assert_eq!(
        bad_entry["healthy"], true,
        "active check still passes: {bad_entry}"
    );
    for (key, _) in &owned {
        let got = served_by(&client, &proxy.url(""), key, KeyVia::Query).await;
        assert!(
            got.is_ok(),
            "after ejection every request is served: {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connect_failures_are_retried_on_another_server() {
    let fx = Fixture::start(&["live1", "live2"], FixtureOpts::default()).await;
    let dead = free_addr(); // nothing listens here
    let addrs = [fx.addr("live1"), fx.addr("live2"), dead];
    let config = ProxyConfig {
        passive: "[upstream.app.passive]\nmax_fails = 0\n".into(),
        ..ProxyConfig::over(addrs)
    };
    let proxy = Proxy::start(&config.toml()).await;
    let ring = Continuum::new(&addrs.iter().map(|a| Bucket::new(*a, 1)).collect::<Vec<_>>());
    let owned = keys_owned_by(&ring, dead, 3, 20);
    let client = http_client();
    for (key, successor) in &owned {
        let got = served_by(&client, &proxy.url(""), key, KeyVia::Query).await;
        assert_eq!(
            got.as_deref(),
            Ok(fx.name_of(*successor).unwrap()),
            "key {key}"
        );
    }
    let stats = proxy.stats().await;
    let dead_entry = &stats["upstreams"]["app"]["servers"][2];
    assert_eq!(dead_entry["connect_errors"], 20, "{dead_entry}");
    assert_eq!(dead_entry["retries"], 20, "{dead_entry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_that_reached_a_server_is_not_retried() {
    let fx = Fixture::start(&["h1", "h2", "h3"], FixtureOpts::default()).await;
    let proxy = Proxy::start(&ProxyConfig::over(fx.addrs.values().copied()).toml()).await;
    let client = http_client();
    let hangups = || async {
        let mut total = 0;
        for addr in fx.addrs.values() {
            let doc = ringway_tests::get_json(&format!("http://{addr}/stats")).await;
            total += doc.as_object().unwrap().values().next().unwrap()["hangups"]
                .as_u64()
                .unwrap();
        }
        total
    };
    let post = client
        .post(proxy.url("/hang-up?sid=p1"))
        .body("do it once")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 502);
    assert_eq!(
        hangups().await,
        1,
        "a POST that reached a server was sent again"
    );
    // A GET on a fresh upstream connection is not retried either.
    let get = client
        .get(proxy.url("/hang-up?sid=g1"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 502);
    assert_eq!(
        hangups().await,
        2,
        "a GET that reached a server was sent again"
    );
}
