//! Error bodies (status ≥ 400) of every API: native `{"error":"…"}`, OpenAI
//! `{"error":{"message","type"}}`, Anthropic `{"type":"error","error":{…}}`, and plain text.

use super::framing::{DocEnd, DocVisitor};
use super::stream::{MESSAGE, SHORT, Stream};
use crate::json::{JsonVisitor, Path, StrAcc};
use crate::segment::Timestamp;

/// Which error string is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrStr {
    None,
    Message,
    Type,
}

#[derive(Debug)]
pub struct ErrorVisitor {
    pub(super) s: Stream,
    cur: ErrStr,
    pub(super) message: StrAcc,
    pub(super) kind: StrAcc,
    /// The first bytes of the body, for plain-text errors (`404 page not found`).
    pub(super) text: StrAcc,
}

impl Default for ErrorVisitor {
    fn default() -> Self {
        Self::new()
    }
}

impl ErrorVisitor {
    pub fn new() -> Self {
        ErrorVisitor {
            s: Stream::for_error(),
            cur: ErrStr::None,
            message: StrAcc::with_cap(MESSAGE),
            kind: StrAcc::with_cap(SHORT),
            text: StrAcc::with_cap(MESSAGE),
        }
    }
}

impl JsonVisitor for ErrorVisitor {
    fn string(&mut self, path: &Path<'_>, part: &[u8], last: bool) {
        if self.cur == ErrStr::None {
            // Native `{"error":"…"}`, OpenAI `{"error":{"message","type"}}`,
            // Anthropic `{"type":"error","error":{"type","message"}}`.
            self.cur = if path.is(&["error"]) || path.is(&["error", "message"]) || path.is(&["message"]) {
                self.message.clear();
                ErrStr::Message
            } else if path.is(&["error", "type"]) {
                self.kind.clear();
                ErrStr::Type
            } else {
                return;
            };
        }
        match self.cur {
            ErrStr::Message => self.message.push(part),
            ErrStr::Type => self.kind.push(part),
            _ => {}
        }
        if last {
            self.cur = ErrStr::None;
        }
    }
}

impl DocVisitor for ErrorVisitor {
    fn doc_begin(&mut self) {}
    fn doc_end(&mut self, _ts: Timestamp, _end: DocEnd<'_>) {}
}
