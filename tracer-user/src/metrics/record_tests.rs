//! Server metrics from known calls: every value exact.

use std::sync::Arc;

use tracer_core::identity::{CallIdentity, Endpoint, ProcessInfo};
use tracer_core::llm::call::{OllamaMetrics, RunningModel};
use tracer_core::llm::{LlmCall, Route};
use tracer_core::segment::Timestamp;
use tracer_core::span::Resource;
use tracer_core::span::semconv as sc;
use tracer_core::span::stage::TracedCall;

use crate::metrics::catalog::{Attr, Attrs, Role};
use crate::metrics::registry::{Points, Registry};

const MS: u64 = 1_000_000;

fn traced(call: LlmCall) -> TracedCall {
    TracedCall { call, spans: Vec::new(), resource: Arc::new(Resource::new("t", None, Vec::new())), tools: Vec::new() }
}

/// A whole chat call of `model`: request 0–1 ms, final chunk at `done_ms`, Ollama's durations.
fn chat(model: &str, load_ms: u64, prompt_ms: u64, eval_ms: u64, done_ms: u64) -> LlmCall {
    let mut c = LlmCall::for_test(Route::Chat);
    c.request.model = Some(model.into());
    c.times.request_start = Timestamp(1_000 * MS);
    c.times.request_end = Some(Timestamp(1_001 * MS));
    c.times.last_chunk = Some(Timestamp((1_001 + done_ms) * MS));
    c.times.end = Timestamp((1_001 + done_ms) * MS);
    c.response.input_tokens = Some(20);
    c.response.output_tokens = Some(5);
    c.response.ollama = OllamaMetrics {
        total_duration: Some((load_ms + prompt_ms + eval_ms) * MS),
        load_duration: Some(load_ms * MS),
        prompt_eval_duration: Some(prompt_ms * MS),
        eval_duration: Some(eval_ms * MS),
        prompt_eval_count: Some(20),
        eval_count: Some(5),
        prompt_eval_cached_count: None,
    };
    c
}

/// The series of a role's metric.
fn series(r: &Registry, role: Role) -> Vec<(Attrs, f64)> {
    let m = r.metrics().iter().find(|m| r.role_of(m) == Some(role)).expect("metric");
    match &m.points {
        Points::Counter(s) | Points::Gauge(s) => s.iter().map(|(a, v)| (a.clone(), m.desc.value(*v))).collect(),
        Points::Histogram(s) => s.iter().map(|(a, h)| (a.clone(), h.sum)).collect(),
    }
}

fn has(a: &Attrs, k: &str, v: &str) -> bool {
    a.iter().any(|(key, val)| *key == k && *val == Attr::Str(v.into()))
}

#[test]
fn loads_wait_and_busy_time_are_ollamas_own_numbers() {
    let mut r = Registry::default();
    // Cold: a 2 s load (over the 500 ms threshold); warm: 3 ms of scheduling.
    r.record(&traced(chat("m", 2_000, 100, 900, 3_050)));
    r.record(&traced(chat("m", 3, 100, 900, 1_010)));
    let loads = series(&r, Role::Loads);
    assert_eq!(loads.len(), 1);
    assert!(has(&loads[0].0, sc::OLLAMA_LOAD_REASON, "cold"));
    assert_eq!(loads[0].1, 1.0);
    assert_eq!(series(&r, Role::LoadDuration)[0].1, 2.0);
    // Busy time by phase, summed exactly.
    let busy = series(&r, Role::BusyTime);
    let phase = |p: &str| busy.iter().find(|(a, _)| has(a, sc::OLLAMA_PHASE, p)).unwrap().1;
    assert_eq!((phase("load"), phase("prompt_eval"), phase("eval")), (2.003, 0.2, 1.8));
    // Waiting: the wire time to the final chunk less prompt eval and eval: 2.05 s, then 10 ms.
    let wait = series(&r, Role::Wait);
    assert!((wait[0].1 - 2.06).abs() < 1e-9, "{wait:?}");
    // Who: no attribution here.
    let tokens = series(&r, Role::ClientTokens);
    let kind = |k: &str| tokens.iter().find(|(a, _)| has(a, sc::GEN_AI_TOKEN_TYPE, k)).map(|t| t.1);
    assert_eq!((kind("input"), kind("output"), kind("cache_read")), (Some(40.0), Some(10.0), None));
    assert!(tokens.iter().all(|(a, _)| has(a, sc::TRACER_CLIENT_WORKLOAD, "unknown")));
    assert_eq!(series(&r, Role::ClientBusyTime)[0].1, 2.003 + 0.2 + 1.8);
}

