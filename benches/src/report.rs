//! The human-readable table of a [`Report`] (the JSON is its serde form).

use std::fmt::Write as _;

use crate::procs::CpuShare;
use crate::run::Report;

/// The report as a plain-text table, for stdout and for pasting into
/// `docs/BENCHMARKS.md`.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let _ = writeln!(
        out,
        "ringway-bench-backend: {} × {}, {} GiB, Linux {}, {}; commit {}{}",
        m.cpus,
        m.cpu_model,
        m.memory_gib,
        m.kernel,
        m.redis,
        m.git_commit,
        if m.backend_uncommitted_changes {
            " + uncommitted backend/ changes"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "client, Redis and nodes share these {} CPUs; command: {}",
        m.cpus, r.command
    );
    let _ = writeln!(out, "total {:.0} s", r.total_secs);

    if !r.latency.is_empty() {
        let _ = writeln!(
            out,
            "\nCross-node publish-to-deliver latency, ms (publisher on node A, subscriber on node B; \
             {} s window after {} s warm-up)",
            r.options.duration, r.options.warmup
        );
        let _ = writeln!(
            out,
            "{:<8} {:>7} {:>8} {:>8} {:>7} {:>4} {:>4} {:>4} {:>7} {:>7} {:>7} {:>7} {:>7} | {:>7} {:>7}",
            "backend", "target", "sent/s", "recv/s", "sent", "lost", "dup", "ooo",
            "p50", "p90", "p99", "p99.9", "max", "srv p50", "srv p99"
        );
        for l in &r.latency {
            let _ = writeln!(
                out,
                "{:<8} {:>7} {:>8.0} {:>8.0} {:>7} {:>4} {:>4} {:>4} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} | {:>7} {:>7}",
                l.backplane,
                l.target_rate,
                l.achieved_publish_rate,
                l.achieved_delivery_rate,
                l.sent,
                l.lost,
                l.duplicated,
                l.out_of_order,
                l.latency.p50_ms,
                l.latency.p90_ms,
                l.latency.p99_ms,
                l.latency.p999_ms,
                l.latency.max_ms,
                srv(l.server_histogram.p50_ms),
                srv(l.server_histogram.p99_ms),
            );
        }
        for l in &r.latency {
            let mut notes = Vec::new();
            if !l.publish_errors.is_empty() {
                notes.push(format!("publish errors {:?}", l.publish_errors));
            }
            if l.unexpected + l.gap_announcements > 0 {
                notes.push(format!(
                    "unexpected offsets {}, gap announcements {}",
                    l.unexpected, l.gap_announcements
                ));
            }
            let slow_seconds = l.per_second_max_ms.iter().filter(|&&m| m > 5.0).count();
            if l.over_5ms > 0 {
                notes.push(format!(
                    "{} messages over 5 ms, in {} of {} seconds",
                    l.over_5ms,
                    slow_seconds,
                    l.per_second_max_ms.len()
                ));
            }
            if let Some(e) = &l.subscriber_ended {
                notes.push(format!("subscriber {e}"));
            }
            let _ = writeln!(
                out,
                "  {} {}/s: publisher max lag {:.3} ms ({} sends > 1 ms late); CPU % of a core: {}{}",
                l.backplane,
                l.target_rate,
                l.publisher_max_lag_ms,
                l.publisher_late_sends,
                cpu(&l.cpu),
                if notes.is_empty() {
                    String::new()
                } else {
                    format!("; {}", notes.join("; "))
                }
            );
        }
        let _ = writeln!(
            out,
            "  (srv = node B's ringway_backend_publish_to_deliver_seconds, estimated from its buckets)"
        );
    }

    if !r.redis_added.is_empty() {
        let _ = writeln!(
            out,
            "\nAdded by Redis (Redis run − in-memory run), ms, against the promised < {} ms",
            r.redis_added[0].promise_ms
        );
        let _ = writeln!(
            out,
            "{:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>14}",
            "rate",
            "redis p50",
            "mem p50",
            "added",
            "redis p99",
            "mem p99",
            "added",
            "p99 below 5 ms"
        );
        for a in &r.redis_added {
            let _ = writeln!(
                out,
                "{:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>14.3}",
                a.rate,
                a.redis_p50_ms,
                a.memory_p50_ms,
                a.added_p50_ms,
                a.redis_p99_ms,
                a.memory_p99_ms,
                a.added_p99_ms,
                a.p99_margin_ms
            );
        }
    }

    if let Some(f) = &r.fanout {
        let _ = writeln!(
            out,
            "\nFan-out to {} clients on node A ({} rooms each, connected in {:.1} s), Redis backplane",
            f.clients, f.rooms_per_client, f.connect_secs
        );
        let _ = writeln!(
            out,
            "{:<6} {:<9} {:>6} {:>6} {:>9} {:>5} {:>4} {:>4} {:>11} {:>8} {:>8} {:>8} {:>8} | {:>7} {:>7} {:>5}",
            "mode", "publisher", "rate", "sent", "delivered", "lost", "dup", "ooo",
            "deliver/s", "p50", "p99", "p99.9", "max", "srv p50", "srv p99", "1013s"
        );
        for p in &f.phases {
            let _ = writeln!(
                out,
                "{:<6} {:<9} {:>6} {:>6} {:>9} {:>5} {:>4} {:>4} {:>11.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} | {:>7} {:>7} {:>5}{}",
                p.mode,
                p.publisher_node,
                p.target_rate.map_or("max".to_owned(), |r| r.to_string()),
                p.sent,
                p.delivered,
                p.lost,
                p.duplicated,
                p.out_of_order,
                p.deliveries_per_sec,
                p.latency.p50_ms,
                p.latency.p99_ms,
                p.latency.p999_ms,
                p.latency.max_ms,
                srv(p.server_histogram.p50_ms),
                srv(p.server_histogram.p99_ms),
                p.slow_consumer_closes,
                if p.complete { "" } else { "  INCOMPLETE" }
            );
        }
        for p in &f.phases {
            let sending = match p.target_rate {
                Some(r) => format!(
                    "{r}/s: published at {:.0}/s, max lag {:.3} ms",
                    p.achieved_publish_rate, p.publisher_max_lag_ms
                ),
                None => format!(
                    "burst: {} frames written in {:.1} ms, last delivery {:.0} ms after the first send",
                    p.sent, p.publish_span_ms, p.delivery_span_ms
                ),
            };
            let cost = p
                .cpu_per_delivery
                .iter()
                .map(|c| format!("{} {:.2}", c.name, c.us))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "  {} from {} ({sending}); CPU % of a core: {}; CPU µs per delivery: {cost}{}",
                p.mode,
                p.publisher_node,
                cpu(&p.cpu),
                if p.publish_errors.is_empty() {
                    String::new()
                } else {
                    format!("; publish errors {:?}", p.publish_errors)
                }
            );
        }
        if !f.ended_early.is_empty() {
            let _ = writeln!(out, "  clients that ended early: {:?}", f.ended_early);
        }
        warnings(&mut out, "fan-out nodes", &f.node_warnings);
    }
    warnings(&mut out, "latency nodes", &r.node_warnings);
    let disturbed = disturbed(r);
    if !disturbed.is_empty() {
        let _ = writeln!(
            out,
            "\nDISTURBED: other processes used over {OTHERS_LIMIT} % of a core during: {}",
            disturbed.join(", ")
        );
    }
    out
}

