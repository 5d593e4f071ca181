//! Message content, kept only when content capture is on (off by default): the input messages,
//! system instructions and tool definitions of a request, and the output of a response, in the
//! GenAI JSON parts schema (`gen_ai.input.messages`, `gen_ai.output.messages`, …). Every text is
//! bounded and passed through the redaction patterns before it is kept.

use regex::Regex;
use serde_json::{Value, json};

/// Default bound on one text part (bytes of UTF-8).
pub const DEFAULT_MAX_PART_BYTES: usize = 8 * 1024;
/// Messages kept per request (the most recent ones win once this is exceeded).
const MAX_MESSAGES: usize = 512;
/// Total text kept for one request's or one response's content.
const MAX_TOTAL_BYTES: usize = 512 * 1024;

/// Put into captured output where the capture missed bytes of the response: what they held
/// (text, reasoning, tool-call arguments) is not known.
pub const GAP_MARK: &str = "…[gap: bytes missing from the capture]…";

/// Patterns redacted by default: bearer tokens and the usual API key shapes.
pub const DEFAULT_REDACTIONS: &[&str] = &[
    r"(?i)bearer\s+[A-Za-z0-9\-._~+/]+=*",
    r"\bsk-[A-Za-z0-9_\-]{16,}",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{30,}",
    r"\bxox[baprs]-[A-Za-z0-9-]{10,}",
];

/// What content capture keeps, and how.
#[derive(Clone, Debug)]
pub struct ContentConfig {
    pub capture: bool,
    pub max_part_bytes: usize,
    pub redact: Vec<Regex>,
}

impl Default for ContentConfig {
    fn default() -> Self {
        ContentConfig { capture: false, max_part_bytes: DEFAULT_MAX_PART_BYTES, redact: Vec::new() }
    }
}

impl ContentConfig {
    /// Capture on, with the default redactions plus `extra` patterns.
    pub fn capturing(max_part_bytes: usize, default_redactions: bool, extra: &[String]) -> Result<Self, regex::Error> {
        let mut redact = Vec::new();
        if default_redactions {
            for p in DEFAULT_REDACTIONS {
                redact.push(Regex::new(p)?);
            }
        }
        for p in extra {
            redact.push(Regex::new(p)?);
        }
        Ok(ContentConfig { capture: true, max_part_bytes, redact })
    }

    /// A captured text as exported: redacted, then cut at the part bound (on a char boundary).
    pub fn clean(&self, text: &str) -> String {
        let mut s = text.to_string();
        for re in &self.redact {
            if re.is_match(&s) {
                s = re.replace_all(&s, "[REDACTED]").into_owned();
            }
        }
        if s.len() > self.max_part_bytes {
            let cut = s.floor_char_boundary(self.max_part_bytes);
            let dropped = s.len() - cut;
            s.truncate(cut);
            s.push_str(&format!("…[truncated {dropped} bytes]"));
        }
        s
    }
}

/// One part of a message (GenAI parts schema).
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Text(String),
    Reasoning(String),
    /// `arguments` is the JSON as sent (an object, or the string OpenAI sends).
    ToolCall {
        id: Option<String>,
        name: String,
        arguments: Option<String>,
    },
    ToolCallResponse {
        id: Option<String>,
        response: String,
    },
    /// Binary content (images, audio): described, never copied.
    Blob {
        modality: &'static str,
        mime_type: Option<String>,
        bytes: u64,
    },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    pub role: String,
    pub parts: Vec<Part>,
    pub name: Option<String>,
}

/// What a request said, when content capture is on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InputContent {
    pub messages: Vec<Message>,
    pub system: Vec<String>,
    /// The `tools` array as sent (cut at the part bound).
    pub tool_definitions: Option<String>,
    /// Messages or text were dropped to stay within bounds.
    pub truncated: bool,
}

/// What a response said, when content capture is on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutputContent {
    pub text: String,
    pub reasoning: String,
    pub tool_calls: Vec<(Option<String>, String, Option<String>)>,
    pub truncated: bool,
}

/// Appends `part` to `buf` within `MAX_TOTAL_BYTES` (the cleaning bound applies on export).
pub fn append_bounded(buf: &mut String, part: &[u8], truncated: &mut bool) {
    let room = MAX_TOTAL_BYTES.saturating_sub(buf.len());
    if part.len() > room {
        *truncated = true;
    }
    buf.push_str(&String::from_utf8_lossy(&part[..part.len().min(room)]));
}

impl InputContent {
    /// Adds a message, dropping the oldest beyond the bound.
    pub fn push(&mut self, m: Message) {
        if self.messages.len() >= MAX_MESSAGES {
            self.messages.remove(0);
            self.truncated = true;
        }
        self.messages.push(m);
    }
}

fn part_json(p: &Part, cfg: &ContentConfig) -> Value {
    match p {
        Part::Text(t) => json!({"type": "text", "content": cfg.clean(t)}),
        Part::Reasoning(t) => json!({"type": "reasoning", "content": cfg.clean(t)}),
        Part::ToolCall { id, name, arguments } => {
            let mut v = json!({"type": "tool_call", "name": name});
            if let Some(id) = id {
                v["id"] = json!(id);
            }
            if let Some(a) = arguments {
                // Arguments are an object when they parse (native, Anthropic), else the text.
                let cleaned = cfg.clean(a);
                v["arguments"] = serde_json::from_str::<Value>(&cleaned).unwrap_or(Value::String(cleaned));
            }
            v
        }
        Part::ToolCallResponse { id, response } => {
            let mut v = json!({"type": "tool_call_response", "response": cfg.clean(response)});
            if let Some(id) = id {
                v["id"] = json!(id);
            }
            v
        }
        // The schema's blob carries base64 content; the bytes are not copied, only described.
        Part::Blob { modality, mime_type, bytes } => {
            let mut v = json!({"type": "blob", "modality": modality, "content": "", "size": bytes});
            if let Some(m) = mime_type {
                v["mime_type"] = json!(m);
            }
            v
        }
    }
}

