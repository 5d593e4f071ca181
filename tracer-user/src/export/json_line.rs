//! One span as one OTLP-shaped JSON line, written straight into a byte buffer.
//!
//! The bytes are exactly what serde_json writes for the same structure (the test below keeps
//! the serde version as the reference): strings escaped as serde_json escapes them, integers in
//! decimal, floats through serde_json itself. Written by hand because serde's per-field
//! machinery and per-byte escape table were 5 % of a replay's instructions with `--output json`;
//! here the ids are written without a `String` each, and strings are checked for escapes eight
//! bytes at a time.

use tracer_core::span::{AttrValue, KeyValue, Resource, SpanRecord, push_hex};

/// Appends `span` as one JSON line (with its `\n`) to `out`.
pub fn span_line(out: &mut Vec<u8>, span: &SpanRecord, resource: &Resource) {
    out.extend_from_slice(b"{\"name\":");
    string(out, &span.name);
    out.extend_from_slice(b",\"kind\":");
    string(out, span.kind.as_str());
    out.extend_from_slice(b",\"trace_id\":");
    hex(out, &span.trace_id);
    out.extend_from_slice(b",\"span_id\":");
    hex(out, &span.span_id);
    out.extend_from_slice(b",\"parent_span_id\":");
    match &span.parent_span_id {
        Some(p) => hex(out, p),
        None => out.extend_from_slice(b"\"\""),
    }
    out.extend_from_slice(b",\"trace_state\":");
    string(out, span.trace_state.as_deref().unwrap_or(""));
    out.extend_from_slice(b",\"start_time_unix_nano\":");
    uint(out, span.start.0);
    out.extend_from_slice(b",\"end_time_unix_nano\":");
    uint(out, span.end.0);
    out.extend_from_slice(b",\"status\":{\"code\":");
    string(out, span.status.as_str());
    out.extend_from_slice(b",\"message\":");
    string(out, &span.status_message);
    out.extend_from_slice(b"},\"attributes\":");
    attrs(out, &span.attributes);
    out.extend_from_slice(b",\"events\":");
    list(out, &span.events, |out, e| {
        out.extend_from_slice(b"{\"name\":");
        string(out, &e.name);
        out.extend_from_slice(b",\"time_unix_nano\":");
        uint(out, e.time.0);
        out.extend_from_slice(b",\"attributes\":");
        attrs(out, &e.attributes);
        out.push(b'}');
    });
    if !span.links.is_empty() {
        out.extend_from_slice(b",\"links\":");
        list(out, &span.links, |out, l| {
            out.extend_from_slice(b"{\"trace_id\":");
            hex(out, &l.trace_id);
            out.extend_from_slice(b",\"span_id\":");
            hex(out, &l.span_id);
            out.extend_from_slice(b",\"attributes\":");
            attrs(out, &l.attributes);
            out.push(b'}');
        });
    }
    out.extend_from_slice(b",\"resource\":");
    attrs(out, &resource.attributes);
    out.extend_from_slice(b"}\n");
}

fn attrs(out: &mut Vec<u8>, kvs: &[KeyValue]) {
    out.push(b'{');
    for (i, kv) in kvs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, &kv.key);
        out.push(b':');
        value(out, &kv.value);
    }
    out.push(b'}');
}

fn value(out: &mut Vec<u8>, v: &AttrValue) {
    match v {
        AttrValue::Str(s) => string(out, s),
        AttrValue::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
        // Rare; serde_json's own float formatting (and `null` for NaN and infinities).
        AttrValue::F64(f) => serde_json::to_writer(&mut *out, f).expect("writing to a Vec"),
        AttrValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        AttrValue::StrArray(items) => list(out, items, |out, s| string(out, s)),
    }
}

/// A JSON array of `items`, each written by `item`.
fn list<T>(out: &mut Vec<u8>, items: &[T], mut item: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, t) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item(out, t);
    }
    out.push(b']');
}

fn uint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A quoted lower-case hex id.
fn hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    push_hex(out, bytes);
    out.push(b'"');
}

