//! Keep-alive HTTP/1.1 GETs over a fixed number of connections, each with
//! one request in flight, for a warm-up and then a measured window (the
//! shape of `wrk -c C -d D`), as fast as answers come or paced to a total
//! rate.
//!
//! Every connection is one task that writes a prebuilt request and parses
//! the response in place ([`parse_response`]: `httparse` for the head,
//! `Content-Length` or chunked framing for the body), so a request costs
//! the client two syscalls and no allocation. A response counts when it
//! completes inside the window; its latency is from the write of its
//! request. Failures are counted and the connection reopened, as wrk does;
//! a GET on a reused connection that the server closed before answering is
//! retried once on a new one, as browsers do (a proxy's graceful reload
//! closes idle keep-alive connections).

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{key, Conn, Dialer, Samples, Target};
use crate::procs::{self, CpuShare, Watched};
use crate::stats::{self, Summary};

/// What an HTTP run does.
#[derive(Clone)]
pub struct HttpSpec {
    /// Where to send the GETs.
    pub target: Target,
    /// How to connect.
    pub dialer: Dialer,
    /// Connections, each with one request in flight.
    pub connections: usize,
    /// Load before the window, not counted.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Requests per second in all (`None`: as fast as answers come).
    pub rate: Option<f64>,
    /// Processes whose CPU use over the window is reported.
    pub watched: Vec<Watched>,
}

/// The figures of one HTTP run.
#[derive(Debug, Clone, Serialize)]
pub struct HttpResult {
    /// Window length, seconds.
    pub window_secs: f64,
    /// Responses completed in the window.
    pub requests: u64,
    /// `requests` / `window_secs`.
    pub requests_per_sec: f64,
    /// Latency of the responses counted, ms.
    pub latency: Summary,
    /// Status codes seen in the window, with counts.
    pub statuses: BTreeMap<u16, u64>,
    /// Responses in the window outside 200–299, plus failed requests (I/O
    /// error, timeout, bad response) in the window.
    pub failures: u64,
    /// Failed requests during the warm-up.
    pub warmup_errors: u64,
    /// Connections (re)opened.
    pub connects: u64,
    /// GETs retried once on a new connection because a reused one was
    /// closed before any byte of the answer (as browsers do); not failures.
    pub retried: u64,
    /// The first few distinct errors.
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
    retried: u64,
    samples: Samples,
}

/// Run the load and return its figures.
pub async fn run(spec: HttpSpec) -> anyhow::Result<HttpResult> {
    let begin = Instant::now() + Duration::from_millis(50);
    let (w0, w1) = (begin + spec.warmup, begin + spec.warmup + spec.duration);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..spec.connections {
        tasks.spawn(connection(spec.clone(), i, begin, w0, w1));
    }
    let cpu = procs::meter(spec.watched.clone(), w0, w1);
    let mut all = Tally::default();
    while let Some(t) = tasks.join_next().await {
        let t = t?;
        all.latencies.extend(t.latencies);
        for (s, n) in t.statuses {
            *all.statuses.entry(s).or_default() += n;
        }
        all.errors += t.errors;
        all.warmup_errors += t.warmup_errors;
        all.connects += t.connects;
        all.retried += t.retried;
        t.samples.0.into_iter().for_each(|e| all.samples.add(e));
    }
    let window_secs = spec.duration.as_secs_f64();
    let requests = all.latencies.len() as u64;
    let non_2xx: u64 = all
        .statuses
        .iter()
        .filter(|(s, _)| !(200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    Ok(HttpResult {
        window_secs,
        requests,
        requests_per_sec: requests as f64 / window_secs,
        latency: stats::summarize(all.latencies),
        statuses: all.statuses,
        failures: non_2xx + all.errors,
        warmup_errors: all.warmup_errors,
        connects: all.connects,
        retried: all.retried,
        error_samples: all.samples.0,
        cpu: cpu.await?,
    })
}

/// The GET of connection `i`, carrying its sticky key.
pub fn request(target: &Target, i: usize) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nX-Session-Id: {}\r\n\r\n",
        target.path_for(i),
        target.addr,
        key(i)
    )
    .into_bytes()
}

