//! OpenAI Responses API answers (`/v1/responses`): SSE events whose type is inside the
//! sorted-key JSON, or one `response` object.

use super::call::ToolCall;
use super::framing::{DocEnd, DocVisitor};
use super::stream::{ARGS_LIMIT, MAX_TOOL_CALLS, MESSAGE, SHORT, Stream};
use crate::json::{Descend, JsonVisitor, Kind, Path, Scalar, StrAcc};
use crate::segment::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RsStr {
    None,
    Type,
    Delta,
    Id,
    Model,
    Status,
    ItemType,
    ItemName,
    ItemCallId,
    /// A plain body's function-call `arguments` (content capture only).
    ItemArguments,
    OutputText,
    ReasoningText,
    ErrorMessage,
    IncompleteReason,
}

#[derive(Debug, Default)]
struct RsDoc {
    delta: u64,
    text: u64,
    id: bool,
    model: bool,
    status: bool,
    item_type: Option<String>,
    item_name: Option<String>,
    item_call_id: Option<String>,
    /// The item's `arguments` (plain body; content capture only).
    item_arguments: Option<String>,
    /// Function calls of a non-streamed response: (name, call id).
    calls: Vec<ToolCall>,
    /// The `delta` text of this event, routed once its type is known (content capture only).
    delta_text: String,
    input_tokens: Option<u64>,
    /// `usage.input_tokens_details.cached_tokens` (Ollama ≥ 0.33).
    cached_tokens: Option<u64>,
    output_tokens: Option<u64>,
    /// Reasoning text of a plain body (`output[i].summary[j].text`).
    reasoning: u64,
    error: bool,
    incomplete_reason: Option<String>,
}

/// Reads `/v1/responses` streams and objects.
#[derive(Debug)]
pub struct ResponsesVisitor {
    streamed: bool,
    pub(super) s: Stream,
    doc: RsDoc,
    cur: RsStr,
    kind: StrAcc,
    acc: StrAcc,
    id: StrAcc,
    model: StrAcc,
    status: StrAcc,
    error: StrAcc,
    saw_function_call: bool,
}

impl ResponsesVisitor {
    pub fn new(streamed: bool) -> Self {
        ResponsesVisitor {
            streamed,
            s: Stream::default(),
            doc: RsDoc::default(),
            cur: RsStr::None,
            kind: StrAcc::with_cap(SHORT),
            acc: StrAcc::with_cap(SHORT),
            id: StrAcc::with_cap(SHORT),
            model: StrAcc::with_cap(SHORT),
            status: StrAcc::with_cap(SHORT),
            error: StrAcc::with_cap(MESSAGE),
            saw_function_call: false,
        }
    }

    /// In a stream the response object sits under `response`; a plain body is the object itself.
    fn response_base(&self, path: &Path<'_>) -> Option<usize> {
        if self.streamed { (path.key(0) == Some(b"response")).then_some(1) } else { Some(0) }
    }

    fn classify(&self, path: &Path<'_>) -> RsStr {
        let d = path.depth();
        if self.streamed && d == 1 {
            return match path.key(0) {
                Some(b"type") => RsStr::Type,
                Some(b"delta") => RsStr::Delta,
                _ => RsStr::None,
            };
        }
        if self.streamed && d == 2 && path.key(0) == Some(b"item") {
            return match path.key(1) {
                Some(b"type") => RsStr::ItemType,
                Some(b"name") => RsStr::ItemName,
                Some(b"call_id") => RsStr::ItemCallId,
                _ => RsStr::None,
            };
        }
        let Some(b) = self.response_base(path) else { return RsStr::None };
        match (d - b, path.key(b)) {
            (1, Some(b"id")) => RsStr::Id,
            (1, Some(b"model")) => RsStr::Model,
            (1, Some(b"status")) => RsStr::Status,
            (2, Some(b"error")) if path.key(b + 1) == Some(b"message") => RsStr::ErrorMessage,
            (2, Some(b"incomplete_details")) if path.key(b + 1) == Some(b"reason") => RsStr::IncompleteReason,
            // Plain body: output[i].type/name/call_id and output[i].content[j].text
            (3, Some(b"output")) if !self.streamed => match path.key(b + 2) {
                Some(b"type") => RsStr::ItemType,
                Some(b"name") => RsStr::ItemName,
                Some(b"call_id") => RsStr::ItemCallId,
                Some(b"arguments") if self.s.capture => RsStr::ItemArguments,
                _ => RsStr::None,
            },
            (5, Some(b"output"))
                if !self.streamed && path.key(b + 2) == Some(b"content") && path.key(b + 4) == Some(b"text") =>
            {
                RsStr::OutputText
            }
            // A plain body's reasoning item: the thinking is its summary's text (the stream sends
            // the same text as `response.reasoning_summary_text.delta`).
            (5, Some(b"output"))
                if !self.streamed && path.key(b + 2) == Some(b"summary") && path.key(b + 4) == Some(b"text") =>
            {
                RsStr::ReasoningText
            }
            _ => RsStr::None,
        }
    }

