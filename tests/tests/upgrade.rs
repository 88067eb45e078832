//! Binary upgrade under load: `--upgrade` plus SIGQUIT hands the listeners
//! to a new process with no refused connection and no failed request (a GET
//! retried once after its keep-alive connection closed before any answer
//! counts as not failed, as browsers do), and the old process ends its
//! tunnels with close frame 1001. SIGUSR2 does the same from inside: the
//! running proxy starts its own binary with `--upgrade` and hands over.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_tests::backend::eventually;
use ringway_tests::configs::ProxyConfig;
use ringway_tests::load::{chatter, http_load, WsEnd};
use ringway_tests::{ws_connect, Fixture, FixtureOpts, Proxy};

const WITHIN: Duration = Duration::from_secs(30);

async fn served_pid(proxy: &Proxy) -> Option<u64> {
    let client = ringway_tests::http_client();
    let doc: serde_json::Value = client
        .get(proxy.admin_url("/stats.json"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    doc["process"]["pid"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_under_load_refuses_nothing_and_fails_nothing() {
    let fx = Fixture::start(&["a", "b"], FixtureOpts::default()).await;
    let config = ProxyConfig::over([fx.addr("a"), fx.addr("b")]).toml();
    let mut old = Proxy::start(&config).await;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));

    let mut tunnels = Vec::new();
    for i in 0..100 {
        let url = format!("ws://{}/ws?sid=u{i}", old.listen);
        let ws = ws_connect(&url, &[]).await.expect("tunnel opens");
        tunnels.push(tokio::spawn(chatter(ws, stop.clone(), started)));
    }
    let (http, loaders) = http_load(old.url(""), 4, stop.clone());
    let ok_before = eventually(WITHIN, || async { http.ok.load(Relaxed) > 100 }).await;
    assert!(ok_before, "no load before the upgrade: {}", http.summary());

    let new = old.spawn_successor(&[]);
    old.child.signal(libc::SIGQUIT);
    let new_pid = u64::from(new.pid());
    let took_over = eventually(WITHIN, || async { served_pid(&old).await == Some(new_pid) }).await;
    assert!(
        took_over,
        "the new process never served\nold:\n{}\nnew:\n{}",
        old.child.log(),
        new.log()
    );
    let exited = eventually(WITHIN, || {
        let exited = old.child.try_wait().is_some();
        async move { exited }
    })
    .await;
    assert!(exited, "the old proxy did not exit\n{}", old.child.log());
    // Load keeps running on the new process for a while.
    let ok_at_exit = http.ok.load(Relaxed);
    let served_after = eventually(WITHIN, || async {
        http.ok.load(Relaxed) > ok_at_exit + 200
    })
    .await;
    stop.store(true, Relaxed);
    for l in loaders {
        l.await.unwrap();
    }
    assert!(
        served_after,
        "no load served after the hand-over: {}",
        http.summary()
    );

    let mut closed_1001 = 0;
    let mut broken = Vec::new();
    for t in tunnels {
        match t.await.unwrap() {
            Some(WsEnd::Closed(Some(1001), _)) => closed_1001 += 1,
            None => broken.push("still open on a process that exited".to_string()),
            Some(other) => broken.push(format!("{other:?}")),
        }
    }
    println!(
        "requests: {}; tunnels closed with 1001 by the old process {closed_1001}, broken {}",
        http.summary(),
        broken.len()
    );
    assert_eq!(http.refused.load(Relaxed), 0, "{}", http.summary());
    assert_eq!(http.failed.load(Relaxed), 0, "{}", http.summary());
    assert!(broken.is_empty(), "tunnels not closed cleanly: {broken:?}");
}

/// Kills a process the test did not spawn itself (the new binary that the
/// proxy started on SIGUSR2), whatever the test's outcome.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid this test learned from the process itself.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

#[tokio::test]
async fn sigusr2_starts_the_new_binary_which_takes_the_listeners_over() {
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let mut old = Proxy::start(&ProxyConfig::over([fx.addr("a")]).toml()).await;
    let old_pid = u64::from(old.child.pid());
    assert_eq!(served_pid(&old).await, Some(old_pid));

    old.child.signal(libc::SIGUSR2);
    // The first pid other than the old one that the admin listener reports
    // is the new process (during the hand-over either may answer).
    let seen = std::sync::Mutex::new(None);
    let took_over = eventually(WITHIN, || async {
        let pid = served_pid(&old).await.filter(|&p| p != old_pid);
        if let Some(p) = pid {
            seen.lock().unwrap().get_or_insert(p);
        }
        pid.is_some()
    })
    .await;
    let new_pid = *seen.lock().unwrap();
    let _reap = new_pid.map(|p| KillOnDrop(p as u32));
    assert!(took_over, "no new process serves\n{}", old.child.log());
    let exited = eventually(WITHIN, || {
        let exited = old.child.try_wait().is_some();
        async move { exited }
    })
    .await;
    assert!(exited, "the old proxy did not exit\n{}", old.child.log());
    let r = ringway_tests::http_client()
        .get(old.url("/x"))
        .send()
        .await
        .expect("the new process answers");
    assert!(r.status().is_success(), "{}", r.status());
    let log = old.child.log();
    assert!(log.contains("SIGUSR2: starting the new binary"), "{log}");
}
