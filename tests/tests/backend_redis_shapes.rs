//! The Redis deployments operators run: a three-master Redis Cluster
//! (`redis-cluster://`, every script inside one slot thanks to hash tags)
//! and a password-protected TLS server (`rediss://` with a private CA).
//! The store and broker contracts hold on both, and nodes on them behave
//! as on a plain server.

use std::sync::Arc;

use futures_util::future::join_all;
use ringway_backend::broker::{Broker, RedisBroker};
use ringway_backend::config::RedisSettings;
use ringway_backend::redis_link::RedisLink;
use ringway_backend::store::RedisStore;
use ringway_tests::backend::{Backend, Peer, RedisCluster, RedisOpts, RedisServer, TlsFiles};
use ringway_tests::contracts::{broker_contract, history, store_contract};
use serde_json::json;

fn settings(url: &str, ca: Option<&std::path::Path>) -> RedisSettings {
    RedisSettings {
        url: url.to_owned(),
        tls_ca: ca.map(|p| p.to_path_buf()),
        durable: false,
    }
}

/// Two nodes on `url`: a room's messages cross between them, and a session
/// made on one resumes on the other.
async fn two_nodes_work(url: &str, extra: &[(&str, &str)], mode: &str) {
    let mut env = vec![("REDIS_URL", url), ("WS_HEARTBEAT_INTERVAL", "1")];
    env.extend_from_slice(extra);
    let nodes = join_all(["shape-a", "shape-b"].map(|n| Backend::start(n, &env))).await;
    for n in &nodes {
        let (status, health) = n.get_json("/health").await;
        assert_eq!(status, 200);
        assert_eq!(health["status"], "healthy", "{health}");
        assert_eq!(health["redis"]["mode"], mode);
    }
    let mut a = Peer::connect(&nodes[0].ws_url("sid=shape-1&user=ann"))
        .await
        .unwrap();
    let mut b = Peer::connect(&nodes[1].ws_url("user=ben")).await.unwrap();
    // Rooms whose names land in different slots of a cluster.
    let rooms = ["alpha", "bravo", "charlie", "delta"];
    for room in rooms {
        a.join(room, None).await.unwrap();
        b.join(room, None).await.unwrap();
    }
    for room in rooms {
        for i in 0..3 {
            b.publish(room, json!(i)).await.unwrap();
        }
    }
    // Order is per room: rooms on different shards may interleave.
    let mut per_room: std::collections::BTreeMap<String, Vec<(u64, serde_json::Value)>> =
        Default::default();
    for _ in 0..rooms.len() * 3 {
        let m = a.recv().await.unwrap();
        assert_eq!(m["type"], "message", "{m}");
        let room = m["room"].as_str().unwrap().to_owned();
        per_room
            .entry(room)
            .or_default()
            .push((m["offset"].as_u64().unwrap(), m["data"].clone()));
    }
    for room in rooms {
        let want: Vec<(u64, serde_json::Value)> = (0..3).map(|i| (i + 1, json!(i))).collect();
        assert_eq!(per_room.get(room), Some(&want), "room {room}");
    }
    a.close().await;
    let back = Peer::connect(&nodes[1].ws_url("sid=shape-1&user=ann"))
        .await
        .unwrap();
    assert_eq!(back.welcome["resumed"], true);
    let rooms_back = back.welcome["rooms"].as_array().unwrap().len();
    assert_eq!(rooms_back, 2 + rooms.len(), "{}", back.welcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_three_master_cluster_keeps_the_contracts_and_serves_nodes() {
    let cluster = RedisCluster::start().await;
    let url = cluster.url();
    let link = Arc::new(RedisLink::new(&settings(&url, None)).unwrap());
    store_contract(Arc::new(RedisStore::new(link.conn()))).await;
    let url2 = url.clone();
    broker_contract(Box::new(move |worker, events| {
        let link = Arc::new(RedisLink::new(&settings(&url2, None)).unwrap());
        Arc::new(RedisBroker::new(link, worker, history(10), false, events)) as Arc<dyn Broker>
    }))
    .await;
    two_nodes_work(&url, &[], "cluster").await;
    // The keys really are spread over the three masters.
    let holding = cluster
        .nodes
        .iter()
        .filter(|n| n.cmd(&["DBSIZE"]).trim() != "0")
        .count();
    assert!(
        holding >= 2,
        "all keys landed on one master; hash tags not spread"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_protected_tls_server_keeps_the_contracts_and_serves_nodes() {
    let tls = Arc::new(TlsFiles::generate());
    let redis = RedisServer::start_with(RedisOpts {
        password: Some("s3cret-pw".into()),
        tls: Some(tls.clone()),
        ..RedisOpts::default()
    })
    .await;
    let url = redis.url();
    assert!(url.starts_with("rediss://:s3cret-pw@"), "{url}");
    let link = Arc::new(RedisLink::new(&settings(&url, Some(&tls.ca))).unwrap());
    store_contract(Arc::new(RedisStore::new(link.conn()))).await;
    let (url2, ca) = (url.clone(), tls.ca.clone());
    broker_contract(Box::new(move |worker, events| {
        let link = Arc::new(RedisLink::new(&settings(&url2, Some(&ca))).unwrap());
        Arc::new(RedisBroker::new(link, worker, history(10), false, events)) as Arc<dyn Broker>
    }))
    .await;
    let ca = tls.ca.display().to_string();
    two_nodes_work(&url, &[("REDIS_TLS_CA", &ca)], "standalone").await;

    // A wrong password or an untrusted server is reported, not hidden.
    let wrong = url.replace("s3cret-pw", "guess");
    let node = Backend::start("wrong-pw", &[("REDIS_URL", &wrong), ("REDIS_TLS_CA", &ca)]).await;
    let (_, health) = node.get_json("/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    let untrusted = Backend::start("no-ca", &[("REDIS_URL", &url)]).await;
    let (_, health) = untrusted.get_json("/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
}
