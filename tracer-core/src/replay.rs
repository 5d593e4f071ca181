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

/// Opens and validates every file first, so a corrupt one is reported before any output.
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
}

impl<'a> Frames<'a> {
    pub fn new(files: &'a [CaptureFile], ports: &[u16]) -> Self {
        Frames {
            frames: MergedFrames::new(files),
            orientation: Orientation::new(ports),
            stats: CaptureStats {
                truncated_files: files.iter().filter(|f| f.truncated_at().is_some()).count() as u64,
                ..Default::default()
            },
            last_ts: Timestamp(0),
        }
    }

    /// The next frame: `Some(Some(segment))` for a TCP segment on a server port,
    /// `Some(None)` for any other frame (counted), `None` at the end.
    #[allow(clippy::option_option)] // "a frame that is no segment" and "no more frames" differ
    pub fn next_segment(&mut self) -> Option<Option<Segment<'a>>> {
        let (frame, _) = self.frames.next()?;
        let Some(link) = frame.link else {
            self.stats.frames += 1;
            self.stats.unsupported += 1;
            return Some(None);
        };
        self.last_ts = self.last_ts.max(frame.ts);
        let decoded = decode(link, frame.data, frame.orig_len, frame.ts, &self.orientation);
        self.stats.count(&decoded);
        Some(match decoded {
            Ok(Decoded::Segment(seg)) => Some(seg),
            _ => None,
        })
    }

    pub fn stats(&self) -> &CaptureStats {
        &self.stats
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
    while let Some(seg) = frames.next_segment() {
        if let Some(seg) = seg {
            pipeline.push(&seg, out);
        }
    }
    pipeline.finish(out);
    ReplayStats { capture: frames.stats().clone(), pipeline: pipeline.stats() }
}
