//! Where calls go once complete: spans are built once and handed to every sink — stdout (JSON
//! lines or one readable line per call), OTLP, metrics.

pub mod stdout;
pub mod time;

use std::io::{self, Write};
use std::time::Duration;

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
        }
    }

    /// Calls whose spans the sampler dropped (their metrics still count).
    pub fn sampled_out(&self) -> u64 {
        self.sampled_out
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
        if !self.sampling.keep(&call, &spans[0]) {
            self.sampled_out += 1;
            if self.dropped.len() == DROPPED_REMEMBERED {
                self.dropped.pop_front();
            }
            self.dropped.push_back(spans[0].span_id);
            spans.clear();
        } else if !self.dropped.is_empty() {
            // Tool spans belong to the earlier call they hang from.
            let me = spans[0].span_id;
            spans.retain(|s| s.parent_span_id.is_none_or(|p| p == me || !self.dropped.contains(&p)));
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

    /// Shuts every sink down within `timeout` in all; the first error.
    pub fn shutdown(&mut self, timeout: Duration) -> io::Result<()> {
        let mut first = Ok(());
        for sink in &mut self.sinks {
            if let Err(e) = sink.shutdown(timeout)
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
