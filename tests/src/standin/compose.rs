//! From a parsed request to a [`Reply`]: routing, scenario, fixture pick or synthesis, timing.

use std::time::Duration;

use super::anthropic;
use super::api::ApiRequest;
use super::catalog::{Catalog, Entry, Want};
use super::gojson;
use super::native::{self, JSON_CT, NDJSON_CT};
use super::openai;
use super::prompt_cache::PromptCache;
use super::reply::{
    Body, Cut, DEFAULT_CONTENT_TOKENS, DEFAULT_THINKING_TOKENS, Pace, Reply, Schedule, Script, Source, ToolCallSpec,
    Unit, UnitStream,
};
use super::residency::Residency;
use super::responses;
use super::route::{Family, Route, Routed, route};
use super::scenario::{SCENARIO_HEADER, Scenario};
use super::truth::unit_has_output;
use crate::wire::{BodyKind, WriteContent, flush_plan};

/// Version `/api/version` reports by default: a release that reports cached prompt tokens
/// (ollama-wire.md was written from the 0.33.0-rc2 snapshot; 0.33.0 added the cache counts).
pub const DEFAULT_VERSION: &str = "0.34.2";

/// Message of a runner crash, mid-stream or as a 500.
pub const RUNNER_CRASH: &str = "model runner has unexpectedly stopped, this may be due to resource limitations or an internal error, check ollama server logs for details";

/// Timing knobs.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Request read → first chunk (headers go out with it, as in Ollama).
    pub ttft: Duration,
    /// Between generation steps.
    pub gap: Duration,
    /// TTFT of the `slow` scenario.
    pub slow_ttft: Duration,
    /// Cap on the wait before a replayed non-streamed fixture (its recorded durations stay).
    pub max_whole_delay: Duration,
    /// Before answering model-management and metadata routes.
    pub meta_delay: Duration,
    /// Loading a model that is not loaded yet (the cold start of its first call); zero: no
    /// loading time, as before.
    pub cold_load: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            ttft: Duration::from_millis(50),
            gap: Duration::from_millis(15),
            slow_ttft: Duration::from_millis(3000),
            max_whole_delay: Duration::from_millis(1000),
            meta_delay: Duration::from_millis(1),
            cold_load: Duration::ZERO,
        }
    }
}

/// Everything composing needs that is fixed for the server's life.
pub struct App {
    pub catalog: Catalog,
    pub timing: Timing,
    pub version: String,
    /// Whether synthesised answers report cached prompt tokens (Ollama 0.33.0 and later).
    pub reports_cache: bool,
    pub prompt_cache: PromptCache,
    pub residency: Residency,
}

impl App {
    pub fn new(catalog: Catalog, timing: Timing, version: String) -> App {
        App {
            catalog,
            timing,
            reports_cache: reports_cache(&version),
            version,
            prompt_cache: PromptCache::default(),
            residency: Residency::default(),
        }
    }
}

/// Ollama reports prompt-cache hits since 0.33.0 (PR #17943); its release candidates did not.
fn reports_cache(version: &str) -> bool {
    let (release, pre) = version.split_once('-').unwrap_or((version, ""));
    let nums: Vec<u64> = release.split('.').map_while(|n| n.parse().ok()).collect();
    let at_least = nums.as_slice() >= [0, 33, 0].as_slice();
    at_least && (pre.is_empty() || nums.as_slice() > [0, 33, 0].as_slice())
}

/// One request as the HTTP layer hands it over.
pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// Request fully read, ns since the epoch (the schedule's origin).
    pub t0_ns: u64,
}

impl Call<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The reply and what the truth log should say about the request.
pub struct Planned {
    pub reply: Reply,
    pub model: Option<String>,
    pub stream: bool,
    pub stream_requested: Option<bool>,
    pub scenario: String,
}

impl App {
    /// Whether `method path` is a route whose handler reads the body (for `100 Continue`).
    pub fn reads_body(method: &str, path: &str) -> bool {
        matches!(route(method, path), Routed::Found(r) if r.reads_body())
    }

