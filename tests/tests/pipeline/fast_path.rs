//! The fast path for common token chunks decodes exactly as the full scanner: on every recorded
//! stream, on generated token chunks (property test), and — the fuzz target `fast_path` — on
//! arbitrary bytes. Each comparison is the whole call the decoder reports (sizes, counts, times,
//! model, id, flags), with the body whole, cut anywhere and with bytes missing.

use proptest::prelude::*;
use testkit::fixtures;
use testkit::fuzz::fast_path::{self, STREAMS};
use testkit::fuzz::input::split;
use tracer_core::llm::Route;

/// The recorded fixtures' response bodies of the streams with a fast path.
fn recorded_streams() -> Vec<(usize, String, Vec<u8>)> {
    let all = fixtures::load_all().expect("fixtures");
    let mut out = Vec::new();
    for f in &all {
        let route = Route::classify(&f.request.method, &f.path());
        let ctype = f.response.headers.get("content-type").unwrap_or("").split(';').next().unwrap_or("").trim();
        if let Some(i) = STREAMS.iter().position(|(r, c, _, _)| *r == route && *c == ctype)
            && f.response.status == 200
        {
            out.push((i, f.name.clone(), f.response.body.clone().into_bytes()));
        }
    }
    out
}

#[test]
fn recorded_streams_decode_the_same_with_the_fast_path() {
    let streams = recorded_streams();
    let mut taken = [0u64; STREAMS.len()];
    for (i, name, body) in &streams {
        let (full, off) = fast_path::decode(*i, &[body.as_slice()], false, None);
        let (fast, n) = fast_path::decode(*i, &[body.as_slice()], true, None);
        assert_eq!(off, 0);
        assert_eq!(full, fast, "{name}: whole body");
        taken[*i] += n;
        for seed in 0..16u64 {
            let pieces = split(body, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | seed);
            for gap in [None, Some(pieces.len() / 2)] {
                let (full, _) = fast_path::decode(*i, &pieces, false, gap);
                let (fast, _) = fast_path::decode(*i, &pieces, true, gap);
                assert_eq!(full, fast, "{name}: cut with seed {seed}, gap {gap:?}");
            }
        }
    }
    // The fast path must have been the one reading the recordings' token chunks.
    for (i, (route, ..)) in STREAMS.iter().enumerate() {
        let recorded = streams.iter().filter(|(j, ..)| *j == i).count();
        println!("{route:?}: {recorded} recorded streams, {} token chunks by the fast path", taken[i]);
        if recorded > 0 {
            assert!(taken[i] > 0, "{route:?}: the fast path took none of {recorded} recorded streams' chunks");
        }
    }
    assert!(taken[0] > 100 && taken[2] > 10, "too few recorded chunks on the fast path: {taken:?}");
}

#[test]
fn plain_token_chunks_all_take_the_fast_path() {
    for (i, (route, ..)) in STREAMS.iter().enumerate() {
        let parts = b"Hello\0 wor\\\"ld\0\\u00e9t\\u00e9\0\xc3\xa9\0\\n\\n\0".to_vec();
        let body = fast_path::templated_body(i, &parts);
        let (full, _) = fast_path::decode(i, &[&body], false, None);
        let (fast, n) = fast_path::decode(i, &[&body], true, None);
        assert_eq!(full, fast, "{route:?}");
        assert_eq!(n, 6, "{route:?}: every token chunk by the fast path");
    }
}

/// Bytes a token may hold: plain text, JSON escapes (valid, invalid, surrogates), quotes, control
/// bytes, invalid UTF-8, and the separator that starts the next part.
fn token_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => "[a-zA-Z ]{0,6}".prop_map(String::into_bytes),
        1 => Just(b"\\n".to_vec()),
        1 => Just(b"\\\"".to_vec()),
        1 => Just(b"\\u003c".to_vec()),
        1 => Just(b"\\ud83d\\ude00".to_vec()),
        1 => Just(b"\\ud83d".to_vec()),
        1 => Just(b"\\x".to_vec()),
        1 => Just(b"\"".to_vec()),
        1 => Just(vec![0xe2, 0x82]),
        1 => Just(vec![0x01, b'\r']),
        1 => Just(vec![0]),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn generated_token_chunks_decode_the_same(stream in 0..STREAMS.len(), seed: u64, gap: u16, parts in token_bytes()) {
        fast_path::run(&fast_path::encode(stream, true, seed, &parts));
        // The gap too: the encoder leaves it 0.
        let mut input = fast_path::encode(stream, true, seed, &parts);
        input[9..11].copy_from_slice(&gap.to_le_bytes());
        fast_path::run(&input);
    }
}
