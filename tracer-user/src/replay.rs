//! Replaying recorded captures through the pipeline: frames → segments → calls.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::capture::file::{CaptureFile, FileError, MergedFrames};
use crate::capture::live::LiveCounters;
use crate::capture::packet::{Decoded, PacketError, decode};
use crate::export::ExportStats;
use crate::llm::LlmCall;
use crate::pipeline::{Pipeline, PipelineConfig, PipelineStats};
use crate::segment::Orientation;

/// Counters of the capture stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames read.
    pub frames: u64,
    /// TCP segments on the server ports.
    pub packets: u64,
    /// TCP payload bytes of those segments (captured).
    pub payload_bytes: u64,
    /// Frames that were not TCP on a server port.
    pub ignored: u64,
    /// Frames whose headers could not be decoded.
    pub malformed: u64,
    /// Frames of a link type we do not decode, or without a timestamp.
    pub unsupported: u64,
    /// IP fragments (not reassembled).
    pub fragments: u64,
    /// Files whose last record was cut short.
    pub truncated_files: u64,
    /// Packets the kernel or capture library reported lost (live capture).
    pub kernel_drops: u64,
}

impl CaptureStats {
    /// Counts one frame's decoding outcome.
    pub fn count(&mut self, result: &Result<Decoded<'_>, PacketError>) {
        self.frames += 1;
        match result {
            Ok(Decoded::Segment(seg)) => {
                self.packets += 1;
                self.payload_bytes += seg.payload.len() as u64;
            }
            Ok(Decoded::Ignored) => self.ignored += 1,
            Err(PacketError::Fragment) => self.fragments += 1,
            Err(_) => self.malformed += 1,
        }
    }
}

/// What a run saw, for the summary and metrics.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub capture: CaptureStats,
    pub pipeline: PipelineStats,
    pub spans: u64,
    /// The live capture's own counters (kernel or libpcap), when live.
    pub live: Option<LiveCounters>,
    /// What happened to the spans sent to OTLP, when exporting.
    pub export: Option<ExportStats>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.capture;
        let r = &self.pipeline.reassembly;
        let h = &self.pipeline.http;
        let l = &self.pipeline.llm;
        writeln!(
            f,
            "ollama-tracer summary: {} packets, {} bytes, {} connections, {} calls, {} spans",
            c.packets, c.payload_bytes, r.connections, l.calls, self.spans
        )?;
        writeln!(
            f,
            "  gaps: {} ({} bytes missing), incomplete spans: {}, errors: {}, parse errors: {}",
            r.gaps, r.gap_bytes, l.incomplete, l.errors, h.parse_errors
        )?;
        writeln!(
            f,
            "  frames: {} read, {} ignored, {} malformed, {} unsupported, {} IP fragments; kernel drops: {}",
            c.frames, c.ignored, c.malformed, c.unsupported, c.fragments, c.kernel_drops
        )?;
        write!(
            f,
            "  tcp: {} duplicate bytes, {} out-of-order segments, {} mid-stream connections, {} resets; http: {} resyncs ({} bytes skipped), {} orphan responses, {} unanswered",
            r.duplicate_bytes,
            r.out_of_order_segments,
            r.midstream_connections,
            r.closed_reset,
            h.resyncs,
            h.resync_skipped_bytes,
            h.orphan_responses,
            h.no_response
        )?;
        let overflows = r.evicted
            + r.buffer_overflows
            + h.head_evictions
            + h.stale_heads
            + h.pending_overflows
            + self.pipeline.llm.evicted;
        if overflows > 0 {
            write!(
                f,
                "\n  limits: {} connections evicted, {} reorder-buffer overflows, {} heads dropped (memory), {} stalled heads dropped, {} pipelined requests dropped, {} calls reported early",
                r.evicted,
                r.buffer_overflows,
                h.head_evictions,
                h.stale_heads,
                h.pending_overflows,
                self.pipeline.llm.evicted
            )?;
        }
        match &self.live {
            Some(LiveCounters::Ebpf(k)) => write!(
                f,
                "\n  kernel: {} packets matched, {} records ({} bytes) submitted, {} records ({} bytes) lost to a full ring buffer, {} bytes truncated, {} load failures",
                k.packets_matched,
                k.records_submitted,
                k.bytes_submitted,
                k.ringbuf_lost_records,
                k.ringbuf_lost_bytes,
                k.truncated_bytes,
                k.load_failures
            )?,
            Some(LiveCounters::Pcap(p)) => write!(
                f,
                "\n  libpcap: {} received, {} dropped (buffer), {} dropped (interface), {} truncated frames, {} undecodable",
                p.received, p.dropped, p.if_dropped, p.truncated_frames, p.decode_errors
            )?,
            None => {}
        }
        if let Some(e) = &self.export {
            write!(f, "\n  {e}")?;
        }
        if c.truncated_files > 0 {
            write!(f, "\n  {} capture file(s) ended with a cut-short record", c.truncated_files)?;
        }
        Ok(())
    }
}

