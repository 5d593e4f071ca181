//! Synthetic OpenAI Responses API answers (`/v1/responses`, docs/ollama-wire.md §5.6, §7.11).
//!
//! Event payloads are Go maps, so their keys are sorted (serde_json's default map is sorted too,
//! which is why they are built as `json!` values). Simplification: the nested `response` object,
//! a struct in Go, comes out sorted as well. `response.completed` is the terminator; there is no
//! `[DONE]`.
//! *Constructed*: no real recording of this route exists in the fixtures.

use serde::Serialize;
use serde_json::{Value, json};

use super::gojson;
use super::reply::{Pace, Schedule, Script, Step, Unit, content_token, thinking_token};
use crate::wire::WriteContent;

pub const JSON_CT: &str = "application/json";
pub const SSE_CT: &str = "text/event-stream";

#[derive(Serialize, Clone)]
struct Usage {
    input_tokens: u64,
    input_tokens_details: Cached,
    output_tokens: u64,
    output_tokens_details: Reasoning,
    total_tokens: u64,
}

#[derive(Serialize, Clone)]
struct Cached {
    cached_tokens: u64,
}

#[derive(Serialize, Clone)]
struct Reasoning {
    reasoning_tokens: u64,
}

#[derive(Serialize)]
struct ResponseObject<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<u64>,
    status: &'a str,
    incomplete_details: Option<()>,
    model: &'a str,
    output: Vec<Value>,
    parallel_tool_calls: bool,
    /// Go's `*float64` 1.0 marshals as `1`.
    temperature: u8,
    text: Value,
    tool_choice: &'static str,
    tools: [(); 0],
    top_p: u8,
    truncation: &'static str,
    usage: Option<Usage>,
}

/// State shared by the stream and the whole answer.
struct Ids {
    resp: String,
    msg: String,
    reasoning: String,
    call: String,
}

impl Ids {
    fn new() -> Ids {
        let n = rand::random_range(100_000..1_000_000u32);
        Ids {
            resp: format!("resp_{n}"),
            msg: format!("msg_{n}"),
            reasoning: format!("rs_{n}"),
            call: format!("fc_{n}"),
        }
    }
}

fn message_item(ids: &Ids, text: &str, done: bool) -> Value {
    json!({
        "content": if done { json!([output_text(text)]) } else { json!([]) },
        "id": ids.msg,
        "role": "assistant",
        "status": if done { "completed" } else { "in_progress" },
        "type": "message",
    })
}

fn output_text(text: &str) -> Value {
    json!({"annotations": [], "logprobs": [], "text": text, "type": "output_text"})
}

fn reasoning_item(ids: &Ids, thinking: &str) -> Value {
    json!({
        "encrypted_content": thinking,
        "id": ids.reasoning,
        "summary": if thinking.is_empty() { json!([]) } else { json!([{"text": thinking, "type": "summary_text"}]) },
        "type": "reasoning",
    })
}

fn call_item(ids: &Ids, script: &Script, done: bool) -> Option<Value> {
    let tc = script.tool_call.as_ref()?;
    let args = String::from_utf8(gojson::to_vec(&tc.arguments)).unwrap_or_default();
    Some(json!({
        "arguments": if done { args } else { String::new() },
        "call_id": tc.id,
        "id": ids.call,
        "name": tc.name,
        "status": if done { "completed" } else { "in_progress" },
        "type": "function_call",
    }))
}

fn usage(script: &Script) -> Usage {
    Usage {
        input_tokens: script.prompt_tokens,
        // Always written; 0 from a server that does not count hits (0.33.0-rc2 and older).
        input_tokens_details: Cached { cached_tokens: script.cached_tokens.unwrap_or(0) },
        output_tokens: script.eval_count(),
        output_tokens_details: Reasoning { reasoning_tokens: script.thinking_tokens as u64 },
        total_tokens: script.prompt_tokens + script.eval_count(),
    }
}

