//! One monotonic time base for the whole process.
//!
//! A publisher puts its send time into the message's `data` and the
//! receiver subtracts it from its receive time. Both run in this process
//! (on different threads), so they read the same `CLOCK_MONOTONIC` through
//! [`now_ns`]: no wall clock, no skew.

use std::sync::OnceLock;
use std::time::Instant;

static BASE: OnceLock<Instant> = OnceLock::new();

/// The instant every timestamp of this process counts from, so that a
/// timestamp fits in a JSON integer and means the same on every thread.
pub fn base() -> Instant {
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds since [`base`]: the send and receive timestamps.
pub fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64
}

/// The timestamp of `at`, to compare instants with recorded timestamps.
pub fn ns_of(at: Instant) -> u64 {
    at.saturating_duration_since(base()).as_nanos() as u64
}

/// Ask the kernel to wake this thread within about a microsecond of its
/// deadline instead of the default 50 µs timer slack, so that a paced
/// publisher at 10,000/s (one message per 100 µs) keeps its schedule.
pub fn fine_timer_slack() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Block the calling thread until `deadline` (a pacing wait shorter than
/// tokio's 1 ms timer granularity).
pub fn sleep_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep(deadline - now);
    }
}

/// Milliseconds as a float, the unit of every reported latency.
pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}
