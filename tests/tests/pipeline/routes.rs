//! Every route Ollama serves, through the tracer: requests sent over real TCP to the stand-in
//! (which synthesises what no recording covers: /v1/responses, /v1/messages, model management,
//! blobs, ...), recorded by the tap, decoded, and checked against the stand-in's ground truth
//! of what it sent and against the request we made.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use testkit::process::StandInProcess;
use testkit::tap::{ScriptedServer, Tap};
use tracer_core::llm::{LlmCall, LlmConfig};
use tracer_core::pipeline::PipelineConfig;
use tracer_core::span::{AttrValue, SpanConfig, SpanRecord, StatusCode, semconv as sc};

/// One request, on its own keep-alive connection's turn.
struct Req {
    method: &'static str,
    path: String,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

fn post(path: &str, body: &str) -> Req {
    Req { method: "POST", path: path.into(), body: body.as_bytes().to_vec(), headers: Vec::new() }
}

fn get(method: &'static str, path: &str) -> Req {
    Req { method, path: path.into(), body: Vec::new(), headers: Vec::new() }
}

impl Req {
    fn header(mut self, name: &'static str, value: &str) -> Req {
        self.headers.push((name, value.into()));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut head =
            format!("{} {} HTTP/1.1\r\nHost: 127.0.0.1:11434\r\nUser-Agent: routes-test/1\r\n", self.method, self.path);
        for (n, v) in &self.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if !self.body.is_empty() || self.method == "POST" {
            head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Reads one whole response (Content-Length, chunked, or none for HEAD / 1xx-less empties);
/// and whether the server closes the connection after it.
fn read_response(s: &mut TcpStream, head_request: bool) -> (u16, Vec<u8>, bool) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = r.parse(&buf) {
            let status = r.code.unwrap();
            let header = |name: &str| {
                r.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
            };
            let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
            let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let closes = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
            let body_start = n;
            loop {
                let body = &buf[body_start..];
                if head_request || status == 204 || status == 304 {
                    return (status, Vec::new(), closes);
                }
                if chunked {
                    if let Ok((decoded, _)) = testkit::wire::decode_chunked(body) {
                        return (status, decoded, closes);
                    }
                } else if body.len() >= length {
                    return (status, body[..length].to_vec(), closes);
                }
                let k = s.read(&mut tmp).expect("read body");
                assert!(k > 0, "connection closed mid-body");
                buf.extend_from_slice(&tmp[..k]);
            }
        }
        let k = s.read(&mut tmp).expect("read head");
        assert!(k > 0, "connection closed before the head");
        buf.extend_from_slice(&tmp[..k]);
    }
}

struct Observed {
    call: LlmCall,
    spans: Vec<SpanRecord>,
    truth: Value,
    body: Vec<u8>,
}

/// Sends every request in order over one keep-alive connection (a fresh one after a request
/// the server answers by closing), records through the tap, and pairs each call with its truth.
fn run(reqs: &[Req]) -> Vec<Observed> {
    let standin = StandInProcess::start(env!("CARGO_BIN_EXE_ollama-standin").as_ref(), &[]).expect("stand-in");
    let tap = Tap::start(standin.addr).expect("tap");
    let mut bodies = Vec::new();
    let connect = || {
        let c = TcpStream::connect(tap.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c
    };
    let mut conn = connect();
    for r in reqs {
        conn.write_all(&r.bytes()).unwrap();
        let (_, body, closes) = read_response(&mut conn, r.method == "HEAD");
        bodies.push(body);
        if closes {
            // As Go does after a large body its handler did not read.
            let _ = conn.read_to_end(&mut Vec::new());
            conn = connect();
        }
    }
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let _ = conn.read_to_end(&mut Vec::new());
    let truth = standin.truth(reqs.len());
    assert_eq!(truth.len(), reqs.len(), "one truth record per request");
    std::thread::sleep(Duration::from_millis(100));
    let spans = testkit::drive::all_spans(
        &tap.packets(),
        PipelineConfig { llm: LlmConfig::default(), ..Default::default() },
        SpanConfig { id_seed: Some(9), ..Default::default() },
    );
    let mut spans = spans;
    spans.sort_by_key(|(c, _)| c.times.request_start);
    assert_eq!(spans.len(), reqs.len(), "one call per request");
    spans
        .into_iter()
        .zip(truth)
        .zip(bodies)
        .map(|(((call, spans), truth), body)| Observed { call, spans, truth, body })
        .collect()
}

/// What every call must agree on with the stand-in's truth.
fn check_common(o: &Observed) {
    let what = format!("{} {}", o.truth["method"], o.truth["path"]);
    let span = &o.spans[0];
    assert_eq!(o.call.path, o.truth["target"].as_str().unwrap(), "{what}");
    assert_eq!(span.attr_int(sc::HTTP_RESPONSE_STATUS_CODE), o.truth["status"].as_i64(), "{what}");
    assert_eq!(span.attr_int(sc::OLLAMA_REQUEST_BODY_SIZE), o.truth["request_body_bytes"].as_i64(), "{what}");
    if o.truth["method"] != "HEAD" {
        assert_eq!(span.attr_int(sc::OLLAMA_RESPONSE_BODY_SIZE), o.truth["response_body_bytes"].as_i64(), "{what}");
    }
    for key in ["input_tokens", "output_tokens"] {
        let attr = if key == "input_tokens" { sc::GEN_AI_USAGE_INPUT_TOKENS } else { sc::GEN_AI_USAGE_OUTPUT_TOKENS };
        if let Some(t) = o.truth[key].as_i64() {
            assert_eq!(span.attr_int(attr), Some(t), "{what}: {key}");
        }
    }
    // Cache hits exactly as sent; absent when not sent or 0 (unknown is not 0, and 0 is what
    // servers that do not count hits send).
    let cached = o.truth["cache_read_input_tokens"].as_i64().filter(|n| *n > 0);
    assert_eq!(span.attr_int(sc::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS), cached, "{what}: cache read");
    if let Some(tools) = o.truth["tool_calls"].as_array().filter(|t| !t.is_empty()) {
        let names: Vec<String> = tools.iter().map(|t| t.as_str().unwrap().to_owned()).collect();
        assert_eq!(span.attr_strs(sc::OLLAMA_RESPONSE_TOOL_CALLS).map(<[String]>::to_vec), Some(names), "{what}");
    }
    assert!(o.spans.iter().all(|s| s.trace_id == span.trace_id));
    // The tap stamps bytes as they pass (the span times are its stamps, exactly); the server's
    // clock saw them a little later (request) or earlier (response): milliseconds on loopback,
    // more when the machine is busy. Wire-exact timing is checked on real captures.
    let near = |a: u64, b: u64| (a as i64 - b as i64).unsigned_abs() < 50_000_000;
    assert!(near(span.start.0, o.truth["t_request_first_byte_ns"].as_u64().unwrap()), "{what}: start");
    assert!(near(span.end.0, o.truth["t_last_byte_ns"].as_u64().unwrap()), "{what}: end");
    assert!(o.call.incomplete.is_empty(), "{what}: {:?}", o.call.incomplete);
}

#[test]
fn openai_responses_and_anthropic_messages() {
    let tools = r#"[{"name":"lookup","description":"d","input_schema":{"type":"object","properties":{}}}]"#;
    let reqs = vec![
        post("/v1/responses", r#"{"model":"llama3.2","input":"Say hi","max_output_tokens":40}"#),
        post(
            "/v1/responses",
            r#"{"model":"llama3.2","stream":true,"instructions":"be brief","input":[{"role":"user","content":"Say hi"}]}"#,
        ),
        post("/v1/messages", r#"{"model":"qwen3-coder","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}"#),
        post(
            "/v1/messages",
            r#"{"model":"qwen3-coder","max_tokens":64,"stream":true,"system":"terse","messages":[{"role":"user","content":"hello"}]}"#,
        ),
        post(
            "/v1/messages",
            &format!(r#"{{"model":"qwen3-coder","max_tokens":64,"stream":true,"tools":{tools},"messages":[{{"role":"user","content":"look it up"}}]}}"#),
        )
        .header("X-Standin-Scenario", "tools"),
        post("/v1/messages", r#"{"model":"nope","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}"#)
            .header("X-Standin-Scenario", "http-404"),
        post("/v1/responses", r#"{"model":"llama3.2","stream":true,"input":"Say hi"}"#)
            .header("X-Standin-Scenario", "error-midstream:after=2"),
        post("/v1/messages", r#"{"model":"qwen3-coder","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"x"}]}"#)
            .header("X-Standin-Scenario", "error-midstream:after=2"),
    ];
    let obs = run(&reqs);
    for o in &obs[..6] {
        check_common(o);
    }
    let span = |i: usize| &obs[i].spans[0];
    // Responses, not streamed: a chat, with the response's own id and usage.
    assert_eq!(span(0).name, "chat llama3.2");
    assert_eq!(span(0).attr_str(sc::GEN_AI_OPERATION_NAME), Some("chat"));
    assert_eq!(span(0).attr_int(sc::GEN_AI_REQUEST_MAX_TOKENS), Some(40));
    let v: Value = serde_json::from_slice(&obs[0].body).unwrap();
    assert_eq!(span(0).attr_str(sc::GEN_AI_RESPONSE_ID), v["id"].as_str());
    assert_eq!(span(0).status, StatusCode::Unset);
    // Responses, streamed: usage from `response.completed`, time to first chunk measured.
    assert_eq!(span(1).attr(sc::GEN_AI_REQUEST_STREAM), Some(&AttrValue::Bool(true)));
    assert!(span(1).attr(sc::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK).is_some());
    assert_eq!(
        span(1).attr_strs(sc::GEN_AI_RESPONSE_FINISH_REASONS).map(<[String]>::to_vec),
        Some(vec!["stop".to_string()])
    );
    // Messages: tokens from message_start / message_delta; the stop reason as sent.
    assert_eq!(span(2).name, "chat qwen3-coder");
    assert_eq!(span(2).attr_int(sc::GEN_AI_REQUEST_MAX_TOKENS), Some(64));
    assert_eq!(
        span(3).attr_strs(sc::GEN_AI_RESPONSE_FINISH_REASONS).map(<[String]>::to_vec),
        Some(vec!["end_turn".to_string()])
    );
    assert_eq!(
        span(4).attr_strs(sc::GEN_AI_RESPONSE_FINISH_REASONS).map(<[String]>::to_vec),
        Some(vec!["tool_use".to_string()])
    );
    assert_eq!(span(4).attr_strs(sc::OLLAMA_REQUEST_TOOLS).map(<[String]>::to_vec), Some(vec!["lookup".to_string()]));
    // Errors: HTTP 404 in Anthropic's shape; streams that stop without their terminator.
    assert_eq!(span(5).status, StatusCode::Error);
    assert_eq!(span(5).attr_str(sc::ERROR_TYPE), Some("404"));
    assert!(span(5).status_message.contains("not found"), "{}", span(5).status_message);
    for i in [6, 7] {
        assert_eq!(span(i).status, StatusCode::Error, "{}", obs[i].truth["path"]);
        assert!((span(i)).attr_str(sc::ERROR_TYPE).is_some());
    }
}

/// Ollama ≥ 0.33 reports prompt-cache hits, each API its own way. Per dialect: a first turn
/// (nothing cached: no attribute, whether the server leaves the field out — native, OpenAI
/// chat and completions — or sends 0 — Responses, Anthropic), a second turn extending it
/// (its history cached), the same request again (all but the last token cached); streamed and
/// not. The span carries the hits exactly as sent and the conventions' input total.
#[test]
fn cached_prompt_tokens_in_every_dialect() {
    let history = |turn: usize| -> String {
        let msgs = ["Why is the sky blue? Answer in one sentence.", "And why are sunsets red then?"];
        let list: Vec<String> = msgs[..turn.min(2)]
            .iter()
            .enumerate()
            .flat_map(|(i, m)| {
                let mut v = vec![format!(r#"{{"role":"user","content":"{m}"}}"#)];
                if i + 1 < turn.min(2) {
                    v.push(r#"{"role":"assistant","content":"Rayleigh scattering."}"#.to_string());
                }
                v
            })
            .collect();
        format!("[{}]", list.join(","))
    };
    let prompt = "Once upon a time, in a land far away, there lived";
    type Body = Box<dyn Fn(usize, bool) -> String>;
    let dialects: Vec<(&str, &str, Body)> = vec![
        (
            "/api/chat",
            "native",
            Box::new(move |t, s| format!(r#"{{"model":"c-chat","stream":{s},"messages":{}}}"#, history(t))),
        ),
        (
            "/api/generate",
            "native",
            Box::new(move |_, s| format!(r#"{{"model":"c-gen","stream":{s},"prompt":"{prompt}"}}"#)),
        ),
        (
            "/v1/chat/completions",
            "openai",
            Box::new(move |t, s| {
                format!(
                    r#"{{"model":"c-oai","stream":{s},"stream_options":{{"include_usage":true}},"messages":{}}}"#,
                    history(t)
                )
            }),
        ),
        (
            "/v1/completions",
            "openai",
            Box::new(move |_, s| {
                format!(
                    r#"{{"model":"c-cmp","stream":{s},"stream_options":{{"include_usage":true}},"prompt":"{prompt}"}}"#
                )
            }),
        ),
        (
            "/v1/responses",
            "zero",
            Box::new(move |t, s| format!(r#"{{"model":"c-rsp","stream":{s},"input":{}}}"#, history(t))),
        ),
        (
            "/v1/messages",
            "zero",
            Box::new(move |t, s| {
                format!(r#"{{"model":"c-ant","max_tokens":64,"stream":{s},"messages":{}}}"#, history(t))
            }),
        ),
    ];
    let mut reqs = Vec::new();
    for (path, _, body) in &dialects {
        for (turn, stream) in [(1, false), (2, true), (2, false)] {
            reqs.push(post(path, &body(turn, stream)).header("X-Standin-Scenario", "synth:tokens=3"));
        }
    }
    let obs = run(&reqs);
    for (d, (path, first_turn, _)) in dialects.iter().enumerate() {
        let turns = &obs[3 * d..3 * d + 3];
        for o in turns {
            check_common(o);
        }
        let truth = |i: usize| &turns[i].truth;
        let span = |i: usize| &turns[i].spans[0];
        // First turn: nothing cached, and no attribute whatever the API sends for that.
        match *first_turn {
            "zero" => assert_eq!(truth(0)["cache_read_input_tokens"], 0, "{path}: the API sends 0"),
            _ => assert!(truth(0)["cache_read_input_tokens"].is_null(), "{path}: the API leaves it out"),
        }
        assert_eq!(span(0).attr(sc::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS), None, "{path}");
        // Later turns: hits reported and carried exactly; the input total includes them.
        let hits: Vec<i64> = (1..3).map(|i| truth(i)["cache_read_input_tokens"].as_i64().unwrap()).collect();
        assert!(hits.iter().all(|h| *h > 0), "{path}: {hits:?}");
        assert_eq!(hits[1], truth(2)["input_tokens"].as_i64().unwrap() - 1, "{path}: all but the last token");
        for i in 1..3 {
            assert_eq!(span(i).attr_int(sc::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS), Some(hits[i - 1]), "{path}");
            assert!(span(i).attr_int(sc::GEN_AI_USAGE_INPUT_TOKENS).unwrap() > hits[i - 1], "{path}: total");
        }
        if *path == "/v1/messages" {
            // Anthropic's input_tokens leaves the hits out; the conventions' total adds them.
            let usage = &truth(2)["usage"];
            assert_eq!(
                span(2).attr_int(sc::GEN_AI_USAGE_INPUT_TOKENS),
                Some(usage["input_tokens"].as_i64().unwrap() + usage["cache_read_input_tokens"].as_i64().unwrap())
            );
        }
        if path.starts_with("/api/") {
            assert_eq!(span(2).attr_int(sc::OLLAMA_PROMPT_EVAL_CACHED_COUNT), Some(hits[1]), "{path}");
            assert_eq!(span(0).attr(sc::OLLAMA_PROMPT_EVAL_CACHED_COUNT), None, "{path}");
        }
    }
}

/// The model's reasoning, streamed or not, in every dialect: counted as the bytes of thinking
/// the stand-in sent (`thinking`, `reasoning`, thinking blocks, Responses reasoning summaries).
#[test]
fn reasoning_is_counted_streamed_or_not_in_every_dialect() {
    let msgs = r#"[{"role":"user","content":"Count to 5."}]"#;
    let bodies = [
        ("/api/chat", format!(r#"{{"model":"qwen3","think":true,"messages":{msgs}"#)),
        ("/api/generate", r#"{"model":"qwen3","think":true,"prompt":"Count to 5.""#.to_string()),
        (
            "/v1/chat/completions",
            format!(
                r#"{{"model":"qwen3","reasoning_effort":"high","stream_options":{{"include_usage":true}},"messages":{msgs}"#
            ),
        ),
        ("/v1/responses", format!(r#"{{"model":"qwen3","reasoning":{{"effort":"high"}},"input":{msgs}"#)),
        (
            "/v1/messages",
            format!(
                r#"{{"model":"qwen3","max_tokens":256,"thinking":{{"type":"enabled","budget_tokens":100}},"messages":{msgs}"#
            ),
        ),
    ];
    let mut reqs = Vec::new();
    for (path, body) in &bodies {
        for stream in [false, true] {
            reqs.push(post(path, &format!(r#"{body},"stream":{stream}}}"#)).header("X-Standin-Scenario", "thinking"));
        }
    }
    let obs = run(&reqs);
    for o in &obs {
        check_common(o);
        let what = format!("{} stream={}", o.truth["path"], o.truth["stream"]);
        let thinking = o.truth["thinking"].as_str().unwrap();
        assert!(!thinking.is_empty(), "{what}: the stand-in thought");
        assert_eq!(o.spans[0].attr_int(sc::OLLAMA_RESPONSE_REASONING_BYTES), Some(thinking.len() as i64), "{what}");
    }
}

#[test]
fn model_management_and_meta_routes() {
    let big = vec![b'G'; 3 * 1024 * 1024 + 17];
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let reqs = vec![
        post("/api/pull", r#"{"model":"llama3.2"}"#),
        post("/api/pull", r#"{"name":"all-minilm","stream":false}"#),
        post("/api/push", r#"{"model":"me/llama3.2"}"#),
        post("/api/create", r#"{"model":"mine","from":"llama3.2","system":"be nice"}"#),
        post("/api/show", r#"{"model":"llama3.2"}"#),
        get("GET", "/api/tags"),
        get("GET", "/api/ps"),
        post("/api/copy", r#"{"source":"llama3.2","destination":"backup"}"#),
        Req {
            method: "DELETE",
            path: "/api/delete".into(),
            body: br#"{"model":"backup"}"#.to_vec(),
            headers: Vec::new(),
        },
        get("HEAD", &format!("/api/blobs/{digest}")),
        Req { method: "POST", path: format!("/api/blobs/{digest}"), body: big.clone(), headers: Vec::new() },
        get("GET", "/api/version"),
        get("HEAD", "/"),
        get("GET", "/"),
        get("GET", "/v1/models"),
        get("GET", "/v1/models/llama3.2"),
        get("GET", "/no/such/route"),
    ];
    let obs = run(&reqs);
    for o in &obs {
        check_common(o);
    }
    let span = |i: usize| &obs[i].spans[0];
    let names: Vec<&str> = obs.iter().map(|o| o.spans[0].name.as_str()).collect();
    assert_eq!(
        names,
        [
            "POST /api/pull",
            "POST /api/pull",
            "POST /api/push",
            "POST /api/create",
            "POST /api/show",
            "GET /api/tags",
            "GET /api/ps",
            "POST /api/copy",
            "DELETE /api/delete",
            "HEAD /api/blobs/{digest}",
            "POST /api/blobs/{digest}",
            "GET /api/version",
            "HEAD /",
            "GET /",
            "GET /v1/models",
            "GET /v1/models/{model}",
            "GET",
        ]
    );
    // Pull progress: the distinct steps in order, the last digest and byte counts, success.
    let lines: Vec<Value> =
        String::from_utf8_lossy(&obs[0].body).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut steps: Vec<String> = Vec::new();
    for l in &lines {
        let s = l["status"].as_str().unwrap().to_owned();
        if steps.last() != Some(&s) {
            steps.push(s);
        }
    }
    assert!(steps.len() >= 3, "{steps:?}");
    assert_eq!(span(0).attr_strs(sc::OLLAMA_PROGRESS_STEPS).map(<[String]>::to_vec), Some(steps));
    assert_eq!(span(0).attr_str(sc::OLLAMA_PROGRESS_STATUS), Some("success"));
    let last_digest = lines.iter().rev().find_map(|l| l["digest"].as_str());
    assert_eq!(span(0).attr_str(sc::OLLAMA_PROGRESS_DIGEST), last_digest);
    let last_total = lines.iter().rev().find_map(|l| l["total"].as_i64());
    assert_eq!(span(0).attr_int(sc::OLLAMA_PROGRESS_TOTAL), last_total);
    // Model management is not a GenAI operation: the model is named, but not as `gen_ai.*`
    // (backends would count the span as an LLM call).
    assert_eq!(span(0).attr_str(sc::OLLAMA_MODEL), Some("llama3.2"));
    for o in &obs {
        assert!(o.spans[0].attributes.iter().all(|kv| !kv.key.starts_with("gen_ai.")), "{:?}", o.spans[0].name);
    }
    assert_eq!(span(0).status, StatusCode::Unset);
    // Not streamed, legacy `name`.
    assert_eq!(span(1).attr_str(sc::OLLAMA_MODEL), Some("all-minilm"));
    assert_eq!(span(1).attr_str(sc::OLLAMA_PROGRESS_STATUS), Some("success"));
    assert_eq!(span(2).attr_str(sc::OLLAMA_PROGRESS_STATUS), Some("success"));
    assert_eq!(span(3).attr_str(sc::OLLAMA_REQUEST_FROM), Some("llama3.2"));
    assert_eq!(span(3).attr_str(sc::OLLAMA_MODEL), Some("mine"));
    assert_eq!(span(4).attr_str(sc::OLLAMA_MODEL), Some("llama3.2"));
    // Listings count their models.
    let count =
        |i: usize| serde_json::from_slice::<Value>(&obs[i].body).unwrap()["models"].as_array().map(|a| a.len() as i64);
    assert_eq!(span(5).attr_int(sc::OLLAMA_RESPONSE_MODELS), count(5));
    assert_eq!(span(6).attr_int(sc::OLLAMA_RESPONSE_MODELS), count(6));
    assert_eq!(span(7).attr_str(sc::OLLAMA_MODEL), Some("llama3.2"));
    assert_eq!(span(7).attr_str(sc::OLLAMA_REQUEST_DESTINATION), Some("backup"));
    assert_eq!(span(8).attr_str(sc::OLLAMA_MODEL), Some("backup"));
    // Blobs: the upload counted, never buffered or parsed.
    assert_eq!(span(9).attr_int(sc::HTTP_RESPONSE_STATUS_CODE), Some(404));
    assert_eq!(span(9).status, StatusCode::Unset, "a 4xx is the client's problem on a plain HTTP span");
    assert_eq!(span(10).attr_int(sc::OLLAMA_REQUEST_BODY_SIZE), Some(big.len() as i64));
    assert_eq!(span(10).attr_int(sc::HTTP_RESPONSE_STATUS_CODE), Some(201));
    // Meta routes and an unknown path keep plain HTTP spans.
    for (o, r) in obs.iter().zip(&reqs).skip(11) {
        assert!(o.spans[0].attr(sc::GEN_AI_OPERATION_NAME).is_none(), "{}", o.spans[0].name);
        assert_eq!((o.spans[0]).attr_str(sc::URL_PATH), Some(r.path.as_str()));
    }
    assert_eq!(span(16).attr_str(sc::HTTP_ROUTE), None);
    assert_eq!(span(16).attr_int(sc::HTTP_RESPONSE_STATUS_CODE), Some(404));
}

fn chunked(status: &str, headers: &str, pieces: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut out = vec![
        format!(
            "HTTP/1.1 {status}\r\nDate: Sat, 21 Nov 2026 10:00:00 GMT\r\n{headers}Transfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes(),
    ];
    for p in pieces {
        let mut w = format!("{:x}\r\n", p.len()).into_bytes();
        w.extend_from_slice(p);
        w.extend_from_slice(b"\r\n");
        out.push(w);
    }
    out.push(b"0\r\n\r\n".to_vec());
    out
}

fn compress(coding: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zstd" => ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest),
        _ => unreachable!(),
    }
}

/// Traffic the stand-in does not produce: compressed bodies (each coding, cut anywhere across
/// HTTP chunks), a pull whose progress stream ends in an error line, a compressed request.
#[test]
fn compressed_bodies_and_progress_errors() {
    let chat_lines = concat!(
        r#"{"model":"llama3.2","created_at":"2026-11-21T10:00:00Z","message":{"role":"assistant","content":"Hel"},"done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2026-11-21T10:00:00Z","message":{"role":"assistant","content":"lo"},"done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2026-11-21T10:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":90000000,"load_duration":1000000,"prompt_eval_count":11,"prompt_eval_duration":2000000,"eval_count":2,"eval_duration":30000000}"#,
        "\n",
    );
    let sse = concat!(
        r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama3.2","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama3.2","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"stop"}]}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama3.2","system_fingerprint":"fp_ollama","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":1,"total_tokens":8}}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );
    let generate = r#"{"model":"llama3.2","created_at":"2026-11-21T10:00:00Z","response":"Four.","done":true,"done_reason":"stop","total_duration":50000000,"prompt_eval_count":5,"eval_count":3,"eval_duration":10000000}"#;
    let pull = [
        r#"{"status":"pulling manifest"}"#,
        r#"{"status":"pulling dde5aa3fc5ff","digest":"sha256:dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff","total":2019377376,"completed":1000}"#,
        r#"{"error":"max retries exceeded: unexpected EOF"}"#,
    ];
    let gz = compress("gzip", chat_lines.as_bytes());
    let df = compress("deflate", sse.as_bytes());
    let zs = compress("zstd", generate.as_bytes());
    let thirds = |b: &[u8]| -> Vec<Vec<u8>> { b.chunks(b.len().div_ceil(3)).map(<[u8]>::to_vec).collect() };
    let gz_pieces = thirds(&gz);
    let df_pieces = thirds(&df);
    let pull_lines: Vec<String> = pull.iter().map(|l| format!("{l}\n")).collect();
    let ndjson = "Content-Type: application/x-ndjson\r\n";
    let responses = vec![
        chunked(
            "200 OK",
            &format!("Content-Encoding: gzip\r\n{ndjson}"),
            &gz_pieces.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        ),
        chunked(
            "200 OK",
            "Content-Encoding: deflate\r\nContent-Type: text/event-stream\r\n",
            &df_pieces.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        ),
        vec![{
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Encoding: zstd\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
                zs.len()
            )
            .into_bytes();
            r.extend_from_slice(&zs);
            r
        }],
        chunked("200 OK", ndjson, &pull_lines.iter().map(String::as_bytes).collect::<Vec<_>>()),
        chunked("200 OK", ndjson, &[pull_lines[0].as_bytes()]),
    ];
    let server = ScriptedServer::start(responses, Duration::from_millis(3)).unwrap();
    let tap = Tap::start(server.addr).unwrap();
    let gz_request = compress("gzip", br#"{"model":"llama3.2","prompt":"2+2?","stream":false}"#);
    let reqs = vec![
        post("/api/chat", r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}"#),
        post(
            "/v1/chat/completions",
            r#"{"model":"llama3.2","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
        ),
        Req {
            method: "POST",
            path: "/api/generate".into(),
            body: gz_request,
            headers: vec![("Content-Encoding", "gzip".into())],
        },
        post("/api/pull", r#"{"model":"llama3.2"}"#),
        post("/api/pull", r#"{"model":"llama3.2"}"#),
    ];
    let mut conn = TcpStream::connect(tap.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for r in &reqs {
        conn.write_all(&r.bytes()).unwrap();
        read_response(&mut conn, false);
    }
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let _ = conn.read_to_end(&mut Vec::new());
    std::thread::sleep(Duration::from_millis(100));
    let mut calls = testkit::drive::all_spans(
        &tap.packets(),
        PipelineConfig::default(),
        SpanConfig { id_seed: Some(2), ..Default::default() },
    );
    calls.sort_by_key(|(c, _)| c.times.request_start);
    assert_eq!(calls.len(), 5);
    let span = |i: usize| &calls[i].1[0];
    for (i, (call, spans)) in calls.iter().take(3).enumerate() {
        assert!(call.incomplete.is_empty(), "{i}: {:?}", call.incomplete);
        assert_eq!(spans[0].status, StatusCode::Unset, "{i}: {}", spans[0].status_message);
    }
    // gzip NDJSON, cut across chunks: every number exact.
    assert_eq!(span(0).attr_int(sc::GEN_AI_USAGE_INPUT_TOKENS), Some(11));
    assert_eq!(span(0).attr_int(sc::GEN_AI_USAGE_OUTPUT_TOKENS), Some(2));
    assert_eq!(span(0).attr_int(sc::OLLAMA_RESPONSE_TEXT_BYTES), Some(5));
    assert_eq!(span(0).attr_int(sc::OLLAMA_RESPONSE_BODY_SIZE), Some(gz.len() as i64), "wire bytes, not decoded");
    // deflate SSE with usage.
    assert_eq!(span(1).attr_int(sc::GEN_AI_USAGE_INPUT_TOKENS), Some(7));
    assert_eq!(span(1).attr_int(sc::GEN_AI_USAGE_OUTPUT_TOKENS), Some(1));
    assert_eq!(span(1).attr_str(sc::GEN_AI_RESPONSE_ID), Some("chatcmpl-1"));
    // zstd JSON answer to a gzip-compressed request.
    assert_eq!(span(2).attr_str(sc::GEN_AI_REQUEST_MODEL), Some("llama3.2"));
    assert_eq!(calls[2].0.request.stream, Some(false), "the gzip request body was read");
    assert_eq!(span(2).attr(sc::GEN_AI_REQUEST_STREAM), None, "only a streamed request says so");
    assert_eq!(span(2).attr_int(sc::GEN_AI_USAGE_OUTPUT_TOKENS), Some(3));
    // A pull whose stream ends in an error line: an error with Ollama's message, the progress
    // so far kept.
    assert_eq!(span(3).status, StatusCode::Error);
    assert_eq!(span(3).status_message, "max retries exceeded: unexpected EOF");
    assert_eq!(span(3).attr_int(sc::OLLAMA_PROGRESS_COMPLETED), Some(1000));
    assert_eq!(
        span(3).attr_strs(sc::OLLAMA_PROGRESS_STEPS),
        Some(&["pulling manifest".to_string(), "pulling dde5aa3fc5ff".to_string()][..])
    );
    // A pull stream that ends without `success`: an error too.
    assert_eq!(span(4).status, StatusCode::Error);
    assert_eq!(span(4).attr_str(sc::ERROR_TYPE), Some("incomplete_stream"), "{:?}", span(4).attributes);
}
