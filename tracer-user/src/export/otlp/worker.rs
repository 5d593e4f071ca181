//! The export task: takes batches from the queue and sends them, retrying what the collector
//! cannot take now, shrinking batches that time out, until shutdown's deadline (if any).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tracer_core::span::Resource;

use super::queue::{Queued, Shared, State};
use super::{build_exporter, sdk_resource, to_span_data};
use crate::transport::{self, Failure, OtlpTarget};

/// First wait after a failed export; doubled up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between two attempts: how late export resumes after the collector is back.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Offline delivery: the shortest a request is given. A timed-out request may still have been
/// taken (the collector goes on with it), and sending it again would duplicate its spans: an
/// offline job waits for the answer rather than retry early.
pub(super) const OFFLINE_MIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Offline delivery: the longest a request is given, after doubling on each timeout.
const OFFLINE_MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Successful requests in a row before a shrunk batch size doubles again: a collector that
/// just timed out is not tried with the size it failed at on the very next request.
const GROW_AFTER: u32 = 4;
/// How often a long end-of-run flush reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub(super) struct Worker {
    pub shared: Arc<Shared>,
    pub exporter: opentelemetry_otlp::SpanExporter,
    /// The resource the exporter is set to.
    pub resource: Arc<Resource>,
    pub scope: InstrumentationScope,
    /// The target, with the request timeout in use (offline delivery lengthens it).
    pub target: OtlpTarget,
    /// Spans per request now: halved when a request times out, doubled back (up to the
    /// configured batch size) after [`GROW_AFTER`] successes in a row.
    pub batch_limit: usize,
    /// Successes since the batch size last changed.
    pub successes: u32,
    pub offline: bool,
}

enum Outcome {
    Exported,
    Rejected(String),
    Shutdown,
}

