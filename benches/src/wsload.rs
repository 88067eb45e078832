//! `ringway-load ws-echo` and `ws-idle`: WebSocket load through a proxy to
//! an echo server.
//!
//! - **echo** ([`echo`]): `connections` WebSockets are opened first (at
//!   most `ramp` handshakes in flight; each handshake timed). Then every
//!   connection sends `messages` binary messages of `size` bytes, one in
//!   flight, and checks each echo byte for byte (the first 8 bytes carry
//!   the connection and sequence number, so a misrouted or reordered echo
//!   shows as a mismatch). msgs/s = echoes ÷ (start of the message phase →
//!   last echo); the CPU window is the same span.
//! - **idle** ([`idle`]): read a process' VmRSS (with its descendants if
//!   asked), open `connections` WebSockets (source addresses rotating),
//!   hold them silent for `hold`, read VmRSS again, echo-check an evenly
//!   spread sample, close everything, and read VmRSS once more. The cost
//!   of a held connection is (held − before) ÷ opened.
//!
//! Connection `i` carries sticky key `<prefix><i>` (see [`crate::dial`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::dial::{self, Target, Ws};
use crate::httpload::snapshot;
use crate::procs::{self, CpuShare, Watched};
use crate::stats::{self, Summary};

/// How many connections to open, from where, and how fast.
#[derive(Debug, Clone)]
pub struct OpenSpec {
    /// The WebSocket URL.
    pub target: Target,
    /// Connections to open.
    pub connections: usize,
    /// Handshakes in flight at most.
    pub ramp: usize,
    /// Source addresses to rotate over (empty: the kernel's choice).
    pub sources: Vec<IpAddr>,
    /// Sticky keys are `<prefix><connection>`.
    pub key_prefix: String,
    /// Limit of each step (connect, upgrade, one echo).
    pub timeout: Duration,
}

/// What opening the connections gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Opened {
    /// Connections asked for.
    pub requested: usize,
    /// Upgrades that succeeded.
    pub opened: usize,
    /// Upgrades that failed.
    pub failed: usize,
    /// The first few distinct failure messages.
    pub failure_samples: Vec<String>,
    /// From the first connect to the last upgrade, seconds.
    pub secs: f64,
    /// Connect + upgrade time of each successful connection, ms.
    pub handshake: Summary,
}

/// Open every connection of `spec`: the open ones (with their index),
/// and the figures.
pub async fn open_all(spec: &OpenSpec) -> (Vec<(usize, Ws)>, Opened) {
    let gate = Arc::new(Semaphore::new(spec.ramp.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..spec.connections {
        let gate = gate.clone();
        let spec = spec.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore open");
            let key = dial::sticky(&spec.key_prefix, i);
            let t0 = Instant::now();
            let src = dial::source_for(&spec.sources, i);
            let ws = dial::ws_open(&spec.target, src, &key, spec.timeout).await;
            (i, ws.map(|ws| (ws, t0.elapsed().as_nanos() as u64)))
        });
    }
    let mut open = Vec::with_capacity(spec.connections);
    let mut handshakes = Vec::with_capacity(spec.connections);
    let mut failed = 0;
    let mut failure_samples: Vec<String> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((i, Ok((ws, ns)))) => {
                open.push((i, ws));
                handshakes.push(ns);
            }
            Ok((_, Err(e))) => {
                failed += 1;
                let e = format!("{e:#}");
                if failure_samples.len() < 5 && !failure_samples.contains(&e) {
                    failure_samples.push(e);
                }
            }
            Err(e) => {
                failed += 1;
                failure_samples.push(format!("task: {e}"));
            }
        }
    }
    open.sort_by_key(|(i, _)| *i);
    let figures = Opened {
        requested: spec.connections,
        opened: open.len(),
        failed,
        failure_samples,
        secs: started.elapsed().as_secs_f64(),
        handshake: stats::summarize(handshakes),
    };
    (open, figures)
}

/// What an echo run does.
#[derive(Debug, Clone)]
pub struct EchoSpec {
    /// Where and how many.
    pub open: OpenSpec,
    /// Messages per connection.
    pub messages: usize,
    /// Bytes per message (at least 8).
    pub size: usize,
    /// Processes whose CPU use over the message phase is reported.
    pub watched: Vec<Watched>,
}

