//! The replay source: recorded files through the driver on this thread, as fast as possible or
//! paced at a multiple of the recorded pace (so a capture can stand in for live traffic).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracer_core::capture::CaptureStats;
use tracer_core::capture::file::{CaptureFile, FileError};
use tracer_core::replay::{Frames, Read};
use tracer_core::segment::Timestamp;

use super::TICK;
use super::driver::Driver;
use super::stop::Stop;

/// What a replay read.
pub(super) struct Fed {
    pub capture: CaptureStats,
    /// Capture time at the end.
    pub last_ts: Timestamp,
    /// Files whose last record was cut short (a capture killed while writing), with its offset.
    pub cut_short: Vec<(PathBuf, u64)>,
    /// What ended a file early (a corrupt record, a failed read), if anything did.
    pub error: Option<FileError>,
}

/// Feeds every frame of `files` to `driver` (until `stop`): what the replay read.
pub(super) fn feed(files: &[CaptureFile], ports: &[u16], speed: Option<f64>, stop: &Stop, driver: &mut Driver) -> Fed {
    let speed = speed.filter(|s| *s > 0.0);
    let started = Instant::now();
    let mut first_ts: Option<u64> = None;
    let mut last_tick = Instant::now();
    let streaming = files.iter().any(CaptureFile::is_stream);
    let mut frames = Frames::new(files, ports);
    let mut n: u64 = 0;
    let mut step = |read: Read<'_, '_>| {
        n += 1;
        // Every frame paces, those on other ports too: capture time passes with them.
        if let Some(speed) = speed {
            let ts = read.segment.map_or(read.last_ts, |s| s.ts);
            let first = *first_ts.get_or_insert(ts.0);
            let due = started + Duration::from_secs_f64(ts.0.saturating_sub(first) as f64 / 1e9 / speed);
            // Sleep in short steps: ticks keep coming and a stop is seen promptly.
            while let Some(left) = due.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                if stop.requested() {
                    break;
                }
                std::thread::sleep(left.min(Duration::from_millis(50)));
                if last_tick.elapsed() >= TICK {
                    last_tick = Instant::now();
                    // Where the recorded pace has got to, between two frames.
                    let now = first + (started.elapsed().as_secs_f64() * speed * 1e9) as u64;
                    driver.tick(Timestamp(now).max(read.last_ts), read.stats, None);
                }
            }
        }
        // A stream's frames come as slowly as its traffic: a stop is looked for at each.
        if (n & 1023 == 0 || speed.is_some() || streaming) && stop.requested() {
            return ControlFlow::Break(());
        }
        if let Some(seg) = read.segment {
            driver.segment(seg);
            // A stream (a pipe from tcpdump) may pause for as long as its traffic does: a call
            // it completed is written now, not when the next frames come.
            if streaming {
                driver.flush_new_spans();
            }
        }
        if (n & 255 == 0 || speed.is_some()) && last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            driver.tick(read.last_ts, read.stats, None);
        }
        ControlFlow::Continue(())
    };
    while let Some(ControlFlow::Continue(())) = frames.with_next(&mut step) {}
    Fed {
        capture: frames.stats().clone(),
        last_ts: frames.last_ts(),
        cut_short: frames.cut_short().map(|(path, offset)| (path.to_path_buf(), offset)).collect(),
        error: frames.take_error(),
    }
}
