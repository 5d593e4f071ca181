//! Strings, delivered unescaped and in pieces: escapes (`\u003c` → `<`, surrogate pairs), UTF-8
//! characters cut between two pieces, and [`StrAcc`] for a visitor that wants a bounded copy.

use super::visit::Path;
use super::{JsonError, JsonErrorKind, JsonScanner, JsonVisitor, MAX_KEY, State};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Esc {
    None,
    Backslash,
    /// `\u` with `n` hex digits read so far.
    Unicode {
        n: u8,
        value: u16,
    },
}

impl JsonScanner {
    pub(super) fn string_part<V: JsonVisitor>(&mut self, part: &[u8], last: bool, v: &mut V) {
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

    pub(super) fn end_string<V: JsonVisitor>(&mut self, _v: &mut V) {
        if self.state == State::KeyStr {
            let top = self.stack.last_mut().expect("key inside an object");
            top.index += 1;
            self.state = State::Colon;
        } else {
            self.after_value();
        }
    }

    /// Handles bytes of an escape sequence; returns the new position.
    pub(super) fn escape_byte<V: JsonVisitor>(
        &mut self,
        input: &[u8],
        mut i: usize,
        v: &mut V,
    ) -> Result<usize, JsonError> {
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

    pub(super) fn code_unit<V: JsonVisitor>(&mut self, unit: u16, v: &mut V) {
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

    pub(super) fn flush_surrogate<V: JsonVisitor>(&mut self, v: &mut V) {
        if self.surrogate.take().is_some() {
            self.emit_char('\u{FFFD}', v);
        }
    }

    pub(super) fn emit_char<V: JsonVisitor>(&mut self, ch: char, v: &mut V) {
        let mut buf = [0u8; 4];
        let s = ch.encode_utf8(&mut buf);
        self.string_part(s.as_bytes(), false, v);
    }
}

/// Up to three leading bytes of a UTF-8 character.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Utf8Carry {
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

    /// Most bytes kept.
    pub fn cap(&self) -> usize {
        self.cap
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
