//! Concurrency caps per key (connections, WebSockets per peer address): a
//! count-min sketch of counters in fixed memory, with RAII guards.
//!
//! Owns the decision "may this key hold one more", and the bookkeeping that
//! gives the slot back: [`ConcurrencyLimiter::try_acquire`] returns a
//! [`ConcurrencyGuard`] whose drop releases it, so every exit path of a
//! connection or tunnel releases what it holds. Pure counting: no clock, no
//! I/O.
//!
//! # How it works
//!
//! Each key has one counter per row ([`DEPTH`] rows, independent hash
//! slices). Acquiring adds one to each of them first and then reads the
//! smallest: above the cap, it takes the ones back and refuses. Counting
//! before deciding means two acquires racing for a key's last slot cannot
//! both win. Counters shared with other keys only ever read high, so **a
//! key never holds more than its cap**; collisions can only refuse early.
//!
//! # Memory bound
//!
//! `DEPTH × width × 4` bytes, fixed at construction: 1 MiB at the default
//! width of 65,536 ([`ConcurrencyLimiter::memory_bytes`]). Acquiring never
//! allocates; a guard is 24 bytes held by the connection.
//!
//! # Error bound
//!
//! Let `C` be the slots held through this limiter by all other keys (at
//! most the process' `max_connections`). A key that holds `own` slots is
//! refused its next one, below its cap, only if in every row the other keys
//! sharing its counter hold at least `cap − own`. Their expected total in a
//! row is `C / width` (uniform hashing), so by Markov's inequality one row
//! does so with probability at most `C / (width × (cap − own))`, and the
//! rows hash on independent slices:
//!
//! ```text
//!     P(false refusal) ≤ ( C / (width × (cap − own)) )^DEPTH
//! ```
//!
//! Example: 20,000 connections in the process, the default width, a cap of
//! 256 and a client holding 128: `(20,000 / (65,536 × 128))^4 ≈ 3.3e-11`.

use std::hash::Hash;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use super::sketch::{SketchIndex, SketchShape, DEPTH};

/// A refused acquire: the key already holds (about) `cap` slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{held} held of a cap of {cap}")]
pub struct AtCap {
    /// The key's count as estimated when it was refused.
    pub held: u32,
    /// The cap in force.
    pub cap: u32,
}

/// Counters per key in fixed memory, with a cap that can change at reload
/// without losing the counts of live connections.
#[derive(Debug)]
pub struct ConcurrencyLimiter {
    counts: Box<[AtomicU32]>,
    index: SketchIndex,
    cap: AtomicU32,
}

impl ConcurrencyLimiter {
    /// A limiter refusing a key's slot number `cap + 1`, with a sketch of
    /// `shape` (use `SketchShape::default()` in the proxy). Shared, because
    /// guards outlive the call that made them.
    pub fn new(cap: u32, shape: SketchShape) -> Arc<Self> {
        let index = SketchIndex::new(shape);
        Arc::new(Self {
            counts: (0..index.cells()).map(|_| AtomicU32::new(0)).collect(),
            index,
            cap: AtomicU32::new(cap),
        })
    }

    /// Take one slot for `key`, or refuse if it holds its cap already.
    pub fn try_acquire<K: Hash + ?Sized>(
        self: &Arc<Self>,
        key: &K,
    ) -> Result<ConcurrencyGuard, AtCap> {
        let cells = self.index.locate(key);
        let held = cells
            .iter()
            .map(|&c| self.counts[c].fetch_add(1, Relaxed))
            .min()
            .unwrap_or(0);
        let cap = self.cap.load(Relaxed);
        if held >= cap {
            self.release(&cells);
            return Err(AtCap { held, cap });
        }
        Ok(ConcurrencyGuard {
            limiter: self.clone(),
            cells: cells.map(|c| c as u32),
        })
    }

