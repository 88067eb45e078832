//! `[server]`, `[log]` and `[admin]`, and the bounds every duration shares.

use super::*;

#[test]
fn server_settings_parse() {
    let c = Config::from_toml_str(&with_tables(
        "[server]\nthreads = 4\ngrace_period = \"0s\"\ngraceful_shutdown_timeout = \"1s\"\nupgrade_sock = \"/run/ringway/up.sock\"\nmax_connections = 1000000",
    ))
    .unwrap();
    assert_eq!(c.server.threads, 4);
    assert_eq!(c.server.grace_period, Duration::ZERO);
    assert_eq!(c.server.graceful_shutdown_timeout, Duration::from_secs(1));
    assert_eq!(
        c.server.upgrade_sock,
        Some(std::path::PathBuf::from("/run/ringway/up.sock"))
    );
    assert_eq!(c.server.max_connections, Some(1_000_000));
}

#[test]
fn threads_are_bounded() {
    for bad in ["0", "-1", "1025"] {
        assert_error(
            &with_tables(&format!("[server]\nthreads = {bad}")),
            "server.threads",
            "must be between 1 and 1024",
        );
    }
}

#[test]
fn max_connections_is_bounded() {
    for bad in ["0", "1000001"] {
        assert_error(
            &with_tables(&format!("[server]\nmax_connections = {bad}")),
            "server.max_connections",
            "must be between 1 and 1000000",
        );
    }
}

#[test]
fn upgrade_sock_must_be_a_usable_absolute_socket_path() {
    assert_error(
        &with_tables("[server]\nupgrade_sock = \"run/up.sock\""),
        "server.upgrade_sock",
        "must be an absolute path",
    );
    let long = format!("/{}", "s".repeat(107));
    assert_error(
        &with_tables(&format!("[server]\nupgrade_sock = \"{long}\"")),
        "server.upgrade_sock",
        "longer than a Unix socket path",
    );
    assert_error(
        &with_tables("[server]\nupgrade_sock = \"/run/a\\u0000b\""),
        "server.upgrade_sock",
        "control characters",
    );
}

/// Every duration is capped at 30 days so `Instant::now() + d` cannot
/// overflow; one key of each section shows the shared rule.
#[test]
fn durations_longer_than_30_days_are_rejected() {
    let cases = [
        (
            "[server]\ngrace_period = \"1000000000h\"",
            "server.grace_period",
        ),
        (
            "[server]\ngraceful_shutdown_timeout = \"31days\"",
            "server.graceful_shutdown_timeout",
        ),
        (
            "[limits]\nheader_timeout = \"721h\"",
            "limits.header_timeout",
        ),
    ];
    for (table, path) in cases {
        assert_error(
            &with_tables(table),
            path,
            "longer than the maximum of 30 days",
        );
    }
    let ok = Config::from_toml_str(&with_tables("[server]\ngrace_period = \"30days\"")).unwrap();
    assert_eq!(ok.server.grace_period, Duration::from_secs(30 * 86400));
}

#[test]
fn durations_too_large_to_parse_are_rejected() {
    assert_error(
        &with_tables("[server]\ngrace_period = \"99999999999999999999999h\""),
        "server.grace_period",
        "invalid duration",
    );
}

#[test]
fn log_settings_parse() {
    let c = Config::from_toml_str(&with_tables(
        "[log]\naccess = \"/var/log/ringway/access.log\"\nformat = \"logfmt\"\nquery = true\nbuffer = 1",
    ))
    .unwrap();
    assert_eq!(
        c.log,
        LogSettings {
            access: AccessLog::File("/var/log/ringway/access.log".into()),
            format: LogFormat::Logfmt,
            query: true,
            buffer_lines: 1,
        }
    );
    let off = Config::from_toml_str(&with_tables("[log]\naccess = \"off\"")).unwrap();
    assert_eq!(off.log.access, AccessLog::Off);
    let relative = Config::from_toml_str(&with_tables("[log]\naccess = \"access.log\"")).unwrap();
    assert_eq!(relative.log.access, AccessLog::File("access.log".into()));
}

#[test]
fn bad_log_settings_are_rejected() {
    assert_error(
        &with_tables("[log]\nformat = \"xml\""),
        "log.format",
        "unknown variant `xml`",
    );
    assert_error(
        &with_tables("[log]\naccess = \"\""),
        "log.access",
        "is not \"stdout\", \"off\" or a file path",
    );
    assert_error(
        &with_tables("[log]\naccess = \"a\\nb\""),
        "log.access",
        "is not \"stdout\", \"off\" or a file path",
    );
    for bad in ["0", "1000001"] {
        assert_error(
            &with_tables(&format!("[log]\nbuffer = {bad}")),
            "log.buffer",
            "must be between 1 and 1000000",
        );
    }
    assert_error(
        &with_tables("[log]\nlevel = \"info\""),
        "log.level",
        "unknown key",
    );
}

#[test]
fn admin_settings_parse() {
    let c = Config::from_toml_str(&with_tables(
        "[admin]\nlisten = \"0.0.0.0:9090\"\ntoken = \"0123456789abcdef\"",
    ))
    .unwrap();
    let admin = c.admin.unwrap();
    assert_eq!(admin.listen, "0.0.0.0:9090".parse().unwrap());
    assert_eq!(admin.token.as_deref(), Some("0123456789abcdef"));
    for loopback in [
        "127.0.0.1:9090",
        "127.0.0.9:9090",
        "[::1]:9090",
        "[::ffff:127.0.0.1]:9090",
    ] {
        let text = with_tables(&format!("[admin]\nlisten = \"{loopback}\""));
        assert!(Config::from_toml_str(&text).is_ok(), "{loopback}");
    }
}

#[test]
fn a_public_admin_listener_needs_a_token() {
    for public in ["0.0.0.0:9090", "[::]:9090", "10.0.0.1:9090"] {
        assert_error(
            &with_tables(&format!("[admin]\nlisten = \"{public}\"")),
            "admin.token",
            "required when admin.listen is not a loopback address",
        );
    }
}

#[test]
fn weak_admin_tokens_are_rejected() {
    assert_error(
        &with_tables("[admin]\nlisten = \"127.0.0.1:9090\"\ntoken = \"secret\""),
        "admin.token",
        "at least 16 characters",
    );
    assert_error(
        &with_tables(
            "[admin]\nlisten = \"127.0.0.1:9090\"\ntoken = \"correct horse battery staple\"",
        ),
        "admin.token",
        "printable ASCII without spaces",
    );
}
