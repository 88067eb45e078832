//! PNG charts of a comparison, drawn with `plotters`: for every scenario
//! with charted figures (req/s and p99, KiB per idle connection, proxy CPU
//! per WebSocket message, handshakes per second), one image with a bar
//! panel per figure and a bar per proxy, ringway-proxy's in its own colour.
//! Text is drawn with a TrueType font read from the system (DejaVu Sans,
//! Debian's `fonts-dejavu-core`); without one no chart is drawn.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use crate::compare::Report;
use crate::peers::PeerKind;
use crate::report::num;
use crate::scenarios::SCENARIOS;

const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Register the first font found as "sans-serif" (once per process).
fn font() -> anyhow::Result<()> {
    static FOUND: OnceLock<Result<(), String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let bytes = FONTS
                .iter()
                .find_map(|p| std::fs::read(p).ok())
                .ok_or("no DejaVuSans.ttf (apt-get install fonts-dejavu-core)")?;
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| "DejaVuSans.ttf is not a usable font".to_owned())
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Draw every chart of `report` into `dir`; the files written.
pub fn charts(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    font()?;
    let mut written = Vec::new();
    for scenario in SCENARIOS {
        let panels: Vec<(String, Vec<(PeerKind, f64)>)> = scenario
            .metrics
            .iter()
            .filter(|m| m.chart)
            .map(|m| {
                let bars = report
                    .rows
                    .iter()
                    .filter(|r| r.scenario == scenario.name && r.peer != PeerKind::Direct)
                    .filter_map(|r| Some((r.peer, *r.values.get(m.key)?)))
                    .collect();
                (m.label.to_owned(), bars)
            })
            .filter(|(_, bars): &(String, Vec<_>)| !bars.is_empty())
            .collect();
        if panels.is_empty() {
            continue;
        }
        let path = dir.join(format!("{}.png", scenario.name));
        draw(&path, scenario.name, &panels).with_context(|| format!("draw {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn draw(path: &Path, title: &str, panels: &[(String, Vec<(PeerKind, f64)>)]) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (440 * panels.len() as u32, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    for (area, (label, bars)) in root.split_evenly((1, panels.len())).iter().zip(panels) {
        let top = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9) * 1.18;
        let mut chart = ChartBuilder::on(area)
            .caption(label, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d((0..bars.len() - 1).into_segmented(), 0.0..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .y_label_formatter(&|v| num(*v, if top >= 10.0 { 0 } else { 2 }))
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => bars
                    .get(*i)
                    .map_or(String::new(), |b| b.0.name().to_owned()),
                _ => String::new(),
            })
            .label_style(("sans-serif", 13))
            .draw()?;
        chart.draw_series(bars.iter().enumerate().map(|(i, (peer, v))| {
            let colour = if *peer == PeerKind::Ringway {
                RGBColor(214, 90, 49)
            } else {
                RGBColor(90, 110, 140)
            };
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *v),
                ],
                colour.filled(),
            );
            bar.set_margin(0, 0, 10, 10);
            bar
        }))?;
        chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            let text = num(*v, if *v >= 100.0 { 0 } else { 2 });
            let style = ("sans-serif", 13).into_font().color(&BLACK);
            let style = style.pos(Pos::new(HPos::Center, VPos::Bottom));
            Text::new(text, (SegmentValue::CenterOf(i), *v + top * 0.01), style)
        }))?;
    }
    root.present()?;
    Ok(())
}
