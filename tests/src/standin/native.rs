//! Synthetic native API answers (`/api/generate`, `/api/chat`, embeddings, model management),
//! shaped as docs/ollama-wire.md §2-§3 says: `api.GenerateResponse` / `api.ChatResponse` field
//! order, omitempty metrics, one NDJSON line per step, `{"error":...}` lines mid-stream.

use serde::Serialize;

use super::gojson;
use super::reply::{Metrics, Pace, Schedule, Script, Step, ToolCallSpec, Unit, content_token, thinking_token};
use crate::wire::WriteContent;

/// `application/json; charset=utf-8`: what gin's `c.JSON` sets.
pub const JSON_CT: &str = "application/json; charset=utf-8";
/// What `streamResponse` sets.
pub const NDJSON_CT: &str = "application/x-ndjson";

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    thinking: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    index: usize,
    name: &'a str,
    arguments: &'a serde_json::Value,
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    model: &'a str,
    created_at: &'a str,
    message: Message<'a>,
    done: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    done_reason: &'a str,
    #[serde(flatten)]
    metrics: Metrics,
}

#[derive(Serialize)]
struct GenerateChunk<'a> {
    model: &'a str,
    created_at: &'a str,
    response: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    thinking: &'a str,
    done: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    done_reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Vec<u64>>,
    #[serde(flatten)]
    metrics: Metrics,
}

/// One native response object (a stream line without its `\n`, or a whole non-streamed body).
pub struct NativeObject<'a> {
    pub chat: bool,
    pub model: &'a str,
    pub created_at: &'a str,
    pub content: &'a str,
    pub thinking: &'a str,
    pub tool_call: Option<&'a ToolCallSpec>,
    pub done: bool,
    pub done_reason: &'a str,
    pub metrics: Metrics,
    /// Generate's final `context` (token ids of prompt + answer).
    pub context: Option<Vec<u64>>,
}

impl NativeObject<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        if self.chat {
            gojson::to_vec(&ChatChunk {
                model: self.model,
                created_at: self.created_at,
                message: Message {
                    role: "assistant",
                    content: self.content,
                    thinking: self.thinking,
                    tool_calls: self
                        .tool_call
                        .map(|t| ToolCallOut {
                            id: &t.id,
                            function: FunctionOut { index: 0, name: &t.name, arguments: &t.arguments },
                        })
                        .into_iter()
                        .collect(),
                },
                done: self.done,
                done_reason: self.done_reason,
                metrics: self.metrics,
            })
        } else {
            gojson::to_vec(&GenerateChunk {
                model: self.model,
                created_at: self.created_at,
                response: self.content,
                thinking: self.thinking,
                done: self.done,
                done_reason: self.done_reason,
                context: self.context.clone(),
                metrics: self.metrics,
            })
        }
    }
}

/// Token ids for generate's `context`: prompt + answer, capped (real ones can be large).
fn context_ids(script: &Script) -> Vec<u64> {
    let n = (script.prompt_tokens + script.eval_count()).min(2048);
    (0..n).map(|i| 100 + (i * 7919) % 50_000).collect()
}

/// A synthetic NDJSON stream, one line per generation step, built as it is written.
pub struct NativeStream {
    chat: bool,
    model: String,
    script: Script,
    sched: Schedule,
    k: usize,
}

impl NativeStream {
    pub fn new(chat: bool, model: &str, script: Script, sched: Schedule) -> NativeStream {
        NativeStream { chat, model: model.to_owned(), script, sched, k: 0 }
    }
}

impl Iterator for NativeStream {
    type Item = Unit;

    fn next(&mut self) -> Option<Unit> {
        let k = self.k;
        let step = self.script.step(k)?;
        self.k += 1;
        let created_at = self.sched.created_at(k);
        let mut obj = NativeObject {
            chat: self.chat,
            model: &self.model,
            created_at: &created_at,
            content: "",
            thinking: "",
            tool_call: None,
            done: false,
            done_reason: "",
            metrics: Metrics::default(),
            context: None,
        };
        match step {
            Step::Thinking(i) => obj.thinking = thinking_token(i),
            Step::Content(i) => obj.content = content_token(i),
            Step::ToolCall => obj.tool_call = self.script.tool_call.as_ref(),
            Step::Done => {
                obj.done = true;
                obj.done_reason = self.script.done_reason;
                obj.metrics = self.script.metrics(&self.sched, k);
                if !self.chat {
                    obj.context = Some(context_ids(&self.script));
                }
            }
        }
        let mut bytes = obj.to_json();
        bytes.push(b'\n');
        Some(Unit { bytes, content: WriteContent::NdjsonLine(k), pace: Pace::Step, output: step != Step::Done })
    }
}

