//! The machine and software a run was made on: figures mean little without
//! them. Read once per run from `/proc`, `git` and the peers' own version
//! flags; it never changes anything.

use std::process::Command;

use serde::Serialize;

/// Where and with what a run was made.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `/proc/cpuinfo` model name.
    pub cpu_model: String,
    /// CPUs online.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Open-file limit of this process (inherited by every child).
    pub nofile: u64,
    /// `git rev-parse --short HEAD` of the workspace.
    pub git_commit: String,
    /// Which of the measured crates (`proxy`, `backend`) had uncommitted
    /// changes: the binary measured is what was built, not the commit.
    pub uncommitted: Vec<String>,
    /// (program, first line of its version output), for each program asked.
    pub versions: Vec<(String, String)>,
}

impl Machine {
    /// Read everything; `programs` are (name, command line printing its version).
    pub fn detect(programs: &[(&str, &[&str])]) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .arg("-C")
                .arg(workspace)
                .args(args)
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let mem_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu_model: read("/proc/cpuinfo")
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_default(),
            // SAFETY: sysconf has no preconditions.
            cpus: unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(0) as usize,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            nofile: crate::procs::ensure_fd_limit(0).unwrap_or(0),
            git_commit: git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default(),
            uncommitted: ["proxy", "backend"]
                .into_iter()
                .filter(|d| git(&["status", "--porcelain", "--", d]).is_some_and(|s| !s.is_empty()))
                .map(str::to_owned)
                .collect(),
            versions: programs
                .iter()
                .map(|(name, cmd)| (name.to_string(), version_line(cmd)))
                .collect(),
        }
    }

    /// One line: `2 × AMD EPYC …, 23.5 GiB, Linux 6.18.44; commit abc1234`.
    pub fn summary(&self) -> String {
        let dirty = if self.uncommitted.is_empty() {
            String::new()
        } else {
            format!(" + uncommitted changes in {}", self.uncommitted.join(", "))
        };
        format!(
            "{} × {}, {} GiB, Linux {}, RLIMIT_NOFILE {}; commit {}{dirty}",
            self.cpus, self.cpu_model, self.memory_gib, self.kernel, self.nofile, self.git_commit
        )
    }
}

/// The first line `cmd` prints on stdout or stderr (nginx prints on stderr).
fn version_line(cmd: &[&str]) -> String {
    let Some((program, args)) = cmd.split_first() else {
        return String::new();
    };
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|_| "not installed".to_owned())
}
