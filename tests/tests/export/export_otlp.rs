//! OTLP export against a real receiver (gRPC and HTTP, from the OTLP definitions): a replay of a
//! real-client capture plus synthetic calls (remote parents, errors, a cancelled stream), and
//! every span and metric that arrives checked — ids, times, kind, status, attributes value and
//! type, resource, scope, headers — against the same run's JSON output and against metrics
//! recomputed here from those spans.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric::Data, number_data_point};
use serde_json::Value;
use testkit::otlp::{Receiver, Transport};
use testkit::output::*;

const SERVICE: &str = "ollama-export-test";

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

fn check_export(transport: Transport, protocol: &str) {
    let receiver = Receiver::start(transport).unwrap();
    let mix = testkit::bench_capture::export_mix(MIX_START_NS).unwrap();
    let mut cmd = bin();
    cmd.args(["replay", "--output", "json", "--id-seed", "7"])
        .arg(real_capture())
        .arg(&mix.path)
        .args(["--otlp-endpoint", &receiver.url(), "--otlp-protocol", protocol])
        .args(["--otlp-header", "x-cli=yes", "--otlp-header", "X-Override=cli"])
        .env("OTEL_SERVICE_NAME", SERVICE)
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=a%2Cb%20c,service.name=ignored")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-generic=g")
        .env("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-trace-key=abc%20d,x-override=env")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "7000")
        // Every call exported, the one whose traceparent says "not sampled" too (parent-based
        // sampling, the default, would drop it; tested elsewhere): the metrics recomputed here
        // from the spans then cover every call, as the tracer's own do.
        .env("OTEL_TRACES_SAMPLER", "always_on");
    if protocol == "http/json" {
        cmd.env("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip");
    }
    let run = run(&mut cmd);
    let spans = json_spans(&run.stdout);
    let calls = call_spans(&spans);
    assert_eq!(calls.len() as u64, 18 + mix.calls, "{}", run.stderr);
    let rec = receiver.received();

    // --- Headers, per signal: the signal's variable replaces the generic one; flags win.
    assert!(!rec.traces.is_empty() && !rec.metrics.is_empty());
    for a in &rec.traces {
        assert_eq!(a.header("x-trace-key"), Some("abc d"));
        assert_eq!(a.header("x-override"), Some("cli"));
        assert_eq!(a.header("x-cli"), Some("yes"));
        assert_eq!(a.header("x-generic"), None);
    }
    for a in &rec.metrics {
        assert_eq!(a.header("x-generic"), Some("g"));
        assert_eq!(a.header("x-cli"), Some("yes"));
        assert_eq!(a.header("x-override"), Some("cli"));
        assert_eq!(a.header("x-trace-key"), None);
    }
    for a in rec
        .traces
        .iter()
        .map(|a| (&a.headers, &a.content_type))
        .chain(rec.metrics.iter().map(|a| (&a.headers, &a.content_type)))
    {
        match protocol {
            "grpc" => assert!(a.0.iter().any(|(k, v)| k == "content-type" && v.starts_with("application/grpc"))),
            "http/protobuf" => assert_eq!(a.1.as_deref(), Some("application/x-protobuf")),
            _ => {
                assert_eq!(a.1.as_deref(), Some("application/json"));
                assert!(a.0.iter().any(|(k, v)| k == "content-encoding" && v == "gzip"), "{:?}", a.0);
            }
        }
    }

    // --- Resource and scope, exactly.
    // Resource attribute order carries no meaning (the SDK keeps them in a map): compared sorted.
    let sorted_kvs = |attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
        let mut v = kvs(attrs);
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let mut resource = vec![
        ("service.name".to_string(), Value::from(SERVICE)),
        ("host.name".into(), Value::from(host_name())),
        ("telemetry.distro.name".into(), Value::from("ollama-tracer")),
        ("telemetry.distro.version".into(), Value::from(env!("CARGO_PKG_VERSION"))),
        ("deployment.environment".into(), Value::from("test")),
        ("team".into(), Value::from("a,b c")),
    ];
    resource.sort_by(|a, b| a.0.cmp(&b.0));
    let received = rec.spans();
    assert_eq!(received.len(), spans.len(), "every span arrives once");
    for (r, scope, _) in &received {
        assert_eq!(sorted_kvs(&r.attributes), resource);
        assert_eq!((scope.name.as_str(), scope.version.as_str()), ("ollama-tracer", env!("CARGO_PKG_VERSION")));
        assert!(scope.attributes.is_empty());
    }
    // The names follow v1.41 (the default): its schema URL, traces and metrics alike.
    assert_eq!(schema_urls(&rec), [V1_41_SCHEMA.to_string()].into());
    let json_resource: Vec<(String, Value)> =
        spans[0]["resource"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(json_resource, resource, "stdout and OTLP carry the same resource");

    // --- Every span, field by field, against the JSON line with the same span id.
    let by_id: BTreeMap<String, &Value> =
        spans.iter().map(|s| (s["span_id"].as_str().unwrap().to_string(), s)).collect();
    let mut remote_parents = 0;
    let mut errors = 0;
    for (_, _, p) in &received {
        let j =
            by_id.get(&hex(&p.span_id)).unwrap_or_else(|| panic!("span {} not in the JSON output", hex(&p.span_id)));
        assert_eq!(p.name, j["name"].as_str().unwrap());
        assert_eq!(hex(&p.trace_id), j["trace_id"].as_str().unwrap());
        assert_eq!(hex(&p.parent_span_id), j["parent_span_id"].as_str().unwrap());
        assert_eq!(p.trace_state, j["trace_state"].as_str().unwrap());
        let server = j["kind"] == "server";
        assert_eq!(p.kind, if server { 2 } else { 1 }, "SERVER for calls, INTERNAL for their children");
        assert_eq!(p.start_time_unix_nano, j["start_time_unix_nano"].as_u64().unwrap());
        assert_eq!(p.end_time_unix_nano, j["end_time_unix_nano"].as_u64().unwrap());
        let status = p.status.clone().unwrap_or_default();
        let (code, message) = (j["status"]["code"].as_str().unwrap(), j["status"]["message"].as_str().unwrap());
        assert_eq!(
            status.code,
            match code {
                "unset" => 0,
                "ok" => 1,
                _ => 2,
            },
            "{}",
            p.name
        );
        assert_eq!(status.message, message);
        errors += (status.code == 2) as usize;
        // OTLP span flags: W3C flags in the low byte, then "has is-remote" and "is remote".
        if p.parent_span_id.is_empty() || !server {
            // No parent, or a local one (a child of our own call span).
            assert_eq!(p.flags, 0x100 | (p.flags & 0xff));
            assert_eq!(p.flags & 1, 1, "sampled");
        } else {
            remote_parents += 1;
            // Parent remote; sampled, since it is exported (export_mix's first call has an
            // unsampled parent, kept here by the always-on sampler).
            assert_eq!(p.flags, 0x300 | 1, "parent remote, sampled");
        }
        // Attributes: same keys, same order-independent values *and types*.
        let got = kvs(&p.attributes);
        let want = j["attributes"].as_object().unwrap();
        assert_eq!(got.len(), want.len(), "{}: {got:?}", p.name);
        for (k, v) in &got {
            assert_eq!(Some(v), want.get(k), "{}: attribute {k}", p.name);
        }
        assert!(p.events.is_empty() && j["events"].as_array().unwrap().is_empty());
        // Links (a conversation's previous turn): the same as the JSON output's.
        let links: Vec<(String, String)> = p.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect();
        let want_links: Vec<(String, String)> = j["links"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| (l["trace_id"].as_str().unwrap().to_owned(), l["span_id"].as_str().unwrap().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(links, want_links, "{}: links", p.name);
        for l in &p.links {
            assert!(kvs(&l.attributes).iter().any(|(k, _)| k == "ollama_tracer.link.type"), "{}: link type", p.name);
        }
        assert_eq!((p.dropped_attributes_count, p.dropped_events_count), (0, 0));
    }
    assert_eq!(remote_parents, 2, "the two calls with a traceparent");
    assert!(errors >= 3, "HTTP errors and the cancelled stream are errors");
    // The first traceparent: its trace id kept, the tracestate carried.
    let tp = received
        .iter()
        .find(|(_, _, s)| hex(&s.parent_span_id) == "b7ad6b7169203330")
        .expect("remote parent")
        .2
        .clone();
    assert_eq!(hex(&tp.trace_id), "0af7651916cd43dd8448eb211c803190");
    assert_eq!(tp.trace_state, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b0");

    // --- Metrics: the last (final) push holds everything.
    let (mres, mscope, metrics) = rec.last_metrics().expect("metrics arrived");
    assert_eq!(sorted_kvs(&mres.attributes), resource);
    assert_eq!((mscope.name.as_str(), mscope.version.as_str()), ("ollama-tracer", env!("CARGO_PKG_VERSION")));
    let expected = expected_observations(&spans);
    let mut seen = 0;
    let cumulative = AggregationTemporality::Cumulative as i32;
    for (name, unit, bounds) in HISTOGRAMS {
        let m = metrics.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("metric {name} missing"));
        assert_eq!(m.unit, unit, "{name}");
        assert!(!m.description.is_empty());
        let Some(Data::Histogram(h)) = &m.data else { panic!("{name} is not a histogram") };
        assert_eq!(h.aggregation_temporality, cumulative);
        for dp in &h.data_points {
            assert_eq!(dp.explicit_bounds, bounds, "{name}: bucket boundaries");
            assert_eq!(dp.bucket_counts.len(), bounds.len() + 1);
            assert_eq!(dp.bucket_counts.iter().sum::<u64>(), dp.count);
            assert!(dp.start_time_unix_nano > 0 && dp.time_unix_nano >= dp.start_time_unix_nano);
            let series = series(&dp.attributes);
            if name == "gen_ai.client.operation.time_per_output_chunk" {
                // Not derivable from spans: consistent, and only for streamed calls of that series.
                assert!(dp.count > 0 && dp.sum.unwrap() > 0.0 && dp.min.is_none());
                let op = &series.iter().find(|(k, _)| k == "gen_ai.operation.name").unwrap().1;
                let streamed_chunks: u64 = spans
                    .iter()
                    .filter(|s| &s["attributes"]["gen_ai.operation.name"].to_string() == op)
                    .filter_map(|s| s["attributes"]["ollama.response.chunk_count"].as_u64())
                    .sum();
                assert!(dp.count <= streamed_chunks, "{series:?}");
                continue;
            }
            let values = expected
                .get(&(name.to_string(), series.clone()))
                .unwrap_or_else(|| panic!("{name}: unexpected series {series:?}"));
            seen += 1;
            assert_eq!(dp.count, values.len() as u64, "{name} {series:?}");
            assert_eq!(dp.bucket_counts, buckets(values, bounds), "{name} {series:?}");
            assert!(close(dp.sum.unwrap(), values.iter().sum()), "{name} {series:?}: {:?} vs {values:?}", dp.sum);
            let min = values.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            // Close, not equal: OTLP/JSON floats may lose their last bit through a JSON parser.
            assert!(close(dp.min.unwrap(), min) && close(dp.max.unwrap(), max), "{name} {series:?}");
        }
    }
    let expected_series = expected.len();
    assert_eq!(seen, expected_series, "every expected series arrived");

    // Health: the run's summary, and the exporter's own counters after the final flush.
    let counter = |name: &str, attr: Option<(&str, &str)>| -> i64 {
        let m = metrics.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("metric {name} missing"));
        let points = match &m.data {
            Some(Data::Sum(s)) => {
                assert!(s.is_monotonic && s.aggregation_temporality == cumulative, "{name}");
                &s.data_points
            }
            Some(Data::Gauge(g)) => &g.data_points,
            _ => panic!("{name}: not a sum or gauge"),
        };
        let dp = points
            .iter()
            .find(|p| match attr {
                None => p.attributes.is_empty(),
                Some((k, v)) => kvs(&p.attributes) == vec![(k.to_string(), Value::from(v))],
            })
            .unwrap_or_else(|| panic!("{name} {attr:?} missing"));
        match dp.value {
            Some(number_data_point::Value::AsInt(i)) => i,
            _ => panic!("{name}: not an int"),
        }
    };
    let s = &run.stderr;
    assert_eq!(
        counter("ollama_tracer.capture.packets", None) as u64,
        summary_number(s, "ollama-tracer summary", "packets")
    );
    assert_eq!(
        counter("ollama_tracer.capture.bytes", None) as u64,
        summary_number(s, "ollama-tracer summary", "bytes")
    );
    assert_eq!(
        counter("ollama_tracer.reassembly.connections", None) as u64,
        summary_number(s, "ollama-tracer summary", "connections")
    );
    assert_eq!(counter("ollama_tracer.calls", None) as u64, calls.len() as u64);
    assert_eq!(counter("ollama_tracer.spans", None) as u64, spans.len() as u64);
    assert_eq!(counter("ollama_tracer.calls.incomplete", None) as u64, summary_after(s, "gaps:", "incomplete spans:"));
    assert_eq!(counter("ollama_tracer.reassembly.gaps", None), 0);
    assert_eq!(counter("ollama_tracer.http.parse_errors", None), 0);
    assert_eq!(counter("ollama_tracer.capture.kernel_drops", None), 0);
    assert_eq!(counter("ollama_tracer.export.spans", None) as u64, spans.len() as u64);
    for reason in ["queue_full", "rejected", "shutdown"] {
        assert_eq!(counter("ollama_tracer.export.dropped", Some(("reason", reason))), 0);
    }
    assert_eq!(counter("ollama_tracer.export.failures", Some(("signal", "traces"))), 0);
    assert_eq!(counter("ollama_tracer.export.failures", Some(("signal", "metrics"))), 0);
    assert_eq!(counter("ollama_tracer.export.queue.spans", None), 0);
    assert_eq!(counter("ollama_tracer.export.queue.bytes", None), 0);
    // The summary says the same.
    assert_eq!(summary_number(s, "otlp:", "spans exported"), spans.len() as u64);
    assert_eq!(summary_number(s, "otlp:", "dropped"), 0);
}

const V1_41_SCHEMA: &str = "https://opentelemetry.io/schemas/1.41.0";
const LATEST_SCHEMA: &str = "https://opentelemetry.io/schemas/gen-ai-dev/1.42.0-dev";

/// Every schema URL the traces' and metrics' scopes were sent under.
fn schema_urls(rec: &testkit::otlp::Received) -> std::collections::BTreeSet<String> {
    let traces = rec.traces.iter().flat_map(|a| &a.request.resource_spans).flat_map(|r| &r.scope_spans);
    let metrics = rec.metrics.iter().flat_map(|a| &a.request.resource_metrics).flat_map(|r| &r.scope_metrics);
    traces.map(|s| s.schema_url.clone()).chain(metrics.map(|s| s.schema_url.clone())).collect()
}

/// `OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`: the latest GenAI conventions'
/// names for spans and metrics, under their schema URL; every metric recomputed from the spans.
#[test]
fn latest_conventions_by_the_opt_in() {
    let receiver = Receiver::start(Transport::Http).unwrap();
    let mix = testkit::bench_capture::export_mix(MIX_START_NS).unwrap();
    let run = run(bin()
        .args(["replay", "--output", "json", "--id-seed", "8"])
        .arg(real_capture())
        .arg(&mix.path)
        .args(["--otlp-endpoint", &receiver.url()])
        .env("OTEL_SEMCONV_STABILITY_OPT_IN", "http,gen_ai_latest_experimental")
        .env("OTEL_TRACES_SAMPLER", "always_on"));
    let spans = json_spans(&run.stdout);
    let rec = receiver.received();
    assert_eq!(rec.spans().len(), spans.len(), "{}", run.stderr);
    assert_eq!(schema_urls(&rec), [LATEST_SCHEMA.to_string()].into());
    // Span attributes: the reasoning setting under its new name, top_k an int.
    let all_keys: std::collections::BTreeSet<&str> =
        spans.iter().flat_map(|s| s["attributes"].as_object().unwrap().keys().map(String::as_str)).collect();
    assert!(!all_keys.contains("ollama.request.think"), "{all_keys:?}");
    assert!(all_keys.contains("gen_ai.request.reasoning.level"), "the thinking calls say how they asked");
    for s in &spans {
        if let Some(k) = s["attributes"].get("gen_ai.request.top_k") {
            assert!(k.is_i64(), "top_k is an int: {k}");
        }
    }
    // Metrics: the latest names only, each series as the spans say.
    let (_, _, metrics) = rec.last_metrics().expect("metrics");
    let names: std::collections::BTreeSet<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    for old in ["gen_ai.client.operation.duration", "gen_ai.client.token.usage", "ollama.usage.cache_read.input_tokens"]
    {
        assert!(!names.contains(old), "{old} in latest mode");
    }
    let expected = expected_observations_latest(&spans);
    let mut checked = 0;
    for ((name, series), values) in &expected {
        let m = metrics.iter().find(|m| &m.name == name).unwrap_or_else(|| panic!("{name} missing: {names:?}"));
        let Some(Data::Histogram(h)) = &m.data else { panic!("{name} is not a histogram") };
        let dp = h.data_points.iter().find(|dp| &testkit::output::series(&dp.attributes) == series);
        let dp = dp.unwrap_or_else(|| panic!("{name} {series:?} missing"));
        assert_eq!(dp.count, values.len() as u64, "{name} {series:?}");
        assert!(close(dp.sum.unwrap(), values.iter().sum()), "{name} {series:?}");
        checked += 1;
    }
    assert!(checked >= 10, "{checked}");
    // The detailed token counters: by modality (unknown: Ollama does not split), summing the
    // inference calls' tokens exactly.
    let counter_total = |name: &str| -> i64 {
        let m = metrics.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{name} missing"));
        let Some(Data::Sum(s)) = &m.data else { panic!("{name} is not a sum") };
        for dp in &s.data_points {
            assert!(kvs(&dp.attributes).contains(&("gen_ai.token.modality".to_string(), Value::from("unknown"))));
        }
        s.data_points
            .iter()
            .map(|dp| match dp.value {
                Some(number_data_point::Value::AsInt(i)) => i,
                _ => panic!("{name}: not an int"),
            })
            .sum()
    };
    let span_total = |key: &str| -> i64 {
        call_spans(&spans)
            .iter()
            .filter(|s| matches!(s["attributes"]["gen_ai.operation.name"].as_str(), Some("chat" | "text_completion")))
            .filter_map(|s| s["attributes"][key].as_i64())
            .sum()
    };
    assert_eq!(
        counter_total("gen_ai.client.inference.usage.detailed.input_tokens"),
        span_total("gen_ai.usage.input_tokens")
    );
    assert_eq!(
        counter_total("gen_ai.client.inference.usage.detailed.output_tokens"),
        span_total("gen_ai.usage.output_tokens")
    );
}

#[test]
fn export_over_grpc() {
    check_export(Transport::Grpc, "grpc");
}

#[test]
fn export_over_http_protobuf() {
    check_export(Transport::Http, "http/protobuf");
}

#[test]
fn export_over_http_json_gzip() {
    check_export(Transport::Http, "http/json");
}

/// `OTEL_EXPORTER_OTLP_TIMEOUT` bounds each request of live delivery (a paced replay stands
/// in for live traffic): a collector slower than it never gets an acknowledged batch (every
/// attempt times out, however small the batch, and is retried until the shutdown deadline),
/// one faster than it gets everything.
#[test]
fn timeout_comes_from_the_environment() {
    for (transport, protocol) in [(Transport::Http, "http/protobuf"), (Transport::Grpc, "grpc")] {
        let receiver = Receiver::start(transport).unwrap();
        receiver.set_delay_ms(1500);
        let mix = testkit::bench_capture::export_mix(MIX_START_NS).unwrap();
        let slow = run(bin()
            .args(["replay", "--speed", "1000", "--output", "none"])
            .arg(&mix.path)
            .args(["--otlp-protocol", protocol])
            .env("OTEL_TRACES_EXPORTER", "otlp")
            .env("OTEL_METRICS_EXPORTER", "none")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url())
            .env("OTEL_EXPORTER_OTLP_TIMEOUT", "300"));
        assert_eq!(summary_number(&slow.stderr, "otlp:", "spans exported"), 0, "{}", slow.stderr);
        assert!(summary_number(&slow.stderr, "otlp:", "failed attempts") >= 2, "{}", slow.stderr);
        let mix_spans = spans_of(&mix.path);
        assert_eq!(summary_number(&slow.stderr, "otlp:", "at shutdown"), mix_spans, "{}", slow.stderr);

        let fast = run(bin()
            .args(["replay", "--output", "none"])
            .arg(&mix.path)
            .args(["--otlp-protocol", protocol])
            .env("OTEL_METRICS_EXPORTER", "none")
            .env(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                if protocol == "grpc" { receiver.url() } else { format!("{}/v1/traces", receiver.url()) },
            )
            .env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "4000"));
        assert_eq!(summary_number(&fast.stderr, "otlp:", "spans exported"), mix_spans, "{}", fast.stderr);
        assert_eq!(summary_number(&fast.stderr, "otlp:", "failed attempts"), 0, "{}", fast.stderr);
        assert!(receiver.wait_until(Duration::from_secs(1), |r| r.spans().len() as u64 >= 2 * mix_spans));
    }
}

