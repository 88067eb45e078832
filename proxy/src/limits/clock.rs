//! The time limiters are given: nanoseconds since a fixed origin.
//!
//! Owns the one conversion from the process clock to the limiters' time.
//! The limiters never read a clock themselves — every check takes `now` as
//! an argument — so their tests drive time by hand and cannot flake, and a
//! request reads the clock once for all its checks (a monotonic clock read
//! costs tens of nanoseconds, more than a sketch lookup): convert the
//! instant the request path already took with [`at`].

use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds since an arbitrary fixed origin; only differences matter.
/// One origin must serve every check of a limiter.
pub type Nanos = u64;

/// The process-wide origin, so limiters rebuilt at a reload keep it.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// `instant` as limiter time. The origin is fixed by the first call of
/// [`at`] or [`now`]; instants before it count as the origin.
pub fn at(instant: Instant) -> Nanos {
    let since = instant.saturating_duration_since(origin());
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

/// The limiter time now (one clock read).
pub fn now() -> Nanos {
    at(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn instants_map_to_their_distance() {
        let first = now();
        let a = Instant::now();
        let b = a + Duration::from_millis(250);
        assert_eq!(at(b) - at(a), 250_000_000);
        assert!(at(a) >= first);
        assert!(now() >= at(a));
    }
}
