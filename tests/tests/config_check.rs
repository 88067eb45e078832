//! The config contract seen from the command line: `--check` / `-t` prints
//! every error with its TOML path and exits 1, or prints ok and exits 0;
//! and every file it names is read and checked.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ringway_tests::target_bin;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Run the proxy with `args` from a fresh directory that holds the dev
/// certificate at the example's relative paths (`certs/dev/…`).
fn run(args: &[&str], config_text: Option<&str>) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ringway.toml");
    if let Some(text) = config_text {
        std::fs::write(&path, text).unwrap();
    }
    let tls = ringway_tests::backend::TlsFiles::generate();
    let certs = dir.path().join("certs/dev");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&tls.cert, certs.join("cert.pem")).unwrap();
    std::fs::copy(&tls.key, certs.join("key.pem")).unwrap();
    let mut cmd = Command::new(target_bin("ringway-proxy"));
    cmd.current_dir(dir.path());
    for a in args {
        cmd.arg(a.replace("{CONFIG}", path.to_str().unwrap()));
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

#[test]
fn the_design_example_checks_ok() {
    // Certificates are read relative to the config's directory: the copy
    // sits next to a certs/dev/ made for it.
    let example = std::fs::read_to_string(repo_file("conf/ringway.toml")).unwrap();
    for flag in ["--check", "-t"] {
        let (out, text) = run(&["--config", "{CONFIG}", flag], Some(&example));
        assert!(out.status.success(), "{text}");
        assert!(text.contains("configuration ok"), "{text}");
    }
}

#[test]
fn check_reads_the_certificates_and_names_a_missing_one() {
    let example = std::fs::read_to_string(repo_file("conf/ringway.toml")).unwrap();
    let broken = example.replace("certs/dev/key.pem", "certs/dev/missing-key.pem");
    let (out, text) = run(&["--config", "{CONFIG}", "--check"], Some(&broken));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("listener[1].tls.key: cannot read"), "{text}");
}

#[test]
fn check_prints_every_error_with_its_path() {
    let bad = r#"
[[listener]]
listen = "0.0.0.0"

[[route]]
upstream = "missing"

[upstream.chat]
hash_key = ["cookie:sid", "ear:lobe"]
balance_factor = 0.5
connect_timeout = "2 parsecs"
servers = [
  { addr = "127.0.0.1:9001", weight = 0 },
  { addr = "127.0.0.1:9001" },
  { addr = "127.0.0.1:9002", wieght = 2 },
]

[upstream.empty]
servers = []
"#;
    let (out, text) = run(&["--config", "{CONFIG}", "--check"], Some(bad));
    assert_eq!(out.status.code(), Some(1), "{text}");
    for path in [
        "listener[0].listen",
        "route[0].upstream",
        "upstream.chat.servers[2]",
        "upstream.empty.servers",
    ] {
        assert!(text.contains(path), "missing an error at {path}:\n{text}");
    }
}

#[test]
fn semantic_errors_are_all_reported_together() {
    let bad = r#"
[[listener]]
listen = "127.0.0.1:8080"

[[route]]
upstream = "missing"

[upstream.chat]
hash_key = ["cookie:sid", "ear:lobe"]
balance_factor = 0.5
connect_timeout = "2 parsecs"
servers = [
  { addr = "127.0.0.1:9001", weight = 0 },
  { addr = "127.0.0.1:9001" },
  { addr = "localhost:9002" },
]
"#;
    let (out, text) = run(&["--config", "{CONFIG}", "-t"], Some(bad));
    assert_eq!(out.status.code(), Some(1), "{text}");
    for path in [
        "route[0].upstream",
        "upstream.chat.hash_key[1]",
        "upstream.chat.balance_factor",
        "upstream.chat.connect_timeout",
        "upstream.chat.servers[0].weight",
        "upstream.chat.servers[1]",
        "upstream.chat.servers[2].addr",
    ] {
        assert!(text.contains(path), "missing an error at {path}:\n{text}");
    }
}

#[tokio::test]
async fn a_missing_upgrade_socket_directory_is_refused_at_start() {
    let config = ringway_tests::configs::ProxyConfig {
        extra: String::new(),
        ..ringway_tests::configs::ProxyConfig::over([ringway_tests::free_addr()])
    }
    .toml()
    .replace(
        "[server]\n",
        "[server]\nupgrade_sock = \"/nonexistent-ringway-dir/upgrade.sock\"\n",
    );
    let mut proxy = ringway_tests::Proxy::spawn(&config, &[]);
    let exited = ringway_tests::backend::eventually(std::time::Duration::from_secs(10), || {
        let done = proxy.child.try_wait().is_some_and(|s| !s.success());
        async move { done }
    })
    .await;
    let log = proxy.child.log();
    assert!(exited, "the proxy started anyway:\n{log}");
    assert!(
        log.contains("server.upgrade_sock: the directory /nonexistent-ringway-dir does not exist"),
        "{log}"
    );
}
