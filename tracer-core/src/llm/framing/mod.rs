//! Body framings of Ollama responses, each turning body pieces into a sequence of JSON
//! documents for a [`DocVisitor`]: newline-delimited JSON (native streams), JSON values one after
//! another (plain JSON bodies), and server-sent events (`/v1` streams).

mod seq;
mod sse;

pub use seq::JsonSeq;
pub use sse::Sse;

use crate::json::{JsonError, JsonVisitor};
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
    /// A whole document in one slice (and its SSE event name), before it is scanned: a visitor
    /// that recognises it by its bytes may take it — leaving itself as if the document had been
    /// begun, scanned and ended as [`DocEnd::Json`] at `ts` — and answer true; false lets the
    /// scanner read it.
    #[inline]
    fn whole_doc(&mut self, _doc: &[u8], _event: Option<&str>, _ts: Timestamp) -> bool {
        false
    }
}

/// Counters of a framer, for flags and summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FramingStats {
    pub docs: u64,
    pub invalid: u64,
    /// Documents cut by missing bytes.
    pub damaged: u64,
    /// Of `docs`, those the visitor's fast path took ([`DocVisitor::whole_doc`]).
    pub fast: u64,
}

#[cfg(test)]
mod tests;
