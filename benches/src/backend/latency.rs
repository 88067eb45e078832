//! Cross-node publish-to-deliver latency at a paced rate.
//!
//! One publisher on node A, one subscriber on node B joined to a fresh
//! room. The publisher sends on a fixed schedule (`rate` per second) for
//! a warm-up and then the measured window; each message carries its send
//! time. The subscriber records receive − send for every message, and
//! checks that offsets arrive consecutively, each once. Only messages
//! *sent* inside the window count towards the percentiles; loss and order
//! are checked over the whole run.
//!
//! The node's own histogram (`ringway_backend_publish_to_deliver_seconds`
//! on node B: A hands the message to the broker → B queues it for its
//! members) is read at the window's start and after the drain, and its
//! bucket-estimated p50/p99 reported next to the client's figures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::watch;

use super::client::{self, Pace, Publisher, Tally};
use super::clock::{ms, ns_of};
use super::nodes::{node_name, Deployment};
use crate::procs::{self, CpuShare};
use crate::stats::{self, HistogramEstimate, Summary, PUBLISH_TO_DELIVER};

/// One latency measurement: how fast and how long.
#[derive(Debug, Clone, Copy)]
pub struct LatencySpec {
    /// Messages per second.
    pub rate: f64,
    /// Sent before the window, not counted (connections and caches warm).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// How long to wait for stragglers after the last send.
    pub drain: Duration,
}

/// The figures of one latency measurement.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    /// `redis` or `memory`.
    pub backplane: String,
    /// Where the publisher was.
    pub publisher_node: String,
    /// Where the subscriber was.
    pub subscriber_node: String,
    /// The target rate, messages/s.
    pub target_rate: f64,
    /// Length of the measured window, s.
    pub window_secs: f64,
    /// Messages sent over the whole run divided by the time sending took.
    pub achieved_publish_rate: f64,
    /// Messages received within the window divided by its length.
    pub achieved_delivery_rate: f64,
    /// Messages sent (warm-up included).
    pub sent: u64,
    /// Messages received (warm-up included).
    pub received: u64,
    /// Sent but never received.
    pub lost: u64,
    /// Received more than once.
    pub duplicated: u64,
    /// Received after a higher offset.
    pub out_of_order: u64,
    /// Offsets no publish of this run explains, or at/below the join.
    pub unexpected: u64,
    /// `joined … recovered:false` frames for the room during the run.
    pub gap_announcements: u64,
    /// Error frames the publisher got, by code.
    pub publish_errors: BTreeMap<String, u64>,
    /// Worst lateness of a send behind its schedule, ms.
    pub publisher_max_lag_ms: f64,
    /// Sends more than 1 ms behind schedule.
    pub publisher_late_sends: u64,
    /// Client-side publish-to-deliver latency of messages sent in the window.
    pub latency: Summary,
    /// Messages of the window slower than the 5 ms promise.
    pub over_5ms: u64,
    /// The slowest message of each second of the window, ms: whether the
    /// tail is spread out or a few stalls.
    pub per_second_max_ms: Vec<f64>,
    /// The subscriber node's histogram over the window (and drain).
    pub server_histogram: HistogramEstimate,
    /// CPU use over the window, per process.
    pub cpu: Vec<CpuShare>,
    /// How the subscriber's connection ended early, if it did.
    pub subscriber_ended: Option<String>,
}

