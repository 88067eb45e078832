//! Several `ringway-backend` nodes on one real Redis behave as one server:
//! a room's messages reach its members on every node in one order, each
//! once; direct messages reach every connection of their user wherever it
//! is; broadcasts reach everyone; presence is cluster-wide.

use std::time::Duration;

use futures_util::future::join_all;
use ringway_tests::backend::{messages_in, Backend, Peer, RedisServer};
use serde_json::{json, Value};

/// Settings for fast, unthrottled test nodes.
const FAST: &[(&str, &str)] = &[
    ("WS_HEARTBEAT_INTERVAL", "1"),
    ("WS_RATE_LIMIT", "10000"),
    ("WS_RATE_BURST", "10000"),
];

async fn nodes(redis: &RedisServer, names: &[&str]) -> Vec<Backend> {
    let url = redis.url();
    let mut env = FAST.to_vec();
    env.push(("REDIS_URL", &url));
    join_all(names.iter().map(|n| Backend::start(n, &env))).await
}

/// Read `n` frames of room `room` (other frames fail the test).
async fn read_messages(peer: &mut Peer, room: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let frame = peer
            .recv()
            .await
            .unwrap_or_else(|e| panic!("after {} of {n} messages: {e}", out.len()));
        assert_eq!(frame["type"], "message", "unexpected frame {frame}");
        assert_eq!(frame["room"], room, "unexpected frame {frame}");
        out.push(frame);
    }
    out
}

