//! Spans on stdout: `json` (one OTLP-shaped object per span per line) and `text` (one readable
//! line per call, tcpdump-like).

use std::io::{self, Write};

use super::time::rfc3339_micros;
use tracer_core::llm::LlmCall;
use tracer_core::span::{AttrValue, Resource, SpanRecord, semconv as sc};

/// Writes one span as a JSON line.
pub fn write_json<W: Write>(w: &mut W, span: &SpanRecord, resource: &Resource) -> io::Result<()> {
    let mut line = Vec::new();
    super::json_line::span_line(&mut line, span, resource);
    w.write_all(&line)
}

fn secs(ns: i64) -> String {
    let s = ns as f64 / 1e9;
    if s < 1.0 { format!("{:.1}ms", s * 1e3) } else { format!("{s:.3}s") }
}

/// Writes one readable line for a call.
pub fn write_text<W: Write>(w: &mut W, call: &LlmCall, span: &SpanRecord) -> io::Result<()> {
    let what = match call.operation() {
        Some(op) => format!("{} {}", op.as_str(), call.model().unwrap_or("-")),
        None => format!("{} {}", call.method, call.path),
    };
    let status = call.status.map_or("---".to_string(), |s| s.to_string());
    write!(w, "{} {} → {} {what} {status}", rfc3339_micros(span.start), call.flow.client, call.flow.server)?;
    let tok = |v: Option<u64>| v.map_or("?".to_string(), |n| n.to_string());
    if call.operation().is_some() {
        write!(w, " tokens {}→{}", tok(call.response.input_tokens), tok(call.response.output_tokens))?;
    }
    if call.response.streamed
        && let Some(t) = call.time_to_first_chunk()
    {
        write!(w, " ttft {}", secs((t * 1e9) as i64))?;
    }
    write!(w, " {}", secs(span.end.since(span.start)))?;
    if !call.response.finish_reasons.is_empty() {
        write!(w, " [{}]", call.response.finish_reasons.join(","))?;
    }
    if let Some(AttrValue::Str(e)) = span.attr(sc::ERROR_TYPE) {
        write!(w, " error={e}")?;
        if !span.status_message.is_empty() {
            write!(w, " {:?}", span.status_message)?;
        }
    }
    if call.is_incomplete() {
        let reasons: Vec<&str> = call.incomplete.iter().map(|i| i.as_str()).collect();
        write!(w, " INCOMPLETE({})", reasons.join(","))?;
    }
    w.write_all(b"\n")
}
