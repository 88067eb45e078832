//! Reports as people read them: markdown tables ([`Table`], shared by
//! every tool) and the proxy comparison laid out to be pasted into
//! `docs/BENCHMARKS.md` ([`markdown`]): machine, versions, commit and
//! command, one table of medians per scenario, one table of ratios against
//! the best peer, and the notes. It computes nothing; the JSON is the
//! report's serde form.

use std::fmt::Write as _;

use crate::compare::{Report, Row};
use crate::peers::PeerKind;
use crate::scenarios::{Better, SCENARIOS};

/// A markdown table, built row by row.
pub struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headings; every column but the first is
    /// right-aligned.
    pub fn new<S: AsRef<str>>(head: &[S]) -> Table {
        Table {
            head: head.iter().map(|h| h.as_ref().to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Add a row (missing cells are left empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The markdown text, ending with a newline.
    pub fn markdown(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let rule: Vec<String> = (0..self.head.len())
            .map(|i| if i == 0 { "---" } else { "---:" }.to_owned())
            .collect();
        let mut out = line(&self.head) + &line(&rule);
        for r in &self.rows {
            let mut r = r.clone();
            r.resize(self.head.len(), String::new());
            out += &line(&r);
        }
        out
    }
}

/// `v` with `decimals` decimals, thousands separated when it has none.
pub fn num(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "∞".to_owned();
    }
    let text = format!("{v:.decimals$}");
    if decimals > 0 || v.abs() < 1_000.0 {
        return text;
    }
    let (sign, digits) = text.split_at(usize::from(v < 0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn arrow(b: Better) -> &'static str {
    match b {
        Better::Higher => " ↑",
        Better::Lower => " ↓",
        Better::Neither => "",
    }
}

/// The comparison as markdown, for stdout and `docs/BENCHMARKS.md`.
pub fn markdown(r: &Report) -> String {
    let (m, o, s) = (&r.machine, &r.options, &r.options.settings);
    let mut out = String::new();
    let _ = writeln!(out, "Machine: {}.", m.summary());
    for (name, version) in &m.versions {
        let _ = writeln!(out, "- {name}: `{version}`");
    }
    let _ = writeln!(
        out,
        "\nEach proxy runs one worker/thread pinned to core {}; the load, the backend (`ringway-fixture`, \
         and an nginx `return 200` origin for HTTP) and this driver are pinned to core {}. {} round(s), \
         peers interleaved, medians shown. Windows of {} s after {} s warm-up; HTTP {} connections; echo \
         {} connections × {} B; idle {} connections held {} s, RSS read {} s after closing; handshakes \
         {} at once; reload {} × every {} s under {} WebSockets and 2,000 req/s; reload-1000 {} reloads; \
         access log at {} req/s. Total {:.0} s.\n\nCommand: `{}`\n",
        s.proxy_core,
        s.load_core,
        o.rounds,
        s.window,
        s.warmup,
        s.http_connections,
        s.echo_connections,
        s.echo_size,
        s.idle_connections,
        s.idle_hold,
        s.close_wait,
        s.handshake_concurrency,
        s.reloads,
        s.reload_every,
        s.reload_websockets,
        s.big_reloads,
        num(s.access_rate, 0),
        r.total_secs,
        r.command
    );
    let mut ratios =
        Table::new(&[vec!["scenario".to_owned(), "figure".to_owned()], proxies(r)].concat());
    for scenario in SCENARIOS {
        let rows: Vec<&Row> = r
            .rows
            .iter()
            .filter(|row| row.scenario == scenario.name)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "#### {}\n\n{}.\n", scenario.name, scenario.about);
        let head: Vec<String> = std::iter::once("peer".to_owned())
            .chain(
                scenario
                    .metrics
                    .iter()
                    .map(|m| format!("{}{}", m.label, arrow(m.better))),
            )
            .collect();
        let mut t = Table::new(&head);
        for row in &rows {
            let mut cells = vec![row.peer.name().to_owned()];
            match &row.skipped {
                Some(why) if row.values.is_empty() => cells.push(why.clone()),
                _ => cells.extend(scenario.metrics.iter().map(|m| {
                    row.values
                        .get(m.key)
                        .map_or("–".into(), |v| num(*v, m.decimals))
                })),
            }
            t.row(cells);
        }
        out += &t.markdown();
        out.push('\n');
        for metric in scenario
            .metrics
            .iter()
            .filter(|m| m.better != Better::Neither)
        {
            let mut cells = vec![
                scenario.name.to_owned(),
                format!("{}{}", metric.label, arrow(metric.better)),
            ];
            for peer in r.options.peers.iter().filter(|p| **p != PeerKind::Direct) {
                let ratio = rows
                    .iter()
                    .find(|row| row.peer == *peer)
                    .and_then(|row| row.ratios.get(metric.key));
                cells.push(ratio.map_or("–".into(), |v| num(*v, 2)));
            }
            ratios.row(cells);
        }
    }
    let _ = writeln!(
        out,
        "#### Against the best peer\n\nEach figure ÷ the best proxy's (1.00 is the best; ↑: below 1 is \
         worse, ↓: above 1 is worse).\n"
    );
    out += &ratios.markdown();
    let notes: Vec<String> =
        r.visits
            .iter()
            .flat_map(|v| {
                v.sample.notes.iter().map(move |n| {
                    format!("- round {} {} {}: {n}", v.round, v.scenario, v.peer.name())
                })
            })
            .collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "\nNotes:\n\n{}", notes.join("\n"));
    }
    out
}

fn proxies(r: &Report) -> Vec<String> {
    r.options
        .peers
        .iter()
        .filter(|p| **p != PeerKind::Direct)
        .map(|p| p.name().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_numbers() {
        let mut t = Table::new(&["peer", "req/s"]);
        t.row(vec!["nginx".into(), num(60221.4, 0)]);
        t.row(vec!["caddy".into()]);
        assert_eq!(
            t.markdown(),
            "| peer | req/s |\n| --- | ---: |\n| nginx | 60,221 |\n| caddy |  |\n"
        );
        assert_eq!(num(1234567.0, 0), "1,234,567");
        assert_eq!(num(-12345.0, 0), "-12,345");
        assert_eq!(num(999.0, 0), "999");
        assert_eq!(num(0.1234, 3), "0.123");
    }
}
