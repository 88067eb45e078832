//! The outer frame every benchmark driver shares: its own Tokio runtime,
//! an overall time limit, Ctrl-C and SIGTERM (each ends the run, and
//! dropping the run's process handles kills its children), then the
//! report on stdout and, if asked, as JSON.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::Serialize;

/// Run `work` within `max_secs` on a runtime of `threads` workers (`None`:
/// one per CPU), then print `render(report)` and write the JSON to `json`.
pub fn drive<R, F>(
    threads: Option<usize>,
    max_secs: u64,
    json: Option<&Path>,
    work: F,
    render: fn(&R) -> String,
) -> ExitCode
where
    R: Serialize,
    F: Future<Output = anyhow::Result<R>>,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n);
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
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", render(&report));
    if let Some(path) = json {
        let written = serde_json::to_string_pretty(&report)
            .context("serialize")
            .and_then(|j| std::fs::write(path, j + "\n").context("write"));
        if let Err(e) = written {
            eprintln!("error: --json {}: {e:#}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
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
