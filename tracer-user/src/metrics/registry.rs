//! The aggregation: every series of every metric, cumulative since start, fed by each call
//! (before sampling) and each health report, read by the Prometheus endpoint and the OTLP push.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tracer_core::llm::call::ChunkGaps;
use tracer_core::llm::{ErrorKind, Incomplete, LlmCall, Operation};
use tracer_core::segment::display_ip;
use tracer_core::span::semconv as sc;

use super::catalog::*;
use crate::report::{ExportCounters, ExportStats, Report};

/// A histogram with explicit bounds: one count per bucket plus the overflow bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
    /// Known only when every observation was recorded singly.
    pub min_max: Option<(f64, f64)>,
    singles_only: bool,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Histogram { counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0, min_max: None, singles_only: true }
    }

    /// A value lands in the first bucket whose upper bound it does not exceed (`le`).
    fn record(&mut self, bounds: &[f64], v: f64) {
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
        if self.singles_only {
            self.min_max = Some(match self.min_max {
                Some((lo, hi)) => (lo.min(v), hi.max(v)),
                None => (v, v),
            });
        }
    }

    /// Adds pre-binned observations with the same bounds.
    fn merge(&mut self, counts: &[u64], sum: f64, count: u64) {
        for (c, n) in self.counts.iter_mut().zip(counts) {
            *c += n;
        }
        self.sum += sum;
        self.count += count;
        self.singles_only = false;
        self.min_max = None;
    }
}

/// Every series of every metric, cumulative since `start`.
pub struct Registry {
    pub start: SystemTime,
    histograms: Vec<BTreeMap<Attrs, Histogram>>,
    health: Option<Report>,
    traces: Option<Arc<ExportCounters>>,
    /// Failed OTLP metrics pushes.
    pub metrics_failures: Arc<AtomicU64>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// One series of one health metric.
pub struct HealthPoint {
    pub attrs: Attrs,
    pub value: u64,
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            start: SystemTime::now(),
            histograms: HISTOGRAMS.iter().map(|_| BTreeMap::new()).collect(),
            health: None,
            traces: None,
            metrics_failures: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Reads the span export queue's counters from here on.
    pub fn watch_traces(&mut self, counters: Arc<ExportCounters>) {
        self.traces = Some(counters);
    }

    fn series(&mut self, h: usize, attrs: Attrs) -> &mut Histogram {
        let bounds = HISTOGRAMS[h].bounds;
        let map = &mut self.histograms[h];
        let attrs = if map.len() >= MAX_SERIES && !map.contains_key(&attrs) {
            vec![(OVERFLOW_ATTR, Attr::Bool(true))]
        } else {
            attrs
        };
        map.entry(attrs).or_insert_with(|| Histogram::new(bounds))
    }

    fn observe(&mut self, h: usize, attrs: Attrs, v: f64) {
        if v.is_finite() && v >= 0.0 {
            let bounds = HISTOGRAMS[h].bounds;
            self.series(h, attrs).record(bounds, v);
        }
    }

