//! WebSocket load with the cheapest client that is still a correct one:
//! the upgrade is one prebuilt request (RFC 6455's sample key, its accept
//! value checked), and every connection's message is one frame masked
//! once, up front, and sent as the same bytes each time; its echo is
//! compared byte for byte with the unmasked frame the server must send
//! back. No parser, no allocation, no masking per message, so on two cores
//! the client leaves as much as possible of its core to the echo server.
//!
//! - [`echo`]: open the connections (at most `ramp` handshakes in flight),
//!   then each keeps one message in flight (or sends one per `pace`) for a
//!   warm-up and a measured window; messages per second, round trips, the
//!   CPU split over the window, and connections that broke (dropped
//!   tunnels, when a reload runs meanwhile).
//! - [`idle`]: read a process tree's RSS, open the connections, hold them
//!   silent, read it again, echo-check a spread sample, close them all,
//!   wait, and read it once more: KiB per held connection and whether the
//!   memory came back.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::{key, Conn, Dialer, Samples, Target};
use crate::procs::{self, CpuShare, Watched};
use crate::stats::{self, Summary};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Which connections to open, and how fast.
#[derive(Clone)]
pub struct OpenSpec {
    /// The `ws://` or `wss://` URL.
    pub target: Target,
    /// How to connect.
    pub dialer: Dialer,
    /// Connections to open.
    pub connections: usize,
    /// Handshakes in flight at most.
    pub ramp: usize,
}

/// What opening the connections gave.
#[derive(Debug, Clone, Serialize)]
pub struct Opened {
    /// Upgrades that succeeded.
    pub opened: usize,
    /// Upgrades that failed.
    pub failed: usize,
    /// The first few distinct failures.
    pub failure_samples: Vec<String>,
    /// From the first connect to the last upgrade, seconds.
    pub secs: f64,
    /// Connect + (TLS) + upgrade time of each connection, ms.
    pub handshake: Summary,
}

/// An upgraded connection and the bytes read past the 101.
pub struct WsConn {
    conn: Conn,
    pending: BytesMut,
}

/// A binary frame carrying `payload`, masked as a client must send it.
pub fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = header(0x82, payload.len(), true);
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// The unmasked frame a server echoes `payload` in.
pub fn server_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = header(0x82, payload.len(), false);
    out.extend_from_slice(payload);
    out
}

fn header(first: u8, len: usize, masked: bool) -> Vec<u8> {
    let m = if masked { 0x80 } else { 0 };
    match len {
        0..=125 => vec![first, m | len as u8],
        126..=65535 => vec![first, m | 126, (len >> 8) as u8, len as u8],
        _ => {
            let mut h = vec![first, m | 127];
            h.extend_from_slice(&(len as u64).to_be_bytes());
            h
        }
    }
}

impl WsConn {
    /// Connect and upgrade connection `i` (its sticky key as `?sid=` and
    /// `X-Session-Id`).
    pub async fn open(dialer: &Dialer, target: &Target, i: usize) -> anyhow::Result<WsConn> {
        let mut conn = dialer.open(target, i).await?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nX-Session-Id: {}\r\n\r\n",
            target.path_for(i),
            target.addr,
            key(i)
        );
        let upgrade = async {
            conn.io.write_all(request.as_bytes()).await?;
            let mut buf = BytesMut::with_capacity(1024);
            loop {
                if conn.io.read_buf(&mut buf).await? == 0 {
                    anyhow::bail!("closed before the upgrade answer");
                }
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut resp = httparse::Response::new(&mut headers);
                if let httparse::Status::Complete(n) = resp.parse(&buf)? {
                    let accept = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"));
                    anyhow::ensure!(
                        resp.code == Some(101),
                        "upgrade refused with {:?}",
                        resp.code
                    );
                    anyhow::ensure!(
                        accept.is_some_and(|h| h.value == ACCEPT.as_bytes()),
                        "bad Sec-WebSocket-Accept"
                    );
                    let _ = buf.split_to(n);
                    return Ok(buf);
                }
                anyhow::ensure!(buf.len() < 16 * 1024, "upgrade answer too long");
            }
        };
        let pending = tokio::time::timeout(dialer.timeout, upgrade)
            .await
            .map_err(|_| anyhow::anyhow!("upgrade timed out"))??;
        Ok(WsConn { conn, pending })
    }

    /// Send `frame` and read exactly `echo.len()` bytes into `scratch`;
    /// an error if they differ from `echo`.
    pub async fn round_trip(
        &mut self,
        frame: &[u8],
        echo: &[u8],
        scratch: &mut [u8],
    ) -> io::Result<()> {
        self.conn.io.write_all(frame).await?;
        let from_pending = self.pending.len().min(echo.len());
        scratch[..from_pending].copy_from_slice(&self.pending.split_to(from_pending));
        self.conn
            .io
            .read_exact(&mut scratch[from_pending..echo.len()])
            .await?;
        if &scratch[..echo.len()] != echo {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "echo differs from the message",
            ));
        }
        Ok(())
    }

    /// Send a close frame (code 1000) and end the connection.
    pub async fn close(mut self) {
        let code = [0x03 ^ MASK[0], 0xe8 ^ MASK[1]];
        let frame = [
            0x88, 0x82, MASK[0], MASK[1], MASK[2], MASK[3], code[0], code[1],
        ];
        let _ = self.conn.io.write_all(&frame).await;
        let _ = self.conn.io.shutdown().await;
    }
}

