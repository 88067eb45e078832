//! The systemd notification protocol, sd_notify(3), as both Ringway
//! binaries speak it: one datagram of `KEY=VALUE` lines sent to the
//! AF_UNIX socket that `NOTIFY_SOCKET` names (a path, or `@name` for the
//! abstract namespace), and the watchdog contract (`WATCHDOG_USEC`, and
//! `WATCHDOG_PID` naming the process it is meant for).
//!
//! This crate owns the wire format and those environment rules. It never
//! decides *when* a program is ready, reloading or stopping: each binary
//! does, because only it knows when its listeners accept. It must never
//! fail or stall its caller: without `NOTIFY_SOCKET` nothing is sent, a
//! send that fails is logged, and a send waits at most [`SEND_TIMEOUT`],
//! because a service has to run the same with or without a manager.
//!
//! Why not the `sd-notify` crate: its 0.5.0 connects to `NOTIFY_SOCKET`
//! as a file path, so an abstract address (`@name`) is never reached.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The variable naming the service manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// How long one notification may block when the manager's queue is full:
/// long enough for a busy systemd, short enough that a stuck one cannot
/// hold up a shutdown or a reload.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// One line of a notification (see sd_notify(3) for each meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State<'a> {
    /// `READY=1`: start-up, or a reload, is complete.
    Ready,
    /// `RELOADING=1`: a reload has begun; goes with [`State::MonotonicUsec`].
    Reloading,
    /// `MONOTONIC_USEC=`: CLOCK_MONOTONIC in µs when a reload began
    /// (systemd ≥ 253 requires it after `RELOADING=1`; 252 ignores it).
    MonotonicUsec(u64),
    /// `STOPPING=1`: shutdown has begun.
    Stopping,
    /// `WATCHDOG=1`: the keep-alive ping.
    Watchdog,
    /// `STATUS=`: one line shown by `systemctl status`.
    Status(&'a str),
    /// `MAINPID=`: the service's main process is now this one (binary upgrade).
    MainPid(u32),
}

impl fmt::Display for State<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Ready => f.write_str("READY=1"),
            State::Reloading => f.write_str("RELOADING=1"),
            State::MonotonicUsec(usec) => write!(f, "MONOTONIC_USEC={usec}"),
            State::Stopping => f.write_str("STOPPING=1"),
            State::Watchdog => f.write_str("WATCHDOG=1"),
            // A line break would end the status and start a bogus field.
            State::Status(text) => write!(f, "STATUS={}", text.replace(['\n', '\r'], " ")),
            State::MainPid(pid) => write!(f, "MAINPID={pid}"),
        }
    }
}

/// The datagram for `states`: one `KEY=VALUE` line each, in order.
pub fn message(states: &[State]) -> String {
    states
        .iter()
        .map(State::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where `NOTIFY_SOCKET` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A socket file (`/run/systemd/notify`).
    Path(PathBuf),
    /// A name in Linux's abstract namespace (`@name`; no file).
    Abstract(Vec<u8>),
}

impl Target {
    /// Read a `NOTIFY_SOCKET` value: an absolute path or `@name`. Anything
    /// else (a relative path, `vsock:` of newer managers) is refused.
    pub fn parse(value: &OsStr) -> io::Result<Target> {
        let bytes = value.as_bytes();
        match bytes.first() {
            Some(b'/') => Ok(Target::Path(PathBuf::from(value))),
            Some(b'@') if bytes.len() > 1 => Ok(Target::Abstract(bytes[1..].to_vec())),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{NOTIFY_SOCKET}={}: neither an absolute path nor @name",
                    value.to_string_lossy()
                ),
            )),
        }
    }

    /// Send one datagram from a fresh unbound socket, waiting at most
    /// [`SEND_TIMEOUT`].
    pub fn send(&self, datagram: &[u8]) -> io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        let sent = match self {
            Target::Path(path) => socket.send_to(datagram, path)?,
            Target::Abstract(name) => {
                socket.send_to_addr(datagram, &UnixAddr::from_abstract_name(name)?)?
            }
        };
        if sent == datagram.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "notification cut short",
            ))
        }
    }
}

/// Whether a service manager listens: `NOTIFY_SOCKET` is set and not empty.
pub fn enabled() -> bool {
    std::env::var_os(NOTIFY_SOCKET).is_some_and(|v| !v.is_empty())
}

