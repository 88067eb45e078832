//! Sessions and presence in time: a connected session's TTL is refreshed
//! while it lives (not only at disconnect) and runs out after it ends;
//! a user who reconnects within `WS_GRACE_PERIOD` never shows as having
//! left, and one who does not is gone after it, crash or not.

use std::time::Duration;

use futures_util::future::join_all;
use ringway_tests::backend::{eventually, Backend, Peer, RedisServer};
use serde_json::{json, Value};

async fn presence(peer: &mut Peer, room: &str) -> Value {
    peer.send(json!({"type": "presence", "room": room}))
        .await
        .unwrap();
    peer.recv_until("presence").await.unwrap()["users"].clone()
}

/// Ask for `room`'s presence until it is `want`, for at most `within`.
async fn presence_becomes(peer: &mut Peer, room: &str, want: Value, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if presence(peer, room).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connected_session_outlives_its_ttl_and_expires_after_it_ends() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let node = Backend::start(
        "ttl",
        &[
            ("REDIS_URL", url.as_str()),
            ("WS_HEARTBEAT_INTERVAL", "1"),
            ("WEBSOCKET_SESSION_TTL", "3"),
        ],
    )
    .await;
    let mut p = Peer::connect(&node.ws_url("sid=long-1&user=l"))
        .await
        .unwrap();
    // Twice the TTL while connected (answering pings).
    p.pump(Duration::from_secs(6)).await.unwrap();
    let ttl: i64 = redis
        .cmd(&["TTL", "ringway:session:{long-1}"])
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 0, "a live session must be kept alive, ttl {ttl}");
    p.close().await;
    let gone = eventually(Duration::from_secs(8), || async {
        redis.cmd(&["EXISTS", "ringway:session:{long-1}"]).trim() == "0"
    })
    .await;
    assert!(
        gone,
        "an ended session must expire after WEBSOCKET_SESSION_TTL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_outlasts_a_disconnect_by_the_grace_period_only() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let env = [
        ("REDIS_URL", url.as_str()),
        ("WS_HEARTBEAT_INTERVAL", "0.5"),
        ("WS_GRACE_PERIOD", "2"),
    ];
    let mut nodes = join_all(["pr-a", "pr-b", "pr-c"].map(|n| Backend::start(n, &env))).await;
    let mut watcher = Peer::connect(&nodes[2].ws_url("user=watcher"))
        .await
        .unwrap();
    watcher.join("room", None).await.unwrap();

    // A disconnect and a reconnect within the grace period: never absent.
    let mut flaky = Peer::connect(&nodes[0].ws_url("sid=flaky-1&user=flaky"))
        .await
        .unwrap();
    flaky.join("room", None).await.unwrap();
    assert_eq!(
        presence(&mut watcher, "room").await,
        json!(["flaky", "watcher"])
    );
    flaky.close().await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            presence(&mut watcher, "room").await,
            json!(["flaky", "watcher"])
        );
    }
    let back = Peer::connect(&nodes[1].ws_url("sid=flaky-1&user=flaky"))
        .await
        .unwrap();
    assert_eq!(back.welcome["resumed"], true);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            presence(&mut watcher, "room").await,
            json!(["flaky", "watcher"]),
            "a resumed user must never show as having left"
        );
    }

    // Gone for good: absent once the grace period is over.
    back.close().await;
    let left = presence_becomes(
        &mut watcher,
        "room",
        json!(["watcher"]),
        Duration::from_secs(6),
    )
    .await;
    assert!(
        left,
        "a user who stays away must leave after the grace period"
    );

    // An explicit leave ends presence at once, grace period or not.
    let mut brief = Peer::connect(&nodes[1].ws_url("user=brief")).await.unwrap();
    brief.join("room", None).await.unwrap();
    assert_eq!(
        presence(&mut watcher, "room").await,
        json!(["brief", "watcher"])
    );
    brief
        .send(json!({"type": "leave", "room": "room"}))
        .await
        .unwrap();
    assert_eq!(brief.recv_until("left").await.unwrap()["room"], "room");
    assert_eq!(presence(&mut watcher, "room").await, json!(["watcher"]));

    // A crash looks like a disconnect: the user lingers, then leaves.
    let mut doomed = Peer::connect(&nodes[0].ws_url("user=doomed"))
        .await
        .unwrap();
    doomed.join("room", None).await.unwrap();
    nodes[0].child.kill();
    assert_eq!(
        presence(&mut watcher, "room").await,
        json!(["doomed", "watcher"])
    );
    let left = presence_becomes(
        &mut watcher,
        "room",
        json!(["watcher"]),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        left,
        "the user of a dead node must leave after three heartbeats and the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_exports_the_metrics_operators_alert_on() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let node = Backend::start("metrics", &[("REDIS_URL", url.as_str())]).await;
    let mut p = Peer::connect(&node.ws_url("user=m")).await.unwrap();
    p.join("r", None).await.unwrap();
    p.publish("r", json!(1)).await.unwrap();
    let text = ringway_tests::http_client()
        .get(node.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "ringway_backend_connections{worker_id=\"metrics\"} 1",
        "ringway_backend_messages_in_total",
        "ringway_backend_messages_out_total",
        "ringway_backend_publish_to_deliver_seconds_bucket",
        "ringway_backend_publish_to_deliver_seconds_count{worker_id=\"metrics\"} 1",
        "ringway_backend_redis_errors_total",
        "ringway_backend_sessions",
        "ringway_backend_workers{worker_id=\"metrics\"} 1",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    let (_, stats) = node.get_json("/api/websocket/stats").await;
    assert_eq!(stats["worker_id"], "metrics");
    assert_eq!(stats["local"]["connections"], 1);
    assert_eq!(stats["cluster"]["total_workers"], 1);
}
