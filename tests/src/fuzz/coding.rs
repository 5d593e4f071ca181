//! Content codings (gzip, deflate, zstd) undone as body pieces arrive.
//!
//! Input: `[coding: u8][split seed: u64][compressed...]`.
//!
//! Invariants: a body decodes (or fails) the same way however it was cut; memory stays bounded — no
//! single piece handed on is larger than [`MAX_PIECE`], however much the input inflates.

use arbitrary::Unstructured;
use tracer_core::http::encoding::ContentDecoder;

use super::input::{Encoder, split, take};

pub const CODINGS: [&str; 6] = ["gzip", "deflate", "zstd", "x-gzip", " Deflate ", "identity"];

/// Largest decoded piece one call may hand on (what the decoder holds at once).
pub const MAX_PIECE: usize = 4 << 20;

/// Fuzz bytes for a compressed body.
pub fn encode(coding: &str, compressed: &[u8]) -> Vec<u8> {
    let i = CODINGS.iter().position(|c| *c == coding).unwrap_or(0) as u8;
    let mut e = Encoder::default();
    e.u8(i).u64(2).raw(compressed);
    e.finish()
}

/// Decoded bytes, and whether the body decoded without error.
fn decode(coding: &str, pieces: &[&[u8]]) -> (Vec<u8>, bool) {
    let Ok(Some(mut d)) = ContentDecoder::for_header(coding) else { return (Vec::new(), true) };
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| {
        assert!(b.len() <= MAX_PIECE, "{coding}: one decoded piece of {} bytes", b.len());
        out.extend_from_slice(b);
    };
    let mut ok = true;
    for piece in pieces {
        ok &= d.feed(piece, &mut sink).is_ok();
    }
    ok &= d.finish(&mut sink).is_ok();
    (out, ok)
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let coding = CODINGS[usize::from(take::<u8>(&mut u)) % CODINGS.len()];
    let seed: u64 = take(&mut u);
    let body = u.take_rest();
    let (whole, whole_ok) = decode(coding, &[body]);
    let (cut, cut_ok) = decode(coding, &split(body, seed));
    assert_eq!(whole_ok, cut_ok, "{coding}: whether the body decodes depends on the cut");
    // A corrupt body may stop at a different byte depending on the cut; a good one may not.
    if whole_ok {
        assert_eq!(whole, cut, "{coding}: decoded bytes depend on the cut");
    }
}
