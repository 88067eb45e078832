//! Unit tests of config parsing and validation: every rejected config asserts its path and message.

use super::*;

/// The example of DESIGN.md, verbatim.
const EXAMPLE: &str = include_str!("../../../conf/ringway.toml");

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
        c.admin.as_ref().unwrap().listen,
        "127.0.0.1:9090".parse().unwrap()
    );
    assert_eq!(c.listeners.len(), 2);
    assert!(c.listeners[1].tls.is_some());
    assert_eq!(c.routes[0].host, HostMatch::Any);
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
    assert_eq!(chat.idle_timeout, Duration::from_secs(3600));
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
    assert_eq!((hc.rise, hc.fall), (2, 3));
    assert_eq!(chat.passive.max_fails, 3);
    let limits = c.limits;
    assert_eq!(
        limits.trusted_proxies,
        vec!["127.0.0.0/8".parse::<IpNet>().unwrap()]
    );
    assert_eq!(limits.requests.map(|r| r.burst), Some(400));
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
fn weight_zero_is_rejected() {
    assert_error(
        &with_upstream("servers = [{ addr = \"127.0.0.1:1\", weight = 0 }]"),
        "upstream.chat.servers[0].weight",
        "#1006",
    );
}

#[test]
fn duplicate_servers_are_rejected() {
    assert_error(
        &with_upstream("servers = [{ addr = \"127.0.0.1:1\" }, { addr = \"127.0.0.1:2\" }, { addr = \"127.0.0.1:1\" }]"),
        "upstream.chat.servers[2]",
        "already listed as servers[0]",
    );
}

#[test]
fn a_route_to_a_missing_upstream_is_rejected() {
    let text = "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[route]]\nupstream = \"nope\"\n[upstream.chat]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
    assert_error(text, "route[0].upstream", "no upstream named \"nope\"");
}

#[test]
fn empty_and_backup_only_pools_are_rejected() {
    assert_error(
        &with_upstream("servers = []"),
        "upstream.chat.servers",
        "no servers",
    );
    assert_error(
        &with_upstream("servers = [{ addr = \"127.0.0.1:1\", backup = true }]"),
        "upstream.chat.servers",
        "only backup",
    );
}

#[test]
fn bad_durations_are_rejected() {
    assert_error(
        &with_upstream("connect_timeout = \"2 parsecs\"\nservers = [{ addr = \"127.0.0.1:1\" }]"),
        "upstream.chat.connect_timeout",
        "invalid duration \"2 parsecs\"",
    );
    assert_error(
        &with_upstream("connect_timeout = \"0s\"\nservers = [{ addr = \"127.0.0.1:1\" }]"),
        "upstream.chat.connect_timeout",
        "greater than zero",
    );
    assert_error(&with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]\n[upstream.chat.health_check]\ninterval = \"often\""), "upstream.chat.health_check.interval", "invalid duration");
}

#[test]
fn unknown_hash_key_kinds_are_rejected() {
    assert_error(
        &with_upstream(
            "hash_key = [\"cookie:sid\", \"ear:lobe\"]\nservers = [{ addr = \"127.0.0.1:1\" }]",
        ),
        "upstream.chat.hash_key[1]",
        "unknown hash key \"ear:lobe\"",
    );
    assert_error(
        &with_upstream("hash_key = [\"cookie:\"]\nservers = [{ addr = \"127.0.0.1:1\" }]"),
        "upstream.chat.hash_key[0]",
        "unknown hash key",
    );
}

#[test]
fn balance_factor_in_zero_one_is_rejected() {
    for bad in ["0.5", "1.0", "-2.0"] {
        assert_error(
            &with_upstream(&format!(
                "balance_factor = {bad}\nservers = [{{ addr = \"127.0.0.1:1\" }}]"
            )),
            "upstream.chat.balance_factor",
            "greater than 1",
        );
    }
    let off = Config::from_toml_str(&with_upstream(
        "balance_factor = 0\nservers = [{ addr = \"127.0.0.1:1\" }]",
    ))
    .unwrap();
    assert_eq!(off.upstreams["chat"].balance_factor, None);
    let off = Config::from_toml_str(&with_upstream(
        "balance_factor = 0.0\nservers = [{ addr = \"127.0.0.1:1\" }]",
    ))
    .unwrap();
    assert_eq!(off.upstreams["chat"].balance_factor, None);
}

#[test]
fn listeners_and_routes_are_required_and_distinct() {
    let text = "[upstream.chat]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
    assert_error(text, "listener", "no [[listener]]");
    assert_error(text, "route", "no [[route]]");
    let twice = format!(
        "[[listener]]\nlisten = \"127.0.0.1:8080\"\n{}",
        with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]")
    );
    assert_error(&twice, "listener[1].listen", "already used by listener[0]");
}

#[test]
fn limits_are_validated() {
    let base = with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]");
    assert_error(
        &format!("{base}[limits]\nrequests_per_second = 200\nburst = 100\n"),
        "limits.burst",
        "below requests_per_second",
    );
    assert_error(
        &format!("{base}[limits]\nmax_connections_per_ip = 0\n"),
        "limits.max_connections_per_ip",
        "at least 1",
    );
    assert_error(
        &format!("{base}[limits]\ntrusted_proxies = [\"10.0.0.0/33\"]\n"),
        "limits.trusted_proxies[0]",
        "not an IP address or CIDR",
    );
}

#[test]
fn sni_needs_tls() {
    let text = "[[listener]]\nlisten = \"127.0.0.1:8443\"\n[[listener.sni]]\nnames = [\"a.example\"]\ncert = \"c\"\nkey = \"k\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
    assert_error(text, "listener[0].sni", "need `tls`");
}

#[test]
fn tcp_checks_take_no_path() {
    assert_error(&with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]\n[upstream.chat.health_check]\nkind = \"tcp\"\npath = \"/x\""), "upstream.chat.health_check.path", "only valid with kind = \"http\"");
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
