//! Fan-out: how many messages per second one node delivers to many local
//! clients, and how late they arrive.
//!
//! `clients` subscribers connect to node A (each its own task, reading
//! concurrently) and join one room per phase up front. Then, per phase, a
//! publisher sends into that phase's room:
//!
//! - **burst**: `count` messages back to back, as fast as the node reads
//!   them. Every member's outbox fills, so the node delivers at its
//!   ceiling: deliveries/s = deliveries ÷ (first send → last receive).
//!   Latencies here are queueing time, reported but not the point.
//! - **paced**: `rate` messages/s on a schedule, below the ceiling: the
//!   delivery latency under that load (warm-up excluded).
//!
//! Each phase runs with the publisher on node A itself, and then (if
//! asked) on a second node B, so the message crosses Redis from another
//! process. Node B is started only then, so the single-node phases run with
//! one node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::sync::{mpsc, watch, Semaphore};

use super::client::{self, Pace, Publisher, PublisherReport, Received, Tally};
use super::clock::{ms, now_ns, ns_of};
use super::nodes::{node_name, Deployment, NodeSettings};
use crate::procs::{self, CpuShare};
use crate::stats::{self, HistogramEstimate, Summary, PUBLISH_TO_DELIVER};

/// What the fan-out benchmark does.
#[derive(Debug, Clone)]
pub struct FanoutSpec {
    /// Subscribers on node A.
    pub clients: usize,
    /// Messages of the burst phase (0: no burst phase).
    pub burst: u64,
    /// Rates (messages/s) of the paced phases.
    pub paced_rates: Vec<f64>,
    /// Warm-up of a paced phase.
    pub warmup: Duration,
    /// Measured window of a paced phase.
    pub duration: Duration,
    /// Also run every phase with the publisher on a second node.
    pub cross_node: bool,
    /// Clients connecting at once.
    pub connect_concurrency: usize,
    /// Give up waiting for deliveries after this long without progress.
    pub drain_idle: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Burst(u64),
    Paced(f64),
}

#[derive(Debug, Clone)]
struct Phase {
    mode: Mode,
    /// Publisher on node B (else on node A, with the subscribers).
    other_node: bool,
    room: String,
}

/// The figures of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutPhase {
    /// `burst` or `paced`.
    pub mode: String,
    /// Where the publisher was.
    pub publisher_node: String,
    /// Where the subscribers were.
    pub subscriber_node: String,
    /// Target rate of a paced phase, messages/s.
    pub target_rate: Option<f64>,
    /// Subscribers.
    pub clients: usize,
    /// Messages published.
    pub sent: u64,
    /// Publish rate achieved (sent ÷ first→last send).
    pub achieved_publish_rate: f64,
    /// sent × clients.
    pub expected_deliveries: u64,
    /// Distinct (client, offset) pairs received.
    pub delivered: u64,
    /// Expected but never received.
    pub lost: u64,
    /// Received more than once.
    pub duplicated: u64,
    /// Received after a higher offset.
    pub out_of_order: u64,
    /// Offsets no publish of this phase explains.
    pub unexpected: u64,
    /// First send → last send, ms.
    pub publish_span_ms: f64,
    /// First send → last receive (burst), or the window (paced), ms.
    pub delivery_span_ms: f64,
    /// Deliveries per second across all clients over that span (burst:
    /// the node's ceiling; paced: the offered load it kept up with).
    pub deliveries_per_sec: f64,
    /// Send → receive, per delivery (paced: sent in the window).
    pub latency: Summary,
    /// The subscribers' node histogram (publish → queued for members).
    pub server_histogram: HistogramEstimate,
    /// Clients the node closed with 1013 during the phase.
    pub slow_consumer_closes: u64,
    /// Error frames the publisher got, by code.
    pub publish_errors: BTreeMap<String, u64>,
    /// Worst lateness of a paced send behind schedule, ms.
    pub publisher_max_lag_ms: f64,
    /// CPU use over the phase's window, per process.
    pub cpu: Vec<CpuShare>,
    /// CPU time per delivery in the window, per process (burst: the
    /// node's cost of one delivery, and the client's).
    pub cpu_per_delivery: Vec<CpuCost>,
    /// Whether every expected delivery arrived before the drain gave up.
    pub complete: bool,
}

