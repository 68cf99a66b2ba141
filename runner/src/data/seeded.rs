//! Stateless seeded randomness: every random decision of the data pipeline is a pure function of
//! (seed, purpose, index), so the data stream needs no RNG state to be saved and a resumed run
//! makes exactly the decisions of an uninterrupted one.

/// What a draw is for; separates the streams of draws sharing a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    /// Shard drawn with replacement at a shard ordinal.
    ResampleShard = 1,
    /// Fisher-Yates swaps of an epoch's shard permutation.
    EpochShuffle = 2,
    /// Index picked from the shuffle buffer.
    ShuffleBuffer = 3,
    /// Horizontal flip of a sample's (or batch's) images.
    Flip = 4,
    /// Single-image rejection of an interleaved document.
    SingleImage = 5,
    /// Per-source seeds derived from the training seed.
    SourceSeed = 6,
}

/// SplitMix64 finaliser: a bijective 64-bit mixer with good avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform 64-bit draw for `(seed, purpose, index)`.
pub fn draw(seed: u64, purpose: Purpose, index: u64) -> u64 {
    let a = mix(seed ^ 0x9e37_79b9_7f4a_7c15);
    let b = mix(a ^ (purpose as u64).wrapping_mul(0xd6e8_feb8_6659_fd93));
    mix(b ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1))
}

/// A uniform draw in `0..n` (`n > 0`), by multiply-shift (no modulo bias worth the name).
pub fn below(seed: u64, purpose: Purpose, index: u64, n: usize) -> usize {
    ((draw(seed, purpose, index) as u128 * n as u128) >> 64) as usize
}

/// A uniform draw in `[0, 1)` with 53 bits, like Python's `random.random()`.
pub fn unit(seed: u64, purpose: Purpose, index: u64) -> f64 {
    (draw(seed, purpose, index) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_deterministic_and_spread() {
        assert_eq!(
            draw(7, Purpose::Flip, 3),
            draw(7, Purpose::Flip, 3),
            "same inputs, same draw"
        );
        assert_ne!(draw(7, Purpose::Flip, 3), draw(8, Purpose::Flip, 3));
        assert_ne!(draw(7, Purpose::Flip, 3), draw(7, Purpose::SingleImage, 3));
        let n = 20_000;
        let low = (0..n).filter(|&i| unit(1, Purpose::Flip, i) < 0.5).count();
        assert!((low as f64 / n as f64 - 0.5).abs() < 0.02, "{low}");
        let mut hist = [0usize; 5];
        for i in 0..n {
            hist[below(3, Purpose::ResampleShard, i, 5)] += 1;
        }
        assert!(
            hist.iter()
                .all(|&h| (h as f64 / n as f64 - 0.2).abs() < 0.02),
            "{hist:?}"
        );
    }
}
