//! Property tests of invariance (proptest):
//!
//! - reassembly: a connection's byte streams, gap accounting, ends and close are the same under
//!   any permutation of its packets within a bounded reorder window and any duplication of them
//!   (and the calls decoded from them carry the same facts);
//! - decoding: every fact of a call (tokens, model, finish reasons, status, chunk counts, tool
//!   calls, byte counts, times) is the same under any split of the bytes into segments — for a
//!   sample of the recorded fixtures and for generated NDJSON and SSE streams, whose expected
//!   facts are known.

use std::net::SocketAddr;

use proptest::prelude::*;
use serde_json::json;
use testkit::drive;
use testkit::fixtures::{self, Fixture};
use testkit::synth::{ConnectionSpec, Packet, Segmentation, TcpConfig, synthesize};
use testkit::wire::{self, RenderOptions};
use tracer_core::llm::LlmCall;
use tracer_core::reassembly::{CloseReason, Reassembler, ReassemblyConfig, StreamEvent};
use tracer_core::segment::{Direction, Orientation};

/// Fixtures of every shape, small enough for many cases (the first four of each route and
/// stream kind).
fn sample() -> &'static [Fixture] {
    static SAMPLE: std::sync::OnceLock<Vec<Fixture>> = std::sync::OnceLock::new();
    SAMPLE.get_or_init(|| {
        let all = fixtures::load_all().expect("fixtures");
        let mut per_route = std::collections::HashMap::<String, usize>::new();
        all.into_iter()
            .filter(|f| f.request.body.len() + f.response.body.len() < 16_000)
            .filter(|f| {
                let n = per_route.entry(format!("{} {}", f.path(), f.is_streamed())).or_default();
                *n += 1;
                *n <= 4
            })
            .collect()
    })
}

/// One connection carrying `f`, cut into small segments so there is much to reorder.
fn connection(f: &Fixture, mss: usize) -> Vec<Packet> {
    let tcp = TcpConfig {
        client_mss: mss,
        server_mss: mss,
        request_segmentation: Segmentation::Mss,
        response_segmentation: Segmentation::Mss,
        ..TcpConfig::default()
    };
    let spec =
        ConnectionSpec::loopback_v4(41_000).seed(3).tcp(tcp).exchange(wire::render(f, &RenderOptions::default()));
    synthesize(&[spec]).expect("synthesize").packets
}

/// What reassembly made of a capture: per direction the bytes (gaps as `(pos, len)`), the ends
/// and the close.
#[derive(Default, PartialEq)]
struct Streams {
    bytes: [Vec<u8>; 2],
    gaps: Vec<(Direction, u64, u64)>,
    ends: Vec<Direction>,
    closes: Vec<CloseReason>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned();
        write!(
            f,
            "request {} bytes {:?}…, response {} bytes {:?}…, gaps {:?}, ends {:?}, closes {:?}",
            self.bytes[0].len(),
            text(&self.bytes[0]),
            self.bytes[1].len(),
            text(&self.bytes[1]),
            self.gaps,
            self.ends,
            self.closes
        )
    }
}

fn reassemble(packets: &[Packet]) -> Streams {
    let orientation = Orientation::new(&[11434]);
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut s = Streams::default();
    let mut sink = |ev: StreamEvent<'_>| match ev {
        StreamEvent::Data { dir, data, .. } => s.bytes[dir.index()].extend_from_slice(data),
        StreamEvent::Gap { dir, pos, len, .. } => s.gaps.push((dir, pos, len)),
        StreamEvent::End { dir, .. } => s.ends.push(dir),
        StreamEvent::Close { reason, .. } => s.closes.push(reason),
        StreamEvent::Open { .. } | StreamEvent::Peer { .. } => {}
        // Captures from files never skip on purpose.
        StreamEvent::Skipped { .. } => panic!("a skip in a file capture"),
    };
    for p in packets {
        if let Some(seg) = drive::segment(p, &orientation) {
            r.push(&seg, &mut sink);
        }
    }
    r.finish(&mut sink);
    // Ends arrive in whichever order the FINs were completed: compare them as a set.
    s.ends.sort_by_key(|d| d.index());
    s
}

