//! Reading request bodies: model, stream flag, generation parameters, tools, messages, images —
//! for the native, OpenAI-compatible and Anthropic-compatible shapes. Keys are matched
//! case-insensitively, as Ollama's Go decoder does, and the last duplicate wins.

use super::call::RequestInfo;
use super::messages::{MessageReader, tool_name};
use super::route::{Api, Route};
use crate::json::{Descend, JsonScanner, JsonVisitor, Kind, P, Path, Progress, Scalar, ScanOptions, SkipStats, StrAcc};

/// Longest model name / short string value we keep.
const SHORT: usize = 256;
/// Tool names kept per request.
const MAX_TOOLS: usize = 128;
/// Stop sequences kept per request.
const MAX_STOP: usize = 32;

/// Which short string is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Str {
    Model,
    Stop,
    ToolName,
    KeepAlive,
    Think,
    Format,
    EncodingFormat,
    /// A message content part's `type` (OpenAI `image_url` / Anthropic `image`).
    PartType,
    /// Model management: the legacy `name`, copy's `source`/`destination`, create's `from`.
    LegacyName,
    Source,
    Destination,
    From,
    /// Responses API: the response this one continues, and the conversation it belongs to.
    PreviousResponseId,
    Conversation,
    /// Any other string: only its length matters.
    Other,
}

/// Decodes one request body.
#[derive(Debug)]
pub struct RequestDecoder {
    route: Route,
    scanner: JsonScanner,
    done: bool,
    /// Visitor state.
    v: RequestVisitor,
}

#[derive(Debug)]
struct RequestVisitor {
    api: Api,
    route: Route,
    info: RequestInfo,
    cur: Str,
    acc: StrAcc,
    /// A string inside an image value (data URL / base64) is being measured.
    image_string: bool,
    /// Messages: conversation facts always (chat routes), content when captured.
    reader: Option<MessageReader>,
}

/// How much of a request's content to keep (see [`super::content`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestCapture {
    pub content: bool,
    /// Bound on raw JSON kept for one tool definition or tool-call argument object.
    pub raw_limit: usize,
}

impl RequestDecoder {
    pub fn new(route: Route) -> Self {
        Self::with_capture(route, RequestCapture::default())
    }

    pub fn with_capture(route: Route, capture: RequestCapture) -> Self {
        let chat = matches!(route, Route::Chat | Route::OpenAiChat | Route::AnthropicMessages | Route::OpenAiResponses);
        let base: &'static [u8] = if route == Route::OpenAiResponses { b"input" } else { b"messages" };
        let completion = matches!(route, Route::Generate | Route::OpenAiCompletions);
        let reader = (chat || (completion && capture.content))
            .then(|| MessageReader::new(base, capture.content, capture.raw_limit.max(1024)));
        RequestDecoder {
            route,
            scanner: JsonScanner::new(ScanOptions { fold_keys: true, max_depth: 32 }),
            done: false,
            v: RequestVisitor {
                api: route.api(),
                route,
                info: RequestInfo::default(),
                cur: Str::Other,
                acc: StrAcc::with_cap(SHORT),
                image_string: false,
                reader,
            },
        }
    }

    /// The body's bytes are only counted: the capture need not copy them.
    pub fn only_counts(&self) -> bool {
        !self.reads_json()
    }

    /// Whether this route's request body is JSON worth reading.
    fn reads_json(&self) -> bool {
        !matches!(self.route, Route::BlobUpload | Route::OpenAiTranscriptions | Route::Unknown | Route::Root)
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.v.info.body_bytes += data.len() as u64;
        if self.done || !self.reads_json() {
            return;
        }
        match self.scanner.feed(data, &mut self.v) {
            Ok(Progress::NeedMore) => {}
            // Bytes after the first value are ignored, as the Go decoder does.
            Ok(Progress::Complete { .. }) => self.done = true,
            Err(_) => {
                self.v.info.invalid_json = true;
                self.done = true;
            }
        }
    }

