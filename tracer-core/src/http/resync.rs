//! Finding the next message start in a byte stream we lost step with (capture started
//! mid-connection, bytes missing, garbage): a request line or a status line at a line start.

use memchr::memchr;

use crate::segment::Timestamp;

/// Longest request or status line we look for; longer lines are not message starts we follow.
const MAX_LINE: usize = 8 * 1024;

const METHODS: &[&[u8]] =
    &[b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE "];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartKind {
    Request,
    Response,
}

/// Result of a scan.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A message starts at `offset` in the data just given; `carried` bytes from earlier pieces
    /// precede it and belong to the message too.
    At {
        offset: usize,
        carried: Vec<u8>,
    },
    NotYet,
}

#[derive(Debug)]
pub struct Resync {
    kind: StartKind,
    /// Bytes of an unfinished line from earlier pieces.
    tail: Vec<u8>,
    /// Where in `tail` each of those pieces begins, and its capture time.
    marks: Vec<(usize, Timestamp)>,
    /// Whether `tail` (or the next piece, when `tail` is empty) starts at a line start.
    line_start: bool,
}

impl Resync {
    /// `line_start`: whether the next byte may begin a message (start of capture, after a gap).
    pub fn new(kind: StartKind, line_start: bool) -> Self {
        Resync { kind, tail: Vec::new(), marks: Vec::new(), line_start }
    }

    /// Scans the next piece. `piece_start`: it begins a captured segment, where a client or
    /// server begins its writes: a candidate too (a request body ends without a newline, so
    /// the next request line is not at a line start).
    #[cfg(test)]
    pub fn scan(&mut self, data: &[u8], piece_start: bool) -> Found {
        self.scan_timed(data, piece_start, Timestamp(0)).0
    }

