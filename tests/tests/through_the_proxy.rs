//! The whole product on loopback: `ringway-proxy` in front of three
//! `ringway-backend` nodes sharing one Redis. A client keeps its `sid`;
//! the proxy keeps it on one node; when that node is killed, the same
//! reconnect lands on a survivor, which resumes the session and replays
//! exactly what the client missed.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::join_all;
use ringway_tests::backend::{Backend, Peer, RedisServer};
use ringway_tests::configs::ProxyConfig;
use ringway_tests::Proxy;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_survives_its_node_through_the_proxy() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let env = [
        ("REDIS_URL", url.as_str()),
        ("WS_HEARTBEAT_INTERVAL", "1"),
        ("WS_RATE_LIMIT", "1000"),
        ("WS_RATE_BURST", "1000"),
    ];
    let mut nodes = join_all(["px-a", "px-b", "px-c"].map(|n| Backend::start(n, &env))).await;
    let config = ProxyConfig {
        hash_key: vec!["query:sid", "client-ip"],
        health_check: "[upstream.app.health_check]\nkind = \"http\"\npath = \"/health\"\n\
                       interval = \"300ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 2\n"
            .into(),
        ..ProxyConfig::over(nodes.iter().map(|n| n.addr))
    };
    let proxy = Proxy::start(&config.toml()).await;
    let ws = |sid: &str, user: &str| format!("ws://{}/ws?sid={sid}&user={user}", proxy.listen);

    // Plain HTTP reaches the nodes too: the demo page, with the node headers.
    let page = ringway_tests::http_client()
        .get(proxy.url("/?sid=sticky-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers().contains_key("x-websocket-worker-id"));
    assert!(page.text().await.unwrap().contains("Ringway demo"));
    let stats = proxy.stats().await;
    assert_eq!(
        stats["upstreams"]["app"]["balance"], "consistent-hash",
        "{stats}"
    );

    // Stickiness: the same sid lands on the same node, every time.
    let mut homes = HashSet::new();
    for _ in 0..5 {
        let p = Peer::connect(&ws("sticky-1", "st")).await.unwrap();
        homes.insert(p.welcome["worker_id"].as_str().unwrap().to_owned());
        p.close().await;
    }
    assert_eq!(homes.len(), 1, "one sid, several nodes: {homes:?}");

    let mut client = Peer::connect(&ws("story-1", "carla")).await.unwrap();
    let home = client.welcome["worker_id"].as_str().unwrap().to_owned();
    client.join("match", None).await.unwrap();
    let other = nodes.iter().find(|n| n.worker_id != home).unwrap();
    let mut author = Peer::connect(&other.ws_url("user=referee")).await.unwrap();
    let mut last: Value = Value::Null;
    for i in 0..5 {
        author.publish("match", json!(i)).await.unwrap();
        last = client.recv().await.unwrap();
        assert_eq!(last["data"], json!(i));
    }

    let victim = nodes.iter_mut().find(|n| n.worker_id == home).unwrap();
    victim.child.kill();
    drop(client);
    for i in 5..12 {
        author.publish("match", json!(i)).await.unwrap();
    }

    // The same reconnect, through the proxy, now reaches a survivor.
    let mut back = Peer::connect(&ws("story-1", "carla")).await.unwrap();
    assert_ne!(back.welcome["worker_id"], home.as_str(), "{}", back.welcome);
    assert_eq!(back.welcome["resumed"], true, "{}", back.welcome);
    let since = (
        last["epoch"].as_str().unwrap(),
        last["offset"].as_u64().unwrap(),
    );
    let joined = back.join("match", Some(since)).await.unwrap();
    assert_eq!(joined["recovered"], true, "{joined}");
    let mut got = Vec::new();
    for _ in 5..12 {
        got.push(back.recv().await.unwrap()["data"].clone());
    }
    assert_eq!(got, (5..12).map(|i| json!(i)).collect::<Vec<_>>());
    back.is_silent(Duration::from_millis(300))
        .await
        .expect("nothing twice");
}
