//! The fast path for common token chunks against the full scanner: the same stream bodies
//! decoded with it on and off must give the same call, whole, cut anywhere, and with bytes
//! missing.
//!
//! Input: `[shape: u8][split seed: u64][gap at: u16][rest...]`. The shape picks the stream
//! (native chat or generate NDJSON, OpenAI chat or completions SSE, Anthropic SSE) and how the
//! rest becomes its body: as it is, or — so that most documents reach the fast path — each
//! 0x00-separated part of it put raw into a token chunk of the stream's shape (as the text,
//! the model, a key or a whole value: quotes, escapes, control bytes and invalid UTF-8 included),
//! followed by the stream's final chunk.

use arbitrary::Unstructured;
use tracer_core::llm::response::ResponseDecoder;
use tracer_core::llm::{CallTimes, Route};
use tracer_core::segment::Timestamp;

use super::input::{Encoder, split, take};

/// The streams that have a fast path: route, content type, token chunk template (`@` is where
/// a part goes), final chunk.
pub const STREAMS: [(Route, &str, &str, &str); 5] = [
    (
        Route::Chat,
        "application/x-ndjson",
        "{\"model\":\"llama3.2\",\"created_at\":\"2025-01-01T00:00:00.1Z\",\"message\":{\"role\":\"assistant\",\"content\":\"@\"},\"done\":false}\n",
        "{\"model\":\"llama3.2\",\"created_at\":\"2025-01-01T00:00:01Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\",\"done\":true,\"total_duration\":5,\"eval_count\":3,\"prompt_eval_count\":2}\n",
    ),
    (
        Route::Generate,
        "application/x-ndjson",
        "{\"model\":\"qwen3\",\"created_at\":\"2025-01-01T00:00:00.1Z\",\"response\":\"@\",\"thinking\":\"@\",\"done\":false}\n",
        "{\"model\":\"qwen3\",\"created_at\":\"2025-01-01T00:00:01Z\",\"response\":\"\",\"done\":true,\"done_reason\":\"stop\",\"context\":[1,2],\"eval_count\":3}\n",
    ),
    (
        Route::OpenAiChat,
        "text/event-stream",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"llama3.2\",\"system_fingerprint\":\"fp_ollama\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"@\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"llama3.2\",\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
    ),
    (
        Route::OpenAiCompletions,
        "text/event-stream",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1700000000,\"model\":\"llama3.2\",\"system_fingerprint\":\"fp_ollama\",\"choices\":[{\"text\":\"@\",\"index\":0,\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":0,\"total_tokens\":0}}\n\n",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1700000000,\"model\":\"llama3.2\",\"choices\":[{\"text\":\"\",\"index\":0,\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
    ),
    (
        Route::AnthropicMessages,
        "text/event-stream",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"@\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ),
];

/// Fuzz bytes for this target: `body` as it is (`templated` false) or parts for the template.
pub fn encode(stream: usize, templated: bool, seed: u64, rest: &[u8]) -> Vec<u8> {
    let shape = ((stream as u8) << 1) | u8::from(templated);
    Encoder::default().u8(shape).u64(seed).u16(0).raw(rest).finish()
}

/// The body of a templated input: each part in a token chunk (where the template's `@` is; a
/// part's first byte may move it to another place in the chunk), then the final chunk.
pub fn templated_body(stream: usize, rest: &[u8]) -> Vec<u8> {
    let (_, _, token, last) = STREAMS[stream % STREAMS.len()];
    let mut body = Vec::new();
    for part in rest.split(|b| *b == 0) {
        let doc = match part.first().map(|b| b % 8) {
            // A key or a whole value replaced: shapes the fast path must refuse or read right.
            Some(6) => token.replacen("\"content\"", &format!("\"{}\"", String::from_utf8_lossy(&part[1..])), 1),
            Some(7) => token.replacen("false", &String::from_utf8_lossy(&part[1..]), 1),
            _ => token.replace('@', &String::from_utf8_lossy(part)),
        };
        // Bytes, not text: invalid UTF-8 too (the lossy form above only chose the place).
        body.extend_from_slice(&raw_splice(doc.as_bytes(), part));
    }
    body.extend_from_slice(last.as_bytes());
    body
}

/// `doc` with the replacement characters a lossy conversion of `part` put in it swapped back
/// for `part`'s own bytes, when it has any.
fn raw_splice(doc: &[u8], part: &[u8]) -> Vec<u8> {
    let lossy = String::from_utf8_lossy(part);
    if lossy.as_bytes() == part {
        return doc.to_vec();
    }
    match doc.windows(lossy.len().max(1)).position(|w| w == lossy.as_bytes()) {
        Some(at) if !lossy.is_empty() => [&doc[..at], part, &doc[at + lossy.len()..]].concat(),
        _ => doc.to_vec(),
    }
}

/// Decodes `pieces` of one response body, with the fast path on or off, bytes missing before
/// piece `gap_before`: the call as the full decoder reports it, and the documents the fast path
/// took.
pub fn decode(stream: usize, pieces: &[&[u8]], fast: bool, gap_before: Option<usize>) -> (String, u64) {
    let (route, ctype, _, _) = STREAMS[stream % STREAMS.len()];
    let mut d = ResponseDecoder::with_capture(route, 200, Some(ctype), false);
    d.set_headers(Some(ctype.to_string()), None);
    d.set_fast_path(fast);
    for (i, piece) in pieces.iter().enumerate() {
        if gap_before == Some(i) {
            d.gap();
        }
        d.feed(piece, Timestamp(1_000 + 7 * i as u64));
    }
    let fast_docs = d.fast_docs();
    let mut times = CallTimes::default();
    let info = d.finish(Timestamp(1_000_000), &mut times);
    (format!("{info:?} {times:?}"), fast_docs)
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let shape: u8 = take(&mut u);
    let seed: u64 = take(&mut u);
    let gap: u16 = take(&mut u);
    let rest = u.take_rest();
    let stream = usize::from(shape >> 1) % STREAMS.len();
    let body = if shape & 1 == 1 { templated_body(stream, rest) } else { rest.to_vec() };
    let pieces = split(&body, seed);
    let gap_at = (gap > 0 && !pieces.is_empty()).then(|| usize::from(gap) % pieces.len());
    let whole: [&[u8]; 1] = [&body];
    for (cut, gap_before) in [(&whole[..], None), (&pieces[..], None), (&pieces[..], gap_at)] {
        let (full, off) = decode(stream, cut, false, gap_before);
        let (fast, _) = decode(stream, cut, true, gap_before);
        assert_eq!(off, 0, "the fast path ran while turned off");
        assert_eq!(full, fast, "{:?}: the fast path decoded differently", STREAMS[stream].0);
    }
}
