//! Where calls go once complete: spans are built once and handed to every sink — stdout (JSON
//! lines or one readable line per call), OTLP, metrics.

pub mod compat;
pub mod config;
pub mod otlp_traces;
pub mod runtime;
pub mod setup;
pub mod stdout;
pub mod time;
pub mod transport;

use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::llm::LlmCall;
use crate::replay::Report;
use crate::span::sampling::SamplingConfig;
use crate::span::{Resource, SpanBuilder, SpanConfig, SpanRecord};

/// How calls are shown on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdoutFormat {
    /// One readable line per call.
    Text,
    /// One OTLP-shaped JSON object per span per line.
    Json,
    /// Nothing on stdout.
    None,
}

/// A destination for completed calls and their spans.
pub trait Sink: Send {
    /// One completed call and its spans (the call's own span first, then its children).
    /// `spans` is empty when the trace was sampled out: the call still counts for metrics.
    fn export(&mut self, call: &LlmCall, spans: &[SpanRecord], resource: &Resource);
    /// A periodic snapshot of the tracer's own counters (capture, pipeline, spans).
    fn health(&mut self, _report: &Report) {}
    /// Pushes out what is buffered.
    fn flush(&mut self) -> io::Result<()>;
    /// End of the run: deliver what is queued within `timeout`.
    fn shutdown(&mut self, _timeout: Duration) -> io::Result<()> {
        self.flush()
    }
    /// The span export queue's counters, for sinks that have one.
    fn export_stats(&self) -> Option<ExportStats> {
        None
    }
}

/// What happened to the spans handed to an exporting sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Spans accepted into the queue.
    pub enqueued: u64,
    /// Spans the collector acknowledged.
    pub exported: u64,
    /// Spans dropped because the queue was full (spans or bytes cap).
    pub dropped_queue_full: u64,
    /// Spans the collector refused (a non-retryable error).
    pub rejected: u64,
    /// Spans still queued (or being retried) at the shutdown deadline.
    pub dropped_shutdown: u64,
    /// Export attempts that failed (each retry counts).
    pub failed_attempts: u64,
    /// Spans and bytes queued now (the batch in flight included), and the caps.
    pub queue_spans: u64,
    pub queue_bytes: u64,
    pub queue_max_spans: u64,
    pub queue_max_bytes: u64,
}

impl ExportStats {
    /// Spans lost, for whatever reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.rejected + self.dropped_shutdown
    }
}

impl fmt::Display for ExportStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "otlp: {} spans exported, {} dropped ({} queue full, {} refused by the collector, {} at shutdown), {} failed attempts; queue {} spans / {} bytes (caps {} / {})",
            self.exported,
            self.dropped(),
            self.dropped_queue_full,
            self.rejected,
            self.dropped_shutdown,
            self.failed_attempts,
            self.queue_spans,
            self.queue_bytes,
            self.queue_max_spans,
            self.queue_max_bytes
        )
    }
}

/// Spans on stdout.
pub struct StdoutSink<W: Write + Send> {
    format: StdoutFormat,
    out: W,
    write_error: Option<io::Error>,
}

impl<W: Write + Send> StdoutSink<W> {
    pub fn new(format: StdoutFormat, out: W) -> Self {
        StdoutSink { format, out, write_error: None }
    }
}

impl<W: Write + Send> Sink for StdoutSink<W> {
    fn export(&mut self, call: &LlmCall, spans: &[SpanRecord], resource: &Resource) {
        let res = match self.format {
            StdoutFormat::Json => spans.iter().try_for_each(|s| stdout::write_json(&mut self.out, s, resource)),
            StdoutFormat::Text => match spans.first() {
                Some(span) => stdout::write_text(&mut self.out, call, span),
                None => Ok(()),
            },
            StdoutFormat::None => Ok(()),
        };
        if let Err(e) = res
            && self.write_error.is_none()
        {
            self.write_error = Some(e);
        }
    }

    /// The first write error, if any (a closed pipe is not one: `| head` is fine).
    fn flush(&mut self) -> io::Result<()> {
        let flushed = self.out.flush();
        let not_pipe = |e: io::Error| if e.kind() == io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e) };
        match self.write_error.take() {
            Some(e) => not_pipe(e),
            None => flushed.or_else(not_pipe),
        }
    }
}

