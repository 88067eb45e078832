//! Unit tests of config parsing and validation: every rejected config
//! asserts its path and message. This file has the shared helpers and the
//! file-level cases; each section has its own file.

mod limits;
mod listeners;
mod restart;
mod routes;
mod server;
mod upstreams;

use super::*;

/// The example of DESIGN.md, verbatim.
const EXAMPLE: &str = include_str!("../../../../conf/ringway.toml");

/// One valid server line for [`with_upstream`].
const ONE_SERVER: &str = "servers = [{ addr = \"127.0.0.1:1\" }]";

fn errors(text: &str) -> Vec<ConfigError> {
    Config::from_toml_str(text)
        .expect_err("config should be rejected")
        .0
}

/// A valid minimal config with `upstream` lines spliced into its pool.
fn with_upstream(lines: &str) -> String {
    format!(
        "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[route]]\nupstream = \"chat\"\n[upstream.chat]\n{lines}\n"
    )
}

/// A valid minimal config followed by `tables` (whole sections, e.g. `[limits]`).
fn with_tables(tables: &str) -> String {
    format!("{}{tables}\n", with_upstream(ONE_SERVER))
}

fn assert_error(text: &str, path: &str, fragment: &str) {
    let errs = errors(text);
    assert!(
        errs.iter()
            .any(|e| e.path == path && e.message.contains(fragment)),
        "want an error at {path} containing {fragment:?}, got:\n{}",
        ConfigErrors(errs)
    );
}

#[test]
fn the_design_example_loads() {
    let c = Config::from_toml_str(EXAMPLE).unwrap();
    assert_eq!(c.server.threads, 2);
    assert_eq!(c.server.grace_period, Duration::from_secs(30));
    assert_eq!(
        c.server.upgrade_sock.as_deref(),
        Some(std::path::Path::new("/run/ringway/upgrade.sock"))
    );
    assert_eq!(c.server.max_connections, Some(8000));
    assert_eq!(
        c.log,
        LogSettings {
            access: AccessLog::Stdout,
            format: LogFormat::Json,
            query: false,
            buffer_lines: 65536,
        }
    );
    let admin = c.admin.as_ref().unwrap();
    assert_eq!(admin.listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(admin.token, None);

    assert_eq!(c.listeners.len(), 2);
    let plain = &c.listeners[0];
    assert_eq!(plain.listen, "0.0.0.0:8080".parse().unwrap());
    assert!(plain.tls.is_none());
    assert!(!plain.proxy_protocol);
    assert_eq!(plain.redirect_https, None);
    assert_eq!(plain.redirect_except, vec!["/.well-known/acme-challenge/"]);
    let tls = c.listeners[1].tls.as_ref().unwrap();
    assert_eq!(
        tls.default,
        CertFiles {
            cert: "certs/dev/cert.pem".into(),
            key: "certs/dev/key.pem".into(),
            ocsp: None,
            at: "listener[1].tls".into(),
        }
    );
    assert!(tls.sni.is_empty());
    assert_eq!(tls.hsts, None);
    assert!(tls.http2);

    assert_eq!(c.routes[0].host, HostMatch::Any);
    assert_eq!(c.routes[0].path_prefix, "/");
    assert_eq!(c.routes[0].limits, RouteLimits::default());
    let chat = &c.upstreams["chat"];
    assert_eq!(chat.balance, Balance::ConsistentHash);
    assert_eq!(
        chat.hash_key,
        vec![
            HashKey::Cookie("sid".into()),
            HashKey::Query("sid".into()),
            HashKey::Header("x-session-id".into()),
            HashKey::ClientIp
        ]
    );
    assert_eq!(chat.balance_factor, Some(1.25));
    assert_eq!(chat.connect_timeout, Duration::from_secs(2));
    assert_eq!(chat.idle_timeout, Duration::from_secs(3600));
    assert_eq!(chat.drain_timeout, Duration::from_secs(60));
    assert_eq!(chat.slow_start, None);
    assert_eq!(chat.keepalive_connections, 64);
    assert_eq!(chat.retries, 2);
    assert_eq!(chat.tls, None);
    assert_eq!(
        chat.servers.iter().map(|s| s.weight).collect::<Vec<_>>(),
        vec![1, 2, 1]
    );
    assert!(chat.servers[2].backup);
    let hc = chat.health_check.as_ref().unwrap();
    assert_eq!(
        hc.kind,
        CheckKind::Http {
            path: "/health".into(),
            host: None
        }
    );
    assert_eq!(
        (hc.interval, hc.timeout),
        (Duration::from_secs(2), Duration::from_secs(1))
    );
    assert_eq!((hc.rise, hc.fall), (2, 3));
    assert_eq!(
        chat.passive,
        Passive {
            max_fails: 3,
            fail_timeout: Duration::from_secs(10),
            count_5xx: false,
        }
    );

    let limits = c.limits;
    assert_eq!(
        limits.trusted_proxies,
        vec!["127.0.0.0/8".parse::<IpNet>().unwrap()]
    );
    assert_eq!(
        limits.requests,
        Some(RateLimit {
            per_second: 200,
            burst: 400
        })
    );
    assert_eq!(
        limits.websocket_upgrades,
        Some(RateLimit {
            per_second: 20,
            burst: 20
        })
    );
    assert_eq!(limits.max_connections_per_ip, Some(256));
    assert_eq!(limits.max_websockets_per_ip, None);
    assert_eq!(limits.header_timeout, Duration::from_secs(10));
    assert_eq!(limits.tls_handshake_timeout, Duration::from_secs(10));
    assert_eq!(limits.keepalive_timeout, Duration::from_secs(75));
    assert_eq!(limits.client_write_timeout, Duration::from_secs(30));
    assert_eq!(limits.body_timeout, Duration::from_secs(30));
    assert_eq!(limits.max_request_line_bytes, 8192);
    assert_eq!(limits.max_header_bytes, 65536);
    assert_eq!(limits.max_body_bytes, 10_485_760);
    assert_eq!(limits.h2_max_concurrent_streams, 128);
}

/// A config with nothing but what is required takes every default.
#[test]
fn a_minimal_config_takes_the_defaults() {
    let c = Config::from_toml_str(&with_upstream(ONE_SERVER)).unwrap();
    assert!(c.server.threads >= 1);
    assert_eq!(c.server.graceful_shutdown_timeout, Duration::from_secs(5));
    assert_eq!(
        (c.server.upgrade_sock.clone(), c.server.max_connections),
        (None, None)
    );
    assert_eq!(c.log.access, AccessLog::Stdout);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.admin, None);
    assert_eq!(c.limits, Limits::default());
    let chat = &c.upstreams["chat"];
    assert_eq!(chat.hash_key, vec![HashKey::ClientIp]);
    assert_eq!(chat.health_check, None);
    assert_eq!(chat.passive.max_fails, 3);
}

