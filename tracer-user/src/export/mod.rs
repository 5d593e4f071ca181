//! The span destinations: stdout (one readable line per call, or OTLP-shaped JSON lines) and
//! OTLP ([`otlp`]). Spans arrive built and sampled; this only ships them.

pub mod json_line;
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
    /// One JSON line at a time, built in a plain vector: the writer gets the line in one piece
    /// (small writes through it were 2.4 % of a replay's instructions).
    line: Vec<u8>,
    write_error: Option<io::Error>,
}

impl<W: Write + Send> StdoutSink<W> {
    pub fn new(format: StdoutFormat, out: W) -> Self {
        StdoutSink { format, out, line: Vec::new(), write_error: None }
    }
}

impl<W: Write + Send> Sink for StdoutSink<W> {
    fn export(&mut self, traced: &TracedCall) {
        let (call, spans, resource) = (&traced.call, &traced.spans, &*traced.resource);
        let res = match self.format {
            StdoutFormat::Json => spans.iter().try_for_each(|s| {
                self.line.clear();
                json_line::span_line(&mut self.line, s, resource);
                self.out.write_all(&self.line)
            }),
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