/// Open every connection of `spec`: the open ones, in index order, and the figures.
pub async fn open_all(spec: &OpenSpec) -> (Vec<(usize, WsConn)>, Opened) {
    let gate = Arc::new(Semaphore::new(spec.ramp.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..spec.connections {
        let (gate, spec) = (gate.clone(), spec.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let t0 = Instant::now();
            let ws = WsConn::open(&spec.dialer, &spec.target, i).await;
            (i, ws.map(|ws| (ws, t0.elapsed().as_nanos() as u64)))
        });
    }
    let (mut open, mut handshakes, mut failed, mut samples) =
        (Vec::new(), Vec::new(), 0, Samples::default());
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((i, Ok((ws, ns)))) => {
                open.push((i, ws));
                handshakes.push(ns);
            }
            Ok((_, Err(e))) => {
                failed += 1;
                samples.add(format!("{e:#}"));
            }
            Err(e) => {
                failed += 1;
                samples.add(e);
            }
        }
    }
    open.sort_by_key(|(i, _)| *i);
    let opened = Opened {
        opened: open.len(),
        failed,
        failure_samples: samples.0,
        secs: started.elapsed().as_secs_f64(),
        handshake: stats::summarize(handshakes),
    };
    (open, opened)
}

/// Close every connection (at most 3 s in all).
pub async fn close_all(conns: Vec<WsConn>) {
    let mut tasks = tokio::task::JoinSet::new();
    for ws in conns {
        tasks.spawn(ws.close());
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// What an echo run does.
#[derive(Clone)]
pub struct EchoSpec {
    /// Where and how many.
    pub open: OpenSpec,
    /// Bytes per message (at least 4: the connection's index).
    pub size: usize,
    /// Messages before the window, not counted.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// One message per this period per connection (`None`: one in flight,
    /// back to back).
    pub pace: Option<Duration>,
    /// Processes whose CPU use over the window is reported.
    pub watched: Vec<Watched>,
}

/// The figures of one echo run.
#[derive(Debug, Clone, Serialize)]
pub struct EchoResult {
    /// The connections.
    pub opened: Opened,
    /// Window length, seconds.
    pub window_secs: f64,
    /// Echoes completed in the window.
    pub echoed: u64,
    /// `echoed` / `window_secs`.
    pub messages_per_sec: f64,
    /// Round trips of the echoes counted, ms.
    pub rtt: Summary,
    /// Connections that broke before the end (error, close, wrong echo,
    /// no echo within the dialer's timeout).
    pub dropped: u64,
    /// The first few distinct reasons.
    pub drop_samples: Vec<String>,
    /// CPU use over the window, % of one core.
    pub cpu: Vec<CpuShare>,
}

/// Run an echo benchmark.
pub async fn echo(spec: EchoSpec) -> anyhow::Result<EchoResult> {
    let (conns, opened) = open_all(&spec.open).await;
    let begin = Instant::now() + Duration::from_millis(50);
    let (w0, w1) = (begin + spec.warmup, begin + spec.warmup + spec.duration);
    let cpu = procs::meter(spec.watched.clone(), w0, w1);
    let timeout = spec.open.dialer.timeout;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut ws) in conns {
        let mut payload = vec![b'x'; spec.size.max(4)];
        payload[..4].copy_from_slice(&(i as u32).to_be_bytes());
        let (frame, expect) = (client_frame(&payload), server_frame(&payload));
        let pace = spec.pace;
        tasks.spawn(async move {
            let mut scratch = vec![0u8; expect.len()];
            let mut rtts = Vec::new();
            let mut due =
                begin + pace.map_or(Duration::ZERO, |p| p.mul_f64((i % 100) as f64 / 100.0));
            while Instant::now() < w1 {
                if let Some(p) = pace {
                    tokio::time::sleep_until(due.into()).await;
                    due += p;
                }
                let t0 = Instant::now();
                match tokio::time::timeout(timeout, ws.round_trip(&frame, &expect, &mut scratch))
                    .await
                {
                    Ok(Ok(())) if t0 >= w0 && t0 < w1 => rtts.push(t0.elapsed().as_nanos() as u64),
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return (rtts, Err(e.to_string())),
                    Err(_) => return (rtts, Err("no echo within the timeout".to_owned())),
                }
            }
            (rtts, Ok(ws))
        });
    }
    let (mut rtts, mut open, mut dropped, mut samples) =
        (Vec::new(), Vec::new(), 0, Samples::default());
    while let Some(done) = tasks.join_next().await {
        let (r, ws) = done?;
        rtts.extend(r);
        match ws {
            Ok(ws) => open.push(ws),
            Err(e) => {
                dropped += 1;
                samples.add(e);
            }
        }
    }
    close_all(open).await;
    let window_secs = spec.duration.as_secs_f64();
    Ok(EchoResult {
        opened,
        window_secs,
        echoed: rtts.len() as u64,
        messages_per_sec: rtts.len() as f64 / window_secs,
        rtt: stats::summarize(rtts),
        dropped,
        drop_samples: samples.0,
        cpu: cpu.await?,
    })
}

/// What an idle-hold run does.
#[derive(Clone)]
pub struct IdleSpec {
    /// Where and how many.
    pub open: OpenSpec,
    /// How long the connections are held after the last one opened.
    pub hold: Duration,
    /// The process whose RSS (with its descendants') is read.
    pub rss_pid: Option<u32>,
    /// Connections echo-checked after the hold.
    pub sample: usize,
    /// Wait after closing before the last reading.
    pub close_wait: Duration,
}

/// The figures of one idle-hold run.
#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    /// The connections.
    pub opened: Opened,
    /// RSS before the first connection, KiB.
    pub rss_before_kib: Option<u64>,
    /// RSS at the end of the hold, KiB.
    pub rss_held_kib: Option<u64>,
    /// RSS `close_wait` after closing everything, KiB.
    pub rss_after_close_kib: Option<u64>,
    /// (held − before) ÷ opened, KiB.
    pub kib_per_connection: Option<f64>,
    /// Whether RSS after closing is within 10 % of RSS before.
    pub returned: Option<bool>,
    /// Connections echo-checked after the hold.
    pub sample_checked: usize,
    /// Of those, how many echoed correctly.
    pub sample_ok: usize,
    /// The first few distinct echo-check failures.
    pub sample_errors: Vec<String>,
}

