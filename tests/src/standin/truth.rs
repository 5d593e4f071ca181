//! Ground truth: one JSON object per call, describing what the stand-in actually sent, written
//! to the `--truth` JSONL file when the call ends (flushed per line).
//!
//! Counts and reasons are read back from the bytes as they were written (not from the plan), so
//! a replayed fixture and a synthetic body are described the same way.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::api::get;
use crate::wire::{BodyKind, split_body};

/// One call, as the tracer should see it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Truth {
    /// Call number across the server (0-based, in the order calls ended).
    pub seq: u64,
    /// Connection number (0-based, in accept order) and the call's index on it.
    pub conn: u64,
    pub conn_request: u64,
    pub client_addr: String,
    pub client_port: u16,
    pub server_addr: String,
    pub method: String,
    /// Request target as sent (path and query).
    pub target: String,
    pub path: String,
    pub http_version: String,
    /// `model` exactly as the request sent it (`None`: no model field).
    pub model: Option<String>,
    /// Whether the reply streamed (the effective `stream` flag for inference routes).
    pub stream: bool,
    /// `stream` as the request sent it.
    pub stream_requested: Option<bool>,
    pub scenario: String,
    /// `fixture`, `synthetic` or `builtin`.
    pub source: String,
    pub fixture: Option<String>,
    pub user_agent: Option<String>,
    pub traceparent: Option<String>,
    /// An `Authorization` or `X-Api-Key` header was present (value not logged).
    pub credentials_sent: bool,
    pub expect_continue: bool,
    pub continue_sent: bool,
    pub request_chunked: bool,
    pub request_body_bytes: u64,

    pub status: u16,
    pub content_type: Option<String>,
    /// `content_length`, `chunked`, `until_close` or `unframed`.
    pub framing: String,
    /// De-chunked body bytes written.
    pub response_body_bytes: u64,
    /// Everything written for this call: interim 100, head, framed body.
    pub response_wire_bytes: u64,

    /// Native metrics as sent (final chunk / whole body / embed).
    pub prompt_eval_count: Option<u64>,
    pub eval_count: Option<u64>,
    /// Ollama's own durations as sent, ns (final chunk / whole body).
    pub total_duration: Option<u64>,
    pub load_duration: Option<u64>,
    pub prompt_eval_duration: Option<u64>,
    pub eval_duration: Option<u64>,
    /// A listing's model names (`/api/ps`, `/api/tags`), in order.
    pub models_listed: Option<Vec<String>>,
    /// Prompt / completion tokens whatever the API calls them (native counts, OpenAI `usage`,
    /// Anthropic `message_delta.usage`, Responses `usage`).
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Prompt tokens served from the prompt cache, as sent (`prompt_eval_cached_count`,
    /// `prompt_tokens_details.cached_tokens`, `input_tokens_details.cached_tokens`,
    /// `cache_read_input_tokens`); `None` when the field was not sent. `input_tokens` above is
    /// the conventions' total, cache hits included (Anthropic's `input_tokens` leaves them out).
    pub cache_read_input_tokens: Option<u64>,
    /// The `usage` object as sent, verbatim.
    pub usage: Option<Value>,
    /// Anthropic `message_start` estimate (not the real count).
    pub input_tokens_estimate: Option<u64>,
    pub done_reason: Option<String>,
    /// OpenAI finish_reason, Anthropic stop_reason, Responses status.
    pub finish_reason: Option<String>,
    pub tool_calls: Vec<String>,
    pub embeddings: Option<u64>,
    /// Stream units written: NDJSON lines or SSE events (`[DONE]` included); 1 for a single body.
    pub chunks: u64,
    /// Units that carried output (content, thinking or a tool call).
    pub output_chunks: u64,
    /// HTTP chunks written (chunked framing only).
    pub http_chunks: u64,
    /// Socket writes of body bytes (each one flush).
    pub writes: u64,
    /// The API's own end marker went out (`done:true`, `[DONE]`, `message_stop`,
    /// `response.completed`); non-streamed replies: false.
    pub stream_terminator: bool,
    /// The chunked `0\r\n\r\n` went out.
    pub chunked_terminator: bool,
    /// An error message the body carried (`{"error":...}` line, error body).
    pub error: Option<String>,
    /// `complete`, `error` (an error status or error in the body), `reset` (server RST),
    /// `closed` (server FIN mid-body), `client_gone` (a write failed).
    pub outcome: String,
    /// Concatenated answer text and thinking, as a client would assemble them.
    pub content: String,
    pub thinking: String,

    /// Wall clock, ns since the epoch: the read that returned the request's first byte.
    pub t_request_first_byte_ns: u64,
    /// The read that completed the request (head + body).
    pub t_request_end_ns: u64,
    pub t_continue_sent_ns: Option<u64>,
    /// Just before the write carrying the response head (with the first body bytes, if any).
    pub t_response_first_byte_ns: Option<u64>,
    /// Just before the first write carrying output.
    pub t_first_content_ns: Option<u64>,
    /// Just after the last write returned (or the reset / close).
    pub t_last_byte_ns: Option<u64>,
}

