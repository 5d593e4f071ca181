//! Ollama's native responses (`/api/*`): chat and generate chunks (NDJSON or one JSON value),
//! embeddings, model-management progress and listings.

use super::call::{RunningModel, ToolCall};
use super::framing::{DocEnd, DocVisitor};
use super::route::Route;
use super::stream::{ARGS_LIMIT, MAX_TOOL_CALLS, MESSAGE, SHORT, Stream};
use super::token_chunk;
use crate::json::{Descend, JsonVisitor, Kind, Path, Scalar, SkipStats, StrAcc};
use crate::segment::Timestamp;

/// Which string of a native document is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NativeStr {
    None,
    Model,
    DoneReason,
    Content,
    Thinking,
    ToolName,
    ToolId,
    Error,
    Status,
    Digest,
    /// `/api/ps`: a running model's `name`.
    RunningName,
}

/// Per-document fields of a native chunk, applied when the document ends (keys may come in any
/// order, and a broken document must change nothing).
/// Distinct progress steps kept per pull/push/create.
const MAX_PROGRESS_STEPS: usize = 64;
/// Models kept from one `/api/ps` answer (a server runs a handful).
const MAX_RUNNING: usize = 256;

#[derive(Debug, Default)]
struct NativeDoc {
    model: bool,
    done: Option<bool>,
    done_reason: bool,
    content: u64,
    thinking: u64,
    tool_calls: Vec<ToolCall>,
    error: bool,
    total_duration: Option<u64>,
    load_duration: Option<u64>,
    prompt_eval_count: Option<u64>,
    prompt_eval_cached_count: Option<u64>,
    prompt_eval_duration: Option<u64>,
    eval_count: Option<u64>,
    eval_duration: Option<u64>,
    embeddings: Option<u64>,
    dimension: Option<u64>,
    status: bool,
    digest: bool,
    completed: Option<u64>,
    total: Option<u64>,
    models: Option<u64>,
    /// `/api/ps`: the models listed, by index.
    running: Vec<RunningModel>,
}

#[derive(Debug)]
pub struct NativeVisitor {
    route: Route,
    pub(super) s: Stream,
    doc: NativeDoc,
    /// `doc` (and `cur`) may hold something of a document begun: cleared before the next one
    /// the fast path takes. Resetting them on every token chunk instead wrote five lines the
    /// chunk never reads (7 % of a replay's first-level cache misses at 256 connections).
    doc_dirty: bool,
    cur: NativeStr,
    acc: StrAcc,
    model: StrAcc,
    done_reason: StrAcc,
    error: StrAcc,
    status: StrAcc,
    digest: StrAcc,
}

impl NativeVisitor {
    pub fn new(route: Route) -> Self {
        NativeVisitor {
            route,
            s: Stream::default(),
            doc: NativeDoc::default(),
            doc_dirty: false,
            cur: NativeStr::None,
            acc: StrAcc::with_cap(SHORT),
            model: StrAcc::with_cap(SHORT),
            done_reason: StrAcc::with_cap(SHORT),
            error: StrAcc::with_cap(MESSAGE),
            status: StrAcc::with_cap(SHORT),
            digest: StrAcc::with_cap(SHORT),
        }
    }

    /// The object holding the generated text: `message` for chat, the document for generate.
    fn text_key<'a>(&self, path: &Path<'a>) -> Option<&'a [u8]> {
        match (self.route, path.depth()) {
            (Route::Chat, 2) if path.key(0) == Some(b"message") => path.key(1),
            (Route::Generate, 1) => path.key(0),
            _ => None,
        }
    }

    fn tool_call_field<'a>(&self, path: &Path<'a>) -> Option<(u32, &'a [u8])> {
        // chat: message.tool_calls[i].function.name / .id ; generate: tool_calls[i]...
        let base = if self.route == Route::Chat { 1 } else { 0 };
        if self.route == Route::Chat && path.key(0) != Some(b"message") {
            return None;
        }
        if path.key(base) != Some(b"tool_calls") {
            return None;
        }
        let i = path.index(base + 1)?;
        match path.depth() - base {
            3 if path.key(base + 2) == Some(b"id") => Some((i, b"id")),
            4 if path.key(base + 2) == Some(b"function") && path.key(base + 3) == Some(b"name") => Some((i, b"name")),
            4 if path.key(base + 2) == Some(b"function") && path.key(base + 3) == Some(b"arguments") => {
                Some((i, b"arguments"))
            }
            _ => None,
        }
    }

    /// The `/api/ps` entry `models[i]` a path is in (bounded).
    fn running(&mut self, path: &Path<'_>) -> Option<&mut RunningModel> {
        if path.key(0) != Some(b"models") {
            return None;
        }
        let i = path.index(1)? as usize;
        if i >= MAX_RUNNING {
            return None;
        }
        while self.doc.running.len() <= i {
            self.doc.running.push(RunningModel::default());
        }
        self.doc.running.get_mut(i)
    }

    fn tool_call(&mut self, i: u32) -> Option<&mut ToolCall> {
        let i = i as usize;
        if i >= MAX_TOOL_CALLS {
            return None;
        }
        while self.doc.tool_calls.len() <= i {
            self.doc.tool_calls.push(ToolCall::default());
        }
        self.doc.tool_calls.get_mut(i)
    }
}