    pub fn plan(&self, call: &Call<'_>) -> Planned {
        let method = if call.method == "HEAD" { "GET" } else { call.method };
        let r = match route(call.method, call.path) {
            Routed::Found(r) => r,
            Routed::NotFound => return planned(gin_text(404, "404 page not found")),
            Routed::MethodNotAllowed => return planned(gin_text(405, "405 method not allowed")),
            Routed::Redirect(to) => return planned(redirect(method, &to)),
        };
        let req = ApiRequest::parse(&r, call.body);
        let scenario = match call
            .header(SCENARIO_HEADER)
            .map(Scenario::parse)
            .or_else(|| req.model.as_deref().and_then(Scenario::from_model))
        {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                let mut p = planned(error_reply(r.family(), 400, &format!("ollama-standin: {e}")));
                p.model = req.model.clone();
                return p;
            }
            None => Scenario::Default,
        };
        let ctx = Ctx {
            app: self,
            route: &r,
            req: &req,
            scenario: &scenario,
            model: req.model.clone().unwrap_or_default(),
            t0_ns: call.t0_ns,
        };
        let mut reply = ctx.answer();
        if let Scenario::Slow { ttft } = &scenario {
            reply.delay += ttft.unwrap_or(self.timing.slow_ttft);
        }
        let stream = matches!(reply.body, Body::Stream { .. });
        Planned {
            reply,
            model: req.model.clone(),
            stream,
            stream_requested: req.stream,
            scenario: scenario.to_string(),
        }
    }
}

fn planned(reply: Reply) -> Planned {
    Planned { reply, model: None, stream: false, stream_requested: None, scenario: Scenario::Default.to_string() }
}

/// gin's plain-text fallbacks.
fn gin_text(status: u16, text: &str) -> Reply {
    Reply::whole(status, "text/plain", text.as_bytes().to_vec(), Source::Builtin)
}

/// gin `RedirectTrailingSlash` via `http.Redirect`: an HTML body for GET only.
fn redirect(method: &str, to: &str) -> Reply {
    if method == "GET" {
        let body = format!("<a href=\"{to}\">Moved Permanently</a>.\n\n");
        Reply::whole(301, "text/html; charset=utf-8", body.into_bytes(), Source::Builtin).with_header("Location", to)
    } else {
        let mut r = Reply::whole(307, "", Vec::new(), Source::Builtin).with_header("Location", to);
        r.headers.retain(|(n, _)| n != "Content-Type");
        r
    }
}

/// An error reply in the family's shape, before any output.
pub fn error_reply(family: Family, status: u16, message: &str) -> Reply {
    match family {
        Family::Native => Reply::whole(status, JSON_CT, native::error_body(message), Source::Builtin),
        Family::OpenAi => Reply::whole(status, openai::JSON_CT, openai::error_body(status, message), Source::Builtin),
        Family::Anthropic => {
            Reply::whole(status, anthropic::JSON_CT, anthropic::error_body(status, message), Source::Builtin)
        }
    }
}

struct Ctx<'a> {
    app: &'a App,
    route: &'a Route,
    req: &'a ApiRequest,
    scenario: &'a Scenario,
    model: String,
    t0_ns: u64,
}

