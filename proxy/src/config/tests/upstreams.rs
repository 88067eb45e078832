//! `[upstream.NAME]`: servers, timeouts, hash keys, TLS, health checks, passive ejection.

use super::*;

#[test]
fn weights_are_bounded() {
    for zero in ["0", "-1"] {
        assert_error(
            &with_upstream(&format!(
                "servers = [{{ addr = \"127.0.0.1:1\", weight = {zero} }}]"
            )),
            "upstream.chat.servers[0].weight",
            "#1006",
        );
    }
    assert_error(
        &with_upstream("servers = [{ addr = \"127.0.0.1:1\", weight = 1001 }]"),
        "upstream.chat.servers[0].weight",
        "must be between 1 and 1000",
    );
    let c = Config::from_toml_str(&with_upstream(
        "servers = [{ addr = \"127.0.0.1:1\", weight = 1000 }, { addr = \"127.0.0.1:2\" }]",
    ))
    .unwrap();
    assert_eq!(c.upstreams["chat"].servers[0].weight, 1000);
    assert_eq!(c.upstreams["chat"].servers[1].weight, 1);
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
    assert_error(&with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]\n[upstream.chat.health_check]\ninterval = \"often\""), "upstream.chat.health_check.interval", "invalid duration");
    const POSITIVE: [&str; 5] = [
        "connect_timeout",
        "read_timeout",
        "write_timeout",
        "idle_timeout",
        "keepalive_timeout",
    ];
    for key in POSITIVE {
        assert_error(
            &with_upstream(&format!("{key} = \"0ms\"\n{ONE_SERVER}")),
            &format!("upstream.chat.{key}"),
            "greater than zero",
        );
    }
    for key in POSITIVE.iter().chain(&["drain_timeout", "slow_start"]) {
        assert_error(
            &with_upstream(&format!("{key} = \"1000000000h\"\n{ONE_SERVER}")),
            &format!("upstream.chat.{key}"),
            "maximum of 30 days",
        );
    }
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
fn tcp_checks_take_no_path() {
    assert_error(&with_upstream("servers = [{ addr = \"127.0.0.1:1\" }]\n[upstream.chat.health_check]\nkind = \"tcp\"\npath = \"/x\""), "upstream.chat.health_check.path", "only valid with kind = \"http\"");
}

#[test]
fn oversized_pools_are_rejected() {
    let servers = |n: usize, weight: u32| {
        let list: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "{{ addr = \"127.0.{}.{}:1\", weight = {weight} }}",
                    i / 250,
                    i % 250 + 1
                )
            })
            .collect();
        with_upstream(&format!("servers = [{}]", list.join(", ")))
    };
    assert_error(
        &servers(10_001, 1),
        "upstream.chat.servers",
        "more than the 10000",
    );
    assert_error(
        &servers(101, 1000),
        "upstream.chat.servers",
        "total weight 101000 is above 100000",
    );
    assert!(Config::from_toml_str(&servers(100, 1000)).is_ok());
}

#[test]
fn upstream_names_are_url_and_label_safe() {
    let text = "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[route]]\nupstream = \"a b\"\n[upstream.\"a b\"]\nservers = [{ addr = \"127.0.0.1:1\" }]\n";
    assert_error(text, "upstream.a b", "letters, digits");
}

#[test]
fn new_upstream_keys_parse() {
    let c = Config::from_toml_str(&with_upstream(&format!(
        "slow_start = \"30s\"\nkeepalive_connections = 0\nretries = 16\ntls = true\nsni = \"backend.internal\"\nca_file = \"/etc/ringway/ca.pem\"\n{ONE_SERVER}\n[upstream.chat.passive]\ncount_5xx = true"
    )))
    .unwrap();
    let u = &c.upstreams["chat"];
    assert_eq!(u.slow_start, Some(Duration::from_secs(30)));
    assert_eq!(u.keepalive_connections, 0);
    assert_eq!(u.retries, 16);
    assert_eq!(
        u.tls,
        Some(UpstreamTls {
            sni: Some("backend.internal".into()),
            ca_file: Some("/etc/ringway/ca.pem".into()),
            verify: true,
        })
    );
    assert!(u.passive.count_5xx);
    let off = Config::from_toml_str(&with_upstream(&format!(
        "slow_start = \"0s\"\ntls = true\nverify = false\n{ONE_SERVER}"
    )))
    .unwrap();
    let u = &off.upstreams["chat"];
    assert_eq!(u.slow_start, None);
    assert_eq!(
        u.tls,
        Some(UpstreamTls {
            sni: None,
            ca_file: None,
            verify: false,
        })
    );
}

