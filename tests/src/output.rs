//! The binary as the export tests run it: running it, reading its JSON spans and summary,
//! OTLP values as JSON, and the expected metrics recomputed from spans.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::Value;

pub fn bin() -> Command {
    let mut c = Command::new(crate::process::tracer_bin());
    // The tests set what they need; nothing from the caller's environment leaks in.
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") {
            c.env_remove(k);
        }
    }
    c
}

pub fn real_capture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/captures/real-clients.pcap")
}

/// After the real capture's last packet: the synthetic calls follow it.
pub const MIX_START_NS: u64 = 1_800_000_000_000_000_000;

pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub out: Output,
}

pub fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("run ollama-tracer");
    let r = Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        out,
    };
    assert!(r.out.status.success(), "ollama-tracer failed: {}\n{}", r.out.status, r.stderr);
    r
}

pub fn json_spans(stdout: &str) -> Vec<Value> {
    stdout.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).expect("JSON span")).collect()
}

/// The calls' own spans (SERVER), without their children (Ollama's phases, tool runs).
pub fn call_spans(spans: &[Value]) -> Vec<Value> {
    spans.iter().filter(|s| s["kind"] == "server").cloned().collect()
}

/// Every span a replay of `path` produces (calls and children), from a JSON run.
pub fn spans_of(path: &std::path::Path) -> u64 {
    let out = bin().args(["replay", "--output", "json", "--quiet"]).arg(path).output().expect("run replay");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    json_spans(&String::from_utf8_lossy(&out.stdout)).len() as u64
}

/// A number from the summary: the value before `label` on the line starting with `line`.
pub fn summary_number(stderr: &str, line: &str, label: &str) -> u64 {
    let l =
        stderr.lines().find(|l| l.trim_start().starts_with(line)).unwrap_or_else(|| panic!("no `{line}` in\n{stderr}"));
    let i = l.find(label).unwrap_or_else(|| panic!("no `{label}` in `{l}`"));
    let before = l[..i].trim_end();
    let digits: String = before.chars().rev().take_while(|c| c.is_ascii_digit()).collect();
    digits.chars().rev().collect::<String>().parse().unwrap_or_else(|_| panic!("no number before `{label}` in `{l}`"))
}

/// A number from the summary: the value after `label` on the line starting with `line`.
pub fn summary_after(stderr: &str, line: &str, label: &str) -> u64 {
    let l =
        stderr.lines().find(|l| l.trim_start().starts_with(line)).unwrap_or_else(|| panic!("no `{line}` in\n{stderr}"));
    let i = l.find(label).unwrap_or_else(|| panic!("no `{label}` in `{l}`"));
    let digits: String = l[i + label.len()..].trim_start().chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap_or_else(|_| panic!("no number after `{label}` in `{l}`"))
}

pub fn any_json(v: &AnyValue) -> Value {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(f)) => Value::from(*f),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(any_json).collect()),
        other => panic!("unexpected attribute value {other:?}"),
    }
}

/// Attributes as (key, JSON value), in order.
pub fn kvs(attrs: &[KeyValue]) -> Vec<(String, Value)> {
    attrs.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, any_json))).collect()
}

/// Plain HTTP/1.1 request (`Connection: close`); the status code and the body.
pub fn http(
    method: &str,
    addr: std::net::SocketAddr,
    path: &str,
    json: Option<&str>,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let body = json.unwrap_or("");
    let ctype = if json.is_some() { "Content-Type: application/json\r\n" } else { "" };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").map_or(buf.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut rest = &buf[split..];
    // Chunked bodies (uvicorn streams JSON this way) are de-chunked here.
    let body = if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..i]).trim(), 16).unwrap_or(0);
            let data = &rest[i + 2..];
            if n == 0 || data.len() < n {
                break;
            }
            out.extend_from_slice(&data[..n]);
            rest = data[n..].strip_prefix(b"\r\n").unwrap_or(&data[n..]);
        }
        out
    } else {
        rest.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Lower-case hex of an id, as the tracer writes it.
pub use tracer_core::span::hex;

pub const DURATION: [f64; 14] =
    [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];
pub const TOKENS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];
pub const TTFT: [f64; 16] =
    [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
pub const TPOT: [f64; 13] = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5];
pub const HTTP: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// Histograms: name, unit, bounds (the spec's, written out here independently of the code).
pub const HISTOGRAMS: [(&str, &str, &[f64]); 9] = [
    ("gen_ai.execute_tool.duration", "s", &DURATION),
    ("gen_ai.client.operation.duration", "s", &DURATION),
    ("gen_ai.client.token.usage", "{token}", &TOKENS),
    ("gen_ai.client.operation.time_to_first_chunk", "s", &DURATION),
    ("gen_ai.client.operation.time_per_output_chunk", "s", &DURATION),
    ("gen_ai.server.request.duration", "s", &DURATION),
    ("gen_ai.server.time_to_first_token", "s", &TTFT),
    ("gen_ai.server.time_per_output_token", "s", &TPOT),
    ("http.server.request.duration", "s", &HTTP),
];

/// Series key: sorted attributes, values as JSON text (so `25` and `"25"` differ).
pub type Series = Vec<(String, String)>;

/// A series key from OTLP attributes.
pub fn series(attrs: &[KeyValue]) -> Series {
    let mut s: Series = kvs(attrs).into_iter().map(|(k, v)| (k, v.to_string())).collect();
    s.sort();
    s
}

