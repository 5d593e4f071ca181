//! Spans (the tracer's JSON lines) against the stand-in's ground truth and the clients' own
//! wire-level observations.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

/// Server-side stamps are taken in user space around the stand-in's reads and writes: on a
/// loaded 2-core machine they trail the wire by a few ms, now and then by tens of ms (the
/// machine is shared; the real-time drivers come first). So they check order (the wire
/// before the stand-in's read, the stand-in's last write after the wire) and catch gross
/// errors; the precise check is against the clients' kernel timestamps (CLIENT_SLACK_MS).
const SERVER_SLACK_MS: f64 = 250.0;
/// What the issue asks of the client comparison: time to first chunk (and the start it is
/// measured from) within 2 ms of what the client saw at its socket.
pub const CLIENT_SLACK_MS: f64 = 2.0;

pub fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"].get(key)
}

pub fn attr_u64(span: &Value, key: &str) -> Option<u64> {
    attr(span, key).and_then(Value::as_u64)
}

pub fn client_port(span: &Value) -> u64 {
    attr_u64(span, "client.port").unwrap_or(0)
}

/// (client address, client port): identifies a connection even across network namespaces.
fn span_client(span: &Value) -> (Option<IpAddr>, u64) {
    (attr(span, "client.address").and_then(Value::as_str).and_then(|a| a.parse().ok()), client_port(span))
}

fn truth_client(t: &Value) -> (Option<IpAddr>, u64) {
    (t["client_addr"].as_str().and_then(|a| a.parse().ok()), t["client_port"].as_u64().unwrap_or(0))
}

pub fn start(span: &Value) -> u64 {
    span["start_time_unix_nano"].as_u64().unwrap()
}

pub fn end(span: &Value) -> u64 {
    span["end_time_unix_nano"].as_u64().unwrap()
}

pub fn incomplete(span: &Value) -> bool {
    attr(span, "ollama_tracer.incomplete").and_then(Value::as_bool).unwrap_or(false)
}

pub fn ttfc(span: &Value) -> Option<f64> {
    attr(span, "gen_ai.response.time_to_first_chunk").and_then(Value::as_f64)
}

fn ms(a: u64, b: u64) -> f64 {
    (a as f64 - b as f64) / 1e6
}

/// One line per span, for failure messages.
pub fn brief(span: &Value) -> String {
    let a = &span["attributes"];
    format!(
        "{} port {} path {} status {} tokens {}→{} incomplete {} {}",
        span["name"],
        a["client.port"],
        a["url.path"],
        a["http.response.status_code"],
        a["gen_ai.usage.input_tokens"],
        a["gen_ai.usage.output_tokens"],
        a["ollama_tracer.incomplete"],
        a["ollama_tracer.incomplete_reasons"]
    )
}

/// `gen_ai.operation.name` the tracer gives a route (None: a plain HTTP span).
fn operation_for(path: &str) -> Option<&'static str> {
    match path {
        "/api/chat" | "/v1/chat/completions" | "/v1/messages" | "/v1/responses" => Some("chat"),
        "/api/generate" | "/v1/completions" => Some("text_completion"),
        "/api/embed" | "/api/embeddings" | "/v1/embeddings" => Some("embeddings"),
        _ => None,
    }
}

