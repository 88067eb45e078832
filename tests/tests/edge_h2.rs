//! The edge limits over HTTP/2 (issue 6, item 2), end to end against the
//! real binary: a TLS listener with a test-CA certificate offering ALPN
//! `h2`, in front of a `ringway-fixture` server. The proxy advertises its
//! stream cap and refuses streams beyond it; a rapid-reset flood
//! (CVE-2023-44487) is cut off while another client is served and barely
//! reaches the upstream; the header, keep-alive, body, client-write and
//! TLS-handshake deadlines hold; the request rate answers 429 over h2 too.
//!
//! Most clients here speak HTTP/2 frame by frame (`tls::h2raw`), so what
//! the proxy sends is seen as sent: a keep-alive head's deadline, a body
//! that stalls with its head, and a stalled body on a connection kept busy
//! with PINGs are staged frame by frame. Deadlines are short (2 s) and checked with generous slack, as in
//! `edge.rs`: no earlier than the deadline minus 250 ms, no later than 6 s
//! after it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringway_tests::edge::{closed_at, eventually, refused, server_entry, HEAVY};
use ringway_tests::tls::h2raw::{
    frame, request, request_to, rst, Frames, Next, Raw, CANCEL, DATA, END_HEADERS, END_STREAM,
    GOAWAY, MAX_CONCURRENT_STREAMS, PING, REFUSED_STREAM, RST_STREAM,
};
use ringway_tests::tls::{alpn, h2_get, handshake, LeafOpts, TestCa, Tls};
use ringway_tests::{get_json, Fixture, FixtureOpts, Proxy};
use tokio::io::AsyncWriteExt;

const LATE: Duration = Duration::from_secs(6);
const H2: &[&[u8]] = &[b"h2"];

/// One fixture server `a` behind a TLS listener (certificate for `a.test`
/// from a fresh test CA) with `[limits]` `lines`.
struct Edge {
    ca: TestCa,
    fx: Fixture,
    proxy: Proxy,
}

impl Edge {
    async fn start(lines: &str) -> Edge {
        Edge::start_over(lines, None).await
    }

