//! The contracts every [`Store`] and [`Broker`] must keep, as test
//! suites: the integration tests run them against the in-memory parts and
//! against Redis (standalone, TLS, cluster), so a node behaves the same
//! alone and in a cluster.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use ringway_backend::broker::{Broker, Control, Events, LiveMessage};
use ringway_backend::config::HistorySettings;
use ringway_backend::history::Position;
use ringway_backend::idempotency::IdempotencyKey;
use ringway_backend::store::{Heartbeat, SessionRecord, Store};

use crate::backend::eventually;

fn record(sid: &str, user: &str, worker: &str) -> SessionRecord {
    SessionRecord {
        sid: sid.into(),
        user: user.into(),
        worker: worker.into(),
        created_ms: 1_000,
        last_seen_ms: 2_000,
        rooms: ["*", "lobby"]
            .iter()
            .map(|r| r.to_string())
            .collect::<BTreeSet<_>>(),
        metadata: serde_json::json!({"plan": "pro"}),
    }
}

/// A steady heartbeat of `worker` (one instance, not its first beat).
fn hb<'a>(worker: &'a str, node_id: &'a str, interval: Duration) -> Heartbeat<'a> {
    Heartbeat {
        worker,
        instance: "steady",
        node_id,
        interval,
        first: false,
    }
}

