//! Recorded captures: pcap (µs/ns, either byte order, the "modified" variant) and pcapng
//! (several sections and interfaces), read from a memory map without copying packets.
//!
//! A file is walked once up front to validate its structure, so a corrupt file is reported with
//! the offset of the bad record before anything is emitted; a file whose last record is cut short
//! (a capture killed while writing) is accepted with a warning.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};
use pcap_parser::pcapng::{Block, parse_block_be, parse_block_le};
use pcap_parser::{PcapHeader, parse_pcap_header};

use super::packet::LinkType;
use crate::segment::Timestamp;

/// Largest record we accept. libpcap's own maximum snap length is 256 KiB; anything far beyond is
/// a corrupt length field, not a packet.
const MAX_RECORD: usize = 16 << 20;
/// Files up to this size are mapped with all their pages at once; larger ones are read through
/// a sliding window of the map (see [`Window`]).
const POPULATE_MAX: u64 = 2 * WINDOW as u64;
/// The window of a large file's map a reader keeps resident: faulted in one window ahead, and
/// dropped from this process one window behind, so the RSS follows the window, not the file.
const WINDOW: usize = 4 << 20;

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

#[derive(Clone, Copy, Debug)]
enum Format {
    Pcap { big_endian: bool, nanos: bool, link: Option<LinkType>, data_start: usize },
    PcapNg,
}

/// An opened, validated capture file.
pub struct CaptureFile {
    path: PathBuf,
    map: Mmap,
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
        // SAFETY: the map is read-only; a capture file being rewritten underneath us would at
        // worst yield garbage bytes, which every later stage treats as untrusted input anyway.
        // Small files are mapped in one go; larger ones are faulted in a window at a time as
        // they are read (page by page costs more than reading them), with read-ahead.
        let len = file.metadata().map_err(io)?.len();
        let mut options = MmapOptions::new();
        if len <= POPULATE_MAX {
            options.populate();
        }
        let map = unsafe { options.map(&file) }.map_err(io)?;
        let _ = map.advise(memmap2::Advice::Sequential);
        let format = detect(&path, &map)?;
        let mut cf = CaptureFile { path, map, format, truncated_at: None, records: 0 };
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
        self.map.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn frames(&self) -> Frames<'_> {
        Frames { file: self, walker: Walker::new(self.format, &self.map), window: Window::default() }
    }

    /// A reader of a large file is at `pos`: the window ahead is faulted in at once, and what
    /// lies more than a window behind is dropped from this process's page tables (the page
    /// cache keeps it). A frame handed out earlier stays readable: its pages fault back in.
    #[inline]
    fn slide(&self, w: &mut Window, pos: usize) {
        if self.map.len() as u64 <= POPULATE_MAX || pos < w.next {
            return;
        }
        let k = pos / WINDOW;
        // One syscall per window instead of a fault per few pages (old kernels: faults).
        let (from, to) = (w.next.max(k * WINDOW), ((k + 2) * WINDOW).min(self.map.len()));
        if to > from {
            let _ = self.map.advise_range(memmap2::Advice::PopulateRead, from, to - from);
        }
        let behind = k.saturating_sub(1) * WINDOW;
        if behind > w.released {
            self.release(w.released, behind);
            w.released = behind;
        }
        w.next = to.max(w.next);
    }

    /// Drops `start..end` of the map from this process's page tables.
    fn release(&self, start: usize, end: usize) {
        // SAFETY: the map is a shared, read-only mapping of a file: MADV_DONTNEED only unmaps
        // the pages, and the next access faults the same file bytes back in from the page cache
        // (no anonymous page is zeroed; nothing was written).
        let _ = unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
    }

    fn validate(&mut self) -> Result<(), FileError> {
        let mut walker = Walker::new(self.format, &self.map);
        let mut window = Window::default();
        let mut records = 0;
        let read = loop {
            self.slide(&mut window, walker.pos);
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
            }
        };
        // The reading pass starts from nothing resident.
        if self.map.len() as u64 > POPULATE_MAX {
            self.release(window.released, self.map.len());
        }
        self.records = records;
        read
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
}

#[derive(Clone, Copy)]
struct Interface {
    link: Option<LinkType>,
    /// Units per second.
    resolution: u64,
    offset_secs: i64,
}

/// Walks records of either format; shared by validation and iteration so both agree exactly.
struct Walker<'a> {
    format: Format,
    data: &'a [u8],
    pos: usize,
    // pcapng state, per section
    big_endian: bool,
    interfaces: Vec<Interface>,
}

