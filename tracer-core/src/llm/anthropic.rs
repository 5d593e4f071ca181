//! Anthropic-compatible responses (`/v1/messages`): SSE events (`message_start`,
//! `content_block_*`, `message_delta`, `message_stop`) or one `message` object. Token counts come
//! from `message_delta` (the `message_start` input count is Ollama's len/4 estimate).

use super::call::ToolCall;
use super::framing::{DocEnd, DocVisitor};
use super::stream::{ARGS_LIMIT, MAX_TOOL_CALLS, MESSAGE, SHORT, Stream};
use super::token_chunk::{self, CONTENT_BLOCK_DELTA};
use crate::json::{Descend, JsonVisitor, Kind, Path, Scalar, SkipStats, StrAcc};
use crate::segment::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnStr {
    None,
    Type,
    Id,
    Model,
    StopReason,
    BlockType,
    BlockName,
    BlockId,
    /// text / thinking / partial_json of a delta, or text / thinking of a plain body's block.
    Text,
    Thinking,
    ErrorMessage,
    ErrorType,
}

#[derive(Debug, Default)]
struct AnDoc {
    text: u64,
    thinking: u64,
    tool_input: u64,
    id: bool,
    model: bool,
    stop_reason: Option<String>,
    block_type: Option<String>,
    block_name: Option<String>,
    block_id: Option<String>,
    /// A plain body's tool_use `input`, as raw JSON (content capture only).
    block_input: Option<String>,
    calls: Vec<ToolCall>,
    input_tokens: Option<u64>,
    /// `usage.cache_read_input_tokens` (Ollama ≥ 0.33): subtracted from `input_tokens`, as
    /// Anthropic counts.
    cache_read: Option<u64>,
    output_tokens: Option<u64>,
    error: bool,
    error_type: bool,
}

#[derive(Debug)]
pub struct AnthropicVisitor {
    streamed: bool,
    pub(super) s: Stream,
    doc: AnDoc,
    cur: AnStr,
    kind: StrAcc,
    acc: StrAcc,
    id: StrAcc,
    model: StrAcc,
    error: StrAcc,
    error_type: StrAcc,
}

impl AnthropicVisitor {
    pub fn new(streamed: bool) -> Self {
        AnthropicVisitor {
            streamed,
            s: Stream::default(),
            doc: AnDoc::default(),
            cur: AnStr::None,
            kind: StrAcc::with_cap(SHORT),
            acc: StrAcc::with_cap(SHORT),
            id: StrAcc::with_cap(SHORT),
            model: StrAcc::with_cap(SHORT),
            error: StrAcc::with_cap(MESSAGE),
            error_type: StrAcc::with_cap(SHORT),
        }
    }

    fn classify(&self, path: &Path<'_>) -> AnStr {
        let d = path.depth();
        let k = |i| path.key(i);
        if d == 1 {
            return match k(0) {
                Some(b"type") => AnStr::Type,
                Some(b"id") if !self.streamed => AnStr::Id,
                Some(b"model") if !self.streamed => AnStr::Model,
                Some(b"stop_reason") if !self.streamed => AnStr::StopReason,
                _ => AnStr::None,
            };
        }
        match (d, k(0), k(1)) {
            (2, Some(b"message"), Some(b"id")) => AnStr::Id,
            (2, Some(b"message"), Some(b"model")) => AnStr::Model,
            (2, Some(b"delta"), Some(b"stop_reason")) => AnStr::StopReason,
            (2, Some(b"delta"), Some(b"text")) => AnStr::Text,
            (2, Some(b"delta"), Some(b"thinking")) => AnStr::Thinking,
            (2, Some(b"delta"), Some(b"partial_json")) => AnStr::Text,
            (2, Some(b"content_block"), Some(b"type")) => AnStr::BlockType,
            (2, Some(b"content_block"), Some(b"name")) => AnStr::BlockName,
            (2, Some(b"content_block"), Some(b"id")) => AnStr::BlockId,
            (2, Some(b"error"), Some(b"message")) => AnStr::ErrorMessage,
            (2, Some(b"error"), Some(b"type")) => AnStr::ErrorType,
            // Plain body: content[i].{type,text,thinking,name,id}
            (3, Some(b"content"), _) if !self.streamed => match k(2) {
                Some(b"type") => AnStr::BlockType,
                Some(b"text") => AnStr::Text,
                Some(b"thinking") => AnStr::Thinking,
                Some(b"name") => AnStr::BlockName,
                Some(b"id") => AnStr::BlockId,
                _ => AnStr::None,
            },
            _ => AnStr::None,
        }
    }