/// Reads sent bytes back into a [`Truth`].
#[derive(Debug, Default)]
pub struct Observer {
    pub truth: Truth,
    streamed: bool,
}

impl Observer {
    pub fn new(streamed: bool) -> Observer {
        Observer { truth: Truth::default(), streamed }
    }

    /// Account for one written unit (one or more NDJSON lines / SSE events, or a whole body).
    /// Returns whether it carried output.
    pub fn observe(&mut self, kind: BodyKind, bytes: &[u8]) -> bool {
        let before = self.output_marker();
        if self.streamed && kind.is_streamed() {
            for piece in split_body(kind, bytes) {
                self.truth.chunks += 1;
                match kind {
                    BodyKind::Sse => self.sse_event(piece),
                    _ => self.json_bytes(piece),
                }
            }
        } else if !bytes.is_empty() {
            self.truth.chunks += 1;
            if matches!(kind, BodyKind::Json | BodyKind::Ndjson) {
                self.json_bytes(bytes);
            }
        }
        let output = self.output_marker() != before;
        if output {
            self.truth.output_chunks += 1;
        }
        output
    }

    fn output_marker(&self) -> (usize, usize, usize) {
        (self.truth.content.len(), self.truth.thinking.len(), self.truth.tool_calls.len())
    }

    fn sse_event(&mut self, event: &[u8]) {
        let mut name = None;
        let mut data = Vec::new();
        for line in event.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(n) = line.strip_prefix(b"event:") {
                name = Some(String::from_utf8_lossy(n).trim().to_owned());
            } else if let Some(d) = line.strip_prefix(b"data:") {
                data.extend_from_slice(d.strip_prefix(b" ").unwrap_or(d));
            }
        }
        if data == b"[DONE]" {
            self.truth.stream_terminator = true;
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&data) else {
            return;
        };
        let _ = name;
        self.value(&v);
    }

    fn json_bytes(&mut self, bytes: &[u8]) {
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            self.value(&v);
        }
    }

    fn value(&mut self, v: &Value) {
        let t = &mut self.truth;
        let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let n = |v: Option<&Value>| v.and_then(Value::as_u64);
        // Errors: native string, OpenAI object, Anthropic typed.
        match get(v, "error") {
            Some(Value::String(msg)) => t.error = Some(msg.clone()),
            Some(e @ Value::Object(_)) => t.error = s(get(e, "message")),
            _ => {}
        }
        let typ = s(get(v, "type")).unwrap_or_default();
        // Native generate / chat.
        if let Some(done) = get(v, "done").and_then(Value::as_bool) {
            let msg = get(v, "message");
            let text = msg.map_or_else(|| get(v, "response"), |m| get(m, "content"));
            push_text(&mut t.content, text);
            push_text(&mut t.thinking, msg.map_or_else(|| get(v, "thinking"), |m| get(m, "thinking")));
            for c in msg.and_then(|m| get(m, "tool_calls")).and_then(Value::as_array).into_iter().flatten() {
                t.tool_calls.extend(s(get(c, "function").and_then(|f| get(f, "name"))));
            }
            if done {
                t.stream_terminator = self.streamed;
                t.done_reason = s(get(v, "done_reason"));
                t.prompt_eval_count = n(get(v, "prompt_eval_count"));
                t.eval_count = n(get(v, "eval_count"));
                t.cache_read_input_tokens = n(get(v, "prompt_eval_cached_count"));
                t.total_duration = n(get(v, "total_duration"));
                t.load_duration = n(get(v, "load_duration"));
                t.prompt_eval_duration = n(get(v, "prompt_eval_duration"));
                t.eval_duration = n(get(v, "eval_duration"));
                t.input_tokens = t.prompt_eval_count;
                t.output_tokens = t.eval_count;
            }
            return;
        }
        // Listings.
        if let Some(models) = get(v, "models").and_then(Value::as_array) {
            t.models_listed = Some(models.iter().filter_map(|m| s(get(m, "name"))).collect());
            return;
        }
        // Embeddings.
        if let Some(e) = get(v, "embeddings").and_then(Value::as_array) {
            t.embeddings = Some(e.len() as u64);
            t.prompt_eval_count = n(get(v, "prompt_eval_count"));
            t.input_tokens = t.prompt_eval_count;
            return;
        }
        if get(v, "embedding").is_some() {
            t.embeddings = Some(1);
            return;
        }
        if s(get(v, "object")).as_deref() == Some("list")
            && let Some(data) = get(v, "data").and_then(Value::as_array)
            && data.iter().any(|d| get(d, "embedding").is_some())
        {
            t.embeddings = Some(data.len() as u64);
            self.openai_usage(get(v, "usage"), true);
            return;
        }
        // OpenAI chat / completions.
        if let Some(choices) = get(v, "choices").and_then(Value::as_array) {
            for c in choices {
                let m = get(c, "delta").or_else(|| get(c, "message"));
                let t = &mut self.truth;
                push_text(&mut t.content, m.and_then(|m| get(m, "content")).or_else(|| get(c, "text")));
                push_text(&mut t.thinking, m.and_then(|m| get(m, "reasoning").or_else(|| get(m, "reasoning_content"))));
                for tc in m.and_then(|m| get(m, "tool_calls")).and_then(Value::as_array).into_iter().flatten() {
                    t.tool_calls.extend(s(get(tc, "function").and_then(|f| get(f, "name"))));
                }
                if let Some(r) = s(get(c, "finish_reason")) {
                    t.finish_reason = Some(r);
                }
            }
            self.openai_usage(get(v, "usage"), choices.is_empty());
            if !self.streamed {
                self.truth.stream_terminator = false;
            }
            return;
        }
        // Anthropic.
        match typ.as_str() {
            "message_start" => {
                t.input_tokens_estimate =
                    get(v, "message").and_then(|m| get(m, "usage")).and_then(|u| n(get(u, "input_tokens")));
                return;
            }
            "content_block_start" => {
                if let Some(b) = get(v, "content_block")
                    && s(get(b, "type")).as_deref() == Some("tool_use")
                {
                    t.tool_calls.extend(s(get(b, "name")));
                }
                return;
            }
            "content_block_delta" => {
                let d = get(v, "delta");
                push_text(&mut t.content, d.and_then(|d| get(d, "text")));
                push_text(&mut t.thinking, d.and_then(|d| get(d, "thinking")));
                return;
            }
            "message_delta" => {
                t.finish_reason = get(v, "delta").and_then(|d| s(get(d, "stop_reason")));
                self.anthropic_usage(get(v, "usage"));
                return;
            }
            "message_stop" => {
                t.stream_terminator = true;
                return;
            }
            "message" => {
                for b in get(v, "content").and_then(Value::as_array).into_iter().flatten() {
                    match s(get(b, "type")).as_deref() {
                        Some("text") => push_text(&mut t.content, get(b, "text")),
                        Some("thinking") => push_text(&mut t.thinking, get(b, "thinking")),
                        Some("tool_use") => t.tool_calls.extend(s(get(b, "name"))),
                        _ => {}
                    }
                }
                t.finish_reason = s(get(v, "stop_reason"));
                self.anthropic_usage(get(v, "usage"));
                return;
            }
            _ => {}
        }
        // Responses API.
        if let Some(event) = typ.strip_prefix("response.") {
            match event {
                "output_text.delta" => push_text(&mut t.content, get(v, "delta")),
                "reasoning_summary_text.delta" => push_text(&mut t.thinking, get(v, "delta")),
                "output_item.added" => {
                    if let Some(item) = get(v, "item")
                        && s(get(item, "type")).as_deref() == Some("function_call")
                    {
                        t.tool_calls.extend(s(get(item, "name")));
                    }
                }
                "completed" | "failed" | "incomplete" => {
                    t.stream_terminator = true;
                    if let Some(r) = get(v, "response") {
                        self.response_object(r, false);
                    }
                }
                _ => {}
            }
            return;
        }
        if s(get(v, "object")).as_deref() == Some("response") {
            self.response_object(v, true);
        }
    }

    fn response_object(&mut self, r: &Value, whole: bool) {
        let t = &mut self.truth;
        t.finish_reason = get(r, "status").and_then(Value::as_str).map(str::to_owned);
        if whole {
            for item in get(r, "output").and_then(Value::as_array).into_iter().flatten() {
                match get(item, "type").and_then(Value::as_str) {
                    Some("message") => {
                        for part in get(item, "content").and_then(Value::as_array).into_iter().flatten() {
                            push_text(&mut t.content, get(part, "text"));
                        }
                    }
                    Some("reasoning") => {
                        for part in get(item, "summary").and_then(Value::as_array).into_iter().flatten() {
                            push_text(&mut t.thinking, get(part, "text"));
                        }
                    }
                    Some("function_call") => {
                        t.tool_calls.extend(get(item, "name").and_then(Value::as_str).map(str::to_owned))
                    }
                    _ => {}
                }
            }
        }
        self.anthropic_usage(get(r, "usage"));
    }

    fn openai_usage(&mut self, usage: Option<&Value>, authoritative: bool) {
        let Some(u) = usage else { return };
        let total = get(u, "total_tokens").and_then(Value::as_u64).unwrap_or(0);
        // /v1/completions with include_usage puts zero usage on every chunk; only the final
        // `choices: []` chunk (or a non-zero one) is real.
        if authoritative || total > 0 || self.truth.usage.is_none() {
            self.truth.usage = Some(u.clone());
            self.truth.input_tokens = get(u, "prompt_tokens").and_then(Value::as_u64);
            self.truth.output_tokens = get(u, "completion_tokens").and_then(Value::as_u64);
            self.truth.cache_read_input_tokens =
                get(u, "prompt_tokens_details").and_then(|d| get(d, "cached_tokens")).and_then(Value::as_u64);
        }
    }

    /// Anthropic's `usage`, and the Responses API's (same names; its `input_tokens` includes
    /// the cache hits, Anthropic's does not).
    fn anthropic_usage(&mut self, usage: Option<&Value>) {
        let Some(u) = usage else { return };
        self.truth.usage = Some(u.clone());
        let input = get(u, "input_tokens").and_then(Value::as_u64);
        let cache_read = get(u, "cache_read_input_tokens").and_then(Value::as_u64);
        let cached = get(u, "input_tokens_details").and_then(|d| get(d, "cached_tokens")).and_then(Value::as_u64);
        self.truth.input_tokens = input.map(|i| i + cache_read.unwrap_or(0));
        self.truth.cache_read_input_tokens = cache_read.or(cached);
        self.truth.output_tokens = get(u, "output_tokens").and_then(Value::as_u64);
    }
}

