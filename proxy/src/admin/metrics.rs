//! `GET /metrics`: the Prometheus text exposition, built with the
//! `prometheus` crate from a custom [`Collector`] that reads [`Figures`] at
//! scrape time — the same counters `/stats.json` shows, so both agree, and
//! the series of a server a reload removed vanish with it (nothing is
//! registered per server).
//!
//! Names follow Prometheus' conventions: `ringway_` prefix, base units
//! (`_seconds`, `_bytes`), `_total` on counters; latency histograms use the
//! proxy's own bucket bounds (`stats::LATENCY_BOUNDS`). Labels: `upstream`
//! and `server` on server series, `listener` (its address) on listener and
//! certificate series. Rendering only: nothing here changes a counter.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Registry, TextEncoder};

use super::figures::{Figures, Latency, REFUSAL_REASONS};
use crate::process::Process;
use crate::stats::LATENCY_BOUNDS;

/// One metric family: its name, help, type and label names.
struct Spec {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const SERVER: &[&str] = &["upstream", "server"];
const LISTENER: &[&str] = &["listener"];

macro_rules! specs {
    ($($id:ident: $kind:ident $name:literal $labels:expr, $help:literal;)*) => {
        $(const $id: Spec = Spec { name: $name, help: $help, kind: MetricType::$kind, labels: $labels };)*
        /// Every family, for the collector's descriptors.
        const ALL: &[&Spec] = &[$(&$id),*];
    };
}

specs! {
    SERVER_STATE: GAUGE "ringway_server_state" &["upstream", "server", "state"],
        "1 for the server's current state (up, down, draining, maint), 0 for the others";
    SERVER_HEALTHY: GAUGE "ringway_server_healthy" SERVER,
        "1 when the active health checks last found the server healthy";
    SERVER_WEIGHT: GAUGE "ringway_server_weight" SERVER, "Configured weight";
    SERVER_ACTIVE: GAUGE "ringway_server_active_connections" SERVER,
        "Requests in flight plus open tunnels";
    SERVER_MAX: GAUGE "ringway_server_max_connections" SERVER,
        "Highest number of active connections seen";
    SERVER_WS: GAUGE "ringway_server_active_websockets" SERVER, "Open WebSocket tunnels";
    SERVER_WS_TOTAL: COUNTER "ringway_server_websockets_total" SERVER,
        "WebSocket tunnels opened";
    SERVER_REQUESTS: COUNTER "ringway_server_requests_total" SERVER,
        "Requests and upgrade attempts sent to the server";
    SERVER_RESPONSES: COUNTER "ringway_server_responses_total" &["upstream", "server", "code"],
        "Responses by status class (1xx to 5xx)";
    SERVER_CONNECT_ERRORS: COUNTER "ringway_server_connect_errors_total" SERVER,
        "Connections to the server that failed to open";
    SERVER_RETRIES: COUNTER "ringway_server_retries_total" SERVER,
        "Requests moved to another server";
    SERVER_FAILURES: COUNTER "ringway_server_failures_total" SERVER,
        "Failures the server caused (connect, reset, timeout, bad answer), as passive health counts them";
    SERVER_BYTES_IN: COUNTER "ringway_server_bytes_in_total" SERVER,
        "Bytes from clients to the server (request bodies and tunnel traffic)";
    SERVER_BYTES_OUT: COUNTER "ringway_server_bytes_out_total" SERVER,
        "Bytes from the server to clients (responses and tunnel traffic)";
    SERVER_CHECK_FAILURES: COUNTER "ringway_server_check_failures_total" SERVER,
        "Failed active health checks";
    SERVER_LAST_CHANGE: GAUGE "ringway_server_last_change_seconds" SERVER,
        "Seconds since the server's state last changed";
    SERVER_REQUEST_SECONDS: HISTOGRAM "ringway_server_request_duration_seconds" SERVER,
        "Time from a request's head to the end of its response";
    SERVER_CONNECT_SECONDS: HISTOGRAM "ringway_server_connect_duration_seconds" SERVER,
        "Time to open a new connection to the server (TLS included)";
    UPSTREAM_UP: GAUGE "ringway_upstream_servers_up" &["upstream"],
        "Servers of the upstream that take new traffic";
    LISTENER_OPEN: GAUGE "ringway_listener_connections_open" LISTENER,
        "Client connections open";
    LISTENER_CONNECTIONS: COUNTER "ringway_listener_connections_total" LISTENER,
        "Client connections accepted";
    LISTENER_REQUESTS: COUNTER "ringway_listener_requests_total" LISTENER, "Requests read";
    LISTENER_TLS: COUNTER "ringway_listener_tls_handshakes_total" LISTENER,
        "Completed TLS handshakes";
    LISTENER_TLS_FAILURES: COUNTER "ringway_listener_tls_handshake_failures_total" LISTENER,
        "Failed or timed-out TLS handshakes";
    LISTENER_REFUSED: COUNTER "ringway_listener_refused_total" &["listener", "reason"],
        "Connections and requests refused, by reason";
    LISTENER_RECLAIMED: COUNTER "ringway_listener_idle_reclaimed_total" LISTENER,
        "Idle connections closed to make room for new ones at max_connections";
    CERT_EXPIRY: GAUGE "ringway_tls_certificate_expiry_timestamp_seconds" &["listener", "at", "file"],
        "When the certificate expires (notAfter), in seconds since the Unix epoch";
    BUILD_INFO: GAUGE "ringway_build_info" &["version"], "Always 1; the running version";
    START_TIME: GAUGE "ringway_process_start_time_seconds" &[],
        "When the process started, in seconds since the Unix epoch";
    OPEN_FDS: GAUGE "ringway_process_open_fds" &[], "Open file descriptors";
    RSS: GAUGE "ringway_process_resident_memory_bytes" &[], "Resident memory";
    MAX_CONNECTIONS: GAUGE "ringway_process_max_connections" &[],
        "Client connections allowed at once";
    OPEN_CONNECTIONS: GAUGE "ringway_process_open_connections" &[],
        "Client connections open over every listener";
    RELOADS: COUNTER "ringway_reloads_total" &["result"], "Reloads by result (ok, failed)";
    LAST_RELOAD_TIME: GAUGE "ringway_last_reload_timestamp_seconds" &[],
        "When the last reload happened, in seconds since the Unix epoch";
    LAST_RELOAD_OK: GAUGE "ringway_last_reload_success" &[],
        "1 when the last reload succeeded";
    LOG_WRITTEN: COUNTER "ringway_access_log_written_total" &[], "Access log lines written";
    LOG_DROPPED: COUNTER "ringway_access_log_dropped_total" &[],
        "Access log lines dropped because the writer's queue was full";
    LOG_ERRORS: COUNTER "ringway_access_log_errors_total" &[],
        "Access log write or open errors";
    TUNNELS_DRAINED: COUNTER "ringway_tunnels_drained_total" &[],
        "Tunnels ended by a drain, a removal or maintenance";
}

/// A family being filled.
struct Family {
    mf: MetricFamily,
    labels: &'static [&'static str],
}