impl Ctx<'_> {
    fn timing(&self) -> &Timing {
        &self.app.timing
    }

    fn now_created_at(&self) -> String {
        gojson::rfc3339_nano(self.t0_ns)
    }

    fn meta(&self, reply: Reply) -> Reply {
        reply.with_delay(self.timing().meta_delay)
    }

    fn json(&self, bytes: Vec<u8>) -> Reply {
        self.meta(Reply::whole(200, JSON_CT, bytes, Source::Synthetic))
    }

    fn answer(&self) -> Reply {
        let family = self.route.family();
        if let Scenario::HttpError { status, message } = self.scenario {
            let msg = message.clone().unwrap_or_else(|| self.error_message(*status));
            let delay = if *status == 404 { self.timing().meta_delay } else { self.timing().ttft };
            return error_reply(family, *status, &msg).with_delay(delay);
        }
        if self.route.reads_body() && !matches!(self.route, Route::Delete | Route::Copy | Route::Blob(_)) {
            if let Some(e) = &self.req.decode_error {
                return error_reply(family, 400, e);
            }
            if self.req.body_empty && family == Family::Native {
                return error_reply(family, 400, "missing request body");
            }
        }
        match self.route {
            Route::Root => self.fixture_reply(&Want { path: "/".into(), ..Default::default() }).unwrap_or_else(|| {
                Reply::whole(200, "text/plain; charset=utf-8", b"Ollama is running".to_vec(), Source::Builtin)
            }),
            Route::Version => self.json(native::version_body(&self.app.version)),
            Route::Status => self.json(br#"{"cloud":{"disabled":false,"source":"default"}}"#.to_vec()),
            Route::Ps => {
                let expires = gojson::rfc3339_nano(self.t0_ns + 300_000_000_000);
                self.json(native::ps_body(&self.app.residency.list(), &expires))
            }
            Route::Tags => self
                .fixture_reply(&Want { path: "/api/tags".into(), ..Default::default() })
                .map(|r| self.meta(r))
                .unwrap_or_else(|| self.json(br#"{"models":[]}"#.to_vec())),
            Route::Show => {
                if self.model.is_empty() {
                    return error_reply(family, 400, "model is required");
                }
                self.fixture_reply(&Want { path: "/api/show".into(), ..Default::default() })
                    .map(|r| self.meta(r))
                    .unwrap_or_else(|| self.json(br#"{"details":{},"model_info":{}}"#.to_vec()))
            }
            Route::Pull | Route::Push | Route::Create => self.progress(),
            Route::Delete | Route::Copy => {
                self.meta(Reply::whole(200, "", Vec::new(), Source::Builtin).no_content_type())
            }
            Route::Blob(_) => {
                let status = if self.req.body_empty { 404 } else { 201 };
                self.meta(Reply::whole(status, "", Vec::new(), Source::Builtin).no_content_type())
            }
            Route::Me | Route::Signout | Route::WebSearch | Route::WebFetch => error_reply(family, 401, "unauthorized"),
            Route::ModelRecommendations => self.json(br#"{"recommendations":[]}"#.to_vec()),
            Route::V1Models => self
                .fixture_reply(&Want { path: "/v1/models".into(), ..Default::default() })
                .map(|r| self.meta(r))
                .unwrap_or_else(|| {
                    self.meta(Reply::whole(
                        200,
                        openai::JSON_CT,
                        br#"{"object":"list","data":null}"#.to_vec(),
                        Source::Synthetic,
                    ))
                }),
            Route::V1Model(id) => self.meta(Reply::whole(
                200,
                openai::JSON_CT,
                openai::model_body(id, self.t0_ns / 1_000_000_000 - 86_400),
                Source::Synthetic,
            )),
            Route::V1Audio => error_reply(family, 400, "ollama-standin does not transcribe audio"),
            Route::Embed | Route::Embeddings | Route::V1Embeddings => self.embeddings(),
            Route::Generate
            | Route::Chat
            | Route::V1Chat
            | Route::V1Completions
            | Route::V1Messages
            | Route::V1Responses => self.inference(),
        }
    }

    fn error_message(&self, status: u16) -> String {
        let m = &self.model;
        match (status, self.route) {
            (404, Route::Embed | Route::Embeddings | Route::V1Embeddings) => {
                format!("model \"{m}\" not found, try pulling it first")
            }
            (404, Route::Show) if !m.contains(':') => format!("model '{m}:latest' not found"),
            (404, _) => format!("model '{m}' not found"),
            (429, _) => "rate limit exceeded".into(),
            (503, _) => "server busy, please try again.  maximum pending requests exceeded".into(),
            (500, _) => RUNNER_CRASH.into(),
            (400, _) => "invalid request".into(),
            (401, _) => "unauthorized".into(),
            _ => format!("error {status}"),
        }
    }

    /// A fixture for `want`, or the one the scenario names (whatever its route).
    fn fixture_entry(&self, want: &Want) -> Option<&Entry> {
        match self.scenario {
            Scenario::Fixture(name) => self.app.catalog.get(name),
            Scenario::Synth(_) => None,
            _ => self.app.catalog.pick(want),
        }
    }

    fn fixture_reply(&self, want: &Want) -> Option<Reply> {
        let entry = self.fixture_entry(want)?;
        Some(self.replay(entry, want.stream))
    }

    /// Replay a fixture: its status, Content-Type and bytes, `model` echoing the request, one
    /// unit per NDJSON line / SSE event (OpenAI tail together) for streams.
    fn replay(&self, entry: &Entry, stream: bool) -> Reply {
        let f = &entry.fixture;
        let body = f.response.body.as_bytes();
        let content_type =
            f.response.headers.get("content-type").or(entry.kind.default_content_type()).unwrap_or("").to_owned();
        let source = Source::Fixture(entry.name().to_owned());
        let model = self.req.model.as_deref();
        let timing = self.timing();
        let mut reply = if entry.kind.is_streamed() && (stream || matches!(self.scenario, Scenario::Fixture(_))) {
            let kind = entry.kind;
            let units: Vec<Unit> = flush_plan(kind, body, true, true)
                .into_iter()
                .map(|(range, content)| {
                    let raw = &body[range];
                    let bytes = match model {
                        Some(m) => gojson::rewrite_model_in_unit(raw, m),
                        None => raw.to_vec(),
                    };
                    Unit { output: unit_has_output(kind, &bytes), bytes, content, pace: Pace::Step }
                })
                .collect();
            Reply {
                status: f.response.status,
                headers: vec![("Content-Type".into(), content_type)],
                body: Body::Stream { kind, units: Box::new(units.into_iter()) },
                delay: timing.ttft,
                gap: timing.gap,
                cut: None,
                source,
            }
        } else {
            let bytes = match (model, entry.kind) {
                (Some(m), BodyKind::Json) => gojson::rewrite_model(body, m).unwrap_or_else(|| body.to_vec()),
                _ => body.to_vec(),
            };
            let recorded_chunked = f
                .response
                .headers
                .get("transfer-encoding")
                .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
            let steps = whole_steps(&bytes);
            let delay = (timing.ttft + timing.gap * steps).min(timing.max_whole_delay);
            Reply {
                status: f.response.status,
                headers: vec![("Content-Type".into(), content_type)],
                body: Body::Whole {
                    bytes,
                    kind: entry.kind,
                    // Only an error written from inside a stream step is flushed early; a
                    // recorder's chunked header on a 200 is Go's re-encoding, not the server.
                    flushed_early: recorded_chunked && f.response.status != 200,
                },
                delay,
                gap: timing.gap,
                cut: None,
                source,
            }
        };
        if reply.headers[0].1.is_empty() {
            reply.headers.clear();
        }
        self.apply_cut(reply)
    }

    fn progress(&self) -> Reply {
        let stream = self.req.effective_stream(self.route);
        let lines = native::progress_lines(match self.route {
            Route::Push => "push",
            Route::Create => "create",
            _ => "pull",
        });
        if !stream {
            let last = lines.last().cloned().unwrap_or_default();
            let body = last.strip_suffix(b"\n").unwrap_or(&last).to_vec();
            return self.json(body);
        }
        if *self.route == Route::Pull
            && let Some(r) = self.fixture_reply(&Want { path: "/api/pull".into(), stream: true, ..Default::default() })
        {
            return r;
        }
        let units: Vec<Unit> = lines
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| Unit { bytes, content: WriteContent::NdjsonLine(i), pace: Pace::Step, output: false })
            .collect();
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), NDJSON_CT.into())],
            body: Body::Stream { kind: BodyKind::Ndjson, units: Box::new(units.into_iter()) },
            delay: self.timing().meta_delay,
            gap: self.timing().gap,
            cut: None,
            source: Source::Synthetic,
        }
    }

    fn embeddings(&self) -> Reply {
        let family = self.route.family();
        let inputs = self.req.inputs.unwrap_or(0);
        if self.model.is_empty() && *self.route != Route::Embeddings {
            return match family {
                Family::Native => error_reply(family, 404, "model '' not found"),
                _ => error_reply(family, 400, "model is required"),
            };
        }
        if *self.route == Route::V1Embeddings && inputs == 0 {
            return error_reply(family, 400, "invalid input");
        }
        let timing = self.timing();
        let delay = timing.ttft;
        if matches!(self.scenario, Scenario::ErrorMidstream { .. }) {
            return error_reply(family, 500, RUNNER_CRASH).with_delay(delay);
        }
        if inputs == 0 || matches!(self.scenario, Scenario::Load) {
            // Load only: `{"model":"x","embeddings":[]}` / legacy `{"embedding":[]}`.
            let body = match self.route {
                Route::Embeddings => native::embeddings_legacy_body(true),
                _ => native::embed_body(&self.model, 0, 0, 0),
            };
            return self.json(body).with_delay(delay);
        }
        let want = Want {
            path: match self.route {
                Route::Embed => "/api/embed",
                Route::Embeddings => "/api/embeddings",
                _ => "/v1/embeddings",
            }
            .into(),
            embeddings: (*self.route != Route::Embeddings).then_some(inputs),
            ..Default::default()
        };
        if let Some(r) = self.fixture_reply(&want) {
            return r.with_delay(delay);
        }
        let prompt = self.req.prompt_tokens_estimate().saturating_sub(10).max(inputs as u64);
        let (ct, body) = match self.route {
            Route::Embed => (JSON_CT, native::embed_body(&self.model, inputs, prompt, delay.as_nanos() as u64)),
            Route::Embeddings => (JSON_CT, native::embeddings_legacy_body(false)),
            _ => (openai::JSON_CT, openai::embeddings_body(&self.model, inputs, prompt)),
        };
        self.apply_cut(Reply::whole(200, ct, body, Source::Synthetic).with_delay(delay))
    }

    fn inference(&self) -> Reply {
        let family = self.route.family();
        let req = self.req;
        let r = self.route;
        if self.model.is_empty() {
            return match r {
                Route::Generate => error_reply(family, 404, "model '' not found"),
                Route::V1Messages => error_reply(family, 400, "model is required"),
                _ => error_reply(family, 400, "model is required"),
            };
        }
        if *r == Route::V1Chat && req.messages.unwrap_or(0) == 0 {
            return error_reply(family, 400, "[] is too short - 'messages'");
        }
        if *r == Route::V1Messages {
            if req.max_tokens.unwrap_or(0) == 0 {
                return error_reply(family, 400, "max_tokens is required and must be greater than 0");
            }
            if req.messages.unwrap_or(0) == 0 {
                return error_reply(family, 400, "messages is required");
            }
        }
        let stream = req.effective_stream(r);
        let timing = self.timing();
        // Load / unload (§2.6): empty prompt or messages; one c.JSON even when streaming.
        let load = match r {
            Route::Generate => req.prompt.as_deref().unwrap_or("").is_empty(),
            Route::Chat => req.messages.unwrap_or(0) == 0,
            Route::V1Completions => req.prompt.as_deref().unwrap_or("").is_empty(),
            _ => false,
        } || matches!(self.scenario, Scenario::Load);
        if load && matches!(r, Route::Generate | Route::Chat) {
            let reason = if req.keep_alive_zero { "unload" } else { "load" };
            // A load request waits for the load; an unload answers at once.
            let loading = match reason {
                "load" if self.app.residency.touch(&self.model) => timing.cold_load,
                "load" => Duration::ZERO,
                _ => {
                    self.app.residency.unload(&self.model);
                    Duration::ZERO
                }
            };
            let body = native::load_answer(*r == Route::Chat, &self.model, &self.now_created_at(), reason);
            return self.json(body).with_delay(timing.ttft + loading);
        }
        if load && *r == Route::V1Completions {
            let body = openai::completion_load(&self.model, self.t0_ns / 1_000_000_000);
            return Reply::whole(200, openai::JSON_CT, body, Source::Synthetic).with_delay(timing.ttft);
        }
        if !stream && matches!(self.scenario, Scenario::ErrorMidstream { .. }) {
            // Non-streamed: the error, even after tokens, becomes the whole reply (§3.7).
            let delay = timing.ttft + timing.gap * 3;
            return error_reply(family, 500, RUNNER_CRASH).with_delay(delay);
        }

        let want_tools = match self.scenario {
            Scenario::Tools => true,
            Scenario::Text => false,
            _ => !req.tools.is_empty() && !req.ends_with_tool_result(),
        };
        let want_thinking = match self.scenario {
            Scenario::Thinking => Some(true),
            Scenario::Text => Some(false),
            _ if req.think => Some(true),
            _ => None,
        };
        let path = match r {
            Route::Generate => "/api/generate",
            Route::Chat => "/api/chat",
            Route::V1Chat => "/v1/chat/completions",
            Route::V1Completions => "/v1/completions",
            Route::V1Messages => "/v1/messages",
            _ => "/v1/responses",
        };
        let want = Want {
            path: path.into(),
            stream,
            usage_chunk: (stream && *r == Route::V1Chat).then_some(req.include_usage),
            tool_calls: Some(want_tools),
            thinking: want_thinking,
            prefer_tool_result: req.ends_with_tool_result(),
            prefer_tools_offered: !req.tools.is_empty(),
            prefer_no_thinking: want_thinking.is_none(),
            offered_tools: req.tools.clone(),
            embeddings: None,
        };
        // The model is loaded for this call if it was not (a cold start).
        let cold = self.app.residency.touch(&self.model);
        if let Some(reply) = self.fixture_reply(&want) {
            return reply;
        }
        self.synthesize(stream, want_tools, want_thinking == Some(true), cold)
    }

    fn synthesize(&self, stream: bool, tools: bool, thinking: bool, cold: bool) -> Reply {
        let req = self.req;
        let timing = self.timing();
        let (mut script, ttft, gap) = match self.scenario {
            Scenario::Synth(spec) => {
                let gap = spec.rate.map_or(timing.gap, |r| Duration::from_secs_f64(1.0 / r));
                (
                    Script {
                        thinking_tokens: spec.think,
                        content_tokens: spec.tokens,
                        tool_call: None,
                        prompt_tokens: spec.prompt.unwrap_or_else(|| req.prompt_tokens_estimate()),
                        cached_tokens: None,
                        cold_load: Duration::ZERO,
                        done_reason: "stop",
                    },
                    spec.ttft.unwrap_or(timing.ttft),
                    gap,
                )
            }
            _ => (
                Script {
                    thinking_tokens: if thinking { DEFAULT_THINKING_TOKENS } else { 0 },
                    content_tokens: if tools { 0 } else { DEFAULT_CONTENT_TOKENS },
                    tool_call: tools.then(|| tool_call_for(req)),
                    prompt_tokens: req.prompt_tokens_estimate(),
                    cached_tokens: None,
                    cold_load: Duration::ZERO,
                    done_reason: "stop",
                },
                timing.ttft,
                timing.gap,
            ),
        };
        if self.app.reports_cache {
            script.cached_tokens = Some(self.app.prompt_cache.serve(&self.model, req, script.prompt_tokens));
        }
        // A cold start loads the model before the prompt is evaluated: later first chunk, a
        // load_duration that says so.
        let ttft = if cold && !timing.cold_load.is_zero() {
            script.cold_load = timing.cold_load;
            ttft + timing.cold_load
        } else {
            ttft
        };
        if let Some(max) = req.max_tokens
            && (max as usize) < script.content_tokens
        {
            script.content_tokens = max as usize;
            script.done_reason = "length";
        }
        let sched = Schedule { t0_ns: self.t0_ns, ttft, gap };
        let model = self.model.as_str();
        let r = self.route;
        let reply = if stream {
            let input_estimate = (req.prompt_chars as u64) / 4;
            let (kind, ct, units): (BodyKind, &str, UnitStream) = match r {
                Route::Generate | Route::Chat => (
                    BodyKind::Ndjson,
                    NDJSON_CT,
                    Box::new(native::NativeStream::new(*r == Route::Chat, model, script, sched)),
                ),
                Route::V1Chat => (
                    BodyKind::Sse,
                    openai::SSE_CT,
                    Box::new(openai::ChatStream::new(model, script, sched, req.include_usage)),
                ),
                Route::V1Completions => (
                    BodyKind::Sse,
                    openai::SSE_CT,
                    Box::new(openai::CompletionStream::new(model, script, sched, req.include_usage)),
                ),
                Route::V1Messages => (
                    BodyKind::Sse,
                    anthropic::SSE_CT,
                    Box::new(anthropic::MessagesStream::new(model, script, input_estimate)),
                ),
                _ => {
                    (BodyKind::Sse, responses::SSE_CT, Box::new(responses::ResponsesStream::new(model, script, sched)))
                }
            };
            let mut headers = vec![("Content-Type".to_owned(), ct.to_owned())];
            if matches!(r, Route::V1Messages | Route::V1Responses) {
                headers.push(("Cache-Control".into(), "no-cache".into()));
                headers.push(("Connection".into(), "keep-alive".into()));
            }
            Reply {
                status: 200,
                headers,
                body: Body::Stream { kind, units },
                delay: ttft,
                gap,
                cut: None,
                source: Source::Synthetic,
            }
        } else {
            let (ct, body) = match r {
                Route::Generate | Route::Chat => (JSON_CT, native::whole(*r == Route::Chat, model, &script, &sched)),
                Route::V1Chat => (openai::JSON_CT, openai::chat_whole(model, &script, &sched)),
                Route::V1Completions => (openai::JSON_CT, openai::completion_whole(model, &script, &sched)),
                Route::V1Messages => (anthropic::JSON_CT, anthropic::whole(model, &script, &sched)),
                _ => (responses::JSON_CT, responses::whole(model, &script, &sched)),
            };
            // The aggregated answer leaves when generation would have finished.
            let delay = ttft + gap * script.steps() as u32;
            Reply::whole(200, ct, body, Source::Synthetic).with_delay(delay)
        };
        self.apply_cut(reply)
    }

    /// Apply a mid-stream scenario to a reply: keep `after` output units, then the route's
    /// error tail (error-midstream) or a connection cut (rst / close).
    fn apply_cut(&self, mut reply: Reply) -> Reply {
        let Some(after) = self.scenario.cut_after() else {
            return reply;
        };
        match self.scenario {
            Scenario::RstMidstream { .. } => reply.cut = Some((after, Cut::Reset)),
            Scenario::CloseMidstream { .. } => reply.cut = Some((after, Cut::Close)),
            _ => {}
        }
        let Body::Stream { kind, units } = reply.body else {
            return reply;
        };
        let route = self.route.clone();
        let error_midstream = matches!(self.scenario, Scenario::ErrorMidstream { .. });
        reply.body = Body::Stream {
            kind,
            units: Box::new(TakeOutput {
                inner: units,
                remaining: after,
                last: None,
                tail: error_midstream.then_some(route),
                finished: false,
            }),
        };
        reply
    }
}

