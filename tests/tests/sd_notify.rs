//! sd_notify from the real binaries, heard on a datagram socket the test
//! owns and passes as `NOTIFY_SOCKET`, as systemd would: `READY=1` only once
//! every listener accepts, `STOPPING=1` on SIGTERM, `WATCHDOG=1` when
//! `WATCHDOG_USEC` asks; for the proxy also `RELOADING=1` (with
//! `MONOTONIC_USEC`) then `READY=1` around a SIGHUP, and `MAINPID=` from
//! a process that took the listeners over (which then feeds the watchdog
//! it inherited), while the old one never says `STOPPING=1` (that would
//! make systemd stop the unit).

use std::net::SocketAddr;
use std::time::Duration;

use ringway_tests::backend::{eventually, Backend};
use ringway_tests::configs::ProxyConfig;
use ringway_tests::notify_socket::NotifySocket;
use ringway_tests::{free_addr, Proxy};

/// Generous: a cold debug build on a busy 2-core machine.
const WITHIN: Duration = Duration::from_secs(20);

fn proxy_config() -> String {
    ProxyConfig::over([free_addr()]).toml()
}

/// One connect, no retry: what was announced must already be true.
fn accepts_now(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// Whether any datagram received up to now (queued ones included) had `line`.
fn said_so_far(notify: &mut NotifySocket, line: &str) -> bool {
    notify.drain();
    notify.seen().iter().any(|n| n.has(line))
}

async fn heard(notify: &mut NotifySocket, line: &str, log: impl Fn() -> String) {
    if let Err(e) = notify.wait_for(line, WITHIN).await {
        panic!("{e}\nprocess log:\n{}", log());
    }
}

#[tokio::test]
async fn the_proxy_says_ready_only_once_every_listener_accepts_and_stopping_on_sigterm() {
    let mut notify = NotifySocket::bind();
    let proxy = Proxy::spawn(&proxy_config(), &[notify.env()]);
    heard(&mut notify, "READY=1", || proxy.child.log()).await;
    for addr in [proxy.listen, proxy.admin] {
        assert!(accepts_now(addr), "READY=1 before {addr} accepts");
    }
    let first = &notify.seen()[0];
    assert!(
        first.has("READY=1") && first.get("MAINPID").is_none(),
        "a plain start announces READY=1 first, without MAINPID: {:?}",
        notify.seen()
    );

    proxy.child.signal(libc::SIGTERM);
    heard(&mut notify, "STOPPING=1", || proxy.child.log()).await;
    assert!(
        !notify.seen().iter().any(|n| n.has("WATCHDOG=1")),
        "no WATCHDOG_USEC, yet pinged: {:?}",
        notify.seen()
    );
}

#[tokio::test]
async fn the_proxy_does_not_say_ready_while_a_listener_cannot_bind() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap();
    let mut notify = NotifySocket::bind();
    let config = proxy_config().replace("{LISTEN}", &listen.to_string());
    let mut proxy = Proxy::spawn(&config, &[notify.env()]);

    // The event: the proxy tried to bind the held port and failed (it
    // retries), or gave up and exited.
    let tried = eventually(WITHIN, || {
        let tried = proxy.child.log().contains("in use") || proxy.child.try_wait().is_some();
        async move { tried }
    })
    .await;
    assert!(tried, "no bind attempt\n{}", proxy.child.log());
    assert!(
        !said_so_far(&mut notify, "READY=1"),
        "READY=1 while {listen} was not bound: {:?}",
        notify.seen()
    );
    if proxy.child.try_wait().is_some() {
        return;
    }
    drop(held);
    heard(&mut notify, "READY=1", || proxy.child.log()).await;
    assert!(accepts_now(listen), "READY=1 before {listen} accepts");
}

