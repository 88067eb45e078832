//! Prometheus text read the way Prometheus reads it: scraped over HTTP and
//! parsed by a real text-format parser (`prometheus-parse`), with small
//! look-ups for the tests' assertions.

pub use prometheus_parse::{Sample, Scrape, Value};

use crate::http_client;

/// `GET url` and parse the exposition; panics, naming the URL, on failure.
pub async fn scrape(url: &str) -> Scrape {
    let text = http_client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    parse(&text)
}

/// Parse exposition text.
pub fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"))
}

/// Whether `sample` carries every `(label, value)` of `labels`.
fn matches(sample: &Sample, labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v))
}

/// The value of a counter or gauge sample; for a histogram, its count (the
/// `+Inf` bucket).
pub fn value_of(sample: &Sample) -> f64 {
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map_or(0.0, |b| b.count),
        Value::Summary(_) => f64::NAN,
    }
}

/// Every sample of `metric` whose labels include `labels`.
pub fn samples<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && matches(s, labels))
        .collect()
}

/// The sum over the samples of `metric` matching `labels` (0 when none).
pub fn sum(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples(scrape, metric, labels)
        .into_iter()
        .map(value_of)
        .sum()
}

/// The one sample of `metric` with exactly these labels; panics when there
/// is none or more than one.
pub fn one(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples(scrape, metric, labels)
        .into_iter()
        .filter(|s| s.labels.len() == labels.len())
        .collect();
    assert_eq!(found.len(), 1, "{metric}{labels:?}: {found:?}");
    value_of(found[0])
}

/// The metric names present in the scrape (histograms under their base name).
pub fn names(scrape: &Scrape) -> std::collections::BTreeSet<String> {
    scrape.samples.iter().map(|s| s.metric.clone()).collect()
}
