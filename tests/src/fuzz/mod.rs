//! Fuzz target bodies for ollama-tracer. Each takes the raw fuzz input and panics on a violated
//! invariant; the cargo-fuzz binaries in `tracer-core/fuzz/fuzz_targets` hand them to libFuzzer,
//! and `tests/fuzz_smoke.rs` runs them on every committed seed and regression input with stable
//! Rust (they live here, not in the fuzz crate, so the stable tests need no libFuzzer).
//!
//! What each target feeds and checks is documented in its module. Structured inputs are read
//! with `arbitrary` from fixed-size fields, and each has an encoder so seeds can be made from the
//! recorded fixtures (`tracer-core/fuzz/seedgen`).

pub mod chunked;
pub mod coding;
pub mod decoders;
pub mod fast_path;
pub mod framing;
pub mod http;
pub mod input;
pub mod json;
pub mod packet;
pub mod reassembly;
mod record;
pub mod rejoin;
pub mod replay;

/// A target body: the raw fuzz input in, a panic when an invariant does not hold.
pub type Target = fn(&[u8]);

/// Every target: name (as in `fuzz_targets/`) and body.
pub const TARGETS: &[(&str, Target)] = &[
    ("packet", packet),
    ("reassembly", reassembly),
    ("http", http),
    ("rejoin", rejoin),
    ("chunked", chunked),
    ("framing", framing),
    ("json", json),
    ("response", response),
    ("request", request),
    ("content_coding", content_coding),
    ("replay", replay),
    ("fast_path", fast_path),
];

/// Link-layer frames of every link type.
pub fn packet(data: &[u8]) {
    packet::run(data)
}

/// Segment sequences through TCP reassembly.
pub fn reassembly(data: &[u8]) {
    reassembly::run(data)
}

/// Byte streams through HTTP tracking and call assembly.
pub fn http(data: &[u8]) {
    http::run(data)
}

/// Chunked bodies rejoined after gaps.
pub fn rejoin(data: &[u8]) {
    rejoin::run(data)
}

/// Chunked framing, whole chunks in one step and byte by byte.
pub fn chunked(data: &[u8]) {
    chunked::run(data)
}

/// NDJSON, JSON-sequence and SSE body framing.
pub fn framing(data: &[u8]) {
    framing::run(data)
}

/// The push JSON scanner, against serde_json.
pub fn json(data: &[u8]) {
    json::run(data)
}

/// Response bodies of every route.
pub fn response(data: &[u8]) {
    decoders::response(data)
}

/// Request bodies of every route.
pub fn request(data: &[u8]) {
    decoders::request(data)
}

/// gzip, deflate and zstd bodies.
pub fn content_coding(data: &[u8]) {
    coding::run(data)
}

/// Arbitrary bytes as a capture file through the whole replay pipeline.
pub fn replay(data: &[u8]) {
    replay::run(data)
}

/// Token chunks read by the fast path and by the full scanner.
pub fn fast_path(data: &[u8]) {
    fast_path::run(data)
}
