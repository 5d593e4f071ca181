//! The record of one observed call: everything later stages need to build spans and metrics.

use super::content::{InputContent, OutputContent};
use super::messages::ConversationFacts;
use super::route::{Operation, Route};
use crate::http::ExchangeId;
use crate::reassembly::ConnId;
use std::sync::Arc;

use crate::identity::CallIdentity;
use crate::segment::{CaptureMeta, ConnFacts, FlowKey, Timestamp};

/// Sampling and generation parameters as the client sent them (not what took effect).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenParams {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<f64>,
    /// `num_predict` (native), `max_tokens` (OpenAI chat/completions, Anthropic),
    /// `max_output_tokens` (Responses). Native "infinite" values (-1, -2) are not limits.
    pub max_tokens: Option<i64>,
    pub seed: Option<i64>,
    pub stop: Vec<String>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    /// Native-only options kept under `ollama.request.*`.
    pub num_ctx: Option<i64>,
    pub repeat_penalty: Option<f64>,
    pub min_p: Option<f64>,
    /// OpenAI `n`.
    pub choice_count: Option<i64>,
}

/// What the request asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestInfo {
    pub model: Option<String>,
    /// `stream` as sent; `None` when absent.
    pub stream: Option<bool>,
    pub params: GenParams,
    /// `stream_options.include_usage` (OpenAI).
    pub include_usage: Option<bool>,
    /// Structured output requested (`format`, `response_format`, `text.format`): "json" or "text".
    pub output_type: Option<String>,
    /// `keep_alive` as sent (seconds or a Go duration string).
    pub keep_alive: Option<String>,
    /// `think` / `reasoning_effort` / `reasoning.effort` / `thinking.type`, as sent.
    pub think: Option<String>,
    /// Number of messages (chat) or input items.
    pub messages: Option<u32>,
    /// Tool (function) names offered.
    pub tools: Vec<String>,
    pub images: u32,
    pub image_bytes: u64,
    /// Number of inputs of an embeddings request.
    pub inputs: Option<u32>,
    pub dimensions: Option<i64>,
    pub encoding_format: Option<String>,
    /// Copy's `destination`; create's `from`.
    pub destination: Option<String>,
    pub from: Option<String>,
    pub body_bytes: u64,
    /// Body bytes the capture missed (the call is flagged `request_gap`), and whether they were
    /// lost in a number the framing does not tell (then `body_bytes` is only a lower bound).
    pub lost_bytes: u64,
    pub body_partial: bool,
    /// The body was not valid JSON.
    pub invalid_json: bool,
    /// What links this call to others of its conversation (chat routes).
    pub conversation: ConversationFacts,
    /// A conversation id the client sent (the Responses API's `conversation`, or the
    /// conversation header): an identifier the traffic carries, unlike an inferred one.
    pub conversation_id: Option<String>,
    /// Responses API: the response this request continues.
    pub previous_response_id: Option<String>,
    /// Messages, system instructions and tool definitions, when content capture is on.
    pub content: Option<InputContent>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolCall {
    pub id: Option<String>,
    pub name: String,
    /// JSON arguments as sent (content capture only).
    pub arguments: Option<String>,
}

/// Ollama's own measurements from the final chunk (nanoseconds / token counts); absent when the
/// server omitted them (zero values are omitted on the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OllamaMetrics {
    pub total_duration: Option<u64>,
    pub load_duration: Option<u64>,
    pub prompt_eval_count: Option<u64>,
    /// The part of `prompt_eval_count` served from the prompt cache (Ollama ≥ 0.33; omitted
    /// when 0, so absent means "no hits or an older server").
    pub prompt_eval_cached_count: Option<u64>,
    pub prompt_eval_duration: Option<u64>,
    pub eval_count: Option<u64>,
    pub eval_duration: Option<u64>,
}

impl OllamaMetrics {
    pub fn is_empty(&self) -> bool {
        *self == OllamaMetrics::default()
    }
}

/// Upper bounds (seconds) of the GenAI duration histogram buckets; per-chunk gaps are binned
/// here as they arrive so a call never stores one entry per chunk.
pub const CHUNK_GAP_BOUNDS: [f64; 14] =
    [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];

/// Histogram of the time between consecutive output chunks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChunkGaps {
    /// One count per bucket of [`CHUNK_GAP_BOUNDS`], plus the overflow bucket.
    pub counts: [u64; 15],
    pub sum_secs: f64,
    pub count: u64,
}

impl ChunkGaps {
    pub fn record(&mut self, secs: f64) {
        let i = CHUNK_GAP_BOUNDS.iter().position(|b| secs <= *b).unwrap_or(CHUNK_GAP_BOUNDS.len());
        self.counts[i] += 1;
        self.sum_secs += secs;
        self.count += 1;
    }
}

