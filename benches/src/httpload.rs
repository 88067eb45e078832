//! `ringway-load http`: keep-alive HTTP/1.1 GETs over a fixed number of
//! connections, each with one request in flight, for a warm-up and then a
//! measured window (the shape of `wrk -c C -d D`).
//!
//! Every connection is one task that writes a prebuilt request and parses
//! the response in place ([`parse_response`]: `httparse` for the head,
//! `Content-Length` or chunked framing for the body), so a request costs
//! the client two syscalls and no allocation. A response counts when it
//! completes inside the window; its latency is from the write of its
//! request. I/O errors and timeouts are counted and the connection is
//! reopened, as wrk does.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Buf, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dial::{self, Target};
use crate::procs::{self, CpuShare, Watched};
use crate::stats::{self, Summary};

/// What an HTTP run does.
#[derive(Debug, Clone)]
pub struct HttpSpec {
    /// Where to send the GETs.
    pub target: Target,
    /// Connections, each with one request in flight.
    pub connections: usize,
    /// Load before the window, not counted.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Source addresses to rotate over (empty: the kernel's choice).
    pub sources: Vec<IpAddr>,
    /// Sticky keys are `<prefix><connection>`.
    pub key_prefix: String,
    /// A request that takes longer is an error and its connection reopened.
    pub timeout: Duration,
    /// Processes whose CPU use over the window is reported.
    pub watched: Vec<Watched>,
}

/// The figures of one HTTP run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpResult {
    /// Connections asked for.
    pub connections: usize,
    /// Window length, seconds.
    pub window_secs: f64,
    /// Responses completed in the window.
    pub requests: u64,
    /// `requests` / `window_secs`.
    pub requests_per_sec: f64,
    /// Latency of the responses counted, ms.
    pub latency: Summary,
    /// Responses in the window with a status outside 200–299.
    pub non_2xx: u64,
    /// Status codes seen in the window, with counts.
    pub statuses: BTreeMap<u16, u64>,
    /// Failed requests (I/O error, timeout, bad response) in the window.
    pub errors: u64,
    /// Failed requests during the warm-up.
    pub warmup_errors: u64,
    /// Connections (re)opened, initial ones included.
    pub connects: u64,
    /// The first few distinct error messages.
    pub error_samples: Vec<String>,
    /// CPU use over the window, % of one core.
    pub cpu: Vec<CpuShare>,
}

#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    warmup_errors: u64,
    connects: u64,
    error_samples: Vec<String>,
}

impl Tally {
    fn error(&mut self, in_window: bool, what: String) {
        if in_window {
            self.errors += 1;
        } else {
            self.warmup_errors += 1;
        }
        if self.error_samples.len() < 3 && !self.error_samples.contains(&what) {
            self.error_samples.push(what);
        }
    }
}

/// Run the load and return its figures.
pub async fn run(spec: HttpSpec) -> anyhow::Result<HttpResult> {
    let begin = Instant::now() + Duration::from_millis(50);
    let w0 = begin + spec.warmup;
    let w1 = w0 + spec.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..spec.connections {
        let spec = spec.clone();
        tasks.spawn(connection(spec, i, begin, w0, w1));
    }
    let watched = spec.watched.clone();
    let meter = tokio::spawn(async move {
        tokio::time::sleep_until(w0.into()).await;
        let before = snapshot(watched.clone()).await;
        tokio::time::sleep_until(w1.into()).await;
        let after = snapshot(watched).await;
        procs::merged_shares(&before, &after)
    });
    let mut all = Tally::default();
    let give_up = w1 + spec.timeout + Duration::from_secs(2);
    while let Ok(Some(done)) = tokio::time::timeout_at(give_up.into(), tasks.join_next()).await {
        let t = done.context("connection task")?;
        all.latencies.extend(t.latencies);
        for (s, n) in t.statuses {
            *all.statuses.entry(s).or_default() += n;
        }
        all.errors += t.errors;
        all.warmup_errors += t.warmup_errors;
        all.connects += t.connects;
        for e in t.error_samples {
            if all.error_samples.len() < 5 && !all.error_samples.contains(&e) {
                all.error_samples.push(e);
            }
        }
    }
    tasks.abort_all();
    let cpu = meter.await.context("cpu meter")?;
    let window_secs = spec.duration.as_secs_f64();
    let requests = all.latencies.len() as u64;
    Ok(HttpResult {
        connections: spec.connections,
        window_secs,
        requests,
        requests_per_sec: requests as f64 / window_secs,
        latency: stats::summarize(all.latencies),
        non_2xx: all
            .statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum(),
        statuses: all.statuses,
        errors: all.errors,
        warmup_errors: all.warmup_errors,
        connects: all.connects,
        error_samples: all.error_samples,
        cpu,
    })
}

/// CPU times of `watched` (and of everything else), off the async threads.
pub async fn snapshot(watched: Vec<Watched>) -> procs::CpuSnapshot {
    tokio::task::spawn_blocking(move || procs::snapshot(&watched))
        .await
        .expect("snapshot task")
}

