//! Redis comes back with less than it acknowledged: restarted from an
//! older snapshot, or a replica that missed the last writes promoted in
//! the primary's place. Offsets must never be reused under the epoch
//! clients hold: every client either holds every acked message exactly
//! once, or is told `recovered: false`; none silently misses one.
//! A setup declared durable (`REDIS_DURABLE=1`, `appendfsync always`)
//! keeps its epochs across a restart.

use std::time::Duration;

use futures_util::future::join_all;
use ringway_tests::backend::{eventually, Backend, Peer, RedisOpts, RedisServer};
use serde_json::{json, Value};

const ROOM: &str = "feed";

/// Nodes, clients and what was acked, through one story.
struct Story {
    nodes: Vec<Backend>,
    /// Joined the whole time, on node 0.
    live: Peer,
    /// Publishes, on node 1.
    author: Peer,
    /// `(data, epoch, offset)` of every acked publish.
    acked: Vec<(Value, String, u64)>,
    /// Where a client that left after the third message stopped.
    away: (String, u64),
    /// Still connected on node 1 until the tenth message.
    late: Option<Peer>,
}

async fn nodes(url: &str, extra: &[(&str, &str)]) -> Vec<Backend> {
    let mut env = vec![
        ("REDIS_URL", url),
        // Slow enough that clients waiting between reads are not closed
        // for silence (they do not answer pings while they wait).
        ("WS_HEARTBEAT_INTERVAL", "5"),
        ("WEBSOCKET_SESSION_TTL", "60"),
    ];
    env.extend_from_slice(extra);
    join_all(["stale-a", "stale-b"].map(|n| Backend::start(n, &env))).await
}

/// Read `n` messages of [`ROOM`]; the position of the last.
async fn read_messages(peer: &mut Peer, n: usize) -> (String, u64) {
    let mut last = (String::new(), 0);
    for _ in 0..n {
        let m = peer.recv().await.expect("a message");
        assert_eq!(m["type"], "message", "{m}");
        last = (
            m["epoch"].as_str().unwrap().to_owned(),
            m["offset"].as_u64().unwrap(),
        );
    }
    last
}

impl Story {
    /// Two nodes on `url`; messages 1..=5 published and seen.
    async fn begin(url: &str) -> Story {
        let nodes = nodes(url, &[]).await;
        let mut live = Peer::connect(&nodes[0].ws_url("user=live")).await.unwrap();
        live.join(ROOM, None).await.unwrap();
        let mut away = Peer::connect(&nodes[0].ws_url("sid=away-1&user=away"))
            .await
            .unwrap();
        away.join(ROOM, None).await.unwrap();
        let mut late = Peer::connect(&nodes[1].ws_url("sid=late-1&user=late"))
            .await
            .unwrap();
        late.join(ROOM, None).await.unwrap();
        let author = Peer::connect(&nodes[1].ws_url("user=author"))
            .await
            .unwrap();
        let mut story = Story {
            nodes,
            live,
            author,
            acked: Vec::new(),
            away: (String::new(), 0),
            late: Some(late),
        };
        story.publish(1..=5).await;
        story.away = read_messages(&mut away, 3).await;
        away.close().await;
        story
    }

    /// Publish `range` (retrying with the same id while Redis is away);
    /// the connected clients read them.
    async fn publish(&mut self, range: std::ops::RangeInclusive<u64>) {
        let n = range.clone().count();
        for i in range {
            let ack = self.author.publish_retrying(ROOM, json!(i)).await.unwrap();
            let epoch = ack["epoch"].as_str().unwrap().to_owned();
            self.acked
                .push((json!(i), epoch, ack["offset"].as_u64().unwrap()));
        }
        if let Some(late) = &mut self.late {
            read_messages(late, n).await;
        }
    }

    /// The tail is about to be lost: the client on node 1 leaves now,
    /// having seen everything up to the tenth message.
    async fn publish_the_tail(&mut self) -> (String, u64) {
        self.publish(6..=10).await;
        let (live_last, _) = {
            let pos = read_messages(&mut self.live, 10).await;
            (pos.clone(), ())
        };
        let (epoch, offset) = (self.acked[9].1.clone(), self.acked[9].2);
        assert_eq!(live_last, (epoch.clone(), offset));
        if let Some(late) = self.late.take() {
            late.close().await;
        }
        (epoch, offset)
    }

