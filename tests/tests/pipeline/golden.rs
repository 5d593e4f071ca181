//! Golden tests over every recorded fixture (tests/fixtures/recorded): each exchange is put
//! on a synthetic connection with real framing and segmentation, replayed through the tracer,
//! and its span is checked
//! 1. against an independent oracle computed from the fixture with serde_json (model, tokens,
//!    finish reasons, status, error, response id, dimensions) and the generator's ground truth
//!    (start, end and time to first chunk to the nanosecond);
//! 2. against the committed snapshot `tests/golden/fixtures.jsonl` (every attribute), so any
//!    change in output is seen. `UPDATE_GOLDEN=1 cargo test -p ollama-tracer-tests --test pipeline golden`
//!    rewrites it after a reviewed change;
//! 3. for invariance: other segmentations (tiny segments, random, IPv6, split request head) give
//!    the same attributes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};

use testkit::drive;
use testkit::fixtures::{self, Fixture};
use testkit::synth::{ConnectionSpec, ExchangeTruth, Segmentation, TcpConfig, synthesize};
use testkit::wire::{self, BodyKind, RenderOptions, WriteContent};
use tracer_core::span::{AttrValue, SpanRecord, semconv as sc};

/// What the fixture itself says the span must contain.
#[derive(Debug, Default)]
struct Expect {
    operation: Option<&'static str>,
    request_model: Option<String>,
    response_model: Option<String>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    finish_reasons: Vec<String>,
    response_id: Option<String>,
    dimension: Option<u64>,
    error_type: Option<String>,
    streamed: bool,
}

fn operation(path: &str) -> Option<&'static str> {
    match path {
        "/api/chat" | "/v1/chat/completions" | "/v1/responses" | "/v1/messages" => Some("chat"),
        "/api/generate" | "/v1/completions" => Some("text_completion"),
        "/api/embed" | "/api/embeddings" | "/v1/embeddings" => Some("embeddings"),
        _ => None,
    }
}

/// The JSON documents of a response body.
fn docs(kind: BodyKind, body: &[u8]) -> Vec<Value> {
    match kind {
        BodyKind::Sse => wire::split_sse(body)
            .into_iter()
            .filter_map(wire::sse_data)
            .filter(|d| d.as_slice() != b"[DONE]")
            .filter_map(|d| serde_json::from_slice(&d).ok())
            .collect(),
        _ => serde_json::Deserializer::from_slice(body).into_iter::<Value>().filter_map(Result::ok).collect(),
    }
}

fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

fn nonempty(v: Option<&Value>) -> bool {
    match v {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        _ => false,
    }
}

/// Does this document carry output (text, reasoning or tool calls)?
fn has_output(doc: &Value) -> bool {
    let m = doc.get("message");
    if nonempty(m.and_then(|m| m.get("content")))
        || nonempty(m.and_then(|m| m.get("thinking")))
        || nonempty(m.and_then(|m| m.get("tool_calls")))
    {
        return true;
    }
    if nonempty(doc.get("response")) || nonempty(doc.get("thinking")) || nonempty(doc.get("tool_calls")) {
        return true;
    }
    if let Some(choices) = doc.get("choices").and_then(Value::as_array) {
        for c in choices {
            for part in ["delta", "message"] {
                let d = c.get(part);
                for f in ["content", "reasoning", "reasoning_content", "tool_calls"] {
                    if nonempty(d.and_then(|d| d.get(f))) {
                        return true;
                    }
                }
            }
            if nonempty(c.get("text")) {
                return true;
            }
        }
    }
    false
}

