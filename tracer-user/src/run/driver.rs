//! Everything after the capture, the same for every source: segments through the pipeline,
//! calls through attribution (live eBPF only) and the span stage, traced calls to the outputs;
//! the periodic health report, in-flight snapshots for `top`, and the end of the run.

use std::time::{Duration, Instant};

use tracer_core::capture::CaptureStats;
use tracer_core::llm::LlmCall;
use tracer_core::pipeline::{BodySkip, IN_FLIGHT_SHOWN, InFlightSnapshot, PeerSeen, Pipeline, PipelineConfig};
use tracer_core::segment::{Segment, Timestamp};
use tracer_core::span::stage::{SpanStage, TracedCall};

use crate::attribution::enrich::Enricher;
use crate::capture::LiveCounters;
use crate::report::Report;
use crate::sink::Outputs;

/// Where the bodies the capture need not copy are told.
pub type Skipper = Box<dyn Fn(&BodySkip) + Send>;

/// The consumer side of a run. Owned by one thread: the replay's, or the live pipeline thread.
pub struct Driver {
    pipeline: Pipeline,
    enricher: Option<Enricher>,
    spans: SpanStage,
    outputs: Outputs,
    /// Connection ends named by the capture, handed to attribution after each segment.
    peers: Vec<PeerSeen>,
    /// Reused for the snapshots of calls in flight, when a sink shows them (`top`).
    snapshot: Option<InFlightSnapshot>,
    /// Spans at the last flush: a pipe (`| jq`, a log shipper) gets each tick's spans within a
    /// tick, not when a 64 KiB buffer fills or at exit.
    flushed_spans: u64,
    flush_warned: bool,
    /// Where bodies the capture need not copy are told (live eBPF), and those found.
    skipper: Option<Skipper>,
    skips: Vec<BodySkip>,
}

impl Driver {
    pub fn new(mut pipeline: PipelineConfig, enricher: Option<Enricher>, spans: SpanStage, outputs: Outputs) -> Self {
        pipeline.collect_peers = enricher.is_some();
        let snapshot = outputs.wants_in_flight().then(InFlightSnapshot::default);
        Driver {
            pipeline: Pipeline::new(pipeline),
            enricher,
            spans,
            outputs,
            peers: Vec::new(),
            snapshot,
            flushed_spans: 0,
            flush_warned: false,
            skipper: None,
            skips: Vec::new(),
        }
    }

    /// Tells `skipper` about every body longer than `over` bytes that the pipeline only
    /// counts, as soon as its head is read, so the capture can stop copying its bytes.
    pub fn skip_bodies(&mut self, over: u64, skipper: Skipper) {
        self.pipeline.skip_bodies_over(Some(over));
        self.skipper = Some(skipper);
    }

    /// The attribution the driver's calls go through, when on.
    pub fn attribution(&self) -> Option<&crate::attribution::Attribution> {
        self.enricher.as_ref().map(Enricher::attribution)
    }

    /// One captured segment.
    pub fn segment(&mut self, seg: &Segment<'_>) {
        let Driver { pipeline, enricher, spans, outputs, .. } = self;
        pipeline.push(seg, &mut |call| on_call(enricher, spans, outputs, call));
        if let Some(skipper) = &self.skipper {
            self.pipeline.drain_skips(&mut self.skips);
            for s in self.skips.drain(..) {
                skipper(&s);
            }
        }
        if let Some(e) = &self.enricher {
            self.pipeline.drain_peers(&mut self.peers);
            for p in self.peers.drain(..) {
                e.prefetch(&p);
            }
        }
    }

    /// Applies the pipeline's time-based rules at capture time `now` (live: the wall clock
    /// moves on without traffic; a replay's time is its packets').
    pub fn expire(&mut self, now: Timestamp) {
        let Driver { pipeline, enricher, spans, outputs, .. } = self;
        pipeline.expire(now, &mut |call| on_call(enricher, spans, outputs, call));
    }

