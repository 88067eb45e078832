//! The demo page in a real browser (headless chromium), through the
//! proxy, in two tabs of one user: both are live at once, each its own
//! session under the one remembered name; a first visit to a room with
//! history says nothing false; when the node of one tab is killed, that
//! tab resumes elsewhere and shows the messages it missed, once. A
//! screenshot is kept in `target/test-artifacts/demo-two-tabs.png`.

use std::time::Duration;

use futures_util::future::join_all;
use ringway_tests::backend::{Backend, Peer, RedisServer};
use ringway_tests::browser::{artifacts_dir, NodeScript};
use ringway_tests::configs::ProxyConfig;
use ringway_tests::Proxy;
use serde_json::{json, Value};

fn texts(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tabs_live_and_a_killed_node_loses_nothing() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let env = [("REDIS_URL", url.as_str()), ("WS_HEARTBEAT_INTERVAL", "1")];
    let mut nodes = join_all(["demo-1", "demo-2", "demo-3"].map(|n| Backend::start(n, &env))).await;
    let config = ProxyConfig {
        hash_key: vec!["query:sid", "client-ip"],
        health_check: "[upstream.app.health_check]\nkind = \"http\"\npath = \"/health\"\n\
                       interval = \"300ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 2\n"
            .into(),
        ..ProxyConfig::over(nodes.iter().map(|n| n.addr))
    };
    let proxy = Proxy::start(&config.toml()).await;
    // The room has history before the first visit.
    let mut earlier = Peer::connect(&nodes[0].ws_url("user=earlier"))
        .await
        .unwrap();
    earlier
        .publish("lobby", json!("before you came"))
        .await
        .unwrap();

    let shot = artifacts_dir().join("demo-two-tabs.png");
    let _ = std::fs::remove_file(&shot);
    let input = json!({"url": proxy.url("/"), "screenshot": shot});
    let mut script = NodeScript::start("demo-two-tabs.mjs", &input);
    let wait = Duration::from_secs(90);
    let tabs = script.next(wait).await.unwrap();
    let names = texts(&tabs["names"]);
    assert_eq!(names[0], names[1], "two tabs of one browser are one user");
    let question = script.next(wait).await.unwrap();
    let doomed = question["await"]["kill"]
        .as_str()
        .expect("a node to kill")
        .to_owned();
    let node = nodes
        .iter_mut()
        .find(|n| n.worker_id == doomed)
        .expect("a known node");
    node.child.kill();
    script.reply(&json!({"killed": doomed})).await.unwrap();
    let result = script.finish(wait).await.unwrap();

    assert_ne!(result["after"]["a"], doomed, "tab A did not move: {result}");
    let a = texts(&result["a"]);
    let b = texts(&result["b"]);
    for (tab, log) in [("A", &a), ("B", &b)] {
        for said in ["a1", "b1", "b2", "b3", "b4", "b5"] {
            let n = log
                .iter()
                .filter(|l| l.ends_with(&format!(": {said}")))
                .count();
            assert_eq!(n, 1, "tab {tab} shows {said:?} {n} times: {log:?}");
        }
        assert!(
            !log.iter()
                .any(|l| l.contains("could not be replayed") || l.contains("reset")),
            "tab {tab} claims a loss that did not happen: {log:?}"
        );
    }
    let shot_len = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(shot_len > 1000, "no screenshot at {}", shot.display());
}
