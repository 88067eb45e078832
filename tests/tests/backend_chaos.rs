//! The short chaos run of CI (`scripts/chaos.sh` runs the long one):
//! 200 clients in 10 rooms behind the proxy and three nodes, publishers
//! sending numbered messages with ids, a node killed with SIGKILL every
//! 10 s and restarted, Redis (`appendfsync always`) restarted once.
//!
//! Declared durable (`REDIS_DURABLE=1`), nothing may be lost, duplicated
//! or reordered, and no client may even be told of a reset. Without the
//! declaration the Redis restart starts new epochs: resets are allowed,
//! losses still are not.

use std::time::Duration;

use ringway_tests::chaos::{run, ChaosOpts};

fn opts(durable: bool) -> ChaosOpts {
    ChaosOpts {
        clients: 200,
        rooms: 10,
        duration: Duration::from_secs(25),
        kill_every: Duration::from_secs(10),
        publish_every: Duration::from_millis(100),
        durable,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_under_node_kills_and_a_redis_restart() {
    let report = run(&opts(true)).await;
    println!("{}", report.line());
    assert!(
        report.node_kills >= 2 && report.redis_restarts == 1,
        "{}",
        report.line()
    );
    assert!(
        report.acked > 0 && report.tally.delivered > 0,
        "{}",
        report.line()
    );
    let t = report.tally;
    assert_eq!(
        (t.lost, t.duplicated, t.out_of_order, t.resets),
        (0, 0, 0, 0),
        "{}",
        report.line()
    );

    // Not declared durable: the Redis restart resets epochs, told plainly.
    let report = run(&opts(false)).await;
    println!("{}", report.line());
    let t = report.tally;
    assert_eq!(
        (t.lost, t.duplicated, t.out_of_order),
        (0, 0, 0),
        "{}",
        report.line()
    );
    assert!(t.resets > 0, "the restart must be told: {}", report.line());
}
