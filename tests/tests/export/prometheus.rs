//! The Prometheus endpoint of a paced replay, scraped while it runs: the text parsed by an
//! independent parser and checked by `promtool`, every histogram series (bucket counts, sums,
//! counts) and health counter compared with the metrics recomputed from the run's own spans,
//! and a real Prometheus server scraping it, queried through its API.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::output::*;
use testkit::pcap::{FileFormat, LinkType, TsPrecision, WriterConfig, write_file};
use testkit::prometheus::{Kill, free_port, http_get, promtool, query, start_prometheus};
use testkit::synth::{ConnectionSpec, synthesize};

/// Plain HTTP GET; the status line and the body.
/// A capture holding one connection to a port nobody traces, at `at_ns`: appended to a paced
/// replay it keeps the process (and its endpoint) up after the last call.
fn idle_tail(at_ns: u64) -> PathBuf {
    let lo = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let spec = ConnectionSpec::new(SocketAddr::new(lo, 40_000), SocketAddr::new(lo, 9)).start_at(at_ns);
    let capture = synthesize(&[spec]).unwrap();
    let path = std::env::temp_dir().join(format!("ollama-tracer-tail-{}-{at_ns}.pcap", std::process::id()));
    write_file(&path, WriterConfig::new(FileFormat::Pcap, TsPrecision::Nano, LinkType::LinuxSll2), &capture.packets)
        .unwrap();
    path
}

/// Removed when dropped, whatever the test's outcome.
struct Remove(PathBuf);
impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Prometheus names (written out here, independently of the code).
const PROM_HISTOGRAMS: [(&str, &str); 9] = [
    ("gen_ai.execute_tool.duration", "gen_ai_execute_tool_duration_seconds"),
    ("gen_ai.client.operation.duration", "gen_ai_client_operation_duration_seconds"),
    ("gen_ai.client.token.usage", "gen_ai_client_token_usage"),
    ("gen_ai.client.operation.time_to_first_chunk", "gen_ai_client_operation_time_to_first_chunk_seconds"),
    ("gen_ai.client.operation.time_per_output_chunk", "gen_ai_client_operation_time_per_output_chunk_seconds"),
    ("gen_ai.server.request.duration", "gen_ai_server_request_duration_seconds"),
    ("gen_ai.server.time_to_first_token", "gen_ai_server_time_to_first_token_seconds"),
    ("gen_ai.server.time_per_output_token", "gen_ai_server_time_per_output_token_seconds"),
    ("http.server.request.duration", "http_server_request_duration_seconds"),
];

