//! Request and response body decoders for every route, with and without content capture.
//!
//! Response input: `[route: u8][status: u16][content type: u8][capture: u8][split: u64][gap at:
//! u16][body...]`. Request input: `[route: u8][capture: u8][raw limit: u16][split: u64][gap at:
//! u16][body...]`.
//!
//! Invariants: the decoded facts do not depend on how the body was cut (for UTF-8 bodies: with
//! invalid UTF-8, text caps apply after replacement characters, so a cut text may end a few
//! characters apart); the body size is the bytes fed; bytes missing anywhere never panic.

use arbitrary::Unstructured;
use tracer_core::llm::request::{RequestCapture, RequestDecoder};
use tracer_core::llm::response::ResponseDecoder;
use tracer_core::llm::{CallTimes, Route};
use tracer_core::segment::Timestamp;

use super::input::{Encoder, split, take};

pub const ROUTES: [Route; 26] = [
    Route::Chat,
    Route::Generate,
    Route::Embed,
    Route::Embeddings,
    Route::OpenAiChat,
    Route::OpenAiCompletions,
    Route::OpenAiEmbeddings,
    Route::OpenAiResponses,
    Route::OpenAiModels,
    Route::OpenAiModel,
    Route::OpenAiTranscriptions,
    Route::AnthropicMessages,
    Route::Pull,
    Route::Push,
    Route::Create,
    Route::Show,
    Route::Tags,
    Route::Ps,
    Route::Copy,
    Route::Delete,
    Route::BlobHead,
    Route::BlobUpload,
    Route::Version,
    Route::Status,
    Route::Root,
    Route::Unknown,
];

pub const CONTENT_TYPES: [Option<&str>; 8] = [
    Some("application/x-ndjson"),
    Some("text/event-stream"),
    Some("application/json; charset=utf-8"),
    None,
    Some("text/plain; charset=utf-8"),
    Some("TEXT/EVENT-STREAM; charset=utf-8"),
    Some("application/octet-stream"),
    Some("application/problem+json"),
];

fn route(i: u8) -> Route {
    ROUTES[usize::from(i) % ROUTES.len()]
}

/// Index of `r` in [`ROUTES`], for seed encoders.
pub fn route_index(r: Route) -> u8 {
    ROUTES.iter().position(|x| *x == r).unwrap_or(ROUTES.len() - 1) as u8
}

/// Fuzz bytes for the response target.
pub fn encode_response(route: Route, status: u16, content_type: u8, capture: bool, body: &[u8]) -> Vec<u8> {
    let mut e = Encoder::default();
    e.u8(route_index(route)).u16(status).u8(content_type).u8(capture.into()).u64(2).u16(0).raw(body);
    e.finish()
}

/// Fuzz bytes for the request target.
pub fn encode_request(route: Route, capture: bool, body: &[u8]) -> Vec<u8> {
    let mut e = Encoder::default();
    e.u8(route_index(route)).u8(capture.into()).u16(4096).u64(2).u16(0).raw(body);
    e.finish()
}

/// Decodes `body` whole and cut by `seed`, compares, then once more with bytes missing before
/// the piece `gap` picks. `decode(pieces, gap_before)` says what was decoded.
fn check_cuts(body: &[u8], seed: u64, gap: u16, what: &str, decode: impl Fn(&[&[u8]], Option<usize>) -> String) {
    let whole = decode(&[body], None);
    let pieces = split(body, seed);
    let cut = decode(&pieces, None);
    if std::str::from_utf8(body).is_ok() {
        assert_eq!(whole, cut, "{what}: decoded facts depend on the cut");
    }
    if gap > 0 && !pieces.is_empty() {
        decode(&pieces, Some(usize::from(gap) % pieces.len()));
    }
}

pub fn response(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let route = route(take(&mut u));
    let status: u16 = take(&mut u);
    let ctype: u8 = take(&mut u);
    let capture = take::<u8>(&mut u) & 1 != 0;
    let seed: u64 = take(&mut u);
    let gap: u16 = take(&mut u);
    let body = u.take_rest();
    // Mostly statuses the decoders branch on; any other value now and then.
    let status = match status % 8 {
        0..=3 => 200,
        4 => 400,
        5 => 404,
        6 => 500,
        _ => status,
    };
    let content_type = CONTENT_TYPES[usize::from(ctype) % CONTENT_TYPES.len()];

    let decode = |pieces: &[&[u8]], gap_before: Option<usize>| {
        let mut d = ResponseDecoder::with_capture(route, status, content_type, capture);
        d.set_headers(content_type.map(str::to_string), None);
        for (i, piece) in pieces.iter().enumerate() {
            if gap_before == Some(i) {
                d.gap();
            }
            d.feed(piece, Timestamp(1_000));
        }
        let mut times = CallTimes::default();
        let info = d.finish(Timestamp(2_000), &mut times);
        assert_eq!(info.body_bytes, body.len() as u64, "response body size");
        format!("{info:?} {times:?}")
    };
    check_cuts(body, seed, gap, &format!("response {route:?} {status} {content_type:?}"), decode);
}

pub fn request(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let route = route(take(&mut u));
    let content = take::<u8>(&mut u) & 1 != 0;
    let raw_limit: u16 = take(&mut u);
    let seed: u64 = take(&mut u);
    let gap: u16 = take(&mut u);
    let body = u.take_rest();
    let capture = RequestCapture { content, raw_limit: raw_limit.into() };

    let decode = |pieces: &[&[u8]], gap_before: Option<usize>| {
        let mut d = RequestDecoder::with_capture(route, capture);
        for (i, piece) in pieces.iter().enumerate() {
            if gap_before == Some(i) {
                d.gap();
            }
            d.feed(piece);
        }
        let info = d.finish();
        assert_eq!(info.body_bytes, body.len() as u64, "request body size");
        format!("{info:?}")
    };
    check_cuts(body, seed, gap, &format!("request {route:?}"), decode);
}
