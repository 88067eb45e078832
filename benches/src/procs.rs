//! The processes a benchmark runs: how much CPU each used in a window
//! (client, nodes and Redis share the machine's cores, so the split says
//! who the bottleneck was, and what everything else used whether the
//! window was disturbed), and a safety net that kills them if this
//! process panics (release builds abort on panic, so the harness' kill-on-drop
//! would not run).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

static CHILDREN: Mutex<BTreeMap<u32, String>> = Mutex::new(BTreeMap::new());

/// Keeps a child's pid on the kill-on-panic list while it lives; dropped
/// together with the harness handle that reaps the child.
pub struct PidGuard(u32);

impl PidGuard {
    /// Put `pid` (named `name`) on the list.
    pub fn new(pid: u32, name: &str) -> PidGuard {
        lock().insert(pid, name.to_owned());
        PidGuard(pid)
    }
}

impl Drop for PidGuard {
    fn drop(&mut self) {
        lock().remove(&self.0);
    }
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<u32, String>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Install a panic hook that SIGKILLs every listed child after the usual
/// panic message.
pub fn kill_children_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        kill_all_listed();
    }));
}

/// SIGKILL every listed child (the panic and signal paths).
pub fn kill_all_listed() {
    for pid in lock().keys() {
        // SAFETY: kill(2) on a child this process started and has not reaped.
        unsafe {
            libc::kill(*pid as i32, libc::SIGKILL);
        }
    }
}

/// A process whose CPU time is measured.
#[derive(Debug, Clone)]
pub struct Watched {
    /// What it is ("client", "node A", "redis").
    pub name: String,
    /// Its pid.
    pub pid: u32,
}

/// CPU times of the watched processes, and of every other process, at
/// one instant.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    ticks: Vec<(Watched, Option<u64>)>,
    /// Every other process: pid → ticks.
    others: HashMap<u32, u64>,
}

/// One process' share of a window.
#[derive(Debug, Clone, Serialize)]
pub struct CpuShare {
    /// What it is.
    pub name: String,
    /// CPU used, in percent of one core (the machine has
    /// `available_parallelism` × 100 %).
    pub percent_of_core: f64,
}

/// Read the CPU times (user + system) of `procs`, and of all other
/// processes, now.
pub fn snapshot(procs: &[Watched]) -> CpuSnapshot {
    let ours: Vec<u32> = procs.iter().map(|p| p.pid).collect();
    let others = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !ours.contains(pid))
        .filter_map(|pid| Some((pid, cpu_ticks(pid)?)))
        .collect();
    CpuSnapshot {
        at: Instant::now(),
        ticks: procs
            .iter()
            .map(|p| (p.clone(), cpu_ticks(p.pid)))
            .collect(),
        others,
    }
}

/// Each watched process' CPU use between two snapshots, then "others":
/// every other process (kernel threads included) that ran meanwhile, so
/// that a build or a test run next to the benchmark shows. (Processes that
/// ended inside the window are not seen.)
pub fn shares(before: &CpuSnapshot, after: &CpuSnapshot) -> Vec<CpuShare> {
    let wall = after
        .at
        .duration_since(before.at)
        .max(Duration::from_millis(1));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let percent = |ticks: u64| (ticks as f64 / hz / wall.as_secs_f64() * 1000.0).round() / 10.0;
    let mut out: Vec<CpuShare> = before
        .ticks
        .iter()
        .zip(&after.ticks)
        .filter_map(|((p, t0), (_, t1))| {
            Some(CpuShare {
                name: p.name.clone(),
                percent_of_core: percent(t1.as_ref()?.checked_sub(*t0.as_ref()?)?),
            })
        })
        .collect();
    let others: u64 = after
        .others
        .iter()
        .map(|(pid, t1)| t1.saturating_sub(before.others.get(pid).copied().unwrap_or(0)))
        .sum();
    out.push(CpuShare {
        name: "others".into(),
        percent_of_core: percent(others),
    });
    out
}

/// utime + stime of `pid` in clock ticks, from `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// This process, as a [`Watched`].
pub fn this_process() -> Watched {
    Watched {
        name: "bench client".into(),
        pid: std::process::id(),
    }
}

/// Make sure `needed` file descriptors fit: raise the soft limit up to the
/// hard one if it is lower (children inherit it). Errors when even the
/// hard limit is too low.
pub fn ensure_fd_limit(needed: u64) -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            anyhow::bail!("getrlimit(RLIMIT_NOFILE) failed");
        }
        if lim.rlim_cur < needed && lim.rlim_max > lim.rlim_cur {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let have = lim.rlim_cur;
    anyhow::ensure!(
        have >= needed,
        "the open-file limit is {have}, below the {needed} this run needs: lower --fanout-clients or raise `ulimit -n`"
    );
    Ok(have)
}