/// Pairs every truth record with its span: same client address and port, then the same
/// position among that connection's calls (in start order). Panics unless each call has
/// exactly one span and each span one call.
pub fn pair<'a>(spans: &'a [Value], truth: &'a [Value], what: &str) -> Vec<(&'a Value, &'a Value)> {
    type SpansAndCalls<'v> = (Vec<&'v Value>, Vec<&'v Value>);
    let mut by_conn: BTreeMap<(Option<IpAddr>, u64), SpansAndCalls> = BTreeMap::new();
    for s in spans {
        by_conn.entry(span_client(s)).or_default().0.push(s);
    }
    for t in truth {
        by_conn.entry(truth_client(t)).or_default().1.push(t);
    }
    let listing = || {
        let s: Vec<String> = spans.iter().map(brief).collect();
        let t: Vec<String> =
            truth.iter().map(|t| format!("port {} {} {}", t["client_port"], t["path"], t["model"])).collect();
        format!("spans:\n  {}\ntruth:\n  {}", s.join("\n  "), t.join("\n  "))
    };
    assert_eq!(spans.len(), truth.len(), "{what}: {} spans for {} calls\n{}", spans.len(), truth.len(), listing());
    let mut out = Vec::new();
    for (conn, (mut s, mut t)) in by_conn {
        assert_eq!(s.len(), t.len(), "{what}: client {conn:?}: {} spans for {} calls\n{}", s.len(), t.len(), listing());
        s.sort_by_key(|x| start(x));
        t.sort_by_key(|x| x["t_request_first_byte_ns"].as_u64());
        out.extend(s.into_iter().zip(t));
    }
    out
}

/// The span says exactly what the stand-in sent, and its times agree with the stand-in's.
pub fn check_exact(span: &Value, t: &Value, what: &str) {
    check_values(span, t, what);
    check_server_times(span, t, what);
}