#[test]
fn prometheus_endpoint_during_a_paced_replay() {
    let calls_per_s = 10;
    let capture = testkit::bench_capture::steady(calls_per_s, 3).unwrap();
    // The steady capture starts at 1_767_225_600 s; the tail keeps the process up 8 s longer.
    let tail = Remove(idle_tail(1_767_225_600_000_000_000 + 11_000_000_000));
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = std::env::temp_dir().join(format!("ollama-tracer-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = Remove(dir);
    let prometheus = start_prometheus(addr, &dir.0);
    if prometheus.is_none() {
        eprintln!("SKIPPED (partly): no prometheus server installed; the endpoint is still checked");
    }

    let mut child = Kill(
        bin()
            .args(["replay", "--speed", "1", "--output", "json", "--id-seed", "3", "--metrics-addr", &port.to_string()])
            .arg(&capture.path)
            .arg(&tail.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Spans are read as they come: a full pipe would hold the tracer up.
    let mut stdout = child.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    // Scrape until every call is in (health is refreshed every 250 ms).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    let text = loop {
        assert!(
            Instant::now() < deadline,
            "the endpoint never showed all {} calls (last seen: {last:?})",
            capture.calls
        );
        if let Ok((head, body)) = http_get(addr, "/metrics") {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
            let calls = body
                .lines()
                .find(|l| l.starts_with("ollama_tracer_calls_total"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok());
            if calls == Some(capture.calls) {
                break body;
            }
            last = calls;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Anything else is not served.
    assert!(http_get(addr, "/nope").unwrap().0.starts_with("HTTP/1.1 404"));

    // A real Prometheus scrapes the same endpoint.
    if let Some((_, prom)) = &prometheus {
        let deadline = Instant::now() + Duration::from_secs(6);
        let mut got = None;
        while Instant::now() < deadline {
            got = query(*prom, "ollama_tracer_calls_total{job=\"ollama-tracer\"}");
            if got == Some(capture.calls as f64) {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        assert_eq!(got, Some(capture.calls as f64), "Prometheus scraped the calls counter");
        assert_eq!(query(*prom, "up{job=\"ollama-tracer\"}"), Some(1.0));
        assert_eq!(
            query(*prom, "sum(http_server_request_duration_seconds_count)"),
            Some(capture.calls as f64),
            "every call is an HTTP request"
        );
        let tokens = query(*prom, "sum(gen_ai_client_token_usage_count)").unwrap();
        assert!(tokens > 0.0);
        assert_eq!(query(*prom, "count(target_info{service_name=\"ollama\"})"), Some(1.0));
    }

    let out = reader.join().unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success());
    let spans = json_spans(&out);
    assert_eq!(call_spans(&spans).len() as u64, capture.calls);

    // promtool's own validation and lint.
    match promtool() {
        Some(p) => {
            let mut c = Command::new(p)
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let o = c.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        None => eprintln!("SKIPPED (partly): promtool not installed"),
    }

    // An independent parser reads every line.
    let lines: Vec<std::io::Result<String>> = text.lines().map(|l| Ok(l.to_string())).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).expect("parses");
    // One sample per line, except buckets: one per histogram series.
    let sample_lines = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty() && !l.contains("_bucket{")).count();
    let histogram_series = text.lines().filter(|l| l.contains("_bucket{") && l.contains("le=\"+Inf\"")).count();
    assert_eq!(scrape.samples.len(), sample_lines + histogram_series);
    let samples = &scrape.samples;
    let value = |s: &prometheus_parse::Sample| match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{}: {other:?}", s.metric),
    };
    let find = |metric: &str, labels: &[(String, String)]| -> Vec<&prometheus_parse::Sample> {
        samples
            .iter()
            .filter(|s| s.metric == metric)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v.as_str())))
            .filter(|s| s.labels.iter().filter(|(k, _)| *k != "le").count() == labels.len() + 2)
            .collect()
    };

    // Every series of every histogram, against the spans.
    let expected = expected_observations(&spans);
    let mut checked = 0;
    for ((name, series), values) in &expected {
        let (_, prom) = PROM_HISTOGRAMS.iter().find(|(n, _)| n == name).unwrap();
        let bounds = HISTOGRAMS.iter().find(|(n, _, _)| n == name).unwrap().2;
        let labels: Vec<(String, String)> = series
            .iter()
            .map(|(k, v)| {
                let v: Value = serde_json::from_str(v).unwrap();
                (k.replace('.', "_"), v.as_str().map_or(v.to_string(), str::to_string))
            })
            .collect();
        let count = find(&format!("{prom}_count"), &labels);
        assert_eq!(count.len(), 1, "{prom} {labels:?}");
        assert_eq!(value(count[0]), values.len() as f64, "{prom} {labels:?}");
        let sum = find(&format!("{prom}_sum"), &labels);
        assert!(close(value(sum[0]), values.iter().sum()), "{prom} {labels:?}");
        // Buckets are cumulative in Prometheus: the parser groups them under the base name.
        let hist = find(prom, &labels);
        assert_eq!(hist.len(), 1, "{prom} {labels:?}");
        let prometheus_parse::Value::Histogram(ref h) = hist[0].value else { panic!("{prom}: not a histogram") };
        let per_bucket = buckets(values, bounds);
        let mut cumulative = 0;
        assert_eq!(h.len(), bounds.len() + 1);
        for (i, b) in h.iter().enumerate() {
            cumulative += per_bucket[i];
            let want_le = bounds.get(i).copied().unwrap_or(f64::INFINITY);
            assert_eq!(b.less_than, want_le, "{prom}: bucket bound");
            assert_eq!(b.count, cumulative as f64, "{prom} {labels:?} le={want_le}");
        }
        checked += 1;
    }
    assert!(checked >= 6, "{checked} series");
    eprintln!("checked {checked} histogram series, prometheus server: {}", prometheus.is_some());
    // Series the spans do not explain would be a bug too.
    for (name, prom) in PROM_HISTOGRAMS {
        if name == "gen_ai.client.operation.time_per_output_chunk" {
            continue;
        }
        let n = samples.iter().filter(|s| s.metric == format!("{prom}_count")).count();
        assert_eq!(n, expected.keys().filter(|(m, _)| m == name).count(), "{prom}");
    }
    // Health counters.
    let health = |m: &str| value(find(m, &[])[0]);
    assert_eq!(health("ollama_tracer_calls_total"), capture.calls as f64);
    assert_eq!(health("ollama_tracer_reassembly_connections_total"), capture.calls as f64 + 0.0);
    assert_eq!(health("ollama_tracer_reassembly_gaps_total"), 0.0);
    assert_eq!(health("ollama_tracer_calls_incomplete_total"), 0.0);
    assert_eq!(health("ollama_tracer_capture_kernel_drops_total"), 0.0);
    // Prometheus stops before its directory goes.
    drop(prometheus);
    drop(dir);
}

// ---------------------------------------------------------------------------------------------
// The Grafana dashboard (deploy/grafana/ollama-tracer.json)

fn dashboard_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/ollama-tracer.json")
}

/// Every PromQL expression of the dashboard: panel targets and query variables.
fn dashboard_queries(dash: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().expect("every target has an expr").to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            out.push(v["query"]["query"].as_str().unwrap().to_string());
        }
    }
    out
}

