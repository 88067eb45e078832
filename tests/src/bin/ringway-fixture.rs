//! `ringway-fixture`: the upstream server the end-to-end tests route to.
//!
//! One process serves any number of named listeners. Each answers plain
//! HTTP/1.1 (keep-alive) with its name, reflects request headers, answers
//! `/health`, and runs a WebSocket echo that also tells its name;
//! `/hang-up` reads the request and closes without answering, and `/stats`
//! counts what each listener served. Upgrades to `/ws-refuse` get a 403
//! with a body, to `/ws-interim` a `103` before the `101`, to
//! `/ws-no-upgrade` a `101` that names `h2c`. Misbehaving modes for the
//! tests that need them: `--eager-101` writes `101` before reading the
//! request (the trigger of Pingora #946), `--reset` accepts and resets every
//! connection, `--upgrade-status N` answers every upgrade with N.
//!
//! It prints `ready` once every listener is bound.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::BytesMut;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The accept value for the fixed client key `dGhlIHNhbXBsZSBub25jZQ==`
/// (RFC 6455's own example), which eager-101 servers answer blindly.
const FIXED_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

#[derive(Debug, Parser)]
struct Opts {
    /// NAME=ADDR, repeatable.
    #[arg(long = "server", required = true)]
    servers: Vec<String>,
    /// Write `101 Switching Protocols` on accept, before reading anything.
    #[arg(long)]
    eager_101: bool,
    /// Accept each connection and reset it at once.
    #[arg(long)]
    reset: bool,
    /// Status of `GET /health`.
    #[arg(long, default_value_t = 200)]
    health_status: u16,
    /// Answer every WebSocket upgrade with this status instead of 101
    /// (503: a node shutting down).
    #[arg(long)]
    upgrade_status: Option<u16>,
}

/// One listener's identity and counters.
struct Listener {
    name: String,
    eager_101: bool,
    reset: bool,
    health_status: u16,
    upgrade_status: Option<u16>,
    http: AtomicU64,
    ws: AtomicU64,
    /// Requests to `/hang-up`, each read whole and answered by closing.
    hangups: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = Opts::parse();
    for spec in &opts.servers {
        let (name, addr) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--server wants NAME=ADDR, got {spec:?}"))?;
        let addr: SocketAddr = addr.parse()?;
        let socket = TcpListener::bind(addr).await?;
        let me = Arc::new(Listener {
            name: name.to_owned(),
            eager_101: opts.eager_101,
            reset: opts.reset,
            health_status: opts.health_status,
            upgrade_status: opts.upgrade_status,
            http: AtomicU64::new(0),
            ws: AtomicU64::new(0),
            hangups: AtomicU64::new(0),
        });
        tokio::spawn(async move {
            loop {
                if let Ok((stream, _)) = socket.accept().await {
                    let me = me.clone();
                    tokio::spawn(async move {
                        let _ = serve(stream, me).await;
                    });
                }
            }
        });
    }
    println!("ready");
    std::future::pending::<()>().await;
    Ok(())
}

