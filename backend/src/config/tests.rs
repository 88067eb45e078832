//! How command lines and environments settle into a config, kept beside
//! the module so the module itself stays short.

use super::*;

fn parse(args: &[&str]) -> Result<Config, String> {
    let mut all = vec!["ringway-backend"];
    all.extend_from_slice(args);
    let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
    Config::from_cli(&cli).map_err(|e| e.to_string())
}

#[test]
fn bare_port_means_loopback() {
    assert_eq!(
        parse_listen("9002").unwrap(),
        "127.0.0.1:9002".parse().unwrap()
    );
    assert_eq!(
        parse_listen("[::1]:81").unwrap(),
        "[::1]:81".parse().unwrap()
    );
    assert!(parse_listen("localhost").is_err());
    assert!(parse_listen("70000").is_err());
}

#[test]
fn seconds_take_fractions() {
    assert_eq!(parse_secs("0.5").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_secs("30").unwrap(), Duration::from_secs(30));
    assert!(parse_secs("-1").is_err());
    assert!(parse_secs("soon").is_err());
}

#[test]
fn defaults_and_blank_worker_id() {
    let cfg = parse(&["--listen", "9003", "--worker-id", " "]).unwrap();
    assert_eq!(cfg.listen, "127.0.0.1:9003".parse().unwrap());
    assert!(cfg.worker_id.ends_with(&format!("-{}", std::process::id())));
    assert!(cfg.redis.is_none());
    assert_eq!(cfg.history.max_recover, cfg.history.size);
    assert!(cfg.allowed_origins.is_none());
}

#[test]
fn host_binds_a_bare_port_only() {
    let cfg = parse(&["--listen", "9004", "--host", "0.0.0.0"]).unwrap();
    assert_eq!(cfg.listen, "0.0.0.0:9004".parse().unwrap());
    let cfg = parse(&["--listen", "[::1]:9005", "--host", "0.0.0.0"]).unwrap();
    assert_eq!(cfg.listen, "[::1]:9005".parse().unwrap());
    let cfg = parse(&[]).unwrap();
    assert_eq!(cfg.listen, "127.0.0.1:9001".parse().unwrap());
}

#[test]
fn secrets_must_be_long_enough() {
    let e = parse(&["--jwt-secret", "short"]).unwrap_err();
    assert!(e.contains("JWT_SECRET") && e.contains("32"), "{e}");
    let ok = parse(&["--jwt-secret", &"k".repeat(32)]).unwrap();
    assert_eq!(ok.auth.secret.as_deref().map(str::len), Some(32));
    let e = parse(&["--api-key", "abc"]).unwrap_err();
    assert!(e.contains("API_KEY"), "{e}");
}

#[test]
fn trusted_proxies_and_rates() {
    let cfg = parse(&["--trusted-proxies", "10.0.0.0/8, 192.168.1.7,::1"]).unwrap();
    assert_eq!(cfg.admission.trusted_proxies.len(), 3);
    assert!(parse(&["--trusted-proxies", "nope"]).is_err());
    let cfg = parse(&["--rate-limit", "7", "--rate-burst", "9"]).unwrap();
    assert_eq!(
        cfg.admission.publish_rate,
        (7.0, 9),
        "defaults follow WS_RATE_*"
    );
    assert!(parse(&["--user-direct-rate", "0"]).is_err());
}

#[test]
fn durability_is_declared_explicitly() {
    let cfg = parse(&["--redis-url", "redis://127.0.0.1:1"]).unwrap();
    assert!(!cfg.redis.unwrap().durable, "not durable unless declared");
    let cfg = parse(&["--redis-url", "redis://127.0.0.1:1", "--redis-durable", "1"]).unwrap();
    assert!(cfg.redis.unwrap().durable);
    let e = parse(&["--redis-durable", "maybe"]).unwrap_err();
    assert!(
        e.contains("REDIS_DURABLE") || e.contains("redis-durable"),
        "{e}"
    );
}

#[test]
fn origins_list_and_wildcard() {
    let cfg = parse(&["--allowed-origins", "https://a.example/, https://b.example"]).unwrap();
    assert_eq!(
        cfg.allowed_origins.unwrap(),
        vec!["https://a.example", "https://b.example"]
    );
    let cfg = parse(&["--allowed-origins", "https://a.example,*"]).unwrap();
    assert!(cfg.allowed_origins.is_none());
}

#[test]
fn out_of_range_values_are_refused_by_name() {
    let e = parse(&["--heartbeat-interval", "0"]).unwrap_err();
    assert!(e.contains("WS_HEARTBEAT_INTERVAL"), "{e}");
    let e = parse(&["--session-ttl", "5", "--heartbeat-interval", "2"]).unwrap_err();
    assert!(e.contains("WEBSOCKET_SESSION_TTL"), "{e}");
    let e = parse(&["--worker-id", "a b"]).unwrap_err();
    assert!(e.contains("WORKER_ID"), "{e}");
    let e = parse(&["--outbound-queue", "2"]).unwrap_err();
    assert!(e.contains("WS_OUTBOUND_QUEUE"), "{e}");
}