    /// Bytes of the body were not captured: what follows cannot be parsed. The body is cut, not
    /// invalid (the call is flagged `request_gap` for it): what was read before stays.
    pub fn gap(&mut self) {
        self.done = true;
    }

    pub fn finish(mut self) -> RequestInfo {
        if !self.done && self.reads_json() && !self.scanner.is_empty() && self.scanner.finish(&mut self.v).is_err() {
            self.v.info.invalid_json = true;
        }
        if let Some(reader) = self.v.reader.take() {
            let (facts, content) = reader.finish();
            self.v.info.conversation = facts;
            self.v.info.content = content;
        }
        self.v.info
    }
}

fn key_is(path: &Path<'_>, i: usize, k: &str) -> bool {
    path.key(i) == Some(k.as_bytes())
}

impl RequestVisitor {
    /// Classifies the string at `path`.
    fn string_kind(&self, path: &Path<'_>) -> Str {
        let d = path.depth();
        if d == 1 {
            return match path.key(0) {
                Some(b"model") => Str::Model,
                Some(b"keep_alive") => Str::KeepAlive,
                Some(b"think" | b"reasoning_effort") => Str::Think,
                Some(b"format") => Str::Format,
                Some(b"stop" | b"stop_sequences") => Str::Stop,
                Some(b"encoding_format") => Str::EncodingFormat,
                Some(b"name") if self.route.is_model_management() => Str::LegacyName,
                Some(b"source") if self.route == Route::Copy => Str::Source,
                Some(b"destination") if self.route == Route::Copy => Str::Destination,
                Some(b"from") if self.route == Route::Create => Str::From,
                Some(b"previous_response_id") if self.route == Route::OpenAiResponses => Str::PreviousResponseId,
                Some(b"conversation") if self.route == Route::OpenAiResponses => Str::Conversation,
                _ => Str::Other,
            };
        }
        if self.route == Route::OpenAiResponses && path.is(&["conversation", "id"]) {
            return Str::Conversation;
        }
        if path.matches(&[P::Key("options"), P::Key("stop"), P::AnyIndex])
            || path.matches(&[P::Key("stop"), P::AnyIndex])
            || path.matches(&[P::Key("stop_sequences"), P::AnyIndex])
        {
            return Str::Stop;
        }
        if path.matches(&[P::Key("tools"), P::AnyIndex, P::Key("function"), P::Key("name")])
            || (self.api != Api::Native && path.matches(&[P::Key("tools"), P::AnyIndex, P::Key("name")]))
        {
            return Str::ToolName;
        }
        if path.matches(&[P::Key("reasoning"), P::Key("effort")]) || path.matches(&[P::Key("thinking"), P::Key("type")])
        {
            return Str::Think;
        }
        if path.matches(&[P::Key("response_format"), P::Key("type")])
            || path.matches(&[P::Key("text"), P::Key("format"), P::Key("type")])
        {
            return Str::Format;
        }
        if d >= 2 && path.last() == Some(crate::json::Seg::Key(b"type")) && self.in_content_part(path) {
            return Str::PartType;
        }
        Str::Other
    }

    /// `messages[i].content[j]` (OpenAI/Anthropic parts) or `input[i].content[j]` (Responses).
    fn in_content_part(&self, path: &Path<'_>) -> bool {
        path.depth() == 5 && (key_is(path, 0, "messages") || key_is(path, 0, "input")) && key_is(path, 2, "content")
    }