/// Opens and validates every file first, so a corrupt one is reported before any output.
pub fn open_all<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<CaptureFile>, FileError> {
    paths.iter().map(CaptureFile::open).collect()
}

/// Replays opened files (merged by timestamp) through a pipeline; calls go to `out`.
pub fn replay<F: FnMut(LlmCall)>(files: &[CaptureFile], ports: &[u16], config: PipelineConfig, out: &mut F) -> Report {
    replay_with(files, ports, config, &ReplayOptions::default(), &mut |ev| {
        if let ReplayEvent::Call(c) = ev {
            out(c)
        }
    })
}

/// How a replay runs besides its input.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// Replay at this multiple of the capture's own pace (1.0 = as recorded); `None` = as fast
    /// as possible. Lets a replay stand in for live traffic (metrics endpoint, export).
    pub speed: Option<f64>,
    /// Set (by a signal handler) to stop early; calls still open end as incomplete.
    pub stop: Option<Arc<AtomicBool>>,
    /// Wall-clock interval of [`ReplayEvent::Tick`]s; `None` = none.
    pub tick: Option<Duration>,
}

/// What a replay hands out.
// The call moves straight on to its consumer; boxing it would cost an allocation per call.
#[allow(clippy::large_enum_variant)]
pub enum ReplayEvent<'a> {
    Call(LlmCall),
    /// The counters so far (`spans` left 0: the caller counts its spans).
    Tick(&'a Report),
}

/// [`replay`] with pacing, early stop and periodic health snapshots.
pub fn replay_with<F: FnMut(ReplayEvent<'_>)>(
    files: &[CaptureFile],
    ports: &[u16],
    config: PipelineConfig,
    opts: &ReplayOptions,
    on: &mut F,
) -> Report {
    let started = Instant::now();
    let mut first_ts: Option<u64> = None;
    let mut last_tick = Instant::now();
    let stopped = || opts.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
    let orientation = Orientation::new(ports);
    let mut pipeline = Pipeline::new(config);
    let mut capture = CaptureStats {
        truncated_files: files.iter().filter(|f| f.truncated_at().is_some()).count() as u64,
        ..Default::default()
    };
    for (frame, _) in MergedFrames::new(files) {
        let Some(link) = frame.link else {
            capture.frames += 1;
            capture.unsupported += 1;
            continue;
        };
        if let Some(speed) = opts.speed.filter(|s| *s > 0.0) {
            let first = *first_ts.get_or_insert(frame.ts.0);
            let due = started + Duration::from_secs_f64(frame.ts.0.saturating_sub(first) as f64 / 1e9 / speed);
            // Sleep in short steps: ticks keep coming and a stop is seen promptly.
            while let Some(left) = due.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                if stopped() {
                    break;
                }
                std::thread::sleep(left.min(Duration::from_millis(50)));
                if let Some(every) = opts.tick
                    && last_tick.elapsed() >= every
                {
                    last_tick = Instant::now();
                    let report = Report { capture: capture.clone(), pipeline: pipeline.stats(), ..Default::default() };
                    on(ReplayEvent::Tick(&report));
                }
            }
        }
        if (capture.frames & 1023 == 0 || opts.speed.is_some()) && stopped() {
            break;
        }
        let decoded = decode(link, frame.data, frame.orig_len, frame.ts, &orientation);
        capture.count(&decoded);
        if let Ok(Decoded::Segment(seg)) = decoded {
            pipeline.push(&seg, &mut |c: LlmCall| on(ReplayEvent::Call(c)));
        }
        if let Some(every) = opts.tick
            && (capture.frames & 255 == 0 || opts.speed.is_some())
            && last_tick.elapsed() >= every
        {
            last_tick = Instant::now();
            let report = Report { capture: capture.clone(), pipeline: pipeline.stats(), ..Default::default() };
            on(ReplayEvent::Tick(&report));
        }
    }
    pipeline.finish(&mut |c: LlmCall| on(ReplayEvent::Call(c)));
    Report { capture, pipeline: pipeline.stats(), spans: 0, live: None, export: None }
}
