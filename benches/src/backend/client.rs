//! A lean protocol-v1 client for measuring, not testing.
//!
//! - [`connect`]: the upgrade (with `TCP_NODELAY`, as browsers do; without
//!   it Nagle's algorithm would hold small frames back and the benchmark
//!   would measure the client's kernel) and the implicit joins.
//! - [`Publisher`]: a publisher on its own thread, paced to a schedule
//!   finer than tokio's 1 ms timer, or as fast as the node takes frames.
//!   Each message's `data` is its send time ([`super::clock::now_ns`]).
//! - [`Tally`]: what a receiver saw in one room: latencies, and whether
//!   offsets came in order, each once.
//!
//! Frames are parsed into a borrowed struct ([`Incoming`]): no allocation
//! per message, so the client stays cheap next to the node it measures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::clock::{self, now_ns};

/// A client WebSocket.
pub type Ws = ringway_tests::WsClient;
/// Its sending half.
pub type WsSink = SplitSink<Ws, Message>;
/// Its receiving half.
pub type WsStream = SplitStream<Ws>;

/// How long a handshake step may take (generous: 1,000 clients connect
/// while the node is busy).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The fields of a server frame the benchmark looks at; the rest is
/// skipped without allocating.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    /// `type`.
    #[serde(rename = "type", borrow)]
    pub kind: &'a str,
    /// `room` (message, joined).
    #[serde(default, borrow)]
    pub room: Option<&'a str>,
    /// `offset` (message, joined).
    #[serde(default)]
    pub offset: Option<u64>,
    /// `data` of a message: the send timestamp the publisher put there.
    #[serde(default)]
    pub data: Option<u64>,
    /// `code` of an error frame.
    #[serde(default, borrow)]
    pub code: Option<&'a str>,
}

/// Parse a text frame; `None` if it is not one the benchmark understands.
pub fn parse(text: &str) -> Option<Incoming<'_>> {
    serde_json::from_str(text).ok()
}

/// Open a WebSocket to `url` with `TCP_NODELAY`, read `welcome` and the two
/// implicit `joined` frames.
pub async fn connect(url: &str) -> anyhow::Result<Ws> {
    let dial = tokio_tungstenite::connect_async_with_config(url, None, true);
    let (mut ws, _) = tokio::time::timeout(STEP_TIMEOUT, dial)
        .await
        .with_context(|| format!("{url}: upgrade timed out"))?
        .with_context(|| format!("{url}: upgrade failed"))?;
    let welcome = next_text(&mut ws).await?;
    if parse(&welcome).is_none_or(|f| f.kind != "welcome") {
        bail!("{url}: expected welcome, got {welcome}");
    }
    for _ in 0..2 {
        let joined = next_text(&mut ws).await?;
        if parse(&joined).is_none_or(|f| f.kind != "joined") {
            bail!("{url}: expected the implicit joins, got {joined}");
        }
    }
    Ok(ws)
}

/// Join `rooms`, in order; the offset each was at (live messages follow it).
pub async fn join(ws: &mut Ws, rooms: &[String]) -> anyhow::Result<Vec<u64>> {
    let mut tops = Vec::with_capacity(rooms.len());
    for room in rooms {
        let frame = serde_json::json!({"type": "join", "room": room}).to_string();
        tokio::time::timeout(STEP_TIMEOUT, ws.send(Message::Text(frame.into())))
            .await
            .context("join: send timed out")??;
        let text = next_text(ws).await?;
        match parse(&text) {
            Some(f) if f.kind == "joined" && f.room == Some(room.as_str()) => {
                tops.push(f.offset.unwrap_or(0));
            }
            _ => bail!("expected joined {room}, got {text}"),
        }
    }
    Ok(tops)
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        let msg = tokio::time::timeout(STEP_TIMEOUT, ws.next())
            .await
            .context("no frame within the step timeout")?
            .context("connection ended")??;
        match msg {
            Message::Text(t) => return Ok(t.as_str().to_owned()),
            Message::Close(c) => bail!("closed by the server: {c:?}"),
            _ => continue,
        }
    }
}

