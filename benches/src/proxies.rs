//! `ringway-bench-proxies`: ringway-proxy against nginx, HAProxy and Caddy,
//! side by side, in one interleaved run on the same backend.
//!
//! Every peer runs with one worker/thread pinned to the proxy core; the
//! load generator (`ringway-load`, a child process) and the backend are
//! pinned to the load core, and so is this driver. Each round visits every
//! peer (the order rotates by one per round, so no peer is always first),
//! and for each peer runs, on a freshly started process each time:
//!
//! 1. **idle**: hold `idle_connections` WebSockets and read the peer's
//!    VmRSS before and after (KiB per connection);
//! 2. **http**: keep-alive GETs after a warm-up, with the CPU of every
//!    process over the window (the peer should saturate its core);
//! 3. **echo**: WebSocket echo after a short warm-up, msgs/s, RTT, and the
//!    peer's CPU per message (the load core may saturate first).
//!
//! `direct` (no proxy) runs the http and echo scenarios too: the ceiling
//! the load core allows. Before each measured window the driver waits for
//! the machine to be quiet, and a window in which other processes used
//! more than `others_limit` % of a core is run again (up to `retries`
//! times). Medians over the rounds and ratios ringway/peer are reported.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::httpload::HttpResult;
use crate::peers::{self, Backend, HttpBackend, Peer, PeerKind};
use crate::procs::{self, PidGuard, Watched};
use crate::proxies_report;
use crate::wsload::{EchoResult, IdleResult};

/// `ringway-bench-proxies` command line.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    name = "ringway-bench-proxies",
    about = "Measure ringway-proxy against nginx, HAProxy and Caddy in one interleaved run: HTTP \
             req/s and p99, WebSocket echo msgs/s and RTT, idle WebSocket RSS per connection. \
             Needs ringway-proxy, ringway-fixture and ringway-load built in the same target \
             profile (use --release), and nginx, haproxy, caddy installed."
)]
pub struct Options {
    /// The proxies to compare (ringway is the reference of the ratios).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![PeerKind::Ringway, PeerKind::Nginx, PeerKind::Haproxy, PeerKind::Caddy])]
    pub peers: Vec<PeerKind>,
    /// Leave out the direct (no proxy) baseline.
    #[arg(long)]
    pub no_direct: bool,
    /// Rounds; medians are over these.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Skip scenarios (comma-separated: idle, http, echo).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// What answers the HTTP scenario's requests.
    #[arg(long, value_enum, default_value_t = HttpBackend::Nginx)]
    pub http_backend: HttpBackend,
    /// HTTP connections.
    #[arg(long, default_value_t = 32)]
    pub http_connections: usize,
    /// HTTP measured window, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub http_secs: f64,
    /// HTTP warm-up before the window, seconds.
    #[arg(long, default_value_t = 2.0)]
    pub http_warmup: f64,
    /// WebSocket echo connections.
    #[arg(long, default_value_t = 200)]
    pub echo_connections: usize,
    /// Echo messages per connection.
    #[arg(long, default_value_t = 500)]
    pub echo_messages: usize,
    /// Echo message size, bytes.
    #[arg(long, default_value_t = 64)]
    pub echo_size: usize,
    /// Echo warm-up messages per connection (a separate, discarded run).
    #[arg(long, default_value_t = 20)]
    pub echo_warmup_messages: usize,
    /// Idle WebSockets held (each costs a one-process proxy 2 of its
    /// 20,000 files; keep it at or below 9,000).
    #[arg(long, default_value_t = 5000)]
    pub idle_connections: usize,
    /// Seconds the idle WebSockets are held.
    #[arg(long, default_value_t = 5.0)]
    pub idle_hold: f64,
    /// Source addresses the idle connections rotate over.
    #[arg(
        long,
        default_value = "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9"
    )]
    pub idle_sources: String,
    /// Core of the proxies.
    #[arg(long, default_value_t = 0)]
    pub proxy_core: usize,
    /// Core of the load generator, the backend and this driver.
    #[arg(long, default_value_t = 1)]
    pub load_core: usize,
    /// Others' CPU (% of a core) above which a window is run again.
    #[arg(long, default_value_t = 5.0)]
    pub others_limit: f64,
    /// Extra attempts of a disturbed window.
    #[arg(long, default_value_t = 3)]
    pub retries: usize,
    /// Longest wait for a quiet machine before a window, seconds.
    #[arg(long, default_value_t = 120)]
    pub quiet_wait: u64,
    /// Write every figure as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// A smoke run: 1 round, 2 s windows, 1,000 idle connections, 100 echo
    /// messages.
    #[arg(long)]
    pub quick: bool,
    /// Give up (and kill every child) after this many seconds in all.
    #[arg(long, default_value_t = 3600)]
    pub max_secs: u64,
}