impl Family {
    fn of(spec: &Spec) -> Self {
        let mut mf = MetricFamily::default();
        mf.set_name(spec.name.to_owned());
        mf.set_help(spec.help.to_owned());
        mf.set_field_type(spec.kind);
        Self {
            mf,
            labels: spec.labels,
        }
    }

    fn metric(&self, values: &[&str]) -> Metric {
        let pairs = self
            .labels
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let mut p = LabelPair::default();
                p.set_name((*name).to_owned());
                p.set_value((*value).to_owned());
                p
            })
            .collect();
        Metric::from_label(pairs)
    }

    fn gauge(&mut self, values: &[&str], v: f64) {
        let mut m = self.metric(values);
        let mut g = Gauge::default();
        g.set_value(v);
        m.set_gauge(g);
        self.mf.mut_metric().push(m);
    }

    fn counter(&mut self, values: &[&str], v: u64) {
        let mut m = self.metric(values);
        let mut c = Counter::default();
        c.set_value(v as f64);
        m.set_counter(c);
        self.mf.mut_metric().push(m);
    }

    fn histogram(&mut self, values: &[&str], l: &Latency) {
        let mut m = self.metric(values);
        let mut h = Histogram::default();
        let mut cumulative = 0;
        let buckets = LATENCY_BOUNDS
            .iter()
            .zip(l.counts)
            .map(|(bound, n)| {
                cumulative += n;
                let mut b = Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        h.set_bucket(buckets);
        h.set_sample_count(l.count());
        h.set_sample_sum(l.sum_secs);
        m.set_histogram(h);
        self.mf.mut_metric().push(m);
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

const STATES: [&str; 4] = ["up", "down", "draining", "maint"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The metric families for `f`.
pub fn families(f: &Figures) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let mut done = |fam: Family| out.push(fam.mf);

    let mut state = Family::of(&SERVER_STATE);
    let mut healthy = Family::of(&SERVER_HEALTHY);
    let mut weight = Family::of(&SERVER_WEIGHT);
    let mut active = Family::of(&SERVER_ACTIVE);
    let mut max = Family::of(&SERVER_MAX);
    let mut ws = Family::of(&SERVER_WS);
    let mut ws_total = Family::of(&SERVER_WS_TOTAL);
    let mut requests = Family::of(&SERVER_REQUESTS);
    let mut responses = Family::of(&SERVER_RESPONSES);
    let mut connect_errors = Family::of(&SERVER_CONNECT_ERRORS);
    let mut retries = Family::of(&SERVER_RETRIES);
    let mut failures = Family::of(&SERVER_FAILURES);
    let mut bytes_in = Family::of(&SERVER_BYTES_IN);
    let mut bytes_out = Family::of(&SERVER_BYTES_OUT);
    let mut checks = Family::of(&SERVER_CHECK_FAILURES);
    let mut last_change = Family::of(&SERVER_LAST_CHANGE);
    let mut request_seconds = Family::of(&SERVER_REQUEST_SECONDS);
    let mut connect_seconds = Family::of(&SERVER_CONNECT_SECONDS);
    let mut servers_up = Family::of(&UPSTREAM_UP);
    for u in &f.upstreams {
        servers_up.gauge(&[&u.name], u.servers_up() as f64);
        for s in &u.servers {
            let addr = s.addr.to_string();
            let l = [u.name.as_str(), addr.as_str()];
            let t = &s.traffic;
            for st in STATES {
                state.gauge(&[l[0], l[1], st], flag(s.state == st));
            }
            healthy.gauge(&l, flag(s.healthy));
            weight.gauge(&l, f64::from(s.weight));
            active.gauge(&l, t.active_connections as f64);
            max.gauge(&l, s.max_connections as f64);
            ws.gauge(&l, t.active_websockets as f64);
            ws_total.counter(&l, t.websockets_total);
            requests.counter(&l, t.requests_total);
            for (class, n) in CLASSES.iter().zip(t.responses) {
                responses.counter(&[l[0], l[1], class], n);
            }
            connect_errors.counter(&l, t.connect_errors);
            retries.counter(&l, t.retries);
            failures.counter(&l, t.failures);
            bytes_in.counter(&l, t.bytes_in);
            bytes_out.counter(&l, t.bytes_out);
            checks.counter(&l, t.check_failures);
            last_change.gauge(&l, s.last_change_secs as f64);
            request_seconds.histogram(&l, &t.request_latency);
            connect_seconds.histogram(&l, &t.connect_latency);
        }
    }
    for fam in [
        state,
        healthy,
        weight,
        active,
        max,
        ws,
        ws_total,
        requests,
        responses,
        connect_errors,
        retries,
        failures,
        bytes_in,
        bytes_out,
        checks,
        last_change,
        request_seconds,
        connect_seconds,
        servers_up,
    ] {
        done(fam);
    }

    let mut open = Family::of(&LISTENER_OPEN);
    let mut conns = Family::of(&LISTENER_CONNECTIONS);
    let mut reqs = Family::of(&LISTENER_REQUESTS);
    let mut tls = Family::of(&LISTENER_TLS);
    let mut tls_failures = Family::of(&LISTENER_TLS_FAILURES);
    let mut refused = Family::of(&LISTENER_REFUSED);
    let mut reclaimed = Family::of(&LISTENER_RECLAIMED);
    let mut expiry = Family::of(&CERT_EXPIRY);
    for l in &f.listeners {
        let name = l.listen.to_string();
        let n = [name.as_str()];
        open.gauge(&n, l.connections_open as f64);
        conns.counter(&n, l.connections_total);
        reqs.counter(&n, l.requests);
        if l.tls {
            tls.counter(&n, l.tls_handshakes);
            tls_failures.counter(&n, l.tls_failures);
        }
        for (reason, count) in REFUSAL_REASONS.iter().zip(l.refused) {
            refused.counter(&[&name, reason], count);
        }
        reclaimed.counter(&n, l.reclaimed_idle);
        for c in &l.certificates {
            let secs = c
                .not_after
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs() as f64);
            expiry.gauge(&[&name, &c.at, &c.file], secs);
        }
    }
    for fam in [
        open,
        conns,
        reqs,
        tls,
        tls_failures,
        refused,
        reclaimed,
        expiry,
    ] {
        done(fam);
    }

    let p = &f.process;
    let single = |spec: &Spec, v: Option<f64>| {
        let mut fam = Family::of(spec);
        if let Some(v) = v {
            fam.gauge(&[], v);
        }
        fam
    };
    let count = |spec: &Spec, v: u64| {
        let mut fam = Family::of(spec);
        fam.counter(&[], v);
        fam
    };
    let mut build = Family::of(&BUILD_INFO);
    build.gauge(&[p.version], 1.0);
    done(build);
    let started = p
        .started_at
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    done(single(&START_TIME, Some(started)));
    done(single(&OPEN_FDS, p.open_fds.map(|n| n as f64)));
    done(single(&RSS, p.rss_bytes.map(|n| n as f64)));
    done(single(&MAX_CONNECTIONS, Some(p.max_connections as f64)));
    done(single(&OPEN_CONNECTIONS, Some(p.open_connections as f64)));
    let mut reloads = Family::of(&RELOADS);
    reloads.counter(&["ok"], p.reloads_ok);
    reloads.counter(&["failed"], p.reloads_failed);
    done(reloads);
    let last = p.last_reload.as_ref();
    done(single(&LAST_RELOAD_TIME, last.map(|r| r.time as f64)));
    done(single(
        &LAST_RELOAD_OK,
        last.map(|r| flag(r.result == "ok")),
    ));
    done(count(&LOG_WRITTEN, p.access_log_written));
    done(count(&LOG_DROPPED, p.access_log_dropped));
    done(count(&LOG_ERRORS, p.access_log_errors));
    done(count(&TUNNELS_DRAINED, p.tunnels_drained));
    out
}

/// The collector: reads the process' counters at each scrape.
struct ProxyCollector {
    process: Arc<Process>,
    descs: Vec<Desc>,
}

impl Collector for ProxyCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(&Figures::read(&self.process))
    }
}

