//! From resolved settings to the sinks of a run: stdout, OTLP spans, metrics (OTLP push,
//! Prometheus endpoint, console).

use std::io::Write;
use std::net::SocketAddr;

use super::config::{ExportSettings, StdoutChoice};
use super::otlp_traces::OtlpTraceSink;
use super::runtime::ExportRuntime;
use super::transport::ExportError;
use super::{Outputs, Sink, StdoutFormat, StdoutSink};
use crate::metrics::otlp::MetricsPusher;
use crate::metrics::{MetricsSink, SharedRegistry, prometheus};
use crate::span::semconv as sc;
use crate::span::{AttrValue, KeyValue, Resource, SpanConfig};

/// The resource of a run, built once: `service.name` (the flag or `OTEL_SERVICE_NAME`, else
/// `service.name` from `OTEL_RESOURCE_ATTRIBUTES`, else `ollama`), `host.name`, the tracer as
/// `telemetry.distro.*`, then the rest of `OTEL_RESOURCE_ATTRIBUTES` (which may override
/// `host.name`).
pub fn resource(settings: &ExportSettings, host_name: Option<String>) -> Resource {
    let from_attrs =
        settings.resource_attributes.iter().find(|kv| kv.key == sc::SERVICE_NAME).and_then(|kv| match &kv.value {
            AttrValue::Str(s) => Some(s.clone()),
            _ => None,
        });
    let service = settings.service_name.clone().or(from_attrs).unwrap_or_else(|| sc::DEFAULT_SERVICE_NAME.to_string());
    let extra: Vec<KeyValue> =
        settings.resource_attributes.iter().filter(|kv| kv.key != sc::SERVICE_NAME).cloned().collect();
    Resource::new(&service, host_name, extra)
}

/// Built outputs, and where the Prometheus endpoint listens (its real port when 0 was asked).
pub struct Built {
    pub outputs: Outputs,
    pub metrics_addr: Option<SocketAddr>,
}

/// Every sink the settings ask for, in the order shutdown needs: stdout, spans, then metrics
/// (so the last metrics push carries the span export's final counters).
pub fn build(
    settings: &ExportSettings,
    resource: Resource,
    span_config: SpanConfig,
    stdout: Box<dyn Write + Send>,
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
            let sink = OtlpTraceSink::start(target, settings.queue, &resource, rt)?;
            trace_counters = Some(sink.counters());
            tracing::info!(endpoint = %target.url, protocol = %target.protocol, "exporting spans over OTLP");
            Some(sink)
        }
        _ => None,
    };

    let mut metrics_addr = None;
    let metrics_sink = if settings.metrics.is_some() || settings.prometheus.is_some() || console_metrics {
        let registry = SharedRegistry::default();
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
                    &resource,
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
    let outputs = Outputs::new(resource, span_config, sinks).with_openinference(settings.openinference);
    Ok(Built { outputs, metrics_addr })
}
