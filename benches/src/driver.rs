//! The outer frame every benchmark program shares: its own Tokio runtime,
//! an overall time limit, Ctrl-C and SIGTERM (each ends the run, and
//! dropping the run's process handles kills its children), then the
//! program's output. It knows nothing of what is measured.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;

/// Run `work` within `max_secs` on a runtime of `threads` workers (`None`:
/// one per CPU this process may use), then hand its result to `emit`.
pub fn drive<R>(
    threads: Option<usize>,
    max_secs: u64,
    work: impl Future<Output = anyhow::Result<R>>,
    emit: impl FnOnce(R) -> anyhow::Result<()>,
) -> ExitCode {
    crate::procs::kill_children_on_panic();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n.max(1));
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(async {
        tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(max_secs), work) => {
                r.unwrap_or_else(|_| Err(anyhow!("gave up after --max-secs {max_secs}")))
            }
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            _ = terminated() => Err(anyhow!("terminated")),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    match outcome.and_then(emit) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Write `value` as pretty JSON to `path`.
pub fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").map_err(|e| anyhow!("write {}: {e}", path.display()))
}

async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