fn expect(f: &Fixture) -> Expect {
    let path = f.path();
    let mut e = Expect { operation: operation(&path), ..Default::default() };
    let request: Value = serde_json::from_str(&f.request.body).unwrap_or(Value::Null);
    e.request_model = get_ci(&request, "model").and_then(Value::as_str).map(str::to_owned);
    let kind = f.response_body_kind();
    let docs = docs(kind, f.response.body.as_bytes());
    e.streamed = matches!(kind, BodyKind::Ndjson | BodyKind::Sse) || docs.len() > 1;
    if f.response.status >= 400 {
        e.error_type = Some(f.response.status.to_string());
        return e;
    }
    for d in &docs {
        if let Some(m) = d.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()) {
            e.response_model = Some(m.to_string());
        }
        if let Some(id) = d.get("id").and_then(Value::as_str) {
            e.response_id = Some(id.to_string());
        }
    }
    if path.starts_with("/api/") {
        e.response_id = None;
        if let Some(done) = docs.iter().rev().find(|d| d.get("done") == Some(&Value::Bool(true))) {
            e.input_tokens = done.get("prompt_eval_count").and_then(Value::as_u64);
            e.output_tokens = done.get("eval_count").and_then(Value::as_u64);
            if let Some(r) = done.get("done_reason").and_then(Value::as_str) {
                e.finish_reasons = vec![r.to_string()];
            }
        }
        if path == "/api/embed" {
            let d = &docs[0];
            e.input_tokens = d.get("prompt_eval_count").and_then(Value::as_u64);
            e.dimension = d.get("embeddings").and_then(|v| v.get(0)).and_then(Value::as_array).map(|a| a.len() as u64);
        }
        if path == "/api/embeddings" {
            e.dimension = docs[0].get("embedding").and_then(Value::as_array).map(|a| a.len() as u64);
        }
    } else {
        let mut finish: BTreeMap<u64, String> = BTreeMap::new();
        for d in &docs {
            let choices = d.get("choices").and_then(Value::as_array);
            // In streams only the usage chunk (empty choices) has real numbers.
            let usage_ok = !e.streamed || choices.is_some_and(|c| c.is_empty());
            if usage_ok && let Some(u) = d.get("usage") {
                if let Some(p) = u.get("prompt_tokens").and_then(Value::as_u64) {
                    e.input_tokens = Some(p);
                }
                if let Some(c) = u.get("completion_tokens").and_then(Value::as_u64) {
                    e.output_tokens = Some(c);
                }
            }
            for c in choices.into_iter().flatten() {
                if let Some(r) = c.get("finish_reason").and_then(Value::as_str) {
                    finish.insert(c.get("index").and_then(Value::as_u64).unwrap_or(0), r.to_string());
                }
            }
            if let Some(data) = d.get("data").and_then(Value::as_array)
                && let Some(first) = data.first().and_then(|x| x.get("embedding"))
            {
                e.dimension = match first {
                    Value::Array(a) => Some(a.len() as u64),
                    Value::String(s) => {
                        let pad = s.bytes().rev().take_while(|b| *b == b'=').count() as u64;
                        Some(((s.len() as u64 / 4) * 3 - pad) / 4)
                    }
                    _ => None,
                };
            }
        }
        e.finish_reasons = finish.into_values().collect();
    }
    e
}