/// The aggregated non-streamed answer (`c.JSON`, no trailing newline).
pub fn whole(chat: bool, model: &str, script: &Script, sched: &Schedule) -> Vec<u8> {
    let done = script.steps();
    let created_at = sched.created_at(done);
    let content = script.content_text();
    let thinking = script.thinking_text();
    NativeObject {
        chat,
        model,
        created_at: &created_at,
        content: &content,
        thinking: &thinking,
        tool_call: script.tool_call.as_ref(),
        done: true,
        done_reason: script.done_reason,
        metrics: script.metrics(sched, done),
        context: (!chat).then(|| context_ids(script)),
    }
    .to_json()
}

/// Load / unload answer (§2.6): one `c.JSON` object even when streaming was asked for.
pub fn load_answer(chat: bool, model: &str, created_at: &str, reason: &str) -> Vec<u8> {
    NativeObject {
        chat,
        model,
        created_at,
        content: "",
        thinking: "",
        tool_call: None,
        done: true,
        done_reason: reason,
        metrics: Metrics::default(),
        context: None,
    }
    .to_json()
}

/// `{"error":"..."}` (no newline: `c.JSON`).
pub fn error_body(message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct E<'a> {
        error: &'a str,
    }
    gojson::to_vec(&E { error: message })
}

/// The mid-stream error line (json.Encoder: with `\n`).
pub fn error_line(message: &str) -> Vec<u8> {
    let mut b = error_body(message);
    b.push(b'\n');
    b
}

/// Deterministic unit vector `i` of `dim` floats, all with |x| in [0.01, 1) so serde's float
/// text equals Go's (no exponent form).
pub fn embedding(i: usize, dim: usize) -> Vec<f32> {
    let raw: Vec<f32> = (0..dim)
        .map(|j| {
            let x = ((i * 31 + j * 17) % 97) as f32 / 97.0 + 0.05;
            if (i + j).is_multiple_of(3) { -x } else { x }
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    raw.iter()
        .map(|x| {
            let v = x / norm;
            if v.abs() < 0.01 { 0.01f32.copysign(v) } else { v }
        })
        .collect()
}

/// Dimensions of synthetic embeddings.
pub const EMBED_DIM: usize = 16;

/// `/api/embed` answer for `inputs` vectors.
pub fn embed_body(model: &str, inputs: usize, prompt_tokens: u64, total_ns: u64) -> Vec<u8> {
    #[derive(Serialize)]
    struct Embed<'a> {
        model: &'a str,
        embeddings: Vec<Vec<f32>>,
        #[serde(skip_serializing_if = "super::reply::is_zero")]
        total_duration: u64,
        #[serde(skip_serializing_if = "super::reply::is_zero")]
        load_duration: u64,
        #[serde(skip_serializing_if = "super::reply::is_zero")]
        prompt_eval_count: u64,
    }
    let embeddings = (0..inputs).map(|i| embedding(i, EMBED_DIM)).collect();
    gojson::to_vec(&Embed {
        model,
        embeddings,
        total_duration: if inputs == 0 { 0 } else { total_ns },
        load_duration: if inputs == 0 { 0 } else { total_ns / 10 },
        prompt_eval_count: if inputs == 0 { 0 } else { prompt_tokens },
    })
}

/// Legacy `/api/embeddings` answer: `{"embedding":[...]}`, no model, no metrics.
pub fn embeddings_legacy_body(empty: bool) -> Vec<u8> {
    #[derive(Serialize)]
    struct Legacy {
        embedding: Vec<f64>,
    }
    let embedding = if empty { Vec::new() } else { embedding(0, EMBED_DIM).into_iter().map(f64::from).collect() };
    gojson::to_vec(&Legacy { embedding })
}

/// `/api/version`.
pub fn version_body(version: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct V<'a> {
        version: &'a str,
    }
    gojson::to_vec(&V { version })
}