fn push_text(out: &mut String, v: Option<&Value>) {
    if let Some(s) = v.and_then(Value::as_str) {
        out.push_str(s);
    }
}

/// Whether one unit of a `kind` stream carries output (used to count and cut fixture replays).
pub fn unit_has_output(kind: BodyKind, bytes: &[u8]) -> bool {
    Observer::new(true).observe(kind, bytes)
}

/// Appends truth records to a file from one task, a line per record, flushed per line.
#[derive(Clone)]
pub struct TruthLog {
    tx: Option<mpsc::UnboundedSender<Truth>>,
}

impl TruthLog {
    /// No file: records are dropped.
    pub fn disabled() -> TruthLog {
        TruthLog { tx: None }
    }

    /// Open (truncate) `path` and start the writer task; it ends when every sender is gone.
    pub fn open(path: &Path) -> std::io::Result<(TruthLog, tokio::task::JoinHandle<()>)> {
        let file = std::fs::File::create(path)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Truth>();
        let handle = tokio::task::spawn_blocking(move || {
            let mut w = std::io::BufWriter::new(file);
            while let Some(t) = rx.blocking_recv() {
                let mut line = serde_json::to_vec(&t).unwrap_or_default();
                line.push(b'\n');
                // Tests wait for the line: write and flush it now.
                if w.write_all(&line).and_then(|()| w.flush()).is_err() {
                    eprintln!("ollama-standin: cannot write truth log");
                }
            }
        });
        Ok((TruthLog { tx: Some(tx) }, handle))
    }

