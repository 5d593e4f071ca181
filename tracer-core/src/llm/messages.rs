//! The messages of a chat request, in any of the API shapes (native and OpenAI `messages`,
//! Anthropic content blocks, Responses `input` items): always the facts that link calls into a
//! conversation (fingerprints of its message prefixes, the tool results it carries), and, when content
//! capture is on, the messages themselves in the GenAI parts schema.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;

use super::content::{InputContent, Message, Part, append_bounded};
use crate::json::{Descend, Kind, Path, SkipStats};

/// Facts about a chat request used to stitch calls together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConversationFacts {
    /// Fingerprints of the request's message list cut after each message (the system text
    /// mixed into each): the last is the whole request; a later turn of the same conversation
    /// resends this request's messages, so one of its shorter prefixes equals that last one.
    pub prefixes: Vec<u64>,
    /// Tool results the request carries after its last assistant message (the results of the
    /// tool calls the previous turn asked for).
    pub tool_results: Vec<ToolResult>,
    /// Messages in the request.
    pub messages: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolResult {
    pub id: Option<String>,
    pub name: Option<String>,
    /// The result text (content capture only).
    pub content: Option<String>,
}

/// Tool results kept per request.
const MAX_TOOL_RESULTS: usize = 64;
/// Message prefixes fingerprinted per request; a longer conversation is not linked further.
const MAX_PREFIXES: usize = 4096;
/// Short strings (roles, ids, names, types).
const SHORT: usize = 256;

#[derive(Debug, Default)]
struct PartBuilder {
    kind: String,
    text: String,
    id: Option<String>,
    name: Option<String>,
    arguments: Option<String>,
    mime: Option<String>,
    bytes: u64,
}

#[derive(Debug, Default)]
struct ToolBuilder {
    id: Option<String>,
    name: String,
    arguments: Option<String>,
}

#[derive(Debug, Default)]
struct MsgBuilder {
    role: String,
    /// `type` of a Responses item (`message`, `function_call`, `function_call_output`).
    item_type: String,
    name: Option<String>,
    /// `tool_call_id` / `tool_use_id` / `call_id`.
    call_id: Option<String>,
    /// `tool_name`.
    tool_name: Option<String>,
    /// Responses `function_call` fields.
    fn_name: Option<String>,
    fn_args: Option<String>,
    parts: Vec<Part>,
    /// Fingerprint of everything the message says (texts, ids, names, arguments): a sum of
    /// one hash per string, so the order of the message's keys does not matter.
    fingerprint: u64,
    /// Tool results inside this message (Anthropic `tool_result` blocks).
    results: Vec<ToolResult>,
}

/// Reads messages as the JSON scanner walks them.
#[derive(Debug)]
pub struct MessageReader {
    /// Top-level key holding the messages (`messages`, or `input` for the Responses API).
    base: &'static [u8],
    capture: bool,
    /// Capture limit for raw JSON (tool arguments, tool definitions).
    raw_limit: usize,
    msg: Option<MsgBuilder>,
    part: Option<PartBuilder>,
    tool: Option<ToolBuilder>,
    /// String being read and where it goes.
    target: Target,
    buf: String,
    /// Fingerprint of the messages so far (without the system text).
    chain: DefaultHasher,
    /// Fingerprint of the system text / instructions, wherever they sit in the request.
    system: DefaultHasher,
    facts: ConversationFacts,
    pending_results: Vec<ToolResult>,
    content: InputContent,
    /// `tools[i]` raw JSON, for `gen_ai.tool.definitions`.
    tool_defs: Vec<String>,
    tool_defs_truncated: bool,
    /// Inside a string whose first part has been seen.
    in_string: bool,
    /// Hash of the message string being read.
    string_hash: DefaultHasher,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    None,
    Role,
    ItemType,
    MsgName,
    CallId,
    ToolName,
    FnArgs,
    MsgText,
    MsgReasoning,
    PartType,
    PartText,
    PartId,
    PartName,
    PartMime,
    PartToolId,
    ToolId,
    ToolFnName,
    ToolFnArgs,
    /// System text / instructions: fingerprinted, and kept as system instructions.
    System,
    Prompt,
}

