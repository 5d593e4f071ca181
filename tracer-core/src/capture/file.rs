//! Recorded captures: pcap (µs/ns, either byte order, the "modified" variant) and pcapng
//! (several sections and interfaces), read front to back through one buffer per reader.
//!
//! A file is walked once up front to validate its structure, so a corrupt file is reported with
//! the offset of the bad record before anything is emitted; a file whose last record is cut short
//! (a capture killed while writing) is accepted with a warning.
//!
//! Why a buffer and not a memory map: a map of a large file costs page-table work for every
//! 4 KiB page, twice (mapped in, dropped behind the reader to keep the RSS bounded) — 0.45 s of
//! system time per 1.7 GB file, a fifth of a replay. `read` into a buffer that stays in the cache
//! costs 0.1 s for the same file and bounds memory by itself. A frame is then a slice of the
//! buffer, valid until its reader moves on, so the readers lend frames (`next(&mut self)`)
//! instead of iterating: every stage after the capture copies what it keeps anyway.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use pcap_parser::pcapng::{Block, parse_block_be, parse_block_le};
use pcap_parser::{PcapHeader, parse_pcap_header};

use super::packet::LinkType;
use crate::segment::Timestamp;

/// Largest record we accept. libpcap's own maximum snap length is 256 KiB; anything far beyond is
/// a corrupt length field, not a packet.
const MAX_RECORD: usize = 16 << 20;
/// A reader's buffer: large enough that a `read` per buffer costs nothing next to its records,
/// small enough to stay in the CPU's cache while they are decoded. It grows (up to one
/// [`MAX_RECORD`]) only for a record larger than itself.
const BUFFER: usize = 256 << 10;

const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_IDB: u32 = 0x0000_0001;
const PCAPNG_SPB: u32 = 0x0000_0003;
const PCAPNG_EPB: u32 = 0x0000_0006;
const PCAPNG_OBSOLETE_PB: u32 = 0x0000_0002;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a pcap or pcapng file (first bytes {magic:02x?})")]
    NotACapture { path: PathBuf, magic: Vec<u8> },
    #[error("{path}: corrupt capture at byte offset {offset}: {what}")]
    Corrupt { path: PathBuf, offset: u64, what: String },
}

/// A frame as recorded.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub ts: Timestamp,
    /// `None` for link types we do not decode (counted by the caller).
    pub link: Option<LinkType>,
    pub data: &'a [u8],
    pub orig_len: u32,
    /// Offset of the record in its file, for messages.
    pub offset: u64,
}

/// A frame of a reader's buffer, by position: what a reader keeps of a frame it has read but
/// not yet handed out (a merge holds one per file).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Held {
    ts: Timestamp,
    link: Option<LinkType>,
    at: usize,
    len: usize,
    orig_len: u32,
    offset: u64,
}

#[derive(Clone, Copy, Debug)]
enum Format {
    Pcap { big_endian: bool, nanos: bool, link: Option<LinkType>, data_start: usize },
    PcapNg,
}

/// An opened, validated capture file.
pub struct CaptureFile {
    path: PathBuf,
    file: File,
    len: u64,
    format: Format,
    /// Set when the last record is cut short: its offset.
    truncated_at: Option<u64>,
    records: u64,
}

impl std::fmt::Debug for CaptureFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureFile").field("path", &self.path).field("format", &self.format).finish()
    }
}

impl CaptureFile {
    pub fn open(path: impl AsRef<Path>) -> Result<CaptureFile, FileError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| FileError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut head = Reader::new(&file);
        let format = detect(&path, head.fill(64).map_err(io)?)?;
        drop(head);
        let mut cf = CaptureFile { path, file, len, format, truncated_at: None, records: 0 };
        cf.validate()?;
        Ok(cf)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Offset of a final record that was cut short, if any.
    pub fn truncated_at(&self) -> Option<u64> {
        self.truncated_at
    }

