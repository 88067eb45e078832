//! `ringway-bench-backend`: what it measures of `ringway-backend`, in order
//! (latency through Redis, the same without Redis, then fan-out), and its
//! command line. The parts are its own: [`nodes`] starts Redis and nodes
//! with the `ringway-tests` harness, [`client`] is a lean protocol client,
//! [`clock`] the one monotonic time base, [`latency`] and [`fanout`] the two
//! measurements, [`report`] the tables; machine, statistics, CPU metering
//! and the outer frame are the crate's shared ones.

pub mod client;
pub mod clock;
pub mod fanout;
pub mod latency;
pub mod nodes;
pub mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use crate::machine::Machine;
use crate::procs;
use fanout::{FanoutResult, FanoutSpec};
use latency::{LatencyResult, LatencySpec};
use nodes::{Deployment, NodeSettings};

/// The latency the deployment guides promise Redis adds, ms.
pub const PROMISE_MS: f64 = 5.0;

/// `ringway-bench-backend` command line.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    name = "ringway-bench-backend",
    about = "Measure ringway-backend: cross-node publish-to-deliver latency (through Redis and, \
             as a baseline, in memory) and fan-out to many local clients. Needs \
             ringway-backend built in the same target profile, and redis-server installed."
)]
pub struct Options {
    /// Measured window of each latency run and paced fan-out phase, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up before each window, seconds (sent, not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Publish rates of the latency runs, messages/s.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1000.0, 10000.0])]
    pub rates: Vec<f64>,
    /// Skip the latency runs.
    #[arg(long)]
    pub no_latency: bool,
    /// Skip the in-memory baseline of the latency runs.
    #[arg(long)]
    pub no_memory: bool,
    /// Skip the fan-out runs.
    #[arg(long)]
    pub no_fanout: bool,
    /// Subscribers of the fan-out runs (all on one node).
    #[arg(long, default_value_t = 1000)]
    pub fanout_clients: usize,
    /// Messages of the fan-out burst phase (0: no burst).
    #[arg(long, default_value_t = 2000)]
    pub fanout_burst: u64,
    /// Rates of the paced fan-out phases, messages/s (each to every client).
    #[arg(long, value_delimiter = ',', default_values_t = vec![20.0, 100.0])]
    pub fanout_rates: Vec<f64>,
    /// Do not repeat the fan-out phases with the publisher on a second node.
    #[arg(long)]
    pub no_fanout_cross: bool,
    /// WS_RATE_LIMIT and WS_RATE_BURST of every node.
    #[arg(long, default_value_t = 1_000_000)]
    pub rate_limit: u64,
    /// WS_OUTBOUND_QUEUE of every node (the burst must fit in it).
    #[arg(long, default_value_t = 65_536)]
    pub outbound_queue: usize,
    /// WS_HEARTBEAT_INTERVAL of every node, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub heartbeat_interval: f64,
    /// Another environment variable for every node (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub node_env: Vec<(String, String)>,
    /// Write every figure as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// A smoke run: 2 s windows, 1 s warm-ups, 100 fan-out clients, a
    /// 200-message burst (overrides those flags).
    #[arg(long)]
    pub quick: bool,
    /// Give up (and kill every child) after this many seconds in all.
    #[arg(long, default_value_t = 900)]
    pub max_secs: u64,
}

impl Options {
    fn settled(mut self) -> Options {
        if self.quick {
            self.duration = 2.0;
            self.warmup = 1.0;
            self.fanout_clients = 100;
            self.fanout_burst = 200;
        }
        self
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How the tool was invoked.
    pub command: String,
    /// Where.
    pub machine: Machine,
    /// With which settings (after `--quick`).
    pub options: Options,
    /// Latency runs, Redis first, then memory.
    pub latency: Vec<LatencyResult>,
    /// The fan-out runs.
    pub fanout: Option<FanoutResult>,
    /// WARN/ERROR lines the latency runs' nodes logged.
    pub node_warnings: Vec<String>,
    /// Wall time of the whole run, s.
    pub total_secs: f64,
}

/// Parse nothing more, run, print, write: the binary's whole body.
pub fn main(opts: Options) -> ExitCode {
    let opts = opts.settled();
    let (max_secs, json) = (opts.max_secs, opts.json.clone());
    crate::driver::drive(None, max_secs, run(opts), |report| {
        print!("{}", report::render(&report));
        json.map_or(Ok(()), |path| crate::driver::write_json(&path, &report))
    })
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

/// Run every scenario `opts` asks for.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let began = Instant::now();
    let clients = if opts.no_fanout {
        0
    } else {
        opts.fanout_clients
    };
    procs::ensure_fd_limit(clients as u64 + 256)?;
    let settings = NodeSettings {
        rate_limit: opts.rate_limit,
        outbound_queue: opts.outbound_queue,
        heartbeat_secs: opts.heartbeat_interval,
        extra_env: opts.node_env.clone(),
    };
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    let mut latency_runs = Vec::new();
    let mut node_warnings = Vec::new();
    if !opts.no_latency {
        let mut backplanes = vec!["redis"];
        if !opts.no_memory {
            backplanes.push("memory");
        }
        for backplane in backplanes {
            let dep = match backplane {
                "redis" => Deployment::redis(2, &settings).await?,
                _ => Deployment::memory_pair(&settings).await?,
            };
            for &rate in &opts.rates {
                let spec = LatencySpec {
                    rate,
                    warmup: secs(opts.warmup),
                    duration: secs(opts.duration),
                    drain: Duration::from_secs(5),
                };
                eprintln!("latency: {backplane}, {rate}/s …");
                let r = latency::measure(&dep, 0, 1, spec)
                    .await
                    .with_context(|| format!("latency run ({backplane}, {rate}/s)"))?;
                eprintln!(
                    "  p50 {:.3} ms, p99 {:.3} ms, {:.0}/s delivered, lost {}",
                    r.latency.p50_ms, r.latency.p99_ms, r.achieved_delivery_rate, r.lost
                );
                latency_runs.push(r);
            }
            node_warnings.extend(dep.warnings());
        }
    }
    let fanout = if opts.no_fanout {
        None
    } else {
        let spec = FanoutSpec {
            clients: opts.fanout_clients,
            burst: opts.fanout_burst,
            paced_rates: opts.fanout_rates.clone(),
            warmup: secs(opts.warmup),
            duration: secs(opts.duration),
            cross_node: !opts.no_fanout_cross,
            connect_concurrency: 32,
            drain_idle: Duration::from_secs(10),
        };
        eprintln!("fan-out: {} clients …", spec.clients);
        Some(
            fanout::measure(&settings, &spec)
                .await
                .context("fan-out run")?,
        )
    };
    Ok(Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::detect(&[("redis-server", &["redis-server", "--version"])]),
        options: opts,
        latency: latency_runs,
        fanout,
        node_warnings,
        total_secs: began.elapsed().as_secs_f64(),
    })
}
