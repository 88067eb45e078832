//! The chaos run's clients: they connect through the proxy from their own
//! loopback source address, keep their `sid` across every reconnect, and
//! do what a careful application does — a subscriber rejoins with the last
//! position it saw, a publisher sends a failed or unanswered publish again
//! with the same `id` until it is acked.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::verdict::{Pos, Seen};

/// How long a client waits for anything before it calls the link dead.
const SILENCE: Duration = Duration::from_secs(15);
/// Pause before a reconnect or a retry.
const BACKOFF: Duration = Duration::from_millis(150);

type Ws = WebSocketStream<TcpStream>;

/// Where clients connect and who they are.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The proxy.
    pub proxy: SocketAddr,
    /// The loopback address to connect from.
    pub source: IpAddr,
    /// The session id, kept for the client's life.
    pub sid: String,
    /// The user.
    pub user: String,
    /// The room it reads or writes.
    pub room: String,
}

async fn open(who: &Identity) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(who.source, 0))
        .map_err(|e| format!("bind {}: {e}", who.source))?;
    let tcp = tokio::time::timeout(Duration::from_secs(5), socket.connect(who.proxy))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let url = format!("ws://{}/ws?sid={}&user={}", who.proxy, who.sid, who.user);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async(url, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// The next JSON frame, or why there is none.
async fn next_frame(ws: &mut Ws) -> Result<Value, String> {
    loop {
        match tokio::time::timeout(SILENCE, ws.next()).await {
            Err(_) => return Err("silent".into()),
            Ok(None) => return Err("closed".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(Message::Text(t)))) => {
                return serde_json::from_str(&t).map_err(|e| format!("{t}: {e}"))
            }
            Ok(Some(Ok(Message::Close(c)))) => return Err(format!("close {c:?}")),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

fn position(f: &Value) -> Pos {
    (
        f["epoch"].as_str().unwrap_or_default().to_owned(),
        f["offset"].as_u64().unwrap_or_default(),
    )
}

/// Read `who.room` until `stop`; everything seen, in order. `progress`
/// holds the last position reached, for the caller to see catching up.
pub async fn subscribe(
    who: Identity,
    mut stop: watch::Receiver<bool>,
    progress: Arc<Mutex<Option<Pos>>>,
) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut last: Option<Pos> = None;
    while !*stop.borrow() {
        let mut ws = match open(&who).await {
            Ok(ws) => ws,
            Err(_) => {
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        let join = |last: &Option<Pos>| {
            let mut f = json!({"type": "join", "room": who.room, "id": "join"});
            if let Some((epoch, offset)) = last {
                f["since"] = json!({"epoch": epoch, "offset": offset});
            }
            Message::Text(f.to_string().into())
        };
        if ws.send(join(&last)).await.is_err() {
            continue;
        }
        let mut joining = true;
        loop {
            let frame = tokio::select! {
                _ = stop.changed() => break,
                f = next_frame(&mut ws) => f,
            };
            let Ok(f) = frame else { break };
            if f["room"] != who.room.as_str() && f["type"] != "error" {
                continue;
            }
            match f["type"].as_str() {
                Some("joined") if f["reset"] == true => {
                    seen.push(Seen::Reset(position(&f)));
                    last = Some(position(&f));
                }
                Some("joined") if joining => {
                    joining = false;
                    match (&last, f["recovered"] == true) {
                        (None, _) => seen.push(Seen::Start(position(&f))),
                        (Some(_), false) => seen.push(Seen::Reset(position(&f))),
                        (Some(_), true) => continue, // the replay follows
                    }
                    last = Some(position(&f));
                }
                Some("message") => {
                    let n = f["data"]["n"].as_u64().unwrap_or(0);
                    seen.push(Seen::Message(position(&f), n));
                    last = Some(position(&f));
                }
                Some("error") if joining && f["id"] == "join" => {
                    tokio::time::sleep(BACKOFF).await;
                    if ws.send(join(&last)).await.is_err() {
                        break;
                    }
                    continue;
                }
                _ => continue,
            }
            *progress.lock().unwrap_or_else(|p| p.into_inner()) = last.clone();
        }
        let _ = ws.close(None).await;
    }
    seen
}

/// Publish `{"n": 1, 2, …}` into `who.room`, one every `every`, each with
/// `id` = its number, until `stop`; the last publish is finished (acked)
/// first. Every ack: `(n, position)`.
pub async fn publish(
    who: Identity,
    every: Duration,
    stop: watch::Receiver<bool>,
) -> Vec<(u64, Pos)> {
    let mut acks = Vec::new();
    let mut conn: Option<Ws> = None;
    let mut n = 1u64;
    let mut sent_once = false;
    loop {
        if *stop.borrow() && !sent_once {
            break;
        }
        let ws = match &mut conn {
            Some(ws) => ws,
            None => match open(&who).await {
                Ok(ws) => conn.insert(ws),
                Err(_) => {
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            },
        };
        let frame = json!({"type": "publish", "room": who.room, "data": {"n": n}, "id": n});
        if ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .is_err()
        {
            conn = None;
            continue;
        }
        sent_once = true;
        let answer = loop {
            match next_frame(ws).await {
                Ok(f) if f["id"] == n && (f["type"] == "ack" || f["type"] == "error") => {
                    break Ok(f)
                }
                Ok(_) => continue,
                Err(e) => break Err(e),
            }
        };
        match answer {
            Ok(f) if f["type"] == "ack" => {
                acks.push((n, position(&f)));
                n += 1;
                sent_once = false;
                tokio::time::sleep(every).await;
            }
            Ok(_) => tokio::time::sleep(BACKOFF).await, // unavailable: same id again
            Err(_) => {
                conn = None;
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
    acks
}