/// A collector that refuses the data (HTTP 404 here: wrong path) is not retried forever: the
/// batch is dropped and counted as refused, and the run ends promptly.
#[test]
fn refused_batches_are_dropped_and_counted() {
    let receiver = Receiver::start(Transport::Http).unwrap();
    let mix = testkit::bench_capture::export_mix(MIX_START_NS).unwrap();
    let started = std::time::Instant::now();
    let r = run(bin()
        .args(["replay", "--output", "none"])
        .arg(&mix.path)
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", format!("{}/wrong/path", receiver.url())));
    assert_eq!(summary_number(&r.stderr, "otlp:", "refused by the collector"), spans_of(&mix.path), "{}", r.stderr);
    assert_eq!(summary_number(&r.stderr, "otlp:", "spans exported"), 0);
    assert!(started.elapsed() < Duration::from_secs(4), "no retry loop on a refusal");
}

/// `OTEL_SDK_DISABLED=true` turns off what the environment asked for.
#[test]
fn sdk_disabled_means_no_export() {
    let receiver = Receiver::start(Transport::Http).unwrap();
    let r = run(bin()
        .args(["replay", "--output", "none"])
        .arg(real_capture())
        .env("OTEL_SDK_DISABLED", "true")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url()));
    assert!(!r.stderr.contains("otlp:"), "{}", r.stderr);
    std::thread::sleep(Duration::from_millis(200));
    assert!(receiver.received().traces.is_empty() && receiver.received().metrics.is_empty());
}