/// The observations each histogram series must hold, recomputed from the spans' attributes
/// (`time_per_output_chunk` is not derivable from spans and is left out).
pub fn expected_observations(spans: &[Value]) -> BTreeMap<(String, Series), Vec<f64>> {
    let mut out: BTreeMap<(String, Series), Vec<f64>> = BTreeMap::new();
    let mut put = |name: &str, attrs: Vec<(String, Value)>, v: f64| {
        let mut attrs: Series = attrs.into_iter().map(|(k, v)| (k, v.to_string())).collect();
        attrs.sort();
        out.entry((name.to_string(), attrs)).or_default().push(v);
    };
    for s in spans {
        let a = s["attributes"].as_object().expect("attributes");
        let duration =
            (s["end_time_unix_nano"].as_u64().unwrap() - s["start_time_unix_nano"].as_u64().unwrap()) as f64 / 1e9;
        if a.get("gen_ai.operation.name").and_then(Value::as_str) == Some("execute_tool") {
            // An inferred tool run: its span's duration.
            let attrs = ["gen_ai.operation.name", "gen_ai.tool.name", "gen_ai.tool.type"]
                .iter()
                .filter_map(|k| Some((k.to_string(), a.get(*k)?.clone())))
                .collect();
            put("gen_ai.execute_tool.duration", attrs, duration);
            continue;
        }
        if s["kind"] != "server" {
            // Children (phases) are not calls: no call metric comes from them.
            continue;
        }
        let get = |k: &str| a.get(k).cloned();
        let ended = !a
            .get("ollama_tracer.incomplete_reasons")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|x| x == "capture_ended"));
        let error = get("error.type");
        if ended {
            let method = a.get("http.request.method").and_then(Value::as_str).unwrap_or("");
            let known = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
            let mut h: Vec<(String, Value)> = vec![(
                "http.request.method".into(),
                Value::from(if known.contains(&method) { method } else { "_OTHER" }),
            )];
            for k in ["http.response.status_code", "http.route"] {
                if let Some(v) = get(k) {
                    h.push((k.into(), v));
                }
            }
            h.push(("url.scheme".into(), Value::from("http")));
            if let Some(e) = &error {
                let client_error = e.as_str().and_then(|s| s.parse::<u16>().ok()).is_some_and(|s| s < 500);
                if !client_error {
                    h.push(("error.type".into(), e.clone()));
                }
            }
            put("http.server.request.duration", h, duration);
        }
        let Some(op) = get("gen_ai.operation.name") else { continue };
        let mut base: Vec<(String, Value)> = vec![("gen_ai.operation.name".into(), op.clone())];
        for k in
            ["gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model", "server.address", "server.port"]
        {
            if let Some(v) = get(k) {
                base.push((k.into(), v));
            }
        }
        let with_error = || {
            let mut b = base.clone();
            if let Some(e) = &error {
                b.push(("error.type".into(), e.clone()));
            }
            b
        };
        if ended {
            put("gen_ai.client.operation.duration", with_error(), duration);
        }
        for (k, t) in [("gen_ai.usage.input_tokens", "input"), ("gen_ai.usage.output_tokens", "output")] {
            if let Some(n) = get(k) {
                let mut b = base.clone();
                b.push(("gen_ai.token.type".into(), Value::from(t)));
                put("gen_ai.client.token.usage", b, n.as_f64().unwrap());
            }
        }
        if let Some(t) = get("gen_ai.response.time_to_first_chunk") {
            put("gen_ai.client.operation.time_to_first_chunk", base.clone(), t.as_f64().unwrap());
        }
        let n = |k: &str| get(k).and_then(|v| v.as_u64());
        if let Some(total) = n("ollama.total_duration") {
            put("gen_ai.server.request.duration", with_error(), total as f64 / 1e9);
            if op != "embeddings" && n("ollama.eval_count").is_some_and(|c| c > 0) {
                let prefill = n("ollama.load_duration").unwrap_or(0) + n("ollama.prompt_eval_duration").unwrap_or(0);
                put("gen_ai.server.time_to_first_token", base.clone(), prefill as f64 / 1e9);
            }
        }
        if let (Some(d), Some(c)) = (n("ollama.eval_duration"), n("ollama.eval_count"))
            && c > 0
        {
            put("gen_ai.server.time_per_output_token", base.clone(), d as f64 / 1e9 / c as f64);
        }
    }
    out
}

/// [`expected_observations`] under the latest GenAI conventions' names: durations and token
/// histograms split by inference and embeddings, tokens by direction (no `gen_ai.token.type`).
pub fn expected_observations_latest(spans: &[Value]) -> BTreeMap<(String, Series), Vec<f64>> {
    let mut out: BTreeMap<(String, Series), Vec<f64>> = BTreeMap::new();
    for ((name, series), values) in expected_observations(spans) {
        let get = |k: &str| series.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let embeddings = get("gen_ai.operation.name") == Some("\"embeddings\"");
        let kind = if embeddings { "embeddings" } else { "inference" };
        let mut series = series.clone();
        let name = match name.as_str() {
            "gen_ai.client.operation.duration" => format!("gen_ai.client.{kind}.duration"),
            "gen_ai.client.token.usage" => {
                let direction = get("gen_ai.token.type").unwrap().trim_matches('"').to_owned();
                series.retain(|(k, _)| k != "gen_ai.token.type");
                format!("gen_ai.client.{kind}.usage.{direction}_tokens")
            }
            "gen_ai.client.operation.time_to_first_chunk" => "gen_ai.client.inference.time_to_first_chunk".into(),
            _ => name,
        };
        out.entry((name, series)).or_default().extend(values);
    }
    out
}

/// Per-bucket counts (`v <= bound`, then the overflow bucket).
pub fn buckets(values: &[f64], bounds: &[f64]) -> Vec<u64> {
    let mut c = vec![0; bounds.len() + 1];
    for v in values {
        c[bounds.iter().position(|b| v <= b).unwrap_or(bounds.len())] += 1;
    }
    c
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}
