//! The aggregation: every series of every metric, cumulative since start, fed by each call
//! (before sampling, `record.rs`) and each health report (`health.rs`), read by the Prometheus
//! endpoint and the OTLP push.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tracer_core::llm::gauge::InFlightReading;
use tracer_core::span::DEFAULT_COLD_START_NS;
use tracer_core::span::semconv::{self as sc, SemconvMode};

use super::catalog::*;
use crate::report::{ExportCounters, Report};

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
    pub(super) fn merge(&mut self, counts: &[u64], sum: f64, count: u64) {
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
    /// Monotonic sums (in units of the metric's `scale`).
    Counter(BTreeMap<Attrs, u64>),
    /// Values now (in units of the metric's `scale`).
    Gauge(BTreeMap<Attrs, u64>),
}

impl Points {
    pub fn is_empty(&self) -> bool {
        match self {
            Points::Histogram(m) => m.is_empty(),
            Points::Counter(m) | Points::Gauge(m) => m.is_empty(),
        }
    }
}

/// One metric fed by calls: what it is and its series.
#[derive(Clone, Debug)]
pub struct Metric {
    pub desc: Desc,
    pub points: Points,
}

/// A model an `/api/ps` answer listed: its series' attributes, its size and its size in VRAM.
pub(super) type Resident = (Attrs, u64, u64);

/// Who reads the registry: each has its own "since I last read" (the in-flight peak).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    Prometheus,
    Otlp,
    Console,
}

const READERS: usize = 3;

/// Every series of every metric, cumulative since `start`.
pub struct Registry {
    pub start: SystemTime,
    mode: SemconvMode,
    /// A `load_duration` at least this long is a model load.
    pub(super) cold_start_ns: u64,
    /// The call metrics of `mode`, in output order.
    metrics: Vec<Metric>,
    /// Where each role's metric is in `metrics` (absent: not in this version).
    roles: BTreeMap<Role, usize>,
    pub(super) health: Option<Report>,
    pub(super) traces: Option<Arc<ExportCounters>>,
    /// Failed OTLP metrics pushes.
    pub metrics_failures: Arc<AtomicU64>,
    /// Per reader, the most requests in flight at once per series since it last read.
    peaks: [BTreeMap<Attrs, u64>; READERS],
    /// Per server (`server.address`, `server.port`), the models its last `/api/ps` listed.
    pub(super) residency: BTreeMap<(String, i64), Vec<Resident>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(SemconvMode::default(), DEFAULT_COLD_START_NS)
    }
}

/// A series' attributes: the overflow series' once the metric has `max` others.
pub(super) fn bounded<V>(map: &BTreeMap<Attrs, V>, attrs: Attrs, max: usize) -> Attrs {
    if map.len() >= max && !map.contains_key(&attrs) { vec![(OVERFLOW_ATTR, Attr::Bool(true))] } else { attrs }
}

/// The attributes of an in-flight series.
fn in_flight_attrs(r: &InFlightReading) -> Attrs {
    match &r.key {
        Some(k) => {
            let mut a: Attrs = vec![
                (sc::GEN_AI_OPERATION_NAME, Attr::Str(k.operation.as_str().into())),
                (sc::GEN_AI_PROVIDER_NAME, Attr::Str(k.provider.name().into())),
            ];
            if !k.model.is_empty() {
                a.push((sc::GEN_AI_REQUEST_MODEL, Attr::Str(k.model.clone())));
            }
            a.push((sc::OLLAMA_API, Attr::Str(k.api.as_str().into())));
            a
        }
        None => vec![(OVERFLOW_ATTR, Attr::Bool(true))],
    }
}

impl Registry {
    pub fn new(mode: SemconvMode, cold_start_ns: u64) -> Self {
        let metrics: Vec<Metric> = call_metrics(mode)
            .into_iter()
            .map(|(_, desc)| Metric {
                desc,
                points: match desc.kind {
                    Kind::Histogram => Points::Histogram(BTreeMap::new()),
                    Kind::Counter => Points::Counter(BTreeMap::new()),
                    Kind::Gauge => Points::Gauge(BTreeMap::new()),
                },
            })
            .collect();
        let roles = call_metrics(mode).into_iter().enumerate().map(|(i, (role, _))| (role, i)).collect();
        Registry {
            start: SystemTime::now(),
            mode,
            cold_start_ns,
            metrics,
            roles,
            health: None,
            traces: None,
            metrics_failures: Arc::new(AtomicU64::new(0)),
            peaks: Default::default(),
            residency: BTreeMap::new(),
        }
    }

    /// Reads the span export queue's counters from here on.
    pub fn watch_traces(&mut self, counters: Arc<ExportCounters>) {
        self.traces = Some(counters);
    }

    fn points(&mut self, role: Role) -> Option<(&mut Points, &'static [f64])> {
        let m = &mut self.metrics[*self.roles.get(&role)?];
        Some((&mut m.points, m.desc.bounds))
    }

    pub(super) fn histogram(&mut self, role: Role, attrs: Attrs) -> Option<(&mut Histogram, &'static [f64])> {
        match self.points(role)? {
            (Points::Histogram(map), bounds) => {
                let attrs = bounded(map, attrs, MAX_SERIES);
                Some((map.entry(attrs).or_insert_with(|| Histogram::new(bounds)), bounds))
            }
            _ => None,
        }
    }

    pub(super) fn observe(&mut self, role: Role, attrs: Attrs, v: f64) {
        if v.is_finite()
            && v >= 0.0
            && let Some((h, bounds)) = self.histogram(role, attrs)
        {
            h.record(bounds, v);
        }
    }

