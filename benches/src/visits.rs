//! One visit of one peer in each scenario: start a fresh peer, drive the
//! load at it, and turn the load's figures into a [`Sample`] of named
//! values. Also what every visit shares ([`Ctx`]:
//! settings, backend, dialer) and the quiet-machine rule: every measured
//! window waits for a quiet machine first, and is run again (up to
//! `--retries` times) when processes outside the benchmark used more than
//! `--others-limit` % of a core during it. What a visit must never do is
//! decide the order of visits or compare peers: that is
//! [`crate::compare`]'s.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::harness::{Peer, ReloadSeen, Rig, Unsupported};
use crate::load::http::{self, HttpSpec};
use crate::load::tls::{self, HandshakeSpec};
use crate::load::ws::{self, EchoSpec, IdleSpec, OpenSpec};
use crate::load::{Dialer, Target};
use crate::peers::{AccessLog, PeerKind};
use crate::procs::{self, share, CpuShare, Watched};
use crate::stats;

/// Sizes and limits of every scenario (`--quick` shrinks them).
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Settings {
    /// HTTP connections.
    #[arg(long, default_value_t = 32)]
    pub http_connections: usize,
    /// Measured window of every throughput scenario, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub window: f64,
    /// Warm-up before each window, seconds.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// WebSocket echo connections.
    #[arg(long, default_value_t = 1000)]
    pub echo_connections: usize,
    /// Echo message size, bytes.
    #[arg(long, default_value_t = 64)]
    pub echo_size: usize,
    /// Idle WebSockets held (a one-process proxy needs 2 of its 20,000
    /// files for each).
    #[arg(long, default_value_t = 9000)]
    pub idle_connections: usize,
    /// Seconds the idle WebSockets are held.
    #[arg(long, default_value_t = 5.0)]
    pub idle_hold: f64,
    /// Seconds after closing them before the last RSS reading.
    #[arg(long, default_value_t = 10.0)]
    pub close_wait: f64,
    /// Concurrent connections of the handshake scenario.
    #[arg(long, default_value_t = 16)]
    pub handshake_concurrency: usize,
    /// Reloads of the reload scenario.
    #[arg(long, default_value_t = 20)]
    pub reloads: usize,
    /// Seconds between them.
    #[arg(long, default_value_t = 0.5)]
    pub reload_every: f64,
    /// Open WebSockets during them (each sends a message every 100 ms).
    #[arg(long, default_value_t = 200)]
    pub reload_websockets: usize,
    /// Reloads of the reload-1000 scenario.
    #[arg(long, default_value_t = 1000)]
    pub big_reloads: usize,
    /// Paced rate of the access-log scenario, requests/s.
    #[arg(long, default_value_t = 20000.0)]
    pub access_rate: f64,
    /// Source addresses the load rotates over.
    #[arg(
        long,
        default_value = "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9"
    )]
    pub sources: String,
    /// Core of the proxies.
    #[arg(long, default_value_t = 0)]
    pub proxy_core: usize,
    /// Core of the load, the backend and this driver.
    #[arg(long, default_value_t = 1)]
    pub load_core: usize,
    /// Others' CPU (% of a core) above which a window is run again.
    #[arg(long, default_value_t = 5.0)]
    pub others_limit: f64,
    /// Extra attempts of a disturbed window.
    #[arg(long, default_value_t = 3)]
    pub retries: usize,
    /// Longest wait for a quiet machine before a window, seconds.
    #[arg(long, default_value_t = 60)]
    pub quiet_wait: u64,
}

impl Settings {
    /// The smoke-run sizes of `--quick`.
    pub fn quick(&mut self) {
        self.window = 2.0;
        self.warmup = 0.5;
        self.idle_connections = 1000;
        self.idle_hold = 1.0;
        self.close_wait = 3.0;
        self.reloads = 5;
        self.reload_every = 0.3;
        self.big_reloads = 30;
        self.retries = 0;
        self.quiet_wait = 0;
    }
}

/// What one visit of one peer measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// The figures, by [`Metric::key`].
    pub values: BTreeMap<String, f64>,
    /// Why the peer was not measured (not supported by its build).
    pub skipped: Option<String>,
    /// Anything worth knowing: retried or disturbed windows, errors, the
    /// peer's warnings, how its start adapted to the build.
    pub notes: Vec<String>,
    /// The load's own figures, as they came.
    pub detail: Vec<serde_json::Value>,
}

