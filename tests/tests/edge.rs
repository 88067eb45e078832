//! The proxy at the edge, against clients that misbehave on purpose (issue
//! 6): clients that abort cannot eject a server, slowloris and idle
//! connections are held and then closed at their deadlines while a normal
//! client is served, idle connections beyond `max_connections` give their
//! places to new clients while busy ones beyond it are refused and counted,
//! without exhausting descriptors or marking a backend down, and
//! each client timeout (header, keep-alive header, write, body) ends the
//! connection at its deadline. Limits, identity and PROXY headers are in
//! `edge_limits.rs`.
//!
//! Deadlines are short (2–5 s) and checked with generous slack: closed no
//! earlier than the deadline minus 250 ms, and no later than 6–8 s after it.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_tests::configs::ProxyConfig;
use ringway_tests::edge::{
    closed_at, connect_from, eventually, fd_limit, get_from, lo, open_fds, raw_from, read_response,
    refused, server_entry, BigServer, LimitedProxy, HEAVY,
};
use ringway_tests::raw::RawClient;
use ringway_tests::sticky::key_for;
use ringway_tests::{http_client, Fixture, FixtureOpts, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn limits(lines: &str) -> ProxyConfig {
    ProxyConfig {
        extra: format!("[limits]\n{lines}\n"),
        ..ProxyConfig::default()
    }
}

/// A normal client on its own keep-alive connection, asking every 50 ms
/// until stopped: (answers, failures).
fn normal_client(
    url: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    tokio::spawn(async move {
        let client = http_client();
        let (mut ok, mut bad) = (0u64, Vec::new());
        while !stop.load(Relaxed) {
            match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => ok += 1,
                Ok(r) => bad.push(format!("status {}", r.status())),
                Err(e) => bad.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (ok, bad)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_aborts_never_eject_a_server_but_a_resetting_one_is_ejected() {
    let big = BigServer::start(4 << 20).await;
    let resetter = Fixture::start(
        &["reset"],
        FixtureOpts {
            reset: true,
            ..FixtureOpts::default()
        },
    )
    .await;
    let servers = [big.addr, resetter.addr("reset")];
    let cfg = ProxyConfig {
        hash_key: vec!["query:sid"],
        passive: "[upstream.app.passive]\nmax_fails = 3\nfail_timeout = \"60s\"\n".into(),
        ..ProxyConfig::over(servers)
    };
    let proxy = Proxy::start(&cfg.toml()).await;
    let key = key_for(&servers, big.addr);

    for i in 0..100u64 {
        let mut c = RawClient::connect(proxy.listen).await;
        if i % 2 == 0 {
            // Mid-body: the head reaches the server, then the client leaves.
            let before = big.requests.load(Relaxed);
            c.send(
                format!(
                    "POST /upload?sid={key} HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
                )
                .as_bytes(),
            )
            .await;
            c.send(&[b'x'; 1000]).await;
            let reached = eventually(Duration::from_secs(10), || async {
                big.requests.load(Relaxed) > before
            })
            .await;
            assert!(reached, "request {i}: the head never reached the server");
        } else {
            // Mid-response: read the head and a little, then close with
            // bytes unread (a reset).
            c.send(format!("GET /big?sid={key} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .await;
            let head = c.read_head().await.expect("head");
            assert_eq!(head.status, 200, "request {i}");
            c.read_more(Duration::from_secs(10)).await.expect("body");
        }
        drop(c);
    }
    // Every exchange has ended (the server's load is back to 0) before
    // the verdict is read.
    let settled = eventually(Duration::from_secs(20), || async {
        let s = server_entry(&proxy.stats().await, big.addr);
        s["requests_total"].as_u64() >= Some(100) && s["active_connections"] == 0
    })
    .await;
    let entry = server_entry(&proxy.stats().await, big.addr);
    assert!(settled, "exchanges did not end: {entry}");
    assert_eq!(entry["failures"], 0, "client aborts were counted: {entry}");
    assert_eq!(entry["state"], "up", "{entry}");
    assert_eq!(entry["ejected"], false, "{entry}");
    let (head, _) = get_from(lo(1), proxy.listen, &format!("/?sid={key}"), "")
        .await
        .expect("served");
    assert_eq!(
        (head.status, head.header("x-served-by")),
        (200, Some("big"))
    );

    // The control: the same passive settings do eject a server that resets.
    let bad_key = key_for(&servers, resetter.addr("reset"));
    let mut tries = 0;
    let ejected = eventually(Duration::from_secs(20), || {
        tries += 1;
        let url = proxy.url(&format!("/?sid={bad_key}"));
        let admin = proxy.admin_url("/stats.json");
        let addr = resetter.addr("reset");
        async move {
            let _ = http_client().get(&url).send().await;
            let s = server_entry(&ringway_tests::get_json(&admin).await, addr);
            s["ejected"] == true && s["state"] == "down"
        }
    })
    .await;
    let entry = server_entry(&proxy.stats().await, resetter.addr("reset"));
    assert!(ejected, "a resetting server stayed in: {entry}");
    assert!(tries <= 10, "ejection took {tries} requests: {entry}");
    assert!(entry["failures"].as_u64() >= Some(3), "{entry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slowloris_connections_are_held_then_closed_at_the_header_deadline() {
    let _heavy = HEAVY.lock().await;
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let cfg = ProxyConfig {
        servers: vec![(fx.addr("a"), 1)],
        ..limits("header_timeout = \"2s\"")
    };
    let proxy = Proxy::start(&cfg.toml()).await;
    let deadline = Duration::from_secs(2);
    let stop = Arc::new(AtomicBool::new(false));
    let normal = normal_client(proxy.url("/"), stop.clone());

    const N: usize = 1000;
    let listen = proxy.listen;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let from = lo(2 + (i % 8) as u8);
            tokio::spawn(async move {
                let mut s = connect_from(from, listen)
                    .await
                    .map_err(|e| e.to_string())?;
                let t0 = Instant::now();
                let req = b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa";
                let (mut sent, mut got, mut chunk) = (0, Vec::new(), [0u8; 512]);
                loop {
                    // One byte a second, listening meanwhile.
                    if sent < req.len() && s.write_all(&req[sent..sent + 1]).await.is_err() {
                        break;
                    }
                    sent += 1;
                    match tokio::time::timeout(Duration::from_secs(1), s.read(&mut chunk)).await {
                        Err(_) => {}
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
                    }
                    if t0.elapsed() > Duration::from_secs(30) {
                        return Err("never closed".to_owned());
                    }
                }
                Ok::<_, String>((t0.elapsed(), got))
            })
        })
        .collect();
    let mut elapsed = Vec::new();
    let mut answered_408 = 0;
    for t in tasks {
        let (took, got) = t.await.expect("task").expect("slowloris connection");
        elapsed.push(took);
        if !got.is_empty() {
            assert!(
                got.starts_with(b"HTTP/1.1 408"),
                "{:?}",
                String::from_utf8_lossy(&got)
            );
            answered_408 += 1;
        }
    }
    stop.store(true, Relaxed);
    let (ok, bad) = normal.await.expect("normal client");
    assert!(bad.is_empty(), "the normal client was refused: {bad:?}");
    assert!(ok >= 10, "the normal client got only {ok} answers");
    closed_at("slowloris", &elapsed, deadline, Duration::from_secs(6));
    assert!(answered_408 > 0, "no slowloris connection heard a 408");
    let stats = proxy.stats().await;
    assert!(
        refused(&stats, 0, "header_timeout") >= N as u64,
        "{}",
        stats["listeners"][0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_keepalive_connections_close_at_the_idle_timeout() {
    let _heavy = HEAVY.lock().await;
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    // The head deadline (10 s) is far: a close at ~2 s is the idle timer.
    let cfg = ProxyConfig {
        servers: vec![(fx.addr("a"), 1)],
        ..limits("keepalive_timeout = \"2s\"\nheader_timeout = \"10s\"")
    };
    let proxy = Proxy::start(&cfg.toml()).await;
    let idle = Duration::from_secs(2);
    let stop = Arc::new(AtomicBool::new(false));
    let normal = normal_client(proxy.url("/"), stop.clone());

    const N: usize = 1000;
    let listen = proxy.listen;
    // At most 100 requests in flight (the fixture is one small process);
    // the idle connections pile up to the thousand meanwhile.
    let asking = Arc::new(tokio::sync::Semaphore::new(100));
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let asking = asking.clone();
            tokio::spawn(async move {
                let permit = asking.acquire_owned().await.expect("semaphore");
                let mut c = raw_from(lo(2 + (i % 8) as u8), listen).await;
                c.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n").await;
                let (head, _) = read_response(&mut c).await?;
                drop(permit);
                if head.status != 200 {
                    return Err(format!("status {}", head.status));
                }
                let t0 = Instant::now();
                if !c.closes_within(Duration::from_secs(30)).await {
                    return Err("never closed".to_owned());
                }
                if !c.buf.is_empty() {
                    return Err(format!("sent {:?}", String::from_utf8_lossy(&c.buf)));
                }
                Ok(t0.elapsed())
            })
        })
        .collect();
    let mut elapsed = Vec::new();
    for t in tasks {
        elapsed.push(t.await.expect("task").expect("idle connection"));
    }
    stop.store(true, Relaxed);
    let (ok, bad) = normal.await.expect("normal client");
    assert!(bad.is_empty(), "the normal client was refused: {bad:?}");
    assert!(ok >= 10, "the normal client got only {ok} answers");
    closed_at("idle keep-alive", &elapsed, idle, Duration::from_secs(6));
}

/// Requests server `name`'s fixture saw, minus this query itself.
async fn fixture_http(fx: &Fixture, name: &str) -> u64 {
    let doc = ringway_tests::get_json(&format!("http://{}/stats", fx.addr(name))).await;
    doc[name]["http"].as_u64().expect("http counter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_max_connections_serves_new_clients_and_blames_no_backend() {
    let _heavy = HEAVY.lock().await;
    let fx = Fixture::start(&["a", "b"], FixtureOpts::default()).await;
    let cfg = ProxyConfig {
        servers: vec![(fx.addr("a"), 1), (fx.addr("b"), 1)],
        health_check: "[upstream.app.health_check]\nkind = \"http\"\npath = \"/health\"\n\
                       interval = \"200ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 2\n"
            .into(),
        // Long enough for every phase below to run before the flood's own
        // connections reach it.
        ..limits("header_timeout = \"20s\"")
    };
    // A small descriptor limit, so a test-sized flood reaches it; the cap
    // is derived from it (2 per connection plus a reserve).
    const NOFILE: u64 = 1024;
    let proxy = LimitedProxy::start(&cfg.toml(), NOFILE as u32).await;
    let pid = proxy.child.pid();
    assert_eq!(fd_limit(pid), NOFILE);
    let max = proxy.stats().await["process"]["max_connections"]
        .as_u64()
        .expect("max_connections");
    assert!(max > 100 && 2 * max < NOFILE, "max_connections = {max}");
    let listen = proxy.listen;
    let reclaimed = |s: &serde_json::Value| s["listeners"][0]["reclaimed_idle"].as_u64().unwrap();

    // Idle connections, 300 more than the cap, from 8 addresses: the later
    // ones take the places of earlier idle ones.
    let n = max as usize + 300;
    let flood: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(async move {
                let mut c = raw_from(lo(2 + (i % 8) as u8), listen).await;
                c.closes_within(Duration::from_secs(30)).await
            })
        })
        .collect();
    let full = eventually(Duration::from_secs(20), || async {
        let s = proxy.stats().await;
        s["process"]["open_connections"].as_u64() == Some(max)
            && reclaimed(&s) + refused(&s, 0, "max_connections") >= 300
    })
    .await;
    let stats = proxy.stats().await;
    assert!(full, "the cap never filled: {}", stats["listeners"][0]);
    assert!(reclaimed(&stats) > 0, "{}", stats["listeners"][0]);
    let fds = open_fds(pid) as u64;
    assert!(fds < NOFILE, "{fds} descriptors open at the cap");

    // At the cap, full of idle connections: a new client is served at
    // once, in the place of one of them.
    let before = reclaimed(&proxy.stats().await);
    let (head, _) = get_from(lo(1), listen, "/", "")
        .await
        .expect("served at the cap");
    assert_eq!(head.status, 200);
    assert!(reclaimed(&proxy.stats().await) > before);

    // Health checks keep passing while the cap is full: each server's
    // fixture sees at least three more probes than our own queries.
    for name in ["a", "b"] {
        let first = fixture_http(&fx, name).await;
        let mut queries = 0;
        let probed = eventually(Duration::from_secs(5), || {
            queries += 1;
            let fx = &fx;
            async move { fixture_http(fx, name).await >= first + queries + 3 }
        })
        .await;
        assert!(probed, "no health checks reached {name} during the flood");
    }
    let stats = proxy.stats().await;
    // Still full, but for the place the served client gave back.
    let open = stats["process"]["open_connections"].as_u64().unwrap();
    assert!(open + 1 >= max, "the flood ended before the probes: {open}");
    assert_eq!(stats["upstreams"]["app"]["servers_up"], 2, "{stats}");
    for name in ["a", "b"] {
        let e = server_entry(&stats, fx.addr(name));
        assert_eq!(
            (&e["state"], &e["check_failures"]),
            (&"up".into(), &0.into()),
            "{e}"
        );
    }

    // Connections in the middle of a request head are not idle: once they
    // hold every place, a new connection is refused (closed without a
    // byte) and counted.
    // Waves of 50 (under the proxy's 64 waiting places), so each takes an
    // idle place rather than being refused for crowding: once every place
    // is busy, a connection of the next wave is refused.
    let before = refused(&proxy.stats().await, 0, "max_connections");
    let mut busy = Vec::new();
    let mut refusals = 0;
    for _wave in 0..40 {
        let wave: Vec<_> = (0..50)
            .map(|i| {
                tokio::spawn(async move {
                    let mut c = raw_from(lo(2 + (i % 8) as u8), listen).await;
                    let _ = c
                        .stream
                        .write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n")
                        .await;
                    let closed = c.closes_within(Duration::from_secs(1)).await;
                    (c, closed)
                })
            })
            .collect();
        for t in wave {
            let (c, closed) = t.await.expect("busy connection");
            if closed && c.buf.is_empty() {
                refusals += 1;
            } else {
                busy.push(c);
            }
        }
        if refusals > 0 {
            break;
        }
    }
    assert!(
        refusals > 0 && refused(&proxy.stats().await, 0, "max_connections") > before,
        "no connection over a cap of {} busy ones was refused",
        busy.len()
    );
    assert!((open_fds(pid) as u64) < NOFILE);

    for mut c in busy {
        assert!(
            c.closes_within(Duration::from_secs(30)).await,
            "a busy connection was never closed"
        );
    }
    for t in flood {
        assert!(
            t.await.expect("flood task"),
            "a flood connection was never closed"
        );
    }
    // Once the heads time out, new clients are served again.
    let served = eventually(Duration::from_secs(30), || async {
        matches!(get_from(lo(1), listen, "/", "").await, Ok((h, _)) if h.status == 200)
    })
    .await;
    assert!(served, "no new client served after the flood");
    assert!(
        !proxy.child.log().contains("Too many open files"),
        "{}",
        proxy.child.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepalive_request_head_has_the_header_deadline_too() {
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let cfg = ProxyConfig {
        servers: vec![(fx.addr("a"), 1)],
        ..limits("header_timeout = \"2s\"\nkeepalive_timeout = \"30s\"")
    };
    let proxy = Proxy::start(&cfg.toml()).await;
    let mut c = RawClient::connect(proxy.listen).await;
    c.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert_eq!(read_response(&mut c).await.unwrap().0.status, 200);
    c.send(b"GET / HTTP/1.1\r\nHo").await;
    let t0 = Instant::now();
    let head = c.read_head().await.expect("an answer");
    assert_eq!(head.status, 408);
    assert!(c.closes_within(Duration::from_secs(5)).await);
    closed_at(
        "second head",
        &[t0.elapsed()],
        Duration::from_secs(2),
        Duration::from_secs(6),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_at_the_write_timeout() {
    const BIG: usize = 512 << 20;
    let big = BigServer::start(BIG).await;
    let cfg = ProxyConfig {
        servers: vec![(big.addr, 1)],
        ..limits("client_write_timeout = \"2s\"")
    };
    let proxy = Proxy::start(&cfg.toml()).await;
    let mut c = RawClient::connect(proxy.listen).await;
    c.send(b"GET /big HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert_eq!(c.read_head().await.unwrap().status, 200);
    // The client reads nothing more. The proxy stops reading the server
    // when the client's buffers are full, and drops both at the timeout:
    // the server's blocked write then fails.
    let stopped = Instant::now();
    let dropped = eventually(Duration::from_secs(20), || async {
        !big.write_failures.lock().unwrap().is_empty()
    })
    .await;
    assert!(dropped, "the proxy never gave up on the client");
    let at = big.write_failures.lock().unwrap()[0];
    closed_at(
        "write",
        &[at.duration_since(stopped)],
        Duration::from_secs(2),
        Duration::from_secs(8),
    );
    assert!(c.closes_within(Duration::from_secs(20)).await);
    assert!(c.received < BIG as u64, "the whole body arrived");
    let entry = server_entry(&proxy.stats().await, big.addr);
    assert_eq!(
        (&entry["failures"], &entry["state"]),
        (&0.into(), &"up".into()),
        "{entry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_abandoned_at_the_body_timeout() {
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let cfg = ProxyConfig {
        servers: vec![(fx.addr("a"), 1)],
        ..limits("body_timeout = \"2s\"")
    };
    let proxy = Proxy::start(&cfg.toml()).await;
    let mut c = RawClient::connect(proxy.listen).await;
    c.send(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await;
    let t0 = Instant::now();
    let head = c.read_head().await.expect("an answer");
    assert_eq!(head.status, 408);
    assert!(c.closes_within(Duration::from_secs(5)).await);
    closed_at(
        "body",
        &[t0.elapsed()],
        Duration::from_secs(2),
        Duration::from_secs(6),
    );
    let stats = proxy.stats().await;
    let entry = server_entry(&stats, fx.addr("a"));
    assert_eq!(
        (&entry["failures"], &entry["state"]),
        (&0.into(), &"up".into()),
        "{entry}"
    );
}
