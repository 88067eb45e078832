//! What the proxy comparison measures: [`SCENARIOS`], one readable list.
//! Each entry names a scenario, says which peers it visits and which
//! figures it reports (and which way each is better, for the ratios), and
//! points at its visit in [`crate::visits`]. It runs nothing itself; the
//! order of rounds and peers, medians and ratios are [`crate::compare`]'s.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

use crate::peers::PeerKind;
use crate::visits::{self, Ctx, Sample};

/// Which way a figure is better, for the ratios against the best peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Better {
    /// More is better (req/s).
    Higher,
    /// Less is better (p99, CPU per request, KiB per connection).
    Lower,
    /// Context, not a ranking (CPU %, counts, figures the load core limits).
    Neither,
}

/// One figure a scenario reports.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Metric {
    /// Its key in [`Sample::values`] and the JSON.
    pub key: &'static str,
    /// Column heading.
    pub label: &'static str,
    /// Which way is better.
    pub better: Better,
    /// Whether it gets a chart.
    pub chart: bool,
    /// Decimals shown.
    pub decimals: usize,
}

const fn m(
    key: &'static str,
    label: &'static str,
    better: Better,
    chart: bool,
    decimals: usize,
) -> Metric {
    Metric {
        key,
        label,
        better,
        chart,
        decimals,
    }
}

use Better::{Higher, Lower, Neither};

/// Which peers a scenario visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Who {
    /// Every proxy compared, and `direct` (no proxy) as the load core's ceiling.
    AllAndDirect,
    /// Every proxy compared.
    All,
    /// ringway-proxy only.
    Ringway,
}

/// A scenario's body: visit one peer, return its figures.
pub type Run =
    for<'a> fn(&'a Ctx, PeerKind) -> Pin<Box<dyn Future<Output = anyhow::Result<Sample>> + 'a>>;

/// One scenario.
pub struct Scenario {
    /// Its name on the command line (`--scenarios`), in tables and files.
    pub name: &'static str,
    /// What it does, one line.
    pub about: &'static str,
    /// Which peers.
    pub who: Who,
    /// What it reports.
    pub metrics: &'static [Metric],
    /// The body.
    pub run: Run,
}

const HTTP: &[Metric] = &[
    m("rps", "req/s", Higher, true, 0),
    m("p50_ms", "p50 ms", Lower, false, 3),
    m("p99_ms", "p99 ms", Lower, true, 3),
    m("proxy_cpu", "proxy CPU %", Neither, false, 0),
    m("us_per_req", "proxy µs/req", Lower, false, 1),
    m("failures", "failures", Neither, false, 0),
];
const ECHO: &[Metric] = &[
    m("msgs_per_sec", "msgs/s", Neither, false, 0),
    m("rtt_p99_ms", "RTT p99 ms", Neither, false, 2),
    m("proxy_cpu", "proxy CPU %", Neither, false, 0),
    m("us_per_msg", "proxy µs/msg", Lower, true, 2),
    m("ceiling", "ceiling msgs/s (proxy-bound)", Higher, false, 0),
    m("failures", "failures", Neither, false, 0),
];
const IDLE: &[Metric] = &[
    m("kib_per_conn", "KiB/conn", Lower, true, 1),
    m("rss_before_mib", "RSS before MiB", Neither, false, 1),
    m("rss_held_mib", "RSS held MiB", Neither, false, 1),
    m("rss_after_mib", "RSS after close MiB", Neither, false, 1),
    m("returned", "returned ≤ +10 % (1 = yes)", Neither, false, 0),
    m("failures", "failures", Neither, false, 0),
];

