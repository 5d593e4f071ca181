use std::net::SocketAddr;

use super::*;
use crate::llm::call::{CallTimes, OllamaMetrics, RequestInfo, ResponseInfo};
use crate::llm::{LlmCall, Route};
use crate::segment::{CaptureMeta, FlowKey};

fn call(route: Route) -> LlmCall {
    LlmCall {
        conn: 1,
        exchange: 1,
        flow: FlowKey {
            client: "127.0.0.1:5000".parse::<SocketAddr>().unwrap(),
            server: "127.0.0.1:11434".parse::<SocketAddr>().unwrap(),
        },
        meta: CaptureMeta::default(),
        route,
        method: "POST".into(),
        path: "/api/chat".into(),
        user_agent: None,
        traceparent: None,
        tracestate: None,
        headers: Vec::new(),
        status: Some(200),
        request: RequestInfo { model: Some("llama3.2".into()), ..Default::default() },
        response: ResponseInfo::default(),
        times: CallTimes::default(),
        incomplete: Vec::new(),
        error: None,
    }
}

const S: u64 = 1_000_000_000;

#[test]
fn phases_are_children_on_the_capture_timeline() {
    let mut c = call(Route::Chat);
    c.times.request_start = Timestamp(100 * S);
    c.times.last_chunk = Some(Timestamp(110 * S));
    c.times.end = Timestamp(110 * S + 1_000);
    c.response.ollama = OllamaMetrics {
        total_duration: Some(9 * S),
        load_duration: Some(6 * S),
        prompt_eval_count: Some(26),
        prompt_eval_duration: Some(S / 2),
        eval_count: Some(200),
        eval_duration: Some(2 * S),
    };
    let spans = SpanBuilder::new(SpanConfig { id_seed: Some(3), ..Default::default() }).build_all(&c);
    assert_eq!(spans.len(), 4);
    let parent = &spans[0];
    assert_eq!(parent.attr(sc::OLLAMA_COLD_START), Some(&AttrValue::Bool(true)));
    assert_eq!(parent.attr(sc::OLLAMA_WAIT_DURATION), None, "a cold load is not waiting");
    let by = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
    for child in &spans[1..] {
        assert_eq!(child.kind, SpanKind::Internal);
        assert_eq!(child.parent_span_id, Some(parent.span_id));
        assert_eq!(child.trace_id, parent.trace_id);
        assert!(child.start >= parent.start && child.end <= parent.end);
    }
    // total ends with the final chunk (110 s): it started at 101 s.
    assert_eq!((by("load").start.0, by("load").end.0), (101 * S, 107 * S));
    assert_eq!((by("prompt_eval").start.0, by("prompt_eval").end.0), (107 * S, 107 * S + S / 2));
    assert_eq!((by("eval").start.0, by("eval").end.0), (108 * S, 110 * S));
    assert_eq!(by("eval").attr(sc::OLLAMA_TOKENS_PER_SECOND), Some(&AttrValue::F64(100.0)));
    assert_eq!(by("prompt_eval").attr(sc::OLLAMA_PROMPT_EVAL_COUNT), Some(&AttrValue::Int(26)));
}

#[test]
fn warm_load_is_wait_and_no_metrics_means_no_phases() {
    let mut c = call(Route::Chat);
    c.times.request_start = Timestamp(S);
    c.times.end = Timestamp(2 * S);
    c.response.ollama =
        OllamaMetrics { load_duration: Some(20_000_000), total_duration: Some(S / 2), ..Default::default() };
    let spans = SpanBuilder::new(SpanConfig::default()).build_all(&c);
    assert_eq!(spans[0].attr(sc::OLLAMA_COLD_START), Some(&AttrValue::Bool(false)));
    assert_eq!(spans[0].attr(sc::OLLAMA_WAIT_DURATION), Some(&AttrValue::Int(20_000_000)));
    assert_eq!(spans[0].attr(sc::OLLAMA_OUTSIDE_DURATION), Some(&AttrValue::Int((S / 2) as i64)));
    assert_eq!(spans.len(), 2, "only the load phase was reported");

    let plain = call(Route::OpenAiChat);
    assert_eq!(SpanBuilder::new(SpanConfig::default()).build_all(&plain).len(), 1);
}

#[test]
fn traceparent_makes_the_span_a_child() {
    let mut c = call(Route::Chat);
    c.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    c.tracestate = Some("vendor=1".into());
    let s = SpanBuilder::new(SpanConfig::default()).build(&c);
    assert_eq!(hex(&s.trace_id), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(s.parent_span_id.map(|p| hex(&p)).as_deref(), Some("b7ad6b7169203331"));
    assert_eq!(s.trace_state.as_deref(), Some("vendor=1"));
    assert_ne!(hex(&s.span_id), "b7ad6b7169203331");
}
