//! The access log and the proxy's own log, end to end: one line per request
//! and one per tunnel (on close) with the documented fields, as JSON and as
//! logfmt; SIGUSR1 reopens the file (logrotate); a writer that cannot keep
//! up drops lines and counts them without slowing a request; the process
//! log is plain text on a non-terminal, follows `RUST_LOG`, and names the
//! cause of an upstream failure.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use futures_util::{stream, SinkExt, StreamExt};
use ringway_tests::backend::eventually;
use ringway_tests::configs::ProxyConfig;
use ringway_tests::metrics::one;
use ringway_tests::{free_addr, http_client, ws_connect, ws_echo, Fixture, FixtureOpts, Proxy};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// A proxy over `fx` whose access log goes to `path` in `format`.
fn logging_to(fx: &Fixture, path: &Path, format: &str, buffer: usize) -> String {
    ProxyConfig {
        extra: format!(
            "[log]\naccess = \"{}\"\nformat = \"{format}\"\nbuffer = {buffer}\n",
            path.display()
        ),
        ..ProxyConfig::over(fx.addrs.values().copied())
    }
    .toml()
}

async fn written(proxy: &Proxy) -> u64 {
    proxy.stats().await["access_log"]["written"]
        .as_u64()
        .unwrap()
}

async fn wait_written(proxy: &Proxy, n: u64) {
    assert!(
        eventually(Duration::from_secs(10), || async {
            written(proxy).await >= n
        })
        .await,
        "access log: {} lines written, want {n}",
        written(proxy).await
    );
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Parse one logfmt line: `key=value` pairs, values bare or double-quoted
/// with `\"`, `\\` and `\n` escapes.
fn logfmt(line: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => panic!("dangling escape in {line:?}"),
                    },
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| *c != ' ') {
                value.push(c);
                chars.next();
            }
        }
        assert!(
            out.insert(key.clone(), value).is_none(),
            "{key} twice in {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_line_per_request_and_per_tunnel() {
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let proxy = Proxy::start(&logging_to(&fx, &path, "json", 1024)).await;
    let a = fx.addr("a").to_string();

    let client = http_client();
    let r = client
        .get(proxy.url("/page?secret=1"))
        .header("Cookie", "sid=session-value-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(proxy.url("/upload"))
        .body(vec![b'x'; 300])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut ws = ws_connect(&format!("ws://{}/ws?sid=tunnel-7", proxy.listen), &[])
        .await
        .unwrap();
    ws_echo(&mut ws, "hello").await.unwrap();
    // The tunnel's line comes when it closes.
    wait_written(&proxy, 2).await;
    assert_eq!(lines(&path).len(), 2);
    ws.send(Message::Close(None)).await.unwrap();
    while ws.next().await.is_some() {}
    drop(ws);
    wait_written(&proxy, 3).await;

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("session-value-42"),
        "the key's value leaked: {text}"
    );
    assert!(
        !text.contains("secret=1"),
        "the query is off by default: {text}"
    );
    let docs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(docs.len(), 3, "{text}");
    let (get, post, tunnel) = (&docs[0], &docs[1], &docs[2]);
    for d in &docs {
        for field in [
            "time",
            "client",
            "method",
            "host",
            "path",
            "status",
            "bytes_in",
            "bytes_out",
            "duration_ms",
            "upstream",
            "server",
            "key",
            "upgrade",
            "request_id",
        ] {
            assert!(d.get(field).is_some(), "{field} missing: {d}");
        }
        assert_eq!(d["client"], "127.0.0.1", "{d}");
        assert_eq!(d["upstream"], "app", "{d}");
        assert_eq!(d["server"], a, "{d}");
        // RFC 3339 in UTC with milliseconds: 2026-11-30T16:06:44.123Z
        let time = d["time"].as_str().unwrap().as_bytes();
        assert!(
            time.len() == 24 && time[10] == b'T' && time[19] == b'.' && time[23] == b'Z',
            "{d}"
        );
        assert!(d["duration_ms"].as_f64().unwrap() >= 0.0, "{d}");
    }
    assert_eq!(get["method"], "GET");
    assert_eq!(get["path"], "/page");
    assert_eq!(get["status"], 200);
    assert_eq!(get["key"], "cookie");
    assert_eq!(get["request_id"].as_str().unwrap().len(), 32, "{get}");
    assert_eq!(get["upgrade"], false);
    assert!(get["bytes_out"].as_u64().unwrap() > 0, "{get}");
    assert_eq!(post["method"], "POST");
    assert_eq!(post["bytes_in"], 300);
    assert_eq!(post["key"], "client-ip", "{post}");
    assert_ne!(post["request_id"], get["request_id"]);
    assert_eq!(tunnel["upgrade"], true);
    assert_eq!(tunnel["status"], 101);
    assert_eq!(tunnel["path"], "/ws");
    assert_eq!(tunnel["key"], "query");
    assert_eq!(tunnel["tunnel_end"], "closed", "{tunnel}");
    assert!(tunnel["tunnel_ms"].as_f64().unwrap() > 0.0, "{tunnel}");
    assert!(get.get("tunnel_ms").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logfmt_lines_parse_and_sigusr1_reopens_the_file() {
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let proxy = Proxy::start(&logging_to(&fx, &path, "logfmt", 1024)).await;
    let client = http_client();
    for p in ["/one", "/two \"quoted\""] {
        let url = proxy.url(&p.replace(' ', "%20").replace('"', "%22"));
        assert_eq!(client.get(url).send().await.unwrap().status(), 200);
    }
    wait_written(&proxy, 2).await;

    // logrotate: rename, then SIGUSR1; new lines go to a new file.
    std::fs::rename(&path, &rotated).unwrap();
    proxy.child.signal(libc::SIGUSR1);
    assert!(
        eventually(Duration::from_secs(10), || async {
            proxy.child.log().contains("reopening the access log")
        })
        .await
    );
    for p in ["/three", "/four", "/five"] {
        assert_eq!(client.get(proxy.url(p)).send().await.unwrap().status(), 200);
    }
    wait_written(&proxy, 5).await;
    let old = lines(&rotated);
    let new = lines(&path);
    assert_eq!(old.len(), 2, "{old:?}");
    assert_eq!(new.len(), 3, "{new:?}");
    let first = logfmt(&old[0]);
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/one");
    assert_eq!(first["status"], "200");
    assert_eq!(first["upstream"], "app");
    assert_eq!(first["upgrade"], "false");
    assert!(first.contains_key("request_id") && first.contains_key("duration_ms"));
    let paths: Vec<String> = new.iter().map(|l| logfmt(l)["path"].clone()).collect();
    assert_eq!(paths, ["/three", "/four", "/five"]);
    // Paths are logged as the client sent them, quoted where logfmt needs it.
    assert!(old[1].contains(r#"path=/two%20%22quoted%22"#), "{}", old[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_log_writer_drops_and_counts_lines_but_never_blocks_requests() {
    const REQUESTS: usize = 800;
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // A reader that reads nothing until told to: the pipe fills, the
    // writer blocks, its one-line queue fills.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let proxy = Proxy::start(&logging_to(&fx, &fifo, "json", 1)).await;
    let client = http_client();
    let statuses: Vec<u16> = stream::iter(0..REQUESTS)
        .map(|i| {
            let (client, url) = (client.clone(), proxy.url(&format!("/r{i}")));
            async move { client.get(url).send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let doc = proxy.stats().await;
    let dropped = doc["access_log"]["dropped"].as_u64().unwrap();
    assert!(dropped > 0, "{doc}");

    // Unblock the writer: everything not dropped arrives.
    let mut got = Vec::new();
    let done = eventually(Duration::from_secs(20), || {
        let mut buf = [0u8; 65536];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("reading the fifo: {e}"),
            }
        }
        let received = got.iter().filter(|b| **b == b'\n').count() as u64;
        let proxy = &proxy;
        async move {
            let doc = proxy.stats().await;
            let (w, d) = (
                doc["access_log"]["written"].as_u64().unwrap(),
                doc["access_log"]["dropped"].as_u64().unwrap(),
            );
            w + d == REQUESTS as u64 && w == received
        }
    })
    .await;
    let doc = proxy.stats().await;
    assert!(done, "{}; {} lines read", doc["access_log"], got.len());
    let m = proxy.metrics().await;
    assert_eq!(
        one(&m, "ringway_access_log_dropped_total", &[]),
        doc["access_log"]["dropped"].as_f64().unwrap()
    );
}

#[tokio::test]
async fn the_process_log_is_plain_text_follows_rust_log_and_names_causes() {
    // Nothing listens at the server's address: every request fails to connect.
    let dead = free_addr();
    let config = ProxyConfig {
        extra: "[log]\naccess = \"off\"\n".into(),
        ..ProxyConfig::over([dead])
    };
    for (rust_log, info_expected) in [(None, true), (Some("warn"), false)] {
        let env: Vec<(&str, &str)> = rust_log.map(|v| ("RUST_LOG", v)).into_iter().collect();
        let proxy = Proxy::start_with_env(&config.toml(), &env).await;
        let r = http_client().get(proxy.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 502);
        let want = "upstream connect failed";
        assert!(
            eventually(Duration::from_secs(5), || async {
                proxy.child.log().contains(want)
            })
            .await,
            "{}",
            proxy.child.log()
        );
        let log = proxy.child.log();
        assert!(
            !log.contains('\u{1b}'),
            "ANSI escape codes in a file: {log}"
        );
        let line = log.lines().find(|l| l.contains(want)).unwrap();
        assert!(line.contains("Connection refused"), "no cause: {line}");
        assert!(line.contains(&dead.to_string()), "no server: {line}");
        assert!(!log.contains("error=None"), "{log}");
        assert_eq!(
            log.contains("ringway-proxy starting"),
            info_expected,
            "RUST_LOG={rust_log:?}: {log}"
        );
    }
}
