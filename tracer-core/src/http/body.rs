//! Message-body framing: Content-Length, chunked (extensions, trailers) and read-until-close,
//! as an explicit state machine that is fed pieces and never buffers body bytes.

/// Longest chunk-size line, trailer line or extension we accept before calling the stream broken.
const MAX_LINE: usize = 8 * 1024;

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD responses, 1xx/204/304, requests without length).
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading hex digits of a chunk size.
    Size {
        value: u64,
        digits: u8,
    },
    /// After the size: extensions until end of line.
    Ext {
        value: u64,
        line: usize,
    },
    /// Saw CR at the end of a size line.
    SizeLf {
        value: u64,
    },
    Data {
        left: u64,
    },
    /// After chunk data: CR LF.
    DataCr,
    DataLf,
    /// Trailer section: at the start of a line.
    TrailerStart,
    /// Inside a trailer line.
    Trailer {
        line: usize,
    },
    TrailerLf,
    /// Saw CR of the empty line ending the trailers.
    EndLf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("invalid chunk size line")]
    ChunkSize,
    #[error("missing CRLF after chunk data")]
    ChunkDelimiter,
    #[error("chunk line or trailer too long")]
    LineTooLong,
}

/// Framing that broke, and where: bytes of the piece before `at` were consumed (and body bytes
/// among them handed on), so a search for the next message must start there, not before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{error} at byte {at} of the piece")]
pub struct Broken {
    pub error: BodyError,
    pub at: usize,
}

/// What `len` bytes missing from a body do to its framing (see [`BodyReader::skip_gap`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// They lay inside data of known length: the reader stays in step. `done`: the body ended
    /// with them; `new_chunk`: they took bytes of an HTTP chunk no earlier gap had hit.
    InStep { done: bool, new_chunk: bool },
    /// The body ended inside them (a known length): the last `after` of them belong to what
    /// follows the body.
    EndedInside { after: u64 },
    /// They cover chunk framing: the reader lost step, and the body must be rejoined at the
    /// next chunk that can be verified (see [`super::rejoin`]).
    LostStep,
}

/// Outcome of feeding bytes to a [`BodyReader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of the input consumed (framing included).
    pub consumed: usize,
    /// The body ended inside this input.
    pub done: bool,
}

/// Reads one body. Body bytes are handed to a callback as sub-slices of the input.
#[derive(Clone, Debug)]
pub struct BodyReader {
    framing: Framing,
    remaining: u64,
    chunk: Chunk,
    /// Body bytes delivered so far (after de-chunking).
    delivered: u64,
    done: bool,
    /// Chunks started so far, and the one a gap last took bytes of (counted once).
    chunks: u64,
    gap_chunk: u64,
    /// Whole chunks are taken in one step ([`whole_chunk`]); off, every framing byte goes
    /// through the state machine (the equivalence tests compare both).
    fast: bool,
}

impl BodyReader {
    pub fn new(framing: Framing) -> Self {
        let remaining = if let Framing::Length(n) = framing { n } else { 0 };
        let done = matches!(framing, Framing::None | Framing::Length(0));
        BodyReader {
            framing,
            remaining,
            chunk: Chunk::Size { value: 0, digits: 0 },
            delivered: 0,
            done,
            chunks: 0,
            gap_chunk: 0,
            fast: true,
        }
    }

    /// Turns the whole-chunk fast path off (equivalence tests).
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast = on;
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Body bytes still to come of a `Content-Length` body (0 for other framings).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Chunks begun so far (chunked framing; the last, empty one included).
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// Feeds `input`; body bytes go to `body`. Stops at the end of the body.
    pub fn feed(&mut self, input: &[u8], body: &mut impl FnMut(&[u8])) -> Result<Fed, Broken> {
        if self.done {
            return Ok(Fed { consumed: 0, done: true });
        }
        match self.framing {
            Framing::None => {
                self.done = true;
                Ok(Fed { consumed: 0, done: true })
            }
            Framing::Length(_) => {
                let take = (self.remaining.min(input.len() as u64)) as usize;
                if take > 0 {
                    body(&input[..take]);
                }
                self.remaining -= take as u64;
                self.delivered += take as u64;
                self.done = self.remaining == 0;
                Ok(Fed { consumed: take, done: self.done })
            }
            Framing::UntilClose => {
                if !input.is_empty() {
                    body(input);
                }
                self.delivered += input.len() as u64;
                Ok(Fed { consumed: input.len(), done: false })
            }
            Framing::Chunked => {
                let mut at = 0;
                self.feed_chunked(input, &mut at, body).map_err(|error| Broken { error, at })
            }
        }
    }