#[test]
fn syntax_errors_say_where() {
    let errs = errors("[server\nthreads = 2");
    assert!(errs[0].message.contains("TOML syntax"), "{errs:?}");
    assert!(errs[0].message.contains("line 1"), "{errs:?}");
}

#[test]
fn unknown_keys_are_named_with_their_path() {
    assert_error(
        &with_upstream("servers = [{ addr = \"127.0.0.1:1\", wieght = 2 }]"),
        "upstream.chat.servers[0].wieght",
        "unknown key",
    );
    assert_error(
        &with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]\nsticky = true"),
        "upstream.chat.sticky",
        "unknown key",
    );
    assert_error(
        &format!(
            "{}\n[extra]\na = 1\n",
            with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]")
        ),
        "extra",
        "unknown key",
    );
    assert_error(
        &format!(
            "[server]\nthreds = 2\n{}",
            with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]")
        ),
        "server.threds",
        "unknown key",
    );
}

#[test]
fn wrong_types_are_named_with_their_path() {
    assert_error(
        &with_upstream("servers = [{ addr = \"127.0.0.1:1\", weight = \"heavy\" }]"),
        "upstream.chat.servers[0].weight",
        "invalid type",
    );
}

#[test]
fn unparsable_addresses() {
    assert_error(
        &with_upstream("servers = [{ addr = \"127.0.0.1\" }]"),
        "upstream.chat.servers[0].addr",
        "invalid address",
    );
    assert_error(
        &with_upstream("servers = [{ addr = \"localhost:80\" }]"),
        "upstream.chat.servers[0].addr",
        "literal IP:PORT",
    );
    let text = "[[listener]]\nlisten = \"0.0.0.0\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nservers = [{ addr = \"127.0.0.1:1\" }]\n[admin]\nlisten = \"nope\"\n";
    assert_error(text, "listener[0].listen", "invalid address");
    assert_error(text, "admin.listen", "invalid address");
}

#[test]
fn independent_errors_are_all_reported() {
    let text = "[server]\nthreads = \"two\"\n[[listener]]\nlisten = \"nope\"\n[[route]]\nupstream = \"ghost\"\n[upstream.a]\nservers = [{ addr = \"127.0.0.1:1\", weight = 0 }]\n[upstream.b]\nservers = [{ addr = \"127.0.0.1:1\", colour = 1 }]\n";
    let errs = errors(text);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "server.threads",
        "listener[0].listen",
        "route[0].upstream",
        "upstream.a.servers[0].weight",
        "upstream.b.servers[0].colour",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
}

#[test]
fn a_structurally_broken_upstream_still_counts_as_existing_for_routes() {
    let errs = errors(&with_upstream(
        "servers = [{ addr = \"127.0.0.1:1\", colour = 1 }]",
    ));
    assert!(
        errs.iter().all(|e| e.path != "route[0].upstream"),
        "{errs:?}"
    );
}

#[test]
fn errors_come_in_the_order_of_the_sections() {
    let text = format!(
        "[limits]\nburst = 1\n[server]\nthreads = 0\n{}[extra]\n[admin]\nlisten = \"x\"\n",
        with_upstream("servers = []")
    );
    let errs = errors(&text);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "server.threads",
            "admin.listen",
            "upstream.chat.servers",
            "limits.burst",
            "extra"
        ]
    );
}
