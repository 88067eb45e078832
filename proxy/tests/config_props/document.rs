//! The whole generated file: its sections, the clean-mode fix-ups that keep
//! a clean config valid across keys, and the writer that renders it.

use proptest::prelude::*;

use super::process::*;
use super::traffic::*;
use super::values::*;

#[derive(Clone, Debug)]
pub struct Generated {
    pub server: Option<Server>,
    pub log: Option<[Option<Pick>; 4]>,
    pub admin: Option<(Pick, Option<Pick>)>,
    pub limits: Option<LimitsTable>,
    pub listeners: Vec<ListenerTable>,
    pub routes: Vec<RouteTable>,
    pub upstreams: Vec<UpstreamTable>,
    pub extra_table: bool,
}

pub fn generated(m: Mode) -> impl Strategy<Value = Generated> {
    let (_, _, wi, _) = m.weights();
    let min = usize::from(wi == 0);
    let listeners =
        (min..=3).prop_flat_map(move |n| (0..n).map(|i| listener(m, i)).collect::<Vec<_>>());
    (
        proptest::option::of(server(m)),
        log(m),
        admin(m),
        limits(m),
        listeners,
        proptest::collection::vec(route(m), min..=2),
        proptest::collection::vec(upstream(m), 1..=2),
        if wi == 0 {
            Just(false).boxed()
        } else {
            prop_oneof![9 => Just(false), 1 => Just(true)].boxed()
        },
    )
        .prop_map(
            move |(server, log, admin, limits, listeners, routes, upstreams, extra_table)| {
                let mut g = Generated {
                    server,
                    log,
                    admin,
                    limits,
                    listeners,
                    routes,
                    upstreams,
                    extra_table,
                };
                if min == 1 {
                    make_consistent(&mut g);
                }
                g
            },
        )
}

/// In clean mode, drop the combinations that break a rule between keys,
/// so that every generated config must load.
pub fn make_consistent(g: &mut Generated) {
    let is = |p: &Option<Pick>, lit: &str| p.as_ref().is_some_and(|p| p.lit == lit);
    pub fn fix_bucket(rate: &Option<Pick>, burst: &mut Option<Pick>) {
        if bucket_error(rate, burst) {
            *burst = None;
        }
    }
    pub fn fix_rates(r: &mut Rates) {
        fix_bucket(&r.rate, &mut r.burst);
        fix_bucket(&r.ws_rate, &mut r.ws_burst);
    }
    if let Some((listen, token)) = &mut g.admin {
        if listen.lit.contains("0.0.0.0") && token.is_none() {
            *token = Some(Pick::new("\"0123456789abcdef\"", true));
        }
    }
    let mut trusted = false;
    if let Some(l) = &mut g.limits {
        fix_rates(&mut l.rates);
        let value = |p: &Option<Pick>, default| p.as_ref().and_then(Pick::int).unwrap_or(default);
        if value(&l.header, 65536) < value(&l.line, 8192) {
            l.header = None;
        }
        trusted = !l.trusted.is_empty();
    }
    for l in &mut g.listeners {
        if l.tls.is_some() {
            l.redirect_https = None;
        } else {
            l.hsts = None;
            l.http2 = None;
            l.sni.clear();
        }
        if l.redirect_https.is_none() {
            l.redirect_except = None;
        }
        if !trusted && is(&l.proxy_protocol, "true") {
            l.proxy_protocol = None;
        }
        let mut seen: Vec<String> = Vec::new();
        for names in &mut l.sni {
            names.retain(|n| {
                let lower = n.lit.to_ascii_lowercase();
                let fresh = !seen.contains(&lower);
                seen.push(lower);
                fresh
            });
        }
        l.sni.retain(|names| !names.is_empty());
    }
    let pools = g.upstreams.len();
    for r in &mut g.routes {
        r.target %= pools;
        if let Some(rates) = &mut r.limits {
            fix_rates(rates);
        }
    }
    for u in &mut g.upstreams {
        if !is(&u.tls, "true") {
            for (_, pick) in &mut u.tls_keys {
                *pick = None;
            }
        }
        u.servers[0].backup = None;
        if let Some((kind, keys)) = &mut u.check {
            if is(kind, "\"tcp\"") {
                for (key, pick) in keys {
                    if matches!(*key, "path" | "host") {
                        *pick = None;
                    }
                }
            }
        }
    }
}

pub fn write(g: &Generated, ports: &[u16]) -> Doc {
    let mut doc = Doc::default();
    if let Some(s) = &g.server {
        write_server(&mut doc, s);
    }
    if let Some(l) = &g.log {
        write_log(&mut doc, l);
    }
    if let Some(a) = &g.admin {
        write_admin(&mut doc, a);
    }
    let mut trusted = false;
    if let Some(l) = &g.limits {
        write_limits(&mut doc, l);
        trusted = l.trusted.iter().any(|p| p.ok);
    }
    // PROXY-protocol listeners need trusted proxies; a broken [limits]
    // table reports its own errors instead.
    let limits_broken = doc.expect.errors.iter().any(|e| e.starts_with("limits"))
        || doc.expect.dropped.iter().any(|d| d == "limits");
    let no_trusted_proxies = !trusted && !limits_broken;
    if g.listeners.is_empty() {
        doc.expect.error("listener");
    }
    for (i, l) in g.listeners.iter().enumerate() {
        write_listener(&mut doc, i, l, no_trusted_proxies);
    }
    let names: Vec<String> = g
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| {
            if u.name_ok {
                format!("u{i}")
            } else {
                format!("bad name{i}")
            }
        })
        .collect();
    if g.routes.is_empty() {
        doc.expect.error("route");
    }
    for (i, r) in g.routes.iter().enumerate() {
        write_route(&mut doc, i, r, &names);
    }
    for (u, name) in g.upstreams.iter().zip(&names) {
        write_upstream(&mut doc, name, u, ports);
    }
    if g.extra_table {
        doc.line("[extra]\na = 1");
        doc.expect.error("extra");
    }
    doc
}
