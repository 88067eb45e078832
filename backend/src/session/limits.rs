//! What one connection may send: a token bucket for the frame rate, and
//! the strikes that turn repeated refusals into a close (1008).
//!
//! Pure arithmetic on instants the caller passes in, so the tests drive
//! the clock; it never reads the time or touches a socket.

use std::time::{Duration, Instant};

/// Frames refused by the rate limit within [`STRIKE_WINDOW`] before the
/// connection is closed with 1008.
pub const MAX_STRIKES: u32 = 10;
/// The window in which rate-limit strikes add up.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// A token bucket: `rate` frames per second, bursts of `burst`.
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(burst),
            rate,
            burst: f64::from(burst),
            last: now,
        }
    }

    /// Take one token at `now` if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Rate-limit refusals counted over a window.
#[derive(Default)]
pub struct Strikes {
    since: Option<Instant>,
    count: u32,
}

impl Strikes {
    /// Count one refusal at `now`; the count within the current window.
    pub fn add(&mut self, now: Instant) -> u32 {
        match self.since {
            Some(start) if now.saturating_duration_since(start) < STRIKE_WINDOW => self.count += 1,
            _ => {
                self.since = Some(now);
                self.count = 1;
            }
        }
        self.count
    }

    /// Whether `count` strikes mean the connection must be closed.
    pub fn exceeded(count: u32) -> bool {
        count > MAX_STRIKES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 5, t0);
        assert!((0..5).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(1)), "refilled at 1000/s");
        assert!(!b.take(t0 + Duration::from_millis(1)));
    }

    #[test]
    fn bucket_never_holds_more_than_its_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 3, t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take(later)).count(), 3);
    }

    #[test]
    fn strikes_add_up_within_the_window() {
        let t0 = Instant::now();
        let mut s = Strikes::default();
        assert_eq!(s.add(t0), 1);
        assert_eq!(s.add(t0 + Duration::from_secs(1)), 2);
        assert_eq!(s.add(t0 + STRIKE_WINDOW), 1, "a new window starts");
    }

    #[test]
    fn more_than_the_maximum_closes() {
        assert!(!Strikes::exceeded(MAX_STRIKES));
        assert!(Strikes::exceeded(MAX_STRIKES + 1));
    }
}