impl Worker {
    pub async fn run(mut self) {
        let mut failing_since: Option<(Instant, u64)> = None;
        let mut deadline_rx = self.shared.deadline.subscribe();
        let mut progress: Option<Instant> = None;
        loop {
            let Some(mut batch) = self.next_batch().await else { return };
            if self.shared.lock().closing {
                self.report_progress(&mut progress, batch.len());
            }
            if !Arc::ptr_eq(&batch[0].resource, &self.resource) {
                self.resource = batch[0].resource.clone();
                self.exporter.set_resource(&sdk_resource(&self.resource));
            }
            let mut backoff = INITIAL_BACKOFF;
            let outcome = loop {
                let data: Vec<SpanData> = batch.iter().map(|q| to_span_data(&q.span, &self.scope)).collect();
                let started = Instant::now();
                // The exporter has its own timeout; this one guards a transport that hangs. At
                // the shutdown deadline an export still in flight is given up: its spans count
                // as dropped at shutdown (the collector may still have taken them).
                let guard = self.target.timeout + Duration::from_secs(1);
                let result = tokio::select! {
                    r = tokio::time::timeout(guard, self.exporter.export(data)) => r,
                    _ = deadline_passed(&mut deadline_rx) => break Outcome::Shutdown,
                    _ = cancelled(&self.shared) => break Outcome::Shutdown,
                };
                let failure = match result {
                    Ok(Ok(())) => break Outcome::Exported,
                    Ok(Err(e)) => {
                        let msg = e.to_string();
                        (transport::classify(&msg), msg)
                    }
                    Err(_) => (Failure::Retry, "timed out".to_string()),
                };
                self.shared.counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
                // Whatever the transport called it, an attempt that ran to the timeout timed out.
                let timed_out = started.elapsed() >= self.target.timeout.mul_f64(0.9);
                match failure {
                    (Failure::Rejected, msg) if !timed_out => break Outcome::Rejected(msg),
                    (_, msg) => {
                        if failing_since.is_none() {
                            tracing::warn!(endpoint = %self.target.url, error = %msg, "OTLP span export failing; retrying with backoff (spans that do not fit the queue are dropped and counted)");
                            failing_since =
                                Some((Instant::now(), self.shared.counters.dropped_queue_full.load(Ordering::Relaxed)));
                        }
                    }
                }
                if timed_out {
                    self.shared.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    self.shrink(&mut batch);
                    // The collector was busy all along: try the smaller batch at once.
                    continue;
                }
                let deadline = self.shared.lock().deadline;
                let mut sleep = backoff;
                if let Some(d) = deadline {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break Outcome::Shutdown;
                    }
                    sleep = sleep.min(left);
                }
                if self.shared.cancelled() {
                    break Outcome::Shutdown;
                }
                let notified = self.shared.wake.notified();
                // Shutdown wakes us early: it shortens the wait to its deadline.
                let _ = tokio::time::timeout(sleep, notified).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            };
            let n = batch.len() as u64;
            let bytes: usize = batch.iter().map(|q| q.size).sum();
            match &outcome {
                Outcome::Exported => {
                    self.shared.counters.exported.fetch_add(n, Ordering::Relaxed);
                    self.successes += 1;
                    if self.successes >= GROW_AFTER && self.batch_limit < self.shared.config.batch_size {
                        self.batch_limit = (self.batch_limit * 2).min(self.shared.config.batch_size);
                        self.successes = 0;
                    }
                    if let Some((since, drops)) = failing_since.take() {
                        let dropped = self.shared.counters.dropped_queue_full.load(Ordering::Relaxed) - drops;
                        tracing::info!(endpoint = %self.target.url, after = ?since.elapsed(), dropped, "OTLP span export resumed");
                    }
                }
                Outcome::Rejected(msg) => {
                    self.shared.counters.rejected.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(endpoint = %self.target.url, error = %msg, spans = n, "the OTLP endpoint refused spans; dropped");
                }
                Outcome::Shutdown => {
                    self.shared.counters.dropped_shutdown.fetch_add(n, Ordering::Relaxed);
                }
            }
            let mut st = self.shared.lock();
            self.shared.release(&mut st, batch.len(), bytes);
            if matches!(outcome, Outcome::Shutdown) {
                return self.finish(&mut st);
            }
        }
    }

    /// Waits for a full batch, the schedule delay, a flush or shutdown; `None` when shut down
    /// with nothing left.
    async fn next_batch(&mut self) -> Option<Vec<Queued>> {
        let cfg = self.shared.config;
        loop {
            let notified = self.shared.wake.notified();
            let wait = {
                let mut st = self.shared.lock();
                let due = st.oldest.is_some_and(|t| t.elapsed() >= cfg.schedule_delay);
                if st.closing && (st.queue.is_empty() || self.shared.cancelled()) {
                    self.finish(&mut st);
                    return None;
                }
                let limit = self.batch_limit;
                if !st.queue.is_empty() && (st.queue.len() >= limit || due || st.flush || st.closing) {
                    // One resource per export request: a batch ends where the resource
                    // changes (rare: a node runs few server workloads).
                    let first = st.queue[0].resource.clone();
                    let n = st.queue.iter().take(limit).take_while(|q| Arc::ptr_eq(&q.resource, &first)).count();
                    let batch: Vec<Queued> = st.queue.drain(..n).collect();
                    if st.queue.is_empty() {
                        st.oldest = None;
                        st.flush = false;
                    } else {
                        // The rest waits from now, not from when the first span came.
                        st.oldest = Some(Instant::now());
                    }
                    return Some(batch);
                }
                st.flush = false;
                st.oldest.map_or(cfg.schedule_delay, |t| cfg.schedule_delay.saturating_sub(t.elapsed()))
            };
            let _ = tokio::time::timeout(wait.max(Duration::from_millis(1)), notified).await;
        }
    }

    /// After a timeout: the batch's second half goes back to the queue's front, later
    /// requests carry at most half as many spans; offline, requests get twice the time.
    fn shrink(&mut self, batch: &mut Vec<Queued>) {
        let half = batch.len().div_ceil(2).max(1);
        self.batch_limit = half.min(self.batch_limit);
        self.successes = 0;
        if batch.len() > half {
            let rest = batch.split_off(half);
            let mut st = self.shared.lock();
            for q in rest.into_iter().rev() {
                st.queue.push_front(q);
            }
            st.oldest.get_or_insert_with(Instant::now);
        }
        if self.offline && self.target.timeout < OFFLINE_MAX_TIMEOUT {
            let mut target = self.target.clone();
            target.timeout = (target.timeout * 2).min(OFFLINE_MAX_TIMEOUT);
            match build_exporter(&target) {
                Ok(mut exporter) => {
                    exporter.set_resource(&sdk_resource(&self.resource));
                    let _ = self.exporter.shutdown();
                    self.exporter = exporter;
                    self.target = target;
                }
                Err(e) => tracing::warn!(endpoint = %self.target.url, error = %e, "cannot lengthen the OTLP timeout"),
            }
        }
        tracing::warn!(
            endpoint = %self.target.url,
            spans_per_request = self.batch_limit,
            timeout = ?self.target.timeout,
            "the collector is slow: OTLP requests timed out; sending smaller batches"
        );
    }

    /// A long end-of-run flush says how it goes, every few seconds.
    fn report_progress(&self, last: &mut Option<Instant>, in_flight: usize) {
        let now = Instant::now();
        match last {
            None => *last = Some(now),
            Some(t) if now.duration_since(*t) >= PROGRESS_EVERY => {
                *last = Some(now);
                let left = self.shared.lock().spans.max(in_flight);
                let c = &self.shared.counters;
                tracing::info!(
                    endpoint = %self.target.url,
                    left,
                    exported = c.exported.load(Ordering::Relaxed),
                    failed_attempts = c.failed_attempts.load(Ordering::Relaxed),
                    "flushing spans to the collector (Ctrl-C stops, counting the rest as dropped)"
                );
            }
            Some(_) => {}
        }
    }

    /// At shutdown: whatever is still queued is lost, counted, and the queue is empty.
    fn finish(&self, st: &mut State) {
        if !st.queue.is_empty() {
            let n = st.queue.len();
            self.shared.counters.dropped_shutdown.fetch_add(n as u64, Ordering::Relaxed);
            let why = if self.shared.cancelled() { "the run was stopped" } else { "the shutdown deadline passed" };
            tracing::warn!(spans = n, "OTLP spans still queued were dropped: {why}");
            let bytes: usize = st.queue.drain(..).map(|q| q.size).sum();
            self.shared.release(st, n, bytes);
        }
        let _ = self.exporter.shutdown();
    }
}

/// Resolves once a shutdown deadline is set and has passed.
async fn deadline_passed(rx: &mut tokio::sync::watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *rx.borrow_and_update();
        match deadline {
            Some(d) => return tokio::time::sleep_until(d.into()).await,
            None => {
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}

/// Resolves once offline delivery is stopped (SIGINT); never for live delivery.
async fn cancelled(shared: &Shared) {
    if shared.cancel.is_none() {
        return std::future::pending().await;
    }
    while !shared.cancelled() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
