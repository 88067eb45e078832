//! Connections to upstream servers: opening them (TCP, and TLS verified by
//! us when the pool says so) and keeping idle ones for reuse.
//!
//! The keep-alive pool is per worker thread (each worker runs its own
//! single-threaded runtime), so taking and returning a connection needs no
//! lock. A pooled connection is checked for staleness without a system
//! call: the reactor marks a socket readable when the server closes it or
//! sends unsolicited bytes while it idles, and such a connection is dropped
//! instead of reused. Idle connections older than the pool's
//! `keepalive_timeout` are dropped on the next take.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering::Relaxed;

use smallvec::SmallVec;
use tokio::net::TcpStream;

use crate::routing::{self, Selection};
use crate::stream::UpstreamStream;
use crate::tls::UpstreamTlsConfig;
use crate::upstream::{Pool, ServerState};

/// Why an upstream connection could not be opened; all of them are the
/// server's (or the network's) doing, except `Local`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing answered within `connect_timeout`.
    #[error("connect timed out")]
    Timeout,
    /// The server refused or the network failed.
    #[error("connect failed: {0}")]
    Io(std::io::Error),
    /// The TLS handshake failed (including certificate verification).
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// This process is out of descriptors or memory: not the server's fault.
    #[error("local resource exhausted: {0}")]
    Local(std::io::Error),
}

impl ConnectError {
    /// Whether the failure says something about the server (passive health
    /// counts it) rather than about this process.
    pub fn is_server_fault(&self) -> bool {
        !matches!(self, ConnectError::Local(_))
    }
}

/// Whether an I/O error is this process running out of something.
pub fn is_local_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// Open a connection to `addr`, with TLS when `tls` is given.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&UpstreamTlsConfig>,
) -> Result<UpstreamStream, ConnectError> {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| {
            if is_local_exhaustion(&e) {
                ConnectError::Local(e)
            } else {
                ConnectError::Io(e)
            }
        })?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(UpstreamStream::Plain(tcp)),
            Some(tls) => {
                let stream = tls
                    .connector()
                    .connect(tls.server_name(addr), tcp)
                    .await
                    .map_err(ConnectError::Tls)?;
                Ok(UpstreamStream::Tls(Box::new(stream)))
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// Identifies connections that may serve each other's requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The server.
    pub addr: SocketAddr,
    /// TLS identity (the verified name), or `None` for plain TCP.
    pub tls: Option<Arc<str>>,
}

struct Idle {
    stream: UpstreamStream,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<HashMap<PoolKey, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// A connection from the pool, if a fresh one idles for `key`.
pub fn take(key: &PoolKey, max_idle: Duration) -> Option<UpstreamStream> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(key)?;
        while let Some(c) = list.pop() {
            if c.since.elapsed() < max_idle && !readable_now(c.stream.tcp()) {
                return Some(c.stream);
            }
        }
        None
    })
}

/// Return a connection whose exchange completed cleanly. Beyond `cap` idle
/// connections for `key` the oldest is dropped.
pub fn put(key: PoolKey, stream: UpstreamStream, cap: usize) {
    if cap == 0 {
        return;
    }
    let _ = IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(key).or_default();
        if list.len() >= cap {
            list.remove(0);
        }
        list.push(Idle {
            stream,
            since: Instant::now(),
        });
    });
}

/// Drop every idle connection to `addr` (a server removed or in maint).
pub fn forget(addr: SocketAddr) {
    let _ = IDLE.try_with(|idle| idle.borrow_mut().retain(|k, _| k.addr != addr));
}

/// Whether the reactor has seen the socket become readable: for an idle
/// pooled connection that means the server closed it (or broke protocol).
/// Reads the readiness the runtime already has; no system call.
fn readable_now(tcp: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    matches!(tcp.poll_read_ready(&mut cx), Poll::Ready(_))
}

/// An upstream connection ready for one exchange, with the server it goes
/// to (holding one unit of that server's load).
pub struct Connected {
    /// The server and its load guard.
    pub selection: Selection,
    /// The connection.
    pub stream: UpstreamStream,
    /// Taken from the keep-alive pool (it may turn out stale).
    pub reused: bool,
    /// Where the connection goes back when the exchange ends cleanly.
    pub pool_key: PoolKey,
    /// How long the connect took (zero when reused).
    pub connect_time: Duration,
}

/// No connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Every server is down, drained or in maintenance.
    #[error("no upstream server available")]
    NoServer,
    /// Servers were tried and all failed to connect; the last error.
    #[error("{0}")]
    Failed(ConnectError),
}

impl OpenError {
    /// The status the client gets.
    pub fn status(&self) -> u16 {
        match self {
            OpenError::NoServer => 502,
            OpenError::Failed(ConnectError::Timeout) => 504,
            OpenError::Failed(ConnectError::Local(_)) => 503,
            OpenError::Failed(_) => 502,
        }
    }
}

/// The pool key of `server` in `pool`.
pub fn pool_key(pool: &Pool, server: &ServerState) -> PoolKey {
    PoolKey {
        addr: server.addr,
        tls: pool.tls.as_ref().map(|t| t.identity(server.addr)),
    }
}

/// Choose a server for `key` and connect to it, reusing a pooled connection
/// when `reuse` allows. A server that refuses or times out is counted
/// against (passive health), skipped, and the next one tried, up to the
/// pool's `retries`: nothing was sent yet, so a retry is always safe.
///
/// `exclude` is a server not to use at all (one that just answered an
/// upgrade with 503).
pub async fn open(
    pool: &Pool,
    key: Option<&[u8]>,
    reuse: bool,
    exclude: Option<SocketAddr>,
) -> Result<Connected, OpenError> {
    let settings = &pool.settings;
    let mut tried: SmallVec<[SocketAddr; 4]> = exclude.into_iter().collect();
    let excluded = tried.len();
    let mut last: Option<ConnectError> = None;
    loop {
        let Some(selection) = routing::select(pool, key, &tried) else {
            return Err(last.map_or(OpenError::NoServer, OpenError::Failed));
        };
        let server = selection.server.clone();
        server.stats.requests_total.fetch_add(1, Relaxed);
        let pool_key = pool_key(pool, &server);
        if reuse {
            if let Some(stream) = take(&pool_key, settings.keepalive_timeout) {
                return Ok(Connected {
                    selection,
                    stream,
                    reused: true,
                    pool_key,
                    connect_time: Duration::ZERO,
                });
            }
        }
        let started = Instant::now();
        match connect(server.addr, settings.connect_timeout, pool.tls.as_deref()).await {
            Ok(stream) => {
                let connect_time = started.elapsed();
                server.stats.record_connect(connect_time);
                return Ok(Connected {
                    selection,
                    stream,
                    reused: false,
                    pool_key,
                    connect_time,
                });
            }
            Err(e) => {
                if !e.is_server_fault() {
                    tracing::error!(server = %server.addr, error = %e, "cannot open an upstream connection");
                    return Err(OpenError::Failed(e));
                }
                tracing::warn!(upstream = pool.name(), server = %server.addr, error = %e, "upstream connect failed");
                server.stats.connect_errors.fetch_add(1, Relaxed);
                server.record_failure(&settings.passive);
                tried.push(server.addr);
                last = Some(e);
                if tried.len() - excluded > settings.retries {
                    return Err(OpenError::Failed(last.unwrap_or(ConnectError::Timeout)));
                }
                server.stats.retries.fetch_add(1, Relaxed);
            }
        }
    }
}
