//! The shipped systemd units, checked offline as CI can (systemd is not
//! PID 1 there): `systemd-analyze verify` prints nothing for them — it
//! exits 0 even on unknown keys, so any output fails — with every
//! `/usr/local/bin` command pointed at the binaries built here;
//! `systemd-analyze security --offline=yes` rates the proxy's exposure 2.0
//! or lower and the backend's 1.5 or lower; the reload runs `--check`
//! before it signals; and with the units' environment both programs log
//! plain text for the journal. Each check has a control that makes it fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ringway_tests::backend::Backend;
use ringway_tests::configs::ProxyConfig;
use ringway_tests::{free_addr, printed, target_bin, wait_for_http_ok, Proxy};

const PROXY: &str = "ringway-proxy.service";
const BACKEND: &str = "ringway-backend@.service";
const BACKEND_INSTANCE: &str = "ringway-backend@9001.service";

/// A unit copied into a temporary directory with the install paths of both
/// binaries replaced by the built ones (they do not exist in CI), and
/// `edit` applied.
struct UnitCopy {
    dir: tempfile::TempDir,
    text: String,
}

impl UnitCopy {
    fn new(unit: &str, edit: impl Fn(String) -> String) -> UnitCopy {
        let dir = tempfile::tempdir().unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
        let text = std::fs::read_to_string(repo.join(unit)).unwrap();
        let text = edit(
            text.replace(
                "/usr/local/bin/ringway-proxy",
                target_bin("ringway-proxy").to_str().unwrap(),
            )
            .replace(
                "/usr/local/bin/ringway-backend",
                target_bin("ringway-backend").to_str().unwrap(),
            ),
        );
        std::fs::write(dir.path().join(unit), &text).unwrap();
        UnitCopy { dir, text }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The values of every `key=` line, in order.
    fn values(&self, key: &str) -> Vec<&str> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    }

    /// The `Environment=` variables that use no systemd specifier (`%i`).
    fn environment(&self) -> Vec<(&str, &str)> {
        self.values("Environment")
            .into_iter()
            .filter(|v| !v.contains('%'))
            .filter_map(|v| v.split_once('='))
            .collect()
    }
}

fn analyze(args: &[&str], unit: PathBuf) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze (package systemd) must be installed: scripts/test.sh installs it")
}

/// `systemd-analyze verify`: everything it printed (stdout and stderr).
fn verify(copy: &UnitCopy, name: &str) -> String {
    let out = analyze(&["verify"], copy.path(name));
    let text = printed(&out);
    assert!(out.status.success(), "{text}");
    text
}

/// The overall exposure `systemd-analyze security --offline=yes` gives.
fn exposure(copy: &UnitCopy, name: &str) -> f64 {
    let out = analyze(&["security", "--offline=yes"], copy.path(name));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| {
            let rest = l.split("Overall exposure level for ").nth(1)?;
            rest.rsplit_once(": ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"))
}

#[test]
fn the_proxy_unit_verifies_cleanly() {
    let out = verify(&UnitCopy::new(PROXY, |t| t), PROXY);
    assert!(out.is_empty(), "{out}");
}

#[test]
fn the_backend_template_verifies_cleanly_as_an_instance() {
    let out = verify(&UnitCopy::new(BACKEND, |t| t), BACKEND_INSTANCE);
    assert!(out.is_empty(), "{out}");
}

#[test]
fn a_typo_in_a_unit_is_reported() {
    let copy = UnitCopy::new(PROXY, |t| t.replace("KillSignal=", "KilSignal="));
    let out = verify(&copy, PROXY);
    assert!(out.contains("KilSignal"), "the check cannot fail: {out:?}");
}

#[test]
fn the_proxy_unit_is_rated_2_0_or_lower() {
    let rating = exposure(&UnitCopy::new(PROXY, |t| t), PROXY);
    assert!(rating <= 2.0, "exposure {rating}");
}

#[test]
fn the_backend_unit_is_rated_1_5_or_lower() {
    let rating = exposure(&UnitCopy::new(BACKEND, |t| t), BACKEND_INSTANCE);
    assert!(rating <= 1.5, "exposure {rating}");
}

#[test]
fn a_unit_without_its_sandbox_is_rated_worse() {
    let bare = UnitCopy::new(PROXY, |t| {
        t.lines()
            .filter(|l| {
                !["Protect", "Private", "Restrict", "SystemCall"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let rating = exposure(&bare, PROXY);
    assert!(rating > 2.0, "the rating check cannot fail: {rating}");
}

#[test]
fn the_proxy_reload_checks_the_file_before_it_signals() {
    let copy = UnitCopy::new(PROXY, |t| t);
    let reload = copy.values("ExecReload");
    assert_eq!(reload.len(), 2, "{reload:?}");
    assert_eq!(reload[0], copy.values("ExecStartPre")[0]);
    assert_eq!(reload[1], "/bin/kill -HUP $MAINPID");

    // The check command, run as written on a good and a broken file.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ringway.toml");
    let words: Vec<String> = reload[0]
        .split_whitespace()
        .map(|w| w.replace("/etc/ringway/ringway.toml", config.to_str().unwrap()))
        .collect();
    assert!(words.iter().any(|w| w == "--check"), "{words:?}");
    let run = |text: &str| {
        std::fs::write(&config, text).unwrap();
        Command::new(&words[0])
            .args(&words[1..])
            .output()
            .unwrap()
            .status
            .success()
    };
    let good = ProxyConfig::over([free_addr()])
        .toml()
        .replace("{LISTEN}", "127.0.0.1:8080")
        .replace("{ADMIN}", "127.0.0.1:9090");
    assert!(run(&good), "the check refuses a good file");
    assert!(
        !run(&good.replace("[[route]]", "[[rout]]")),
        "the check passes a broken file"
    );
}

#[tokio::test]
async fn both_programs_log_plain_text_under_their_unit_environment() {
    let proxy_unit = UnitCopy::new(PROXY, |t| t);
    let proxy = Proxy::spawn(
        &ProxyConfig::over([free_addr()]).toml(),
        &proxy_unit.environment(),
    );
    if let Err(e) = wait_for_http_ok(&proxy.admin_url("/health"), Duration::from_secs(20)).await {
        panic!("{e}\n{}", proxy.child.log());
    }
    let backend_unit = UnitCopy::new(BACKEND, |t| t);
    let backend = Backend::start("journal-1", &backend_unit.environment()).await;
    for (name, log) in [
        ("proxy", proxy.child.log()),
        ("backend", backend.child.log()),
    ] {
        assert!(log.contains("INFO"), "{name} logged nothing:\n{log}");
        assert!(
            !log.contains('\x1b'),
            "{name} writes colour codes into the journal:\n{log}"
        );
    }
}
