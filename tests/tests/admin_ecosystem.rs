//! What operators plug Ringway into: every metric the Grafana dashboard
//! (`conf/grafana/ringway.json`) queries exists in the live `/metrics` of a
//! running proxy or backend, and every job it names is scraped by
//! `conf/prometheus.yml`; certificates show their expiry in `/stats.json`
//! and `/metrics`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ringway_tests::backend::{Backend, TlsFiles};
use ringway_tests::configs::ProxyConfig;
use ringway_tests::metrics::{self, one, Scrape, Value as Sample};
use ringway_tests::{free_addr, Fixture, FixtureOpts, Proxy};
use serde_json::Value;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Every string in `doc` under one of `keys`, however deep.
fn strings_under<'a>(doc: &'a Value, keys: &[&str], out: &mut Vec<&'a str>) {
    match doc {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if keys.contains(&k.as_str()) => out.push(s),
                    _ => strings_under(v, keys, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| strings_under(v, keys, out)),
        _ => {}
    }
}

/// The `ringway_*` metric names a PromQL expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("ringway_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The series names a scrape offers, as PromQL sees them (a histogram as
/// `NAME_bucket`, `NAME_sum`, `NAME_count`).
fn served(scrape: &Scrape) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for s in &scrape.samples {
        if let Sample::Histogram(_) = s.value {
            names.insert(format!("{}_bucket", s.metric));
        }
        names.insert(s.metric.clone());
    }
    names
}

/// A proxy with a TLS listener (so certificate series exist) that has
/// reloaded once (so reload series exist).
async fn full_proxy(tls: &TlsFiles) -> (Fixture, Proxy) {
    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let config = ProxyConfig {
        extra: format!(
            "[[listener]]\nlisten = \"{}\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
            free_addr(),
            tls.cert.display(),
            tls.key.display()
        ),
        ..ProxyConfig::over(fx.addrs.values().copied())
    };
    let proxy = Proxy::start(&config.toml()).await;
    let reload = proxy.reload_with(&config.toml()).await;
    assert_eq!(reload["result"], "ok", "{reload}");
    (fx, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_dashboard_queries_is_served() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("conf/grafana/ringway.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    strings_under(&dashboard, &["expr", "definition"], &mut exprs);
    assert!(exprs.len() >= 20, "{exprs:?}");
    let wanted: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(wanted.iter().any(|n| n.starts_with("ringway_backend_")));
    assert!(wanted.iter().any(|n| n.starts_with("ringway_server_")));

    let tls = TlsFiles::generate();
    let (_fx, proxy) = full_proxy(&tls).await;
    let backend = Backend::start("grafana-w1", &[]).await;
    let mut live = served(&proxy.metrics().await);
    live.extend(served(&metrics::scrape(&backend.url("/metrics")).await));
    let missing: Vec<&String> = wanted.iter().filter(|n| !live.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "queried by the dashboard but not served: {missing:?}\nserved: {live:?}"
    );

    // Every job the dashboard names is one conf/prometheus.yml scrapes.
    let scrape_config = std::fs::read_to_string(repo_file("conf/prometheus.yml")).unwrap();
    let jobs: BTreeSet<&str> = scrape_config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- job_name:"))
        .map(str::trim)
        .collect();
    assert_eq!(
        jobs,
        BTreeSet::from(["ringway-proxy", "ringway-backend"]),
        "{scrape_config}"
    );
    for expr in &exprs {
        for part in expr.split("job=\"").skip(1) {
            let job = part.split('"').next().unwrap_or_default();
            assert!(jobs.contains(job), "{expr}: job {job} is not scraped");
        }
    }
}

#[tokio::test]
async fn certificates_show_their_expiry() {
    use rcgen::{date_time_ymd, CertificateParams, KeyPair, SanType};
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["expired.example".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params.not_before = date_time_ymd(2019, 1, 1);
    params.not_after = date_time_ymd(2020, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("old.pem"), dir.path().join("old-key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let fx = Fixture::start(&["a"], FixtureOpts::default()).await;
    let tls_listen = free_addr();
    let config = ProxyConfig {
        extra: format!(
            "[[listener]]\nlisten = \"{tls_listen}\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
            cert_path.display(),
            key_path.display()
        ),
        ..ProxyConfig::over(fx.addrs.values().copied())
    };
    let proxy = Proxy::start(&config.toml()).await;
    let doc = proxy.stats().await;
    let listener = &doc["listeners"][1];
    assert_eq!(listener["tls"], true, "{doc}");
    let c = &listener["certificates"][0];
    assert_eq!(c["at"], "listener[1].tls", "{doc}");
    assert_eq!(c["file"], cert_path.display().to_string(), "{doc}");
    assert_eq!(
        c["names"],
        serde_json::json!(["expired.example", "127.0.0.1"]),
        "{doc}"
    );
    assert_eq!(c["not_after"], "2020-01-01T00:00:00Z", "{doc}");
    assert_eq!(c["expiring"], true, "{doc}");
    assert!(c["days_left"].as_i64().unwrap() < -300, "{doc}");
    let log = proxy.child.log();
    assert!(
        log.contains("listener[1].tls: certificate")
            && log.contains("expired or expires within 14 days"),
        "{log}"
    );

    let m = proxy.metrics().await;
    let at = [
        ("listener", tls_listen.to_string()),
        ("at", "listener[1].tls".to_owned()),
        ("file", cert_path.display().to_string()),
    ];
    let labels: Vec<(&str, &str)> = at.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        one(
            &m,
            "ringway_tls_certificate_expiry_timestamp_seconds",
            &labels
        ),
        1_577_836_800.0
    );
    let tls = tls_listen.to_string();
    assert_eq!(
        one(
            &m,
            "ringway_listener_tls_handshakes_total",
            &[("listener", &tls)]
        ),
        0.0
    );
}
