//! The HTTP publish API against real nodes and Redis: a message an
//! application server posts reaches the room's WebSocket members on every
//! node at the room's next offset, exactly as a WebSocket publish would;
//! a retried `id` is stored once; the key is required (401 without it or
//! with a wrong one) and the API does not exist without `API_KEY` (404).

use std::time::Duration;

use ringway_tests::backend::{Backend, Peer, RedisServer};
use ringway_tests::http_client;
use serde_json::{json, Value};

const KEY: &str = "api-key-for-tests-0123456789";

async fn two_nodes(redis: &RedisServer) -> (Backend, Backend) {
    let url = redis.url();
    let env = [("REDIS_URL", url.as_str()), ("API_KEY", KEY)];
    let a = Backend::start("api-a", &env).await;
    let b = Backend::start("api-b", &env).await;
    (a, b)
}

/// `POST path` with `body` and, if given, the bearer `key`: status,
/// `WWW-Authenticate` and JSON body.
async fn post(node: &Backend, path: &str, key: Option<&str>, body: Value) -> (u16, String, Value) {
    let mut req = http_client().post(node.url(path)).json(&body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, challenge, resp.json().await.unwrap_or(Value::Null))
}

/// The next `message` frame of `room`.
async fn next_message(peer: &mut Peer, room: &str) -> Value {
    loop {
        let frame = peer.recv_until("message").await.unwrap();
        if frame["room"] == room {
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_posted_message_reaches_members_on_every_node_at_the_next_offset() {
    let redis = RedisServer::start().await;
    let (a, b) = two_nodes(&redis).await;
    let mut on_a = Peer::connect(&a.ws_url("user=ann")).await.unwrap();
    let mut on_b = Peer::connect(&b.ws_url("user=bob")).await.unwrap();
    let joined = on_a.join("news", None).await.unwrap();
    on_b.join("news", None).await.unwrap();
    let ack = on_a.publish("news", json!("from a socket")).await.unwrap();
    let top = ack["offset"].as_u64().unwrap();
    assert_eq!(top, joined["offset"].as_u64().unwrap() + 1);
    next_message(&mut on_a, "news").await;
    next_message(&mut on_b, "news").await;

    let (status, _, stored) = post(
        &b,
        "/api/publish",
        Some(KEY),
        json!({"room": "news", "data": {"text": "hi"}}),
    )
    .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(
        stored["offset"],
        top + 1,
        "the room's next offset: {stored}"
    );
    assert_eq!(stored["epoch"], ack["epoch"]);
    for peer in [&mut on_a, &mut on_b] {
        let m = next_message(peer, "news").await;
        assert_eq!(m["offset"], top + 1);
        assert_eq!(m["data"]["text"], "hi");
        assert_eq!(m["from"], "api");
    }

    let (status, _, stored) = post(
        &a,
        "/api/direct",
        Some(KEY),
        json!({"to": "bob", "data": 7, "from": "billing"}),
    )
    .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["room"], "@bob");
    let m = next_message(&mut on_b, "@bob").await;
    assert_eq!(
        (m["data"].clone(), m["from"].clone()),
        (json!(7), json!("billing"))
    );
    assert_eq!(m["offset"], stored["offset"]);

    let (status, _, stored) = post(&a, "/api/broadcast", Some(KEY), json!({"data": "all"})).await;
    assert_eq!(status, 200, "{stored}");
    for peer in [&mut on_a, &mut on_b] {
        let m = next_message(peer, "*").await;
        assert_eq!(m["data"], "all");
        assert_eq!(m["offset"], stored["offset"]);
    }

    // History: a late joiner recovers the posted message by offset.
    let mut late = Peer::connect(&a.ws_url("user=cy")).await.unwrap();
    let epoch = ack["epoch"].as_str().unwrap();
    let joined = late.join("news", Some((epoch, top))).await.unwrap();
    assert_eq!(joined["recovered"], true);
    assert_eq!(next_message(&mut late, "news").await["data"]["text"], "hi");

    for (path, body) in [
        ("/api/publish", json!({"room": "@bob", "data": 1})),
        ("/api/publish", json!({"room": "*", "data": 1})),
        ("/api/publish", json!({"room": "a b", "data": 1})),
        ("/api/publish", json!({"room": "news"})),
        ("/api/direct", json!({"to": "a/b", "data": 1})),
        (
            "/api/publish",
            json!({"room": "news", "data": 1, "id": {"x": 1}}),
        ),
    ] {
        let (status, _, e) = post(&a, path, Some(KEY), body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_id_is_stored_once() {
    let redis = RedisServer::start().await;
    let (a, b) = two_nodes(&redis).await;
    let mut member = Peer::connect(&b.ws_url("user=ann")).await.unwrap();
    member.join("orders", None).await.unwrap();
    let body = json!({"room": "orders", "data": {"order": 1}, "id": "order-1"});
    let (_, _, first) = post(&a, "/api/publish", Some(KEY), body.clone()).await;
    assert_eq!(first["repeated"], false, "{first}");
    for node in [&a, &b] {
        let (status, _, again) = post(node, "/api/publish", Some(KEY), body.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(again["offset"], first["offset"], "the first position again");
        assert_eq!(again["repeated"], true);
    }
    let stored = redis.cmd(&["XLEN", "ringway:{orders}:stream"]);
    assert_eq!(stored.trim(), "1", "stored once");
    let m = next_message(&mut member, "orders").await;
    assert_eq!(m["offset"], first["offset"]);
    member
        .is_silent(Duration::from_millis(500))
        .await
        .expect("delivered once");
    let (_, _, next) = post(
        &a,
        "/api/publish",
        Some(KEY),
        json!({"room": "orders", "data": 2, "id": "order-2"}),
    )
    .await;
    assert_eq!(next["offset"], first["offset"].as_u64().unwrap() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_key_is_required_and_the_api_is_off_without_one() {
    let redis = RedisServer::start().await;
    let (a, _b) = two_nodes(&redis).await;
    let body = json!({"room": "news", "data": 1});
    for path in ["/api/publish", "/api/direct", "/api/broadcast"] {
        let (status, challenge, _) = post(&a, path, None, body.clone()).await;
        assert_eq!(status, 401, "{path} without a key");
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        let (status, challenge, _) =
            post(&a, path, Some("api-key-for-tests-0123456780"), body.clone()).await;
        assert_eq!(status, 401, "{path} with a wrong key");
        assert!(challenge.contains("invalid_token"), "{challenge}");
    }
    let stored = redis.cmd(&["EXISTS", "ringway:{news}:stream"]);
    assert_eq!(stored.trim(), "0", "nothing was stored by refused requests");

    let url = redis.url();
    let off = Backend::start("api-off", &[("REDIS_URL", url.as_str())]).await;
    let (status, _, _) = post(&off, "/api/publish", Some(KEY), body).await;
    assert_eq!(status, 404, "no API_KEY: no API");
}
