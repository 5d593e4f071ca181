//! Large generated captures for benchmarks: many calls over keep-alive connections, written to
//! a pcap file once and reused.

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fixtures::{self, Fixture};
use crate::pcap::{FileFormat, LinkType, TsPrecision, WriterConfig, write_file};
use crate::standin::gojson;
use crate::synth::{ConnectionSpec, Timing, synthesize};
use crate::wire::{self, RenderOptions};

pub struct BenchCapture {
    pub path: PathBuf,
    pub calls: u64,
    /// TCP payload bytes in the capture.
    pub payload_bytes: u64,
    pub file_bytes: u64,
}

/// `calls` calls, mostly streaming (native NDJSON and OpenAI SSE), a few non-streamed and
/// embeddings, spread over `connections` keep-alive connections; written as pcap (ns, SLL2).
pub fn streaming_mix(calls: usize, connections: usize) -> anyhow::Result<BenchCapture> {
    let path = std::env::temp_dir().join(format!("ollama-tracer-bench-{calls}-{connections}.pcap"));
    let meta = path.with_extension("meta.json");
    // Generation is deterministic: reuse a capture written by an earlier run.
    if let (Ok(m), Ok(file)) = (std::fs::read_to_string(&meta), std::fs::metadata(&path))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&m)
        && v["file_bytes"].as_u64() == Some(file.len())
    {
        return Ok(BenchCapture {
            path,
            calls: calls as u64,
            payload_bytes: v["payload_bytes"].as_u64().unwrap_or(0),
            file_bytes: file.len(),
        });
    }
    let all = fixtures::load_all()?;
    let streaming: Vec<&Fixture> = all.iter().filter(|f| f.is_streamed() && f.response.status == 200).collect();
    let other: Vec<&Fixture> =
        all.iter().filter(|f| !f.is_streamed() && f.response.status == 200 && f.path().contains("embed")).collect();
    anyhow::ensure!(!streaming.is_empty() && !other.is_empty(), "fixtures missing");
    let timing = Timing { ttfb_ns: 2_000_000, inter_write_ns: 1_000_000, think_ns: 500_000, ..Timing::default() };
    let mut specs = keep_alive_connections(connections, timing);
    for n in 0..calls {
        // Nine streaming calls for every embeddings call.
        let f = if n % 10 == 9 { other[n / 10 % other.len()] } else { streaming[n % streaming.len()] };
        let spec = &mut specs[n % connections];
        *spec = std::mem::replace(spec, ConnectionSpec::loopback_v4(1))
            .exchange(wire::render(f, &RenderOptions::default()));
    }
    let capture = synthesize(&specs)?;
    let payload_bytes = capture.packets.iter().map(|p| p.payload.len() as u64).sum();
    write_file(&path, WriterConfig::new(FileFormat::Pcap, TsPrecision::Nano, LinkType::LinuxSll2), &capture.packets)?;
    let file_bytes = std::fs::metadata(&path)?.len();
    std::fs::write(&meta, serde_json::json!({"file_bytes": file_bytes, "payload_bytes": payload_bytes}).to_string())?;
    Ok(BenchCapture { path, calls: calls as u64, payload_bytes, file_bytes })
}

/// `n` loopback connections from consecutive client ports, opened a microsecond apart.
fn keep_alive_connections(n: usize, timing: Timing) -> Vec<ConnectionSpec> {
    (0..n)
        .map(|i| {
            ConnectionSpec::loopback_v4(20000 + i as u16)
                .seed(i as u64)
                .timing(timing)
                .start_at(1_767_225_600_000_000_000 + i as u64 * 1_000)
        })
        .collect()
}

/// The kinds of call in [`large_mix`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MixKind {
    NativeStream,
    OpenAiStream,
    Embed,
}

