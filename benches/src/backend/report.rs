//! The backend benchmark's report as markdown tables (the JSON is the
//! report's serde form): latency per backplane and rate, what Redis adds,
//! fan-out per phase, and the notes that qualify them.

use std::fmt::Write as _;

use super::Report;
use crate::procs::{self, share};
use crate::report::{num, Table};

/// CPU % of a core used by processes outside the benchmark above which a
/// window's figures are flagged as disturbed.
pub const OTHERS_LIMIT: f64 = 10.0;

/// A server-histogram estimate: `>1000` beyond the largest bucket.
fn srv(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        ">1000".into()
    }
}

/// The report, for stdout and for pasting into `docs/BENCHMARKS.md`.
pub fn render(r: &Report) -> String {
    let mut out = format!(
        "ringway-bench-backend: {}; client, Redis and nodes share the {} CPUs\nversions: {:?}\ncommand: `{}`; total {:.0} s\n",
        r.machine.summary(),
        r.machine.cpus,
        r.machine.versions,
        r.command,
        r.total_secs
    );
    let mut notes: Vec<String> = Vec::new();
    if !r.latency.is_empty() {
        let _ = writeln!(
            out,
            "\nCross-node publish-to-deliver latency, ms (publisher on node A, subscriber on node B; {} s \
             window after {} s warm-up; srv = node B's histogram, estimated from its buckets)\n",
            r.options.duration, r.options.warmup
        );
        let mut t = Table::new(&[
            "backplane",
            "target/s",
            "sent/s",
            "recv/s",
            "sent",
            "lost",
            "dup",
            "ooo",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            "srv p50",
            "srv p99",
        ]);
        for l in &r.latency {
            let s = &l.latency;
            t.row(vec![
                l.backplane.clone(),
                num(l.target_rate, 0),
                num(l.achieved_publish_rate, 0),
                num(l.achieved_delivery_rate, 0),
                l.sent.to_string(),
                l.lost.to_string(),
                l.duplicated.to_string(),
                l.out_of_order.to_string(),
                num(s.p50_ms, 3),
                num(s.p90_ms, 3),
                num(s.p99_ms, 3),
                num(s.p999_ms, 3),
                num(s.max_ms, 3),
                srv(l.server_histogram.p50_ms),
                srv(l.server_histogram.p99_ms),
            ]);
            let slow = l.per_second_max_ms.iter().filter(|&&m| m > 5.0).count();
            notes.push(format!(
                "latency {} {}/s: publisher max lag {:.3} ms ({} sends > 1 ms late); CPU % of a core: {}; \
                 {} messages over 5 ms in {slow} of {} seconds; publish errors {:?}; unexpected offsets {}, \
                 gap announcements {}{}",
                l.backplane,
                l.target_rate,
                l.publisher_max_lag_ms,
                l.publisher_late_sends,
                procs::render(&l.cpu),
                l.over_5ms,
                l.per_second_max_ms.len(),
                l.publish_errors,
                l.unexpected,
                l.gap_announcements,
                l.subscriber_ended.as_ref().map_or(String::new(), |e| format!("; subscriber {e}")),
            ));
        }
        out += &t.markdown();
    }
    let pairs: Vec<_> = r
        .options
        .rates
        .iter()
        .filter_map(|&rate| {
            let find = |b: &str| {
                r.latency
                    .iter()
                    .find(|l| l.backplane == b && l.target_rate == rate)
            };
            Some((rate, &find("redis")?.latency, &find("memory")?.latency))
        })
        .collect();
    if !pairs.is_empty() {
        let promise = super::PROMISE_MS;
        let _ = writeln!(out, "\nAdded by Redis (Redis run − in-memory run), ms, against the promised < {promise} ms\n");
        let mut t = Table::new(&[
            "rate/s",
            "Redis p50",
            "memory p50",
            "added",
            "Redis p99",
            "memory p99",
            "added",
            "p99 below 5 ms by",
        ]);
        for (rate, r, m) in pairs {
            let added = r.p99_ms - m.p99_ms;
            let cells = [
                r.p50_ms,
                m.p50_ms,
                r.p50_ms - m.p50_ms,
                r.p99_ms,
                m.p99_ms,
                added,
                promise - added,
            ];
            t.row(
                std::iter::once(num(rate, 0))
                    .chain(cells.iter().map(|v| num(*v, 3)))
                    .collect(),
            );
        }
        out += &t.markdown();
    }
    if let Some(f) = &r.fanout {
        let _ = writeln!(
            out,
            "\nFan-out to {} clients on node A ({} rooms each, connected in {:.1} s), Redis backplane; latency ms\n",
            f.clients, f.rooms_per_client, f.connect_secs
        );
        let mut t = Table::new(&[
            "mode",
            "publisher",
            "rate",
            "sent",
            "delivered",
            "lost",
            "dup",
            "ooo",
            "deliveries/s",
            "p50",
            "p99",
            "p99.9",
            "max",
            "srv p50",
            "srv p99",
            "1013 closes",
        ]);
        for p in &f.phases {
            t.row(vec![
                p.mode.clone() + if p.complete { "" } else { " INCOMPLETE" },
                p.publisher_node.clone(),
                p.target_rate.map_or("max".to_owned(), |r| num(r, 0)),
                p.sent.to_string(),
                p.delivered.to_string(),
                p.lost.to_string(),
                p.duplicated.to_string(),
                p.out_of_order.to_string(),
                num(p.deliveries_per_sec, 0),
                num(p.latency.p50_ms, 3),
                num(p.latency.p99_ms, 3),
                num(p.latency.p999_ms, 3),
                num(p.latency.max_ms, 3),
                srv(p.server_histogram.p50_ms),
                srv(p.server_histogram.p99_ms),
                p.slow_consumer_closes.to_string(),
            ]);
            let cost: Vec<String> = p
                .cpu_per_delivery
                .iter()
                .map(|c| format!("{} {:.2}", c.name, c.us))
                .collect();
            notes.push(format!(
                "fan-out {} from {}: published at {:.0}/s over {:.1} ms, last delivery {:.0} ms after the first \
                 send, max lag {:.3} ms; CPU % of a core: {}; CPU µs per delivery: {}; publish errors {:?}",
                p.mode,
                p.publisher_node,
                p.achieved_publish_rate,
                p.publish_span_ms,
                p.delivery_span_ms,
                p.publisher_max_lag_ms,
                procs::render(&p.cpu),
                cost.join(", "),
                p.publish_errors
            ));
        }
        out += &t.markdown();
        if !f.ended_early.is_empty() {
            notes.push(format!(
                "fan-out clients that ended early: {:?}",
                f.ended_early
            ));
        }
        notes.extend(
            f.node_warnings
                .iter()
                .take(10)
                .map(|w| format!("fan-out node: {w}")),
        );
    }
    notes.extend(
        r.node_warnings
            .iter()
            .take(10)
            .map(|w| format!("latency node: {w}")),
    );
    let disturbed = disturbed(r);
    if !disturbed.is_empty() {
        notes.push(format!(
            "DISTURBED: other processes used over {OTHERS_LIMIT} % of a core during: {}",
            disturbed.join(", ")
        ));
    }
    let _ = writeln!(out, "\nNotes:\n");
    for n in notes {
        let _ = writeln!(out, "- {n}");
    }
    out
}

/// The windows during which something else ran on the machine.
pub fn disturbed(r: &Report) -> Vec<String> {
    let latency = r.latency.iter().map(|l| {
        (
            format!("latency {} {}/s", l.backplane, l.target_rate),
            &l.cpu,
        )
    });
    let fanout = r.fanout.iter().flat_map(|f| &f.phases).map(|p| {
        (
            format!("fan-out {} from {}", p.mode, p.publisher_node),
            &p.cpu,
        )
    });
    latency
        .chain(fanout)
        .filter(|(_, cpu)| share(cpu, "others") > OTHERS_LIMIT)
        .map(|(what, cpu)| format!("{what} ({:.0} %)", share(cpu, "others")))
        .collect()
}
