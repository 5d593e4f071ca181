//! JSON the way Go's `encoding/json` writes it, and byte-level edits of recorded JSON.
//!
//! Go escapes `<`, `>`, `&`, U+2028 and U+2029 (`\u003c` …) in every string it marshals, so a
//! `<think>` tag is `\u003cthink\u003e` on the wire (docs/ollama-wire.md §0). serde_json does not;
//! [`GoFormatter`] adds it. Struct field order comes from the Rust structs (declaration order, as
//! Go), and maps must be built sorted by the caller where Go marshals a `map`.

use std::io;

use serde::Serialize;
use serde_json::ser::{Formatter, Serializer};

/// serde_json formatter with Go's HTML-safe string escaping.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc: &[u8] = match c {
                '<' => b"\\u003c",
                '>' => b"\\u003e",
                '&' => b"\\u0026",
                '\u{2028}' => b"\\u2028",
                '\u{2029}' => b"\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(esc)?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// `json.Marshal(v)`: compact, HTML-escaped, no trailing newline (what gin's `c.JSON` writes).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = Serializer::with_formatter(&mut out, GoFormatter);
    // Only our own plain data types are serialized here; they cannot fail.
    value.serialize(&mut ser).expect("serializing plain data to a Vec cannot fail");
    out
}

/// `json.NewEncoder(w).Encode(v)`: like [`to_vec`] plus the `\n` the encoder appends.
pub fn to_vec_line<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = to_vec(value);
    out.push(b'\n');
    out
}

/// A Go JSON string literal (quotes included).
pub fn string(s: &str) -> Vec<u8> {
    to_vec(s)
}

/// Go's `time.Time` JSON form for a UTC instant: RFC 3339 with nanoseconds, trailing zeros of the
/// fraction trimmed (and no fraction at all on a whole second), `Z` suffix.
pub fn rfc3339_nano(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let nanos = unix_ns % 1_000_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let mut out = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60);
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 → (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Go's `strconv.FormatFloat(f, 'f' or 'e', -1, 32)` as `encoding/json` picks it for a float32:
/// shortest round-trip digits, exponent form only below 1e-6 or from 1e21 on.
pub fn float32(f: f32) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Go writes e-07 (two exponent digits at least); Rust's {:e} writes e-7.
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mant}e{sign}{digits:0>2}");
    }
    // Rust's Display for f32 is the shortest round-trip decimal, as Go's -1 precision.
    format!("{f}")
}

/// Byte range of the string value of top-level key `key` in the JSON object `json` (quotes
/// included). `None` if `json` is not an object or has no such string-valued key.
pub fn find_top_level_string(json: &[u8], key: &str) -> Option<std::ops::Range<usize>> {
    let mut i = skip_ws(json, 0);
    if json.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(json, i);
        match json.get(i)? {
            b'}' => return None,
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let key_end = string_end(json, i)?;
        let this_key = &json[i + 1..key_end - 1];
        i = skip_ws(json, key_end);
        if json.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(json, i + 1);
        let value_end = value_end(json, i)?;
        if this_key == key.as_bytes() && json[i] == b'"' {
            return Some(i..value_end);
        }
        i = value_end;
    }
}

/// Replace the top-level `"model"` string of a JSON object with `model` (Go-escaped). Returns
/// `None` when there is no such field (the bytes are then used unchanged).
pub fn rewrite_model(json: &[u8], model: &str) -> Option<Vec<u8>> {
    let range = find_top_level_string(json, "model")?;
    let mut out = Vec::with_capacity(json.len() + model.len());
    out.extend_from_slice(&json[..range.start]);
    out.extend_from_slice(&string(model));
    out.extend_from_slice(&json[range.end..]);
    Some(out)
}

/// [`rewrite_model`] applied to every JSON payload of one stream unit: an NDJSON line, a whole
/// JSON body, or the `data:` lines of one or more SSE events. Anything else is copied.
pub fn rewrite_model_in_unit(unit: &[u8], model: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(unit.len() + 16);
    for line in unit.split_inclusive(|&b| b == b'\n') {
        let (prefix, payload) = match line.strip_prefix(b"data:") {
            Some(rest) => {
                let sp = usize::from(rest.first() == Some(&b' '));
                line.split_at(5 + sp)
            }
            None => line.split_at(0),
        };
        let trimmed_len = payload.iter().rposition(|b| !matches!(b, b'\n' | b'\r')).map_or(0, |p| p + 1);
        let (json, eol) = payload.split_at(trimmed_len);
        match rewrite_model(json, model) {
            Some(new) => {
                out.extend_from_slice(prefix);
                out.extend_from_slice(&new);
                out.extend_from_slice(eol);
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// End (exclusive) of the string starting at the quote `b[i]`.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// End (exclusive) of the JSON value starting at `b[i]`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                j += 1;
            }
            Some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escaping_like_go() {
        assert_eq!(
            to_vec(&"<think>a & b</think>\u{2028}"),
            br#""\u003cthink\u003ea \u0026 b\u003c/think\u003e\u2028""#
        );
        assert_eq!(to_vec(&"é\"\n"), "\"é\\\"\\n\"".as_bytes());
    }

    #[test]
    fn go_times() {
        assert_eq!(rfc3339_nano(1_761_498_924_097_767_000), "2025-10-26T17:15:24.097767Z");
        assert_eq!(rfc3339_nano(1_767_225_600_000_000_000), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(1_767_225_600_100_000_000), "2026-01-01T00:00:00.1Z");
    }

    #[test]
    fn go_floats() {
        assert_eq!(float32(0.010071029), "0.010071029");
        assert_eq!(float32(-0.0017594862), "-0.0017594862");
        assert_eq!(float32(1e-7), "1e-07");
        assert_eq!(float32(0.5), "0.5");
        assert_eq!(float32(0.0), "0");
    }

    #[test]
    fn model_rewrite() {
        let line = br#"{"model":"gemma3:1b","created_at":"x","message":{"model":"inner"},"done":false}"#;
        let out = rewrite_model(line, "a<b").unwrap();
        assert_eq!(out, br#"{"model":"a\u003cb","created_at":"x","message":{"model":"inner"},"done":false}"#);
        let late = br#"{"id":"c","choices":[{"x":"}"}],"model":"m"}"#;
        assert_eq!(rewrite_model(late, "n").unwrap(), br#"{"id":"c","choices":[{"x":"}"}],"model":"n"}"#);
        assert!(rewrite_model(br#"{"embedding":[1,2]}"#, "n").is_none());
        let sse = b"data: {\"model\":\"m\",\"x\":1}\n\ndata: [DONE]\n\n";
        assert_eq!(rewrite_model_in_unit(sse, "zz"), b"data: {\"model\":\"zz\",\"x\":1}\n\ndata: [DONE]\n\n");
        let nd = b"{\"model\":\"m\"}\n";
        assert_eq!(rewrite_model_in_unit(nd, "q"), b"{\"model\":\"q\"}\n");
    }
}
