//! Recorded captures through the pipeline: frames → segments → calls, as fast as the CPU goes.
//!
//! [`Frames`] is the one place a recorded frame becomes a segment (and is counted); the daemon's
//! run driver uses it for `ollama-tracer replay` (adding pacing, ticks and outputs), tests and
//! fuzzers call [`replay`] directly.

use std::path::Path;

use crate::capture::CaptureStats;
use crate::capture::file::{CaptureFile, FileError, MergedFrames};
use crate::capture::packet::{Decoded, decode};
use crate::llm::LlmCall;
use crate::pipeline::{Pipeline, PipelineConfig, PipelineStats};
use crate::segment::{Orientation, Segment, Timestamp};

/// Opens every file (its format read from its first bytes).
pub fn open_all<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<CaptureFile>, FileError> {
    paths.iter().map(CaptureFile::open).collect()
}

/// The frames of several files merged by timestamp, decoded into segments and counted.
pub struct Frames<'a> {
    frames: MergedFrames<'a>,
    orientation: Orientation,
    stats: CaptureStats,
    /// Latest capture time seen (frames of merged files are not strictly ordered).
    last_ts: Timestamp,
    ended: bool,
}

/// One frame read: its segment when it is a TCP segment on a server port (`None` for any other
/// frame, counted), and the reader's counters and latest capture time after it.
pub struct Read<'r, 'a> {
    pub segment: Option<&'r Segment<'a>>,
    pub stats: &'r CaptureStats,
    pub last_ts: Timestamp,
}

impl<'a> Frames<'a> {
    pub fn new(files: &'a [CaptureFile], ports: &[u16]) -> Self {
        Frames {
            frames: MergedFrames::new(files),
            orientation: Orientation::new(ports),
            stats: CaptureStats::default(),
            last_ts: Timestamp(0),
            ended: false,
        }
    }

    /// Reads the next frame and hands it to `f`; `None` at the end. The segment is lent where
    /// it was decoded: moved out to a caller instead, its ~140 bytes were copied twice per
    /// packet, each copy reading what the decoder had just written in narrower pieces (a
    /// store-forwarding stall), ≈ 6 % of a replay.
    #[inline]
    pub fn with_next<R>(&mut self, f: impl FnOnce(Read<'_, '_>) -> R) -> Option<R> {
        let Some((held, file)) = self.frames.advance() else {
            if !std::mem::replace(&mut self.ended, true) {
                self.stats.truncated_files += self.frames.cut_short().count() as u64;
            }
            return None;
        };
        let frame = self.frames.frame(&held, file);
        let Some(link) = frame.link else {
            self.stats.frames += 1;
            self.stats.unsupported += 1;
            return Some(f(Read { segment: None, stats: &self.stats, last_ts: self.last_ts }));
        };
        self.last_ts = self.last_ts.max(frame.ts);
        let decoded = decode(link, frame.data, frame.orig_len, frame.ts, &self.orientation);
        self.stats.count(&decoded);
        let segment = match &decoded {
            Ok(Decoded::Segment(seg)) => Some(seg),
            _ => None,
        };
        Some(f(Read { segment, stats: &self.stats, last_ts: self.last_ts }))
    }

    pub fn stats(&self) -> &CaptureStats {
        &self.stats
    }

    /// What ended a file before its end, taken out to report it: a corrupt record or a failed
    /// read (the frames before it were read).
    pub fn take_error(&mut self) -> Option<FileError> {
        self.frames.take_error()
    }

    /// The files whose last record, cut short, ended their walk, with that record's offset.
    pub fn cut_short(&self) -> impl Iterator<Item = (&Path, u64)> {
        self.frames.cut_short()
    }

    /// The latest capture time seen so far.
    pub fn last_ts(&self) -> Timestamp {
        self.last_ts
    }
}

/// What a replay counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub capture: CaptureStats,
    pub pipeline: PipelineStats,
    /// What ended a file before its end (a corrupt record, a failed read), as its message; the
    /// frames before it were replayed.
    pub ended_on: Option<String>,
}

/// Replays opened files (merged by timestamp) through a pipeline; calls go to `out`.
pub fn replay<F: FnMut(LlmCall)>(
    files: &[CaptureFile],
    ports: &[u16],
    config: PipelineConfig,
    out: &mut F,
) -> ReplayStats {
    let mut frames = Frames::new(files, ports);
    let mut pipeline = Pipeline::new(config);
    while frames
        .with_next(|read| {
            if let Some(seg) = read.segment {
                pipeline.push(seg, out);
            }
        })
        .is_some()
    {}
    pipeline.finish(out);
    let ended_on = frames.take_error().map(|e| e.to_string());
    ReplayStats { capture: frames.stats().clone(), pipeline: pipeline.stats(), ended_on }
}
