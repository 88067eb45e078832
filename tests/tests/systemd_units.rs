//! The shipped systemd units parse cleanly: `systemd-analyze verify`
//! prints nothing for them (it exits 0 even on unknown keys, so its
//! output is what counts), with `ExecStart` pointed at the binaries built
//! here. A unit with a typo is caught, so the check itself can fail.

use std::path::Path;
use std::process::Command;

use ringway_tests::target_bin;

/// Copy `unit` into `dir` with the install paths of both binaries replaced
/// by the built ones; verify `as_name` (an instance, for a template).
fn verify(unit: &str, as_name: &str, edit: impl Fn(String) -> String) -> String {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    let text = std::fs::read_to_string(repo.join(unit)).unwrap();
    let text = text
        .replace(
            "/usr/local/bin/ringway-proxy",
            target_bin("ringway-proxy").to_str().unwrap(),
        )
        .replace(
            "/usr/local/bin/ringway-backend",
            target_bin("ringway-backend").to_str().unwrap(),
        );
    std::fs::write(dir.path().join(unit), edit(text)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join(as_name))
        .output()
        .expect("systemd-analyze (package systemd) must be installed: scripts/test.sh installs it");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_proxy_unit_verifies_cleanly() {
    let out = verify("ringway-proxy.service", "ringway-proxy.service", |t| t);
    assert!(out.is_empty(), "{out}");
}

#[test]
fn the_backend_template_verifies_cleanly_as_an_instance() {
    let out = verify(
        "ringway-backend@.service",
        "ringway-backend@9001.service",
        |t| t,
    );
    assert!(out.is_empty(), "{out}");
}

#[test]
fn a_typo_in_a_unit_is_reported() {
    let out = verify("ringway-proxy.service", "ringway-proxy.service", |t| {
        t.replace("KillSignal=", "KilSignal=")
    });
    assert!(out.contains("KilSignal"), "the check cannot fail: {out:?}");
}