    fn number(&mut self, path: &Path<'_>, v: Scalar<'_>) {
        let native_opts = self.api == Api::Native && path.depth() == 2 && key_is(path, 0, "options");
        let top = path.depth() == 1;
        let name = match path.last() {
            Some(crate::json::Seg::Key(k)) => k,
            _ => return,
        };
        let p = &mut self.info.params;
        if native_opts {
            match name {
                b"temperature" => p.temperature = v.as_f64(),
                b"top_p" => p.top_p = v.as_f64(),
                b"top_k" => p.top_k = v.as_f64(),
                // -1 (infinite) and -2 (fill the context) are not token limits.
                b"num_predict" => p.max_tokens = v.as_i64().filter(|n| *n >= 0),
                b"seed" => p.seed = v.as_i64(),
                b"frequency_penalty" => p.frequency_penalty = v.as_f64(),
                b"presence_penalty" => p.presence_penalty = v.as_f64(),
                b"num_ctx" => p.num_ctx = v.as_i64(),
                b"repeat_penalty" => p.repeat_penalty = v.as_f64(),
                b"min_p" => p.min_p = v.as_f64(),
                _ => {}
            }
            return;
        }
        if !top {
            return;
        }
        match (self.api, name) {
            (_, b"keep_alive") => self.info.keep_alive = v.as_f64().map(fmt_number),
            (Api::Native, b"dimensions") | (Api::OpenAi, b"dimensions") => self.info.dimensions = v.as_i64(),
            (Api::OpenAi | Api::Anthropic, b"temperature") => p.temperature = v.as_f64(),
            (Api::OpenAi | Api::Anthropic, b"top_p") => p.top_p = v.as_f64(),
            (Api::Anthropic, b"top_k") => p.top_k = v.as_f64(),
            (Api::OpenAi, b"max_tokens") if self.route != Route::OpenAiResponses => p.max_tokens = v.as_i64(),
            (Api::OpenAi, b"max_output_tokens") if self.route == Route::OpenAiResponses => p.max_tokens = v.as_i64(),
            (Api::Anthropic, b"max_tokens") => p.max_tokens = v.as_i64(),
            (Api::OpenAi, b"seed") => p.seed = v.as_i64(),
            (Api::OpenAi, b"frequency_penalty") => p.frequency_penalty = v.as_f64(),
            (Api::OpenAi, b"presence_penalty") => p.presence_penalty = v.as_f64(),
            (Api::OpenAi, b"n") => p.choice_count = v.as_i64(),
            _ => {}
        }
    }

    fn finish_string(&mut self, path: &Path<'_>) {
        let value = self.acc.take_string();
        match self.cur {
            Str::Model if path.depth() == 1 => self.info.model = Some(value),
            Str::Stop => {
                let native_opts = key_is(path, 0, "options");
                // Native stop lives in options; /v1 and Anthropic at the top level.
                if (self.api == Api::Native) == native_opts {
                    if path.depth() == 1 || (native_opts && path.depth() == 2) {
                        self.info.params.stop = vec![value];
                    } else if self.info.params.stop.len() < MAX_STOP {
                        self.info.params.stop.push(value);
                    }
                }
            }
            Str::ToolName => {
                if self.info.tools.len() < MAX_TOOLS {
                    self.info.tools.push(value);
                }
            }
            Str::KeepAlive => self.info.keep_alive = Some(value),
            Str::Think => self.info.think = Some(value),
            Str::Format => {
                self.info.output_type = Some(match value.as_str() {
                    "json" | "json_object" | "json_schema" => "json".into(),
                    "text" | "" => "text".into(),
                    other => other.into(),
                });
                if value.is_empty() && path.depth() == 1 {
                    // Go clients send `"format": ""` for "not set".
                    self.info.output_type = None;
                }
            }
            Str::EncodingFormat => self.info.encoding_format = Some(value),
            // `model` wins over the legacy `name`, whichever comes first.
            Str::LegacyName => {
                self.info.model.get_or_insert(value);
            }
            Str::Source => self.info.model = Some(value),
            Str::Destination => self.info.destination = Some(value),
            Str::From => self.info.from = Some(value),
            Str::PreviousResponseId => self.info.previous_response_id = Some(value).filter(|v| !v.is_empty()),
            Str::Conversation => self.info.conversation_id = Some(value).filter(|v| !v.is_empty()),
            Str::PartType => {
                if value == "image_url" || value == "image" || value == "input_image" {
                    self.info.images += 1;
                }
            }
            Str::Other | Str::Model => {}
        }
        self.cur = Str::Other;
    }
}

