//! What a gap costs, told exactly: the facts the capture still holds are kept (Ollama's counts
//! from the final chunk, the finish reason, the true end), the span says how many bytes — and,
//! where the framing tells, how many chunks — were lost, content with a hole is marked, and the
//! timings a hole would falsify are left out.

use testkit::drive;
use testkit::fixtures::{self, Fixture};
use testkit::synth::{ConnectionSpec, Packet, Segmentation, TcpConfig, synthesize};
use testkit::wire::{self, RenderOptions, RequestBodyFraming, RequestOptions, WriteContent};
use tracer_core::llm::content::{ContentConfig, GAP_MARK};
use tracer_core::llm::{Incomplete, LlmCall, LlmConfig};
use tracer_core::pipeline::PipelineConfig;
use tracer_core::span::{SpanConfig, SpanRecord, semconv as sc};

const NATIVE_STREAM: &str = "traceloop-openllmetry__test_ollama_streaming_chat_legacy__0";
const IMAGE_REQUEST: &str = "activeagents-activeagent__test_agent_image_input__0";

fn fixture(name: &str) -> Fixture {
    fixtures::load(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// One connection carrying `f`, and where each response write lies in the server's stream
/// (sequence numbers of its first and last byte + 1).
fn connection(f: &Fixture, tcp: TcpConfig, opts: &RenderOptions) -> (Vec<Packet>, Vec<(WriteContent, u32, u32)>) {
    let spec = ConnectionSpec::loopback_v4(44_000).seed(3).tcp(tcp).exchange(wire::render(f, opts));
    let capture = synthesize(&[spec]).expect("synthesize");
    let ex = &capture.connections[0].exchanges[0];
    let mut at = ex.response_seq.wrapping_add(ex.head_len as u32);
    let writes = ex
        .writes
        .iter()
        .map(|w| {
            let s = (w.content.clone(), at, at.wrapping_add(w.wire_len as u32));
            at = s.2;
            s
        })
        .collect();
    (capture.packets, writes)
}

/// Calls and spans, with content captured.
fn spans(packets: &[Packet]) -> Vec<(LlmCall, SpanRecord)> {
    let pipeline =
        PipelineConfig { llm: LlmConfig { capture_content: true, ..LlmConfig::default() }, ..Default::default() };
    let content = ContentConfig::capturing(64 * 1024, false, &[]).expect("content config");
    let config = SpanConfig { id_seed: Some(1), content: Some(content), ..Default::default() };
    drive::all_spans(packets, pipeline, config).into_iter().map(|(c, mut s)| (c, s.remove(0))).collect()
}

fn one(packets: &[Packet]) -> (LlmCall, SpanRecord) {
    let mut all = spans(packets);
    assert_eq!(all.len(), 1);
    all.remove(0)
}

/// `packets` without the server segments that fall inside write `w`.
fn without_write(packets: &[Packet], write: &(WriteContent, u32, u32)) -> (Vec<Packet>, u64) {
    let (_, from, to) = *write;
    let inside =
        |p: &Packet| p.src.port() == 11434 && !p.payload.is_empty() && p.seq.wrapping_sub(from) < to.wrapping_sub(from);
    let lost: u64 = packets.iter().filter(|p| inside(p)).map(|p| p.payload.len() as u64).sum();
    assert!(lost > 0);
    (packets.iter().filter(|p| !inside(p)).cloned().collect(), lost)
}

fn assert_same_facts(got: &LlmCall, whole: &LlmCall) {
    assert_eq!(got.status, whole.status);
    assert_eq!(
        (got.response.input_tokens, got.response.output_tokens),
        (whole.response.input_tokens, whole.response.output_tokens)
    );
    assert!(got.response.input_tokens.is_some() && got.response.output_tokens.is_some());
    assert_eq!(got.response.finish_reasons, whole.response.finish_reasons);
    assert_eq!(got.times.end, whole.times.end, "the true end");
    assert_eq!(got.error, whole.error);
}

#[test]
fn a_lost_token_chunk_costs_that_chunk_and_says_so() {
    let f = fixture(NATIVE_STREAM);
    let (packets, writes) = connection(&f, TcpConfig::default(), &RenderOptions::default());
    let (whole, whole_span) = one(&packets);
    let middle = writes.len() / 2;
    assert!(matches!(writes[middle].0, WriteContent::NdjsonLine(_)));
    let (lossy, lost) = without_write(&packets, &writes[middle]);
    let (got, span) = one(&lossy);
    assert_same_facts(&got, &whole);
    assert_eq!(got.incomplete, vec![Incomplete::ResponseGap], "not truncated, not invalid, terminated");
    assert_eq!(span.attr_int(sc::TRACER_RESPONSE_LOST_BYTES), Some(lost as i64));
    // A whole chunk went with its segment: how many, the framing cannot tell.
    assert_eq!(span.attr(sc::TRACER_RESPONSE_LOST_CHUNKS), None);
    assert_eq!(span.attr(sc::OLLAMA_RESPONSE_BODY_SIZE), None, "the body's size is not known");
    assert_eq!(
        span.attr_int(sc::OLLAMA_RESPONSE_CHUNKS),
        Some(whole_span.attr_int(sc::OLLAMA_RESPONSE_CHUNKS).unwrap() - 1)
    );
    // Timings across the hole would lie: left out. The first chunk came before it: kept.
    assert!(whole_span.attr(sc::OLLAMA_RESPONSE_TIME_PER_OUTPUT_CHUNK).is_some());
    assert_eq!(span.attr(sc::OLLAMA_RESPONSE_TIME_PER_OUTPUT_CHUNK), None);
    assert_eq!(span.attr(sc::OLLAMA_RESPONSE_CHUNKS_PER_SECOND), None);
    assert_eq!(got.times.chunk_gaps.count, 0, "no chunk-gap histogram either");
    assert_eq!(
        span.attr(sc::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK),
        whole_span.attr(sc::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)
    );
    assert_eq!(span.attr(sc::OLLAMA_OUTSIDE_DURATION), whole_span.attr(sc::OLLAMA_OUTSIDE_DURATION));
    // The text around the hole is kept, the hole marked.
    let text = |s: &SpanRecord| s.attr_str(sc::GEN_AI_OUTPUT_MESSAGES).unwrap().to_string();
    assert!(!text(&whole_span).contains(GAP_MARK));
    assert_eq!(text(&span).matches(GAP_MARK).count(), 1, "{}", text(&span));
}

#[test]
fn a_gap_inside_one_chunk_says_which_and_keeps_the_body_size() {
    let f = fixture(NATIVE_STREAM);
    // Server segments of 40 bytes: every chunk spans several.
    let tcp = TcpConfig { response_segmentation: Segmentation::Fixed(40), ..TcpConfig::default() };
    let (packets, writes) = connection(&f, tcp, &RenderOptions::default());
    let (whole, whole_span) = one(&packets);
    let (_, from, to) = writes[writes.len() / 2];
    let i = packets
        .iter()
        .position(|p| {
            p.src.port() == 11434 && p.seq.wrapping_sub(from) > 0 && p.seq.wrapping_sub(from) < to - from - 40
        })
        .expect("a segment inside the chunk");
    let mut lossy = packets.clone();
    lossy.remove(i);
    let (got, span) = one(&lossy);
    assert_same_facts(&got, &whole);
    assert_eq!(span.attr_int(sc::TRACER_RESPONSE_LOST_BYTES), Some(40));
    assert_eq!(span.attr_int(sc::TRACER_RESPONSE_LOST_CHUNKS), Some(1));
    assert_eq!(span.attr(sc::OLLAMA_RESPONSE_BODY_SIZE), whole_span.attr(sc::OLLAMA_RESPONSE_BODY_SIZE));
}

#[test]
fn without_the_first_output_chunk_there_is_no_time_to_first_chunk() {
    let f = fixture(NATIVE_STREAM);
    // The head on its own (not with the first chunk, as Go sends it): the first chunk alone lost.
    let tcp = TcpConfig { coalesce_response_head: false, ..TcpConfig::default() };
    let (packets, writes) = connection(&f, tcp, &RenderOptions::default());
    let (whole, whole_span) = one(&packets);
    assert!(whole_span.attr(sc::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK).is_some());
    let (lossy, _) = without_write(&packets, &writes[0]);
    let (got, span) = one(&lossy);
    assert_same_facts(&got, &whole);
    assert_eq!(span.attr(sc::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK), None, "a later chunk's time is not the first's");
}

#[test]
fn a_lost_terminator_ends_the_span_at_the_last_byte_seen_and_claims_no_duration() {
    let f = fixture(NATIVE_STREAM);
    // Two calls on one connection (a keep-alive client): the next response says the first
    // body ended in the gap.
    let rendered = wire::render(&f, &RenderOptions::default());
    let spec = ConnectionSpec::loopback_v4(44_001).seed(3).exchange(rendered.clone()).exchange(rendered);
    let capture = synthesize(&[spec]).expect("synthesize");
    let ex = &capture.connections[0].exchanges[0];
    let terminator = ex.response_seq.wrapping_add(ex.response_len as u32 - 5);
    let packets = capture.packets;
    let whole = spans(&packets);
    let lossy: Vec<Packet> = packets
        .iter()
        .filter(|p| !(p.src.port() == 11434 && p.seq == terminator && p.payload.len() == 5))
        .cloned()
        .collect();
    assert_eq!(lossy.len() + 1, packets.len());
    let got = spans(&lossy);
    assert_eq!(got.len(), 2);
    let ((g, span), (w, whole_span)) = (&got[0], &whole[0]);
    assert_eq!(
        (g.response.input_tokens, g.response.output_tokens),
        (w.response.input_tokens, w.response.output_tokens)
    );
    assert_eq!(g.response.finish_reasons, w.response.finish_reasons);
    assert_eq!(g.incomplete, vec![Incomplete::ResponseGap]);
    assert!(g.times.end_lost);
    assert_eq!(Some(g.times.end), g.times.last_chunk, "the final chunk is the last byte seen");
    assert!(g.times.end < w.times.end);
    assert!(whole_span.attr(sc::OLLAMA_OUTSIDE_DURATION).is_some());
    assert_eq!(span.attr(sc::OLLAMA_OUTSIDE_DURATION), None);
    assert_eq!(got[1].0, whole[1].0, "the next call is whole");
}

/// A large request (an image) in Ethernet-sized segments, its body framed as `framing`.
fn image_call(framing: RequestBodyFraming) -> (Vec<Packet>, usize) {
    let f = fixture(IMAGE_REQUEST);
    let tcp = TcpConfig { client_mss: 1448, ..TcpConfig::default() };
    let opts =
        RenderOptions { request: RequestOptions { body_framing: framing, ..Default::default() }, ..Default::default() };
    let (packets, _) = connection(&f, tcp, &opts);
    let requests: Vec<usize> =
        (0..packets.len()).filter(|&i| packets[i].dst.port() == 11434 && !packets[i].payload.is_empty()).collect();
    assert!(requests.len() >= 4, "{} request segments", requests.len());
    (packets, requests[requests.len() / 2])
}

#[test]
fn a_gap_inside_a_request_body_leaves_the_response_whole() {
    for framing in [RequestBodyFraming::ContentLength, RequestBodyFraming::Chunked { chunk_size: 1000 }] {
        let (packets, victim) = image_call(framing);
        let (whole, whole_span) = one(&packets);
        let mut lossy = packets.clone();
        let lost = lossy.remove(victim).payload.len();
        let (got, span) = one(&lossy);
        let what = format!("{framing:?}");
        assert_eq!(got.status, whole.status, "{what}");
        assert_eq!(got.response, whole.response, "{what}: the response is untouched");
        assert_eq!(got.times.end, whole.times.end, "{what}");
        assert_eq!(got.incomplete, vec![Incomplete::RequestGap], "{what}: cut, not invalid");
        // (What came before the gap is kept; this client sends the model after the image.)
        assert!(got.request.model.is_none() || got.request.model == whole.request.model, "{what}");
        assert!(!got.request.invalid_json, "{what}");
        assert_eq!(span.attr_int(sc::TRACER_REQUEST_LOST_BYTES), Some(lost as i64), "{what}");
        // A length-delimited body's size is known; a chunked one's, with framing lost, is not.
        let size = span.attr(sc::OLLAMA_REQUEST_BODY_SIZE);
        match framing {
            RequestBodyFraming::ContentLength => assert_eq!(size, whole_span.attr(sc::OLLAMA_REQUEST_BODY_SIZE)),
            _ => assert_eq!(size, None, "{what}"),
        }
    }
}
