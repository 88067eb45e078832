//! What the proxy tells its service manager (systemd `Type=notify`, over
//! the protocol in the `ringway-notify` crate), and when:
//!
//! - `READY=1` once this process holds a listening socket on every
//!   configured address (each `[[listener]]` and `admin.listen`). Pingora
//!   0.9.1 binds inside each service's start and offers no hook after it
//!   (its service-readiness notifier fires *before* binding), so
//!   [`lifecycle_service`] polls this process' own descriptors
//!   (`/proc/self/fd`: a socket in the listening state bound to the
//!   address). Not a TCP connect: during `--upgrade` the old process, or
//!   any process sharing the port, would answer for us, and a proxy whose
//!   bind failed would look ready. Once the listener layer binds by
//!   itself, it calls [`ready`] right after binding and the poll goes.
//!   Started with `--upgrade`, the same datagram carries `MAINPID=` (this
//!   process), so systemd follows the new binary (`NotifyAccess=all`).
//! - `WATCHDOG=1` every `WATCHDOG_USEC`/2 after that, from the same task:
//!   it vouches that a runtime of this process still runs, nothing more.
//!   After `--upgrade` the inherited `WATCHDOG_PID` names the old process,
//!   so the new one, now the main process, feeds the watchdog regardless.
//! - `STOPPING=1` when SIGTERM or SIGINT starts a shutdown ([`run_args`]).
//!   Not on SIGQUIT: that hands the listeners to a new process and the
//!   service goes on in it; `STOPPING=1` from the old one would make
//!   systemd stop the unit, new process included.
//! - `RELOADING=1` with `MONOTONIC_USEC=` when a reload starts
//!   ([`reloading`]), then `READY=1` with `STATUS=reload ok` or
//!   `STATUS=reload failed: <first error>` when it ends ([`reloaded`]).
//!
//! It must never change what the proxy does: nothing is sent without
//! `NOTIFY_SOCKET`, and a failed send is logged, never fatal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::time::Duration;

use pingora_core::server::{
    RunArgs, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch, UnixShutdownSignalWatch,
};
use pingora_core::services::background::{
    background_service, BackgroundService, GenBackgroundService,
};
use ringway_notify::State;

use crate::config::Config;

/// How often the start-up poll looks at this process' sockets: cheap (a
/// directory listing and two syscalls per descriptor), and short next to
/// the time Pingora takes to start.
const BIND_POLL: Duration = Duration::from_millis(10);

/// Tell the manager the proxy serves: every listener accepts.
pub fn ready() {
    ringway_notify::ready();
}

/// Tell the manager this process is now the service's main process and
/// serves (`MAINPID=` + `READY=1`): the new binary of an upgrade.
pub fn ready_as_main() {
    ringway_notify::notify(&[State::MainPid(std::process::id()), State::Ready]);
}

/// `MAINPID=pid` alone: for an upgrade whose new process is announced by
/// someone else than itself.
pub fn main_pid(pid: u32) {
    ringway_notify::notify(&[State::MainPid(pid)]);
}

/// A reload has begun: `RELOADING=1` and `MONOTONIC_USEC=` now.
pub fn reloading() {
    ringway_notify::notify(&[
        State::Reloading,
        State::MonotonicUsec(ringway_notify::monotonic_usec()),
    ]);
}

/// A reload has ended, applied or refused: `READY=1` and its outcome as
/// the status line `systemctl status` shows.
pub fn reloaded(result: Result<(), &str>) {
    let status = reload_status(result);
    ringway_notify::notify(&[State::Ready, State::Status(&status)]);
}

/// The `STATUS=` text for a reload's outcome.
pub fn reload_status(result: Result<(), &str>) -> String {
    match result {
        Ok(()) => "reload ok".to_owned(),
        Err(first_error) => format!("reload failed: {first_error}"),
    }
}

/// Pingora's signal handling (SIGTERM graceful, SIGINT fast, SIGQUIT
/// hand-over) with `STOPPING=1` sent first when the signal stops the
/// service. Pass to `Server::run` in place of the default.
pub fn run_args() -> RunArgs {
    RunArgs {
        shutdown_signal: Box::new(AnnouncedShutdown),
    }
}

/// Whether `signal` ends the service (rather than handing it over).
pub fn stops_the_service(signal: &ShutdownSignal) -> bool {
    !matches!(signal, ShutdownSignal::GracefulUpgrade)
}

struct AnnouncedShutdown;

#[async_trait::async_trait]
impl ShutdownSignalWatch for AnnouncedShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let signal = UnixShutdownSignalWatch.recv().await;
        if stops_the_service(&signal) {
            ringway_notify::stopping();
        }
        signal
    }
}

