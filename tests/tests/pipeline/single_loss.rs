//! Every recorded fixture, every single lost segment: the span of the capture without that
//! segment against the span of the whole capture.
//!
//! - Never a wrong fact: every attribute of the damaged span is the whole span's, or absent, or
//!   one that says what the gap cost (flags, lost bytes, counts of what was seen, content); its
//!   status is the whole span's or unset; it starts where the whole one does unless the request
//!   was lost.
//! - Nothing lost that was still there: when the segment carried no fact — a streamed write
//!   whose documents, left out of the body, change neither the token counts, the finish reason,
//!   the status nor whether the stream was terminated (the oracle decodes that shorter body
//!   cleanly) — the call's tokens, finish reasons, status, end time and error are exact, flagged
//!   `response_gap` and nothing else. A lost request segment leaves the response's facts exact.
//!
//! (Every segment of every fixture, except in the middle of the few streams of hundreds of
//! chunks, where one token chunk is like the next: there 60 spread over the middle stand for
//! the rest, keeping the run to seconds.)

use testkit::drive;
use testkit::fixtures::{self, Fixture};
use testkit::synth::{ConnectionSpec, ExchangeTruth, Packet, synthesize};
use testkit::wire::{self, RenderOptions, WriteContent};
use tracer_core::llm::response::ResponseDecoder;
use tracer_core::llm::{CallTimes, Incomplete, LlmCall, ResponseInfo};
use tracer_core::segment::Timestamp;
use tracer_core::span::{AttrValue, SpanRecord, StatusCode, semconv as sc};

/// Attributes a gap may change: they say what it cost, or count what was seen.
const COST: &[&str] = &[
    sc::TRACER_INCOMPLETE,
    sc::TRACER_INCOMPLETE_REASONS,
    sc::TRACER_REQUEST_LOST_BYTES,
    sc::TRACER_RESPONSE_LOST_BYTES,
    sc::TRACER_RESPONSE_LOST_CHUNKS,
    sc::OLLAMA_RESPONSE_CHUNKS,
    sc::OLLAMA_RESPONSE_OUTPUT_CHUNKS,
    sc::OLLAMA_RESPONSE_TEXT_BYTES,
    sc::OLLAMA_RESPONSE_REASONING_BYTES,
];

/// Response segments tested in the middle of a long stream (all of them in shorter ones).
const MIDDLE: usize = 60;

/// What the oracle compares: the facts a body's documents carry.
fn body_facts(r: &ResponseInfo) -> String {
    format!(
        "{:?}/{:?} {:?} terminated={} error={}",
        r.input_tokens, r.output_tokens, r.finish_reasons, r.terminated, r.in_stream_error
    )
}

/// What the oracle compares: the facts a lost document may carry.
fn facts(c: &LlmCall) -> String {
    let r = &c.response;
    format!(
        "{:?} {:?}/{:?} {:?} terminated={} error={:?}",
        c.status,
        r.input_tokens,
        r.output_tokens,
        r.finish_reasons,
        r.terminated,
        c.error.as_ref().map(|e| &e.kind)
    )
}

fn connection(f: &Fixture) -> (Vec<Packet>, ExchangeTruth) {
    let spec = ConnectionSpec::loopback_v4(43_000).seed(11).exchange(wire::render(f, &RenderOptions::default()));
    let mut capture = synthesize(&[spec]).expect("synthesize");
    (capture.packets, capture.connections.remove(0).exchanges.remove(0))
}

fn one(packets: &[Packet]) -> (LlmCall, SpanRecord) {
    let mut spans = drive::spans(packets);
    assert_eq!(spans.len(), 1, "one span per call");
    spans.remove(0)
}

/// For each response write: it is streamed and its documents carry none of the call's facts (the
/// body without them decodes to the same facts).
fn fact_free_writes(f: &Fixture, truth: &ExchangeTruth, whole: &LlmCall) -> Vec<bool> {
    let decode = |body: &[u8]| {
        let (status, ct) = (whole.status.unwrap_or(0), whole.response.content_type.as_deref());
        let mut d = ResponseDecoder::new(whole.route, status, ct);
        d.feed(body, Timestamp(1));
        body_facts(&d.finish(Timestamp(1), &mut CallTimes::default()))
    };
    let body = f.response.body.as_bytes();
    let want = decode(body);
    truth
        .writes
        .iter()
        .map(|w| {
            matches!(w.content, WriteContent::NdjsonLine(_) | WriteContent::SseEvents(_))
                && !w.body.is_empty()
                && decode(&[&body[..w.body.start], &body[w.body.end..]].concat()) == want
        })
        .collect()
}

