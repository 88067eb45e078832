//! The time limiters are given: nanoseconds since a fixed origin.
//!
//! Owns the one clock read the request path makes for its limits. The
//! limiters never call it themselves — every check takes `now` as an
//! argument — so their tests drive time by hand and cannot flake.

use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds since an arbitrary fixed origin; only differences matter.
/// One origin must serve every check of a limiter.
pub type Nanos = u64;

/// Monotonic nanoseconds since this process first asked (one origin for
/// the whole process, so limiters rebuilt at a reload keep the same one).
pub fn now() -> Nanos {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_moves_forward() {
        let a = super::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(super::now() >= a + 2_000_000);
    }
}