/// Offsets rise by one from the first, all in one epoch.
fn assert_consecutive(frames: &[Value]) {
    let epoch = &frames[0]["epoch"];
    let first = frames[0]["offset"].as_u64().unwrap();
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(&f["epoch"], epoch, "epoch changed at {i}: {f}");
        assert_eq!(
            f["offset"].as_u64().unwrap(),
            first + i as u64,
            "at {i}: {f}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_publish_on_one_node_reaches_members_on_the_others_in_order() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, &["node-a", "node-b", "node-c"]).await;
    let mut alice = Peer::connect(&nodes[0].ws_url("user=alice")).await.unwrap();
    let mut bob = Peer::connect(&nodes[1].ws_url("user=bob")).await.unwrap();
    let mut carol = Peer::connect(&nodes[2].ws_url("user=carol")).await.unwrap();
    assert_eq!(bob.welcome["worker_id"], "node-b");
    for p in [&mut alice, &mut bob, &mut carol] {
        p.join("lobby", None).await.unwrap();
    }
    const N: usize = 300;
    for i in 0..N {
        alice
            .publish_no_ack("lobby", json!({"n": i}))
            .await
            .unwrap();
    }
    for (name, peer) in [
        ("alice", &mut alice),
        ("bob", &mut bob),
        ("carol", &mut carol),
    ] {
        let got = read_messages(peer, "lobby", N).await;
        assert_consecutive(&got);
        let data: Vec<Value> = got.iter().map(|f| f["data"].clone()).collect();
        let want: Vec<Value> = (0..N).map(|i| json!({"n": i})).collect();
        assert_eq!(data, want, "{name} got another sequence");
        assert!(got.iter().all(|f| f["from"] == "alice"));
        peer.is_silent(Duration::from_millis(300))
            .await
            .unwrap_or_else(|f| panic!("{name} got an extra frame: {f}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_on_two_nodes_are_seen_in_one_order_by_all() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, &["two-a", "two-b"]).await;
    let mut readers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut p = Peer::connect(&node.ws_url(&format!("user=reader{i}")))
            .await
            .unwrap();
        p.join("race", None).await.unwrap();
        readers.push(p);
    }
    let mut writers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        writers.push(
            Peer::connect(&node.ws_url(&format!("user=writer{i}")))
                .await
                .unwrap(),
        );
    }
    const EACH: usize = 150;
    join_all(writers.iter_mut().enumerate().map(|(w, p)| async move {
        for i in 0..EACH {
            p.publish_no_ack("race", json!(format!("w{w}-{i}")))
                .await
                .unwrap();
        }
    }))
    .await;
    let mut seen = Vec::new();
    for r in &mut readers {
        let got = read_messages(r, "race", 2 * EACH).await;
        assert_consecutive(&got);
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1], "the two nodes delivered different orders");
    for w in 0..2 {
        let mine: Vec<Value> = seen[0]
            .iter()
            .map(|f| f["data"].clone())
            .filter(|d| d.as_str().unwrap().starts_with(&format!("w{w}-")))
            .collect();
        let want: Vec<Value> = (0..EACH).map(|i| json!(format!("w{w}-{i}"))).collect();
        assert_eq!(mine, want, "writer {w}'s messages out of their own order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_messages_reach_every_connection_of_the_user() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, &["dm-a", "dm-b", "dm-c"]).await;
    let mut dave_a = Peer::connect(&nodes[0].ws_url("user=dave")).await.unwrap();
    let mut dave_c = Peer::connect(&nodes[2].ws_url("user=dave")).await.unwrap();
    let mut dave_c2 = Peer::connect(&nodes[2].ws_url("user=dave")).await.unwrap();
    let mut erin = Peer::connect(&nodes[1].ws_url("user=erin")).await.unwrap();
    let mut frank = Peer::connect(&nodes[0].ws_url("user=frank")).await.unwrap();
    erin.send(json!({"type": "direct", "to": "dave", "data": {"hi": 1}, "id": 7}))
        .await
        .unwrap();
    let ack = erin.recv().await.unwrap();
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["id"], 7);
    assert_eq!(ack["room"], "@dave");
    for (name, p) in [("a", &mut dave_a), ("c", &mut dave_c), ("c2", &mut dave_c2)] {
        let m = p.recv().await.unwrap();
        assert_eq!(m["type"], "message", "dave {name}: {m}");
        assert_eq!(m["room"], "@dave");
        assert_eq!(m["from"], "erin");
        assert_eq!(m["data"], json!({"hi": 1}));
        assert_eq!(m["offset"], ack["offset"]);
    }
    frank
        .is_silent(Duration::from_millis(300))
        .await
        .expect("another user got dave's direct message");
    erin.send(json!({"type": "join", "room": "@dave"}))
        .await
        .unwrap();
    let refused = erin.recv().await.unwrap();
    assert_eq!(refused["code"], "forbidden", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broadcasts_reach_everyone_and_presence_is_cluster_wide() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, &["bc-a", "bc-b"]).await;
    let mut peers = Vec::new();
    for (i, user) in ["gina", "hank", "ivy"].iter().enumerate() {
        let node = &nodes[i % 2];
        let mut p = Peer::connect(&node.ws_url(&format!("user={user}")))
            .await
            .unwrap();
        p.join("hall", None).await.unwrap();
        peers.push(p);
    }
    peers[1]
        .send(json!({"type": "broadcast", "data": "fire drill"}))
        .await
        .unwrap();
    for p in &mut peers {
        let m = p.recv().await.unwrap();
        assert_eq!(m["room"], "*", "{m}");
        assert_eq!(m["data"], "fire drill");
    }
    peers[0]
        .send(json!({"type": "presence", "room": "hall"}))
        .await
        .unwrap();
    let presence = peers[0].recv_until("presence").await.unwrap();
    assert_eq!(presence["users"], json!(["gina", "hank", "ivy"]));
    let frames = vec![presence];
    assert!(messages_in(&frames, "hall").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_redis_the_nodes_of_one_process_share_an_in_process_broker() {
    let base = ringway_tests::free_port();
    // Three consecutive ports; the harness hands out distinct ones, so check they are free.
    for p in base..base + 3 {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok(),
            "port {p} busy"
        );
    }
    let mut cmd = std::process::Command::new(ringway_tests::target_bin("ringway-backend"));
    cmd.env_remove("REDIS_URL")
        .env("PORT", base.to_string())
        .env("WORKER_ID", "mem")
        .env("WS_HEARTBEAT_INTERVAL", "0.5")
        .args(["--nodes", "3"]);
    let child = ringway_tests::Child::spawn(cmd);
    for p in base..base + 3 {
        let url = format!("http://127.0.0.1:{p}/health");
        if let Err(e) = ringway_tests::wait_for_http_ok(&url, Duration::from_secs(20)).await {
            panic!("{e}\n{}", child.log());
        }
    }
    let ws = |port: u16, query: &str| format!("ws://127.0.0.1:{port}/ws?{query}");
    let mut a = Peer::connect(&ws(base, "sid=mem-1&user=a")).await.unwrap();
    let mut c = Peer::connect(&ws(base + 2, "user=c")).await.unwrap();
    assert_eq!(a.welcome["worker_id"], "mem-1");
    assert_eq!(c.welcome["worker_id"], "mem-3");
    let joined = a.join("room", None).await.unwrap();
    c.join("room", None).await.unwrap();
    c.publish("room", json!("hello")).await.unwrap();
    assert_eq!(a.recv().await.unwrap()["data"], "hello");
    a.close().await;
    c.publish("room", json!("while away")).await.unwrap();
    let mut back = Peer::connect(&ws(base + 1, "sid=mem-1&user=a"))
        .await
        .unwrap();
    assert_eq!(back.welcome["resumed"], true);
    let since = (joined["epoch"].as_str().unwrap(), 1);
    assert_eq!(
        back.join("room", Some(since)).await.unwrap()["recovered"],
        true
    );
    assert_eq!(back.recv().await.unwrap()["data"], "while away");
    let health_url = format!("http://127.0.0.1:{base}/health");
    let all_seen = ringway_tests::backend::eventually(Duration::from_secs(5), || async {
        let health = ringway_tests::get_json(&health_url).await;
        assert_eq!(health["redis"]["status"], "not_configured", "{health}");
        // The cluster view is as of the last heartbeat.
        health["websocket"]["total_workers"] == 3
    })
    .await;
    assert!(all_seen, "the nodes of one process never saw each other");
}