/// Measure on `dep`, publishing on node `from` and receiving on node `to`.
pub async fn measure(
    dep: &Deployment,
    from: usize,
    to: usize,
    spec: LatencySpec,
) -> anyhow::Result<LatencyResult> {
    let (pub_node, sub_node) = (&dep.nodes[from], &dep.nodes[to]);
    let room = format!(
        "lat-{}-{}-{}",
        dep.backplane,
        spec.rate as u64,
        std::process::id()
    );
    let total = spec.warmup + spec.duration;
    let expected = (spec.rate * total.as_secs_f64()) as usize + 16;

    let mut ws = client::connect(&sub_node.ws_url("bench-lat-sub"))
        .await
        .context("subscriber")?;
    let base = client::join(&mut ws, std::slice::from_ref(&room)).await?[0];
    let counters: Arc<[AtomicU64]> = Arc::new([AtomicU64::new(0)]);
    let (stop, stopped) = watch::channel(false);
    let receiver = tokio::spawn(client::receive(
        ws,
        vec![room.clone()],
        vec![Tally::new(base, expected)],
        counters.clone(),
        stopped,
    ));

    let publisher = Publisher::connect(
        pub_node.ws_url("bench-lat-pub"),
        room.clone(),
        Pace::Rate {
            per_sec: spec.rate,
            duration: total,
        },
    )
    .await
    .context("publisher")?;
    let start = Instant::now() + Duration::from_millis(50);
    publisher.start(start);
    let window_start = start + spec.warmup;
    let window_end = window_start + spec.duration;

    let mut watched = vec![procs::Watched::new("bench client", std::process::id())];
    watched.extend(dep.watched.iter().cloned());
    tokio::time::sleep_until(window_start.into()).await;
    let cpu_before = procs::snapshot(&watched);
    let metrics_before = sub_node.scrape().await?;
    tokio::time::sleep_until(window_end.into()).await;
    let cpu_after = procs::snapshot(&watched);

    let report = publisher.finish().await.context("publisher")?;
    client::wait_for_count(
        || counters[0].load(Ordering::Relaxed),
        report.sent,
        spec.drain,
        spec.drain * 4,
    )
    .await;
    let metrics_after = sub_node.scrape().await?;
    let _ = stop.send(true);
    let received = receiver.await.context("subscriber task")?;
    let tally = &received.tallies[0];

    let (w0, w1) = (ns_of(window_start), ns_of(window_end));
    let in_window: Vec<u64> = tally
        .samples
        .iter()
        .filter(|(sent, _)| (w0..w1).contains(sent))
        .map(|(sent, recv)| recv.saturating_sub(*sent))
        .collect();
    let seconds = spec.duration.as_secs_f64().ceil().max(1.0) as usize;
    let mut per_second_max = vec![0u64; seconds];
    for (sent, recv) in tally.samples.iter().filter(|(s, _)| (w0..w1).contains(s)) {
        let slot = (((sent - w0) / 1_000_000_000) as usize).min(seconds - 1);
        per_second_max[slot] = per_second_max[slot].max(recv.saturating_sub(*sent));
    }
    let over_5ms = in_window.iter().filter(|&&l| l > 5_000_000).count() as u64;
    let delivered_in_window = tally
        .samples
        .iter()
        .filter(|(_, recv)| (w0..w1).contains(recv))
        .count();
    let distinct = tally.distinct_within(report.sent);
    let send_span = ms(report.last_send_ns.saturating_sub(report.first_send_ns)) / 1e3;
    Ok(LatencyResult {
        backplane: dep.backplane.to_owned(),
        publisher_node: node_name(from),
        subscriber_node: node_name(to),
        target_rate: spec.rate,
        window_secs: spec.duration.as_secs_f64(),
        achieved_publish_rate: if send_span > 0.0 {
            (report.sent.saturating_sub(1)) as f64 / send_span
        } else {
            0.0
        },
        achieved_delivery_rate: delivered_in_window as f64 / spec.duration.as_secs_f64(),
        sent: report.sent,
        received: tally.samples.len() as u64,
        lost: report.sent - distinct,
        duplicated: tally.duplicates,
        out_of_order: tally.out_of_order,
        unexpected: tally.stale + tally.distinct_beyond(report.sent),
        gap_announcements: tally.announcements,
        publish_errors: report.errors,
        publisher_max_lag_ms: ms(report.max_lag_ns),
        publisher_late_sends: report.late_sends,
        latency: stats::summarize(in_window),
        over_5ms,
        per_second_max_ms: per_second_max.into_iter().map(ms).collect(),
        server_histogram: stats::histogram_window(
            &metrics_before,
            &metrics_after,
            PUBLISH_TO_DELIVER,
        ),
        cpu: procs::shares(&cpu_before, &cpu_after),
        subscriber_ended: received.ended,
    })
}