impl MessageReader {
    pub fn new(base: &'static [u8], capture: bool, raw_limit: usize) -> Self {
        MessageReader {
            base,
            capture,
            raw_limit,
            msg: None,
            part: None,
            tool: None,
            target: Target::None,
            buf: String::new(),
            chain: DefaultHasher::new(),
            system: DefaultHasher::new(),
            facts: ConversationFacts::default(),
            pending_results: Vec::new(),
            content: InputContent::default(),
            tool_defs: Vec::new(),
            tool_defs_truncated: false,
            in_string: false,
            string_hash: DefaultHasher::new(),
        }
    }

    fn in_messages(&self, path: &Path<'_>) -> bool {
        path.depth() >= 2 && path.key(0) == Some(self.base) && path.index(1).is_some()
    }

    /// What to do with a container about to start, when this reader cares.
    pub fn begin(&mut self, path: &Path<'_>, kind: Kind) -> Option<Descend> {
        let d = path.depth();
        if self.capture && d == 2 && path.key(0) == Some(b"tools") && kind == Kind::Object {
            return Some(Descend::Capture(self.raw_limit));
        }
        if !self.in_messages(path) {
            return None;
        }
        match (d, kind) {
            (2, Kind::Object) => {
                self.msg = Some(MsgBuilder::default());
                None
            }
            (4, Kind::Object) if path.key(2) == Some(b"content") => {
                self.part = Some(PartBuilder::default());
                None
            }
            (4, Kind::Object) if path.key(2) == Some(b"tool_calls") => {
                self.tool = Some(ToolBuilder::default());
                None
            }
            // Arguments as objects (native tool calls, Anthropic tool_use input): raw JSON.
            (6, Kind::Object) if path.key(2) == Some(b"tool_calls") && path.key(5) == Some(b"arguments") => {
                Some(if self.capture { Descend::Capture(self.raw_limit) } else { Descend::Skip })
            }
            (5, Kind::Object) if path.key(2) == Some(b"content") && path.key(4) == Some(b"input") => {
                Some(if self.capture { Descend::Capture(self.raw_limit) } else { Descend::Skip })
            }
            // Native images: counted, never read.
            (3, Kind::Array) if path.key(2) == Some(b"images") => Some(Descend::Skip),
            _ => None,
        }
    }

    pub fn skipped(&mut self, path: &Path<'_>, kind: Kind, stats: SkipStats) {
        if kind == Kind::Array
            && path.depth() == 3
            && self.in_messages(path)
            && path.key(2) == Some(b"images")
            && let Some(m) = self.msg.as_mut()
        {
            for _ in 0..stats.strings {
                m.parts.push(Part::Blob {
                    modality: "image",
                    mime_type: None,
                    bytes: stats.string_bytes / stats.strings.max(1),
                });
            }
        }
    }

    pub fn captured(&mut self, path: &Path<'_>, raw: &[u8], truncated: bool) {
        let raw = String::from_utf8_lossy(raw).into_owned();
        if path.depth() == 2 && path.key(0) == Some(b"tools") {
            self.tool_defs_truncated |= truncated;
            self.tool_defs.push(raw);
            return;
        }
        if !self.in_messages(path) {
            return;
        }
        if path.key(2) == Some(b"tool_calls") {
            if let Some(t) = self.tool.as_mut() {
                t.arguments = Some(raw);
            }
        } else if path.key(2) == Some(b"content")
            && let Some(p) = self.part.as_mut()
        {
            p.arguments = Some(raw);
        }
    }