/// The figures of one echo run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EchoResult {
    /// The connections.
    pub opened: Opened,
    /// Messages per connection asked for.
    pub messages_per_connection: usize,
    /// Bytes per message.
    pub size: usize,
    /// Messages sent.
    pub sent: u64,
    /// Echoes received intact.
    pub echoed: u64,
    /// Echoes that differed from what was sent.
    pub mismatches: u64,
    /// Connections that ended in an error (send, receive, close, timeout).
    pub errors: u64,
    /// The first few distinct error messages.
    pub error_samples: Vec<String>,
    /// The message phase, seconds.
    pub window_secs: f64,
    /// `echoed` / `window_secs`.
    pub messages_per_sec: f64,
    /// Round-trip time of each intact echo, ms.
    pub rtt: Summary,
    /// CPU use over the message phase, % of one core.
    pub cpu: Vec<CpuShare>,
}

struct EchoTally {
    rtts: Vec<u64>,
    sent: u64,
    mismatches: u64,
    error: Option<String>,
}

/// Run an echo benchmark.
pub async fn echo(spec: EchoSpec) -> anyhow::Result<EchoResult> {
    let size = spec.size.max(8);
    let (conns, opened) = open_all(&spec.open).await;
    anyhow::ensure!(
        !conns.is_empty(),
        "no WebSocket opened: {:?}",
        opened.failure_samples
    );
    let before = snapshot(spec.watched.clone()).await;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, ws) in conns {
        tasks.spawn(echo_connection(
            ws,
            i,
            spec.messages,
            size,
            spec.open.timeout,
        ));
    }
    let mut rtts = Vec::with_capacity(opened.opened * spec.messages);
    let (mut sent, mut mismatches, mut errors) = (0, 0, 0);
    let mut error_samples: Vec<String> = Vec::new();
    let mut open_again = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (t, ws) = done.context("echo task")?;
        rtts.extend(t.rtts);
        sent += t.sent;
        mismatches += t.mismatches;
        if let Some(e) = t.error {
            errors += 1;
            if error_samples.len() < 5 && !error_samples.contains(&e) {
                error_samples.push(e);
            }
        }
        open_again.extend(ws);
    }
    let window = started.elapsed();
    let after = snapshot(spec.watched).await;
    close_all(open_again).await;
    let echoed = rtts.len() as u64;
    Ok(EchoResult {
        opened,
        messages_per_connection: spec.messages,
        size,
        sent,
        echoed,
        mismatches,
        errors,
        error_samples,
        window_secs: window.as_secs_f64(),
        messages_per_sec: echoed as f64 / window.as_secs_f64().max(1e-9),
        rtt: stats::summarize(rtts),
        cpu: procs::merged_shares(&before, &after),
    })
}

async fn echo_connection(
    mut ws: Ws,
    i: usize,
    messages: usize,
    size: usize,
    step: Duration,
) -> (EchoTally, Option<Ws>) {
    let mut tally = EchoTally {
        rtts: Vec::with_capacity(messages),
        sent: 0,
        mismatches: 0,
        error: None,
    };
    let mut payload = vec![b'x'; size];
    payload[..4].copy_from_slice(&(i as u32).to_be_bytes());
    for seq in 0..messages {
        payload[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        let t0 = Instant::now();
        let round = async {
            ws.send(Message::Binary(payload.clone().into()))
                .await
                .map_err(|e| format!("send: {e}"))?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => return Ok(b[..] == payload[..]),
                    Some(Ok(Message::Text(_))) => return Ok(false),
                    Some(Ok(Message::Close(c))) => return Err(format!("closed: {c:?}")),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(format!("receive: {e}")),
                    None => return Err("connection ended".to_owned()),
                }
            }
        };
        tally.sent += 1;
        match tokio::time::timeout(step, round).await {
            Ok(Ok(true)) => tally.rtts.push(t0.elapsed().as_nanos() as u64),
            Ok(Ok(false)) => tally.mismatches += 1,
            Ok(Err(e)) => {
                tally.error = Some(e);
                return (tally, None);
            }
            Err(_) => {
                tally.error = Some("echo timed out".to_owned());
                return (tally, None);
            }
        }
    }
    (tally, Some(ws))
}

