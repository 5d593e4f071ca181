//! What each completed call adds to the metrics (sampled or not): the GenAI client metrics of
//! the conventions' version, HTTP RED, and what the wire tells of the server — how long requests
//! wait, model loads and unloads, which models are loaded (`/api/ps`), how busy each model is and
//! who keeps it busy.

use tracer_core::identity::CallIdentity;
use tracer_core::llm::call::{ChunkGaps, RunningModel};
use tracer_core::llm::{ErrorKind, Incomplete, LlmCall, Operation, Provider};
use tracer_core::segment::display_ip;
use tracer_core::span::semconv::{self as sc, SemconvMode};
use tracer_core::span::stage::TracedCall;

use super::catalog::*;
use super::registry::{Registry, Resident};

impl Registry {
    /// Records one completed call, and the tool executions inferred before it.
    pub fn record(&mut self, traced: &TracedCall) {
        self.record_call(&traced.call);
        self.record_server(&traced.call);
        for tool in &traced.tools {
            // The tool span's own attributes (the tool ran in the client, not on the server).
            let a: Attrs = vec![
                (sc::GEN_AI_OPERATION_NAME, Attr::Str(sc::OPERATION_EXECUTE_TOOL.into())),
                (sc::GEN_AI_TOOL_NAME, Attr::Str(tool.name.clone())),
                (sc::GEN_AI_TOOL_TYPE, Attr::Str("function".into())),
            ];
            self.observe(Role::ExecuteTool, a, tool.duration_ns as f64 / 1e9);
        }
    }

    /// Records one completed call.
    pub(super) fn record_call(&mut self, call: &LlmCall) {
        // A call cut off by the end of the capture, or whose last byte the capture missed, has
        // no true end: no duration is recorded for it (its tokens, if reported, still count).
        let ended = !call.incomplete.contains(&Incomplete::CaptureEnded) && !call.times.end_lost;
        let secs = |ns: u64| ns as f64 / 1e9;
        let duration = secs(call.times.end.since(call.times.request_start).max(0) as u64);

        if ended {
            let mut a: Attrs = vec![(sc::HTTP_REQUEST_METHOD, Attr::Str(http_method(&call.method).to_string()))];
            if let Some(s) = call.status {
                a.push((sc::HTTP_RESPONSE_STATUS_CODE, Attr::Int(s as i64)));
            }
            if let Some(route) = call.http_route() {
                a.push((sc::HTTP_ROUTE, Attr::Str(route.to_string())));
            }
            a.push((sc::URL_SCHEME, Attr::Str(call.url_scheme().into())));
            // HTTP server conventions: only 5xx (or no response at all) is the server's error.
            if let Some(err) = &call.error
                && !matches!(err.kind, ErrorKind::Http(s) if s < 500)
            {
                a.push((sc::ERROR_TYPE, Attr::Str(err.kind.error_type())));
            }
            self.observe(Role::HttpDuration, a, duration);
        }

        let Some(op) = call.operation() else { return };
        let resp = &call.response;
        let mut base: Attrs = vec![
            (sc::GEN_AI_OPERATION_NAME, Attr::Str(op.as_str().into())),
            (sc::GEN_AI_PROVIDER_NAME, Attr::Str(call.provider.name().into())),
        ];
        if let Some(m) = &call.request.model {
            base.push((sc::GEN_AI_REQUEST_MODEL, Attr::Str(m.clone())));
        }
        if let Some(m) = resp.model.as_ref().filter(|m| !m.is_empty()) {
            base.push((sc::GEN_AI_RESPONSE_MODEL, Attr::Str(m.clone())));
        }
        base.push((sc::SERVER_ADDRESS, Attr::Str(display_ip(call.flow.server.ip()))));
        base.push((sc::SERVER_PORT, Attr::Int(call.flow.server.port() as i64)));
        let with = |base: &Attrs, extra: Option<(&'static str, Attr)>| {
            let mut a = base.clone();
            a.extend(extra);
            a
        };
        let error = call.error.as_ref().map(|e| (sc::ERROR_TYPE, Attr::Str(e.kind.error_type())));
        let embeddings = op == Operation::Embeddings;

        if ended {
            let role = match (self.mode(), embeddings) {
                (SemconvMode::V1_41, _) => Role::Duration,
                (SemconvMode::Latest, false) => Role::InferenceDuration,
                (SemconvMode::Latest, true) => Role::EmbeddingsDuration,
            };
            self.observe(role, with(&base, error.clone()), duration);
        }
        let modality = Some((sc::GEN_AI_TOKEN_MODALITY, Attr::Str(sc::TOKEN_MODALITY_UNKNOWN.into())));
        match self.mode() {
            SemconvMode::V1_41 => {
                for (n, kind) in
                    [(resp.input_tokens, sc::TOKEN_TYPE_INPUT), (resp.output_tokens, sc::TOKEN_TYPE_OUTPUT)]
                {
                    if let Some(n) = n {
                        let a = with(&base, Some((sc::GEN_AI_TOKEN_TYPE, Attr::Str(kind.into()))));
                        self.observe(Role::TokenUsage, a, n as f64);
                    }
                }
                if let Some(n) = resp.cache_read_input_tokens {
                    self.add(Role::CacheRead, base.clone(), n);
                }
            }
            SemconvMode::Latest if embeddings => {
                if let Some(n) = resp.input_tokens {
                    self.observe(Role::EmbeddingsInputTokens, base.clone(), n as f64);
                }
            }
            SemconvMode::Latest => {
                if let Some(n) = resp.input_tokens {
                    self.observe(Role::InputTokens, base.clone(), n as f64);
                    self.add(Role::DetailedInput, with(&base, modality.clone()), n);
                }
                if let Some(n) = resp.output_tokens {
                    self.observe(Role::OutputTokens, base.clone(), n as f64);
                    self.add(Role::DetailedOutput, with(&base, modality.clone()), n);
                }
                if let Some(n) = resp.cache_read_input_tokens {
                    self.add(Role::DetailedCacheRead, with(&base, modality), n);
                }
            }
        }
        if resp.streamed {
            if let Some(t) = call.time_to_first_chunk() {
                self.observe(Role::TimeToFirstChunk, base.clone(), t);
            }
            let gaps: &ChunkGaps = &call.times.chunk_gaps;
            if gaps.count > 0
                && let Some((h, _)) = self.histogram(Role::TimePerOutputChunk, base.clone())
            {
                h.merge(&gaps.counts, gaps.sum_secs, gaps.count);
            }
        }
        let o = &resp.ollama;
        if let Some(total) = o.total_duration {
            self.observe(Role::ServerDuration, with(&base, error), secs(total));
            // Ollama omits zero durations from its final chunk: absent means 0 there. Only
            // generating operations have a first token.
            if !embeddings && o.eval_count.is_some_and(|n| n > 0) {
                let prefill = o.load_duration.unwrap_or(0) + o.prompt_eval_duration.unwrap_or(0);
                self.observe(Role::ServerTimeToFirstToken, base.clone(), secs(prefill));
            }
        }
        if let (Some(d), Some(n)) = (o.eval_duration, o.eval_count)
            && n > 0
        {
            self.observe(Role::ServerTimePerOutputToken, base, secs(d) / n as f64);
        }
    }

