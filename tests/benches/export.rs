//! Export overhead on a large replay (`streaming_mix(10_000, 64)`): spans per second through the
//! whole pipeline with export off, and with OTLP traces (gRPC, HTTP) and metrics on, delivered to
//! a real OTLP receiver in this process. Two figures per configuration: the pipeline's own pace
//! (replay until the last span is queued: what export costs the capture path) and end to end
//! (until the last span is acknowledged). Best of three runs.
//!
//! `cargo bench -p ollama-tracer-tests --bench export`

use std::time::{Duration, Instant};

use ollama_tracer::report::Report;
use ollama_tracer::run::outputs;
use ollama_tracer::settings::{self, CliExport, Environment};
use ollama_tracer::transport::Protocol;
use testkit::bench_capture::streaming_mix;
use testkit::otlp::{Receiver, Transport};
use tracer_core::pipeline::PipelineConfig;
use tracer_core::replay;
use tracer_core::span::SpanConfig;
use tracer_core::span::stage::{SpanStage, SpanStageConfig};

struct Figures {
    spans: u64,
    pipeline: Duration,
    total: Duration,
    /// CPU time of the replaying thread itself (what export costs the capture path, apart from
    /// the exporter and receiver threads competing for the same cores).
    thread_cpu: Duration,
}

/// utime + stime of the calling thread.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime); after the `)` comes field 3 (the state).
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 10)
}

fn run(files: &[tracer_core::capture::file::CaptureFile], cli: &CliExport, metrics: bool) -> Figures {
    let env = Environment::from_pairs((!metrics).then_some(("OTEL_METRICS_EXPORTER", "none")));
    let (settings, _) = settings::resolve(cli, &env).expect("settings");
    let resource = settings::resource(&settings, None);
    let mut outputs = outputs::build(
        &settings,
        &resource,
        Box::new(std::io::sink()),
        ollama_tracer::export::otlp::Delivery::Live,
        tracer_core::span::DEFAULT_COLD_START_NS,
    )
    .expect("outputs")
    .outputs;
    let config = SpanStageConfig { spans: SpanConfig { id_seed: Some(1), ..Default::default() }, ..Default::default() };
    let mut stage = SpanStage::new(resource, config);
    let t = Instant::now();
    let cpu0 = thread_cpu();
    let stats = replay::replay(files, &[11434], PipelineConfig::default(), &mut |c| {
        stage.push(c, &mut |traced| outputs.export(&traced))
    });
    let pipeline = t.elapsed();
    let thread_cpu = thread_cpu() - cpu0;
    let spans = stage.stats().spans;
    outputs.health(&Report { capture: stats.capture, pipeline: stats.pipeline, spans, ..Default::default() });
    outputs.shutdown(Some(Duration::from_secs(120))).expect("flush");
    let total = t.elapsed();
    if let Some(e) = outputs.export_stats() {
        assert_eq!(e.exported, spans, "every span delivered: {e}");
    }
    Figures { spans, pipeline, total, thread_cpu }
}

fn main() {
    let cap = streaming_mix(10_000, 64).expect("generate capture");
    let files = replay::open_all(&[&cap.path]).expect("open");
    let big_queue = |mut c: CliExport| {
        // The replay outruns any collector: a queue that holds the whole run measures delivery,
        // not drops.
        c.queue_spans = Some(1 << 20);
        c.queue_bytes = Some(1 << 30);
        c
    };
    let grpc = Receiver::start(Transport::Grpc).expect("receiver");
    let http = Receiver::start(Transport::Http).expect("receiver");
    let configs: Vec<(&str, CliExport, bool)> = vec![
        ("export off", CliExport { outputs: vec!["none".into()], ..Default::default() }, false),
        (
            "OTLP traces, gRPC",
            big_queue(CliExport {
                outputs: vec!["none".into(), "otlp".into()],
                otlp_endpoint: Some(grpc.url()),
                otlp_protocol: Some(Protocol::Grpc),
                ..Default::default()
            }),
            false,
        ),
        (
            "OTLP traces, HTTP/protobuf",
            big_queue(CliExport {
                outputs: vec!["none".into(), "otlp".into()],
                otlp_endpoint: Some(http.url()),
                otlp_protocol: Some(Protocol::HttpProtobuf),
                ..Default::default()
            }),
            false,
        ),
        (
            "OTLP traces + metrics, gRPC",
            big_queue(CliExport {
                outputs: vec!["none".into()],
                otlp_endpoint: Some(grpc.url()),
                otlp_protocol: Some(Protocol::Grpc),
                ..Default::default()
            }),
            true,
        ),
    ];
    eprintln!("capture: {} calls, {:.1} MB TCP payload", cap.calls, cap.payload_bytes as f64 / 1e6);
    // Rounds over all configurations, best of five each: a shared machine's load hits them alike.
    let mut runs: Vec<Vec<Figures>> = configs.iter().map(|_| Vec::new()).collect();
    for _ in 0..5 {
        for (i, (_, cli, metrics)) in configs.iter().enumerate() {
            runs[i].push(run(&files, cli, *metrics));
        }
    }
    for ((name, _, _), figures) in configs.iter().zip(runs) {
        let best = figures.into_iter().min_by_key(|f| f.total).expect("runs");
        eprintln!(
            "{name:30} {:>7.0} spans/s pipeline, {:>7.0} spans/s delivered, replay thread {:>4.0} µs CPU/span ({} spans)",
            best.spans as f64 / best.pipeline.as_secs_f64(),
            best.spans as f64 / best.total.as_secs_f64(),
            best.thread_cpu.as_secs_f64() * 1e6 / best.spans as f64,
            best.spans
        );
    }
}
