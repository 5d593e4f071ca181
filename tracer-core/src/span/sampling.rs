//! Which traces are exported: head sampling as every OpenTelemetry SDK does it
//! (`OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, parent-based by default), plus rules only
//! a tracer that emits at completion can offer: keep every failed call, keep every call slower
//! than a threshold. Metrics are computed from every call, before this decision.

use crate::llm::LlmCall;
use crate::span::SpanRecord;
use crate::span::trace_context::TraceParent;

/// The head sampler for traces without a sampled parent decision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Head {
    AlwaysOn,
    AlwaysOff,
    /// Keep this fraction of traces, decided from the trace id (the same everywhere).
    TraceIdRatio(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    pub head: Head,
    /// Follow the client's sampled flag when the request carried a `traceparent`.
    pub parent_based: bool,
    /// Keep failed calls whatever the head decision.
    pub keep_errors: bool,
    /// Keep calls at least this long (ns) whatever the head decision.
    pub keep_slower_than_ns: Option<u64>,
}

impl Default for SamplingConfig {
    /// `parentbased_always_on`, the SDK default, with errors kept.
    fn default() -> Self {
        SamplingConfig { head: Head::AlwaysOn, parent_based: true, keep_errors: true, keep_slower_than_ns: None }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SamplerError {
    #[error(
        "unknown sampler {0:?} (always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio)"
    )]
    Unknown(String),
    #[error("sampler argument {0:?} is not a ratio between 0 and 1")]
    BadRatio(String),
}

impl SamplingConfig {
    /// From `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` values (absent: the default).
    pub fn from_otel(sampler: Option<&str>, arg: Option<&str>) -> Result<SamplingConfig, SamplerError> {
        let ratio = || -> Result<f64, SamplerError> {
            match arg {
                None => Ok(1.0),
                Some(a) => match a.trim().parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(SamplerError::BadRatio(a.to_string())),
                },
            }
        };
        let (head, parent_based) = match sampler.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("parentbased_always_on") => (Head::AlwaysOn, true),
            Some("always_on") => (Head::AlwaysOn, false),
            Some("always_off") => (Head::AlwaysOff, false),
            Some("parentbased_always_off") => (Head::AlwaysOff, true),
            Some("traceidratio") => (Head::TraceIdRatio(ratio()?), false),
            Some("parentbased_traceidratio") => (Head::TraceIdRatio(ratio()?), true),
            Some(other) => return Err(SamplerError::Unknown(other.to_string())),
        };
        Ok(SamplingConfig { head, parent_based, ..SamplingConfig::default() })
    }

    /// Whether the spans of this call are exported. `span` is the call's own span.
    pub fn keep(&self, call: &LlmCall, span: &SpanRecord) -> bool {
        if self.keep_errors && call.error.is_some() {
            return true;
        }
        if let Some(limit) = self.keep_slower_than_ns
            && span.end.since(span.start) >= limit as i64
        {
            return true;
        }
        if self.parent_based
            && let Some(parent) = call.traceparent.as_deref().and_then(TraceParent::parse)
        {
            return parent.sampled();
        }
        match self.head {
            Head::AlwaysOn => true,
            Head::AlwaysOff => false,
            Head::TraceIdRatio(r) => ratio_keeps(r, &span.trace_id),
        }
    }
}

/// The SDKs' TraceIdRatioBased: the low 8 bytes of the trace id against the ratio, so every
/// tracer in a trace decides the same way.
fn ratio_keeps(ratio: f64, trace_id: &[u8; 16]) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let x = u64::from_be_bytes(trace_id[8..16].try_into().expect("8 bytes")) >> 1;
    x < bound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_otel_samplers() {
        assert_eq!(SamplingConfig::from_otel(None, None).unwrap(), SamplingConfig::default());
        let c = SamplingConfig::from_otel(Some("parentbased_traceidratio"), Some("0.25")).unwrap();
        assert_eq!((c.head, c.parent_based), (Head::TraceIdRatio(0.25), true));
        assert_eq!(SamplingConfig::from_otel(Some("always_off"), None).unwrap().head, Head::AlwaysOff);
        assert!(SamplingConfig::from_otel(Some("traceidratio"), Some("2")).is_err());
        assert!(SamplingConfig::from_otel(Some("jaeger_remote"), None).is_err());
    }

    #[test]
    fn ratio_is_about_right_and_deterministic() {
        let mut kept = 0;
        for i in 0u64..10_000 {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
            if ratio_keeps(0.1, &id) {
                kept += 1;
            }
            assert_eq!(ratio_keeps(0.1, &id), ratio_keeps(0.1, &id));
        }
        assert!((900..1100).contains(&kept), "{kept}");
        assert!(ratio_keeps(1.0, &[0xff; 16]));
        assert!(!ratio_keeps(0.0, &[0; 16]));
    }
}
