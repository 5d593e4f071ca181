//! Where calls go once complete: spans built once, then written to stdout (JSON lines or one
//! readable line per call); OTLP and Prometheus alongside.

pub mod stdout;
pub mod time;

use std::io::{self, Write};

use crate::llm::LlmCall;
use crate::span::{Resource, SpanBuilder, SpanConfig};

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

/// Everything that happens to a completed call: its span is built and written out.
pub struct Outputs<W: Write> {
    builder: SpanBuilder,
    resource: Resource,
    format: StdoutFormat,
    out: W,
    spans: u64,
    write_error: Option<io::Error>,
}

impl<W: Write> Outputs<W> {
    pub fn new(resource: Resource, span_config: SpanConfig, format: StdoutFormat, out: W) -> Self {
        Outputs { builder: SpanBuilder::new(span_config), resource, format, out, spans: 0, write_error: None }
    }

    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// Spans produced so far.
    pub fn spans(&self) -> u64 {
        self.spans
    }

    pub fn call(&mut self, call: LlmCall) {
        let span = self.builder.build(&call);
        self.spans += 1;
        let res = match self.format {
            StdoutFormat::Json => stdout::write_json(&mut self.out, &span, &self.resource),
            StdoutFormat::Text => stdout::write_text(&mut self.out, &call, &span),
            StdoutFormat::None => Ok(()),
        };
        if let Err(e) = res
            && self.write_error.is_none()
        {
            self.write_error = Some(e);
        }
    }

    /// Flushes what was written; the first write error, if any (a closed pipe is not one).
    pub fn flush(&mut self) -> io::Result<()> {
        let flushed = self.out.flush();
        match self.write_error.take() {
            Some(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e),
            _ => flushed.or_else(|e| if e.kind() == io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e) }),
        }
    }
}