    fn flush_block(&mut self) {
        if self.doc.block_type.as_deref() == Some("tool_use") {
            let call = ToolCall {
                id: self.doc.block_id.take(),
                name: self.doc.block_name.take().unwrap_or_default(),
                arguments: self.doc.block_input.take(),
            };
            if !call.name.is_empty() && self.doc.calls.len() < MAX_TOOL_CALLS {
                self.doc.calls.push(call);
            }
        }
        self.doc.block_type = None;
        self.doc.block_name = None;
        self.doc.block_id = None;
    }
}

impl JsonVisitor for AnthropicVisitor {
    fn begin(&mut self, path: &Path<'_>, kind: Kind) -> Descend {
        // A tool's `input` object: kept raw when content is captured, else skipped.
        if kind == Kind::Object && path.key(path.depth().saturating_sub(1)) == Some(b"input") {
            return if self.s.capture { Descend::Capture(ARGS_LIMIT) } else { Descend::Skip };
        }
        Descend::Enter
    }

    fn captured(&mut self, path: &Path<'_>, _kind: Kind, raw: &[u8], _truncated: bool, _stats: SkipStats) {
        // Streams announce `input: {}` in content_block_start and send it in deltas.
        if !self.streamed && path.depth() == 3 && path.key(0) == Some(b"content") {
            self.doc.block_input = Some(String::from_utf8_lossy(raw).into_owned());
        }
    }

    fn end(&mut self, path: &Path<'_>, kind: Kind, _len: u32) {
        if !self.streamed && kind == Kind::Object && path.depth() == 2 && path.key(0) == Some(b"content") {
            self.flush_block();
        }
    }

    fn scalar(&mut self, path: &Path<'_>, v: Scalar<'_>) {
        // Real counts: `usage` of a plain body or of `message_delta`; never `message.usage`.
        if path.depth() == 2 && path.key(0) == Some(b"usage") {
            match path.key(1) {
                Some(b"input_tokens") => self.doc.input_tokens = v.as_u64(),
                Some(b"output_tokens") => self.doc.output_tokens = v.as_u64(),
                Some(b"cache_read_input_tokens") => self.doc.cache_read = v.as_u64(),
                _ => {}
            }
        }
    }

    fn string(&mut self, path: &Path<'_>, part: &[u8], last: bool) {
        if self.cur == AnStr::None {
            self.cur = self.classify(path);
            match self.cur {
                AnStr::None => return,
                AnStr::Type => self.kind.clear(),
                AnStr::Id => self.id.clear(),
                AnStr::Model => self.model.clear(),
                AnStr::ErrorMessage => self.error.clear(),
                AnStr::ErrorType => self.error_type.clear(),
                _ => self.acc.clear(),
            }
        }
        let partial_json = path.key(1) == Some(b"partial_json");
        match self.cur {
            AnStr::None => return,
            AnStr::Text if partial_json => {
                self.doc.tool_input += part.len() as u64;
                self.s.args(part);
            }
            AnStr::Text => {
                self.doc.text += part.len() as u64;
                self.s.text(part);
            }
            AnStr::Thinking => {
                self.doc.thinking += part.len() as u64;
                self.s.reasoning(part);
            }
            AnStr::Type => self.kind.push(part),
            AnStr::Id => self.id.push(part),
            AnStr::Model => self.model.push(part),
            AnStr::ErrorMessage => self.error.push(part),
            AnStr::ErrorType => self.error_type.push(part),
            AnStr::StopReason | AnStr::BlockType | AnStr::BlockName | AnStr::BlockId => self.acc.push(part),
        }
        if last {
            match self.cur {
                AnStr::Id => self.doc.id = true,
                AnStr::Model => self.doc.model = true,
                AnStr::ErrorMessage => self.doc.error = true,
                AnStr::ErrorType => self.doc.error_type = true,
                AnStr::StopReason => self.doc.stop_reason = Some(self.acc.take_string()),
                AnStr::BlockType => self.doc.block_type = Some(self.acc.take_string()),
                AnStr::BlockName => self.doc.block_name = Some(self.acc.take_string()),
                AnStr::BlockId => self.doc.block_id = Some(self.acc.take_string()),
                _ => {}
            }
            self.cur = AnStr::None;
        }
    }
}