async fn connection(spec: HttpSpec, i: usize, begin: Instant, w0: Instant, w1: Instant) -> Tally {
    let request = request(&spec.target, i);
    let mut tally = Tally::default();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // The open connection and how many responses it has carried.
    let mut conn: Option<(Conn, u64)> = None;
    // Paced connections start spread over one period, so the load is even.
    let period = spec
        .rate
        .map(|r| Duration::from_secs_f64(spec.connections as f64 / r));
    let mut due = begin
        + period.map_or(Duration::ZERO, |p| {
            p.mul_f64(i as f64 / spec.connections as f64)
        });
    while Instant::now() < w1 {
        if let Some(p) = period {
            tokio::time::sleep_until(due.into()).await;
            due += p;
        }
        let t0 = Instant::now();
        let mut outcome = send(&spec, i, &request, &mut buf, &mut conn, &mut tally).await;
        if let Err(e) = &outcome {
            // A reused connection the server closed before any byte of the
            // answer: a browser retries such a GET once on a new connection.
            let stale = [
                io::ErrorKind::UnexpectedEof,
                io::ErrorKind::ConnectionReset,
                io::ErrorKind::BrokenPipe,
            ];
            if conn.as_ref().is_some_and(|c| c.1 > 0) && buf.is_empty() && stale.contains(&e.kind())
            {
                tally.retried += 1;
                conn = None;
                outcome = send(&spec, i, &request, &mut buf, &mut conn, &mut tally).await;
            }
        }
        let t1 = Instant::now();
        match outcome {
            Ok((status, close)) => {
                if t1 >= w0 && t1 < w1 {
                    tally.latencies.push((t1 - t0).as_nanos() as u64);
                    *tally.statuses.entry(status).or_default() += 1;
                }
                match conn.as_mut() {
                    Some(c) if !close => c.1 += 1,
                    _ => conn = None,
                }
            }
            Err(e) => {
                if t1 >= w0 && t1 < w1 {
                    tally.errors += 1;
                } else {
                    tally.warmup_errors += 1;
                }
                tally.samples.add(e);
                if conn.take().is_none() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    tally
}

/// One request on the open connection, opened first if there is none.
async fn send(
    spec: &HttpSpec,
    i: usize,
    request: &[u8],
    buf: &mut BytesMut,
    conn: &mut Option<(Conn, u64)>,
    tally: &mut Tally,
) -> io::Result<(u16, bool)> {
    if conn.is_none() {
        let c = spec
            .dialer
            .open(&spec.target, i)
            .await
            .map_err(|e| io::Error::other(format!("{e:#}")))?;
        tally.connects += 1;
        buf.clear();
        *conn = Some((c, 0));
    }
    let Some((c, _)) = conn.as_mut() else {
        unreachable!("opened above")
    };
    match tokio::time::timeout(spec.dialer.timeout, exchange(&mut c.io, request, buf)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out")),
    }
}

/// Write one request and read its whole response: (status, whether the
/// server will close the connection).
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    request: &[u8],
    buf: &mut BytesMut,
) -> io::Result<(u16, bool)> {
    s.write_all(request).await?;
    loop {
        if let Some(done) = parse_response(buf)? {
            return Ok(done);
        }
        buf.reserve(8 * 1024);
        if s.read_buf(buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// If `buf` starts with a whole response, consume it and return its
/// status and whether the connection closes after it; `None` if more
/// bytes are needed. 1xx responses are skipped.
pub fn parse_response(buf: &mut BytesMut) -> io::Result<Option<(u16, bool)>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(invalid(&format!("bad response head: {e}"))),
        };
        let status = resp.code.unwrap_or(0);
        let (mut length, mut chunked, mut close) = (None, false, resp.version == Some(0));
        for h in resp.headers.iter() {
            let value = std::str::from_utf8(h.value)
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if h.name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| invalid("bad Content-Length"))?,
                );
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.contains("chunked");
            } else if h.name.eq_ignore_ascii_case("connection") {
                close = value.contains("close") || (close && !value.contains("keep-alive"));
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
fn chunked_len(b: &[u8]) -> io::Result<Option<usize>> {
    let crlf = |b: &[u8]| b.windows(2).position(|w| w == b"\r\n");
    let mut at = 0;
    loop {
        let Some(eol) = crlf(&b[at..]) else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&b[at..at + eol]).map_err(|_| invalid("bad chunk"))?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
        at += eol + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = crlf(&b[at..]) else {
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
