use super::*;
use crate::llm::call::OllamaMetrics;
use crate::llm::{Incomplete, LlmCall, Route};
use crate::segment::Timestamp;
use semconv as sc;

fn call(route: Route) -> LlmCall {
    LlmCall::for_test(route)
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
        prompt_eval_cached_count: None,
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

use crate::llm::call::{CallError, ErrorKind, ToolCall};
use crate::llm::content::{ContentConfig, InputContent, Message, OutputContent, Part};
use crate::llm::messages::{ConversationFacts, ToolResult};

fn turn(client: &str, prefixes: &[u64], start_s: u64, end_s: u64) -> LlmCall {
    let mut c = call(Route::OpenAiChat);
    c.flow.client = client.parse().unwrap();
    c.request.conversation = ConversationFacts { prefixes: prefixes.to_vec(), ..Default::default() };
    c.times.request_start = Timestamp(start_s * S);
    c.times.end = Timestamp(end_s * S);
    c
}

/// The conversation the tracer inferred.
fn conv_id(s: &SpanRecord) -> Option<String> {
    match s.attr(sc::TRACER_CONVERSATION_ID) {
        Some(AttrValue::Str(v)) => Some(v.clone()),
        _ => None,
    }
}

/// Where a span links to: (span id, link type, tool call id).
fn links(s: &SpanRecord) -> Vec<([u8; 8], String, Option<String>)> {
    let get = |l: &SpanLink, k: &str| {
        l.attributes.iter().find(|a| a.key == k).map(|a| match &a.value {
            AttrValue::Str(v) => v.clone(),
            other => panic!("{other:?}"),
        })
    };
    s.links
        .iter()
        .map(|l| (l.span_id, get(l, sc::TRACER_LINK_TYPE).unwrap(), get(l, sc::GEN_AI_TOOL_CALL_ID)))
        .collect()
}

#[test]
fn conversations_link_turns_that_extend_earlier_requests() {
    let mut b = SpanBuilder::new(SpanConfig { id_seed: Some(1), ..Default::default() });
    // Turn 1 asks for a tool.
    let mut t1 = turn("10.0.0.1:4000", &[11], 1, 2);
    t1.response.tool_calls = vec![ToolCall { id: Some("c1".into()), name: "weather".into(), arguments: None }];
    let s1 = b.build_all(&t1);
    assert_eq!(s1.len(), 1);
    // The same prompt again (another port, same host): a new conversation, not turn 2.
    let again = b.build_all(&turn("10.0.0.1:4001", &[11], 3, 4));
    assert_ne!(conv_id(&again[0]), conv_id(&s1[0]));
    // Turn 2 resends turn 1's messages, the assistant's tool call and the result.
    let mut t2 = turn("10.0.0.1:4002", &[11, 12, 13], 5, 6);
    t2.request.conversation.tool_results = vec![ToolResult { id: Some("c1".into()), name: None, content: None }];
    let s2 = b.build_all(&t2);
    assert_eq!(conv_id(&s2[0]), conv_id(&s1[0]), "links to the identical request whose tool call it answers");
    assert!(s1[0].links.is_empty() && again[0].links.is_empty(), "first turns link nowhere");
    assert_eq!(links(&s2[0]), [(s1[0].span_id, "previous_turn".into(), Some("c1".into()))]);
    let tool = s2.iter().find(|s| s.name == "execute_tool weather").expect("tool span");
    assert_eq!(tool.parent_span_id, Some(s1[0].span_id));
    assert_eq!(tool.trace_id, s1[0].trace_id);
    assert_eq!((tool.start.0, tool.end.0), (2 * S, 5 * S));
    assert_eq!(tool.attr(sc::GEN_AI_TOOL_CALL_ID), Some(&AttrValue::Str("c1".into())));
    assert_eq!(tool.attr(sc::TRACER_INFERRED), Some(&AttrValue::Bool(true)));
    // Without a tool result to go by, the most recent identical request wins.
    let plain = b.build_all(&turn("10.0.0.1:4005", &[11, 21, 22], 6, 7));
    assert_eq!(conv_id(&plain[0]), conv_id(&again[0]));
    // From another host the same history is someone else's conversation.
    let other = b.build_all(&turn("10.0.0.2:4000", &[11, 12, 13, 14, 15], 7, 8));
    assert_ne!(conv_id(&other[0]), conv_id(&s2[0]));
    assert!(other[0].links.is_empty());
    assert_eq!(links(&plain[0]), [(again[0].span_id, "previous_turn".into(), None)]);
    // Turn 3 continues turn 2; a retried turn 3 is the same conversation but reports no tool
    // run twice.
    let mut t3 = turn("10.0.0.1:4003", &[11, 12, 13, 14, 15], 9, 10);
    t3.response.tool_calls = vec![ToolCall { id: Some("c2".into()), name: "search".into(), arguments: None }];
    let s3 = b.build_all(&t3);
    assert_eq!(conv_id(&s3[0]), conv_id(&s2[0]));
    assert_eq!(links(&s3[0]), [(s2[0].span_id, "previous_turn".into(), None)]);
    let mut t4 = turn("10.0.0.1:4003", &[11, 12, 13, 14, 15, 16, 17], 12, 13);
    t4.request.conversation.tool_results = vec![ToolResult { id: Some("c2".into()), name: None, content: None }];
    let s4 = b.build_all(&t4);
    assert_eq!(links(&s4[0]), [(s3[0].span_id, "previous_turn".into(), Some("c2".into()))]);
    assert_eq!(s4.iter().filter(|s| s.name == "execute_tool search").count(), 1);
    assert_eq!(s4[1].attr(sc::GEN_AI_TOOL_CALL_ID), Some(&AttrValue::Str("c2".into())));
    let retry = b.build_all(&t4);
    assert_eq!(retry.len(), 1, "a retried request does not report the tool again");
    assert_eq!(conv_id(&retry[0]), conv_id(&s2[0]));
    // Calls without messages have no conversation.
    assert_eq!(conv_id(&b.build(&call(Route::Generate))), None);
    // A hash of request content is never `gen_ai.conversation.id` unless asked for.
    for s in s1.iter().chain(&s2).chain(&s3).chain(&s4).chain(&other).chain(&retry) {
        assert_eq!(s.attr(sc::GEN_AI_CONVERSATION_ID), None, "{}", s.name);
    }
}

#[test]
fn gen_ai_conversation_id_comes_from_the_traffic_or_an_opt_in() {
    let genai = |s: &SpanRecord| match s.attr(sc::GEN_AI_CONVERSATION_ID) {
        Some(AttrValue::Str(v)) => Some(v.clone()),
        _ => None,
    };
    // The client's header, or the Responses API's `conversation`.
    let mut b = SpanBuilder::new(SpanConfig::default());
    let mut c = turn("10.0.0.1:4000", &[11], 1, 2);
    c.conversation_header = Some("chat-42".into());
    let s = b.build_all(&c);
    assert_eq!(genai(&s[0]).as_deref(), Some("chat-42"));
    assert!(conv_id(&s[0]).is_some(), "the inferred one stays beside it");
    let mut r = call(Route::OpenAiResponses);
    r.request.conversation_id = Some("conv_7".into());
    assert_eq!(genai(&b.build_all(&r)[0]).as_deref(), Some("conv_7"));
    // A `previous_response_id` chain: every response of it is one conversation, named after
    // its first response.
    let responses = |prev: Option<&str>, id: &str| {
        let mut r = call(Route::OpenAiResponses);
        r.request.previous_response_id = prev.map(str::to_string);
        r.response.id = Some(id.into());
        r
    };
    let first = b.build_all(&responses(None, "resp_1"));
    let second = b.build_all(&responses(Some("resp_1"), "resp_2"));
    let third = b.build_all(&responses(Some("resp_2"), "resp_3"));
    assert_eq!(genai(&first[0]), None, "a lone response is no conversation yet");
    assert_eq!(genai(&second[0]).as_deref(), Some("resp_1"));
    assert_eq!(genai(&third[0]).as_deref(), Some("resp_1"));
    // Each links to the call that gave the response it continues.
    assert_eq!(links(&second[0]), [(first[0].span_id, "previous_turn".into(), None)]);
    assert_eq!(links(&third[0]), [(second[0].span_id, "previous_turn".into(), None)]);
    // Opted in, the inferred id is also `gen_ai.conversation.id`.
    let mut b = SpanBuilder::new(SpanConfig { conversation_id: ConversationIdAttribute::GenAi, ..Default::default() });
    let s = b.build_all(&turn("10.0.0.1:4000", &[11], 1, 2));
    assert_eq!(genai(&s[0]), conv_id(&s[0]));
    assert!(genai(&s[0]).is_some());
}

fn with_content() -> LlmCall {
    let mut c = call(Route::Chat);
    c.request.content = Some(InputContent {
        messages: vec![Message {
            role: "user".into(),
            parts: vec![Part::Text("my key is sk-abcdefghijklmnopqrstuvwx, summarise this long text".into())],
            name: None,
        }],
        system: vec!["be brief".into()],
        ..Default::default()
    });
    c.response.content = Some(OutputContent { text: "Sure.".into(), ..Default::default() });
    c.response.finish_reasons = vec!["stop".into()];
    c
}

#[test]
fn content_is_exported_only_when_captured_and_is_redacted_and_bounded() {
    let c = with_content();
    let off = SpanBuilder::new(SpanConfig::default()).build(&c);
    for key in [sc::GEN_AI_INPUT_MESSAGES, sc::GEN_AI_OUTPUT_MESSAGES, sc::GEN_AI_SYSTEM_INSTRUCTIONS] {
        assert_eq!(off.attr(key), None, "{key} without capture");
    }
    let cfg = ContentConfig::capturing(40, true, &["summar\\w+".to_string()]).unwrap();
    let on = SpanBuilder::new(SpanConfig { content: Some(cfg), ..Default::default() }).build(&c);
    let Some(AttrValue::Str(input)) = on.attr(sc::GEN_AI_INPUT_MESSAGES) else { panic!("no input messages") };
    assert!(!input.contains("sk-abc"), "{input}");
    assert!(input.contains("[REDACTED]") && input.contains("…[truncated"), "{input}");
    let parsed: serde_json::Value = serde_json::from_str(input).unwrap();
    assert_eq!(parsed[0]["role"], "user");
    assert_eq!(
        on.attr(sc::GEN_AI_OUTPUT_MESSAGES),
        Some(&AttrValue::Str(
            r#"[{"finish_reason":"stop","parts":[{"content":"Sure.","type":"text"}],"role":"assistant"}]"#.into()
        ))
    );
    assert_eq!(
        on.attr(sc::GEN_AI_SYSTEM_INSTRUCTIONS),
        Some(&AttrValue::Str(r#"[{"content":"be brief","type":"text"}]"#.into()))
    );
    // A failed call has no output message.
    let mut failed = with_content();
    failed.status = Some(500);
    failed.error = Some(CallError { kind: ErrorKind::Http(500), message: Some("boom".into()) });
    let cfg = ContentConfig::capturing(4096, true, &[]).unwrap();
    let s = SpanBuilder::new(SpanConfig { content: Some(cfg), ..Default::default() }).build(&failed);
    assert_eq!(s.attr(sc::GEN_AI_OUTPUT_MESSAGES), None);
    assert!(s.attr(sc::GEN_AI_INPUT_MESSAGES).is_some());
}

#[test]
fn what_was_not_seen_is_not_told() {
    let build = |c: &LlmCall| SpanBuilder::new(SpanConfig::default()).build(c);
    // The request unseen: whether it asked for a stream and its size are not known.
    let mut c = call(Route::Chat);
    c.incomplete = vec![Incomplete::RequestUnseen];
    let s = build(&c);
    assert_eq!((s.attr(sc::GEN_AI_REQUEST_STREAM), s.attr(sc::OLLAMA_REQUEST_BODY_SIZE)), (None, None));
    let s = build(&call(Route::Chat));
    assert!(s.attr(sc::GEN_AI_REQUEST_STREAM).is_some() && s.attr(sc::OLLAMA_REQUEST_BODY_SIZE).is_some());
    // Body sizes only a bound after a rejoin; lost bytes and chunks told.
    let mut c = call(Route::Chat);
    (c.request.body_partial, c.response.body_partial) = (true, true);
    (c.request.lost_bytes, c.response.lost_bytes, c.response.lost_chunks) = (7, 9, Some(2));
    let s = build(&c);
    assert_eq!((s.attr(sc::OLLAMA_REQUEST_BODY_SIZE), s.attr(sc::OLLAMA_RESPONSE_BODY_SIZE)), (None, None));
    assert_eq!(
        (s.attr_int(sc::TRACER_REQUEST_LOST_BYTES), s.attr_int(sc::TRACER_RESPONSE_LOST_BYTES)),
        (Some(7), Some(9))
    );
    assert_eq!(s.attr_int(sc::TRACER_RESPONSE_LOST_CHUNKS), Some(2));
    // The end lost in a gap: no time outside Ollama measured to it.
    let mut c = call(Route::Chat);
    (c.times.request_start, c.times.end) = (Timestamp(S), Timestamp(3 * S));
    c.response.ollama.total_duration = Some(S);
    assert!(build(&c).attr(sc::OLLAMA_OUTSIDE_DURATION).is_some());
    c.times.end_lost = true;
    assert_eq!(build(&c).attr(sc::OLLAMA_OUTSIDE_DURATION), None);
    // Progress after a gap: the latest seen may not be the latest sent.
    let mut c = call(Route::Pull);
    c.response.progress_status = Some("pulling a1b2".into());
    c.response.progress_completed = Some(10);
    c.response.progress_steps = vec!["pulling manifest".into(), "pulling a1b2".into()];
    assert_eq!(build(&c).attr_str(sc::OLLAMA_PROGRESS_STATUS), Some("pulling a1b2"));
    c.response.lost_bytes = 100;
    let s = build(&c);
    assert_eq!((s.attr(sc::OLLAMA_PROGRESS_STATUS), s.attr(sc::OLLAMA_PROGRESS_COMPLETED)), (None, None));
    assert_eq!(s.attr_strs(sc::OLLAMA_PROGRESS_STEPS).map(<[String]>::len), Some(2), "the steps seen are told");
}