impl Sample {
    /// A sample that says why the peer was not measured.
    pub fn skipped(why: String) -> Sample {
        Sample {
            skipped: Some(why),
            ..Sample::default()
        }
    }

    /// Record `value` as `key`, if there is one.
    fn set(&mut self, key: &str, value: impl Into<Option<f64>>) {
        if let Some(v) = value.into() {
            self.values.insert(key.to_owned(), v);
        }
    }

    /// The proxy's CPU over a window of `secs` as `proxy_cpu`, and per unit
    /// of work (`units` requests, echoes, handshakes) as `key`, in µs.
    /// Nothing for `direct`, which has no proxy.
    fn proxy_cost(&mut self, cpu: &[CpuShare], secs: f64, units: u64, key: &str) {
        let pct = share(cpu, "proxy");
        if pct > 0.0 && units > 0 {
            self.set("proxy_cpu", pct);
            self.set(key, pct / 100.0 * secs * 1e6 / units as f64);
        }
    }

    /// Keep the load's figures in the JSON.
    fn keep(&mut self, detail: &impl Serialize) {
        self.detail
            .push(serde_json::to_value(detail).unwrap_or_default());
    }

    /// Add the peer's start notes and warnings.
    fn finish(mut self, peer: &Peer) -> Sample {
        self.notes.extend(peer.notes.iter().cloned());
        let complaints = peer.complaints();
        if let Some(first) = complaints.first() {
            self.notes.push(format!(
                "{} warning/error log lines, e.g. {first:?}",
                complaints.len()
            ));
        }
        self
    }
}