/// What the response said.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResponseInfo {
    pub model: Option<String>,
    /// `/v1` response id (`chatcmpl-…`, `cmpl-…`, `resp_…`, `msg_…`).
    pub id: Option<String>,
    pub finish_reasons: Vec<String>,
    /// Native `done_reason`.
    pub done_reason: Option<String>,
    /// All input tokens, cached ones included (the conventions' `gen_ai.usage.input_tokens`).
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Input tokens served from the prompt cache, when the server reported a number of them
    /// (0 is left out: older servers and some routes write 0 for "not reported").
    pub cache_read_input_tokens: Option<u64>,
    pub ollama: OllamaMetrics,
    /// The body was a stream of chunks (NDJSON or SSE), not one JSON value.
    pub streamed: bool,
    /// Documents in the body (NDJSON lines, SSE events, JSON values).
    pub chunks: u64,
    /// Chunks carrying output (text, reasoning or tool calls).
    pub output_chunks: u64,
    /// The stream's terminator was seen (`done:true`, `[DONE]`, `message_stop`, `response.completed`).
    pub terminated: bool,
    pub embeddings: Option<u64>,
    pub dimension: Option<u64>,
    pub tool_calls: Vec<ToolCall>,
    pub text_bytes: u64,
    pub reasoning_bytes: u64,
    /// Error reported by the server in the body (an error object, or an in-stream error line).
    pub error_message: Option<String>,
    pub error_type: Option<String>,
    /// The error arrived inside a 200 stream.
    pub in_stream_error: bool,
    pub body_bytes: u64,
    /// Response bytes the capture missed (the call is flagged `response_gap`); of them, HTTP
    /// chunks that lost bytes where the framing tells; and whether the body lost bytes in a
    /// number not known (then `body_bytes` is only a lower bound). Ollama's own counts in a
    /// final chunk read after a gap are still exact: they are Ollama's, not ours.
    pub lost_bytes: u64,
    pub lost_chunks: Option<u64>,
    pub body_partial: bool,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub invalid_chunks: u64,
    /// Pull/push/create progress: last status line, and bytes completed / total.
    pub progress_status: Option<String>,
    /// Distinct progress statuses in order (bounded), and how many more were not kept.
    pub progress_steps: Vec<String>,
    pub progress_steps_dropped: u64,
    /// Digest of the last layer the progress reported.
    pub progress_digest: Option<String>,
    pub progress_completed: Option<u64>,
    pub progress_total: Option<u64>,
    /// `/api/tags`, `/api/ps`, `/v1/models`: number of models listed.
    pub models_listed: Option<u64>,
    /// `/api/ps`: the models loaded, when a whole listing was read.
    pub running: Option<Vec<RunningModel>>,
    /// The output, when content capture is on.
    pub content: Option<OutputContent>,
}

/// Capture times of the points of a call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallTimes {
    /// First byte of the request.
    pub request_start: Timestamp,
    /// Last byte of the request body.
    pub request_end: Option<Timestamp>,
    /// First byte of the final response head.
    pub response_start: Option<Timestamp>,
    /// End of the first body document (chunk).
    pub first_chunk: Option<Timestamp>,
    /// End of the first chunk carrying output.
    pub first_output: Option<Timestamp>,
    /// End of the last chunk carrying output.
    pub last_output: Option<Timestamp>,
    /// End of the last chunk (for Ollama, the one carrying its own measurements).
    pub last_chunk: Option<Timestamp>,
    /// Span end: the response's last byte, or when the exchange was given up.
    pub end: Timestamp,
    /// The response's last byte was lost in a gap: `end` is the last byte seen, and durations
    /// measured to it would be short.
    pub end_lost: bool,
    pub chunk_gaps: ChunkGaps,
}

/// A model `/api/ps` lists as loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunningModel {
    pub name: String,
    /// Bytes of memory it takes, and how many of them in GPU memory.
    pub size: Option<u64>,
    pub size_vram: Option<u64>,
}

/// Why a call's record is not the whole story.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Incomplete {
    /// Bytes of the request were not captured.
    RequestGap,
    /// Bytes of the response were not captured.
    ResponseGap,
    /// No response was seen.
    NoResponse,
    /// The response stopped before its end (connection closed or reset).
    Truncated,
    /// The capture ended (or the connection was evicted) before the call did.
    CaptureEnded,
    /// A stream ended without its terminator.
    NoTerminator,
    /// Part of a body was not valid JSON.
    InvalidJson,
    /// A body's content coding is unknown or its compressed bytes are corrupt.
    UndecodableBody,
    /// The request was not captured (lost, or sent before the capture began): the call is
    /// known from its response only, and starts where the response did.
    RequestUnseen,
}

impl Incomplete {
    pub fn as_str(self) -> &'static str {
        match self {
            Incomplete::RequestGap => "request_gap",
            Incomplete::ResponseGap => "response_gap",
            Incomplete::NoResponse => "no_response",
            Incomplete::Truncated => "truncated",
            Incomplete::CaptureEnded => "capture_ended",
            Incomplete::NoTerminator => "no_terminator",
            Incomplete::InvalidJson => "invalid_json",
            Incomplete::UndecodableBody => "undecodable_body",
            Incomplete::RequestUnseen => "request_unseen",
        }
    }
}

