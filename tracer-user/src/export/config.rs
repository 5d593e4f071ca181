//! Export configuration, resolved once from the standard OpenTelemetry environment variables and
//! the command line (which wins).
//!
//! Honoured: `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` (`otlp`,
//! `console`, `none`; metrics also `prometheus`), `OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]ENDPOINT`,
//! `…_PROTOCOL` (`grpc`, `http/protobuf`, `http/json`), `…_HEADERS`, `…_TIMEOUT`, `…_COMPRESSION`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_MAX_QUEUE_SIZE`,
//! `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_METRIC_EXPORT_INTERVAL`,
//! `OTEL_METRIC_EXPORT_TIMEOUT`, `OTEL_EXPORTER_PROMETHEUS_HOST` / `_PORT`.
//!
//! An invalid environment value is reported (as a warning by the caller) and ignored, as the
//! OpenTelemetry specification asks; an invalid command-line value is an error.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use crate::span::KeyValue;

/// Default Prometheus endpoint port (the port OpenTelemetry assigns to Prometheus exporters).
pub const DEFAULT_PROMETHEUS_PORT: u16 = 9464;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318";

/// OTLP wire protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Ok(Protocol::HttpJson),
            other => Err(format!("unknown OTLP protocol `{other}` (expected grpc, http/protobuf or http/json)")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        })
    }
}

/// Payload compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
}

/// Which telemetry signal a setting is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn env(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
        }
    }
    /// OTLP/HTTP path appended to a base endpoint.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
        }
    }
}

/// Where and how one signal is sent.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpTarget {
    /// Full URL: for HTTP including the signal path, for gRPC the server's root.
    pub url: String,
    pub protocol: Protocol,
    /// Lower-case names; applied last, so they win over anything the SDK adds.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub compression: Option<Compression>,
}

/// The span export queue: the only buffer between the pipeline and a collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// Most spans queued (in-flight batch included); more are dropped and counted.
    pub max_spans: usize,
    /// Most bytes queued (approximate in-memory size of the queued spans, in-flight included).
    pub max_bytes: usize,
    /// Spans per export request.
    pub batch_size: usize,
    /// Longest a span waits for its batch to fill.
    pub schedule_delay: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_spans: 2048,
            max_bytes: 16 << 20,
            batch_size: 512,
            schedule_delay: Duration::from_millis(1000),
        }
    }
}

/// What goes to stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdoutChoice {
    Text,
    Json,
    None,
}

/// Everything the export side needs, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportSettings {
    pub stdout: StdoutChoice,
    pub traces: Option<OtlpTarget>,
    pub metrics: Option<OtlpTarget>,
    /// `OTEL_METRICS_EXPORTER=console`: the metrics, in Prometheus text, on stdout at exit.
    pub console_metrics: bool,
    pub prometheus: Option<SocketAddr>,
    pub queue: QueueConfig,
    pub metric_interval: Duration,
    pub metric_timeout: Duration,
    /// `service.name`: command line or `OTEL_SERVICE_NAME`, else from `OTEL_RESOURCE_ATTRIBUTES`,
    /// else `ollama`.
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, decoded.
    pub resource_attributes: Vec<KeyValue>,
    /// `--compat openinference`: OpenInference mirrors of the GenAI attributes.
    pub openinference: bool,
}

/// Command-line values; `None` / empty = not given.
#[derive(Clone, Debug, Default)]
pub struct CliExport {
    /// `--output`, each value split at commas.
    pub outputs: Vec<String>,
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<Protocol>,
    /// `--otlp-header K=V`.
    pub otlp_headers: Vec<String>,
    pub otlp_timeout: Option<Duration>,
    pub metrics_addr: Option<String>,
    pub queue_spans: Option<usize>,
    pub queue_bytes: Option<usize>,
    pub service_name: Option<String>,
    pub compat: Vec<String>,
}

/// A configuration error (command line), or a warning about an ignored environment value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--output: {0}")]
    Output(String),
    #[error("{name}: {message}")]
    Invalid { name: String, message: String },
}