/// Whether any byte of the word needs an escape: below 0x20, `"` or `\`.
#[inline]
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Bytes below 0x20, then bytes equal to `"` and `\` (each as "zero after xor"); bytes of
    // 0x80 and above are excluded by `!w`.
    let below = w.wrapping_sub(ONES * 0x20);
    let quote = (w ^ (ONES * b'"' as u64)).wrapping_sub(ONES);
    let backslash = (w ^ (ONES * b'\\' as u64)).wrapping_sub(ONES);
    let q = !(w ^ (ONES * b'"' as u64));
    let bs = !(w ^ (ONES * b'\\' as u64));
    (below & !w | quote & q | backslash & bs) & HIGHS != 0
}

/// A JSON string as serde_json writes it: `"`, `\`, and the control characters escaped (the
/// short forms where JSON has them, else `\u00XX`); everything else as is.
fn string(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        // Eight plain bytes at a time; a word that may hold one is looked at byte by byte.
        if i + 8 <= b.len() && !needs_escape(u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))) {
            i += 8;
            continue;
        }
        let c = b[i];
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            // `\u00` and the byte's two hex digits.
            0..=0x1f => b"\\u00",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&b[start..i]);
        out.extend_from_slice(esc);
        if esc == b"\\u00" {
            push_hex(out, &[c]);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde::Serialize;
    use serde::ser::{SerializeMap, Serializer};
    use tracer_core::segment::Timestamp;
    use tracer_core::span::{SpanEvent, SpanKind, SpanLink, StatusCode};

    use super::*;

    // The serde version the hand-written one replaced: the reference for its bytes.
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
    struct Link<'a> {
        trace_id: String,
        span_id: String,
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

    fn with_serde(span: &SpanRecord, resource: &Resource) -> Vec<u8> {
        use tracer_core::span::hex;
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
                .map(|l| Link {
                    trace_id: hex(&l.trace_id),
                    span_id: hex(&l.span_id),
                    attributes: Attrs(&l.attributes),
                })
                .collect(),
            resource: Attrs(&resource.attributes),
        };
        let mut v = serde_json::to_vec(&json).unwrap();
        v.push(b'\n');
        v
    }

    fn by_hand(span: &SpanRecord, resource: &Resource) -> Vec<u8> {
        let mut v = Vec::new();
        span_line(&mut v, span, resource);
        v
    }

    /// Every byte value at every position of strings of every length up to 20, and a few longer.
    fn strings() -> Vec<String> {
        let mut out = vec![String::new(), "héllo wörld → ✓".into(), "a\u{7f}b\u{80}c".into()];
        for len in 1..20 {
            for c in 0u8..0x80 {
                for at in [0, len / 2, len - 1] {
                    let mut s = vec![b'x'; len];
                    s[at] = c;
                    out.push(String::from_utf8(s).unwrap());
                }
            }
        }
        out.push("\"\\\u{1}\u{1f} \u{8}\u{c}\n\r\t".repeat(40));
        out.push("plain text without escapes, long enough for many words".repeat(9));
        out
    }

    fn span(text: &str) -> SpanRecord {
        let kv = |k: &str, v: AttrValue| KeyValue { key: Cow::Owned(k.to_string()), value: v };
        SpanRecord {
            name: text.to_string(),
            kind: SpanKind::Client,
            trace_id: [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10],
            span_id: [0, 1, 2, 3, 0xfc, 0xfd, 0xfe, 0xff],
            parent_span_id: text.len().is_multiple_of(2).then_some([9; 8]),
            trace_state: text.len().is_multiple_of(3).then(|| text.to_string()),
            flags: 1,
            start: Timestamp(1_767_225_600_000_075_350),
            end: Timestamp(u64::MAX),
            status: StatusCode::Error,
            status_message: text.to_string(),
            attributes: vec![
                kv(text, AttrValue::Str(text.to_string())),
                kv("i", AttrValue::Int(i64::MIN)),
                kv("j", AttrValue::Int(-1)),
                kv("k", AttrValue::Int(i64::MAX)),
                kv("f", AttrValue::F64(0.1)),
                kv("g", AttrValue::F64(1e300)),
                kv("h", AttrValue::F64(f64::NAN)),
                kv("n", AttrValue::F64(-0.0)),
                kv("t", AttrValue::Bool(true)),
                kv("u", AttrValue::Bool(false)),
                kv("a", AttrValue::StrArray(vec![text.to_string(), String::new(), "x".into()])),
                kv("e", AttrValue::StrArray(Vec::new())),
            ],
            events: match text.len() % 3 {
                0 => Vec::new(),
                n => (0..n)
                    .map(|i| SpanEvent {
                        name: text.to_string(),
                        time: Timestamp(i as u64),
                        attributes: if i == 0 { Vec::new() } else { vec![kv(text, AttrValue::Int(7))] },
                    })
                    .collect(),
            },
            links: match text.len() % 4 {
                0 => Vec::new(),
                n => (0..n)
                    .map(|i| SpanLink { trace_id: [i as u8; 16], span_id: [0xa5; 8], flags: 0, attributes: Vec::new() })
                    .collect(),
            },
        }
    }

    #[test]
    fn writes_what_serde_json_writes() {
        let resource = Resource::new("svc \"x\"\n", Some("höst".into()), Vec::new());
        let empty = Resource { attributes: Vec::new() };
        for s in strings() {
            let sp = span(&s);
            for res in [&resource, &empty] {
                let (want, got) = (with_serde(&sp, res), by_hand(&sp, res));
                assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap(), "string {s:?}");
            }
        }
    }

    #[test]
    fn escape_check_finds_each_byte_that_needs_one() {
        for c in 0u8..=255 {
            for at in 0..8 {
                let mut w = [b'a'; 8];
                w[at] = c;
                let want = c < 0x20 || c == b'"' || c == b'\\';
                assert_eq!(needs_escape(u64::from_le_bytes(w)), want, "byte {c:#x} at {at}");
            }
        }
    }
}
