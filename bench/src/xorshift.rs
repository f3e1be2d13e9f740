//! The benchmarks' random numbers: xorshift64 with a fixed seed (the same sequence for every
//! subject and repetition). Included by the binaries that need it (`#[path]`).

/// xorshift64; the seed must not be 0.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
