//! A visitor that writes down what the JSON scanner and the body framers report, normalised so
//! that two runs over the same bytes cut differently can be compared (string pieces are joined).

use tracer_core::json::{Descend, JsonVisitor, Kind, Path, Scalar, Seg, SkipStats};
use tracer_core::llm::framing::{DocEnd, DocVisitor};
use tracer_core::segment::Timestamp;

/// One reported item.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The key (objects) of the value that follows; indices are implied by order.
    Key(Vec<u8>),
    Begin(Kind),
    End(Kind, u32),
    Str(Vec<u8>),
    Number(Vec<u8>),
    Bool(bool),
    Null,
    Skipped(Kind, SkipStats),
    DocBegin,
    DocEnd(String),
}

#[derive(Debug, Default)]
pub struct Recorder {
    pub events: Vec<Event>,
    string: Vec<u8>,
    in_string: bool,
    /// Documents begun and not yet ended (framers only).
    open_docs: u32,
}

impl Recorder {
    fn key(&mut self, path: &Path<'_>) {
        if let Some(Seg::Key(k)) = path.last() {
            self.events.push(Event::Key(k.to_vec()));
        }
    }
}

impl JsonVisitor for Recorder {
    fn begin(&mut self, path: &Path<'_>, kind: Kind) -> Descend {
        self.key(path);
        self.events.push(Event::Begin(kind));
        Descend::Enter
    }

    fn end(&mut self, _path: &Path<'_>, kind: Kind, len: u32) {
        self.events.push(Event::End(kind, len));
    }

    fn scalar(&mut self, path: &Path<'_>, value: Scalar<'_>) {
        self.key(path);
        self.events.push(match value {
            Scalar::Null => Event::Null,
            Scalar::Bool(b) => Event::Bool(b),
            Scalar::Number(raw) => Event::Number(raw.to_vec()),
        });
    }

    fn string(&mut self, path: &Path<'_>, part: &[u8], last: bool) {
        if !self.in_string {
            self.key(path);
            self.in_string = true;
        }
        self.string.extend_from_slice(part);
        if last {
            self.in_string = false;
            self.events.push(Event::Str(std::mem::take(&mut self.string)));
        }
    }

    fn skipped(&mut self, path: &Path<'_>, kind: Kind, stats: SkipStats) {
        self.key(path);
        self.events.push(Event::Skipped(kind, stats));
    }
}

impl DocVisitor for Recorder {
    fn doc_begin(&mut self) {
        assert_eq!(self.open_docs, 0, "a document began inside another");
        self.open_docs += 1;
        // A string cut by a broken document is abandoned with it.
        self.string.clear();
        self.in_string = false;
        self.events.push(Event::DocBegin);
    }

    fn doc_end(&mut self, _ts: Timestamp, end: DocEnd<'_>) {
        assert_eq!(self.open_docs, 1, "a document ended that had not begun");
        self.open_docs = 0;
        self.string.clear();
        self.in_string = false;
        // Error offsets are part of the outcome: they must not depend on how bytes were cut.
        self.events.push(Event::DocEnd(format!("{end:?}")));
    }
}