impl JsonVisitor for RequestVisitor {
    fn begin(&mut self, path: &Path<'_>, kind: Kind) -> Descend {
        if let Some(decision) = self.reader.as_mut().and_then(|r| r.begin(path, kind)) {
            return decision;
        }
        let d = path.depth();
        // Native images are arrays of base64 strings: count them, never read them.
        if kind == Kind::Array
            && ((d == 1 && key_is(path, 0, "images"))
                || (d == 3 && key_is(path, 0, "messages") && key_is(path, 2, "images")))
        {
            return Descend::Skip;
        }
        if d == 1 && kind == Kind::Object && key_is(path, 0, "format") {
            // A JSON schema: structured output.
            self.info.output_type = Some("json".into());
            return Descend::Skip;
        }
        // Tool parameter schemas and argument objects can be large and say nothing we record.
        if d >= 3
            && key_is(path, 0, "tools")
            && (path.key(d - 1) == Some(b"parameters") || path.key(d - 1) == Some(b"input_schema"))
        {
            return Descend::Skip;
        }
        Descend::Enter
    }

    fn end(&mut self, path: &Path<'_>, kind: Kind, len: u32) {
        if let Some(r) = self.reader.as_mut() {
            r.end(path, kind);
        }
        if path.depth() != 1 || kind != Kind::Array {
            return;
        }
        match path.key(0) {
            Some(b"messages") => self.info.messages = Some(len),
            Some(b"input") => {
                if matches!(self.route, Route::Embed | Route::OpenAiEmbeddings) {
                    self.info.inputs = Some(len);
                } else {
                    self.info.messages = Some(len);
                }
            }
            _ => {}
        }
    }

    fn captured(&mut self, path: &Path<'_>, _kind: Kind, raw: &[u8], truncated: bool, _stats: SkipStats) {
        // A tool definition kept whole: its name is read from it.
        if path.depth() == 2
            && key_is(path, 0, "tools")
            && self.info.tools.len() < MAX_TOOLS
            && let Some(name) = tool_name(raw)
        {
            self.info.tools.push(name);
        }
        if let Some(r) = self.reader.as_mut() {
            r.captured(path, raw, truncated);
        }
    }

    fn skipped(&mut self, path: &Path<'_>, kind: Kind, stats: SkipStats) {
        if let Some(r) = self.reader.as_mut() {
            r.skipped(path, kind, stats);
        }
        if kind == Kind::Array && path.last() == Some(crate::json::Seg::Key(b"images")) {
            self.info.images += stats.strings as u32;
            self.info.image_bytes += stats.string_bytes;
        }
    }

    fn scalar(&mut self, path: &Path<'_>, v: Scalar<'_>) {
        if path.depth() == 1 {
            match path.key(0) {
                Some(b"stream") => {
                    // `null` means "not set" (stream by default on native routes).
                    self.info.stream = v.as_bool();
                    return;
                }
                Some(b"think") => {
                    if let Some(b) = v.as_bool() {
                        self.info.think = Some(b.to_string());
                    }
                    return;
                }
                _ => {}
            }
        }
        if path.matches(&[P::Key("stream_options"), P::Key("include_usage")]) {
            self.info.include_usage = v.as_bool();
            return;
        }
        if let Scalar::Number(_) = v {
            self.number(path, v);
        }
    }

