//! What the process holds, from `/proc/self`: open file descriptors and
//! resident memory. Linux only; elsewhere the figures are absent (`None`)
//! rather than wrong.
//!
//! Reads `/proc`, nothing else; parsing is kept apart and unit-tested.

/// Open file descriptors of this process.
pub fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    // The listing's own directory handle is one of the entries.
    let n = entries.filter(|e| e.is_ok()).count() as u64;
    Some(n.saturating_sub(1))
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    // SAFETY: sysconf only reads a constant of the running system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    resident_pages(&statm).map(|p| p * u64::try_from(page).unwrap_or(4096))
}

/// The resident page count of a `/proc/PID/statm` line (its second field).
fn resident_pages(statm: &str) -> Option<u64> {
    statm.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_second_field_is_resident_pages() {
        assert_eq!(resident_pages("10543 2048 512 100 0 900 0\n"), Some(2048));
        assert_eq!(resident_pages("10543"), None);
        assert_eq!(resident_pages(""), None);
    }

    #[test]
    fn this_process_has_figures() {
        // Other tests open files concurrently, so only the held one is certain.
        let _held = std::fs::File::open("/proc/self/statm").unwrap();
        assert!(open_fds().expect("/proc/self/fd") >= 1);
        assert!(rss_bytes().expect("/proc/self/statm") > 0);
    }
}