/// Send a close frame on every connection (at most 2 s in all) and drop
/// them.
pub async fn close_all(conns: Vec<Ws>) {
    let mut tasks = tokio::task::JoinSet::new();
    for mut ws in conns {
        tasks.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
}

/// What an idle-hold run does.
#[derive(Debug, Clone)]
pub struct IdleSpec {
    /// Where and how many.
    pub open: OpenSpec,
    /// How long the connections are held after the last one opened.
    pub hold: Duration,
    /// The process whose memory is read, if any.
    pub rss_pid: Option<u32>,
    /// Add the VmRSS of its descendants (nginx' workers).
    pub rss_children: bool,
    /// Connections echo-checked after the hold.
    pub sample: usize,
    /// Wait after closing before the last memory reading.
    pub after_close: Duration,
}

/// The figures of one idle-hold run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleResult {
    /// The connections.
    pub opened: Opened,
    /// Hold, seconds.
    pub hold_secs: f64,
    /// The process measured.
    pub rss_pid: Option<u32>,
    /// Whether its descendants were counted.
    pub rss_children: bool,
    /// VmRSS before the first connection, KiB.
    pub rss_before_kib: Option<u64>,
    /// VmRSS right after the last upgrade, KiB.
    pub rss_opened_kib: Option<u64>,
    /// VmRSS at the end of the hold, KiB.
    pub rss_held_kib: Option<u64>,
    /// VmRSS after closing everything, KiB.
    pub rss_after_close_kib: Option<u64>,
    /// (held − before) ÷ opened, KiB.
    pub kib_per_connection: Option<f64>,
    /// Connections echo-checked after the hold.
    pub sample_checked: usize,
    /// Of those, how many echoed correctly.
    pub sample_ok: usize,
    /// The first few distinct echo-check failures.
    pub sample_errors: Vec<String>,
}

/// Run an idle-hold benchmark.
pub async fn idle(spec: IdleSpec) -> anyhow::Result<IdleResult> {
    let rss = |pid: Option<u32>| {
        pid.and_then(|p| {
            if spec.rss_children {
                procs::tree_rss_kib(p)
            } else {
                procs::vm_rss_kib(p)
            }
        })
    };
    let rss_before_kib = rss(spec.rss_pid);
    let (mut conns, opened) = open_all(&spec.open).await;
    let rss_opened_kib = rss(spec.rss_pid);
    tokio::time::sleep(spec.hold).await;
    let rss_held_kib = rss(spec.rss_pid);

    let mut sample_errors: Vec<String> = Vec::new();
    let mut sample_ok = 0;
    let step = (conns.len() / spec.sample.max(1)).max(1);
    let mut checked = 0;
    for (i, ws) in conns.iter_mut().step_by(step).take(spec.sample) {
        checked += 1;
        let text = format!("check-{i}");
        let round = async {
            ws.send(Message::Text(text.clone().into()))
                .await
                .map_err(|e| format!("send: {e}"))?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.as_str() == text => return Ok(()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(m)) => return Err(format!("unexpected {m:?}")),
                    Some(Err(e)) => return Err(format!("receive: {e}")),
                    None => return Err("connection ended".to_owned()),
                }
            }
        };
        match tokio::time::timeout(spec.open.timeout, round).await {
            Ok(Ok(())) => sample_ok += 1,
            Ok(Err(e)) if sample_errors.len() < 5 => sample_errors.push(e),
            Err(_) if sample_errors.len() < 5 => sample_errors.push("echo timed out".into()),
            _ => {}
        }
    }
    close_all(conns.into_iter().map(|(_, ws)| ws).collect()).await;
    tokio::time::sleep(spec.after_close).await;
    let rss_after_close_kib = rss(spec.rss_pid);
    let kib_per_connection = match (rss_before_kib, rss_held_kib) {
        (Some(b), Some(h)) if opened.opened > 0 => {
            Some((h as f64 - b as f64) / opened.opened as f64)
        }
        _ => None,
    };
    Ok(IdleResult {
        opened,
        hold_secs: spec.hold.as_secs_f64(),
        rss_pid: spec.rss_pid,
        rss_children: spec.rss_children,
        rss_before_kib,
        rss_opened_kib,
        rss_held_kib,
        rss_after_close_kib,
        kib_per_connection,
        sample_checked: checked,
        sample_ok,
        sample_errors,
    })
}
