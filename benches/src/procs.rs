//! What `/proc` says about the processes a benchmark runs, and the few
//! system calls that place them: CPU time per process over a window (so
//! the split says who was the bottleneck and whether anything else ran),
//! resident memory of a process tree, pinning to a core, the open-file
//! limit, and a safety net that kills every child if this process panics
//! (release builds abort on panic, so the harness' kill-on-drop would not
//! run). It starts nothing and decides nothing.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

static CHILDREN: Mutex<BTreeMap<u32, String>> = Mutex::new(BTreeMap::new());

fn children() -> std::sync::MutexGuard<'static, BTreeMap<u32, String>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps a child's pid on the kill-on-panic list while it lives, so that
/// an aborting benchmark leaves no proxy holding ports.
pub struct PidGuard(u32);

impl PidGuard {
    /// Put `pid` (named `name`) on the list.
    pub fn new(pid: u32, name: &str) -> PidGuard {
        children().insert(pid, name.to_owned());
        PidGuard(pid)
    }
}

impl Drop for PidGuard {
    fn drop(&mut self) {
        children().remove(&self.0);
    }
}

/// Install a panic hook that SIGKILLs every listed child and its
/// descendants (nginx' and HAProxy's workers outlive their master) after
/// the usual panic message.
pub fn kill_children_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        for pid in children().keys().flat_map(|p| tree(*p)) {
            // SAFETY: kill(2) on a child this process started and has not
            // reaped, or on one of its descendants read just now.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }));
}

/// A command that runs `program` pinned to `core` with `taskset`.
pub fn pinned(core: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(core.to_string()).arg(program);
    cmd
}

/// Pin the calling process (and every thread it makes afterwards) to
/// `core`, so a driver and its load share one core and the measured
/// server has the other to itself.
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

/// The open-file limit (soft), raised to the hard limit first when it is
/// below `needed` (children inherit it). Errors when even that is too low.
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
    anyhow::ensure!(
        lim.rlim_cur >= needed,
        "the open-file limit is {}, below the {needed} this run needs: use fewer connections",
        lim.rlim_cur
    );
    Ok(lim.rlim_cur)
}

fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// Fields of `/proc/<pid>/stat` after the command name (which may hold
/// spaces): index 0 is the state, 1 the parent, 11 utime, 12 stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// `pid` and every process descended from it (nginx: the master and its
/// workers), parents first.
pub fn tree(pid: u32) -> Vec<u32> {
    let all: Vec<(u32, u32)> = pids()
        .filter_map(|p| Some((p, stat_fields(p)?.get(1)?.parse().ok()?)))
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

/// VmRSS of `pid`, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// VmRSS of `pid` and its descendants added up, KiB (`None` if `pid` is
/// gone): the memory an idle-connection benchmark charges to a proxy.
pub fn tree_rss_kib(pid: u32) -> Option<u64> {
    let own = rss_kib(pid)?;
    Some(
        own + tree(pid)
            .iter()
            .skip(1)
            .filter_map(|p| rss_kib(*p))
            .sum::<u64>(),
    )
}

/// A process whose CPU time is measured, under the name it is reported as.
#[derive(Debug, Clone)]
pub struct Watched {
    /// What it is ("proxy", "load", "backend"); equal names add up.
    pub name: String,
    /// Its pid.
    pub pid: u32,
}

impl Watched {
    /// `pid` as `name`.
    pub fn new(name: &str, pid: u32) -> Watched {
        Watched {
            name: name.to_owned(),
            pid,
        }
    }
}

/// This process, as the load generator, plus the kernel's softirq threads
/// (`ksoftirqd/N`): loopback packets are sometimes processed there instead
/// of in the sending process, so that work belongs to the benchmark, not
/// to "others".
pub fn load_and_softirq() -> Vec<Watched> {
    let mut out = vec![Watched::new("load", std::process::id())];
    out.extend(
        pids()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.starts_with("ksoftirqd/"))
            })
            .map(|pid| Watched::new("softirq", pid)),
    );
    out
}

/// CPU times of the watched processes, and of every other process, at one
/// instant.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    ticks: Vec<(String, u32, Option<u64>)>,
    others: HashMap<u32, u64>,
}

/// One name's share of a window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CpuShare {
    /// What it is.
    pub name: String,
    /// CPU used, in percent of one core.
    pub percent_of_core: f64,
}

/// Read the CPU times of `watched`, and of all other processes, now.
pub fn snapshot(watched: &[Watched]) -> CpuSnapshot {
    let ours: Vec<u32> = watched.iter().map(|w| w.pid).collect();
    CpuSnapshot {
        at: Instant::now(),
        ticks: watched
            .iter()
            .map(|w| (w.name.clone(), w.pid, cpu_ticks(w.pid)))
            .collect(),
        others: pids()
            .filter(|p| !ours.contains(p))
            .filter_map(|p| Some((p, cpu_ticks(p)?)))
            .collect(),
    }
}

/// Each name's CPU use between two snapshots (equal names added up, in
/// first-seen order), then "others": every other process, kernel threads
/// included, so that a build next to the benchmark shows.
pub fn shares(before: &CpuSnapshot, after: &CpuSnapshot) -> Vec<CpuShare> {
    let wall = after
        .at
        .duration_since(before.at)
        .max(Duration::from_millis(1));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let percent = |ticks: u64| (ticks as f64 / hz / wall.as_secs_f64() * 1000.0).round() / 10.0;
    let mut out: Vec<CpuShare> = Vec::new();
    for ((name, _, t0), (_, _, t1)) in before.ticks.iter().zip(&after.ticks) {
        let Some(used) = t1.zip(*t0).and_then(|(b, a)| b.checked_sub(a)) else {
            continue;
        };
        match out.iter_mut().find(|s| &s.name == name) {
            Some(s) => {
                s.percent_of_core = ((s.percent_of_core + percent(used)) * 10.0).round() / 10.0
            }
            None => out.push(CpuShare {
                name: name.clone(),
                percent_of_core: percent(used),
            }),
        }
    }
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

/// The share named `name`, % of a core (0 if absent).
pub fn share(cpu: &[CpuShare], name: &str) -> f64 {
    cpu.iter()
        .filter(|c| c.name == name)
        .map(|c| c.percent_of_core)
        .sum()
}

/// [`snapshot`] off the async threads (reading `/proc` takes milliseconds).
pub async fn snapshot_async(watched: Vec<Watched>) -> CpuSnapshot {
    tokio::task::spawn_blocking(move || snapshot(&watched))
        .await
        .expect("snapshot task")
}

/// The CPU split of `watched` between the instants `from` and `to`, as a
/// task to start before the window opens.
pub fn meter(
    watched: Vec<Watched>,
    from: Instant,
    to: Instant,
) -> tokio::task::JoinHandle<Vec<CpuShare>> {
    tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let before = snapshot_async(watched.clone()).await;
        tokio::time::sleep_until(to.into()).await;
        let after = snapshot_async(watched).await;
        shares(&before, &after)
    })
}

/// CPU shares as `proxy 97, load 40, others 1`.
pub fn render(cpu: &[CpuShare]) -> String {
    cpu.iter()
        .map(|c| format!("{} {:.0}", c.name, c.percent_of_core))
        .collect::<Vec<_>>()
        .join(", ")
}