/// Run an idle-hold benchmark.
pub async fn idle(spec: IdleSpec) -> anyhow::Result<IdleResult> {
    let rss = || spec.rss_pid.and_then(procs::tree_rss_kib);
    let rss_before_kib = rss();
    let (mut conns, opened) = open_all(&spec.open).await;
    tokio::time::sleep(spec.hold).await;
    let rss_held_kib = rss();
    let (frame, expect) = (client_frame(b"check"), server_frame(b"check"));
    let mut scratch = vec![0u8; expect.len()];
    let (mut checked, mut ok, mut errors) = (0, 0, Samples::default());
    let step = (conns.len() / spec.sample.max(1)).max(1);
    for (_, ws) in conns.iter_mut().step_by(step).take(spec.sample) {
        checked += 1;
        match tokio::time::timeout(
            spec.open.dialer.timeout,
            ws.round_trip(&frame, &expect, &mut scratch),
        )
        .await
        {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => errors.add(e),
            Err(_) => errors.add("no echo within the timeout"),
        }
    }
    close_all(conns.into_iter().map(|(_, ws)| ws).collect()).await;
    tokio::time::sleep(spec.close_wait).await;
    let rss_after_close_kib = rss();
    let kib_per_connection = match (rss_before_kib, rss_held_kib) {
        (Some(b), Some(h)) if opened.opened > 0 => {
            Some((h as f64 - b as f64) / opened.opened as f64)
        }
        _ => None,
    };
    Ok(IdleResult {
        opened,
        returned: rss_before_kib
            .zip(rss_after_close_kib)
            .map(|(b, a)| a as f64 <= b as f64 * 1.1),
        rss_before_kib,
        rss_held_kib,
        rss_after_close_kib,
        kib_per_connection,
        sample_checked: checked,
        sample_ok: ok,
        sample_errors: errors.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_masked_once_and_echoed_plain() {
        let f = client_frame(b"abcd");
        assert_eq!(&f[..2], &[0x82, 0x84]);
        assert_eq!(&f[2..6], &MASK);
        let unmasked: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i % 4])
            .collect();
        assert_eq!(unmasked, b"abcd");
        assert_eq!(server_frame(b"abcd"), [0x82, 4, b'a', b'b', b'c', b'd']);
        assert_eq!(&server_frame(&[0; 300])[..4], &[0x82, 126, 1, 44]);
        assert_eq!(client_frame(&[0; 70000])[1], 0x80 | 127);
    }
}