impl Options {
    fn settled(mut self) -> Options {
        if self.quick {
            self.rounds = 1;
            self.http_secs = 2.0;
            self.http_warmup = 1.0;
            self.idle_connections = 1000;
            self.idle_hold = 2.0;
            self.echo_messages = 100;
        }
        self
    }

    fn runs(&self, scenario: &str) -> bool {
        !self.skip.iter().any(|s| s == scenario)
    }

    /// Peers in the order of round `round`: `direct` first, then the
    /// proxies rotated by `round`.
    pub fn order(&self, round: usize) -> Vec<PeerKind> {
        let proxies: Vec<PeerKind> = self
            .peers
            .iter()
            .copied()
            .filter(|p| *p != PeerKind::Direct)
            .collect();
        let mut out = Vec::new();
        if !self.no_direct {
            out.push(PeerKind::Direct);
        }
        if !proxies.is_empty() {
            let k = round % proxies.len();
            out.extend(proxies[k..].iter().chain(&proxies[..k]));
        }
        out
    }
}

/// The machine and software a run was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs online.
    pub cpus: usize,
    /// `/proc/cpuinfo` model name.
    pub cpu_model: String,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// `git rev-parse --short HEAD` of the workspace.
    pub git_commit: String,
    /// Whether `proxy/` had uncommitted changes.
    pub proxy_uncommitted_changes: bool,
    /// Version lines of nginx, HAProxy and Caddy.
    pub peer_versions: Vec<(String, String)>,
    /// Open-file limit of this process (inherited by every child).
    pub nofile: u64,
}

fn detect_machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
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
    let mem_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    Machine {
        // SAFETY: sysconf has no preconditions.
        cpus: unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(0) as usize,
        cpu_model: read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default(),
        memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        git_commit: git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default(),
        proxy_uncommitted_changes: git(&["status", "--porcelain", "--", "proxy"])
            .is_some_and(|s| !s.is_empty()),
        peer_versions: [PeerKind::Nginx, PeerKind::Haproxy, PeerKind::Caddy]
            .into_iter()
            .map(|k| (k.name().to_owned(), peers::version_of(k)))
            .collect(),
        nofile: lim.rlim_cur,
    }
}

/// A measured window and how many tries it took to get an undisturbed one.
#[derive(Debug, Clone, Serialize)]
pub struct Attempted<T> {
    /// The window kept (the last one tried).
    pub result: T,
    /// Windows run.
    pub attempts: usize,
    /// Others' CPU (% of a core) of the windows thrown away.
    pub discarded_others: Vec<f64>,
    /// Whether even the kept window was over the limit.
    pub disturbed: bool,
}

/// One peer's visit in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Visit {
    /// Round, from 1.
    pub round: usize,
    /// Which peer.
    pub peer: PeerKind,
    /// Idle hold on a fresh process.
    pub idle: Option<IdleResult>,
    /// HTTP window.
    pub http: Option<Attempted<HttpResult>>,
    /// Echo window.
    pub echo: Option<Attempted<EchoResult>>,
    /// Warning/error lines the peer logged during the visit.
    pub complaints: Vec<String>,
}

