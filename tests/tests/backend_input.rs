//! Bad input gets the right answer and loses nothing: the exact HTTP
//! status for a refused connect, the exact error code for a bad frame (and
//! the connection stays), the exact close code when a limit is hit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use ringway_tests::backend::{eventually, Backend, Peer, RedisServer};
use ringway_tests::ws_connect;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = ringway_tests::backend::TEST_JWT_SECRET;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(secret: &str, claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// The HTTP status of a refused upgrade, from the client's error.
async fn refused_status(url: &str, headers: &[(&str, &str)]) -> u16 {
    match ws_connect(url, headers).await {
        Ok(_) => panic!("{url} was accepted"),
        Err(e) => e
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP refusal: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connects_need_a_valid_token_when_jwt_is_on() {
    let node = Backend::start("auth", &[("JWT_SECRET", SECRET)]).await;
    let good = token(SECRET, json!({"sub": "alice", "exp": now() + 300}));
    let cases = [
        ("missing", String::new()),
        (
            "bad signature",
            token(
                "another-secret",
                json!({"sub": "alice", "exp": now() + 300}),
            ),
        ),
        (
            "expired",
            token(SECRET, json!({"sub": "alice", "exp": now() - 300})),
        ),
        (
            "not yet valid",
            token(
                SECRET,
                json!({"sub": "alice", "nbf": now() + 300, "exp": now() + 900}),
            ),
        ),
        ("garbage", "a.b.c".to_owned()),
    ];
    for (why, t) in &cases {
        let url = node.ws_url(&format!("token={t}"));
        assert_eq!(refused_status(&url, &[]).await, 401, "{why}");
    }
    let peer = Peer::connect(&node.ws_url(&format!("token={good}&user=mallory")))
        .await
        .unwrap();
    assert_eq!(
        peer.welcome["user"], "alice",
        "the token's sub wins over ?user="
    );
    let bearer = format!("Bearer {good}");
    let peer = Peer::connect_with(&node.ws_url(""), &[("Authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(peer.welcome["user"], "alice");
    let mut peer = peer;
    peer.send(json!({"type": "broadcast", "data": 1}))
        .await
        .unwrap();
    let e = peer.recv().await.unwrap();
    assert_eq!(e["code"], "forbidden", "broadcast needs the claim: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origins_outside_the_allow_list_get_403_and_bad_ids_400() {
    let node = Backend::start(
        "origins",
        &[(
            "ALLOWED_ORIGINS",
            "https://app.example, https://admin.example",
        )],
    )
    .await;
    let url = node.ws_url("user=o");
    assert_eq!(
        refused_status(&url, &[("Origin", "https://evil.example")]).await,
        403
    );
    Peer::connect_with(&url, &[("Origin", "https://admin.example")])
        .await
        .expect("a listed origin is allowed");
    Peer::connect(&url)
        .await
        .expect("no Origin: not a browser, allowed");
    assert_eq!(refused_status(&node.ws_url("sid=a%20b"), &[]).await, 400);
    assert_eq!(refused_status(&node.ws_url("user=a/b"), &[]).await, 400);
    let plain = ringway_tests::http_client()
        .get(node.url("/ws"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status().as_u16(), 400, "GET /ws without an upgrade");
    assert!(plain.headers().contains_key("x-websocket-worker-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_frames_get_error_codes_and_the_connection_stays() {
    let node = Backend::start("frames", &[]).await;
    let mut p = Peer::connect(&node.ws_url("user=f")).await.unwrap();
    let cases: &[(&str, &str)] = &[
        ("{not json", "bad_json"),
        ("[1,2,3]", "bad_json"),
        (r#"{"room":"x"}"#, "bad_json"),
        (r#"{"type":"dance"}"#, "unknown_type"),
        (r#"{"type":"join"}"#, "bad_request"),
        (r#"{"type":"join","room":7}"#, "bad_request"),
        (r#"{"type":"publish","room":"r"}"#, "bad_request"),
        (r#"{"type":"join","room":"a b"}"#, "bad_room"),
        (r#"{"type":"publish","room":"*","data":1}"#, "forbidden"),
        (r#"{"type":"publish","room":"@f","data":1}"#, "forbidden"),
        (r#"{"type":"join","room":"@someone-else"}"#, "forbidden"),
    ];
    for (text, code) in cases {
        p.send_text(text).await.unwrap();
        let e = p.recv().await.unwrap();
        assert_eq!(e["type"], "error", "{text}: {e}");
        assert_eq!(e["code"], *code, "{text}: {e}");
    }
    p.send(json!({"type": "dance", "id": "q-1"})).await.unwrap();
    assert_eq!(p.recv().await.unwrap()["id"], "q-1", "errors echo the id");
    p.send_message(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(p.recv().await.unwrap()["code"], "binary_unsupported");
    p.send(json!({"type": "ping"})).await.unwrap();
    assert_eq!(p.recv().await.unwrap()["type"], "pong", "still connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_message_closes_with_1009() {
    let node = Backend::start("size", &[("WS_MAX_MESSAGE_SIZE", "1024")]).await;
    let mut p = Peer::connect(&node.ws_url("user=s")).await.unwrap();
    let fits = json!({"type": "publish", "room": "r", "data": "x".repeat(900)});
    p.send(fits).await.unwrap();
    p.send(json!({"type": "ping"})).await.unwrap();
    assert_eq!(p.recv_until("pong").await.unwrap()["type"], "pong");
    let big = json!({"type": "publish", "room": "r", "data": "x".repeat(2000)});
    p.send(big).await.unwrap();
    let code = p.closed_with(Duration::from_secs(10)).await.unwrap();
    assert_eq!(code, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_gets_rate_limited_errors_then_1008() {
    let node = Backend::start("rate", &[("WS_RATE_LIMIT", "5"), ("WS_RATE_BURST", "5")]).await;
    let mut p = Peer::connect(&node.ws_url("user=r")).await.unwrap();
    for _ in 0..40 {
        if p.send(json!({"type": "ping"})).await.is_err() {
            break;
        }
    }
    let (mut pongs, mut limited) = (0, 0);
    let code = loop {
        match p.recv().await {
            Ok(f) if f["type"] == "pong" => pongs += 1,
            Ok(f) if f["code"] == "rate_limited" => limited += 1,
            Ok(f) => panic!("unexpected {f}"),
            Err(e) => break e,
        }
    };
    assert!(
        (5..=7).contains(&pongs),
        "the burst is 5 (plus refill), got {pongs} pongs"
    );
    assert!(limited >= 5, "refusals are reported first, got {limited}");
    assert_eq!(code, "closed: Some(1008)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_is_closed_with_1013() {
    let node = Backend::start(
        "slow",
        &[
            ("WS_OUTBOUND_QUEUE", "16"),
            ("WS_RATE_LIMIT", "100000"),
            ("WS_RATE_BURST", "100000"),
        ],
    )
    .await;
    let mut slow = Peer::connect(&node.ws_url("user=slow")).await.unwrap();
    slow.join("firehose", None).await.unwrap();
    let mut fast = Peer::connect(&node.ws_url("user=fast")).await.unwrap();
    let chunk = "y".repeat(32 * 1024);
    let start = std::time::Instant::now();
    loop {
        for _ in 0..50 {
            fast.publish_no_ack("firehose", json!(chunk)).await.unwrap();
        }
        let (_, stats) = node.get_json("/api/websocket/stats").await;
        if stats["local"]["slow_consumer_closes"].as_u64() == Some(1) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the slow client was never closed"
        );
    }
    let code = slow.closed_with(Duration::from_secs(30)).await.unwrap();
    assert_eq!(code, Some(1013));
    fast.send(json!({"type": "ping"})).await.unwrap();
    assert_eq!(fast.recv_until("pong").await.unwrap()["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_answers_pings_is_closed_with_4408() {
    let node = Backend::start("mute", &[("WS_HEARTBEAT_INTERVAL", "0.3")]).await;
    let mut p = Peer::connect(&node.ws_url("user=m")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await; // not reading: no pongs
    let code = p.closed_with(Duration::from_secs(10)).await.unwrap();
    assert_eq!(code, Some(4408));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_closes_clients_with_1001_and_keeps_their_sessions() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let mut node = Backend::start("term", &[("REDIS_URL", url.as_str())]).await;
    let mut p = Peer::connect(&node.ws_url("sid=stay-1&user=t"))
        .await
        .unwrap();
    p.join("kept", None).await.unwrap();
    node.child.signal(libc::SIGTERM);
    let code = p.closed_with(Duration::from_secs(10)).await.unwrap();
    assert_eq!(code, Some(1001));
    let exited = eventually(Duration::from_secs(10), || {
        let done = node.child.try_wait().is_some();
        async move { done }
    })
    .await;
    assert!(exited, "the node did not exit after SIGTERM");
    assert!(node.child.try_wait().unwrap().success());
    let rooms = redis.cmd(&["HGET", "ringway:session:{stay-1}", "rooms"]);
    assert!(
        rooms.contains("kept"),
        "session lost on shutdown: {rooms:?}"
    );
    let worker = redis.cmd(&["HGET", "ringway:session:{stay-1}", "worker"]);
    assert_eq!(
        worker.trim(),
        "",
        "a stopped node must let go of its sessions:\n{}",
        node.child.log()
    );
    let ttl: i64 = redis
        .cmd(&["TTL", "ringway:session:{stay-1}"])
        .trim()
        .parse()
        .unwrap();
    assert!(
        ttl > 0,
        "the session must still expire by itself (ttl {ttl})"
    );
}
