//! `ollama-tracer run`: a live capture feeding the same pipeline as replay.
//!
//! The capture (eBPF ring buffer or libpcap) is read by a tokio task; the pipeline and the
//! outputs run on their own thread, fed through a bounded channel of batches. When the pipeline
//! falls behind, the channel fills, the capture task waits, and the kernel's buffer absorbs the
//! burst or drops — counted, never silent. On SIGINT/SIGTERM the capture is detached, calls
//! still in flight are ended as incomplete spans, and the summary is printed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::capture::live::{CaptureConfig, CaptureError, CaptureMode, LiveCapture, LiveCounters, start_live};
use crate::export::Outputs;
use crate::llm::LlmCall;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::replay::{CaptureStats, Report};
use crate::segment::{SegmentBatch, Timestamp};

/// Batches in flight between the capture and the pipeline.
const QUEUE_BATCHES: usize = 16;
/// How often the pipeline's time-based rules run when traffic is quiet.
const TICK: Duration = Duration::from_millis(250);

pub struct LiveOptions {
    pub mode: CaptureMode,
    pub capture: CaptureConfig,
    pub pipeline: PipelineConfig,
    /// How long the sinks get to deliver what is queued at exit.
    pub flush_timeout: Duration,
}

enum Msg {
    Batch(SegmentBatch),
    /// Wall-clock now (lets idle connections and held data time out without traffic), and the
    /// capture's own counters for the health report.
    Tick(Timestamp, LiveCounters),
}

fn now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64))
}

/// A started live capture, ready to run.
pub struct Live {
    capture: LiveCapture,
    reason: String,
}

impl Live {
    /// Starts the capture (attaches programs or opens interfaces).
    pub fn start(opts: &LiveOptions) -> Result<Live, CaptureError> {
        let (capture, reason) = start_live(opts.mode, &opts.capture)?;
        Ok(Live { capture, reason })
    }

    /// Which backend was chosen, and why (one line).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Runs until `shutdown` completes; every call goes through `outputs`.
    pub async fn run<S>(
        self,
        pipeline: PipelineConfig,
        flush_timeout: Duration,
        outputs: Outputs,
        shutdown: S,
    ) -> Result<Report, CaptureError>
    where
        S: std::future::Future<Output = ()>,
    {
        let Live { mut capture, .. } = self;
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE_BATCHES);
        let worker = std::thread::Builder::new()
            .name("ollama-tracer-pipeline".into())
            .spawn(move || {
                let mut pipeline = Pipeline::new(pipeline);
                let mut outputs = outputs;
                let mut stats = CaptureStats::default();
                let mut last_live = None;
                // Spans written at the last flush: a pipe (`| jq`, a log shipper) gets each
                // tick's spans within a tick, not when a 64 KiB buffer fills or at exit.
                let mut flushed_spans = 0;
                let mut flush_warned = false;
                while let Some(msg) = rx.blocking_recv() {
                    let mut sink = |call: LlmCall| outputs.call(call);
                    match msg {
                        Msg::Batch(batch) => {
                            for seg in batch.iter() {
                                stats.frames += 1;
                                stats.packets += 1;
                                stats.payload_bytes += seg.payload.len() as u64;
                                pipeline.push(&seg, &mut sink);
                            }
                        }
                        Msg::Tick(now, live) => {
                            pipeline.expire(now, &mut sink);
                            let mut capture = stats.clone();
                            capture.kernel_drops = drops(&live);
                            let report = Report {
                                capture,
                                pipeline: pipeline.stats(),
                                spans: outputs.spans(),
                                live: Some(live),
                                export: None,
                            };
                            last_live = report.live.clone();
                            outputs.health(&report);
                            if outputs.spans() != flushed_spans {
                                flushed_spans = outputs.spans();
                                if let Err(e) = outputs.flush()
                                    && !flush_warned
                                {
                                    flush_warned = true;
                                    tracing::warn!(error = %e, "writing spans failed");
                                }
                            }
                        }
                    }
                }
                // The capture is gone: calls still open end here, flagged incomplete.
                pipeline.finish(&mut |call: LlmCall| outputs.call(call));
                // A last snapshot, so the final metrics push has the final counters.
                let mut capture = stats.clone();
                capture.kernel_drops = last_live.as_ref().map_or(0, drops);
                let report = Report {
                    capture,
                    pipeline: pipeline.stats(),
                    spans: outputs.spans(),
                    live: last_live,
                    export: None,
                };
                outputs.health(&report);
                let flushed = outputs.shutdown(flush_timeout);
                (stats, pipeline.stats(), outputs.spans(), flushed, outputs.export_stats())
            })
            .map_err(|e| CaptureError::Config(format!("cannot start the pipeline thread: {e}")))?;

        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = SegmentBatch::default();
        let result = loop {
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                _ = tick.tick() => {
                    if tx.send(Msg::Tick(now(), capture.counters())).await.is_err() {
                        break Ok(());
                    }
                }
                got = capture.next_batch(&mut batch) => {
                    if let Err(e) = got {
                        break Err(e);
                    }
                    let full = std::mem::take(&mut batch);
                    if tx.send(Msg::Batch(full)).await.is_err() {
                        break Ok(());
                    }
                }
            }
        };
        // Counters before detaching, then detach: no programs or links outlive the daemon.
        let counters = capture.counters();
        capture.close();
        drop(tx);
        let (mut stats, pipeline_stats, spans, flushed, export) =
            worker.join().map_err(|_| CaptureError::Config("the pipeline thread panicked".into()))?;
        if let Err(e) = flushed {
            tracing::warn!(error = %e, "writing spans failed");
        }
        stats.kernel_drops = drops(&counters);
        result?;
        Ok(Report { capture: stats, pipeline: pipeline_stats, spans, live: Some(counters), export })
    }
}

/// Packets (records) the capture itself lost.
fn drops(counters: &LiveCounters) -> u64 {
    match counters {
        LiveCounters::Ebpf(k) => k.ringbuf_lost_records,
        LiveCounters::Pcap(p) => p.dropped + p.if_dropped,
    }
}
