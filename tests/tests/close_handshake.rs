//! RFC 6455 close handshake on every path, checked byte by byte by a
//! strict client: a close the client begins is answered with a close
//! frame and the node then closes TCP; a close the node begins (a
//! superseded session, shutdown) is a close frame the client answers, and
//! the node then closes TCP. Directly and through the proxy.

use std::net::SocketAddr;
use std::time::Duration;

use ringway_tests::backend::{Backend, Peer, RedisServer};
use ringway_tests::configs::ProxyConfig;
use ringway_tests::strict_ws::StrictWs;
use ringway_tests::Proxy;

/// A strict client on `addr`, past `welcome` and the two implicit joins.
async fn connected(addr: SocketAddr, query: &str) -> StrictWs {
    let mut ws = StrictWs::connect(addr, &format!("/ws?{query}"))
        .await
        .unwrap_or_else(|e| panic!("{addr}: {e}"));
    for want in ["welcome", "joined", "joined"] {
        let frame = ws.next_text().await.expect("a frame");
        assert!(frame.contains(&format!("\"type\":\"{want}\"")), "{frame}");
    }
    ws
}

/// Every path through `entry`: client close, and the node closing with
/// 4001 when the session is resumed elsewhere.
async fn both_directions(entry: SocketAddr, tag: &str) {
    let ws = connected(entry, &format!("sid={tag}-1&user=u1")).await;
    let answered = ws.close(1000).await.expect("client-initiated close");
    assert_eq!(answered, Some(1000), "the close code is echoed");

    let ws = connected(entry, &format!("sid={tag}-2&user=u2")).await;
    let _again = Peer::connect(&format!("ws://{entry}/ws?sid={tag}-2&user=u2"))
        .await
        .unwrap();
    let code = ws.closed_by_server().await.expect("server-initiated close");
    assert_eq!(code, Some(4001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closes_are_clean_both_ways_directly_and_through_the_proxy() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let env = [("REDIS_URL", url.as_str())];
    let node = Backend::start("close-a", &env).await;
    both_directions(node.addr, "direct").await;

    let proxy = Proxy::start(&ProxyConfig::over([node.addr]).toml()).await;
    both_directions(proxy.listen, "proxied").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_shutting_down_closes_with_1001_cleanly_directly_and_through_the_proxy() {
    let node = Backend::start("close-b", &[]).await;
    let proxy = Proxy::start(&ProxyConfig::over([node.addr]).toml()).await;
    let direct = connected(node.addr, "sid=down-1&user=d1").await;
    let proxied = connected(proxy.listen, "sid=down-2&user=d2").await;
    node.child.signal(libc::SIGTERM);
    let (a, b) = tokio::join!(direct.closed_by_server(), proxied.closed_by_server());
    assert_eq!(a.expect("direct"), Some(1001));
    assert_eq!(b.expect("through the proxy"), Some(1001));
    // The node itself stops once its clients are gone.
    let mut node = node;
    let stopped = ringway_tests::backend::eventually(Duration::from_secs(10), || {
        let exited = node.child.try_wait().is_some();
        async move { exited }
    })
    .await;
    assert!(stopped, "the node did not exit after SIGTERM");
}
