//! The README's first command, `scripts/cluster.sh`, on free ports: the
//! cluster comes up and answers through the proxy (the demo page and a
//! WebSocket) over HTTP and over HTTPS with the development CA the script
//! made (`certs/make-dev-certs.sh`), whose `curl --cacert` line it prints
//! and which works as printed; and Ctrl-C (SIGINT to its process group, as a terminal
//! sends it) or SIGTERM stops every process it started and exits 130/143.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ringway_tests::backend::{eventually, Peer};
use ringway_tests::tls::{client_trusting, h1_get, handshake, wss_connect};
use ringway_tests::{free_port, http_client, target_bin};
use tokio_tungstenite::tungstenite::Message;

/// A port whose next two are free too (the script's three backend ports).
fn three_free_ports() -> u16 {
    loop {
        let base = free_port();
        if base < 65533 && (1..3).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Run the script until it serves, signal it as `how` says, and check it
/// stopped everything and exited with `want`.
async fn start_then_stop(signal: i32, whole_group: bool, want: i32) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run_dir = tempfile::tempdir().expect("tempdir");
    let bin_dir = target_bin("ringway-backend")
        .parent()
        .unwrap()
        .to_path_buf();
    let (http, https, admin, backend, redis) = (
        free_port(),
        free_port(),
        free_port(),
        three_free_ports(),
        free_port(),
    );
    // Missing, so the script makes them.
    let cert_dir = run_dir.path().join("certs");
    let log = std::fs::File::create(run_dir.path().join("script.log")).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/cluster.sh"))
        .env("RINGWAY_HTTP_PORT", http.to_string())
        .env("RINGWAY_HTTPS_PORT", https.to_string())
        .env("RINGWAY_CERT_DIR", &cert_dir)
        .env("RINGWAY_ADMIN_PORT", admin.to_string())
        .env("RINGWAY_BACKEND_PORT", backend.to_string())
        .env("RINGWAY_REDIS_PORT", redis.to_string())
        .env("RINGWAY_BIN_DIR", &bin_dir)
        .env("RINGWAY_RUN_DIR", run_dir.path().join("cluster"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: setpgid and prctl are async-signal-safe; nothing else runs
    // between fork and exec. Its own group, as a terminal job; it dies
    // with the test.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut script = cmd.spawn().expect("run scripts/cluster.sh");
    let script_log =
        || std::fs::read_to_string(run_dir.path().join("script.log")).unwrap_or_default();

    let page = format!("http://127.0.0.1:{http}/");
    let up = eventually(Duration::from_secs(60), || async {
        let Ok(resp) = http_client().get(&page).send().await else {
            return false;
        };
        resp.status() == 200 && resp.headers().contains_key("x-websocket-worker-id")
    })
    .await;
    assert!(
        up,
        "the cluster never answered through the proxy:\n{}",
        script_log()
    );
    let peer = Peer::connect(&format!("ws://127.0.0.1:{http}/ws?user=readme"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", script_log()));
    assert!(peer.welcome["worker_id"]
        .as_str()
        .is_some_and(|w| w.starts_with("node-")));
    drop(peer);
    over_https(https, &cert_dir, &script_log).await;
    let pids: Vec<i32> = std::fs::read_to_string(run_dir.path().join("cluster/pids"))
        .expect("the script records what it starts")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 5, "redis, three nodes and the proxy: {pids:?}");
    assert!(pids.iter().all(|p| alive(*p)));

    let target = if whole_group {
        -(script.id() as i32)
    } else {
        script.id() as i32
    };
    // SAFETY: plain kill(2) on the process (group) we started.
    unsafe {
        libc::kill(target, signal);
    }
    let start = Instant::now();
    let status = loop {
        if let Some(status) = script.try_wait().expect("wait") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the script did not exit:\n{}",
            script_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(want), "{}", script_log());
    let left: Vec<i32> = pids.into_iter().filter(|p| alive(*p)).collect();
    assert!(
        left.is_empty(),
        "still running after the script exited: {left:?}"
    );
    assert!(
        TcpListener::bind(("127.0.0.1", http)).is_ok(),
        "the proxy port is still held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_whole_cluster_and_exits_130() {
    start_then_stop(libc::SIGINT, true, 130).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_whole_cluster_and_exits_143() {
    start_then_stop(libc::SIGTERM, false, 143).await;
}

/// The HTTPS listener answers through the proxy, trusting only the CA the
/// script made: the demo page, a node's health, and a WSS welcome; and the
/// `curl --cacert` line the script printed works as printed.
async fn over_https(https: u16, cert_dir: &Path, script_log: &dyn Fn() -> String) {
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        assert!(
            cert_dir.join(file).is_file(),
            "the script did not make {file} in {}:\n{}",
            cert_dir.display(),
            script_log()
        );
    }
    let ca = cert_dir.join("ca.pem");
    let config = client_trusting(&ca, &[b"http/1.1"]).unwrap();
    let addr = ([127, 0, 0, 1], https).into();
    let mut tls = handshake(addr, config.clone(), "localhost", true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", script_log()));
    let page = h1_get(&mut tls, &format!("localhost:{https}"), "/")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", script_log()));
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.header("x-websocket-worker-id")
            .is_some_and(|w| w.starts_with("node-")),
        "not a node's answer: {page:?}"
    );
    assert!(page.body.contains("Ringway demo"), "{page:?}");
    let mut ws = wss_connect(addr, config, "localhost", "/ws?user=readme-tls")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", script_log()));
    let welcome = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a welcome within 10 s");
    let Some(Ok(Message::Text(welcome))) = welcome else {
        panic!("no welcome over wss: {welcome:?}");
    };
    let welcome: serde_json::Value = serde_json::from_str(&welcome).unwrap();
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    // The line to try it, printed once the listener is up.
    let want = format!(
        "curl --cacert {} https://localhost:{https}/health",
        ca.display()
    );
    let printed = eventually(Duration::from_secs(10), || async {
        script_log().lines().any(|l| l.trim().ends_with(&want))
    })
    .await;
    assert!(printed, "no {want:?} in:\n{}", script_log());
    if Command::new("curl").arg("--version").output().is_err() {
        println!("NOTE: curl is not installed: the printed line is not run");
        return;
    }
    let line = script_log()
        .lines()
        .find(|l| l.trim().ends_with(&want))
        .map(str::to_owned)
        .unwrap();
    let words: Vec<&str> = line[line.find("curl ").unwrap()..]
        .split_whitespace()
        .collect();
    let out = tokio::process::Command::new(words[0])
        .args(&words[1..])
        .args(["--silent", "--show-error", "--fail", "--max-time", "10"])
        .output()
        .await
        .expect("run curl");
    let text = ringway_tests::printed(&out);
    assert!(out.status.success(), "{line}\n{text}");
    let health: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(health["status"].is_string(), "{health}");
}
