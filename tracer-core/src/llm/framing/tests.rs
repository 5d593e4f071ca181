use super::*;
use crate::json::JsonVisitor;

/// Document outcomes in order: `ok`, `invalid`, `damaged` or `done`.
#[derive(Default)]
struct Docs(Vec<&'static str>);

impl JsonVisitor for Docs {}
impl DocVisitor for Docs {
    fn doc_begin(&mut self) {}
    fn doc_end(&mut self, _ts: Timestamp, end: DocEnd<'_>) {
        self.0.push(match end {
            DocEnd::Json { .. } => "ok",
            DocEnd::Invalid { .. } => "invalid",
            DocEnd::Damaged => "damaged",
            DocEnd::DoneMarker => "done",
        });
    }
}

/// Feeds `before`, a gap, then `after` (and finishes) to a fresh NDJSON or SSE framer.
fn around_gap(sse: bool, before: &[u8], after: &[u8]) -> Vec<&'static str> {
    gap_then(sse, false, before, after)
}

/// [`around_gap`], the framing found again (`rejoin`) right after the gap.
fn gap_then(sse: bool, rejoin: bool, before: &[u8], after: &[u8]) -> Vec<&'static str> {
    let mut docs = Docs::default();
    let t = Timestamp(1);
    if sse {
        let mut f = Sse::new();
        f.feed(before, t, &mut docs);
        f.gap();
        if rejoin {
            f.rejoin(t, &mut docs);
        }
        f.feed(after, t, &mut docs);
        f.finish(t, &mut docs);
    } else {
        let mut f = JsonSeq::new(true);
        f.feed(before, t, &mut docs);
        f.gap();
        if rejoin {
            f.rejoin(t, &mut docs);
        }
        f.feed(after, t, &mut docs);
        f.finish(t, &mut docs);
    }
    docs.0
}

#[test]
fn after_a_rejoin_the_first_whole_line_is_read() {
    let before = b"{\"a\":1}\n{\"b\":";
    // Without the rejoin the first line after the gap is taken for a tail; with it, read.
    assert_eq!(gap_then(false, false, before, b"{\"c\":4}\n{\"d\":5}\n"), ["ok", "damaged", "ok"]);
    assert_eq!(gap_then(false, true, before, b"{\"c\":4}\n{\"d\":5}\n"), ["ok", "damaged", "ok", "ok"]);
    // Unless it is not a line's start after all: not a document, or a value with more on
    // its line (a nested object at the cut), is damaged; the next line is read.
    assert_eq!(gap_then(false, true, before, b"1}\n{\"d\":5}\n"), ["ok", "damaged", "ok"]);
    assert_eq!(
        gap_then(false, true, before, b"{\"x\":1},\"done\":true}\n{\"d\":5}\n"),
        ["ok", "damaged", "damaged", "ok"]
    );
    assert_eq!(gap_then(false, true, before, b"{\"x\": tru\n{\"d\":5}\n"), ["ok", "damaged", "damaged", "ok"]);
    // Whitespace after the value is fine, and so is the body ending there.
    assert_eq!(gap_then(false, true, before, b"{\"c\":4}  \r\n"), ["ok", "damaged", "ok"]);
    assert_eq!(gap_then(false, true, before, b"{\"c\":4} "), ["ok", "damaged", "ok"]);
    // SSE: the event the gap cut is damaged, the next one read.
    assert_eq!(
        gap_then(true, true, b"data: {\"a\":1}\n\ndata: {\"b\"", b"data: {\"c\":3}\n\n"),
        ["ok", "damaged", "ok"]
    );
    assert_eq!(gap_then(true, false, b"data: {\"a\":1}\n\ndata: {\"b\"", b"data: {\"c\":3}\n\n"), ["ok", "damaged"]);
}

#[test]
fn a_document_cut_by_a_gap_is_damaged_not_invalid() {
    // NDJSON: the line in progress is damaged, the next whole line is read.
    assert_eq!(around_gap(false, b"{\"a\":1}\n{\"b\":", b"3}\n{\"c\":4}\n"), ["ok", "damaged", "ok"]);
    // A line that was already invalid stays so.
    assert_eq!(around_gap(false, b"{\"a\":x", b"1}\n{\"c\":4}\n"), ["invalid", "ok"]);
    // Between lines: the rest of the line after the gap is skipped (it may be a tail).
    assert_eq!(around_gap(false, b"{\"a\":1}\n", b"\"b\":2}\n{\"c\":4}\n"), ["ok", "ok"]);
    // SSE: the event in progress is damaged.
    assert_eq!(
        around_gap(true, b"data: {\"a\":1}\n\ndata: {\"b\"", b":2}\n\ndata: [DONE]\n\n"),
        ["ok", "damaged", "done"]
    );
}

#[test]
fn after_a_gap_sse_waits_for_an_event_boundary() {
    // What follows a gap may begin mid-line: that line is skipped.
    assert_eq!(around_gap(true, b"data: {\"a\":1}\n\n", b"data: {\"b\":2}\n\ndata: {\"c\":3}\n\n"), ["ok", "ok"]);
    // The gap fell between events, but after the line it cut comes a data line whose event
    // may have begun in the gap: it must not pass for an event of its own.
    assert_eq!(
        around_gap(true, b"data: {\"a\":1}\n\n", b"2}\ndata: {\"b\":2}\n\ndata: {\"c\":3}\n\n"),
        ["ok", "damaged", "ok"]
    );
}

#[test]
fn after_a_broken_document_the_next_starts_at_the_same_place_however_cut() {
    // Not line-delimited: a broken value is skipped to the end of its line.
    let body = b"{\"a\": x1, 2}\n{\"c\": 3}\n";
    let mut want = None;
    for size in 1..=body.len() {
        let mut seq = JsonSeq::new(false);
        let mut docs = Docs::default();
        for piece in body.chunks(size) {
            seq.feed(piece, Timestamp(1), &mut docs);
        }
        seq.finish(Timestamp(1), &mut docs);
        assert_eq!(*want.get_or_insert_with(|| docs.0.clone()), docs.0, "pieces of {size} bytes");
    }
    assert_eq!(want.unwrap(), ["invalid", "ok"]);
}
