//! The push JSON scanner against serde_json.
//!
//! Input: `[split seed: u64][document...]`.
//!
//! Invariants: feeding the document whole or cut anywhere gives the same events and the same
//! outcome (end position or error offset); and whatever serde_json accepts, the scanner accepts
//! too and reports the same keys, strings, numbers and container sizes in the same order.

use arbitrary::Unstructured;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use tracer_core::json::{JsonError, JsonScanner, Kind, Progress, ScanOptions};

use super::input::{split, take};
use super::record::{Event, Recorder};

/// Deeper than serde_json's recursion limit (128), so the scanner enters everything serde_json
/// accepts.
const DEPTH: usize = 200;
/// Keys the scanner keeps whole (longer ones are reported as an overflow marker).
const MAX_KEY: usize = 48;

#[derive(Debug, PartialEq)]
enum Outcome {
    /// The value ended at this absolute offset.
    Complete(usize),
    /// The input ended: `finish` said this.
    Ended(Result<(), JsonError>),
    Failed(JsonError),
}

fn scan(pieces: &[&[u8]]) -> (Vec<Event>, Outcome) {
    let mut scanner = JsonScanner::new(ScanOptions { fold_keys: false, max_depth: DEPTH });
    let mut rec = Recorder::default();
    let mut at = 0;
    for piece in pieces {
        match scanner.feed(piece, &mut rec) {
            Ok(Progress::NeedMore) => at += piece.len(),
            Ok(Progress::Complete { consumed }) => return (rec.events, Outcome::Complete(at + consumed)),
            Err(e) => return (rec.events, Outcome::Failed(e)),
        }
    }
    let end = scanner.finish(&mut rec);
    (rec.events, Outcome::Ended(end))
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let seed: u64 = take(&mut u);
    let doc = u.take_rest();

    let (whole_events, whole) = scan(&[doc]);
    let (split_events, cut) = scan(&split(doc, seed));
    assert_eq!(whole, cut, "outcome depends on where the input was cut");
    assert_eq!(whole_events, split_events, "events depend on where the input was cut");

    let mut expected = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(doc);
    if Expect(&mut expected).deserialize(&mut de).is_err() || de.end().is_err() {
        return;
    }
    match whole {
        Outcome::Complete(end) => {
            assert!(doc[end..].iter().all(u8::is_ascii_whitespace), "scanner stopped early at {end}")
        }
        Outcome::Ended(Ok(())) => {}
        other => panic!("serde_json accepts the document, the scanner says {other:?}"),
    }
    let got = whole_events;
    assert_eq!(got.len(), expected.len(), "event counts differ: scanner {got:?}, serde_json {expected:?}");
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        let same = match (g, e) {
            // Numbers too long for the scanner to keep come with empty text, by design.
            (Event::Number(raw), Event::Number(serde)) => raw.is_empty() || same_number(raw, serde),
            _ => g == e,
        };
        assert!(same, "event {i}: scanner {g:?}, serde_json {e:?}");
    }
}

/// serde_json reports numbers typed; the scanner raw. `serde` holds serde_json's value as text
/// prefixed by its type.
fn same_number(raw: &[u8], serde: &[u8]) -> bool {
    let Ok(raw) = std::str::from_utf8(raw) else { return false };
    let serde = std::str::from_utf8(serde).expect("written by us");
    match serde.split_once(':') {
        Some(("u", v)) => raw.parse::<u64>().ok() == v.parse().ok(),
        Some(("i", v)) => raw.parse::<i64>().ok() == v.parse().ok(),
        // serde_json (without `float_roundtrip`) may round the last bit differently.
        Some(("f", v)) => match (raw.parse::<f64>(), v.parse::<f64>()) {
            (Ok(a), Ok(b)) => a == b || (a.signum() == b.signum() && a.to_bits().abs_diff(b.to_bits()) <= 2),
            _ => false,
        },
        _ => false,
    }
}

/// Records serde_json's view in the scanner's event vocabulary.
struct Expect<'a>(&'a mut Vec<Event>);

impl<'de> DeserializeSeed<'de> for Expect<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Expect<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push(Event::Bool(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push(Event::Number(format!("u:{v}").into_bytes()));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(Event::Number(format!("i:{v}").into_bytes()));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(Event::Number(format!("f:{v:e}").into_bytes()));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push(Event::Str(v.as_bytes().to_vec()));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.push(Event::Null);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push(Event::Begin(Kind::Array));
        let mut n = 0;
        while seq.next_element_seed(Expect(self.0))?.is_some() {
            n += 1;
        }
        self.0.push(Event::End(Kind::Array, n));
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.push(Event::Begin(Kind::Object));
        let mut n = 0;
        while let Some(key) = map.next_key::<String>()? {
            let key = if key.len() > MAX_KEY { b"\0overflow".to_vec() } else { key.into_bytes() };
            self.0.push(Event::Key(key));
            map.next_value_seed(Expect(self.0))?;
            n += 1;
        }
        self.0.push(Event::End(Kind::Object, n));
        Ok(())
    }
}
