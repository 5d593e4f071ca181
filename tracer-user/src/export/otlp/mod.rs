//! Spans to an OTLP endpoint through the OpenTelemetry SDK's exporter, from a bounded queue.
//!
//! Our spans are not made by the SDK's tracer (their times are capture times, their ids and
//! parents come from the wire), so they are converted to the SDK's `SpanData` here and handed
//! to its `SpanExporter` by our own batching task. The queue is the only buffer: capped in spans
//! and in bytes, the batch being exported included, so a slow or absent collector costs at most
//! the cap. What does not fit is dropped and counted; a batch the collector cannot take now is
//! retried with backoff until it can (or until shutdown's deadline); a batch it refuses is
//! dropped and counted. `enqueued = exported + rejected + dropped at shutdown (+ queued)`, and
//! `produced = enqueued + dropped because the queue was full`, exactly.

mod convert;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::sync::Notify;
use tracer_core::span::stage::TracedCall;
use tracer_core::span::{Resource, SpanRecord};

pub use self::convert::{approx_size, scope, sdk_resource, to_span_data};

use crate::report::{ExportCounters, ExportStats};
use crate::sink::Sink;
use crate::transport::runtime::ExportRuntime;
use crate::transport::{self, Compression, ExportError, Failure, OtlpTarget, Protocol};

/// First wait after a failed export; doubled up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between two attempts: how late export resumes after the collector is back.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The span export queue: the only buffer between the pipeline and a collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// Most spans queued (in-flight batch included); more are dropped and counted.
    pub max_spans: usize,
    /// Most bytes queued (approximate in-memory size of the queued spans, in-flight included).
    pub max_bytes: usize,
    /// Spans per export request.
    pub batch_size: usize,
    /// Longest a span waits for its batch to fill.
    pub schedule_delay: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_spans: 2048,
            max_bytes: 16 << 20,
            batch_size: 512,
            schedule_delay: Duration::from_millis(1000),
        }
    }
}

/// A queued span: its size estimate and the resource it is reported under.
struct Queued {
    span: SpanRecord,
    size: usize,
    resource: Arc<Resource>,
}

struct State {
    queue: VecDeque<Queued>,
    /// Spans and bytes of the queue plus the batch in flight.
    spans: usize,
    bytes: usize,
    /// When the oldest queued span arrived.
    oldest: Option<Instant>,
    flush: bool,
    /// Set by shutdown: export everything now, give up at the deadline.
    deadline: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    /// The shutdown deadline, for cutting short an export still in flight when it passes.
    deadline: tokio::sync::watch::Sender<Option<Instant>>,
    counters: Arc<ExportCounters>,
    config: QueueConfig,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, st: &State) {
        self.counters.queue_spans.store(st.spans as u64, Ordering::Relaxed);
        self.counters.queue_bytes.store(st.bytes as u64, Ordering::Relaxed);
    }
}

/// The OTLP span sink.
pub struct OtlpTraceSink {
    shared: Arc<Shared>,
    /// The resource of the last call, shared by the spans of every call under it (in
    /// Kubernetes each server workload names its own service: see crate::attribution).
    resource: Arc<Resource>,
    done: Option<std::sync::mpsc::Receiver<()>>,
    _runtime: ExportRuntime,
}

impl OtlpTraceSink {
    /// Builds the exporter for `target` and starts its task on `runtime`.
    pub fn start(
        target: &OtlpTarget,
        queue: QueueConfig,
        resource: &Resource,
        runtime: &ExportRuntime,
    ) -> Result<Self, ExportError> {
        let mut exporter = runtime.enter(|| build_exporter(target))?;
        let resource = Arc::new(resource.clone());
        exporter.set_resource(&sdk_resource(&resource));
        let counters = Arc::new(ExportCounters::default());
        counters.queue_max_spans.store(queue.max_spans as u64, Ordering::Relaxed);
        counters.queue_max_bytes.store(queue.max_bytes as u64, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                spans: 0,
                bytes: 0,
                oldest: None,
                flush: false,
                deadline: None,
            }),
            wake: Notify::new(),
            deadline: tokio::sync::watch::Sender::new(None),
            counters,
            config: queue,
        });
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let worker = Worker {
            shared: shared.clone(),
            exporter,
            resource: resource.clone(),
            timeout: target.timeout,
            url: target.url.clone(),
        };
        runtime.spawn(async move {
            worker.run().await;
            let _ = done_tx.send(());
        });
        Ok(OtlpTraceSink { shared, resource, done: Some(done_rx), _runtime: runtime.clone() })
    }

    pub fn counters(&self) -> Arc<ExportCounters> {
        self.shared.counters.clone()
    }
}

