//! Helpers for the edge tests (`tests/tests/edge*.rs`): clients bound to a
//! chosen loopback source address, a proxy started under a small open-file
//! limit, an in-process upstream with large answers, and readers of the
//! admin document's counters.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::raw::{Head, RawClient};
use crate::{free_addr, get_json, target_bin, wait_for_http_ok, wait_for_port, Child};

/// `127.0.0.N`.
pub fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A TCP connection to `to` from the loopback address `from` (bound before
/// connecting, so one machine plays many clients).
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // The port is chosen at connect time, as for an unbound socket (by the
    // whole 4-tuple, preferring odd ports), not by bind(0), which takes the
    // even ports `free_port` hands out for listeners not yet bound.
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own with a valid int option.
    let set = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = tokio::time::timeout(Duration::from_secs(15), socket.connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A [`RawClient`] over a connection from `from`.
pub async fn raw_from(from: IpAddr, to: SocketAddr) -> RawClient {
    let stream = connect_from(from, to)
        .await
        .unwrap_or_else(|e| panic!("connect {from} → {to}: {e}"));
    RawClient {
        stream,
        buf: Vec::new(),
        received: 0,
    }
}

/// Read one whole response (head and `Content-Length` body).
pub async fn read_response(c: &mut RawClient) -> Result<(Head, Vec<u8>), String> {
    let head = c.read_head().await?;
    let len: usize = head
        .header("content-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let body = c.read_body(len).await?;
    Ok((head, body))
}

/// `GET path` from `from` on a fresh connection with `extra` header lines
/// (each ending in `\r\n`); the whole response.
pub async fn get_from(
    from: IpAddr,
    to: SocketAddr,
    path: &str,
    extra: &str,
) -> Result<(Head, Vec<u8>), String> {
    let stream = connect_from(from, to).await.map_err(|e| e.to_string())?;
    let mut c = RawClient {
        stream,
        buf: Vec::new(),
        received: 0,
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n");
    c.stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    read_response(&mut c).await
}

/// The fixture's `/echo-headers` answer as JSON (lowercase names).
pub async fn echo_headers_from(from: IpAddr, to: SocketAddr, extra: &str) -> serde_json::Value {
    let (head, body) = get_from(from, to, "/echo-headers", extra)
        .await
        .unwrap_or_else(|e| panic!("echo-headers from {from}: {e}"));
    assert_eq!(head.status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("echo-headers JSON")
}

/// Whether the peer ends the connection (EOF or reset) before `within`,
/// and what it sent first.
pub async fn ends_without_answer(c: &mut RawClient, within: Duration) -> bool {
    c.closes_within(within).await && c.buf.is_empty()
}

/// Poll `cond` every 20 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return true;
        }
        if start.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Listener `index`'s refusal counter `reason` in `/stats.json`.
pub fn refused(stats: &serde_json::Value, index: usize, reason: &str) -> u64 {
    stats["listeners"][index]["refused"][reason]
        .as_u64()
        .unwrap_or_else(|| panic!("no refused.{reason} in {stats}"))
}

/// The `/stats.json` entry of server `addr` in upstream `app`.
pub fn server_entry(stats: &serde_json::Value, addr: SocketAddr) -> serde_json::Value {
    stats["upstreams"]["app"]["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["addr"] == addr.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("{addr} not in {stats}"))
}

/// Insert `lines` right after the first line equal to `anchor` in `toml`.
pub fn insert_after(toml: &str, anchor: &str, lines: &str) -> String {
    let at = toml
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor:?} not in config"))
        + anchor.len();
    format!("{}\n{}{}", &toml[..at], lines.trim_end(), &toml[at..])
}

/// A `ringway-proxy` started under `ulimit -n nofile` (soft and hard), to
/// reach its descriptor limit with a test-sized flood.
pub struct LimitedProxy {
    /// The client listener.
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The process (the shell `exec`s the proxy, so this is its pid).
    pub child: Child,
    _dir: tempfile::TempDir,
}

impl LimitedProxy {
    /// Start on `config_toml` (`{LISTEN}`/`{ADMIN}` filled in) and wait
    /// until it serves.
    pub async fn start(config_toml: &str, nofile: u32) -> LimitedProxy {
        let (listen, admin) = (free_addr(), free_addr());
        let text = config_toml
            .replace("{LISTEN}", &listen.to_string())
            .replace("{ADMIN}", &admin.to_string());
        let dir = tempfile::tempdir().expect("tempdir");
        let path: PathBuf = dir.path().join("ringway.toml");
        std::fs::write(&path, &text).expect("write config");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" --config \"$1\""))
            .arg(target_bin("ringway-proxy"))
            .arg(&path)
            .env("RUST_LOG", "info");
        for var in crate::MANAGER_ENV {
            cmd.env_remove(var);
        }
        let child = Child::spawn(cmd);
        let ready = async {
            wait_for_http_ok(&format!("http://{admin}/health"), Duration::from_secs(20)).await?;
            wait_for_port(listen, Duration::from_secs(20)).await
        };
        if let Err(e) = ready.await {
            panic!("proxy did not start: {e}\nlog:\n{}", child.log());
        }
        LimitedProxy {
            listen,
            admin,
            child,
            _dir: dir,
        }
    }

    /// `/stats.json`.
    pub async fn stats(&self) -> serde_json::Value {
        get_json(&format!("http://{}/stats.json", self.admin)).await
    }
}

/// Descriptors process `pid` holds now.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Process `pid`'s soft open-file limit.
pub fn fd_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("Max open files")
}

/// An upstream in this process: `GET /big` answers `big_bytes` of body,
/// anything else a short `ok` (keep-alive, `X-Served-By: big`), request
/// bodies read whole. It records when a write of a big answer failed: the
/// proxy dropped that exchange.
pub struct BigServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests whose head arrived.
    pub requests: Arc<AtomicU64>,
    /// When each big answer's write failed.
    pub write_failures: Arc<Mutex<Vec<Instant>>>,
}