/// `/api/ps`: the loaded models (an empty list when none is: Go encodes the empty slice as
/// `[]`, the server makes it non-nil).
pub fn ps_body(loaded: &[super::residency::Loaded], expires_at: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Details<'a> {
        parent_model: &'a str,
        format: &'a str,
        family: &'a str,
        families: [&'a str; 1],
        parameter_size: &'a str,
        quantization_level: &'a str,
    }
    #[derive(Serialize)]
    struct Running<'a> {
        name: &'a str,
        model: &'a str,
        size: u64,
        digest: &'a str,
        details: Details<'a>,
        expires_at: &'a str,
        size_vram: u64,
        context_length: u64,
    }
    #[derive(Serialize)]
    struct Ps<'a> {
        models: Vec<Running<'a>>,
    }
    let models = loaded
        .iter()
        .map(|m| Running {
            name: &m.name,
            model: &m.name,
            size: m.size,
            digest: "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            details: Details {
                parent_model: "",
                format: "gguf",
                family: "llama",
                families: ["llama"],
                parameter_size: "3.2B",
                quantization_level: "Q4_K_M",
            },
            expires_at,
            size_vram: m.size_vram,
            context_length: 4096,
        })
        .collect();
    gojson::to_vec(&Ps { models })
}

/// Progress lines of `/api/pull` / `/api/push` / `/api/create`, ending with `success`.
pub fn progress_lines(op: &str) -> Vec<Vec<u8>> {
    #[derive(Serialize)]
    struct P<'a> {
        status: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        digest: &'a str,
        #[serde(skip_serializing_if = "super::reply::is_zero")]
        total: u64,
        #[serde(skip_serializing_if = "super::reply::is_zero")]
        completed: u64,
    }
    let digest = "sha256:dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff";
    let first = match op {
        "push" => "retrieving manifest",
        "create" => "gathering model components",
        _ => "pulling manifest",
    };
    let mut lines = vec![P { status: first, digest: "", total: 0, completed: 0 }];
    let status = format!("pulling {}", &digest[7..19]);
    for completed in [0, 1_015_000_000, 2_019_377_376] {
        lines.push(P { status: &status, digest, total: 2_019_377_376, completed });
    }
    for s in ["verifying sha256 digest", "writing manifest", "success"] {
        lines.push(P { status: s, digest: "", total: 0, completed: 0 });
    }
    lines
        .iter()
        .map(|p| {
            let mut b = gojson::to_vec(p);
            b.push(b'\n');
            b
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn script() -> Script {
        Script {
            thinking_tokens: 2,
            content_tokens: 3,
            tool_call: None,
            prompt_tokens: 11,
            cached_tokens: None,
            cold_load: std::time::Duration::ZERO,
            done_reason: "stop",
        }
    }

    fn sched() -> Schedule {
        Schedule { t0_ns: 1_767_225_600_000_000_000, ttft: Duration::from_millis(50), gap: Duration::from_millis(10) }
    }

    #[test]
    fn stream_is_consistent() {
        let units: Vec<Unit> = NativeStream::new(true, "m<1>", script(), sched()).collect();
        assert_eq!(units.len(), 6);
        assert_eq!(
            String::from_utf8(units[0].bytes.clone()).unwrap(),
            "{\"model\":\"m\\u003c1\\u003e\",\"created_at\":\"2026-01-01T00:00:00.05Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"thinking\":\"Okay\"},\"done\":false}\n"
        );
        let last: serde_json::Value = serde_json::from_slice(&units[5].bytes).unwrap();
        assert_eq!(last["eval_count"], 5);
        assert_eq!(last["prompt_eval_count"], 11);
        assert_eq!(last["total_duration"], 100_000_000u64);
        assert_eq!(last["done_reason"], "stop");
        assert_eq!(units.iter().filter(|u| u.output).count(), 5);
        let keys: Vec<String> = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&units[5].bytes)
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert!(keys.contains(&"eval_duration".to_string()));
        let line = String::from_utf8(units[5].bytes.clone()).unwrap();
        assert!(line.find("\"done\":true").unwrap() < line.find("\"done_reason\"").unwrap());
        assert!(line.find("\"done_reason\"").unwrap() < line.find("\"total_duration\"").unwrap());
    }

    #[test]
    fn embeddings_use_go_float_text() {
        for v in embedding(3, EMBED_DIM) {
            assert_eq!(String::from_utf8(gojson::to_vec(&v)).unwrap(), gojson::float32(v));
        }
    }
}
