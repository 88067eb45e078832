//! Generators and writers for the tables that carry traffic:
//! `[[listener]]`, `[[route]]` and `[upstream.NAME]`.

use std::fmt::Write as _;

use proptest::prelude::*;

use super::process::{rate_pairs, rates, Rates};
use super::values::*;

#[derive(Clone, Debug)]
pub struct ListenerTable {
    pub listen: Pick,
    pub tls: Option<Pick>,
    pub proxy_protocol: Option<Pick>,
    pub redirect_https: Option<Pick>,
    pub redirect_except: Option<Pick>,
    pub hsts: Option<Pick>,
    pub http2: Option<Pick>,
    pub sni: Vec<Vec<Pick>>,
}

pub fn listener(m: Mode, index: usize) -> impl Strategy<Value = ListenerTable> {
    let addr = format!("\"127.0.0.1:{}\"", 8000 + index);
    let tls_valid = [
        "{ cert = \"c.pem\", key = \"k.pem\" }",
        "{ cert = \"c.pem\", key = \"k.pem\", ocsp = \"o.der\" }",
    ];
    let sni_names = proptest::collection::vec(
        val(
            m,
            &[
                "\"a.example\"",
                "\"*.example\"",
                "\"B.Example\"",
                "\"b.example\"",
            ],
            &["\"bad name\"", "\"10.0.0.1\"", "\"a.*.example\""],
        ),
        0..=2,
    );
    (
        val(m, &[addr.as_str()], &["\"0.0.0.0\"", "\"nope:1\""]),
        key(
            m,
            &tls_valid,
            &[
                "{ cert = \"\", key = \"k.pem\" }@.cert",
                "!{ cert = \"c.pem\" }",
            ],
        ),
        key(m, BOOL, &["!\"yes\""]),
        key(m, &["443", "8443", "65535"], &["0", "65536"]),
        key(
            m,
            &["[]", "[\"/.well-known/acme-challenge/\", \"/health\"]"],
            &["[\"health\"]@[0]"],
        ),
        key(
            m,
            &["\"max-age=31536000\"", "\"max-age=0; includeSubDomains\""],
            &["\"max-age=soon\"", "\"preload\""],
        ),
        key(m, BOOL, &[]),
        proptest::collection::vec(sni_names, 0..=2),
    )
        .prop_map(|(listen, tls, pp, rh, re, hsts, h2, sni)| ListenerTable {
            listen,
            tls,
            proxy_protocol: pp,
            redirect_https: rh,
            redirect_except: re,
            hsts,
            http2: h2,
            sni,
        })
}

pub fn write_listener(doc: &mut Doc, i: usize, l: &ListenerTable, no_trusted_proxies: bool) {
    let at = format!("listener[{i}]");
    doc.line("[[listener]]");
    doc.key(&at, &at, "listen", &Some(l.listen.clone()));
    doc.key(&at, &at, "tls", &l.tls);
    doc.key(&at, &at, "proxy_protocol", &l.proxy_protocol);
    doc.key(&at, &at, "redirect_https", &l.redirect_https);
    doc.key(&at, &at, "redirect_except", &l.redirect_except);
    doc.key(&at, &at, "hsts", &l.hsts);
    doc.key(&at, &at, "http2", &l.http2);
    let tls = l.tls.is_some();
    if l.proxy_protocol.as_ref().is_some_and(|p| p.lit == "true") && no_trusted_proxies {
        doc.expect.error(format!("{at}.proxy_protocol"));
    }
    if tls && l.redirect_https.is_some() {
        doc.expect.error(format!("{at}.redirect_https"));
    }
    if l.redirect_except.is_some() && l.redirect_https.is_none() {
        doc.expect.error(format!("{at}.redirect_except"));
    }
    if !tls && l.hsts.is_some() {
        doc.expect.error(format!("{at}.hsts"));
    }
    if !tls && l.http2.is_some() {
        doc.expect.error(format!("{at}.http2"));
    }
    if !tls && !l.sni.is_empty() {
        doc.expect.error(format!("{at}.sni"));
    }
    let mut seen: Vec<String> = Vec::new();
    for (j, names) in l.sni.iter().enumerate() {
        let entry = format!("{at}.sni[{j}]");
        doc.line("[[listener.sni]]");
        let list: Vec<&str> = names.iter().map(|p| p.lit.as_str()).collect();
        let _ = writeln!(
            doc.text,
            "names = [{}]\ncert = \"s.pem\"\nkey = \"s.key\"",
            list.join(", ")
        );
        if names.is_empty() {
            doc.expect.error(format!("{entry}.names"));
        }
        for (k, name) in names.iter().enumerate() {
            let path = format!("{entry}.names[{k}]");
            let lower = name.lit.to_ascii_lowercase();
            if !name.ok || seen.contains(&lower) {
                doc.expect.error(path);
            } else {
                seen.push(lower);
            }
        }
    }
}