#[tokio::test]
async fn the_proxy_brackets_a_sighup_with_reloading_and_ready() {
    let mut notify = NotifySocket::bind();
    let proxy = Proxy::spawn(&proxy_config(), &[notify.env()]);
    heard(&mut notify, "READY=1", || proxy.child.log()).await;

    let before = ringway_notify::monotonic_usec();
    proxy.child.signal(libc::SIGHUP);
    let reloading = notify
        .next(WITHIN)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.child.log()));
    let after = ringway_notify::monotonic_usec();
    assert!(reloading.has("RELOADING=1"), "{reloading:?}");
    let stamp: u64 = reloading
        .get("MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"));
    assert!(
        (before..=after).contains(&stamp),
        "MONOTONIC_USEC={stamp} is not CLOCK_MONOTONIC between the signal ({before}) and its receipt ({after})"
    );

    let done = notify
        .next(WITHIN)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.child.log()));
    assert!(done.has("READY=1"), "after RELOADING=1: {done:?}");
    let status = done.get("STATUS").unwrap_or_default();
    assert!(
        status == "reload ok" || status.starts_with("reload failed: "),
        "STATUS= says how the reload ended: {done:?}"
    );
    assert!(accepts_now(proxy.listen), "the proxy stopped serving");
}

#[tokio::test]
async fn the_proxy_feeds_the_watchdog_when_watchdog_usec_asks() {
    let mut notify = NotifySocket::bind_abstract();
    let proxy = Proxy::spawn(
        &proxy_config(),
        &[notify.env(), ("WATCHDOG_USEC", "1000000")],
    );
    heard(&mut notify, "READY=1", || proxy.child.log()).await;
    for _ in 0..2 {
        heard(&mut notify, "WATCHDOG=1", || proxy.child.log()).await;
    }
}

#[tokio::test]
async fn a_proxy_that_takes_the_listeners_over_announces_its_pid_and_the_old_one_never_says_stopping(
) {
    let mut notify = NotifySocket::bind();
    let mut old = Proxy::spawn(&proxy_config(), &[notify.env()]);
    heard(&mut notify, "READY=1", || old.child.log()).await;

    // Under systemd the new process inherits the old one's watchdog
    // variables; the old one here has none, so every ping is the new one's.
    let old_pid = old.child.pid().to_string();
    let new = old.spawn_successor(&[
        notify.env(),
        ("WATCHDOG_USEC", "1000000"),
        ("WATCHDOG_PID", &old_pid),
    ]);
    old.child.signal(libc::SIGQUIT);
    let announced = notify
        .wait_for("READY=1", WITHIN)
        .await
        .unwrap_or_else(|e| panic!("{e}\nold:\n{}\nnew:\n{}", old.child.log(), new.log()));
    assert_eq!(
        announced.get("MAINPID"),
        Some(new.pid().to_string().as_str()),
        "the new process names itself the main process with READY=1: {announced:?}"
    );
    assert!(accepts_now(old.listen));
    heard(&mut notify, "WATCHDOG=1", || new.log()).await;

    // Pingora's old process waits 5 s for the new one to take over, then
    // its grace period (1 s here), then exits: the event that closes the
    // window in which it could have said STOPPING=1.
    let exited = eventually(WITHIN, || {
        let exited = old.child.try_wait().is_some();
        async move { exited }
    })
    .await;
    assert!(exited, "the old proxy did not exit\n{}", old.child.log());
    assert!(
        !said_so_far(&mut notify, "STOPPING=1"),
        "a hand-over must not tell systemd the service stops: {:?}",
        notify.seen()
    );
    assert!(accepts_now(old.listen), "the new proxy does not serve");

    new.signal(libc::SIGTERM);
    heard(&mut notify, "STOPPING=1", || new.log()).await;
}

#[tokio::test]
async fn the_backend_says_ready_once_it_listens_feeds_the_watchdog_and_says_stopping() {
    let mut notify = NotifySocket::bind_abstract();
    let backend = Backend::spawn_at(
        free_addr(),
        "notify-1",
        &[notify.env(), ("WATCHDOG_USEC", "1000000")],
    );
    heard(&mut notify, "READY=1", || backend.child.log()).await;
    assert!(
        accepts_now(backend.addr),
        "READY=1 before the listener accepts"
    );
    let before_ready = &notify.seen()[..notify.seen().len() - 1];
    assert!(
        before_ready.iter().all(|n| n.lines == ["WATCHDOG=1"]),
        "only watchdog pings may come before READY=1: {:?}",
        notify.seen()
    );

    for _ in 0..2 {
        heard(&mut notify, "WATCHDOG=1", || backend.child.log()).await;
    }
    backend.child.signal(libc::SIGTERM);
    heard(&mut notify, "STOPPING=1", || backend.child.log()).await;
}
