//! The `/stats.json` document: [`Figures`] as JSON, with the field names of
//! the design contract (`shared/DESIGN.md`) kept as they are and everything
//! newer added beside them. The dashboard reads this document too.
//!
//! Pure rendering: no counter is read here, only the figures handed in.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::figures::{
    CertFigures, Figures, Latency, ListenerFigures, ProcessFigures, ServerFigures, Traffic,
    UpstreamFigures, REFUSAL_REASONS,
};

/// The whole document.
pub fn render(f: &Figures) -> Value {
    let upstreams: Map<String, Value> = f
        .upstreams
        .iter()
        .map(|u| (u.name.clone(), upstream(u)))
        .collect();
    let mut doc = json!({
        "process": process(&f.process),
        "upstreams": upstreams,
        "retired_servers": f.retired.iter().map(|r| json!({
            "addr": r.addr.to_string(),
            "open_tunnels": r.open_tunnels,
        })).collect::<Vec<_>>(),
        "listeners": f.listeners.iter().map(listener).collect::<Vec<_>>(),
        "reloads": { "ok": f.process.reloads_ok, "failed": f.process.reloads_failed },
        "access_log": {
            "written": f.process.access_log_written,
            "dropped": f.process.access_log_dropped,
            "errors": f.process.access_log_errors,
        },
        "tunnels_drained": f.process.tunnels_drained,
        "admin": { "token_required": f.process.token_required },
    });
    if let Some(last) = &f.process.last_reload {
        doc["last_reload"] = serde_json::to_value(last).unwrap_or_default();
    }
    doc
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn process(p: &ProcessFigures) -> Value {
    json!({
        "version": p.version,
        "pid": p.pid,
        "started_at": humantime::format_rfc3339_seconds(p.started_at).to_string(),
        "start_time": unix_secs(p.started_at),
        "uptime_secs": p.uptime.as_secs(),
        "open_fds": p.open_fds,
        "rss_bytes": p.rss_bytes,
        "max_connections": p.max_connections,
        "open_connections": p.open_connections,
    })
}

fn quantiles(l: &Latency) -> Value {
    json!({
        "p50": l.quantile_ms(0.5),
        "p90": l.quantile_ms(0.9),
        "p99": l.quantile_ms(0.99),
    })
}

/// The counters a server and an upstream's totals share.
fn traffic(t: &Traffic, into: &mut Map<String, Value>) {
    let r = &t.responses;
    let fields = json!({
        "active_connections": t.active_connections,
        "active_websockets": t.active_websockets,
        "websockets_total": t.websockets_total,
        "requests_total": t.requests_total,
        "responses": { "1xx": r[0], "2xx": r[1], "3xx": r[2], "4xx": r[3], "5xx": r[4] },
        "connect_errors": t.connect_errors,
        "retries": t.retries,
        "failures": t.failures,
        "bytes_in": t.bytes_in,
        "bytes_out": t.bytes_out,
        "check_failures": t.check_failures,
        "latency_ms": quantiles(&t.request_latency),
        "connect_ms": quantiles(&t.connect_latency),
    });
    if let Value::Object(m) = fields {
        into.extend(m);
    }
}

fn server(s: &ServerFigures) -> Value {
    let mut m = Map::new();
    m.insert("addr".into(), s.addr.to_string().into());
    m.insert("state".into(), s.state.into());
    m.insert("healthy".into(), s.healthy.into());
    m.insert("ejected".into(), s.ejected.into());
    m.insert("backup".into(), s.backup.into());
    m.insert("weight".into(), s.weight.into());
    m.insert("max_connections".into(), s.max_connections.into());
    m.insert("last_change_secs".into(), s.last_change_secs.into());
    traffic(&s.traffic, &mut m);
    Value::Object(m)
}

fn upstream(u: &UpstreamFigures) -> Value {
    let mut totals = Map::new();
    traffic(&u.totals, &mut totals);
    json!({
        "balance": u.balance,
        "health_check": u.health_check,
        "drain_timeout_secs": u.drain_timeout.as_secs_f64(),
        "servers_up": u.servers_up(),
        "totals": totals,
        "servers": u.servers.iter().map(server).collect::<Vec<_>>(),
    })
}

fn listener(l: &ListenerFigures) -> Value {
    let refused: Map<String, Value> = REFUSAL_REASONS
        .iter()
        .zip(l.refused)
        .map(|(k, v)| ((*k).to_owned(), v.into()))
        .collect();
    json!({
        "listen": l.listen.to_string(),
        "tls": l.tls,
        "connections_open": l.connections_open,
        "connections_total": l.connections_total,
        "requests": l.requests,
        "tls_handshakes": l.tls_handshakes,
        "tls_failures": l.tls_failures,
        "refused": refused,
        "reclaimed_idle": l.reclaimed_idle,
        "certificates": l.certificates.iter().map(certificate).collect::<Vec<_>>(),
    })
}

fn certificate(c: &CertFigures) -> Value {
    json!({
        "at": c.at,
        "file": c.file,
        "names": c.names,
        "not_after": humantime::format_rfc3339_seconds(c.not_after).to_string(),
        "not_after_unix": unix_secs(c.not_after),
        "days_left": c.expires_in_secs.div_euclid(86_400),
        "expiring": c.expiring,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::figures::sample as figures;

    #[test]
    fn contract_fields_keep_their_names() {
        let doc = render(&figures());
        let s = &doc["upstreams"]["chat"]["servers"][0];
        for field in [
            "addr",
            "state",
            "healthy",
            "weight",
            "active_connections",
            "active_websockets",
            "requests_total",
            "responses",
            "connect_errors",
            "retries",
            "bytes_in",
            "bytes_out",
            "check_failures",
            "last_change_secs",
            "latency_ms",
        ] {
            assert!(!s[field].is_null(), "{field} missing: {s}");
        }
        assert_eq!(s["state"], "draining");
        assert_eq!(s["responses"]["5xx"], 1);
        assert_eq!(s["latency_ms"]["p50"], 1.0);
        assert_eq!(s["latency_ms"]["p99"], 1.0);
        assert_eq!(doc["upstreams"]["chat"]["balance"], "consistent-hash");
        assert_eq!(doc["upstreams"]["chat"]["servers_up"], 0);
        assert_eq!(doc["upstreams"]["chat"]["totals"]["requests_total"], 5);
    }

    #[test]
    fn listeners_certificates_and_process() {
        let doc = render(&figures());
        let l = &doc["listeners"][0];
        assert_eq!(l["refused"]["rate"], 2);
        assert_eq!(l["refused"]["bad_request"], 1);
        let c = &l["certificates"][0];
        assert_eq!(c["not_after"], "1970-01-04T00:00:00Z");
        assert_eq!(c["days_left"], -1);
        assert_eq!(c["expiring"], true);
        assert_eq!(doc["process"]["open_fds"], 12);
        assert!(doc["process"]["rss_bytes"].is_null());
        assert_eq!(doc["access_log"]["dropped"], 1);
        assert_eq!(doc["retired_servers"][0]["open_tunnels"], 3);
        assert!(doc.get("last_reload").is_none());
    }
}
