//! OpenAI-compatible responses (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/models`), streamed as SSE chunks or as one JSON object, in both the current and the
//! pre-0.32.6 stream layouts.

use super::call::ToolCall;
use super::framing::{DocEnd, DocVisitor};
use super::route::Route;
use super::stream::{ARGS_LIMIT, MAX_TOOL_CALLS, MESSAGE, SHORT, Stream};
use super::token_chunk;
use crate::json::{Descend, JsonVisitor, Kind, P, Path, Scalar, SkipStats, StrAcc};
use crate::segment::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OaStr {
    None,
    Id,
    Model,
    Content,
    Reasoning,
    FinishReason,
    ToolName,
    ToolId,
    /// Tool-call arguments text (content capture only).
    ToolArgs,
    ErrorMessage,
    ErrorType,
    EmbeddingB64,
}

#[derive(Debug, Default)]
struct OaDoc {
    id: bool,
    model: bool,
    content: u64,
    reasoning: u64,
    /// (choice index, finish reason)
    finish: Vec<(u32, String)>,
    tool_calls: Vec<ToolCall>,
    /// Length of `choices`, when present.
    choices: Option<u32>,
    prompt_tokens: Option<u64>,
    /// `usage.prompt_tokens_details.cached_tokens` (Ollama ≥ 0.33).
    cached_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    error: bool,
    error_type: bool,
    data_len: Option<u64>,
    dimension: Option<u64>,
}

#[derive(Debug)]
pub struct OpenAiVisitor {
    route: Route,
    streamed: bool,
    pub(super) s: Stream,
    doc: OaDoc,
    /// `doc` (and `cur`) may hold something of a document begun (see `NativeVisitor`).
    doc_dirty: bool,
    cur: OaStr,
    acc: StrAcc,
    id: StrAcc,
    model: StrAcc,
    error: StrAcc,
    error_type: StrAcc,
    /// Length and trailing `=` of a base64 embedding, to size the vector.
    b64_len: u64,
    b64_tail: [u8; 2],
    /// Finish reason per choice index.
    finish: Vec<(u32, String)>,
}

impl OpenAiVisitor {
    pub fn new(route: Route, streamed: bool) -> Self {
        OpenAiVisitor {
            route,
            streamed,
            s: Stream::default(),
            doc: OaDoc::default(),
            doc_dirty: false,
            cur: OaStr::None,
            acc: StrAcc::with_cap(SHORT),
            id: StrAcc::with_cap(SHORT),
            model: StrAcc::with_cap(SHORT),
            error: StrAcc::with_cap(MESSAGE),
            error_type: StrAcc::with_cap(SHORT),
            b64_len: 0,
            b64_tail: [0; 2],
            finish: Vec::new(),
        }
    }

    /// `choices[i].<delta|message>.<field…>`: returns (i, rest of path from the field).
    fn choice_field<'a>(path: &Path<'a>) -> Option<(u32, usize)> {
        if path.key(0) != Some(b"choices") {
            return None;
        }
        let i = path.index(1)?;
        Some((i, 2))
    }

    fn classify(&self, path: &Path<'_>) -> OaStr {
        let d = path.depth();
        if d == 1 {
            return match path.key(0) {
                Some(b"id") => OaStr::Id,
                Some(b"model") => OaStr::Model,
                _ => OaStr::None,
            };
        }
        if path.is(&["error", "message"]) {
            return OaStr::ErrorMessage;
        }
        if path.is(&["error", "type"]) {
            return OaStr::ErrorType;
        }
        if path.matches(&[P::Key("data"), P::AnyIndex, P::Key("embedding")]) {
            return OaStr::EmbeddingB64;
        }
        let Some((_, b)) = Self::choice_field(path) else { return OaStr::None };
        match (d - b, path.key(b)) {
            (1, Some(b"finish_reason")) => OaStr::FinishReason,
            (1, Some(b"text")) => OaStr::Content,
            (2, Some(b"delta" | b"message")) => match path.key(b + 1) {
                Some(b"content") => OaStr::Content,
                Some(b"reasoning" | b"reasoning_content") => OaStr::Reasoning,
                _ => OaStr::None,
            },
            (4, Some(b"delta" | b"message"))
                if path.key(b + 1) == Some(b"tool_calls") && path.key(b + 3) == Some(b"id") =>
            {
                OaStr::ToolId
            }
            (5, Some(b"delta" | b"message"))
                if path.key(b + 1) == Some(b"tool_calls")
                    && path.key(b + 3) == Some(b"function")
                    && path.key(b + 4) == Some(b"name") =>
            {
                OaStr::ToolName
            }
            (5, Some(b"delta" | b"message"))
                if self.s.capture
                    && path.key(b + 1) == Some(b"tool_calls")
                    && path.key(b + 3) == Some(b"function")
                    && path.key(b + 4) == Some(b"arguments") =>
            {
                OaStr::ToolArgs
            }
            _ => OaStr::None,
        }
    }

    fn tool_call(&mut self, path: &Path<'_>) -> Option<&mut ToolCall> {
        let i = path.index(4)? as usize;
        if i >= MAX_TOOL_CALLS {
            return None;
        }
        while self.doc.tool_calls.len() <= i {
            self.doc.tool_calls.push(ToolCall::default());
        }
        self.doc.tool_calls.get_mut(i)
    }
}

