//! The Prometheus text exposition format (0.0.4) of the registry, and the HTTP endpoint serving
//! it. Names follow OpenTelemetry's Prometheus compatibility rules: dots and other invalid
//! characters become `_`, the unit is a suffix (`s` → `_seconds`, `By` → `_bytes`; `{…}` units
//! add none), counters end in `_total`; the resource is the `target_info` series and every
//! series carries `otel_scope_name` / `otel_scope_version`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use super::catalog::{Attr, Attrs, Desc, Kind};
use super::registry::{Points, Reader, Registry, SharedRegistry};
use crate::transport::ExportError;
use crate::transport::runtime::ExportRuntime;
use tracer_core::span::{AttrValue, Resource};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*` for metrics, no `:` in labels, runs of
/// invalid characters collapsed to one `_`.
pub fn sanitize(name: &str, colons: bool) -> String {
    let mut out = String::with_capacity(name.len());
    let mut last_us = false;
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphabetic() || c == '_' || (colons && c == ':') || (i > 0 && c.is_ascii_digit());
        if ok {
            out.push(c);
            last_us = c == '_';
        } else if !last_us {
            out.push('_');
            last_us = true;
        }
    }
    if out.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The Prometheus name of a metric (without `_bucket`/`_sum`/`_count`).
pub fn metric_name(desc: &Desc) -> String {
    let mut name = sanitize(desc.name, true);
    let unit = match desc.unit {
        "s" => "seconds",
        "By" => "bytes",
        "ms" => "milliseconds",
        "1" if desc.kind == Kind::Gauge => "ratio",
        _ => "",
    };
    if !unit.is_empty() && !name.ends_with(&format!("_{unit}")) {
        name.push('_');
        name.push_str(unit);
    }
    if desc.kind == Kind::Counter {
        name.push_str("_total");
    }
    name
}

fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn labels(attrs: &Attrs, extra: Option<(&str, &str)>, out: &mut String) {
    out.push('{');
    let mut first = true;
    let mut put = |k: &str, v: &str, out: &mut String| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&sanitize(k, false));
        out.push_str("=\"");
        escape(v, out);
        out.push('"');
    };
    put("otel_scope_name", tracer_core::span::semconv::DISTRO_NAME, out);
    put("otel_scope_version", env!("CARGO_PKG_VERSION"), out);
    for (k, v) in attrs {
        let v = match v {
            Attr::Str(s) => s.clone(),
            Attr::Int(i) => i.to_string(),
            Attr::Bool(b) => b.to_string(),
        };
        put(k, &v, out);
    }
    if let Some((k, v)) = extra {
        put(k, v, out);
    }
    out.push('}');
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

fn header(out: &mut String, name: &str, desc: &Desc, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", desc.description.replace('\\', "\\\\").replace('\n', "\\n"));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole registry in the text format; `resource` adds the `target_info` series.
pub fn render(reg: &Registry, resource: Option<&Resource>) -> String {
    let mut out = String::with_capacity(16 << 10);
    if let Some(r) = resource {
        out.push_str("# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info{");
        let mut first = true;
        for kv in &r.attributes {
            let v = match &kv.value {
                AttrValue::Str(s) => s.clone(),
                AttrValue::Int(i) => i.to_string(),
                AttrValue::F64(f) => f.to_string(),
                AttrValue::Bool(b) => b.to_string(),
                AttrValue::StrArray(a) => serde_json::to_string(a).unwrap_or_default(),
            };
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&sanitize(&kv.key, false));
            out.push_str("=\"");
            escape(&v, &mut out);
            out.push('"');
        }
        out.push_str("} 1\n");
    }
    for metric in reg.metrics() {
        let desc = &metric.desc;
        if metric.points.is_empty() {
            continue;
        }
        let name = metric_name(desc);
        match &metric.points {
            Points::Histogram(series) => {
                header(&mut out, &name, desc, "histogram");
                for (attrs, h) in series {
                    let mut cumulative = 0;
                    for (i, c) in h.counts.iter().enumerate() {
                        cumulative += c;
                        let le = desc.bounds.get(i).map_or("+Inf".to_string(), |b| number(*b));
                        out.push_str(&name);
                        out.push_str("_bucket");
                        labels(attrs, Some(("le", &le)), &mut out);
                        let _ = writeln!(out, " {cumulative}");
                    }
                    out.push_str(&name);
                    out.push_str("_sum");
                    labels(attrs, None, &mut out);
                    let _ = writeln!(out, " {}", number(h.sum));
                    out.push_str(&name);
                    out.push_str("_count");
                    labels(attrs, None, &mut out);
                    let _ = writeln!(out, " {}", h.count);
                }
            }
            Points::Counter(series) | Points::Gauge(series) => {
                let kind = if matches!(metric.points, Points::Counter(_)) { "counter" } else { "gauge" };
                header(&mut out, &name, desc, kind);
                for (attrs, v) in series {
                    out.push_str(&name);
                    labels(attrs, None, &mut out);
                    if desc.scale == 1.0 {
                        let _ = writeln!(out, " {v}");
                    } else {
                        let _ = writeln!(out, " {}", number(desc.value(*v)));
                    }
                }
            }
        }
    }
    for (desc, points) in reg.health() {
        let name = metric_name(desc);
        header(&mut out, &name, desc, if desc.kind == Kind::Counter { "counter" } else { "gauge" });
        for p in points {
            out.push_str(&name);
            labels(&p.attrs, None, &mut out);
            let _ = writeln!(out, " {}", p.value);
        }
    }
    out
}

/// The running endpoint; it stops with the export runtime.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `GET /metrics` on `addr` (bound before returning, so a busy port is an error now).
pub fn serve(
    addr: SocketAddr,
    registry: SharedRegistry,
    resource: Resource,
    runtime: &ExportRuntime,
) -> Result<Server, ExportError> {
    let std_listener = std::net::TcpListener::bind(addr).map_err(|source| ExportError::Listen { addr, source })?;
    std_listener.set_nonblocking(true).map_err(|source| ExportError::Listen { addr, source })?;
    let bound = std_listener.local_addr().map_err(|source| ExportError::Listen { addr, source })?;
    let listener =
        runtime.enter(|| TcpListener::from_std(std_listener)).map_err(|source| ExportError::Listen { addr, source })?;
    let resource = std::sync::Arc::new(resource);
    let task = runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors and the like: wait rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let registry = registry.clone();
            let resource = resource.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let registry = registry.clone();
                    let resource = resource.clone();
                    async move { Ok::<_, std::convert::Infallible>(respond(&req, &registry, &resource)) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    tracing::info!("Prometheus metrics on http://{bound}/metrics");
    Ok(Server { addr: bound, task })
}

fn respond(req: &Request<Incoming>, registry: &SharedRegistry, resource: &Resource) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let text = {
                let mut reg = registry.lock();
                reg.read_peaks(Reader::Prometheus);
                render(&reg, Some(resource))
            };
            reply(StatusCode::OK, CONTENT_TYPE, text)
        }
        (&Method::GET | &Method::HEAD, "/") => {
            reply(StatusCode::OK, "text/plain; charset=utf-8", "ollama-tracer: metrics at /metrics\n".into())
        }
        (_, "/metrics" | "/") => reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into()),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::catalog::{HEALTH, call_metrics};
    use tracer_core::span::semconv::SemconvMode;

    /// The server metrics, last in both versions.
    const SERVER: [&str; 11] = [
        "ollama_requests_in_flight",
        "ollama_requests_in_flight_peak",
        "ollama_request_wait_duration_seconds",
        "ollama_model_loads_total",
        "ollama_model_load_duration_seconds",
        "ollama_model_unloads_total",
        "ollama_models_loaded",
        "ollama_model_memory_usage_bytes",
        "ollama_model_busy_time_seconds_total",
        "ollama_client_tokens_total",
        "ollama_client_busy_time_seconds_total",
    ];

    #[test]
    fn names_follow_the_compatibility_rules() {
        let calls = |mode| {
            let mut names = call_metrics(mode).into_iter().map(|(_, d)| metric_name(&d)).collect::<Vec<_>>();
            let server = names.split_off(names.len() - SERVER.len());
            assert_eq!(server, SERVER);
            names
        };
        assert_eq!(
            calls(SemconvMode::Latest),
            [
                "gen_ai_client_inference_duration_seconds",
                "gen_ai_client_embeddings_duration_seconds",
                "gen_ai_client_inference_usage_input_tokens",
                "gen_ai_client_inference_usage_output_tokens",
                "gen_ai_client_embeddings_usage_input_tokens",
                "gen_ai_client_inference_usage_detailed_input_tokens_total",
                "gen_ai_client_inference_usage_detailed_output_tokens_total",
                "gen_ai_client_inference_usage_detailed_cache_read_input_tokens_total",
                "gen_ai_client_inference_time_to_first_chunk_seconds",
                "gen_ai_client_inference_time_per_output_chunk_seconds",
                "gen_ai_server_request_duration_seconds",
                "gen_ai_server_time_to_first_token_seconds",
                "gen_ai_server_time_per_output_token_seconds",
                "http_server_request_duration_seconds",
                "gen_ai_execute_tool_duration_seconds",
            ]
        );
        let names: Vec<String> = calls(SemconvMode::V1_41).into_iter().chain(HEALTH.iter().map(metric_name)).collect();
        assert_eq!(
            names,
            [
                "gen_ai_client_operation_duration_seconds",
                "gen_ai_client_token_usage",
                "ollama_usage_cache_read_input_tokens_total",
                "gen_ai_client_operation_time_to_first_chunk_seconds",
                "gen_ai_client_operation_time_per_output_chunk_seconds",
                "gen_ai_server_request_duration_seconds",
                "gen_ai_server_time_to_first_token_seconds",
                "gen_ai_server_time_per_output_token_seconds",
                "http_server_request_duration_seconds",
                "gen_ai_execute_tool_duration_seconds",
                "ollama_tracer_capture_packets_total",
                "ollama_tracer_capture_bytes_total",
                "ollama_tracer_capture_kernel_drops_total",
                "ollama_tracer_capture_malformed_total",
                "ollama_tracer_reassembly_connections_total",
                "ollama_tracer_reassembly_gaps_total",
                "ollama_tracer_reassembly_gap_bytes_total",
                "ollama_tracer_http_parse_errors_total",
                "ollama_tracer_calls_total",
                "ollama_tracer_calls_incomplete_total",
                "ollama_tracer_spans_total",
                "ollama_tracer_export_queue_spans",
                "ollama_tracer_export_queue_bytes",
                "ollama_tracer_export_spans_total",
                "ollama_tracer_export_dropped_total",
                "ollama_tracer_export_failures_total",
                "ollama_tracer_limits_overflows_total",
            ]
        );
        assert_eq!(sanitize("a.b-c..d", false), "a_b_c_d");
        assert_eq!(sanitize("9lives", false), "_lives");
    }
}
