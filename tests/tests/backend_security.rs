//! The backend locked down, each rule against real processes: tokens must
//! carry `exp` (and the configured `aud`/`iss`), a short secret stops the
//! node, a live connection ends with 4401 when its token expires unless a
//! `refresh` came first, the `rooms` claim decides joins, publishes and
//! presence, users are held to their publish and direct rates, and the
//! connection caps answer with their documented statuses.

use std::process::Command;
use std::time::Duration;

use ringway_tests::backend::{
    eventually, mint_token, refused_status, unix_now, user_token, Backend, Peer, RedisServer,
    TEST_JWT_SECRET as SECRET,
};
use ringway_tests::{free_port, target_bin, wait_for_http_ok, Child};
use serde_json::{json, Value};

async fn node_with(redis: &RedisServer, name: &str, extra: &[(&str, &str)]) -> Backend {
    let url = redis.url();
    let mut env = vec![("REDIS_URL", url.as_str()), ("JWT_SECRET", SECRET)];
    env.extend_from_slice(extra);
    Backend::start(name, &env).await
}

fn token_url(node: &Backend, token: &str) -> String {
    node.ws_url(&format!("token={token}"))
}

/// Send `frame`; the next `error` frame's code, or the frame that came instead.
async fn error_code(peer: &mut Peer, frame: Value) -> String {
    peer.send(frame).await.unwrap();
    let answer = peer
        .recv_until_any(&["error", "joined", "presence", "ack"])
        .await
        .unwrap();
    assert_eq!(answer["type"], "error", "expected an error, got {answer}");
    answer["code"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_need_exp_and_the_configured_audience_and_issuer() {
    let redis = RedisServer::start().await;
    let open = node_with(&redis, "sec-open", &[]).await;
    let no_exp = mint_token(SECRET, &json!({"sub": "ann"}));
    assert_eq!(refused_status(&token_url(&open, &no_exp), &[]).await, 401);
    let any_aud = user_token(SECRET, "ann", 60, json!({"aud": "whatever"}));
    Peer::connect(&token_url(&open, &any_aud))
        .await
        .expect("without JWT_AUDIENCE any aud is accepted");

    let strict = node_with(
        &redis,
        "sec-strict",
        &[
            ("JWT_AUDIENCE", "chat"),
            ("JWT_ISSUER", "https://id.example"),
        ],
    )
    .await;
    let good = json!({"aud": "chat", "iss": "https://id.example"});
    Peer::connect(&token_url(&strict, &user_token(SECRET, "ann", 60, good)))
        .await
        .expect("the right aud and iss");
    for (why, extra) in [
        (
            "wrong aud",
            json!({"aud": "other", "iss": "https://id.example"}),
        ),
        ("no aud", json!({"iss": "https://id.example"})),
        (
            "wrong iss",
            json!({"aud": "chat", "iss": "https://evil.example"}),
        ),
        ("no iss", json!({"aud": "chat"})),
    ] {
        let url = token_url(&strict, &user_token(SECRET, "ann", 60, extra));
        assert_eq!(refused_status(&url, &[]).await, 401, "{why}");
    }
}

#[test]
fn a_short_secret_stops_the_node_at_start() {
    let out = Command::new(target_bin("ringway-backend"))
        .env_clear()
        .env("PORT", "127.0.0.1:0")
        .env("JWT_SECRET", "only-twenty-six-bytes-long")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a 26-byte secret was accepted");
    assert!(err.contains("JWT_SECRET") && err.contains("32"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dev_mode_warns_loudly_and_host_binds_a_bare_port() {
    let port = free_port();
    let mut cmd = Command::new(target_bin("ringway-backend"));
    cmd.env_clear()
        .env("PORT", port.to_string())
        .env("HOST", "0.0.0.0")
        .env("WORKER_ID", "sec-dev");
    let child = Child::spawn(cmd);
    let health = format!("http://127.0.0.1:{port}/health");
    wait_for_http_ok(&health, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", child.log()));
    let log = child.log();
    assert!(
        log.contains(&format!("0.0.0.0:{port}")),
        "HOST=0.0.0.0 with a bare PORT binds every address:\n{log}"
    );
    assert!(
        log.contains("WARN") && log.contains("DEV MODE") && log.contains("beyond loopback"),
        "no loud dev-mode warning:\n{log}"
    );

    let redis = RedisServer::start().await;
    let secured = node_with(&redis, "sec-quiet", &[]).await;
    assert!(!secured.child.log().contains("DEV MODE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_connection_closes_with_4401_when_its_token_expires() {
    let redis = RedisServer::start().await;
    let node = node_with(&redis, "sec-exp", &[("JWT_LEEWAY", "0")]).await;
    let short = user_token(SECRET, "ann", 2, json!({}));
    let mut peer = Peer::connect(&token_url(&node, &short)).await.unwrap();
    peer.send(json!({"type": "ping"})).await.unwrap();
    assert_eq!(
        peer.recv().await.unwrap()["type"],
        "pong",
        "alive before exp"
    );
    let started = std::time::Instant::now();
    assert_eq!(
        peer.closed_with(Duration::from_secs(10)).await.unwrap(),
        Some(4401)
    );
    assert!(started.elapsed() < Duration::from_secs(4), "closed at exp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_with_a_later_token_keeps_the_connection() {
    let redis = RedisServer::start().await;
    let node = node_with(&redis, "sec-refresh", &[("JWT_LEEWAY", "0")]).await;
    let short = user_token(SECRET, "ann", 2, json!({}));
    let mut peer = Peer::connect(&token_url(&node, &short)).await.unwrap();

    let bob = user_token(SECRET, "bob", 60, json!({}));
    let code = error_code(&mut peer, json!({"type": "refresh", "token": bob})).await;
    assert_eq!(code, "unauthorized", "another user's token");
    let code = error_code(&mut peer, json!({"type": "refresh", "token": "a.b.c"})).await;
    assert_eq!(code, "unauthorized", "a bad token");

    let exp = unix_now() + 60;
    let later = mint_token(
        SECRET,
        &json!({"sub": "ann", "exp": exp, "rooms": {"join": ["lobby"]}}),
    );
    peer.send(json!({"type": "refresh", "token": later, "id": "r1"}))
        .await
        .unwrap();
    let refreshed = peer.recv_until_any(&["refreshed", "error"]).await.unwrap();
    assert_eq!(refreshed["type"], "refreshed", "{refreshed}");
    assert_eq!(refreshed["exp"], exp);
    assert_eq!(refreshed["id"], "r1");
    peer.join("lobby", None)
        .await
        .expect("the new token's grants apply");
    peer.pump(Duration::from_secs(4))
        .await
        .expect("still open past the first token's exp");
    peer.send(json!({"type": "ping"})).await.unwrap();
    assert_eq!(peer.recv_until("pong").await.unwrap()["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rooms_claim_decides_joins_publishes_and_presence() {
    let redis = RedisServer::start().await;
    let node = node_with(&redis, "sec-rooms", &[]).await;
    let rooms = json!({"rooms": {"join": ["lobby", "team/*"], "publish": ["team/a"]}});
    let mut ann = Peer::connect(&token_url(&node, &user_token(SECRET, "ann", 60, rooms)))
        .await
        .unwrap();
    ann.join("lobby", None).await.expect("exact name");
    ann.join("team/a", None).await.expect("prefix");
    ann.join("team/zz", None).await.expect("prefix");
    for room in ["lobby2", "teams", "other", "@bob"] {
        let code = error_code(&mut ann, json!({"type": "join", "room": room})).await;
        assert_eq!(code, "forbidden", "join {room}");
    }
    ann.publish("team/a", json!(1))
        .await
        .expect("publish grant");
    for room in ["team/b", "lobby"] {
        let err = ann.publish(room, json!(1)).await.unwrap_err();
        assert!(err.contains("forbidden"), "publish {room}: {err}");
    }
    ann.send(json!({"type": "presence", "room": "@ann"}))
        .await
        .unwrap();
    assert_eq!(
        ann.recv_until("presence").await.unwrap()["users"],
        json!(["ann"])
    );
    ann.send(json!({"type": "presence", "room": "lobby"}))
        .await
        .unwrap();
    assert_eq!(ann.recv_until("presence").await.unwrap()["room"], "lobby");
    for room in ["*", "@bob", "other"] {
        let code = error_code(&mut ann, json!({"type": "presence", "room": room})).await;
        assert_eq!(code, "forbidden", "presence {room}");
    }

    let bare = user_token(SECRET, "cy", 60, json!({}));
    let mut cy = Peer::connect(&token_url(&node, &bare)).await.unwrap();
    let code = error_code(&mut cy, json!({"type": "join", "room": "lobby"})).await;
    assert_eq!(code, "forbidden", "no rooms claim grants no room");
    let malformed = user_token(SECRET, "dee", 60, json!({"rooms": {"join": ["a*b"]}}));
    assert_eq!(
        refused_status(&token_url(&node, &malformed), &[]).await,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_are_held_to_their_publish_and_direct_rates() {
    let redis = RedisServer::start().await;
    let node = node_with(
        &redis,
        "sec-rates",
        &[
            ("USER_PUBLISH_RATE", "0.01"),
            ("USER_PUBLISH_BURST", "3"),
            ("USER_DIRECT_RATE", "0.01"),
            ("USER_DIRECT_BURST", "2"),
        ],
    )
    .await;
    let grant = json!({"rooms": {"join": ["r"], "publish": ["r"]}});
    let t = user_token(SECRET, "ann", 60, grant.clone());
    let mut a1 = Peer::connect(&token_url(&node, &t)).await.unwrap();
    let mut a2 = Peer::connect(&token_url(&node, &t)).await.unwrap();
    a1.publish("r", json!(1)).await.unwrap();
    a2.publish("r", json!(2)).await.unwrap();
    a1.publish("r", json!(3)).await.unwrap();
    let err = a2.publish("r", json!(4)).await.unwrap_err();
    assert!(
        err.contains("rate_limited") && err.contains("not_stored"),
        "the user's 4th publish, from either connection: {err}"
    );
    let other = user_token(SECRET, "bob", 60, grant);
    let mut bob = Peer::connect(&token_url(&node, &other)).await.unwrap();
    bob.publish("r", json!(5))
        .await
        .expect("another user's own budget");

    for n in 0..2 {
        a1.send(json!({"type": "direct", "to": "bob", "data": n, "id": n}))
            .await
            .unwrap();
        assert_eq!(
            a1.recv_until_any(&["ack", "error"]).await.unwrap()["type"],
            "ack"
        );
    }
    let code = error_code(&mut a1, json!({"type": "direct", "to": "bob", "data": 3})).await;
    assert_eq!(code, "rate_limited", "a third direct message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_cap_answers_503_and_frees_with_a_close() {
    let redis = RedisServer::start().await;
    let node = node_with(&redis, "sec-node-cap", &[("MAX_CONNECTIONS", "2")]).await;
    let a = Peer::connect(&token_url(&node, &user_token(SECRET, "a", 60, json!({}))))
        .await
        .unwrap();
    let _b = Peer::connect(&token_url(&node, &user_token(SECRET, "b", 60, json!({}))))
        .await
        .unwrap();
    let c = user_token(SECRET, "c", 60, json!({}));
    assert_eq!(refused_status(&token_url(&node, &c), &[]).await, 503);
    a.close().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            Peer::connect(&token_url(&node, &c)).await.is_ok()
        })
        .await,
        "a freed place is given again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_per_user_cap_answers_429_for_that_user_only() {
    let redis = RedisServer::start().await;
    let node = node_with(&redis, "sec-user-cap", &[("MAX_CONNECTIONS_PER_USER", "2")]).await;
    let ann = user_token(SECRET, "ann", 60, json!({}));
    let _a1 = Peer::connect(&token_url(&node, &ann)).await.unwrap();
    let _a2 = Peer::connect(&token_url(&node, &ann)).await.unwrap();
    assert_eq!(refused_status(&token_url(&node, &ann), &[]).await, 429);
    let bob = user_token(SECRET, "bob", 60, json!({}));
    Peer::connect(&token_url(&node, &bob))
        .await
        .expect("another user is not capped by ann");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_per_ip_cap_counts_forwarded_for_only_from_trusted_proxies() {
    let redis = RedisServer::start().await;
    let t = user_token(SECRET, "ann", 60, json!({}));
    let behind = node_with(
        &redis,
        "sec-ip-proxy",
        &[
            ("MAX_CONNECTIONS_PER_IP", "1"),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    )
    .await;
    let url = token_url(&behind, &t);
    let xff = |ip: &'static str| [("X-Forwarded-For", ip)];
    let _one = Peer::connect_with(&url, &xff("203.0.113.1")).await.unwrap();
    let _two = Peer::connect_with(&url, &xff("203.0.113.2"))
        .await
        .expect("another client behind the same proxy");
    assert_eq!(refused_status(&url, &xff("203.0.113.1")).await, 429);

    let direct = node_with(&redis, "sec-ip-direct", &[("MAX_CONNECTIONS_PER_IP", "1")]).await;
    let url = token_url(&direct, &t);
    let _first = Peer::connect_with(&url, &xff("203.0.113.1")).await.unwrap();
    assert_eq!(
        refused_status(&url, &xff("203.0.113.9")).await,
        429,
        "an untrusted peer's X-Forwarded-For is ignored: both are 127.0.0.1"
    );
}