/// The span says exactly what the stand-in sent (times aside).
pub fn check_values(span: &Value, t: &Value, what: &str) {
    let what = format!("{what}: {} {} (port {})", t["path"], t["model"], t["client_port"]);
    let path = t["path"].as_str().unwrap();
    assert_eq!(attr(span, "url.path").and_then(Value::as_str), Some(path), "{what}: {}", brief(span));
    assert_eq!(attr_u64(span, "http.response.status_code"), t["status"].as_u64(), "{what}: {}", brief(span));
    assert!(!incomplete(span), "{what}: flagged incomplete: {}", brief(span));
    assert_ne!(span["status"]["code"], "error", "{what}: error status: {span}");
    assert_eq!(attr(span, "gen_ai.operation.name").and_then(Value::as_str), operation_for(path), "{what}: operation");
    if let Some(model) = t["model"].as_str() {
        assert_eq!(attr(span, "gen_ai.request.model").and_then(Value::as_str), Some(model), "{what}: model");
    }
    assert_eq!(attr_u64(span, "gen_ai.usage.input_tokens"), t["input_tokens"].as_u64(), "{what}: input tokens");
    assert_eq!(attr_u64(span, "gen_ai.usage.output_tokens"), t["output_tokens"].as_u64(), "{what}: output tokens");
    // Prompt-cache hits as sent; none when not sent or 0.
    let cached = t["cache_read_input_tokens"].as_u64().filter(|n| *n > 0);
    assert_eq!(attr_u64(span, "gen_ai.usage.cache_read.input_tokens"), cached, "{what}: cache read");
    let mut reason = t["done_reason"].as_str().or(t["finish_reason"].as_str());
    if path == "/v1/responses" {
        // The Responses API's status, as the conventions' finish reason (OpenAI's mapping).
        let tools = t["tool_calls"].as_array().is_some_and(|a| !a.is_empty());
        reason = reason.map(|r| match r {
            "completed" if tools => "tool_calls",
            "completed" => "stop",
            "incomplete" => "length",
            other => other,
        });
    }
    let reasons = attr(span, "gen_ai.response.finish_reasons").and_then(Value::as_array);
    assert_eq!(reasons.and_then(|r| r.first()).and_then(Value::as_str), reason, "{what}: finish reason");
    let tools: Vec<&str> = t["tool_calls"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let span_tools: Vec<&str> = attr(span, "ollama.response.tool_calls")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(span_tools, tools, "{what}: tool calls");
    if path != "/api/embeddings" {
        // (The legacy route's single vector is not counted as a list.)
        assert_eq!(attr_u64(span, "ollama.response.embedding_count"), t["embeddings"].as_u64(), "{what}: embeddings");
    }
    assert_eq!(attr(span, "gen_ai.request.stream").and_then(Value::as_bool).unwrap_or(false), t["stream"] == true);
}

/// The span's start, end and first chunk agree with the stand-in's own stamps of its read,
/// last write and first output write.
pub fn check_server_times(span: &Value, t: &Value, what: &str) {
    server_times(span, t, what, false);
}

/// `client_side`: the span's end is the client's last read, after (or about) the server's
/// last write, not before it.
fn server_times(span: &Value, t: &Value, what: &str, client_side: bool) {
    let what = format!("{what}: {} {} (port {})", t["path"], t["model"], t["client_port"]);
    let read = t["t_request_first_byte_ns"].as_u64().unwrap();
    assert!(
        start(span) <= read && ms(read, start(span)) < SERVER_SLACK_MS,
        "{what}: start {} vs the server's read {read} ({:+.3} ms)",
        start(span),
        ms(start(span), read)
    );
    let wrote = t["t_last_byte_ns"].as_u64().unwrap();
    let end_ok = if client_side {
        ms(end(span), wrote).abs() < SERVER_SLACK_MS
    } else {
        end(span) <= wrote && ms(wrote, end(span)) < SERVER_SLACK_MS
    };
    assert!(end_ok, "{what}: end {} vs the server's last write {wrote} ({:+.3} ms)", end(span), ms(end(span), wrote));
    if t["stream"] == true
        && let Some(first) = t["t_first_content_ns"].as_u64()
    {
        let ttfc = ttfc(span).unwrap_or_else(|| panic!("{what}: no time to first chunk"));
        let at = start(span) + (ttfc * 1e9) as u64;
        assert!(ms(at, first).abs() < SERVER_SLACK_MS, "{what}: first chunk at {at} vs the server's write {first}");
    }
}

/// A call read from a TLS library: `https`, and which library.
pub fn check_tls(span: &Value, library: &str, what: &str) {
    assert_eq!(attr(span, "url.scheme"), Some(&Value::from("https")), "{what}: {}", brief(span));
    assert_eq!(attr(span, "ollama_tracer.tls.library"), Some(&Value::from(library)), "{what}: {}", brief(span));
}

/// [`check_server_times`] for a span seen from the client's TLS library: the client wrote the
/// request before the server read it; its last read of the response and its first output
/// chunk are the client's, a moment after the server's writes (the server's stamps trail the
/// wire too, so either may come first: within the slack).
pub fn check_server_times_tls(span: &Value, t: &Value, what: &str) {
    server_times(span, t, what, true);
}

/// [`check_sessions`] for calls seen from the clients' TLS library (`library`): one exact,
/// `https` span per call; client timings (at the TLS layer) within 2 ms when the drivers give
/// them.
pub fn check_sessions_tls(
    spans: &[Value],
    truth: &[Value],
    clients: &[Value],
    library: &str,
    what: &str,
) -> (f64, f64) {
    for (span, t) in pair(spans, truth, what) {
        check_values(span, t, what);
        check_server_times_tls(span, t, what);
        check_tls(span, library, what);
    }
    let (worst_start, worst_ttfc) = check_clients(spans, truth, clients, what);
    println!(
        "{what}: {} calls, one exact https span each; client vs span: start ≤ {worst_start:.3} ms, time to first chunk ≤ {worst_ttfc:.3} ms",
        truth.len()
    );
    (worst_start, worst_ttfc)
}

/// For a call the capture saw only in part: whatever number the span carries is the true one.
pub fn check_no_wrong_numbers(span: &Value, t: &Value, what: &str) {
    let what = format!("{what}: {} {} (port {}): {}", t["path"], t["model"], t["client_port"], brief(span));
    let same = |key: &str, truth: Option<u64>| {
        if let Some(v) = attr_u64(span, key) {
            assert_eq!(Some(v), truth, "{what}: {key}");
        }
    };
    same("gen_ai.usage.input_tokens", t["input_tokens"].as_u64());
    same("gen_ai.usage.output_tokens", t["output_tokens"].as_u64());
    same("ollama.prompt_eval_count", t["prompt_eval_count"].as_u64());
    same("gen_ai.usage.cache_read.input_tokens", t["cache_read_input_tokens"].as_u64());
    same("ollama.eval_count", t["eval_count"].as_u64());
    same("http.response.status_code", t["status"].as_u64());
    if t["path"] != "/api/embeddings" {
        same("ollama.response.embedding_count", t["embeddings"].as_u64());
    }
    if let Some(model) = attr(span, "gen_ai.request.model").and_then(Value::as_str) {
        assert_eq!(Some(model), t["model"].as_str(), "{what}: model");
    }
    if t["outcome"] == "complete" && t["status"] == 200 {
        // Nothing went wrong on the wire: a capture loss is no cancellation, no server error.
        assert_eq!(attr(span, "error.type"), None, "{what}: error claimed");
        assert_ne!(span["status"]["code"], "error", "{what}: error status");
    }
    if !incomplete(span) {
        // (Times aside: under a deliberate overload the stand-in's own stamps lag the wire.)
        check_values(span, t, &format!("{what} (complete)"));
    }
}

/// Differences between the span and what the client saw at its socket: (start − request
/// write, span's time to first chunk − the client's), in ms.
pub fn check_client(span: &Value, c: &Value, what: &str) -> (f64, Option<f64>) {
    let what = format!("{what}: {} {}", c["driver"], c["call"]);
    let write = c["t_request_write_ns"].as_u64().unwrap_or_else(|| panic!("{what}: no request write time"));
    assert!(
        c["write_stamp"] == "kernel" || c["write_stamp"] == "tls",
        "{what}: the request write carries the kernel's transmit time (or, over TLS, the client's at the TLS layer)"
    );
    let d_start = ms(start(span), write);
    assert!(d_start.abs() < CLIENT_SLACK_MS, "{what}: span start {:+.3} ms from the client's request write", d_start);
    let mut d_ttfc = None;
    if c["stream"] == true {
        let first = c["t_first_output_read_ns"].as_u64().unwrap_or_else(|| panic!("{what}: client saw no output"));
        let client = (first - write) as f64 / 1e6;
        let traced = ttfc(span).unwrap_or_else(|| panic!("{what}: span has no time to first chunk")) * 1e3;
        let d = traced - client;
        if c["first_output_exact"] == true {
            assert!(
                d.abs() < CLIENT_SLACK_MS,
                "{what}: time to first chunk {traced:.3} ms, the client saw {client:.3} ms ({d:+.3} ms)"
            );
            d_ttfc = Some(d);
        } else {
            // The client's reader came late and one receive took the first chunk with later
            // ones: its time is an upper bound, the receive before a lower bound.
            let before = c["t_first_output_prev_read_ns"].as_u64().map_or(0.0, |t| (t as f64 - write as f64) / 1e6);
            assert!(
                traced < client + CLIENT_SLACK_MS && traced > before - CLIENT_SLACK_MS,
                "{what}: time to first chunk {traced:.3} ms, the client saw it between {before:.3} and {client:.3} ms"
            );
            println!("{what}: the client's reader came late; time to first chunk {traced:.3} ms within its bounds");
        }
    }
    for (key, field) in [("gen_ai.usage.input_tokens", "input_tokens"), ("gen_ai.usage.output_tokens", "output_tokens")]
    {
        if let Some(n) = c[field].as_u64() {
            assert_eq!(attr_u64(span, key), Some(n), "{what}: {key} vs the client's");
        }
    }
    if let Some(n) = c["cache_read_input_tokens"].as_u64() {
        let want = (n > 0).then_some(n);
        assert_eq!(attr_u64(span, "gen_ai.usage.cache_read.input_tokens"), want, "{what}: cache read vs the client's");
    }
    (d_start, d_ttfc)
}

/// The span of the client's call: same client address and port, nearest start.
pub fn span_of<'a>(spans: &'a [Value], c: &Value) -> &'a Value {
    let port = c["local_port"].as_u64().unwrap_or_else(|| panic!("{} {}: no local port", c["driver"], c["call"]));
    let addr: Option<IpAddr> = c["local_addr"].as_str().and_then(|a| a.parse().ok());
    let write = c["t_request_write_ns"].as_u64().unwrap();
    spans
        .iter()
        .filter(|s| span_client(s) == (addr, port))
        .min_by_key(|s| start(s).abs_diff(write))
        .unwrap_or_else(|| panic!("{} {}: no span on port {port}", c["driver"], c["call"]))
}