/// Sessions, presence and membership, as `store` keeps them.
pub async fn store_contract(store: Arc<dyn Store>) {
    // Sessions: saved whole, loaded back, expiring by themselves.
    assert_eq!(store.load("nobody").await.unwrap(), None);
    let r = record("s1", "ann", "w1");
    store.save(&r, Duration::from_secs(60)).await.unwrap();
    assert_eq!(store.load("s1").await.unwrap(), Some(r.clone()));
    store
        .save(&record("short", "ann", "w1"), Duration::from_secs(1))
        .await
        .unwrap();

    // Release clears the holder only for the holder itself.
    store
        .release("s1", "w2", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(store.load("s1").await.unwrap().unwrap().worker, "w1");
    store
        .release("s1", "w1", Duration::from_secs(60))
        .await
        .unwrap();
    let released = store.load("s1").await.unwrap().unwrap();
    assert_eq!(released.worker, "");
    assert!(
        released.last_seen_ms > r.last_seen_ms,
        "release stamps last_seen"
    );
    assert_eq!(released.rooms, r.rooms, "release keeps the rooms");

    // Presence: per session, listed per user once, sorted, expiring.
    let ttl = Duration::from_secs(30);
    store.set_presence("lobby", "zed", "z1", ttl).await.unwrap();
    store.set_presence("lobby", "amy", "a1", ttl).await.unwrap();
    store.set_presence("lobby", "amy", "a2", ttl).await.unwrap();
    store
        .set_presence("lobby", "brief", "b1", Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(
        store.presence("lobby").await.unwrap(),
        ["amy", "brief", "zed"]
    );
    store.remove_presence("lobby", "amy", "a1").await.unwrap();
    assert_eq!(
        store.presence("lobby").await.unwrap(),
        ["amy", "brief", "zed"]
    );
    store.remove_presence("lobby", "amy", "a2").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.presence("lobby").await.unwrap(),
        ["zed"],
        "brief expired"
    );
    assert!(store.presence("empty").await.unwrap().is_empty());

    // Membership: alive while beating, dead after three silent intervals.
    let beat = Duration::from_millis(150);
    store
        .save(&record("held", "hal", "w-dead"), ttl)
        .await
        .unwrap();
    store
        .save(&record("moved", "mo", "w-live"), ttl)
        .await
        .unwrap();
    store.heartbeat(hb("w-dead", "host-a", beat)).await.unwrap();
    let seen = store.heartbeat(hb("w-live", "host-b", beat)).await.unwrap();
    let alive: Vec<&str> = seen.alive.iter().map(|w| w.worker_id.as_str()).collect();
    assert_eq!(alive, ["w-dead", "w-live"]);
    assert!(seen.dead.is_empty());
    assert_eq!(seen.alive[1].node_id, "host-b");
    assert_eq!(seen.alive[0].sessions, 1, "w-dead holds one session");
    tokio::time::sleep(beat * 4).await;
    let seen = store.heartbeat(hb("w-live", "host-b", beat)).await.unwrap();
    assert_eq!(seen.dead, ["w-dead"]);
    assert_eq!(seen.alive.len(), 1);

    // Exactly one of many survivors wins the cleanup.
    let claims = join_all((0..8).map(|i| {
        let store = store.clone();
        async move {
            store
                .claim_dead("w-dead", &format!("survivor-{i}"), Duration::from_secs(30))
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(claims.iter().filter(|won| **won).count(), 1, "{claims:?}");
    assert_eq!(store.clean_dead("w-dead").await.unwrap(), 1);
    assert_eq!(store.load("held").await.unwrap().unwrap().worker, "");
    assert_eq!(store.load("moved").await.unwrap().unwrap().worker, "w-live");
    let seen = store.heartbeat(hb("w-live", "host-b", beat)).await.unwrap();
    assert!(seen.dead.is_empty(), "a cleaned worker is forgotten");

    store.leave("w-live").await.unwrap();
    let seen = store
        .heartbeat(hb("w-other", "host-c", beat))
        .await
        .unwrap();
    let alive: Vec<&str> = seen.alive.iter().map(|w| w.worker_id.as_str()).collect();
    assert_eq!(alive, ["w-other"], "a worker that left is gone at once");

    // One id, two processes: a restart takes the id over quietly; two
    // live processes beating in turn are reported.
    let as_instance = |instance, first| Heartbeat {
        worker: "w-dup",
        instance,
        node_id: "host-d",
        interval: beat,
        first,
    };
    let seen = store.heartbeat(as_instance("old", true)).await.unwrap();
    assert!(!seen.conflict);
    let seen = store.heartbeat(as_instance("new", true)).await.unwrap();
    assert!(!seen.conflict, "a restarted process takes its id over");
    let seen = store.heartbeat(as_instance("new", false)).await.unwrap();
    assert!(!seen.conflict, "its own beats are no conflict");
    let seen = store.heartbeat(as_instance("old", false)).await.unwrap();
    assert!(seen.conflict, "a second live process must be reported");
    let seen = store.heartbeat(as_instance("new", false)).await.unwrap();
    assert!(seen.conflict, "to both of them");

    store.ping().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(store.load("short").await.unwrap(), None, "sessions expire");
}

/// History settings with `size` messages per room.
pub fn history(size: usize) -> HistorySettings {
    HistorySettings {
        size,
        ttl: Duration::from_secs(60),
        max_recover: 50,
        meta_ttl: Duration::from_secs(600),
    }
}

/// A node's side of the broker, recorded.
#[derive(Default)]
pub struct Recorder {
    messages: Mutex<Vec<LiveMessage>>,
    controls: Mutex<Vec<Control>>,
}

impl Recorder {
    fn offsets(&self, room: &str) -> Vec<u64> {
        let messages = self.messages.lock().unwrap();
        messages
            .iter()
            .filter(|m| &*m.room == room)
            .map(|m| m.offset)
            .collect()
    }

    async fn wait_for(&self, room: &str, n: usize) -> Vec<u64> {
        let ok = eventually(Duration::from_secs(10), || async {
            self.offsets(room).len() >= n
        })
        .await;
        assert!(ok, "only {:?} of {n} arrived in {room}", self.offsets(room));
        self.offsets(room)
    }
}

impl Events for Recorder {
    fn message(&self, message: LiveMessage) {
        self.messages.lock().unwrap().push(message);
    }
    fn control(&self, control: Control) {
        self.controls.lock().unwrap().push(control);
    }
    fn resubscribed(&self) {}
}

/// Makes the broker handle of one node, delivering to `events`.
pub type MakeBroker = Box<dyn Fn(&str, Arc<Recorder>) -> Arc<dyn Broker>>;

async fn wait_connected(broker: &Arc<dyn Broker>) {
    let up = eventually(Duration::from_secs(10), || async { broker.is_connected() }).await;
    assert!(up, "the broker never connected");
}

/// Numbering, delivery, recovery and control, across two nodes' handles.
pub async fn broker_contract(make: MakeBroker) {
    let events_a = Arc::new(Recorder::default());
    let events_b = Arc::new(Recorder::default());
    let a = make("node-a", events_a.clone());
    let b = make("node-b", events_b.clone());
    wait_connected(&a).await;
    wait_connected(&b).await;

    // Numbering: a fresh room is at 0; each publish takes the next offset.
    let start = a.position("room").await.unwrap();
    assert_eq!(start.offset, 0);
    assert_eq!(
        b.position("room").await.unwrap(),
        start,
        "one numbering for all nodes"
    );
    b.subscribe("room").await.unwrap();
    let mut tops = Vec::new();
    for i in 0..5 {
        let body = format!(r#""from":"x","ts":0,"data":{i}"#);
        tops.push(a.publish("room", &body, 0, None).await.unwrap().position);
    }
    let offsets: Vec<u64> = tops.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, [1, 2, 3, 4, 5]);
    assert!(tops.iter().all(|p| p.epoch == start.epoch));

    // Live delivery: subscribed nodes only, in offset order, carrying the body.
    assert_eq!(events_b.wait_for("room", 5).await, [1, 2, 3, 4, 5]);
    assert!(
        events_a.offsets("room").is_empty(),
        "node-a never subscribed"
    );
    let last = events_b.messages.lock().unwrap()[4].clone();
    assert_eq!(&*last.body, r#""from":"x","ts":0,"data":4"#);
    assert_eq!(&*last.epoch, start.epoch);

    // Subscriptions are counted.
    b.subscribe("room").await.unwrap();
    b.unsubscribe("room").await;
    a.publish("room", "\"n\":6", 0, None).await.unwrap();
    assert_eq!(
        events_b.wait_for("room", 6).await.len(),
        6,
        "still subscribed once"
    );
    b.unsubscribe("room").await;
    // An unsubscribe is ordered before a later publish on the same node's
    // link, but the other node's publish may race it: give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.publish("room", "\"n\":7", 0, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(events_b.offsets("room").len(), 6, "unsubscribed");

    // Recovery: exact ranges, all or nothing.
    let top = Position {
        epoch: start.epoch.clone(),
        offset: 7,
    };
    let since = |offset| Position {
        epoch: start.epoch.clone(),
        offset,
    };
    let r = a.recover("room", Some(&since(4)), 50).await.unwrap();
    assert_eq!(r.top, top);
    let replay: Vec<u64> = r.replay.unwrap().iter().map(|m| m.offset).collect();
    assert_eq!(replay, [5, 6, 7]);
    assert_eq!(
        a.recover("room", Some(&since(7)), 50).await.unwrap().replay,
        Some(vec![])
    );
    assert_eq!(a.recover("room", None, 50).await.unwrap().replay, None);
    let other_epoch = Position {
        epoch: "elsewhere".into(),
        offset: 3,
    };
    assert_eq!(
        a.recover("room", Some(&other_epoch), 50)
            .await
            .unwrap()
            .replay,
        None
    );
    assert_eq!(
        a.recover("room", Some(&since(9)), 50).await.unwrap().replay,
        None,
        "past the top"
    );
    assert_eq!(
        a.recover("room", Some(&since(1)), 3).await.unwrap().replay,
        None,
        "gap above max"
    );
    let range = a.range("room", &start.epoch, 2, 4).await.unwrap().unwrap();
    assert_eq!(range.iter().map(|m| m.offset).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(a.range("room", "elsewhere", 2, 4).await.unwrap(), None);

    // Idempotency: a key already used in a room stores nothing and answers
    // the first position, on any node; other keys and rooms are apart.
    b.subscribe("once").await.unwrap();
    let key = IdempotencyKey::for_session("sid-1", "\"m1\"");
    let first = a.publish("once", "\"n\":1", 0, Some(&key)).await.unwrap();
    assert!(!first.repeated);
    let again = b.publish("once", "\"n\":1", 0, Some(&key)).await.unwrap();
    assert!(again.repeated, "the same key must not store twice");
    assert_eq!(again.position, first.position);
    let other = IdempotencyKey::for_session("sid-2", "\"m1\"");
    let second = a.publish("once", "\"n\":2", 0, Some(&other)).await.unwrap();
    assert_eq!((second.repeated, second.position.offset), (false, 2));
    let elsewhere = a.publish("twice", "\"n\":1", 0, Some(&key)).await.unwrap();
    assert!(!elsewhere.repeated, "a key is remembered per room");
    assert_eq!(
        events_b.wait_for("once", 2).await,
        [1, 2],
        "stored once, delivered once"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(events_b.offsets("once"), [1, 2]);
    b.unsubscribe("once").await;

    // History is bounded: what was trimmed cannot be replayed, even in part.
    for i in 0..12 {
        a.publish("small", &format!("\"i\":{i}"), 0, None)
            .await
            .unwrap();
    }
    let small = a.position("small").await.unwrap();
    let early = Position {
        epoch: small.epoch.clone(),
        offset: 1,
    };
    assert_eq!(
        a.recover("small", Some(&early), 50).await.unwrap().replay,
        None
    );
    let late = Position {
        epoch: small.epoch.clone(),
        offset: 8,
    };
    let replay = a
        .recover("small", Some(&late), 50)
        .await
        .unwrap()
        .replay
        .unwrap();
    assert_eq!(
        replay.iter().map(|m| m.offset).collect::<Vec<_>>(),
        [9, 10, 11, 12]
    );

    // Control messages reach the named node only.
    let kick = Control::Kick { sid: "s-1".into() };
    a.send_control("node-b", kick.clone()).await.unwrap();
    let got = eventually(Duration::from_secs(5), || async {
        !events_b.controls.lock().unwrap().is_empty()
    })
    .await;
    assert!(got, "node-b never got its control message");
    assert_eq!(events_b.controls.lock().unwrap()[0], kick);
    assert!(events_a.controls.lock().unwrap().is_empty());

    // The probe is a real round trip.
    a.probe().await.unwrap();
}