impl JsonVisitor for NativeVisitor {
    fn begin(&mut self, path: &Path<'_>, kind: Kind) -> Descend {
        // A tool call's arguments object: kept as raw JSON when content is captured.
        if kind == Kind::Object && matches!(self.tool_call_field(path), Some((_, b"arguments"))) {
            return if self.s.capture { Descend::Capture(ARGS_LIMIT) } else { Descend::Skip };
        }
        match (path.depth(), path.key(0)) {
            // Token ids of the final generate chunk, logprobs: large and not recorded.
            (1, Some(b"context" | b"logprobs" | b"_debug_info" | b"model_info" | b"tensors" | b"projector_info")) => {
                Descend::Skip
            }
            (2, Some(b"message")) if path.key(1) == Some(b"logprobs") => Descend::Skip,
            // One embedding vector: only its length matters.
            (2, Some(b"embeddings")) if kind == Kind::Array => Descend::Skip,
            (1, Some(b"embedding")) if kind == Kind::Array => Descend::Skip,
            // `/api/ps`: each running model's name and sizes (its details are not needed).
            (2, Some(b"models")) if self.route == Route::Ps && kind == Kind::Object => Descend::Enter,
            (_, Some(b"models")) if path.depth() >= 2 => Descend::Skip,
            _ => Descend::Enter,
        }
    }

    fn captured(&mut self, path: &Path<'_>, _kind: Kind, raw: &[u8], _truncated: bool, _stats: SkipStats) {
        if let Some((i, b"arguments")) = self.tool_call_field(path)
            && let Some(tc) = self.tool_call(i)
        {
            tc.arguments = Some(String::from_utf8_lossy(raw).into_owned());
        }
    }

    fn end(&mut self, path: &Path<'_>, kind: Kind, len: u32) {
        if path.depth() == 1 && kind == Kind::Array {
            match path.key(0) {
                Some(b"embeddings") => self.doc.embeddings = Some(len as u64),
                Some(b"models") => self.doc.models = Some(len as u64),
                _ => {}
            }
        }
    }

    fn skipped(&mut self, path: &Path<'_>, _kind: Kind, stats: SkipStats) {
        match (path.depth(), path.key(0)) {
            (2, Some(b"embeddings")) if path.index(1) == Some(0) => self.doc.dimension = Some(stats.elements),
            (1, Some(b"embedding")) => {
                self.doc.dimension = Some(stats.elements);
                self.doc.embeddings = Some(1);
            }
            _ => {}
        }
    }

    fn scalar(&mut self, path: &Path<'_>, v: Scalar<'_>) {
        if self.route == Route::Ps
            && path.depth() == 3
            && let Some(m) = self.running(path)
        {
            match path.key(2) {
                Some(b"size") => m.size = v.as_u64(),
                Some(b"size_vram") => m.size_vram = v.as_u64(),
                _ => {}
            }
            return;
        }
        if path.depth() != 1 {
            return;
        }
        let d = &mut self.doc;
        match path.key(0) {
            Some(b"done") => d.done = v.as_bool(),
            Some(b"total_duration") => d.total_duration = v.as_u64(),
            Some(b"load_duration") => d.load_duration = v.as_u64(),
            Some(b"prompt_eval_count") => d.prompt_eval_count = v.as_u64(),
            Some(b"prompt_eval_cached_count") => d.prompt_eval_cached_count = v.as_u64(),
            Some(b"prompt_eval_duration") => d.prompt_eval_duration = v.as_u64(),
            Some(b"eval_count") => d.eval_count = v.as_u64(),
            Some(b"eval_duration") => d.eval_duration = v.as_u64(),
            Some(b"completed") => d.completed = v.as_u64(),
            Some(b"total") => d.total = v.as_u64(),
            _ => {}
        }
    }

