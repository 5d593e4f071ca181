//! Body framings of Ollama responses, each turning body pieces into a sequence of JSON
//! documents for a [`DocVisitor`]: newline-delimited JSON (native streams), JSON values one after
//! another (plain JSON bodies), and server-sent events (`/v1` streams).

use memchr::{memchr, memchr2};

use crate::json::{JsonError, JsonScanner, JsonVisitor, Progress, ScanOptions};
use crate::segment::Timestamp;

/// How a document ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocEnd<'a> {
    /// A complete JSON value; `event` is the SSE event name, if any.
    Json { event: Option<&'a str> },
    /// Not valid JSON.
    Invalid { event: Option<&'a str>, error: Option<JsonError> },
    /// Cut by bytes the capture missed: it says nothing, and nothing wrong of the server.
    Damaged,
    /// The SSE `data: [DONE]` terminator.
    DoneMarker,
}

/// A visitor of a sequence of JSON documents.
pub trait DocVisitor: JsonVisitor {
    /// A document begins: reset per-document state.
    fn doc_begin(&mut self);
    /// It ended at capture time `ts`.
    fn doc_end(&mut self, ts: Timestamp, end: DocEnd<'_>);
}

/// Counters of a framer, for flags and summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FramingStats {
    pub docs: u64,
    pub invalid: u64,
    /// Documents cut by missing bytes.
    pub damaged: u64,
}

/// JSON documents one after another: one per line (`line_delimited`, NDJSON) or separated by any
/// whitespace (plain JSON bodies, which may be pretty-printed).
#[derive(Debug)]
pub struct JsonSeq {
    scanner: JsonScanner,
    line_delimited: bool,
    state: SeqState,
    error: Option<JsonError>,
    /// The document being skipped was cut by missing bytes (not broken by the server).
    damaged: bool,
    /// Just rejoined after a gap: the next document must be a whole line.
    strict: bool,
    /// When the value held in [`SeqState::Trailing`] completed.
    pending_ts: Timestamp,
    stats: FramingStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeqState {
    /// Between documents.
    Between,
    /// Inside a document.
    InDoc,
    /// NDJSON: the line's value is complete; the rest of the line is ignored (as Go's decoder does).
    RestOfLine,
    /// The document is broken: ignore bytes up to the next newline, then report it invalid (or
    /// damaged).
    Skipping,
    /// The first value after a rejoin is complete: it counts only if nothing but whitespace
    /// follows it on its line.
    Trailing,
}

impl JsonSeq {
    pub fn new(line_delimited: bool) -> Self {
        JsonSeq {
            scanner: JsonScanner::new(ScanOptions::default()),
            line_delimited,
            state: SeqState::Between,
            error: None,
            damaged: false,
            strict: false,
            pending_ts: Timestamp(0),
            stats: FramingStats::default(),
        }
    }

    pub fn stats(&self) -> FramingStats {
        self.stats
    }

    pub fn feed<V: DocVisitor>(&mut self, data: &[u8], ts: Timestamp, v: &mut V) {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                SeqState::Skipping | SeqState::RestOfLine => match memchr(b'\n', &data[i..]) {
                    Some(k) => {
                        i += k + 1;
                        if self.state == SeqState::Skipping {
                            self.invalid(ts, v);
                        }
                        self.state = SeqState::Between;
                    }
                    None => return,
                },
                SeqState::Trailing => {
                    let end = memchr(b'\n', &data[i..]).map_or(data.len(), |k| i + k);
                    if !data[i..end].iter().all(u8::is_ascii_whitespace) {
                        // More on the line: the value was the tail of a line begun in the gap.
                        self.strict = false;
                        self.state = SeqState::RestOfLine;
                        self.stats.damaged += 1;
                        v.doc_end(ts, DocEnd::Damaged);
                        self.scanner.reset();
                        continue;
                    }
                    i = end;
                    if end < data.len() {
                        i += 1;
                        self.strict = false;
                        self.state = SeqState::Between;
                        let at = self.pending_ts;
                        self.complete(at, v);
                    }
                }
                SeqState::Between => {
                    // Whitespace between documents is not a document.
                    match data[i..].iter().position(|b| !b.is_ascii_whitespace()) {
                        Some(k) => {
                            i += k;
                            if self.strict && !matches!(data[i], b'{' | b'[') {
                                // Not the start of a document: the tail of a line.
                                self.strict = false;
                                self.state = SeqState::RestOfLine;
                                self.stats.damaged += 1;
                                continue;
                            }
                            self.state = SeqState::InDoc;
                            v.doc_begin();
                        }
                        None => return,
                    }
                }
                SeqState::InDoc => {
                    // NDJSON: a document never crosses a newline.
                    let end = if self.line_delimited {
                        memchr(b'\n', &data[i..]).map_or(data.len(), |k| i + k)
                    } else {
                        data.len()
                    };
                    let base = self.scanner.offset();
                    match self.scanner.feed(&data[i..end], v) {
                        Ok(Progress::NeedMore) => {
                            i = end;
                            if end < data.len() {
                                // The line ended: a top-level number completes here, else it is cut.
                                i += 1;
                                match self.scanner.finish(v) {
                                    Ok(()) => self.complete(ts, v),
                                    Err(e) => {
                                        self.error = Some(e);
                                        self.damaged = self.strict;
                                        self.invalid(ts, v);
                                    }
                                }
                                self.strict = false;
                                self.state = SeqState::Between;
                            }
                        }
                        Ok(Progress::Complete { consumed }) if self.strict => {
                            i += consumed;
                            self.pending_ts = ts;
                            self.state = SeqState::Trailing;
                        }
                        Ok(Progress::Complete { consumed }) => {
                            i += consumed;
                            self.complete(ts, v);
                            self.state = if self.line_delimited { SeqState::RestOfLine } else { SeqState::Between };
                        }
                        Err(e) => {
                            self.error = Some(e);
                            // Right after a rejoin, what does not parse is taken for a tail.
                            self.damaged = std::mem::take(&mut self.strict);
                            self.state = SeqState::Skipping;
                            // Skip from the bad byte, not from the end of this piece: where the
                            // next document starts must not depend on how the body was cut.
                            let at = usize::try_from(e.offset.saturating_sub(base)).unwrap_or(usize::MAX);
                            i = i.saturating_add(at).min(end);
                        }
                    }
                }
            }
        }
    }

    fn complete<V: DocVisitor>(&mut self, ts: Timestamp, v: &mut V) {
        self.stats.docs += 1;
        v.doc_end(ts, DocEnd::Json { event: None });
        self.scanner.reset();
    }

    /// The document being skipped ends: invalid, or cut by missing bytes.
    fn invalid<V: DocVisitor>(&mut self, ts: Timestamp, v: &mut V) {
        if std::mem::take(&mut self.damaged) {
            self.stats.damaged += 1;
            self.error = None;
            v.doc_end(ts, DocEnd::Damaged);
        } else {
            self.stats.invalid += 1;
            v.doc_end(ts, DocEnd::Invalid { event: None, error: self.error.take() });
        }
        self.scanner.reset();
    }

    /// Bytes are missing from the body: the document in progress is lost (damaged, not invalid,
    /// unless it already was); resume after the next newline (the only boundary that can be
    /// found again in the bytes alone).
    pub fn gap(&mut self) {
        match self.state {
            SeqState::InDoc | SeqState::Trailing => {
                self.state = SeqState::Skipping;
                self.damaged = true;
            }
            SeqState::Between => self.state = SeqState::RestOfLine,
            SeqState::RestOfLine | SeqState::Skipping => {}
        }
        self.strict = false;
    }

    /// The body's framing was found again after a gap (at a verified chunk): what follows
    /// starts a line. The document the gap cut ends damaged; the first one after must be a whole
    /// line — an object or array with nothing but whitespace after it on its line — or it is
    /// taken for the tail of a line begun in the gap, and damaged too.
    pub fn rejoin<V: DocVisitor>(&mut self, ts: Timestamp, v: &mut V) {
        match self.state {
            SeqState::InDoc => {
                self.damaged = true;
                self.invalid(ts, v);
            }
            SeqState::Skipping => self.invalid(ts, v),
            SeqState::Trailing => {
                self.stats.damaged += 1;
                v.doc_end(ts, DocEnd::Damaged);
                self.scanner.reset();
            }
            SeqState::Between | SeqState::RestOfLine => {}
        }
        self.state = SeqState::Between;
        self.strict = true;
    }

    /// End of the body: a last document without a newline still counts.
    pub fn finish<V: DocVisitor>(&mut self, ts: Timestamp, v: &mut V) {
        match self.state {
            SeqState::InDoc => match self.scanner.finish(v) {
                Ok(()) => self.complete(ts, v),
                Err(e) => {
                    self.error = Some(e);
                    self.damaged = self.strict;
                    self.invalid(ts, v);
                }
            },
            SeqState::Trailing => {
                let at = self.pending_ts;
                self.complete(at, v);
            }
            SeqState::Skipping => self.invalid(ts, v),
            SeqState::Between | SeqState::RestOfLine => {}
        }
        self.strict = false;
        self.state = SeqState::Between;
    }
}