/// A capture of at least `target_bytes` of TCP payload shaped like a busy Ollama host: by calls
/// 75 % native `/api/chat` streams (50–400 tokens, one NDJSON line per packet, as Ollama
/// flushes), 20 % `/v1/chat/completions` SSE streams with usage, 5 % `/api/embed` batches of 8
/// vectors of 1024–4096 dimensions. Bodies are synthesised in Ollama's exact shapes (Go JSON,
/// float32 formatting); 256 keep-alive connections. Cached in the temp dir like
/// [`streaming_mix`]. Returns the capture and the number of calls of each kind.
pub fn large_mix(target_bytes: u64) -> anyhow::Result<(BenchCapture, [u64; 3])> {
    let path = std::env::temp_dir().join(format!("ollama-tracer-bench-large-{target_bytes}.pcap"));
    let meta = path.with_extension("meta.json");
    if let (Ok(m), Ok(file)) = (std::fs::read_to_string(&meta), std::fs::metadata(&path))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&m)
        && v["file_bytes"].as_u64() == Some(file.len())
    {
        let kinds =
            [v["native"].as_u64().unwrap_or(0), v["openai"].as_u64().unwrap_or(0), v["embed"].as_u64().unwrap_or(0)];
        let cap = BenchCapture {
            path,
            calls: v["calls"].as_u64().unwrap_or(0),
            payload_bytes: v["payload_bytes"].as_u64().unwrap_or(0),
            file_bytes: file.len(),
        };
        return Ok((cap, kinds));
    }
    const CONNECTIONS: usize = 256;
    let mut rng = StdRng::seed_from_u64(42);
    let timing = Timing { ttfb_ns: 2_000_000, inter_write_ns: 200_000, think_ns: 300_000, ..Timing::default() };
    let mut specs = keep_alive_connections(CONNECTIONS, timing);
    let mut kinds = [0u64; 3];
    let mut bytes = 0u64;
    let mut n = 0usize;
    while bytes < target_bytes {
        let kind = match n % 20 {
            19 => MixKind::Embed,
            15..=18 => MixKind::OpenAiStream,
            _ => MixKind::NativeStream,
        };
        let f = synthetic_call(kind, n, &mut rng);
        let ex = wire::render(&f, &RenderOptions::default());
        bytes += (ex.request.bytes.len() + ex.response.bytes().len()) as u64;
        kinds[kind as usize] += 1;
        let spec = &mut specs[n % CONNECTIONS];
        *spec = std::mem::replace(spec, ConnectionSpec::loopback_v4(1)).exchange(ex);
        n += 1;
    }
    let capture = synthesize(&specs)?;
    let payload_bytes = capture.packets.iter().map(|p| p.payload.len() as u64).sum();
    write_file(&path, WriterConfig::new(FileFormat::Pcap, TsPrecision::Nano, LinkType::LinuxSll2), &capture.packets)?;
    drop(capture);
    let file_bytes = std::fs::metadata(&path)?.len();
    std::fs::write(
        &meta,
        serde_json::json!({
            "file_bytes": file_bytes, "payload_bytes": payload_bytes, "calls": n,
            "native": kinds[0], "openai": kinds[1], "embed": kinds[2],
        })
        .to_string(),
    )?;
    Ok((BenchCapture { path, calls: n as u64, payload_bytes, file_bytes }, kinds))
}

const WORDS: &[&str] = &[
    " the",
    " model",
    " answer",
    " is",
    " a",
    " token",
    "ing",
    " stream",
    ",",
    ".",
    " of",
    " and",
    " to",
    " Ollama",
    " response",
    " with",
    "\n",
    " time",
    " first",
    " data",
    " in",
    " that",
    " it",
    " we",
];