/// Everything about a run of client sessions: one exact span per call, client timings within
/// 2 ms. Returns the largest |differences| (start, ttfc) in ms, for the log.
pub fn check_sessions(spans: &[Value], truth: &[Value], clients: &[Value], what: &str) -> (f64, f64) {
    for (span, t) in pair(spans, truth, what) {
        check_exact(span, t, what);
    }
    let (worst_start, worst_ttfc) = check_clients(spans, truth, clients, what);
    println!(
        "{what}: {} calls, one exact span each; client vs span: start ≤ {worst_start:.3} ms, time to first chunk ≤ {worst_ttfc:.3} ms",
        truth.len()
    );
    (worst_start, worst_ttfc)
}

/// Every client record against its span ([`check_client`]); the largest |differences|
/// (start, time to first chunk) in ms.
fn check_clients(spans: &[Value], truth: &[Value], clients: &[Value], what: &str) -> (f64, f64) {
    assert_eq!(clients.len(), truth.len(), "{what}: client records vs calls");
    let (mut worst_start, mut worst_ttfc) = (0f64, 0f64);
    for c in clients {
        let (ds, dt) = check_client(span_of(spans, c), c, what);
        worst_start = worst_start.max(ds.abs());
        worst_ttfc = worst_ttfc.max(dt.map_or(0.0, f64::abs));
    }
    (worst_start, worst_ttfc)
}

