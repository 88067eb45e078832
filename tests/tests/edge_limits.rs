//! Limits and client identity at the edge (issue 6): request rates answered
//! 429 with the rate-limit fields and refilled at the configured rate, the
//! per-address connection and WebSocket caps, a per-route upgrade rate,
//! PROXY protocol v1/v2 from trusted peers only, client identity on a
//! dual-stack listener with untrusted forwarding fields removed, a rate
//! changed by SIGHUP, and the head and body size answers (414, 431, 413).
//! Timeouts and floods are in `edge.rs`.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use ringway_tests::configs::ProxyConfig;
use ringway_tests::edge::{
    echo_headers_from, eventually, get_from, insert_after, lo, raw_from, read_response, refused,
    server_entry,
};
use ringway_tests::raw::{upgrade_request, Head, RawClient};
use ringway_tests::{free_port, Fixture, FixtureOpts, Proxy};

/// One fixture server `a` behind a proxy whose `[limits]` are `lines`.
async fn proxy_with(lines: &str, edit: impl FnOnce(String) -> String) -> (Fixture, Proxy) {
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let toml = config(&fx, lines);
    let proxy = Proxy::start(&edit(toml)).await;
    (fx, proxy)
}

fn config(fx: &Fixture, lines: &str) -> String {
    ProxyConfig {
        extra: format!("[limits]\n{lines}\n"),
        ..ProxyConfig::over([fx.addr("a")])
    }
    .toml()
}

