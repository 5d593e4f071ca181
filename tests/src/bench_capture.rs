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
