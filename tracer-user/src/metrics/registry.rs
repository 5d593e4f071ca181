//! The aggregation: every series of every metric, cumulative since start, fed by each call
//! (before sampling) and each health report, read by the Prometheus endpoint and the OTLP push.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tracer_core::llm::call::ChunkGaps;
use tracer_core::llm::{ErrorKind, Incomplete, LlmCall, Operation};
use tracer_core::segment::display_ip;
use tracer_core::span::semconv::{self as sc, SemconvMode};
use tracer_core::span::stage::TracedCall;

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

/// The series of one metric.
#[derive(Clone, Debug, PartialEq)]
pub enum Points {
    Histogram(BTreeMap<Attrs, Histogram>),
    /// Monotonic sums.
    Counter(BTreeMap<Attrs, u64>),
}

impl Points {
    pub fn is_empty(&self) -> bool {
        match self {
            Points::Histogram(m) => m.is_empty(),
            Points::Counter(m) => m.is_empty(),
        }
    }
}

/// One metric fed by calls: what it is and its series.
#[derive(Clone, Debug)]
pub struct Metric {
    pub desc: Desc,
    pub points: Points,
}

/// Every series of every metric, cumulative since `start`.
pub struct Registry {
    pub start: SystemTime,
    mode: SemconvMode,
    /// The call metrics of `mode`, in output order.
    metrics: Vec<Metric>,
    /// Where each role's metric is in `metrics` (absent: not in this version).
    roles: BTreeMap<Role, usize>,
    health: Option<Report>,
    traces: Option<Arc<ExportCounters>>,
    /// Failed OTLP metrics pushes.
    pub metrics_failures: Arc<AtomicU64>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(SemconvMode::default())
    }
}

/// One series of one health metric.
pub struct HealthPoint {
    pub attrs: Attrs,
    pub value: u64,
}

/// A series' attributes: the overflow series' once the metric has [`MAX_SERIES`] others.
fn bounded<V>(map: &BTreeMap<Attrs, V>, attrs: Attrs) -> Attrs {
    if map.len() >= MAX_SERIES && !map.contains_key(&attrs) { vec![(OVERFLOW_ATTR, Attr::Bool(true))] } else { attrs }
}

