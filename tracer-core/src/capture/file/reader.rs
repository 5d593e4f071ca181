//! Reading a capture front to back through one buffer, from a regular file or a stream.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// A reader's buffer: large enough that a `read` per buffer costs nothing next to its records,
/// small enough to stay in the CPU's cache while they are decoded. It grows (up to one
/// [`MAX_RECORD`](super::walk::MAX_RECORD)) only for a record larger than itself.
pub(super) const BUFFER: usize = 256 << 10;

/// A file read front to back through one buffer: by positioned reads for a regular file (so
/// several readers of one open file do not share a file position), by plain reads for a
/// stream.
pub(super) struct Reader<'f> {
    file: &'f File,
    positioned: bool,
    pub(super) buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    pub(super) start: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
}

impl<'f> Reader<'f> {
    pub(super) fn new(file: &'f File, positioned: bool) -> Self {
        Reader { file, positioned, buf: Vec::new(), start: 0, end: 0, base: 0, eof: false }
    }

    /// A stream's reader, starting with the bytes detection read.
    pub(super) fn with_head(file: &'f File, head: &[u8]) -> Self {
        let mut buf = head.to_vec();
        buf.resize(BUFFER.max(head.len()), 0);
        Reader { file, positioned: false, buf, start: 0, end: head.len(), base: 0, eof: false }
    }

    /// A reader at its end (a stream's second reader).
    pub(super) fn ended(file: &'f File) -> Self {
        Reader { eof: true, ..Reader::new(file, false) }
    }

    /// File offset of the next unread byte.
    pub(super) fn pos(&self) -> u64 {
        self.base + self.start as u64
    }

    /// At least `n` unread bytes, fewer only at the end of the file.
    #[inline]
    pub(super) fn fill(&mut self, n: usize) -> std::io::Result<&[u8]> {
        if self.end - self.start < n && !self.eof {
            self.refill(n)?;
        }
        Ok(&self.buf[self.start..self.end])
    }

    #[cold]
    fn refill(&mut self, n: usize) -> std::io::Result<()> {
        // What is left moves to the front (less than a record), and the rest of the buffer is
        // read in one go.
        self.buf.copy_within(self.start..self.end, 0);
        self.base += self.start as u64;
        self.end -= self.start;
        self.start = 0;
        if self.buf.len() < n.max(BUFFER) {
            self.buf.resize(n.max(BUFFER), 0);
        }
        // As much as the buffer holds is asked for, but only `n` waited for: a pipe hands over
        // what it has, and a record must not wait for the next ones to arrive.
        while self.end < n {
            let free = &mut self.buf[self.end..];
            let read = if self.positioned {
                self.file.read_at(free, self.base + self.end as u64)
            } else {
                std::io::Read::read(&mut &*self.file, free)
            };
            match read {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(k) => self.end += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The unread bytes in the buffer, without reading more.
    #[inline]
    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Passes over `n` bytes (a pcap file's header): those in the buffer (a stream's head) are
    /// consumed, the others not read at all.
    pub(super) fn skip(&mut self, n: usize) {
        let held = (self.end - self.start).min(n);
        self.start += held;
        self.base += (n - held) as u64;
    }

    /// Marks `n` bytes read; returns where they start in the buffer.
    #[inline]
    pub(super) fn consume(&mut self, n: usize) -> usize {
        let at = self.start;
        self.start += n;
        at
    }
}