impl Sink for OtlpTraceSink {
    fn export(&mut self, traced: &TracedCall) {
        let spans = &traced.spans;
        if spans.is_empty() {
            return;
        }
        // Consecutive calls under equal resources share one (a batch ends where it changes).
        if *self.resource != *traced.resource {
            self.resource = traced.resource.clone();
        }
        let cfg = self.shared.config;
        let mut st = self.shared.lock();
        let mut wake = false;
        for span in spans {
            let size = approx_size(span);
            if st.spans + 1 > cfg.max_spans || st.bytes + size > cfg.max_bytes {
                self.shared.counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            st.queue.push_back(Queued { span: span.clone(), size, resource: self.resource.clone() });
            st.spans += 1;
            st.bytes += size;
            st.oldest.get_or_insert_with(Instant::now);
            self.shared.counters.enqueued.fetch_add(1, Ordering::Relaxed);
            wake |= st.queue.len() >= cfg.batch_size;
        }
        self.shared.publish(&st);
        drop(st);
        if wake {
            self.shared.wake.notify_one();
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.shared.lock().flush = true;
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Exports everything queued within `timeout`; what is left then is dropped and counted.
    fn shutdown(&mut self, timeout: Duration) -> std::io::Result<()> {
        let Some(done) = self.done.take() else { return Ok(()) };
        let deadline = Instant::now() + timeout;
        self.shared.lock().deadline = Some(deadline);
        self.shared.deadline.send_replace(Some(deadline));
        self.shared.wake.notify_one();
        // The worker gives up by itself at the deadline; the margin covers its last attempt's
        // own timeout being cut short.
        match done.recv_timeout(timeout + Duration::from_millis(500)) {
            Ok(()) => Ok(()),
            Err(_) => {
                // Still stuck (a connection that ignores its timeout): count what is left.
                let st = self.shared.lock();
                self.shared.counters.dropped_shutdown.fetch_add(st.spans as u64, Ordering::Relaxed);
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "OTLP span export did not finish in time"))
            }
        }
    }

    fn export_stats(&self) -> Option<ExportStats> {
        Some(self.shared.counters.snapshot())
    }
}

struct Worker {
    shared: Arc<Shared>,
    exporter: opentelemetry_otlp::SpanExporter,
    /// The resource the exporter is set to.
    resource: Arc<Resource>,
    timeout: Duration,
    url: String,
}

impl Worker {
    async fn run(mut self) {
        let cfg = self.shared.config;
        let mut failing_since: Option<(Instant, u64)> = None;
        let mut deadline_rx = self.shared.deadline.subscribe();
        loop {
            // Wait for a full batch, the schedule delay, a flush or shutdown.
            let batch = loop {
                let notified = self.shared.wake.notified();
                let wait = {
                    let mut st = self.shared.lock();
                    let due = st.oldest.is_some_and(|t| t.elapsed() >= cfg.schedule_delay);
                    if st.deadline.is_some() && st.queue.is_empty() {
                        return self.finish(&mut st);
                    }
                    if !st.queue.is_empty()
                        && (st.queue.len() >= cfg.batch_size || due || st.flush || st.deadline.is_some())
                    {
                        // One resource per export request: a batch ends where the resource
                        // changes (rare: a node runs few server workloads).
                        let first = st.queue[0].resource.clone();
                        let n = st
                            .queue
                            .iter()
                            .take(cfg.batch_size)
                            .take_while(|q| Arc::ptr_eq(&q.resource, &first))
                            .count();
                        let batch: Vec<Queued> = st.queue.drain(..n).collect();
                        if st.queue.is_empty() {
                            st.oldest = None;
                            st.flush = false;
                        } else {
                            // The rest waits from now, not from when the first span came.
                            st.oldest = Some(Instant::now());
                        }
                        break batch;
                    }
                    st.flush = false;
                    st.oldest.map_or(cfg.schedule_delay, |t| cfg.schedule_delay.saturating_sub(t.elapsed()))
                };
                let _ = tokio::time::timeout(wait.max(Duration::from_millis(1)), notified).await;
            };
            let n = batch.len() as u64;
            let bytes: usize = batch.iter().map(|q| q.size).sum();
            if !Arc::ptr_eq(&batch[0].resource, &self.resource) {
                self.resource = batch[0].resource.clone();
                self.exporter.set_resource(&sdk_resource(&self.resource));
            }
            let mut backoff = INITIAL_BACKOFF;
            let outcome = loop {
                let data: Vec<SpanData> = batch.iter().map(|q| to_span_data(&q.span)).collect();
                // The exporter has its own timeout; this one guards a transport that hangs. At
                // the shutdown deadline an export still in flight is given up: its spans count
                // as dropped at shutdown (the collector may still have taken them).
                let result = tokio::select! {
                    r = tokio::time::timeout(self.timeout + Duration::from_secs(1), self.exporter.export(data)) => r,
                    _ = deadline_passed(&mut deadline_rx) => break Outcome::Shutdown,
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
                match failure {
                    (Failure::Rejected, msg) => break Outcome::Rejected(msg),
                    (Failure::Retry, msg) => {
                        if failing_since.is_none() {
                            tracing::warn!(endpoint = %self.url, error = %msg, "OTLP span export failing; retrying with backoff (spans that do not fit the queue are dropped and counted)");
                            failing_since =
                                Some((Instant::now(), self.shared.counters.dropped_queue_full.load(Ordering::Relaxed)));
                        }
                    }
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
                let notified = self.shared.wake.notified();
                // Shutdown wakes us early: it shortens the wait to its deadline.
                let _ = tokio::time::timeout(sleep, notified).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            };
            match &outcome {
                Outcome::Exported => {
                    self.shared.counters.exported.fetch_add(n, Ordering::Relaxed);
                    if let Some((since, drops)) = failing_since.take() {
                        let dropped = self.shared.counters.dropped_queue_full.load(Ordering::Relaxed) - drops;
                        tracing::info!(endpoint = %self.url, after = ?since.elapsed(), dropped, "OTLP span export resumed");
                    }
                }
                Outcome::Rejected(msg) => {
                    self.shared.counters.rejected.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(endpoint = %self.url, error = %msg, spans = n, "the OTLP endpoint refused spans; dropped");
                }
                Outcome::Shutdown => {
                    self.shared.counters.dropped_shutdown.fetch_add(n, Ordering::Relaxed);
                }
            }
            let mut st = self.shared.lock();
            st.spans -= batch.len();
            st.bytes -= bytes;
            self.shared.publish(&st);
            if matches!(outcome, Outcome::Shutdown) {
                return self.finish(&mut st);
            }
        }
    }

    /// At shutdown: whatever is still queued is lost, counted, and the queue is empty.
    fn finish(&self, st: &mut State) {
        if !st.queue.is_empty() {
            let n = st.queue.len();
            self.shared.counters.dropped_shutdown.fetch_add(n as u64, Ordering::Relaxed);
            tracing::warn!(spans = n, "OTLP spans still queued at the shutdown deadline were dropped");
            let bytes: usize = st.queue.drain(..).map(|q| q.size).sum();
            st.spans -= n;
            st.bytes -= bytes;
            self.shared.publish(st);
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

enum Outcome {
    Exported,
    Rejected(String),
    Shutdown,
}

fn build_exporter(target: &OtlpTarget) -> Result<opentelemetry_otlp::SpanExporter, ExportError> {
    let build = |e: opentelemetry_otlp::ExporterBuildError| ExportError::Build(e.to_string());
    // Retries are ours (the queue decides what waits); the SDK makes one attempt per call.
    let policy = RetryPolicy::disabled();
    match target.protocol {
        Protocol::Grpc => {
            let channel = transport::grpc_channel(target)?;
            let metadata = transport::grpc_metadata(target);
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_channel(channel)
                .with_timeout(target.timeout)
                .with_retry_policy(policy)
                // Our headers last: the SDK adds OTEL_EXPORTER_OTLP_*HEADERS before this runs.
                .with_interceptor(move |mut req: tonic::Request<()>| {
                    for kv in metadata.iter() {
                        if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
                            req.metadata_mut().insert(k.clone(), v.clone());
                        }
                    }
                    Ok(req)
                });
            if let Some(Compression::Gzip) = target.compression {
                b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            b.build().map_err(build)
        }
        Protocol::HttpProtobuf | Protocol::HttpJson => {
            let protocol = if target.protocol == Protocol::HttpJson {
                opentelemetry_otlp::Protocol::HttpJson
            } else {
                opentelemetry_otlp::Protocol::HttpBinary
            };
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(transport::http_client(target)?)
                .with_endpoint(target.url.clone())
                .with_protocol(protocol)
                .with_timeout(target.timeout)
                .with_retry_policy(policy);
            if let Some(Compression::Gzip) = target.compression {
                b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            b.build().map_err(build)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::OtlpTarget;

    /// Every span is accounted for: queued or dropped because full, then exported or dropped
    /// at shutdown — here with a collector that refuses connections.
    #[test]
    fn queue_caps_and_shutdown_are_counted_exactly() {
        let target = OtlpTarget {
            url: "http://127.0.0.1:1/v1/traces".into(),
            protocol: Protocol::HttpProtobuf,
            headers: Vec::new(),
            timeout: Duration::from_millis(200),
            compression: None,
        };
        let queue =
            QueueConfig { max_spans: 3, max_bytes: 1 << 20, batch_size: 2, schedule_delay: Duration::from_millis(10) };
        let rt = ExportRuntime::new().unwrap();
        let mut sink = OtlpTraceSink::start(&target, queue, &Resource::new("t", None, Vec::new()), &rt).unwrap();
        let spans: Vec<SpanRecord> = (0..5).map(|_| convert::tests::span(false, None)).collect();
        let call = tracer_core::llm::LlmCall::for_test(tracer_core::llm::Route::Chat);
        let resource = std::sync::Arc::new(Resource::new("t", None, Vec::new()));
        sink.export(&TracedCall { call, spans, resource });
        let s = sink.export_stats().unwrap();
        assert_eq!((s.enqueued, s.dropped_queue_full, s.queue_spans), (3, 2, 3));
        std::thread::sleep(Duration::from_millis(300));
        sink.shutdown(Duration::from_millis(300)).unwrap();
        let s = sink.export_stats().unwrap();
        assert_eq!(s.exported, 0);
        assert_eq!(s.dropped_shutdown, 3, "{s}");
        assert_eq!(s.dropped(), 5);
        assert!(s.failed_attempts >= 1);
        assert_eq!((s.queue_spans, s.queue_bytes), (0, 0));
    }
}