    /// Number of packet records in the file.
    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A reader of the file's frames in file order, with a buffer of its own.
    pub fn frames(&self) -> Frames<'_> {
        Frames { file: self, walker: Walker::new(self.format, Reader::new(&self.file)), read: 0, ended_early: false }
    }

    fn validate(&mut self) -> Result<(), FileError> {
        let mut walker = Walker::new(self.format, Reader::new(&self.file));
        let mut records = 0;
        let read = loop {
            match walker.next_record() {
                Ok(Some(_)) => records += 1,
                Ok(None) => break Ok(()),
                Err(WalkError::Truncated { offset }) => {
                    self.truncated_at = Some(offset);
                    break Ok(());
                }
                Err(WalkError::Corrupt { offset, what }) => {
                    break Err(FileError::Corrupt { path: self.path.clone(), offset, what });
                }
                Err(WalkError::Io(source)) => break Err(FileError::Io { path: self.path.clone(), source }),
            }
        };
        self.records = records;
        read
    }
}

/// A file read front to back through one buffer (positioned reads, so several readers of one
/// open file do not share a file position).
struct Reader<'f> {
    file: &'f File,
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
}

impl<'f> Reader<'f> {
    fn new(file: &'f File) -> Self {
        Reader { file, buf: Vec::new(), start: 0, end: 0, base: 0, eof: false }
    }

    /// File offset of the next unread byte.
    fn pos(&self) -> u64 {
        self.base + self.start as u64
    }

    /// At least `n` unread bytes, fewer only at the end of the file.
    #[inline]
    fn fill(&mut self, n: usize) -> std::io::Result<&[u8]> {
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
        while self.end < self.buf.len() {
            match self.file.read_at(&mut self.buf[self.end..], self.base + self.end as u64) {
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

    /// Marks `n` bytes read; returns where they start in the buffer.
    #[inline]
    fn consume(&mut self, n: usize) -> usize {
        let at = self.start;
        self.start += n;
        at
    }
}

fn detect(path: &Path, map: &[u8]) -> Result<Format, FileError> {
    let not_capture = || FileError::NotACapture { path: path.to_path_buf(), magic: map[..map.len().min(8)].to_vec() };
    if map.len() >= 4 && u32::from_le_bytes([map[0], map[1], map[2], map[3]]) == PCAPNG_SHB {
        return Ok(Format::PcapNg);
    }
    let (rest, header): (&[u8], PcapHeader) = parse_pcap_header(map).map_err(|_| not_capture())?;
    if header.is_modified_format() {
        // Kuznetzov's format adds 8 bytes per record; nobody writes it for loopback captures.
        return Err(FileError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            what: "the 'modified' pcap format is not supported".into(),
        });
    }
    Ok(Format::Pcap {
        big_endian: header.is_bigendian(),
        nanos: header.is_nanosecond_precision(),
        link: LinkType::from_linktype(header.network.0),
        data_start: map.len() - rest.len(),
    })
}

enum WalkError {
    Truncated { offset: u64 },
    Corrupt { offset: u64, what: String },
    Io(std::io::Error),
}

impl From<std::io::Error> for WalkError {
    fn from(e: std::io::Error) -> Self {
        WalkError::Io(e)
    }
}

#[derive(Clone, Copy)]
struct Interface {
    link: Option<LinkType>,
    /// Units per second.
    resolution: u64,
    offset_secs: i64,
}

/// Walks records of either format; shared by validation and iteration so both agree exactly.
struct Walker<'f> {
    format: Format,
    reader: Reader<'f>,
    // pcapng state, per section
    big_endian: bool,
    interfaces: Vec<Interface>,
}

impl<'f> Walker<'f> {
    fn new(format: Format, mut reader: Reader<'f>) -> Self {
        if let Format::Pcap { data_start, .. } = format {
            reader.base = data_start as u64;
        }
        Walker { format, reader, big_endian: false, interfaces: Vec::new() }
    }

    /// The frame `held` refers to, as long as the reader has not moved on.
    fn frame(&self, held: &Held) -> Frame<'_> {
        Frame {
            ts: held.ts,
            link: held.link,
            data: &self.reader.buf[held.at..held.at + held.len],
            orig_len: held.orig_len,
            offset: held.offset,
        }
    }

    fn next_record(&mut self) -> Result<Option<Held>, WalkError> {
        match self.format {
            Format::Pcap { big_endian, nanos, link, .. } => self.next_pcap(big_endian, nanos, link),
            Format::PcapNg => self.next_pcapng(),
        }
    }

