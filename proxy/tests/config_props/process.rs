//! Generators and writers for the process-wide tables: `[server]`, `[log]`,
//! `[admin]` and `[limits]` (whose rate pairs routes reuse).

use std::fmt::Write as _;

use proptest::prelude::*;

use super::values::*;

#[derive(Clone, Debug)]
pub struct Server {
    pub threads: Option<Pick>,
    pub grace_period: Option<Pick>,
    pub graceful_shutdown_timeout: Option<Pick>,
    pub upgrade_sock: Option<Pick>,
    pub max_connections: Option<Pick>,
    pub unknown: Option<Pick>,
}

pub fn server(m: Mode) -> impl Strategy<Value = Server> {
    let long = format!("\"/{}\"", "s".repeat(120));
    (
        key(m, &["1", "2", "1024"], &["0", "-1", "1025", "!\"two\""]),
        key(m, DUR_ANY, DUR_BAD),
        key(m, DUR_ANY, DUR_BAD),
        key(
            m,
            &["\"/run/ringway/upgrade.sock\"", "\"/tmp/r.sock\""],
            &["\"relative.sock\"", long.as_str(), "\"/a\\u0000b\""],
        ),
        key(m, &["1", "8000", "1000000"], &["0", "1000001", "-5"]),
        unknown(m),
    )
        .prop_map(|(a, b, c, d, e, f)| Server {
            threads: a,
            grace_period: b,
            graceful_shutdown_timeout: c,
            upgrade_sock: d,
            max_connections: e,
            unknown: f,
        })
}

pub fn write_server(doc: &mut Doc, s: &Server) {
    doc.line("[server]");
    let keys = [
        ("threads", &s.threads),
        ("grace_period", &s.grace_period),
        ("graceful_shutdown_timeout", &s.graceful_shutdown_timeout),
        ("upgrade_sock", &s.upgrade_sock),
        ("max_connections", &s.max_connections),
        ("colour", &s.unknown),
    ];
    for (name, pick) in keys {
        doc.key("server", "server", name, pick);
    }
}

pub fn log(m: Mode) -> impl Strategy<Value = Option<[Option<Pick>; 4]>> {
    let table = (
        key(
            m,
            &[
                "\"stdout\"",
                "\"off\"",
                "\"/var/log/ringway/access.log\"",
                "\"access.log\"",
            ],
            &["\"\"", "\"a\\nb\""],
        ),
        key(m, &["\"json\"", "\"logfmt\""], &["!\"xml\""]),
        key(m, BOOL, &["!\"yes\""]),
        key(m, &["1", "65536", "1000000"], &["0", "1000001"]),
    )
        .prop_map(|(a, b, c, d)| [a, b, c, d]);
    (present(), table).prop_map(|(on, t)| on.then_some(t))
}

pub fn write_log(doc: &mut Doc, keys: &[Option<Pick>; 4]) {
    doc.line("[log]");
    for (name, pick) in ["access", "format", "query", "buffer"].iter().zip(keys) {
        doc.key("log", "log", name, pick);
    }
}

pub fn admin(m: Mode) -> impl Strategy<Value = Option<(Pick, Option<Pick>)>> {
    let table = (
        val(
            m,
            &["\"127.0.0.1:9090\"", "\"[::1]:9090\"", "\"0.0.0.0:9090\""],
            &["\"nope\""],
        ),
        key(
            m,
            &["\"0123456789abcdef\"", "\"Zm9vYmFyYmF6cXV4cXV1eA==\""],
            &["\"short\"", "\"with space 0123456789\""],
        ),
    );
    (present(), table).prop_map(|(on, t)| on.then_some(t))
}

pub fn write_admin(doc: &mut Doc, (listen, token): &(Pick, Option<Pick>)) {
    doc.line("[admin]");
    doc.key("admin", "admin", "listen", &Some(listen.clone()));
    doc.key("admin", "admin", "token", token);
    let public = listen.ok && listen.lit.contains("0.0.0.0");
    if public && token.is_none() {
        doc.expect.error("admin.token");
    }
}

// ---- [limits] ----------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Rates {
    pub rate: Option<Pick>,
    pub burst: Option<Pick>,
    pub ws_rate: Option<Pick>,
    pub ws_burst: Option<Pick>,
    pub max_body_bytes: Option<Pick>,
}

pub fn rates(m: Mode) -> impl Strategy<Value = Rates> {
    let rate = || key(m, &["1", "20", "200", "1000000"], &["0", "1000001"]);
    let burst = || key(m, &["1", "20", "400", "10000000"], &["0", "10000001"]);
    (
        rate(),
        burst(),
        rate(),
        burst(),
        key(
            m,
            &["0", "1048576", "1099511627776"],
            &["-1", "1099511627777"],
        ),
    )
        .prop_map(|(a, b, c, d, e)| Rates {
            rate: a,
            burst: b,
            ws_rate: c,
            ws_burst: d,
            max_body_bytes: e,
        })
}

