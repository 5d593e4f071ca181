//! Server-sent events (`/v1` streams).

use memchr::memchr2;

use super::{DocEnd, DocVisitor, FramingStats};
use crate::json::{JsonError, JsonScanner, Progress, ScanOptions};
use crate::segment::Timestamp;

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
    /// Whole events are offered to the visitor's fast path first ([`DocVisitor::whole_doc`]).
    fast: bool,
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
            fast: true,
        }
    }

    pub fn stats(&self) -> FramingStats {
        self.stats
    }

    /// Turns the visitor's fast path off (equivalence tests read every document in full).
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast = on;
    }

    #[inline]
    pub fn feed<V: DocVisitor>(&mut self, data: &[u8], ts: Timestamp, v: &mut V) {
        let mut i = 0;
        while i < data.len() {
            if self.line == SseLine::Start && self.fast && self.at_event_start() {
                let used = self.whole_event(&data[i..], ts, v);
                if used > 0 {
                    i += used;
                    continue;
                }
            }
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

    /// Between events, nothing of the next one read yet.
    #[inline]
    fn at_event_start(&self) -> bool {
        !self.prev_cr && self.data == SseData::None && !self.broken && self.event_len == 0
    }

    /// `[event: NAME LF] data: {…} LF LF` wholly in `rest`: offered to the visitor's fast path;
    /// returns the bytes it took (0: read on byte by byte). Taken, it leaves the framer as the
    /// dispatch of that event would.
    #[inline]
    fn whole_event<V: DocVisitor>(&mut self, rest: &[u8], ts: Timestamp, v: &mut V) -> usize {
        let line = |from: usize| {
            let k = from + memchr2(b'\n', b'\r', rest.get(from..)?)?;
            (rest[k] == b'\n').then_some(k)
        };
        let (event, at) = if rest.starts_with(b"event: ") {
            let Some(k) = line(7) else { return 0 };
            (Some(&rest[7..k.min(7 + MAX_EVENT)]), k + 1)
        } else {
            (None, 0)
        };
        if !rest[at..].starts_with(b"data: {") {
            return 0;
        }
        let Some(end) = line(at + 6) else { return 0 };
        if rest.get(end + 1) != Some(&b'\n') {
            return 0;
        }
        let event = event.and_then(|e| std::str::from_utf8(e).ok()).filter(|e| !e.is_empty());
        if !v.whole_doc(&rest[at + 6..end], event, ts) {
            return 0;
        }
        self.stats.docs += 1;
        self.stats.fast += 1;
        end + 2
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