/// The background service that sends `READY=1` once every address of
/// `config` is bound and listening in this process (with `MAINPID=` when
/// `upgrade`), then feeds the watchdog. Does nothing without a manager.
pub fn lifecycle_service(config: &Config, upgrade: bool) -> GenBackgroundService<Lifecycle> {
    let mut addrs: Vec<SocketAddr> = config.listeners.iter().map(|l| l.listen).collect();
    addrs.extend(config.admin.as_ref().map(|a| a.listen));
    let mut service = background_service("sd_notify", Lifecycle { addrs, upgrade });
    service.threads = Some(1);
    service
}

/// See [`lifecycle_service`].
pub struct Lifecycle {
    addrs: Vec<SocketAddr>,
    upgrade: bool,
}

#[async_trait::async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if !ringway_notify::enabled() {
            return;
        }
        loop {
            match listening_addrs() {
                Ok(bound) if unbound(&self.addrs, &bound).is_empty() => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot list this process' sockets; READY=1 is not sent");
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(BIND_POLL) => {}
                _ = shutdown.changed() => return,
            }
        }
        tracing::info!(
            listeners = self.addrs.len(),
            "every listener is bound: telling the service manager READY=1"
        );
        // Pings go on through the grace period of a shutdown, until the
        // runtime stops: systemd still watches a stopping service.
        if self.upgrade {
            ready_as_main();
            ringway_notify::feed_watchdog_as_new_main().await;
        } else {
            ready();
            ringway_notify::feed_watchdog().await;
        }
    }
}

/// The addresses of `expected` that no socket of `listening` is bound to.
pub fn unbound(expected: &[SocketAddr], listening: &[SocketAddr]) -> Vec<SocketAddr> {
    expected
        .iter()
        .filter(|want| {
            !listening
                .iter()
                .any(|have| have.ip() == want.ip() && have.port() == want.port())
        })
        .copied()
        .collect()
}

/// The local addresses of every TCP socket this process holds in the
/// listening state.
pub fn listening_addrs() -> std::io::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let name = entry?.file_name();
        if let Some(addr) = name
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
            .and_then(listening_addr)
        {
            out.push(addr);
        }
    }
    Ok(out)
}

/// `fd`'s local address if it is an IPv4/IPv6 socket in the listening state.
fn listening_addr(fd: RawFd) -> Option<SocketAddr> {
    let mut accepting: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `accepting`, which
    // we own. A descriptor that is not a socket, or was closed since the
    // listing, makes it fail (ENOTSOCK, EBADF): nothing is read then.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut accepting as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || accepting == 0 {
        return None;
    }
    // SAFETY: an all-zero sockaddr_storage is a valid value of it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into `storage`, which
    // is large enough for every address family.
    let rc = unsafe {
        libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let v4 = unsafe {
                &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(v4.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let v6 = unsafe {
                &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(v6.sin6_port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_bound_when_a_listening_socket_has_its_ip_and_port() {
        let expected = [
            addr("0.0.0.0:8080"),
            addr("127.0.0.1:9090"),
            addr("[::]:8443"),
        ];
        let listening = [
            addr("0.0.0.0:8080"),
            addr("[::]:8443"),
            addr("127.0.0.1:9091"),
        ];
        assert_eq!(unbound(&expected, &listening), vec![addr("127.0.0.1:9090")]);
        assert!(unbound(
            &expected,
            &[listening[0], listening[1], addr("127.0.0.1:9090")]
        )
        .is_empty());
    }

    #[test]
    fn this_process_listening_sockets_are_found_and_a_merely_bound_one_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listening = listener.local_addr().unwrap();
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let bound_socket = tokio::net::TcpSocket::new_v4().unwrap();
        bound_socket.bind(addr("127.0.0.1:0")).unwrap();
        let bound_only = bound_socket.local_addr().unwrap();

        let found = listening_addrs().unwrap();
        assert!(found.contains(&listening), "{found:?}");
        if let Some(v6) = v6 {
            let v6 = v6.local_addr().unwrap();
            assert!(found.contains(&v6), "{found:?}");
        }
        assert!(!found.contains(&bound_only), "{found:?}");
        drop(bound_socket);
        drop(listener);
        assert!(!listening_addrs().unwrap().contains(&listening));
    }

    #[test]
    fn a_reload_outcome_reads_as_one_status_line() {
        assert_eq!(reload_status(Ok(())), "reload ok");
        assert_eq!(
            reload_status(Err("upstream.chat.servers[0].weight: must be at least 1")),
            "reload failed: upstream.chat.servers[0].weight: must be at least 1"
        );
    }

    #[test]
    fn only_a_hand_over_keeps_the_service_going() {
        assert!(stops_the_service(&ShutdownSignal::GracefulTerminate));
        assert!(stops_the_service(&ShutdownSignal::FastShutdown));
        assert!(!stops_the_service(&ShutdownSignal::GracefulUpgrade));
    }
}
