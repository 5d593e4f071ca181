//! Spans on stdout: `json` (one OTLP-shaped object per span per line) and `text` (one readable
//! line per call, tcpdump-like).

use std::io::{self, Write};

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::time::rfc3339_micros;
use tracer_core::llm::LlmCall;
use tracer_core::span::{AttrValue, KeyValue, Resource, SpanRecord, hex, semconv as sc};

struct Attrs<'a>(&'a [KeyValue]);

impl Serialize for Attrs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for kv in self.0 {
            map.serialize_entry(&kv.key, &Value(&kv.value))?;
        }
        map.end()
    }
}

struct Value<'a>(&'a AttrValue);

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            AttrValue::Str(v) => s.serialize_str(v),
            AttrValue::Int(v) => s.serialize_i64(*v),
            AttrValue::F64(v) => s.serialize_f64(*v),
            AttrValue::Bool(v) => s.serialize_bool(*v),
            AttrValue::StrArray(v) => v.serialize(s),
        }
    }
}

#[derive(Serialize)]
struct Status<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct Event<'a> {
    name: &'a str,
    time_unix_nano: u64,
    attributes: Attrs<'a>,
}

#[derive(Serialize)]
struct JsonSpan<'a> {
    name: &'a str,
    kind: &'a str,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    trace_state: &'a str,
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
    status: Status<'a>,
    attributes: Attrs<'a>,
    events: Vec<Event<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    links: Vec<Link<'a>>,
    resource: Attrs<'a>,
}

#[derive(Serialize)]
struct Link<'a> {
    trace_id: String,
    span_id: String,
    attributes: Attrs<'a>,
}

/// Writes one span as a JSON line.
pub fn write_json<W: Write>(w: &mut W, span: &SpanRecord, resource: &Resource) -> io::Result<()> {
    let json = JsonSpan {
        name: &span.name,
        kind: span.kind.as_str(),
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: span.parent_span_id.map(|p| hex(&p)).unwrap_or_default(),
        trace_state: span.trace_state.as_deref().unwrap_or(""),
        start_time_unix_nano: span.start.0,
        end_time_unix_nano: span.end.0,
        status: Status { code: span.status.as_str(), message: &span.status_message },
        attributes: Attrs(&span.attributes),
        events: span
            .events
            .iter()
            .map(|e| Event { name: &e.name, time_unix_nano: e.time.0, attributes: Attrs(&e.attributes) })
            .collect(),
        links: span
            .links
            .iter()
            .map(|l| Link { trace_id: hex(&l.trace_id), span_id: hex(&l.span_id), attributes: Attrs(&l.attributes) })
            .collect(),
        resource: Attrs(&resource.attributes),
    };
    serde_json::to_writer(&mut *w, &json)?;
    w.write_all(b"\n")
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
