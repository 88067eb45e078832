//! systemd's readiness protocol (sd_notify): `READY=1` once every listener
//! accepts, `RELOADING=1` … `READY=1` around a reload, `STOPPING=1` when
//! shutdown begins. A datagram to `$NOTIFY_SOCKET`; nothing when it is unset.

use std::os::unix::net::UnixDatagram;

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Every listener accepts.
pub fn ready() {
    send("READY=1");
}

/// Every listener accepts, in a process started with `--upgrade` inside the
/// unit of the one it replaces: it becomes the unit's main process.
pub fn ready_as_main() {
    send(&format!("MAINPID={}\nREADY=1", std::process::id()));
}

/// Shutdown has begun.
pub fn stopping() {
    send("STOPPING=1");
}

/// A reload starts.
pub fn reloading() {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
    send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// A reload ended: ready again, with its outcome as the status line.
pub fn reloaded(result: Result<(), &str>) {
    match result {
        Ok(()) => send("READY=1\nSTATUS=reload ok"),
        Err(why) => send(&format!("READY=1\nSTATUS=reload failed: {why}")),
    }
}
