//! Where traced calls go: the [`Sink`] every destination implements (stdout, OTLP spans,
//! metrics, `top`) and [`Outputs`], which hands each traced call, health report and in-flight
//! snapshot to every sink. Sinks only ship: spans are built (and sampled) before, by
//! `tracer_core::span::SpanStage`.

use std::io;
use std::time::{Duration, Instant};

use tracer_core::pipeline::InFlightSnapshot;
use tracer_core::span::stage::TracedCall;

use crate::report::{ExportStats, Report};

/// A destination for traced calls.
pub trait Sink: Send {
    /// One completed call and its spans (the call's own span first, then its children).
    /// `traced.spans` is empty when the trace was sampled out: the call still counts for
    /// metrics.
    fn export(&mut self, traced: &TracedCall);
    /// A periodic snapshot of the tracer's own counters (capture, pipeline, spans).
    fn health(&mut self, _report: &Report) {}
    /// Pushes out what is buffered.
    fn flush(&mut self) -> io::Result<()>;
    /// End of the run: deliver what is queued, by `deadline` when there is one.
    fn shutdown(&mut self, _deadline: Option<Instant>) -> io::Result<()> {
        self.flush()
    }
    /// The span export queue's counters, for sinks that have one.
    fn export_stats(&self) -> Option<ExportStats> {
        None
    }
    /// Whether this sink shows calls in progress: only then are snapshots taken (`top`).
    fn wants_in_flight(&self) -> bool {
        false
    }
    /// The calls in flight now (taken at each health tick when some sink wants them).
    fn in_flight(&mut self, _snapshot: &InFlightSnapshot) {}
}

/// Every sink of a run, in the order shutdown needs (stdout, spans, then metrics, so the last
/// metrics push carries the span export's final counters; `top` last).
#[derive(Default)]
pub struct Outputs {
    sinks: Vec<Box<dyn Sink>>,
}

impl Outputs {
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Self {
        Outputs { sinks }
    }

    /// Adds a sink after the others (`top`'s view).
    pub fn push(&mut self, sink: Box<dyn Sink>) {
        self.sinks.push(sink);
    }

    pub fn export(&mut self, traced: &TracedCall) {
        for sink in &mut self.sinks {
            sink.export(traced);
        }
    }

    pub fn health(&mut self, report: &Report) {
        for sink in &mut self.sinks {
            sink.health(report);
        }
    }

    /// Whether a sink shows calls in progress (else no snapshot needs taking).
    pub fn wants_in_flight(&self) -> bool {
        self.sinks.iter().any(|s| s.wants_in_flight())
    }

    pub fn in_flight(&mut self, snapshot: &InFlightSnapshot) {
        for sink in self.sinks.iter_mut().filter(|s| s.wants_in_flight()) {
            sink.in_flight(snapshot);
        }
    }

    /// Flushes every sink; the first error.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut first = Ok(());
        for sink in &mut self.sinks {
            if let Err(e) = sink.flush()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    /// The span export counters of the sinks that export (summed).
    pub fn export_stats(&self) -> Option<ExportStats> {
        self.sinks.iter().filter_map(|s| s.export_stats()).reduce(|a, b| a + b)
    }

    /// Shuts every sink down, in order, within `timeout` in all (`None`: until delivered);
    /// the first error.
    pub fn shutdown(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut first = Ok(());
        for sink in &mut self.sinks {
            if let Err(e) = sink.shutdown(deadline)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}