/// Longest SSE field name we keep; the fields we know are at most 5 bytes.
const MAX_FIELD: usize = 16;
/// Longest event name we keep.
const MAX_EVENT: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SseLine {
    /// At the start of a line.
    Start,
    /// Reading the field name.
    Field,
    /// Reading a value; `fresh` until its first byte (one leading space is dropped).
    Value { field: SseField, fresh: bool },
    /// A comment or unknown field: ignore to the end of the line.
    Ignore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SseField {
    Data,
    Event,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SseData {
    /// No data line yet in this event.
    None,
    /// Collecting the first bytes to tell `[DONE]` from JSON.
    Prefix,
    Json,
    Done,
    /// Not JSON, or broken: reported invalid at dispatch.
    Invalid,
}

/// Server-sent events (`text/event-stream`): `event:` names and `data:` payloads, each event's
/// data parsed as JSON as it arrives.
#[derive(Debug)]
pub struct Sse {
    line: SseLine,
    /// Previous byte was CR (a following LF belongs to the same line end).
    prev_cr: bool,
    field: [u8; MAX_FIELD],
    field_len: usize,
    event: [u8; MAX_EVENT],
    event_len: usize,
    data: SseData,
    prefix: [u8; 6],
    prefix_len: usize,
    data_lines: u32,
    scanner: JsonScanner,
    error: Option<JsonError>,
    stats: FramingStats,
    /// Skip to the end of the current event after missing bytes.
    broken: bool,
}

impl Default for Sse {
    fn default() -> Self {
        Self::new()
    }
}

impl Sse {
    pub fn new() -> Self {
        Sse {
            line: SseLine::Start,
            prev_cr: false,
            field: [0; MAX_FIELD],
            field_len: 0,
            event: [0; MAX_EVENT],
            event_len: 0,
            data: SseData::None,
            prefix: [0; 6],
            prefix_len: 0,
            data_lines: 0,
            scanner: JsonScanner::new(ScanOptions::default()),
            error: None,
            stats: FramingStats::default(),
            broken: false,
        }
    }

    pub fn stats(&self) -> FramingStats {
        self.stats
    }

    pub fn feed<V: DocVisitor>(&mut self, data: &[u8], ts: Timestamp, v: &mut V) {
        let mut i = 0;
        while i < data.len() {
            let c = data[i];
            if self.prev_cr {
                self.prev_cr = false;
                if c == b'\n' {
                    i += 1;
                    continue;
                }
            }
            match self.line {
                SseLine::Start | SseLine::Field => {
                    i += 1;
                    match c {
                        b'\r' | b'\n' => {
                            self.prev_cr = c == b'\r';
                            if self.line == SseLine::Start {
                                self.dispatch(ts, v);
                            } else if &self.field[..self.field_len] == b"data" {
                                // A field name alone on a line is that field with an empty value.
                                self.begin_data_line(v);
                            }
                            self.line = SseLine::Start;
                        }
                        b':' if self.line == SseLine::Start => self.line = SseLine::Ignore,
                        b':' => {
                            self.line = match &self.field[..self.field_len] {
                                b"data" => {
                                    self.begin_data_line(v);
                                    SseLine::Value { field: SseField::Data, fresh: true }
                                }
                                b"event" => {
                                    self.event_len = 0;
                                    SseLine::Value { field: SseField::Event, fresh: true }
                                }
                                _ => SseLine::Ignore,
                            };
                        }
                        _ => {
                            if self.line == SseLine::Start {
                                self.field_len = 0;
                                self.line = SseLine::Field;
                            }
                            if self.field_len < MAX_FIELD {
                                self.field[self.field_len] = c;
                                self.field_len += 1;
                            }
                        }
                    }
                }
                SseLine::Ignore => match memchr2(b'\n', b'\r', &data[i..]) {
                    Some(k) => {
                        i += k + 1;
                        self.prev_cr = data[i - 1] == b'\r';
                        self.line = SseLine::Start;
                    }
                    None => return,
                },
                SseLine::Value { field, fresh } => {
                    let mut start = i;
                    if fresh {
                        if c == b' ' {
                            start += 1;
                        }
                        self.line = SseLine::Value { field, fresh: false };
                    }
                    let end = memchr2(b'\n', b'\r', &data[start..]).map_or(data.len(), |k| start + k);
                    self.value_piece(field, &data[start..end], v);
                    i = end;
                    if end < data.len() {
                        self.prev_cr = data[end] == b'\r';
                        i += 1;
                        self.line = SseLine::Start;
                    }
                }
            }
        }
    }

    fn begin_data_line<V: DocVisitor>(&mut self, v: &mut V) {
        self.data_lines += 1;
        match self.data {
            SseData::None => {
                v.doc_begin();
                self.data = SseData::Prefix;
                self.prefix_len = 0;
            }
            // Lines of one event's data are joined with newlines: whitespace to JSON.
            SseData::Json => self.feed_json(b"\n", v),
            SseData::Prefix | SseData::Done | SseData::Invalid => {}
        }
    }

    fn value_piece<V: DocVisitor>(&mut self, field: SseField, piece: &[u8], v: &mut V) {
        match field {
            SseField::Event => {
                let room = MAX_EVENT - self.event_len;
                let n = piece.len().min(room);
                self.event[self.event_len..self.event_len + n].copy_from_slice(&piece[..n]);
                self.event_len += n;
            }
            SseField::Data => {
                if self.broken {
                    return;
                }
                let mut piece = piece;
                if self.data == SseData::Prefix {
                    let n = piece.len().min(6 - self.prefix_len);
                    self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&piece[..n]);
                    self.prefix_len += n;
                    piece = &piece[n..];
                    if self.prefix_len < 6 && piece.is_empty() {
                        return;
                    }
                    self.decide(v);
                }
                match self.data {
                    SseData::Json => self.feed_json(piece, v),
                    SseData::Done if !piece.iter().all(u8::is_ascii_whitespace) => self.data = SseData::Invalid,
                    _ => {}
                }
            }
        }
    }

    /// Enough of the data is known to tell the `[DONE]` marker from JSON.
    fn decide<V: DocVisitor>(&mut self, v: &mut V) {
        let prefix = self.prefix;
        let p = &prefix[..self.prefix_len];
        if p == b"[DONE]" {
            self.data = SseData::Done;
        } else {
            self.data = SseData::Json;
            self.feed_json(p, v);
        }
    }

    fn feed_json<V: DocVisitor>(&mut self, piece: &[u8], v: &mut V) {
        if self.data != SseData::Json || piece.is_empty() {
            return;
        }
        match self.scanner.feed(piece, v) {
            Ok(Progress::NeedMore) => {}
            Ok(Progress::Complete { consumed }) => {
                if !piece[consumed..].iter().all(u8::is_ascii_whitespace) {
                    self.data = SseData::Invalid;
                }
            }
            Err(e) => {
                self.error = Some(e);
                self.data = SseData::Invalid;
            }
        }
    }

    /// A blank line: the event is complete.
    fn dispatch<V: DocVisitor>(&mut self, ts: Timestamp, v: &mut V) {
        if self.data == SseData::Prefix && !self.broken {
            // Data shorter than six bytes.
            self.decide(v);
        }
        // A copy, so the visitor can be called while the framer is borrowed mutably.
        let event_buf = self.event;
        let event = std::str::from_utf8(&event_buf[..self.event_len]).ok().filter(|e| !e.is_empty());
        match (self.data, self.broken) {
            (SseData::None, _) => {}
            // Bytes seen that were not JSON make it invalid, missing bytes only damaged.
            (SseData::Invalid, _) => {
                self.stats.invalid += 1;
                v.doc_end(ts, DocEnd::Invalid { event, error: self.error.take() });
            }
            (_, true) => {
                self.stats.damaged += 1;
                v.doc_end(ts, DocEnd::Damaged);
            }
            (SseData::Done, false) => {
                self.stats.docs += 1;
                v.doc_end(ts, DocEnd::DoneMarker);
            }
            (SseData::Json | SseData::Prefix, false) => match self.scanner.finish(v) {
                Ok(()) => {
                    self.stats.docs += 1;
                    v.doc_end(ts, DocEnd::Json { event });
                }
                Err(e) => {
                    self.stats.invalid += 1;
                    v.doc_end(ts, DocEnd::Invalid { event, error: Some(e) });
                }
            },
        }
        self.data = SseData::None;
        self.data_lines = 0;
        self.event_len = 0;
        self.prefix_len = 0;
        self.broken = false;
        self.error = None;
        self.scanner.reset();
    }

    /// Bytes are missing: the event in progress is lost; resume at the next event. Whether the
    /// bytes after the gap begin an event is unknown (they may be the later data lines of one),
    /// so nothing is dispatched before a blank line has been seen.
    pub fn gap(&mut self) {
        self.broken = true;
        // We may be mid-line: ignore to the end of it.
        self.line = SseLine::Ignore;
        self.prev_cr = false;
    }

    /// The body's framing was found again after a gap (at a verified chunk that ends an event):
    /// what follows starts an event. The event the gap cut ends damaged.
    pub fn rejoin<V: DocVisitor>(&mut self, ts: Timestamp, v: &mut V) {
        if self.data != SseData::None {
            self.dispatch(ts, v);
        }
        self.broken = false;
        self.event_len = 0;
        self.field_len = 0;
        self.prev_cr = false;
        self.line = SseLine::Start;
    }

    /// End of the body: an event not closed by a blank line is still dispatched.
    pub fn finish<V: DocVisitor>(&mut self, ts: Timestamp, v: &mut V) {
        if self.data != SseData::None {
            self.dispatch(ts, v);
        }
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(
            gap_then(true, false, b"data: {\"a\":1}\n\ndata: {\"b\"", b"data: {\"c\":3}\n\n"),
            ["ok", "damaged"]
        );
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
}
