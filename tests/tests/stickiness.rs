//! Consistent-hash stickiness through a real proxy to real upstream
//! processes: every way of carrying a key lands on the same, predicted
//! server; adding or removing a server moves only the keys it must; and
//! bounded load caps a hot key's server.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use futures_util::stream::{self, StreamExt};
use pingora_ketama::{Bucket, Continuum};
use ringway_tests::configs::ProxyConfig;
use ringway_tests::sticky::{keys, map_keys, KeyVia};
use ringway_tests::{http_client, ws_connect, ws_whoami, Fixture, FixtureOpts, Proxy};

fn ring(servers: &[SocketAddr]) -> Continuum {
    let buckets: Vec<Bucket> = servers.iter().map(|a| Bucket::new(*a, 1)).collect();
    Continuum::new(&buckets)
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i}")).collect()
}

async fn fixture(n: usize) -> Fixture {
    let names = names(n);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    Fixture::start(&refs, FixtureOpts::default()).await
}

/// Map every key through `proxy` by query parameter; panics on any failure.
async fn mapping(proxy: &Proxy, keys: &[String]) -> Vec<String> {
    let client = http_client();
    map_keys(&client, &proxy.url(""), keys, KeyVia::Query, 32)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every key is served")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_sticks_to_its_ketama_server_however_it_is_carried() {
    let fx = fixture(3).await;
    let addrs: Vec<SocketAddr> = fx.addrs.values().copied().collect();
    let proxy = Proxy::start(&ProxyConfig::over(addrs.clone()).toml()).await;
    let continuum = ring(&addrs);
    let client = http_client();
    let keys = keys("user-", 1000);

    for via in [KeyVia::Cookie, KeyVia::Query, KeyVia::Header] {
        // 20 rounds over all keys; every round must agree with the ring.
        for round in 0..20 {
            let got = map_keys(&client, &proxy.url(""), &keys, via, 32).await;
            for (key, got) in keys.iter().zip(got) {
                let got = got.unwrap_or_else(|e| panic!("round {round}: {e}"));
                let want = fx.name_of(continuum.node(key.as_bytes()).unwrap()).unwrap();
                assert_eq!(got, want, "{via:?} key {key} round {round}");
            }
        }
    }

    // WebSocket: connect, ask, close, reconnect — same server each time.
    let results: Vec<(String, String, String)> = stream::iter(keys.iter())
        .map(|key| {
            let url = format!("ws://{}/ws?sid={key}", proxy.listen);
            async move {
                let mut first = ws_connect(&url, &[]).await.expect("ws connect");
                let a = ws_whoami(&mut first).await;
                drop(first);
                let mut again = ws_connect(&url, &[]).await.expect("ws reconnect");
                let b = ws_whoami(&mut again).await;
                (key.clone(), a, b)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for (key, a, b) in results {
        let want = fx.name_of(continuum.node(key.as_bytes()).unwrap()).unwrap();
        assert_eq!((a.as_str(), b.as_str()), (want, want), "ws key {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adding_or_removing_a_server_moves_only_its_keys() {
    let fx = fixture(11).await;
    let all: Vec<SocketAddr> = names(11).iter().map(|n| fx.addr(n)).collect();
    let ten = &all[..10];
    let newcomer = all[10];
    let removed = all[3];
    let nine: Vec<SocketAddr> = ten.iter().copied().filter(|a| *a != removed).collect();

    let p10 = Proxy::start(&ProxyConfig::over(ten.to_vec()).toml()).await;
    let p11 = Proxy::start(&ProxyConfig::over(all.clone()).toml()).await;
    let p9 = Proxy::start(&ProxyConfig::over(nine).toml()).await;
    let keys = keys("k", 10_000);
    let before = mapping(&p10, &keys).await;
    let grown = mapping(&p11, &keys).await;
    let shrunk = mapping(&p9, &keys).await;

    let newcomer_name = fx.name_of(newcomer).unwrap();
    let moved: Vec<usize> = (0..keys.len()).filter(|&i| before[i] != grown[i]).collect();
    assert!(
        moved.len() as f64 <= 1.2 / 11.0 * keys.len() as f64,
        "{} of {} keys moved when one server was added",
        moved.len(),
        keys.len()
    );
    assert!(!moved.is_empty(), "the new server took no keys at all");
    for &i in &moved {
        assert_eq!(grown[i], newcomer_name, "key {} moved elsewhere", keys[i]);
    }

    let removed_name = fx.name_of(removed).unwrap();
    for i in 0..keys.len() {
        if before[i] == removed_name {
            assert_ne!(shrunk[i], removed_name);
        } else {
            assert_eq!(
                shrunk[i], before[i],
                "key {} moved though its server stayed",
                keys[i]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bounded_load_spreads_a_hot_key() {
    let fx = fixture(3).await;
    let addrs: Vec<SocketAddr> = fx.addrs.values().copied().collect();
    let config = ProxyConfig {
        balance_factor: 1.25,
        ..ProxyConfig::over(addrs.clone())
    };
    let proxy = Proxy::start(&config.toml()).await;
    let url = format!("ws://{}/ws?sid=the-hot-key", proxy.listen);

    // Hold all 300 open at once, opened a few at a time.
    let held: Vec<(ringway_tests::WsClient, String)> = stream::iter(0..300)
        .map(|_| {
            let url = url.clone();
            async move {
                let mut ws = ws_connect(&url, &[]).await.expect("ws connect");
                let who = ws_whoami(&mut ws).await;
                (ws, who)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut per_server: HashMap<String, usize> = HashMap::new();
    for (_, who) in &held {
        *per_server.entry(who.clone()).or_default() += 1;
    }
    let cap = (1.25f64 * 300.0 / 3.0).ceil() as usize + 1;
    let hot = fx
        .name_of(ring(&addrs).node(b"the-hot-key").unwrap())
        .unwrap();
    assert!(
        per_server.values().all(|&n| n <= cap),
        "{per_server:?} exceeds {cap}"
    );
    assert!(
        per_server[hot] >= 100,
        "the key's own server should fill first: {per_server:?}"
    );

    let stats = proxy.stats().await;
    let ws_total: i64 = stats["upstreams"]["app"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["active_websockets"].as_i64().unwrap())
        .sum();
    assert_eq!(ws_total, 300, "stats count every open tunnel: {stats}");
    let by_addr: BTreeMap<String, i64> = stats["upstreams"]["app"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["addr"].as_str().unwrap().to_owned(),
                s["active_websockets"].as_i64().unwrap(),
            )
        })
        .collect();
    for (addr, n) in by_addr {
        let name = fx.name_of(addr.parse().unwrap()).unwrap();
        assert_eq!(
            per_server.get(name).copied().unwrap_or(0) as i64,
            n,
            "{name}"
        );
    }
    drop(held);
}