impl DocVisitor for AnthropicVisitor {
    /// A text or thinking delta of a stream, read by its bytes; content capture reads every
    /// document in full (its text is kept piece by piece).
    fn whole_doc(&mut self, doc: &[u8], event: Option<&str>, ts: Timestamp) -> bool {
        if self.s.capture || !self.streamed || event.is_some_and(|e| e != CONTENT_BLOCK_DELTA) {
            return false;
        }
        let Some(t) = token_chunk::anthropic(doc) else {
            return false;
        };
        // What `doc_begin`, the scan and `doc_end` leave of such a document.
        self.doc = AnDoc::default();
        self.cur = AnStr::None;
        self.kind.clear();
        self.kind.push(CONTENT_BLOCK_DELTA.as_bytes());
        let s = &mut self.s;
        s.token_chunk(ts, t.text, t.thinking);
        true
    }

    fn doc_begin(&mut self) {
        self.doc = AnDoc::default();
        self.cur = AnStr::None;
        self.kind.clear();
        self.s.doc_reset();
    }

    fn doc_end(&mut self, ts: Timestamp, end: DocEnd<'_>) {
        let event = match end {
            DocEnd::Json { event } => event.map(str::to_owned),
            DocEnd::Invalid { .. } => {
                self.s.info.invalid_chunks += 1;
                return;
            }
            // Cut by missing bytes: changes nothing (the gap is reported apart).
            DocEnd::Damaged => return,
            DocEnd::DoneMarker => return,
        };
        let kind = event.unwrap_or_else(|| self.kind.to_string_lossy());
        if self.streamed && kind == "content_block_start" {
            self.flush_block();
        }
        let doc = std::mem::take(&mut self.doc);
        let s = &mut self.s;
        if doc.error || kind == "error" {
            let kind = doc.error_type.then(|| self.error_type.to_string_lossy());
            s.error(Some(self.error.to_string_lossy()), kind);
            return;
        }
        let has_output = doc.text > 0 || doc.thinking > 0 || doc.tool_input > 0 || !doc.calls.is_empty();
        s.chunk(ts, has_output);
        s.info.text_bytes += doc.text;
        s.info.reasoning_bytes += doc.thinking;
        let args = s.commit();
        s.add_tool_calls(doc.calls, MAX_TOOL_CALLS);
        if let Some(args) = args {
            // input_json_delta: the tool_use block's arguments, after content_block_start.
            s.extend_last_args(&args);
        }
        if doc.id {
            s.set_id(&self.id);
        }
        if doc.model {
            s.set_model(&self.model);
        }
        if let Some(n) = doc.input_tokens {
            // The conventions' input count includes the cache hits Anthropic's leaves out.
            s.info.input_tokens = Some(n + doc.cache_read.unwrap_or(0));
        }
        if doc.cache_read.is_some() {
            s.info.cache_read_input_tokens = doc.cache_read.filter(|n| *n > 0);
        }
        if doc.output_tokens.is_some() {
            s.info.output_tokens = doc.output_tokens;
        }
        if let Some(reason) = doc.stop_reason {
            s.info.finish_reasons = vec![reason];
        }
        if !self.streamed || kind == "message_stop" {
            s.info.terminated = true;
        }
    }
}