async fn connection(spec: HttpSpec, i: usize, begin: Instant, w0: Instant, w1: Instant) -> Tally {
    let key = dial::sticky(&spec.key_prefix, i);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nX-Session-Id: {key}\r\n\r\n",
        spec.target.path_with_key(&key),
        spec.target.addr
    )
    .into_bytes();
    let src = dial::source_for(&spec.sources, i);
    let mut tally = Tally {
        latencies: Vec::with_capacity(16 * 1024),
        ..Tally::default()
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut stream: Option<TcpStream> = None;
    tokio::time::sleep_until(begin.into()).await;
    loop {
        if Instant::now() >= w1 {
            break;
        }
        if stream.is_none() {
            match dial::connect(spec.target.addr, src, spec.timeout).await {
                Ok(s) => {
                    tally.connects += 1;
                    buf.clear();
                    stream = Some(s);
                }
                Err(e) => {
                    tally.error(Instant::now() >= w0, format!("{e:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = stream.as_mut() else { continue };
        let t0 = Instant::now();
        let outcome = tokio::time::timeout(spec.timeout, exchange(s, &request, &mut buf)).await;
        let t1 = Instant::now();
        let in_window = t1 >= w0 && t1 < w1;
        match outcome {
            Ok(Ok((status, close))) => {
                if in_window {
                    tally.latencies.push((t1 - t0).as_nanos() as u64);
                    *tally.statuses.entry(status).or_default() += 1;
                }
                if close {
                    stream = None;
                }
            }
            Ok(Err(e)) => {
                tally.error(t1 >= w0, format!("{e}"));
                stream = None;
            }
            Err(_) => {
                tally.error(t1 >= w0, "request timed out".into());
                stream = None;
            }
        }
    }
    tally
}

/// Write one request and read its whole response: (status, whether the
/// server will close the connection).
async fn exchange(
    s: &mut TcpStream,
    request: &[u8],
    buf: &mut BytesMut,
) -> std::io::Result<(u16, bool)> {
    s.write_all(request).await?;
    loop {
        if let Some(done) = parse_response(buf)? {
            return Ok(done);
        }
        buf.reserve(8 * 1024);
        if s.read_buf(buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// If `buf` starts with a whole response, consume it and return its
/// status and whether the connection closes after it; `None` if more
/// bytes are needed. 1xx responses are skipped.
pub fn parse_response(buf: &mut BytesMut) -> std::io::Result<Option<(u16, bool)>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(invalid(&format!("bad response head: {e}"))),
        };
        let status = resp.code.unwrap_or(0);
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut close = resp.version == Some(0);
        for h in resp.headers.iter() {
            let value = std::str::from_utf8(h.value).unwrap_or("").trim();
            if h.name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse().map_err(|_| invalid("bad Content-Length"))?);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if h.name.eq_ignore_ascii_case("connection") {
                let v = value.to_ascii_lowercase();
                close = v.contains("close") || (close && !v.contains("keep-alive"));
            }
        }
        if (100..200).contains(&status) && status != 101 {
            buf.advance(head_len);
            continue;
        }
        let body_len = if status == 204 || status == 304 {
            Some(0)
        } else if chunked {
            chunked_len(&buf[head_len..])?
        } else {
            Some(length.ok_or_else(|| invalid("response without a length"))?)
        };
        return Ok(match body_len {
            Some(n) if buf.len() >= head_len + n => {
                buf.advance(head_len + n);
                Some((status, close))
            }
            _ => None,
        });
    }
}

/// The length of a complete chunked body at the start of `b` (chunks,
/// last chunk, trailers, final CRLF), or `None` if incomplete.
fn chunked_len(b: &[u8]) -> std::io::Result<Option<usize>> {
    let mut at = 0;
    loop {
        let Some(eol) = find_crlf(&b[at..]) else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&b[at..at + eol]).map_err(|_| invalid("bad chunk"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
        at += eol + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = find_crlf(&b[at..]) else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some(at));
                }
            }
        }
        if b.len() < at + size + 2 {
            return Ok(None);
        }
        at += size + 2;
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_partial() {
        let mut b = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 503 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..],
        );
        assert_eq!(parse_response(&mut b).unwrap(), Some((200, false)));
        assert_eq!(parse_response(&mut b).unwrap(), Some((503, true)));
        assert!(b.is_empty());

        let full = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        for cut in 0..full.len() {
            let mut b = BytesMut::from(&full[..cut]);
            assert_eq!(parse_response(&mut b).unwrap(), None, "cut at {cut}");
        }
        let mut b = BytesMut::from(&full[..]);
        assert_eq!(parse_response(&mut b).unwrap(), Some((200, false)));
        assert!(b.is_empty());

        let mut b = BytesMut::from(&b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"[..]);
        assert_eq!(parse_response(&mut b).unwrap(), Some((200, true)));
        let mut b = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No\r\n\r\n"[..]);
        assert_eq!(parse_response(&mut b).unwrap(), Some((204, false)));
        let mut b = BytesMut::from(&b"HTTP/1.1 200 OK\r\n\r\n"[..]);
        assert!(parse_response(&mut b).is_err());
    }
}