/// The truth record of a span's call: same client address and port, nearest request start.
pub fn truth_of<'a>(truth: &'a [Value], span: &Value) -> Option<&'a Value> {
    truth
        .iter()
        .filter(|t| truth_client(t) == span_client(span))
        .min_by_key(|t| t["t_request_first_byte_ns"].as_u64().unwrap_or(0).abs_diff(start(span)))
}

/// Spans of calls made by the load generator: the span starts within 2 ms of the request
/// write; returns the difference in ms.
pub fn check_load_start(span: &Value, rec: &testkit::load::CallRecord, what: &str) -> f64 {
    let d = ms(start(span), rec.t_write_ns);
    assert!(d.abs() < CLIENT_SLACK_MS, "{what}: span start {d:+.3} ms from the request write ({})", brief(span));
    d
}

/// Once attached, every thread of the daemon holds at most CAP_SYS_PTRACE (attribution's
/// /proc reads) in its effective, permitted, inheritable and ambient sets, and the main thread
/// set no_new_privs — except the TLS probes' thread, which attaches uprobes to programs as they
/// start and keeps what that needs (CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE,
/// CAP_DAC_READ_SEARCH) and nothing else.
pub fn capabilities_dropped(pid: u32, what: &str) {
    const SYS_PTRACE: u64 = 1 << 19;
    const TLS_PROBES: u64 = (1 << 21) | (1 << 39) | (1 << 38) | SYS_PTRACE | (1 << 2);
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads");
    let mut threads = 0;
    for t in tasks {
        let path = t.unwrap().path();
        let Ok(status) = std::fs::read_to_string(path.join("status")) else { continue };
        let field = |name: &str| {
            let l = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {status}"));
            u64::from_str_radix(l[name.len()..].trim(), 16).unwrap()
        };
        let name = status.lines().next().unwrap_or("").to_owned();
        let allowed = if name.ends_with(ollama_tracer::capture::tls::THREAD_NAME) { TLS_PROBES } else { SYS_PTRACE };
        for set in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:"] {
            let v = field(set);
            let allowed = if matches!(set, "CapInh:" | "CapAmb:") { 0 } else { allowed };
            assert_eq!(v & !allowed, 0, "{what}: thread {} ({name}) still holds {set} {v:#x}", path.display());
        }
        threads += 1;
    }
    assert!(threads >= 2, "{what}: the pipeline thread runs too");
    let main = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(main.lines().any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')), "{what}: no_new_privs\n{main}");
}