    /// [`Edge::start`] with `upstream` as the server instead of the fixture.
    async fn start_over(lines: &str, upstream: Option<SocketAddr>) -> Edge {
        let ca = TestCa::new("ringway h2 edge CA");
        let leaf = ca.leaf("a", &["a.test"], LeafOpts::default());
        let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
        let toml = format!(
            "[server]\nthreads = 2\ngrace_period = \"1s\"\n\n[admin]\nlisten = \"{{ADMIN}}\"\n\n\
             [[listener]]\nlisten = \"{{LISTEN}}\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
             [[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n\n\
             [upstream.app]\nconnect_timeout = \"1s\"\nservers = [ {{ addr = \"{}\" }} ]\n\n\
             [limits]\n{lines}\n",
            leaf.cert.display(),
            leaf.key.display(),
            upstream.unwrap_or(fx.addr("a")),
        );
        let proxy = Proxy::start(&toml).await;
        Edge { ca, fx, proxy }
    }

    /// A TLS connection that agreed on `h2`, nothing sent on it yet.
    async fn tls(&self) -> Tls {
        let tls = handshake(self.proxy.listen, self.ca.client(H2), "a.test", true)
            .await
            .expect("TLS handshake");
        assert_eq!(alpn(&tls).as_deref(), Some("h2"));
        tls
    }

    /// An HTTP/2 connection spoken frame by frame, past the preface and
    /// the exchange of SETTINGS.
    async fn raw(&self) -> Raw {
        Raw::open(self.tls().await).await
    }

    /// Requests the fixture server has answered (its own `/stats` included).
    async fn upstream_requests(&self) -> u64 {
        let doc = get_json(&format!("http://{}/stats", self.fx.addr("a"))).await;
        doc["a"]["http"].as_u64().expect("http counter")
    }
}

fn assert_closed_at(what: &str, elapsed: &[Duration], deadline: Duration) {
    closed_at(what, elapsed, deadline, LATE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_cap_is_advertised_and_a_stream_beyond_it_is_refused() {
    let edge = Edge::start("h2_max_concurrent_streams = 4").await;
    let mut c = edge.raw().await;
    assert_eq!(
        c.setting(MAX_CONCURRENT_STREAMS),
        Some(4),
        "{:?}",
        c.settings
    );

    // Four requests whose bodies have not arrived hold four streams open.
    let post = [("content-length", "10")];
    for id in [1, 3, 5, 7] {
        c.send(&request(id, "POST", &post, END_HEADERS)).await;
    }
    c.send(&request(9, "GET", &[], END_HEADERS | END_STREAM))
        .await;
    let (refusal, seen) = c.until_stream_ends(9, Duration::from_secs(10)).await;
    assert_eq!(
        (refusal.kind, refusal.code()),
        (RST_STREAM, REFUSED_STREAM),
        "the fifth stream was not refused: {refusal:?}"
    );
    let ended: Vec<_> = seen
        .iter()
        .filter(|f| f.kind == GOAWAY || [1, 3, 5, 7].iter().any(|id| f.ends(*id)))
        .collect();
    assert!(
        ended.is_empty(),
        "the streams under the cap ended: {ended:?}"
    );
    // Once one stream ends, a new one is served: the cap counts open streams.
    c.send(&frame(DATA, END_STREAM, 1, b"0123456789")).await;
    let (end, _) = c.until_stream_ends(1, Duration::from_secs(10)).await;
    assert_ne!(end.kind, RST_STREAM, "stream 1 was reset: {end:?}");
    c.exchange(11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_is_cut_off_while_another_client_is_served() {
    let _heavy = HEAVY.lock().await;
    let edge = Edge::start("").await;

    // A normal client, on fresh h2 connections, asking every 50 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let normal = {
        let (stop, served) = (stop.clone(), served.clone());
        let (listen, config) = (edge.proxy.listen, edge.ca.client(H2));
        tokio::spawn(async move {
            let mut bad = Vec::new();
            while !stop.load(Relaxed) {
                let asked = async {
                    let tls = handshake(listen, config.clone(), "a.test", true).await?;
                    h2_get(tls, "a.test", "/").await
                };
                match asked.await {
                    Ok(r) if r.status == 200 => _ = served.fetch_add(1, Relaxed),
                    Ok(r) => bad.push(format!("status {}", r.status)),
                    Err(e) => bad.push(e),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            bad
        })
    };
    let served_since = |n: u64| {
        let served = served.clone();
        eventually(Duration::from_secs(10), move || {
            let served = served.clone();
            async move { served.load(Relaxed) >= n }
        })
    };
    assert!(served_since(1).await, "the normal client was not served");
    let before = edge.upstream_requests().await;
    let served_before = served.load(Relaxed);

    const STREAMS: u32 = 10_000;
    const BATCH: u32 = 100;
    let Raw {
        mut frames, mut w, ..
    } = edge.raw().await;
    let started = Instant::now();
    let flood = tokio::spawn(async move {
        let mut sent = 0u32;
        while sent < STREAMS {
            let mut bytes = Vec::new();
            for i in sent..sent + BATCH {
                let id = 2 * i + 1;
                bytes.extend(request(id, "GET", &[], END_HEADERS | END_STREAM));
                bytes.extend(rst(id, CANCEL));
            }
            if w.write_all(&bytes).await.is_err() || w.flush().await.is_err() {
                break;
            }
            sent += BATCH;
        }
        sent
    });
    let mut goaway = None;
    let closed = loop {
        match frames.next(Duration::from_secs(30)).await {
            Next::Frame(f) if f.kind == GOAWAY => goaway = Some(f.code()),
            Next::Frame(_) => {}
            Next::Closed => break true,
            Next::Quiet => break false,
        }
    };
    let cut_after = started.elapsed();
    let sent = tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .expect("the flood's writes ended")
        .expect("flood task");
    assert!(
        closed,
        "the flooding connection was never closed ({sent} streams sent)"
    );
    println!(
        "rapid reset: {sent} of {STREAMS} open-and-reset streams written; \
         GOAWAY {goaway:?}, closed after {cut_after:?}"
    );
    // ENHANCE_YOUR_CALM (0xb) is what the h2 crate answers a flood with.
    assert_eq!(
        goaway,
        Some(0xb),
        "closed without GOAWAY(ENHANCE_YOUR_CALM)"
    );

    // The normal client kept being served, meanwhile and after.
    let now = served.load(Relaxed);
    assert!(served_since(now + 2).await, "the normal client stalled");
    stop.store(true, Relaxed);
    let bad = normal.await.expect("normal client");
    assert!(bad.is_empty(), "the normal client failed: {bad:?}");
    let ok = served.load(Relaxed) - served_before;
    let tls = edge.tls().await;
    assert_eq!(h2_get(tls, "a.test", "/").await.unwrap().status, 200);

    // Of the flood's streams, few reached the upstream.
    let upstream = edge.upstream_requests().await - before;
    // Less the normal client's answers, the last GET and this query.
    let from_flood = upstream.saturating_sub(ok + 2);
    println!("rapid reset: {from_flood} flood requests reached the upstream");
    assert!(
        from_flood < u64::from(STREAMS) / 20,
        "{from_flood} of {STREAMS} reset streams reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_first_request_closes_at_the_header_deadline() {
    let _heavy = HEAVY.lock().await;
    // The idle timeout is far: a close at ~2 s is the head deadline.
    let edge = Edge::start("header_timeout = \"2s\"\nkeepalive_timeout = \"30s\"").await;
    let deadline = Duration::from_secs(2);
    let cases = ["no preface", "preface only", "half a header block"];
    let tasks = cases.iter().map(|case| {
        let edge = &edge;
        async move {
            let t0 = Instant::now();
            let closed = if *case == "no preface" {
                let (r, _w) = tokio::io::split(edge.tls().await);
                let mut frames = Frames { r, buf: Vec::new() };
                frames.until_closed(deadline + LATE).await
            } else {
                let mut c = edge.raw().await;
                if *case == "half a header block" {
                    // HEADERS without END_HEADERS: a CONTINUATION must follow.
                    c.send(&request(1, "GET", &[], END_STREAM)).await;
                }
                c.frames.until_closed(deadline + LATE).await
            };
            (case, closed.map(|_| t0.elapsed()))
        }
    });
    let results = futures_util::future::join_all(tasks).await;
    let mut elapsed = Vec::new();
    for (case, took) in results {
        elapsed.push(took.unwrap_or_else(|| panic!("{case}: never closed")));
    }
    println!("closed after {elapsed:?} ({cases:?})");
    assert_closed_at("first request", &elapsed, deadline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepalive_request_head_has_the_header_deadline_too() {
    let _heavy = HEAVY.lock().await;
    let edge = Edge::start("header_timeout = \"2s\"\nkeepalive_timeout = \"30s\"").await;
    let mut c = edge.raw().await;
    c.exchange(1).await;
    // The second request's header block stops half way.
    c.send(&request(3, "GET", &[], END_STREAM)).await;
    let t0 = Instant::now();
    let closed = c.frames.until_closed(Duration::from_secs(2) + LATE).await;
    assert!(
        closed.is_some(),
        "open {:?} after a half head",
        t0.elapsed()
    );
    assert_closed_at("second head", &[t0.elapsed()], Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2_connections_close_at_the_keepalive_timeout() {
    let _heavy = HEAVY.lock().await;
    // The head deadline (10 s) is far: a close at ~2 s is the idle timer.
    let edge = Edge::start("keepalive_timeout = \"2s\"\nheader_timeout = \"10s\"").await;
    let idle = Duration::from_secs(2);
    let tasks = (0..10).map(|_| {
        let edge = &edge;
        async move {
            let mut c = edge.raw().await;
            c.exchange(1).await;
            let t0 = Instant::now();
            let goaway = c.frames.until_closed(idle + LATE).await;
            (goaway, t0.elapsed())
        }
    });
    let results = futures_util::future::join_all(tasks).await;
    let mut elapsed = Vec::new();
    for (goaway, took) in &results {
        assert!(
            goaway.is_some(),
            "an idle connection was open after {took:?}"
        );
        elapsed.push(*took);
    }
    let goaways = results.iter().filter(|(g, _)| *g == Some(true)).count();
    println!("idle: closed after {elapsed:?}; {goaways} of 10 with a GOAWAY first");
    assert_closed_at("idle h2", &elapsed, idle);
}

/// How a request body stalls after 10 of its 1,000 bytes.
#[derive(PartialEq)]
enum Stall {
    /// The DATA frame follows once the proxy has read the head.
    AfterHead,
    /// As `AfterHead`, and the client sends a PING every 500 ms.
    Pinging,
    /// The second request of a keep-alive connection, its HEADERS and
    /// DATA frames in one write.
    WithHead,
}

/// How long until a stalled body's stream, or its connection, ended.
async fn stalled_body(edge: &Edge, stall: Stall) -> Result<Duration, String> {
    let mut c = edge.raw().await;
    let mut id = 1;
    if stall == Stall::WithHead {
        c.exchange(1).await;
        id = 3;
    }
    let requests = || async {
        let stats = edge.proxy.stats().await;
        stats["listeners"][0]["requests"]
            .as_u64()
            .expect("requests")
    };
    let before = requests().await;
    let mut bytes = request(id, "POST", &[("content-length", "1000")], END_HEADERS);
    if stall != Stall::WithHead {
        c.send(&bytes).await;
        let read = eventually(Duration::from_secs(10), || async {
            requests().await > before
        });
        assert!(read.await, "the proxy never read the head");
        bytes.clear();
    }
    bytes.extend(frame(DATA, 0, id, b"0123456789"));
    c.send(&bytes).await;
    let t0 = Instant::now();
    loop {
        if t0.elapsed() > Duration::from_secs(2) + LATE {
            return Err(format!("the stalled stream lived {:?}", t0.elapsed()));
        }
        if stall == Stall::Pinging && c.try_send(&frame(PING, 0, 0, b"pingpong")).await.is_err() {
            // The proxy closed the connection between two pings.
            return Ok(t0.elapsed());
        }
        match c.frames.next(Duration::from_millis(500)).await {
            Next::Closed => return Ok(t0.elapsed()),
            Next::Frame(f) if f.ends(id) => return Ok(t0.elapsed()),
            Next::Frame(_) | Next::Quiet => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_abandoned_at_the_body_timeout() {
    let _heavy = HEAVY.lock().await;
    let edge = Edge::start("body_timeout = \"2s\"\nheader_timeout = \"30s\"").await;
    let took = stalled_body(&edge, Stall::AfterHead).await.unwrap();
    assert_closed_at("body", &[took], Duration::from_secs(2));
    // The client's stall is not the server's failure.
    let entry = server_entry(&edge.proxy.stats().await, edge.fx.addr("a"));
    assert_eq!(
        (&entry["failures"], &entry["state"]),
        (&0.into(), &"up".into()),
        "{entry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_with_its_head_is_abandoned_too() {
    let _heavy = HEAVY.lock().await;
    let edge = Edge::start("body_timeout = \"2s\"\nheader_timeout = \"30s\"").await;
    let took = stalled_body(&edge, Stall::WithHead).await.unwrap();
    assert_closed_at("body sent with its head", &[took], Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_abandoned_even_when_the_connection_keeps_pinging() {
    let _heavy = HEAVY.lock().await;
    let edge = Edge::start("body_timeout = \"2s\"\nheader_timeout = \"30s\"").await;
    let took = stalled_body(&edge, Stall::Pinging).await.unwrap();
    assert_closed_at("body with pings", &[took], Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_connection_without_a_client_hello_closes_at_the_handshake_deadline() {
    let _heavy = HEAVY.lock().await;
    let edge = Edge::start("tls_handshake_timeout = \"2s\"\nheader_timeout = \"30s\"").await;
    let deadline = Duration::from_secs(2);
    let listen: SocketAddr = edge.proxy.listen;
    let before = edge.proxy.stats().await["listeners"][0]["tls_failures"]
        .as_u64()
        .expect("tls_failures");
    let tasks = (0..10).map(|_| async move {
        let t0 = Instant::now();
        let s = tokio::net::TcpStream::connect(listen)
            .await
            .expect("connect");
        let mut frames = Frames {
            r: s,
            buf: Vec::new(),
        };
        frames
            .until_closed(deadline + LATE)
            .await
            .map(|_| t0.elapsed())
    });
    let mut elapsed = Vec::new();
    for took in futures_util::future::join_all(tasks).await {
        elapsed.push(took.expect("a silent TCP connection was never closed"));
    }
    println!("no ClientHello: closed after {elapsed:?}");
    assert_closed_at("TLS handshake", &elapsed, deadline);
    let stats = edge.proxy.stats().await;
    let failures = stats["listeners"][0]["tls_failures"].as_u64().unwrap();
    assert!(failures >= before + 10, "{}", stats["listeners"][0]);
}

/// `GET path` with `X-Forwarded-For: xff` on an open h2 connection: the
/// status and the fields of the answer.
async fn h2_ask(
    send: &h2::client::SendRequest<Bytes>,
    path: &str,
    xff: &str,
) -> (u16, http::HeaderMap) {
    let ask = async {
        let mut ready = send.clone().ready().await.expect("h2 ready");
        let req = http::Request::get(format!("https://a.test{path}"))
            .header("x-forwarded-for", xff)
            .body(())
            .unwrap();
        let (resp, _) = ready.send_request(req, true).expect("h2 send");
        let (parts, mut body) = resp.await.expect("h2 response").into_parts();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("h2 body");
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        (parts.status.as_u16(), parts.headers)
    };
    tokio::time::timeout(Duration::from_secs(10), ask)
        .await
        .expect("an answer within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_rate_answers_429_over_h2_too() {
    let edge = Edge::start(
        "trusted_proxies = [\"127.0.0.1\"]\nrequests_per_second = 5\nburst = 5\n\
         header_timeout = \"30s\"",
    )
    .await;
    let (send, conn) = h2::client::handshake(edge.tls().await)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let a = "198.51.100.1";
    let mut statuses = Vec::new();
    let limited = loop {
        let (status, headers) = h2_ask(&send, "/", a).await;
        statuses.push(status);
        if status == 429 || statuses.len() > 30 {
            break headers;
        }
    };
    assert_eq!(statuses.last(), Some(&429), "never limited: {statuses:?}");
    assert!(
        (5..=7).contains(&(statuses.len() - 1)),
        "a burst of 5 let {} through: {statuses:?}",
        statuses.len() - 1
    );
    let field = |name: &str| limited.get(name).and_then(|v| v.to_str().ok());
    let retry: u64 = field("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry >= 1, "Retry-After {retry}");
    assert_eq!(field("ratelimit-policy"), Some("\"requests\";q=5;w=1"));
    assert_eq!(
        field("ratelimit"),
        Some(format!("\"requests\";r=0;t={retry}").as_str())
    );
    // Another client on the same connection is served; the limited one is
    // still limited.
    assert_eq!(h2_ask(&send, "/", "198.51.100.2").await.0, 200);
    assert_eq!(h2_ask(&send, "/", a).await.0, 429);
    assert!(refused(&edge.proxy.stats().await, 0, "rate") >= 2);
    // The default stream cap is what the proxy advertised.
    assert_eq!(send.current_max_send_streams(), 128);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_at_the_write_timeout() {
    let _heavy = HEAVY.lock().await;
    let big = ringway_tests::edge::BigServer::start(4 << 20).await;
    let edge = Edge::start_over(
        "client_write_timeout = \"2s\"\nheader_timeout = \"30s\"\nbody_timeout = \"30s\"",
        Some(big.addr),
    )
    .await;
    let mut c = edge.raw().await;
    // The client keeps the default 64 KiB windows and never opens them
    // further: the answer stalls once they are full.
    c.send(&request_to(1, "GET", "/big", &[], END_HEADERS | END_STREAM))
        .await;
    let mut data = 0usize;
    let mut stalled_at = None;
    let ended = loop {
        match c.frames.next(Duration::from_secs(1)).await {
            Next::Frame(f) if f.kind == DATA => {
                data += f.payload.len();
                stalled_at = None;
            }
            Next::Frame(f) if f.ends(1) => break Instant::now(),
            Next::Closed => break Instant::now(),
            Next::Frame(_) => {}
            Next::Quiet => {
                let since =
                    *stalled_at.get_or_insert_with(|| Instant::now() - Duration::from_secs(1));
                assert!(
                    since.elapsed() < Duration::from_secs(2) + LATE,
                    "the stalled answer lived {:?} after {data} bytes",
                    since.elapsed()
                );
            }
        }
    };
    let stalled = stalled_at.expect("the answer never stalled");
    assert!(
        data <= 65_535 && data > 0,
        "{data} bytes sent past the window"
    );
    assert_closed_at("stalled reader", &[ended - stalled], Duration::from_secs(2));
}