/// The tool call a synthetic answer makes: the first offered tool, else `get_weather`.
fn tool_call_for(req: &ApiRequest) -> ToolCallSpec {
    let name = req.tools.first().cloned().unwrap_or_else(|| "get_weather".into());
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let id: String = (0..8).map(|_| ALNUM[rand::random_range(0..ALNUM.len())] as char).collect();
    ToolCallSpec { name, arguments: serde_json::json!({"city": "Tokyo"}), id: format!("call_{id}") }
}

/// Generation steps a non-streamed body represents (its eval_count / completion tokens).
fn whole_steps(body: &[u8]) -> u32 {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return 0;
    };
    let n = v
        .get("eval_count")
        .or_else(|| v.get("usage").and_then(|u| u.get("completion_tokens")))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    n.min(u64::from(u32::MAX)) as u32
}

/// Passes units through until `remaining` output units went by, then (error-midstream) adds
/// the route's mid-stream error tail (§3.5, §4.3) and stops.
struct TakeOutput {
    inner: UnitStream,
    remaining: usize,
    last: Option<Vec<u8>>,
    tail: Option<Route>,
    finished: bool,
}

impl Iterator for TakeOutput {
    type Item = Unit;

    fn next(&mut self) -> Option<Unit> {
        if self.finished {
            return None;
        }
        if self.remaining > 0
            && let Some(u) = self.inner.next()
        {
            if u.output {
                self.remaining -= 1;
            }
            self.last = Some(u.bytes.clone());
            return Some(u);
        }
        self.finished = true;
        let route = self.tail.take()?;
        let index = |u: &Option<Vec<u8>>| u.as_ref().map_or(0, |_| 1);
        let (id, created) = self
            .last
            .as_deref()
            .and_then(sse_json)
            .map(|v| {
                (
                    v.get("id").and_then(|i| i.as_str()).unwrap_or("chatcmpl-0").to_owned(),
                    v.get("created").and_then(serde_json::Value::as_u64).unwrap_or(0),
                )
            })
            .unwrap_or_else(|| ("chatcmpl-0".into(), 0));
        let (bytes, content) = match route {
            Route::Generate | Route::Chat => {
                (native::error_line(RUNNER_CRASH), WriteContent::NdjsonLine(index(&self.last)))
            }
            Route::V1Chat => (openai::chat_error_chunk(&id, created), WriteContent::SseEvents(0..1)),
            Route::V1Completions => (openai::completion_error_chunk(&id, created), WriteContent::SseEvents(0..1)),
            // /v1/messages, /v1/responses: the compat writer drops the error; the stream just ends.
            _ => return None,
        };
        Some(Unit { bytes, content, pace: Pace::Step, output: false })
    }
}

/// The JSON of the first `data:` line of an SSE unit.
fn sse_json(unit: &[u8]) -> Option<serde_json::Value> {
    let text = std::str::from_utf8(unit).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("data: "))?;
    serde_json::from_str(line).ok()
}

impl Reply {
    fn no_content_type(mut self) -> Reply {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cache_counts_come_with_0_33_0() {
        for (v, yes) in [("0.33.0", true), ("0.34.2", true), ("1.0.0", true), ("0.33.0-rc2", false), ("0.32.6", false)]
        {
            assert_eq!(super::reports_cache(v), yes, "{v}");
        }
    }
}
