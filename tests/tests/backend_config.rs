//! The backend's settings as operators write them: every variable in
//! `conf/backend.env` is one the binary reads, and a bad value stops it at
//! start with a message naming the variable.

use std::path::Path;
use std::process::Command;

use ringway_tests::target_bin;

fn help() -> String {
    let out = Command::new(target_bin("ringway-backend"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_variable_of_the_example_env_file_is_read() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/backend.env");
    let text = std::fs::read_to_string(path).unwrap();
    let help = help();
    let names: Vec<&str> = text
        .lines()
        .map(|l| l.trim_start_matches('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(name, _)| name)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        .collect();
    assert!(names.len() >= 15, "parsed too few names: {names:?}");
    for name in names {
        assert!(
            help.contains(&format!("env: {name}")),
            "{name} is not read by ringway-backend"
        );
    }
}

#[test]
fn bad_values_stop_the_node_naming_the_variable() {
    let cases = [
        ("WS_HEARTBEAT_INTERVAL", "0", "WS_HEARTBEAT_INTERVAL"),
        ("WS_HEARTBEAT_INTERVAL", "soon", "soon"),
        ("PORT", "localhost", "localhost"),
        ("REDIS_URL", "http://redis:6379", "REDIS_URL"),
        ("WORKER_ID", "two words", "WORKER_ID"),
        ("WS_OUTBOUND_QUEUE", "1", "WS_OUTBOUND_QUEUE"),
    ];
    for (name, value, expect) in cases {
        let out = Command::new(target_bin("ringway-backend"))
            .env_clear()
            .env("PORT", "127.0.0.1:0")
            .env(name, value)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}={value} was accepted");
        assert!(text.contains(expect), "{name}={value}: {text}");
    }
}
