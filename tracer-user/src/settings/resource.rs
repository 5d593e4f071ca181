//! The run's resource: what every span and metric says about where it comes from.

use tracer_core::span::semconv as sc;
use tracer_core::span::{AttrValue, KeyValue, Resource};

use super::env::Environment;
use super::parse::parse_key_values;
use super::{CliExport, ExportSettings};

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

/// `service.name`: the flag, else `OTEL_SERVICE_NAME` (else `OTEL_RESOURCE_ATTRIBUTES`' own,
/// else `ollama`: see [`resource`]).
pub(super) fn service_name(cli: &CliExport, env: &Environment) -> Option<String> {
    cli.service_name.clone().or_else(|| env.get("OTEL_SERVICE_NAME").map(str::to_string)).filter(|s| !s.is_empty())
}

/// `OTEL_RESOURCE_ATTRIBUTES`, decoded; on any error the whole variable is discarded, as the
/// specification asks.
pub(super) fn attributes(env: &Environment, warnings: &mut Vec<String>) -> Vec<KeyValue> {
    let Some(v) = env.get("OTEL_RESOURCE_ATTRIBUTES") else { return Vec::new() };
    match parse_key_values(v) {
        Ok(kvs) => kvs.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect(),
        Err(e) => {
            warnings.push(format!("OTEL_RESOURCE_ATTRIBUTES: {e} (whole value ignored)"));
            Vec::new()
        }
    }
}
