//! The tunnel's rules at the edge, byte by byte: early bytes sent with the
//! upgrade request reach the server, interim answers are relayed, a 101
//! that is not WebSocket is a 502, a refused upgrade closes the connection,
//! `Connection` cannot strip end-to-end fields, an upgrade cannot carry a
//! body, and a 503 from a node that is leaving is retried on the next one.

use std::time::Duration;

use ringway_tests::configs::ProxyConfig;
use ringway_tests::raw::{client_frame, upgrade_request, RawClient};
use ringway_tests::sticky::key_for;
use ringway_tests::{Fixture, FixtureOpts, Proxy};

async fn one_server() -> (Fixture, Proxy) {
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let proxy = Proxy::start(&ProxyConfig::over([fx.addr("a")]).toml()).await;
    (fx, proxy)
}

#[tokio::test]
async fn bytes_sent_with_the_upgrade_request_reach_the_server() {
    let (_fx, proxy) = one_server().await;
    let mut c = RawClient::connect(proxy.listen).await;
    let mut bytes = upgrade_request("/ws", "").into_bytes();
    bytes.extend(client_frame(1, b"early bird"));
    c.send(&bytes).await;
    let head = c.read_head().await.unwrap();
    assert_eq!(head.status, 101);
    let (opcode, payload) = c.read_frame().await.unwrap();
    assert_eq!((opcode, payload.as_slice()), (1, &b"early bird"[..]));
}

#[tokio::test]
async fn interim_answers_are_relayed_and_the_tunnel_waits_for_the_101() {
    let (_fx, proxy) = one_server().await;
    let mut c = RawClient::connect(proxy.listen).await;
    c.send(upgrade_request("/ws-interim", "").as_bytes()).await;
    let interim = c.read_head().await.unwrap();
    assert_eq!(interim.status, 103);
    assert_eq!(interim.header("link"), Some("</app.css>; rel=preload"));
    let head = c.read_head().await.unwrap();
    assert_eq!(head.status, 101);
    c.send(&client_frame(1, b"after hints")).await;
    let (_, payload) = c.read_frame().await.unwrap();
    assert_eq!(payload, b"after hints");
}

#[tokio::test]
async fn a_101_that_is_not_websocket_is_a_502() {
    let (_fx, proxy) = one_server().await;
    let mut c = RawClient::connect(proxy.listen).await;
    c.send(upgrade_request("/ws-no-upgrade", "").as_bytes())
        .await;
    let head = c.read_head().await.unwrap();
    assert_eq!(head.status, 502);
    assert!(c.closes_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_refused_upgrade_is_relayed_then_the_connection_closes() {
    let (_fx, proxy) = one_server().await;
    let mut c = RawClient::connect(proxy.listen).await;
    // A second request pipelined behind the upgrade must never be read.
    let mut bytes = upgrade_request("/ws-refuse", "").into_bytes();
    bytes.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n");
    c.send(&bytes).await;
    let head = c.read_head().await.unwrap();
    assert_eq!(head.status, 403);
    let body = c.read_body(20).await.unwrap();
    assert_eq!(body, b"no websocket for you");
    assert!(
        c.closes_within(Duration::from_secs(5)).await,
        "connection stayed open"
    );
    assert!(
        c.buf.is_empty(),
        "a second answer came: {:?}",
        String::from_utf8_lossy(&c.buf)
    );
}

#[tokio::test]
async fn connection_cannot_strip_end_to_end_fields() {
    let (_fx, proxy) = one_server().await;
    for nominated in ["Host", "X-Forwarded-For", "Sec-WebSocket-Key"] {
        let mut c = RawClient::connect(proxy.listen).await;
        let req = upgrade_request("/ws", "").replace(
            "Connection: Upgrade",
            &format!("Connection: Upgrade, {nominated}"),
        );
        c.send(req.as_bytes()).await;
        let head = c.read_head().await.unwrap();
        assert_eq!(head.status, 400, "Connection naming {nominated}");
    }
}

#[tokio::test]
async fn an_upgrade_with_a_body_is_refused_and_no_server_is_blamed() {
    let (fx, proxy) = one_server().await;
    let mut c = RawClient::connect(proxy.listen).await;
    c.send(upgrade_request("/ws", "Content-Length: 5\r\n").as_bytes())
        .await;
    let head = c.read_head().await.unwrap();
    assert_eq!(head.status, 400);
    let stats = proxy.stats().await;
    let server = &stats["upstreams"]["app"]["servers"][0];
    assert_eq!(
        server["requests_total"], 0,
        "the server was contacted: {server}"
    );
    assert_eq!(server["state"], "up");
    drop(fx);
}

#[tokio::test]
async fn an_upgrade_answered_503_goes_to_the_next_server() {
    let leaving = Fixture::start(
        &["leaving"],
        FixtureOpts {
            upgrade_status: Some(503),
            ..FixtureOpts::default()
        },
    )
    .await;
    let staying = Fixture::start(&["staying"], FixtureOpts::default()).await;
    let servers = [leaving.addr("leaving"), staying.addr("staying")];
    let proxy = Proxy::start(&ProxyConfig::over(servers).toml()).await;
    // A key whose Ketama server is the one answering 503.
    let key = key_for(&servers, servers[0]);
    let url = format!("ws://{}/ws?sid={key}", proxy.listen);
    let mut ws = ringway_tests::ws_connect(&url, &[])
        .await
        .expect("the client never sees the 503");
    assert_eq!(ringway_tests::ws_whoami(&mut ws).await, "staying");
    let stats = proxy.stats().await;
    let first = stats["upstreams"]["app"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["addr"] == servers[0].to_string())
        .cloned()
        .unwrap();
    assert_eq!(first["retries"], 1, "{first}");
    assert_eq!(first["responses"]["5xx"], 1, "{first}");
}