    fn string(&mut self, path: &Path<'_>, part: &[u8], last: bool) {
        if let Some(r) = self.reader.as_mut() {
            r.string(path, part, last);
        }
        if self.cur == Str::Other && self.acc.is_empty() {
            self.cur = self.string_kind(path);
            self.image_string = path.depth() >= 1
                && matches!(path.key(path.depth() - 1), Some(b"url" | b"image_url" | b"data" | b"image"))
                && (key_is(path, 0, "messages") || key_is(path, 0, "input"));
        }
        if self.image_string {
            self.info.image_bytes += part.len() as u64;
        }
        if self.cur != Str::Other {
            self.acc.push(part);
        }
        if last {
            if self.cur != Str::Other {
                self.finish_string(path);
            } else {
                // A single string `input` is one embedding input.
                if path.depth() == 1
                    && key_is(path, 0, "input")
                    && matches!(self.route, Route::Embed | Route::OpenAiEmbeddings)
                {
                    self.info.inputs = Some(1);
                }
                if path.depth() == 1 && key_is(path, 0, "prompt") && self.route == Route::Embeddings {
                    self.info.inputs = Some(1);
                }
            }
            self.acc.clear();
            self.cur = Str::Other;
            self.image_string = false;
        }
    }
}

/// Seconds as text without a trailing `.0` for whole numbers.
fn fmt_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::messages::ToolResult;

    fn decode(route: Route, body: &str) -> RequestInfo {
        let mut d = RequestDecoder::new(route);
        d.feed(body.as_bytes());
        d.finish()
    }

    #[test]
    fn a_body_cut_by_a_gap_keeps_what_was_read_and_is_not_invalid() {
        let mut d = RequestDecoder::new(Route::Chat);
        d.feed(br#"{"model":"llama3.2","messages":[{"role":"user","content":"a long pro"#);
        d.gap();
        d.feed(br#"mpt"}],"stream":false}"#);
        let info = d.finish();
        assert_eq!(info.model.as_deref(), Some("llama3.2"));
        assert!(!info.invalid_json, "cut, not invalid: the call says request_gap for it");
        assert_eq!(info.stream, None, "nothing after the gap is read");
    }

    #[test]
    fn native_chat_options_tools_images() {
        let info = decode(
            Route::Chat,
            r#"{"Model":"llama3.2","messages":[{"role":"user","content":"hi","images":["aGk=","aGVsbG8="]}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],"stream":false,"format":{"type":"object"},"keep_alive":"5m","think":"high","options":{"temperature":0.7,"top_p":0.9,"top_k":40,"num_predict":-1,"seed":42,"stop":["\n\n","END"],"num_ctx":4096,"repeat_penalty":1.1}}"#,
        );
        assert_eq!(info.model.as_deref(), Some("llama3.2"));
        assert_eq!(info.stream, Some(false));
        assert_eq!(info.messages, Some(1));
        assert_eq!(info.tools, vec!["get_weather"]);
        assert_eq!((info.images, info.image_bytes), (2, 12));
        assert_eq!(info.output_type.as_deref(), Some("json"));
        assert_eq!(info.keep_alive.as_deref(), Some("5m"));
        assert_eq!(info.think.as_deref(), Some("high"));
        let p = &info.params;
        assert_eq!(
            (p.temperature, p.top_p, p.top_k, p.max_tokens, p.seed),
            (Some(0.7), Some(0.9), Some(40.0), None, Some(42))
        );
        assert_eq!(p.stop, vec!["\n\n", "END"]);
        assert_eq!((p.num_ctx, p.repeat_penalty), (Some(4096), Some(1.1)));
    }

    #[test]
    fn openai_chat_params() {
        let info = decode(
            Route::OpenAiChat,
            r#"{"model":"qwen3","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"t"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":100,"temperature":0,"stop":"@@@","response_format":{"type":"json_object"},"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"n":1,"reasoning_effort":"low","seed":7}"#,
        );
        assert_eq!(info.stream, Some(true));
        assert_eq!(info.include_usage, Some(true));
        assert_eq!(info.params.max_tokens, Some(100));
        assert_eq!(info.params.temperature, Some(0.0));
        assert_eq!(info.params.stop, vec!["@@@"]);
        assert_eq!(info.output_type.as_deref(), Some("json"));
        assert_eq!(info.tools, vec!["f"]);
        assert_eq!(info.messages, Some(2));
        assert_eq!(info.images, 1);
        assert_eq!(info.image_bytes, "data:image/png;base64,AAAA".len() as u64);
        assert_eq!(info.think.as_deref(), Some("low"));
        assert_eq!(info.params.seed, Some(7));
        assert_eq!(info.params.choice_count, Some(1));
    }

    #[test]
    fn embeddings_inputs_and_invalid_json() {
        assert_eq!(decode(Route::Embed, r#"{"model":"m","input":["a","b","c"],"dimensions":256}"#).inputs, Some(3));
        assert_eq!(
            decode(Route::OpenAiEmbeddings, r#"{"model":"m","input":"a","encoding_format":"base64"}"#)
                .encoding_format
                .as_deref(),
            Some("base64")
        );
        assert_eq!(decode(Route::Embeddings, r#"{"model":"m","prompt":"x"}"#).inputs, Some(1));
        let bad = decode(Route::Chat, r#"{"model":"m","messages":[}"#);
        assert!(bad.invalid_json);
        assert_eq!(bad.model.as_deref(), Some("m"));
        // Trailing bytes after the value are ignored, as Ollama does.
        assert!(!decode(Route::Chat, r#"{"model":"m"} garbage"#).invalid_json);
    }

    #[test]
    fn anthropic_shape() {
        let info = decode(
            Route::AnthropicMessages,
            r#"{"model":"claude","max_tokens":64,"stop_sequences":["x"],"top_k":5,"tools":[{"name":"t","input_schema":{"type":"object"}}],"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}}]}],"thinking":{"type":"enabled","budget_tokens":10}}"#,
        );
        assert_eq!(info.params.max_tokens, Some(64));
        assert_eq!(info.params.stop, vec!["x"]);
        assert_eq!(info.params.top_k, Some(5.0));
        assert_eq!(info.tools, vec!["t"]);
        assert_eq!(info.images, 1);
        assert_eq!(info.think.as_deref(), Some("enabled"));
    }

    fn decode_captured(route: Route, body: &str) -> RequestInfo {
        let mut d = RequestDecoder::with_capture(route, RequestCapture { content: true, raw_limit: 4096 });
        d.feed(body.as_bytes());
        d.finish()
    }

    #[test]
    fn later_turns_extend_earlier_requests() {
        let turn1 = r#"{"model":"m","messages":[{"role":"system","content":"be terse"},{"role":"user","content":"Weather in Paris?"}],"tools":[]}"#;
        let turn2 = r#"{"model":"m","messages":[{"role":"system","content":"be terse"},{"content":"Weather in Paris?","role":"user"},{"role":"assistant","content":"","tool_calls":[{"id":"call_1","function":{"name":"get_weather","arguments":{"city":"Paris"}}}]},{"role":"tool","content":"rainy","tool_name":"get_weather","tool_call_id":"call_1"}]}"#;
        let other = r#"{"model":"m","messages":[{"role":"system","content":"be terse"},{"role":"user","content":"Weather in Rome?"}]}"#;
        let a = decode(Route::Chat, turn1).conversation;
        let b = decode(Route::Chat, turn2).conversation;
        let c = decode(Route::Chat, other).conversation;
        assert_eq!((a.prefixes.len(), b.prefixes.len(), c.prefixes.len()), (2, 4, 2));
        assert_eq!(a.prefixes[..], b.prefixes[..2], "turn 2 resends turn 1 (key order does not matter)");
        assert_ne!(a.prefixes[1], c.prefixes[1]);
        assert_eq!(a.prefixes[0], c.prefixes[0], "same system and first message");
        // The system text is part of every prefix, wherever the request puts it.
        let sys_last = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"system":"a"}"#;
        let sys_first = r#"{"model":"m","system":"a","messages":[{"role":"user","content":"hi"}]}"#;
        let other_sys = r#"{"model":"m","system":"b","messages":[{"role":"user","content":"hi"}]}"#;
        let p = |b| decode(Route::AnthropicMessages, b).conversation.prefixes;
        assert_eq!(p(sys_last), p(sys_first));
        assert_ne!(p(sys_last), p(other_sys));
        // A Responses request with a string input is one user message.
        assert_eq!(decode(Route::OpenAiResponses, r#"{"model":"m","input":"hi"}"#).conversation.prefixes.len(), 1);
        assert!(a.tool_results.is_empty());
        assert_eq!(
            b.tool_results,
            vec![ToolResult { id: Some("call_1".into()), name: Some("get_weather".into()), content: None }]
        );
        assert_eq!(b.messages, 4);
    }

    #[test]
    fn tool_results_of_every_shape() {
        let openai = r#"{"model":"m","messages":[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c9","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c9","content":"42"}]}"#;
        assert_eq!(
            decode(Route::OpenAiChat, openai).conversation.tool_results,
            vec![ToolResult { id: Some("c9".into()), name: None, content: None }]
        );
        let anthropic = r#"{"model":"m","max_tokens":9,"messages":[{"role":"user","content":"q"},{"role":"assistant","content":[{"type":"tool_use","id":"tu1","name":"f","input":{"a":1}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"tu1","content":"42"}]}]}"#;
        assert_eq!(
            decode(Route::AnthropicMessages, anthropic).conversation.tool_results,
            vec![ToolResult { id: Some("tu1".into()), name: None, content: None }]
        );
        let responses = r#"{"model":"m","input":[{"role":"user","content":"q"},{"type":"function_call","call_id":"fc1","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"fc1","output":"42"}]}"#;
        assert_eq!(
            decode(Route::OpenAiResponses, responses).conversation.tool_results,
            vec![ToolResult { id: Some("fc1".into()), name: None, content: None }]
        );
        // Results before the last assistant message belong to an earlier turn.
        let old = r#"{"model":"m","messages":[{"role":"user","content":"q"},{"role":"tool","content":"x","tool_call_id":"old"},{"role":"assistant","content":"done"},{"role":"user","content":"more"}]}"#;
        assert!(decode(Route::OpenAiChat, old).conversation.tool_results.is_empty());
    }

    #[test]
    fn content_is_only_kept_when_captured() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"describe"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],"tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object"}}}]}"#;
        assert!(decode(Route::OpenAiChat, body).content.is_none());
        let info = decode_captured(Route::OpenAiChat, body);
        assert_eq!(info.tools, vec!["lookup"]);
        let c = info.content.expect("captured");
        let cfg = crate::llm::content::ContentConfig::capturing(1000, false, &[]).unwrap();
        assert_eq!(
            crate::llm::content::input_messages_json(&c, &cfg),
            r#"[{"parts":[{"content":"describe","type":"text"},{"content":"","mime_type":"image/png","modality":"image","size":26,"type":"blob"}],"role":"user"}]"#
        );
        assert_eq!(
            c.tool_definitions.as_deref(),
            Some(r#"[{"type":"function","function":{"name":"lookup","parameters":{"type":"object"}}}]"#)
        );
        let native = r#"{"model":"m","system":"sys","prompt":"Why?"}"#;
        let c = decode_captured(Route::Generate, native).content.unwrap();
        assert_eq!(c.system, vec!["sys"]);
        assert_eq!(c.messages[0].parts, vec![crate::llm::content::Part::Text("Why?".into())]);
        let tool_turn = r#"{"model":"m","messages":[{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Paris"}}}]},{"role":"tool","content":"rainy","tool_name":"get_weather"}]}"#;
        let c = decode_captured(Route::Chat, tool_turn).content.unwrap();
        assert_eq!(
            crate::llm::content::input_messages_json(&c, &cfg),
            r#"[{"parts":[{"arguments":{"city":"Paris"},"name":"get_weather","type":"tool_call"}],"role":"assistant"},{"parts":[{"response":"rainy","type":"tool_call_response"}],"role":"tool"}]"#
        );
    }
}
