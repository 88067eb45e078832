//! `[[route]]`: hosts, prefixes, upstream names and per-route limits.

use super::*;

#[test]
fn a_route_to_a_missing_upstream_is_rejected() {
    let text = "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[route]]\nupstream = \"nope\"\n[upstream.chat]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
    assert_error(text, "route[0].upstream", "no upstream named \"nope\"");
}

#[test]
fn host_matching() {
    let suffix = HostMatch::Suffix(".example.com".into());
    assert!(suffix.matches("a.example.com"));
    assert!(suffix.matches("B.A.Example.com:8443"));
    assert!(!suffix.matches("example.com"));
    assert!(!suffix.matches("notexample.com"));
    let exact = HostMatch::Exact("chat.example.com".into());
    assert!(exact.matches("Chat.Example.com:80"));
    assert!(!exact.matches("x.chat.example.com"));
    assert!(HostMatch::Any.matches(""));
    let route = Route {
        host: HostMatch::Any,
        path_prefix: "/ws".into(),
        upstream: "u".into(),
        limits: Default::default(),
    };
    assert!(route.matches("h", "/ws/room"));
    assert!(!route.matches("h", "/api"));
}

#[test]
fn route_hosts_parse() {
    let text = "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[route]]\nhost = \"*.Example.com\"\nupstream = \"u\"\n[[route]]\nhost = \"a*b\"\nupstream = \"u\"\n[upstream.u]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
    assert_error(text, "route[1].host", "is not");
    let ok = text.replace("host = \"a*b\"\n", "");
    let c = Config::from_toml_str(&ok).unwrap();
    assert_eq!(c.routes[0].host, HostMatch::Suffix(".example.com".into()));
}

fn route(lines: &str) -> String {
    format!(
        "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[route]]\nupstream = \"chat\"\n{lines}\n[upstream.chat]\n{ONE_SERVER}\n"
    )
}

#[test]
fn route_limits_parse() {
    let c = Config::from_toml_str(&route(
        "limits = { requests_per_second = 10, websocket_upgrades_per_second = 5, websocket_upgrades_burst = 8, max_body_bytes = 1048576 }",
    ))
    .unwrap();
    assert_eq!(
        c.routes[0].limits,
        RouteLimits {
            requests: Some(RateLimit {
                per_second: 10,
                burst: 20
            }),
            websocket_upgrades: Some(RateLimit {
                per_second: 5,
                burst: 8
            }),
            max_body_bytes: Some(1_048_576),
        }
    );
}

#[test]
fn route_limits_are_validated_like_the_global_ones() {
    for (limits, path, fragment) in [
        (
            "{ requests_per_second = 0 }",
            "requests_per_second",
            "between 1 and 1000000",
        ),
        (
            "{ requests_per_second = 10, burst = 9 }",
            "burst",
            "below requests_per_second",
        ),
        ("{ burst = 9 }", "burst", "needs requests_per_second"),
        (
            "{ websocket_upgrades_per_second = 1000001 }",
            "websocket_upgrades_per_second",
            "between 1 and 1000000",
        ),
        (
            "{ websocket_upgrades_per_second = 2, websocket_upgrades_burst = 1 }",
            "websocket_upgrades_burst",
            "below",
        ),
        ("{ max_body_bytes = -5 }", "max_body_bytes", "1 TiB"),
        (
            "{ header_timeout = \"1s\" }",
            "header_timeout",
            "unknown key",
        ),
    ] {
        assert_error(
            &route(&format!("limits = {limits}")),
            &format!("route[0].limits.{path}"),
            fragment,
        );
    }
}

#[test]
fn path_prefixes_start_with_a_slash() {
    assert_error(
        &route("path_prefix = \"ws\""),
        "route[0].path_prefix",
        "must start with '/'",
    );
}
