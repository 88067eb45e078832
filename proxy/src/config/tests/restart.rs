//! `Config::restart_required`: what a reload must refuse, and what it may change.

use super::*;

/// The design example with `from` replaced by `to`.
fn example_with(from: &str, to: &str) -> Config {
    assert!(EXAMPLE.contains(from), "the example has no {from:?}");
    Config::from_toml_str(&EXAMPLE.replacen(from, to, 1)).unwrap()
}

fn example() -> Config {
    Config::from_toml_str(EXAMPLE).unwrap()
}

#[test]
fn the_same_config_reloads() {
    assert!(example().restart_required(&example()).is_empty());
}

#[test]
fn everything_outside_the_fixed_set_reloads() {
    let changed = [
        ("max_connections = 8000", "max_connections = 100"),
        ("access = \"stdout\"", "access = \"off\""),
        ("# token = \"...\"", "token = \"0123456789abcdef\""),
        ("# redirect_https = 8443", "redirect_https = 8443"),
        (
            "# hsts = \"max-age=31536000\"",
            "hsts = \"max-age=31536000\"",
        ),
        (
            "key = \"certs/dev/key.pem\"",
            "key = \"certs/dev/other.pem\"",
        ),
        (
            "upstream = \"chat\"",
            "upstream = \"chat\"\nlimits = { max_body_bytes = 1 }",
        ),
        ("{ addr = \"127.0.0.1:9002\", weight = 2 },", ""),
        ("balance = \"consistent-hash\"", "balance = \"round-robin\""),
        ("burst = 400", "burst = 800"),
        ("header_timeout = \"10s\"", "header_timeout = \"5s\""),
    ];
    for (from, to) in changed {
        let next = example_with(from, to);
        assert_ne!(next, example(), "{from:?} changed nothing");
        assert_eq!(
            example().restart_required(&next),
            Vec::<String>::new(),
            "{from:?} -> {to:?}"
        );
    }
}

#[test]
fn server_settings_need_a_restart() {
    for (from, to, path) in [
        ("threads = 2", "threads = 3", "server.threads"),
        (
            "grace_period = \"30s\"",
            "grace_period = \"31s\"",
            "server.grace_period",
        ),
        (
            "upgrade_sock = \"/run/ringway/upgrade.sock\"",
            "upgrade_sock = \"/run/ringway/other.sock\"",
            "server.upgrade_sock",
        ),
        (
            "grace_period = \"30s\"",
            "grace_period = \"30s\"\ngraceful_shutdown_timeout = \"9s\"",
            "server.graceful_shutdown_timeout",
        ),
        (
            "listen = \"127.0.0.1:9090\"",
            "listen = \"127.0.0.1:9091\"",
            "admin.listen",
        ),
    ] {
        assert_eq!(
            example().restart_required(&example_with(from, to)),
            vec![path.to_owned()],
            "{from:?} -> {to:?}"
        );
    }
}

#[test]
fn removing_the_admin_listener_needs_a_restart() {
    let mut next = example();
    next.admin = None;
    assert_eq!(example().restart_required(&next), vec!["admin.listen"]);
}

#[test]
fn listeners_are_compared_by_address_not_order() {
    let mut next = example();
    next.listeners.reverse();
    assert!(example().restart_required(&next).is_empty());
}

#[test]
fn added_and_removed_listeners_are_named() {
    let next = example_with("listen = \"0.0.0.0:8080\"", "listen = \"0.0.0.0:8081\"");
    assert_eq!(
        example().restart_required(&next),
        vec![
            "listener[0].listen (0.0.0.0:8081 added)",
            "listener (0.0.0.0:8080 removed; it was listener[0])",
        ]
    );
}

#[test]
fn tls_on_off_and_proxy_protocol_per_listener_need_a_restart() {
    let mut next = example();
    next.listeners.reverse();
    next.listeners[1].tls = Some(next.listeners[0].tls.clone().unwrap());
    next.listeners[0].tls = None;
    next.listeners[1].proxy_protocol = true;
    assert_eq!(
        example().restart_required(&next),
        vec![
            "listener[0].tls (turned on or off, 0.0.0.0:8443)",
            "listener[1].tls (turned on or off, 0.0.0.0:8080)",
            "listener[1].proxy_protocol (0.0.0.0:8080)",
        ]
    );
}
