//! Finding a body's framing again after a gap that took chunk framing with it: the next chunk
//! whose size line, size and terminating CRLF agree with the bytes that follow (and, for NDJSON
//! and SSE bodies, whose payload ends a line or an event), or the next message start, which says
//! the body ended in the gap. Never a guess: a candidate that does not verify is passed over, as
//! is one too long to verify within [`MAX_CHUNK`]; bytes are held only while the earliest
//! candidate still waits for the bytes that decide it.

use memchr::memchr;

use super::resync::{StartKind, is_message_start, may_start_message};
use crate::segment::{CaptureMeta, Timestamp};

/// Longest chunk payload held to be verified; a longer one is passed over (its bytes lost too).
pub const MAX_CHUNK: usize = 64 * 1024;
/// Longest request or status line looked for (as [`super::resync`]).
const MAX_LINE: usize = 8 * 1024;
/// Most hex digits of a chunk size we follow (15 is already 1 EiB).
const MAX_DIGITS: usize = 15;

/// What a candidate chunk's payload must be, beyond its framing: for NDJSON and SSE, whole
/// documents. (A false candidate is built of real framing — the tail of a payload or of a size
/// line, then a CRLF — so its payload would begin with a size line's hex digits, or end inside
/// a payload, which holds no CR: JSON never does.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// NDJSON: it is whole lines (begins a JSON document, ends a line).
    Lines,
    /// Server-sent events: it is whole events (begins with a field line, ends with a blank line).
    Events,
    /// Anything else: the next chunk's size line must follow it.
    Any,
}

impl Payload {
    /// For a body of this media type.
    pub fn for_content_type(content_type: Option<&str>) -> Payload {
        let media = content_type.unwrap_or("").split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/x-ndjson") {
            Payload::Lines
        } else if media.eq_ignore_ascii_case("text/event-stream") {
            Payload::Events
        } else {
            Payload::Any
        }
    }
}

/// Where a piece of held bytes came from, to replay them as they arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub ts: Timestamp,
    /// Stream position of its first byte.
    pub pos: u64,
    pub peer_pos: Option<u64>,
    pub meta: CaptureMeta,
}

/// What a scan found.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A verified chunk starts (`at_chunk`), or a message (the body ended in the gap): at the
    /// start of `carried` (held bytes of earlier pieces, to be read first, each with where it
    /// came from), else at `offset` in the piece just given.
    At {
        at_chunk: bool,
        carried: Vec<(Piece, Vec<u8>)>,
        offset: usize,
    },
    NotYet,
}

/// How one candidate position stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Chunk,
    Message,
    Rejected,
    /// The bytes that decide it have not arrived yet.
    Undecided,
}

#[derive(Debug)]
pub struct Rejoin {
    kind: StartKind,
    payload: Payload,
    /// Bytes from the earliest undecided candidate on (its first byte is that candidate).
    buf: Vec<u8>,
    /// Where the stretches of `buf` came from: (offset in `buf`, piece), in order.
    pieces: Vec<(usize, Piece)>,
    /// The next byte of a new piece may start a chunk or message (it follows a line end or a
    /// gap); meaningful when `buf` is empty.
    line_start: bool,
    /// Capture bytes passed over.
    skipped: u64,
}

impl Rejoin {
    /// After a gap: the next byte is a candidate.
    pub fn new(kind: StartKind, payload: Payload) -> Self {
        Rejoin { kind, payload, buf: Vec::new(), pieces: Vec::new(), line_start: true, skipped: 0 }
    }

    /// Bytes held, waiting for a candidate to be decided.
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    /// Capture time of the oldest byte held.
    pub fn held_since(&self) -> Option<Timestamp> {
        self.pieces.first().map(|(_, p)| p.ts)
    }