    /// What the call tells of the server: its wait, loads and unloads, residency (`/api/ps`),
    /// busy time, and who asked.
    fn record_server(&mut self, call: &LlmCall) {
        if call.provider == Provider::Ollama
            && let Some(running) = &call.response.running
        {
            self.set_residency(call, running);
        }
        let Some(op) = call.operation() else { return };
        let model = call.request.model.clone().unwrap_or_default();
        let mut base: Attrs = vec![
            (sc::GEN_AI_OPERATION_NAME, Attr::Str(op.as_str().into())),
            (sc::GEN_AI_PROVIDER_NAME, Attr::Str(call.provider.name().into())),
        ];
        if !model.is_empty() {
            base.push((sc::GEN_AI_REQUEST_MODEL, Attr::Str(model.clone())));
        }
        let o = &call.response.ollama;
        let with = |extra: (&'static str, Attr)| {
            let mut a = base.clone();
            a.push(extra);
            a
        };
        // Loads and unloads.
        let cold = o.load_duration.filter(|d| *d >= self.cold_start_ns);
        match call.model_action() {
            Some("load") => {
                self.add(Role::Loads, with((sc::OLLAMA_LOAD_REASON, Attr::Str("request".into()))), 1);
                if let Some(d) = cold {
                    self.observe(Role::LoadDuration, base.clone(), d as f64 / 1e9);
                }
            }
            Some("unload") => self.add(Role::Unloads, base.clone(), 1),
            _ => {
                if let Some(d) = cold {
                    self.add(Role::Loads, with((sc::OLLAMA_LOAD_REASON, Attr::Str("cold".into()))), 1);
                    self.observe(Role::LoadDuration, base.clone(), d as f64 / 1e9);
                }
            }
        }
        // Busy time: Ollama's own durations, by phase.
        let phases = [("load", o.load_duration), ("prompt_eval", o.prompt_eval_duration), ("eval", o.eval_duration)];
        for (phase, ns) in phases {
            if let Some(ns) = ns.filter(|n| *n > 0) {
                self.add(Role::BusyTime, with((sc::OLLAMA_PHASE, Attr::Str(phase.into()))), ns);
            }
        }
        // Waiting: from the request's last byte to its prompt evaluation — the wire time to
        // Ollama's final chunk less the work it reports after that point. Generating calls whose
        // exchange was seen whole only (anything else has no true start or end).
        if op != Operation::Embeddings
            && call.incomplete.is_empty()
            && let (Some(request_end), Some(done), Some(prompt), Some(eval)) =
                (call.times.request_end, call.times.last_chunk, o.prompt_eval_duration, o.eval_duration)
        {
            let wire = done.since(request_end);
            if wire >= 0 {
                let wait = (wire as u64).saturating_sub(prompt + eval);
                self.observe(Role::Wait, base.clone(), wait as f64 / 1e9);
            }
        }
        // Who asked.
        let client = client_workload(call.identity.as_deref());
        let mut who: Attrs = vec![(sc::TRACER_CLIENT_WORKLOAD, Attr::Str(client))];
        if !model.is_empty() {
            who.push((sc::GEN_AI_REQUEST_MODEL, Attr::Str(model)));
        }
        let r = &call.response;
        for (kind, n) in
            [("input", r.input_tokens), ("output", r.output_tokens), ("cache_read", r.cache_read_input_tokens)]
        {
            if let Some(n) = n {
                let mut a = who.clone();
                a.push((sc::GEN_AI_TOKEN_TYPE, Attr::Str(kind.into())));
                self.add_bounded(Role::ClientTokens, a, n, MAX_CLIENT_SERIES);
            }
        }
        let busy: u64 = phases.iter().filter_map(|(_, ns)| *ns).sum();
        if busy > 0 {
            self.add_bounded(Role::ClientBusyTime, who, busy, MAX_CLIENT_SERIES);
        }
    }

