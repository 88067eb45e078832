//! Headless Chromium for end-to-end tests: Debian's `chromium` driven by
//! playwright-core (pinned in `tests/browser/package-lock.json`, no browser
//! download). A test names a scenario — `tests/browser/scenarios/NAME.mjs`,
//! an ES module whose default export gets `{ page, context, args }` and
//! returns a JSON-able result — and gets back that result together with
//! every URL the page requested, its console lines and its uncaught errors.
//! Screenshots go under `target/test-artifacts/`.
//!
//! The driver (`tests/browser/run.mjs`) is the same for every scenario, so
//! the dashboard test and the backend demo test share it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

/// What a scenario run returned.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario's own result.
    pub result: Value,
    /// Every URL the browser requested, in order.
    pub requests: Vec<String>,
    /// Console messages, as `type: text`.
    pub console: Vec<String>,
    /// Uncaught page errors.
    pub page_errors: Vec<String>,
}

/// `tests/browser/`.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// `target/test-artifacts/` of this build (created on demand): where tests
/// keep screenshots for a human to look at.
pub fn artifact_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// The Chromium binary: `$CHROMIUM`, else Debian's `/usr/bin/chromium`.
fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} not found: run \"apt-get install -y chromium\" (scripts/test.sh does this) or set CHROMIUM",
        path.display()
    );
    path
}

static INSTALL: Mutex<bool> = Mutex::new(false);

/// Install playwright-core from the lock file once, if it is not there.
fn ensure_installed() {
    let mut done = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return;
    }
    let dir = browser_dir();
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        let out = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("npm not found ({e}): run \"apt-get install -y nodejs npm\"")
            });
        assert!(
            out.status.success(),
            "npm ci in {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    *done = true;
}

/// Run scenario `name` with `args`; the browser is closed when it returns.
/// Fails (with the driver's output) when the scenario throws or takes
/// longer than `within`.
pub async fn run(name: &str, args: Value, within: Duration) -> Result<Outcome, String> {
    ensure_installed();
    let dir = browser_dir();
    let scenario = dir.join("scenarios").join(format!("{name}.mjs"));
    assert!(scenario.exists(), "no scenario {}", scenario.display());
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(dir.join("run.mjs"))
        .arg(&scenario)
        .arg(args.to_string())
        .env("CHROMIUM", chromium())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("cannot start node: {e}"))?;
    let out = tokio::time::timeout(within, child.wait_with_output())
        .await
        .map_err(|_| format!("scenario {name} did not finish within {within:?}"))?
        .map_err(|e| format!("scenario {name}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("scenario {name} printed no result:\n{stdout}\n{stderr}"))?;
    let strings = |k: &str| -> Vec<String> {
        doc[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let outcome = Outcome {
        result: doc["result"].clone(),
        requests: strings("requests"),
        console: strings("console"),
        page_errors: strings("page_errors"),
    };
    if doc["ok"] != Value::Bool(true) {
        return Err(format!(
            "scenario {name} failed: {}\nconsole: {:?}\npage errors: {:?}\n{stderr}",
            doc["error"].as_str().unwrap_or("?"),
            outcome.console,
            outcome.page_errors
        ));
    }
    Ok(outcome)
}