    /// Capture bytes passed over so far (taken: counted once).
    pub fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }

    /// Another gap: what was held cannot be completed any more; the next byte is a candidate.
    pub fn gap(&mut self) {
        self.skipped += self.buf.len() as u64;
        self.buf.clear();
        self.pieces.clear();
        self.line_start = true;
    }

    /// Scans the next piece; `piece_start`: it begins a captured segment (a candidate too, as
    /// writes begin there: a request body ends without a newline before the next request).
    pub fn scan(&mut self, data: &[u8], piece: Piece, piece_start: bool) -> Found {
        let carried = self.buf.len();
        let owned;
        let joined: &[u8] = if carried == 0 {
            data
        } else {
            let mut b = std::mem::take(&mut self.buf);
            b.extend_from_slice(data);
            owned = b;
            &owned
        };
        let mut pieces = std::mem::take(&mut self.pieces);
        pieces.push((carried, piece));
        // Held bytes always begin at a candidate; otherwise the piece's first byte is one only
        // after a line end or a gap, or at a segment's start. Then: after every LF.
        let at_piece = piece_start.then_some(carried);
        let next = |from: usize| {
            let lf = memchr(b'\n', &joined[from..]).map(|k| from + k + 1);
            match (lf, at_piece.filter(|&p| p > from)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        let mut start = if carried > 0 || self.line_start || piece_start { Some(0) } else { next(0) };
        while let Some(s) = start {
            if s >= joined.len() {
                self.skipped += joined.len() as u64;
                self.line_start = true;
                return Found::NotYet;
            }
            match self.verdict(&joined[s..]) {
                v @ (Verdict::Chunk | Verdict::Message) => {
                    self.skipped += s as u64;
                    let mut out = Vec::new();
                    if s < carried {
                        for (k, &(at, p)) in pieces.iter().enumerate() {
                            let end = pieces.get(k + 1).map_or(joined.len(), |n| n.0).min(carried);
                            if end <= s || at >= carried {
                                continue;
                            }
                            let from = at.max(s);
                            let shifted = Piece { pos: p.pos + (from - at) as u64, ..p };
                            out.push((shifted, joined[from..end].to_vec()));
                        }
                    }
                    self.line_start = true;
                    return Found::At {
                        at_chunk: v == Verdict::Chunk,
                        carried: out,
                        offset: s.saturating_sub(carried),
                    };
                }
                Verdict::Undecided => {
                    // Keep the candidate and what follows it (bounded by the verdict), with
                    // where each stretch came from.
                    self.skipped += s as u64;
                    self.buf = joined[s..].to_vec();
                    self.pieces = pieces
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| pieces.get(k + 1).is_none_or(|n| n.0 > s))
                        .map(|(_, &(at, p))| {
                            let from = at.max(s);
                            (from - s, Piece { pos: p.pos + (from - at) as u64, ..p })
                        })
                        .collect();
                    return Found::NotYet;
                }
                Verdict::Rejected => start = next(s),
            }
        }
        // No candidate left in what we have: all of it is passed over.
        self.skipped += joined.len() as u64;
        self.line_start = false;
        Found::NotYet
    }

    /// How the bytes at one candidate position stand.
    fn verdict(&self, b: &[u8]) -> Verdict {
        let message = match memchr(b'\n', &b[..b.len().min(MAX_LINE + 1)]) {
            Some(k) if is_message_start(self.kind, &b[..k]) => return Verdict::Message,
            Some(_) => Verdict::Rejected,
            None if b.len() <= MAX_LINE && may_start_message(self.kind, b) => Verdict::Undecided,
            None => Verdict::Rejected,
        };
        match (self.chunk_verdict(b), message) {
            (Verdict::Chunk, _) => Verdict::Chunk,
            (Verdict::Rejected, Verdict::Rejected) => Verdict::Rejected,
            _ => Verdict::Undecided,
        }
    }

    /// A chunk at the start of `b`: `hex CRLF payload CRLF`, strictly (no extensions, no bare
    /// LF: Go and every server we follow send none), its payload as [`Payload`] says.
    fn chunk_verdict(&self, b: &[u8]) -> Verdict {
        let Some((size, head)) = size_line(b) else { return Verdict::Rejected };
        let Some((size, head)) = size.zip(head) else { return Verdict::Undecided };
        if size == 0 {
            // The last chunk, without trailers.
            return match b.get(head..head + 2) {
                Some(b"\r\n") => Verdict::Chunk,
                Some(_) => Verdict::Rejected,
                None if b.get(head).is_none_or(|&c| c == b'\r') => Verdict::Undecided,
                None => Verdict::Rejected,
            };
        }
        if size > MAX_CHUNK as u64 {
            return Verdict::Rejected;
        }
        let end = head + size as usize;
        let Some(tail) = b.get(end..end + 2) else {
            // Undecided unless a byte already seen where the CRLF must be is wrong.
            return if b.get(end).is_some_and(|&c| c != b'\r') { Verdict::Rejected } else { Verdict::Undecided };
        };
        if tail != b"\r\n" {
            return Verdict::Rejected;
        }
        let payload = &b[head..end];
        let ok = match self.payload {
            Payload::Lines => matches!(payload.first(), Some(b'{' | b'[')) && payload.ends_with(b"\n"),
            Payload::Events => {
                begins_event(payload)
                    && (payload.ends_with(b"\n\n") || payload.ends_with(b"\r\n\r\n") || payload.ends_with(b"\r\r"))
            }
            Payload::Any => match size_line(&b[end + 2..]) {
                None => return Verdict::Rejected,
                Some((Some(_), Some(_))) => true,
                Some(_) => return Verdict::Undecided,
            },
        };
        if ok { Verdict::Chunk } else { Verdict::Rejected }
    }
}