    /// A whole `/api/ps` answer: the models its server has loaded now, replacing what the
    /// previous answer of that server said (a model no longer listed is gone).
    fn set_residency(&mut self, call: &LlmCall, running: &[RunningModel]) {
        let server = (display_ip(call.flow.server.ip()), call.flow.server.port() as i64);
        let models = running
            .iter()
            .map(|m| {
                let mut a: Attrs = vec![(sc::OLLAMA_MODEL, Attr::Str(m.name.clone()))];
                if let Some(p) = processor(m) {
                    a.push((sc::OLLAMA_MODEL_PROCESSOR, Attr::Str(p)));
                }
                a.push((sc::SERVER_ADDRESS, Attr::Str(server.0.clone())));
                a.push((sc::SERVER_PORT, Attr::Int(server.1)));
                (a, m.size.unwrap_or(0), m.size_vram.unwrap_or(0))
            })
            .collect();
        self.residency.insert(server, models);
        let all: Vec<Resident> = self.residency.values().flatten().cloned().collect();
        self.set_gauge(Role::ModelsLoaded, all.iter().map(|(a, _, _)| (a.clone(), 1)));
        let memory = all.iter().flat_map(|(a, size, vram)| {
            let at = |loc: &str, v: u64| {
                let mut a: Attrs = a.iter().filter(|(k, _)| *k != sc::OLLAMA_MODEL_PROCESSOR).cloned().collect();
                a.push((sc::OLLAMA_MEMORY_LOCATION, Attr::Str(loc.into())));
                (a, v)
            };
            [at("total", *size), at("vram", *vram)]
        });
        let memory: Vec<(Attrs, u64)> = memory.collect();
        self.set_gauge(Role::ModelMemory, memory);
    }
}

/// Where a loaded model runs, as `ollama ps` prints it.
fn processor(m: &RunningModel) -> Option<String> {
    let (size, vram) = (m.size?, m.size_vram?);
    Some(if size == 0 || vram >= size {
        "100% GPU".into()
    } else if vram == 0 {
        "100% CPU".into()
    } else {
        let gpu = (vram as f64 * 100.0 / size as f64).round() as u64;
        format!("{}%/{gpu}% CPU/GPU", 100 - gpu)
    })
}

/// The calling workload: a Kubernetes workload (`namespace/name` of its top owner), else the
/// process's executable name, else `unknown`.
pub fn client_workload(identity: Option<&CallIdentity>) -> String {
    let Some(client) = identity.map(|i| &i.client) else { return "unknown".into() };
    if let Some(pod) = &client.pod {
        let name = pod.owners.last().map_or(pod.name.as_str(), |o| o.name.as_str());
        return format!("{}/{name}", pod.namespace);
    }
    client.process.as_ref().and_then(|p| p.executable_name.clone()).unwrap_or_else(|| "unknown".into())
}

/// `http.request.method`: the known methods as sent, anything else `_OTHER` (bounded cardinality).
fn http_method(m: &str) -> &str {
    match m {
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH" => m,
        _ => sc::HTTP_METHOD_OTHER,
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