/// The publish frame carrying send time `ns`.
pub fn publish_frame(room: &str, ns: u64) -> String {
    format!(r#"{{"type":"publish","room":"{room}","data":{ns}}}"#)
}

/// How a [`Publisher`] sends.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// `per_sec` messages a second on a fixed schedule for `duration`.
    Rate {
        /// Target rate.
        per_sec: f64,
        /// How long.
        duration: Duration,
    },
    /// `count` messages back to back: as fast as the node reads them.
    Burst {
        /// How many.
        count: u64,
    },
}

/// What a publisher did.
#[derive(Debug, Clone, Default)]
pub struct PublisherReport {
    /// Frames sent.
    pub sent: u64,
    /// Send time of the first, [`super::clock`] ns.
    pub first_send_ns: u64,
    /// Send time of the last.
    pub last_send_ns: u64,
    /// Worst lateness behind the schedule (paced): how far the client
    /// or the node's backpressure kept it from the target rate.
    pub max_lag_ns: u64,
    /// Sends more than 1 ms behind schedule.
    pub late_sends: u64,
    /// Error frames the node answered with, by code (`rate_limited`,
    /// `unavailable` …): each is a message that was not published.
    pub errors: BTreeMap<String, u64>,
}

/// A publisher running on its own OS thread with its own single-threaded
/// runtime, so pacing waits can block precisely without stalling other
/// tasks, and receivers in the main runtime are not delayed by it.
pub struct Publisher {
    go: std_mpsc::Sender<Instant>,
    thread: JoinHandle<anyhow::Result<PublisherReport>>,
}

impl Publisher {
    /// Connect to `url` (a dev-mode `/ws?user=…` URL) and publish into
    /// `room` as `pace` says; returns once connected, ready to
    /// [`Publisher::start`].
    pub async fn connect(url: String, room: String, pace: Pace) -> anyhow::Result<Publisher> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (go, go_rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || publisher_thread(url, room, pace, ready_tx, go_rx))
            .context("spawn the publisher thread")?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(Publisher { go, thread }),
            Ok(Err(e)) => Err(e),
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => bail!("the publisher thread ended before it was ready"),
            },
        }
    }

    /// Begin sending at `at`.
    pub fn start(&self, at: Instant) {
        let _ = self.go.send(at);
    }

    /// Wait for the last send (and for error frames to arrive).
    pub async fn finish(self) -> anyhow::Result<PublisherReport> {
        let thread = self.thread;
        tokio::task::spawn_blocking(move || {
            thread
                .join()
                .unwrap_or_else(|_| bail!("the publisher thread panicked"))
        })
        .await
        .context("join the publisher")?
    }
}

fn publisher_thread(
    url: String,
    room: String,
    pace: Pace,
    ready: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
    go: std_mpsc::Receiver<Instant>,
) -> anyhow::Result<PublisherReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("publisher runtime")?;
    rt.block_on(async move {
        let ws = match connect(&url).await {
            Ok(ws) => ws,
            Err(e) => {
                let _ = ready.send(Err(e));
                bail!("publisher could not connect");
            }
        };
        let (mut sink, stream) = ws.split();
        let _ = ready.send(Ok(()));
        let Ok(start) = go.recv() else {
            bail!("the publisher was never started");
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn(count_errors(stream, stop_rx));
        clock::fine_timer_slack();
        let mut report = send_all(&mut sink, &room, pace, start).await?;
        // Error answers to the last frames are still on their way.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = stop_tx.send(());
        report.errors = reader.await.unwrap_or_default();
        let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
        Ok(report)
    })
}

