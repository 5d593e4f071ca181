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
//! Besides: `OTEL_TRACES_SAMPLER` / `_ARG` (sampling), `OTEL_SEMCONV_STABILITY_OPT_IN`
//! (`gen_ai_latest_experimental`: the latest GenAI conventions),
//! `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` (content capture), `OLLAMA_TRACER_LOG`
//! (log filter), `K8S_NODE_NAME` and `KUBERNETES_SERVICE_HOST` (Kubernetes attribution).
//!
//! An invalid environment value is reported (as a warning by the caller) and ignored, as the
//! OpenTelemetry specification asks; an invalid command-line value is an error.

mod env;
mod otlp;
mod outputs;
mod parse;
mod resource;

use std::net::SocketAddr;
use std::time::Duration;

use tracer_core::span::KeyValue;
use tracer_core::span::semconv::SemconvMode;

pub use self::env::Environment;
use self::parse::check_url;
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
    /// The GenAI conventions' version of span and metric names (and the scope's schema URL).
    pub semconv: SemconvMode,
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
    /// `--semconv`.
    pub semconv: Option<SemconvMode>,
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
    let to = outputs::destinations(cli, env, &mut warnings)?;
    let cli_headers = otlp::cli_headers(cli)?;
    if let Some(e) = &cli.otlp_endpoint {
        check_url(e).map_err(|message| ConfigError::Invalid { name: "--otlp-endpoint".into(), message })?;
    }
    let traces = to.traces.then(|| otlp::target(Signal::Traces, cli, &cli_headers, env, &mut warnings));
    let metrics = to.metrics.then(|| otlp::target(Signal::Metrics, cli, &cli_headers, env, &mut warnings));
    let prometheus = outputs::prometheus(cli, env, to.prometheus_from_env, &mut warnings)?;
    let (metric_interval, metric_timeout) = otlp::metric_schedule(env, &mut warnings);
    let settings = ExportSettings {
        stdout: to.stdout,
        traces,
        metrics,
        console_metrics: to.console_metrics,
        prometheus,
        queue: otlp::queue(cli, env, &mut warnings),
        metric_interval,
        metric_timeout,
        service_name: resource::service_name(cli, env),
        resource_attributes: resource::attributes(env, &mut warnings),
        openinference: compat(cli)?,
        // The flag, else the OpenTelemetry opt-in; v1.41 (what backends read) by default.
        semconv: cli.semconv.unwrap_or(if env.genai_latest() { SemconvMode::Latest } else { SemconvMode::V1_41 }),
    };
    Ok((settings, warnings))
}

/// `--compat`: extra attribute names for a backend.
fn compat(cli: &CliExport) -> Result<bool, ConfigError> {
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
    Ok(openinference)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Compression, Protocol};

    fn run(cli: CliExport, env: &[(&str, &str)]) -> (ExportSettings, Vec<String>) {
        resolve(&cli, &Environment::from_pairs(env.iter().copied())).unwrap()
    }

    #[test]
    fn latest_conventions_by_opt_in_or_flag() {
        assert_eq!(run(CliExport::default(), &[]).0.semconv, SemconvMode::V1_41);
        let opt_in = [("OTEL_SEMCONV_STABILITY_OPT_IN", "http, gen_ai_latest_experimental")];
        assert_eq!(run(CliExport::default(), &opt_in).0.semconv, SemconvMode::Latest);
        let flag = CliExport { semconv: Some(SemconvMode::V1_41), ..Default::default() };
        assert_eq!(run(flag, &opt_in).0.semconv, SemconvMode::V1_41, "the flag wins");
        let other = [("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")];
        assert_eq!(run(CliExport::default(), &other).0.semconv, SemconvMode::V1_41);
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
