//! Large generated captures for benchmarks: many calls over keep-alive connections, written to
//! a pcap file once and reused.

use std::path::PathBuf;

use crate::fixtures::{self, Fixture};
use crate::pcap::{FileFormat, LinkType, TsPrecision, WriterConfig, write_file};
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
    let mut specs: Vec<ConnectionSpec> = (0..connections)
        .map(|i| {
            ConnectionSpec::loopback_v4(20000 + i as u16)
                .seed(i as u64)
                .timing(timing)
                .start_at(1_767_225_600_000_000_000 + i as u64 * 1_000)
        })
        .collect();
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
    let path = unique_path(&format!("steady-{per_second}-{seconds}"));
    let all = fixtures::load_all()?;
    let streaming: Vec<&Fixture> = all.iter().filter(|f| f.is_streamed() && f.response.status == 200).collect();
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