fn s(v: Option<&AttrValue>) -> Option<String> {
    match v {
        Some(AttrValue::Str(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int(v: Option<&AttrValue>) -> Option<u64> {
    match v {
        Some(AttrValue::Int(n)) => Some(*n as u64),
        _ => None,
    }
}

fn strs(v: Option<&AttrValue>) -> Vec<String> {
    match v {
        Some(AttrValue::StrArray(a)) => a.clone(),
        _ => vec![],
    }
}

/// The capture time at which the first output chunk was complete, from ground truth.
fn first_output_ns(f: &Fixture, truth: &ExchangeTruth, rendered: &wire::ExchangeWire) -> Option<(u64, u64)> {
    let kind = f.response_body_kind();
    let body = f.response.body.as_bytes();
    let pieces = wire::split_body(kind, body);
    for w in &truth.writes {
        let idx: Vec<usize> = match &w.content {
            WriteContent::NdjsonLine(i) => vec![*i],
            WriteContent::SseEvents(r) => r.clone().collect(),
            _ => continue,
        };
        for i in idx {
            let piece = pieces.get(i)?;
            let doc: Option<Value> = match kind {
                BodyKind::Sse => wire::sse_data(piece).and_then(|d| serde_json::from_slice(&d).ok()),
                _ => serde_json::from_slice(piece).ok(),
            };
            if doc.as_ref().is_some_and(has_output) {
                return Some((w.first_byte_ns, w.last_byte_ns));
            }
        }
    }
    let _ = rendered;
    None
}

fn attr_json(v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => json!(s),
        AttrValue::Int(n) => json!(n),
        AttrValue::F64(x) => json!(x),
        AttrValue::Bool(b) => json!(b),
        AttrValue::StrArray(a) => json!(a),
    }
}

/// Attributes that depend on the connection, not on the exchange.
const CONNECTION_ATTRS: &[&str] = &[sc::CLIENT_ADDRESS, sc::CLIENT_PORT, sc::SERVER_ADDRESS, sc::NETWORK_TYPE];

fn exchange_attrs(span: &SpanRecord) -> BTreeMap<String, Value> {
    span.attributes
        .iter()
        .filter(|kv| !CONNECTION_ATTRS.contains(&kv.key.as_ref()))
        .map(|kv| (kv.key.to_string(), attr_json(&kv.value)))
        .collect()
}

struct Run {
    span: SpanRecord,
    truth: ExchangeTruth,
    wire: wire::ExchangeWire,
}

fn run(f: &Fixture, spec: ConnectionSpec) -> Run {
    let rendered = wire::render(f, &RenderOptions::default());
    let capture = synthesize(&[spec.exchange(rendered.clone())]).expect("synthesize");
    let truth = capture.connections[0].exchanges[0].clone();
    let mut spans = drive::spans(&capture.packets);
    assert_eq!(spans.len(), 1, "{}: exactly one span per call", f.name);
    let (_, span) = spans.remove(0);
    Run { span, truth, wire: rendered }
}

fn check_oracle(f: &Fixture, r: &Run, exact_ttft: bool) -> Result<(), String> {
    let e = expect(f);
    let span = &r.span;
    let mut errs = Vec::new();
    macro_rules! check {
        ($what:expr, $got:expr, $want:expr) => {
            if $got != $want {
                errs.push(format!("{}: got {:?}, want {:?}", $what, $got, $want));
            }
        };
    }
    check!("operation", s(span.attr(sc::GEN_AI_OPERATION_NAME)).as_deref(), e.operation);
    if let Some(op) = e.operation {
        check!("provider", s(span.attr(sc::GEN_AI_PROVIDER_NAME)).as_deref(), Some("ollama"));
        check!("request model", s(span.attr(sc::GEN_AI_REQUEST_MODEL)), e.request_model);
        check!("response model", s(span.attr(sc::GEN_AI_RESPONSE_MODEL)), e.response_model);
        check!("input tokens", int(span.attr(sc::GEN_AI_USAGE_INPUT_TOKENS)), e.input_tokens);
        check!("output tokens", int(span.attr(sc::GEN_AI_USAGE_OUTPUT_TOKENS)), e.output_tokens);
        check!("finish reasons", strs(span.attr(sc::GEN_AI_RESPONSE_FINISH_REASONS)), e.finish_reasons);
        check!("response id", s(span.attr(sc::GEN_AI_RESPONSE_ID)), e.response_id);
        check!("dimension", int(span.attr(sc::GEN_AI_EMBEDDINGS_DIMENSION_COUNT)), e.dimension);
        let want_name = match &e.request_model {
            Some(m) => format!("{op} {m}"),
            None => op.to_string(),
        };
        check!("span name", span.name.clone(), want_name);
    }
    check!("status code", int(span.attr(sc::HTTP_RESPONSE_STATUS_CODE)), Some(f.response.status as u64));
    check!(
        "error.type",
        s(span.attr(sc::ERROR_TYPE)),
        if e.operation.is_some() || f.response.status >= 500 { e.error_type.clone() } else { None }
    );
    check!("incomplete", span.attr(sc::TRACER_INCOMPLETE), None::<&AttrValue>);
    check!("start", span.start.0, r.truth.request_first_byte_ns);
    check!("end", Some(span.end.0), r.truth.response_last_byte_ns);
    let ttft = match span.attr(sc::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK) {
        Some(AttrValue::F64(x)) => Some(*x),
        _ => None,
    };
    let want = if e.streamed && e.operation.is_some() && f.response.status < 400 {
        first_output_ns(f, &r.truth, &r.wire)
    } else {
        None
    };
    match (ttft, want) {
        (None, None) => {}
        (Some(got), Some((first, last))) => {
            // Relative to the request start: f64 seconds of a sub-hour interval keep nanoseconds.
            let start = r.truth.request_first_byte_ns;
            let got_ns = got * 1e9;
            let (lo, hi) = if exact_ttft { (last, last) } else { (first, last) };
            let (lo, hi) = ((lo - start) as f64, (hi - start) as f64);
            if got_ns < lo - 0.5 || got_ns > hi + 0.5 {
                errs.push(format!("ttft: got {got_ns}, want in [{lo}, {hi}]"));
            }
        }
        (got, want) => errs.push(format!("ttft: got {got:?}, want {want:?}")),
    }
    if errs.is_empty() { Ok(()) } else { Err(format!("{}:\n  {}", f.name, errs.join("\n  "))) }
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden").join("fixtures.jsonl")
}

fn snapshot_line(f: &Fixture, span: &SpanRecord) -> Value {
    json!({
        "fixture": f.name,
        "name": span.name,
        "status": span.status.as_str(),
        "status_message": span.status_message,
        "start": span.start.0,
        "end": span.end.0,
        "attributes": span.attributes.iter().map(|kv| (kv.key.to_string(), attr_json(&kv.value))).collect::<BTreeMap<_, _>>(),
    })
}

fn default_spec(i: usize) -> ConnectionSpec {
    ConnectionSpec::loopback_v4(40000 + i as u16).seed(i as u64)
}

#[test]
fn every_fixture_matches_oracle_and_snapshot() {
    let all = fixtures::load_all().expect("fixtures");
    assert_eq!(all.len(), 259, "all recorded fixtures are used");
    let mut failures = Vec::new();
    let mut lines = Vec::new();
    for (i, f) in all.iter().enumerate() {
        let r = run(f, default_spec(i));
        if let Err(e) = check_oracle(f, &r, true) {
            failures.push(e);
        }
        lines.push(snapshot_line(f, &r.span));
    }
    assert!(failures.is_empty(), "{} fixtures disagree with the oracle:\n{}", failures.len(), failures.join("\n"));

    let rendered: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let path = golden_path();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).expect("tests/golden/fixtures.jsonl (UPDATE_GOLDEN=1 creates it)");
    for (want, got) in committed.lines().zip(rendered.lines()) {
        assert_eq!(got, want, "span differs from the committed snapshot");
    }
    assert_eq!(committed.lines().count(), rendered.lines().count());
}

#[test]
fn segmentation_and_address_family_do_not_change_spans() {
    let all = fixtures::load_all().expect("fixtures");
    type MakeSpec = Box<dyn Fn(usize) -> ConnectionSpec>;
    let variants: Vec<(&str, MakeSpec)> = vec![
        (
            "tiny segments",
            Box::new(|i| {
                default_spec(i).tcp(TcpConfig {
                    client_mss: 1448,
                    request_segmentation: Segmentation::Fixed(97),
                    response_segmentation: Segmentation::Fixed(7),
                    ..TcpConfig::default()
                })
            }),
        ),
        (
            "random segments",
            Box::new(|i| {
                default_spec(i).tcp(TcpConfig {
                    request_segmentation: Segmentation::Random { min: 1, max: 700 },
                    response_segmentation: Segmentation::Random { min: 1, max: 300 },
                    split_request_head: true,
                    coalesce_response_head: false,
                    ..TcpConfig::default()
                })
            }),
        ),
        ("ipv6", Box::new(|i| ConnectionSpec::loopback_v6(40000 + i as u16).seed(i as u64))),
    ];
    let mut failures = Vec::new();
    for (i, f) in all.iter().enumerate() {
        let base = exchange_attrs(&run(f, default_spec(i)).span);
        for (name, spec) in &variants {
            let r = run(f, spec(i));
            if let Err(e) = check_oracle(f, &r, false) {
                failures.push(format!("[{name}] {e}"));
            }
            let mut got = exchange_attrs(&r.span);
            let mut want = base.clone();
            // Times legitimately move with the segment that completes a chunk.
            for timing in [
                sc::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                sc::OLLAMA_RESPONSE_TIME_PER_OUTPUT_CHUNK,
                sc::OLLAMA_RESPONSE_CHUNKS_PER_SECOND,
                sc::OLLAMA_OUTSIDE_DURATION,
            ] {
                got.remove(timing);
                want.remove(timing);
            }
            if got != want {
                failures.push(format!("[{name}] {}: attributes differ:\n got  {got:?}\n want {want:?}", f.name));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
