//! What a [`JsonVisitor`] is told: where it is in the document (a [`Path`] of [`Seg`]s, matched
//! against patterns of [`P`]), the scalars it meets, the containers it may skip.

use super::MAX_KEY;

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
pub(super) struct Frame {
    pub(super) kind: Kind,
    /// Array: index of the current element. Object: number of members so far.
    pub(super) index: u32,
    pub(super) key: [u8; MAX_KEY],
    pub(super) key_len: u8,
    pub(super) key_overflow: bool,
}

impl Frame {
    pub(super) fn new(kind: Kind) -> Self {
        Frame { kind, index: 0, key: [0; MAX_KEY], key_len: 0, key_overflow: false }
    }
}

/// Where a value sits in the document: one [`Seg`] per enclosing container.
#[derive(Clone, Copy)]
pub struct Path<'a> {
    pub(super) frames: &'a [Frame],
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
