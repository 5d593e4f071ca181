//! Where things go: stdout (the `--output` flag, `OTEL_TRACES_EXPORTER=console`), which signals
//! go to OTLP (flags, `OTEL_*_EXPORTER`, endpoints, `OTEL_SDK_DISABLED`), the Prometheus endpoint.

use std::net::SocketAddr;

use super::env::Environment;
use super::parse::{bracket_v6, parse_listen_addr};
use super::{CliExport, ConfigError, DEFAULT_PROMETHEUS_PORT, StdoutChoice};
use crate::transport::Signal;

/// What the flags and the environment ask for.
pub(super) struct Destinations {
    pub stdout: StdoutChoice,
    pub traces: bool,
    pub metrics: bool,
    pub console_metrics: bool,
    /// `OTEL_METRICS_EXPORTER` names `prometheus`.
    pub prometheus_from_env: bool,
}

/// A comma-separated `OTEL_*_EXPORTER` list, lower-cased, values not in `allowed` warned about
/// and left out; `None` when unset.
fn exporters(env: &Environment, var: &str, allowed: &[&str], warnings: &mut Vec<String>) -> Option<Vec<String>> {
    let raw = env.get(var)?;
    let mut out = Vec::new();
    for v in raw.split(',').map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty()) {
        if allowed.contains(&v.as_str()) {
            out.push(v);
        } else {
            warnings.push(format!("{var}: `{v}` is not supported here (ignored; supported: {})", allowed.join(", ")));
        }
    }
    Some(out)
}

pub(super) fn destinations(
    cli: &CliExport,
    env: &Environment,
    warnings: &mut Vec<String>,
) -> Result<Destinations, ConfigError> {
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

    let traces_exporters = exporters(env, "OTEL_TRACES_EXPORTER", &["otlp", "console", "none"], warnings);
    let metrics_exporters =
        exporters(env, "OTEL_METRICS_EXPORTER", &["otlp", "console", "prometheus", "none"], warnings);
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
    let traces = cli_otlp
        || (cli_endpoint && !excluded(&traces_exporters))
        || (!sdk_disabled && env_wants(&traces_exporters, Signal::Traces));
    let metrics = (cli_endpoint && !excluded(&metrics_exporters))
        || (!sdk_disabled && env_wants(&metrics_exporters, Signal::Metrics));
    Ok(Destinations {
        stdout,
        traces,
        metrics,
        console_metrics: !sdk_disabled && has(&metrics_exporters, "console"),
        prometheus_from_env: !sdk_disabled && has(&metrics_exporters, "prometheus"),
    })
}

/// The Prometheus endpoint: `--metrics-addr`, else `OTEL_EXPORTER_PROMETHEUS_HOST`/`_PORT` when
/// the environment asks for it.
pub(super) fn prometheus(
    cli: &CliExport,
    env: &Environment,
    from_env: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<SocketAddr>, ConfigError> {
    if let Some(a) = &cli.metrics_addr {
        let addr =
            parse_listen_addr(a).map_err(|message| ConfigError::Invalid { name: "--metrics-addr".into(), message })?;
        return Ok(Some(addr));
    }
    if !from_env {
        return Ok(None);
    }
    let host = env.get("OTEL_EXPORTER_PROMETHEUS_HOST").unwrap_or("localhost");
    let port =
        env.get("OTEL_EXPORTER_PROMETHEUS_PORT").map_or_else(|| DEFAULT_PROMETHEUS_PORT.to_string(), str::to_string);
    match parse_listen_addr(&format!("{}:{port}", bracket_v6(host))) {
        Ok(a) => Ok(Some(a)),
        Err(m) => {
            warnings.push(format!("OTEL_EXPORTER_PROMETHEUS_HOST/PORT: {m} (ignored)"));
            Ok(None)
        }
    }
}
