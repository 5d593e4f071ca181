//! Metrics from every observed call (before any sampling), and the tracer's own health.
//!
//! One aggregation, cumulative since start, read two ways: the Prometheus text format (served
//! on `--metrics-addr`) and OTLP (pushed periodically and at exit). Aggregated here rather than
//! through the OpenTelemetry SDK's instruments because `time_per_output_chunk` arrives already
//! binned per call ([`ChunkGaps`]: the pipeline never keeps one value per chunk) and the SDK's
//! histograms only take single values — merging the bins keeps every count and sum exact.
//!
//! Names, units and bucket boundaries are the semantic conventions' (v1.41 by default, the
//! latest GenAI ones on request); see the README for the table and the Prometheus names.

pub mod catalog;
pub mod health;
pub mod otlp;
pub mod prometheus;
pub mod record;
pub mod registry;

use std::time::{Duration, Instant};

use tracer_core::span::stage::TracedCall;

pub use self::catalog::{Attr, Attrs, Desc, Kind, Role};
pub use self::registry::{Metric, Points, Reader, Registry, SharedRegistry};

use crate::report::Report;
use crate::sink::Sink;

/// The sink that feeds the registry, and at shutdown pushes the last OTLP metrics and prints
/// the console metrics.
pub struct MetricsSink {
    registry: SharedRegistry,
    pusher: Option<otlp::MetricsPusher>,
    console: Option<Box<dyn std::io::Write + Send>>,
    // Field order: the server's task is aborted before the runtime goes.
    _server: Option<prometheus::Server>,
    _runtime: Option<crate::transport::runtime::ExportRuntime>,
}

impl MetricsSink {
    pub fn new(
        registry: SharedRegistry,
        pusher: Option<otlp::MetricsPusher>,
        server: Option<prometheus::Server>,
        console: Option<Box<dyn std::io::Write + Send>>,
        runtime: Option<crate::transport::runtime::ExportRuntime>,
    ) -> Self {
        MetricsSink { registry, pusher, console, _server: server, _runtime: runtime }
    }
}

impl Sink for MetricsSink {
    fn export(&mut self, traced: &TracedCall) {
        self.registry.lock().record(traced);
    }

    fn health(&mut self, report: &Report) {
        self.registry.lock().set_health(report);
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn shutdown(&mut self, deadline: Option<Instant>) -> std::io::Result<()> {
        if let Some(p) = self.pusher.take() {
            // A final push within the time left (at least a moment, even after a slow span
            // export took it all: the last cumulative values are what matter).
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()).max(Duration::from_millis(500)));
            p.finish(left);
        }
        if let Some(mut out) = self.console.take() {
            let text = {
                let mut reg = self.registry.lock();
                reg.read_peaks(Reader::Console);
                prometheus::render(&reg, None)
            };
            // `| head` is not an error.
            if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush())
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(e);
            }
        }
        Ok(())
    }
}