    /// Where the string at `path` goes.
    fn classify(&self, path: &Path<'_>) -> Target {
        let d = path.depth();
        let k = |i| path.key(i);
        if !self.in_messages(path) {
            return match (d, k(0)) {
                (1, Some(b"system" | b"instructions")) => Target::System,
                // Anthropic system blocks.
                (3, Some(b"system")) if k(2) == Some(b"text") => Target::System,
                (1, Some(b"prompt")) => Target::Prompt,
                (1, Some(b"input")) if self.base == b"input" => Target::Prompt,
                _ => Target::None,
            };
        }
        match d {
            3 => match k(2) {
                Some(b"role") => Target::Role,
                Some(b"type") => Target::ItemType,
                Some(b"name") => Target::MsgName,
                Some(b"tool_call_id" | b"call_id" | b"tool_use_id") => Target::CallId,
                Some(b"tool_name") => Target::ToolName,
                Some(b"content" | b"output") => Target::MsgText,
                Some(b"thinking" | b"reasoning" | b"reasoning_content") => Target::MsgReasoning,
                Some(b"arguments") => Target::FnArgs,
                _ => Target::None,
            },
            5 if k(2) == Some(b"content") => match k(4) {
                Some(b"type") => Target::PartType,
                Some(b"text" | b"thinking") => Target::PartText,
                Some(b"content") => Target::PartText,
                Some(b"id") => Target::PartId,
                Some(b"name") => Target::PartName,
                Some(b"tool_use_id") => Target::PartToolId,
                Some(b"image_url") => Target::PartMime,
                _ => Target::None,
            },
            // Nested: image_url.url, source.media_type/data, tool_result content blocks' text.
            6 if k(2) == Some(b"content") => match (k(4), k(5)) {
                (Some(b"image_url"), Some(b"url")) => Target::PartMime,
                (Some(b"source"), Some(b"media_type")) => Target::PartMime,
                (Some(b"source"), Some(b"data")) => Target::PartMime,
                _ => Target::None,
            },
            7 if k(2) == Some(b"content") && k(4) == Some(b"content") && k(6) == Some(b"text") => Target::PartText,
            5 if k(2) == Some(b"tool_calls") && k(4) == Some(b"id") => Target::ToolId,
            6 if k(2) == Some(b"tool_calls") && k(4) == Some(b"function") => match k(5) {
                Some(b"name") => Target::ToolFnName,
                Some(b"arguments") => Target::ToolFnArgs,
                _ => Target::None,
            },
            _ => Target::None,
        }
    }

    pub fn string(&mut self, path: &Path<'_>, part: &[u8], last: bool) {
        if self.target == Target::None && !self.in_string {
            self.target = self.classify(path);
            if self.target == Target::None {
                return;
            }
        }
        if self.target == Target::None {
            return;
        }
        let t = self.target;
        // Every string of a message feeds its fingerprint, kept or not.
        if let Some(m) = self.msg.as_mut() {
            if !self.in_string {
                self.string_hash = DefaultHasher::new();
                self.string_hash.write_u8(t as u8);
            }
            self.string_hash.write(part);
            if last {
                m.fingerprint = m.fingerprint.wrapping_add(self.string_hash.finish());
            }
        }
        if t == Target::System {
            self.system.write(part);
        }
        // A Responses request whose input is one string: a single user message.
        if t == Target::Prompt && self.base == b"input" {
            self.chain.write(part);
            if last {
                self.facts.messages += 1;
                self.facts.prefixes.push(self.chain.finish());
            }
        }
        self.in_string = !last;
        let keep_all = self.capture
            || matches!(
                t,
                Target::Role
                    | Target::ItemType
                    | Target::CallId
                    | Target::ToolName
                    | Target::PartType
                    | Target::PartToolId
            );
        if keep_all {
            let mut truncated = false;
            let limit_short = !matches!(
                t,
                Target::MsgText
                    | Target::MsgReasoning
                    | Target::PartText
                    | Target::System
                    | Target::Prompt
                    | Target::FnArgs
                    | Target::ToolFnArgs
            );
            if limit_short {
                let room = SHORT.saturating_sub(self.buf.len());
                self.buf.push_str(&String::from_utf8_lossy(&part[..part.len().min(room)]));
            } else {
                append_bounded(&mut self.buf, part, &mut truncated);
            }
            self.content.truncated |= truncated;
        }
        // Image data: only its size.
        if t == Target::PartMime
            && let Some(p) = self.part.as_mut()
        {
            p.bytes += part.len() as u64;
        }
        if !last {
            return;
        }
        let value = std::mem::take(&mut self.buf);
        self.target = Target::None;
        self.apply(t, value);
    }

