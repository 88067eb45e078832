//! Redis goes away and comes back: nodes never crash or need a restart.
//! While it is gone `/health` says `degraded` (measured, not cached),
//! connected clients stay connected and are told `unavailable` for what
//! needs Redis, and new upgrades get 503; when it is back, each node
//! reconnects and resubscribes by itself, and delivery goes on without a
//! gap or a duplicate.

use std::time::Duration;

use futures_util::future::join_all;
use ringway_tests::backend::{eventually, Backend, Peer, RedisOpts, RedisServer};
use serde_json::{json, Value};

async fn pair(redis: &RedisServer, names: [&str; 2]) -> Vec<Backend> {
    pair_with(redis, names, &[]).await
}

/// [`pair`] with extra environment.
async fn pair_with(redis: &RedisServer, names: [&str; 2], extra: &[(&str, &str)]) -> Vec<Backend> {
    let url = redis.url();
    let mut env = vec![
        ("REDIS_URL", url.as_str()),
        ("WS_HEARTBEAT_INTERVAL", "0.5"),
        ("WEBSOCKET_SESSION_TTL", "30"),
        ("WS_RATE_LIMIT", "10000"),
        ("WS_RATE_BURST", "10000"),
    ];
    env.extend_from_slice(extra);
    join_all(names.iter().map(|n| Backend::start(n, &env))).await
}

async fn all_report(nodes: &[Backend], status: &str, within: Duration) -> bool {
    eventually(within, || async {
        for n in nodes {
            if n.health_status().await != status {
                return false;
            }
        }
        true
    })
    .await
}

/// [`all_report`], while `peers` keep answering pings (a silent client is
/// rightly closed with 4408 after three heartbeats).
async fn all_report_keeping(
    nodes: &[Backend],
    status: &str,
    within: Duration,
    peers: &mut [&mut Peer],
) -> bool {
    let wait = all_report(nodes, status, within);
    tokio::pin!(wait);
    loop {
        let pump = join_all(peers.iter_mut().map(|p| p.pump(Duration::from_millis(100))));
        tokio::select! {
            ok = &mut wait => return ok,
            pumped = pump => {
                for p in pumped {
                    p.expect("peer stays connected");
                }
            }
        }
    }
}

