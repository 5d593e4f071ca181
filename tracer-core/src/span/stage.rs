//! The span stage: each call becomes its spans (the call's own, its phases, inferred tool
//! spans), under the resource it is reported with, and the sampler decides whether they go out.
//! The call itself always goes on: metrics and `top` count every call, sampled or not.

use std::collections::VecDeque;
use std::sync::Arc;

use super::compat;
use super::identity::call_resource;
use super::sampling::SamplingConfig;
use super::semconv as sc;
use super::{AttrValue, Resource, SpanBuilder, SpanConfig, SpanRecord};
use crate::llm::LlmCall;

/// A call with its spans: what the span stage hands to the outputs.
#[derive(Clone, Debug)]
pub struct TracedCall {
    pub call: LlmCall,
    /// The call's own span first, then its children; empty when the trace was sampled out.
    pub spans: Vec<SpanRecord>,
    /// The resource the spans are reported under (the server's workload may name the service).
    pub resource: Arc<Resource>,
    /// The tool executions inferred before this call, sampled or not (for their metric).
    pub tools: Vec<ToolRun>,
}

/// An inferred tool execution: its name and how long it took (its span's duration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolRun {
    pub name: String,
    pub duration_ns: u64,
}

impl ToolRun {
    fn of(span: &SpanRecord) -> Option<ToolRun> {
        match (span.attr(sc::GEN_AI_OPERATION_NAME), span.attr(sc::GEN_AI_TOOL_NAME)) {
            (Some(AttrValue::Str(op)), Some(AttrValue::Str(name))) if op == sc::OPERATION_EXECUTE_TOOL => {
                Some(ToolRun { name: name.clone(), duration_ns: span.end.0.saturating_sub(span.start.0) })
            }
            _ => None,
        }
    }
}

/// How calls become spans.
#[derive(Clone, Debug, Default)]
pub struct SpanStageConfig {
    pub spans: SpanConfig,
    pub sampling: SamplingConfig,
    /// Add OpenInference mirrors of the GenAI attributes (`--compat openinference`).
    pub openinference: bool,
}

/// Counters of the span stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanStats {
    /// Spans produced (those of sampled-out calls not counted).
    pub spans: u64,
    /// Calls whose spans the sampler dropped.
    pub sampled_out: u64,
}

/// Dropped call spans remembered for their later tool spans.
const DROPPED_REMEMBERED: usize = 4096;

pub struct SpanStage {
    builder: SpanBuilder,
    resource: Arc<Resource>,
    sampling: SamplingConfig,
    openinference: bool,
    /// Call spans the sampler dropped (bounded): a tool span inferred later hangs from one of
    /// them and goes with it.
    dropped: VecDeque<[u8; 8]>,
    stats: SpanStats,
}

impl SpanStage {
    pub fn new(resource: Resource, config: SpanStageConfig) -> Self {
        SpanStage {
            builder: SpanBuilder::new(config.spans),
            resource: Arc::new(resource),
            sampling: config.sampling,
            openinference: config.openinference,
            dropped: VecDeque::new(),
            stats: SpanStats::default(),
        }
    }

    /// The run's resource (before any per-call service naming).
    pub fn resource(&self) -> &Arc<Resource> {
        &self.resource
    }

    pub fn stats(&self) -> SpanStats {
        self.stats
    }

    pub fn push<F: FnMut(TracedCall)>(&mut self, call: LlmCall, out: &mut F) {
        let mut spans = self.builder.build_all(&call);
        let tools = spans.iter().filter_map(ToolRun::of).collect();
        if self.openinference {
            spans.iter_mut().for_each(compat::openinference);
        }
        if !self.sampling.keep(&call, &spans[0]) {
            self.stats.sampled_out += 1;
            if self.dropped.len() == DROPPED_REMEMBERED {
                self.dropped.pop_front();
            }
            self.dropped.push_back(spans[0].span_id);
            spans.clear();
        } else {
            if !self.dropped.is_empty() {
                // Tool spans belong to the earlier call they hang from.
                let me = spans[0].span_id;
                spans.retain(|s| s.parent_span_id.is_none_or(|p| p == me || !self.dropped.contains(&p)));
            }
            // Exported means sampled, as an SDK's decision sets it (a tail rule or an always-on
            // sampler may keep a call whose parent was not sampled).
            spans.iter_mut().for_each(|s| s.flags |= 1);
        }
        self.stats.spans += spans.len() as u64;
        let resource = match call_resource(&self.resource, &call) {
            std::borrow::Cow::Borrowed(_) => self.resource.clone(),
            std::borrow::Cow::Owned(r) => Arc::new(r),
        };
        out(TracedCall { call, spans, resource, tools })
    }
}

#[cfg(test)]
mod tests {
    // Sampling as the outputs see it: every call goes on (metrics count everything), only the kept
    // ones with spans.

    use super::*;
    use crate::llm::call::{CallError, ErrorKind, ToolCall};
    use crate::llm::messages::{ConversationFacts, ToolResult};
    use crate::llm::{LlmCall, Route};
    use crate::segment::Timestamp;
    use crate::span::sampling::Head;

    /// (call's exchange number, span names) per traced call.
    type Seen = Vec<(u64, Vec<String>)>;

    fn run(stage: &mut SpanStage, calls: impl IntoIterator<Item = LlmCall>) -> Seen {
        let mut seen = Vec::new();
        for c in calls {
            stage.push(c, &mut |t: TracedCall| {
                seen.push((t.call.exchange, t.spans.iter().map(|s| s.name.clone()).collect()))
            });
        }
        seen
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

    fn stage(sampling: SamplingConfig) -> SpanStage {
        SpanStage::new(
            Resource::new("ollama", None, Vec::new()),
            SpanStageConfig {
                spans: SpanConfig { id_seed: Some(4), ..Default::default() },
                sampling,
                openinference: false,
            },
        )
    }

    #[test]
    fn head_sampling_keeps_errors_slow_calls_and_follows_the_parent() {
        let sampling = SamplingConfig {
            head: Head::AlwaysOff,
            parent_based: true,
            keep_errors: true,
            keep_slower_than_ns: Some(5_000_000_000),
        };
        let mut out = stage(sampling);
        let mut failed = call(2, 0, 100);
        failed.status = Some(500);
        failed.error = Some(CallError { kind: ErrorKind::Http(500), message: None });
        let mut sampled_parent = call(4, 0, 100);
        sampled_parent.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let mut unsampled_parent = call(5, 0, 100);
        unsampled_parent.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00".into());
        let seen = run(&mut out, [call(1, 0, 100), failed, call(3, 0, 6_000), sampled_parent, unsampled_parent]);
        let kept: Vec<(u64, bool)> = seen.iter().map(|(e, s)| (*e, !s.is_empty())).collect();
        assert_eq!(kept, [(1, false), (2, true), (3, true), (4, true), (5, false)], "every call goes on");
        assert_eq!(out.stats(), SpanStats { spans: 3, sampled_out: 2 });
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
        let seen = run(&mut stage(sampling), tool_loop());
        assert_eq!(seen[0].1, Vec::<String>::new());
        assert_eq!(seen[1].1, vec!["chat".to_string()], "turn 2 without turn 1's tool span");

        // Everything kept: the tool span comes with turn 2.
        let seen = run(&mut stage(SamplingConfig::default()), tool_loop());
        assert_eq!(seen[1].1, vec!["chat".to_string(), "execute_tool f".to_string()]);
    }
}