impl JsonVisitor for OpenAiVisitor {
    fn begin(&mut self, path: &Path<'_>, kind: Kind) -> Descend {
        if kind == Kind::Array && path.matches(&[P::Key("data"), P::AnyIndex, P::Key("embedding")]) {
            return Descend::Skip;
        }
        if path.depth() >= 3 && path.key(2) == Some(b"logprobs") {
            return Descend::Skip;
        }
        Descend::Enter
    }

    fn end(&mut self, path: &Path<'_>, kind: Kind, len: u32) {
        if path.depth() == 1 && kind == Kind::Array {
            match path.key(0) {
                Some(b"choices") => self.doc.choices = Some(len),
                Some(b"data") => self.doc.data_len = Some(len as u64),
                _ => {}
            }
        }
    }

    fn skipped(&mut self, path: &Path<'_>, _kind: Kind, stats: SkipStats) {
        if path.index(1) == Some(0) && path.key(0) == Some(b"data") {
            self.doc.dimension = Some(stats.elements);
        }
    }

    fn scalar(&mut self, path: &Path<'_>, v: Scalar<'_>) {
        if path.depth() == 2 && path.key(0) == Some(b"usage") {
            match path.key(1) {
                Some(b"prompt_tokens") => self.doc.prompt_tokens = v.as_u64(),
                Some(b"completion_tokens") => self.doc.completion_tokens = v.as_u64(),
                _ => {}
            }
        } else if path.is(&["usage", "prompt_tokens_details", "cached_tokens"]) {
            self.doc.cached_tokens = v.as_u64();
        }
    }

    fn string(&mut self, path: &Path<'_>, part: &[u8], last: bool) {
        if self.cur == OaStr::None {
            self.cur = self.classify(path);
            match self.cur {
                OaStr::None => return,
                OaStr::Id => self.id.clear(),
                OaStr::Model => self.model.clear(),
                OaStr::ErrorMessage => self.error.clear(),
                OaStr::ErrorType => self.error_type.clear(),
                OaStr::EmbeddingB64 => {
                    self.b64_len = 0;
                    self.b64_tail = [0; 2];
                }
                _ => self.acc.clear(),
            }
        }
        match self.cur {
            OaStr::None => return,
            OaStr::Content => {
                self.doc.content += part.len() as u64;
                self.s.text(part);
            }
            OaStr::Reasoning => {
                self.doc.reasoning += part.len() as u64;
                self.s.reasoning(part);
            }
            OaStr::ToolArgs => {
                if let Some(tc) = self.tool_call(path) {
                    let args = tc.arguments.get_or_insert_with(String::new);
                    let room = ARGS_LIMIT.saturating_sub(args.len());
                    args.push_str(&String::from_utf8_lossy(&part[..part.len().min(room)]));
                }
            }
            OaStr::Id => self.id.push(part),
            OaStr::Model => self.model.push(part),
            OaStr::ErrorMessage => self.error.push(part),
            OaStr::ErrorType => self.error_type.push(part),
            OaStr::EmbeddingB64 => {
                self.b64_len += part.len() as u64;
                for &b in part {
                    self.b64_tail = [self.b64_tail[1], b];
                }
            }
            OaStr::FinishReason | OaStr::ToolName | OaStr::ToolId => self.acc.push(part),
        }
        if last {
            match self.cur {
                OaStr::Id => self.doc.id = true,
                OaStr::Model => self.doc.model = true,
                OaStr::ErrorMessage => self.doc.error = true,
                OaStr::ErrorType => self.doc.error_type = true,
                OaStr::FinishReason => {
                    if let Some(i) = path.index(1) {
                        let reason = self.acc.take_string();
                        self.doc.finish.push((i, reason));
                    }
                }
                OaStr::ToolName | OaStr::ToolId => {
                    let value = self.acc.take_string();
                    let field = self.cur;
                    if let Some(tc) = self.tool_call(path) {
                        if field == OaStr::ToolName {
                            tc.name = value;
                        } else {
                            tc.id = Some(value);
                        }
                    }
                }
                // base64 of little-endian f32s.
                OaStr::EmbeddingB64 if path.index(1) == Some(0) => {
                    let len = self.b64_len;
                    let pad = self.b64_tail.iter().filter(|&&b| b == b'=').count() as u64;
                    self.doc.dimension = Some((len / 4 * 3).saturating_sub(pad) / 4);
                }
                _ => {}
            }
            self.cur = OaStr::None;
        }
    }
}

