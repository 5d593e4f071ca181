//! Recorded captures: pcap (µs/ns, either byte order, the "modified" variant) and pcapng
//! (several sections and interfaces), read front to back through one buffer per reader.
//!
//! Every capture is read once, front to back. A corrupt record ends its file with an error that
//! names the record's offset, after what came before it was decoded (as tshark and tcpdump do);
//! a last record cut short (a capture killed while writing) ends it with a warning. Files used
//! to be walked a first time to validate them, so that a corrupt one was reported before
//! anything was emitted: that pass read every byte twice — a tenth of a replay's CPU (the
//! copies out of the page cache), and twice the disk reads of a capture not in the cache —
//! to move an error that stops the replay anyway from its end to its start. A stream (a pipe, a
//! FIFO, standard input: `tcpdump -U -w - | ollama-tracer replay -`), which cannot be read
//! twice, was always read this way.
//!
//! Why a buffer and not a memory map: a map of a large file costs page-table work for every
//! 4 KiB page, twice (mapped in, dropped behind the reader to keep the RSS bounded) — 0.45 s of
//! system time per 1.7 GB file, a fifth of a replay. `read` into a buffer that stays in the cache
//! costs 0.1 s for the same file and bounds memory by itself. A frame is then a slice of the
//! buffer, valid until its reader moves on, so the readers lend frames (`next(&mut self)`)
//! instead of iterating: every stage after the capture copies what it keeps anyway.

mod reader;
mod walk;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::path::{Path, PathBuf};

use pcap_parser::{PcapHeader, parse_pcap_header};

use self::reader::Reader;
pub use self::walk::Frame;
pub(crate) use self::walk::Held;
use self::walk::{Format, PCAPNG_SHB, WalkError, Walker};
use super::packet::LinkType;
use crate::segment::Timestamp;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The reason is part of the message, not an error `source`: a chain of causes would
    /// print it twice.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: not a pcap or pcapng file (first bytes {magic:02x?})")]
    NotACapture { path: PathBuf, magic: Vec<u8> },
    #[error("{path}: corrupt capture at byte offset {offset}: {what}")]
    Corrupt { path: PathBuf, offset: u64, what: String },
}

/// An opened capture file whose format is known (its records are read by [`Self::frames`]).
pub struct CaptureFile {
    path: PathBuf,
    file: File,
    len: u64,
    /// A pipe or the like: one reader, with plain reads.
    stream: Option<Stream>,
    format: Format,
}

impl std::fmt::Debug for CaptureFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureFile").field("path", &self.path).field("format", &self.format).finish()
    }
}

/// What a stream's detection already read (it cannot be read again), and whether its one
/// reader has been handed out.
struct Stream {
    head: Vec<u8>,
    taken: std::sync::atomic::AtomicBool,
}

impl CaptureFile {
    /// Opens a capture file and reads its format from its first bytes. A pipe, FIFO or other
    /// stream has one reader, which reads it as it comes.
    pub fn open(path: impl AsRef<Path>) -> Result<CaptureFile, FileError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|error| FileError::Io { path: path.clone(), error })?;
        Self::from_file(path, file)
    }

    /// [`Self::open`] of a file opened already (a pipe the caller feeds), named `path` in
    /// messages.
    pub fn from_file(path: PathBuf, file: File) -> Result<CaptureFile, FileError> {
        let io = |error| FileError::Io { path: path.clone(), error };
        let meta = file.metadata().map_err(io)?;
        if meta.is_dir() {
            return Err(io(std::io::Error::from(std::io::ErrorKind::IsADirectory)));
        }
        let stream = !meta.file_type().is_file();
        let mut head = Reader::new(&file, !stream);
        let bytes = head.fill(64).map_err(io)?;
        let format = detect(&path, bytes)?;
        let stream = stream.then(|| Stream { head: bytes.to_vec(), taken: false.into() });
        drop(head);
        let len = if stream.is_some() { 0 } else { meta.len() };
        Ok(CaptureFile { path, file, len, stream, format })
    }

    /// Whether the file is a stream (one reader).
    pub fn is_stream(&self) -> bool {
        self.stream.is_some()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A reader of the file's frames in file order, with a buffer of its own. A stream has one
    /// reader: a second one finds it ended.
    pub fn frames(&self) -> Frames<'_> {
        let reader = match &self.stream {
            None => Reader::new(&self.file, true),
            Some(s) if !s.taken.swap(true, std::sync::atomic::Ordering::Relaxed) => {
                Reader::with_head(&self.file, &s.head)
            }
            Some(_) => Reader::ended(&self.file),
        };
        Frames { file: self, walker: Walker::new(self.format, reader), ended: false, cut_short: None, error: None }
    }
}

fn detect(path: &Path, head: &[u8]) -> Result<Format, FileError> {
    let not_capture = || FileError::NotACapture { path: path.to_path_buf(), magic: head[..head.len().min(8)].to_vec() };
    if head.len() >= 4 && u32::from_le_bytes([head[0], head[1], head[2], head[3]]) == PCAPNG_SHB {
        return Ok(Format::PcapNg);
    }
    let (rest, header): (&[u8], PcapHeader) = parse_pcap_header(head).map_err(|_| not_capture())?;
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
        data_start: head.len() - rest.len(),
    })
}