/// A parsed request head.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn serve(mut stream: TcpStream, me: Arc<Listener>) -> anyhow::Result<()> {
    if me.reset {
        stream.set_zero_linger()?;
        drop(stream);
        return Ok(());
    }
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(4096);
    if me.eager_101 {
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {FIXED_ACCEPT}\r\nX-Served-By: {}\r\n\r\n",
            me.name
        );
        stream.write_all(head.as_bytes()).await?;
        if read_head(&mut stream, &mut buf).await?.is_none() {
            return Ok(());
        }
        me.ws.fetch_add(1, Relaxed);
        return echo(stream, buf, &me).await;
    }
    loop {
        let Some(head) = read_head(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let length: usize = head
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < length {
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let _ = buf.split_to(length);
        let is_ws = head
            .header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if is_ws {
            if let Some(status) = me.upgrade_status {
                me.http.fetch_add(1, Relaxed);
                let reply = format!(
                    "HTTP/1.1 {status} Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nX-Served-By: {}\r\n\r\n",
                    me.name
                );
                stream.write_all(reply.as_bytes()).await?;
                return Ok(());
            }
            let path = head.target.split('?').next().unwrap_or("");
            if path == "/ws-refuse" {
                // A refusal with a body, keeping the connection open: the
                // proxy must relay it and close the client's connection.
                let body = "no websocket for you";
                let reply = format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nX-Served-By: {}\r\n\r\n{body}",
                    body.len(),
                    me.name
                );
                stream.write_all(reply.as_bytes()).await?;
                continue;
            }
            if path == "/ws-interim" {
                // Interim answers before the final one (RFC 9110 §15.2).
                stream
                    .write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n")
                    .await?;
            }
            let upgrade = if path == "/ws-no-upgrade" {
                "h2c"
            } else {
                "websocket"
            };
            let key = head.header("sec-websocket-key").unwrap_or_default();
            let reply = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: {upgrade}\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\nX-Served-By: {}\r\n\r\n",
                derive_accept_key(key.as_bytes()),
                me.name
            );
            stream.write_all(reply.as_bytes()).await?;
            me.ws.fetch_add(1, Relaxed);
            return echo(stream, buf, &me).await;
        }
        if head.target.starts_with("/hang-up") {
            // The request reached us; no answer comes back.
            me.hangups.fetch_add(1, Relaxed);
            return Ok(());
        }
        me.http.fetch_add(1, Relaxed);
        let close = head
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (status, content_type, body) = respond(&head, &me);
        let reply = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nX-Served-By: {}\r\n{}\r\n",
            if status < 400 { "OK" } else { "Error" },
            body.len(),
            me.name,
            if close { "Connection: close\r\n" } else { "" },
        );
        stream.write_all(reply.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        if close {
            return Ok(());
        }
    }
}

fn respond(head: &Head, me: &Listener) -> (u16, &'static str, String) {
    let path = head.target.split('?').next().unwrap_or("");
    match path {
        "/health" => (me.health_status, "text/plain", "ok".to_owned()),
        "/echo-headers" => {
            let mut map = serde_json::Map::new();
            for (k, v) in &head.headers {
                let k = k.to_ascii_lowercase();
                let joined = match map.get(&k).and_then(|x| x.as_str()) {
                    Some(prev) => format!("{prev}, {v}"),
                    None => v.clone(),
                };
                map.insert(k, joined.into());
            }
            map.insert("_path".into(), head.target.clone().into());
            map.insert("_method".into(), head.method.clone().into());
            (
                200,
                "application/json",
                serde_json::Value::Object(map).to_string(),
            )
        }
        "/stats" => {
            let doc = serde_json::json!({ &me.name: {
                "http": me.http.load(Relaxed),
                "ws": me.ws.load(Relaxed),
                "hangups": me.hangups.load(Relaxed),
            } });
            (200, "application/json", doc.to_string())
        }
        _ => (200, "text/plain", me.name.clone()),
    }
}

/// Read one request head; `None` on a clean EOF between requests.
async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut) -> anyhow::Result<Option<Head>> {
    loop {
        {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(len) = req.parse(buf)? {
                let head = Head {
                    method: req.method.unwrap_or("").to_owned(),
                    target: req.path.unwrap_or("").to_owned(),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                };
                let _ = buf.split_to(len);
                return Ok(Some(head));
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// The WebSocket echo: `whoami` gets the listener's name, anything else
/// comes back unchanged. Bytes read past the handshake are replayed first.
async fn echo(stream: TcpStream, leftover: BytesMut, me: &Listener) -> anyhow::Result<()> {
    let mut ws =
        WebSocketStream::from_partially_read(stream, leftover.to_vec(), Role::Server, None).await;
    while let Some(msg) = ws.next().await {
        match msg? {
            Message::Text(t) if t == "whoami" => {
                ws.send(Message::Text(me.name.clone().into())).await?
            }
            m @ (Message::Text(_) | Message::Binary(_)) => ws.send(m).await?,
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}