    fn flush_item(&mut self) {
        if self.doc.item_type.as_deref() == Some("function_call") {
            let call = ToolCall {
                id: self.doc.item_call_id.take(),
                name: self.doc.item_name.take().unwrap_or_default(),
                arguments: self.doc.item_arguments.take(),
            };
            if !call.name.is_empty() && self.doc.calls.len() < MAX_TOOL_CALLS {
                self.doc.calls.push(call);
            }
        }
        self.doc.item_type = None;
        self.doc.item_name = None;
        self.doc.item_call_id = None;
    }
}

impl JsonVisitor for ResponsesVisitor {
    fn begin(&mut self, path: &Path<'_>, _kind: Kind) -> Descend {
        // Echoed request fields (tools, instructions…) and logprobs say nothing about the answer.
        match self.response_base(path) {
            Some(b) if path.depth() == b + 1 => match path.key(b) {
                Some(b"tools" | b"instructions" | b"text" | b"reasoning" | b"metadata" | b"tool_choice") => {
                    Descend::Skip
                }
                _ => Descend::Enter,
            },
            _ if path.key(path.depth().saturating_sub(1)) == Some(b"logprobs") => Descend::Skip,
            _ => Descend::Enter,
        }
    }

    fn end(&mut self, path: &Path<'_>, kind: Kind, _len: u32) {
        // End of one output item of a plain body.
        if !self.streamed && kind == Kind::Object && path.depth() == 2 && path.key(0) == Some(b"output") {
            self.flush_item();
        }
    }

    fn scalar(&mut self, path: &Path<'_>, v: Scalar<'_>) {
        let Some(b) = self.response_base(path) else { return };
        if path.depth() == b + 2 && path.key(b) == Some(b"usage") {
            match path.key(b + 1) {
                Some(b"input_tokens") => self.doc.input_tokens = v.as_u64(),
                Some(b"output_tokens") => self.doc.output_tokens = v.as_u64(),
                _ => {}
            }
        } else if path.depth() == b + 3
            && path.key(b) == Some(b"usage")
            && path.key(b + 1) == Some(b"input_tokens_details")
            && path.key(b + 2) == Some(b"cached_tokens")
        {
            self.doc.cached_tokens = v.as_u64();
        }
    }

