//! `[limits]`: trusted proxies, rates, caps, timeouts and sizes.

use super::*;

fn limits(lines: &str) -> String {
    with_tables(&format!("[limits]\n{lines}"))
}

#[test]
fn every_limit_parses() {
    let c = Config::from_toml_str(&limits(
        "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nrequests_per_second = 1000000\nburst = 10000000\nwebsocket_upgrades_per_second = 5\nwebsocket_upgrades_burst = 10\nmax_connections_per_ip = 1\nmax_websockets_per_ip = 1000000\nheader_timeout = \"1s\"\ntls_handshake_timeout = \"2s\"\nkeepalive_timeout = \"3s\"\nclient_write_timeout = \"4s\"\nbody_timeout = \"5s\"\nmax_request_line_bytes = 256\nmax_header_bytes = 1048576\nmax_body_bytes = 0\nh2_max_concurrent_streams = 1000",
    ))
    .unwrap();
    let want = Limits {
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        requests: Some(RateLimit {
            per_second: 1_000_000,
            burst: 10_000_000,
        }),
        websocket_upgrades: Some(RateLimit {
            per_second: 5,
            burst: 10,
        }),
        max_connections_per_ip: Some(1),
        max_websockets_per_ip: Some(1_000_000),
        header_timeout: Duration::from_secs(1),
        tls_handshake_timeout: Duration::from_secs(2),
        keepalive_timeout: Duration::from_secs(3),
        client_write_timeout: Duration::from_secs(4),
        body_timeout: Duration::from_secs(5),
        max_request_line_bytes: 256,
        max_header_bytes: 1_048_576,
        max_body_bytes: 0,
        h2_max_concurrent_streams: 1000,
    };
    assert_eq!(c.limits, want);
}

#[test]
fn bursts_default_from_their_rates() {
    let c = Config::from_toml_str(&limits(
        "requests_per_second = 7\nwebsocket_upgrades_per_second = 3",
    ))
    .unwrap();
    assert_eq!(c.limits.requests.map(|r| r.burst), Some(14));
    assert_eq!(c.limits.websocket_upgrades.map(|r| r.burst), Some(3));
}

#[test]
fn bursts_below_their_rates_are_rejected() {
    assert_error(
        &limits("requests_per_second = 200\nburst = 100"),
        "limits.burst",
        "below requests_per_second",
    );
    assert_error(
        &limits("websocket_upgrades_per_second = 20\nwebsocket_upgrades_burst = 19"),
        "limits.websocket_upgrades_burst",
        "below websocket_upgrades_per_second",
    );
}

#[test]
fn bursts_need_their_rates() {
    assert_error(
        &limits("burst = 100"),
        "limits.burst",
        "needs requests_per_second",
    );
    assert_error(
        &limits("websocket_upgrades_burst = 100"),
        "limits.websocket_upgrades_burst",
        "needs websocket_upgrades_per_second",
    );
}

#[test]
fn rates_and_caps_are_bounded() {
    for key in [
        "requests_per_second",
        "websocket_upgrades_per_second",
        "max_connections_per_ip",
        "max_websockets_per_ip",
    ] {
        for bad in ["0", "1000001"] {
            assert_error(
                &limits(&format!("{key} = {bad}")),
                &format!("limits.{key}"),
                "must be between 1 and 1000000 (leave it out for no limit)",
            );
        }
    }
    assert_error(
        &limits("requests_per_second = 1\nburst = 10000001"),
        "limits.burst",
        "between 1 and 10000000",
    );
}

#[test]
fn client_timeouts_are_positive_and_bounded() {
    for key in [
        "header_timeout",
        "tls_handshake_timeout",
        "keepalive_timeout",
        "client_write_timeout",
        "body_timeout",
    ] {
        assert_error(
            &limits(&format!("{key} = \"0s\"")),
            &format!("limits.{key}"),
            "greater than zero",
        );
        assert_error(
            &limits(&format!("{key} = \"1000000000h\"")),
            &format!("limits.{key}"),
            "maximum of 30 days",
        );
    }
}

#[test]
fn sizes_are_bounded() {
    for (line, path, fragment) in [
        (
            "max_request_line_bytes = 255",
            "max_request_line_bytes",
            "between 256 and 65536",
        ),
        (
            "max_request_line_bytes = 65537",
            "max_request_line_bytes",
            "between 256 and 65536",
        ),
        (
            "max_header_bytes = 1023",
            "max_header_bytes",
            "between 1024 and 1048576",
        ),
        (
            "max_header_bytes = 1048577",
            "max_header_bytes",
            "between 1024 and 1048576",
        ),
        (
            "max_body_bytes = -1",
            "max_body_bytes",
            "between 0 and 1099511627776 (1 TiB)",
        ),
        ("max_body_bytes = 1099511627777", "max_body_bytes", "1 TiB"),
        (
            "h2_max_concurrent_streams = 0",
            "h2_max_concurrent_streams",
            "between 1 and 1000",
        ),
        (
            "h2_max_concurrent_streams = 1001",
            "h2_max_concurrent_streams",
            "between 1 and 1000",
        ),
    ] {
        assert_error(&limits(line), &format!("limits.{path}"), fragment);
    }
}

#[test]
fn the_header_limit_covers_the_request_line() {
    assert_error(
        &limits("max_request_line_bytes = 16384\nmax_header_bytes = 8192"),
        "limits.max_header_bytes",
        "below max_request_line_bytes 16384",
    );
}

#[test]
fn trusted_proxies_must_be_addresses_or_cidrs() {
    assert_error(
        &limits("trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]"),
        "limits.trusted_proxies[1]",
        "not an IP address or CIDR",
    );
}

#[test]
fn every_limits_error_is_reported_in_one_pass() {
    let errs = errors(&limits(
        "burst = 5\nmax_websockets_per_ip = 0\nbody_timeout = \"0s\"\nh2_max_concurrent_streams = 0",
    ));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "limits.burst",
            "limits.max_websockets_per_ip",
            "limits.body_timeout",
            "limits.h2_max_concurrent_streams"
        ]
    );
}