/// The cross-key rule of a bucket: a burst needs its rate and must hold one
/// second of it. `burst` is valid on its own here; a rate out of range
/// disables the comparison.
pub fn bucket_error(rate: &Option<Pick>, burst: &Option<Pick>) -> bool {
    match (rate, burst) {
        (None, Some(b)) => b.ok,
        (Some(r), Some(b)) if r.ok && b.ok => b.int() < r.int(),
        _ => false,
    }
}

/// Write the keys of [`Rates`] as `key = value` pairs (for a table) and
/// record their errors under `table`.
pub fn rate_pairs(doc: &mut Doc, table: &str, scope: &str, r: &Rates) -> Vec<String> {
    let pairs = [
        ("requests_per_second", &r.rate),
        ("burst", &r.burst),
        ("websocket_upgrades_per_second", &r.ws_rate),
        ("websocket_upgrades_burst", &r.ws_burst),
        ("max_body_bytes", &r.max_body_bytes),
    ];
    let mut out = Vec::new();
    for (name, pick) in pairs {
        if let Some(p) = pick {
            out.push(format!("{name} = {}", p.lit));
            doc.judge(&format!("{table}.{name}"), scope, p);
        }
    }
    if bucket_error(&r.rate, &r.burst) {
        doc.expect.error(format!("{table}.burst"));
    }
    if bucket_error(&r.ws_rate, &r.ws_burst) {
        doc.expect
            .error(format!("{table}.websocket_upgrades_burst"));
    }
    out
}

#[derive(Clone, Debug)]
pub struct LimitsTable {
    pub trusted: Vec<Pick>,
    pub rates: Rates,
    pub per_ip: [Option<Pick>; 2],
    pub timeouts: [Option<Pick>; 5],
    pub line: Option<Pick>,
    pub header: Option<Pick>,
    pub h2: Option<Pick>,
}

pub fn limits(m: Mode) -> impl Strategy<Value = Option<LimitsTable>> {
    let cap = || key(m, &["1", "256", "1000000"], &["0", "1000001"]);
    let timeout = || key(m, DUR_POSITIVE, DUR_BAD_OR_ZERO);
    let table = (
        proptest::collection::vec(
            val(
                m,
                &["\"127.0.0.0/8\"", "\"10.0.0.1\"", "\"::1\""],
                &["\"10.0.0.0/33\"", "\"nope\""],
            ),
            0..=2,
        ),
        rates(m),
        (cap(), cap()),
        (timeout(), timeout(), timeout(), timeout(), timeout()),
        key(m, &["256", "8192", "65536"], &["255", "65537"]),
        key(m, &["1024", "65536", "1048576"], &["1023", "1048577"]),
        key(m, &["1", "128", "1000"], &["0", "1001"]),
    )
        .prop_map(
            |(trusted, rates, (a, b), (t1, t2, t3, t4, t5), line, header, h2)| LimitsTable {
                trusted,
                rates,
                per_ip: [a, b],
                timeouts: [t1, t2, t3, t4, t5],
                line,
                header,
                h2,
            },
        );
    (present(), table).prop_map(|(on, t)| on.then_some(t))
}

pub fn write_limits(doc: &mut Doc, l: &LimitsTable) {
    doc.line("[limits]");
    let list: Vec<&str> = l.trusted.iter().map(|p| p.lit.as_str()).collect();
    let _ = writeln!(doc.text, "trusted_proxies = [{}]", list.join(", "));
    for (i, p) in l.trusted.iter().enumerate() {
        doc.judge(&format!("limits.trusted_proxies[{i}]"), "limits", p);
    }
    for line in rate_pairs(doc, "limits", "limits", &l.rates) {
        doc.line(&line);
    }
    let names = ["max_connections_per_ip", "max_websockets_per_ip"];
    for (name, pick) in names.iter().zip(&l.per_ip) {
        doc.key("limits", "limits", name, pick);
    }
    let names = [
        "header_timeout",
        "tls_handshake_timeout",
        "keepalive_timeout",
        "client_write_timeout",
        "body_timeout",
    ];
    for (name, pick) in names.iter().zip(&l.timeouts) {
        doc.key("limits", "limits", name, pick);
    }
    doc.key("limits", "limits", "max_request_line_bytes", &l.line);
    doc.key("limits", "limits", "max_header_bytes", &l.header);
    doc.key("limits", "limits", "h2_max_concurrent_streams", &l.h2);
    let effective = |p: &Option<Pick>, default: i64| {
        p.as_ref()
            .filter(|p| p.ok)
            .and_then(Pick::int)
            .unwrap_or(default)
    };
    if effective(&l.header, 65536) < effective(&l.line, 8192) {
        doc.expect.error("limits.max_header_bytes");
    }
}