    fn string(&mut self, path: &Path<'_>, part: &[u8], last: bool) {
        if self.cur == RsStr::None {
            self.cur = self.classify(path);
            match self.cur {
                RsStr::None => return,
                RsStr::Type => self.kind.clear(),
                RsStr::Id => self.id.clear(),
                RsStr::Model => self.model.clear(),
                RsStr::Status => self.status.clear(),
                RsStr::ErrorMessage => self.error.clear(),
                _ => self.acc.clear(),
            }
        }
        match self.cur {
            RsStr::None => return,
            RsStr::Delta => {
                self.doc.delta += part.len() as u64;
                if self.s.capture {
                    let room = ARGS_LIMIT.saturating_sub(self.doc.delta_text.len());
                    self.doc.delta_text.push_str(&String::from_utf8_lossy(&part[..part.len().min(room)]));
                }
            }
            RsStr::OutputText => {
                self.doc.text += part.len() as u64;
                self.s.text(part);
            }
            RsStr::ReasoningText => {
                self.doc.reasoning += part.len() as u64;
                self.s.reasoning(part);
            }
            RsStr::ItemArguments => {
                let args = self.doc.item_arguments.get_or_insert_with(String::new);
                let room = ARGS_LIMIT.saturating_sub(args.len());
                args.push_str(&String::from_utf8_lossy(&part[..part.len().min(room)]));
            }
            RsStr::Type => self.kind.push(part),
            RsStr::Id => self.id.push(part),
            RsStr::Model => self.model.push(part),
            RsStr::Status => self.status.push(part),
            RsStr::ErrorMessage => self.error.push(part),
            RsStr::ItemType | RsStr::ItemName | RsStr::ItemCallId | RsStr::IncompleteReason => self.acc.push(part),
        }
        if last {
            match self.cur {
                RsStr::Id => self.doc.id = true,
                RsStr::Model => self.doc.model = true,
                RsStr::Status => self.doc.status = true,
                RsStr::ErrorMessage => self.doc.error = true,
                RsStr::ItemType => self.doc.item_type = Some(self.acc.take_string()),
                RsStr::ItemName => self.doc.item_name = Some(self.acc.take_string()),
                RsStr::ItemCallId => self.doc.item_call_id = Some(self.acc.take_string()),
                RsStr::IncompleteReason => self.doc.incomplete_reason = Some(self.acc.take_string()),
                _ => {}
            }
            self.cur = RsStr::None;
        }
    }
}

impl DocVisitor for ResponsesVisitor {
    fn doc_begin(&mut self) {
        self.doc = RsDoc::default();
        self.cur = RsStr::None;
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
            // Not part of this API; tolerated.
            DocEnd::DoneMarker => return,
        };
        // The SSE event name and the JSON `type` agree; either will do.
        let kind = match event {
            Some(e) => e,
            None => self.kind.to_string_lossy(),
        };
        if self.streamed && kind == "response.output_item.added" {
            self.flush_item();
        }
        let doc = std::mem::take(&mut self.doc);
        let s = &mut self.s;
        let has_output = match kind.as_str() {
            "response.output_text.delta"
            | "response.reasoning_summary_text.delta"
            | "response.function_call_arguments.delta" => doc.delta > 0,
            _ => doc.text > 0 || doc.reasoning > 0 || !doc.calls.is_empty(),
        };
        s.chunk(ts, has_output);
        match kind.as_str() {
            "response.output_text.delta" => {
                s.info.text_bytes += doc.delta;
                s.text(doc.delta_text.as_bytes());
            }
            "response.reasoning_summary_text.delta" => {
                s.info.reasoning_bytes += doc.delta;
                s.reasoning(doc.delta_text.as_bytes());
            }
            _ => {
                s.info.text_bytes += doc.text;
                s.info.reasoning_bytes += doc.reasoning;
            }
        }
        s.commit();
        if !doc.calls.is_empty() {
            self.saw_function_call = true;
        }
        s.add_tool_calls(doc.calls, MAX_TOOL_CALLS);
        if kind == "response.function_call_arguments.delta" && !doc.delta_text.is_empty() {
            s.extend_last_args(&doc.delta_text);
        }
        if doc.id {
            s.set_id(&self.id);
        }
        if doc.model {
            s.set_model(&self.model);
        }
        if doc.input_tokens.is_some() {
            s.info.input_tokens = doc.input_tokens;
        }
        if doc.output_tokens.is_some() {
            s.info.output_tokens = doc.output_tokens;
        }
        if doc.cached_tokens.is_some() {
            s.info.cache_read_input_tokens = doc.cached_tokens.filter(|n| *n > 0);
        }
        let terminal =
            !self.streamed || matches!(kind.as_str(), "response.completed" | "response.failed" | "response.incomplete");
        if doc.error {
            s.error(Some(self.error.to_string_lossy()), None);
        }
        if terminal && doc.status {
            s.info.terminated = true;
            let status = self.status.to_string_lossy();
            let reason = match status.as_str() {
                "completed" if self.saw_function_call => "tool_calls".to_string(),
                "completed" => "stop".to_string(),
                "incomplete" => match doc.incomplete_reason.as_deref() {
                    Some("max_output_tokens") => "length".to_string(),
                    Some(other) => other.to_string(),
                    None => "length".to_string(),
                },
                "failed" => "error".to_string(),
                other => other.to_string(),
            };
            s.info.finish_reasons = vec![reason];
        }
    }
}