impl DocVisitor for OpenAiVisitor {
    /// A token chunk of a chat or completions stream, read by its bytes; content capture reads
    /// every document in full (its text is kept piece by piece).
    fn whole_doc(&mut self, doc: &[u8], _event: Option<&str>, ts: Timestamp) -> bool {
        if self.s.capture || !self.streamed || !matches!(self.route, Route::OpenAiChat | Route::OpenAiCompletions) {
            return false;
        }
        let Some(t) = token_chunk::openai(doc) else {
            return false;
        };
        // What `doc_begin`, the scan and `doc_end` leave of such a document.
        if std::mem::take(&mut self.doc_dirty) {
            self.doc = OaDoc::default();
            self.cur = OaStr::None;
        }
        let s = &mut self.s;
        s.token_chunk(ts, t.content, t.reasoning);
        if let Some(id) = t.id {
            s.set_id_plain(id, self.id.cap());
        }
        if let Some(m) = t.model.filter(|m| !m.is_empty()) {
            s.set_model_plain(m, self.model.cap());
        }
        true
    }

    fn doc_begin(&mut self) {
        self.doc = OaDoc::default();
        self.doc_dirty = true;
        self.cur = OaStr::None;
        self.s.doc_reset();
    }

    fn doc_end(&mut self, ts: Timestamp, end: DocEnd<'_>) {
        match end {
            DocEnd::DoneMarker => {
                self.s.info.terminated = true;
                return;
            }
            DocEnd::Invalid { .. } => {
                self.s.info.invalid_chunks += 1;
                return;
            }
            // Cut by missing bytes: changes nothing (the gap is reported apart).
            DocEnd::Damaged => return,
            DocEnd::Json { .. } => {}
        }
        let doc = std::mem::take(&mut self.doc);
        let s = &mut self.s;
        if doc.error {
            let message = self.error.to_string_lossy();
            let kind = doc.error_type.then(|| self.error_type.to_string_lossy());
            s.error(Some(message), kind);
            return;
        }
        let has_output = doc.content > 0 || doc.reasoning > 0 || doc.tool_calls.iter().any(|t| !t.name.is_empty());
        s.chunk(ts, has_output);
        s.info.text_bytes += doc.content;
        s.info.reasoning_bytes += doc.reasoning;
        s.commit();
        if doc.id {
            s.set_id(&self.id);
        }
        // A mid-stream error reaches /v1 clients as a chunk with an empty model (§4.3).
        if doc.model && !self.model.bytes().is_empty() {
            s.set_model(&self.model);
        }
        s.add_tool_calls(doc.tool_calls, MAX_TOOL_CALLS);
        if !doc.finish.is_empty() {
            for (i, reason) in doc.finish {
                match self.finish.iter_mut().find(|(j, _)| *j == i) {
                    Some(slot) => slot.1 = reason,
                    None => self.finish.push((i, reason)),
                }
            }
            self.finish.sort_by_key(|(i, _)| *i);
            s.info.finish_reasons = self.finish.iter().map(|(_, r)| r.clone()).collect();
        }
        // In streams only the usage chunk (`choices: []`) has real numbers: /v1/completions puts
        // zeros on every other chunk.
        let usage_ok = !self.streamed || doc.choices == Some(0) || self.route == Route::OpenAiEmbeddings;
        if usage_ok {
            if doc.prompt_tokens.is_some() {
                s.info.input_tokens = doc.prompt_tokens;
            }
            if doc.completion_tokens.is_some() {
                s.info.output_tokens = doc.completion_tokens;
            }
            if doc.cached_tokens.is_some() {
                s.info.cache_read_input_tokens = doc.cached_tokens.filter(|n| *n > 0);
            }
        }
        if doc.data_len.is_some() {
            match self.route {
                Route::OpenAiEmbeddings => s.info.embeddings = doc.data_len,
                Route::OpenAiModels => s.info.models_listed = doc.data_len,
                _ => {}
            }
        }
        if doc.dimension.is_some() {
            s.info.dimension = doc.dimension;
        }
        if !self.streamed && !s.error_status {
            s.info.terminated = true;
        }
    }
}