/// Medians over the rounds of one peer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Medians {
    /// Which peer.
    pub peer: String,
    /// HTTP requests/s.
    pub http_rps: Option<f64>,
    /// HTTP latency p50, ms.
    pub http_p50_ms: Option<f64>,
    /// HTTP latency p99, ms.
    pub http_p99_ms: Option<f64>,
    /// Peer CPU during HTTP, % of a core.
    pub http_proxy_cpu: Option<f64>,
    /// Load generator CPU during HTTP, % of a core.
    pub http_load_cpu: Option<f64>,
    /// Backend CPU during HTTP, % of a core.
    pub http_backend_cpu: Option<f64>,
    /// Peer CPU per request, µs.
    pub http_proxy_us_per_req: Option<f64>,
    /// Errors + non-2xx over all HTTP windows (a sum, not a median).
    pub http_failures_total: u64,
    /// Echo messages/s.
    pub echo_mps: Option<f64>,
    /// Echo RTT p50, ms.
    pub echo_rtt_p50_ms: Option<f64>,
    /// Echo RTT p99, ms.
    pub echo_rtt_p99_ms: Option<f64>,
    /// Handshake p50, ms.
    pub echo_handshake_p50_ms: Option<f64>,
    /// Handshake p99, ms.
    pub echo_handshake_p99_ms: Option<f64>,
    /// Peer CPU during the echo phase, % of a core.
    pub echo_proxy_cpu: Option<f64>,
    /// Load generator CPU during the echo phase, % of a core.
    pub echo_load_cpu: Option<f64>,
    /// Backend CPU during the echo phase, % of a core.
    pub echo_backend_cpu: Option<f64>,
    /// Peer CPU per echoed message (both directions), µs.
    pub echo_proxy_us_per_msg: Option<f64>,
    /// Mismatches + errors + failed opens over all echo windows (a sum).
    pub echo_failures_total: u64,
    /// Idle: KiB per held connection.
    pub idle_kib_per_conn: Option<f64>,
    /// Idle: RSS of the fresh process, MiB.
    pub idle_rss_before_mib: Option<f64>,
    /// Idle: RSS while holding, MiB.
    pub idle_rss_held_mib: Option<f64>,
    /// Idle: RSS after closing, MiB.
    pub idle_rss_after_close_mib: Option<f64>,
    /// Idle: seconds to open all connections.
    pub idle_open_secs: Option<f64>,
    /// Idle: failed opens + failed echo checks over all rounds (a sum).
    pub idle_failures_total: u64,
}

/// Ringway's median divided by a peer's, per metric.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratios {
    /// The peer divided by.
    pub peer: String,
    /// req/s (above 1: ringway serves more).
    pub http_rps: Option<f64>,
    /// HTTP p99 (below 1: ringway is faster).
    pub http_p99: Option<f64>,
    /// Peer CPU per request (below 1: ringway is cheaper).
    pub http_us_per_req: Option<f64>,
    /// Echo msgs/s (above 1: ringway moves more).
    pub echo_mps: Option<f64>,
    /// Echo RTT p99 (below 1: ringway is faster).
    pub echo_rtt_p99: Option<f64>,
    /// CPU per echoed message (below 1: ringway is cheaper).
    pub echo_us_per_msg: Option<f64>,
    /// KiB per idle connection (below 1: ringway is leaner).
    pub idle_kib: Option<f64>,
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
    /// Every visit, in the order run.
    pub visits: Vec<Visit>,
    /// Medians per peer.
    pub medians: Vec<Medians>,
    /// Ringway over each peer.
    pub ratios: Vec<Ratios>,
    /// The peers' configs, as written.
    pub configs: Vec<(String, String)>,
    /// Wall time, seconds.
    pub total_secs: f64,
}

/// Parse nothing more, run, print, write: the binary's whole body.
pub fn main(opts: Options) -> ExitCode {
    procs::kill_children_on_panic();
    let opts = opts.settled();
    // This driver belongs with the load: pin it before any thread exists,
    // so the runtime's threads inherit the mask.
    if let Err(e) = procs::pin_self(opts.load_core) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let (max_secs, json) = (opts.max_secs, opts.json.clone());
    crate::driver::drive(
        Some(1),
        max_secs,
        json.as_deref(),
        run(opts),
        proxies_report::render,
    )
}

/// Every tool the run needs, or the exact command that installs what is
/// missing.
pub fn check_tools(opts: &Options) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = Vec::new();
    let mut need = |bin: &'static str, pkg: &'static str| {
        if peers::find_binary(bin).is_none() && !missing.contains(&pkg) {
            missing.push(pkg);
        }
    };
    need("taskset", "util-linux");
    for p in &opts.peers {
        if let Some((bin, pkg)) = p.system_binary() {
            need(bin, pkg);
        }
    }
    if opts.http_backend == HttpBackend::Nginx {
        need("nginx", "nginx");
    }
    if !missing.is_empty() {
        bail!(
            "missing: {}. Install with:\n  apt-get install -y --no-install-recommends {}",
            missing.join(", "),
            missing.join(" ")
        );
    }
    for bin in ["ringway-proxy", "ringway-fixture", "ringway-load"] {
        if !built(bin) {
            bail!(
                "{bin} is not built next to this binary: run \
                 cargo build --release -p ringway-proxy -p ringway-tests -p ringway-benches"
            );
        }
    }
    Ok(())
}

