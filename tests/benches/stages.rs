//! Each stage of the pipeline on its own, on the benchmark mix (native NDJSON streams, OpenAI
//! SSE streams, large embedding batches; see `testkit::bench_capture::large_mix`), in TCP
//! payload (or body) bytes per second:
//!
//! - `capture`: pcap records merged by time and decoded to segments (link, IP, TCP).
//! - `reassembly`: those segments through per-connection reassembly.
//! - `http`: reassembly plus HTTP framing (heads, chunked bodies, pairing).
//! - `decode/*`: one response body of each kind through the Ollama decoders, one chunk at a
//!   time as the server writes them.
//! - `spans`: span building and JSON lines for every call of the capture (calls per second).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;

use ollama_tracer::export::stdout::write_json;
use testkit::bench_capture::{MixKind, large_mix, synthetic_call};
use testkit::wire;
use tracer_core::capture::file::MergedFrames;
use tracer_core::capture::packet::{Decoded, decode};
use tracer_core::http::{HttpConfig, HttpTracker};
use tracer_core::llm::LlmCall;
use tracer_core::llm::response::ResponseDecoder;
use tracer_core::llm::route::Route;
use tracer_core::pipeline::PipelineConfig;
use tracer_core::reassembly::{Reassembler, ReassemblyConfig, StreamEvent};
use tracer_core::replay;
use tracer_core::segment::{CaptureMeta, Direction, FlowKey, Orientation, Segment, TcpFlags, Timestamp};
use tracer_core::span::{Resource, SpanBuilder, SpanConfig};

/// A decoded segment that owns its payload, so later stages run without the capture stage.
struct Owned {
    ts: Timestamp,
    flow: FlowKey,
    dir: Direction,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    payload: Vec<u8>,
    missing: u32,
    meta: CaptureMeta,
}

impl Owned {
    fn segment(&self) -> Segment<'_> {
        Segment {
            ts: self.ts,
            flow: self.flow,
            dir: self.dir,
            seq: self.seq,
            ack: self.ack,
            flags: self.flags,
            payload: &self.payload,
            missing: self.missing,
            meta: self.meta,
        }
    }
}

fn stages(c: &mut Criterion) {
    // `cargo xtask bench --smoke` runs each benchmark once on a small capture.
    let bytes = if std::env::var_os("OLLAMA_TRACER_BENCH_SMOKE").is_some() { 1_000_000 } else { 64_000_000 };
    let (cap, _) = large_mix(bytes).expect("generate capture");
    let files = replay::open_all(&[&cap.path]).expect("open");
    let orientation = Orientation::new(&[11434]);
    let capture_pass = || {
        let mut n = 0u64;
        let mut frames = MergedFrames::new(&files);
        while let Some((frame, _)) = frames.next() {
            let link = frame.link.expect("supported link");
            if let Ok(Decoded::Segment(seg)) = decode(link, frame.data, frame.orig_len, frame.ts, &orientation) {
                n += seg.payload.len() as u64;
            }
        }
        n
    };
    let mut segments = Vec::new();
    let mut frames = MergedFrames::new(&files);
    while let Some((frame, _)) = frames.next() {
        if let Ok(Decoded::Segment(s)) = decode(frame.link.unwrap(), frame.data, frame.orig_len, frame.ts, &orientation)
        {
            segments.push(Owned {
                ts: s.ts,
                flow: s.flow,
                dir: s.dir,
                seq: s.seq,
                ack: s.ack,
                flags: s.flags,
                payload: s.payload.to_vec(),
                missing: s.missing,
                meta: s.meta,
            });
        }
    }

    let mut g = c.benchmark_group("stage");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(cap.payload_bytes));
    g.bench_function("capture", |b| b.iter(|| black_box(capture_pass())));
    g.bench_function("reassembly", |b| {
        b.iter(|| {
            let mut r = Reassembler::new(ReassemblyConfig::default());
            let mut bytes = 0u64;
            for s in &segments {
                r.push(&s.segment(), &mut |ev| {
                    if let StreamEvent::Data { data, .. } = ev {
                        bytes += data.len() as u64;
                    }
                });
            }
            black_box(bytes)
        })
    });
    g.bench_function("http", |b| {
        b.iter(|| {
            let mut r = Reassembler::new(ReassemblyConfig::default());
            let mut h = HttpTracker::new(HttpConfig::default());
            let mut events = 0u64;
            for s in &segments {
                r.push(&s.segment(), &mut |ev| h.push(ev, &mut |_| events += 1));
            }
            black_box(events)
        })
    });
    g.finish();

    // One body of each kind, cut where the server flushes (lines, SSE events).
    let mut rng = StdRng::seed_from_u64(7);
    let mut g = c.benchmark_group("decode");
    for (name, kind, route) in [
        ("native_ndjson", MixKind::NativeStream, Route::Chat),
        ("openai_sse", MixKind::OpenAiStream, Route::OpenAiChat),
        ("embed_json", MixKind::Embed, Route::Embed),
    ] {
        let f = synthetic_call(kind, 1, &mut rng);
        let body = f.response.body.as_bytes().to_vec();
        let content_type = f.response.headers.get("content-type").map(str::to_owned);
        let pieces: Vec<&[u8]> = match kind {
            MixKind::Embed => vec![&body[..]],
            _ => wire::split_body(wire::detect_body_kind(content_type.as_deref(), &body), &body),
        };
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut d = ResponseDecoder::new(route, 200, content_type.as_deref());
                for (i, p) in pieces.iter().enumerate() {
                    d.feed(p, Timestamp(i as u64));
                }
                black_box(d.finish(Timestamp(pieces.len() as u64), &mut Default::default()))
            })
        });
    }
    g.finish();

    let mut calls: Vec<LlmCall> = Vec::new();
    replay::replay(&files, &[11434], PipelineConfig::default(), &mut |c| calls.push(c));
    let resource = Resource::new("ollama", None, Vec::new());
    let mut g = c.benchmark_group("spans");
    g.throughput(Throughput::Elements(calls.len() as u64));
    g.sample_size(10);
    g.bench_function("build_and_json", |b| {
        b.iter(|| {
            let mut builder = SpanBuilder::new(SpanConfig { id_seed: Some(1), ..Default::default() });
            let mut out = Vec::with_capacity(16 << 20);
            for c in &calls {
                for s in builder.build_all(c) {
                    write_json(&mut out, &s, &resource).unwrap();
                }
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