/// Everything that happens to a completed call: its spans are built and handed to each sink.
pub struct Outputs {
    builder: SpanBuilder,
    resource: Resource,
    sampling: SamplingConfig,
    sinks: Vec<Box<dyn Sink>>,
    spans: u64,
    sampled_out: u64,
    /// Call spans the sampler dropped (bounded): a tool span inferred later hangs from one of
    /// them and goes with it.
    dropped: std::collections::VecDeque<[u8; 8]>,
    openinference: bool,
}

/// Dropped call spans remembered for their later tool spans.
const DROPPED_REMEMBERED: usize = 4096;

impl Outputs {
    pub fn new(resource: Resource, span_config: SpanConfig, sinks: Vec<Box<dyn Sink>>) -> Self {
        Self::with_sampling(resource, span_config, SamplingConfig::default(), sinks)
    }

    pub fn with_sampling(
        resource: Resource,
        span_config: SpanConfig,
        sampling: SamplingConfig,
        sinks: Vec<Box<dyn Sink>>,
    ) -> Self {
        Outputs {
            builder: SpanBuilder::new(span_config),
            resource,
            sampling,
            sinks,
            spans: 0,
            sampled_out: 0,
            dropped: Default::default(),
            openinference: false,
        }
    }

    /// Calls whose spans the sampler dropped (their metrics still count).
    pub fn sampled_out(&self) -> u64 {
        self.sampled_out
    }

    /// Applies a sampling configuration (the default keeps everything).
    pub fn with_sampling_config(mut self, sampling: SamplingConfig) -> Self {
        self.sampling = sampling;
        self
    }

    /// Adds OpenInference mirrors of the GenAI attributes to every span (`--compat openinference`).
    pub fn with_openinference(mut self, on: bool) -> Self {
        self.openinference = on;
        self
    }

    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// Spans produced so far.
    pub fn spans(&self) -> u64 {
        self.spans
    }

    pub fn call(&mut self, call: LlmCall) {
        let mut spans = self.builder.build_all(&call);
        if self.openinference {
            spans.iter_mut().for_each(compat::openinference);
        }
        if !self.sampling.keep(&call, &spans[0]) {
            self.sampled_out += 1;
            if self.dropped.len() == DROPPED_REMEMBERED {
                self.dropped.pop_front();
            }
            self.dropped.push_back(spans[0].span_id);
            spans.clear();
        } else {
            if !self.dropped.is_empty() {
                // Tool spans belong to the earlier call they hang from.
                let me = spans[0].span_id;
                spans.retain(|s| s.parent_span_id.is_none_or(|p| p == me || !self.dropped.contains(&p)));
            }
            // Exported means sampled, as an SDK's decision sets it (a tail rule or an always-on
            // sampler may keep a call whose parent was not sampled).
            spans.iter_mut().for_each(|s| s.flags |= 1);
        }
        self.spans += spans.len() as u64;
        // In Kubernetes the server's workload names the service (see crate::attribution).
        let resource = crate::attribution::call_resource(&self.resource, &call);
        for sink in &mut self.sinks {
            sink.export(&call, &spans, &resource);
        }
    }

    pub fn health(&mut self, report: &Report) {
        for sink in &mut self.sinks {
            sink.health(report);
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
        self.sinks.iter().filter_map(|s| s.export_stats()).reduce(|a, b| ExportStats {
            enqueued: a.enqueued + b.enqueued,
            exported: a.exported + b.exported,
            dropped_queue_full: a.dropped_queue_full + b.dropped_queue_full,
            rejected: a.rejected + b.rejected,
            dropped_shutdown: a.dropped_shutdown + b.dropped_shutdown,
            failed_attempts: a.failed_attempts + b.failed_attempts,
            queue_spans: a.queue_spans + b.queue_spans,
            queue_bytes: a.queue_bytes + b.queue_bytes,
            queue_max_spans: a.queue_max_spans + b.queue_max_spans,
            queue_max_bytes: a.queue_max_bytes + b.queue_max_bytes,
        })
    }

    /// Shuts every sink down, in order, within `timeout` in all; the first error.
    pub fn shutdown(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut first = Ok(());
        for sink in &mut self.sinks {
            if let Err(e) = sink.shutdown(deadline.saturating_duration_since(Instant::now()))
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}

#[cfg(test)]
mod outputs_tests;