    /// Adds to a counter; `max` series at most (then the overflow series).
    pub(super) fn add_bounded(&mut self, role: Role, attrs: Attrs, n: u64, max: usize) {
        if let Some((Points::Counter(map), _)) = self.points(role) {
            let attrs = bounded(map, attrs, max);
            *map.entry(attrs).or_insert(0) += n;
        }
    }

    pub(super) fn add(&mut self, role: Role, attrs: Attrs, n: u64) {
        self.add_bounded(role, attrs, n, MAX_SERIES);
    }

    /// Replaces a gauge's series with `values` (a later value of a series replaces an earlier).
    pub(super) fn set_gauge(&mut self, role: Role, values: impl IntoIterator<Item = (Attrs, u64)>) {
        if let Some((Points::Gauge(map), _)) = self.points(role) {
            map.clear();
            for (a, v) in values {
                let a = bounded(map, a, MAX_SERIES);
                map.insert(a, v);
            }
        }
    }

    /// The series of a gauge, each at 0 (a series once seen stays, at 0 when idle: a dashboard
    /// shows "none in flight", not a gap).
    fn zeroed(&mut self, role: Role) -> Vec<(Attrs, u64)> {
        match self.points(role) {
            Some((Points::Gauge(map), _)) => map.keys().map(|a| (a.clone(), 0)).collect(),
            _ => Vec::new(),
        }
    }

    /// The in-flight readings of a health report: the gauge now, and every reader's peak.
    pub(super) fn set_in_flight(&mut self, readings: &[InFlightReading]) {
        let mut now = self.zeroed(Role::InFlight);
        now.extend(readings.iter().map(|r| (in_flight_attrs(r), r.current)));
        self.set_gauge(Role::InFlight, now);
        for peaks in &mut self.peaks {
            for r in readings {
                let p = peaks.entry(in_flight_attrs(r)).or_insert(0);
                *p = (*p).max(r.peak);
            }
        }
    }

    /// Before `reader` reads: the peak gauge holds its peaks since its previous read, which
    /// then start again from the calls in flight now.
    pub fn read_peaks(&mut self, reader: Reader) {
        let peaks = std::mem::take(&mut self.peaks[reader as usize]);
        let current: Vec<(Attrs, u64)> = match self.points(Role::InFlight) {
            Some((Points::Gauge(map), _)) => {
                map.iter().filter(|(_, v)| **v > 0).map(|(a, v)| (a.clone(), *v)).collect()
            }
            _ => Vec::new(),
        };
        let mut gauge = self.zeroed(Role::InFlight);
        gauge.extend(peaks);
        self.set_gauge(Role::InFlightPeak, gauge);
        self.peaks[reader as usize] = current.into_iter().collect();
    }

    /// Each call metric with its series, in output order.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// What a metric of [`Registry::metrics`] measures.
    pub fn role_of(&self, metric: &Metric) -> Option<Role> {
        self.roles.iter().find(|(_, i)| std::ptr::eq(&self.metrics[**i], metric)).map(|(r, _)| *r)
    }

    /// The conventions' version the names follow.
    pub fn mode(&self) -> SemconvMode {
        self.mode
    }

    /// The latest health snapshot (its in-flight readings go to their gauges).
    pub fn set_health(&mut self, report: &Report) {
        self.set_in_flight(&report.in_flight);
        let mut r = report.clone();
        r.in_flight.clear();
        self.health = Some(r);
    }
}

/// The registry, shared by the pipeline (writes) and the readers (Prometheus, OTLP push).
#[derive(Clone, Default)]
pub struct SharedRegistry(Arc<Mutex<Registry>>);

impl SharedRegistry {
    pub fn new(mode: SemconvMode, cold_start_ns: u64) -> Self {
        SharedRegistry(Arc::new(Mutex::new(Registry::new(mode, cold_start_ns))))
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
            _ => unreachable!(),
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
    fn each_reader_sees_the_peak_since_it_last_read() {
        use tracer_core::llm::gauge::{InFlightKey, InFlightReading};
        use tracer_core::llm::{Api, Operation, Provider};
        let key =
            InFlightKey { provider: Provider::Ollama, model: "m".into(), operation: Operation::Chat, api: Api::Native };
        let reading = |current, peak| InFlightReading { key: Some(key.clone()), current, peak };
        let mut r = Registry::default();
        let peak = |r: &mut Registry, reader| {
            r.read_peaks(reader);
            match &r.metrics()[r.roles[&Role::InFlightPeak]].points {
                Points::Gauge(m) => m.values().copied().collect::<Vec<_>>(),
                _ => unreachable!(),
            }
        };
        let mut report = Report { in_flight: vec![reading(2, 7)], ..Default::default() };
        r.set_health(&report);
        assert_eq!(peak(&mut r, Reader::Prometheus), [7]);
        // Prometheus read: its peak starts again from the 2 in flight; OTLP has not read yet.
        report.in_flight = vec![reading(1, 3)];
        r.set_health(&report);
        assert_eq!(peak(&mut r, Reader::Prometheus), [3]);
        assert_eq!(peak(&mut r, Reader::Otlp), [7]);
        report.in_flight = vec![reading(0, 1)];
        r.set_health(&report);
        assert_eq!(peak(&mut r, Reader::Prometheus), [1]);
        // Nothing in flight any more: the series stays, at 0.
        report.in_flight = vec![];
        r.set_health(&report);
        assert_eq!(peak(&mut r, Reader::Prometheus), [0]);
    }
}
