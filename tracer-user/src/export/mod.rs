//! The span destinations: stdout (one readable line per call, or OTLP-shaped JSON lines) and
//! OTLP ([`otlp`]). Spans arrive built and sampled; this only ships them.

pub mod otlp;
pub mod stdout;
pub mod time;

use std::io::{self, Write};

use tracer_core::span::stage::TracedCall;

use crate::sink::Sink;

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
    fn export(&mut self, traced: &TracedCall) {
        let (call, spans, resource) = (&traced.call, &traced.spans, &*traced.resource);
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
