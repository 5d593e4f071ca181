//! The tracer's own health as metrics: the summary's counters, the export queue's, and the
//! limits reached.

use std::sync::atomic::Ordering;

use tracer_core::span::semconv as sc;

use super::catalog::*;
use super::registry::Registry;
use crate::report::ExportStats;

/// One series of one health metric.
pub struct HealthPoint {
    pub attrs: Attrs,
    pub value: u64,
}

impl Registry {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Report;

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