/// What every scenario shares: the settings, the backend and certificate,
/// and how the load connects.
pub struct Ctx {
    /// Sizes and limits.
    pub settings: Settings,
    /// Backend processes and certificate.
    pub rig: Rig,
    dialer: Dialer,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl Ctx {
    /// Start the backend and set up the dialer (TLS without resumption).
    pub async fn new(settings: Settings) -> anyhow::Result<Ctx> {
        let rig = Rig::start(settings.load_core).await?;
        let dialer = Dialer {
            sources: crate::load::parse_sources(&settings.sources)?,
            timeout: Duration::from_secs(10),
            tls: Some(tls::connector(&rig.cert.ca, false)?),
        };
        Ok(Ctx {
            settings,
            rig,
            dialer,
        })
    }

    async fn peer(
        &self,
        kind: PeerKind,
        upstreams: &[SocketAddr],
        tls: bool,
        log: AccessLog,
    ) -> anyhow::Result<Peer> {
        let tls = tls.then(|| self.rig.tls());
        Peer::start(kind, upstreams, tls, log, self.settings.proxy_core).await
    }

    /// The peer, the backend, this process (the load) and softirq threads.
    fn watched(&self, peer: &Peer) -> Vec<Watched> {
        [
            peer.watched(),
            self.rig.watched(),
            procs::load_and_softirq(),
        ]
        .concat()
    }

    fn open(&self, peer: &Peer, connections: usize) -> anyhow::Result<OpenSpec> {
        let (target, dialer) = (Target::parse(&peer.url("ws", "/ws"))?, self.dialer.clone());
        Ok(OpenSpec {
            target,
            dialer,
            connections,
            ramp: 200,
        })
    }

    fn echo(&self, peer: &Peer, connections: usize, duration: f64) -> anyhow::Result<EchoSpec> {
        let (s, open) = (&self.settings, self.open(peer, connections)?);
        let (warmup, duration, watched) = (secs(s.warmup), secs(duration), self.watched(peer));
        Ok(EchoSpec {
            open,
            size: s.echo_size,
            warmup,
            duration,
            pace: None,
            watched,
        })
    }

    fn http(
        &self,
        peer: &Peer,
        connections: usize,
        rate: Option<f64>,
        duration: f64,
    ) -> anyhow::Result<HttpSpec> {
        Ok(HttpSpec {
            target: Target::parse(&peer.url("http", "/"))?,
            dialer: self.dialer.clone(),
            connections,
            warmup: secs(self.settings.warmup),
            duration: secs(duration),
            rate,
            watched: self.watched(peer),
        })
    }

    /// Wait until the machine is quiet, run `window`, and run it again while
    /// processes outside the benchmark used more than the limit meanwhile
    /// (noting it in `sample`).
    async fn measured<T, F: Future<Output = anyhow::Result<T>>>(
        &self,
        sample: &mut Sample,
        mut window: impl FnMut() -> F,
    ) -> anyhow::Result<T> {
        let limit = self.settings.others_limit;
        for attempt in 0.. {
            self.wait_quiet().await;
            let ours = procs::load_and_softirq();
            let before = procs::snapshot_async(ours.clone()).await;
            let r = window().await?;
            let others = share(
                &procs::shares(&before, &procs::snapshot_async(ours).await),
                "others",
            );
            if others <= limit || attempt >= self.settings.retries {
                if others > limit {
                    sample.notes.push(format!(
                        "kept a DISTURBED window (others {others:.0} % of a core)"
                    ));
                }
                return Ok(r);
            }
            sample.notes.push(format!(
                "others used {others:.0} % of a core; window run again"
            ));
        }
        unreachable!("the loop returns")
    }

    async fn wait_quiet(&self) {
        let until = Instant::now() + Duration::from_secs(self.settings.quiet_wait);
        loop {
            let ours = procs::load_and_softirq();
            let before = procs::snapshot_async(ours.clone()).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let others = share(
                &procs::shares(&before, &procs::snapshot_async(ours).await),
                "others",
            );
            if others <= self.settings.others_limit || Instant::now() >= until {
                return;
            }
            eprintln!("  waiting for a quiet machine (others {others:.0} % of a core) …");
        }
    }
}

/// `http` and `https`: keep-alive GETs to the nginx origin through the peer.
pub async fn http_keepalive(ctx: &Ctx, kind: PeerKind, tls: bool) -> anyhow::Result<Sample> {
    let peer = ctx.peer(kind, &ctx.rig.http, tls, AccessLog::Off).await?;
    let (mut sample, s) = (Sample::default(), &ctx.settings);
    let spec = ctx.http(&peer, s.http_connections, None, s.window)?;
    let r = ctx
        .measured(&mut sample, || http::run(spec.clone()))
        .await?;
    sample.set("rps", r.requests_per_sec);
    sample.set("p50_ms", r.latency.p50_ms);
    sample.set("p99_ms", r.latency.p99_ms);
    sample.proxy_cost(&r.cpu, r.window_secs, r.requests, "us_per_req");
    sample.set("failures", r.failures as f64);
    sample.keep(&r);
    Ok(sample.finish(&peer))
}

/// `ws-echo` and `wss-echo`: WebSocket echo through the peer, the proxy's CPU per message.
pub async fn ws_echo(ctx: &Ctx, kind: PeerKind, tls: bool) -> anyhow::Result<Sample> {
    let peer = ctx.peer(kind, &ctx.rig.ws, tls, AccessLog::Off).await?;
    let (mut sample, s) = (Sample::default(), &ctx.settings);
    let spec = ctx.echo(&peer, s.echo_connections, s.window)?;
    let r = ctx.measured(&mut sample, || ws::echo(spec.clone())).await?;
    sample.set("msgs_per_sec", r.messages_per_sec);
    sample.set("rtt_p99_ms", r.rtt.p99_ms);
    sample.proxy_cost(&r.cpu, r.window_secs, r.echoed, "us_per_msg");
    // The proxy was the limit only if its core was the saturated one.
    if share(&r.cpu, "proxy") >= 90.0 {
        sample.set("ceiling", r.messages_per_sec);
    }
    sample.set("failures", (r.opened.failed as u64 + r.dropped) as f64);
    sample.keep(&r);
    Ok(sample.finish(&peer))
}

/// `idle` and `wss-idle`: held idle WebSockets, the peer's RSS per connection and after.
pub async fn idle(ctx: &Ctx, kind: PeerKind, tls: bool) -> anyhow::Result<Sample> {
    let s = &ctx.settings;
    let peer = ctx.peer(kind, &ctx.rig.ws, tls, AccessLog::Off).await?;
    let open = ctx.open(&peer, s.idle_connections)?;
    let (hold, close_wait) = (secs(s.idle_hold), secs(s.close_wait));
    let r = ws::idle(IdleSpec {
        open,
        hold,
        rss_pid: peer.pid(),
        sample: 100,
        close_wait,
    })
    .await?;
    let mut sample = Sample::default();
    let mib = |k: Option<u64>| k.map(|k| k as f64 / 1024.0);
    sample.set("kib_per_conn", r.kib_per_connection);
    sample.set("rss_before_mib", mib(r.rss_before_kib));
    sample.set("rss_held_mib", mib(r.rss_held_kib));
    sample.set("rss_after_mib", mib(r.rss_after_close_kib));
    sample.set("returned", r.returned.map(|v| f64::from(u8::from(v))));
    sample.set(
        "failures",
        (r.opened.failed + r.sample_checked - r.sample_ok) as f64,
    );
    sample.keep(&r);
    Ok(sample.finish(&peer))
}

/// `tls-handshakes`: full, then resumed handshakes per second and the proxy's CPU each.
pub async fn tls_handshakes(ctx: &Ctx, kind: PeerKind) -> anyhow::Result<Sample> {
    let s = &ctx.settings;
    let peer = ctx.peer(kind, &ctx.rig.http, true, AccessLog::Off).await?;
    let (mut sample, mut failures) = (Sample::default(), 0);
    for (what, resume) in [("full", false), ("resumed", true)] {
        let spec = HandshakeSpec {
            target: Target::parse(&peer.url("http", "/"))?,
            dialer: ctx.dialer.clone(),
            ca: ctx.rig.cert.ca.clone(),
            resume,
            concurrency: s.handshake_concurrency,
            warmup: secs(s.warmup),
            duration: secs(s.window),
            watched: ctx.watched(&peer),
        };
        let r = ctx
            .measured(&mut sample, || tls::handshakes(spec.clone()))
            .await?;
        sample.set(&format!("{what}_per_sec"), r.per_sec);
        sample.proxy_cost(&r.cpu, s.window, r.handshakes, &format!("us_per_{what}"));
        if resume && r.handshakes > 0 {
            sample.set(
                "resumed_pct",
                r.resumed as f64 * 100.0 / r.handshakes as f64,
            );
        }
        failures += r.errors;
        sample.keep(&r);
    }
    sample.values.remove("proxy_cpu");
    sample.set("failures", failures as f64);
    Ok(sample.finish(&peer))
}

/// `reload`: reloads under keep-alive GETs and chatting WebSockets; what failed.
pub async fn reload_under_load(ctx: &Ctx, kind: PeerKind) -> anyhow::Result<Sample> {
    let s = &ctx.settings;
    let mut peer = ctx.peer(kind, &ctx.rig.ws, false, AccessLog::Off).await?;
    // The WebSockets open during the lead-in; the reloads come after it.
    let lead_in = secs(1.5);
    let span = 1.5 + s.reloads as f64 * s.reload_every + 2.0;
    let mut http = ctx.http(&peer, 16, Some(2000.0), span)?;
    let mut ws = ctx.echo(&peer, s.reload_websockets, span)?;
    (http.warmup, ws.warmup, ws.pace) = (
        Duration::ZERO,
        Duration::ZERO,
        Some(Duration::from_millis(100)),
    );
    let mut seen = Vec::new();
    let reloads = async {
        tokio::time::sleep(lead_in).await;
        for _ in 0..s.reloads {
            let next = Instant::now() + secs(s.reload_every);
            match kind {
                PeerKind::Ringway => seen.push(peer.reload_seen().await?),
                _ => peer.reload().await?,
            }
            tokio::time::sleep_until(next.into()).await;
        }
        anyhow::Ok(())
    };
    let (h, w, r) = tokio::join!(http::run(http), ws::echo(ws), reloads);
    let (h, w, ()) = (h?, w?, r?);
    let mut sample = Sample::default();
    sample.set("failed_requests", h.failures as f64);
    sample.set(
        "dropped_tunnels",
        (w.dropped + w.opened.failed as u64) as f64,
    );
    sample.set("requests", h.requests as f64);
    sample.set("reloads", s.reloads as f64);
    if h.retried > 0 {
        let why =
            "a kept-alive connection was closed before answering (as browsers do; not failures)";
        sample
            .notes
            .push(format!("{} GETs retried once: {why}", h.retried));
    }
    if let Some(first) = seen.iter().find(|s| !matches!(s, ReloadSeen::Swapped(_))) {
        sample.notes.push(format!(
            "ringway-proxy's reload was not in effect: {first:?}"
        ));
    }
    sample.keep(&h);
    sample.keep(&w);
    Ok(sample.finish(&peer))
}

/// `n` distinct addresses nothing listens on (no request reaches them).
fn servers(n: usize, from: usize) -> Vec<SocketAddr> {
    let addr = |i: usize| SocketAddr::from(([127, 2, (i / 250) as u8, (i % 250 + 1) as u8], 9));
    (from..from + n).map(addr).collect()
}

/// `reload-1000`: reloads of a 1,000-server config, their time and the RSS they leave.
pub async fn reload_1000(ctx: &Ctx, kind: PeerKind) -> anyhow::Result<Sample> {
    let mut peer = ctx
        .peer(kind, &servers(1000, 0), false, AccessLog::Off)
        .await?;
    let (pid, mut sample) = (peer.pid().unwrap_or(0), Sample::default());
    let (mut times, mut rss_10) = (Vec::new(), None);
    for i in 0..ctx.settings.big_reloads {
        // Two lists that differ by one server: each reload removes one and adds one.
        peer.site.upstreams = servers(1000, (i + 1) % 2);
        match peer.reload_seen().await? {
            ReloadSeen::Swapped(ms) => times.push(ms),
            ReloadSeen::Failed(why) => sample.notes.push(format!("reload {i} failed: {why}")),
            ReloadSeen::Unsupported(line) => {
                return Err(Unsupported(format!("reload: {line}")).into())
            }
            ReloadSeen::NotSeen => {
                return Err(Unsupported("reload: no outcome within 5 s".into()).into())
            }
        }
        if i == 9 {
            rss_10 = procs::tree_rss_kib(pid);
        }
    }
    let rss_all = procs::tree_rss_kib(pid);
    sample.set("reload_ms_p50", stats::median(times.clone()));
    sample.set("reload_ms_max", times.iter().copied().reduce(f64::max));
    if let (Some(a), Some(b)) = (rss_10, rss_all) {
        sample.set("rss_10_mib", a as f64 / 1024.0);
        sample.set("rss_all_mib", b as f64 / 1024.0);
        sample.set("rss_growth_pct", (b as f64 / a as f64 - 1.0) * 100.0);
    }
    sample.keep(&times);
    Ok(sample.finish(&peer))
}

/// `access-log`: a paced HTTP rate with the access log off, then to a file.
pub async fn access_log(ctx: &Ctx, kind: PeerKind) -> anyhow::Result<Sample> {
    let s = &ctx.settings;
    let mut sample = Sample::default();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("access.log");
    for (label, log) in [
        ("off", AccessLog::Off),
        ("file", AccessLog::File(file.clone())),
    ] {
        let peer = ctx.peer(kind, &ctx.rig.http, false, log).await?;
        if peer.site.access_log == AccessLog::Omit {
            return Err(Unsupported("the [log] table (access log)".into()).into());
        }
        let spec = ctx.http(&peer, s.http_connections, Some(s.access_rate), s.window)?;
        let r = ctx
            .measured(&mut sample, || http::run(spec.clone()))
            .await?;
        sample.set(&format!("rps_{label}"), r.requests_per_sec);
        sample.set(&format!("p99_{label}_ms"), r.latency.p99_ms);
        sample.proxy_cost(&r.cpu, r.window_secs, r.requests, &format!("us_{label}"));
        sample.keep(&r);
        sample = sample.finish(&peer);
    }
    sample.values.remove("proxy_cpu");
    let lines = std::fs::read_to_string(&file).map_or(0, |t| t.lines().count());
    sample.set("log_lines", lines as f64);
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousand_distinct_servers() {
        let list = servers(1000, 1);
        assert_eq!(list.len(), 1000);
        assert_eq!(list[0], "127.2.0.2:9".parse().unwrap());
        assert_eq!(list[999], "127.2.4.1:9".parse().unwrap());
    }
}