    fn apply(&mut self, t: Target, value: String) {
        match t {
            Target::System => {
                if self.capture {
                    self.content.system.push(value);
                }
                return;
            }
            Target::Prompt => {
                if self.capture {
                    self.content.push(Message { role: "user".into(), parts: vec![Part::Text(value)], name: None });
                }
                return;
            }
            _ => {}
        }
        // Without capture only what links calls is kept; texts were only fingerprinted.
        let content = matches!(
            t,
            Target::MsgText
                | Target::MsgReasoning
                | Target::PartText
                | Target::PartMime
                | Target::FnArgs
                | Target::ToolFnArgs
                | Target::MsgName
                | Target::PartName
                | Target::ToolFnName
                | Target::ToolId
                | Target::PartId
        );
        if content && !self.capture && t != Target::PartMime {
            return;
        }
        let Some(m) = self.msg.as_mut() else { return };
        match t {
            Target::Role => m.role = value,
            Target::ItemType => m.item_type = value,
            Target::MsgName => m.name = Some(value),
            Target::CallId => m.call_id = Some(value),
            Target::ToolName => m.tool_name = Some(value),
            Target::FnArgs => m.fn_args = Some(value),
            Target::MsgText => m.parts.push(Part::Text(value)),
            Target::MsgReasoning => m.parts.push(Part::Reasoning(value)),
            Target::PartType
            | Target::PartText
            | Target::PartId
            | Target::PartName
            | Target::PartToolId
            | Target::PartMime => {
                let Some(p) = self.part.as_mut() else { return };
                match t {
                    Target::PartType => p.kind = value,
                    Target::PartText => {
                        if !p.text.is_empty() && !value.is_empty() {
                            p.text.push('\n');
                        }
                        p.text.push_str(&value);
                    }
                    Target::PartId => p.id = Some(value),
                    Target::PartName => p.name = Some(value),
                    Target::PartToolId => p.id = Some(value),
                    Target::PartMime => {
                        if let Some(rest) = value.strip_prefix("data:") {
                            p.mime = rest.split([';', ',']).next().map(str::to_owned).filter(|s| !s.is_empty());
                        } else if value.contains('/') && value.len() < 64 {
                            p.mime = Some(value);
                        }
                    }
                    _ => {}
                }
            }
            Target::ToolId => {
                if let Some(tb) = self.tool.as_mut() {
                    tb.id = Some(value);
                }
            }
            Target::ToolFnName => {
                if let Some(tb) = self.tool.as_mut() {
                    tb.name = value;
                }
            }
            Target::ToolFnArgs => {
                if let Some(tb) = self.tool.as_mut() {
                    tb.arguments = Some(value);
                }
            }
            // Responses `function_call` name sits on the item itself.
            Target::None | Target::System | Target::Prompt => {}
        }
        if t == Target::MsgName && m.item_type == "function_call" {
            m.fn_name = m.name.take();
        }
    }

    pub fn end(&mut self, path: &Path<'_>, kind: Kind) {
        if kind != Kind::Object || !self.in_messages(path) {
            return;
        }
        match path.depth() {
            4 if path.key(2) == Some(b"content") => self.end_part(),
            4 if path.key(2) == Some(b"tool_calls") => {
                if let (Some(t), Some(m)) = (self.tool.take(), self.msg.as_mut()) {
                    m.parts.push(Part::ToolCall { id: t.id, name: t.name, arguments: t.arguments });
                }
            }
            2 => self.end_message(),
            _ => {}
        }
    }