impl<'a> Walker<'a> {
    fn new(format: Format, data: &'a [u8]) -> Self {
        let pos = match format {
            Format::Pcap { data_start, .. } => data_start,
            Format::PcapNg => 0,
        };
        Walker { format, data, pos, big_endian: false, interfaces: Vec::new() }
    }

    fn next_record(&mut self) -> Result<Option<Frame<'a>>, WalkError> {
        match self.format {
            Format::Pcap { big_endian, nanos, link, .. } => self.next_pcap(big_endian, nanos, link),
            Format::PcapNg => self.next_pcapng(),
        }
    }

    fn next_pcap(
        &mut self,
        big_endian: bool,
        nanos: bool,
        link: Option<LinkType>,
    ) -> Result<Option<Frame<'a>>, WalkError> {
        let rest = &self.data[self.pos..];
        if rest.is_empty() {
            return Ok(None);
        }
        let offset = self.pos as u64;
        if rest.len() < 16 {
            return Err(WalkError::Truncated { offset });
        }
        // The 16-byte record header read by hand: this runs twice per packet (validation, then
        // replay) and is most of the file walk's cost.
        let word = |i: usize| {
            let b = [rest[i], rest[i + 1], rest[i + 2], rest[i + 3]];
            if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
        };
        let (ts_sec, ts_frac, caplen, origlen) = (word(0), word(4), word(8) as usize, word(12));
        if caplen > MAX_RECORD {
            return Err(WalkError::Corrupt { offset, what: format!("record length {caplen} is not a packet") });
        }
        if rest.len() < 16 + caplen {
            return Err(WalkError::Truncated { offset });
        }
        let frac_limit = if nanos { 1_000_000_000 } else { 1_000_000 };
        if ts_frac >= frac_limit {
            return Err(WalkError::Corrupt { offset, what: format!("timestamp fraction {ts_frac} out of range") });
        }
        self.pos += 16 + caplen;
        let frac_ns = if nanos { ts_frac as u64 } else { ts_frac as u64 * 1000 };
        Ok(Some(Frame {
            ts: Timestamp(ts_sec as u64 * 1_000_000_000 + frac_ns),
            link,
            data: &rest[16..16 + caplen],
            orig_len: origlen.max(caplen as u32),
            offset,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<Frame<'a>>, WalkError> {
        loop {
            let rest = &self.data[self.pos..];
            if rest.is_empty() {
                return Ok(None);
            }
            let offset = self.pos as u64;
            if rest.len() < 12 {
                return Err(WalkError::Truncated { offset });
            }
            let raw_type = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            if raw_type == PCAPNG_SHB {
                // The byte-order magic decides the endianness of this whole section.
                let bom = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
                self.big_endian = match bom {
                    0x1A2B_3C4D => false,
                    0x4D3C_2B1A => true,
                    _ => return Err(WalkError::Corrupt { offset, what: format!("bad byte-order magic {bom:#x}") }),
                };
                self.interfaces.clear();
            }
            let rd = |b: &[u8]| {
                let a = [b[0], b[1], b[2], b[3]];
                if self.big_endian { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }
            };
            let block_type = rd(&rest[0..4]);
            let total = rd(&rest[4..8]) as usize;
            if total < 12 || !total.is_multiple_of(4) || total > MAX_RECORD {
                return Err(WalkError::Corrupt { offset, what: format!("block length {total} is invalid") });
            }
            if total > rest.len() {
                return Err(WalkError::Truncated { offset });
            }
            if rd(&rest[total - 4..total]) as usize != total {
                return Err(WalkError::Corrupt { offset, what: "block trailer length differs from header".into() });
            }
            let block_bytes = &rest[..total];
            self.pos += total;
            let parsed = if self.big_endian { parse_block_be(block_bytes) } else { parse_block_le(block_bytes) };
            let corrupt = |what: &str| WalkError::Corrupt { offset, what: what.to_string() };
            match block_type {
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
                }
                PCAPNG_EPB | PCAPNG_OBSOLETE_PB => {
                    let (if_id, ts_high, ts_low, caplen, origlen, data) = match parsed {
                        Ok((_, Block::EnhancedPacket(epb))) => {
                            (epb.if_id, epb.ts_high, epb.ts_low, epb.caplen, epb.origlen, epb.data)
                        }
                        // The obsolete Packet Block has the EPB layout with a 16-bit interface id.
                        _ if block_type == PCAPNG_OBSOLETE_PB && total >= 32 => {
                            let if_id = if self.big_endian {
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
                    return Ok(Some(Frame {
                        ts: Timestamp(ns.clamp(0, u64::MAX as i128) as u64),
                        link: iface.link,
                        data: &data[..caplen as usize],
                        orig_len: origlen.max(caplen),
                        offset,
                    }));
                }
                PCAPNG_SPB => {
                    // Simple Packet Blocks carry no timestamp: without one no span time can be
                    // right, so the frame is handed on with no link type and counted as unusable.
                    let data = &rest[12..total - 4];
                    let origlen = rd(&rest[8..12]);
                    let caplen = (origlen as usize).min(data.len());
                    return Ok(Some(Frame {
                        ts: Timestamp(0),
                        link: None,
                        data: &data[..caplen],
                        orig_len: origlen,
                        offset,
                    }));
                }
                _ => {} // section header, statistics, name resolution, custom: nothing to do
            }
        }
    }
}

/// How far a reader of a large file has its map resident: from `released` up to `next`.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    released: usize,
    next: usize,
}

/// Frames of one file in file order.
pub struct Frames<'a> {
    file: &'a CaptureFile,
    walker: Walker<'a>,
    window: Window,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;
    fn next(&mut self) -> Option<Frame<'a>> {
        self.file.slide(&mut self.window, self.walker.pos);
        // The file was validated at open, so the walk ends exactly where validation ended.
        self.walker.next_record().ok().flatten()
    }
}

