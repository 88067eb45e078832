//! Publish is idempotent by `(session, id)`: a frame sent again — its ack
//! lost, or its answer timed out while Redis was paused — is acked with
//! the original position and stored once. Without `id` nothing changes.
//! An `unavailable` answer says "not stored" only when that is certain.

use std::time::Duration;

use ringway_tests::backend::{eventually, Backend, Peer, RedisOpts, RedisServer};
use serde_json::{json, Value};

async fn node(redis: &RedisServer, name: &str) -> Backend {
    let url = redis.url();
    Backend::start(name, &[("REDIS_URL", &url), ("WS_HEARTBEAT_INTERVAL", "5")]).await
}

fn stream_len(redis: &RedisServer, room: &str) -> String {
    redis
        .cmd(&["XLEN", &format!("ringway:{{{room}}}:stream")])
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_publish_retried_after_a_timeout_is_stored_once() {
    let redis = RedisServer::start_with(RedisOpts {
        args: vec!["--enable-debug-command".into(), "yes".into()],
        ..RedisOpts::default()
    })
    .await;
    let node = node(&redis, "idem-a").await;
    let mut reader = Peer::connect(&node.ws_url("user=reader")).await.unwrap();
    reader.join("orders", None).await.unwrap();
    let mut author = Peer::connect(&node.ws_url("sid=author-1&user=author"))
        .await
        .unwrap();

    // A first publish loads the script (a stalled EVALSHA of an unknown
    // script would only ever find NOSCRIPT).
    author
        .publish_with_id("orders", json!("o-0"), "k0")
        .await
        .unwrap();
    assert_eq!(reader.recv().await.unwrap()["data"], "o-0");

    // Redis stalls for 3 s with the publish in its socket; the node gives
    // up after 2 s, and Redis runs the script when it wakes.
    let port = redis.port;
    let sleeper = std::thread::spawn(move || {
        std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "DEBUG", "SLEEP", "3"])
            .output()
            .expect("redis-cli")
    });
    let asleep = eventually(Duration::from_secs(5), || async {
        tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .is_ok()
            && !redis.answers_within(Duration::from_millis(200)).await
    })
    .await;
    assert!(asleep, "DEBUG SLEEP did not take");
    let failed = author
        .publish_with_id("orders", json!("o-1"), "k1")
        .await
        .expect_err("a paused Redis cannot answer in time");
    let failed: Value = serde_json::from_str(&failed).unwrap();
    assert_eq!(failed["code"], "unavailable", "{failed}");
    assert_eq!(
        failed["outcome"], "unknown",
        "a timeout is not a refusal: {failed}"
    );
    assert_eq!(failed["id"], "k1");

    assert!(sleeper.join().expect("sleeper").status.success());
    // The script ran when Redis woke: it was stored after all.
    let first = reader.recv().await.unwrap();
    assert_eq!(first["data"], "o-1", "{first}");

    let ack = author
        .publish_with_id("orders", json!("o-1"), "k1")
        .await
        .expect("the retry is acked");
    assert_eq!(
        ack["offset"], first["offset"],
        "acked with the original position"
    );
    assert_eq!(ack["epoch"], first["epoch"]);
    reader
        .is_silent(Duration::from_millis(300))
        .await
        .expect("the retry must not be delivered again");
    assert_eq!(stream_len(&redis, "orders"), "2", "stored once");

    // Resumed on a new connection (same session), the same id is still known.
    author.close().await;
    let mut back = Peer::connect(&node.ws_url("sid=author-1&user=author"))
        .await
        .unwrap();
    let again = back
        .publish_with_id("orders", json!("o-1"), "k1")
        .await
        .unwrap();
    assert_eq!(again["offset"], first["offset"]);
    assert_eq!(stream_len(&redis, "orders"), "2");
    let (_, stats) = node.get_json("/api/websocket/stats").await;
    assert_eq!(stats["local"]["publishes_repeated"], 2, "{stats}");

    // Another id, or another session with the same id, is another message.
    let next = back
        .publish_with_id("orders", json!("o-2"), "k2")
        .await
        .unwrap();
    assert_eq!(next["offset"], 3);
    let mut other = Peer::connect(&node.ws_url("user=other")).await.unwrap();
    let theirs = other
        .publish_with_id("orders", json!("x"), "k1")
        .await
        .unwrap();
    assert_eq!(theirs["offset"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_an_id_nothing_changes() {
    let redis = RedisServer::start().await;
    let node = node(&redis, "idem-b").await;
    let mut reader = Peer::connect(&node.ws_url("user=reader")).await.unwrap();
    reader.join("plain", None).await.unwrap();
    let mut author = Peer::connect(&node.ws_url("user=author")).await.unwrap();
    author.publish_no_ack("plain", json!("same")).await.unwrap();
    author.publish_no_ack("plain", json!("same")).await.unwrap();
    let offsets: Vec<Value> = [reader.recv().await.unwrap(), reader.recv().await.unwrap()]
        .iter()
        .map(|m| m["offset"].clone())
        .collect();
    assert_eq!(offsets, [json!(1), json!(2)], "two frames, two messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_publish_refused_before_it_ran_says_nothing_was_stored() {
    let mut redis = RedisServer::start().await;
    let node = node(&redis, "idem-c").await;
    let mut author = Peer::connect(&node.ws_url("user=author")).await.unwrap();
    redis.stop();
    let down = eventually(Duration::from_secs(10), || async {
        node.health_status().await == "degraded"
    })
    .await;
    assert!(down);
    // The first call may find the old connection half-dead (outcome
    // unknown); once the node knows Redis refuses connections, it is sure.
    let start = std::time::Instant::now();
    let sure = loop {
        let e = author
            .publish_with_id("r", json!(1), "n1")
            .await
            .unwrap_err();
        let e: Value = serde_json::from_str(&e).unwrap();
        assert_eq!(e["code"], "unavailable", "{e}");
        if e["outcome"] == "not_stored" {
            break true;
        }
        if start.elapsed() > Duration::from_secs(10) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(sure, "a refused connection must be reported as not stored");
}
