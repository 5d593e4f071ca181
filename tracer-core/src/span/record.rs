//! The records span building produces, shaped like OTLP's: spans with their attributes and
//! events, and the resource they are reported under.

use std::borrow::Cow;

use super::semconv as sc;
use crate::segment::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
    Internal,
}

impl SpanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Internal => "internal",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusCode {
    Unset,
    Ok,
    Error,
}

impl StatusCode {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusCode::Unset => "unset",
            StatusCode::Ok => "ok",
            StatusCode::Error => "error",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    F64(f64),
    Bool(bool),
    StrArray(Vec<String>),
}

impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue::Str(v.to_string())
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(v)
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}
impl From<u64> for AttrValue {
    fn from(v: u64) -> Self {
        AttrValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u32> for AttrValue {
    fn from(v: u32) -> Self {
        AttrValue::Int(v as i64)
    }
}
impl From<u16> for AttrValue {
    fn from(v: u16) -> Self {
        AttrValue::Int(v as i64)
    }
}
impl From<f64> for AttrValue {
    fn from(v: f64) -> Self {
        AttrValue::F64(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}
impl From<Vec<String>> for AttrValue {
    fn from(v: Vec<String>) -> Self {
        AttrValue::StrArray(v)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct KeyValue {
    /// Names are almost always the constants of [`semconv`]: borrowed, not allocated per span.
    pub key: Cow<'static, str>,
    pub value: AttrValue,
}

impl KeyValue {
    pub fn new(key: impl Into<Cow<'static, str>>, value: impl Into<AttrValue>) -> Self {
        KeyValue { key: key.into(), value: value.into() }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SpanEvent {
    pub name: String,
    pub time: Timestamp,
    pub attributes: Vec<KeyValue>,
}

/// A link from a span to another (a conversation's previous turn, the call that asked for a
/// tool), shaped like OTLP's.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanLink {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The linked span's W3C trace flags.
    pub flags: u8,
    pub attributes: Vec<KeyValue>,
}

/// A finished span, shaped like OTLP's.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    pub name: String,
    pub kind: SpanKind,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub trace_state: Option<String>,
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
    pub start: Timestamp,
    pub end: Timestamp,
    pub status: StatusCode,
    pub status_message: String,
    pub attributes: Vec<KeyValue>,
    pub events: Vec<SpanEvent>,
    pub links: Vec<SpanLink>,
}

impl SpanRecord {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
    }

    /// A string attribute's value (`None` when absent or of another type).
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        match self.attr(key) {
            Some(AttrValue::Str(v)) => Some(v),
            _ => None,
        }
    }

    /// An integer attribute's value.
    pub fn attr_int(&self, key: &str) -> Option<i64> {
        match self.attr(key) {
            Some(AttrValue::Int(v)) => Some(*v),
            _ => None,
        }
    }

    /// A string-array attribute's value.
    pub fn attr_strs(&self, key: &str) -> Option<&[String]> {
        match self.attr(key) {
            Some(AttrValue::StrArray(v)) => Some(v),
            _ => None,
        }
    }
}

/// The resource every span and metric is reported under, built once.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub attributes: Vec<KeyValue>,
}

impl Resource {
    /// `service.name` (default `ollama`), `host.name`, the tracer as `telemetry.distro.*`, plus
    /// any extra attributes (e.g. from `OTEL_RESOURCE_ATTRIBUTES`).
    pub fn new(service_name: &str, host_name: Option<String>, extra: Vec<KeyValue>) -> Resource {
        let mut attributes = vec![KeyValue::new(sc::SERVICE_NAME, service_name)];
        if let Some(h) = host_name {
            attributes.push(KeyValue::new(sc::HOST_NAME, h));
        }
        attributes.push(KeyValue::new(sc::TELEMETRY_DISTRO_NAME, sc::DISTRO_NAME));
        attributes.push(KeyValue::new(sc::TELEMETRY_DISTRO_VERSION, env!("CARGO_PKG_VERSION")));
        for kv in extra {
            match attributes.iter_mut().find(|a| a.key == kv.key) {
                Some(a) => a.value = kv.value,
                None => attributes.push(kv),
            }
        }
        Resource { attributes }
    }

    pub fn get(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
    }
}

/// Lower-case hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    String::from_utf8(s).expect("hex digits are ASCII")
}

/// Appends the lower-case hex of `bytes` to `out` (two digits a byte).
pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 15) as usize]);
    }
}