/// One synthetic call of `kind` as a fixture (so it is framed exactly like recorded ones).
pub fn synthetic_call(kind: MixKind, n: usize, rng: &mut StdRng) -> Fixture {
    let created = "2026-01-01T00:00:00.123456789Z";
    let (uri, req_body, content_type, body) = match kind {
        MixKind::NativeStream => {
            let tokens = rng.random_range(50..=400);
            let mut body = String::with_capacity(tokens * 140);
            for _ in 0..tokens {
                let w = WORDS[rng.random_range(0..WORDS.len())];
                body.push_str(&format!(
                    r#"{{"model":"llama3.2","created_at":"{created}","message":{{"role":"assistant","content":{}}},"done":false}}"#,
                    serde_json::to_string(w).expect("string")
                ));
                body.push('\n');
            }
            body.push_str(&format!(
                r#"{{"model":"llama3.2","created_at":"{created}","message":{{"role":"assistant","content":""}},"done":true,"done_reason":"stop","total_duration":{},"load_duration":1200000,"prompt_eval_count":{},"prompt_eval_duration":21000000,"eval_count":{tokens},"eval_duration":{}}}"#,
                tokens as u64 * 15_000_000 + 40_000_000,
                rng.random_range(20..2000),
                tokens as u64 * 15_000_000,
            ));
            body.push('\n');
            let req = format!(r#"{{"model":"llama3.2","messages":[{{"role":"user","content":"Question {n}?"}}]}}"#);
            ("http://127.0.0.1:11434/api/chat", req, "application/x-ndjson", body)
        }
        MixKind::OpenAiStream => {
            let tokens = rng.random_range(50..=400);
            let id = format!("chatcmpl-{}", 100 + n % 900);
            let chunk = |delta: &str, finish: &str| {
                format!(
                    r#"data: {{"id":"{id}","object":"chat.completion.chunk","created":1767225600,"model":"llama3.2","system_fingerprint":"fp_ollama","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]}}"#
                ) + "\n\n"
            };
            let mut body = String::with_capacity(tokens * 230);
            for _ in 0..tokens {
                let w = WORDS[rng.random_range(0..WORDS.len())];
                body.push_str(&chunk(
                    &format!(r#"{{"role":"assistant","content":{}}}"#, serde_json::to_string(w).expect("string")),
                    "null",
                ));
            }
            body.push_str(&chunk(r#"{"role":"assistant","content":""}"#, r#""stop""#));
            body.push_str(&format!(
                r#"data: {{"id":"{id}","object":"chat.completion.chunk","created":1767225600,"model":"llama3.2","system_fingerprint":"fp_ollama","choices":[],"usage":{{"prompt_tokens":{},"completion_tokens":{tokens},"total_tokens":{}}}}}"#,
                30,
                30 + tokens
            ));
            body.push_str("\n\ndata: [DONE]\n\n");
            let req = format!(
                r#"{{"model":"llama3.2","messages":[{{"role":"user","content":"Question {n}?"}}],"stream":true,"stream_options":{{"include_usage":true}}}}"#
            );
            ("http://127.0.0.1:11434/v1/chat/completions", req, "text/event-stream", body)
        }
        MixKind::Embed => {
            let dim = [1024, 2048, 3072, 4096][rng.random_range(0..4)];
            let batch = 8;
            let mut body = String::from(r#"{"model":"qwen3-embedding","embeddings":["#);
            for b in 0..batch {
                if b > 0 {
                    body.push(',');
                }
                body.push('[');
                for d in 0..dim {
                    if d > 0 {
                        body.push(',');
                    }
                    body.push_str(&gojson::float32(rng.random_range(-0.2f32..0.2)));
                }
                body.push(']');
            }
            body.push_str(r#"],"total_duration":80000000,"load_duration":1000000,"prompt_eval_count":64}"#);
            let inputs: Vec<String> = (0..batch).map(|i| format!("\"document {n}.{i}\"")).collect();
            let req = format!(r#"{{"model":"qwen3-embedding","input":[{}]}}"#, inputs.join(","));
            ("http://127.0.0.1:11434/api/embed", req, "application/json; charset=utf-8", body)
        }
    };
    Fixture::made_up(
        format!("synthetic-{n}"),
        "bench_capture::large_mix",
        uri.into(),
        &[("Content-Type", "application/json"), ("User-Agent", "ollama-python/0.6.3")],
        req_body,
        content_type,
        body,
    )
}

/// A path of its own for every capture written by this process: a replay maps its file, so one
/// must never be rewritten under another test's feet.
fn unique_path(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("ollama-tracer-{name}-{}-{n}.pcap", std::process::id()))
}

fn write_capture(path: PathBuf, specs: &[ConnectionSpec], calls: u64) -> anyhow::Result<BenchCapture> {
    let capture = synthesize(specs)?;
    let payload_bytes = capture.packets.iter().map(|p| p.payload.len() as u64).sum();
    write_file(&path, WriterConfig::new(FileFormat::Pcap, TsPrecision::Nano, LinkType::LinuxSll2), &capture.packets)?;
    let file_bytes = std::fs::metadata(&path)?.len();
    Ok(BenchCapture { path, calls, payload_bytes, file_bytes })
}

/// A capture file removed when dropped (the steady ones are large).
pub struct TempCapture(pub BenchCapture);

impl Drop for TempCapture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0.path);
    }
}

impl std::ops::Deref for TempCapture {
    type Target = BenchCapture;
    fn deref(&self) -> &BenchCapture {
        &self.0
    }
}

/// A steady stream for export tests: `per_second` calls every second for `seconds` seconds
/// (capture time), each on its own connection, streaming and embeddings mixed as in
/// [`streaming_mix`]. Replayed with `--speed 1` it stands in for live traffic.
pub fn steady(per_second: u64, seconds: u64) -> anyhow::Result<TempCapture> {
    steady_small(per_second, seconds, usize::MAX)
}

/// [`steady`] with only the fixtures whose response body is at most `max_body` bytes: high call
/// rates with little payload (what `top`'s cost depends on is calls, not bytes).
pub fn steady_small(per_second: u64, seconds: u64, max_body: usize) -> anyhow::Result<TempCapture> {
    let path = unique_path(&format!("steady-{per_second}-{seconds}-{max_body}"));
    let all = fixtures::load_all()?;
    let streaming: Vec<&Fixture> = all
        .iter()
        .filter(|f| f.is_streamed() && f.response.status == 200 && f.response.body.len() <= max_body)
        .collect();
    let other: Vec<&Fixture> =
        all.iter().filter(|f| !f.is_streamed() && f.response.status == 200 && f.path().contains("embed")).collect();
    anyhow::ensure!(!streaming.is_empty() && !other.is_empty(), "fixtures missing");
    // Short streams: each call ends well within its second.
    let timing = Timing { ttfb_ns: 20_000_000, inter_write_ns: 2_000_000, ..Timing::default() };
    let calls = per_second * seconds;
    let step = 1_000_000_000 / per_second.max(1);
    let specs: Vec<ConnectionSpec> = (0..calls)
        .map(|n| {
            let f = if n % 10 == 9 {
                other[n as usize / 10 % other.len()]
            } else {
                streaming[n as usize % streaming.len()]
            };
            // Client ports from 20000 up: never the server's 11434.
            ConnectionSpec::loopback_v4(20_000 + (n % 40_000) as u16)
                .seed(n)
                .timing(timing)
                .start_at(1_767_225_600_000_000_000 + n * step)
                .exchange(wire::render(f, &RenderOptions::default()))
        })
        .collect();
    write_capture(path, &specs, calls).map(TempCapture)
}

/// Calls that exercise what export must carry besides plain successes: a W3C `traceparent`
/// and `tracestate` (remote parent, kept trace id), HTTP errors, a client that disconnects
/// mid-stream. Starts at `start_ns`.
pub fn export_mix(start_ns: u64) -> anyhow::Result<TempCapture> {
    use crate::synth::{Close, ExchangeSpec};
    let path = unique_path("export-mix");
    let all = fixtures::load_all()?;
    let mut errors: Vec<&Fixture> = Vec::new();
    for f in all.iter().filter(|f| f.response.status >= 400) {
        if !errors.iter().any(|e| e.response.status == f.response.status && e.path() == f.path()) {
            errors.push(f);
        }
    }
    errors.truncate(4);
    let streamed: Vec<&Fixture> = all.iter().filter(|f| f.is_streamed() && f.response.status == 200).take(2).collect();
    anyhow::ensure!(errors.len() >= 2 && streamed.len() == 2, "fixtures missing");
    let mut specs: Vec<ConnectionSpec> = Vec::new();
    // Each call on its own connection (client port 30000 + n), one second apart.
    let mut next = |spec: fn(u16) -> ConnectionSpec, f: &dyn Fn(ConnectionSpec) -> ConnectionSpec| {
        let n = specs.len() as u64;
        specs.push(f(spec(30_000 + n as u16)).start_at(start_ns + n * 1_000_000_000));
    };
    for (i, f) in streamed.iter().enumerate() {
        let mut opts = RenderOptions::default();
        opts.request.extra_headers = vec![
            ("traceparent".into(), format!("00-0af7651916cd43dd8448eb211c80319{i}-b7ad6b716920333{i}-0{i}")),
            ("tracestate".into(), format!("congo=t61rcWkgMzE,rojo=00f067aa0ba902b{i}")),
        ];
        next(ConnectionSpec::loopback_v4, &|c| c.seed(i as u64).exchange(wire::render(f, &opts)));
    }
    for (i, f) in errors.iter().enumerate() {
        next(ConnectionSpec::loopback_v4, &|c| {
            c.seed(10 + i as u64).exchange(wire::render(f, &RenderOptions::default()))
        });
    }
    // The client resets the connection after three response writes: `cancelled`.
    let cut = ExchangeSpec { cut_after_writes: Some(3), ..wire::render(streamed[0], &RenderOptions::default()).into() };
    next(ConnectionSpec::loopback_v4, &|c| c.seed(99).close(Close::ClientRst).exchange(cut.clone()));
    let calls = specs.len() as u64;
    write_capture(path, &specs, calls).map(TempCapture)
}
