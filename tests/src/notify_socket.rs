//! The test's side of sd_notify(3): an AF_UNIX datagram socket that a test
//! owns and hands to a process as `NOTIFY_SOCKET`, as systemd would, and
//! reads in order what the process announces (`READY=1`, `STOPPING=1` …).
//!
//! It only listens; it never answers or judges. Every datagram received is
//! kept, so a test can also check what was *not* said up to an event.

use std::os::linux::net::SocketAddrExt;
use std::time::{Duration, Instant};

use tokio::net::UnixDatagram;

/// One datagram: its `KEY=VALUE` lines, and when it arrived.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The lines, in order.
    pub lines: Vec<String>,
    /// When the test received it.
    pub at: Instant,
}

impl Notice {
    /// Whether `line` (e.g. `READY=1`) is one of its lines.
    pub fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }

    /// The value of `key` (e.g. `STATUS`), if a line sets it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }
}

/// A notification socket owned by the test.
pub struct NotifySocket {
    socket: UnixDatagram,
    value: String,
    seen: Vec<Notice>,
    _dir: Option<tempfile::TempDir>,
}

impl NotifySocket {
    /// A socket file in a fresh temporary directory.
    pub fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            socket,
            value: path.to_str().expect("utf-8 temp path").to_owned(),
            seen: Vec::new(),
            _dir: Some(dir),
        }
    }

    /// A socket in Linux's abstract namespace (`NOTIFY_SOCKET=@name`).
    pub fn bind_abstract() -> NotifySocket {
        let name = format!("ringway-test-{}-{}", std::process::id(), crate::free_port());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract address");
        let std_socket =
            std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind the abstract socket");
        std_socket.set_nonblocking(true).expect("nonblocking");
        NotifySocket {
            socket: UnixDatagram::from_std(std_socket).expect("register with tokio"),
            value: format!("@{name}"),
            seen: Vec::new(),
            _dir: None,
        }
    }

    /// `("NOTIFY_SOCKET", value)`, for a process' environment.
    pub fn env(&self) -> (&'static str, &str) {
        ("NOTIFY_SOCKET", &self.value)
    }

    /// The next datagram, waiting at most `within`.
    pub async fn next(&mut self, within: Duration) -> Result<Notice, String> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(within, self.socket.recv(&mut buf))
            .await
            .map_err(|_| {
                format!(
                    "nothing announced within {within:?}; so far: {:?}",
                    self.seen
                )
            })?
            .map_err(|e| format!("notify socket: {e}"))?;
        Ok(self.record(&buf[..n]))
    }

    fn record(&mut self, datagram: &[u8]) -> Notice {
        let notice = Notice {
            lines: String::from_utf8_lossy(datagram)
                .lines()
                .map(str::to_owned)
                .collect(),
            at: Instant::now(),
        };
        self.seen.push(notice.clone());
        notice
    }

    /// The first datagram from now on with `line`, within `within`; the
    /// ones before it are kept in [`NotifySocket::seen`].
    pub async fn wait_for(&mut self, line: &str, within: Duration) -> Result<Notice, String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let notice = self
                .next(left)
                .await
                .map_err(|e| format!("waiting for {line}: {e}"))?;
            if notice.has(line) {
                return Ok(notice);
            }
        }
    }

    /// Take every datagram already queued, without waiting.
    pub fn drain(&mut self) {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = self.socket.try_recv(&mut buf) {
            self.record(&buf[..n]);
        }
    }

    /// Every datagram received so far, in order.
    pub fn seen(&self) -> &[Notice] {
        &self.seen
    }
}
