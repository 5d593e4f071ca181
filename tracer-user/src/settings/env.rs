//! The process environment, read once at start: every variable the tracer honours is looked up
//! here and nowhere else, so a run is configured by what this snapshot held (and tests pass
//! their own).

use std::collections::BTreeMap;

/// Prefixes and names of the variables the tracer reads; others are not kept.
const PREFIXES: [&str; 1] = ["OTEL_"];
const NAMES: [&str; 3] = [
    // Log filter (tracing's EnvFilter syntax), default `info`.
    "OLLAMA_TRACER_LOG",
    // This node's name in Kubernetes (the DaemonSet sets it from the downward API).
    "K8S_NODE_NAME",
    // Set by the kubelet in every pod: in-cluster API access is possible.
    "KUBERNETES_SERVICE_HOST",
];

/// The environment switch the OpenTelemetry GenAI instrumentations use for content capture.
pub const CAPTURE_CONTENT_ENV: &str = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";

/// A snapshot of the variables the tracer honours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    /// The current process's variables (those with non-UTF-8 values are left out).
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))))
    }

    /// Given variables (tests); as from the process, only the honoured ones are kept.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| PREFIXES.iter().any(|p| k.starts_with(p)) || NAMES.contains(&k.as_str()))
            .collect();
        Environment { vars }
    }

    /// A variable's value, trimmed; unset and empty are the same.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// `OLLAMA_TRACER_LOG`.
    pub fn log_filter(&self) -> Option<&str> {
        self.get("OLLAMA_TRACER_LOG")
    }

    /// `K8S_NODE_NAME`.
    pub fn node_name(&self) -> Option<&str> {
        self.get("K8S_NODE_NAME")
    }

    /// Whether this runs in a Kubernetes pod (`KUBERNETES_SERVICE_HOST` is set).
    pub fn in_cluster(&self) -> bool {
        self.get("KUBERNETES_SERVICE_HOST").is_some()
    }

    /// `OTEL_SEMCONV_STABILITY_OPT_IN` (comma-separated): whether it holds
    /// `gen_ai_latest_experimental`, the switch the GenAI instrumentations use for the latest
    /// (development) conventions.
    pub fn genai_latest(&self) -> bool {
        self.get("OTEL_SEMCONV_STABILITY_OPT_IN")
            .is_some_and(|v| v.split(',').any(|o| o.trim().eq_ignore_ascii_case("gen_ai_latest_experimental")))
    }

    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
    pub fn sampler(&self) -> (Option<&str>, Option<&str>) {
        (self.get("OTEL_TRACES_SAMPLER"), self.get("OTEL_TRACES_SAMPLER_ARG"))
    }

    /// Whether [`CAPTURE_CONTENT_ENV`] asks for content, and a warning when its value is not
    /// understood (then it does not).
    pub fn capture_content(&self) -> (bool, Option<String>) {
        let Some(v) = self.get(CAPTURE_CONTENT_ENV) else { return (false, None) };
        match v.to_ascii_lowercase().as_str() {
            // Content goes on spans only; an events-only request is honoured the same way
            // rather than dropped, since spans are the only place we emit it.
            "true" | "1" | "span_only" | "span_and_event" | "event_only" => (true, None),
            "false" | "0" | "no_content" => (false, None),
            other => {
                (false, Some(format!("{CAPTURE_CONTENT_ENV}={other:?} is not understood; content is not captured")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_honoured_variables_are_kept_and_blank_is_unset() {
        let env = Environment::from_pairs([
            ("OTEL_SERVICE_NAME", " chat "),
            ("HOME", "/root"),
            ("K8S_NODE_NAME", ""),
            (CAPTURE_CONTENT_ENV, "SPAN_ONLY"),
        ]);
        assert_eq!(env.get("OTEL_SERVICE_NAME"), Some("chat"));
        assert_eq!(env.get("HOME"), None);
        assert_eq!(env.node_name(), None);
        assert_eq!(env.capture_content(), (true, None));
        let odd = Environment::from_pairs([(CAPTURE_CONTENT_ENV, "maybe")]);
        assert!(!odd.capture_content().0 && odd.capture_content().1.is_some());
    }
}
