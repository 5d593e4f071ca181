//! Synthetic OpenAI-compatible answers (`/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`, `/v1/models/{m}`, errors), in the v0.32.6+ layout of docs/ollama-wire.md
//! §5.2-§5.5: role on the first delta only, a dedicated finish chunk, finish + usage + `[DONE]`
//! flushed together, `created` pinned to the first chunk.

use serde::Serialize;

use super::gojson;
use super::reply::{Pace, Schedule, Script, Step, Unit, content_token, thinking_token};
use crate::wire::WriteContent;

/// What the OpenAI middleware sets on JSON answers (written with json.Encoder: trailing `\n`).
pub const JSON_CT: &str = "application/json";
pub const SSE_CT: &str = "text/event-stream";

#[derive(Serialize, Clone, Copy)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Ollama ≥ 0.33, when the prompt cache served part of the prompt (`prompt_tokens` still
    /// counts them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Serialize, Clone, Copy)]
pub struct PromptDetails {
    pub cached_tokens: u64,
}

impl Usage {
    pub fn new(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: None,
        }
    }

    /// The real counts of `script`'s answer.
    pub fn of(script: &Script) -> Usage {
        let details = script.cached_tokens.filter(|n| *n > 0).map(|cached_tokens| PromptDetails { cached_tokens });
        Usage { prompt_tokens_details: details, ..Usage::new(script.prompt_tokens, script.eval_count()) }
    }
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'a str,
    index: usize,
    #[serde(rename = "type")]
    kind: &'static str,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: String,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall<'a>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: usize,
    delta: Delta<'a>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

fn sse(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out
}

pub const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// `chatcmpl-` / `cmpl-` ids are `rand.Intn(999)` (they collide often).
pub fn random_id(prefix: &str) -> String {
    format!("{prefix}{}", rand::random_range(0..999u32))
}

/// OpenAI finish_reason from a native done_reason (+ tool calls).
pub fn finish_reason(done_reason: &str, tool_calls: bool) -> &str {
    match done_reason {
        "stop" | "" if tool_calls => "tool_calls",
        "" => "stop",
        r => r,
    }
}

/// `/v1/chat/completions` stream built step by step.
pub struct ChatStream {
    id: String,
    model: String,
    script: Script,
    include_usage: bool,
    /// Pinned to the first chunk for the whole stream.
    created: u64,
    k: usize,
    events: usize,
    sent_role: bool,
}

impl ChatStream {
    pub fn new(model: &str, script: Script, sched: Schedule, include_usage: bool) -> ChatStream {
        ChatStream {
            id: random_id("chatcmpl-"),
            model: model.to_owned(),
            created: sched.step_ns(0) / 1_000_000_000,
            script,
            include_usage,
            k: 0,
            events: 0,
            sent_role: false,
        }
    }

    fn chunk(&self, delta: Delta<'_>, finish: Option<&str>) -> Vec<u8> {
        sse(&gojson::to_vec(&ChatChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: "fp_ollama",
            choices: vec![ChunkChoice { index: 0, delta, finish_reason: finish }],
            usage: None,
        }))
    }
}

impl Iterator for ChatStream {
    type Item = Unit;

    fn next(&mut self) -> Option<Unit> {
        let step = self.script.step(self.k)?;
        self.k += 1;
        let role = (!self.sent_role && step != Step::Done).then_some("assistant");
        self.sent_role |= role.is_some();
        let args;
        let (bytes, n, output) = match step {
            Step::Thinking(i) => (
                self.chunk(
                    Delta { role, content: Some(""), reasoning: Some(thinking_token(i)), ..Default::default() },
                    None,
                ),
                1,
                true,
            ),
            Step::Content(i) => {
                (self.chunk(Delta { role, content: Some(content_token(i)), ..Default::default() }, None), 1, true)
            }
            Step::ToolCall => {
                let tc = self.script.tool_call.as_ref()?;
                args = String::from_utf8(gojson::to_vec(&tc.arguments)).unwrap_or_default();
                let b = self.chunk(
                    Delta {
                        role,
                        content: Some(""),
                        tool_calls: vec![ToolCall {
                            id: &tc.id,
                            index: 0,
                            kind: "function",
                            function: Function { name: &tc.name, arguments: args.clone() },
                        }],
                        ..Default::default()
                    },
                    None,
                );
                (b, 1, true)
            }
            Step::Done => {
                // Finish chunk, usage chunk, [DONE]: one gin step, one flush.
                let reason = finish_reason(self.script.done_reason, self.script.tool_call.is_some());
                let mut b = self.chunk(Delta::default(), Some(reason));
                let mut n = 2;
                if self.include_usage {
                    b.extend(sse(&gojson::to_vec(&ChatChunk {
                        id: &self.id,
                        object: "chat.completion.chunk",
                        created: self.created,
                        model: &self.model,
                        system_fingerprint: "fp_ollama",
                        choices: Vec::new(),
                        usage: Some(Usage::of(&self.script)),
                    })));
                    n += 1;
                }
                b.extend_from_slice(DONE_EVENT);
                (b, n, false)
            }
        };
        let first = self.events;
        self.events += n;
        Some(Unit { bytes, content: WriteContent::SseEvents(first..first + n), pace: Pace::Step, output })
    }
}