/// Frames of one file in file order, read through a buffer of their own.
pub struct Frames<'f> {
    file: &'f CaptureFile,
    walker: Walker<'f>,
    /// The walk is over (at the end, or at what ended it early).
    ended: bool,
    /// Offset of a last record cut short, which ended the walk.
    cut_short: Option<u64>,
    /// What ended the walk early: a corrupt record or a failed read.
    error: Option<FileError>,
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
        if self.ended {
            return None;
        }
        if let Some(held) = self.walker.next_buffered() {
            return Some(held);
        }
        match self.walker.next_record() {
            Ok(Some(held)) => return Some(held),
            Ok(None) => {}
            Err(e) => {
                let path = self.file.path.clone();
                match e {
                    WalkError::Truncated { offset } => self.cut_short = Some(offset),
                    WalkError::Corrupt { offset, what } => self.error = Some(FileError::Corrupt { path, offset, what }),
                    WalkError::Io(error) => self.error = Some(FileError::Io { path, error }),
                }
            }
        }
        self.ended = true;
        None
    }

    /// Offset of the last record, cut short, that ended the walk (a warning, not an error: the
    /// records before it were read).
    pub fn cut_short(&self) -> Option<u64> {
        self.cut_short
    }

    /// What ended the walk before the file's end: a corrupt record or a failed read.
    pub fn error(&self) -> Option<&FileError> {
        self.error.as_ref()
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

    /// The files whose last record, cut short, ended their walk: each with that record's
    /// offset.
    pub fn cut_short(&self) -> impl Iterator<Item = (&Path, u64)> {
        self.files.iter().filter_map(|f| Some((f.file.path(), f.cut_short?)))
    }

    /// The first error that ended a file's walk early.
    pub fn error(&self) -> Option<&FileError> {
        self.files.iter().find_map(Frames::error)
    }

    /// The first error that ended a file's walk early, taken out (to report it).
    pub fn take_error(&mut self) -> Option<FileError> {
        self.files.iter_mut().find_map(|f| f.error.take())
    }
}

