//! The comparison run: its command line, the interleaved order (every
//! round runs every chosen scenario, and each scenario visits every peer
//! in an order that rotates by one per round, so no peer is always first),
//! and what is made of the visits: medians per peer and ratios against the
//! best peer. Printing and charts are [`crate::report`]'s and
//! [`crate::plot`]'s; this module only measures and computes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use clap::Parser;
use serde::Serialize;

use crate::harness::Unsupported;
use crate::machine::Machine;
use crate::peers::PeerKind;
use crate::scenarios::{Better, Scenario, Who, SCENARIOS};
use crate::stats::median;
use crate::visits::{Ctx, Sample, Settings};

/// `ringway-bench-proxies` command line.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    name = "ringway-bench-proxies",
    about = "Measure ringway-proxy against nginx, HAProxy and Caddy in one interleaved run, one \
             pinned core each: HTTP, WebSocket echo, idle WebSockets, TLS, reload. Needs \
             ringway-proxy and ringway-fixture built in the same target profile (use --release), \
             and nginx, haproxy, caddy installed."
)]
pub struct Options {
    /// The proxies to compare.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![PeerKind::Ringway, PeerKind::Nginx, PeerKind::Haproxy, PeerKind::Caddy])]
    pub peers: Vec<PeerKind>,
    /// Scenarios to run (comma-separated; default all): see `--list`.
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Print the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Leave out the direct (no proxy) baseline.
    #[arg(long)]
    pub no_direct: bool,
    /// Rounds; medians are over these.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Where the JSON, the markdown and the charts go.
    #[arg(long, default_value = "target/bench-proxies")]
    pub out: PathBuf,
    /// A smoke run: 1 round, 2 s windows, 1,000 idle connections, few reloads.
    #[arg(long)]
    pub quick: bool,
    /// Give up (and kill every child) after this many seconds in all.
    #[arg(long, default_value_t = 7200)]
    pub max_secs: u64,
    /// Sizes and limits.
    #[command(flatten)]
    pub settings: Settings,
}

impl Options {
    /// `--quick` applied.
    pub fn settled(mut self) -> Options {
        if self.quick {
            self.rounds = 1;
            self.settings.quick();
        }
        self
    }

    /// The scenarios asked for, in list order; an unknown name is an error.
    pub fn chosen(&self) -> anyhow::Result<Vec<&'static Scenario>> {
        for name in &self.scenarios {
            if !SCENARIOS.iter().any(|s| s.name == name) {
                bail!("unknown scenario {name:?}; known: {}", names());
            }
        }
        Ok(SCENARIOS
            .iter()
            .filter(|s| self.scenarios.is_empty() || self.scenarios.iter().any(|n| n == s.name))
            .collect())
    }

    /// The peers `scenario` visits in round `round` (from 0): `direct`
    /// first where it applies, then the proxies rotated by `round`.
    pub fn order(&self, scenario: &Scenario, round: usize) -> Vec<PeerKind> {
        let proxies: Vec<PeerKind> = self
            .peers
            .iter()
            .copied()
            .filter(|p| *p != PeerKind::Direct)
            .collect();
        match scenario.who {
            Who::Ringway => proxies
                .into_iter()
                .filter(|p| *p == PeerKind::Ringway)
                .collect(),
            Who::All | Who::AllAndDirect => {
                let mut out = Vec::new();
                if scenario.who == Who::AllAndDirect && !self.no_direct {
                    out.push(PeerKind::Direct);
                }
                if !proxies.is_empty() {
                    let k = round % proxies.len();
                    out.extend(proxies[k..].iter().chain(&proxies[..k]));
                }
                out
            }
        }
    }
}

/// Every scenario name, comma-separated.
pub fn names() -> String {
    SCENARIOS
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One peer's visit in one round of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Visit {
    /// Round, from 1.
    pub round: usize,
    /// Scenario name.
    pub scenario: &'static str,
    /// Which peer.
    pub peer: PeerKind,
    /// What it measured.
    pub sample: Sample,
}

/// The medians of one peer in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: &'static str,
    /// Which peer.
    pub peer: PeerKind,
    /// Median over the rounds, by metric key.
    pub values: BTreeMap<String, f64>,
    /// Median ÷ the best peer's median, for metrics with a direction.
    pub ratios: BTreeMap<String, f64>,
    /// Why it was not measured, if it was not.
    pub skipped: Option<String>,
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
    /// Medians and ratios per scenario and peer.
    pub rows: Vec<Row>,
    /// Wall time, seconds.
    pub total_secs: f64,
}

