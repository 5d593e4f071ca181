//! What the stand-in sends for one call: status, handler headers and a body that is either one
//! write or a paced sequence of flushes ([`Unit`]s), plus the generation script and schedule
//! that synthetic bodies are built from.
//!
//! Framing is not decided here: the connection renders every unit with [`crate::wire`].

use std::time::Duration;

use crate::wire::{BodyKind, WriteContent};

/// When a unit leaves relative to the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// A new generation step: one inter-token gap after the previous step.
    Step,
    /// Produced by the same step as the previous unit: written right after it.
    Same,
}

/// One flush: exactly the bytes of one NDJSON line, or one or more SSE events.
#[derive(Clone, Debug)]
pub struct Unit {
    pub bytes: Vec<u8>,
    pub content: WriteContent,
    pub pace: Pace,
    /// Carries generated output (text, thinking, a tool call), not only metadata.
    pub output: bool,
}

/// A lazily produced stream: units are built just before they are written, so a thousand
/// concurrent synthetic streams cost a line each, not a body each.
pub type UnitStream = Box<dyn Iterator<Item = Unit> + Send>;

pub enum Body {
    /// One write once the reply is ready. `flushed_early`: written from inside a stream step
    /// (Go then chunks even a small body).
    Whole {
        bytes: Vec<u8>,
        kind: BodyKind,
        flushed_early: bool,
    },
    Stream {
        kind: BodyKind,
        units: UnitStream,
    },
}

/// How a cut stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cut {
    /// The server resets the connection (RST).
    Reset,
    /// The server closes (FIN) without the chunked terminator.
    Close,
}

/// Where the body came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Fixture(String),
    Synthetic,
    /// Fixed answers: `/`, `/api/version`, gin's 404/405, errors.
    Builtin,
}

pub struct Reply {
    pub status: u16,
    /// Handler headers, `Content-Type` included (empty for bodiless replies such as 403).
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// Before the first write: TTFT for streams, the whole generation for single writes.
    pub delay: Duration,
    /// Between [`Pace::Step`] units.
    pub gap: Duration,
    /// Stop after this many output units and end the connection.
    pub cut: Option<(usize, Cut)>,
    pub source: Source,
}

impl Reply {
    /// A single-write reply.
    pub fn whole(status: u16, content_type: &str, bytes: Vec<u8>, source: Source) -> Reply {
        let kind = crate::wire::detect_body_kind(Some(content_type), &bytes);
        Reply {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: Body::Whole { bytes, kind, flushed_early: false },
            delay: Duration::ZERO,
            gap: Duration::ZERO,
            cut: None,
            source,
        }
    }

    pub fn with_delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn content_type(&self) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.as_str())
    }
}

/// Planned wall-clock times of a paced reply, so synthetic `created_at` and durations match what
/// the connection actually does (it sleeps until exactly these instants).
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Request fully read, ns since the epoch.
    pub t0_ns: u64,
    pub ttft: Duration,
    pub gap: Duration,
}

impl Schedule {
    /// Wall clock of generation step `k` (step 0 is the first write).
    pub fn step_ns(&self, k: usize) -> u64 {
        self.t0_ns + self.ttft.as_nanos() as u64 + self.gap.as_nanos() as u64 * k as u64
    }

    /// Go-style `created_at` of step `k`.
    pub fn created_at(&self, k: usize) -> String {
        super::gojson::rfc3339_nano(self.step_ns(k))
    }
}

/// A synthetic generation: what the "model" says, as tokens.
#[derive(Clone, Debug)]
pub struct Script {
    pub thinking_tokens: usize,
    pub content_tokens: usize,
    pub tool_call: Option<ToolCallSpec>,
    pub prompt_tokens: u64,
    /// Prompt tokens the (emulated) prompt cache served, as an Ollama ≥ 0.33 reports them;
    /// `None`: a server that does not report them.
    pub cached_tokens: Option<u64>,
    /// Loading the model before the prompt (a cold start), part of the time to first token.
    pub cold_load: std::time::Duration,
    /// Native done_reason (`stop`, `length`).
    pub done_reason: &'static str,
}

