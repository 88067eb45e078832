//! Per-client request rate: a token bucket (`per_second`, `burst`) per key,
//! kept as GCRA theoretical arrival times in a count-min sketch, so memory
//! is fixed whatever the number of distinct clients.
//!
//! Owns the decision "may this key spend one token now, and if not, when".
//! Pure: the caller passes `now` (nanoseconds since any fixed origin, e.g.
//! [`super::clock::now`]); nothing here reads a clock, sleeps or does I/O.
//!
//! # How it works
//!
//! GCRA keeps, per key, a theoretical arrival time `tat`: the instant the
//! bucket would be full again. With `T = 1 s / per_second` and tolerance
//! `τ = (burst − 1) × T`, a request at `now` passes when
//! `max(tat, now) − now ≤ τ` and then sets `tat = max(tat, now) + T`.
//!
//! Here the key's `tat` is the smallest of its [`DEPTH`] cells (one per row,
//! by independent hash slices); a passed request raises every one of its
//! cells to its new `tat` if lower (the "conservative update" of count-min
//! sketches). A cell is never lower than the `tat` of any key that maps to
//! it, so **a key never gets more than its own bucket allows**: collisions
//! can only limit a client early, never let one through.
//!
//! # Memory bound
//!
//! `DEPTH × width × 8` bytes, fixed at construction: 2 MiB at the default
//! width of 65,536 ([`RateLimiter::memory_bytes`]). A check never allocates.
//!
//! # Error bound
//!
//! Take a well-behaved client that sends at most `ρ × per_second` requests
//! per second on average with bursts of at most `b ≤ burst − 1` above that
//! (`0 ≤ ρ < 1`), and let `N` be the rate (requests/s) that all *other*
//! clients together get through (each client is capped at `per_second` by
//! its own bucket, so `N` is at most the proxy's throughput). Then the
//! fraction of its requests refused is at most
//!
//! ```text
//!     P(false limit) ≤ ( N / (width × (1 − ρ) × per_second) )^DEPTH
//! ```
//!
//! Derivation. Count time in units where one token is `T`. A cell never
//! holds more backlog (`cell − now`) than a queue served at rate 1 that
//! receives `T` of work for every request passed through that cell
//! (induction over updates: a passed request of any key sets the cell to at
//! most `max(cell, now) + T`). Split that queue's input into the client's
//! own requests and everyone else's: the backlog is at most the own part,
//! `b × T` for a client within `(ρ × per_second, b)`, plus the backlog of a
//! queue served at rate `1 − ρ` that receives only the others' work. The
//! client is refused in a row only if that second queue's backlog exceeds
//! `τ − b × T ≥ 0`, so only while it is busy; a queue is busy for the
//! fraction of time equal to its utilisation, here `λ / ((1 − ρ) ×
//! per_second)` where `λ` is the others' rate through the cell. Uniform
//! hashing gives `E[λ] = N / width` per row, and the rows hash on
//! independent slices, so with clients acting independently the rows are
//! busy independently and the per-row bounds multiply. The bound ignores the
//! burst slack and the conservative update, both of which only help, so real
//! figures are far lower (the test in `proxy/tests/limits_bounds.rs`
//! measures them). If the other clients are not independent (a synchronised
//! flash crowd), the safe statement is the single-row bound, without the
//! exponent.
//!
//! Example: 200 requests/s per client, the default width, everyone else
//! together at 200,000 requests/s, a client at half its rate:
//! `(200,000 / (65,536 × 0.5 × 200))^4 ≈ 8.7e-7`.
//!
//! Concurrent checks of one key on different threads can each pass in the
//! instant between reading and raising its cells: at most one extra request
//! per extra thread racing, the usual price of a lock-free GCRA.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::clock::Nanos;
use super::sketch::{SketchIndex, SketchShape, DEPTH};
use crate::config::RateLimit;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// What a rate check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The request may go; `remaining` more may follow at once.
    Allowed {
        /// Requests the client may still send right now.
        remaining: u32,
        /// When one more unit of quota becomes available (at most one
        /// token interval).
        reset: Duration,
    },
    /// The request is over the client's rate; no quota remains.
    Limited {
        /// When the next request would pass (always more than zero).
        retry_after: Duration,
    },
}

impl Decision {
    /// Whether the request may go.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }

    /// Requests the client may still send right now (0 when limited).
    pub fn remaining(&self) -> u32 {
        match self {
            Decision::Allowed { remaining, .. } => *remaining,
            Decision::Limited { .. } => 0,
        }
    }
}

/// A token bucket per key in fixed memory. One instance per limit (requests,
/// WebSocket upgrades, each per-route override); share it by reference
/// across threads.
#[derive(Debug)]
pub struct RateLimiter {
    tat: Box<[AtomicU64]>,
    index: SketchIndex,
    limit: RateLimit,
    /// `T`: nanoseconds per token, rounded up so the rate is never exceeded.
    emission: u64,
    /// `τ = (burst − 1) × T`.
    tolerance: u64,
}

impl RateLimiter {
    /// A limiter for `limit` with a sketch of `shape` (use
    /// `SketchShape::default()` in the proxy).
    pub fn new(limit: RateLimit, shape: SketchShape) -> Self {
        let index = SketchIndex::new(shape);
        let emission = NANOS_PER_SEC.div_ceil(u64::from(limit.per_second.max(1)));
        let burst = u64::from(limit.burst.max(1));
        Self {
            tat: (0..index.cells()).map(|_| AtomicU64::new(0)).collect(),
            index,
            limit,
            emission,
            tolerance: (burst - 1) * emission,
        }
    }