/// Run every round, scenario and peer `opts` asks for.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let began = Instant::now();
    let chosen = opts.chosen()?;
    let needed = ["taskset", "nginx"].into_iter().chain(
        opts.peers
            .iter()
            .filter_map(|p| p.version_cmd().first().copied()),
    );
    let mut missing: Vec<&str> = needed.filter(|bin| !on_path(bin)).collect();
    missing.dedup();
    if !missing.is_empty() {
        let packages = missing.join(" ").replace("taskset", "util-linux");
        bail!(
            "missing {}: apt-get install -y --no-install-recommends {packages}",
            missing.join(", ")
        );
    }
    crate::procs::ensure_fd_limit(opts.settings.idle_connections as u64 + 512)?;
    anyhow::ensure!(
        opts.settings.idle_connections <= 9000,
        "--idle-connections {}: a one-process proxy needs 2 of its 20,000 files per connection; use at most 9,000",
        opts.settings.idle_connections
    );
    let mut programs: Vec<(&str, &[&str])> = opts
        .peers
        .iter()
        .map(|p| (p.name(), p.version_cmd()))
        .collect();
    programs.retain(|(_, cmd)| !cmd.is_empty());
    let machine = Machine::detect(&programs);
    let ctx = Ctx::new(opts.settings.clone()).await?;
    let mut visits = Vec::new();
    for round in 0..opts.rounds {
        for scenario in &chosen {
            for peer in opts.order(scenario, round) {
                eprintln!(
                    "round {}/{}: {} {}",
                    round + 1,
                    opts.rounds,
                    scenario.name,
                    peer.name()
                );
                let sample = match (scenario.run)(&ctx, peer).await {
                    Ok(s) => s,
                    Err(e) => match e.downcast_ref::<Unsupported>() {
                        Some(u) => {
                            eprintln!("  skipped: {u}");
                            Sample::skipped(u.to_string())
                        }
                        None => {
                            return Err(e.context(format!("{} {}", scenario.name, peer.name())))
                        }
                    },
                };
                let figures: Vec<String> = sample
                    .values
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.2}"))
                    .collect();
                eprintln!("  {}", figures.join(", "));
                visits.push(Visit {
                    round: round + 1,
                    scenario: scenario.name,
                    peer,
                    sample,
                });
            }
        }
    }
    let rows = chosen
        .iter()
        .flat_map(|s| rows_of(s, &opts, &visits))
        .collect();
    Ok(Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        options: opts,
        visits,
        rows,
        total_secs: began.elapsed().as_secs_f64(),
    })
}

/// Whether `bin` is an executable in a `PATH` directory.
fn on_path(bin: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(bin).is_file())
}

/// Medians per peer of `scenario`, and each against the best proxy.
pub fn rows_of(scenario: &Scenario, opts: &Options, visits: &[Visit]) -> Vec<Row> {
    let mut rows: Vec<Row> = opts
        .order(scenario, 0)
        .into_iter()
        .map(|peer| {
            let mine: Vec<&Sample> = visits
                .iter()
                .filter(|v| v.scenario == scenario.name && v.peer == peer)
                .map(|v| &v.sample)
                .collect();
            let values = scenario
                .metrics
                .iter()
                .filter_map(|m| {
                    let v = median(
                        mine.iter()
                            .filter_map(|s| s.values.get(m.key).copied())
                            .collect(),
                    )?;
                    Some((m.key.to_owned(), v))
                })
                .collect();
            Row {
                scenario: scenario.name,
                peer,
                values,
                ratios: BTreeMap::new(),
                skipped: mine.iter().find_map(|s| s.skipped.clone()),
            }
        })
        .collect();
    for m in scenario
        .metrics
        .iter()
        .filter(|m| m.better != Better::Neither)
    {
        let proxies = rows.iter().filter(|r| r.peer != PeerKind::Direct);
        let values = proxies.filter_map(|r| r.values.get(m.key).copied());
        let best = match m.better {
            Better::Higher => values.reduce(f64::max),
            _ => values.reduce(f64::min),
        };
        let Some(best) = best.filter(|b| *b > 0.0) else {
            continue;
        };
        for r in rows.iter_mut().filter(|r| r.peer != PeerKind::Direct) {
            if let Some(v) = r.values.get(m.key) {
                r.ratios.insert(m.key.to_owned(), v / best);
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit(peer: PeerKind, round: usize, rps: f64, p99: f64) -> Visit {
        let mut sample = Sample::default();
        sample.values.insert("rps".into(), rps);
        sample.values.insert("p99_ms".into(), p99);
        Visit {
            round,
            scenario: "http",
            peer,
            sample,
        }
    }

    #[test]
    fn order_rotates_and_ratios_are_against_the_best_proxy() {
        let opts = Options::parse_from(["x", "--scenarios", "http,access-log"]);
        let chosen = opts.chosen().unwrap();
        assert_eq!(
            chosen.iter().map(|s| s.name).collect::<Vec<_>>(),
            ["http", "access-log"]
        );
        let names = |s: &Scenario, r| {
            opts.order(s, r)
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(chosen[0], 0),
            ["direct", "ringway", "nginx", "haproxy", "caddy"]
        );
        assert_eq!(
            names(chosen[0], 1),
            ["direct", "nginx", "haproxy", "caddy", "ringway"]
        );
        assert_eq!(names(chosen[1], 1), ["ringway"]);
        assert!(Options::parse_from(["x", "--scenarios", "nope"])
            .chosen()
            .is_err());

        let visits = vec![
            visit(PeerKind::Direct, 1, 90.0, 0.1),
            visit(PeerKind::Ringway, 1, 40.0, 1.0),
            visit(PeerKind::Ringway, 2, 44.0, 3.0),
            visit(PeerKind::Ringway, 3, 42.0, 2.0),
            visit(PeerKind::Nginx, 1, 60.0, 0.5),
        ];
        let opts = Options::parse_from(["x", "--peers", "ringway,nginx"]);
        let rows = rows_of(chosen[0], &opts, &visits);
        let ringway = rows.iter().find(|r| r.peer == PeerKind::Ringway).unwrap();
        assert_eq!(ringway.values["rps"], 42.0);
        assert!((ringway.ratios["rps"] - 0.7).abs() < 1e-9, "42 / 60");
        assert!((ringway.ratios["p99_ms"] - 4.0).abs() < 1e-9, "2.0 / 0.5");
        let direct = rows.iter().find(|r| r.peer == PeerKind::Direct).unwrap();
        assert!(direct.ratios.is_empty(), "direct is a baseline, not a peer");
    }
}