/// The `/metrics` endpoint's registry.
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// A registry holding the collector over `process`.
    pub fn new(process: Arc<Process>) -> Result<Self, prometheus::Error> {
        let descs = ALL
            .iter()
            .map(|s| {
                Desc::new(
                    s.name.to_owned(),
                    s.help.to_owned(),
                    s.labels.iter().map(|l| (*l).to_owned()).collect(),
                    Default::default(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let registry = Registry::new();
        registry.register(Box::new(ProxyCollector { process, descs }))?;
        Ok(Self { registry })
    }

    /// The text exposition, read now.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        encode(&self.registry.gather())
    }
}

fn encode(families: &[MetricFamily]) -> Result<String, prometheus::Error> {
    let mut out = String::new();
    TextEncoder::new().encode_utf8(families, &mut out)?;
    Ok(out)
}

/// The content type of the text exposition.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::figures::sample;

    fn text() -> String {
        let families: Vec<MetricFamily> = families(&sample())
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect();
        encode(&families).unwrap()
    }

    #[test]
    fn every_spec_is_a_valid_family() {
        for s in ALL {
            Desc::new(
                s.name.into(),
                s.help.into(),
                s.labels.iter().map(|l| l.to_string()).collect(),
                Default::default(),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", s.name));
            let counter = s.kind == MetricType::COUNTER;
            assert_eq!(counter, s.name.ends_with("_total"), "{}", s.name);
            assert!(s.name.starts_with("ringway_"), "{}", s.name);
        }
    }

    #[test]
    fn server_series_carry_upstream_and_server() {
        let t = text();
        let l = r#"upstream="chat",server="127.0.0.1:9001""#;
        for line in [
            format!("ringway_server_requests_total{{{l}}} 5"),
            format!(r#"ringway_server_responses_total{{{l},code="5xx"}} 1"#),
            format!(r#"ringway_server_state{{{l},state="draining"}} 1"#),
            format!(r#"ringway_server_state{{{l},state="up"}} 0"#),
            // 5 samples in the 1 ms bucket: cumulative from there on.
            format!(r#"ringway_server_request_duration_seconds_bucket{{{l},le="0.0005"}} 0"#),
            format!(r#"ringway_server_request_duration_seconds_bucket{{{l},le="0.001"}} 5"#),
            format!(r#"ringway_server_request_duration_seconds_bucket{{{l},le="+Inf"}} 5"#),
            r#"ringway_upstream_servers_up{upstream="chat"} 0"#.to_owned(),
        ] {
            assert!(t.lines().any(|x| x == line), "{line} missing:\n{t}");
        }
    }

    #[test]
    fn process_listener_and_certificate_series() {
        let t = text();
        for line in [
            r#"ringway_listener_refused_total{listener="0.0.0.0:8443",reason="rate"} 2"#,
            r#"ringway_tls_certificate_expiry_timestamp_seconds{listener="0.0.0.0:8443",at="listener[0].tls",file="cert.pem"} 259200"#,
            r#"ringway_reloads_total{result="ok"} 1"#,
            "ringway_access_log_dropped_total 1",
            "ringway_process_open_fds 12",
            r#"ringway_build_info{version="0.1.0"} 1"#,
        ] {
            assert!(t.lines().any(|x| x == line), "{line} missing:\n{t}");
        }
        // Unknown figures are left out, not reported as 0.
        for absent in [
            "ringway_process_resident_memory_bytes ",
            "ringway_last_reload_success ",
        ] {
            assert!(!t.contains(absent), "{absent}:\n{t}");
        }
    }
}
