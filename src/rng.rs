//! splitmix64: the project's one small seeded generator (data crops, token sampling). Results
//! depend only on the seed, never on libtorch's global RNG or on thread timing.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 output for `z` (adds the golden-ratio increment, then mixes): a good 64-bit
/// hash of `z`, used to derive independent keys from (seed, index) pairs.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seeded stream of splitmix64 numbers.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        splitmix64(self.0)
    }

    /// Uniform in `[0, n)`, `n > 0` (multiply-shift, no modulo bias worth measuring).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)` with 24 bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}