impl BigServer {
    /// Listen on a free loopback port and serve until the test ends.
    pub async fn start(big_bytes: usize) -> BigServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicU64::new(0));
        let write_failures = Arc::new(Mutex::new(Vec::new()));
        let (r, w) = (requests.clone(), write_failures.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(big_conn(s, big_bytes, r.clone(), w.clone()));
            }
        });
        BigServer {
            addr,
            requests,
            write_failures,
        }
    }
}

async fn big_conn(
    mut s: TcpStream,
    big: usize,
    requests: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<Instant>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        requests.fetch_add(1, Relaxed);
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + length {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + length);
        if head.starts_with("get /big") {
            let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {big}\r\nX-Served-By: big\r\n\r\n");
            let mut result = s.write_all(h.as_bytes()).await;
            let block = vec![b'x'; 65536];
            let mut left = big;
            while result.is_ok() && left > 0 {
                let n = left.min(block.len());
                result = s.write_all(&block[..n]).await;
                left -= n;
            }
            if result.is_err() {
                failures.lock().expect("lock").push(Instant::now());
                return;
            }
        } else {
            let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Served-By: big\r\n\r\nok";
            if s.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// A serialising lock for tests that hold a thousand sockets or measure
/// deadlines, so they do not share two cores with each other.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How much earlier than its deadline a close may be seen (clock reads on
/// both sides of a loaded machine).
pub const EARLY: Duration = Duration::from_millis(250);

/// Assert that every one of `elapsed` (time to a close) fell between
/// `deadline` minus [`EARLY`] and `deadline` plus `late`.
pub fn closed_at(what: &str, elapsed: &[Duration], deadline: Duration, late: Duration) {
    let min = elapsed.iter().min().expect("some connections");
    let max = elapsed.iter().max().expect("some connections");
    assert!(
        *min + EARLY >= deadline,
        "{what}: one closed after {min:?}, before the {deadline:?} deadline"
    );
    assert!(
        *max <= deadline + late,
        "{what}: one closed only after {max:?} (deadline {deadline:?})"
    );
}