/// One process' CPU time per delivery: what a delivery costs the node
/// (and the client), independent of how the cores were shared.
#[derive(Debug, Clone, Serialize)]
pub struct CpuCost {
    /// The process.
    pub name: String,
    /// CPU microseconds per delivery.
    pub us: f64,
}

/// The whole fan-out benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutResult {
    /// Subscribers.
    pub clients: usize,
    /// Rooms each subscriber joined (one per phase).
    pub rooms_per_client: usize,
    /// Time to connect and join all of them, s.
    pub connect_secs: f64,
    /// Subscribers whose connection ended before the end, by reason.
    pub ended_early: BTreeMap<String, usize>,
    /// One entry per phase, in run order.
    pub phases: Vec<FanoutPhase>,
    /// WARN/ERROR lines the nodes logged.
    pub node_warnings: Vec<String>,
}

/// What a phase leaves for the final count.
struct PhaseRun {
    report: PublisherReport,
    window: (u64, u64),
    cpu: Vec<CpuShare>,
    server_histogram: HistogramEstimate,
    slow_consumer_closes: u64,
    complete: bool,
}

/// Run every phase of `spec` on a fresh Redis deployment.
pub async fn measure(settings: &NodeSettings, spec: &FanoutSpec) -> anyhow::Result<FanoutResult> {
    let phases = plan(spec);
    if phases.is_empty() || spec.clients == 0 {
        bail!("the fan-out benchmark has nothing to do");
    }
    let mut dep = Deployment::redis(1, settings).await?;
    let rooms: Vec<String> = phases.iter().map(|p| p.room.clone()).collect();
    let expected: Vec<usize> = phases
        .iter()
        .map(|p| match p.mode {
            Mode::Burst(n) => n as usize,
            Mode::Paced(r) => (r * (spec.warmup + spec.duration).as_secs_f64()) as usize + 16,
        })
        .collect();
    let counters: Arc<[AtomicU64]> = rooms.iter().map(|_| AtomicU64::new(0)).collect();
    let (stop, stopped) = watch::channel(false);

    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(spec.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<(), String>>(spec.clients);
    let mut subscribers = Vec::with_capacity(spec.clients);
    for i in 0..spec.clients {
        let url = dep.nodes[0].ws_url(&format!("bench-fan-{i}"));
        let (rooms, expected) = (rooms.clone(), expected.clone());
        let (gate, ready, counters, stopped) = (
            gate.clone(),
            ready_tx.clone(),
            counters.clone(),
            stopped.clone(),
        );
        subscribers.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let setup = async {
                let mut ws = client::connect(&url).await?;
                let tops = client::join(&mut ws, &rooms).await?;
                anyhow::Ok((ws, tops))
            }
            .await;
            drop(permit);
            match setup {
                Ok((ws, tops)) => {
                    let _ = ready.send(Ok(())).await;
                    let tallies = tops
                        .iter()
                        .zip(&expected)
                        .map(|(base, n)| Tally::new(*base, *n))
                        .collect();
                    Some(client::receive(ws, rooms, tallies, counters, stopped).await)
                }
                Err(e) => {
                    let _ = ready.send(Err(format!("{e:#}"))).await;
                    None
                }
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..spec.clients {
        match tokio::time::timeout(Duration::from_secs(120), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => bail!("a subscriber could not connect: {e}"),
            Ok(None) | Err(_) => bail!("subscribers did not all connect within 120 s"),
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();

    let mut runs = Vec::with_capacity(phases.len());
    for (i, phase) in phases.iter().enumerate() {
        if phase.other_node && dep.nodes.len() < 2 {
            dep.add_node().await?;
        }
        let run = run_phase(&dep, phase, spec, &counters[i]).await?;
        runs.push(run);
    }

    let _ = stop.send(true);
    let mut received: Vec<Received> = Vec::with_capacity(spec.clients);
    for task in subscribers {
        if let Some(r) = task.await.context("subscriber task")? {
            received.push(r);
        }
    }
    let mut ended_early = BTreeMap::new();
    for r in &received {
        if let Some(why) = &r.ended {
            *ended_early.entry(why.clone()).or_insert(0) += 1;
        }
    }
    let phases = phases
        .iter()
        .zip(runs)
        .enumerate()
        .map(|(i, (phase, run))| summarize(i, phase, run, &received, spec.clients))
        .collect();
    Ok(FanoutResult {
        clients: spec.clients,
        rooms_per_client: rooms.len(),
        connect_secs,
        ended_early,
        phases,
        node_warnings: dep.warnings(),
    })
}

fn plan(spec: &FanoutSpec) -> Vec<Phase> {
    let mut modes = Vec::new();
    if spec.burst > 0 {
        modes.push(Mode::Burst(spec.burst));
    }
    modes.extend(spec.paced_rates.iter().map(|r| Mode::Paced(*r)));
    let placements: &[bool] = if spec.cross_node {
        &[false, true]
    } else {
        &[false]
    };
    let pid = std::process::id();
    placements
        .iter()
        .flat_map(|&other_node| {
            modes.iter().map(move |&mode| {
                let what = match mode {
                    Mode::Burst(n) => format!("burst{n}"),
                    Mode::Paced(r) => format!("paced{}", r as u64),
                };
                let wherefrom = if other_node { "cross" } else { "local" };
                Phase {
                    mode,
                    other_node,
                    room: format!("fan-{what}-{wherefrom}-{pid}"),
                }
            })
        })
        .collect()
}

async fn run_phase(
    dep: &Deployment,
    phase: &Phase,
    spec: &FanoutSpec,
    counter: &AtomicU64,
) -> anyhow::Result<PhaseRun> {
    let sub_node = &dep.nodes[0];
    let pub_node = &dep.nodes[usize::from(phase.other_node)];
    let pace = match phase.mode {
        Mode::Burst(count) => Pace::Burst { count },
        Mode::Paced(per_sec) => Pace::Rate {
            per_sec,
            duration: spec.warmup + spec.duration,
        },
    };
    let publisher = Publisher::connect(pub_node.ws_url("bench-fan-pub"), phase.room.clone(), pace)
        .await
        .context("fan-out publisher")?;
    let mut watched = vec![procs::Watched::new("bench client", std::process::id())];
    watched.extend(dep.watched.iter().cloned());
    let start = Instant::now() + Duration::from_millis(50);

    let (window, cpu_before, metrics_before, report, complete, cpu_after) = match phase.mode {
        Mode::Burst(_) => {
            let metrics_before = sub_node.scrape().await?;
            let cpu_before = procs::snapshot(&watched);
            publisher.start(start);
            let report = publisher.finish().await?;
            let complete = drain(counter, report.sent, spec).await;
            let cpu_after = procs::snapshot(&watched);
            let window = (ns_of(start), now_ns());
            (
                window,
                cpu_before,
                metrics_before,
                report,
                complete,
                cpu_after,
            )
        }
        Mode::Paced(_) => {
            publisher.start(start);
            let (w0, w1) = (start + spec.warmup, start + spec.warmup + spec.duration);
            tokio::time::sleep_until(w0.into()).await;
            let cpu_before = procs::snapshot(&watched);
            let metrics_before = sub_node.scrape().await?;
            tokio::time::sleep_until(w1.into()).await;
            let cpu_after = procs::snapshot(&watched);
            let report = publisher.finish().await?;
            let complete = drain(counter, report.sent, spec).await;
            (
                (ns_of(w0), ns_of(w1)),
                cpu_before,
                metrics_before,
                report,
                complete,
                cpu_after,
            )
        }
    };
    let metrics_after = sub_node.scrape().await?;
    let slow = "ringway_backend_slow_consumer_closes_total";
    Ok(PhaseRun {
        report,
        window,
        cpu: procs::shares(&cpu_before, &cpu_after),
        server_histogram: stats::histogram_window(
            &metrics_before,
            &metrics_after,
            PUBLISH_TO_DELIVER,
        ),
        slow_consumer_closes: (metrics_after.value(slow) - metrics_before.value(slow)) as u64,
        complete,
    })
}

async fn drain(counter: &AtomicU64, sent: u64, spec: &FanoutSpec) -> bool {
    let target = sent * spec.clients as u64;
    client::wait_for_count(
        || counter.load(Ordering::Relaxed),
        target,
        spec.drain_idle,
        Duration::from_secs(600),
    )
    .await
}

fn summarize(
    i: usize,
    phase: &Phase,
    run: PhaseRun,
    received: &[Received],
    clients: usize,
) -> FanoutPhase {
    let sent = run.report.sent;
    let tallies = received.iter().map(|r| &r.tallies[i]);
    let (mut delivered, mut duplicated, mut out_of_order, mut unexpected) = (0, 0, 0, 0);
    let mut last_recv = 0;
    let mut latencies = Vec::new();
    let mut in_window = 0usize;
    let (w0, w1) = run.window;
    let paced = matches!(phase.mode, Mode::Paced(_));
    for t in tallies {
        delivered += t.distinct_within(sent);
        duplicated += t.duplicates;
        out_of_order += t.out_of_order;
        unexpected += t.stale + t.distinct_beyond(sent);
        last_recv = last_recv.max(t.last_recv_ns());
        for &(s, r) in &t.samples {
            if !paced || (w0..w1).contains(&s) {
                latencies.push(r.saturating_sub(s));
            }
            if paced && (w0..w1).contains(&r) {
                in_window += 1;
            }
        }
    }
    let expected = sent * clients as u64;
    let publish_span_ns = run
        .report
        .last_send_ns
        .saturating_sub(run.report.first_send_ns);
    let delivery_span_ns = if paced {
        w1 - w0
    } else {
        last_recv.saturating_sub(run.report.first_send_ns)
    };
    let deliveries = if paced { in_window as u64 } else { delivered };
    let window_secs = (w1 - w0) as f64 / 1e9;
    let cpu_per_delivery = run
        .cpu
        .iter()
        .filter(|c| c.name != "others")
        .map(|c| CpuCost {
            name: c.name.clone(),
            us: if deliveries == 0 {
                0.0
            } else {
                let us = c.percent_of_core / 100.0 * window_secs * 1e6 / deliveries as f64;
                (us * 100.0).round() / 100.0
            },
        })
        .collect();
    let per_sec = |n: u64, span_ns: u64| {
        if span_ns == 0 {
            0.0
        } else {
            n as f64 / (span_ns as f64 / 1e9)
        }
    };
    FanoutPhase {
        mode: if paced { "paced" } else { "burst" }.into(),
        publisher_node: node_name(usize::from(phase.other_node)),
        subscriber_node: node_name(0),
        target_rate: match phase.mode {
            Mode::Paced(r) => Some(r),
            Mode::Burst(_) => None,
        },
        clients,
        sent,
        achieved_publish_rate: per_sec(sent.saturating_sub(1), publish_span_ns),
        expected_deliveries: expected,
        delivered,
        lost: expected.saturating_sub(delivered),
        duplicated,
        out_of_order,
        unexpected,
        publish_span_ms: ms(publish_span_ns),
        delivery_span_ms: ms(delivery_span_ns),
        deliveries_per_sec: per_sec(deliveries, delivery_span_ns),
        latency: stats::summarize(latencies),
        server_histogram: run.server_histogram,
        slow_consumer_closes: run.slow_consumer_closes,
        publish_errors: run.report.errors,
        publisher_max_lag_ms: ms(run.report.max_lag_ns),
        cpu: run.cpu,
        cpu_per_delivery,
        complete: run.complete,
    }
}
