//! The skeleton node's contracts, over real sockets on loopback: `/health`
//! JSON and headers, the `/ws` welcome / ping / echo, and graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::header::HeaderMap;
use ringway_backend::AppState;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Node {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Node {
    async fn start(worker_id: &str) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let state = AppState::new(worker_id);
        let task = tokio::spawn(ringway_backend::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Node {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{}", self.addr, query)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("node stops in time")
            .unwrap()
            .unwrap();
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    match next_msg(ws).await {
        Message::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn next_msg(ws: &mut Ws) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a frame in time")
        .expect("stream open")
        .expect("frame ok")
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
        .to_owned()
}

async fn health(node: &Node) -> (HeaderMap, Value) {
    let resp = reqwest::get(node.url("/health")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    (headers, resp.json().await.unwrap())
}

#[tokio::test]
async fn health_json_and_headers() {
    let node = Node::start("node-a").await;
    let (resp, body) = health(&node).await;
    assert_eq!(
        body,
        serde_json::json!({
            "status": "healthy",
            "websocket": {
                "worker_id": "node-a",
                "session_store_healthy": true,
                "message_broker_healthy": true,
                "local_connections": 0,
                "total_sessions": 0,
                "total_workers": 1
            },
            "redis": {"status": "not_configured", "latency_ms": null}
        })
    );
    assert_eq!(header(&resp, "x-websocket-worker-id"), "node-a");
    assert_eq!(header(&resp, "x-websocket-local-connections"), "0");
    assert_eq!(header(&resp, "x-websocket-total-sessions"), "0");
    assert_eq!(header(&resp, "x-websocket-total-workers"), "1");
    assert!(resp
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("application/json"));

    // Every response, a 404 included, names the node.
    let missing = reqwest::get(node.url("/nope")).await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(header(missing.headers(), "x-websocket-worker-id"), "node-a");
    node.stop().await;
}

#[tokio::test]
async fn websocket_welcome_ping_echo_and_counts() {
    let node = Node::start("node-b").await;

    let (mut ws, resp) = connect_async(node.ws_url("")).await.unwrap();
    assert_eq!(
        resp.headers().get("x-websocket-worker-id").unwrap(),
        "node-b"
    );
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["worker_id"], "node-b");
    assert_eq!(welcome["user"], Value::Null);
    assert_eq!(welcome["resumed"], false);
    let sid = welcome["sid"].as_str().unwrap();
    assert!(uuid_v4(sid), "sid {sid} is not a UUID v4");

    ws.send(Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut ws).await,
        serde_json::json!({"type": "pong"})
    );

    let text = r#"{"type":"whatever","n":1}  "#;
    ws.send(Message::Text(text.into())).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Message::Text(text.into()));
    ws.send(Message::Text("plain words".into())).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Message::Text("plain words".into()));

    // A given sid is kept.
    let (mut ws2, _) = connect_async(node.ws_url("?sid=demo")).await.unwrap();
    let welcome = next_json(&mut ws2).await;
    assert_eq!(welcome["sid"], "demo");
    assert_eq!(welcome["resumed"], false);

    let (resp, body) = health(&node).await;
    assert_eq!(body["websocket"]["local_connections"], 2);
    assert_eq!(body["websocket"]["total_sessions"], 2);
    assert_eq!(header(&resp, "x-websocket-local-connections"), "2");
    assert_eq!(header(&resp, "x-websocket-total-sessions"), "2");

    ws2.close(None).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = health(&node).await;
        if body["websocket"]["local_connections"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "count never fell");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A bad sid is refused before the upgrade.
    let bad = connect_async(node.ws_url("?sid=a%20b")).await;
    assert!(bad.is_err());

    // Shutdown closes live sockets with 1001.
    let stopping = tokio::spawn(node.stop());
    loop {
        match next_msg(&mut ws).await {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1001);
                break;
            }
            Message::Close(None) => panic!("close without a code"),
            _ => continue,
        }
    }
    drop(ws);
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
}

fn uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
        && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}