    /// The sender closed the connection: a read-until-close body is complete now.
    pub fn close(&mut self) -> bool {
        if self.framing == Framing::UntilClose {
            self.done = true;
        }
        self.done
    }

    /// `len` bytes of the body are missing from the capture: where that leaves the framing.
    pub fn skip_gap(&mut self, len: u64) -> Skipped {
        match self.framing {
            Framing::Length(_) if len <= self.remaining => {
                self.remaining -= len;
                self.done = self.remaining == 0;
                Skipped::InStep { done: self.done, new_chunk: false }
            }
            Framing::Length(_) => {
                let after = len - self.remaining;
                self.remaining = 0;
                self.done = true;
                Skipped::EndedInside { after }
            }
            Framing::UntilClose => Skipped::InStep { done: false, new_chunk: false },
            Framing::Chunked => match self.chunk {
                Chunk::Data { left } if len <= left => {
                    self.chunk = if len == left { Chunk::DataCr } else { Chunk::Data { left: left - len } };
                    let new_chunk = self.gap_chunk != self.chunks;
                    self.gap_chunk = self.chunks;
                    Skipped::InStep { done: false, new_chunk }
                }
                _ => Skipped::LostStep,
            },
            Framing::None => Skipped::EndedInside { after: len },
        }
    }

    /// Framing found again after a gap: the next byte fed starts a chunk-size line.
    pub fn rejoin_at_chunk(&mut self) {
        self.chunk = Chunk::Size { value: 0, digits: 0 };
    }

    /// Reads chunked framing from `input[*i..]`, leaving `*i` at the first byte not consumed.
    fn feed_chunked(&mut self, input: &[u8], i: &mut usize, body: &mut impl FnMut(&[u8])) -> Result<Fed, BodyError> {
        while *i < input.len() {
            // Ollama streams one chunk per token, each whole in its segment: taken in one step,
            // the state machine below reads only chunks cut across pieces or unusual framing.
            if self.fast
                && self.chunk == (Chunk::Size { value: 0, digits: 0 })
                && let Some((data, next)) = whole_chunk(&input[*i..])
            {
                self.chunks += 1;
                body(&input[*i + data.start..*i + data.end]);
                self.delivered += data.len() as u64;
                *i += next;
                continue;
            }
            let c = input[*i];
            match self.chunk {
                Chunk::Data { left } => {
                    let take = (left.min((input.len() - *i) as u64)) as usize;
                    body(&input[*i..*i + take]);
                    self.delivered += take as u64;
                    *i += take;
                    let left = left - take as u64;
                    self.chunk = if left == 0 { Chunk::DataCr } else { Chunk::Data { left } };
                    continue;
                }
                Chunk::Size { value, digits } => {
                    match (hex_value(c), digits) {
                        (Some(h), d) => {
                            // 15 hex digits is already 1 EiB: anything longer is an attack or noise.
                            if d >= 15 {
                                return Err(BodyError::ChunkSize);
                            }
                            self.chunk = Chunk::Size { value: value << 4 | h as u64, digits: d + 1 };
                        }
                        (None, 0) => return Err(BodyError::ChunkSize),
                        (None, _) => match c {
                            b'\r' => self.chunk = Chunk::SizeLf { value },
                            b'\n' => self.start_chunk(value),
                            b';' | b' ' | b'\t' => self.chunk = Chunk::Ext { value, line: 0 },
                            _ => return Err(BodyError::ChunkSize),
                        },
                    }
                }
                Chunk::Ext { value, line } => match c {
                    b'\r' => self.chunk = Chunk::SizeLf { value },
                    b'\n' => self.start_chunk(value),
                    _ if line >= MAX_LINE => return Err(BodyError::LineTooLong),
                    _ => self.chunk = Chunk::Ext { value, line: line + 1 },
                },
                Chunk::SizeLf { value } => {
                    if c != b'\n' {
                        return Err(BodyError::ChunkSize);
                    }
                    self.start_chunk(value);
                }
                Chunk::DataCr => match c {
                    b'\r' => self.chunk = Chunk::DataLf,
                    b'\n' => self.chunk = Chunk::Size { value: 0, digits: 0 },
                    _ => return Err(BodyError::ChunkDelimiter),
                },
                Chunk::DataLf => {
                    if c != b'\n' {
                        return Err(BodyError::ChunkDelimiter);
                    }
                    self.chunk = Chunk::Size { value: 0, digits: 0 };
                }
                Chunk::TrailerStart => match c {
                    b'\r' => self.chunk = Chunk::EndLf,
                    b'\n' => {
                        *i += 1;
                        self.done = true;
                        return Ok(Fed { consumed: *i, done: true });
                    }
                    _ => self.chunk = Chunk::Trailer { line: 1 },
                },
                Chunk::Trailer { line } => match c {
                    b'\r' => self.chunk = Chunk::TrailerLf,
                    b'\n' => self.chunk = Chunk::TrailerStart,
                    _ if line >= MAX_LINE => return Err(BodyError::LineTooLong),
                    _ => self.chunk = Chunk::Trailer { line: line + 1 },
                },
                Chunk::TrailerLf => {
                    if c != b'\n' {
                        return Err(BodyError::ChunkDelimiter);
                    }
                    self.chunk = Chunk::TrailerStart;
                }
                Chunk::EndLf => {
                    if c != b'\n' {
                        return Err(BodyError::ChunkDelimiter);
                    }
                    *i += 1;
                    self.done = true;
                    return Ok(Fed { consumed: *i, done: true });
                }
            }
            *i += 1;
        }
        Ok(Fed { consumed: *i, done: false })
    }