    /// Records one completed call.
    pub fn record_call(&mut self, call: &LlmCall) {
        // A call cut off by the end of the capture, or whose last byte the capture missed, has
        // no true end: no duration is recorded for it (its tokens, if reported, still count).
        let ended = !call.incomplete.contains(&Incomplete::CaptureEnded) && !call.times.end_lost;
        let secs = |ns: u64| ns as f64 / 1e9;
        let duration = secs(call.times.end.since(call.times.request_start).max(0) as u64);

        if ended {
            let mut a: Attrs = vec![(sc::HTTP_REQUEST_METHOD, Attr::Str(http_method(&call.method).to_string()))];
            if let Some(s) = call.status {
                a.push((sc::HTTP_RESPONSE_STATUS_CODE, Attr::Int(s as i64)));
            }
            if let Some(route) = call.route.template() {
                a.push((sc::HTTP_ROUTE, Attr::Str(route.to_string())));
            }
            a.push((sc::URL_SCHEME, Attr::Str("http".into())));
            // HTTP server conventions: only 5xx (or no response at all) is the server's error.
            if let Some(err) = &call.error
                && !matches!(err.kind, ErrorKind::Http(s) if s < 500)
            {
                a.push((sc::ERROR_TYPE, Attr::Str(err.kind.error_type())));
            }
            self.observe(H_HTTP, a, duration);
        }

        let Some(op) = call.operation() else { return };
        let resp = &call.response;
        let mut base: Attrs = vec![
            (sc::GEN_AI_OPERATION_NAME, Attr::Str(op.as_str().into())),
            (sc::GEN_AI_PROVIDER_NAME, Attr::Str(sc::PROVIDER_OLLAMA.into())),
        ];
        if let Some(m) = &call.request.model {
            base.push((sc::GEN_AI_REQUEST_MODEL, Attr::Str(m.clone())));
        }
        if let Some(m) = resp.model.as_ref().filter(|m| !m.is_empty()) {
            base.push((sc::GEN_AI_RESPONSE_MODEL, Attr::Str(m.clone())));
        }
        base.push((sc::SERVER_ADDRESS, Attr::Str(display_ip(call.flow.server.ip()))));
        base.push((sc::SERVER_PORT, Attr::Int(call.flow.server.port() as i64)));
        let with_error = |base: &Attrs| {
            let mut a = base.clone();
            if let Some(err) = &call.error {
                a.push((sc::ERROR_TYPE, Attr::Str(err.kind.error_type())));
            }
            a
        };

        if ended {
            self.observe(H_DURATION, with_error(&base), duration);
        }
        for (tokens, kind) in [(resp.input_tokens, sc::TOKEN_TYPE_INPUT), (resp.output_tokens, sc::TOKEN_TYPE_OUTPUT)] {
            if let Some(n) = tokens {
                let mut a = base.clone();
                a.push((sc::GEN_AI_TOKEN_TYPE, Attr::Str(kind.into())));
                self.observe(H_TOKENS, a, n as f64);
            }
        }
        if resp.streamed {
            if let Some(t) = call.time_to_first_chunk() {
                self.observe(H_TTFC, base.clone(), t);
            }
            let gaps: &ChunkGaps = &call.times.chunk_gaps;
            if gaps.count > 0 {
                self.series(H_TPOC, base.clone()).merge(&gaps.counts, gaps.sum_secs, gaps.count);
            }
        }
        let o = &resp.ollama;
        if let Some(total) = o.total_duration {
            self.observe(H_SERVER_DURATION, with_error(&base), secs(total));
            // Ollama omits zero durations from its final chunk: absent means 0 there. Only
            // generating operations have a first token.
            if op != Operation::Embeddings && o.eval_count.is_some_and(|n| n > 0) {
                let prefill = o.load_duration.unwrap_or(0) + o.prompt_eval_duration.unwrap_or(0);
                self.observe(H_SERVER_TTFT, base.clone(), secs(prefill));
            }
        }
        if let (Some(d), Some(n)) = (o.eval_duration, o.eval_count)
            && n > 0
        {
            self.observe(H_SERVER_TPOT, base, secs(d) / n as f64);
        }
    }

    /// The latest health snapshot.
    pub fn set_health(&mut self, report: &Report) {
        self.health = Some(report.clone());
    }

    /// Each histogram with its series.
    pub fn histograms(&self) -> impl Iterator<Item = (&'static Desc, &BTreeMap<Attrs, Histogram>)> {
        HISTOGRAMS.iter().zip(self.histograms.iter())
    }

