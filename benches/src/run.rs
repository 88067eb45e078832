//! The command line of `ringway-bench-backend` and the order of its
//! scenarios: latency through Redis, the same without Redis, then
//! fan-out. Also the process' outer bounds: an overall time limit, and
//! Ctrl-C / SIGTERM, both of which drop every process handle (killing the
//! children) before exiting.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use crate::fanout::{self, FanoutResult, FanoutSpec};
use crate::latency::{self, LatencyResult, LatencySpec};
use crate::nodes::{Deployment, NodeSettings};
use crate::procs;
use crate::report;

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

/// The machine a run was made on: the figures mean little without it.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process may use (shared by client, nodes and Redis).
    pub cpus: usize,
    /// `/proc/cpuinfo` model name.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// `redis-server --version`.
    pub redis: String,
    /// The workspace commit.
    pub git_commit: String,
    /// Whether `backend/` had uncommitted changes (the binary measured is
    /// what was built, not necessarily the commit).
    pub backend_uncommitted_changes: bool,
}

impl Machine {
    fn detect() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(workspace)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_default(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            redis: Command::new("redis-server")
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default(),
            git_commit: git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default(),
            backend_uncommitted_changes: git(&["status", "--porcelain", "--", "backend"])
                .is_some_and(|s| !s.is_empty()),
        }
    }
}

/// Redis' share of the latency at one rate: Redis run minus memory run.
#[derive(Debug, Clone, Serialize)]
pub struct RedisAdded {
    /// Messages/s.
    pub rate: f64,
    /// Through Redis, p50 ms.
    pub redis_p50_ms: f64,
    /// In memory, p50 ms.
    pub memory_p50_ms: f64,
    /// The difference, ms.
    pub added_p50_ms: f64,
    /// Through Redis, p99 ms.
    pub redis_p99_ms: f64,
    /// In memory, p99 ms.
    pub memory_p99_ms: f64,
    /// The difference, ms.
    pub added_p99_ms: f64,
    /// The deployment guides' promise, ms.
    pub promise_ms: f64,
    /// How far the added p99 is below the promise, ms (negative: above).
    pub p99_margin_ms: f64,
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
    /// Redis minus memory, per rate.
    pub redis_added: Vec<RedisAdded>,
    /// The fan-out runs.
    pub fanout: Option<FanoutResult>,
    /// WARN/ERROR lines the latency runs' nodes logged.
    pub node_warnings: Vec<String>,
    /// Wall time of the whole run, s.
    pub total_secs: f64,
}

/// Parse nothing more, run, print, write: the binary's whole body.
pub fn main(opts: Options) -> ExitCode {
    procs::kill_children_on_panic();
    let opts = opts.settled();
    let (max_secs, json) = (opts.max_secs, opts.json.clone());
    crate::driver::drive(None, max_secs, json.as_deref(), run(opts), report::render)
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
    let redis_added = opts
        .rates
        .iter()
        .filter_map(|&rate| {
            let find = |b: &str| {
                latency_runs
                    .iter()
                    .find(|r| r.backplane == b && r.target_rate == rate)
            };
            let (r, m) = (find("redis")?, find("memory")?);
            let added_p99 = r.latency.p99_ms - m.latency.p99_ms;
            Some(RedisAdded {
                rate,
                redis_p50_ms: r.latency.p50_ms,
                memory_p50_ms: m.latency.p50_ms,
                added_p50_ms: r.latency.p50_ms - m.latency.p50_ms,
                redis_p99_ms: r.latency.p99_ms,
                memory_p99_ms: m.latency.p99_ms,
                added_p99_ms: added_p99,
                promise_ms: PROMISE_MS,
                p99_margin_ms: PROMISE_MS - added_p99,
            })
        })
        .collect();
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
        machine: Machine::detect(),
        options: opts,
        latency: latency_runs,
        redis_added,
        fanout,
        node_warnings,
        total_secs: began.elapsed().as_secs_f64(),
    })
}
