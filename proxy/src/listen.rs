//! The client-facing listeners and the worker threads that accept on them.
//!
//! Plugged into Pingora's server as a service, so Pingora's process
//! lifecycle still runs it: signals, graceful shutdown, and the `--upgrade`
//! hand-over — each listening socket is registered in Pingora's table of
//! listen fds under its address, so a new process started with `--upgrade`
//! receives it on SIGQUIT and no connection is refused during a binary
//! upgrade. The sockets themselves are plain tokio listeners: each worker
//! thread runs a single-threaded runtime with its own accept loop on a
//! duplicate of every listening socket, and every connection stays on the
//! thread that accepted it (no cross-thread wake-ups, lock-free per-thread
//! buffer and upstream pools).
//!
//! A connection beyond `[server] max_connections` is closed the moment it is
//! accepted, before any read, and counted: the process never runs out of
//! file descriptors, so health checks and upstream connects keep working
//! under a connection flood.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::Service;

use crate::process::Process;

/// Connections queued by the kernel before `accept` (as Pingora's listeners).
const BACKLOG: u32 = 65535;

/// The listening service.
pub struct Listeners {
    process: Arc<Process>,
    addrs: Vec<SocketAddr>,
    threads: usize,
}

impl Listeners {
    /// Listen on `addrs` (in config order) with `threads` worker threads.
    pub fn new(process: Arc<Process>, addrs: Vec<SocketAddr>, threads: usize) -> Self {
        Self {
            process,
            addrs,
            threads: threads.max(1),
        }
    }
}

/// Bind `addr`, or adopt the socket a previous process handed over.
fn listener_for(
    addr: SocketAddr,
    fds: Option<&ListenFds>,
) -> std::io::Result<std::net::TcpListener> {
    let key = addr.to_string();
    if let Some(fd) = fds.and_then(|t| t.lock().get(&key).copied()) {
        // SAFETY: the fd was received from the old process for this address
        // and is owned by nothing else in this process.
        let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        listener.set_nonblocking(true)?;
        tracing::info!(%addr, "took the listening socket over from the previous process");
        return Ok(listener);
    }
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(BACKLOG)?.into_std()?;
    if let Some(table) = fds {
        table.lock().add(key, listener.as_raw_fd());
    }
    Ok(listener)
}

#[async_trait]
impl Service for Listeners {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _per_fd: usize,
    ) {
        let mut sockets = Vec::new();
        for addr in &self.addrs {
            match listener_for(*addr, fds.as_ref()) {
                Ok(l) => sockets.push(l),
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot listen; exiting");
                    std::process::exit(1);
                }
            }
        }
        for t in 0..self.threads {
            let mut mine = Vec::new();
            for (i, s) in sockets.iter().enumerate() {
                match s.try_clone() {
                    Ok(c) => mine.push((i, c)),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot share a listening socket with a worker");
                        std::process::exit(1);
                    }
                }
            }
            let process = self.process.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("ringway-w{t}"))
                .spawn(move || worker(process, mine));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a worker thread");
                std::process::exit(1);
            }
        }
        tracing::info!(
            listeners = self.addrs.len(),
            threads = self.threads,
            "accepting connections"
        );
        // Keep the sockets registered (for the hand-over) until shutdown.
        let _ = shutdown.changed().await;
        tracing::info!("shutting down: no new connections; open ones finish");
        self.process.begin_shutdown();
    }

    fn name(&self) -> &str {
        "ringway listeners"
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(self.addrs.iter().map(|a| a.to_string()).collect())
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }
}

/// One worker thread: a single-threaded runtime accepting on every listener.
fn worker(process: Arc<Process>, sockets: Vec<(usize, std::net::TcpListener)>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot build a worker runtime");
            std::process::exit(1);
        }
    };
    runtime.block_on(async move {
        for (index, socket) in sockets {
            let listener = match tokio::net::TcpListener::from_std(socket) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot register a listening socket");
                    std::process::exit(1);
                }
            };
            tokio::spawn(accept_loop(process.clone(), index, listener));
        }
        // Connections and tunnels run on this runtime until the process
        // exits (after the grace period); the thread never returns.
        std::future::pending::<()>().await;
    });
}

async fn accept_loop(process: Arc<Process>, index: usize, listener: tokio::net::TcpListener) {
    let mut shutdown = process.shutdown_watch();
    let stats = process.stats.listener(index).clone();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((tcp, peer)) => match process.admission.accept() {
                Some(slot) => {
                    tokio::spawn(crate::conn::serve(process.clone(), index, tcp, peer, slot));
                }
                None => {
                    // At the cap: an idle connection may give way.
                    let (process, stats) = (process.clone(), stats.clone());
                    tokio::spawn(async move {
                        match process.admission.reclaim().await {
                            Some(slot) => crate::conn::serve(process, index, tcp, peer, slot).await,
                            None => {
                                stats.refused_max_connections.fetch_add(1, Relaxed);
                                drop(tcp);
                            }
                        }
                    });
                }
            },
            Err(e) => {
                // Out of descriptors despite the cap (another part of the
                // process?): calm down instead of spinning on EMFILE.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
