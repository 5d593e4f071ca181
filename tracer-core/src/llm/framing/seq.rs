//! Newline-delimited JSON and JSON values one after another.

use memchr::memchr;

use super::{DocEnd, DocVisitor, FramingStats};
use crate::json::{JsonError, JsonScanner, Progress, ScanOptions};
use crate::segment::Timestamp;

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
    /// Whole lines are offered to the visitor's fast path first ([`DocVisitor::whole_doc`]).
    fast: bool,
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
                SeqState::Trailing => i = self.trailing(data, i, v),
                SeqState::Between => {
                    // Whitespace between documents is not a document.
                    match data[i..].iter().position(|b| !b.is_ascii_whitespace()) {
                        Some(k) => {
                            i += k;
                            if self.strict && !matches!(data[i], b'{' | b'[') {
                                self.tail_of_a_line();
                                continue;
                            }
                            // A whole line in this piece: the visitor may know its shape.
                            if self.fast
                                && self.line_delimited
                                && !self.strict
                                && data[i] == b'{'
                                && let Some(k) = memchr(b'\n', &data[i..])
                                && v.whole_doc(&data[i..i + k], None, ts)
                            {
                                self.stats.docs += 1;
                                self.stats.fast += 1;
                                i += k + 1;
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

    /// After a rejoin, what was taken for a document's start is the tail of a line begun in the
    /// gap: skip to the line's end. (Apart, and cold: the loss-free path stays small.)
    #[cold]
    fn tail_of_a_line(&mut self) {
        self.strict = false;
        self.state = SeqState::RestOfLine;
        self.stats.damaged += 1;
    }

    /// [`SeqState::Trailing`]: the rest of the first value's line after a rejoin; returns where
    /// reading goes on.
    #[cold]
    fn trailing<V: DocVisitor>(&mut self, data: &[u8], i: usize, v: &mut V) -> usize {
        let end = memchr(b'\n', &data[i..]).map_or(data.len(), |k| i + k);
        if !data[i..end].iter().all(u8::is_ascii_whitespace) {
            // More on the line: the value was the tail of a line begun in the gap.
            self.tail_of_a_line();
            v.doc_end(self.pending_ts, DocEnd::Damaged);
            self.scanner.reset();
            return i;
        }
        if end < data.len() {
            self.strict = false;
            self.state = SeqState::Between;
            let at = self.pending_ts;
            self.complete(at, v);
            return end + 1;
        }
        end
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