    fn end_part(&mut self) {
        let (Some(p), Some(m)) = (self.part.take(), self.msg.as_mut()) else { return };
        let part = match p.kind.as_str() {
            "text" | "input_text" | "output_text" | "" => Part::Text(p.text),
            "thinking" | "reasoning" => Part::Reasoning(p.text),
            "tool_use" => Part::ToolCall { id: p.id, name: p.name.unwrap_or_default(), arguments: p.arguments },
            "tool_result" => {
                if m.results.len() < MAX_TOOL_RESULTS {
                    let content = self.capture.then(|| p.text.clone());
                    m.results.push(ToolResult { id: p.id.clone(), name: None, content });
                }
                Part::ToolCallResponse { id: p.id, response: p.text }
            }
            "image_url" | "image" | "input_image" => {
                Part::Blob { modality: "image", mime_type: p.mime, bytes: p.bytes }
            }
            "input_audio" => Part::Blob { modality: "audio", mime_type: None, bytes: p.bytes },
            _ => Part::Text(p.text),
        };
        m.parts.push(part);
    }

    fn end_message(&mut self) {
        let Some(mut m) = self.msg.take() else { return };
        self.facts.messages += 1;
        // Responses items without a role.
        match m.item_type.as_str() {
            "function_call" => {
                m.role = "assistant".into();
                let name = m.fn_name.take().or(m.name.take()).unwrap_or_default();
                m.parts.push(Part::ToolCall { id: m.call_id.clone(), name, arguments: m.fn_args.take() });
            }
            "function_call_output" => m.role = "tool".into(),
            _ => {}
        }
        let role = m.role.to_ascii_lowercase();
        if self.facts.prefixes.len() < MAX_PREFIXES {
            self.chain.write(role.as_bytes());
            self.chain.write_u64(m.fingerprint);
            self.facts.prefixes.push(self.chain.finish());
        }
        match role.as_str() {
            "assistant" => self.pending_results.clear(),
            "tool" => {
                // A tool message's text is the tool's result.
                let text = self.capture.then(|| {
                    let text: String = m
                        .parts
                        .iter()
                        .filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None })
                        .collect();
                    m.parts.retain(|p| !matches!(p, Part::Text(_)));
                    m.parts.push(Part::ToolCallResponse { id: m.call_id.clone(), response: text.clone() });
                    text
                });
                if self.pending_results.len() < MAX_TOOL_RESULTS {
                    self.pending_results.push(ToolResult {
                        id: m.call_id.clone(),
                        name: m.tool_name.clone().or(m.name.clone()),
                        content: text,
                    });
                }
            }
            _ => self.pending_results.append(&mut m.results),
        }
        if self.capture {
            // An empty text next to other parts (an assistant turn that only called tools).
            if m.parts.len() > 1 {
                m.parts.retain(|p| !matches!(p, Part::Text(t) if t.is_empty()));
            }
            self.content.push(Message { role, parts: m.parts, name: m.name });
        }
    }

    /// The facts, and the content when captured.
    pub fn finish(mut self) -> (ConversationFacts, Option<InputContent>) {
        self.facts.tool_results = self.pending_results;
        // The system text applies to every prefix, wherever it appeared in the request.
        let system = self.system.finish();
        for p in &mut self.facts.prefixes {
            let mut h = DefaultHasher::new();
            h.write_u64(system);
            h.write_u64(*p);
            *p = h.finish();
        }
        if !self.capture {
            return (self.facts, None);
        }
        if !self.tool_defs.is_empty() {
            self.content.tool_definitions = Some(format!("[{}]", self.tool_defs.join(",")));
            self.content.truncated |= self.tool_defs_truncated;
        }
        (self.facts, Some(self.content))
    }
}

/// The `name` of a tool definition captured as raw JSON (`function.name` or `name`).
pub fn tool_name(raw: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(raw).ok()?;
    v.get("function").and_then(|f| f.get("name")).or_else(|| v.get("name")).and_then(|n| n.as_str()).map(str::to_owned)
}