    #[inline]
    fn next_pcap(&mut self, big_endian: bool, nanos: bool, link: Option<LinkType>) -> Result<Option<Held>, WalkError> {
        let offset = self.reader.pos();
        let rest = self.reader.fill(16)?;
        if rest.is_empty() {
            return Ok(None);
        }
        if rest.len() < 16 {
            return Err(WalkError::Truncated { offset });
        }
        // The 16-byte record header read by hand: it is most of the file walk's cost.
        let word = |i: usize| {
            let b = [rest[i], rest[i + 1], rest[i + 2], rest[i + 3]];
            if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
        };
        let (ts_sec, ts_frac, caplen, origlen) = (word(0), word(4), word(8) as usize, word(12));
        if caplen > MAX_RECORD {
            return Err(WalkError::Corrupt { offset, what: format!("record length {caplen} is not a packet") });
        }
        if self.reader.fill(16 + caplen)?.len() < 16 + caplen {
            return Err(WalkError::Truncated { offset });
        }
        let frac_limit = if nanos { 1_000_000_000 } else { 1_000_000 };
        if ts_frac >= frac_limit {
            return Err(WalkError::Corrupt { offset, what: format!("timestamp fraction {ts_frac} out of range") });
        }
        let at = self.reader.consume(16 + caplen) + 16;
        let frac_ns = if nanos { ts_frac as u64 } else { ts_frac as u64 * 1000 };
        Ok(Some(Held {
            ts: Timestamp(ts_sec as u64 * 1_000_000_000 + frac_ns),
            link,
            at,
            len: caplen,
            orig_len: origlen.max(caplen as u32),
            offset,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<Held>, WalkError> {
        loop {
            let offset = self.reader.pos();
            let head = self.reader.fill(12)?;
            if head.is_empty() {
                return Ok(None);
            }
            if head.len() < 12 {
                return Err(WalkError::Truncated { offset });
            }
            let raw_type = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            if raw_type == PCAPNG_SHB {
                // The byte-order magic decides the endianness of this whole section.
                let bom = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
                self.big_endian = match bom {
                    0x1A2B_3C4D => false,
                    0x4D3C_2B1A => true,
                    _ => return Err(WalkError::Corrupt { offset, what: format!("bad byte-order magic {bom:#x}") }),
                };
                self.interfaces.clear();
            }
            let big_endian = self.big_endian;
            let rd = |b: &[u8]| {
                let a = [b[0], b[1], b[2], b[3]];
                if big_endian { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }
            };
            let block_type = rd(&head[0..4]);
            let total = rd(&head[4..8]) as usize;
            if total < 12 || !total.is_multiple_of(4) || total > MAX_RECORD {
                return Err(WalkError::Corrupt { offset, what: format!("block length {total} is invalid") });
            }
            if total > self.reader.fill(total)?.len() {
                return Err(WalkError::Truncated { offset });
            }
            let start = self.reader.start;
            let rest = &self.reader.buf[start..start + total];
            if rd(&rest[total - 4..total]) as usize != total {
                return Err(WalkError::Corrupt { offset, what: "block trailer length differs from header".into() });
            }
            let parsed = if big_endian { parse_block_be(rest) } else { parse_block_le(rest) };
            let corrupt = |what: &str| WalkError::Corrupt { offset, what: what.to_string() };
            // Where a frame's bytes are in the buffer.
            let at = |data: &[u8]| start + (data.as_ptr() as usize - rest.as_ptr() as usize);
            let held = match block_type {
                PCAPNG_IDB => {
                    let Ok((_, Block::InterfaceDescription(idb))) = parsed else {
                        return Err(corrupt("unreadable interface description block"));
                    };
                    let resolution =
                        idb.ts_resolution().filter(|r| *r > 0).ok_or_else(|| corrupt("invalid if_tsresol"))?;
                    self.interfaces.push(Interface {
                        link: LinkType::from_linktype(idb.linktype.0),
                        resolution,
                        offset_secs: idb.ts_offset(),
                    });
                    None
                }
                PCAPNG_EPB | PCAPNG_OBSOLETE_PB => {
                    let (if_id, ts_high, ts_low, caplen, origlen, data) = match parsed {
                        Ok((_, Block::EnhancedPacket(epb))) => {
                            (epb.if_id, epb.ts_high, epb.ts_low, epb.caplen, epb.origlen, epb.data)
                        }
                        // The obsolete Packet Block has the EPB layout with a 16-bit interface id.
                        _ if block_type == PCAPNG_OBSOLETE_PB && total >= 32 => {
                            let if_id = if big_endian {
                                u16::from_be_bytes([rest[8], rest[9]])
                            } else {
                                u16::from_le_bytes([rest[8], rest[9]])
                            } as u32;
                            let caplen = rd(&rest[20..24]);
                            (
                                if_id,
                                rd(&rest[12..16]),
                                rd(&rest[16..20]),
                                caplen,
                                rd(&rest[24..28]),
                                &rest[28..total - 4],
                            )
                        }
                        _ => return Err(corrupt("unreadable packet block")),
                    };
                    let iface = *self
                        .interfaces
                        .get(if_id as usize)
                        .ok_or_else(|| corrupt("packet for an undeclared interface"))?;
                    if caplen as usize > data.len() {
                        return Err(corrupt("captured length exceeds the block"));
                    }
                    let units = ((ts_high as u64) << 32) | ts_low as u64;
                    let ns = (units as u128 * 1_000_000_000 / iface.resolution as u128) as i128
                        + iface.offset_secs as i128 * 1_000_000_000;
                    Some(Held {
                        ts: Timestamp(ns.clamp(0, u64::MAX as i128) as u64),
                        link: iface.link,
                        at: at(data),
                        len: caplen as usize,
                        orig_len: origlen.max(caplen),
                        offset,
                    })
                }
                PCAPNG_SPB => {
                    // Simple Packet Blocks carry no timestamp: without one no span time can be
                    // right, so the frame is handed on with no link type and counted as unusable.
                    let data = &rest[12..total - 4];
                    let origlen = rd(&rest[8..12]);
                    let caplen = (origlen as usize).min(data.len());
                    Some(Held { ts: Timestamp(0), link: None, at: at(data), len: caplen, orig_len: origlen, offset })
                }
                _ => None, // section header, statistics, name resolution, custom: nothing to do
            };
            self.reader.consume(total);
            if held.is_some() {
                return Ok(held);
            }
        }
    }
}

/// Frames of one file in file order, read through a buffer of their own.
pub struct Frames<'f> {
    file: &'f CaptureFile,
    walker: Walker<'f>,
    /// Records read so far.
    read: u64,
    /// The walk ended before the records validation counted (the file changed or a read
    /// failed since).
    ended_early: bool,
}

impl<'f> Frames<'f> {
    /// The next frame; it lives until the next call.
    #[inline]
    #[allow(clippy::should_implement_trait)] // a lending iterator: `Iterator` cannot express it
    pub fn next(&mut self) -> Option<Frame<'_>> {
        let held = self.advance()?;
        Some(self.walker.frame(&held))
    }

    /// Reads the next record, keeping its bytes in the buffer until the call after.
    #[inline]
    fn advance(&mut self) -> Option<Held> {
        match self.walker.next_record() {
            Ok(Some(held)) => {
                self.read += 1;
                Some(held)
            }
            // The file was validated at open, so the walk normally ends where validation ended.
            _ => {
                self.ended_early |= self.read < self.file.records;
                None
            }
        }
    }

    /// Whether the walk ended before the end validation found.
    pub fn ended_early(&self) -> bool {
        self.ended_early
    }
}

/// Frames of several files merged by timestamp (files written in parallel, e.g. one per
/// interface, interleave; rotated files simply follow each other).
pub struct MergedFrames<'f> {
    files: Vec<Frames<'f>>,
    /// Each file's next frame, read but not handed out yet.
    heads: Vec<Option<Held>>,
    heap: BinaryHeap<Reverse<(Timestamp, usize)>>,
    /// The file whose frame was handed out last: it moves on at the next call, not before, so
    /// that frame's bytes stay where they are while the caller has them.
    lent: Option<usize>,
}

impl<'f> MergedFrames<'f> {
    pub fn new(files: &'f [CaptureFile]) -> Self {
        let mut frames: Vec<Frames<'f>> = files.iter().map(CaptureFile::frames).collect();
        let mut heap = BinaryHeap::new();
        let heads = if frames.len() == 1 {
            vec![None]
        } else {
            frames
                .iter_mut()
                .enumerate()
                .map(|(i, f)| {
                    let h = f.advance();
                    if let Some(h) = &h {
                        heap.push(Reverse((h.ts, i)));
                    }
                    h
                })
                .collect()
        };
        MergedFrames { files: frames, heads, heap, lent: None }
    }