    fn start_chunk(&mut self, size: u64) {
        self.chunks += 1;
        self.chunk = if size == 0 { Chunk::TrailerStart } else { Chunk::Data { left: size } };
    }
}

/// The value of a hex digit of a chunk size.
#[inline]
fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A whole non-empty chunk at the start of `input` in its plain form — hex size, CRLF, data,
/// CRLF — as the range of its data and the offset after it. `None` for anything else (the last
/// chunk, extensions, bare LFs, a chunk cut by the end of `input`, broken framing): the state
/// machine reads those, and reaches the same state and output for the ones taken here.
#[inline]
fn whole_chunk(input: &[u8]) -> Option<(std::ops::Range<usize>, usize)> {
    let mut size: u64 = 0;
    let mut k = 0;
    // At most 15 digits, as the state machine accepts.
    while k < 15
        && let Some(h) = input.get(k).and_then(|&c| hex_value(c))
    {
        size = size << 4 | h as u64;
        k += 1;
    }
    if k == 0 || size == 0 || input.get(k..k + 2)? != b"\r\n" {
        return None;
    }
    let start = k + 2;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    (input.get(end..end.checked_add(2)?)? == b"\r\n").then_some((start..end, end + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(framing: Framing, pieces: &[&[u8]]) -> (Vec<u8>, bool, usize) {
        let mut r = BodyReader::new(framing);
        let mut out = Vec::new();
        let mut consumed = 0;
        for p in pieces {
            let fed = r.feed(p, &mut |b| out.extend_from_slice(b)).unwrap();
            consumed += fed.consumed;
            if fed.done {
                break;
            }
        }
        (out, r.is_done(), consumed)
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let wire = b"5;name=val\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\nNEXT";
        let (out, done, consumed) = run(Framing::Chunked, &[wire]);
        assert_eq!(out, b"hello world");
        assert!(done);
        assert_eq!(&wire[consumed..], b"NEXT");
        for cut in 0..wire.len() {
            let (out2, done2, consumed2) = run(Framing::Chunked, &[&wire[..cut], &wire[cut..]]);
            assert_eq!((out2.as_slice(), done2, consumed2), (&b"hello world"[..], true, consumed), "cut {cut}");
        }
    }

    /// Both readers, fast path on and off, fed the same pieces: every outcome, body byte and
    /// final state the same.
    fn both_paths(pieces: &[&[u8]]) -> (Vec<u8>, u64) {
        let mut fast = BodyReader::new(Framing::Chunked);
        let mut slow = BodyReader::new(Framing::Chunked);
        slow.set_fast_path(false);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for p in pieces {
            let fa = fast.feed(p, &mut |x| a.extend_from_slice(x));
            let fb = slow.feed(p, &mut |x| b.extend_from_slice(x));
            assert_eq!((fa, &a), (fb, &b), "{pieces:?}");
            assert_eq!(fast.clone().skip_gap(1), slow.clone().skip_gap(1), "{pieces:?}");
            assert_eq!((fast.delivered(), fast.chunks()), (slow.delivered(), slow.chunks()), "{pieces:?}");
            if !matches!(fa, Ok(Fed { done: false, .. })) {
                break;
            }
        }
        (a, fast.chunks)
    }

    #[test]
    fn whole_chunks_in_one_step_read_as_byte_by_byte() {
        let wires: [&[u8]; 9] = [
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT",
            b"0005\r\nhello\r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\n",
            b"5;x=y\r\nhello\r\n5\nworld\n5\r\nabcde\n0\n\n",
            b"5\r\nhelloXY",
            b"5\r\nhello\rX",
            b"5\r\nhel",
            b"fffffffffffffff\r\nab",
            b"ffffffffffffffff\r\nab",
            b"g\r\n",
        ];
        for wire in wires {
            let (whole, _) = both_paths(&[wire]);
            for cut in 0..=wire.len() {
                let (parts, _) = both_paths(&[&wire[..cut], &wire[cut..]]);
                assert_eq!(whole, parts, "cut {cut} of {wire:?}");
            }
        }
        // An Ollama stream: every chunk taken whole, and counted.
        let stream = b"2b\r\n{\"model\":\"m\",\"response\":\"Hi\",\"done\":false}\n\r\n".repeat(3);
        let (body, chunks) = both_paths(&[stream.as_slice(), b"0\r\n\r\n"]);
        assert_eq!((body.len(), chunks), (3 * 43, 4));
        // What the fast path takes, and what it leaves to the state machine.
        assert_eq!(whole_chunk(&stream), Some((4..47, 49)));
        assert_eq!(whole_chunk(b"0A\r\n0123456789\r\nrest"), Some((4..14, 16)));
        for other in [&b"0\r\n\r\n"[..], b"5;x\r\nhello\r\n", b"5\nhello\r\n", b"5\r\nhello\n", b"5\r\nhello\r", b""] {
            assert_eq!(whole_chunk(other), None, "{other:?}");
        }
    }

    #[test]
    fn bare_lf_is_accepted() {
        let (out, done, _) = run(Framing::Chunked, &[b"3\nabc\n0\n\n"]);
        assert_eq!((out.as_slice(), done), (&b"abc"[..], true));
    }

    #[test]
    fn absurd_chunk_size_is_an_error() {
        let mut r = BodyReader::new(Framing::Chunked);
        assert_eq!(r.feed(b"ffffffffffffffffff\r\n", &mut |_| {}), Err(Broken { error: BodyError::ChunkSize, at: 15 }));
        let mut r = BodyReader::new(Framing::Chunked);
        assert_eq!(r.feed(b"zz\r\n", &mut |_| {}), Err(Broken { error: BodyError::ChunkSize, at: 0 }));
        let mut r = BodyReader::new(Framing::Chunked);
        assert_eq!(r.feed(b"2\r\nabX", &mut |_| {}), Err(Broken { error: BodyError::ChunkDelimiter, at: 5 }));
    }

    #[test]
    fn length_and_skip() {
        let mut r = BodyReader::new(Framing::Length(10));
        let mut out = Vec::new();
        r.feed(b"abc", &mut |b| out.extend_from_slice(b)).unwrap();
        assert_eq!(r.skip_gap(4), Skipped::InStep { done: false, new_chunk: false });
        let fed = r.feed(b"defXYZ", &mut |b| out.extend_from_slice(b)).unwrap();
        assert_eq!((out.as_slice(), fed), (&b"abcdef"[..], Fed { consumed: 3, done: true }));
        let mut r = BodyReader::new(Framing::Length(3));
        assert_eq!(r.skip_gap(4), Skipped::EndedInside { after: 1 });
        assert!(r.is_done());
    }

    #[test]
    fn chunk_skip_stays_in_step_only_inside_data() {
        let mut r = BodyReader::new(Framing::Chunked);
        let mut out = Vec::new();
        r.feed(b"a\r\n01", &mut |b| out.extend_from_slice(b)).unwrap();
        assert_eq!(r.skip_gap(2), Skipped::InStep { done: false, new_chunk: true });
        assert_eq!(r.skip_gap(1), Skipped::InStep { done: false, new_chunk: false }, "the same chunk");
        r.feed(b"45", &mut |b| out.extend_from_slice(b)).unwrap();
        assert_eq!(r.skip_gap(3), Skipped::InStep { done: false, new_chunk: false });
        let fed = r.feed(b"\r\n0\r\n\r\n", &mut |b| out.extend_from_slice(b)).unwrap();
        assert!(fed.done);
        assert_eq!(out, b"0145");
        assert_eq!(BodyReader::new(Framing::Chunked).skip_gap(1), Skipped::LostStep);
        let mut r = BodyReader::new(Framing::Chunked);
        r.feed(b"2\r\nab", &mut |_| {}).unwrap();
        assert_eq!(r.skip_gap(3), Skipped::LostStep, "past the chunk's data");
        r.rejoin_at_chunk();
        let mut out = Vec::new();
        assert!(r.feed(b"1\r\nz\r\n0\r\n\r\n", &mut |b| out.extend_from_slice(b)).unwrap().done);
        assert_eq!(out, b"z");
    }
}
