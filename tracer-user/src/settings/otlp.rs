//! Where and how each signal goes: the OTLP endpoint, protocol, headers, timeout and
//! compression of traces and metrics, from the flags and `OTEL_EXPORTER_OTLP_*`.

use std::time::Duration;

use super::env::Environment;
use super::parse::{check_url, millis, parse_key_values, with_scheme};
use super::{CliExport, ConfigError};
use crate::export::otlp::QueueConfig;
use crate::transport::{Compression, OtlpTarget, Protocol, Signal};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318";

/// `--otlp-header NAME=VALUE` values, checked.
pub(super) fn cli_headers(cli: &CliExport) -> Result<Vec<(String, String)>, ConfigError> {
    cli.otlp_headers
        .iter()
        .map(|h| {
            let (k, v) = h.split_once('=').ok_or_else(|| ConfigError::Invalid {
                name: "--otlp-header".into(),
                message: format!("`{h}` is not NAME=VALUE"),
            })?;
            let k = k.trim().to_ascii_lowercase();
            if k.is_empty() || http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(ConfigError::Invalid {
                    name: "--otlp-header".into(),
                    message: format!("bad header name `{k}`"),
                });
            }
            Ok((k, v.trim().to_string()))
        })
        .collect()
}

/// The target of one signal (the flags win, then the signal's own variables, then the generic
/// ones, then the defaults).
pub(super) fn target(
    signal: Signal,
    cli: &CliExport,
    cli_headers: &[(String, String)],
    env: &Environment,
    warnings: &mut Vec<String>,
) -> OtlpTarget {
    let s = signal.env();
    let protocol = cli.otlp_protocol.unwrap_or_else(|| {
        for var in [format!("OTEL_EXPORTER_OTLP_{s}_PROTOCOL"), "OTEL_EXPORTER_OTLP_PROTOCOL".to_string()] {
            if let Some(v) = env.get(&var) {
                match v.parse() {
                    Ok(p) => return p,
                    Err(e) => warnings.push(format!("{var}: {e} (ignored)")),
                }
            }
        }
        Protocol::HttpProtobuf
    });
    let signal_var = format!("OTEL_EXPORTER_OTLP_{s}_ENDPOINT");
    let base = |b: &str| match protocol {
        Protocol::Grpc => b.to_string(),
        _ => format!("{}{}", b.trim_end_matches('/'), signal.http_path()),
    };
    let mut url = None;
    if let Some(e) = &cli.otlp_endpoint {
        url = Some(base(&with_scheme(e)));
    }
    if url.is_none()
        && let Some(e) = env.get(&signal_var)
    {
        match check_url(&with_scheme(e)) {
            Ok(()) => url = Some(with_scheme(e)),
            Err(m) => warnings.push(format!("{signal_var}: {m} (ignored)")),
        }
    }
    if url.is_none()
        && let Some(e) = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    {
        match check_url(&with_scheme(e)) {
            Ok(()) => url = Some(base(&with_scheme(e))),
            Err(m) => warnings.push(format!("OTEL_EXPORTER_OTLP_ENDPOINT: {m} (ignored)")),
        }
    }
    let url = url.unwrap_or_else(|| {
        base(if protocol == Protocol::Grpc { DEFAULT_GRPC_ENDPOINT } else { DEFAULT_HTTP_ENDPOINT })
    });

    // The signal's own variable replaces the generic one as a whole (as every SDK does);
    // the command line then overrides name by name.
    let header_var = format!("OTEL_EXPORTER_OTLP_{s}_HEADERS");
    let mut headers = match env
        .get(&header_var)
        .map(|v| (header_var.clone(), v))
        .or_else(|| env.get("OTEL_EXPORTER_OTLP_HEADERS").map(|v| ("OTEL_EXPORTER_OTLP_HEADERS".to_string(), v)))
    {
        Some((var, v)) => match parse_key_values(v) {
            Ok(kvs) => {
                let mut out = Vec::new();
                for (k, v) in kvs {
                    let k = k.to_ascii_lowercase();
                    if http::HeaderName::from_bytes(k.as_bytes()).is_err() || http::HeaderValue::from_str(&v).is_err() {
                        warnings.push(format!("{var}: header `{k}` is not a valid HTTP header (ignored)"));
                        continue;
                    }
                    out.retain(|(n, _): &(String, String)| *n != k);
                    out.push((k, v));
                }
                out
            }
            Err(e) => {
                warnings.push(format!("{var}: {e} (ignored)"));
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    for (k, v) in cli_headers {
        headers.retain(|(n, _)| n != k);
        headers.push((k.clone(), v.clone()));
    }

    let timeout = cli.otlp_timeout.unwrap_or_else(|| {
        millis(env, &[&format!("OTEL_EXPORTER_OTLP_{s}_TIMEOUT"), "OTEL_EXPORTER_OTLP_TIMEOUT"], warnings)
            .unwrap_or(DEFAULT_TIMEOUT)
    });
    let mut compression = None;
    for var in [format!("OTEL_EXPORTER_OTLP_{s}_COMPRESSION"), "OTEL_EXPORTER_OTLP_COMPRESSION".to_string()] {
        if let Some(v) = env.get(&var) {
            match v.to_ascii_lowercase().as_str() {
                "gzip" => compression = Some(Compression::Gzip),
                "none" => {}
                other => {
                    warnings.push(format!("{var}: `{other}` not supported (gzip, none; ignored)"));
                    continue;
                }
            }
            break;
        }
    }
    OtlpTarget { url, protocol, headers, timeout, compression }
}

/// The span export queue: `OTEL_BSP_*`, then the flags.
pub(super) fn queue(cli: &CliExport, env: &Environment, warnings: &mut Vec<String>) -> QueueConfig {
    let mut queue = QueueConfig::default();
    let mut count = |var: &str| -> Option<usize> {
        let v = env.get(var)?;
        match v.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                warnings.push(format!("{var}: `{v}` is not a positive integer (ignored)"));
                None
            }
        }
    };
    if let Some(n) = count("OTEL_BSP_MAX_QUEUE_SIZE") {
        queue.max_spans = n;
    }
    if let Some(n) = count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
        queue.batch_size = n;
    }
    if let Some(d) = millis(env, &["OTEL_BSP_SCHEDULE_DELAY"], warnings) {
        queue.schedule_delay = d;
    }
    if let Some(n) = cli.queue_spans {
        queue.max_spans = n.max(1);
    }
    if let Some(n) = cli.queue_bytes {
        queue.max_bytes = n.max(1);
    }
    // The spec caps the batch at the queue size.
    queue.batch_size = queue.batch_size.min(queue.max_spans).max(1);
    queue
}

/// How often metrics are pushed, and how long a push may take.
pub(super) fn metric_schedule(env: &Environment, warnings: &mut Vec<String>) -> (Duration, Duration) {
    let interval = millis(env, &["OTEL_METRIC_EXPORT_INTERVAL"], warnings)
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_millis(1));
    let timeout = millis(env, &["OTEL_METRIC_EXPORT_TIMEOUT"], warnings).unwrap_or(Duration::from_secs(30));
    (interval, timeout)
}
