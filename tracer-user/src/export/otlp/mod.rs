//! Spans to an OTLP endpoint through the OpenTelemetry SDK's exporter, from a bounded queue.
//!
//! Our spans are not made by the SDK's tracer (their times are capture times, their ids and
//! parents come from the wire), so they are converted to the SDK's `SpanData` here and handed
//! to its `SpanExporter` by our own batching task. The queue is the only buffer: capped in spans
//! and in bytes, the batch being exported included, so a slow or absent collector costs at most
//! the cap. A batch the collector cannot take now is retried with backoff; one that times out
//! is split and sent in smaller requests; a batch it refuses is dropped and counted.
//!
//! Two deliveries ([`Delivery`]). A live capture never waits for the collector: what does not
//! fit the queue is dropped and counted, and the end is bounded by the flush timeout. A replay
//! (as fast as it reads) is an offline job: a full queue makes it wait, the end waits until
//! every span is delivered (or the flush timeout, when one is given), requests are given time
//! (at least [`worker::OFFLINE_MIN_TIMEOUT`], doubled on each timeout), and SIGINT stops it,
//! counting the rest as dropped. Either way `enqueued = exported + rejected + dropped at
//! shutdown (+ queued)`, and `produced = enqueued + dropped because the queue was full`, exactly.

mod convert;
mod queue;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SpanExporter as _;
use tracer_core::span::Resource;
use tracer_core::span::semconv::SemconvMode;
use tracer_core::span::stage::TracedCall;

pub use self::convert::{approx_size, scope, sdk_resource, to_span_data};
use self::queue::Shared;
use self::worker::Worker;
use crate::report::{ExportCounters, ExportStats};
use crate::sink::Sink;
use crate::transport::runtime::ExportRuntime;
use crate::transport::{self, Compression, ExportError, OtlpTarget, Protocol};

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

