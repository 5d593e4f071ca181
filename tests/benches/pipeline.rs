//! The whole replay pipeline on a generated capture of 10 000+ calls (mostly streaming): pcap
//! parsing → packets → reassembly → HTTP → Ollama decoding → spans → JSON lines.
//! Reports TCP-payload bytes per second; calls per second = calls / time (printed once).

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use ollama_tracer::export::stdout::write_json;
use testkit::bench_capture::{BenchCapture, streaming_mix};
use tracer_core::pipeline::PipelineConfig;
use tracer_core::replay;
use tracer_core::span::{Resource, SpanBuilder, SpanConfig};

fn pipeline(c: &mut Criterion) {
    // `cargo xtask bench --smoke` runs each benchmark once on a small capture.
    let (calls, conns) = if std::env::var_os("OLLAMA_TRACER_BENCH_SMOKE").is_some() { (200, 8) } else { (10_000, 64) };
    let cap: BenchCapture = streaming_mix(calls, conns).expect("generate capture");
    let files = replay::open_all(&[&cap.path]).expect("open");
    let resource = Resource::new("ollama", None, Vec::new());
    let run = || {
        let mut builder = SpanBuilder::new(SpanConfig { id_seed: Some(1), ..Default::default() });
        let mut out = Vec::with_capacity(64 << 20);
        let mut calls = 0u64;
        let report = replay::replay(&files, &[11434], PipelineConfig::default(), &mut |call| {
            let span = builder.build(&call);
            write_json(&mut out, &span, &resource).unwrap();
            calls += 1;
        });
        (calls, report, out.len())
    };
    // One timed run for the calls/s figure and a sanity check.
    let t = Instant::now();
    let (calls, report, _) = run();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(calls, cap.calls, "every call yields a span");
    assert_eq!(report.pipeline.llm.incomplete, 0);
    eprintln!(
        "capture: {} calls, {} packets, {:.1} MB TCP payload, {:.1} MB file; one run: {:.0} calls/s, {:.0} MB/s",
        cap.calls,
        report.capture.packets,
        cap.payload_bytes as f64 / 1e6,
        cap.file_bytes as f64 / 1e6,
        calls as f64 / secs,
        cap.payload_bytes as f64 / secs / 1e6
    );

    let mut g = c.benchmark_group("replay");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(cap.payload_bytes));
    g.bench_function("10k_streaming_calls_to_json", |b| b.iter(|| black_box(run())));
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
