//! The server metrics against ground truth: real TCP traffic to the stand-in (which loads a model
//! its first call needs, 600 ms, lists what it has loaded on `/api/ps`, unloads on
//! `keep_alive: 0`), recorded by the tap (`testkit::server_traffic`), replayed with the metrics
//! printed at exit. Six streams to one model at once, an explicit load and unload, two `/api/ps`
//! answers: the in-flight peak, loads, unloads, residency, busy time and token sums are exactly
//! what the stand-in sent.

use std::collections::BTreeMap;

use serde_json::Value;
use testkit::output::*;
use testkit::server_traffic::{BURST, STREAMS};

/// A Prometheus text sample: name, labels, value.
pub fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let lines: Vec<std::io::Result<String>> = text.lines().map(|l| Ok(l.to_string())).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).expect("parses");
    scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let labels: BTreeMap<String, String> = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            Some((s.metric, labels, v))
        })
        .collect()
}

#[test]
fn server_metrics_are_what_the_server_sent() {
    let dir = std::env::temp_dir().join(format!("ollama-tracer-server-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let traffic = testkit::server_traffic::record(env!("CARGO_BIN_EXE_ollama-standin").as_ref(), &dir);
    let (path, truth) = (&traffic.pcap, &traffic.truth);
    let r = run(bin().args(["replay", "--output", "none"]).arg(path).env("OTEL_METRICS_EXPORTER", "console"));
    let _ = std::fs::remove_dir_all(&dir);
    let got = samples(&r.stdout);
    let find = |name: &str, labels: &[(&str, &str)]| -> Vec<f64> {
        got.iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, _, v)| *v)
            .collect()
    };
    let one = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let v = find(name, labels);
        assert_eq!(v.len(), 1, "{name} {labels:?}: {v:?}\n{}", r.stdout);
        v[0]
    };

    // In flight: all six streams at once at the peak, none at the end.
    let burst = [("gen_ai_request_model", BURST), ("gen_ai_operation_name", "chat"), ("ollama_api", "native")];
    assert_eq!(one("ollama_requests_in_flight_peak", &burst), STREAMS as f64);
    assert_eq!(find("ollama_requests_in_flight", &burst).iter().sum::<f64>(), 0.0);

    // Loads: the truth's, by reason; the explicit unload.
    let cold = truth.iter().filter(|t| t["load_duration"].as_u64().is_some_and(|d| d >= 500_000_000)).count();
    assert_eq!(cold, 1, "the first stream loaded the model");
    assert_eq!(
        one("ollama_model_loads_total", &[("gen_ai_request_model", BURST), ("ollama_load_reason", "cold")]),
        1.0
    );
    assert_eq!(
        one("ollama_model_loads_total", &[("gen_ai_request_model", "second"), ("ollama_load_reason", "request")]),
        1.0
    );
    assert_eq!(one("ollama_model_unloads_total", &[("gen_ai_request_model", "second")]), 1.0);
    let load = truth.iter().filter_map(|t| t["load_duration"].as_u64()).filter(|d| *d >= 500_000_000).sum::<u64>();
    assert_eq!(one("ollama_model_load_duration_seconds_sum", &[("gen_ai_request_model", BURST)]), load as f64 / 1e9);

    // Busy time: Ollama's durations summed per phase, to the nanosecond.
    for (phase, field) in
        [("load", "load_duration"), ("prompt_eval", "prompt_eval_duration"), ("eval", "eval_duration")]
    {
        let ns: u64 = truth.iter().filter(|t| t["model"] == BURST).filter_map(|t| t[field].as_u64()).sum();
        assert!(ns > 0, "{phase}");
        assert_eq!(
            one("ollama_model_busy_time_seconds_total", &[("gen_ai_request_model", BURST), ("ollama_phase", phase)]),
            ns as f64 / 1e9,
            "{phase}"
        );
    }

    // Residency: the last /api/ps answer (the first listed both models; then `second` went).
    let listings: Vec<&Value> = truth.iter().filter(|t| t["path"] == "/api/ps").map(|t| &t["models_listed"]).collect();
    assert_eq!(listings.len(), 2);
    assert_eq!(listings[0].as_array().unwrap().len(), 2);
    assert_eq!(*listings[1], serde_json::json!([BURST]));
    assert_eq!(one("ollama_models_loaded", &[("ollama_model", BURST), ("ollama_model_processor", "100% GPU")]), 1.0);
    assert!(find("ollama_models_loaded", &[("ollama_model", "second")]).is_empty(), "unloaded: gone");
    let memory =
        |loc: &str| one("ollama_model_memory_usage_bytes", &[("ollama_model", BURST), ("ollama_memory_location", loc)]);
    assert!(memory("total") >= (1u64 << 30) as f64 && memory("vram") == memory("total"));

    // Tokens by calling workload (no attribution in a replay: unknown), as sent.
    for (kind, field) in [("input", "input_tokens"), ("output", "output_tokens")] {
        let sent: u64 = truth.iter().filter(|t| t["model"] == BURST).filter_map(|t| t[field].as_u64()).sum();
        let labels = [
            ("ollama_tracer_client_workload", "unknown"),
            ("gen_ai_request_model", BURST),
            ("gen_ai_token_type", kind),
        ];
        assert_eq!(one("ollama_client_tokens_total", &labels), sent as f64, "{kind}");
    }
    // Waiting: one observation per native stream (the OpenAI calls report no Ollama durations).
    assert_eq!(one("ollama_request_wait_duration_seconds_count", &[("gen_ai_request_model", BURST)]), STREAMS as f64);
    println!(
        "{}",
        r.stdout.lines().filter(|l| l.starts_with("ollama_") && !l.contains("_bucket")).collect::<Vec<_>>().join("\n")
    );
}