#[test]
fn explicit_loads_and_unloads_are_counted() {
    let mut r = Registry::default();
    let mut load = chat("m", 1_500, 0, 0, 1_500);
    load.response.done_reason = Some("load".into());
    r.record(&traced(load));
    let mut unload = chat("m", 0, 0, 0, 1);
    unload.response.done_reason = Some("unload".into());
    r.record(&traced(unload));
    let loads = series(&r, Role::Loads);
    assert_eq!(loads.len(), 1);
    assert!(has(&loads[0].0, sc::OLLAMA_LOAD_REASON, "request"));
    assert_eq!(series(&r, Role::Unloads)[0].1, 1.0);
}

#[test]
fn residency_is_what_the_last_api_ps_said() {
    let mut r = Registry::default();
    let ps = |models: Vec<RunningModel>| {
        let mut c = LlmCall::for_test(Route::Ps);
        c.method = "GET".into();
        c.request.model = None;
        c.response.running = Some(models);
        traced(c)
    };
    let m =
        |name: &str, size: u64, vram: u64| RunningModel { name: name.into(), size: Some(size), size_vram: Some(vram) };
    r.record(&ps(vec![m("a", 100, 100), m("b", 200, 50), m("c", 300, 0)]));
    let loaded = series(&r, Role::ModelsLoaded);
    let processor = |name: &str| {
        loaded
            .iter()
            .find(|(a, _)| has(a, sc::OLLAMA_MODEL, name))
            .and_then(|(a, _)| a.iter().find(|(k, _)| *k == sc::OLLAMA_MODEL_PROCESSOR).map(|(_, v)| v.clone()))
    };
    assert_eq!(loaded.len(), 3);
    assert_eq!(processor("a"), Some(Attr::Str("100% GPU".into())));
    assert_eq!(processor("b"), Some(Attr::Str("75%/25% CPU/GPU".into())));
    assert_eq!(processor("c"), Some(Attr::Str("100% CPU".into())));
    let memory = series(&r, Role::ModelMemory);
    let mem = |name: &str, loc: &str| {
        memory
            .iter()
            .find(|(a, _)| has(a, sc::OLLAMA_MODEL, name) && has(a, sc::OLLAMA_MEMORY_LOCATION, loc))
            .unwrap()
            .1
    };
    assert_eq!((mem("b", "total"), mem("b", "vram")), (200.0, 50.0));
    // b was unloaded: the next answer no longer lists it, and its series are gone.
    r.record(&ps(vec![m("a", 100, 100)]));
    assert_eq!(series(&r, Role::ModelsLoaded).len(), 1);
    assert_eq!(series(&r, Role::ModelMemory).len(), 2);
}

#[test]
fn the_calling_workload_names_the_client() {
    let mut r = Registry::default();
    let mut c = chat("m", 1, 1, 1, 10);
    let process = ProcessInfo { pid: 7, executable_name: Some("python3".into()), ..Default::default() };
    c.identity = Some(Arc::new(CallIdentity {
        client: Endpoint { process: Some(Arc::new(process)), ..Default::default() },
        ..Default::default()
    }));
    r.record(&traced(c));
    assert!(series(&r, Role::ClientTokens).iter().all(|(a, _)| has(a, sc::TRACER_CLIENT_WORKLOAD, "python3")));
}
