//! The command line of `ringway-load`, the load generator the proxy
//! benchmark drives (and that anyone can run by hand): `http`, `ws-echo`
//! and `ws-idle`, each printing a short summary, or with `--json` one JSON
//! document on stdout that `ringway-bench-proxies` reads back.
//!
//! It runs on a multi-threaded tokio runtime with one worker per CPU it may
//! use, so `taskset -c 1 ringway-load …` gets one worker on core 1. Every
//! run is bounded (`--max-secs`), and only 127.0.0.0/8 targets are
//! accepted.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::dial::{self, Target};
use crate::httpload::{self, HttpResult, HttpSpec};
use crate::procs::{self, CpuShare, Watched};
use crate::wsload::{self, EchoResult, EchoSpec, IdleResult, IdleSpec, OpenSpec};

/// `ringway-load` command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ringway-load",
    about = "Loopback load for proxies: keep-alive HTTP GETs, WebSocket echo, idle WebSocket \
             hold with the proxy's RSS. Every request carries the sticky key s<i> as ?sid= and \
             X-Session-Id."
)]
pub struct Cli {
    /// Print one JSON document on stdout instead of the summary.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up after this many seconds in all.
    #[arg(long, global = true, default_value_t = 300)]
    pub max_secs: u64,
    /// Tokio worker threads (default: the CPUs this process may use).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// What to do.
    #[command(subcommand)]
    pub mode: Mode,
}

/// The three loads.
#[derive(Debug, Clone, Subcommand)]
pub enum Mode {
    /// Keep-alive HTTP/1.1 GETs over C connections for D seconds.
    Http(HttpArgs),
    /// N WebSockets, each echoing M messages of S bytes, one in flight.
    WsEcho(EchoArgs),
    /// Open N WebSockets, hold them, and read a process' RSS around it.
    WsIdle(IdleArgs),
}

/// Flags every mode has.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Target URL (http:// for `http`, ws:// otherwise), loopback only.
    #[arg(long)]
    pub url: String,
    /// Source addresses to rotate over, comma-separated (127.0.0.0/8).
    #[arg(long, default_value = "")]
    pub src: String,
    /// Sticky keys are PREFIX followed by the connection index.
    #[arg(long, default_value = "s")]
    pub key_prefix: String,
    /// Limit of one connect, upgrade, request or echo, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Report the CPU use of this process over the measured window
    /// (NAME=PID, repeatable; equal names are added up).
    #[arg(long = "cpu", value_name = "NAME=PID", value_parser = parse_watch)]
    pub cpu: Vec<(String, u32)>,
}

/// `http` flags.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    #[command(flatten)]
    /// Target, sources, keys.
    pub common: Common,
    /// Connections (one request in flight each).
    #[arg(short = 'c', long, default_value_t = 32)]
    pub connections: usize,
    /// Measured window, seconds.
    #[arg(short = 'd', long, default_value_t = 5.0)]
    pub duration: f64,
    /// Load before the window, seconds (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
}

/// `ws-echo` flags.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    #[command(flatten)]
    /// Target, sources, keys.
    pub common: Common,
    /// Connections.
    #[arg(short = 'n', long, default_value_t = 200)]
    pub connections: usize,
    /// Messages per connection.
    #[arg(short = 'm', long, default_value_t = 200)]
    pub messages: usize,
    /// Bytes per message (at least 8).
    #[arg(short = 's', long, default_value_t = 64)]
    pub size: usize,
    /// Handshakes in flight at most.
    #[arg(long, default_value_t = 200)]
    pub ramp: usize,
}