// ---- [[route]] ---------------------------------------------------------

#[derive(Clone, Debug)]
pub struct RouteTable {
    pub host: Option<Pick>,
    pub path_prefix: Option<Pick>,
    /// Index of the upstream it names; past the last one, a missing name.
    pub target: usize,
    pub limits: Option<Rates>,
}

pub fn route(m: Mode) -> impl Strategy<Value = RouteTable> {
    (
        key(
            m,
            &["\"*\"", "\"chat.example.com\"", "\"*.example.com\""],
            &["\"a*b\""],
        ),
        key(m, &["\"/\"", "\"/ws\""], &["\"ws\""]),
        0usize..=2,
        proptest::option::of(rates(m)),
    )
        .prop_map(|(host, path_prefix, target, limits)| RouteTable {
            host,
            path_prefix,
            target,
            limits,
        })
}

pub fn write_route(doc: &mut Doc, i: usize, r: &RouteTable, upstreams: &[String]) {
    let at = format!("route[{i}]");
    doc.line("[[route]]");
    doc.key(&at, &at, "host", &r.host);
    doc.key(&at, &at, "path_prefix", &r.path_prefix);
    let name = match upstreams.get(r.target) {
        Some(name) => name.clone(),
        None => {
            doc.expect.error(format!("{at}.upstream"));
            "ghost".to_owned()
        }
    };
    let _ = writeln!(doc.text, "upstream = \"{name}\"");
    if let Some(rates) = &r.limits {
        let pairs = rate_pairs(doc, &format!("{at}.limits"), &at, rates);
        let _ = writeln!(doc.text, "limits = {{ {} }}", pairs.join(", "));
    }
}

// ---- [upstream.NAME] ---------------------------------------------------

#[derive(Clone, Debug)]
pub struct ServerLine {
    pub addr_ok: bool,
    pub weight: Option<Pick>,
    pub backup: Option<Pick>,
}

/// Named keys of one table, in the order they are written.
pub type Keys = Vec<(&'static str, Option<Pick>)>;

#[derive(Clone, Debug)]
pub struct UpstreamTable {
    pub name_ok: bool,
    pub keys: Keys,
    pub tls: Option<Pick>,
    pub tls_keys: Keys,
    pub servers: Vec<ServerLine>,
    /// `[upstream.NAME.health_check]`: its `kind`, then its other keys.
    pub check: Option<(Option<Pick>, Keys)>,
    pub passive: Option<Keys>,
}

pub fn named(
    names: &'static [&'static str],
    values: Vec<BoxedStrategy<Option<Pick>>>,
) -> impl Strategy<Value = Keys> {
    values.prop_map(move |picks| names.iter().copied().zip(picks).collect())
}

pub const UPSTREAM_KEYS: &[&str] = &[
    "balance",
    "hash_key",
    "balance_factor",
    "connect_timeout",
    "read_timeout",
    "write_timeout",
    "idle_timeout",
    "keepalive_timeout",
    "drain_timeout",
    "slow_start",
    "retries",
    "keepalive_connections",
    "colour",
];

