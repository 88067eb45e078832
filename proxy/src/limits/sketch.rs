//! The fixed-size table both limiters keep their state in: `DEPTH` rows of
//! `width` cells, and the hash that gives a key one cell per row.
//!
//! Owns the layout and the key → cells mapping, nothing else: what a cell
//! holds (a theoretical arrival time, a count) belongs to the limiter. It
//! never allocates after construction, so a limiter's memory is fixed
//! whatever the number of distinct keys.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};

use foldhash::quality::FixedState;

/// Rows of every sketch. Four rows use the four 16-bit slices of one 64-bit
/// hash, so a key's cells in different rows are independent.
pub const DEPTH: usize = 4;

/// Largest row width: a row index is one 16-bit slice of the hash.
pub const MAX_WIDTH: usize = 1 << 16;

/// Smallest row width accepted.
pub const MIN_WIDTH: usize = 64;

/// The size of a sketch and the seed of its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SketchShape {
    /// Cells per row, rounded up to a power of two in
    /// [`MIN_WIDTH`]`..=`[`MAX_WIDTH`]. Error bounds shrink with it (see the
    /// limiters); memory grows with it.
    pub width: usize,
    /// The hash seed. `None` (what the proxy uses) draws one at random per
    /// sketch, so nobody outside can compute which keys share cells; tests
    /// fix it to be reproducible.
    pub seed: Option<u64>,
}

impl Default for SketchShape {
    /// The widest sketch: 65,536 cells per row.
    fn default() -> Self {
        Self {
            width: MAX_WIDTH,
            seed: None,
        }
    }
}

/// Maps a key to its `DEPTH` cells in a row-major table.
#[derive(Debug, Clone)]
pub(crate) struct SketchIndex {
    hasher: FixedState,
    width: usize,
}

impl SketchIndex {
    pub(crate) fn new(shape: SketchShape) -> Self {
        let width = shape.width.clamp(MIN_WIDTH, MAX_WIDTH).next_power_of_two();
        let seed = shape
            .seed
            .unwrap_or_else(|| RandomState::new().hash_one(0x5eed_u64));
        Self {
            hasher: FixedState::with_seed(seed),
            width,
        }
    }

    /// Cells per row.
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// Cells in the whole table.
    pub(crate) fn cells(&self) -> usize {
        self.width * DEPTH
    }

    /// The key's cell in each row, as indices into the row-major table.
    #[inline]
    pub(crate) fn locate<K: Hash + ?Sized>(&self, key: &K) -> [usize; DEPTH] {
        let h = self.hasher.hash_one(key);
        let mask = self.width as u64 - 1;
        std::array::from_fn(|row| row * self.width + ((h >> (16 * row)) & mask) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_is_a_clamped_power_of_two() {
        let w = |width| {
            SketchIndex::new(SketchShape {
                width,
                seed: Some(1),
            })
            .width()
        };
        assert_eq!(w(0), MIN_WIDTH);
        assert_eq!(w(1000), 1024);
        assert_eq!(w(1 << 20), MAX_WIDTH);
    }

    #[test]
    fn a_key_has_one_cell_per_row_and_keeps_it() {
        let index = SketchIndex::new(SketchShape {
            width: 256,
            seed: Some(9),
        });
        let cells = index.locate("10.0.0.1");
        for (row, cell) in cells.iter().enumerate() {
            assert_eq!(cell / 256, row);
        }
        assert_eq!(cells, index.locate("10.0.0.1"));
        assert_ne!(cells, index.locate("10.0.0.2"));
    }

    #[test]
    fn rows_spread_keys_evenly() {
        let index = SketchIndex::new(SketchShape {
            width: 64,
            seed: Some(3),
        });
        let mut counts = vec![0u32; index.cells()];
        for k in 0..64_000u32 {
            for c in index.locate(&k) {
                counts[c] += 1;
            }
        }
        // 1,000 keys per cell expected; a biased slice would leave cells far off.
        assert!(
            counts.iter().all(|&n| (800..1200).contains(&n)),
            "{counts:?}"
        );
    }
}
