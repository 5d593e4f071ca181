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

mod scan;
#[cfg(test)]
mod tests;

/// Keys longer than this are not buffered in full; none of the keys any decoder looks for is.
const MAX_KEY: usize = 48;
/// Longest number we parse; longer ones are reported as [`Scalar::Number`] with `raw` empty.
const MAX_NUMBER: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
}

/// What a visitor wants done with a container that is about to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Descend {
    /// Walk into it and report its contents.
    Enter,
    /// Skip it; [`JsonVisitor::skipped`] reports its element count and string bytes.
    Skip,
    /// Skip it but keep up to `limit` bytes of its raw JSON for [`JsonVisitor::captured`].
    Capture(usize),
}

/// A scalar value. Numbers are given raw so the visitor picks the type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    /// Raw number text; empty when the number was too long to keep.
    Number(&'a [u8]),
}

impl Scalar<'_> {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Scalar::Number(raw) => {
                let s = std::str::from_utf8(raw).ok()?;
                s.parse::<i64>().ok().or_else(|| {
                    // Integral values written as floats ("100.0", "1e3") are still integers.
                    let f: f64 = s.parse().ok()?;
                    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
                })
            }
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        self.as_i64().and_then(|v| u64::try_from(v).ok())
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Number(raw) => std::str::from_utf8(raw).ok()?.parse().ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// Sizes of a skipped container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkipStats {
    /// Members (object) or elements (array) directly inside it.
    pub elements: u64,
    /// Bytes inside string literals anywhere in it (escaped form).
    pub string_bytes: u64,
    /// Strings directly inside it, when it is an array.
    pub strings: u64,
}

/// One step of a path: an object key or an array index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a [u8]),
    Index(u32),
}

#[derive(Clone, Debug)]
struct Frame {
    kind: Kind,
    /// Array: index of the current element. Object: number of members so far.
    index: u32,
    key: [u8; MAX_KEY],
    key_len: u8,
    key_overflow: bool,
}

impl Frame {
    fn new(kind: Kind) -> Self {
        Frame { kind, index: 0, key: [0; MAX_KEY], key_len: 0, key_overflow: false }
    }
}

/// Where a value sits in the document: one [`Seg`] per enclosing container.
#[derive(Clone, Copy)]
pub struct Path<'a> {
    frames: &'a [Frame],
}

impl<'a> Path<'a> {
    pub fn depth(&self) -> usize {
        self.frames.len()
    }

    pub fn seg(&self, i: usize) -> Option<Seg<'a>> {
        let f = self.frames.get(i)?;
        Some(match f.kind {
            Kind::Array => Seg::Index(f.index),
            Kind::Object if f.key_overflow => Seg::Key(b"\0overflow"),
            Kind::Object => Seg::Key(&f.key[..f.key_len as usize]),
        })
    }

    /// The last step (the key or index of the current value).
    pub fn last(&self) -> Option<Seg<'a>> {
        self.depth().checked_sub(1).and_then(|i| self.seg(i))
    }

    /// Key at step `i`, if that step is an object member.
    pub fn key(&self, i: usize) -> Option<&'a [u8]> {
        match self.seg(i)? {
            Seg::Key(k) => Some(k),
            Seg::Index(_) => None,
        }
    }

    /// Index at step `i`, if that step is an array element.
    pub fn index(&self, i: usize) -> Option<u32> {
        match self.seg(i)? {
            Seg::Index(n) => Some(n),
            Seg::Key(_) => None,
        }
    }

    /// True when the path is exactly these keys (objects only, no arrays in between).
    pub fn is(&self, keys: &[&str]) -> bool {
        self.depth() == keys.len() && keys.iter().enumerate().all(|(i, k)| self.key(i) == Some(k.as_bytes()))
    }

    /// Matches a pattern of [`P`] steps.
    pub fn matches(&self, pattern: &[P<'_>]) -> bool {
        self.depth() == pattern.len()
            && pattern.iter().enumerate().all(|(i, p)| match (p, self.seg(i)) {
                (P::Key(k), Some(Seg::Key(have))) => have == k.as_bytes(),
                (P::AnyIndex, Some(Seg::Index(_))) => true,
                (P::Index(n), Some(Seg::Index(have))) => *n == have,
                _ => false,
            })
    }

    /// True when `prefix` matches the first steps of the path.
    pub fn starts_with(&self, prefix: &[P<'_>]) -> bool {
        self.depth() >= prefix.len() && Path { frames: &self.frames[..prefix.len()] }.matches(prefix)
    }
}

impl std::fmt::Debug for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for i in 0..self.depth() {
            match self.seg(i) {
                Some(Seg::Key(k)) => write!(f, ".{}", String::from_utf8_lossy(k))?,
                Some(Seg::Index(n)) => write!(f, "[{n}]")?,
                None => {}
            }
        }
        Ok(())
    }
}