/// CPU % of a core used by processes outside the benchmark above which a
/// window's figures are flagged as disturbed.
pub const OTHERS_LIMIT: f64 = 10.0;

/// The windows during which something else ran on the machine.
pub fn disturbed(r: &Report) -> Vec<String> {
    let others = |cpu: &[CpuShare]| {
        cpu.iter()
            .find(|c| c.name == "others")
            .map_or(0.0, |c| c.percent_of_core)
    };
    let mut out = Vec::new();
    for l in &r.latency {
        if others(&l.cpu) > OTHERS_LIMIT {
            out.push(format!(
                "latency {} {}/s ({:.0} %)",
                l.backplane,
                l.target_rate,
                others(&l.cpu)
            ));
        }
    }
    for p in r.fanout.iter().flat_map(|f| &f.phases) {
        if others(&p.cpu) > OTHERS_LIMIT {
            out.push(format!(
                "fan-out {} from {} ({:.0} %)",
                p.mode,
                p.publisher_node,
                others(&p.cpu)
            ));
        }
    }
    out
}

/// A server-histogram estimate: `>1000` beyond the largest bucket.
fn srv(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        ">1000".into()
    }
}

fn cpu(shares: &[CpuShare]) -> String {
    shares
        .iter()
        .map(|s| format!("{} {:.0}", s.name, s.percent_of_core))
        .collect::<Vec<_>>()
        .join(", ")
}

fn warnings(out: &mut String, what: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{} WARN/ERROR log lines from {what}:", lines.len());
    for l in lines.iter().take(10) {
        let _ = writeln!(out, "  {l}");
    }
}
