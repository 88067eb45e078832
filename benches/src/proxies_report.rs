//! The human-readable tables of a proxy [`Report`] (the JSON is its serde
//! form): per-round values, medians, and ratios ringway/peer, laid out to
//! be pasted into `docs/BENCHMARKS.md`.

use std::fmt::Write as _;

use crate::peers::{HttpBackend, PeerKind};
use crate::proxies::{share, Report, Visit};

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn rounds_of(r: &Report, peer: &str, f: &dyn Fn(&Visit) -> Option<f64>, decimals: usize) -> String {
    r.visits
        .iter()
        .filter(|v| v.peer.name() == peer)
        .map(|v| opt(f(v), decimals))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The report as plain-text tables.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let o = &r.options;
    let _ = writeln!(
        out,
        "ringway-bench-proxies: {} × {}, {} GiB, Linux {}; commit {}{}; RLIMIT_NOFILE {}",
        m.cpus,
        m.cpu_model,
        m.memory_gib,
        m.kernel,
        m.git_commit,
        if m.proxy_uncommitted_changes {
            " + uncommitted proxy/ changes"
        } else {
            ""
        },
        m.nofile
    );
    for (k, v) in &m.peer_versions {
        let _ = writeln!(out, "  {k}: {v}");
    }
    let _ = writeln!(
        out,
        "proxies on core {} (one worker/thread each); load generator, backend and driver on core {}; \
         HTTP backend: {}; WebSocket backend: ringway-fixture (3 listeners, 1 process)",
        o.proxy_core,
        o.load_core,
        match o.http_backend {
            HttpBackend::Nginx => "nginx return 200 (1 worker, 3 listeners)",
            HttpBackend::Fixture => "ringway-fixture",
        }
    );
    let _ = writeln!(out, "command: {}\ntotal {:.0} s", r.command, r.total_secs);

    let peers: Vec<&str> = r.medians.iter().map(|m| m.peer.as_str()).collect();
    if r.visits.iter().any(|v| v.http.is_some()) {
        let _ = writeln!(
            out,
            "\nHTTP: {} keep-alive connections, {} s window after {} s warm-up; per round, then median",
            o.http_connections, o.http_secs, o.http_warmup
        );
        let _ = writeln!(
            out,
            "{:<8} {:<26} {:>8} {:>7} {:>7} {:>6} {:>5} {:>5} {:>7} {:>5}",
            "peer",
            "req/s by round",
            "req/s",
            "p50 ms",
            "p99 ms",
            "proxy%",
            "load%",
            "back%",
            "µs/req",
            "fail"
        );
        for (p, md) in peers.iter().zip(&r.medians) {
            let _ = writeln!(
                out,
                "{:<8} {:<26} {:>8} {:>7} {:>7} {:>6} {:>5} {:>5} {:>7} {:>5}",
                p,
                rounds_of(
                    r,
                    p,
                    &|v| v.http.as_ref().map(|a| a.result.requests_per_sec),
                    0
                ),
                opt(md.http_rps, 0),
                opt(md.http_p50_ms, 3),
                opt(md.http_p99_ms, 3),
                opt(md.http_proxy_cpu, 0),
                opt(md.http_load_cpu, 0),
                opt(md.http_backend_cpu, 0),
                opt(md.http_proxy_us_per_req, 2),
                md.http_failures_total
            );
        }
        let _ = writeln!(
            out,
            "  p99 by round: {}",
            peers
                .iter()
                .map(|p| format!(
                    "{p} {}",
                    rounds_of(
                        r,
                        p,
                        &|v| v.http.as_ref().map(|a| a.result.latency.p99_ms),
                        3
                    )
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if r.visits.iter().any(|v| v.echo.is_some()) {
        let _ = writeln!(
            out,
            "\nWebSocket echo: {} connections × {} messages of {} B, one in flight each; per round, then median",
            o.echo_connections, o.echo_messages, o.echo_size
        );
        let _ = writeln!(
            out,
            "{:<8} {:<26} {:>8} {:>7} {:>7} {:>7} {:>7} {:>6} {:>5} {:>5} {:>7} {:>5}",
            "peer",
            "msgs/s by round",
            "msgs/s",
            "RTT p50",
            "RTT p99",
            "hs p50",
            "hs p99",
            "proxy%",
            "load%",
            "back%",
            "µs/msg",
            "fail"
        );
        for (p, md) in peers.iter().zip(&r.medians) {
            let _ = writeln!(
                out,
                "{:<8} {:<26} {:>8} {:>7} {:>7} {:>7} {:>7} {:>6} {:>5} {:>5} {:>7} {:>5}",
                p,
                rounds_of(
                    r,
                    p,
                    &|v| v.echo.as_ref().map(|a| a.result.messages_per_sec),
                    0
                ),
                opt(md.echo_mps, 0),
                opt(md.echo_rtt_p50_ms, 3),
                opt(md.echo_rtt_p99_ms, 3),
                opt(md.echo_handshake_p50_ms, 2),
                opt(md.echo_handshake_p99_ms, 2),
                opt(md.echo_proxy_cpu, 0),
                opt(md.echo_load_cpu, 0),
                opt(md.echo_backend_cpu, 0),
                opt(md.echo_proxy_us_per_msg, 2),
                md.echo_failures_total
            );
        }
    }
    if r.visits.iter().any(|v| v.idle.is_some()) {
        let _ = writeln!(
            out,
            "\nIdle WebSockets: {} held {} s on a fresh process (VmRSS, nginx master + worker); per round, then median",
            o.idle_connections, o.idle_hold
        );
        let _ = writeln!(
            out,
            "{:<8} {:<22} {:>8} {:>10} {:>9} {:>11} {:>7} {:>5}",
            "peer",
            "KiB/conn by round",
            "KiB/conn",
            "before MiB",
            "held MiB",
            "closed MiB",
            "open s",
            "fail"
        );
        for (p, md) in peers.iter().zip(&r.medians) {
            if *p == PeerKind::Direct.name() {
                continue;
            }
            let _ = writeln!(
                out,
                "{:<8} {:<22} {:>8} {:>10} {:>9} {:>11} {:>7} {:>5}",
                p,
                rounds_of(
                    r,
                    p,
                    &|v| v.idle.as_ref().and_then(|i| i.kib_per_connection),
                    1
                ),
                opt(md.idle_kib_per_conn, 1),
                opt(md.idle_rss_before_mib, 1),
                opt(md.idle_rss_held_mib, 1),
                opt(md.idle_rss_after_close_mib, 1),
                opt(md.idle_open_secs, 2),
                md.idle_failures_total
            );
        }
    }
    if !r.ratios.is_empty() {
        let _ = writeln!(
            out,
            "\nRatios ringway / peer, of the medians (req/s, msgs/s: above 1 = ringway better; \
             p99, µs, KiB: below 1 = ringway better)"
        );
        let _ = writeln!(
            out,
            "{:<8} {:>7} {:>8} {:>7} {:>7} {:>8} {:>7} {:>9}",
            "peer", "req/s", "HTTP p99", "µs/req", "msgs/s", "RTT p99", "µs/msg", "KiB/conn"
        );
        for x in &r.ratios {
            let _ = writeln!(
                out,
                "{:<8} {:>7} {:>8} {:>7} {:>7} {:>8} {:>7} {:>9}",
                x.peer,
                opt(x.http_rps, 2),
                opt(x.http_p99, 2),
                opt(x.http_us_per_req, 2),
                opt(x.echo_mps, 2),
                opt(x.echo_rtt_p99, 2),
                opt(x.echo_us_per_msg, 2),
                opt(x.idle_kib, 2)
            );
        }
    }

    let mut notes = Vec::new();
    for v in &r.visits {
        let who = format!("round {} {}", v.round, v.peer.name());
        if let Some(a) = &v.http {
            if a.attempts > 1 || a.disturbed {
                notes.push(format!(
                    "{who} http: {} attempts (others {:?} % discarded){}",
                    a.attempts,
                    a.discarded_others,
                    if a.disturbed {
                        ", kept window DISTURBED"
                    } else {
                        ""
                    }
                ));
            }
            if !a.result.error_samples.is_empty() {
                notes.push(format!("{who} http errors: {:?}", a.result.error_samples));
            }
        }
        if let Some(a) = &v.echo {
            if a.attempts > 1 || a.disturbed {
                notes.push(format!(
                    "{who} echo: {} attempts (others {:?} % discarded){}",
                    a.attempts,
                    a.discarded_others,
                    if a.disturbed {
                        ", kept window DISTURBED"
                    } else {
                        ""
                    }
                ));
            }
            let e = &a.result;
            if e.mismatches + e.errors > 0 || e.opened.failed > 0 {
                notes.push(format!(
                    "{who} echo: {} mismatches, {} errors {:?}, {} failed opens {:?}",
                    e.mismatches,
                    e.errors,
                    e.error_samples,
                    e.opened.failed,
                    e.opened.failure_samples
                ));
            }
        }
        if let Some(i) = &v.idle {
            if i.opened.failed > 0 || i.sample_ok < i.sample_checked {
                notes.push(format!(
                    "{who} idle: {} failed opens {:?}, echo check {}/{} {:?}",
                    i.opened.failed,
                    i.opened.failure_samples,
                    i.sample_ok,
                    i.sample_checked,
                    i.sample_errors
                ));
            }
        }
        if !v.complaints.is_empty() {
            notes.push(format!(
                "{who}: {} warning/error log lines, e.g. {:?}",
                v.complaints.len(),
                &v.complaints[..v.complaints.len().min(3)]
            ));
        }
    }
    let others: Vec<String> = r
        .visits
        .iter()
        .flat_map(|v| {
            let h = v.http.as_ref().map(|a| share(&a.result.cpu, "others"));
            let e = v.echo.as_ref().map(|a| share(&a.result.cpu, "others"));
            [h, e].into_iter().flatten()
        })
        .map(|x| format!("{x:.1}"))
        .collect();
    let _ = writeln!(
        out,
        "\nothers' CPU (% of a core) in the kept windows: {}",
        others.join(" ")
    );
    if !notes.is_empty() {
        let _ = writeln!(out, "notes:");
        for n in notes {
            let _ = writeln!(out, "  {n}");
        }
    }
    out
}