/// Frames of several files merged by timestamp (files written in parallel, e.g. one per
/// interface, interleave; rotated files simply follow each other).
pub struct MergedFrames<'a> {
    iters: Vec<std::iter::Peekable<Frames<'a>>>,
    heap: BinaryHeap<Reverse<(Timestamp, usize)>>,
}

impl<'a> MergedFrames<'a> {
    pub fn new(files: &'a [CaptureFile]) -> Self {
        let mut iters: Vec<_> = files.iter().map(|f| f.frames().peekable()).collect();
        let mut heap = BinaryHeap::new();
        for (i, it) in iters.iter_mut().enumerate() {
            if let Some(f) = it.peek() {
                heap.push(Reverse((f.ts, i)));
            }
        }
        MergedFrames { iters, heap }
    }
}

impl<'a> Iterator for MergedFrames<'a> {
    /// The frame and the index of its file.
    type Item = (Frame<'a>, usize);
    fn next(&mut self) -> Option<(Frame<'a>, usize)> {
        if self.iters.len() == 1 {
            return self.iters[0].next().map(|f| (f, 0));
        }
        let Reverse((_, i)) = self.heap.pop()?;
        let frame = self.iters[i].next()?;
        if let Some(next) = self.iters[i].peek() {
            self.heap.push(Reverse((next.ts, i)));
        }
        Some((frame, i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file several windows long reads back whole, frame by frame, while the window slides —
    /// also a frame kept from the start and read after its pages were dropped, and two files
    /// merged (each with its window).
    #[test]
    fn a_file_larger_than_the_window_reads_back_exactly() {
        let path = std::env::temp_dir().join(format!("ollama-tracer-window-{}.pcap", std::process::id()));
        let record = |i: u32| -> Vec<u8> { (0..1000 + i % 600).map(|k| (i.wrapping_mul(31) ^ k) as u8).collect() };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        bytes.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0]);
        let n = 3 * WINDOW as u32 / 1000;
        for i in 0..n {
            let data = record(i);
            for w in [i, 0, data.len() as u32, data.len() as u32] {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            bytes.extend_from_slice(&data);
        }
        std::fs::write(&path, &bytes).unwrap();
        let file = CaptureFile::open(&path).unwrap();
        assert!(file.len() > POPULATE_MAX && file.records() == u64::from(n));
        let mut first = None;
        let mut seen = 0;
        for (i, f) in file.frames().enumerate() {
            assert_eq!(f.data, record(i as u32), "frame {i}");
            first.get_or_insert(f);
            seen += 1;
        }
        assert_eq!(seen, n);
        assert_eq!(first.unwrap().data, record(0), "a frame read after its pages were dropped");
        let files = [CaptureFile::open(&path).unwrap(), CaptureFile::open(&path).unwrap()];
        assert_eq!(MergedFrames::new(&files).count(), 2 * n as usize);
        std::fs::remove_file(&path).unwrap();
    }
}