    /// Each health metric with its series (empty before the first snapshot).
    pub fn health(&self) -> Vec<(&'static Desc, Vec<HealthPoint>)> {
        let one = |v: u64| vec![HealthPoint { attrs: Vec::new(), value: v }];
        let r = self.health.clone().unwrap_or_default();
        let export: Option<ExportStats> = self.traces.as_ref().map(|t| t.snapshot());
        let failures = self.metrics_failures.load(Ordering::Relaxed);
        let mut out = Vec::new();
        for desc in HEALTH.iter() {
            let points = match desc.name {
                sc::METRIC_TRACER_PACKETS => one(r.capture.packets),
                sc::METRIC_TRACER_BYTES => one(r.capture.payload_bytes),
                sc::METRIC_TRACER_KERNEL_DROPS => one(r.capture.kernel_drops),
                sc::METRIC_TRACER_MALFORMED => one(r.capture.malformed),
                sc::METRIC_TRACER_CONNECTIONS => one(r.pipeline.reassembly.connections),
                sc::METRIC_TRACER_GAPS => one(r.pipeline.reassembly.gaps),
                sc::METRIC_TRACER_GAP_BYTES => one(r.pipeline.reassembly.gap_bytes),
                sc::METRIC_TRACER_PARSE_ERRORS => one(r.pipeline.http.parse_errors),
                sc::METRIC_TRACER_CALLS => one(r.pipeline.llm.calls),
                sc::METRIC_TRACER_INCOMPLETE => one(r.pipeline.llm.incomplete),
                sc::METRIC_TRACER_SPANS => one(r.spans),
                sc::METRIC_TRACER_QUEUE_SPANS => match export {
                    Some(e) => one(e.queue_spans),
                    None => continue,
                },
                sc::METRIC_TRACER_QUEUE_BYTES => match export {
                    Some(e) => one(e.queue_bytes),
                    None => continue,
                },
                sc::METRIC_TRACER_EXPORTED => match export {
                    Some(e) => one(e.exported),
                    None => continue,
                },
                sc::METRIC_TRACER_EXPORT_DROPPED => match export {
                    Some(e) => [
                        ("queue_full", e.dropped_queue_full),
                        ("rejected", e.rejected),
                        ("shutdown", e.dropped_shutdown),
                    ]
                    .into_iter()
                    .map(|(reason, v)| HealthPoint {
                        attrs: vec![(sc::TRACER_DROP_REASON, Attr::Str(reason.into()))],
                        value: v,
                    })
                    .collect(),
                    None => continue,
                },
                sc::METRIC_TRACER_EXPORT_FAILURES => {
                    let mut v = vec![HealthPoint {
                        attrs: vec![(sc::TRACER_SIGNAL, Attr::Str("metrics".into()))],
                        value: failures,
                    }];
                    if let Some(e) = export {
                        v.insert(
                            0,
                            HealthPoint {
                                attrs: vec![(sc::TRACER_SIGNAL, Attr::Str("traces".into()))],
                                value: e.failed_attempts,
                            },
                        );
                    }
                    v
                }
                sc::METRIC_TRACER_LIMIT_OVERFLOWS => {
                    let (re, h) = (&r.pipeline.reassembly, &r.pipeline.http);
                    let values = [
                        re.evicted,
                        re.buffer_overflows,
                        h.head_evictions,
                        h.stale_heads,
                        h.pending_overflows,
                        r.pipeline.llm.evicted,
                    ];
                    sc::TRACER_LIMITS
                        .iter()
                        .zip(values)
                        .map(|(limit, value)| HealthPoint {
                            attrs: vec![(sc::TRACER_LIMIT, Attr::Str((*limit).into()))],
                            value,
                        })
                        .collect()
                }
                _ => continue,
            };
            out.push((desc, points));
        }
        out
    }
}

/// `http.request.method`: the known methods as sent, anything else `_OTHER` (bounded cardinality).
fn http_method(m: &str) -> &str {
    match m {
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH" => m,
        _ => sc::HTTP_METHOD_OTHER,
    }
}

/// The registry, shared by the pipeline (writes) and the readers (Prometheus, OTLP push).
#[derive(Clone, Default)]
pub struct SharedRegistry(Arc<Mutex<Registry>>);

impl SharedRegistry {
    pub fn lock(&self) -> MutexGuard<'_, Registry> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_on_a_bound_belongs_to_that_bucket() {
        let mut h = Histogram::new(&DURATION_BUCKETS);
        for v in [0.0, 0.01, 0.010_000_1, 81.92, 100.0] {
            h.record(&DURATION_BUCKETS, v);
        }
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[13], 1);
        assert_eq!(h.counts[14], 1, "overflow bucket");
        assert_eq!((h.count, h.min_max), (5, Some((0.0, 100.0))));
        // Pre-binned observations keep counts and sum exact, and make min/max unknown.
        let mut gaps = [0u64; 15];
        gaps[2] = 3;
        h.merge(&gaps, 0.09, 3);
        assert_eq!((h.count, h.counts[2], h.min_max), (8, 3, None));
        h.record(&DURATION_BUCKETS, 1.0);
        assert_eq!(h.min_max, None, "stays unknown");
    }

    #[test]
    fn series_beyond_the_limit_go_to_one_overflow_series() {
        let mut r = Registry::new();
        for i in 0..MAX_SERIES + 10 {
            r.observe(H_HTTP, vec![(sc::HTTP_ROUTE, Attr::Str(format!("/r{i}")))], 0.1);
        }
        let (_, series) = r.histograms().nth(H_HTTP).unwrap();
        assert_eq!(series.len(), MAX_SERIES + 1);
        let overflow = &series[&vec![(OVERFLOW_ATTR, Attr::Bool(true))]];
        assert_eq!(overflow.count, 10);
        // Negative and non-finite values are not observations.
        r.observe(H_HTTP, vec![(sc::HTTP_ROUTE, Attr::Str("/r0".into()))], f64::NAN);
        r.observe(H_HTTP, vec![(sc::HTTP_ROUTE, Attr::Str("/r0".into()))], -1.0);
        let (_, series) = r.histograms().nth(H_HTTP).unwrap();
        assert_eq!(series[&vec![(sc::HTTP_ROUTE, Attr::Str("/r0".into()))]].count, 1);
    }

    #[test]
    fn each_limit_reached_is_its_own_series() {
        let mut report = Report::default();
        report.pipeline.reassembly.evicted = 1;
        report.pipeline.reassembly.buffer_overflows = 2;
        report.pipeline.http.head_evictions = 3;
        report.pipeline.http.stale_heads = 4;
        report.pipeline.http.pending_overflows = 5;
        report.pipeline.llm.evicted = 6;
        let mut r = Registry::new();
        r.set_health(&report);
        let health = r.health();
        let (_, points) = health.iter().find(|(d, _)| d.name == sc::METRIC_TRACER_LIMIT_OVERFLOWS).unwrap();
        let got: Vec<(String, u64)> = points
            .iter()
            .map(|p| match &p.attrs[..] {
                [(sc::TRACER_LIMIT, Attr::Str(l))] => (l.clone(), p.value),
                other => panic!("{other:?}"),
            })
            .collect();
        let want: Vec<(String, u64)> = sc::TRACER_LIMITS.iter().map(|l| l.to_string()).zip(1..=6).collect();
        assert_eq!(got, want);
    }
}