/// How spans are delivered: as a live daemon must, or as an offline job may.
#[derive(Clone, Debug, Default)]
pub enum Delivery {
    /// Never hold the pipeline: a full queue drops (counted); a bounded end.
    #[default]
    Live,
    /// Wait for room and for the end, until `stop` is set (SIGINT).
    Offline { stop: Arc<AtomicBool> },
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
        delivery: Delivery,
        semconv: SemconvMode,
        resource: &Resource,
        runtime: &ExportRuntime,
    ) -> Result<Self, ExportError> {
        let (offline, cancel) = match delivery {
            Delivery::Live => (false, None),
            Delivery::Offline { stop } => (true, Some(stop)),
        };
        let mut target = target.clone();
        if offline {
            target.timeout = target.timeout.max(worker::OFFLINE_MIN_TIMEOUT);
        }
        let mut exporter = runtime.enter(|| build_exporter(&target))?;
        let resource = Arc::new(resource.clone());
        exporter.set_resource(&sdk_resource(&resource));
        let counters = Arc::new(ExportCounters::default());
        counters.queue_max_spans.store(queue.max_spans as u64, Ordering::Relaxed);
        counters.queue_max_bytes.store(queue.max_bytes as u64, Ordering::Relaxed);
        let shared = Arc::new(Shared::new(queue, counters, cancel));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let worker = Worker {
            shared: shared.clone(),
            exporter,
            resource: resource.clone(),
            scope: scope(semconv),
            target,
            batch_limit: queue.batch_size.max(1),
            successes: 0,
            offline,
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

    /// Whatever is still queued once the worker has stopped: dropped at shutdown, counted.
    fn drop_left(&self) {
        let mut st = self.shared.lock();
        let n = st.queue.len();
        if n > 0 {
            self.shared.counters.dropped_shutdown.fetch_add(n as u64, Ordering::Relaxed);
            let bytes: usize = st.queue.drain(..).map(|q| q.size).sum();
            self.shared.release(&mut st, n, bytes);
        }
    }
}

impl Sink for OtlpTraceSink {
    fn export(&mut self, traced: &TracedCall) {
        if traced.spans.is_empty() {
            return;
        }
        // Consecutive calls under equal resources share one (a batch ends where it changes).
        if *self.resource != *traced.resource {
            self.resource = traced.resource.clone();
        }
        self.shared.enqueue(&traced.spans, &self.resource, approx_size);
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.shared.lock().flush = true;
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Exports everything queued, by `deadline` if there is one; what is left then (or when
    /// offline delivery is stopped) is dropped and counted.
    fn shutdown(&mut self, deadline: Option<Instant>) -> std::io::Result<()> {
        let Some(done) = self.done.take() else { return Ok(()) };
        {
            let mut st = self.shared.lock();
            st.closing = true;
            st.deadline = deadline;
        }
        self.shared.deadline.send_replace(deadline);
        self.shared.wake.notify_one();
        let finished = match deadline {
            // The worker gives up by itself at the deadline; the margin covers its last
            // attempt's own timeout being cut short.
            Some(d) => {
                done.recv_timeout(d.saturating_duration_since(Instant::now()) + Duration::from_millis(500)).is_ok()
            }
            None => loop {
                match done.recv_timeout(Duration::from_millis(100)) {
                    Ok(()) => break true,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break false,
                    // Stopped: the worker gives up its request within moments.
                    Err(_) if self.shared.cancelled() => {
                        break done.recv_timeout(Duration::from_secs(2)).is_ok();
                    }
                    Err(_) => {}
                }
            },
        };
        if finished {
            self.drop_left();
            Ok(())
        } else {
            // Still stuck (a connection that ignores its timeout): count what is left.
            let st = self.shared.lock();
            self.shared.counters.dropped_shutdown.fetch_add(st.spans as u64, Ordering::Relaxed);
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "OTLP span export did not finish in time"))
        }
    }

    fn export_stats(&self) -> Option<ExportStats> {
        Some(self.shared.counters.snapshot())
    }
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
    use tracer_core::span::SpanRecord;

    fn unreachable() -> OtlpTarget {
        OtlpTarget {
            url: "http://127.0.0.1:1/v1/traces".into(),
            protocol: Protocol::HttpProtobuf,
            headers: Vec::new(),
            timeout: Duration::from_millis(200),
            compression: None,
        }
    }

    fn traced(n: usize) -> TracedCall {
        let spans: Vec<SpanRecord> = (0..n).map(|_| convert::tests::span(false, None)).collect();
        let call = tracer_core::llm::LlmCall::for_test(tracer_core::llm::Route::Chat);
        let resource = Arc::new(Resource::new("t", None, Vec::new()));
        TracedCall { call, spans, resource, tools: Vec::new() }
    }

    const SMALL: QueueConfig =
        QueueConfig { max_spans: 3, max_bytes: 1 << 20, batch_size: 2, schedule_delay: Duration::from_millis(10) };

    /// Every span is accounted for: queued or dropped because full, then exported or dropped
    /// at shutdown — here with a collector that refuses connections.
    #[test]
    fn queue_caps_and_shutdown_are_counted_exactly() {
        let rt = ExportRuntime::new().unwrap();
        let resource = Resource::new("t", None, Vec::new());
        let mut sink =
            OtlpTraceSink::start(&unreachable(), SMALL, Delivery::Live, SemconvMode::V1_41, &resource, &rt).unwrap();
        sink.export(&traced(5));
        let s = sink.export_stats().unwrap();
        assert_eq!((s.enqueued, s.dropped_queue_full, s.queue_spans), (3, 2, 3));
        std::thread::sleep(Duration::from_millis(300));
        sink.shutdown(Some(Instant::now() + Duration::from_millis(300))).unwrap();
        let s = sink.export_stats().unwrap();
        assert_eq!(s.exported, 0);
        assert_eq!(s.dropped_shutdown, 3, "{s}");
        assert_eq!(s.dropped(), 5);
        assert!(s.failed_attempts >= 1);
        assert_eq!((s.queue_spans, s.queue_bytes), (0, 0));
    }

    /// Offline, a full queue holds the producer instead of dropping; a stop lets it go, and
    /// what was not delivered is counted as dropped at shutdown, never as a full queue.
    #[test]
    fn offline_delivery_waits_for_room_until_stopped() {
        let rt = ExportRuntime::new().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let resource = Resource::new("t", None, Vec::new());
        let delivery = Delivery::Offline { stop: stop.clone() };
        let mut sink =
            OtlpTraceSink::start(&unreachable(), SMALL, delivery, SemconvMode::V1_41, &resource, &rt).unwrap();
        let counters = sink.counters();
        let producer = std::thread::spawn(move || {
            sink.export(&traced(5));
            sink
        });
        std::thread::sleep(Duration::from_millis(500));
        assert!(!producer.is_finished(), "the producer waits for room");
        assert_eq!(counters.snapshot().dropped_queue_full, 0);
        stop.store(true, Ordering::Relaxed);
        let mut sink = producer.join().unwrap();
        sink.shutdown(None).unwrap();
        let s = sink.export_stats().unwrap();
        assert_eq!((s.enqueued, s.dropped_queue_full, s.exported), (5, 0, 0), "{s}");
        assert_eq!(s.dropped_shutdown, 5, "{s}");
        assert_eq!((s.queue_spans, s.queue_bytes), (0, 0));
    }
}
