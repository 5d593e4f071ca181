//! Replaying recorded captures through the pipeline: frames → segments → calls.

use std::fmt;
use std::path::Path;

use crate::capture::file::{CaptureFile, FileError, MergedFrames};
use crate::capture::live::LiveCounters;
use crate::capture::packet::{Decoded, PacketError, decode};
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
            "  tcp: {} duplicate bytes, {} out-of-order segments, {} mid-stream connections, {} resets; http: {} resyncs, {} orphan responses, {} unanswered",
            r.duplicate_bytes,
            r.out_of_order_segments,
            r.midstream_connections,
            r.closed_reset,
            h.resyncs,
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
        let decoded = decode(link, frame.data, frame.orig_len, frame.ts, &orientation);
        capture.count(&decoded);
        if let Ok(Decoded::Segment(seg)) = decoded {
            pipeline.push(&seg, out);
        }
    }
    pipeline.finish(out);
    Report { capture, pipeline: pipeline.stats(), spans: 0, live: None }
}