    /// The next frame and the index of its file; it lives until the next call.
    #[inline]
    #[allow(clippy::should_implement_trait)] // a lending iterator
    pub fn next(&mut self) -> Option<(Frame<'_>, usize)> {
        let (held, i) = self.advance()?;
        Some((self.frame(&held, i), i))
    }

    /// Reads the next frame in time order and says where it is (split from [`Self::frame`] so
    /// that a caller can act on the end without holding a borrow).
    #[inline]
    pub(crate) fn advance(&mut self) -> Option<(Held, usize)> {
        if self.files.len() == 1 {
            return self.files[0].advance().map(|h| (h, 0));
        }
        if let Some(i) = self.lent.take() {
            self.heads[i] = self.files[i].advance();
            if let Some(h) = &self.heads[i] {
                self.heap.push(Reverse((h.ts, i)));
            }
        }
        let Reverse((_, i)) = self.heap.pop()?;
        let held = self.heads[i].take()?;
        self.lent = Some(i);
        Some((held, i))
    }

    /// The frame `advance` just read.
    #[inline]
    pub(crate) fn frame(&self, held: &Held, file: usize) -> Frame<'_> {
        self.files[file].walker.frame(held)
    }

    /// Files whose walk ended before the end validation found.
    pub fn ended_early(&self) -> u64 {
        self.files.iter().filter(|f| f.ended_early()).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file many buffers long reads back whole, frame by frame, with records that straddle
    /// two buffers and one larger than the buffer; two files merged interleave exactly, the
    /// frame handed out staying intact while the other file moves on.
    #[test]
    fn a_file_larger_than_the_buffer_reads_back_exactly() {
        let path = std::env::temp_dir().join(format!("ollama-tracer-buffer-{}.pcap", std::process::id()));
        let big = 77;
        let size = |i: u32| if i == big { BUFFER as u32 * 5 / 2 } else { 1000 + i % 600 };
        let record = |i: u32| -> Vec<u8> { (0..size(i)).map(|k| (i.wrapping_mul(31) ^ k) as u8).collect() };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        bytes.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0]);
        let n = 12 * BUFFER as u32 / 1000;
        for i in 0..n {
            let data = record(i);
            for w in [i, 0, data.len() as u32, data.len() as u32] {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            bytes.extend_from_slice(&data);
        }
        std::fs::write(&path, &bytes).unwrap();
        let file = CaptureFile::open(&path).unwrap();
        assert!(file.len() > 10 * BUFFER as u64 && file.records() == u64::from(n));
        let mut frames = file.frames();
        let mut seen = 0;
        while let Some(f) = frames.next() {
            assert_eq!((f.data, f.ts), (&record(seen)[..], Timestamp(u64::from(seen) * 1_000_000_000)), "frame {seen}");
            seen += 1;
        }
        assert_eq!(seen, n);
        assert!(!frames.ended_early());
        let files = [CaptureFile::open(&path).unwrap(), CaptureFile::open(&path).unwrap()];
        let mut merged = MergedFrames::new(&files);
        let mut k = 0;
        while let Some((f, file)) = merged.next() {
            assert_eq!((f.data, file), (&record(k / 2)[..], k as usize % 2), "merged frame {k}");
            k += 1;
        }
        assert_eq!((k, merged.ended_early()), (2 * n, 0));
        std::fs::remove_file(&path).unwrap();
    }

    /// A file cut after it was validated: the walk stops there and says so.
    #[test]
    fn a_file_cut_after_validation_is_flagged() {
        let path = std::env::temp_dir().join(format!("ollama-tracer-cut-{}.pcap", std::process::id()));
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        bytes.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0]);
        for i in 0..2000u32 {
            for w in [i, 0, 500, 500] {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            bytes.extend_from_slice(&[i as u8; 500]);
        }
        std::fs::write(&path, &bytes).unwrap();
        let file = CaptureFile::open(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let mut frames = file.frames();
        let mut seen = 0;
        while frames.next().is_some() {
            seen += 1;
        }
        assert!(seen < 2000 && frames.ended_early(), "{seen}");
        std::fs::remove_file(&path).unwrap();
    }
}
