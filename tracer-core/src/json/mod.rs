//! An incremental, push-based JSON scanner.
//!
//! Bodies arrive in pieces split at arbitrary bytes and can be megabytes long (an embedding
//! response, the `context` array of a final generate chunk, base64 images in a request). The
//! scanner keeps no document: it walks the bytes once, tells a [`JsonVisitor`] where it is (a
//! [`Path`]) and what it sees, and skips whole subtrees the visitor does not care about while
//! counting their elements. Memory is bounded by the nesting depth it tracks and the short keys it
//! buffers, whatever the input.
//!
//! Strings are delivered unescaped, in pieces (`\u003c` arrives as `<`), so text never needs to be
//! held in full unless a visitor chooses to.

mod cursor;
mod scan;
mod skip;
mod strings;
#[cfg(test)]
mod tests;
mod visit;

pub use self::cursor::{Cursor, same_bytes};
use self::skip::SkipState;
pub use self::strings::StrAcc;
use self::strings::{Esc, Utf8Carry};
use self::visit::Frame;
pub use self::visit::{Descend, JsonVisitor, Kind, NoVisitor, P, Path, Scalar, Seg, SkipStats};

/// Keys longer than this are not buffered in full; none of the keys any decoder looks for is.
const MAX_KEY: usize = 48;
/// Longest number we parse; longer ones are reported as [`Scalar::Number`] with `raw` empty.
const MAX_NUMBER: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonErrorKind {
    #[error("unexpected byte {0:#04x}")]
    Unexpected(u8),
    #[error("input ended inside a value")]
    Truncated,
    #[error("invalid escape sequence")]
    BadEscape,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {offset}: {kind}")]
pub struct JsonError {
    pub offset: u64,
    pub kind: JsonErrorKind,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ScanOptions {
    /// Lower-case ASCII keys before they are matched (Go's decoder matches keys case-insensitively,
    /// so a request key `"Model"` means `model`).
    pub fold_keys: bool,
    /// Containers nested deeper than this are skipped instead of tracked (default 64).
    pub max_depth: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting a value (top level, after `:` or `,` in an array).
    Value,
    /// After `[`: a value or `]`.
    ArrayStart,
    /// After `{`: a key or `}`.
    ObjectStart,
    /// After `,` in an object: a key.
    Key,
    /// Inside a key string.
    KeyStr,
    /// After a key: `:`.
    Colon,
    /// Inside a string value.
    Str,
    Number,
    Literal,
    /// After a value: `,`, a closing bracket, or (top level) the end.
    AfterValue,
    Skip,
    Done,
    Failed,
}

/// The scanner for one JSON document.
#[derive(Debug)]
pub struct JsonScanner {
    opts: ScanOptions,
    state: State,
    stack: Vec<Frame>,
    esc: Esc,
    /// High surrogate waiting for its low half.
    surrogate: Option<u16>,
    num: [u8; MAX_NUMBER],
    num_len: usize,
    num_overflow: bool,
    lit: &'static [u8],
    lit_pos: usize,
    skip: SkipState,
    /// Bytes consumed so far (for error offsets).
    offset: u64,
    started: bool,
    /// The start of a UTF-8 character cut off the end of the previous string piece.
    utf8: Utf8Carry,
}

impl Default for JsonScanner {
    fn default() -> Self {
        Self::new(ScanOptions::default())
    }
}

/// Result of feeding bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// All input consumed; the document is not finished.
    NeedMore,
    /// The document ended after `consumed` bytes of this input; the rest was not looked at.
    Complete { consumed: usize },
}

impl JsonScanner {
    pub fn new(mut opts: ScanOptions) -> Self {
        if opts.max_depth == 0 {
            opts.max_depth = 64;
        }
        JsonScanner {
            opts,
            state: State::Value,
            stack: Vec::new(),
            esc: Esc::None,
            surrogate: None,
            num: [0; MAX_NUMBER],
            num_len: 0,
            num_overflow: false,
            lit: b"",
            lit_pos: 0,
            skip: SkipState::default(),
            offset: 0,
            started: false,
            utf8: Utf8Carry::default(),
        }
    }

    /// Starts over for a new document (keeps allocations).
    pub fn reset(&mut self) {
        self.state = State::Value;
        self.stack.clear();
        self.esc = Esc::None;
        self.surrogate = None;
        self.num_len = 0;
        self.num_overflow = false;
        self.lit_pos = 0;
        self.skip = SkipState::default();
        self.offset = 0;
        self.started = false;
        self.utf8 = Utf8Carry::default();
    }

    /// True once a whole top-level value has been read.
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    /// True before any non-whitespace byte.
    pub fn is_empty(&self) -> bool {
        !self.started
    }

    pub fn is_failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// End of input: completes a top-level number; an unfinished document is an error.
    pub fn finish<V: JsonVisitor>(&mut self, v: &mut V) -> Result<(), JsonError> {
        match self.state {
            State::Done => Ok(()),
            State::Number if self.stack.is_empty() => {
                self.emit_number(v);
                self.state = State::Done;
                Ok(())
            }
            State::Failed => Err(JsonError { offset: self.offset, kind: JsonErrorKind::Truncated }),
            _ => {
                self.state = State::Failed;
                Err(JsonError { offset: self.offset, kind: JsonErrorKind::Truncated })
            }
        }
    }

    fn fail(&mut self, at: usize, byte: u8) -> JsonError {
        self.state = State::Failed;
        JsonError { offset: self.offset + at as u64, kind: JsonErrorKind::Unexpected(byte) }
    }

    /// Feeds the next piece of the document.
    pub fn feed<V: JsonVisitor>(&mut self, input: &[u8], v: &mut V) -> Result<Progress, JsonError> {
        let mut i = 0;
        let n = input.len();
        while i < n {
            match self.state {
                State::Str | State::KeyStr => {
                    if self.esc != Esc::None {
                        i = self.escape_byte(input, i, v)?;
                        continue;
                    }
                    let found = scan::quote_or_backslash(&input[i..]);
                    if self.surrogate.is_some() && !(found == Some(0) && input[i] == b'\\') {
                        // Anything but another escape after a high surrogate leaves it unpaired.
                        self.flush_surrogate(v);
                    }
                    match found {
                        None => {
                            self.string_part(&input[i..], false, v);
                            i = n;
                        }
                        Some(k) => {
                            if input[i + k] == b'"' {
                                self.string_part(&input[i..i + k], true, v);
                                i += k + 1;
                                self.end_string(v);
                            } else {
                                if k > 0 {
                                    self.string_part(&input[i..i + k], false, v);
                                }
                                self.esc = Esc::Backslash;
                                i += k + 1;
                            }
                        }
                    }
                }
                State::Skip => {
                    i = self.skip_bytes(input, i, v);
                }
                State::Number => {
                    // Fast path: the rest of the number in this piece.
                    let run =
                        input[i..].iter().position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'));
                    let take = run.unwrap_or(n - i);
                    if self.num_len + take <= MAX_NUMBER {
                        self.num[self.num_len..self.num_len + take].copy_from_slice(&input[i..i + take]);
                        self.num_len += take;
                    } else {
                        self.num_overflow = true;
                    }
                    i += take;
                    if run.is_some() {
                        self.emit_number(v);
                        self.after_value();
                    }
                    continue;
                }
                State::Literal if self.lit_pos == 1 && n - i >= self.lit.len() - 1 => {
                    // Fast path: the whole literal in this piece.
                    let rest = &self.lit[1..];
                    if &input[i..i + rest.len()] != rest {
                        let bad = input[i..i + rest.len()].iter().zip(rest).position(|(a, b)| a != b).unwrap_or(0);
                        return Err(self.fail(i + bad, input[i + bad]));
                    }
                    i += rest.len();
                    self.lit_pos = self.lit.len();
                    let value = match self.lit {
                        b"true" => Scalar::Bool(true),
                        b"false" => Scalar::Bool(false),
                        _ => Scalar::Null,
                    };
                    v.scalar(&Path { frames: &self.stack }, value);
                    self.after_value();
                }
                State::Literal => {
                    let c = input[i];
                    if c != self.lit[self.lit_pos] {
                        return Err(self.fail(i, c));
                    }
                    self.lit_pos += 1;
                    i += 1;
                    if self.lit_pos == self.lit.len() {
                        let value = match self.lit {
                            b"true" => Scalar::Bool(true),
                            b"false" => Scalar::Bool(false),
                            _ => Scalar::Null,
                        };
                        v.scalar(&Path { frames: &self.stack }, value);
                        self.after_value();
                    }
                }
                State::Value | State::ArrayStart => {
                    let c = input[i];
                    i += 1;
                    match c {
                        b' ' | b'\t' | b'\r' | b'\n' => {}
                        b']' if self.state == State::ArrayStart => {
                            self.close(Kind::Array, v);
                        }
                        _ => {
                            self.started = true;
                            if let Err(()) = self.start_value(c, v) {
                                return Err(self.fail(i - 1, c));
                            }
                        }
                    }
                }
                State::ObjectStart | State::Key => {
                    let c = input[i];
                    i += 1;
                    match c {
                        b' ' | b'\t' | b'\r' | b'\n' => {}
                        b'"' => {
                            let top = self.stack.last_mut().expect("inside an object");
                            top.key_len = 0;
                            top.key_overflow = false;
                            self.state = State::KeyStr;
                            // Fast path: a whole plain key and its colon in this piece (the
                            // usual case) skip the per-byte states.
                            if let Some(used) = self.fast_key(&input[i..]) {
                                i += used;
                                if i < n && self.state == State::Value {
                                    let c = input[i];
                                    if !matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
                                        i += 1;
                                        self.started = true;
                                        if let Err(()) = self.start_value(c, v) {
                                            return Err(self.fail(i - 1, c));
                                        }
                                    }
                                }
                            }
                        }
                        b'}' if self.state == State::ObjectStart => self.close(Kind::Object, v),
                        _ => return Err(self.fail(i - 1, c)),
                    }
                }
                State::Colon => {
                    let c = input[i];
                    i += 1;
                    match c {
                        b' ' | b'\t' | b'\r' | b'\n' => {}
                        b':' => self.state = State::Value,
                        _ => return Err(self.fail(i - 1, c)),
                    }
                }
                State::AfterValue => {
                    let c = input[i];
                    i += 1;
                    match (c, self.stack.last().map(|f| f.kind)) {
                        (b' ' | b'\t' | b'\r' | b'\n', _) => {}
                        (b',', Some(Kind::Array)) => {
                            self.stack.last_mut().expect("array").index += 1;
                            self.state = State::Value;
                        }
                        (b',', Some(Kind::Object)) => self.state = State::Key,
                        (b']', Some(Kind::Array)) => self.close(Kind::Array, v),
                        (b'}', Some(Kind::Object)) => self.close(Kind::Object, v),
                        _ => return Err(self.fail(i - 1, c)),
                    }
                }
                State::Done => {
                    self.offset += i as u64;
                    return Ok(Progress::Complete { consumed: i });
                }
                State::Failed => {
                    return Err(JsonError {
                        offset: self.offset + i as u64,
                        kind: JsonErrorKind::Unexpected(input[i]),
                    });
                }
            }
            if self.state == State::Done {
                self.offset += i as u64;
                return Ok(Progress::Complete { consumed: i });
            }
        }
        self.offset += n as u64;
        Ok(if self.state == State::Done { Progress::Complete { consumed: n } } else { Progress::NeedMore })
    }

    /// Reads a key that is wholly in `rest` (just after its opening quote) with no escapes, and
    /// the colon after it; returns the bytes used, or `None` to take the per-byte path.
    fn fast_key(&mut self, rest: &[u8]) -> Option<usize> {
        let end = scan::quote_or_backslash(rest)?;
        if rest[end] != b'"' {
            return None;
        }
        let key = &rest[..end];
        let fold = self.opts.fold_keys;
        let top = self.stack.last_mut().expect("key inside an object");
        if key.len() > MAX_KEY {
            top.key_overflow = true;
        } else {
            top.key[..key.len()].copy_from_slice(key);
            if fold {
                top.key[..key.len()].make_ascii_lowercase();
            }
            top.key_len = key.len() as u8;
        }
        top.index += 1;
        let mut used = end + 1;
        // Whitespace, then the colon.
        while used < rest.len() && matches!(rest[used], b' ' | b'\t' | b'\r' | b'\n') {
            used += 1;
        }
        if used < rest.len() && rest[used] == b':' {
            used += 1;
            self.state = State::Value;
        } else {
            self.state = State::Colon;
        }
        Some(used)
    }

    /// Dispatches on the first byte of a value.
    fn start_value<V: JsonVisitor>(&mut self, c: u8, v: &mut V) -> Result<(), ()> {
        match c {
            b'"' => self.state = State::Str,
            b'{' | b'[' => {
                let kind = if c == b'{' { Kind::Object } else { Kind::Array };
                let decision = if self.stack.len() >= self.opts.max_depth {
                    Descend::Skip
                } else {
                    v.begin(&Path { frames: &self.stack }, kind)
                };
                match decision {
                    Descend::Enter => {
                        self.stack.push(Frame::new(kind));
                        self.state = if kind == Kind::Object { State::ObjectStart } else { State::ArrayStart };
                    }
                    Descend::Skip | Descend::Capture(_) => {
                        let (capture, limit) = match decision {
                            Descend::Capture(limit) => {
                                let mut buf = Vec::with_capacity(limit.min(4096));
                                buf.push(c);
                                (Some(buf), limit)
                            }
                            _ => (None, 0),
                        };
                        self.skip = SkipState { depth: 1, kind: Some(kind), capture, limit, ..SkipState::default() };
                        self.state = State::Skip;
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                self.num[0] = c;
                self.num_len = 1;
                self.num_overflow = false;
                self.state = State::Number;
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => return Err(()),
        }
        Ok(())
    }

    fn literal(&mut self, lit: &'static [u8]) {
        self.lit = lit;
        self.lit_pos = 1;
        self.state = State::Literal;
    }

    fn emit_number<V: JsonVisitor>(&mut self, v: &mut V) {
        let raw: &[u8] = if self.num_overflow { b"" } else { &self.num[..self.num_len] };
        v.scalar(&Path { frames: &self.stack }, Scalar::Number(raw));
    }

    /// A value just ended: what may follow depends on the container.
    fn after_value(&mut self) {
        self.state = if self.stack.is_empty() { State::Done } else { State::AfterValue };
    }

    fn close<V: JsonVisitor>(&mut self, kind: Kind, v: &mut V) {
        let frame = self.stack.pop().expect("closing an open container");
        let len = match kind {
            Kind::Array => {
                // `index` is the current element; an array that closed right after `[` is empty.
                if self.state == State::ArrayStart { 0 } else { frame.index + 1 }
            }
            Kind::Object => frame.index,
        };
        v.end(&Path { frames: &self.stack }, kind, len);
        self.after_value();
    }
}