async fn send_all(
    sink: &mut WsSink,
    room: &str,
    pace: Pace,
    start: Instant,
) -> anyhow::Result<PublisherReport> {
    let mut report = PublisherReport::default();
    let (period_ns, end, count) = match pace {
        Pace::Rate { per_sec, duration } => (1e9 / per_sec, Some(start + duration), u64::MAX),
        Pace::Burst { count } => (0.0, None, count),
    };
    clock::sleep_until(start);
    let mut i: u64 = 0;
    while i < count {
        if let Some(end) = end {
            let due = start + Duration::from_nanos((i as f64 * period_ns) as u64);
            if due >= end {
                break;
            }
            let now = Instant::now();
            if due > now {
                let wait = due - now;
                if wait > Duration::from_millis(3) {
                    // Long waits (low rates) let the reader task run.
                    tokio::time::sleep(wait - Duration::from_millis(2)).await;
                }
                clock::sleep_until(due);
            } else {
                let lag = (now - due).as_nanos() as u64;
                report.max_lag_ns = report.max_lag_ns.max(lag);
                if lag > 1_000_000 {
                    report.late_sends += 1;
                }
            }
        }
        let ns = now_ns();
        sink.send(Message::Text(publish_frame(room, ns).into()))
            .await
            .context("publish: send failed")?;
        if i == 0 {
            report.first_send_ns = ns;
        }
        report.last_send_ns = ns;
        report.sent += 1;
        i += 1;
        if i.is_multiple_of(256) {
            tokio::task::yield_now().await;
        }
    }
    Ok(report)
}

async fn count_errors(
    mut stream: WsStream,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> BTreeMap<String, u64> {
    let mut errors = BTreeMap::new();
    loop {
        let msg = tokio::select! {
            _ = &mut stop => return errors,
            msg = stream.next() => msg,
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                if let Some(f) = parse(t.as_str()).filter(|f| f.kind == "error") {
                    *errors.entry(f.code.unwrap_or("?").to_owned()).or_insert(0) += 1;
                }
            }
            Some(Ok(Message::Close(c))) => {
                let code = c.map_or(0, |c| u16::from(c.code));
                *errors.entry(format!("closed {code}")).or_insert(0) += 1;
                return errors;
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return errors,
        }
    }
}

/// What one receiver saw of one room.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// The room's offset when it was joined: messages start after it.
    pub base: u64,
    /// `(send ns, receive ns)` of every message, in arrival order.
    pub samples: Vec<(u64, u64)>,
    /// Offsets seen, as bits from `base + 1`.
    seen: Vec<u64>,
    /// The highest offset seen so far.
    max_offset: u64,
    /// Messages that arrived after a higher offset (and were new).
    pub out_of_order: u64,
    /// Messages whose offset had been delivered already.
    pub duplicates: u64,
    /// Offsets at or below `base` (should never happen).
    pub stale: u64,
    /// Non-message frames about the room (`joined … recovered:false`
    /// announcing a gap or a new epoch).
    pub announcements: u64,
}

impl Tally {
    /// An empty tally for a room joined at offset `base`, with room for
    /// `expected` messages.
    pub fn new(base: u64, expected: usize) -> Tally {
        Tally {
            base,
            samples: Vec::with_capacity(expected),
            seen: vec![0; expected / 64 + 1],
            max_offset: base,
            ..Tally::default()
        }
    }

    /// Count a `message` at `offset` sent at `sent_ns`, received at `recv_ns`.
    pub fn record(&mut self, offset: u64, sent_ns: u64, recv_ns: u64) {
        self.samples.push((sent_ns, recv_ns));
        if offset <= self.base {
            self.stale += 1;
            return;
        }
        let i = (offset - self.base - 1) as usize;
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        if offset < self.max_offset {
            self.out_of_order += 1;
        }
        self.max_offset = self.max_offset.max(offset);
    }

    /// Distinct offsets received among the first `sent` after `base`.
    pub fn distinct_within(&self, sent: u64) -> u64 {
        let full = (sent / 64) as usize;
        let mut n: u64 = self
            .seen
            .iter()
            .take(full)
            .map(|w| w.count_ones() as u64)
            .sum();
        let rest = sent % 64;
        if rest > 0 {
            if let Some(w) = self.seen.get(full) {
                n += (w & ((1u64 << rest) - 1)).count_ones() as u64;
            }
        }
        n
    }