/// `s` without what lies between `open` and its matching `close` (label matchers, ranges).
fn strip(s: &str, open: char, close: char) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in s.chars() {
        match c {
            c if c == open => depth += 1,
            c if c == close && depth > 0 => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names a PromQL expression reads, and the labels it groups by.
fn promql_names(expr: &str) -> (Vec<String>, Vec<String>) {
    // Strings out first (they may hold anything), then label matchers and ranges.
    let mut s = String::new();
    let mut in_string = false;
    for c in expr.chars() {
        if c == '"' {
            in_string = !in_string;
        } else if !in_string {
            s.push(c);
        }
    }
    let mut s = strip(&strip(&s, '{', '}'), '[', ']');
    // Grouping clauses out, the labels of `by`/`without` kept.
    let mut labels = Vec::new();
    for kw in ["by", "without", "on", "ignoring", "group_left", "group_right"] {
        while let Some(at) = s.match_indices(kw).map(|(i, _)| i).find(|&i| {
            let before = s[..i].chars().next_back().is_none_or(|c| !word_char(c));
            let rest = s[i + kw.len()..].trim_start();
            before && rest.starts_with('(')
        }) {
            let open = at + s[at..].find('(').unwrap();
            let close = open + s[open..].find(')').unwrap();
            if kw == "by" || kw == "without" {
                labels.extend(s[open + 1..close].split(',').map(|l| l.trim().to_string()).filter(|l| !l.is_empty()));
            }
            s.replace_range(at..=close, " ");
        }
    }
    // What is left: functions (a word before `(`), keywords, numbers, variables, metric names.
    let mut names = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i..].chars().next().unwrap();
        if !word_char(c) {
            i += c.len_utf8();
            continue;
        }
        let word: String = s[i..].chars().take_while(|c| word_char(*c)).collect();
        let variable = s[..i].ends_with('$');
        let function = s[i + word.len()..].trim_start().starts_with('(');
        let keyword = ["bool", "and", "or", "unless", "offset"].contains(&word.as_str());
        if !variable && !function && !keyword && !c.is_ascii_digit() {
            names.push(word.clone());
        }
        i += word.len();
    }
    // `label_values(metric, label)`: its last argument is a label.
    if expr.starts_with("label_values(")
        && let Some(label) = names.pop()
    {
        labels.push(label);
    }
    (names, labels)
}