    /// How many slots `key` holds, as far as the sketch can tell (never
    /// less than the truth).
    pub fn estimate<K: Hash + ?Sized>(&self, key: &K) -> u32 {
        let cells = self.index.locate(key);
        cells
            .iter()
            .map(|&c| self.counts[c].load(Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// The cap in force.
    pub fn cap(&self) -> u32 {
        self.cap.load(Relaxed)
    }

    /// Change the cap (a reload): live guards keep their slots and are
    /// counted against the new cap.
    pub fn set_cap(&self, cap: u32) {
        self.cap.store(cap, Relaxed);
    }

    /// Bytes this limiter holds, fixed at construction.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + std::mem::size_of_val(&*self.counts)
    }

    /// Cells per row of the sketch.
    pub fn width(&self) -> usize {
        self.index.width()
    }

    /// The error bound of the module documentation: the largest
    /// probability that a key holding `own` slots is refused one more
    /// while other keys hold `others` slots in total.
    pub fn false_refusal_bound(&self, others: f64, own: u32) -> f64 {
        let room = f64::from(self.cap().saturating_sub(own));
        if room == 0.0 {
            return 1.0;
        }
        (others / (self.width() as f64 * room))
            .clamp(0.0, 1.0)
            .powi(DEPTH as i32)
    }

    fn release(&self, cells: &[usize; DEPTH]) {
        for &c in cells {
            self.counts[c].fetch_sub(1, Relaxed);
        }
    }
}

/// One slot of a key; dropping it gives the slot back.
#[derive(Debug)]
pub struct ConcurrencyGuard {
    limiter: Arc<ConcurrencyLimiter>,
    cells: [u32; DEPTH],
}

impl Drop for ConcurrencyGuard {
    fn drop(&mut self) {
        self.limiter.release(&self.cells.map(|c| c as usize));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(cap: u32, width: usize) -> Arc<ConcurrencyLimiter> {
        ConcurrencyLimiter::new(
            cap,
            SketchShape {
                width,
                seed: Some(5),
            },
        )
    }

    #[test]
    fn refuses_at_the_cap_and_frees_on_drop() {
        let l = limiter(3, 1024);
        let held: Vec<ConcurrencyGuard> = (0..3).map(|_| l.try_acquire("a").unwrap()).collect();
        assert_eq!(l.try_acquire("a").unwrap_err(), AtCap { held: 3, cap: 3 });
        assert_eq!(l.estimate("a"), 3);
        // The refused attempt left nothing behind.
        drop(held);
        assert_eq!(l.estimate("a"), 0);
        assert!(l.try_acquire("a").is_ok());
    }

    #[test]
    fn keys_are_counted_apart() {
        let l = limiter(1, 1024);
        let _a = l.try_acquire("10.0.0.1").unwrap();
        let _b = l.try_acquire("10.0.0.2").unwrap();
        assert!(l.try_acquire("10.0.0.1").is_err());
    }

    #[test]
    fn a_lower_cap_at_reload_counts_live_slots() {
        let l = limiter(10, 1024);
        let held: Vec<ConcurrencyGuard> = (0..5).map(|_| l.try_acquire("k").unwrap()).collect();
        l.set_cap(5);
        assert!(l.try_acquire("k").is_err());
        drop(held);
        assert_eq!(l.try_acquire("k").map(|_| ()), Ok(()));
    }

    #[test]
    fn shared_counters_never_let_a_key_past_its_cap() {
        // A tiny sketch: 64 cells per row for 5,000 keys.
        let l = limiter(4, 64);
        let mut held = Vec::new();
        let mut per_key = vec![0u32; 5000];
        for round in 0..6 {
            for (k, n) in per_key.iter_mut().enumerate() {
                if let Ok(g) = l.try_acquire(&k) {
                    held.push(g);
                    *n += 1;
                }
                assert!(*n <= 4, "key {k} holds {n} in round {round}");
            }
        }
        drop(held);
        assert!((0..5000).all(|k| l.estimate(&k) == 0));
    }

    #[test]
    fn racing_threads_hold_at_most_the_cap() {
        let l = limiter(50, 1024);
        let held = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        if let Ok(g) = l.try_acquire("hot") {
                            held.lock().unwrap().push(g);
                        }
                    }
                });
            }
        });
        assert_eq!(held.lock().unwrap().len(), 50);
    }

    #[test]
    fn the_bound_follows_the_formula() {
        let l = ConcurrencyLimiter::new(256, SketchShape::default());
        let b = l.false_refusal_bound(20_000.0, 128);
        assert!((3.0e-11..3.6e-11).contains(&b), "{b}");
        assert_eq!(l.false_refusal_bound(1.0, 256), 1.0);
        assert!(l.memory_bytes() >= 4 * 65_536 * 4);
    }
}
