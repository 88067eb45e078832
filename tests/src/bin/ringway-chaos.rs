//! `ringway-chaos`: the long chaos run, outside the test suite.
//! `scripts/chaos.sh` runs it twice, declared durable and not. It prints
//! one line and one JSON object of counts, and exits 1 when a message was
//! lost, duplicated or reordered — or, declared durable, when any client
//! was told of a reset.

use std::time::Duration;

use clap::Parser;
use ringway_tests::chaos::{run, ChaosOpts};

/// Command line.
#[derive(Parser)]
#[command(about = "Kill nodes and restart Redis under load; count what clients lost")]
struct Cli {
    /// Subscribing clients.
    #[arg(long, default_value = "200")]
    clients: usize,
    /// Rooms (one publisher each).
    #[arg(long, default_value = "10")]
    rooms: usize,
    /// Seconds of faults.
    #[arg(long, default_value = "300")]
    secs: u64,
    /// Seconds between node kills.
    #[arg(long, default_value = "10")]
    kill_every: u64,
    /// Milliseconds between two messages of one publisher.
    #[arg(long, default_value = "100")]
    publish_every_ms: u64,
    /// Run the nodes without REDIS_DURABLE=1 (resets allowed, losses not).
    #[arg(long)]
    not_durable: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.rooms > 0 && cli.clients >= cli.rooms,
        "--clients must be at least --rooms > 0"
    );
    let opts = ChaosOpts {
        clients: cli.clients,
        rooms: cli.rooms,
        duration: Duration::from_secs(cli.secs),
        kill_every: Duration::from_secs(cli.kill_every.max(2)),
        publish_every: Duration::from_millis(cli.publish_every_ms),
        durable: !cli.not_durable,
    };
    let report = run(&opts).await;
    println!("{}", report.line());
    println!("{}", serde_json::to_string(&report)?);
    let t = report.tally;
    let broken =
        t.lost > 0 || t.duplicated > 0 || t.out_of_order > 0 || (opts.durable && t.resets > 0);
    if broken {
        eprintln!("FAILED: {}", report.line());
        std::process::exit(1);
    }
    Ok(())
}
