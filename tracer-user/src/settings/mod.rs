//! Settings from the environment and the command line (which wins), resolved once at start.
//! Every environment variable the tracer honours is read here ([`Environment`]), nowhere else.
//!
//! Export, honoured as the OpenTelemetry SDKs do: `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` (`otlp`,
//! `console`, `none`; metrics also `prometheus`), `OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]ENDPOINT`,
//! `…_PROTOCOL` (`grpc`, `http/protobuf`, `http/json`), `…_HEADERS`, `…_TIMEOUT`, `…_COMPRESSION`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_MAX_QUEUE_SIZE`,
//! `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_METRIC_EXPORT_INTERVAL`,
//! `OTEL_METRIC_EXPORT_TIMEOUT`, `OTEL_EXPORTER_PROMETHEUS_HOST` / `_PORT`.
//!
//! Besides: `OTEL_TRACES_SAMPLER` / `_ARG` (sampling),
//! `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` (content capture), `OLLAMA_TRACER_LOG`
//! (log filter), `K8S_NODE_NAME` and `KUBERNETES_SERVICE_HOST` (Kubernetes attribution).
//!
//! An invalid environment value is reported (as a warning by the caller) and ignored, as the
//! OpenTelemetry specification asks; an invalid command-line value is an error.

mod env;
mod otlp;
mod parse;
mod resource;

use std::net::SocketAddr;
use std::time::Duration;

use tracer_core::span::KeyValue;

pub use self::env::Environment;
use self::parse::{bracket_v6, check_url, millis};
pub use self::parse::{parse_key_values, parse_listen_addr};
pub use self::resource::resource;
use crate::export::otlp::QueueConfig;
use crate::transport::{OtlpTarget, Protocol, Signal};

/// Default Prometheus endpoint port (the port OpenTelemetry assigns to Prometheus exporters).
pub const DEFAULT_PROMETHEUS_PORT: u16 = 9464;

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

/// The export settings from the command line and the environment (read once, before).
pub fn resolve(cli: &CliExport, env: &Environment) -> Result<(ExportSettings, Vec<String>), ConfigError> {
    let mut warnings = Vec::new();
    let sdk_disabled = env.get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));

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
        let raw = env.get(var)?;
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
        env.get(&format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", signal.env())).is_some()
            || env.get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
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

    let cli_headers = otlp::cli_headers(cli)?;
    if let Some(e) = &cli.otlp_endpoint {
        check_url(e).map_err(|message| ConfigError::Invalid { name: "--otlp-endpoint".into(), message })?;
    }

    let traces = traces_on.then(|| otlp::target(Signal::Traces, cli, &cli_headers, env, &mut warnings));
    let metrics = metrics_on.then(|| otlp::target(Signal::Metrics, cli, &cli_headers, env, &mut warnings));

    let prometheus = match &cli.metrics_addr {
        Some(a) => Some(
            parse_listen_addr(a).map_err(|message| ConfigError::Invalid { name: "--metrics-addr".into(), message })?,
        ),
        None if !sdk_disabled && has(&metrics_exporters, "prometheus") => {
            let host =
                env.get("OTEL_EXPORTER_PROMETHEUS_HOST").map(str::to_string).unwrap_or_else(|| "localhost".into());
            let port = env
                .get("OTEL_EXPORTER_PROMETHEUS_PORT")
                .map(str::to_string)
                .unwrap_or_else(|| DEFAULT_PROMETHEUS_PORT.to_string());
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
        let v = env.get(var)?;
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
    if let Some(d) = millis(env, &["OTEL_BSP_SCHEDULE_DELAY"], &mut warnings) {
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

    let metric_interval = millis(env, &["OTEL_METRIC_EXPORT_INTERVAL"], &mut warnings)
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_millis(1));
    let metric_timeout = millis(env, &["OTEL_METRIC_EXPORT_TIMEOUT"], &mut warnings).unwrap_or(Duration::from_secs(30));

    let resource_attributes = match env.get("OTEL_RESOURCE_ATTRIBUTES") {
        Some(v) => match parse_key_values(v) {
            Ok(kvs) => kvs.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect(),
            Err(e) => {
                // The spec: on any error, discard the whole variable.
                warnings.push(format!("OTEL_RESOURCE_ATTRIBUTES: {e} (whole value ignored)"));
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    // The flag, else OTEL_SERVICE_NAME (else OTEL_RESOURCE_ATTRIBUTES' service.name, else
    // `ollama`: see [`resource`]).
    let service_name =
        cli.service_name.clone().or_else(|| env.get("OTEL_SERVICE_NAME").map(str::to_string)).filter(|s| !s.is_empty());

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Compression, Protocol};

    fn run(cli: CliExport, env: &[(&str, &str)]) -> (ExportSettings, Vec<String>) {
        resolve(&cli, &Environment::from_pairs(env.iter().copied())).unwrap()
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
        assert!(resolve(&cli, &Environment::default()).is_err());
        let cli = CliExport { outputs: vec!["jsn".into()], ..Default::default() };
        assert!(resolve(&cli, &Environment::default()).is_err());
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
