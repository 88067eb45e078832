//! Process-wide state: what outlives any one runtime snapshot — the
//! swappable runtime itself, connection admission, listener counters, the
//! access log writer, the shutdown signal, the record of the last reload.
//!
//! One `Arc<Process>` is shared by the accept loops, every connection task,
//! the admin listener, the health checker and the reloader.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::watch;

use crate::access_log::{AccessLog, Record};
use crate::admission::Admission;
use crate::runtime::SharedRuntime;
use crate::stats::ListenerStats;

/// Counters that are not per server.
#[derive(Debug, Default)]
pub struct ProcessStats {
    listeners: Vec<Arc<ListenerStats>>,
    /// Tunnels ended by a drain, a removal or maintenance.
    pub tunnels_drained: AtomicU64,
}

impl ProcessStats {
    /// Counters for `n` listeners.
    pub fn new(n: usize) -> Self {
        Self {
            listeners: (0..n).map(|_| Arc::default()).collect(),
            tunnels_drained: AtomicU64::new(0),
        }
    }

    /// The counters of listener `i`.
    pub fn listener(&self, i: usize) -> &Arc<ListenerStats> {
        &self.listeners[i.min(self.listeners.len().saturating_sub(1))]
    }

    /// Every listener's counters, in config order.
    pub fn listeners(&self) -> &[Arc<ListenerStats>] {
        &self.listeners
    }
}

/// The outcome of the last reload, as `/stats.json` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadRecord {
    /// Which reload this was (1 for the first since start).
    pub seq: u64,
    /// When it happened (seconds since the Unix epoch).
    pub time: u64,
    /// `"ok"` or `"failed"`.
    pub result: &'static str,
    /// Every error, each with its TOML path.
    pub errors: Vec<String>,
    /// What changed (servers added/removed/changed, routes …).
    pub changes: Vec<String>,
    /// Signal to swap, in milliseconds.
    pub duration_ms: f64,
}

/// Reload counters and the last outcome.
#[derive(Debug, Default)]
pub struct Reloads {
    /// Successful reloads.
    pub ok: AtomicU64,
    /// Failed reloads.
    pub failed: AtomicU64,
    /// The last one, if any.
    pub last: Mutex<Option<ReloadRecord>>,
}

/// Everything shared across the process.
pub struct Process {
    /// The running configuration, swapped whole by a reload.
    pub runtime: SharedRuntime,
    /// Connection caps and rate limits.
    pub admission: Admission,
    /// Counters that are not per server.
    pub stats: ProcessStats,
    /// The access log writer.
    pub access_log: AccessLog,
    /// Reload history.
    pub reloads: Reloads,
    /// When the process started.
    pub started: Instant,
    /// Wall-clock start, for `/stats.json`.
    pub started_at: SystemTime,
    shutdown: watch::Sender<bool>,
}

impl Process {
    /// Process state over `runtime`, with `listeners` listeners.
    pub fn new(
        runtime: SharedRuntime,
        admission: Admission,
        listeners: usize,
        access_log: AccessLog,
    ) -> Self {
        Self {
            runtime,
            admission,
            stats: ProcessStats::new(listeners),
            access_log,
            reloads: Reloads::default(),
            started: Instant::now(),
            started_at: SystemTime::now(),
            shutdown: watch::Sender::new(false),
        }
    }

    /// A receiver that flips to `true` when shutdown begins.
    pub fn shutdown_watch(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Begin shutting down: stop accepting, let requests finish, end tunnels.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Write an access log record (when the log is on).
    pub fn log(&self, record: Option<Record>) {
        if let Some(r) = record {
            self.access_log.write(r);
        }
    }

    /// Count a reload outcome.
    pub fn record_reload(&self, mut record: ReloadRecord) {
        record.seq = self.reloads.ok.load(Relaxed) + self.reloads.failed.load(Relaxed) + 1;
        let counter = if record.result == "ok" {
            &self.reloads.ok
        } else {
            &self.reloads.failed
        };
        counter.fetch_add(1, Relaxed);
        *self.reloads.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(record);
    }
}