impl Registry {
    pub fn new(mode: SemconvMode) -> Self {
        let metrics: Vec<Metric> = call_metrics(mode)
            .into_iter()
            .map(|(_, desc)| Metric {
                desc,
                points: match desc.kind {
                    Kind::Histogram => Points::Histogram(BTreeMap::new()),
                    _ => Points::Counter(BTreeMap::new()),
                },
            })
            .collect();
        let roles = call_metrics(mode).into_iter().enumerate().map(|(i, (role, _))| (role, i)).collect();
        Registry {
            start: SystemTime::now(),
            mode,
            metrics,
            roles,
            health: None,
            traces: None,
            metrics_failures: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Reads the span export queue's counters from here on.
    pub fn watch_traces(&mut self, counters: Arc<ExportCounters>) {
        self.traces = Some(counters);
    }

    fn histogram(&mut self, role: Role, attrs: Attrs) -> Option<(&mut Histogram, &'static [f64])> {
        let m = &mut self.metrics[*self.roles.get(&role)?];
        let bounds = m.desc.bounds;
        match &mut m.points {
            Points::Histogram(map) => {
                let attrs = bounded(map, attrs);
                Some((map.entry(attrs).or_insert_with(|| Histogram::new(bounds)), bounds))
            }
            Points::Counter(_) => None,
        }
    }

    fn observe(&mut self, role: Role, attrs: Attrs, v: f64) {
        if v.is_finite()
            && v >= 0.0
            && let Some((h, bounds)) = self.histogram(role, attrs)
        {
            h.record(bounds, v);
        }
    }

    fn add(&mut self, role: Role, attrs: Attrs, n: u64) {
        let Some(&i) = self.roles.get(&role) else { return };
        if let Points::Counter(map) = &mut self.metrics[i].points {
            let attrs = bounded(map, attrs);
            *map.entry(attrs).or_insert(0) += n;
        }
    }

    /// Records one completed call, and the tool executions inferred before it.
    pub fn record(&mut self, traced: &TracedCall) {
        self.record_call(&traced.call);
        for tool in &traced.tools {
            let a: Attrs = vec![
                (sc::GEN_AI_OPERATION_NAME, Attr::Str(sc::OPERATION_EXECUTE_TOOL.into())),
                (sc::GEN_AI_PROVIDER_NAME, Attr::Str(traced.call.provider.name().into())),
                (sc::GEN_AI_TOOL_NAME, Attr::Str(tool.name.clone())),
                (sc::GEN_AI_TOOL_TYPE, Attr::Str("function".into())),
            ];
            self.observe(Role::ExecuteTool, a, tool.duration_ns as f64 / 1e9);
        }
    }

    /// Records one completed call.
    pub fn record_call(&mut self, call: &LlmCall) {
        // A call cut off by the end of the capture has no true end: no duration is recorded
        // for it (its tokens, if reported, still count).
        let ended = !call.incomplete.contains(&Incomplete::CaptureEnded);
        let secs = |ns: u64| ns as f64 / 1e9;
        let duration = secs(call.times.end.since(call.times.request_start).max(0) as u64);

        if ended {
            let mut a: Attrs = vec![(sc::HTTP_REQUEST_METHOD, Attr::Str(http_method(&call.method).to_string()))];
            if let Some(s) = call.status {
                a.push((sc::HTTP_RESPONSE_STATUS_CODE, Attr::Int(s as i64)));
            }
            if let Some(route) = call.http_route() {
                a.push((sc::HTTP_ROUTE, Attr::Str(route.to_string())));
            }
            a.push((sc::URL_SCHEME, Attr::Str(call.url_scheme().into())));
            // HTTP server conventions: only 5xx (or no response at all) is the server's error.
            if let Some(err) = &call.error
                && !matches!(err.kind, ErrorKind::Http(s) if s < 500)
            {
                a.push((sc::ERROR_TYPE, Attr::Str(err.kind.error_type())));
            }
            self.observe(Role::HttpDuration, a, duration);
        }

        let Some(op) = call.operation() else { return };
        let resp = &call.response;
        let mut base: Attrs = vec![
            (sc::GEN_AI_OPERATION_NAME, Attr::Str(op.as_str().into())),
            (sc::GEN_AI_PROVIDER_NAME, Attr::Str(call.provider.name().into())),
        ];
        if let Some(m) = &call.request.model {
            base.push((sc::GEN_AI_REQUEST_MODEL, Attr::Str(m.clone())));
        }
        if let Some(m) = resp.model.as_ref().filter(|m| !m.is_empty()) {
            base.push((sc::GEN_AI_RESPONSE_MODEL, Attr::Str(m.clone())));
        }
        base.push((sc::SERVER_ADDRESS, Attr::Str(display_ip(call.flow.server.ip()))));
        base.push((sc::SERVER_PORT, Attr::Int(call.flow.server.port() as i64)));
        let with = |base: &Attrs, extra: Option<(&'static str, Attr)>| {
            let mut a = base.clone();
            a.extend(extra);
            a
        };
        let error = call.error.as_ref().map(|e| (sc::ERROR_TYPE, Attr::Str(e.kind.error_type())));
        let embeddings = op == Operation::Embeddings;

        if ended {
            let role = match (self.mode, embeddings) {
                (SemconvMode::V1_41, _) => Role::Duration,
                (SemconvMode::Latest, false) => Role::InferenceDuration,
                (SemconvMode::Latest, true) => Role::EmbeddingsDuration,
            };
            self.observe(role, with(&base, error.clone()), duration);
        }
        let modality = Some((sc::GEN_AI_TOKEN_MODALITY, Attr::Str(sc::TOKEN_MODALITY_UNKNOWN.into())));
        match self.mode {
            SemconvMode::V1_41 => {
                for (n, kind) in
                    [(resp.input_tokens, sc::TOKEN_TYPE_INPUT), (resp.output_tokens, sc::TOKEN_TYPE_OUTPUT)]
                {
                    if let Some(n) = n {
                        let a = with(&base, Some((sc::GEN_AI_TOKEN_TYPE, Attr::Str(kind.into()))));
                        self.observe(Role::TokenUsage, a, n as f64);
                    }
                }
                if let Some(n) = resp.cache_read_input_tokens {
                    self.add(Role::CacheRead, base.clone(), n);
                }
            }
            SemconvMode::Latest if embeddings => {
                if let Some(n) = resp.input_tokens {
                    self.observe(Role::EmbeddingsInputTokens, base.clone(), n as f64);
                }
            }
            SemconvMode::Latest => {
                if let Some(n) = resp.input_tokens {
                    self.observe(Role::InputTokens, base.clone(), n as f64);
                    self.add(Role::DetailedInput, with(&base, modality.clone()), n);
                }
                if let Some(n) = resp.output_tokens {
                    self.observe(Role::OutputTokens, base.clone(), n as f64);
                    self.add(Role::DetailedOutput, with(&base, modality.clone()), n);
                }
                if let Some(n) = resp.cache_read_input_tokens {
                    self.add(Role::DetailedCacheRead, with(&base, modality), n);
                }
            }
        }
        if resp.streamed {
            if let Some(t) = call.time_to_first_chunk() {
                self.observe(Role::TimeToFirstChunk, base.clone(), t);
            }
            let gaps: &ChunkGaps = &call.times.chunk_gaps;
            if gaps.count > 0
                && let Some((h, _)) = self.histogram(Role::TimePerOutputChunk, base.clone())
            {
                h.merge(&gaps.counts, gaps.sum_secs, gaps.count);
            }
        }
        let o = &resp.ollama;
        if let Some(total) = o.total_duration {
            self.observe(Role::ServerDuration, with(&base, error), secs(total));
            // Ollama omits zero durations from its final chunk: absent means 0 there. Only
            // generating operations have a first token.
            if !embeddings && o.eval_count.is_some_and(|n| n > 0) {
                let prefill = o.load_duration.unwrap_or(0) + o.prompt_eval_duration.unwrap_or(0);
                self.observe(Role::ServerTimeToFirstToken, base.clone(), secs(prefill));
            }
        }
        if let (Some(d), Some(n)) = (o.eval_duration, o.eval_count)
            && n > 0
        {
            self.observe(Role::ServerTimePerOutputToken, base, secs(d) / n as f64);
        }
    }

    /// The latest health snapshot.
    pub fn set_health(&mut self, report: &Report) {
        self.health = Some(report.clone());
    }

    /// Each call metric with its series, in output order.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// The conventions' version the names follow.
    pub fn mode(&self) -> SemconvMode {
        self.mode
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
    pub fn new(mode: SemconvMode) -> Self {
        SharedRegistry(Arc::new(Mutex::new(Registry::new(mode))))
    }

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
        let mut r = Registry::default();
        for i in 0..MAX_SERIES + 10 {
            r.observe(Role::HttpDuration, vec![(sc::HTTP_ROUTE, Attr::Str(format!("/r{i}")))], 0.1);
        }
        let http = |r: &Registry| match &r.metrics()[r.roles[&Role::HttpDuration]].points {
            Points::Histogram(m) => m.clone(),
            Points::Counter(_) => unreachable!(),
        };
        let series = http(&r);
        assert_eq!(series.len(), MAX_SERIES + 1);
        let overflow = &series[&vec![(OVERFLOW_ATTR, Attr::Bool(true))]];
        assert_eq!(overflow.count, 10);
        // Negative and non-finite values are not observations.
        r.observe(Role::HttpDuration, vec![(sc::HTTP_ROUTE, Attr::Str("/r0".into()))], f64::NAN);
        r.observe(Role::HttpDuration, vec![(sc::HTTP_ROUTE, Attr::Str("/r0".into()))], -1.0);
        assert_eq!(http(&r)[&vec![(sc::HTTP_ROUTE, Attr::Str("/r0".into()))]].count, 1);
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
        let mut r = Registry::default();
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
