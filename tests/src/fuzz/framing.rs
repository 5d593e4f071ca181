//! The body framers: NDJSON, plain JSON sequences and server-sent events.
//!
//! Input: `[mode: u8][split seed: u64][gap at: u16][body...]`.
//!
//! Invariants: documents begin and end in pairs; the framer's counters equal the documents it
//! reported; feeding the body whole or cut anywhere reports the same documents, values and
//! outcomes; with bytes missing somewhere, the pairing still holds.

use arbitrary::Unstructured;
use tracer_core::llm::framing::{FramingStats, JsonSeq, Sse};
use tracer_core::segment::Timestamp;

use super::input::{split, take};
use super::record::{Event, Recorder};

#[derive(Debug)]
enum Framer {
    Seq(JsonSeq),
    Sse(Sse),
}

impl Framer {
    fn new(mode: u8) -> Self {
        match mode % 3 {
            0 => Framer::Seq(JsonSeq::new(true)),
            1 => Framer::Seq(JsonSeq::new(false)),
            _ => Framer::Sse(Sse::new()),
        }
    }
    fn feed(&mut self, data: &[u8], v: &mut Recorder) {
        match self {
            Framer::Seq(f) => f.feed(data, Timestamp(1), v),
            Framer::Sse(f) => f.feed(data, Timestamp(1), v),
        }
    }
    fn gap(&mut self) {
        match self {
            Framer::Seq(f) => f.gap(),
            Framer::Sse(f) => f.gap(),
        }
    }
    fn finish(&mut self, v: &mut Recorder) -> FramingStats {
        match self {
            Framer::Seq(f) => {
                f.finish(Timestamp(1), v);
                f.stats()
            }
            Framer::Sse(f) => {
                f.finish(Timestamp(1), v);
                f.stats()
            }
        }
    }
}

/// Feeds `pieces`, missing bytes before piece `gap_before` if set; returns the events.
fn frame(mode: u8, pieces: &[&[u8]], gap_before: Option<usize>) -> Vec<Event> {
    let mut framer = Framer::new(mode);
    let mut rec = Recorder::default();
    for (i, piece) in pieces.iter().enumerate() {
        if gap_before == Some(i) {
            framer.gap();
        }
        framer.feed(piece, &mut rec);
    }
    let stats = framer.finish(&mut rec);
    let begun = rec.events.iter().filter(|e| **e == Event::DocBegin).count() as u64;
    let ended = rec.events.iter().filter(|e| matches!(e, Event::DocEnd(_))).count() as u64;
    assert_eq!(begun, ended, "documents begun and ended");
    // Documents cut by missing bytes are counted apart (`damaged`), and so is the tail of a
    // line begun in a gap, which never began as a document here.
    let damaged = rec.events.iter().filter(|e| matches!(e, Event::DocEnd(d) if d == "Damaged")).count() as u64;
    assert_eq!(stats.docs + stats.invalid + damaged, ended, "framer counters {stats:?}");
    assert!(stats.damaged >= damaged, "framer counters {stats:?}: {damaged} damaged documents ended");
    if gap_before.is_none() {
        assert_eq!(stats.damaged, 0, "damaged without a gap: {stats:?}");
    }
    rec.events
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mode: u8 = take(&mut u);
    let seed: u64 = take(&mut u);
    let gap: u16 = take(&mut u);
    let body = u.take_rest();

    let whole = frame(mode, &[body], None);
    let pieces = split(body, seed);
    assert_eq!(whole, frame(mode, &pieces, None), "documents depend on where the body was cut");
    if gap > 0 && !pieces.is_empty() {
        frame(mode, &pieces, Some(usize::from(gap) % pieces.len()));
    }
}