fn response_object(
    ids: &Ids,
    model: &str,
    created_at: u64,
    completed_at: Option<u64>,
    output: Vec<Value>,
    usage: Option<Usage>,
) -> Value {
    let obj = ResponseObject {
        id: &ids.resp,
        object: "response",
        created_at,
        completed_at,
        status: if completed_at.is_some() { "completed" } else { "in_progress" },
        incomplete_details: None,
        model,
        output,
        parallel_tool_calls: true,
        temperature: 1,
        text: json!({"format": {"type": "text"}}),
        tool_choice: "auto",
        tools: [],
        top_p: 1,
        truncation: "disabled",
        usage,
    };
    serde_json::from_slice::<Value>(&gojson::to_vec(&obj)).unwrap_or(Value::Null)
}

/// `/v1/responses` stream, one event per unit.
pub struct ResponsesStream {
    ids: Ids,
    model: String,
    script: Script,
    sched: Schedule,
    k: usize,
    seq: u64,
    queue: std::collections::VecDeque<Unit>,
    text: String,
    thinking: String,
    message_open: bool,
    reasoning_open: bool,
    output_index: u64,
    outputs: Vec<Value>,
}

impl ResponsesStream {
    pub fn new(model: &str, script: Script, sched: Schedule) -> ResponsesStream {
        ResponsesStream {
            ids: Ids::new(),
            model: model.to_owned(),
            script,
            sched,
            k: 0,
            seq: 0,
            queue: Default::default(),
            text: String::new(),
            thinking: String::new(),
            message_open: false,
            reasoning_open: false,
            output_index: 0,
            outputs: Vec::new(),
        }
    }

    /// Event `kind` with `fields` merged into its (sorted) map.
    fn push(&mut self, kind: &str, mut fields: Value, output: bool) {
        if let Value::Object(m) = &mut fields {
            m.insert("sequence_number".into(), json!(self.seq));
            m.insert("type".into(), json!(kind));
        }
        self.seq += 1;
        let mut bytes = format!("event: {kind}\ndata: ").into_bytes();
        bytes.extend(gojson::to_vec(&fields));
        bytes.extend_from_slice(b"\n\n");
        let pace = if self.queue.is_empty() { Pace::Step } else { Pace::Same };
        let i = self.seq as usize - 1;
        self.queue.push_back(Unit { bytes, content: WriteContent::SseEvents(i..i + 1), pace, output });
    }

    fn created(&self) -> u64 {
        self.sched.step_ns(0) / 1_000_000_000
    }

    fn close_reasoning(&mut self) {
        if !self.reasoning_open {
            return;
        }
        self.reasoning_open = false;
        let oi = self.output_index;
        let thinking = self.thinking.clone();
        let id = self.ids.reasoning.clone();
        self.push(
            "response.reasoning_summary_text.done",
            json!({"item_id": id, "output_index": oi, "summary_index": 0, "text": thinking}),
            false,
        );
        let item = reasoning_item(&self.ids, &thinking);
        self.outputs.push(item.clone());
        self.push("response.output_item.done", json!({"item": item, "output_index": oi}), false);
        self.output_index += 1;
    }

    fn close_message(&mut self) {
        if !self.message_open {
            return;
        }
        self.message_open = false;
        let oi = self.output_index;
        let text = self.text.clone();
        let id = self.ids.msg.clone();
        self.push(
            "response.output_text.done",
            json!({"content_index": 0, "item_id": id, "logprobs": [], "output_index": oi, "text": text}),
            false,
        );
        self.push(
            "response.content_part.done",
            json!({"content_index": 0, "item_id": id, "output_index": oi, "part": output_text(&text)}),
            false,
        );
        let item = message_item(&self.ids, &text, true);
        self.outputs.push(item.clone());
        self.push("response.output_item.done", json!({"item": item, "output_index": oi}), false);
        self.output_index += 1;
    }