    /// [`Self::scan`] of a piece captured at `ts`; with a message found, the capture time of its
    /// first byte (that of an earlier piece when it began there).
    pub fn scan_timed(&mut self, data: &[u8], piece_start: bool, ts: Timestamp) -> (Found, Timestamp) {
        let carried = self.tail.len();
        let mut marks = std::mem::take(&mut self.marks);
        marks.push((carried, ts));
        // The capture time of byte `s` of what is scanned.
        let ts_at = |s: usize| marks.iter().rev().find(|(at, _)| *at <= s).map_or(ts, |(_, t)| *t);
        let owned;
        let buf: &[u8] = if carried == 0 {
            data
        } else {
            let mut b = std::mem::take(&mut self.tail);
            b.extend_from_slice(data);
            owned = b;
            &owned
        };
        // Candidates, in order: position 0 when it is a line start, after every LF, and the
        // piece's first byte.
        let piece = piece_start.then_some(carried);
        let next = |from: usize| {
            let lf = memchr(b'\n', &buf[from..]).map(|k| from + k + 1);
            match (lf, piece.filter(|&p| p > from)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        let mut start = if self.line_start || (piece_start && carried == 0) { Some(0) } else { next(0) };
        while let Some(s) = start {
            if s >= buf.len() {
                self.line_start = true;
                self.tail.clear();
                return (Found::NotYet, ts);
            }
            match memchr(b'\n', &buf[s..]) {
                Some(k) => {
                    let line = &buf[s..s + k];
                    if is_message_start(self.kind, line) {
                        self.tail.clear();
                        let found = if s >= carried {
                            Found::At { offset: s - carried, carried: Vec::new() }
                        } else {
                            Found::At { offset: 0, carried: buf[s..carried].to_vec() }
                        };
                        return (found, ts_at(s));
                    }
                    start = next(s);
                }
                None => {
                    // An unfinished line: keep it (bounded) until the next piece completes it.
                    let rest = &buf[s..];
                    if rest.len() <= MAX_LINE && may_start_message(self.kind, rest) {
                        self.tail = rest.to_vec();
                        self.marks = std::iter::once((0, ts_at(s)))
                            .chain(marks.iter().filter(|(at, _)| *at > s).map(|&(at, t)| (at - s, t)))
                            .collect();
                        self.line_start = true;
                        return (Found::NotYet, ts);
                    }
                    start = piece.filter(|&p| p > s);
                    if start.is_none() {
                        self.tail.clear();
                        self.line_start = false;
                        return (Found::NotYet, ts);
                    }
                }
            }
        }
        self.tail.clear();
        self.line_start = false;
        (Found::NotYet, ts)
    }
}

/// True when `prefix` (an unfinished line) may still become a message start.
pub(super) fn may_start_message(kind: StartKind, prefix: &[u8]) -> bool {
    match kind {
        StartKind::Request => METHODS.iter().any(|m| {
            let n = m.len().min(prefix.len());
            prefix[..n] == m[..n]
        }),
        StartKind::Response => {
            let n = prefix.len().min(5);
            prefix[..n] == b"HTTP/"[..n]
        }
    }
}

/// True when `line` (without its LF) is a request line or a status line.
pub(super) fn is_message_start(kind: StartKind, line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return false;
    }
    match kind {
        StartKind::Request => {
            METHODS.iter().any(|m| line.starts_with(m))
                && (line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0"))
        }
        StartKind::Response => {
            line.len() >= 12
                && (line.starts_with(b"HTTP/1.1 ") || line.starts_with(b"HTTP/1.0 "))
                && line[9..12].iter().all(u8::is_ascii_digit)
                && (line.len() == 12 || line[12] == b' ')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_request_line_after_garbage() {
        let mut r = Resync::new(StartKind::Request, false);
        let data = b"tail of body\"}\nPOST /api/chat HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(r.scan(data, false), Found::At { offset: 15, carried: vec![] });
    }

    #[test]
    fn line_start_at_capture_start() {
        let mut r = Resync::new(StartKind::Request, true);
        assert_eq!(r.scan(b"GET / HTTP/1.1\r\n\r\n", false), Found::At { offset: 0, carried: vec![] });
        let mut r = Resync::new(StartKind::Request, false);
        assert_eq!(r.scan(b"GET / HTTP/1.1\r\n\r\n", false), Found::NotYet);
    }

    #[test]
    fn a_segment_start_is_a_candidate() {
        // A JSON body ends without a newline: the next request begins the next segment.
        let mut r = Resync::new(StartKind::Request, true);
        assert_eq!(r.scan(b"{\"model\":\"m\"}", true), Found::NotYet);
        assert_eq!(r.scan(b"POST /api/chat HTTP/1.1\r\n\r\n", false), Found::NotYet, "not a segment start");
        let mut r = Resync::new(StartKind::Request, true);
        assert_eq!(r.scan(b"{\"model\":\"m\"}", true), Found::NotYet);
        assert_eq!(r.scan(b"POST /api/chat HTTP/1.1\r\n\r\n", true), Found::At { offset: 0, carried: vec![] });
        // Still verified: a segment that starts with anything else is not a message.
        assert_eq!(Resync::new(StartKind::Request, false).scan(b"POST is a word\n", true), Found::NotYet);
        // After a tail kept for the next piece, that piece's start is a candidate too.
        let mut r = Resync::new(StartKind::Response, false);
        assert_eq!(r.scan(b"x\nHTTP/1.", true), Found::NotYet);
        assert_eq!(r.scan(b"HTTP/1.1 200 OK\r\n\r\n", true), Found::At { offset: 0, carried: vec![] });
    }

    #[test]
    fn candidate_split_across_pieces() {
        let wire = b"xx\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        for cut in 1..wire.len() {
            let mut r = Resync::new(StartKind::Response, false);
            let (a, b) = wire.split_at(cut);
            let got = match r.scan(a, false) {
                Found::At { offset, carried } => {
                    assert!(carried.is_empty());
                    a[offset..].iter().copied().chain(b.iter().copied()).collect::<Vec<u8>>()
                }
                Found::NotYet => match r.scan(b, false) {
                    Found::At { offset, carried } => carried.into_iter().chain(b[offset..].iter().copied()).collect(),
                    Found::NotYet => panic!("not found at cut {cut}"),
                },
            };
            assert_eq!(got, &wire[3..], "cut {cut}");
        }
    }

    #[test]
    fn body_text_that_mentions_http_mid_line_is_not_a_start() {
        let mut r = Resync::new(StartKind::Response, true);
        assert_eq!(r.scan(b"{\"content\":\"see HTTP/1.1 200 OK\"}\n", true), Found::NotYet);
        let mut r = Resync::new(StartKind::Request, true);
        assert_eq!(r.scan(b"POST is a word\nGET / HTTP/2\n", true), Found::NotYet);
    }

    #[test]
    fn a_start_found_across_pieces_is_timed_by_its_first_byte() {
        let mut r = Resync::new(StartKind::Request, false);
        assert_eq!(r.scan_timed(b"tail of a body", true, Timestamp(1)).0, Found::NotYet);
        assert_eq!(r.scan_timed(b"POST /v1/embeddings HTTP/1", true, Timestamp(2)).0, Found::NotYet);
        let (found, first) = r.scan_timed(b".1\r\nHost: x\r\n\r\n", false, Timestamp(3));
        assert_eq!(found, Found::At { offset: 0, carried: b"POST /v1/embeddings HTTP/1".to_vec() });
        assert_eq!(first, Timestamp(2));
    }
}
