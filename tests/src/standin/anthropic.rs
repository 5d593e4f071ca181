//! Synthetic Anthropic-compatible `/v1/messages` answers (docs/ollama-wire.md §5.8, §7.10):
//! `event: X\ndata: {json}\n\n` flushed per event; `message_start` carries a `chars/4` input
//! estimate, `message_delta` the real counts; errors as `{"type":"error",...}`.

use serde::Serialize;
use serde_json::Value;

use super::gojson;
use super::reply::{Pace, Schedule, Script, Step, Unit, content_token, thinking_token};
use crate::wire::WriteContent;

pub const JSON_CT: &str = "application/json";
pub const SSE_CT: &str = "text/event-stream";

/// `msg_` + 24 hex digits.
pub fn message_id() -> String {
    format!("msg_{:024x}", rand::random::<u128>() >> 32)
}

/// `req_` + 24 hex digits.
pub fn request_id() -> String {
    format!("req_{:024x}", rand::random::<u128>() >> 32)
}

fn event(name: &str, data: &impl Serialize) -> Vec<u8> {
    let mut out = format!("event: {name}\ndata: ").into_bytes();
    out.extend(gojson::to_vec(data));
    out.extend_from_slice(b"\n\n");
    out
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    /// Ollama ≥ 0.33, Anthropic's way: the cache hits, subtracted from `input_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_read_input_tokens: Option<u64>,
    output_tokens: u64,
}

impl Usage {
    /// The real counts of `script`'s answer.
    fn of(script: &Script) -> Usage {
        let cached = script.cached_tokens;
        Usage {
            input_tokens: script.prompt_tokens - cached.unwrap_or(0),
            cache_read_input_tokens: cached,
            output_tokens: script.eval_count(),
        }
    }
}