    fn produce(&mut self, step: Step) {
        if self.k == 1 {
            let r = response_object(&self.ids, &self.model, self.created(), None, vec![], None);
            self.push("response.created", json!({"response": r.clone()}), false);
            self.push("response.in_progress", json!({"response": r}), false);
        }
        let oi = self.output_index;
        match step {
            Step::Thinking(i) => {
                if !self.reasoning_open {
                    self.reasoning_open = true;
                    let item = reasoning_item(&self.ids, "");
                    self.push("response.output_item.added", json!({"item": item, "output_index": oi}), false);
                }
                let tok = thinking_token(i);
                self.thinking.push_str(tok);
                let id = self.ids.reasoning.clone();
                self.push(
                    "response.reasoning_summary_text.delta",
                    json!({"delta": tok, "item_id": id, "output_index": oi, "summary_index": 0}),
                    true,
                );
            }
            Step::Content(i) => {
                self.close_reasoning();
                let oi = self.output_index;
                let id = self.ids.msg.clone();
                if !self.message_open {
                    self.message_open = true;
                    let item = message_item(&self.ids, "", false);
                    self.push("response.output_item.added", json!({"item": item, "output_index": oi}), false);
                    self.push(
                        "response.content_part.added",
                        json!({"content_index": 0, "item_id": id, "output_index": oi, "part": output_text("")}),
                        false,
                    );
                }
                let tok = content_token(i);
                self.text.push_str(tok);
                self.push(
                    "response.output_text.delta",
                    json!({"content_index": 0, "delta": tok, "item_id": id, "logprobs": [], "output_index": oi}),
                    true,
                );
            }
            Step::ToolCall => {
                self.close_reasoning();
                self.close_message();
                let oi = self.output_index;
                let (Some(open), Some(done)) =
                    (call_item(&self.ids, &self.script, false), call_item(&self.ids, &self.script, true))
                else {
                    return;
                };
                let args = done["arguments"].clone();
                let id = self.ids.call.clone();
                self.push("response.output_item.added", json!({"item": open, "output_index": oi}), false);
                self.push(
                    "response.function_call_arguments.delta",
                    json!({"delta": args, "item_id": id, "output_index": oi}),
                    true,
                );
                self.push(
                    "response.function_call_arguments.done",
                    json!({"arguments": args, "item_id": id, "output_index": oi}),
                    false,
                );
                self.outputs.push(done.clone());
                self.push("response.output_item.done", json!({"item": done, "output_index": oi}), false);
                self.output_index += 1;
            }
            Step::Done => {
                self.close_reasoning();
                self.close_message();
                let done_at = self.sched.step_ns(self.k - 1) / 1_000_000_000;
                let r = response_object(
                    &self.ids,
                    &self.model,
                    self.created(),
                    Some(done_at),
                    std::mem::take(&mut self.outputs),
                    Some(usage(&self.script)),
                );
                self.push("response.completed", json!({"response": r}), false);
            }
        }
    }
}

impl Iterator for ResponsesStream {
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

/// Non-streamed `/v1/responses` answer.
pub fn whole(model: &str, script: &Script, sched: &Schedule) -> Vec<u8> {
    let ids = Ids::new();
    let mut output = Vec::new();
    let thinking = script.thinking_text();
    if !thinking.is_empty() {
        output.push(reasoning_item(&ids, &thinking));
    }
    let text = script.content_text();
    if !text.is_empty() {
        output.push(message_item(&ids, &text, true));
    }
    output.extend(call_item(&ids, script, true));
    let created = sched.step_ns(0) / 1_000_000_000;
    let done = sched.step_ns(script.steps()) / 1_000_000_000;
    let r = response_object(&ids, model, created, Some(done), output, Some(usage(script)));
    gojson::to_vec_line(&r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stream_ends_with_completed() {
        let script = Script {
            thinking_tokens: 1,
            content_tokens: 2,
            tool_call: None,
            prompt_tokens: 26,
            cached_tokens: None,
            cold_load: std::time::Duration::ZERO,
            done_reason: "stop",
        };
        let sched = Schedule {
            t0_ns: 1_767_225_600_000_000_000,
            ttft: Duration::from_millis(1),
            gap: Duration::from_millis(1),
        };
        let units: Vec<Unit> = ResponsesStream::new("m", script, sched).collect();
        let last = String::from_utf8(units.last().unwrap().bytes.clone()).unwrap();
        assert!(last.starts_with("event: response.completed\n"));
        assert!(last.contains(r#""output_tokens":3"#));
        let delta = units
            .iter()
            .map(|u| String::from_utf8(u.bytes.clone()).unwrap())
            .find(|s| s.starts_with("event: response.output_text.delta"))
            .unwrap();
        assert!(delta.contains(r#"data: {"content_index":0,"delta":"Hello","item_id":"msg_"#));
        assert_eq!(units.iter().filter(|u| u.output).count(), 3);
    }
}
