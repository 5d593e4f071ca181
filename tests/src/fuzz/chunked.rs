//! Chunked body framing read with the whole-chunk fast path and byte by byte by the state
//! machine alone, on arbitrary bytes cut anywhere.
//!
//! Input: `[split seed: u64][body...]`: the body (any bytes, usually chunked framing) is cut
//! into pieces by the seed (see [`split`]) and fed to two `BodyReader`s, one with the fast path.
//!
//! Invariants: both readers agree on every outcome (bytes consumed, end of body, the error and
//! where it broke), hand on the same body bytes, count the same bytes delivered and chunks
//! begun, and are left in the same state (what a gap of one byte would do to each).

use arbitrary::Unstructured;
use tracer_core::http::body::{BodyReader, Framing};

use super::input::{Encoder, split, take};

/// Fuzz bytes for a run (what [`run`] reads).
pub fn encode(split_seed: u64, body: &[u8]) -> Vec<u8> {
    Encoder::default().u64(split_seed).raw(body).finish()
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let seed: u64 = take(&mut u);
    let body = u.take_rest();
    let mut fast = BodyReader::new(Framing::Chunked);
    let mut slow = BodyReader::new(Framing::Chunked);
    slow.set_fast_path(false);
    let (mut out_fast, mut out_slow) = (Vec::new(), Vec::new());
    for (k, piece) in split(body, seed).into_iter().enumerate() {
        let a = fast.feed(piece, &mut |b| out_fast.extend_from_slice(b));
        let b = slow.feed(piece, &mut |b| out_slow.extend_from_slice(b));
        assert_eq!(a, b, "piece {k}: outcomes differ");
        assert_eq!(out_fast, out_slow, "piece {k}: body bytes differ");
        assert_eq!(
            (fast.delivered(), fast.chunks(), fast.is_done()),
            (slow.delivered(), slow.chunks(), slow.is_done()),
            "piece {k}"
        );
        assert_eq!(fast.delivered(), out_fast.len() as u64, "piece {k}: delivered is not what was handed on");
        // The framing state: what a one-byte gap would do now.
        assert_eq!(fast.clone().skip_gap(1), slow.clone().skip_gap(1), "piece {k}: states differ");
        match a {
            Ok(fed) if !fed.done => {}
            // Ended or broken: the HTTP layer reads no more of this body.
            _ => return,
        }
    }
}