#[derive(Clone, Debug)]
pub struct ToolCallSpec {
    pub name: String,
    /// Arguments as a JSON object (Go-encoded when written).
    pub arguments: serde_json::Value,
    /// `call_` + 8 chars, as Ollama's parsers make them.
    pub id: String,
}

impl Script {
    /// Generation steps before the done step: one per token, one for the tool call.
    pub fn steps(&self) -> usize {
        self.thinking_tokens + self.content_tokens + usize::from(self.tool_call.is_some())
    }

    /// What eval_count reports: every generated chunk (thinking, content, tool call).
    pub fn eval_count(&self) -> u64 {
        self.steps() as u64
    }

    pub fn content_text(&self) -> String {
        (0..self.content_tokens).map(content_token).collect()
    }

    pub fn thinking_text(&self) -> String {
        (0..self.thinking_tokens).map(thinking_token).collect()
    }

    /// Native metrics at the done step `k` of `sched`: durations follow the schedule.
    pub fn metrics(&self, sched: &Schedule, done_step: usize) -> Metrics {
        let ttft = sched.ttft.as_nanos() as u64;
        let cold = self.cold_load.as_nanos() as u64;
        let load = cold + (ttft - cold) / 10;
        let done = sched.step_ns(done_step);
        Metrics {
            total_duration: done.saturating_sub(sched.t0_ns).max(1),
            load_duration: load.max(1),
            prompt_eval_count: self.prompt_tokens,
            prompt_eval_cached_count: self.cached_tokens.unwrap_or(0),
            prompt_eval_duration: (ttft - load).max(1),
            eval_count: self.eval_count(),
            eval_duration: done.saturating_sub(sched.step_ns(0)).max(1),
        }
    }
}

/// Ollama's `Metrics` block (every field omitempty; zero is left out).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Metrics {
    #[serde(skip_serializing_if = "is_zero")]
    pub total_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub load_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub prompt_eval_count: u64,
    /// Ollama ≥ 0.33: the prompt tokens read from the cache (omitted when 0, as Go's
    /// `omitempty` does).
    #[serde(skip_serializing_if = "is_zero")]
    pub prompt_eval_cached_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub prompt_eval_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub eval_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub eval_duration: u64,
}

pub fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The default answer, one token per entry; `<3` and `&` exercise Go's HTML escaping.
const CONTENT: &[&str] = &[
    "Hello", "!", " I", " am", " a", " stand", "-in", " for", " Ollama", " <", "3", " &", " I", " stream", " one",
    " token", " per", " chunk", ".", "\n",
];
const THINKING: &[&str] = &[
    "Okay", ",", " the", " user", " wants", " a", " short", " answer", ".", " Let", " me", " think", " about", " it",
    ".",
];

/// Content token `i` (the canned answer, repeated).
pub fn content_token(i: usize) -> &'static str {
    CONTENT[i % CONTENT.len()]
}

/// Thinking token `i`.
pub fn thinking_token(i: usize) -> &'static str {
    THINKING[i % THINKING.len()]
}

/// Tokens in the canned answer (the default synthetic length).
pub const DEFAULT_CONTENT_TOKENS: usize = 12;
/// Thinking tokens of the `thinking` scenario.
pub const DEFAULT_THINKING_TOKENS: usize = 8;

/// What a step of a [`Script`] produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Thinking(usize),
    Content(usize),
    ToolCall,
    Done,
}

impl Script {
    /// Step `k` (thinking first, then content, then the tool call, then done).
    pub fn step(&self, k: usize) -> Option<Step> {
        let t = self.thinking_tokens;
        let c = self.content_tokens;
        let tc = usize::from(self.tool_call.is_some());
        Some(if k < t {
            Step::Thinking(k)
        } else if k < t + c {
            Step::Content(k - t)
        } else if k < t + c + tc {
            Step::ToolCall
        } else if k == t + c + tc {
            Step::Done
        } else {
            return None;
        })
    }
}