    /// The limit this instance enforces.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Spend one token of `key`'s bucket at `now` if it has one.
    pub fn check<K: Hash + ?Sized>(&self, key: &K, now: Nanos) -> Decision {
        let cells = self.index.locate(key);
        let seen: [u64; DEPTH] = cells.map(|c| self.tat[c].load(Relaxed));
        let tat = seen.iter().copied().min().unwrap_or(0).max(now);
        let backlog = tat - now;
        if backlog > self.tolerance {
            return Decision::Limited {
                retry_after: Duration::from_nanos(backlog - self.tolerance),
            };
        }
        let next = tat.saturating_add(self.emission);
        for (c, old) in cells.iter().zip(seen) {
            if old < next {
                self.tat[*c].fetch_max(next, Relaxed);
            }
        }
        // Quota left: the room between the new backlog and a full bucket.
        let room = (self.tolerance + self.emission).saturating_sub(next - now);
        Decision::Allowed {
            remaining: u32::try_from(room / self.emission).unwrap_or(u32::MAX),
            reset: Duration::from_nanos(self.emission - room % self.emission),
        }
    }

    /// Bytes this limiter holds, fixed at construction.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + std::mem::size_of_val(&*self.tat)
    }

    /// Cells per row of the sketch.
    pub fn width(&self) -> usize {
        self.index.width()
    }

    /// The error bound of the module documentation: the largest fraction of
    /// requests refused to a client sending at `own_fraction` (ρ) of its
    /// rate while all other clients together pass `others_per_second`.
    pub fn false_limit_bound(&self, others_per_second: f64, own_fraction: f64) -> f64 {
        let per_row = others_per_second
            / (self.width() as f64 * (1.0 - own_fraction) * f64::from(self.limit.per_second));
        per_row.clamp(0.0, 1.0).powi(DEPTH as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = NANOS_PER_SEC;

    fn limiter(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(
            RateLimit { per_second, burst },
            SketchShape {
                width: 1024,
                seed: Some(1),
            },
        )
    }

    #[test]
    fn burst_passes_then_the_rate_holds() {
        let l = limiter(10, 20);
        let start = 5 * SEC;
        for i in 0..20 {
            let d = l.check("a", start);
            assert_eq!(d.remaining(), 19 - i, "request {i}");
        }
        let Decision::Limited { retry_after } = l.check("a", start) else {
            panic!("the 21st request at once must be limited");
        };
        assert_eq!(retry_after, Duration::from_millis(100));
        // One token per 100 ms comes back.
        assert!(!l.check("a", start + 99_000_000).is_allowed());
        assert!(l.check("a", start + 100_000_000).is_allowed());
        assert!(!l.check("a", start + 100_000_000).is_allowed());
        // Other keys are untouched.
        assert_eq!(l.check("b", start).remaining(), 19);
    }

    #[test]
    fn refill_over_a_window_matches_the_rate() {
        let l = limiter(50, 50);
        // A client asking 1,000 times a second for 10 s gets the burst plus
        // 50 per second.
        let passed = (0..10_000u64)
            .filter(|i| l.check(&7u32, SEC + i * SEC / 1000).is_allowed())
            .count();
        assert!((549..=551).contains(&passed), "{passed}");
    }

    #[test]
    fn an_idle_bucket_fills_up_to_burst_only() {
        let l = limiter(1, 3);
        assert_eq!(l.check("k", 0).remaining(), 2);
        // After an hour idle the bucket holds `burst`, not 3,600 tokens.
        let later = 3600 * SEC;
        assert_eq!(l.check("k", later).remaining(), 2);
        assert_eq!(l.check("k", later).remaining(), 1);
        assert_eq!(l.check("k", later).remaining(), 0);
        assert!(!l.check("k", later).is_allowed());
    }

    #[test]
    fn reset_is_the_time_to_the_next_token() {
        let l = limiter(4, 4);
        let Decision::Allowed { remaining, reset } = l.check("k", 10 * SEC) else {
            panic!("first request passes");
        };
        assert_eq!((remaining, reset), (3, Duration::from_millis(250)));
        let Decision::Allowed { reset, .. } = l.check("k", 10 * SEC + 100_000_000) else {
            panic!("second request passes");
        };
        assert_eq!(reset, Duration::from_millis(150));
    }

    #[test]
    fn a_shared_cell_never_lets_a_key_exceed_its_bucket() {
        // A tiny sketch: every key shares cells with many others.
        let l = RateLimiter::new(
            RateLimit {
                per_second: 5,
                burst: 5,
            },
            SketchShape {
                width: 64,
                seed: Some(2),
            },
        );
        let mut passed = vec![0u32; 2000];
        for step in 0..200u64 {
            for (k, n) in passed.iter_mut().enumerate() {
                if l.check(&k, SEC + step * SEC / 100).is_allowed() {
                    *n += 1;
                }
            }
        }
        // 2 s: at most burst + 2 s × rate = 15 per key, whatever the sharing.
        assert!(passed.iter().all(|&n| n <= 15), "{:?}", passed.iter().max());
    }

    #[test]
    fn memory_is_the_table() {
        let l = RateLimiter::new(
            RateLimit {
                per_second: 1,
                burst: 1,
            },
            SketchShape::default(),
        );
        assert_eq!(l.width(), 65_536);
        let table = 4 * 65_536 * 8;
        assert!(l.memory_bytes() >= table && l.memory_bytes() < table + 256);
    }

    #[test]
    fn the_bound_follows_the_formula() {
        let l = RateLimiter::new(
            RateLimit {
                per_second: 200,
                burst: 400,
            },
            SketchShape::default(),
        );
        let b = l.false_limit_bound(200_000.0, 0.5);
        assert!((8.0e-7..9.0e-7).contains(&b), "{b}");
        assert_eq!(l.false_limit_bound(1e12, 0.5), 1.0);
    }
}