/// Send `states` in one datagram. `Ok(false)`: no manager, nothing sent.
pub fn send(states: &[State]) -> io::Result<bool> {
    let Some(value) = std::env::var_os(NOTIFY_SOCKET).filter(|v| !v.is_empty()) else {
        return Ok(false);
    };
    Target::parse(&value)?.send(message(states).as_bytes())?;
    Ok(true)
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// [`send`], logging a failure instead of returning it: the first one as a
/// warning, later ones (a watchdog ping every few seconds) at debug.
pub fn notify(states: &[State]) {
    if let Err(error) = send(states) {
        let message = message(states);
        if WARNED.swap(true, Ordering::Relaxed) {
            tracing::debug!(%error, %message, "could not notify the service manager");
        } else {
            tracing::warn!(%error, %message, "could not notify the service manager (later failures are logged at debug)");
        }
    }
}

/// `READY=1`.
pub fn ready() {
    notify(&[State::Ready]);
}

/// `STOPPING=1`.
pub fn stopping() {
    notify(&[State::Stopping]);
}

/// CLOCK_MONOTONIC now, in µs: the clock `MONOTONIC_USEC` is read against.
pub fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we own; CLOCK_MONOTONIC
    // always exists on Linux, so it cannot fail.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
    }
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}

/// How often to ping, from the raw `WATCHDOG_USEC` and `WATCHDOG_PID`
/// values, as sd_watchdog_enabled(3) reads them: off when the timeout is
/// missing, zero or malformed, or when `WATCHDOG_PID` names another
/// process; otherwise half the timeout, as systemd recommends.
pub fn ping_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// [`ping_interval`] for this process' environment.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    ping_interval(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// Send `WATCHDOG=1` every [`watchdog_interval`], forever; return at once
/// when there is no watchdog or no manager. Run it as a task of the
/// runtime whose liveness it vouches for.
pub async fn feed_watchdog() {
    feed_every(watchdog_interval()).await;
}

/// [`feed_watchdog`] for the new process of a binary upgrade, once it has
/// announced `MAINPID=` itself: the `WATCHDOG_PID` it inherited names the
/// process it replaces, and the watchdog is now its own, so only
/// `WATCHDOG_USEC` counts.
pub async fn feed_watchdog_as_new_main() {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    feed_every(ping_interval(usec.as_deref(), None, std::process::id())).await;
}

async fn feed_every(interval: Option<Duration>) {
    let Some(every) = interval.filter(|_| enabled()) else {
        return;
    };
    tracing::info!(
        every_ms = every.as_millis() as u64,
        "feeding the service manager's watchdog"
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        notify(&[State::Watchdog]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_one_line_per_state_and_a_status_stays_on_its_line() {
        let text = message(&[
            State::Ready,
            State::Status("reload failed: a\nb"),
            State::MainPid(42),
        ]);
        assert_eq!(text, "READY=1\nSTATUS=reload failed: a b\nMAINPID=42");
        assert_eq!(
            message(&[State::Reloading, State::MonotonicUsec(7)]),
            "RELOADING=1\nMONOTONIC_USEC=7"
        );
    }

    #[test]
    fn notify_socket_values_are_paths_or_abstract_names() {
        assert_eq!(
            Target::parse(OsStr::new("/run/systemd/notify")).unwrap(),
            Target::Path("/run/systemd/notify".into())
        );
        assert_eq!(
            Target::parse(OsStr::new("@ringway/x")).unwrap(),
            Target::Abstract(b"ringway/x".to_vec())
        );
        for bad in ["", "@", "notify.sock", "vsock:2:1234"] {
            assert!(Target::parse(OsStr::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_watchdog_follows_watchdog_usec_and_watchdog_pid() {
        let half = Some(Duration::from_millis(500));
        assert_eq!(ping_interval(Some("1000000"), None, 7), half);
        assert_eq!(ping_interval(Some("1000000"), Some("7"), 7), half);
        assert_eq!(ping_interval(Some("1000000"), Some("8"), 7), None);
        assert_eq!(ping_interval(Some("1000000"), Some("x"), 7), None);
        assert_eq!(ping_interval(Some("0"), None, 7), None);
        assert_eq!(ping_interval(Some("soon"), None, 7), None);
        assert_eq!(ping_interval(None, Some("7"), 7), None);
        assert_eq!(
            ping_interval(Some("1"), None, 7),
            Some(Duration::from_millis(1))
        );
    }

    fn received(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn a_datagram_reaches_a_socket_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Target::Path(path).send(b"READY=1").unwrap();
        assert_eq!(received(&socket), "READY=1");
    }

    #[test]
    fn a_datagram_reaches_an_abstract_socket() {
        let name = format!("ringway-notify-test-{}", std::process::id());
        let socket =
            UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        Target::parse(OsStr::new(&format!("@{name}")))
            .unwrap()
            .send(b"STOPPING=1")
            .unwrap();
        assert_eq!(received(&socket), "STOPPING=1");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Target::Path(dir.path().join("gone.sock"))
            .send(b"READY=1")
            .is_err());
    }

    #[test]
    fn the_monotonic_clock_does_not_go_back() {
        let a = monotonic_usec();
        let b = monotonic_usec();
        assert!(a > 0 && b >= a);
    }
}