/// Every scenario, in the order a round runs them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "http",
        about: "keep-alive HTTP/1.1 GETs to the nginx origin, one request in flight per connection",
        who: Who::AllAndDirect,
        metrics: HTTP,
        run: |c, k| Box::pin(visits::http_keepalive(c, k, false)),
    },
    Scenario {
        name: "ws-echo",
        about: "WebSocket echo through the peer, one message in flight per connection: CPU per message",
        who: Who::AllAndDirect,
        metrics: ECHO,
        run: |c, k| Box::pin(visits::ws_echo(c, k, false)),
    },
    Scenario {
        name: "idle",
        about: "idle WebSockets held on a fresh process: RSS per connection, and after closing them",
        who: Who::All,
        metrics: IDLE,
        run: |c, k| Box::pin(visits::idle(c, k, false)),
    },
    Scenario {
        name: "tls-handshakes",
        about: "connect + TLS handshake + one GET + close, full and then resumed (ECDSA P-256)",
        who: Who::All,
        metrics: &[
            m("full_per_sec", "full/s", Higher, true, 0),
            m("resumed_per_sec", "resumed/s", Higher, true, 0),
            m("us_per_full", "proxy µs/full", Lower, false, 0),
            m("us_per_resumed", "proxy µs/resumed", Lower, false, 0),
            m("resumed_pct", "resumed %", Neither, false, 0),
            m("failures", "failures", Neither, false, 0),
        ],
        run: |c, k| Box::pin(visits::tls_handshakes(c, k)),
    },
    Scenario {
        name: "https",
        about: "the http scenario over TLS",
        who: Who::All,
        metrics: HTTP,
        run: |c, k| Box::pin(visits::http_keepalive(c, k, true)),
    },
    Scenario {
        name: "wss-echo",
        about: "the ws-echo scenario over TLS",
        who: Who::All,
        metrics: ECHO,
        run: |c, k| Box::pin(visits::ws_echo(c, k, true)),
    },
    Scenario {
        name: "wss-idle",
        about: "the idle scenario over TLS",
        who: Who::All,
        metrics: IDLE,
        run: |c, k| Box::pin(visits::idle(c, k, true)),
    },
    Scenario {
        name: "reload",
        about: "reloads (each as its operators do it) under keep-alive HTTP and open WebSockets",
        who: Who::All,
        metrics: &[
            m("failed_requests", "failed requests", Neither, false, 0),
            m("dropped_tunnels", "dropped tunnels", Neither, false, 0),
            m("requests", "requests", Neither, false, 0),
            m("reloads", "reloads", Neither, false, 0),
        ],
        run: |c, k| Box::pin(visits::reload_under_load(c, k)),
    },
    Scenario {
        name: "reload-1000",
        about: "ringway-proxy with 1,000 servers: signal-to-swapped time, RSS after 10 reloads and after all",
        who: Who::Ringway,
        metrics: &[
            m("reload_ms_p50", "reload p50 ms", Neither, false, 1),
            m("reload_ms_max", "reload max ms", Neither, false, 1),
            m("rss_10_mib", "RSS after 10 MiB", Neither, false, 1),
            m("rss_all_mib", "RSS after all MiB", Neither, false, 1),
            m("rss_growth_pct", "growth %", Neither, false, 1),
        ],
        run: |c, k| Box::pin(visits::reload_1000(c, k)),
    },
    Scenario {
        name: "access-log",
        about: "ringway-proxy at a paced HTTP rate with [log] access = \"off\", then to a file",
        who: Who::Ringway,
        metrics: &[
            m("rps_off", "req/s off", Neither, false, 0),
            m("rps_file", "req/s file", Neither, false, 0),
            m("p99_off_ms", "p99 ms off", Neither, false, 3),
            m("p99_file_ms", "p99 ms file", Neither, false, 3),
            m("us_off", "µs/req off", Neither, false, 1),
            m("us_file", "µs/req file", Neither, false, 1),
            m("log_lines", "lines logged", Neither, false, 0),
        ],
        run: |c, k| Box::pin(visits::access_log(c, k)),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_named_once_and_metrics_once_each() {
        let mut names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SCENARIOS.len());
        for s in SCENARIOS {
            let mut keys: Vec<&str> = s.metrics.iter().map(|m| m.key).collect();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), s.metrics.len(), "{}", s.name);
        }
    }
}