/// Checks one damaged span against the whole one; `Err` says what is wrong.
fn never_wrong(whole: &(LlmCall, SpanRecord), got: &(LlmCall, SpanRecord)) -> Result<(), String> {
    let (wc, ws) = whole;
    let (gc, gs) = got;
    for kv in &gs.attributes {
        if COST.contains(&&*kv.key) {
            continue;
        }
        // Tool calls and progress steps lost in the gap are missing, never made up.
        if [sc::OLLAMA_RESPONSE_TOOL_CALLS, sc::OLLAMA_RESPONSE_TOOL_CALL_IDS, sc::OLLAMA_PROGRESS_STEPS]
            .contains(&&*kv.key)
        {
            if let (AttrValue::StrArray(g), Some(AttrValue::StrArray(w))) = (&kv.value, ws.attr(&kv.key))
                && g.iter().all(|x| w.contains(x))
            {
                continue;
            }
            return Err(format!("{} = {:?}, whole {:?}", kv.key, kv.value, ws.attr(&kv.key)));
        }
        if ws.attr(&kv.key) != Some(&kv.value) {
            return Err(format!("{} = {:?}, whole {:?}", kv.key, kv.value, ws.attr(&kv.key)));
        }
    }
    if gs.status != ws.status && gs.status != StatusCode::Unset {
        return Err(format!("status {:?}, whole {:?}", gs.status, ws.status));
    }
    if gc.request_seen() && (gs.start != ws.start || gs.name != ws.name) {
        return Err(format!("span {} from {}, whole {} from {}", gs.name, gs.start.0, ws.name, ws.start.0));
    }
    if gc.error.is_some() && gc.error != wc.error {
        return Err(format!("error {:?}, whole {:?}", gc.error, wc.error));
    }
    Ok(())
}

/// Checks that a damaged call kept the facts of the whole one (`flags`: what it may say).
fn kept_the_facts(whole: &LlmCall, got: &LlmCall, flags: &[Incomplete]) -> Result<(), String> {
    let exact = got.status == whole.status
        && got.response.input_tokens == whole.response.input_tokens
        && got.response.output_tokens == whole.response.output_tokens
        && got.response.finish_reasons == whole.response.finish_reasons
        && got.times.end == whole.times.end
        && got.error == whole.error;
    if !exact {
        return Err(format!(
            "{} vs whole {}, end {} vs {}",
            facts(got),
            facts(whole),
            got.times.end.0,
            whole.times.end.0
        ));
    }
    if !got.incomplete.iter().all(|i| flags.contains(i)) || got.incomplete.is_empty() {
        return Err(format!("flagged {:?}", got.incomplete));
    }
    Ok(())
}

#[test]
fn every_fixture_every_lost_segment_never_lies_and_loses_no_fact_it_still_has() {
    let all = fixtures::load_all().expect("fixtures");
    let (mut runs, mut recoverable) = (0usize, 0usize);
    let mut failures = Vec::new();
    for f in &all {
        let (packets, truth) = connection(f);
        let whole = one(&packets);
        let free = fact_free_writes(f, &truth, &whole.0);
        // Where each response write lies in the response stream (after the head).
        let mut at = truth.head_len as u32;
        let spans: Vec<(u32, u32, bool)> = truth
            .writes
            .iter()
            .zip(&free)
            .map(|(w, &free)| {
                let s = (at, at + w.wire_len as u32, free);
                at += w.wire_len as u32;
                s
            })
            .collect();
        let response: Vec<usize> =
            (0..packets.len()).filter(|&i| packets[i].src.port() == 11434 && !packets[i].payload.is_empty()).collect();
        let n = response.len();
        let sampled = |i: usize| {
            let k = response.iter().position(|&r| r == i).unwrap_or(0);
            n <= 3 * MIDDLE
                || k < MIDDLE
                || k >= n - MIDDLE
                || (k - MIDDLE).is_multiple_of((n - 2 * MIDDLE).div_ceil(MIDDLE))
        };
        for (i, p) in packets.iter().enumerate().filter(|(i, p)| !p.payload.is_empty() && sampled(*i)) {
            let mut lossy = packets.clone();
            lossy.remove(i);
            let got = one(&lossy);
            runs += 1;
            let what = format!("{}: segment {i} ({} bytes)", f.name, p.payload.len());
            if let Err(e) = never_wrong(&whole, &got) {
                failures.push(format!("{what}: {e}"));
                continue;
            }
            // (A response whose request was lost is told by its shape in Go's compact JSON
            // (ollama-wire §0); a few recorders re-serialized theirs, pretty.)
            let compact = !f.response.body.trim_start().starts_with("{\n");
            let checked = if p.dst.port() == 11434 {
                compact.then(|| kept_the_facts(&whole.0, &got.0, &[Incomplete::RequestGap, Incomplete::RequestUnseen]))
            } else {
                let from = p.seq.wrapping_sub(truth.response_seq);
                let to = from + p.payload.len() as u32;
                let inside = spans.iter().any(|&(s, e, free)| free && s <= from && to <= e);
                inside.then(|| kept_the_facts(&whole.0, &got.0, &[Incomplete::ResponseGap]))
            };
            if let Some(result) = checked {
                recoverable += 1;
                if let Err(e) = result {
                    failures.push(format!("{what}: {e}"));
                }
            }
        }
    }
    println!("{runs} single losses over {} fixtures, {recoverable} of segments that carried no fact", all.len());
    assert!(failures.is_empty(), "{} of {runs}:\n{}", failures.len(), failures.join("\n"));
}