#[derive(Serialize)]
struct StartMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    usage: Usage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Thinking { thinking: &'a str },
    Text { text: &'a str },
    ToolUse { id: &'a str, name: &'a str, input: &'a Value },
}

// The variant names are the wire's `type` tags (`text_delta`, ...).
#[allow(clippy::enum_variant_names)]
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Delta<'a> {
    ThinkingDelta { thinking: &'a str },
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart { message: StartMessage<'a> },
    ContentBlockStart { index: usize, content_block: Block<'a> },
    ContentBlockDelta { index: usize, delta: Delta<'a> },
    ContentBlockStop { index: usize },
    MessageDelta { delta: StopDelta<'a>, usage: Usage },
    MessageStop,
}

#[derive(Serialize)]
struct StopDelta<'a> {
    stop_reason: &'a str,
}

impl Event<'_> {
    fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::ContentBlockStart { .. } => "content_block_start",
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
        }
    }

    fn to_sse(&self) -> Vec<u8> {
        event(self.name(), self)
    }
}

/// Anthropic stop_reason from a native done_reason.
pub fn stop_reason(done_reason: &str, tool_use: bool) -> &'static str {
    match done_reason {
        _ if tool_use => "tool_use",
        "length" => "max_tokens",
        _ => "end_turn",
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Thinking,
    Text,
}

/// `/v1/messages` stream, one event per unit; the events one native chunk produces share a step.
pub struct MessagesStream {
    id: String,
    model: String,
    script: Script,
    input_estimate: u64,
    k: usize,
    queue: std::collections::VecDeque<Unit>,
    events: usize,
    /// Content blocks started so far (the open one has index `started - 1`).
    started: usize,
    open: Open,
}

impl MessagesStream {
    pub fn new(model: &str, script: Script, input_estimate: u64) -> MessagesStream {
        MessagesStream {
            id: message_id(),
            model: model.to_owned(),
            script,
            input_estimate,
            k: 0,
            queue: Default::default(),
            events: 0,
            started: 0,
            open: Open::None,
        }
    }

    fn push(&mut self, ev: Event<'_>, output: bool) {
        let pace = if self.queue.is_empty() { Pace::Step } else { Pace::Same };
        let i = self.events;
        self.events += 1;
        self.queue.push_back(Unit { bytes: ev.to_sse(), content: WriteContent::SseEvents(i..i + 1), pace, output });
    }

    /// Close the open block (if another kind is starting) and open `want`.
    fn switch(&mut self, want: Open) {
        if self.open == want {
            return;
        }
        if self.open != Open::None {
            self.push(Event::ContentBlockStop { index: self.started - 1 }, false);
        }
        self.open = want;
        let block = match want {
            Open::Thinking => Block::Thinking { thinking: "" },
            Open::Text => Block::Text { text: "" },
            Open::None => return,
        };
        let index = self.started;
        self.started += 1;
        self.push(Event::ContentBlockStart { index, content_block: block }, false);
    }

    fn produce(&mut self, step: Step) {
        if self.k == 1 {
            let id = self.id.clone();
            let model = self.model.clone();
            self.push(
                Event::MessageStart {
                    message: StartMessage {
                        id: &id,
                        kind: "message",
                        role: "assistant",
                        model: &model,
                        content: [],
                        usage: Usage {
                            input_tokens: self.input_estimate,
                            cache_read_input_tokens: None,
                            output_tokens: 0,
                        },
                    },
                },
                false,
            );
        }
        match step {
            Step::Thinking(i) => {
                self.switch(Open::Thinking);
                let delta = Delta::ThinkingDelta { thinking: thinking_token(i) };
                self.push(Event::ContentBlockDelta { index: self.started - 1, delta }, true);
            }
            Step::Content(i) => {
                self.switch(Open::Text);
                let delta = Delta::TextDelta { text: content_token(i) };
                self.push(Event::ContentBlockDelta { index: self.started - 1, delta }, true);
            }
            Step::ToolCall => {
                self.switch(Open::None);
                let Some(tc) = self.script.tool_call.clone() else {
                    return;
                };
                let index = self.started;
                self.started += 1;
                self.push(
                    Event::ContentBlockStart {
                        index,
                        content_block: Block::ToolUse {
                            id: &tc.id,
                            name: &tc.name,
                            input: &Value::Object(Default::default()),
                        },
                    },
                    false,
                );
                let args = String::from_utf8(gojson::to_vec(&tc.arguments)).unwrap_or_default();
                self.push(
                    Event::ContentBlockDelta { index, delta: Delta::InputJsonDelta { partial_json: &args } },
                    true,
                );
                self.push(Event::ContentBlockStop { index }, false);
            }
            Step::Done => {
                self.switch(Open::None);
                let reason = stop_reason(self.script.done_reason, self.script.tool_call.is_some());
                self.push(
                    Event::MessageDelta { delta: StopDelta { stop_reason: reason }, usage: Usage::of(&self.script) },
                    false,
                );
                self.push(Event::MessageStop, false);
            }
        }
    }
}

impl Iterator for MessagesStream {
    type Item = Unit;

    fn next(&mut self) -> Option<Unit> {
        if self.queue.is_empty() {
            let step = self.script.step(self.k)?;
            self.k += 1;
            self.produce(step);
        }
        self.queue.pop_front()
    }
}

/// Non-streamed `/v1/messages` answer.
pub fn whole(model: &str, script: &Script, _sched: &Schedule) -> Vec<u8> {
    #[derive(Serialize)]
    struct Message<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        role: &'static str,
        model: &'a str,
        content: Option<Vec<Block<'a>>>,
        #[serde(skip_serializing_if = "str::is_empty")]
        stop_reason: &'a str,
        usage: Usage,
    }
    let id = message_id();
    let thinking = script.thinking_text();
    let text = script.content_text();
    let mut blocks = Vec::new();
    if !thinking.is_empty() {
        blocks.push(Block::Thinking { thinking: &thinking });
    }
    if !text.is_empty() {
        blocks.push(Block::Text { text: &text });
    }
    if let Some(tc) = &script.tool_call {
        blocks.push(Block::ToolUse { id: &tc.id, name: &tc.name, input: &tc.arguments });
    }
    gojson::to_vec_line(&Message {
        id: &id,
        kind: "message",
        role: "assistant",
        model,
        // A nil slice: an empty completion is `"content":null`.
        content: (!blocks.is_empty()).then_some(blocks),
        stop_reason: stop_reason(script.done_reason, script.tool_call.is_some()),
        usage: Usage::of(script),
    })
}

/// Anthropic error body; `type` by status.
pub fn error_body(status: u16, message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Inner<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        message: &'a str,
    }
    #[derive(Serialize)]
    struct E<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        error: Inner<'a>,
        request_id: String,
    }
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    };
    gojson::to_vec_line(&E { kind: "error", error: Inner { kind, message }, request_id: request_id() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standin::reply::ToolCallSpec;

    #[test]
    fn event_sequence() {
        let script = Script {
            thinking_tokens: 1,
            content_tokens: 2,
            tool_call: Some(ToolCallSpec {
                name: "get_weather".into(),
                arguments: serde_json::json!({"city": "Tokyo"}),
                id: "call_abcd1234".into(),
            }),
            prompt_tokens: 31,
            cached_tokens: None,
            cold_load: std::time::Duration::ZERO,
            done_reason: "stop",
        };
        let units: Vec<Unit> = MessagesStream::new("qwen3", script, 7).collect();
        let names: Vec<String> = units
            .iter()
            .map(|u| {
                let s = String::from_utf8(u.bytes.clone()).unwrap();
                s.lines().next().unwrap().trim_start_matches("event: ").to_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let tool_start = String::from_utf8(units[8].bytes.clone()).unwrap();
        assert!(
            tool_start.contains(
                r#""index":2,"content_block":{"type":"tool_use","id":"call_abcd1234","name":"get_weather","input":{}}"#
            ),
            "{tool_start}"
        );
        let delta = String::from_utf8(units[11].bytes.clone()).unwrap();
        assert!(delta.contains(r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"input_tokens":31,"output_tokens":4}}"#));
        assert_eq!(units[0].pace, Pace::Step);
        assert_eq!(units[1].pace, Pace::Same);
    }
}