    /// Redis is back with less: publish 11..=15 and check every client.
    async fn end(mut self, tail: (String, u64)) {
        let healthy = eventually(Duration::from_secs(20), || async {
            let mut all = true;
            for n in &self.nodes {
                all &= n.health_status().await == "healthy";
            }
            all
        })
        .await;
        assert!(healthy, "the nodes did not reconnect by themselves");
        self.publish(11..=15).await;
        let before = &tail.0;
        for (data, epoch, offset) in &self.acked[10..] {
            assert_ne!(
                epoch, before,
                "message {data} reused offset {offset} under the epoch clients hold"
            );
        }

        // The client connected throughout is told, then gets the new messages once.
        let mut resets = Vec::new();
        let mut got = Vec::new();
        while got.len() < 5 {
            let f = self
                .live
                .recv()
                .await
                .unwrap_or_else(|e| panic!("live, after {got:?}: {e}"));
            match f["type"].as_str() {
                Some("message") if f["room"] == ROOM => got.push(f),
                Some("joined") if f["room"] == ROOM => resets.push(f),
                _ => {}
            }
        }
        assert!(
            !resets.is_empty() && resets.iter().all(|r| r["recovered"] == false),
            "the connected client was not told that continuity broke: {resets:?}"
        );
        let data: Vec<Value> = got.iter().map(|m| m["data"].clone()).collect();
        assert_eq!(data, (11..=15).map(|i| json!(i)).collect::<Vec<_>>());
        for (m, (_, epoch, offset)) in got.iter().zip(&self.acked[10..]) {
            assert_eq!(
                (m["epoch"].as_str().unwrap(), m["offset"].as_u64().unwrap()),
                (epoch.as_str(), *offset)
            );
        }
        self.live
            .is_silent(Duration::from_millis(300))
            .await
            .expect("nothing twice");

        // Clients resuming from before the loss and from its very end are told too.
        for (sid, user, (epoch, offset)) in [
            ("away-1", "away", self.away.clone()),
            ("late-1", "late", tail.clone()),
        ] {
            let url = self.nodes[0].ws_url(&format!("sid={sid}&user={user}"));
            let mut back = Peer::connect(&url).await.unwrap();
            assert_eq!(back.welcome["resumed"], true);
            let joined = back.join(ROOM, Some((&epoch, offset))).await.unwrap();
            assert_eq!(
                joined["recovered"], false,
                "{user} resumed from {epoch}:{offset} as if nothing was lost: {joined}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restarted_from_an_older_snapshot_is_told_never_hidden() {
    let mut redis = RedisServer::start().await; // RDB only: what SAVE wrote
    let mut story = Story::begin(&redis.url()).await;
    redis.cmd(&["SAVE"]);
    let tail = story.publish_the_tail().await;
    redis.restart().await; // kill -9, then start from the snapshot (5 of 10)
    story.end(tail).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_promoted_without_the_last_writes_is_told_never_hidden() {
    let mut primary = RedisServer::start().await;
    let port = primary.port.to_string();
    let mut replica = RedisServer::start_with(RedisOpts {
        args: vec!["--replicaof".into(), "127.0.0.1".into(), port],
        ..RedisOpts::default()
    })
    .await;
    let mut story = Story::begin(&primary.url()).await;
    let stream = format!("ringway:{{{ROOM}}}:stream");
    let synced = eventually(Duration::from_secs(10), || async {
        replica.cmd(&["XLEN", &stream]).trim() == "5"
    })
    .await;
    assert!(synced, "the replica never caught up");
    replica.cmd(&["REPLICAOF", "NO", "ONE"]); // asynchronous replication falls behind
    let tail = story.publish_the_tail().await;
    primary.stop();
    replica.move_to_port(primary.port).await; // the failover: same address, the replica's data
    story.end(tail).await;
}

/// One node, one client joined to [`ROOM`], on Redis with `appendfsync
/// always`; messages 1..=3, a Redis restart, message 4: the client's
/// frames after the restart.
async fn restart_story(durable: bool) -> (Value, Vec<Value>) {
    let mut redis = RedisServer::start_with(RedisOpts {
        persistent: true,
        ..RedisOpts::default()
    })
    .await;
    let url = redis.url();
    let flag = if durable { "1" } else { "0" };
    let node = Backend::start(
        "durable-a",
        &[
            ("REDIS_URL", &url),
            ("WS_HEARTBEAT_INTERVAL", "5"),
            ("REDIS_DURABLE", flag),
        ],
    )
    .await;
    let mut client = Peer::connect(&node.ws_url("user=c")).await.unwrap();
    let joined = client.join(ROOM, None).await.unwrap();
    for i in 1..=3 {
        client.publish(ROOM, json!(i)).await.unwrap();
    }
    redis.restart().await;
    let ok = eventually(Duration::from_secs(20), || async {
        node.health_status().await == "healthy"
    })
    .await;
    assert!(ok);
    client.publish_retrying(ROOM, json!(4)).await.unwrap();
    let mut frames = Vec::new();
    loop {
        let f = client.recv().await.unwrap();
        let last = f["type"] == "message" && f["data"] == 4;
        if f["room"] == ROOM {
            frames.push(f);
        }
        if last {
            return (joined, frames);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_declared_durable_keeps_epochs_across_a_restart() {
    let (joined, frames) = restart_story(true).await;
    let kinds: Vec<(&str, u64)> = frames
        .iter()
        .map(|f| (f["type"].as_str().unwrap(), f["offset"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("message", 1),
            ("message", 2),
            ("message", 3),
            ("message", 4)
        ]
    );
    assert!(
        frames.iter().all(|f| f["epoch"] == joined["epoch"]),
        "{frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_declaration_a_redis_restart_starts_new_epochs_plainly() {
    let (joined, frames) = restart_story(false).await;
    let reset = frames
        .iter()
        .position(|f| f["type"] == "joined")
        .unwrap_or_else(|| panic!("no reset announced: {frames:?}"));
    assert_eq!(frames[reset]["recovered"], false);
    assert_eq!(frames[reset]["reset"], true);
    assert_ne!(frames[reset]["epoch"], joined["epoch"]);
    let last = frames.last().unwrap();
    assert_eq!(
        (last["epoch"].clone(), last["offset"].as_u64()),
        (frames[reset]["epoch"].clone(), Some(1))
    );
}