/// `GET path` with `extra` header lines from 127.0.0.1, each on its own
/// connection (`Connection: close`), so one answer cannot stand in for
/// another; the keep-alive case has its own test below.
async fn ask(proxy: &Proxy, path: &str, extra: &str) -> Head {
    get_from(lo(1), proxy.listen, path, extra)
        .await
        .expect("an answer")
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_others_are_served_and_the_bucket_refills() {
    let (_fx, proxy) = proxy_with(
        "trusted_proxies = [\"127.0.0.1\"]\nrequests_per_second = 10\nburst = 10",
        |t| t,
    )
    .await;
    let a = "X-Forwarded-For: 198.51.100.1\r\n";
    let mut statuses = Vec::new();
    let limited = loop {
        let head = ask(&proxy, "/", a).await;
        statuses.push(head.status);
        if head.status == 429 || statuses.len() > 30 {
            break head;
        }
    };
    assert_eq!(limited.status, 429, "never limited: {statuses:?}");
    assert!(
        (10..=12).contains(&(statuses.len() - 1)),
        "a burst of 10 let {} through",
        statuses.len() - 1
    );
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry >= 1, "Retry-After {retry}");
    assert_eq!(
        limited.header("ratelimit-policy"),
        Some("\"requests\";q=10;w=1")
    );
    assert_eq!(
        limited.header("ratelimit"),
        Some(format!("\"requests\";r=0;t={retry}").as_str())
    );

    // Another identity through the same trusted peer, and another peer
    // address, are served meanwhile.
    assert_eq!(
        ask(&proxy, "/", "X-Forwarded-For: 198.51.100.2\r\n")
            .await
            .status,
        200
    );
    let (other, _) = get_from(lo(2), proxy.listen, "/", "").await.unwrap();
    assert_eq!(other.status, 200);

    // Refill: asking as fast as possible for 3 s, about 10 a second pass.
    let window = Duration::from_secs(3);
    let start = Instant::now();
    let (mut passed, mut asked) = (0u32, 0u32);
    while start.elapsed() < window {
        asked += 1;
        if ask(&proxy, "/", a).await.status == 200 {
            passed += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(
        asked > 3 * passed,
        "too few attempts ({asked}) to measure a rate"
    );
    let rate = f64::from(passed) / secs;
    assert!(
        (6.0..=14.0).contains(&rate),
        "{passed} of {asked} passed in {secs:.1} s ({rate:.1}/s; configured 10/s)"
    );
    let stats = proxy.stats().await;
    assert!(refused(&stats, 0, "rate") >= u64::from(asked - passed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_per_ip_closes_the_extra_connection_and_counts_it() {
    let (_fx, proxy) = proxy_with("max_connections_per_ip = 3", |t| t).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = raw_from(lo(3), proxy.listen).await;
        c.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n").await;
        assert_eq!(read_response(&mut c).await.unwrap().0.status, 200);
        held.push(c);
    }
    let mut extra = raw_from(lo(3), proxy.listen).await;
    assert!(
        extra.closes_within(Duration::from_secs(5)).await && extra.buf.is_empty(),
        "a fourth connection from 127.0.0.3 was not closed at once"
    );
    assert_eq!(refused(&proxy.stats().await, 0, "per_ip"), 1);
    let (other, _) = get_from(lo(4), proxy.listen, "/", "").await.unwrap();
    assert_eq!(other.status, 200, "another address is not limited");
    // A place freed is a place taken again.
    held.pop();
    let again = eventually(Duration::from_secs(10), || async {
        matches!(get_from(lo(3), proxy.listen, "/", "").await, Ok((h, _)) if h.status == 200)
    })
    .await;
    assert!(again, "the freed place was never given back");
}

async fn upgrade_from(n: u8, proxy: &Proxy, path: &str) -> (RawClient, Head) {
    let mut c = raw_from(lo(n), proxy.listen).await;
    c.send(upgrade_request(path, "").as_bytes()).await;
    let head = c.read_head().await.expect("an answer to the upgrade");
    (c, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_websockets_per_ip_answers_429_naming_the_cap() {
    let (_fx, proxy) = proxy_with("max_websockets_per_ip = 2", |t| t).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let (c, head) = upgrade_from(5, &proxy, "/ws").await;
        assert_eq!(head.status, 101);
        open.push(c);
    }
    let (mut third, head) = upgrade_from(5, &proxy, "/ws").await;
    assert_eq!(head.status, 429);
    assert_eq!(head.header("retry-after"), Some("1"));
    assert_eq!(
        head.header("x-ringway-limit"),
        Some("max_websockets_per_ip=2; held=2")
    );
    assert!(third.closes_within(Duration::from_secs(5)).await);
    let (_other, head) = upgrade_from(6, &proxy, "/ws").await;
    assert_eq!(head.status, 101, "another address is not limited");
    open.pop();
    let again = eventually(Duration::from_secs(10), || async {
        upgrade_from(5, &proxy, "/ws").await.1.status == 101
    })
    .await;
    assert!(again, "a closed WebSocket never gave its place back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_set_a_stricter_upgrade_rate() {
    let strict = "[[route]]\nhost = \"*\"\npath_prefix = \"/chat\"\nupstream = \"app\"\n\
                  limits = { websocket_upgrades_per_second = 1, websocket_upgrades_burst = 2 }\n\n";
    let (_fx, proxy) = proxy_with("websocket_upgrades_per_second = 100", |t| {
        t.replacen("[[route]]\n", &format!("{strict}[[route]]\n"), 1)
    })
    .await;
    let mut kept = Vec::new();
    for _ in 0..2 {
        let (c, head) = upgrade_from(7, &proxy, "/chat").await;
        assert_eq!(head.status, 101);
        kept.push(c);
    }
    let (_c, head) = upgrade_from(7, &proxy, "/chat").await;
    assert_eq!(head.status, 429);
    let retry = head.header("retry-after").expect("Retry-After");
    assert_eq!(
        head.header("ratelimit-policy"),
        Some("\"websocket-upgrades\";q=2;w=2")
    );
    assert_eq!(
        head.header("ratelimit"),
        Some(format!("\"websocket-upgrades\";r=0;t={retry}").as_str())
    );
    // The global rate still lets this client upgrade elsewhere, and another
    // client upgrade here.
    assert_eq!(upgrade_from(7, &proxy, "/ws").await.1.status, 101);
    assert_eq!(upgrade_from(8, &proxy, "/chat").await.1.status, 101);
}

fn proxy_v2(src: [u8; 4], src_port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&src_port.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_are_believed_from_trusted_peers_only() {
    let (_fx, proxy) = proxy_with("trusted_proxies = [\"127.0.0.1\"]", |t| {
        insert_after(&t, "listen = \"{LISTEN}\"", "proxy_protocol = true")
    })
    .await;
    let request = "GET /echo-headers HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 6.6.6.6\r\n\
                   Connection: close\r\n\r\n";
    let headers = [
        (
            b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n".to_vec(),
            "203.0.113.7",
        ),
        (proxy_v2([198, 51, 100, 9], 40001), "198.51.100.9"),
    ];
    for (header, client) in headers {
        let mut c = raw_from(lo(1), proxy.listen).await;
        let mut bytes = header;
        bytes.extend_from_slice(request.as_bytes());
        c.send(&bytes).await;
        let (head, body) = read_response(&mut c).await.expect("an answer");
        assert_eq!(head.status, 200);
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // The PROXY source is the client; its own X-Forwarded-For is not
        // believed (it is not a trusted proxy).
        assert_eq!(seen["x-forwarded-for"], client, "{seen}");
        assert_eq!(seen["x-real-ip"], client, "{seen}");
    }
    let cases: [(u8, &[u8], &str); 3] = [
        (
            2,
            b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n",
            "untrusted peer",
        ),
        (1, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", "no header"),
        (1, b"PROXY TCP4 nonsense\r\n", "garbage"),
    ];
    // The harness' readiness probe (a bare connect) was refused already.
    let base = refused(&proxy.stats().await, 0, "proxy_protocol");
    for (i, (from, bytes, why)) in cases.into_iter().enumerate() {
        let mut c = raw_from(lo(from), proxy.listen).await;
        // The proxy may close before the request is written: a failed
        // write is a close too.
        let all = [bytes, request.as_bytes()].concat();
        let _ = c.stream.write_all(&all).await;
        assert!(
            c.closes_within(Duration::from_secs(5)).await,
            "{why}: still open"
        );
        assert!(
            c.buf.is_empty(),
            "{why}: answered {:?}",
            String::from_utf8_lossy(&c.buf)
        );
        assert_eq!(
            refused(&proxy.stats().await, 0, "proxy_protocol"),
            base + i as u64 + 1,
            "{why}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_listener_sees_ipv4_clients_as_ipv4_and_strips_untrusted_fields() {
    let port = free_port();
    let (_fx, _proxy) = proxy_with("trusted_proxies = [\"127.0.0.1\"]", |t| {
        format!("{t}\n[[listener]]\nlisten = \"[::]:{port}\"\n")
    })
    .await;
    let dual = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    ringway_tests::wait_for_port(dual, Duration::from_secs(10))
        .await
        .unwrap();
    let forwarded = "X-Forwarded-For: 203.0.113.5\r\nForwarded: for=203.0.113.5\r\n\
                     X-Forwarded-Host: example.org\r\nX-Forwarded-Port: 8443\r\n";

    // From a trusted IPv4 peer (seen by the socket as ::ffff:127.0.0.1).
    let seen = echo_headers_from(lo(1), dual, forwarded).await;
    assert_eq!(seen["x-real-ip"], "203.0.113.5", "{seen}");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.5, 127.0.0.1", "{seen}");
    assert_eq!(seen["forwarded"], "for=203.0.113.5", "{seen}");
    assert_eq!(seen["x-forwarded-host"], "example.org", "{seen}");
    assert_eq!(seen["x-forwarded-port"], "8443", "{seen}");

    // From an untrusted one: its claims are dropped.
    let seen = echo_headers_from(lo(2), dual, forwarded).await;
    assert_eq!(seen["x-real-ip"], "127.0.0.2", "{seen}");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.2", "{seen}");
    for name in ["forwarded", "x-forwarded-host", "x-forwarded-port"] {
        assert!(seen.get(name).is_none(), "{name} crossed: {seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_applies_a_new_request_rate() {
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let proxy = Proxy::start(&config(&fx, "requests_per_second = 1000\nburst = 1000")).await;
    for _ in 0..20 {
        assert_eq!(ask(&proxy, "/", "").await.status, 200);
    }
    proxy
        .reload_with(&config(&fx, "requests_per_second = 1\nburst = 2"))
        .await;
    assert_eq!(proxy.stats().await["reloads"]["ok"], 1);
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(ask(&proxy, "/", "").await.status);
        }
        v
    };
    assert_eq!(statuses, [200, 200, 429]);
    let head = ask(&proxy, "/", "").await;
    assert_eq!(
        head.header("ratelimit-policy"),
        Some("\"requests\";q=2;w=2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_lines_heads_and_bodies_get_414_431_and_413() {
    let small = "[[route]]\nhost = \"*\"\npath_prefix = \"/small\"\nupstream = \"app\"\n\
                 limits = { max_body_bytes = 100 }\n\n";
    let (fx, proxy) = proxy_with(
        "max_request_line_bytes = 1024\nmax_header_bytes = 4096\nmax_body_bytes = 1000",
        |t| t.replacen("[[route]]\n", &format!("{small}[[route]]\n"), 1),
    )
    .await;
    let send = |bytes: Vec<u8>| {
        let listen = proxy.listen;
        async move {
            let mut c = RawClient::connect(listen).await;
            c.send(&bytes).await;
            let head = c.read_head().await.expect("an answer");
            (head.status, c.closes_within(Duration::from_secs(5)).await)
        }
    };
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(2000));
    assert_eq!(send(long_line.into_bytes()).await, (414, true));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(5000)
    );
    assert_eq!(send(big_head.into_bytes()).await, (431, true));
    let post = |path: &str, n: usize| {
        let mut b =
            format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n").into_bytes();
        b.extend(std::iter::repeat_n(b'x', n));
        b
    };
    assert_eq!(send(post("/", 2000)).await, (413, true));
    assert_eq!(send(post("/small", 500)).await.0, 413, "the route's limit");
    assert_eq!(send(post("/", 500)).await.0, 200, "under the global limit");
    let mut chunked =
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n".to_vec();
    chunked.extend(std::iter::repeat_n(b'x', 2000));
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(
        send(chunked).await,
        (413, true),
        "a chunked body over the limit"
    );
    let stats = proxy.stats().await;
    assert_eq!(
        refused(&stats, 0, "bad_request"),
        2,
        "{}",
        stats["listeners"][0]
    );
    let entry = server_entry(&stats, fx.addr("a"));
    assert_eq!(entry["failures"], 0, "{entry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_answer_on_a_keepalive_connection_lets_the_next_request_through() {
    let (_fx, proxy) = proxy_with(
        "trusted_proxies = [\"127.0.0.1\"]\nrequests_per_second = 1\nburst = 1",
        |t| t,
    )
    .await;
    let mut c = raw_from(lo(1), proxy.listen).await;
    let as_client =
        |ip: &str| format!("GET / HTTP/1.1\r\nHost: test\r\nX-Forwarded-For: {ip}\r\n\r\n");
    let mut statuses = Vec::new();
    for ip in ["198.51.100.1", "198.51.100.1", "198.51.100.2"] {
        c.send(as_client(ip).as_bytes()).await;
        statuses.push(read_response(&mut c).await.expect("an answer").0.status);
    }
    assert_eq!(statuses, [200, 429, 200]);
    // Exactly one 429 was counted, not one per re-read of the same head.
    assert_eq!(refused(&proxy.stats().await, 0, "rate"), 1);
}