#[test]
fn counts_are_bounded() {
    let cases = [
        ("retries = 17", "upstream.chat.retries", "between 0 and 16"),
        ("retries = -1", "upstream.chat.retries", "between 0 and 16"),
        (
            "keepalive_connections = 10001",
            "upstream.chat.keepalive_connections",
            "between 0 and 10000",
        ),
    ];
    for (line, path, fragment) in cases {
        assert_error(
            &with_upstream(&format!("{line}\n{ONE_SERVER}")),
            path,
            fragment,
        );
    }
    assert_error(
        &with_upstream(&format!(
            "{ONE_SERVER}\n[upstream.chat.passive]\nmax_fails = 1001"
        )),
        "upstream.chat.passive.max_fails",
        "between 0 and 1000",
    );
    assert_error(
        &with_upstream(&format!("balance_factor = 101.0\n{ONE_SERVER}")),
        "upstream.chat.balance_factor",
        "at most 100",
    );
}

#[test]
fn upstream_tls_keys_need_tls() {
    for (key, value) in [
        ("sni", "\"b.internal\""),
        ("ca_file", "\"ca.pem\""),
        ("verify", "true"),
    ] {
        for tls in ["", "tls = false\n"] {
            assert_error(
                &with_upstream(&format!("{tls}{key} = {value}\n{ONE_SERVER}")),
                &format!("upstream.chat.{key}"),
                "only valid with tls = true",
            );
        }
    }
}

#[test]
fn upstream_sni_and_ca_file_are_checked() {
    let tls = |line: &str| with_upstream(&format!("tls = true\n{line}\n{ONE_SERVER}"));
    assert_error(&tls("sni = \"\""), "upstream.chat.sni", "verification off");
    assert_error(
        &tls("sni = \"bad name\""),
        "upstream.chat.sni",
        "neither a DNS name nor an IP address",
    );
    assert_error(
        &tls("ca_file = \"\""),
        "upstream.chat.ca_file",
        "must name a file",
    );
    assert!(Config::from_toml_str(&tls("sni = \"10.0.0.7\"")).is_ok());
}

fn with_check(lines: &str) -> String {
    with_upstream(&format!(
        "{ONE_SERVER}\n[upstream.chat.health_check]\n{lines}"
    ))
}

#[test]
fn health_check_host_must_be_a_header_value() {
    for bad in ["a\\u0001b", "a b", "", "caf\\u00e9"] {
        assert_error(
            &with_check(&format!("host = \"{bad}\"")),
            "upstream.chat.health_check.host",
            "",
        );
    }
    assert_error(
        &with_check("host = \"app\\u0000\""),
        "upstream.chat.health_check.host",
        "not a valid Host header value",
    );
    let ok = Config::from_toml_str(&with_check("host = \"app.internal:8080\"")).unwrap();
    assert_eq!(
        ok.upstreams["chat"].health_check.as_ref().unwrap().kind,
        CheckKind::Http {
            path: "/health".into(),
            host: Some("app.internal:8080".into())
        }
    );
}

#[test]
fn health_check_path_must_be_an_http_path() {
    assert_error(
        &with_check("path = \"health\""),
        "upstream.chat.health_check.path",
        "must start with '/'",
    );
    assert_error(
        &with_check("path = \"/he alth\""),
        "upstream.chat.health_check.path",
        "not a valid HTTP path",
    );
    assert_error(
        &with_check("path = \"/\\u007f\""),
        "upstream.chat.health_check.path",
        "not a valid HTTP path",
    );
    assert!(Config::from_toml_str(&with_check("path = \"/health?deep=1\"")).is_ok());
}

#[test]
fn health_check_numbers_are_bounded() {
    for (line, path, fragment) in [
        ("rise = 0", "rise", "between 1 and 100"),
        ("fall = 101", "fall", "between 1 and 100"),
        ("interval = \"0s\"", "interval", "greater than zero"),
        ("timeout = \"0s\"", "timeout", "greater than zero"),
        ("interval = \"31days\"", "interval", "maximum of 30 days"),
        ("timeout = \"1000000000h\"", "timeout", "maximum of 30 days"),
    ] {
        assert_error(
            &with_check(line),
            &format!("upstream.chat.health_check.{path}"),
            fragment,
        );
    }
    assert_error(
        &with_upstream(&format!(
            "{ONE_SERVER}\n[upstream.chat.passive]\nfail_timeout = \"0s\""
        )),
        "upstream.chat.passive.fail_timeout",
        "greater than zero",
    );
}

#[test]
fn tcp_checks_take_no_host() {
    assert_error(
        &with_check("kind = \"tcp\"\nhost = \"x\""),
        "upstream.chat.health_check.host",
        "only valid with kind = \"http\"",
    );
}