/// The chunk the compat writer makes of a mid-stream native `{"error"}` line: an empty-model
/// chunk with an empty content delta, and nothing after it (§4.3).
pub fn chat_error_chunk(id: &str, created: u64) -> Vec<u8> {
    sse(&gojson::to_vec(&ChatChunk {
        id,
        object: "chat.completion.chunk",
        created,
        model: "",
        system_fingerprint: "fp_ollama",
        choices: vec![ChunkChoice {
            index: 0,
            delta: Delta { content: Some(""), ..Default::default() },
            finish_reason: None,
        }],
        usage: None,
    }))
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reasoning: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall<'a>>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: usize,
    message: Message<'a>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<Choice<'a>>,
    usage: Usage,
}

/// Non-streamed `/v1/chat/completions` answer (json.Encoder: ends with `\n`).
pub fn chat_whole(model: &str, script: &Script, sched: &Schedule) -> Vec<u8> {
    let content = script.content_text();
    let reasoning = script.thinking_text();
    let id = random_id("chatcmpl-");
    let tool_calls = script
        .tool_call
        .iter()
        .map(|tc| ToolCall {
            id: &tc.id,
            index: 0,
            kind: "function",
            function: Function {
                name: &tc.name,
                arguments: String::from_utf8(gojson::to_vec(&tc.arguments)).unwrap_or_default(),
            },
        })
        .collect();
    gojson::to_vec_line(&ChatCompletion {
        id: &id,
        object: "chat.completion",
        created: sched.step_ns(script.steps()) / 1_000_000_000,
        model,
        system_fingerprint: "fp_ollama",
        choices: vec![Choice {
            index: 0,
            message: Message { role: "assistant", content: &content, reasoning: &reasoning, tool_calls },
            finish_reason: Some(finish_reason(script.done_reason, script.tool_call.is_some())),
        }],
        usage: Usage::of(script),
    })
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: usize,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<TextChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

/// `/v1/completions` stream: one chunk per native chunk with `created` per chunk; the done chunk
/// carries finish_reason; with include_usage every chunk has zero usage and a final
/// `choices: []` chunk the real numbers (§5.4). Thinking is not part of this API.
pub struct CompletionStream {
    id: String,
    model: String,
    script: Script,
    sched: Schedule,
    include_usage: bool,
    k: usize,
    events: usize,
}

impl CompletionStream {
    pub fn new(model: &str, mut script: Script, sched: Schedule, include_usage: bool) -> Self {
        script.thinking_tokens = 0;
        script.tool_call = None;
        CompletionStream {
            id: random_id("cmpl-"),
            model: model.to_owned(),
            script,
            sched,
            include_usage,
            k: 0,
            events: 0,
        }
    }
}

impl Iterator for CompletionStream {
    type Item = Unit;

    fn next(&mut self) -> Option<Unit> {
        let step = self.script.step(self.k)?;
        let created = self.sched.step_ns(self.k) / 1_000_000_000;
        self.k += 1;
        let zero = self.include_usage.then(|| Usage::new(0, 0));
        let chunk = |text: &str, finish: Option<&str>, usage: Option<Usage>, choices: bool| {
            sse(&gojson::to_vec(&Completion {
                id: &self.id,
                object: "text_completion",
                created,
                model: &self.model,
                system_fingerprint: "fp_ollama",
                choices: if choices { vec![TextChoice { text, index: 0, finish_reason: finish }] } else { Vec::new() },
                usage,
            }))
        };
        let (bytes, n, output) = match step {
            Step::Content(i) => (chunk(content_token(i), None, zero, true), 1, true),
            Step::Done => {
                let mut b = chunk("", Some(self.script.done_reason), zero, true);
                let mut n = 2;
                if self.include_usage {
                    let usage = Usage::of(&self.script);
                    b.extend(chunk("", None, Some(usage), false));
                    n += 1;
                }
                b.extend_from_slice(DONE_EVENT);
                (b, n, false)
            }
            Step::Thinking(_) | Step::ToolCall => return self.next(),
        };
        let first = self.events;
        self.events += n;
        Some(Unit { bytes, content: WriteContent::SseEvents(first..first + n), pace: Pace::Step, output })
    }
}

/// What the completions writer makes of a mid-stream error line: a chunk with `"text":""`.
pub fn completion_error_chunk(id: &str, created: u64) -> Vec<u8> {
    sse(&gojson::to_vec(&Completion {
        id,
        object: "text_completion",
        created,
        model: "",
        system_fingerprint: "fp_ollama",
        choices: vec![TextChoice { text: "", index: 0, finish_reason: None }],
        usage: None,
    }))
}

/// Non-streamed `/v1/completions` answer.
pub fn completion_whole(model: &str, script: &Script, sched: &Schedule) -> Vec<u8> {
    let text = script.content_text();
    let id = random_id("cmpl-");
    gojson::to_vec_line(&Completion {
        id: &id,
        object: "text_completion",
        created: sched.step_ns(script.steps()) / 1_000_000_000,
        model,
        system_fingerprint: "fp_ollama",
        choices: vec![TextChoice { text: &text, index: 0, finish_reason: Some(script.done_reason) }],
        usage: Some(Usage::of(script)),
    })
}

/// `/v1/completions` answer to an empty prompt (a load): `finish_reason:"load"`.
pub fn completion_load(model: &str, created: u64) -> Vec<u8> {
    let id = random_id("cmpl-");
    gojson::to_vec_line(&Completion {
        id: &id,
        object: "text_completion",
        created,
        model,
        system_fingerprint: "fp_ollama",
        choices: vec![TextChoice { text: "", index: 0, finish_reason: Some("load") }],
        usage: Some(Usage::new(0, 0)),
    })
}

/// `/v1/embeddings` answer with float vectors.
pub fn embeddings_body(model: &str, inputs: usize, prompt_tokens: u64) -> Vec<u8> {
    #[derive(Serialize)]
    struct Item {
        object: &'static str,
        embedding: Vec<f32>,
        index: usize,
    }
    #[derive(Serialize)]
    struct U {
        prompt_tokens: u64,
        total_tokens: u64,
    }
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Item>,
        model: &'a str,
        usage: U,
    }
    gojson::to_vec_line(&List {
        object: "list",
        data: (0..inputs)
            .map(|i| Item {
                object: "embedding",
                embedding: super::native::embedding(i, super::native::EMBED_DIM),
                index: i,
            })
            .collect(),
        model,
        usage: U { prompt_tokens, total_tokens: prompt_tokens },
    })
}

