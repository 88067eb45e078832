//! Browser checks: a node script under `tests/browser/` drives the system
//! chromium (headless, through playwright-core) and talks JSON lines with
//! the test — reports and questions (`{"await": …}`, answered with one
//! line) on the way, the result last. [`run_node_script`] is the one-shot
//! form; [`NodeScript`] lets a test act in the middle (kill a node, say).
//! Screenshots go to [`artifacts_dir`] (`target/test-artifacts/`), kept
//! after the run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The folder of the browser scripts and their `package.json`.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// `target/test-artifacts/` of the workspace, created if missing.
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// A running browser script.
pub struct NodeScript {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    name: String,
}

impl NodeScript {
    /// Start `node tests/browser/<script> '<input JSON>'`. Panics with the
    /// command to run when chromium or playwright-core is missing
    /// (`scripts/test.sh` installs both).
    pub fn start(script: &str, input: &Value) -> NodeScript {
        let dir = browser_dir();
        assert!(
            dir.join("node_modules/playwright-core").exists(),
            "playwright-core is not installed: run \"npm ci\" in {} (scripts/test.sh does this)",
            dir.display()
        );
        assert!(
            Path::new("/usr/bin/chromium").exists(),
            "chromium is not installed: run \"apt-get install -y chromium\" (scripts/test.sh does this)"
        );
        let mut child = Command::new("node")
            .arg(dir.join(script))
            .arg(input.to_string())
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("node {script}: {e} (is nodejs installed?)"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        NodeScript {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            name: script.to_owned(),
        }
    }

    /// The next JSON line the script prints, within `within`.
    pub async fn next(&mut self, within: Duration) -> Result<Value, String> {
        let line = tokio::time::timeout(within, self.lines.next_line())
            .await
            .map_err(|_| format!("{}: nothing within {within:?}", self.name))?
            .map_err(|e| format!("{}: {e}", self.name))?
            .ok_or_else(|| format!("{}: ended without a result (see its stderr)", self.name))?;
        serde_json::from_str(&line).map_err(|e| format!("{}: {line}: {e}", self.name))
    }

    /// Answer the script's last question.
    pub async fn reply(&mut self, answer: &Value) -> Result<(), String> {
        let line = format!("{answer}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("{}: {e}", self.name))
    }

    /// The result (the last line), once the script exited 0.
    pub async fn finish(mut self, within: Duration) -> Result<Value, String> {
        let result = self.next(within).await?;
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .map_err(|_| format!("{}: did not exit", self.name))?
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("{}: exited with {status}", self.name));
        }
        Ok(result)
    }
}

/// Run a script that needs nothing from the test on the way; its result.
pub async fn run_node_script(
    script: &str,
    input: &Value,
    within: Duration,
) -> Result<Value, String> {
    NodeScript::start(script, input).finish(within).await
}