/// Whether `payload` begins with an SSE field line (`name:`, letters only) or a comment (`:`).
fn begins_event(payload: &[u8]) -> bool {
    let name = payload.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    payload.get(name) == Some(&b':')
}

/// A chunk-size line at the start of `b`: `None` when it cannot be one; else its size and the
/// length of the line (CRLF included), each `None` while bytes are still missing.
#[allow(clippy::type_complexity)]
fn size_line(b: &[u8]) -> Option<(Option<u64>, Option<usize>)> {
    let digits = b.iter().take(MAX_DIGITS + 1).take_while(|c| c.is_ascii_hexdigit()).count();
    if digits == 0 && !b.is_empty() || digits > MAX_DIGITS {
        return None;
    }
    match &b[digits..] {
        [] => Some((None, None)),
        [b'\r'] => Some((None, None)),
        [b'\r', b'\n', ..] => {
            let size = b[..digits].iter().fold(0u64, |v, &c| v << 4 | u64::from(hex(c)));
            Some((Some(size), Some(digits + 2)))
        }
        _ => None,
    }
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(ts: u64, pos: u64) -> Piece {
        Piece { ts: Timestamp(ts), pos, peer_pos: None, meta: CaptureMeta::default() }
    }

    /// Scans `pieces` (each at time = its index, positions from 1000) after a gap; returns what
    /// the verified candidate starts with (carried and rest) and the bytes passed over.
    fn find(payload: Payload, pieces: &[&[u8]]) -> Option<(bool, Vec<u8>, Vec<u64>, u64)> {
        let mut r = Rejoin::new(StartKind::Response, payload);
        let mut pos = 1000;
        for (i, p) in pieces.iter().enumerate() {
            if let Found::At { at_chunk, carried, offset } = r.scan(p, piece(i as u64, pos), false) {
                let times = carried.iter().map(|(p, _)| p.ts.0).collect();
                let mut bytes: Vec<u8> = carried.into_iter().flat_map(|(_, b)| b).collect();
                bytes.extend_from_slice(&p[offset..]);
                for rest in &pieces[i + 1..] {
                    bytes.extend_from_slice(rest);
                }
                return Some((at_chunk, bytes, times, r.take_skipped()));
            }
            pos += p.len() as u64;
        }
        None
    }

    const TAIL: &[u8] = b"\"done\":false}\n\r\n";
    const NEXT: &[u8] = b"e\r\n{\"done\":true}\n\r\n0\r\n\r\n";

    #[test]
    fn finds_the_next_verified_chunk_however_the_bytes_come() {
        let wire = [TAIL, NEXT].concat();
        for cut in 0..wire.len() {
            let (a, b) = wire.split_at(cut);
            let (chunk, bytes, _, skipped) = find(Payload::Lines, &[a, b]).expect("found");
            assert!(chunk, "cut {cut}");
            assert_eq!(bytes, NEXT, "cut {cut}");
            assert_eq!(skipped, TAIL.len() as u64, "cut {cut}");
        }
        // Byte by byte: every held byte is replayed with the time of its own piece.
        let pieces: Vec<&[u8]> = wire.chunks(1).collect();
        let (_, bytes, times, _) = find(Payload::Lines, &pieces).unwrap();
        assert_eq!(bytes, NEXT);
        let first = TAIL.len() as u64;
        assert_eq!(times, (first..first + times.len() as u64).collect::<Vec<_>>());
    }

    #[test]
    fn candidates_that_do_not_verify_are_passed_over() {
        // Size says 5 but no CRLF there; a payload that does not end a line; one that does not
        // begin a document; then the real one.
        let wire = b"x\n5\r\n{bcdefg\r\n2\r\nqq\r\n3\r\nab\n\r\n3\r\n{b\n\r\n2\r\n{\n\r\n" as &[u8];
        let (chunk, bytes, _, _) = find(Payload::Lines, &[wire]).unwrap();
        assert!(chunk);
        assert_eq!(bytes, b"3\r\n{b\n\r\n2\r\n{\n\r\n");
        let events = b"2\r\nqq\r\n3\r\nqq\n\r\n3\r\nq\n\n\r\n0\r\n\r\n";
        let (_, bytes, _, _) = find(Payload::Events, &[events]).unwrap();
        assert_eq!(bytes, b"0\r\n\r\n", "an event begins with a field and ends with a blank line");
        let (_, bytes, _, _) = find(Payload::Events, &[b"5\r\n:x\n\n\n\r\n"]).unwrap();
        assert_eq!(bytes, b"5\r\n:x\n\n\n\r\n", "a comment begins an event too");
        // Any other body: the chunk must be followed by a size line.
        assert_eq!(find(Payload::Any, &[b"1\r\nz\r\n"]), None, "undecided");
        let (_, bytes, _, _) = find(Payload::Any, &[b"1\r\nz\r\nq\r\n1\r\nz\r\n2\r\n"]).unwrap();
        assert_eq!(bytes, b"1\r\nz\r\n2\r\n");
        // Extensions and bare LFs are not followed; nor a size beyond the bound.
        assert_eq!(find(Payload::Lines, &[b"1;x=y\r\n\n\r\n1\n\n\r\n"]), None);
        let big = format!("{:x}\r\n", MAX_CHUNK + 1);
        assert_eq!(find(Payload::Lines, &[big.as_bytes(), &vec![b'\n'; MAX_CHUNK + 1], b"\r\n"]), None);
    }

    #[test]
    fn real_framing_does_not_make_a_false_chunk() {
        // A payload cut mid-line after "\n8" (a proxy's chunking), its CRLF, then a real chunk
        // of 8 bytes in all: "8\r\n" + that chunk looks whole, but its payload would begin with
        // a size line (the fuzz target found it).
        let wire = b"{\"a\":\n8\r\n5\r\n,\"co\n\r\n0\r\n\r\n" as &[u8];
        let (chunk, bytes, _, _) = find(Payload::Lines, &[wire]).unwrap();
        assert!(chunk);
        assert_eq!(bytes, b"0\r\n\r\n");
        let mut r = Rejoin::new(StartKind::Response, Payload::Lines);
        let at_gap = b"8\r\n5\r\n,\"co\n\r\n0\r\n\r\n";
        let Found::At { offset, .. } = r.scan(at_gap, piece(1, 0), false) else { panic!("not found") };
        assert_eq!(&at_gap[offset..], b"0\r\n\r\n", "not at the gap either");
    }

    #[test]
    fn a_message_start_says_the_body_ended_in_the_gap() {
        let (chunk, bytes, _, skipped) = find(Payload::Lines, &[b"\r\n", b"HTTP/1.1 200 OK\r\n\r\n"]).unwrap();
        assert!(!chunk);
        assert_eq!((bytes.as_slice(), skipped), (&b"HTTP/1.1 200 OK\r\n\r\n"[..], 2));
        let mut r = Rejoin::new(StartKind::Request, Payload::Any);
        assert_eq!(r.scan(b"POST /api/chat HT", piece(1, 0), false), Found::NotYet);
        assert_eq!(r.held(), 17);
        let found = r.scan(b"TP/1.1\r\n", piece(2, 17), false);
        let Found::At { at_chunk: false, carried, offset: 0 } = found else { panic!("{found:?}") };
        assert_eq!(carried, vec![(piece(1, 0), b"POST /api/chat HT".to_vec())]);
    }

    #[test]
    fn held_bytes_are_bounded_and_dropped_at_the_next_gap() {
        let mut r = Rejoin::new(StartKind::Response, Payload::Lines);
        let size = format!("{MAX_CHUNK:x}\r\n");
        assert_eq!(r.scan(size.as_bytes(), piece(1, 0), false), Found::NotYet);
        for i in 0..MAX_CHUNK / 1000 + 2 {
            assert_eq!(r.scan(&[b'a'; 1000], piece(2 + i as u64, 0), false), Found::NotYet);
            assert!(r.held() <= MAX_CHUNK + 16, "{} held", r.held());
        }
        assert_eq!(r.held(), 0, "the candidate could not verify: nothing is held");
        assert_eq!(r.scan(b"1", piece(9, 0), false), Found::NotYet);
        assert_eq!(r.held(), 0, "mid-line: not a candidate");
        assert_eq!(r.scan(b"1", piece(9, 0), true), Found::NotYet);
        assert_eq!(r.held(), 1, "a segment's start: a candidate");
        r.gap();
        r.gap();
        assert_eq!(r.scan(b"1", piece(10, 0), false), Found::NotYet);
        assert_eq!(r.held(), 1, "right after a gap: a candidate");
        r.gap();
        assert_eq!(r.held(), 0);
    }
}
