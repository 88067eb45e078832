//! `ringway-backend` binary: parse the CLI, start the node (or `--nodes N`
//! of them sharing one backplane), stop on SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::Parser;
use ringway_backend::config::{Cli, Config};
use ringway_backend::{Backplane, Node};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// jemalloc returns freed memory to the OS; with many short-lived
/// connections glibc's arenas turn churn into creeping RSS.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();

    let cli = Cli::parse();
    let base = Config::from_cli(&cli)?;
    let backplane = Backplane::new(&base)?;
    let (stop, stopped) = watch::channel(false);
    let mut nodes = Vec::new();
    for i in 0..cli.nodes.max(1) {
        let mut config = base.clone();
        if cli.nodes > 1 {
            config.listen.set_port(base.listen.port() + i);
            config.worker_id = format!("{}-{}", base.worker_id, i + 1);
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let node = Node::new(config, &backplane);
        tracing::info!(
            listen = %listener.local_addr()?,
            worker_id = %node.config.worker_id,
            mode = node.mode,
            "ringway-backend listening"
        );
        let mut stopped = stopped.clone();
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        nodes.push(tokio::spawn(ringway_backend::serve(
            listener, node, shutdown,
        )));
    }
    shutdown_signal().await;
    stop.send_replace(true);
    for node in nodes {
        node.await.context("node task")?.context("serving")?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on the first SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
