//! What a run saw: every stage's counters in one record, for the summary at exit, the health
//! metrics and `top`. Each stage keeps its own counters; this only gathers them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use tracer_core::capture::CaptureStats;
use tracer_core::pipeline::PipelineStats;

use crate::attribution::AttributionStats;
use crate::capture::LiveCounters;
use crate::capture::counters::TlsCounters;

/// What a run saw, for the summary and metrics.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub capture: CaptureStats,
    pub pipeline: PipelineStats,
    /// Spans produced (sampled-out calls make none).
    pub spans: u64,
    /// The live capture's own counters (kernel or libpcap), when live.
    pub live: Option<LiveCounters>,
    /// What happened to the spans sent to OTLP, when exporting.
    pub export: Option<ExportStats>,
    /// The attribution stage's counters, when attribution ran.
    pub attribution: Option<AttributionStats>,
    /// Requests in flight per model, operation and API, with the peaks since the previous
    /// report (for the metrics; not in the summary).
    pub in_flight: Vec<tracer_core::llm::gauge::InFlightReading>,
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
            "  tcp: {} duplicate bytes, {} out-of-order segments, {} mid-stream connections, {} resets; http: {} resyncs ({} bytes skipped, {} bodies rejoined), {} orphan responses, {} unanswered",
            r.duplicate_bytes,
            r.out_of_order_segments,
            r.midstream_connections,
            r.closed_reset,
            h.resyncs,
            h.resync_skipped_bytes,
            h.rejoins,
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
            Some(LiveCounters::Ebpf(k)) => {
                write!(
                    f,
                    "\n  kernel: {} packets matched, {} records ({} bytes) submitted, {} records ({} bytes) lost to a full ring buffer, {} bytes truncated, {} load failures, {} body bytes skipped ({} packets, {} blob uploads named by the kernel)",
                    k.packets_matched,
                    k.records_submitted,
                    k.bytes_submitted,
                    k.ringbuf_lost_records,
                    k.ringbuf_lost_bytes,
                    k.truncated_bytes,
                    k.load_failures,
                    k.skipped_bytes,
                    k.skipped_packets,
                    k.blob_skips_named
                )?;
                if let Some(t) = &k.tls {
                    write!(f, "\n  {}", TlsLine(t))?;
                }
            }
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
        if let Some(a) = &self.attribution {
            write!(f, "\n  {a}")?;
        }
        Ok(())
    }
}

/// The summary's TLS line: what the uprobes saw, what reached user space, what was dropped
/// and why.
struct TlsLine<'a>(&'a TlsCounters);

impl fmt::Display for TlsLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        let s = &t.streams;
        write!(
            f,
            "tls: {} files probed ({} failed); {} reads and writes ({} bytes) seen, {} of excluded processes; {} sessions traced, {} ignored ({} bytes never copied); {} records ({} bytes) submitted, {} records ({} bytes) lost to a full ring buffer, {} bytes truncated, {} unreadable; {} connections, {} other ends ({} bytes) dropped, {} bytes without a socket, {} ciphertext packets dropped",
            t.targets,
            t.attach_failures,
            t.calls,
            t.bytes,
            t.pid_filtered,
            t.sessions_traced,
            t.sessions_ignored,
            t.bytes_ignored,
            t.records_submitted,
            t.bytes_submitted,
            t.records_lost,
            t.bytes_lost,
            t.truncated_bytes,
            t.read_failed_bytes,
            s.connections,
            s.duplicate_sessions,
            s.duplicate_bytes,
            s.unresolved_bytes,
            s.wire_segments_dropped
        )
    }
}

/// What happened to the spans handed to an exporting sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Spans accepted into the queue.
    pub enqueued: u64,
    /// Spans the collector acknowledged.
    pub exported: u64,
    /// Spans dropped because the queue was full (spans or bytes cap).
    pub dropped_queue_full: u64,
    /// Spans the collector refused (a non-retryable error).
    pub rejected: u64,
    /// Spans still queued (or being retried) at the shutdown deadline.
    pub dropped_shutdown: u64,
    /// Export attempts that failed (each retry counts).
    pub failed_attempts: u64,
    /// Of those, attempts that ran out of time (their batches were split).
    pub timeouts: u64,
    /// Spans and bytes queued now (the batch in flight included), and the caps.
    pub queue_spans: u64,
    pub queue_bytes: u64,
    pub queue_max_spans: u64,
    pub queue_max_bytes: u64,
}

impl std::ops::Add for ExportStats {
    type Output = ExportStats;
    fn add(self, b: ExportStats) -> ExportStats {
        ExportStats {
            enqueued: self.enqueued + b.enqueued,
            exported: self.exported + b.exported,
            dropped_queue_full: self.dropped_queue_full + b.dropped_queue_full,
            rejected: self.rejected + b.rejected,
            dropped_shutdown: self.dropped_shutdown + b.dropped_shutdown,
            failed_attempts: self.failed_attempts + b.failed_attempts,
            timeouts: self.timeouts + b.timeouts,
            queue_spans: self.queue_spans + b.queue_spans,
            queue_bytes: self.queue_bytes + b.queue_bytes,
            queue_max_spans: self.queue_max_spans + b.queue_max_spans,
            queue_max_bytes: self.queue_max_bytes + b.queue_max_bytes,
        }
    }
}

impl ExportStats {
    /// Spans lost, for whatever reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.rejected + self.dropped_shutdown
    }
}

impl fmt::Display for ExportStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "otlp: {} spans exported, {} dropped ({} queue full, {} refused by the collector, {} at shutdown), {} failed attempts ({} timed out); queue {} spans / {} bytes (caps {} / {})",
            self.exported,
            self.dropped(),
            self.dropped_queue_full,
            self.rejected,
            self.dropped_shutdown,
            self.failed_attempts,
            self.timeouts,
            self.queue_spans,
            self.queue_bytes,
            self.queue_max_spans,
            self.queue_max_bytes
        )
    }
}

/// Counters shared with the metrics (read without locking).
#[derive(Debug, Default)]
pub struct ExportCounters {
    pub enqueued: AtomicU64,
    pub exported: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub rejected: AtomicU64,
    pub dropped_shutdown: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub timeouts: AtomicU64,
    /// Spans and bytes queued now, the batch in flight included.
    pub queue_spans: AtomicU64,
    pub queue_bytes: AtomicU64,
    pub queue_max_spans: AtomicU64,
    pub queue_max_bytes: AtomicU64,
}

impl ExportCounters {
    pub fn snapshot(&self) -> ExportStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ExportStats {
            enqueued: g(&self.enqueued),
            exported: g(&self.exported),
            dropped_queue_full: g(&self.dropped_queue_full),
            rejected: g(&self.rejected),
            dropped_shutdown: g(&self.dropped_shutdown),
            failed_attempts: g(&self.failed_attempts),
            timeouts: g(&self.timeouts),
            queue_spans: g(&self.queue_spans),
            queue_bytes: g(&self.queue_bytes),
            queue_max_spans: g(&self.queue_max_spans),
            queue_max_bytes: g(&self.queue_max_bytes),
        }
    }
}
