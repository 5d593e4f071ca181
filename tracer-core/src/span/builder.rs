//! Calls to spans: the call's own span (SERVER, named after its operation and model), its phase
//! children (load, prompt evaluation, generation) and the tool executions inferred between two
//! turns, every attribute in the GenAI semantic conventions' names.

use std::borrow::Cow;

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::conversation::{Conversations, ResponseChains, SpanRef, ToolExecution, Turn};
use super::identity;
use super::record::{AttrValue, KeyValue, SpanKind, SpanLink, SpanRecord, StatusCode};
use super::semconv::{self as sc, SemconvMode};
use super::trace_context::TraceParent;
use crate::llm::content::{self, ContentConfig};
use crate::llm::{ErrorKind, LlmCall, Route};
use crate::segment::{Timestamp, display_ip};

#[derive(Clone, Debug, Default)]
pub struct SpanConfig {
    /// Seed for trace and span ids (tests, reproducible output); random when `None`.
    pub id_seed: Option<u64>,
    /// A `load_duration` at least this long means the model had to be loaded (a cold start);
    /// shorter ones are time waiting for the scheduler. Default [`DEFAULT_COLD_START_NS`].
    pub cold_start_ns: Option<u64>,
    /// Content capture (`gen_ai.input.messages` …): `None` keeps content out of spans.
    pub content: Option<ContentConfig>,
    /// Which version of the GenAI conventions the attributes follow.
    pub semconv: SemconvMode,
    /// Where the inferred conversation id goes.
    pub conversation_id: ConversationIdAttribute,
}

/// Where the conversation id the tracer infers (a hash of the resent history) goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConversationIdAttribute {
    /// `ollama_tracer.conversation.id` only: the conventions say a hash of request content
    /// SHOULD NOT be `gen_ai.conversation.id`. The default.
    #[default]
    Vendor,
    /// Also `gen_ai.conversation.id` when the traffic carries no id of its own — a deviation,
    /// for backends that group conversations by it.
    GenAi,
}

/// Default cold-start threshold: loading even a small model from disk takes longer; a warm
/// model's `load_duration` is the scheduler's few milliseconds (plus any queueing).
pub const DEFAULT_COLD_START_NS: u64 = 500_000_000;

/// Builds spans from calls.
pub struct SpanBuilder {
    rng: StdRng,
    cold_start_ns: u64,
    content: Option<ContentConfig>,
    semconv: SemconvMode,
    conversation_id: ConversationIdAttribute,
    conversations: Conversations,
    chains: ResponseChains,
}

impl std::fmt::Debug for SpanBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanBuilder").finish_non_exhaustive()
    }
}

/// Collects attributes, skipping absent values.
struct Attrs(Vec<KeyValue>);

impl Attrs {
    fn put(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<AttrValue>) {
        self.0.push(KeyValue::new(key, value));
    }
    fn opt(&mut self, key: &'static str, value: Option<impl Into<AttrValue>>) {
        if let Some(v) = value {
            self.put(key, v);
        }
    }
}

impl SpanBuilder {
    pub fn new(config: SpanConfig) -> Self {
        let rng = match config.id_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        SpanBuilder {
            rng,
            cold_start_ns: config.cold_start_ns.unwrap_or(DEFAULT_COLD_START_NS),
            content: config.content,
            semconv: config.semconv,
            conversation_id: config.conversation_id,
            conversations: Conversations::default(),
            chains: ResponseChains::default(),
        }
    }

    fn trace_id(&mut self) -> [u8; 16] {
        loop {
            let id: [u8; 16] = self.rng.random();
            if id != [0; 16] {
                return id;
            }
        }
    }

    fn span_id(&mut self) -> [u8; 8] {
        loop {
            let id: [u8; 8] = self.rng.random();
            if id != [0; 8] {
                return id;
            }
        }
    }