/// Read `n` messages of `room`; `joined` announcements of any room are returned apart.
async fn read_room(peer: &mut Peer, room: &str, n: usize) -> (Vec<Value>, Vec<Value>) {
    let (mut messages, mut announcements) = (Vec::new(), Vec::new());
    while messages.len() < n {
        let f = peer
            .recv()
            .await
            .unwrap_or_else(|e| panic!("after {} messages: {e}", messages.len()));
        match f["type"].as_str() {
            Some("message") if f["room"] == room => messages.push(f),
            Some("joined") => announcements.push(f),
            _ => panic!("unexpected frame {f}"),
        }
    }
    (messages, announcements)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_ride_out_a_redis_restart_without_losing_a_message() {
    let mut redis = RedisServer::start_with(RedisOpts {
        persistent: true,
        ..RedisOpts::default()
    })
    .await;
    // One primary with `appendfsync always`: declared durable, so its
    // restart keeps every room's epoch.
    let mut nodes = pair_with(&redis, ["ro-a", "ro-b"], &[("REDIS_DURABLE", "1")]).await;
    assert!(all_report(&nodes, "healthy", Duration::from_secs(10)).await);
    let (_, health) = nodes[0].get_json("/health").await;
    assert!(health["redis"]["latency_ms"].as_f64().is_some(), "{health}");
    assert_eq!(health["websocket"]["session_store_healthy"], true);
    assert_eq!(health["websocket"]["message_broker_healthy"], true);

    let mut alice = Peer::connect(&nodes[0].ws_url("user=alice")).await.unwrap();
    let mut bob = Peer::connect(&nodes[1].ws_url("user=bob")).await.unwrap();
    alice.join("ops", None).await.unwrap();
    bob.join("ops", None).await.unwrap();
    for i in 0..5 {
        alice.publish("ops", json!(i)).await.unwrap();
    }

    redis.stop();
    // The very next health check sees it: nothing is cached.
    let (status, health) = nodes[0].get_json("/health").await;
    assert_eq!(status, 200, "a degraded node still serves its clients");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["websocket"]["session_store_healthy"], false);
    assert_eq!(health["redis"]["status"], "disconnected");

    alice
        .send(json!({"type": "publish", "room": "ops", "data": "lost?", "id": "x"}))
        .await
        .unwrap();
    let refused = alice.recv_until("error").await.unwrap();
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert_eq!(refused["id"], "x");
    alice.send(json!({"type": "ping"})).await.unwrap();
    alice
        .recv_until("pong")
        .await
        .expect("the connection must stay up");
    let refused = ringway_tests::ws_connect(&nodes[1].ws_url("user=late"), &[]).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("503")),
        "a new upgrade while the store is down must get 503: {:?}",
        refused.err()
    );

    let (a, b) = tokio::join!(
        alice.pump(Duration::from_secs(5)),
        bob.pump(Duration::from_secs(5))
    );
    a.and(b).expect("clients stay connected through the outage");
    for n in &mut nodes {
        assert!(n.child.try_wait().is_none(), "a node exited");
        assert_eq!(n.health_status().await, "degraded");
    }
    redis.restart().await;
    assert!(
        all_report_keeping(
            &nodes,
            "healthy",
            Duration::from_secs(15),
            &mut [&mut alice, &mut bob]
        )
        .await,
        "nodes did not recover by themselves"
    );

    for i in 5..10 {
        alice.publish("ops", json!(i)).await.unwrap();
    }
    for (name, peer) in [("alice", &mut alice), ("bob", &mut bob)] {
        let (got, announcements) = read_room(peer, "ops", 10).await;
        assert!(
            announcements.is_empty(),
            "{name}: continuity was kept, yet {announcements:?}"
        );
        let data: Vec<Value> = got.iter().map(|f| f["data"].clone()).collect();
        assert_eq!(
            data,
            (0..10).map(|i| json!(i)).collect::<Vec<_>>(),
            "{name}"
        );
        let offsets: Vec<u64> = got.iter().map(|f| f["offset"].as_u64().unwrap()).collect();
        assert_eq!(offsets, (1..=10).collect::<Vec<_>>(), "{name}");
    }
    ringway_tests::ws_connect(&nodes[1].ws_url("user=late"), &[])
        .await
        .expect("upgrades are accepted again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_that_lost_its_data_is_reported_as_a_new_epoch_not_hidden() {
    let mut redis = RedisServer::start().await;
    let nodes = pair(&redis, ["el-a", "el-b"]).await;
    let mut alice = Peer::connect(&nodes[0].ws_url("user=alice")).await.unwrap();
    let mut bob = Peer::connect(&nodes[1].ws_url("user=bob")).await.unwrap();
    let first = bob.join("log", None).await.unwrap();
    alice.publish("log", json!("before")).await.unwrap();
    let m = bob.recv().await.unwrap();
    assert_eq!(m["data"], "before");

    redis.restart().await; // empty: history and numbering are gone
    let recovered = all_report_keeping(
        &nodes,
        "healthy",
        Duration::from_secs(15),
        &mut [&mut alice, &mut bob],
    )
    .await;
    assert!(recovered);
    alice.publish("log", json!("after")).await.unwrap();
    let (got, announcements) = read_room(&mut bob, "log", 1).await;
    let announcements: Vec<Value> = announcements
        .into_iter()
        .filter(|a| a["room"] == "log")
        .collect();
    assert_eq!(got[0]["data"], "after");
    assert_eq!(got[0]["offset"], 1, "a new numbering starts at 1");
    assert_ne!(got[0]["epoch"], first["epoch"]);
    assert_eq!(
        announcements.len(),
        1,
        "the epoch change must be announced once"
    );
    assert_eq!(announcements[0]["recovered"], false);
    assert_eq!(announcements[0]["epoch"], got[0]["epoch"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_messages_missed_while_pubsub_was_cut_are_filled_from_history() {
    let redis = RedisServer::start().await;
    let nodes = pair(&redis, ["ps-a", "ps-b"]).await;
    let mut reader = Peer::connect(&nodes[0].ws_url("user=reader"))
        .await
        .unwrap();
    let mut writer = Peer::connect(&nodes[1].ws_url("user=writer"))
        .await
        .unwrap();
    reader.join("feed", None).await.unwrap();
    const N: usize = 200;
    for round in 0..3 {
        // Cut every node's pub/sub link (commands keep working) while publishing.
        redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        for i in 0..N {
            writer
                .publish_no_ack("feed", json!(round * N + i))
                .await
                .unwrap();
        }
    }
    let (got, announcements) = read_room(&mut reader, "feed", 3 * N).await;
    assert!(announcements.is_empty(), "{announcements:?}");
    let data: Vec<Value> = got.iter().map(|f| f["data"].clone()).collect();
    assert_eq!(data, (0..3 * N).map(|i| json!(i)).collect::<Vec<_>>());
    reader
        .is_silent(Duration::from_millis(500))
        .await
        .expect("nothing may be delivered twice");
    let (_, stats) = nodes[0].get_json("/api/websocket/stats").await;
    let filled = stats["local"]["gaps_filled"].as_u64().unwrap_or(0);
    assert!(
        filled >= 1,
        "the cut never opened a gap, so this test proved nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_started_while_redis_is_down_serves_once_it_is_up() {
    let mut redis = RedisServer::not_started(RedisOpts::default());
    let url = redis.url();
    let node = Backend::start(
        "late-redis",
        &[
            ("REDIS_URL", url.as_str()),
            ("WS_HEARTBEAT_INTERVAL", "0.5"),
        ],
    )
    .await;
    assert_eq!(node.health_status().await, "degraded");
    let refused = ringway_tests::ws_connect(&node.ws_url("user=x"), &[]).await;
    assert!(refused.is_err_and(|e| e.contains("503")));
    redis.restart().await;
    assert!(
        all_report(
            std::slice::from_ref(&node),
            "healthy",
            Duration::from_secs(15)
        )
        .await
    );
    let mut peer = Peer::connect(&node.ws_url("user=x")).await.unwrap();
    peer.join("r", None).await.unwrap();
    peer.publish("r", json!(1)).await.unwrap();
}