/// `ws-idle` flags.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    /// Target, sources, keys.
    pub common: Common,
    /// Connections to hold.
    #[arg(short = 'n', long, default_value_t = 5000)]
    pub connections: usize,
    /// Seconds to hold them after the last one opened.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
    /// Handshakes in flight at most.
    #[arg(long, default_value_t = 200)]
    pub ramp: usize,
    /// Process whose VmRSS is read before, while and after holding.
    #[arg(long)]
    pub rss_pid: Option<u32>,
    /// Add the VmRSS of the process' descendants (nginx workers).
    #[arg(long)]
    pub rss_children: bool,
    /// Connections echo-checked after the hold.
    #[arg(long, default_value_t = 100)]
    pub sample: usize,
    /// Seconds to wait after closing before the last RSS reading.
    #[arg(long, default_value_t = 2.0)]
    pub after_close: f64,
}

/// One run's output: the mode's figures with the command that made them.
#[derive(Debug, Clone, Serialize)]
pub struct Output<T> {
    /// `http`, `ws-echo` or `ws-idle`.
    pub mode: &'static str,
    /// How the tool was invoked.
    pub command: String,
    /// The figures.
    #[serde(flatten)]
    pub result: T,
}

fn parse_watch(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=PID"))?;
    let pid = pid.parse().map_err(|_| format!("`{pid}` is not a pid"))?;
    Ok((name.to_owned(), pid))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl Common {
    fn target(&self, scheme: &str) -> anyhow::Result<Target> {
        Target::parse(&self.url, scheme)
    }

    fn sources(&self) -> anyhow::Result<Vec<IpAddr>> {
        dial::parse_sources(&self.src)
    }

    /// The processes to meter: those asked for, this process, and the
    /// kernel's softirq threads.
    fn watched(&self) -> Vec<Watched> {
        let mut w: Vec<Watched> = self
            .cpu
            .iter()
            .map(|(name, pid)| Watched {
                name: name.clone(),
                pid: *pid,
            })
            .collect();
        w.push(Watched {
            name: "load".into(),
            pid: std::process::id(),
        });
        w.extend(procs::softirq_threads());
        w
    }

    fn open(&self, connections: usize, ramp: usize) -> anyhow::Result<OpenSpec> {
        Ok(OpenSpec {
            target: self.target("ws")?,
            connections,
            ramp,
            sources: self.sources()?,
            key_prefix: self.key_prefix.clone(),
            timeout: secs(self.timeout),
        })
    }
}

/// Parse nothing more, run, print: the binary's whole body.
pub fn main(cli: Cli) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        builder.worker_threads(n.max(1));
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limit = Duration::from_secs(cli.max_secs);
    let outcome = rt.block_on(async {
        match tokio::time::timeout(limit, run(&cli)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("gave up after --max-secs {}", cli.max_secs)),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run the mode and return what to print.
pub async fn run(cli: &Cli) -> anyhow::Result<String> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    match &cli.mode {
        Mode::Http(a) => {
            procs::ensure_fd_limit(a.connections as u64 + 64)?;
            let spec = HttpSpec {
                target: a.common.target("http")?,
                connections: a.connections,
                warmup: secs(a.warmup),
                duration: secs(a.duration),
                sources: a.common.sources()?,
                key_prefix: a.common.key_prefix.clone(),
                timeout: secs(a.common.timeout),
                watched: a.common.watched(),
            };
            let r = httpload::run(spec).await?;
            emit(cli.json, "http", command, r, render_http)
        }
        Mode::WsEcho(a) => {
            procs::ensure_fd_limit(a.connections as u64 + 64)?;
            let spec = EchoSpec {
                open: a.common.open(a.connections, a.ramp)?,
                messages: a.messages,
                size: a.size,
                watched: a.common.watched(),
            };
            let r = wsload::echo(spec).await?;
            emit(cli.json, "ws-echo", command, r, render_echo)
        }
        Mode::WsIdle(a) => {
            procs::ensure_fd_limit(a.connections as u64 + 64)?;
            let spec = IdleSpec {
                open: a.common.open(a.connections, a.ramp)?,
                hold: secs(a.hold),
                rss_pid: a.rss_pid,
                rss_children: a.rss_children,
                sample: a.sample,
                after_close: secs(a.after_close),
            };
            let r = wsload::idle(spec).await?;
            emit(cli.json, "ws-idle", command, r, render_idle)
        }
    }
}

fn emit<T: Serialize>(
    json: bool,
    mode: &'static str,
    command: String,
    result: T,
    render: fn(&T) -> String,
) -> anyhow::Result<String> {
    if json {
        serde_json::to_string_pretty(&Output {
            mode,
            command,
            result,
        })
        .context("serialize")
    } else {
        Ok(render(&result))
    }
}

/// CPU shares as `name 97, load 40, others 1`.
pub fn render_cpu(cpu: &[CpuShare]) -> String {
    cpu.iter()
        .map(|c| format!("{} {:.0}", c.name, c.percent_of_core))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_http(r: &HttpResult) -> String {
    format!(
        "http: {} connections, {:.1} s: {} requests, {:.0} req/s\n\
         latency ms: p50 {:.3}, p90 {:.3}, p99 {:.3}, max {:.3}\n\
         statuses {:?}, non-2xx {}, errors {} (warm-up {}), connects {}{}\n\
         CPU % of a core: {}",
        r.connections,
        r.window_secs,
        r.requests,
        r.requests_per_sec,
        r.latency.p50_ms,
        r.latency.p90_ms,
        r.latency.p99_ms,
        r.latency.max_ms,
        r.statuses,
        r.non_2xx,
        r.errors,
        r.warmup_errors,
        r.connects,
        if r.error_samples.is_empty() {
            String::new()
        } else {
            format!("; e.g. {:?}", r.error_samples)
        },
        render_cpu(&r.cpu),
    )
}

fn render_echo(r: &EchoResult) -> String {
    format!(
        "ws-echo: {}/{} connections open in {:.2} s (handshake ms p50 {:.2}, p99 {:.2}){}\n\
         {} × {} messages of {} B: {} echoed in {:.2} s, {:.0} msgs/s; mismatches {}, errors {}{}\n\
         RTT ms: p50 {:.3}, p90 {:.3}, p99 {:.3}, max {:.3}\n\
         CPU % of a core: {}",
        r.opened.opened,
        r.opened.requested,
        r.opened.secs,
        r.opened.handshake.p50_ms,
        r.opened.handshake.p99_ms,
        failures(&r.opened.failure_samples),
        r.opened.opened,
        r.messages_per_connection,
        r.size,
        r.echoed,
        r.window_secs,
        r.messages_per_sec,
        r.mismatches,
        r.errors,
        failures(&r.error_samples),
        r.rtt.p50_ms,
        r.rtt.p90_ms,
        r.rtt.p99_ms,
        r.rtt.max_ms,
        render_cpu(&r.cpu),
    )
}

fn render_idle(r: &IdleResult) -> String {
    let mib = |k: Option<u64>| k.map_or("-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
    format!(
        "ws-idle: {}/{} connections open in {:.2} s (handshake ms p50 {:.2}, p99 {:.2}){}\n\
         RSS MiB of pid {:?}{}: before {}, opened {}, after {:.0} s held {}, after close {}\n\
         KiB per connection: {}; echo check {}/{} ok{}",
        r.opened.opened,
        r.opened.requested,
        r.opened.secs,
        r.opened.handshake.p50_ms,
        r.opened.handshake.p99_ms,
        failures(&r.opened.failure_samples),
        r.rss_pid,
        if r.rss_children { " + descendants" } else { "" },
        mib(r.rss_before_kib),
        mib(r.rss_opened_kib),
        r.hold_secs,
        mib(r.rss_held_kib),
        mib(r.rss_after_close_kib),
        r.kib_per_connection
            .map_or("-".to_owned(), |k| format!("{k:.1}")),
        r.sample_ok,
        r.sample_checked,
        failures(&r.sample_errors),
    )
}

fn failures(samples: &[String]) -> String {
    if samples.is_empty() {
        String::new()
    } else {
        format!("; failures e.g. {samples:?}")
    }
}