pub fn upstream(m: Mode) -> impl Strategy<Value = UpstreamTable> {
    let positive = || key(m, DUR_POSITIVE, DUR_BAD_OR_ZERO);
    let keys = named(
        UPSTREAM_KEYS,
        vec![
            key(
                m,
                &["\"consistent-hash\"", "\"round-robin\"", "\"least-conn\""],
                &["!\"random\""],
            ),
            key(
                m,
                &[
                    "[\"cookie:sid\", \"client-ip\"]",
                    "[\"header:x-session-id\"]",
                ],
                &["[\"ear:lobe\"]@[0]", "[]"],
            ),
            key(
                m,
                &["0", "1.25", "100.0"],
                &["0.5", "1.0", "101.0", "-2.0", "nan", "inf"],
            ),
            positive(),
            positive(),
            positive(),
            positive(),
            positive(),
            key(m, DUR_ANY, DUR_BAD),
            key(m, DUR_ANY, DUR_BAD),
            key(m, &["0", "2", "16"], &["17", "-1"]),
            key(m, &["0", "64", "10000"], &["10001", "-1"]),
            unknown(m),
        ],
    );
    let tls_keys = named(
        &["sni", "ca_file", "verify"],
        vec![
            key(
                m,
                &["\"backend.internal\"", "\"10.0.0.7\""],
                &["\"\"", "\"bad name\""],
            ),
            key(m, &["\"/etc/ringway/ca.pem\""], &["\"\""]),
            key(m, BOOL, &[]),
        ],
    );
    let (_, wv, wi, _) = m.weights();
    let addr_ok = if wi == 0 {
        Just(true).boxed()
    } else {
        prop_oneof![wv * 4 => Just(true), wi => Just(false)].boxed()
    };
    let server_line = (
        addr_ok,
        // Weight 1000 puts 160,000 points on the ring, slow to build in a
        // debug build: one pick in eight.
        key(
            m,
            &["1", "1", "1", "2", "2", "3", "7", "1000"],
            &["0", "1001", "-1"],
        ),
        key(m, BOOL, &[]),
    )
        .prop_map(|(addr_ok, weight, backup)| ServerLine {
            addr_ok,
            weight,
            backup,
        });
    let check = (
        key(m, &["\"http\"", "\"tcp\""], &["!\"udp\""]),
        named(
            &["path", "host", "interval", "timeout", "rise", "fall"],
            vec![
                key(
                    m,
                    &["\"/health\"", "\"/health?deep=1\"", "\"/\""],
                    &["\"health\"", "\"/a b\"", "\"/\\u007f\""],
                ),
                key(
                    m,
                    &["\"localhost\"", "\"app.internal:8080\""],
                    &["\"a\\u0001b\"", "\"a b\"", "\"\"", "\"caf\\u00e9\""],
                ),
                positive(),
                positive(),
                key(m, &["1", "2", "100"], &["0", "101"]),
                key(m, &["1", "3", "100"], &["0", "101"]),
            ],
        ),
    );
    let passive = named(
        &["max_fails", "fail_timeout", "count_5xx"],
        vec![
            key(m, &["0", "3", "1000"], &["1001", "-1"]),
            positive(),
            key(m, BOOL, &["!1"]),
        ],
    );
    let name_ok = if wi == 0 {
        Just(true).boxed()
    } else {
        prop_oneof![wv * 4 => Just(true), wi => Just(false)].boxed()
    };
    let servers = if wi == 0 {
        proptest::collection::vec(server_line, 1..=3).boxed()
    } else {
        proptest::collection::vec(server_line, 0..=3).boxed()
    };
    (
        name_ok,
        keys,
        key(m, BOOL, &[]),
        tls_keys,
        servers,
        proptest::option::of(check),
        proptest::option::of(passive),
    )
        .prop_map(
            |(name_ok, keys, tls, tls_keys, servers, check, passive)| UpstreamTable {
                name_ok,
                keys,
                tls,
                tls_keys,
                servers,
                check,
                passive,
            },
        )
}

pub fn write_upstream(doc: &mut Doc, name: &str, u: &UpstreamTable, ports: &[u16]) {
    let at = format!("upstream.{name}");
    let _ = writeln!(doc.text, "[upstream.\"{name}\"]");
    if !u.name_ok {
        doc.expect.error(at.clone());
    }
    for (key, pick) in &u.keys {
        doc.key(&at, &at, key, pick);
    }
    doc.key(&at, &at, "tls", &u.tls);
    let tls_on = u.tls.as_ref().is_some_and(|p| p.lit == "true");
    for (key, pick) in &u.tls_keys {
        if tls_on {
            doc.key(&at, &at, key, pick);
        } else if let Some(p) = pick {
            let _ = writeln!(doc.text, "{key} = {}", p.lit);
            doc.expect.error(format!("{at}.{key}"));
        }
    }
    doc.line("servers = [");
    for (k, s) in u.servers.iter().enumerate() {
        let path = format!("{at}.servers[{k}]");
        let addr = if s.addr_ok {
            format!("127.0.0.1:{}", ports[k])
        } else {
            doc.expect.error(format!("{path}.addr"));
            "localhost:1".to_owned()
        };
        let mut line = format!("  {{ addr = \"{addr}\"");
        for (key, pick) in [("weight", &s.weight), ("backup", &s.backup)] {
            if let Some(p) = pick {
                let _ = write!(line, ", {key} = {}", p.lit);
                doc.judge(&format!("{path}.{key}"), &at, p);
            }
        }
        doc.line(&format!("{line} }},"));
    }
    doc.line("]");
    let all_backup = u
        .servers
        .iter()
        .all(|s| s.backup.as_ref().is_some_and(|p| p.lit == "true"));
    if u.servers.is_empty() || all_backup {
        doc.expect.error(format!("{at}.servers"));
    }
    if let Some((kind, keys)) = &u.check {
        let table = format!("{at}.health_check");
        let _ = writeln!(doc.text, "[upstream.\"{name}\".health_check]");
        doc.key(&table, &at, "kind", kind);
        let tcp = kind.as_ref().is_some_and(|p| p.lit == "\"tcp\"");
        for (key, pick) in keys {
            if tcp && matches!(*key, "path" | "host") {
                if let Some(p) = pick {
                    let _ = writeln!(doc.text, "{key} = {}", p.lit);
                    doc.expect.error(format!("{table}.{key}"));
                }
            } else {
                doc.key(&table, &at, key, pick);
            }
        }
    }
    if let Some(keys) = &u.passive {
        let table = format!("{at}.passive");
        let _ = writeln!(doc.text, "[upstream.\"{name}\".passive]");
        for (key, pick) in keys {
            doc.key(&table, &at, key, pick);
        }
    }
}