/// The error a call ended with, typed for `error.type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// HTTP status ≥ 400.
    Http(u16),
    /// An `{"error": …}` line inside a 200 stream.
    InStream,
    /// The stream ended without its terminator (server side).
    NoTerminator,
    /// The client went away before the response ended.
    Cancelled,
    /// The server closed or reset the connection mid-response.
    ServerClosed,
    /// A complete inference response without any output: no text, no reasoning, no tool call
    /// (agent loops stall on these).
    EmptyResponse,
}

impl ErrorKind {
    /// Low-cardinality `error.type` value.
    pub fn error_type(&self) -> String {
        match self {
            ErrorKind::Http(status) => status.to_string(),
            ErrorKind::InStream => "stream_error".into(),
            ErrorKind::NoTerminator => "incomplete_stream".into(),
            ErrorKind::Cancelled => "cancelled".into(),
            ErrorKind::ServerClosed => "server_closed".into(),
            ErrorKind::EmptyResponse => "empty_response".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    pub kind: ErrorKind,
    pub message: Option<String>,
}

/// One observed call.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmCall {
    pub conn: ConnId,
    pub exchange: ExchangeId,
    pub flow: FlowKey,
    pub meta: CaptureMeta,
    /// Who answers on the call's port.
    pub provider: super::Provider,
    pub route: Route,
    pub method: String,
    /// Path without query.
    pub path: String,
    pub user_agent: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// The conversation id the client sent in the conversation header.
    pub conversation_header: Option<String>,
    /// Allow-listed request headers.
    pub headers: Vec<(String, String)>,
    pub status: Option<u16>,
    pub request: RequestInfo,
    pub response: ResponseInfo,
    pub times: CallTimes,
    /// Sorted, unique.
    pub incomplete: Vec<Incomplete>,
    pub error: Option<CallError>,
    /// What the capture saw of the connection (its sockets' cgroups, when it opened).
    pub connection: ConnFacts,
    /// Who the two ends are (live capture with attribution only).
    pub identity: Option<Arc<CallIdentity>>,
}

impl LlmCall {
    /// `url.scheme`: `https` when the call was read from a TLS library, else `http`.
    pub fn url_scheme(&self) -> &'static str {
        if self.meta.tls.is_some() { "https" } else { "http" }
    }

    /// `http.route`: the route's template as the server serves it; `None` for unknown paths.
    pub fn http_route(&self) -> Option<&'static str> {
        self.provider.http_route(self.route, &self.path)
    }

    /// A completed 200 call on `route` from 127.0.0.1:5000, for tests (feature `testing`).
    #[cfg(any(test, feature = "testing"))]
    pub fn for_test(route: super::Route) -> LlmCall {
        LlmCall {
            conn: 1,
            exchange: 1,
            flow: crate::segment::FlowKey {
                client: "127.0.0.1:5000".parse().expect("address"),
                server: "127.0.0.1:11434".parse().expect("address"),
            },
            meta: crate::segment::CaptureMeta::default(),
            provider: super::Provider::Ollama,
            route,
            method: "POST".into(),
            path: route.template().unwrap_or("/").into(),
            user_agent: None,
            traceparent: None,
            tracestate: None,
            conversation_header: None,
            headers: Vec::new(),
            status: Some(200),
            request: RequestInfo { model: Some("llama3.2".into()), ..Default::default() },
            response: ResponseInfo::default(),
            times: CallTimes::default(),
            incomplete: Vec::new(),
            error: None,
            connection: ConnFacts::default(),
            identity: None,
        }
    }

    /// A native load or unload request (empty prompt/messages): not an inference.
    pub fn model_action(&self) -> Option<&'static str> {
        match self.response.done_reason.as_deref() {
            Some("load") => Some("load"),
            Some("unload") => Some("unload"),
            _ => None,
        }
    }

    pub fn operation(&self) -> Option<Operation> {
        self.route.operation()
    }

    /// Request asked for a stream (per the route's default when `stream` was absent).
    pub fn requested_stream(&self) -> bool {
        self.request.stream.unwrap_or(self.route.streams_by_default())
    }

    /// The request was captured: times measured from its start mean something.
    pub fn request_seen(&self) -> bool {
        !self.incomplete.contains(&Incomplete::RequestUnseen)
    }

    pub fn is_incomplete(&self) -> bool {
        !self.incomplete.is_empty()
    }

    /// Model for the span name: the request's, else the response's.
    pub fn model(&self) -> Option<&str> {
        self.request.model.as_deref().or(self.response.model.as_deref())
    }

    /// Seconds from the request's first byte to the first output chunk.
    pub fn time_to_first_chunk(&self) -> Option<f64> {
        if !self.request_seen() {
            return None;
        }
        let t = self.times.first_output?;
        Some(t.since(self.times.request_start) as f64 / 1e9)
    }
}
