//! Reading one whole, compact JSON document held in a single slice, for the fast paths that
//! recognise a known shape by its bytes (the token chunk of a stream). Every reader accepts a
//! strict subset of JSON — no whitespace, keys without escapes — and answers `None` at the
//! first byte outside it, so the caller falls back to [`super::JsonScanner`]: whatever a cursor
//! accepts, the scanner reads the same way.

use super::scan::quote_or_backslash;

/// A position in a whole document.
#[derive(Clone, Copy, Debug)]
pub struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Cursor { b, i: 0 }
    }

    /// True when every byte was read.
    pub fn at_end(&self) -> bool {
        self.i == self.b.len()
    }

    /// The next byte, not consumed.
    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Consumes `c` if it is the next byte.
    pub fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }

    /// Consumes `lit` if the next bytes are exactly it.
    pub fn eat_all(&mut self, lit: &[u8]) -> bool {
        let rest = &self.b[self.i..];
        let hit = rest.len() >= lit.len() && same_bytes(&rest[..lit.len()], lit);
        if hit {
            self.i += lit.len();
        }
        hit
    }

    /// `"key":`, the key without escapes; its raw bytes.
    pub fn key(&mut self) -> Option<&'a [u8]> {
        let k = self.plain_str()?;
        self.eat(b':').then_some(k)
    }

    /// A string without escapes: its bytes between the quotes.
    pub fn plain_str(&mut self) -> Option<&'a [u8]> {
        if !self.eat(b'"') {
            return None;
        }
        let rest = &self.b[self.i..];
        let end = quote_or_backslash(rest)?;
        if rest[end] != b'"' {
            return None;
        }
        self.i += end + 1;
        Some(&rest[..end])
    }

    /// A string, escapes allowed except surrogates (`\uD800`–`\uDFFF`, whose pairing the
    /// scanner resolves across pieces): the length of its unescaped bytes, as the scanner would
    /// deliver them.
    pub fn str_len(&mut self) -> Option<u64> {
        if !self.eat(b'"') {
            return None;
        }
        let mut len = 0u64;
        loop {
            let rest = &self.b[self.i..];
            let k = quote_or_backslash(rest)?;
            len += k as u64;
            self.i += k + 1;
            if rest[k] == b'"' {
                return Some(len);
            }
            len += self.escape()?;
        }
    }

    /// After a backslash: the escape's unescaped length.
    fn escape(&mut self) -> Option<u64> {
        let c = self.peek()?;
        self.i += 1;
        match c {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(1),
            b'u' => {
                let hex = self.b.get(self.i..self.i + 4)?;
                let mut unit = 0u32;
                for &h in hex {
                    unit = (unit << 4) | char::from(h).to_digit(16)?;
                }
                self.i += 4;
                char::from_u32(unit).map(|ch| ch.len_utf8() as u64)
            }
            _ => None,
        }
    }

    /// A value that is neither a string nor a container and is copied nowhere: `null`, `true`,
    /// `false`.
    pub fn literal(&mut self) -> Option<Option<bool>> {
        if self.eat_all(b"null") {
            Some(None)
        } else if self.eat_all(b"true") {
            Some(Some(true))
        } else if self.eat_all(b"false") {
            Some(Some(false))
        } else {
            None
        }
    }

    /// Reads the members of an object, `{` to `}`, handing each key to `member`, which must
    /// read the value (or answer `None` to give up).
    pub fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let k = self.key()?;
            member(self, k)?;
            if self.eat(b'}') {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
        }
    }

    /// A non-negative integer without sign, fraction or exponent, short enough to be exact.
    pub fn uint(&mut self) -> Option<u64> {
        let rest = &self.b[self.i..];
        // The value is taken with the digits (a number per OpenAI token chunk: a UTF-8 check and
        // `parse` after the scan cost more than the scan). Wrapping: past 18 digits it is unused.
        let (mut n, mut value) = (0, 0u64);
        while let Some(d) = rest.get(n).map(|c| c.wrapping_sub(b'0')).filter(|d| *d < 10) {
            value = value.wrapping_mul(10).wrapping_add(u64::from(d));
            n += 1;
        }
        // A number must not run on into `.`/`e` (a float) and must not have a leading zero.
        if n == 0 || n > 18 || (n > 1 && rest[0] == b'0') || matches!(rest.get(n), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.i += n;
        Some(value)
    }
}

/// Byte equality of two short strings (a literal key, a model name, once per chunk) without a
/// call into libc's `memcmp`, which costs more than such a comparison (measured: 2–3 % of a
/// replay each, from the token-chunk reads and the model and id checks).
#[inline]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a8, mut b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().expect("8 bytes"));
    if !a8.by_ref().zip(b8.by_ref()).all(|(x, y)| word(x) == word(y)) {
        return false;
    }
    a8.remainder().iter().zip(b8.remainder()).all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal to the slice comparison it replaces, for every length up to three words and a
    /// difference at every position (in the words and in the tail).
    #[test]
    fn same_bytes_is_slice_equality() {
        let a: Vec<u8> = (0..27u8).map(|i| i.wrapping_mul(37)).collect();
        for len in 0..a.len() {
            let x = &a[..len];
            assert!(same_bytes(x, x));
            for other in 0..a.len() {
                assert_eq!(same_bytes(x, &a[..other]), x == &a[..other], "{len} {other}");
            }
            for at in 0..len {
                let mut y = x.to_vec();
                y[at] ^= 0x20;
                assert!(!same_bytes(x, &y), "{len} differs at {at}");
            }
        }
        let mut c = Cursor::new(b"{\"model\":\"m\"}");
        assert!(!c.eat_all(b"{\"model\":\"m\"}x") && c.eat_all(b"{\"model\":") && !c.eat_all(b"\"n\""));
    }

    /// The value read with the digits is what `parse` makes of them, and only plain integers of
    /// up to 18 digits are read (the cursor stays put otherwise).
    #[test]
    fn uint_reads_plain_integers_as_parse_does() {
        let cases: [(&[u8], Option<u64>); 13] = [
            (b"0", Some(0)),
            (b"7,", Some(7)),
            (b"1767225600}", Some(1_767_225_600)),
            (b"999999999999999999", Some(999_999_999_999_999_999)),
            (b"1000000000000000000", None),
            (b"99999999999999999999999", None),
            (b"0123", None),
            (b"12.5", None),
            (b"1e3", None),
            (b"4E1", None),
            (b"-1", None),
            (b"", None),
            (b"x1", None),
        ];
        for (input, want) in cases {
            let mut c = Cursor::new(input);
            assert_eq!(c.uint(), want, "{:?}", String::from_utf8_lossy(input));
            let digits = input.iter().take_while(|b| b.is_ascii_digit()).count();
            assert_eq!(c.at_end(), want.is_some() && digits == input.len() || input.is_empty(), "{input:?}");
            if let Some(v) = want {
                assert_eq!(std::str::from_utf8(&input[..digits]).unwrap().parse::<u64>().unwrap(), v);
            }
        }
    }
}