    /// Every span of one call: the call's own span first, then its children.
    pub fn build_all(&mut self, call: &LlmCall) -> Vec<SpanRecord> {
        let mut span = self.build(call);
        let mut spans = Vec::with_capacity(4);
        let me = SpanRef { trace_id: span.trace_id, span_id: span.span_id, flags: span.flags };
        let mut turn = self.conversations.observe(call, me);
        let ids = self.conversation_ids(call, &mut turn, me);
        ids.put(&mut span.attributes);
        span.links = links(&turn);
        // Without the request the call's span starts late: phases would not fit it.
        let phases = if call.request_seen() { self.phases(call, &span) } else { Vec::new() };
        spans.push(span);
        spans.extend(phases);
        for tool in &turn.tools {
            let t = self.tool_span(tool, &ids);
            spans.push(t);
        }
        spans
    }

    /// The call's conversation ids: the one the traffic carries (the client's body or header,
    /// a Responses chain) as `gen_ai.conversation.id`, the inferred one as the tracer's own. A
    /// Responses call continuing a response seen earlier has that call as its previous turn.
    fn conversation_ids(&mut self, call: &LlmCall, turn: &mut Turn, me: SpanRef) -> ConversationIds {
        if call.operation().is_none() {
            return ConversationIds::default();
        }
        let mut chained = None;
        if call.route == Route::OpenAiResponses {
            let at = self.chains.observe(call.request.previous_response_id.as_deref(), call.response.id.as_deref(), me);
            chained = at.conversation;
            turn.previous = turn.previous.or(at.previous);
        }
        let carried = call.request.conversation_id.clone().or_else(|| call.conversation_header.clone()).or(chained);
        let genai = match self.conversation_id {
            ConversationIdAttribute::Vendor => carried,
            ConversationIdAttribute::GenAi => carried.or_else(|| turn.id.clone()),
        };
        ConversationIds { genai, inferred: turn.id.clone() }
    }

    /// An `execute_tool` span inferred between two calls of a conversation.
    fn tool_span(&mut self, t: &ToolExecution, ids: &ConversationIds) -> SpanRecord {
        let mut a = Attrs(Vec::with_capacity(8));
        a.put(sc::GEN_AI_OPERATION_NAME, sc::OPERATION_EXECUTE_TOOL);
        a.put(sc::GEN_AI_TOOL_NAME, t.name.clone());
        a.put(sc::GEN_AI_TOOL_TYPE, "function");
        a.opt(sc::GEN_AI_TOOL_CALL_ID, t.call_id.clone());
        ids.put(&mut a.0);
        // Not seen on the wire: inferred from the gap between the calls around it.
        a.put(sc::TRACER_INFERRED, true);
        if let Some(cfg) = &self.content {
            a.opt(sc::GEN_AI_TOOL_CALL_ARGUMENTS, t.arguments.as_deref().map(|s| cfg.clean(s)));
            a.opt(sc::GEN_AI_TOOL_CALL_RESULT, t.result.as_deref().map(|s| cfg.clean(s)));
        }
        SpanRecord {
            name: format!("{} {}", sc::OPERATION_EXECUTE_TOOL, t.name),
            kind: SpanKind::Internal,
            trace_id: t.parent.trace_id,
            span_id: self.span_id(),
            parent_span_id: Some(t.parent.span_id),
            trace_state: None,
            flags: t.parent.flags,
            start: t.start,
            end: t.end.max(t.start),
            status: StatusCode::Unset,
            status_message: String::new(),
            attributes: a.0,
            events: Vec::new(),
            links: Vec::new(),
        }
    }

    /// Content attributes, in the GenAI JSON parts schema (capture on only).
    fn content_attributes(&self, call: &LlmCall, a: &mut Attrs) {
        let Some(cfg) = &self.content else { return };
        if let Some(c) = &call.request.content {
            if !c.messages.is_empty() {
                a.put(sc::GEN_AI_INPUT_MESSAGES, content::input_messages_json(c, cfg));
            }
            a.opt(sc::GEN_AI_SYSTEM_INSTRUCTIONS, content::system_instructions_json(c, cfg));
            if let Some(defs) = &c.tool_definitions {
                a.put(sc::GEN_AI_TOOL_DEFINITIONS, content::tool_definitions_json(defs, &call.request.tools, cfg));
            }
        }
        if let Some(out) = &call.response.content
            && call.status.is_some_and(|s| s < 400)
            && matches!(call.operation(), Some(crate::llm::Operation::Chat | crate::llm::Operation::TextCompletion))
        {
            // Ollama reports `stop` for a turn that called tools; the schema says `tool_call`.
            let finish = match call.response.finish_reasons.first().map(String::as_str) {
                Some("stop") | None if !out.tool_calls.is_empty() => Some("tool_calls"),
                other => other,
            };
            a.put(sc::GEN_AI_OUTPUT_MESSAGES, content::output_messages_json(out, finish, cfg));
        }
    }

