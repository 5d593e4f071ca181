//! Sampling as the sinks see it: every call reaches them (metrics count everything), only the
//! kept ones with spans.

use std::sync::{Arc, Mutex};

use super::*;
use crate::llm::call::{CallError, ErrorKind, ToolCall};
use crate::llm::messages::{ConversationFacts, ToolResult};
use crate::llm::{LlmCall, Route};
use crate::segment::Timestamp;
use crate::span::sampling::{Head, SamplingConfig};

type Seen = Arc<Mutex<Vec<(u64, Vec<String>)>>>;

/// Records (call's exchange number, span names) per export.
struct Collect(Seen);

impl Sink for Collect {
    fn export(&mut self, call: &LlmCall, spans: &[SpanRecord], _resource: &Resource) {
        self.0.lock().unwrap().push((call.exchange, spans.iter().map(|s| s.name.clone()).collect()));
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn call(exchange: u64, start_ms: u64, end_ms: u64) -> LlmCall {
    let mut c = LlmCall::for_test(Route::Chat);
    c.exchange = exchange;
    c.request.model = None;
    c.times.request_start = Timestamp(start_ms * 1_000_000);
    c.times.end = Timestamp(end_ms * 1_000_000);
    c
}

/// A turn asking for tool `f` (call id `c`), then the turn carrying its result (slow: 1.8 s).
fn tool_loop() -> [LlmCall; 2] {
    let mut t1 = call(1, 0, 100);
    t1.request.conversation = ConversationFacts { prefixes: vec![1], ..Default::default() };
    t1.response.tool_calls = vec![ToolCall { id: Some("c".into()), name: "f".into(), arguments: None }];
    let mut t2 = call(2, 200, 2_000);
    t2.request.conversation = ConversationFacts {
        prefixes: vec![1, 2, 3],
        tool_results: vec![ToolResult { id: Some("c".into()), ..Default::default() }],
        messages: 3,
    };
    [t1, t2]
}

fn outputs(sampling: SamplingConfig) -> (Outputs, Seen) {
    let seen: Seen = Default::default();
    let sinks: Vec<Box<dyn Sink>> = vec![Box::new(Collect(seen.clone()))];
    let out = Outputs::with_sampling(
        Resource::new("ollama", None, Vec::new()),
        SpanConfig { id_seed: Some(4), ..Default::default() },
        sampling,
        sinks,
    );
    (out, seen)
}

#[test]
fn head_sampling_keeps_errors_slow_calls_and_follows_the_parent() {
    let sampling = SamplingConfig {
        head: Head::AlwaysOff,
        parent_based: true,
        keep_errors: true,
        keep_slower_than_ns: Some(5_000_000_000),
    };
    let (mut out, seen) = outputs(sampling);
    out.call(call(1, 0, 100));
    let mut failed = call(2, 0, 100);
    failed.status = Some(500);
    failed.error = Some(CallError { kind: ErrorKind::Http(500), message: None });
    out.call(failed);
    out.call(call(3, 0, 6_000));
    let mut sampled_parent = call(4, 0, 100);
    sampled_parent.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    out.call(sampled_parent);
    let mut unsampled_parent = call(5, 0, 100);
    unsampled_parent.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00".into());
    out.call(unsampled_parent);
    let seen = seen.lock().unwrap();
    let kept: Vec<(u64, bool)> = seen.iter().map(|(e, s)| (*e, !s.is_empty())).collect();
    assert_eq!(kept, [(1, false), (2, true), (3, true), (4, true), (5, false)], "every call reaches the sinks");
    assert_eq!(out.sampled_out(), 2);
    assert_eq!(out.spans(), 3);
}

#[test]
fn a_tool_span_goes_with_the_dropped_call_it_hangs_from() {
    // Keep only calls slower than 1 s: turn 1 (fast) is dropped, turn 2 (slow) kept; the tool
    // span belongs to turn 1's trace and must not be exported as an orphan.
    let sampling = SamplingConfig {
        head: Head::AlwaysOff,
        parent_based: true,
        keep_errors: true,
        keep_slower_than_ns: Some(1_000_000_000),
    };
    let (mut out, seen) = outputs(sampling);
    for c in tool_loop() {
        out.call(c);
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].1, Vec::<String>::new());
    assert_eq!(seen[1].1, vec!["chat".to_string()], "turn 2 without turn 1's tool span");

    // Everything kept: the tool span comes with turn 2.
    let (mut out, seen) = outputs(SamplingConfig::default());
    for c in tool_loop() {
        out.call(c);
    }
    assert_eq!(seen.lock().unwrap()[1].1, vec!["chat".to_string(), "execute_tool f".to_string()]);
}