/// Whether workspace binary `name` exists in this executable's target
/// profile directory (the check `ringway_tests::target_bin` asserts, as a
/// value: release builds abort on panic).
fn built(name: &str) -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let dir = exe.parent()?.to_path_buf();
            let dir = if dir.ends_with("deps") {
                dir.parent()?.to_path_buf()
            } else {
                dir
            };
            Some(dir.join(name).exists())
        })
        .unwrap_or(false)
}

/// The pieces every scenario needs.
struct Ctx {
    opts: Options,
    backend: Backend,
    load_bin: PathBuf,
}

impl Ctx {
    /// `--cpu` flags: the peer's processes, the backend's, this driver.
    fn cpu_args(&self, peer: &Peer) -> Vec<String> {
        let mut out = Vec::new();
        for pid in &peer.pids {
            out.push(format!("--cpu=proxy={pid}"));
        }
        for (name, pid) in &self.backend.pids {
            out.push(format!("--cpu={name}={pid}"));
        }
        out.push(format!("--cpu=driver={}", std::process::id()));
        out
    }

    /// The processes that are part of the benchmark, for the quiet check.
    fn ours(&self, peer: &Peer) -> Vec<Watched> {
        let mut w: Vec<Watched> = peer
            .pids
            .iter()
            .chain(self.backend.pids.iter().map(|(_, p)| p))
            .map(|&pid| Watched {
                name: "ours".into(),
                pid,
            })
            .collect();
        w.push(Watched {
            name: "ours".into(),
            pid: std::process::id(),
        });
        w.extend(procs::softirq_threads());
        w
    }