#[test]
fn promql_names_are_read_as_prometheus_would() {
    let (names, labels) = promql_names(
        r#"histogram_quantile(0.95, sum by (le, http_route) (rate(http_server_request_duration_seconds_bucket{job=~"$job", a="b{c}"}[$__rate_interval]))) / on() bool up"#,
    );
    assert_eq!(names, ["http_server_request_duration_seconds_bucket", "up"]);
    assert_eq!(labels, ["le", "http_route"]);
    let (names, labels) = promql_names(
        r#"label_values(gen_ai_client_operation_duration_seconds_count{job=~"$job"}, gen_ai_request_model)"#,
    );
    assert_eq!(
        (names, labels),
        (vec!["gen_ai_client_operation_duration_seconds_count".to_string()], vec!["gen_ai_request_model".to_string()])
    );
}

/// Structure Grafana needs: unique panel ids, grid positions inside 24 columns without overlap,
/// every panel on the `datasource` variable, targets with a refId and an expression.
fn check_dashboard_structure(dash: &Value) {
    assert!(dash["uid"].is_string() && dash["title"].is_string() && dash["schemaVersion"].as_u64() >= Some(36));
    let vars = dash["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["name"] == "datasource").expect("a datasource variable");
    assert_eq!((ds["type"].as_str(), ds["query"].as_str()), (Some("datasource"), Some("prometheus")));
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{v}");
    }
    let panels = dash["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut cells = std::collections::BTreeSet::new();
    let var_names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
    for p in panels {
        let id = p["id"].as_u64().expect("numeric id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        let g = &p["gridPos"];
        let (x, y, w, h) =
            (g["x"].as_u64().unwrap(), g["y"].as_u64().unwrap(), g["w"].as_u64().unwrap(), g["h"].as_u64().unwrap());
        assert!(x + w <= 24 && w > 0 && h > 0, "panel {id}: {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "panel {id} overlaps another at ({cx}, {cy})");
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert!(["timeseries", "heatmap", "stat"].contains(&p["type"].as_str().unwrap()), "panel {id}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {id}");
        if let Some(r) = p["repeat"].as_str() {
            assert!(var_names.contains(&r), "panel {id} repeats over an unknown variable {r}");
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id}");
        let mut refs = std::collections::BTreeSet::new();
        for t in targets {
            assert!(refs.insert(t["refId"].as_str().unwrap()), "panel {id}: duplicate refId");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {id}");
            let expr = t["expr"].as_str().unwrap();
            // Balanced, and only the dashboard's own variables.
            for (o, c) in [('(', ')'), ('{', '}'), ('[', ']')] {
                assert_eq!(expr.matches(o).count(), expr.matches(c).count(), "panel {id}: {expr}");
            }
            for var in expr.split('$').skip(1) {
                let name: String = var.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                assert!(name == "__rate_interval" || var_names.contains(&name.as_str()), "panel {id}: ${name}");
            }
            if p["type"] == "heatmap" {
                assert_eq!(t["format"], "heatmap", "panel {id}");
                assert!(expr.contains("_bucket{") && expr.starts_with("sum by (le)"), "panel {id}: {expr}");
            }
        }
    }
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let text = std::fs::read_to_string(dashboard_path()).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    check_dashboard_structure(&dash);
    // The chart ships the same file (scripts/validate-deploy.sh checks it too).
    let chart_copy =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/ollama-tracer/dashboards/ollama-tracer.json");
    assert_eq!(std::fs::read_to_string(chart_copy).unwrap(), text, "the chart's copy of the dashboard differs");

    let mut metrics = std::collections::BTreeSet::new();
    let mut labels = std::collections::BTreeSet::new();
    for q in dashboard_queries(&dash) {
        let (n, l) = promql_names(&q);
        assert!(!n.is_empty(), "no metric in {q}");
        metrics.extend(n);
        labels.extend(l);
    }

    // A paced replay with errors, a cancel and OTLP export (to a port nobody listens on: the
    // queue and failure series appear), scraped while it runs.
    let steady = testkit::bench_capture::steady(10, 2).unwrap();
    let mix = testkit::bench_capture::export_mix(1_767_225_600_000_000_000 + 2_500_000_000).unwrap();
    let tail = Remove(idle_tail(1_767_225_600_000_000_000 + 20_000_000_000));
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let _child = Kill(
        bin()
            .args(["replay", "--speed", "2", "--output", "otlp", "--otlp-endpoint", &dead, "--otlp-timeout", "200"])
            .args(["--flush-timeout", "200", "--metrics-addr", &port.to_string()])
            .arg(&steady.path)
            .arg(&mix.path)
            .arg(&tail.0)
            .env("OLLAMA_TRACER_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let all = steady.calls + mix.calls;
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        assert!(Instant::now() < deadline, "the endpoint never showed all {all} calls");
        if let Ok((_, body)) = http_get(addr, "/metrics")
            && body.lines().any(|l| l.starts_with("ollama_tracer_calls_total") && l.ends_with(&format!(" {all}")))
        {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // And the server's side (loads, /api/ps, waiting…), from traffic made for it: its metrics as
    // printed at the end of its replay.
    let dir = std::env::temp_dir().join(format!("ollama-tracer-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = Remove(dir);
    let server = testkit::server_traffic::record(env!("CARGO_BIN_EXE_ollama-standin").as_ref(), &dir.0);
    let printed =
        run(bin().args(["replay", "--output", "none"]).arg(&server.pcap).env("OTEL_METRICS_EXPORTER", "console"));
    let scrape = scrape + &printed.stdout;
    let exported: std::collections::BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for m in &metrics {
        assert!(exported.contains(m.as_str()), "the dashboard queries {m}, which the endpoint does not export");
    }
    // `job` and `instance` are the scraper's own (target labels).
    for l in labels.iter().filter(|l| !["job", "instance"].contains(&l.as_str())) {
        assert!(
            scrape.contains(&format!("{{{l}=\"")) || scrape.contains(&format!(",{l}=\"")),
            "the dashboard groups by {l}, a label no series has"
        );
    }
    eprintln!("dashboard: {} metrics and {} labels checked against the scrape", metrics.len(), labels.len());
    assert!(metrics.len() >= 25, "{metrics:?}");
}

/// The alerting and recording rules: `promtool check rules`, and `promtool test rules` (every
/// alert fires on series that should fire it and not on others); the chart's copy is the same.
#[test]
fn alert_and_recording_rules_pass_promtool() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    let chart_copy =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/ollama-tracer/rules/ollama-tracer.rules.yml");
    assert_eq!(
        std::fs::read_to_string(dir.join("ollama-tracer.rules.yml")).unwrap(),
        std::fs::read_to_string(chart_copy).unwrap(),
        "the chart's copy of the rules differs (scripts/validate-deploy.sh --update)"
    );
    let Some(promtool) = promtool() else {
        eprintln!(
            "SKIPPED: promtool not installed (scripts/setup-prometheus.sh installs it); the rules are NOT checked"
        );
        return;
    };
    for args in
        [&["check", "rules", "ollama-tracer.rules.yml"][..], &["test", "rules", "tests/ollama-tracer.rules.test.yml"]]
    {
        let o = Command::new(&promtool).args(args).current_dir(&dir).output().unwrap();
        assert!(
            o.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