/// Moves each packet by less than `window` places (packet `i` goes to rank `i + shift[i]`),
/// inserts duplicates (`dup[i]`: a copy of packet `i`, `dup[i] - 1` places after it), and keeps
/// the capture clock where it was: packets move, timestamps do not.
fn perturb(packets: &[Packet], window: usize, shift: &[u8], dup: &[u8]) -> Vec<Packet> {
    let mut keyed: Vec<(usize, Packet)> = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        keyed.push((i + usize::from(shift[i % shift.len()]) % window, p.clone()));
        let d = usize::from(dup[i % dup.len()]);
        if d > 0 {
            keyed.push((i + (d - 1) % window, p.clone()));
        }
    }
    keyed.sort_by_key(|(k, _)| *k);
    let mut slots: Vec<u64> = keyed.iter().map(|(_, p)| p.ts_ns).collect();
    slots.sort_unstable();
    keyed
        .into_iter()
        .zip(slots)
        .map(|((_, mut p), ts)| {
            p.ts_ns = ts;
            p
        })
        .collect()
}

/// The facts of a call that do not depend on when its packets were captured.
fn facts(c: &LlmCall) -> String {
    let r = &c.response;
    format!(
        "{:?} {:?} {:?} model={:?}/{:?} tokens={:?}/{:?} finish={:?} chunks={}/{} tools={:?} bytes={}/{} text={} \
         incomplete={:?} error={:?}",
        c.route,
        c.status,
        c.path,
        c.request.model,
        r.model,
        r.input_tokens,
        r.output_tokens,
        r.finish_reasons,
        r.chunks,
        r.output_chunks,
        r.tool_calls,
        c.request.body_bytes,
        r.body_bytes,
        r.text_bytes,
        c.incomplete,
        c.error
    )
}

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(cases(2048))]

    /// Reordering within a window of up to 4 packets and duplicating any packets changes neither
    /// the byte streams nor the gap accounting (there is none), nor what the calls say.
    #[test]
    fn reassembly_is_invariant_under_bounded_reordering_and_duplication(
        which in 0usize..1_000,
        mss in prop_oneof![Just(64usize), Just(301), Just(1448)],
        window in 2usize..=4,
        shift in prop::collection::vec(0u8..4, 1..64),
        dup in prop::collection::vec(prop_oneof![4 => Just(0u8), 1 => 1u8..5], 1..64),
    ) {
        let f = &sample()[which % sample().len()];
        let packets = connection(f, mss);
        let want = reassemble(&packets);
        prop_assert!(want.gaps.is_empty(), "{}: the clean capture has gaps", f.name);
        let client: SocketAddr = packets[0].src;
        let server: SocketAddr = packets[0].dst;
        prop_assert_eq!(&want.bytes[0], &testkit::synth::reassemble(&packets, client, server));
        prop_assert_eq!(&want.bytes[1], &testkit::synth::reassemble(&packets, server, client));

        let perturbed = perturb(&packets, window, &shift, &dup);
        let got = reassemble(&perturbed);
        prop_assert_eq!(&got, &want, "{}: reassembly changed", f.name);

        let (want_calls, _) = drive::calls(&packets);
        let (got_calls, _) = drive::calls(&perturbed);
        let want_facts: Vec<String> = want_calls.iter().map(facts).collect();
        let got_facts: Vec<String> = got_calls.iter().map(facts).collect();
        prop_assert_eq!(got_facts, want_facts, "{}: calls changed", f.name);
    }
}

/// Splits every payload of `packets` at offsets drawn from `cuts` (parts keep their packet's
/// timestamp, so even the times of a call must not change).
fn split(packets: &[Packet], cuts: &[u16]) -> Vec<Packet> {
    let mut out = packets.to_vec();
    let mut i = 0;
    let mut k = 0;
    while i < out.len() {
        let len = out[i].payload.len();
        if len < 2 {
            i += 1;
            continue;
        }
        let n = usize::from(cuts[k % cuts.len()] % 4);
        let mut offsets: Vec<usize> =
            (0..n).map(|j| 1 + usize::from(cuts[(k + j + 1) % cuts.len()]) % (len - 1)).collect();
        k += n + 1;
        offsets.sort_unstable();
        offsets.dedup();
        if offsets.is_empty() {
            i += 1;
        } else {
            i += testkit::synth::perturb::split_payload(&mut out, i, &offsets).expect("offsets inside the payload");
        }
    }
    out
}

fn one_call(packets: &[Packet]) -> LlmCall {
    let (mut calls, _) = drive::calls(packets);
    assert_eq!(calls.len(), 1, "one call per exchange");
    calls.remove(0)
}

fn packets_of(f: &Fixture) -> Vec<Packet> {
    let spec = ConnectionSpec::loopback_v4(42_000).seed(9).exchange(wire::render(f, &RenderOptions::default()));
    synthesize(&[spec]).expect("synthesize").packets
}