/// `gen_ai.input.messages`.
pub fn input_messages_json(c: &InputContent, cfg: &ContentConfig) -> String {
    let msgs: Vec<Value> = c
        .messages
        .iter()
        .map(|m| {
            let mut v = json!({"role": m.role, "parts": m.parts.iter().map(|p| part_json(p, cfg)).collect::<Vec<_>>()});
            if let Some(n) = &m.name {
                v["name"] = json!(n);
            }
            v
        })
        .collect();
    Value::Array(msgs).to_string()
}

/// `gen_ai.system_instructions`.
pub fn system_instructions_json(c: &InputContent, cfg: &ContentConfig) -> Option<String> {
    if c.system.is_empty() {
        return None;
    }
    let parts: Vec<Value> = c.system.iter().map(|t| json!({"type": "text", "content": cfg.clean(t)})).collect();
    Some(Value::Array(parts).to_string())
}

/// `gen_ai.tool.definitions`: the `tools` array as sent, redacted; beyond the bound (a few
/// parts' worth) the definitions shrink to their names so the JSON stays whole.
pub fn tool_definitions_json(raw: &str, names: &[String], cfg: &ContentConfig) -> String {
    let limit = cfg.max_part_bytes.saturating_mul(8);
    let mut cleaned = raw.to_string();
    for re in &cfg.redact {
        if re.is_match(&cleaned) {
            cleaned = re.replace_all(&cleaned, "[REDACTED]").into_owned();
        }
    }
    if cleaned.len() <= limit && serde_json::from_str::<Value>(&cleaned).is_ok() {
        return cleaned;
    }
    let short: Vec<Value> = names.iter().map(|n| json!({"type": "function", "name": n})).collect();
    Value::Array(short).to_string()
}

/// `gen_ai.output.messages`.
pub fn output_messages_json(c: &OutputContent, finish_reason: Option<&str>, cfg: &ContentConfig) -> String {
    let mut parts = Vec::new();
    if !c.reasoning.is_empty() {
        parts.push(part_json(&Part::Reasoning(c.reasoning.clone()), cfg));
    }
    if !c.text.is_empty() {
        parts.push(part_json(&Part::Text(c.text.clone()), cfg));
    }
    for (id, name, args) in &c.tool_calls {
        parts.push(part_json(&Part::ToolCall { id: id.clone(), name: name.clone(), arguments: args.clone() }, cfg));
    }
    // The schema's finish reasons: tool_calls → tool_call; anything unknown → stop/error as is.
    let finish = match finish_reason {
        Some("tool_calls" | "tool_use") => "tool_call",
        Some("end_turn" | "stop_sequence") | None => "stop",
        Some("max_tokens") => "length",
        Some(other) => other,
    };
    json!([{"role": "assistant", "parts": parts, "finish_reason": finish}]).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_redacts_then_truncates_on_char_boundaries() {
        let cfg = ContentConfig::capturing(12, true, &["secret-\\d+".to_string()]).unwrap();
        assert_eq!(cfg.clean("key sk-abcdefghijklmnopqrstu"), "key [REDACTE…[truncated 2 bytes]");
        let cfg = ContentConfig::capturing(100, true, &["secret-\\d+".to_string()]).unwrap();
        assert_eq!(cfg.clean("my secret-42 and Bearer abc.def"), "my [REDACTED] and [REDACTED]");
        let cfg = ContentConfig::capturing(4, false, &[]).unwrap();
        assert_eq!(cfg.clean("ééé"), "éé…[truncated 2 bytes]");
    }

    #[test]
    fn parts_schema() {
        let cfg = ContentConfig::capturing(100, false, &[]).unwrap();
        let c = InputContent {
            messages: vec![
                Message { role: "user".into(), parts: vec![Part::Text("Weather in Paris?".into())], name: None },
                Message {
                    role: "assistant".into(),
                    parts: vec![Part::ToolCall {
                        id: Some("c1".into()),
                        name: "get_weather".into(),
                        arguments: Some(r#"{"city":"Paris"}"#.into()),
                    }],
                    name: None,
                },
                Message {
                    role: "tool".into(),
                    parts: vec![Part::ToolCallResponse { id: Some("c1".into()), response: "rainy".into() }],
                    name: None,
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            input_messages_json(&c, &cfg),
            r#"[{"parts":[{"content":"Weather in Paris?","type":"text"}],"role":"user"},{"parts":[{"arguments":{"city":"Paris"},"id":"c1","name":"get_weather","type":"tool_call"}],"role":"assistant"},{"parts":[{"id":"c1","response":"rainy","type":"tool_call_response"}],"role":"tool"}]"#
        );
        let out = OutputContent { text: "Hi".into(), reasoning: "hmm".into(), ..Default::default() };
        assert_eq!(
            output_messages_json(&out, Some("stop"), &cfg),
            r#"[{"finish_reason":"stop","parts":[{"content":"hmm","type":"reasoning"},{"content":"Hi","type":"text"}],"role":"assistant"}]"#
        );
    }
}