    /// Lets held calls go whose attribution is done or whose hold ran out.
    pub fn poll(&mut self) {
        let Driver { enricher, spans, outputs, .. } = self;
        if let Some(e) = enricher.as_mut().filter(|e| e.held() > 0) {
            e.poll(Instant::now(), &mut |call| on_traced(spans, outputs, call));
        }
    }

    /// How long until a held call must go (`None`: nothing held).
    pub fn next_deadline(&self) -> Option<Duration> {
        let e = self.enricher.as_ref()?;
        e.next_deadline().map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The counters so far, with the capture's.
    pub fn report(&self, capture: &CaptureStats, live: Option<LiveCounters>) -> Report {
        let mut capture = capture.clone();
        if let Some(l) = &live {
            capture.kernel_drops = l.drops();
        }
        Report {
            capture,
            pipeline: self.pipeline.stats(),
            spans: self.spans.stats().spans,
            live,
            export: None,
            attribution: self.enricher.as_ref().map(|e| e.attribution().stats()),
            in_flight: Vec::new(),
        }
    }

    /// A health tick: the counters to the sinks, the calls in flight (as of `now`) to those
    /// that show them, and what was written flushed.
    pub fn tick(&mut self, now: Timestamp, capture: &CaptureStats, live: Option<LiveCounters>) {
        let mut report = self.report(capture, live);
        report.in_flight = self.pipeline.read_in_flight();
        self.outputs.health(&report);
        if let Some(snap) = self.snapshot.as_mut() {
            self.pipeline.in_flight(now, IN_FLIGHT_SHOWN, snap);
            self.outputs.in_flight(snap);
        }
        self.flush_new_spans();
    }

    /// Flushes the outputs when spans were written since the last flush.
    pub fn flush_new_spans(&mut self) {
        let spans = self.spans.stats().spans;
        if spans != self.flushed_spans {
            self.flushed_spans = spans;
            if let Err(e) = self.outputs.flush()
                && !self.flush_warned
            {
                self.flush_warned = true;
                tracing::warn!(error = %e, "writing spans failed");
            }
        }
    }

    /// End of the capture: calls still open end here, flagged incomplete; held calls go; the
    /// last counters reach the sinks (the final metrics push and scrape carry them).
    pub fn finish(&mut self, now: Timestamp, capture: &CaptureStats, live: Option<LiveCounters>) -> Report {
        let Driver { pipeline, enricher, spans, outputs, .. } = self;
        pipeline.finish(&mut |call| on_call(enricher, spans, outputs, call));
        if let Some(e) = enricher.as_mut() {
            e.finish(&mut |call| on_traced(spans, outputs, call));
        }
        if let Some(snap) = self.snapshot.as_mut() {
            self.pipeline.in_flight(now, IN_FLIGHT_SHOWN, snap);
            self.outputs.in_flight(snap);
        }
        let mut report = self.report(capture, live);
        report.in_flight = self.pipeline.read_in_flight();
        self.outputs.health(&report);
        report
    }

    /// Delivers what the sinks hold, within `timeout` (`None`: until delivered, or stopped);
    /// the span export's counters.
    pub fn shutdown(mut self, timeout: Option<Duration>, report: &mut Report) -> std::io::Result<()> {
        let result = self.outputs.shutdown(timeout);
        report.export = self.outputs.export_stats();
        result
    }
}

/// A call from the pipeline: through attribution when on, then on to spans and outputs.
fn on_call(enricher: &mut Option<Enricher>, spans: &mut SpanStage, outputs: &mut Outputs, call: LlmCall) {
    match enricher {
        Some(e) => e.push(call, Instant::now(), &mut |call| on_traced(spans, outputs, call)),
        None => on_traced(spans, outputs, call),
    }
}

fn on_traced(spans: &mut SpanStage, outputs: &mut Outputs, call: LlmCall) {
    spans.push(call, &mut |traced: TracedCall| outputs.export(&traced));
}