    fn string(&mut self, path: &Path<'_>, part: &[u8], last: bool) {
        if self.cur == NativeStr::None {
            self.cur = match (path.depth(), path.key(0)) {
                (1, Some(b"model")) => NativeStr::Model,
                (1, Some(b"done_reason")) => NativeStr::DoneReason,
                (1, Some(b"error")) => NativeStr::Error,
                (1, Some(b"status")) => NativeStr::Status,
                (1, Some(b"digest")) if self.route.is_progress() => NativeStr::Digest,
                (3, Some(b"models")) if self.route == Route::Ps && path.key(2) == Some(b"name") => {
                    NativeStr::RunningName
                }
                _ => match self.text_key(path) {
                    Some(b"content" | b"response") => NativeStr::Content,
                    Some(b"thinking") => NativeStr::Thinking,
                    _ => match self.tool_call_field(path) {
                        Some((_, b"name")) => NativeStr::ToolName,
                        Some((_, b"id")) => NativeStr::ToolId,
                        _ => NativeStr::None,
                    },
                },
            };
            if self.cur == NativeStr::None {
                return;
            }
            match self.cur {
                NativeStr::Model => self.model.clear(),
                NativeStr::DoneReason => self.done_reason.clear(),
                NativeStr::Error => self.error.clear(),
                NativeStr::Status => self.status.clear(),
                NativeStr::Digest => self.digest.clear(),
                _ => self.acc.clear(),
            }
        }
        match self.cur {
            NativeStr::None => return,
            NativeStr::Content => {
                self.doc.content += part.len() as u64;
                self.s.text(part);
            }
            NativeStr::Thinking => {
                self.doc.thinking += part.len() as u64;
                self.s.reasoning(part);
            }
            NativeStr::Model => self.model.push(part),
            NativeStr::DoneReason => self.done_reason.push(part),
            NativeStr::Error => self.error.push(part),
            NativeStr::Status => self.status.push(part),
            NativeStr::Digest => self.digest.push(part),
            NativeStr::ToolName | NativeStr::ToolId | NativeStr::RunningName => self.acc.push(part),
        }
        if last {
            match self.cur {
                NativeStr::Model => self.doc.model = true,
                NativeStr::DoneReason => self.doc.done_reason = true,
                NativeStr::Error => self.doc.error = true,
                NativeStr::Status => self.doc.status = true,
                NativeStr::Digest => self.doc.digest = true,
                NativeStr::RunningName => {
                    let name = self.acc.take_string();
                    if let Some(m) = self.running(path) {
                        m.name = name;
                    }
                }
                NativeStr::ToolName | NativeStr::ToolId => {
                    let value = self.acc.take_string();
                    let field = self.cur;
                    if let Some((i, _)) = self.tool_call_field(path)
                        && let Some(tc) = self.tool_call(i)
                    {
                        if field == NativeStr::ToolName {
                            tc.name = value;
                        } else {
                            tc.id = Some(value);
                        }
                    }
                }
                _ => {}
            }
            self.cur = NativeStr::None;
        }
    }
}

impl DocVisitor for NativeVisitor {
    /// A token chunk (`"done":false`) of a chat or generate stream, read by its bytes; content
    /// capture reads every document in full (its text is kept piece by piece).
    fn whole_doc(&mut self, doc: &[u8], _event: Option<&str>, ts: Timestamp) -> bool {
        if self.s.capture || !matches!(self.route, Route::Chat | Route::Generate) {
            return false;
        }
        let Some(t) = token_chunk::native(doc, self.route == Route::Chat) else {
            return false;
        };
        // What `doc_begin`, the scan and `doc_end` leave of such a document.
        if std::mem::take(&mut self.doc_dirty) {
            self.doc = NativeDoc::default();
            self.cur = NativeStr::None;
        }
        let s = &mut self.s;
        s.token_chunk(ts, t.content, t.thinking);
        if let Some(m) = t.model {
            s.set_model_plain(m, self.model.cap());
        }
        true
    }

