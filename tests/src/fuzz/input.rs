//! Shared input plumbing: how fuzz bytes become structured inputs, and the encoders that turn
//! structured seeds (built from the recorded fixtures) back into fuzz bytes.
//!
//! Every structured read goes through [`arbitrary::Unstructured`] with fixed-size primitives
//! (little-endian integers, zero-padded once the input runs out), so an [`Encoder`] can write
//! exactly what a decoder will read back — seeds then start the fuzzer on real traffic.

use arbitrary::{Arbitrary, Unstructured};

/// Reads one primitive; an exhausted input reads as zero (what `arbitrary` itself does).
pub fn take<'a, T: Arbitrary<'a> + Default>(u: &mut Unstructured<'a>) -> T {
    T::arbitrary(u).unwrap_or_default()
}

/// Reads `len` bytes, or whatever is left.
pub fn take_bytes<'a>(u: &mut Unstructured<'a>, len: usize) -> &'a [u8] {
    let n = len.min(u.len());
    u.bytes(n).unwrap_or_default()
}

/// Writes what [`take`] and [`take_bytes`] read.
#[derive(Debug, Default)]
pub struct Encoder {
    pub bytes: Vec<u8>,
}

impl Encoder {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(v);
        self
    }
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

/// A small deterministic generator (SplitMix64): split points and gap positions come from a seed
/// in the input, so the bytes being split stay contiguous for the fuzzer to mutate.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Cuts `data` into pieces whose sizes follow `seed`: the low byte picks the size regime (one
/// byte, small, medium, one piece) so every granularity is reachable.
pub fn split(data: &[u8], seed: u64) -> Vec<&[u8]> {
    let mut rng = SplitMix::new(seed);
    let max = match seed & 3 {
        0 => 1,
        1 => 8,
        2 => 300,
        _ => data.len().max(1),
    };
    let mut pieces = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = 1 + rng.below(max.min(rest.len()));
        let (a, b) = rest.split_at(n);
        pieces.push(a);
        rest = b;
    }
    pieces
}