/// A fixture made up on the spot.
fn made_up(path: &str, request: serde_json::Value, content_type: &str, body: String) -> Fixture {
    Fixture::made_up(
        format!("generated {path}"),
        "properties.rs",
        format!("http://localhost:11434{path}"),
        &[("Content-Type", "application/json")],
        request.to_string(),
        content_type,
        body,
    )
}

/// Text pieces with what tokenizers produce: multi-byte characters, quotes, newlines, escapes.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{1,6}",
        Just("é".to_string()),
        Just("日本".to_string()),
        Just("🙂".to_string()),
        Just("\"quoted\"\n".to_string()),
        Just("<tag>&\\".to_string()),
    ]
}

/// A native `/api/chat` NDJSON stream and the facts it must give.
fn native_stream(model: &str, tokens: &[String], prompt: u64, eval: u64, reason: &str) -> Fixture {
    let mut body = String::new();
    for t in tokens {
        let line = json!({"model": model, "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": t}, "done": false});
        body.push_str(&format!("{line}\n"));
    }
    let last = json!({"model": model, "created_at": "2026-01-01T00:00:01Z",
        "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": reason,
        "total_duration": 5_000_000, "prompt_eval_count": prompt, "eval_count": eval, "eval_duration": 4_000_000});
    body.push_str(&format!("{last}\n"));
    let request = json!({"model": model, "messages": [{"role": "user", "content": "hi ✓"}]});
    made_up("/api/chat", request, "application/x-ndjson", body)
}

/// An OpenAI `/v1/chat/completions` SSE stream with usage, and the facts it must give.
fn openai_stream(model: &str, tokens: &[String], prompt: u64, completion: u64, reason: &str) -> Fixture {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut body = String::new();
    for t in tokens {
        body.push_str(&format!("data: {}\n\n", chunk(json!({"role": "assistant", "content": t}), None)));
    }
    body.push_str(&format!("data: {}\n\n", chunk(json!({"role": "assistant", "content": ""}), Some(reason))));
    let usage = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion}});
    body.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
    let request = json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": true,
        "stream_options": {"include_usage": true}});
    made_up("/v1/chat/completions", request, "text/event-stream", body)
}

proptest! {
    #![proptest_config(cases(2048))]

    /// A recorded exchange cut anywhere into segments gives the same call, to the nanosecond.
    #[test]
    fn recorded_calls_are_invariant_under_any_split(
        which in 0usize..1_000,
        cuts in prop::collection::vec(any::<u16>(), 1..200),
    ) {
        let f = &sample()[which % sample().len()];
        let packets = packets_of(f);
        let want = one_call(&packets);
        prop_assert_eq!(one_call(&split(&packets, &cuts)), want, "{}", f.name);
    }

    /// Generated native and OpenAI streams: the expected facts, however the bytes are cut.
    #[test]
    fn generated_streams_give_their_facts_under_any_split(
        openai in any::<bool>(),
        model in prop_oneof![Just("llama3.2"), Just("qwen3:0.6b"), Just("gpt-oss:20b")],
        tokens in prop::collection::vec(token(), 1..12),
        prompt in 1u64..5_000,
        eval in 1u64..5_000,
        reason in prop_oneof![Just("stop"), Just("length")],
        cuts in prop::collection::vec(any::<u16>(), 1..200),
    ) {
        let f = if openai {
            openai_stream(model, &tokens, prompt, eval, reason)
        } else {
            native_stream(model, &tokens, prompt, eval, reason)
        };
        let packets = packets_of(&f);
        let want = one_call(&packets);
        let r = &want.response;
        prop_assert_eq!(want.status, Some(200));
        prop_assert_eq!(want.request.model.as_deref(), Some(model));
        prop_assert_eq!(r.model.as_deref(), Some(model));
        prop_assert_eq!((r.input_tokens, r.output_tokens), (Some(prompt), Some(eval)));
        prop_assert_eq!(&r.finish_reasons, &vec![reason.to_string()]);
        let text: usize = tokens.iter().map(String::len).sum();
        prop_assert_eq!(r.text_bytes, text as u64);
        prop_assert!(r.terminated && r.streamed, "{r:?}");
        prop_assert!(want.incomplete.is_empty() && want.error.is_none(), "{want:?}");
        // De-chunked, before any content coding: the body as the server wrote it.
        prop_assert_eq!(r.body_bytes, f.response.body.len() as u64);
        prop_assert_eq!(one_call(&split(&packets, &cuts)), want);
    }
}