    fn doc_begin(&mut self) {
        self.doc = NativeDoc::default();
        self.doc_dirty = true;
        self.cur = NativeStr::None;
        self.s.doc_reset();
    }

    fn doc_end(&mut self, ts: Timestamp, end: DocEnd<'_>) {
        match end {
            DocEnd::Json { .. } => {}
            // A broken chunk changes nothing: no half-read number is ever reported.
            DocEnd::Invalid { .. } | DocEnd::DoneMarker => {
                self.s.info.invalid_chunks += 1;
                return;
            }
            // Cut by missing bytes: changes nothing either, and is no fault of the server's.
            DocEnd::Damaged => return,
        }
        let doc = std::mem::take(&mut self.doc);
        let s = &mut self.s;
        if doc.error {
            let message = self.error.to_string_lossy();
            s.error(Some(message), None);
            s.info.chunks += 1;
            return;
        }
        let has_output = doc.content > 0 || doc.thinking > 0 || !doc.tool_calls.is_empty();
        s.chunk(ts, has_output);
        s.info.text_bytes += doc.content;
        s.info.reasoning_bytes += doc.thinking;
        s.commit();
        if doc.model {
            s.set_model(&self.model);
        }
        s.add_tool_calls(doc.tool_calls.into_iter().filter(|t| !t.name.is_empty()).collect(), MAX_TOOL_CALLS);
        if doc.embeddings.is_some() {
            s.info.embeddings = doc.embeddings;
        }
        if doc.dimension.is_some() {
            s.info.dimension = doc.dimension;
        }
        if doc.models.is_some() {
            s.info.models_listed = doc.models;
        }
        if self.route == Route::Ps && doc.models.is_some() {
            // Only a whole listing says which models are loaded (and which are not any more).
            s.info.running = Some(doc.running.into_iter().filter(|m| !m.name.is_empty()).collect());
        }
        if doc.status {
            let status = self.status.to_string_lossy();
            if self.status.bytes() == b"success" {
                s.info.terminated = true;
            }
            // The distinct steps, in order (a pull repeats `pulling <digest>` per progress line).
            let steps = &mut s.info.progress_steps;
            if steps.last() != Some(&status) {
                if steps.len() < MAX_PROGRESS_STEPS {
                    steps.push(status.clone());
                } else {
                    s.info.progress_steps_dropped += 1;
                }
            }
            s.info.progress_status = Some(status);
        }
        if doc.digest {
            s.info.progress_digest = Some(self.digest.to_string_lossy());
        }
        if doc.completed.is_some() {
            s.info.progress_completed = doc.completed;
        }
        if doc.total.is_some() {
            s.info.progress_total = doc.total;
        }
        let metrics = &mut s.info.ollama;
        macro_rules! take {
            ($($f:ident),*) => { $( if doc.$f.is_some() { metrics.$f = doc.$f; } )* };
        }
        take!(
            total_duration,
            load_duration,
            prompt_eval_count,
            prompt_eval_cached_count,
            prompt_eval_duration,
            eval_count,
            eval_duration
        );
        if doc.done == Some(true) || matches!(self.route, Route::Embed) {
            // Token counts are only final on the done chunk (embed has no `done`); an absent
            // count stays unknown rather than zero.
            s.info.input_tokens = s.info.ollama.prompt_eval_count;
            s.info.cache_read_input_tokens = s.info.ollama.prompt_eval_cached_count.filter(|n| *n > 0);
            if self.route != Route::Embed {
                s.info.output_tokens = s.info.ollama.eval_count;
            }
        }
        if doc.done == Some(true) {
            s.info.terminated = true;
            if doc.done_reason {
                let reason = self.done_reason.to_string_lossy();
                s.info.done_reason = Some(reason.clone());
                s.info.finish_reasons = vec![reason];
            }
        }
        // Embedding responses carry their counts without a `done` flag.
        if matches!(self.route, Route::Embed | Route::Embeddings) && !s.error_status {
            s.info.terminated = true;
        }
    }
}