/// Reads the environment through `get` (tests pass a map).
pub fn resolve(
    cli: &CliExport,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<(ExportSettings, Vec<String>), ConfigError> {
    let mut warnings = Vec::new();
    let env = |name: &str| get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let sdk_disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));

    // --output: stdout format, plus `otlp`.
    let mut stdout = None;
    let mut cli_otlp = false;
    for v in cli.outputs.iter().flat_map(|o| o.split(',')).map(str::trim).filter(|v| !v.is_empty()) {
        let choice = match v {
            "text" => StdoutChoice::Text,
            "json" => StdoutChoice::Json,
            "none" => StdoutChoice::None,
            "otlp" => {
                cli_otlp = true;
                continue;
            }
            other => return Err(ConfigError::Output(format!("unknown output `{other}` (text, json, none, otlp)"))),
        };
        if stdout.is_some_and(|s| s != choice) {
            return Err(ConfigError::Output("text, json and none are exclusive (all three are stdout)".into()));
        }
        stdout = Some(choice);
    }

    let exporters = |var: &str, allowed: &[&str], warnings: &mut Vec<String>| -> Option<Vec<String>> {
        let raw = env(var)?;
        let mut out = Vec::new();
        for v in raw.split(',').map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty()) {
            if allowed.contains(&v.as_str()) {
                out.push(v);
            } else {
                warnings
                    .push(format!("{var}: `{v}` is not supported here (ignored; supported: {})", allowed.join(", ")));
            }
        }
        Some(out)
    };
    let traces_exporters = exporters("OTEL_TRACES_EXPORTER", &["otlp", "console", "none"], &mut warnings);
    let metrics_exporters =
        exporters("OTEL_METRICS_EXPORTER", &["otlp", "console", "prometheus", "none"], &mut warnings);
    let has = |list: &Option<Vec<String>>, v: &str| list.as_ref().is_some_and(|l| l.iter().any(|x| x == v));

    let stdout = stdout.unwrap_or(if !sdk_disabled && has(&traces_exporters, "console") {
        StdoutChoice::Json
    } else {
        StdoutChoice::Text
    });

    // A signal goes to OTLP when asked on the command line, or when the environment names an
    // endpoint (or `otlp` explicitly) and does not say `none` — unless the SDK is disabled.
    let endpoint_env = |signal: Signal| {
        env(&format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", signal.env())).is_some()
            || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
    };
    let env_wants = |list: &Option<Vec<String>>, signal: Signal| match list {
        Some(l) => l.iter().any(|x| x == "otlp"),
        None => endpoint_env(signal),
    };
    // `--otlp-endpoint` turns both signals on, unless the signal's OTEL_*_EXPORTER names others
    // only (e.g. MLflow: `OTEL_METRICS_EXPORTER=none`, it has no metrics endpoint).
    let cli_endpoint = cli.otlp_endpoint.is_some();
    let excluded =
        |list: &Option<Vec<String>>| !sdk_disabled && list.as_ref().is_some_and(|l| !l.iter().any(|x| x == "otlp"));
    let traces_on = cli_otlp
        || (cli_endpoint && !excluded(&traces_exporters))
        || (!sdk_disabled && env_wants(&traces_exporters, Signal::Traces));
    let metrics_on = (cli_endpoint && !excluded(&metrics_exporters))
        || (!sdk_disabled && env_wants(&metrics_exporters, Signal::Metrics));

    let cli_headers = cli
        .otlp_headers
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
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(e) = &cli.otlp_endpoint {
        check_url(e).map_err(|message| ConfigError::Invalid { name: "--otlp-endpoint".into(), message })?;
    }

    let target = |signal: Signal, warnings: &mut Vec<String>| -> OtlpTarget {
        let s = signal.env();
        let protocol = cli.otlp_protocol.unwrap_or_else(|| {
            for var in [format!("OTEL_EXPORTER_OTLP_{s}_PROTOCOL"), "OTEL_EXPORTER_OTLP_PROTOCOL".to_string()] {
                if let Some(v) = env(&var) {
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
            && let Some(e) = env(&signal_var)
        {
            match check_url(&with_scheme(&e)) {
                Ok(()) => url = Some(with_scheme(&e)),
                Err(m) => warnings.push(format!("{signal_var}: {m} (ignored)")),
            }
        }
        if url.is_none()
            && let Some(e) = env("OTEL_EXPORTER_OTLP_ENDPOINT")
        {
            match check_url(&with_scheme(&e)) {
                Ok(()) => url = Some(base(&with_scheme(&e))),
                Err(m) => warnings.push(format!("OTEL_EXPORTER_OTLP_ENDPOINT: {m} (ignored)")),
            }
        }
        let url = url.unwrap_or_else(|| {
            base(if protocol == Protocol::Grpc { DEFAULT_GRPC_ENDPOINT } else { DEFAULT_HTTP_ENDPOINT })
        });

        // The signal's own variable replaces the generic one as a whole (as every SDK does);
        // the command line then overrides name by name.
        let header_var = format!("OTEL_EXPORTER_OTLP_{s}_HEADERS");
        let mut headers = match env(&header_var)
            .map(|v| (header_var.clone(), v))
            .or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS").map(|v| ("OTEL_EXPORTER_OTLP_HEADERS".to_string(), v)))
        {
            Some((var, v)) => match parse_key_values(&v) {
                Ok(kvs) => {
                    let mut out = Vec::new();
                    for (k, v) in kvs {
                        let k = k.to_ascii_lowercase();
                        if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                            || http::HeaderValue::from_str(&v).is_err()
                        {
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
        for (k, v) in &cli_headers {
            headers.retain(|(n, _)| n != k);
            headers.push((k.clone(), v.clone()));
        }

        let timeout = cli.otlp_timeout.unwrap_or_else(|| {
            millis(&env, &[&format!("OTEL_EXPORTER_OTLP_{s}_TIMEOUT"), "OTEL_EXPORTER_OTLP_TIMEOUT"], warnings)
                .unwrap_or(DEFAULT_TIMEOUT)
        });
        let mut compression = None;
        for var in [format!("OTEL_EXPORTER_OTLP_{s}_COMPRESSION"), "OTEL_EXPORTER_OTLP_COMPRESSION".to_string()] {
            if let Some(v) = env(&var) {
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
    };
    let traces = traces_on.then(|| target(Signal::Traces, &mut warnings));
    let metrics = metrics_on.then(|| target(Signal::Metrics, &mut warnings));

    let prometheus = match &cli.metrics_addr {
        Some(a) => Some(
            parse_listen_addr(a).map_err(|message| ConfigError::Invalid { name: "--metrics-addr".into(), message })?,
        ),
        None if !sdk_disabled && has(&metrics_exporters, "prometheus") => {
            let host = env("OTEL_EXPORTER_PROMETHEUS_HOST").unwrap_or_else(|| "localhost".into());
            let port = env("OTEL_EXPORTER_PROMETHEUS_PORT").unwrap_or_else(|| DEFAULT_PROMETHEUS_PORT.to_string());
            match parse_listen_addr(&format!("{}:{port}", bracket_v6(&host))) {
                Ok(a) => Some(a),
                Err(m) => {
                    warnings.push(format!("OTEL_EXPORTER_PROMETHEUS_HOST/PORT: {m} (ignored)"));
                    None
                }
            }
        }
        None => None,
    };

    let mut queue = QueueConfig::default();
    let count = |var: &str, warnings: &mut Vec<String>| -> Option<usize> {
        let v = env(var)?;
        match v.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                warnings.push(format!("{var}: `{v}` is not a positive integer (ignored)"));
                None
            }
        }
    };
    if let Some(n) = count("OTEL_BSP_MAX_QUEUE_SIZE", &mut warnings) {
        queue.max_spans = n;
    }
    if let Some(n) = count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &mut warnings) {
        queue.batch_size = n;
    }
    if let Some(d) = millis(&env, &["OTEL_BSP_SCHEDULE_DELAY"], &mut warnings) {
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

    let metric_interval = millis(&env, &["OTEL_METRIC_EXPORT_INTERVAL"], &mut warnings)
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_millis(1));
    let metric_timeout =
        millis(&env, &["OTEL_METRIC_EXPORT_TIMEOUT"], &mut warnings).unwrap_or(Duration::from_secs(30));

    let resource_attributes = match env("OTEL_RESOURCE_ATTRIBUTES") {
        Some(v) => match parse_key_values(&v) {
            Ok(kvs) => kvs.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect(),
            Err(e) => {
                // The spec: on any error, discard the whole variable.
                warnings.push(format!("OTEL_RESOURCE_ATTRIBUTES: {e} (whole value ignored)"));
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let service_name = cli.service_name.clone().filter(|s| !s.is_empty());

    let mut openinference = false;
    for c in cli.compat.iter().flat_map(|c| c.split(',')).map(str::trim).filter(|c| !c.is_empty()) {
        match c {
            "openinference" => openinference = true,
            other => {
                return Err(ConfigError::Invalid {
                    name: "--compat".into(),
                    message: format!("unknown `{other}` (expected openinference)"),
                });
            }
        }
    }

    let settings = ExportSettings {
        stdout,
        traces,
        metrics,
        console_metrics: !sdk_disabled && has(&metrics_exporters, "console"),
        prometheus,
        queue,
        metric_interval,
        metric_timeout,
        service_name,
        resource_attributes,
        openinference,
    };
    Ok((settings, warnings))
}

/// First of `vars` that is set, as whole milliseconds.
fn millis(env: &dyn Fn(&str) -> Option<String>, vars: &[&str], warnings: &mut Vec<String>) -> Option<Duration> {
    for var in vars {
        if let Some(v) = env(var) {
            match v.parse::<u64>() {
                Ok(ms) => return Some(Duration::from_millis(ms)),
                Err(_) => warnings.push(format!("{var}: `{v}` is not a whole number of milliseconds (ignored)")),
            }
        }
    }
    None
}

/// `host:port` without a scheme is taken as plain `http://`.
fn with_scheme(url: &str) -> String {
    if url.contains("://") { url.to_string() } else { format!("http://{url}") }
}

fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = with_scheme(url).parse().map_err(|e| format!("invalid URL `{url}`: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("`{url}`: the scheme must be http or https")),
    }
    if uri.authority().is_none() {
        return Err(format!("`{url}` has no host"));
    }
    Ok(())
}

fn bracket_v6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() }
}

/// `PORT`, `HOST:PORT` or `[V6]:PORT`; a bare port listens on 127.0.0.1 (never on every
/// interface unless asked: the metrics describe the host's traffic).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("`{s}` is not PORT or HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| format!("`{port}` is not a port"))?;
    if host == "localhost" {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host}` has no address"))
}

/// `k1=v1,k2=v2` with percent-encoded values (W3C Baggage octets), as `OTEL_RESOURCE_ATTRIBUTES`
/// and `OTEL_EXPORTER_OTLP_HEADERS` are written.
pub fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| format!("`{item}` is not key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("`{item}` has an empty key"));
        }
        let v = percent_decode(v.trim()).ok_or_else(|| format!("`{item}`: invalid percent-encoding"))?;
        out.push((percent_decode(k).ok_or_else(|| format!("`{item}`: invalid percent-encoding"))?, v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(cli: CliExport, env: &[(&str, &str)]) -> (ExportSettings, Vec<String>) {
        let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        resolve(&cli, &|k| map.get(k).cloned()).unwrap()
    }

    #[test]
    fn nothing_configured_means_no_export() {
        let (s, w) = run(CliExport::default(), &[]);
        assert_eq!(s.stdout, StdoutChoice::Text);
        assert!(s.traces.is_none() && s.metrics.is_none() && s.prometheus.is_none());
        assert!(w.is_empty());
    }

    #[test]
    fn an_endpoint_in_the_environment_turns_export_on() {
        let (s, _) = run(CliExport::default(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]);
        let t = s.traces.unwrap();
        assert_eq!(t.url, "http://collector:4318/v1/traces");
        assert_eq!(t.protocol, Protocol::HttpProtobuf);
        assert_eq!(t.timeout, Duration::from_secs(10));
        assert_eq!(s.metrics.unwrap().url, "http://collector:4318/v1/metrics");
    }

    #[test]
    fn signal_endpoint_is_used_as_is_and_grpc_gets_no_path() {
        let (s, _) = run(
            CliExport::default(),
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://mlflow:5000/v1/traces"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ],
        );
        let t = s.traces.unwrap();
        assert_eq!((t.url.as_str(), t.protocol), ("http://mlflow:5000/v1/traces", Protocol::Grpc));
        let m = s.metrics.unwrap();
        assert_eq!((m.url.as_str(), m.protocol), ("http://c:4317/v1/metrics", Protocol::HttpJson));
    }

    #[test]
    fn exporters_none_and_sdk_disabled_win_over_endpoints_but_not_over_flags() {
        let (s, _) = run(
            CliExport::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_METRICS_EXPORTER", "none")],
        );
        assert!(s.traces.is_some() && s.metrics.is_none());
        let (s, _) = run(
            CliExport::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_SDK_DISABLED", "true")],
        );
        assert!(s.traces.is_none() && s.metrics.is_none());
        let cli = CliExport { otlp_endpoint: Some("http://x:4318".into()), ..Default::default() };
        let (s, _) = run(cli.clone(), &[("OTEL_SDK_DISABLED", "true")]);
        assert_eq!(s.traces.unwrap().url, "http://x:4318/v1/traces");
        // A signal whose exporter list leaves OTLP out stays off, even with the flag.
        let (s, _) = run(cli.clone(), &[("OTEL_METRICS_EXPORTER", "none")]);
        assert!(s.traces.is_some() && s.metrics.is_none());
        let cli = CliExport { outputs: vec!["otlp".into()], ..cli };
        let (s, _) = run(cli, &[("OTEL_TRACES_EXPORTER", "none")]);
        assert!(s.traces.is_some(), "--output otlp is explicit");
    }

    #[test]
    fn console_and_otlp_exporters() {
        let (s, _) = run(
            CliExport::default(),
            &[("OTEL_TRACES_EXPORTER", "console,otlp"), ("OTEL_METRICS_EXPORTER", "console")],
        );
        assert_eq!(s.stdout, StdoutChoice::Json);
        assert_eq!(s.traces.unwrap().url, "http://localhost:4318/v1/traces");
        assert!(s.console_metrics && s.metrics.is_none());
    }

    #[test]
    fn output_flag_combines_stdout_and_otlp() {
        let cli = CliExport { outputs: vec!["text,otlp".into()], ..Default::default() };
        let (s, _) = run(cli, &[]);
        assert_eq!(s.stdout, StdoutChoice::Text);
        assert!(s.traces.is_some());
        assert!(s.metrics.is_none(), "--output otlp is about spans");
        let cli = CliExport { outputs: vec!["json".into(), "otlp".into()], ..Default::default() };
        assert_eq!(run(cli, &[]).0.stdout, StdoutChoice::Json);
        let cli = CliExport { outputs: vec!["json,text".into()], ..Default::default() };
        assert!(resolve(&cli, &|_| None).is_err());
        let cli = CliExport { outputs: vec!["jsn".into()], ..Default::default() };
        assert!(resolve(&cli, &|_| None).is_err());
    }

    #[test]
    fn headers_signal_replaces_generic_and_flags_override() {
        let cli = CliExport { otlp_headers: vec!["X-Mlflow-Experiment-Id=7".into()], ..Default::default() };
        let (s, _) = run(
            cli,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-mlflow-experiment-id=1, Authorization=Basic%20abc%3D"),
            ],
        );
        assert_eq!(
            s.traces.unwrap().headers,
            vec![("authorization".into(), "Basic abc=".into()), ("x-mlflow-experiment-id".into(), "7".into())]
        );
        assert_eq!(
            s.metrics.unwrap().headers,
            vec![("a".into(), "1".into()), ("b".into(), "2".into()), ("x-mlflow-experiment-id".into(), "7".into())]
        );
    }

    #[test]
    fn timeouts_compression_and_bad_values() {
        let (s, w) = run(
            CliExport::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "soon"),
                ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
            ],
        );
        let t = s.traces.unwrap();
        assert_eq!(t.timeout, Duration::from_millis(2500));
        assert_eq!(t.compression, Some(Compression::Gzip));
        assert_eq!(t.protocol, Protocol::HttpProtobuf);
        let m = s.metrics.unwrap();
        assert_eq!(m.timeout, Duration::from_millis(2500), "the bad metrics value falls back to the generic one");
        assert_eq!(m.compression, None);
        assert_eq!((s.queue.max_spans, s.queue.batch_size), (100, 100));
        assert_eq!(w.len(), 3, "{w:?}");
    }

    #[test]
    fn resource_attributes_are_percent_decoded_or_discarded_whole() {
        let (s, w) =
            run(CliExport::default(), &[("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=a%2Cb%20c")]);
        assert_eq!(
            s.resource_attributes,
            vec![KeyValue::new("deployment.environment", "prod"), KeyValue::new("team", "a,b c")]
        );
        assert!(w.is_empty());
        let (s, w) = run(CliExport::default(), &[("OTEL_RESOURCE_ATTRIBUTES", "a=1,broken,c=3")]);
        assert!(s.resource_attributes.is_empty());
        assert_eq!(w.len(), 1);
        let (s, _) = run(CliExport::default(), &[("OTEL_RESOURCE_ATTRIBUTES", "a=%zz")]);
        assert!(s.resource_attributes.is_empty());
    }

    #[test]
    fn prometheus_address() {
        assert_eq!(parse_listen_addr("9464").unwrap(), "127.0.0.1:9464".parse().unwrap());
        assert_eq!(parse_listen_addr("0.0.0.0:9000").unwrap(), "0.0.0.0:9000".parse().unwrap());
        assert_eq!(parse_listen_addr("[::1]:9000").unwrap(), "[::1]:9000".parse().unwrap());
        assert_eq!(parse_listen_addr("localhost:1").unwrap(), "127.0.0.1:1".parse().unwrap());
        assert!(parse_listen_addr("nope").is_err());
        let (s, _) = run(
            CliExport::default(),
            &[("OTEL_METRICS_EXPORTER", "prometheus"), ("OTEL_EXPORTER_PROMETHEUS_PORT", "9999")],
        );
        assert_eq!(s.prometheus, Some("127.0.0.1:9999".parse().unwrap()));
    }
}
