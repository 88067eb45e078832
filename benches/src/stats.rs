//! Numbers out of samples: exact percentiles of client-side latencies,
//! medians over rounds, and estimated percentiles of a Prometheus histogram
//! read before and after a window and subtracted (the backend's
//! `ringway_backend_publish_to_deliver_seconds`). Pure functions, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Percentiles of a set of latencies, in milliseconds: the figures the
/// issue asks for (p50, p99) and the ones that explain them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// How many samples.
    pub count: usize,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Smallest.
    pub min_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The median of `values` (mean of the middle two for an even count),
/// finite values only; `None` if there are none.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// Summarize latencies given in nanoseconds (nearest-rank percentiles).
pub fn summarize(mut ns: Vec<u64>) -> Summary {
    if ns.is_empty() {
        return Summary::default();
    }
    ns.sort_unstable();
    let n = ns.len();
    let pct = |p: f64| {
        // The epsilon keeps 0.999 × 1000 from rounding up past 999.
        let rank = ((p / 100.0) * n as f64 - 1e-9).ceil() as usize;
        ms(ns[rank.clamp(1, n) - 1])
    };
    let sum: u128 = ns.iter().map(|&v| v as u128).sum();
    Summary {
        count: n,
        mean_ms: sum as f64 / n as f64 / 1e6,
        min_ms: ms(ns[0]),
        p50_ms: pct(50.0),
        p90_ms: pct(90.0),
        p99_ms: pct(99.0),
        p999_ms: pct(99.9),
        max_ms: ms(ns[n - 1]),
    }
}

/// One `/metrics` scrape: series (name with labels, as exposed) → value.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    series: BTreeMap<String, f64>,
}

/// The node's publish-to-deliver histogram (publisher's node hands the
/// message to the broker → this node queues it for its local members).
pub const PUBLISH_TO_DELIVER: &str = "ringway_backend_publish_to_deliver_seconds";

impl Scrape {
    /// Parse the Prometheus text exposition.
    pub fn parse(text: &str) -> Scrape {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.trim().rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect();
        Scrape { series }
    }

    /// The value of the first series named `name` (labels ignored), 0 if
    /// absent: for counters of one node.
    pub fn value(&self, name: &str) -> f64 {
        self.series
            .iter()
            .find(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
            .map_or(0.0, |(_, v)| *v)
    }

    /// The cumulative buckets of histogram `name`: (upper bound, count),
    /// ascending, `+Inf` last.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{");
        let mut out: Vec<(f64, f64)> = self
            .series
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, v)| {
                let le = k.split("le=\"").nth(1)?.split('"').next()?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, *v))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}

/// Estimated percentiles of what a histogram recorded between two scrapes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HistogramEstimate {
    /// Observations in the window.
    pub count: u64,
    /// Estimated median, ms (linear within the bucket, as Prometheus'
    /// `histogram_quantile`); infinite as `p99_ms`.
    pub p50_ms: f64,
    /// Estimated 99th percentile, ms. Infinite (`null` in JSON) when it
    /// lies beyond the largest bucket (1 s).
    pub p99_ms: f64,
}

/// What histogram `name` recorded between `before` and `after`.
pub fn histogram_window(before: &Scrape, after: &Scrape, name: &str) -> HistogramEstimate {
    let old: BTreeMap<u64, f64> = before
        .buckets(name)
        .into_iter()
        .map(|(b, c)| (b.to_bits(), c))
        .collect();
    let buckets: Vec<(f64, f64)> = after
        .buckets(name)
        .into_iter()
        .map(|(b, c)| (b, c - old.get(&b.to_bits()).copied().unwrap_or(0.0)))
        .collect();
    let count = buckets.last().map_or(0.0, |b| b.1);
    HistogramEstimate {
        count: count as u64,
        p50_ms: quantile(&buckets, 0.5) * 1e3,
        p99_ms: quantile(&buckets, 0.99) * 1e3,
    }
}

/// `histogram_quantile(q)` over cumulative buckets (seconds). A quantile
/// in the `+Inf` bucket is infinite (JSON `null`): beyond the largest
/// bucket, not at it.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
    if total <= 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let mut lower = 0.0;
    let mut below = 0.0;
    for &(upper, cumulative) in buckets {
        if cumulative >= rank {
            if upper.is_infinite() {
                return f64::INFINITY;
            }
            let inside = cumulative - below;
            if inside <= 0.0 {
                return upper;
            }
            return lower + (upper - lower) * (rank - below) / inside;
        }
        lower = upper;
        below = cumulative;
    }
    lower
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = summarize((1..=1000).map(|i| i * 1_000_000).collect());
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_ms, 500.0);
        assert_eq!(s.p99_ms, 990.0);
        assert_eq!(s.p999_ms, 999.0);
        assert_eq!(s.max_ms, 1000.0);
        assert!((summarize(vec![7_000]).p50_ms - 0.007).abs() < 1e-12);
        assert_eq!(summarize(Vec::new()).count, 0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, f64::NAN, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn histogram_window_subtracts_and_interpolates() {
        let before = Scrape::parse(
            "# HELP x\n\
             h_bucket{le=\"0.001\",worker_id=\"a\"} 10\n\
             h_bucket{le=\"0.002\",worker_id=\"a\"} 10\n\
             h_bucket{le=\"+Inf\",worker_id=\"a\"} 10\n\
             c_total{worker_id=\"a\"} 3\n",
        );
        let after = Scrape::parse(
            "h_bucket{le=\"0.001\",worker_id=\"a\"} 60\n\
             h_bucket{le=\"0.002\",worker_id=\"a\"} 110\n\
             h_bucket{le=\"+Inf\",worker_id=\"a\"} 110\n",
        );
        assert_eq!(before.value("c_total"), 3.0);
        let w = histogram_window(&before, &after, "h");
        assert_eq!(w.count, 100);
        assert!((w.p50_ms - 1.0).abs() < 1e-9, "{w:?}");
        assert!((w.p99_ms - 1.98).abs() < 1e-9, "{w:?}");
        let beyond = [(0.001, 1.0), (f64::INFINITY, 100.0)];
        assert!(quantile(&beyond, 0.99).is_infinite());
    }
}
