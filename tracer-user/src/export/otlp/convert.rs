//! Our span records in the OpenTelemetry SDK's shapes, for its OTLP exporter: span data, the
//! resource, the instrumentation scope, and the size a span takes in the queue.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind as OtelKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{Array, InstrumentationScope, Key, KeyValue as OtelKv, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use tracer_core::span::semconv::SemconvMode;
use tracer_core::span::{AttrValue, KeyValue, Resource, SpanKind, SpanRecord, StatusCode};

/// The instrumentation scope of every span and metric, with the schema URL of the conventions
/// the names follow.
pub fn scope(semconv: SemconvMode) -> InstrumentationScope {
    InstrumentationScope::builder(tracer_core::span::semconv::DISTRO_NAME)
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_schema_url(semconv.schema_url())
        .build()
}

/// The SDK's resource, attribute for attribute (none of the SDK's detectors).
pub fn sdk_resource(resource: &Resource) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder_empty().with_attributes(resource.attributes.iter().map(to_kv)).build()
}

fn to_kv(kv: &KeyValue) -> OtelKv {
    let key = match &kv.key {
        Cow::Borrowed(s) => Key::from_static_str(s),
        Cow::Owned(s) => Key::from(s.clone()),
    };
    let value = match &kv.value {
        AttrValue::Str(s) => Value::String(StringValue::from(s.clone())),
        AttrValue::Int(i) => Value::I64(*i),
        AttrValue::F64(f) => Value::F64(*f),
        AttrValue::Bool(b) => Value::Bool(*b),
        AttrValue::StrArray(v) => Value::Array(Array::String(v.iter().cloned().map(StringValue::from).collect())),
    };
    OtelKv::new(key, value)
}

fn time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// One of our spans as the SDK's exportable span: same ids, parent, trace state and flags,
/// capture times, status, attributes, events and links, under `scope`.
pub fn to_span_data(span: &SpanRecord, scope: &InstrumentationScope) -> SpanData {
    // An invalid `tracestate` header is dropped, as W3C Trace Context says to.
    let trace_state = span.trace_state.as_deref().and_then(|s| s.parse::<TraceState>().ok()).unwrap_or_default();
    let context = SpanContext::new(
        TraceId::from_bytes(span.trace_id),
        SpanId::from_bytes(span.span_id),
        TraceFlags::new(span.flags),
        false,
        trace_state,
    );
    let mut events = SpanEvents::default();
    events.events = span
        .events
        .iter()
        .map(|e| {
            opentelemetry::trace::Event::new(
                e.name.clone(),
                time(e.time.0),
                e.attributes.iter().map(to_kv).collect(),
                0,
            )
        })
        .collect();
    let mut links = SpanLinks::default();
    links.links = span
        .links
        .iter()
        .map(|l| {
            let context = SpanContext::new(
                TraceId::from_bytes(l.trace_id),
                SpanId::from_bytes(l.span_id),
                TraceFlags::new(l.flags),
                false,
                TraceState::default(),
            );
            opentelemetry::trace::Link::new(context, l.attributes.iter().map(to_kv).collect(), 0)
        })
        .collect();
    SpanData {
        span_context: context,
        parent_span_id: span.parent_span_id.map_or(SpanId::INVALID, SpanId::from_bytes),
        // A call's (SERVER) parent only ever comes from the request's `traceparent`: another
        // process's span. Its children (Ollama's phases, tool runs) hang from our own spans.
        parent_span_is_remote: span.kind == SpanKind::Server && span.parent_span_id.is_some(),
        span_kind: match span.kind {
            SpanKind::Server => OtelKind::Server,
            SpanKind::Client => OtelKind::Client,
            SpanKind::Internal => OtelKind::Internal,
        },
        name: Cow::Owned(span.name.clone()),
        start_time: time(span.start.0),
        end_time: time(span.end.0),
        attributes: span.attributes.iter().map(to_kv).collect(),
        dropped_attributes_count: 0,
        events,
        links,
        status: match span.status {
            StatusCode::Unset => Status::Unset,
            StatusCode::Ok => Status::Ok,
            StatusCode::Error => Status::error(span.status_message.clone()),
        },
        instrumentation_scope: scope.clone(),
    }
}