/// `/v1/models/{model}`.
pub fn model_body(id: &str, created: u64) -> Vec<u8> {
    #[derive(Serialize)]
    struct M<'a> {
        id: &'a str,
        object: &'static str,
        created: u64,
        owned_by: &'a str,
    }
    // owned_by is the name's namespace (`library` for bare names).
    let owned_by = id.rsplit_once('/').map_or("library", |(ns, _)| ns.rsplit('/').next().unwrap_or("library"));
    gojson::to_vec_line(&M { id, object: "model", created, owned_by })
}

/// OpenAI error shape; `type` from the status (400 invalid_request_error, 404 not_found_error,
/// else api_error).
pub fn error_body(status: u16, message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Inner<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        param: Option<()>,
        code: Option<()>,
    }
    #[derive(Serialize)]
    struct E<'a> {
        error: Inner<'a>,
    }
    let kind = match status {
        400 => "invalid_request_error",
        404 => "not_found_error",
        _ => "api_error",
    };
    gojson::to_vec_line(&E { error: Inner { message, kind, param: None, code: None } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn chat_stream_layout() {
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
            t0_ns: 1_755_770_400_000_000_000,
            ttft: Duration::from_millis(5),
            gap: Duration::from_millis(5),
        };
        let units: Vec<Unit> = ChatStream::new("llama3.2", script, sched, true).collect();
        assert_eq!(units.len(), 4);
        let first = String::from_utf8(units[0].bytes.clone()).unwrap();
        assert!(first.contains(r#""delta":{"role":"assistant","content":"","reasoning":"Okay"}"#));
        let second = String::from_utf8(units[1].bytes.clone()).unwrap();
        assert!(second.contains(r#""delta":{"content":"Hello"},"finish_reason":null"#));
        let tail = String::from_utf8(units[3].bytes.clone()).unwrap();
        assert!(tail.contains(r#""delta":{},"finish_reason":"stop""#));
        assert!(tail.contains(r#""choices":[],"usage":{"prompt_tokens":26,"completion_tokens":3,"total_tokens":29}"#));
        assert!(tail.ends_with("data: [DONE]\n\n"));
        assert_eq!(units[3].content, WriteContent::SseEvents(3..6));
    }
}
