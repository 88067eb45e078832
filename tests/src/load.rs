//! Continuous client load for tests that change the proxy under it (a
//! reload, a binary upgrade): WebSockets that chatter and keep-alive HTTP
//! loops, each reporting how it ended.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::{http_client, WsClient};

/// How a WebSocket client ended, if it did.
#[derive(Debug, Clone)]
pub enum WsEnd {
    /// A close frame arrived: its code, and when (since the run started).
    Closed(Option<u16>, Duration),
    /// Anything else: an error, a missing echo, an end without a close frame.
    Failed(String),
}

/// A tunnel that sends a message every 100 ms and expects it back, until
/// `stop` or the tunnel ends; returns how it ended (None: still fine).
pub async fn chatter(mut ws: WsClient, stop: Arc<AtomicBool>, started: Instant) -> Option<WsEnd> {
    let mut i = 0u64;
    while !stop.load(Relaxed) {
        i += 1;
        let msg = format!("m{i}");
        if let Err(e) = ws.send(Message::Text(msg.clone().into())).await {
            return Some(WsEnd::Failed(format!("send: {e}")));
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Err(_) => return Some(WsEnd::Failed("no echo in 10 s".into())),
                Ok(None) => return Some(WsEnd::Failed("ended without a close frame".into())),
                Ok(Some(Err(e))) => return Some(WsEnd::Failed(format!("error: {e}"))),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Some(WsEnd::Closed(
                        frame.map(|f| u16::from(f.code)),
                        started.elapsed(),
                    ))
                }
                Ok(Some(Ok(Message::Text(t)))) if t.as_str() == msg => break,
                Ok(Some(Ok(_))) => continue,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// What a keep-alive HTTP load saw.
#[derive(Debug, Default)]
pub struct HttpCounts {
    /// Requests that got a 2xx answer.
    pub ok: AtomicU64,
    /// Requests sent again once after an error before any answer (as a
    /// browser retries a GET whose keep-alive connection closed under it).
    pub retried: AtomicU64,
    /// Requests whose connection was refused or could not be opened.
    pub refused: AtomicU64,
    /// Requests that failed otherwise, or got a non-2xx answer.
    pub failed: AtomicU64,
}

impl HttpCounts {
    /// `ok`, `retried`, `refused`, `failed`, for a failure message.
    pub fn summary(&self) -> String {
        format!(
            "ok {}, retried {}, refused {}, failed {}",
            self.ok.load(Relaxed),
            self.retried.load(Relaxed),
            self.refused.load(Relaxed),
            self.failed.load(Relaxed)
        )
    }
}

/// `connections` loops of keep-alive GETs to `base` + `/x?sid=…` until
/// `stop`, each on its own pooled client, counted into the returned
/// [`HttpCounts`]. A GET that fails before any answer is retried once.
pub fn http_load(
    base: String,
    connections: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<HttpCounts>, Vec<JoinHandle<()>>) {
    let counts = Arc::new(HttpCounts::default());
    let tasks = (0..connections)
        .map(|w| {
            let (base, stop, counts) = (base.clone(), stop.clone(), counts.clone());
            tokio::spawn(async move {
                let client = http_client();
                let mut i = 0u64;
                while !stop.load(Relaxed) {
                    i += 1;
                    let url = format!("{base}/x?sid=w{w}-{i}");
                    let mut answer = client.get(&url).send().await;
                    if answer.is_err() {
                        counts.retried.fetch_add(1, Relaxed);
                        answer = client.get(&url).send().await;
                    }
                    let counter = match answer {
                        Ok(r) if r.status().is_success() => &counts.ok,
                        Err(e) if e.is_connect() => &counts.refused,
                        _ => &counts.failed,
                    };
                    counter.fetch_add(1, Relaxed);
                }
            })
        })
        .collect();
    (counts, tasks)
}