#[cfg(test)]
mod tests {
    use super::reader::BUFFER;
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
        assert!(file.len() > 10 * BUFFER as u64);
        let mut frames = file.frames();
        let mut seen = 0;
        while let Some(f) = frames.next() {
            assert_eq!((f.data, f.ts), (&record(seen)[..], Timestamp(u64::from(seen) * 1_000_000_000)), "frame {seen}");
            seen += 1;
        }
        assert_eq!(seen, n);
        assert!(frames.cut_short().is_none() && frames.error().is_none());
        let files = [CaptureFile::open(&path).unwrap(), CaptureFile::open(&path).unwrap()];
        let mut merged = MergedFrames::new(&files);
        let mut k = 0;
        while let Some((f, file)) = merged.next() {
            assert_eq!((f.data, file), (&record(k / 2)[..], k as usize % 2), "merged frame {k}");
            k += 1;
        }
        assert_eq!((k, merged.cut_short().count()), (2 * n, 0));
        std::fs::remove_file(&path).unwrap();
    }

    /// A file whose last record is cut short (a capture killed while writing) reads to that
    /// record and says where it is; a corrupt record ends the walk with an error naming its
    /// offset, after the frames before it.
    #[test]
    fn a_file_ends_at_a_cut_record_with_a_warning_and_at_a_corrupt_one_with_an_error() {
        let path = std::env::temp_dir().join(format!("ollama-tracer-cut-{}.pcap", std::process::id()));
        let mut bytes = pcap(20, 100);
        bytes.truncate(bytes.len() - 40);
        std::fs::write(&path, &bytes).unwrap();
        let file = CaptureFile::open(&path).unwrap();
        let mut frames = file.frames();
        let seen = walk(&mut frames);
        assert!(frames.next().is_none(), "the walk stays ended");
        assert_eq!((seen, frames.cut_short(), frames.error().is_none()), (19, Some(24 + 19 * 116), true));

        let mut bytes = pcap(2000, 500);
        let bad_at = 24 + 1500 * 516;
        bytes[bad_at + 8..bad_at + 12].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let files = [CaptureFile::open(&path).unwrap()];
        let mut merged = MergedFrames::new(&files);
        let mut seen = 0;
        while merged.next().is_some() {
            seen += 1;
        }
        assert_eq!((seen, merged.cut_short().count()), (1500, 0));
        match merged.take_error() {
            Some(FileError::Corrupt { offset, .. }) => assert_eq!(offset, bad_at as u64),
            e => panic!("{e:?}"),
        }
        std::fs::remove_file(&path).unwrap();
    }

    /// A record whose time has a fraction of a second out of range, in the middle of the read
    /// buffer (where records are read inline): the walk ends there with an error naming it, and
    /// no frame after it is handed out.
    #[test]
    fn a_bad_time_fraction_inside_the_buffer_ends_the_walk_at_its_record() {
        let path = std::env::temp_dir().join(format!("ollama-tracer-frac-{}.pcap", std::process::id()));
        let mut bytes = pcap(200, 100);
        let bad_at = 24 + 50 * 116;
        // Microsecond resolution: a million is one too many.
        bytes[bad_at + 4..bad_at + 8].copy_from_slice(&1_000_000u32.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let file = CaptureFile::open(&path).unwrap();
        let mut frames = file.frames();
        let seen = walk(&mut frames);
        assert_eq!((seen, frames.cut_short()), (50, None));
        match frames.error() {
            Some(FileError::Corrupt { offset, what, .. }) => {
                assert_eq!(*offset, bad_at as u64);
                assert!(what.contains("timestamp fraction 1000000"), "{what}");
            }
            e => panic!("{e:?}"),
        }
        std::fs::remove_file(&path).unwrap();
    }

    /// Of two files merged, one corrupt: it ends at its bad record, the other is read to its
    /// end, and the error is the corrupt one's.
    #[test]
    fn a_corrupt_file_in_a_merge_ends_alone() {
        let dir = std::env::temp_dir();
        let (good, bad) = (
            dir.join(format!("ollama-tracer-merge-good-{}.pcap", std::process::id())),
            dir.join(format!("ollama-tracer-merge-bad-{}.pcap", std::process::id())),
        );
        std::fs::write(&good, pcap(50, 100)).unwrap();
        let mut bytes = pcap(50, 100);
        let bad_at = 24 + 10 * 116;
        bytes[bad_at + 8..bad_at + 12].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        std::fs::write(&bad, &bytes).unwrap();
        let files = [CaptureFile::open(&good).unwrap(), CaptureFile::open(&bad).unwrap()];
        let mut merged = MergedFrames::new(&files);
        let mut per_file = [0, 0];
        while let Some((_, i)) = merged.next() {
            per_file[i] += 1;
        }
        assert_eq!(per_file, [50, 10]);
        match merged.take_error() {
            Some(FileError::Corrupt { path, offset, .. }) => assert_eq!((path, offset), (bad.clone(), bad_at as u64)),
            e => panic!("{e:?}"),
        }
        std::fs::remove_file(&good).unwrap();
        std::fs::remove_file(&bad).unwrap();
    }

    /// Walks `frames` to their end; how many were handed out.
    fn walk(frames: &mut Frames<'_>) -> usize {
        let mut seen = 0;
        while frames.next().is_some() {
            seen += 1;
        }
        seen
    }

    /// A pcap of `n` records of `size` bytes (record `i` filled with `i`), from a header of
    /// 24 bytes: the offset of record `i` is `24 + i * (16 + size)`.
    fn pcap(n: u32, size: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        bytes.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0]);
        for i in 0..n {
            for w in [i, 0, size, size] {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            bytes.extend(std::iter::repeat_n(i as u8, size as usize));
        }
        bytes
    }

    /// `bytes` written into a pipe by a thread, in small writes with pauses (as tcpdump -U
    /// does), opened by its `/dev/fd` path: frames as they come, one reader only.
    fn through_a_pipe(bytes: Vec<u8>) -> (CaptureFile, std::thread::JoinHandle<()>) {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (r, mut w) = std::io::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            for piece in bytes.chunks(7_001) {
                if w.write_all(piece).is_err() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        });
        let file = CaptureFile::open(format!("/dev/fd/{}", r.as_raw_fd())).unwrap();
        drop(r);
        (file, writer)
    }

    #[test]
    fn a_stream_is_read_as_it_comes_once() {
        let (file, writer) = through_a_pipe(pcap(3000, 300));
        assert!(file.is_stream());
        let mut frames = file.frames();
        let mut seen = 0u32;
        while let Some(f) = frames.next() {
            assert_eq!((f.data, f.offset), (&[seen as u8; 300][..], 24 + u64::from(seen) * 316), "frame {seen}");
            seen += 1;
        }
        assert_eq!(seen, 3000);
        assert!(frames.cut_short().is_none() && frames.error().is_none());
        assert!(file.frames().next().is_none(), "a stream has one reader");
        writer.join().unwrap();
    }

    #[test]
    fn a_stream_ends_on_a_corrupt_record_with_its_offset_and_a_cut_one_is_flagged() {
        let mut bytes = pcap(50, 100);
        let bad_at = bytes.len() as u64;
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xf0, 0xff, 0xff, 0x7f, 1, 0, 0, 0]);
        let (file, writer) = through_a_pipe(bytes);
        let mut frames = file.frames();
        let seen = walk(&mut frames);
        assert_eq!(seen, 50);
        match frames.error() {
            Some(FileError::Corrupt { offset, .. }) => assert_eq!(*offset, bad_at),
            e => panic!("{e:?}"),
        }
        writer.join().unwrap();

        let mut bytes = pcap(50, 100);
        bytes.truncate(bytes.len() - 30);
        let (file, writer) = through_a_pipe(bytes);
        let files = [file];
        let mut merged = MergedFrames::new(&files);
        let mut seen = 0;
        while merged.next().is_some() {
            seen += 1;
        }
        assert_eq!((seen, merged.cut_short().count(), merged.error().is_none()), (49, 1, true));
        writer.join().unwrap();
    }
}