    /// Ollama's own phases as INTERNAL children of the call span, placed on the capture timeline
    /// from its reported durations: `total_duration` ends with the chunk that reported it,
    /// `load` and `prompt_eval` run from its start, `eval` runs up to its end. Clamped into the
    /// parent (Ollama's clock and the capture's can differ by the transfer time).
    fn phases(&mut self, call: &LlmCall, parent: &SpanRecord) -> Vec<SpanRecord> {
        let m = &call.response.ollama;
        if call.operation().is_none() || m.is_empty() {
            return Vec::new();
        }
        let anchor = call.times.last_chunk.unwrap_or(parent.end).min(parent.end);
        let known = m.load_duration.unwrap_or(0) + m.prompt_eval_duration.unwrap_or(0) + m.eval_duration.unwrap_or(0);
        let total = m.total_duration.unwrap_or(known);
        let clamp = |t: Timestamp| t.max(parent.start).min(parent.end);
        let start = clamp(anchor.saturating_sub_nanos(total));
        let model = call.model().map(str::to_string);
        let cold_start_ns = self.cold_start_ns;
        let mut phase = |name: &'static str, from: Timestamp, to: Timestamp, extra: Vec<KeyValue>| {
            let mut attributes = vec![KeyValue::new(sc::OLLAMA_PHASE, name)];
            // Not a GenAI operation of its own: no `gen_ai.*` (backends would count it as one).
            if let Some(m) = &model {
                attributes.push(KeyValue::new(sc::OLLAMA_MODEL, m.clone()));
            }
            attributes.extend(extra);
            SpanRecord {
                name: name.to_string(),
                kind: SpanKind::Internal,
                trace_id: parent.trace_id,
                span_id: self.span_id(),
                parent_span_id: Some(parent.span_id),
                trace_state: parent.trace_state.clone(),
                flags: parent.flags,
                start: clamp(from),
                end: clamp(to),
                status: StatusCode::Unset,
                status_message: String::new(),
                attributes,
                events: Vec::new(),
                links: Vec::new(),
            }
        };
        let mut out = Vec::with_capacity(3);
        let mut cursor = start;
        if let Some(load) = m.load_duration {
            let cold = load >= cold_start_ns;
            out.push(phase(
                "load",
                cursor,
                cursor.saturating_add_nanos(load),
                vec![KeyValue::new(sc::OLLAMA_COLD_START, cold)],
            ));
            cursor = cursor.saturating_add_nanos(load);
        }
        if let Some(prompt) = m.prompt_eval_duration {
            let mut extra = Vec::new();
            if let Some(n) = m.prompt_eval_count {
                extra.push(KeyValue::new(sc::OLLAMA_PROMPT_EVAL_COUNT, n));
                extra.push(KeyValue::new(sc::OLLAMA_TOKENS_PER_SECOND, rate(n, prompt)));
            }
            out.push(phase("prompt_eval", cursor, cursor.saturating_add_nanos(prompt), extra));
        }
        if let Some(eval) = m.eval_duration {
            let mut extra = Vec::new();
            if let Some(n) = m.eval_count {
                extra.push(KeyValue::new(sc::OLLAMA_EVAL_COUNT, n));
                extra.push(KeyValue::new(sc::OLLAMA_TOKENS_PER_SECOND, rate(n, eval)));
            }
            out.push(phase("eval", anchor.saturating_sub_nanos(eval), anchor, extra));
        }
        out
    }

    /// The span for one call.
    pub fn build(&mut self, call: &LlmCall) -> SpanRecord {
        let op = call.operation();
        let name = match (op, call.model()) {
            (Some(op), Some(model)) if !model.is_empty() => format!("{} {model}", op.as_str()),
            (Some(op), _) => op.as_str().to_string(),
            (None, _) => match call.http_route() {
                Some(route) => format!("{} {route}", call.method),
                None => call.method.clone(),
            },
        };
        let parent = call.traceparent.as_deref().and_then(TraceParent::parse);
        let (trace_id, parent_span_id, flags, trace_state) = match parent {
            Some(p) => (p.trace_id, Some(p.parent_id), p.flags, call.tracestate.clone()),
            None => (self.trace_id(), None, 1, None),
        };
        let span_id = self.span_id();

        let mut a = Attrs(Vec::with_capacity(48));
        if let Some(op) = op {
            a.put(sc::GEN_AI_OPERATION_NAME, op.as_str());
            a.put(sc::GEN_AI_PROVIDER_NAME, call.provider.name());
            self.genai_attributes(call, &mut a);
        } else {
            self.management_attributes(call, &mut a);
        }
        self.http_attributes(call, &mut a);
        if let Some(id) = &call.identity {
            identity::span_attributes(id, &mut a.0);
        }

        let (status, status_message) = match &call.error {
            // GenAI spans: any failed operation is an error. Plain HTTP server spans follow the
            // HTTP conventions: only 5xx is the server's error.
            Some(err) if op.is_some() || !matches!(err.kind, ErrorKind::Http(s) if s < 500) => {
                a.put(sc::ERROR_TYPE, err.kind.error_type());
                let message = err.message.clone().unwrap_or_else(|| default_message(&err.kind));
                (StatusCode::Error, message)
            }
            _ => (StatusCode::Unset, String::new()),
        };
        self.content_attributes(call, &mut a);
        if call.is_incomplete() {
            a.put(sc::TRACER_INCOMPLETE, true);
            a.put(
                sc::TRACER_INCOMPLETE_REASONS,
                call.incomplete.iter().map(|i| i.as_str().to_string()).collect::<Vec<_>>(),
            );
        }
        // What the gaps cost, exactly: bytes always, chunks where the framing tells.
        if call.request.lost_bytes > 0 {
            a.put(sc::TRACER_REQUEST_LOST_BYTES, call.request.lost_bytes);
        }
        if call.response.lost_bytes > 0 {
            a.put(sc::TRACER_RESPONSE_LOST_BYTES, call.response.lost_bytes);
            a.opt(sc::TRACER_RESPONSE_LOST_CHUNKS, call.response.lost_chunks);
        }
        SpanRecord {
            name,
            kind: SpanKind::Server,
            trace_id,
            span_id,
            parent_span_id,
            trace_state,
            flags,
            start: call.times.request_start,
            end: call.times.end.max(call.times.request_start),
            status,
            status_message,
            attributes: a.0,
            events: Vec::new(),
            links: Vec::new(),
        }
    }

    fn genai_attributes(&mut self, call: &LlmCall, a: &mut Attrs) {
        let req = &call.request;
        let resp = &call.response;
        let p = &req.params;
        a.opt(sc::GEN_AI_REQUEST_MODEL, req.model.clone());
        a.opt(sc::GEN_AI_RESPONSE_MODEL, resp.model.clone().filter(|m| !m.is_empty()));
        a.opt(sc::GEN_AI_REQUEST_TEMPERATURE, p.temperature);
        a.opt(sc::GEN_AI_REQUEST_TOP_P, p.top_p);
        match self.semconv {
            SemconvMode::V1_41 => a.opt(sc::GEN_AI_REQUEST_TOP_K, p.top_k),
            // An int in the latest conventions.
            SemconvMode::Latest => a.opt(sc::GEN_AI_REQUEST_TOP_K, p.top_k.map(|k| k as i64)),
        }
        a.opt(sc::GEN_AI_REQUEST_MAX_TOKENS, p.max_tokens);
        a.opt(sc::GEN_AI_REQUEST_SEED, p.seed);
        if !p.stop.is_empty() {
            a.put(sc::GEN_AI_REQUEST_STOP_SEQUENCES, p.stop.clone());
        }
        a.opt(sc::GEN_AI_REQUEST_FREQUENCY_PENALTY, p.frequency_penalty);
        a.opt(sc::GEN_AI_REQUEST_PRESENCE_PENALTY, p.presence_penalty);
        a.opt(sc::GEN_AI_REQUEST_CHOICE_COUNT, p.choice_count.filter(|n| *n != 1));
        // (Without the request, whether it asked for a stream is not known.)
        if call.request_seen() && call.requested_stream() && call.operation() != Some(crate::llm::Operation::Embeddings)
        {
            a.put(sc::GEN_AI_REQUEST_STREAM, true);
        }
        a.opt(sc::GEN_AI_OUTPUT_TYPE, req.output_type.clone());
        if let Some(f) = &req.encoding_format {
            a.put(sc::GEN_AI_REQUEST_ENCODING_FORMATS, vec![f.clone()]);
        }
        a.opt(sc::GEN_AI_RESPONSE_ID, resp.id.clone());
        if !resp.finish_reasons.is_empty() {
            a.put(sc::GEN_AI_RESPONSE_FINISH_REASONS, resp.finish_reasons.clone());
        }
        a.opt(sc::GEN_AI_USAGE_INPUT_TOKENS, resp.input_tokens);
        a.opt(sc::GEN_AI_USAGE_OUTPUT_TOKENS, resp.output_tokens);
        a.opt(sc::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, resp.cache_read_input_tokens);
        if self.semconv == SemconvMode::Latest {
            a.opt(sc::GEN_AI_REQUEST_PREVIOUS_RESPONSE_ID, req.previous_response_id.clone());
        }
        if resp.streamed {
            a.opt(sc::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, call.time_to_first_chunk());
        }
        a.opt(sc::GEN_AI_EMBEDDINGS_DIMENSION_COUNT, resp.dimension);

        let o = &resp.ollama;
        a.opt(sc::OLLAMA_TOTAL_DURATION, o.total_duration);
        a.opt(sc::OLLAMA_LOAD_DURATION, o.load_duration);
        a.opt(sc::OLLAMA_PROMPT_EVAL_COUNT, o.prompt_eval_count);
        a.opt(sc::OLLAMA_PROMPT_EVAL_CACHED_COUNT, o.prompt_eval_cached_count);
        a.opt(sc::OLLAMA_PROMPT_EVAL_DURATION, o.prompt_eval_duration);
        a.opt(sc::OLLAMA_EVAL_COUNT, o.eval_count);
        a.opt(sc::OLLAMA_EVAL_DURATION, o.eval_duration);
        a.opt(sc::OLLAMA_DONE_REASON, resp.done_reason.clone());
        a.opt(sc::OLLAMA_REQUEST_ACTION, call.model_action());
        if let Some(load) = o.load_duration {
            let cold = load >= self.cold_start_ns;
            a.put(sc::OLLAMA_COLD_START, cold);
            if !cold {
                // A warm model's load time is the scheduler's: queueing behind other requests.
                a.put(sc::OLLAMA_WAIT_DURATION, load);
            }
        }
        if let Some(total) = o.total_duration
            && call.request_seen()
            && !call.times.end_lost
        {
            let wall = call.times.end.since(call.times.request_start).max(0) as u64;
            a.put(sc::OLLAMA_OUTSIDE_DURATION, wall.saturating_sub(total));
        }
        if let (Some(n), Some(ns)) = (o.eval_count, o.eval_duration)
            && ns > 0
        {
            a.put(sc::OLLAMA_RESPONSE_TOKENS_PER_SECOND, rate(n, ns));
        }

        a.opt(sc::OLLAMA_REQUEST_KEEP_ALIVE, req.keep_alive.clone());
        a.opt(sc::OLLAMA_REQUEST_NUM_CTX, p.num_ctx);
        a.opt(sc::OLLAMA_REQUEST_REPEAT_PENALTY, p.repeat_penalty);
        a.opt(sc::OLLAMA_REQUEST_MIN_P, p.min_p);
        match self.semconv {
            SemconvMode::V1_41 => a.opt(sc::OLLAMA_REQUEST_THINK, req.think.clone()),
            SemconvMode::Latest => a.opt(sc::GEN_AI_REQUEST_REASONING_LEVEL, req.think.clone()),
        }
        a.opt(sc::OLLAMA_REQUEST_MESSAGES, req.messages);
        if !req.tools.is_empty() {
            a.put(sc::OLLAMA_REQUEST_TOOLS, req.tools.clone());
        }
        if req.images > 0 {
            a.put(sc::OLLAMA_REQUEST_IMAGES, req.images);
            a.put(sc::OLLAMA_REQUEST_IMAGE_BYTES, req.image_bytes);
        }
        a.opt(sc::OLLAMA_REQUEST_INPUTS, req.inputs);
        if !resp.tool_calls.is_empty() {
            a.put(sc::OLLAMA_RESPONSE_TOOL_CALLS, resp.tool_calls.iter().map(|t| t.name.clone()).collect::<Vec<_>>());
        }
        if !resp.tool_calls.is_empty() && resp.tool_calls.iter().any(|t| t.id.is_some()) {
            let ids = resp.tool_calls.iter().map(|t| t.id.clone().unwrap_or_default()).collect::<Vec<_>>();
            a.put(sc::OLLAMA_RESPONSE_TOOL_CALL_IDS, ids);
        }
        if call.status.is_some() && call.operation() != Some(crate::llm::Operation::Embeddings) {
            a.put(sc::OLLAMA_RESPONSE_TEXT_BYTES, resp.text_bytes);
            if resp.reasoning_bytes > 0 {
                a.put(sc::OLLAMA_RESPONSE_REASONING_BYTES, resp.reasoning_bytes);
            }
        }
        if resp.streamed {
            a.put(sc::OLLAMA_RESPONSE_CHUNKS, resp.chunks);
            a.put(sc::OLLAMA_RESPONSE_OUTPUT_CHUNKS, resp.output_chunks);
            let gaps = &call.times.chunk_gaps;
            if gaps.count > 0 {
                a.put(sc::OLLAMA_RESPONSE_TIME_PER_OUTPUT_CHUNK, gaps.sum_secs / gaps.count as f64);
            }
            // (Not over a hole: chunks lost in it would be missing from the count.)
            if let (Some(first), Some(last)) = (call.times.first_output, call.times.last_output)
                && last > first
                && resp.lost_bytes == 0
            {
                let secs = last.since(first) as f64 / 1e9;
                a.put(sc::OLLAMA_RESPONSE_CHUNKS_PER_SECOND, (resp.output_chunks.saturating_sub(1)) as f64 / secs);
            }
        }
        a.opt(sc::OLLAMA_RESPONSE_EMBEDDINGS, resp.embeddings);
    }

    fn management_attributes(&mut self, call: &LlmCall, a: &mut Attrs) {
        let resp = &call.response;
        // Model management is not a GenAI operation: no `gen_ai.*`.
        a.opt(sc::OLLAMA_MODEL, call.request.model.clone());
        a.opt(sc::OLLAMA_REQUEST_DESTINATION, call.request.destination.clone());
        a.opt(sc::OLLAMA_REQUEST_FROM, call.request.from.clone());
        // After a gap the latest progress seen may not be the latest sent: only the steps seen
        // are told then.
        let latest = resp.lost_bytes == 0;
        a.opt(sc::OLLAMA_PROGRESS_STATUS, resp.progress_status.clone().filter(|_| latest));
        if !resp.progress_steps.is_empty() {
            a.put(sc::OLLAMA_PROGRESS_STEPS, resp.progress_steps.clone());
        }
        a.opt(sc::OLLAMA_PROGRESS_DIGEST, resp.progress_digest.clone().filter(|_| latest));
        a.opt(sc::OLLAMA_PROGRESS_COMPLETED, resp.progress_completed.filter(|_| latest));
        a.opt(sc::OLLAMA_PROGRESS_TOTAL, resp.progress_total.filter(|_| latest));
        a.opt(sc::OLLAMA_RESPONSE_MODELS, resp.models_listed);
    }

    fn http_attributes(&mut self, call: &LlmCall, a: &mut Attrs) {
        // An unseen request has no method or path (its route was told from the response).
        if call.request_seen() {
            a.put(sc::HTTP_REQUEST_METHOD, call.method.as_str());
            a.put(sc::URL_PATH, call.path.as_str());
        }
        a.put(sc::URL_SCHEME, call.url_scheme());
        a.opt(sc::TRACER_TLS_LIBRARY, call.meta.tls.map(|l| l.name()));
        a.opt(sc::HTTP_ROUTE, call.http_route());
        a.opt(sc::HTTP_RESPONSE_STATUS_CODE, call.status);
        a.put(sc::SERVER_ADDRESS, display_ip(call.flow.server.ip()));
        a.put(sc::SERVER_PORT, call.flow.server.port());
        a.put(sc::CLIENT_ADDRESS, display_ip(call.flow.client.ip()));
        a.put(sc::CLIENT_PORT, call.flow.client.port());
        a.put(sc::NETWORK_TRANSPORT, "tcp");
        a.put(sc::NETWORK_TYPE, if call.flow.server.is_ipv4() { "ipv4" } else { "ipv6" });
        a.put(sc::NETWORK_PROTOCOL_NAME, "http");
        a.opt(sc::USER_AGENT_ORIGINAL, call.user_agent.clone());
        // A body that lost bytes in a number not known, or was not seen, has no size to tell.
        if call.request_seen() && !call.request.body_partial {
            a.put(sc::OLLAMA_REQUEST_BODY_SIZE, call.request.body_bytes);
        }
        if call.status.is_some() && !call.response.body_partial {
            a.put(sc::OLLAMA_RESPONSE_BODY_SIZE, call.response.body_bytes);
        }
        for (name, value) in &call.headers {
            if name == "user-agent" {
                continue; // already user_agent.original
            }
            a.put(format!("{}{}", sc::HTTP_REQUEST_HEADER_PREFIX, name), vec![value.clone()]);
        }
    }
}