    pub fn record(&self, t: Truth) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_native_and_openai() {
        let mut o = Observer::new(true);
        assert!(o.observe(
            BodyKind::Ndjson,
            br#"{"model":"m","created_at":"x","message":{"role":"assistant","content":"Hi"},"done":false}
"#
        ));
        assert!(!o.observe(
            BodyKind::Ndjson,
            br#"{"model":"m","created_at":"x","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":3,"eval_count":1}
"#
        ));
        assert_eq!(o.truth.content, "Hi");
        assert_eq!((o.truth.prompt_eval_count, o.truth.eval_count), (Some(3), Some(1)));
        assert!(o.truth.stream_terminator);
        assert_eq!((o.truth.chunks, o.truth.output_chunks), (2, 1));

        let mut o = Observer::new(true);
        o.observe(BodyKind::Sse, b"data: {\"choices\":[{\"index\":0,\"text\":\"a\",\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":0,\"total_tokens\":0}}\n\n");
        o.observe(BodyKind::Sse, b"data: {\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":0,\"total_tokens\":0}}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\ndata: [DONE]\n\n");
        assert_eq!((o.truth.input_tokens, o.truth.output_tokens), (Some(5), Some(1)));
        assert_eq!(o.truth.finish_reason.as_deref(), Some("stop"));
        assert_eq!(o.truth.chunks, 4);
        assert!(o.truth.stream_terminator);
    }
}
