//! The run's resource: what every span and metric says about where it comes from.

use tracer_core::span::semconv as sc;
use tracer_core::span::{AttrValue, KeyValue, Resource};

use super::ExportSettings;

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
