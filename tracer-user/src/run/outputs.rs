//! From resolved settings to the sinks of a run: stdout, OTLP spans, metrics (OTLP push,
//! Prometheus endpoint, console).

use std::io::Write;
use std::net::SocketAddr;

use tracer_core::span::Resource;

use crate::export::otlp::{Delivery, OtlpTraceSink};
use crate::export::{StdoutFormat, StdoutSink};
use crate::metrics::otlp::MetricsPusher;
use crate::metrics::{MetricsSink, SharedRegistry, prometheus};
use crate::settings::{ExportSettings, StdoutChoice};
use crate::sink::{Outputs, Sink};
use crate::transport::ExportError;
use crate::transport::runtime::ExportRuntime;

/// Built outputs, and where the Prometheus endpoint listens (its real port when 0 was asked).
pub struct Built {
    pub outputs: Outputs,
    pub metrics_addr: Option<SocketAddr>,
}

/// Every sink the settings ask for, in the order shutdown needs: stdout, spans, then metrics
/// (so the last metrics push carries the span export's final counters); spans delivered as
/// `delivery` says.
pub fn build(
    settings: &ExportSettings,
    resource: &Resource,
    stdout: Box<dyn Write + Send>,
    delivery: Delivery,
    cold_start_ns: u64,
) -> Result<Built, ExportError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let format = match settings.stdout {
        StdoutChoice::Text => StdoutFormat::Text,
        StdoutChoice::Json => StdoutFormat::Json,
        StdoutChoice::None => StdoutFormat::None,
    };
    let console_metrics = settings.console_metrics;
    let needs_runtime = settings.traces.is_some() || settings.metrics.is_some() || settings.prometheus.is_some();
    let runtime = if needs_runtime { Some(ExportRuntime::new()?) } else { None };

    let mut trace_counters = None;
    let trace_sink = match (&settings.traces, &runtime) {
        (Some(target), Some(rt)) => {
            let sink = OtlpTraceSink::start(target, settings.queue, delivery, settings.semconv, resource, rt)?;
            trace_counters = Some(sink.counters());
            tracing::info!(endpoint = %target.url, protocol = %target.protocol, "exporting spans over OTLP");
            Some(sink)
        }
        _ => None,
    };

    let mut metrics_addr = None;
    let metrics_sink = if settings.metrics.is_some() || settings.prometheus.is_some() || console_metrics {
        let registry = SharedRegistry::new(settings.semconv, cold_start_ns);
        if let Some(c) = trace_counters {
            registry.lock().watch_traces(c);
        }
        let pusher = match (&settings.metrics, &runtime) {
            (Some(target), Some(rt)) => {
                tracing::info!(endpoint = %target.url, protocol = %target.protocol, interval = ?settings.metric_interval, "exporting metrics over OTLP");
                Some(MetricsPusher::start(
                    target,
                    settings.metric_interval,
                    settings.metric_timeout,
                    registry.clone(),
                    resource,
                    rt,
                )?)
            }
            _ => None,
        };
        let server = match (settings.prometheus, &runtime) {
            (Some(addr), Some(rt)) => {
                let s = prometheus::serve(addr, registry.clone(), resource.clone(), rt)?;
                metrics_addr = Some(s.addr);
                Some(s)
            }
            _ => None,
        };
        let console: Option<Box<dyn Write + Send>> =
            if console_metrics { Some(Box::new(std::io::LineWriter::new(std::io::stdout()))) } else { None };
        Some(MetricsSink::new(registry, pusher, server, console, runtime.clone()))
    } else {
        None
    };

    sinks.push(Box::new(StdoutSink::new(format, stdout)));
    if let Some(s) = trace_sink {
        sinks.push(Box::new(s));
    }
    if let Some(s) = metrics_sink {
        sinks.push(Box::new(s));
    }
    Ok(Built { outputs: Outputs::new(sinks), metrics_addr })
}

/// Where spans and metrics go, in words: "text on stdout, OTLP http://collector:4318/v1/traces
/// (http/protobuf), metrics at http://127.0.0.1:9464/metrics".
pub fn describe(settings: &ExportSettings, metrics_addr: Option<SocketAddr>, top: bool) -> String {
    let mut parts = Vec::new();
    match settings.stdout {
        StdoutChoice::Text => parts.push("text on stdout".to_owned()),
        StdoutChoice::Json => parts.push("JSON on stdout".to_owned()),
        StdoutChoice::None => {}
    }
    if top {
        parts.push("the terminal view".to_owned());
    }
    if let Some(t) = &settings.traces {
        parts.push(format!("OTLP {} ({})", t.url, t.protocol));
    }
    if let Some(t) = &settings.metrics {
        parts.push(format!("metrics over OTLP {} ({})", t.url, t.protocol));
    }
    if let Some(addr) = metrics_addr.or(settings.prometheus) {
        parts.push(format!("metrics at http://{addr}/metrics"));
    }
    if settings.console_metrics {
        parts.push("metrics on stdout at exit".to_owned());
    }
    if parts.is_empty() { "nowhere (--output none)".to_owned() } else { parts.join(", ") }
}
