//! A node dies (`kill -9`): the survivors notice within three heartbeats,
//! exactly one of them cleans it up, and its clients resume their sessions
//! on another node — same user, same rooms — and, joining with the
//! positions they last saw, get every message they missed, in order, once.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use ringway_tests::backend::{eventually, Backend, Peer, RedisServer};
use serde_json::{json, Value};

const HEARTBEAT_SECS: f64 = 0.5;

async fn cluster(redis: &RedisServer, names: &[&str]) -> Vec<Backend> {
    let url = redis.url();
    let hb = HEARTBEAT_SECS.to_string();
    let env = [
        ("REDIS_URL", url.as_str()),
        ("WS_HEARTBEAT_INTERVAL", hb.as_str()),
        ("WEBSOCKET_SESSION_TTL", "60"),
        ("WS_GRACE_PERIOD", "5"),
    ];
    join_all(names.iter().map(|n| Backend::start(n, &env))).await
}

/// The `worker_id`s in a node's cluster view.
async fn workers_seen_by(node: &Backend) -> Vec<String> {
    let (_, stats) = node.get_json("/api/websocket/stats").await;
    stats["cluster"]["workers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter_map(|w| w["worker_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every cleanup of `dead` that `node` reports having done.
async fn cleanups_of(node: &Backend, dead: &str) -> usize {
    let (_, stats) = node.get_json("/api/websocket/stats").await;
    stats["local"]["dead_workers_cleaned"]
        .as_array()
        .map(|c| c.iter().filter(|c| c["worker_id"] == dead).count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_is_declared_dead_and_cleaned_by_exactly_one_survivor() {
    let redis = RedisServer::start().await;
    let mut nodes = cluster(&redis, &["fo-a", "fo-b", "fo-c"]).await;
    let all_seen = eventually(Duration::from_secs(10), || async {
        workers_seen_by(&nodes[1]).await.len() == 3
    })
    .await;
    assert!(all_seen, "node b never saw three workers");
    let mut doomed = Vec::new();
    for i in 0..5 {
        let p = Peer::connect(&nodes[0].ws_url(&format!("sid=doomed-{i}&user=u{i}")))
            .await
            .unwrap();
        doomed.push(p);
    }
    let held = redis.cmd(&["SCARD", "ringway:{cluster}:node:fo-a:sessions"]);
    assert_eq!(held.trim(), "5", "fo-a should hold its five sessions");

    nodes[0].child.kill();
    let killed_at = Instant::now();
    let survivors = &nodes[1..];
    // Declared dead after 3 silent heartbeats; allow generous slack.
    let deadline = Duration::from_secs_f64(HEARTBEAT_SECS * 3.0) + Duration::from_secs(5);
    let gone = eventually(deadline, || async {
        let mut ok = true;
        for s in survivors {
            ok &= !workers_seen_by(s).await.contains(&"fo-a".to_owned());
        }
        ok
    })
    .await;
    assert!(
        gone,
        "fo-a still listed as alive after {:?}",
        killed_at.elapsed()
    );
    let cleaned = eventually(deadline, || async {
        let mut n = 0;
        for s in survivors {
            n += cleanups_of(s, "fo-a").await;
        }
        n >= 1
    })
    .await;
    assert!(cleaned, "no survivor cleaned fo-a up");
    // Give a second claim every chance to happen, then count.
    tokio::time::sleep(Duration::from_secs_f64(HEARTBEAT_SECS * 4.0)).await;
    let mut total = 0;
    for s in survivors {
        total += cleanups_of(s, "fo-a").await;
    }
    assert_eq!(total, 1, "fo-a must be cleaned by exactly one survivor");
    let worker = redis.cmd(&["HGET", "ringway:session:{doomed-0}", "worker"]);
    assert_eq!(worker.trim(), "", "the dead node still holds doomed-0");
    let index = redis.cmd(&["EXISTS", "ringway:{cluster}:node:fo-a:sessions"]);
    assert_eq!(
        index.trim(),
        "0",
        "the dead node's session index was not removed"
    );
    drop(doomed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_of_a_killed_node_resume_elsewhere_and_miss_nothing() {
    let redis = RedisServer::start().await;
    let mut nodes = cluster(&redis, &["rs-a", "rs-b"]).await;
    let mut victim = Peer::connect(&nodes[0].ws_url("sid=victim-1&user=vic"))
        .await
        .unwrap();
    assert_eq!(victim.welcome["resumed"], false);
    let joined = victim.join("news", None).await.unwrap();
    let mut author = Peer::connect(&nodes[1].ws_url("user=author"))
        .await
        .unwrap();
    let mut last_seen: Option<Value> = None;
    for i in 0..10 {
        author.publish("news", json!(i)).await.unwrap();
        let m = victim.recv().await.unwrap();
        assert_eq!(m["data"], json!(i), "{m}");
        last_seen = Some(m);
    }
    let last_seen = last_seen.unwrap();
    assert_eq!(last_seen["epoch"], joined["epoch"]);

    nodes[0].child.kill();
    drop(victim);
    // Published while the victim has no connection at all.
    for i in 10..25 {
        author.publish("news", json!(i)).await.unwrap();
    }
    let mut back = Peer::connect(&nodes[1].ws_url("sid=victim-1&user=vic"))
        .await
        .unwrap();
    assert_eq!(back.welcome["resumed"], true, "{}", back.welcome);
    assert_eq!(back.welcome["worker_id"], "rs-b");
    assert_eq!(back.welcome["sid"], "victim-1");
    assert_eq!(back.welcome["user"], "vic");
    let rooms: Vec<&str> = back.welcome["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in ["news", "*", "@vic"] {
        assert!(rooms.contains(&want), "room {want} lost: {rooms:?}");
    }
    let epoch = last_seen["epoch"].as_str().unwrap();
    let offset = last_seen["offset"].as_u64().unwrap();
    let rejoined = back.join("news", Some((epoch, offset))).await.unwrap();
    assert_eq!(rejoined["recovered"], true, "{rejoined}");
    // Published after the resume, while the replay may still be going out.
    author.publish("news", json!(25)).await.unwrap();
    let mut got = Vec::new();
    for _ in 10..26 {
        let m = back.recv().await.unwrap();
        assert_eq!(m["type"], "message", "{m}");
        got.push(m["data"].clone());
    }
    let want: Vec<Value> = (10..26).map(|i| json!(i)).collect();
    assert_eq!(got, want, "the replay must be the exact gap, then live");
    back.is_silent(Duration::from_millis(300))
        .await
        .expect("a message was delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resuming_on_another_live_node_supersedes_the_old_connection() {
    let redis = RedisServer::start().await;
    let nodes = cluster(&redis, &["sp-a", "sp-b"]).await;
    let mut first = Peer::connect(&nodes[0].ws_url("sid=twice&user=tw"))
        .await
        .unwrap();
    let second = Peer::connect(&nodes[1].ws_url("sid=twice&user=tw"))
        .await
        .unwrap();
    assert_eq!(second.welcome["resumed"], true);
    let code = first.closed_with(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        code,
        Some(4001),
        "the superseded connection must close with 4001"
    );
    let owner = redis.cmd(&["HGET", "ringway:session:{twice}", "worker"]);
    assert_eq!(owner.trim(), "sp-b");
    // The old node lets go of it in its index, and only there.
    let let_go = eventually(Duration::from_secs(5), || async {
        redis
            .cmd(&["SISMEMBER", "ringway:{cluster}:node:sp-a:sessions", "twice"])
            .trim()
            == "0"
    })
    .await;
    assert!(let_go, "sp-a still counts the session it lost");
    let held = redis.cmd(&["SISMEMBER", "ringway:{cluster}:node:sp-b:sessions", "twice"]);
    assert_eq!(held.trim(), "1");
    let owner = redis.cmd(&["HGET", "ringway:session:{twice}", "worker"]);
    assert_eq!(
        owner.trim(),
        "sp-b",
        "the old node's release must not clear the new holder"
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resuming_on_the_same_node_keeps_the_session_held() {
    let redis = RedisServer::start().await;
    let nodes = cluster(&redis, &["sn-a"]).await;
    let mut first = Peer::connect(&nodes[0].ws_url("sid=again&user=ag"))
        .await
        .unwrap();
    let second = Peer::connect(&nodes[0].ws_url("sid=again&user=ag"))
        .await
        .unwrap();
    assert_eq!(second.welcome["resumed"], true);
    let code = first.closed_with(Duration::from_secs(10)).await.unwrap();
    assert_eq!(code, Some(4001));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let owner = redis.cmd(&["HGET", "ringway:session:{again}", "worker"]);
    assert_eq!(
        owner.trim(),
        "sn-a",
        "the replaced connection released a live session"
    );
    let held = redis.cmd(&["SISMEMBER", "ringway:{cluster}:node:sn-a:sessions", "again"]);
    assert_eq!(held.trim(), "1");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sid_of_another_user_is_not_resumed() {
    let redis = RedisServer::start().await;
    let nodes = cluster(&redis, &["ou-a"]).await;
    let owner = Peer::connect(&nodes[0].ws_url("sid=mine&user=owner"))
        .await
        .unwrap();
    owner.close().await;
    let thief = Peer::connect(&nodes[0].ws_url("sid=mine&user=thief"))
        .await
        .unwrap();
    assert_eq!(thief.welcome["resumed"], false);
    assert_ne!(thief.welcome["sid"], "mine", "a fresh sid must be issued");
    let user = redis.cmd(&["HGET", "ringway:session:{mine}", "user"]);
    assert_eq!(user.trim(), "owner", "the owner's session was overwritten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_with_one_worker_id_are_reported() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let env = [
        ("REDIS_URL", url.as_str()),
        ("WS_HEARTBEAT_INTERVAL", "0.3"),
    ];
    let twins = join_all([0, 1].map(|_| Backend::start("twin", &env))).await;
    for node in &twins {
        let reported = eventually(Duration::from_secs(10), || async {
            let (_, health) = node.get_json("/health").await;
            health["websocket"]["worker_id_conflict"] == true && health["status"] == "degraded"
        })
        .await;
        assert!(
            reported,
            "a duplicate WORKER_ID went unreported on {}",
            node.addr
        );
    }
    let (_, single) = cluster(&redis, &["single"]).await[0]
        .get_json("/health")
        .await;
    assert_eq!(single["websocket"]["worker_id_conflict"], false, "{single}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_restarted_under_its_old_id_releases_what_it_left() {
    let redis = RedisServer::start().await;
    let mut nodes = cluster(&redis, &["again-a"]).await;
    let mut peers = Vec::new();
    for i in 0..3 {
        let url = nodes[0].ws_url(&format!("sid=left-{i}&user=l{i}"));
        peers.push(Peer::connect(&url).await.unwrap());
    }
    let index = "ringway:{cluster}:node:again-a:sessions";
    assert_eq!(redis.cmd(&["SCARD", index]).trim(), "3");
    nodes[0].child.kill();
    drop(peers);
    nodes[0].restart().await; // same address, same WORKER_ID, new process
    assert_eq!(
        redis.cmd(&["SCARD", index]).trim(),
        "0",
        "the new process must not count the old one's sessions"
    );
    for i in 0..3 {
        let key = format!("ringway:session:{{left-{i}}}");
        assert_eq!(redis.cmd(&["HGET", &key, "worker"]).trim(), "");
    }
    let back = Peer::connect(&nodes[0].ws_url("sid=left-0&user=l0"))
        .await
        .unwrap();
    assert_eq!(back.welcome["resumed"], true);
    let (_, health) = nodes[0].get_json("/health").await;
    assert_eq!(health["websocket"]["worker_id_conflict"], false, "{health}");
}
