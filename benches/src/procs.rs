//! The processes a benchmark runs: how much CPU each used in a window
//! (client, nodes and Redis share the machine's cores, so the split says
//! who the bottleneck was, and what everything else used whether the
//! window was disturbed), how much memory a process tree holds (VmRSS,
//! for the idle-connection cost of a proxy), and a safety net that kills
//! them if this process panics (release builds abort on panic, so the
//! harness' kill-on-drop would not run).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// VmRSS of `pid` in KiB (`/proc/<pid>/status`): the resident memory an
/// idle-connection benchmark charges to a proxy.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The parent pid of `pid`, from `/proc/<pid>/stat`.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `pid` and every process descended from it (nginx: the master and its
/// workers), parents first.
pub fn tree(pid: u32) -> Vec<u32> {
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, parent_of(p)?)))
        .collect();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// Sum of VmRSS over `pid` and its descendants, KiB (`None` if `pid` is
/// gone). Shared pages count once per process, as `ps` shows them.
pub fn tree_rss_kib(pid: u32) -> Option<u64> {
    let own = vm_rss_kib(pid)?;
    Some(
        own + tree(pid)
            .iter()
            .skip(1)
            .filter_map(|p| vm_rss_kib(*p))
            .sum::<u64>(),
    )
}

/// The kernel's softirq threads (`ksoftirqd/N`), named `softirq`. Loopback
/// packets are sometimes processed there instead of in the sending
/// process, so that work belongs to the benchmark, not to "others".
pub fn softirq_threads() -> Vec<Watched> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("ksoftirqd/"))
        })
        .map(|pid| Watched {
            name: "softirq".into(),
            pid,
        })
        .collect()
}

/// [`shares`] with the entries of one name added up (a proxy made of a
/// master and a worker, the softirq threads of every CPU), in first-seen
/// order, "others" last.
pub fn merged_shares(before: &CpuSnapshot, after: &CpuSnapshot) -> Vec<CpuShare> {
    let mut out: Vec<CpuShare> = Vec::new();
    for s in shares(before, after) {
        match out.iter_mut().find(|o| o.name == s.name) {
            Some(o) => {
                o.percent_of_core = ((o.percent_of_core + s.percent_of_core) * 10.0).round() / 10.0
            }
            None => out.push(s),
        }
    }
    out
}

/// Pin the calling process (every thread it makes afterwards) to `core`,
/// so a driver and its load share one core and the measured server has
/// the other to itself.
pub fn pin_self(core: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity get a pointer to it and its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            anyhow::bail!(
                "cannot pin to core {core}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}