    /// Distinct offsets received beyond the first `sent` (messages nobody
    /// here published: should be 0).
    pub fn distinct_beyond(&self, sent: u64) -> u64 {
        let all: u64 = self.seen.iter().map(|w| w.count_ones() as u64).sum();
        all - self.distinct_within(sent)
    }

    /// Receive time of the last message, 0 if none.
    pub fn last_recv_ns(&self) -> u64 {
        self.samples.iter().map(|s| s.1).max().unwrap_or(0)
    }
}

/// What a receiver ended with.
#[derive(Debug)]
pub struct Received {
    /// One tally per room, in the order the rooms were given.
    pub tallies: Vec<Tally>,
    /// Why it stopped, if not because it was asked to (a close code from
    /// the node, a broken connection).
    pub ended: Option<String>,
}

/// Read `ws` until `stop` turns true, counting the messages of `rooms`
/// into `tallies` (and `counters`, which others watch for progress).
pub async fn receive(
    mut ws: Ws,
    rooms: Vec<String>,
    mut tallies: Vec<Tally>,
    counters: Arc<[AtomicU64]>,
    mut stop: watch::Receiver<bool>,
) -> Received {
    let mut ended = None;
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.changed() => break,
            msg = ws.next() => msg,
        };
        let recv_ns = now_ns();
        match msg {
            Some(Ok(Message::Text(t))) => {
                let Some(f) = parse(t.as_str()) else { continue };
                let Some(i) = f.room.and_then(|r| rooms.iter().position(|x| x == r)) else {
                    continue;
                };
                match (f.kind, f.offset, f.data) {
                    ("message", Some(offset), Some(sent_ns)) => {
                        tallies[i].record(offset, sent_ns, recv_ns);
                        counters[i].fetch_add(1, Ordering::Relaxed);
                    }
                    _ => tallies[i].announcements += 1,
                }
            }
            Some(Ok(Message::Close(c))) => {
                ended = Some(format!(
                    "closed by the node with {:?}",
                    c.map(|c| u16::from(c.code))
                ));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                ended = Some(format!("websocket error: {e}"));
                break;
            }
            None => {
                ended = Some("connection ended".into());
                break;
            }
        }
    }
    Received { tallies, ended }
}

/// Wait until `count()` reaches `target`; give up when it has not moved
/// for `idle` (messages were lost, a client was closed) or after `cap`.
/// True when the target was reached.
pub async fn wait_for_count(
    count: impl Fn() -> u64,
    target: u64,
    idle: Duration,
    cap: Duration,
) -> bool {
    let started = Instant::now();
    let mut last = count();
    let mut moved = Instant::now();
    loop {
        let now = count();
        if now >= target {
            return true;
        }
        if now != last {
            last = now;
            moved = Instant::now();
        }
        if moved.elapsed() > idle || started.elapsed() > cap {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_frames_parse_without_allocating() {
        let text = r#"{"type":"message","room":"r1","epoch":"e","offset":42,"from":"u","ts":1,"data":123456789}"#;
        let f = parse(text).unwrap();
        assert_eq!(
            (f.kind, f.room, f.offset, f.data),
            ("message", Some("r1"), Some(42), Some(123456789))
        );
        let f =
            parse(r#"{"type":"error","code":"rate_limited","message":"slow \"down\""}"#).unwrap();
        assert_eq!(f.code, Some("rate_limited"));
        let f =
            parse(r#"{"type":"welcome","sid":"s","rooms":["*","@u"],"resumed":false}"#).unwrap();
        assert_eq!(f.kind, "welcome");
    }

    #[test]
    fn tally_counts_order_duplicates_and_losses() {
        let mut t = Tally::new(10, 4);
        for off in [11, 12, 14, 13, 13, 9, 80] {
            t.record(off, 0, 1);
        }
        assert_eq!(t.samples.len(), 7);
        assert_eq!(t.out_of_order, 1, "13 after 14");
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.stale, 1);
        assert_eq!(t.distinct_within(5), 4, "15 was lost");
        assert_eq!(t.distinct_beyond(5), 1, "80 was never sent");
    }
}