/// A call's conversation ids (see [`SpanBuilder::conversation_ids`]).
#[derive(Clone, Debug, Default, PartialEq)]
struct ConversationIds {
    genai: Option<String>,
    inferred: Option<String>,
}

impl ConversationIds {
    fn put(&self, attributes: &mut Vec<KeyValue>) {
        if let Some(id) = &self.genai {
            attributes.push(KeyValue::new(sc::GEN_AI_CONVERSATION_ID, id.clone()));
        }
        if let Some(id) = &self.inferred {
            attributes.push(KeyValue::new(sc::TRACER_CONVERSATION_ID, id.clone()));
        }
    }
}

/// Links from a call's span: to its conversation's previous turn, and to each call whose tool
/// call this request answers (when that is another span).
fn links(turn: &Turn) -> Vec<SpanLink> {
    let link = |to: &SpanRef, kind: &'static str, extra: Option<KeyValue>| SpanLink {
        trace_id: to.trace_id,
        span_id: to.span_id,
        flags: to.flags,
        attributes: std::iter::once(KeyValue::new(sc::TRACER_LINK_TYPE, kind)).chain(extra).collect(),
    };
    let tool_call_id = |t: &ToolExecution| t.call_id.clone().map(|id| KeyValue::new(sc::GEN_AI_TOOL_CALL_ID, id));
    // One link per span: the previous turn usually is the call that asked for the tool (its
    // link then names the tool call too).
    let mut out: Vec<SpanLink> = turn
        .previous
        .iter()
        .map(|p| {
            let asked = turn.tools.iter().find(|t| t.parent.span_id == p.span_id).and_then(tool_call_id);
            link(p, sc::LINK_PREVIOUS_TURN, asked)
        })
        .collect();
    for t in &turn.tools {
        if out.iter().all(|l| l.span_id != t.parent.span_id) {
            out.push(link(&t.parent, sc::LINK_TOOL_CALL, tool_call_id(t)));
        }
    }
    out
}

fn default_message(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::Http(s) => format!("HTTP {s}"),
        ErrorKind::InStream => "error inside the response stream".into(),
        ErrorKind::NoTerminator => "the response stream ended without its terminator".into(),
        ErrorKind::Cancelled => "the client disconnected before the response ended".into(),
        ErrorKind::ServerClosed => "the server closed the connection before the response ended".into(),
        ErrorKind::EmptyResponse => "the response contained no text, reasoning or tool call".into(),
    }
}

/// Tokens per second of `n` tokens in `ns` nanoseconds.
fn rate(n: u64, ns: u64) -> f64 {
    if ns == 0 { 0.0 } else { n as f64 / (ns as f64 / 1e9) }
}