    /// Run `ringway-load --json ARGS` pinned to the load core and parse
    /// its output.
    async fn load<T: DeserializeOwned>(
        &self,
        args: &[String],
        limit: Duration,
    ) -> anyhow::Result<T> {
        let mut cmd = tokio::process::Command::new("taskset");
        cmd.arg("-c")
            .arg(self.opts.load_core.to_string())
            .arg(&self.load_bin)
            .arg("--json")
            .arg(format!("--max-secs={}", limit.as_secs() + 5))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().context("spawn ringway-load")?;
        let _guard = child.id().map(|pid| PidGuard::new(pid, "ringway-load"));
        let out = tokio::time::timeout(limit + Duration::from_secs(10), child.wait_with_output())
            .await
            .map_err(|_| anyhow!("ringway-load {args:?} did not finish"))?
            .context("ringway-load")?;
        if !out.status.success() {
            bail!(
                "ringway-load {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "ringway-load output: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Wait (up to `quiet_wait`) until processes outside the benchmark use
    /// less than `others_limit` % of a core over one second.
    async fn wait_quiet(&self, peer: &Peer) {
        let ours = self.ours(peer);
        let until = Instant::now() + Duration::from_secs(self.opts.quiet_wait);
        let mut said = false;
        loop {
            let o = ours.clone();
            let before = tokio::task::spawn_blocking(move || procs::snapshot(&o))
                .await
                .expect("snapshot");
            tokio::time::sleep(Duration::from_secs(1)).await;
            let o = ours.clone();
            let after = tokio::task::spawn_blocking(move || procs::snapshot(&o))
                .await
                .expect("snapshot");
            let others = others_of(&procs::merged_shares(&before, &after));
            if others <= self.opts.others_limit {
                return;
            }
            if Instant::now() >= until {
                eprintln!("  machine still busy (others {others:.0} %), measuring anyway");
                return;
            }
            if !said {
                eprintln!("  waiting for a quiet machine (others {others:.0} % of a core) …");
                said = true;
            }
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
    }

    /// Run a window until one is undisturbed or the retries are used up.
    async fn attempt<T, F, Fut>(
        &self,
        peer: &Peer,
        what: &str,
        mut run: F,
    ) -> anyhow::Result<Attempted<T>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<(T, f64)>>,
    {
        let mut discarded = Vec::new();
        loop {
            self.wait_quiet(peer).await;
            let (result, others) = run().await?;
            let attempts = discarded.len() + 1;
            if others <= self.opts.others_limit || discarded.len() >= self.opts.retries {
                return Ok(Attempted {
                    result,
                    attempts,
                    discarded_others: discarded,
                    disturbed: others > self.opts.others_limit,
                });
            }
            eprintln!("  {what}: others used {others:.0} % of a core; running the window again");
            discarded.push(others);
        }
    }
}

/// "others" of a CPU split, % of a core.
pub fn others_of(cpu: &[procs::CpuShare]) -> f64 {
    cpu.iter()
        .find(|c| c.name == "others")
        .map_or(0.0, |c| c.percent_of_core)
}

/// Run every round and scenario `opts` asks for.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let began = Instant::now();
    check_tools(&opts)?;
    procs::ensure_fd_limit(opts.idle_connections as u64 * 2 + 512)?;
    anyhow::ensure!(
        opts.idle_connections <= 9000,
        "--idle-connections {} would run a one-process proxy out of its 20,000 files; use at most 9,000",
        opts.idle_connections
    );
    let backend = Backend::start(opts.http_backend, opts.load_core).await?;
    let ctx = Ctx {
        load_bin: ringway_tests::target_bin("ringway-load"),
        opts: opts.clone(),
        backend,
    };
    let mut visits = Vec::new();
    let mut configs: Vec<(String, String)> = Vec::new();
    for round in 1..=opts.rounds {
        for kind in opts.order(round - 1) {
            eprintln!("round {round}/{}: {}", opts.rounds, kind.name());
            let mut visit = Visit {
                round,
                peer: kind,
                idle: None,
                http: None,
                echo: None,
                complaints: Vec::new(),
            };
            if kind != PeerKind::Direct && opts.runs("idle") {
                let peer = Peer::start(kind, &ctx.backend.ws, opts.proxy_core).await?;
                if !configs.iter().any(|(k, _)| k == kind.name()) {
                    configs.push((kind.name().to_owned(), peer.config.clone()));
                }
                let r = idle_once(&ctx, &peer).await?;
                eprintln!(
                    "  idle: {}/{} open, {} KiB/conn, check {}/{}",
                    r.opened.opened,
                    r.opened.requested,
                    r.kib_per_connection
                        .map_or("-".into(), |k| format!("{k:.1}")),
                    r.sample_ok,
                    r.sample_checked
                );
                visit.idle = Some(r);
                visit.complaints.extend(peer.complaints());
                peer.stop();
            }
            if opts.runs("http") {
                let peer = Peer::start(kind, &ctx.backend.http, opts.proxy_core).await?;
                let r = ctx
                    .attempt(&peer, "http", || async {
                        let r = http_once(&ctx, &peer).await?;
                        let o = others_of(&r.cpu);
                        Ok((r, o))
                    })
                    .await?;
                eprintln!(
                    "  http: {:.0} req/s, p99 {:.3} ms, CPU {}",
                    r.result.requests_per_sec,
                    r.result.latency.p99_ms,
                    crate::load::render_cpu(&r.result.cpu)
                );
                visit.http = Some(r);
                visit.complaints.extend(peer.complaints());
                peer.stop();
            }
            if opts.runs("echo") {
                let peer = Peer::start(kind, &ctx.backend.ws, opts.proxy_core).await?;
                if opts.echo_warmup_messages > 0 {
                    let _: EchoResult = ctx
                        .load(
                            &echo_args(&ctx, &peer, opts.echo_warmup_messages, false),
                            Duration::from_secs(60),
                        )
                        .await
                        .context("echo warm-up")?;
                }
                let r = ctx
                    .attempt(&peer, "echo", || async {
                        let r: EchoResult = ctx
                            .load(
                                &echo_args(&ctx, &peer, opts.echo_messages, true),
                                Duration::from_secs(120),
                            )
                            .await?;
                        let o = others_of(&r.cpu);
                        Ok((r, o))
                    })
                    .await?;
                eprintln!(
                    "  echo: {:.0} msgs/s, RTT p99 {:.3} ms, CPU {}",
                    r.result.messages_per_sec,
                    r.result.rtt.p99_ms,
                    crate::load::render_cpu(&r.result.cpu)
                );
                visit.echo = Some(r);
                visit.complaints.extend(peer.complaints());
                peer.stop();
            }
            visits.push(visit);
        }
    }
    ctx.backend.stop();
    let kinds = opts.order(0);
    let medians: Vec<Medians> = kinds.iter().map(|k| medians_of(*k, &visits)).collect();
    let ratios = ratios_of(&medians);
    Ok(Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: detect_machine(),
        options: opts,
        visits,
        medians,
        ratios,
        configs,
        total_secs: began.elapsed().as_secs_f64(),
    })
}

async fn http_once(ctx: &Ctx, peer: &Peer) -> anyhow::Result<HttpResult> {
    let o = &ctx.opts;
    let mut args = vec![
        "http".to_owned(),
        format!("--url={}", peer.http_url()),
        format!("--connections={}", o.http_connections),
        format!("--duration={}", o.http_secs),
        format!("--warmup={}", o.http_warmup),
    ];
    args.extend(ctx.cpu_args(peer));
    let limit = Duration::from_secs_f64(o.http_secs + o.http_warmup + 30.0);
    ctx.load(&args, limit).await
}

fn echo_args(ctx: &Ctx, peer: &Peer, messages: usize, meter: bool) -> Vec<String> {
    let o = &ctx.opts;
    let mut args = vec![
        "ws-echo".to_owned(),
        format!("--url={}", peer.ws_url()),
        format!("--connections={}", o.echo_connections),
        format!("--messages={messages}"),
        format!("--size={}", o.echo_size),
        // Below the fixture's listen backlog (128), which `direct` meets
        // with every handshake at once.
        "--ramp=100".to_owned(),
    ];
    if meter {
        args.extend(ctx.cpu_args(peer));
    }
    args
}

async fn idle_once(ctx: &Ctx, peer: &Peer) -> anyhow::Result<IdleResult> {
    let o = &ctx.opts;
    let root = *peer.pids.first().context("the peer has no process")?;
    let args = vec![
        "ws-idle".to_owned(),
        format!("--url={}", peer.ws_url()),
        format!("--connections={}", o.idle_connections),
        format!("--hold={}", o.idle_hold),
        format!("--src={}", o.idle_sources),
        format!("--rss-pid={root}"),
        "--rss-children".to_owned(),
        "--sample=100".to_owned(),
    ];
    ctx.load(&args, Duration::from_secs_f64(o.idle_hold + 120.0))
        .await
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// A named share of a CPU split, % of a core.
pub fn share(cpu: &[procs::CpuShare], name: &str) -> f64 {
    cpu.iter()
        .filter(|c| c.name == name)
        .map(|c| c.percent_of_core)
        .sum()
}

fn medians_of(kind: PeerKind, visits: &[Visit]) -> Medians {
    let mine: Vec<&Visit> = visits.iter().filter(|v| v.peer == kind).collect();
    let http: Vec<&HttpResult> = mine
        .iter()
        .filter_map(|v| v.http.as_ref())
        .map(|a| &a.result)
        .collect();
    let echo: Vec<&EchoResult> = mine
        .iter()
        .filter_map(|v| v.echo.as_ref())
        .map(|a| &a.result)
        .collect();
    let idle: Vec<&IdleResult> = mine.iter().filter_map(|v| v.idle.as_ref()).collect();
    let m = |f: &dyn Fn() -> Vec<f64>| median(f());
    let has_proxy = kind != PeerKind::Direct;
    let mib = |k: Option<u64>| k.map(|k| k as f64 / 1024.0);
    Medians {
        peer: kind.name().to_owned(),
        http_rps: m(&|| http.iter().map(|r| r.requests_per_sec).collect()),
        http_p50_ms: m(&|| http.iter().map(|r| r.latency.p50_ms).collect()),
        http_p99_ms: m(&|| http.iter().map(|r| r.latency.p99_ms).collect()),
        http_proxy_cpu: m(&|| {
            http.iter()
                .filter(|_| has_proxy)
                .map(|r| share(&r.cpu, "proxy"))
                .collect()
        }),
        http_load_cpu: m(&|| http.iter().map(|r| share(&r.cpu, "load")).collect()),
        http_backend_cpu: m(&|| http.iter().map(|r| share(&r.cpu, "backend")).collect()),
        http_proxy_us_per_req: m(&|| {
            http.iter()
                .filter(|r| has_proxy && r.requests > 0)
                .map(|r| share(&r.cpu, "proxy") / 100.0 * r.window_secs / r.requests as f64 * 1e6)
                .collect()
        }),
        http_failures_total: http.iter().map(|r| r.errors + r.non_2xx).sum(),
        echo_mps: m(&|| echo.iter().map(|r| r.messages_per_sec).collect()),
        echo_rtt_p50_ms: m(&|| echo.iter().map(|r| r.rtt.p50_ms).collect()),
        echo_rtt_p99_ms: m(&|| echo.iter().map(|r| r.rtt.p99_ms).collect()),
        echo_handshake_p50_ms: m(&|| echo.iter().map(|r| r.opened.handshake.p50_ms).collect()),
        echo_handshake_p99_ms: m(&|| echo.iter().map(|r| r.opened.handshake.p99_ms).collect()),
        echo_proxy_cpu: m(&|| {
            echo.iter()
                .filter(|_| has_proxy)
                .map(|r| share(&r.cpu, "proxy"))
                .collect()
        }),
        echo_load_cpu: m(&|| echo.iter().map(|r| share(&r.cpu, "load")).collect()),
        echo_backend_cpu: m(&|| echo.iter().map(|r| share(&r.cpu, "backend")).collect()),
        echo_proxy_us_per_msg: m(&|| {
            echo.iter()
                .filter(|r| has_proxy && r.echoed > 0)
                .map(|r| share(&r.cpu, "proxy") / 100.0 * r.window_secs / r.echoed as f64 * 1e6)
                .collect()
        }),
        echo_failures_total: echo
            .iter()
            .map(|r| r.mismatches + r.errors + r.opened.failed as u64)
            .sum(),
        idle_kib_per_conn: m(&|| idle.iter().filter_map(|r| r.kib_per_connection).collect()),
        idle_rss_before_mib: m(&|| idle.iter().filter_map(|r| mib(r.rss_before_kib)).collect()),
        idle_rss_held_mib: m(&|| idle.iter().filter_map(|r| mib(r.rss_held_kib)).collect()),
        idle_rss_after_close_mib: m(&|| {
            idle.iter()
                .filter_map(|r| mib(r.rss_after_close_kib))
                .collect()
        }),
        idle_open_secs: m(&|| idle.iter().map(|r| r.opened.secs).collect()),
        idle_failures_total: idle
            .iter()
            .map(|r| (r.opened.failed + r.sample_checked - r.sample_ok) as u64)
            .sum(),
    }
}

fn ratios_of(medians: &[Medians]) -> Vec<Ratios> {
    let Some(ringway) = medians.iter().find(|m| m.peer == PeerKind::Ringway.name()) else {
        return Vec::new();
    };
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    };
    medians
        .iter()
        .filter(|m| m.peer != ringway.peer && m.peer != PeerKind::Direct.name())
        .map(|p| Ratios {
            peer: p.peer.clone(),
            http_rps: div(ringway.http_rps, p.http_rps),
            http_p99: div(ringway.http_p99_ms, p.http_p99_ms),
            http_us_per_req: div(ringway.http_proxy_us_per_req, p.http_proxy_us_per_req),
            echo_mps: div(ringway.echo_mps, p.echo_mps),
            echo_rtt_p99: div(ringway.echo_rtt_p99_ms, p.echo_rtt_p99_ms),
            echo_us_per_msg: div(ringway.echo_proxy_us_per_msg, p.echo_proxy_us_per_msg),
            idle_kib: div(ringway.idle_kib_per_conn, p.idle_kib_per_conn),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_order() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        let opts = Options::parse_from(["x"]);
        let names = |r| opts.order(r).iter().map(|k| k.name()).collect::<Vec<_>>();
        assert_eq!(names(0), ["direct", "ringway", "nginx", "haproxy", "caddy"]);
        assert_eq!(names(1), ["direct", "nginx", "haproxy", "caddy", "ringway"]);
    }
}
