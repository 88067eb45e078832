//! `ringway-backend` binary: parse the CLI, start the node (or `--nodes N`
//! of them sharing one backplane), stop on SIGTERM or Ctrl-C; tell a
//! service manager (sd_notify) when it stops and, when asked, that it lives.

use clap::Parser;
use ringway_backend::config::{Cli, Config};
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
    let config = Config::from_cli(&cli)?;
    tokio::spawn(ringway_notify::feed_watchdog()); // ringway:notify WATCHDOG=1
    ringway_backend::run(config, cli.nodes, shutdown_signal()).await?;
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
    ringway_notify::stopping(); // ringway:notify STOPPING=1
}