/// A step in a path pattern.
#[derive(Clone, Copy, Debug)]
pub enum P<'a> {
    Key(&'a str),
    Index(u32),
    AnyIndex,
}

/// Receives what the scanner sees. Every method has a default that ignores it.
pub trait JsonVisitor {
    /// A container starts; `path` is where it sits.
    fn begin(&mut self, _path: &Path<'_>, _kind: Kind) -> Descend {
        Descend::Enter
    }
    /// A container that was entered ends with `len` members/elements.
    fn end(&mut self, _path: &Path<'_>, _kind: Kind, _len: u32) {}
    fn scalar(&mut self, _path: &Path<'_>, _value: Scalar<'_>) {}
    /// A piece of a string value, unescaped. `last` is set on the final piece (possibly empty).
    fn string(&mut self, _path: &Path<'_>, _part: &[u8], _last: bool) {}
    /// A container the visitor chose to skip has ended.
    fn skipped(&mut self, _path: &Path<'_>, _kind: Kind, _stats: SkipStats) {}
    /// A container the visitor chose to capture has ended; `raw` is its JSON text (cut at the
    /// limit when `truncated`).
    fn captured(&mut self, _path: &Path<'_>, _kind: Kind, _raw: &[u8], _truncated: bool, _stats: SkipStats) {}
}

/// A visitor that ignores everything (validation only).
pub struct NoVisitor;
impl JsonVisitor for NoVisitor {}

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Esc {
    None,
    Backslash,
    /// `\u` with `n` hex digits read so far.
    Unicode {
        n: u8,
        value: u16,
    },
}

#[derive(Debug, Default)]
struct SkipState {
    depth: u32,
    kind: Option<Kind>,
    in_str: bool,
    esc: bool,
    commas: u64,
    nonempty: bool,
    stats: SkipStats,
    capture: Option<Vec<u8>>,
    limit: usize,
    truncated: bool,
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

    fn string_part<V: JsonVisitor>(&mut self, part: &[u8], last: bool, v: &mut V) {
        if self.state == State::KeyStr {
            let fold = self.opts.fold_keys;
            let top = self.stack.last_mut().expect("key inside an object");
            let have = top.key_len as usize;
            if have + part.len() > MAX_KEY {
                top.key_overflow = true;
            } else {
                let dst = &mut top.key[have..have + part.len()];
                dst.copy_from_slice(part);
                if fold {
                    dst.make_ascii_lowercase();
                }
                top.key_len += part.len() as u8;
            }
        } else {
            // Pieces end where the input did, possibly inside a multi-byte character; visitors
            // that turn pieces into text would mangle it, so a cut character waits for the rest.
            let path = Path { frames: &self.stack };
            let mut part = part;
            if self.utf8.len > 0 {
                let need = self.utf8.width() - self.utf8.len;
                let take = part.iter().take(need).take_while(|b| is_continuation(**b)).count();
                self.utf8.push(&part[..take]);
                part = &part[take..];
                // Complete, or cut short by a byte that cannot continue it: hand it on as it is.
                if take == need || !part.is_empty() || last {
                    let carried = std::mem::take(&mut self.utf8);
                    v.string(&path, carried.bytes(), last && part.is_empty());
                }
                if part.is_empty() {
                    return;
                }
            }
            if !last {
                let cut = incomplete_tail(part);
                if cut > 0 {
                    self.utf8.push(&part[part.len() - cut..]);
                    part = &part[..part.len() - cut];
                    if part.is_empty() {
                        return;
                    }
                }
            }
            v.string(&path, part, last);
        }
    }

    fn end_string<V: JsonVisitor>(&mut self, _v: &mut V) {
        if self.state == State::KeyStr {
            let top = self.stack.last_mut().expect("key inside an object");
            top.index += 1;
            self.state = State::Colon;
        } else {
            self.after_value();
        }
    }

    /// Handles bytes of an escape sequence; returns the new position.
    fn escape_byte<V: JsonVisitor>(&mut self, input: &[u8], mut i: usize, v: &mut V) -> Result<usize, JsonError> {
        let c = input[i];
        i += 1;
        match self.esc {
            Esc::Backslash => {
                let decoded = match c {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        self.esc = Esc::Unicode { n: 0, value: 0 };
                        return Ok(i);
                    }
                    _ => {
                        self.state = State::Failed;
                        return Err(JsonError { offset: self.offset + i as u64 - 1, kind: JsonErrorKind::BadEscape });
                    }
                };
                self.esc = Esc::None;
                self.flush_surrogate(v);
                self.string_part(&[decoded], false, v);
            }
            Esc::Unicode { n, value } => {
                let digit = match c {
                    b'0'..=b'9' => c - b'0',
                    b'a'..=b'f' => c - b'a' + 10,
                    b'A'..=b'F' => c - b'A' + 10,
                    _ => {
                        self.state = State::Failed;
                        return Err(JsonError { offset: self.offset + i as u64 - 1, kind: JsonErrorKind::BadEscape });
                    }
                };
                let value = (value << 4) | digit as u16;
                if n < 3 {
                    self.esc = Esc::Unicode { n: n + 1, value };
                } else {
                    self.esc = Esc::None;
                    self.code_unit(value, v);
                }
            }
            Esc::None => unreachable!("called only inside an escape"),
        }
        Ok(i)
    }

    fn code_unit<V: JsonVisitor>(&mut self, unit: u16, v: &mut V) {
        let ch = match (self.surrogate.take(), unit) {
            (None, 0xD800..=0xDBFF) => {
                self.surrogate = Some(unit);
                return;
            }
            (Some(hi), 0xDC00..=0xDFFF) => {
                char::from_u32(0x10000 + (((hi as u32) - 0xD800) << 10) + (unit as u32 - 0xDC00))
            }
            (Some(_), _) => {
                // A lone high surrogate: Go substitutes U+FFFD, and so do we.
                self.emit_char('\u{FFFD}', v);
                return self.code_unit(unit, v);
            }
            (None, 0xDC00..=0xDFFF) => None,
            (None, u) => char::from_u32(u as u32),
        };
        self.emit_char(ch.unwrap_or('\u{FFFD}'), v);
    }

    fn flush_surrogate<V: JsonVisitor>(&mut self, v: &mut V) {
        if self.surrogate.take().is_some() {
            self.emit_char('\u{FFFD}', v);
        }
    }

    fn emit_char<V: JsonVisitor>(&mut self, ch: char, v: &mut V) {
        let mut buf = [0u8; 4];
        let s = ch.encode_utf8(&mut buf);
        self.string_part(s.as_bytes(), false, v);
    }

    /// Walks a skipped container: only nesting, strings and top-level commas matter.
    fn skip_bytes<V: JsonVisitor>(&mut self, input: &[u8], start: usize, v: &mut V) -> usize {
        let mut i = start;
        let n = input.len();
        let sk = &mut self.skip;
        while i < n {
            if sk.in_str {
                if sk.esc {
                    sk.esc = false;
                    sk.stats.string_bytes += 1;
                    i += 1;
                    continue;
                }
                match scan::quote_or_backslash(&input[i..]) {
                    None => {
                        sk.stats.string_bytes += (n - i) as u64;
                        i = n;
                    }
                    Some(k) => {
                        sk.stats.string_bytes += k as u64;
                        if input[i + k] == b'\\' {
                            sk.esc = true;
                            sk.stats.string_bytes += 1;
                        } else {
                            sk.in_str = false;
                        }
                        i += k + 1;
                    }
                }
                continue;
            }
            // Numbers, literals, commas and whitespace: jump to the next structural byte.
            let (run, commas) = scan::plain_run(&input[i..]);
            if run > 0 {
                if sk.depth == 1 {
                    sk.commas += commas;
                    if !sk.nonempty && (commas > 0 || input[i..i + run].iter().any(|c| !c.is_ascii_whitespace())) {
                        sk.nonempty = true;
                    }
                }
                i += run;
                if i == n {
                    break;
                }
            }
            let c = input[i];
            i += 1;
            match c {
                b'"' => {
                    sk.in_str = true;
                    if sk.depth == 1 {
                        sk.nonempty = true;
                        if sk.kind == Some(Kind::Array) {
                            sk.stats.strings += 1;
                        }
                    }
                }
                b'[' | b'{' => {
                    if sk.depth == 1 {
                        sk.nonempty = true;
                    }
                    sk.depth += 1;
                }
                // `]` or `}`: plain_run stops only at structural bytes.
                _ => {
                    sk.depth -= 1;
                    if sk.depth == 0 {
                        break;
                    }
                }
            }
        }
        if let Some(buf) = sk.capture.as_mut() {
            let piece = &input[start..i];
            let room = sk.limit.saturating_sub(buf.len());
            if piece.len() > room {
                buf.extend_from_slice(&piece[..room]);
                sk.truncated = true;
            } else {
                buf.extend_from_slice(piece);
            }
        }
        if sk.depth == 0 {
            let kind = sk.kind.expect("skip has a kind");
            let mut stats = sk.stats;
            stats.elements = if sk.nonempty { sk.commas + 1 } else { 0 };
            let path = Path { frames: &self.stack };
            match self.skip.capture.take() {
                Some(raw) => v.captured(&path, kind, &raw, self.skip.truncated, stats),
                None => v.skipped(&path, kind, stats),
            }
            self.after_value();
        }
        i
    }
}

/// Up to three leading bytes of a UTF-8 character.
#[derive(Clone, Copy, Debug, Default)]
struct Utf8Carry {
    buf: [u8; 4],
    len: usize,
}

impl Utf8Carry {
    /// Bytes of the character its first byte announces.
    fn width(&self) -> usize {
        utf8_width(self.buf[0])
    }
    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn is_continuation(b: u8) -> bool {
    b & 0xc0 == 0x80
}

/// Length of a UTF-8 sequence by its first byte (1 for ASCII and for bytes that start none).
fn utf8_width(b: u8) -> usize {
    match b {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

/// How many bytes at the end of `part` are the start of a character that continues beyond it.
fn incomplete_tail(part: &[u8]) -> usize {
    for back in 1..=part.len().min(3) {
        let b = part[part.len() - back];
        if !is_continuation(b) {
            return if utf8_width(b) > back { back } else { 0 };
        }
    }
    0
}

/// Accumulates a string value delivered in pieces, up to a cap.
#[derive(Clone, Debug, Default)]
pub struct StrAcc {
    buf: Vec<u8>,
    /// Total unescaped bytes seen, including those beyond the cap.
    total: u64,
    cap: usize,
}

impl StrAcc {
    pub fn with_cap(cap: usize) -> Self {
        StrAcc { buf: Vec::new(), total: 0, cap }
    }

    pub fn push(&mut self, part: &[u8]) {
        self.total += part.len() as u64;
        let room = self.cap.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&part[..part.len().min(room)]);
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.total = 0;
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn truncated(&self) -> bool {
        self.total > self.buf.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The text, with invalid UTF-8 (including a character cut at the cap) replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    pub fn take_string(&mut self) -> String {
        let s = self.to_string_lossy();
        self.clear();
        s
    }
}