/// Approximate heap + inline size of a queued span: what the bytes cap counts.
pub fn approx_size(span: &SpanRecord) -> usize {
    fn attrs(a: &[KeyValue]) -> usize {
        a.iter()
            .map(|kv| {
                let key = match &kv.key {
                    Cow::Borrowed(_) => 0,
                    Cow::Owned(s) => s.len(),
                };
                let value = match &kv.value {
                    AttrValue::Str(s) => s.len(),
                    AttrValue::StrArray(v) => v.iter().map(|s| s.len() + 24).sum(),
                    _ => 0,
                };
                std::mem::size_of::<KeyValue>() + key + value
            })
            .sum()
    }
    std::mem::size_of::<SpanRecord>()
        + span.name.len()
        + span.status_message.len()
        + span.trace_state.as_ref().map_or(0, |s| s.len())
        + attrs(&span.attributes)
        + span.events.iter().map(|e| std::mem::size_of_val(e) + e.name.len() + attrs(&e.attributes)).sum::<usize>()
        + span.links.iter().map(|l| std::mem::size_of_val(l) + attrs(&l.attributes)).sum::<usize>()
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::UNIX_EPOCH;

    use tracer_core::segment::Timestamp;
    use tracer_core::span::SpanLink;

    use super::*;

    pub(in crate::export::otlp) fn span(parent: bool, trace_state: Option<&str>) -> SpanRecord {
        SpanRecord {
            name: "chat m".into(),
            kind: SpanKind::Server,
            trace_id: [7; 16],
            span_id: [9; 8],
            parent_span_id: parent.then_some([3; 8]),
            trace_state: trace_state.map(str::to_string),
            flags: if parent { 0 } else { 1 },
            start: Timestamp(1_000_000_123),
            end: Timestamp(2_000_000_456),
            status: StatusCode::Error,
            status_message: "HTTP 500".into(),
            attributes: vec![KeyValue::new("a", 1i64), KeyValue::new(String::from("b.owned"), vec!["x".to_string()])],
            events: Vec::new(),
            links: vec![SpanLink {
                trace_id: [7; 16],
                span_id: [8; 8],
                flags: 1,
                attributes: vec![KeyValue::new("ollama_tracer.link.type", "previous_turn")],
            }],
        }
    }

    #[test]
    fn span_data_keeps_ids_times_parent_and_status() {
        let d = to_span_data(&span(true, Some("rojo=00f067aa0ba902b7")), &scope(SemconvMode::V1_41));
        assert_eq!(d.span_context.trace_id(), TraceId::from_bytes([7; 16]));
        assert_eq!(d.span_context.span_id(), SpanId::from_bytes([9; 8]));
        assert_eq!(d.parent_span_id, SpanId::from_bytes([3; 8]));
        assert!(d.parent_span_is_remote);
        assert_eq!(d.span_context.trace_flags(), TraceFlags::new(0));
        assert_eq!(d.span_context.trace_state().header(), "rojo=00f067aa0ba902b7");
        assert_eq!(d.start_time, UNIX_EPOCH + Duration::from_nanos(1_000_000_123));
        assert_eq!(d.end_time, UNIX_EPOCH + Duration::from_nanos(2_000_000_456));
        assert_eq!(d.status, Status::error("HTTP 500"));
        assert_eq!(d.span_kind, OtelKind::Server);
        assert_eq!(d.attributes.len(), 2);
        assert_eq!(d.instrumentation_scope.name(), "ollama-tracer");
        assert_eq!(d.instrumentation_scope.schema_url(), Some("https://opentelemetry.io/schemas/1.41.0"));
        assert_eq!(d.links.links.len(), 1);
        assert_eq!(d.links.links[0].span_context.span_id(), SpanId::from_bytes([8; 8]));
        assert_eq!(d.links.links[0].attributes.len(), 1);
        let root = to_span_data(&span(false, Some("not a valid tracestate ===")), &scope(SemconvMode::Latest));
        assert_eq!(
            root.instrumentation_scope.schema_url(),
            Some("https://opentelemetry.io/schemas/gen-ai-dev/1.42.0-dev")
        );
        assert!(!root.parent_span_is_remote && root.parent_span_id == SpanId::INVALID);
        assert_eq!(root.span_context.trace_state().header(), "", "an invalid tracestate is dropped");
    }
}
