//! The Prometheus endpoint of a paced replay, scraped while it runs: the text parsed by an
//! independent parser and checked by `promtool`, every histogram series (bucket counts, sums,
//! counts) and health counter compared with the metrics recomputed from the run's own spans,
//! and a real Prometheus server scraping it, queried through its API.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use testkit::pcap::{FileFormat, LinkType, TsPrecision, WriterConfig, write_file};
use testkit::synth::{ConnectionSpec, synthesize};

/// Plain HTTP GET; the status line and the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((head.to_string(), body.to_string()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

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

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prometheus names (written out here, independently of the code).
const PROM_HISTOGRAMS: [(&str, &str); 8] = [
    ("gen_ai.client.operation.duration", "gen_ai_client_operation_duration_seconds"),
    ("gen_ai.client.token.usage", "gen_ai_client_token_usage"),
    ("gen_ai.client.operation.time_to_first_chunk", "gen_ai_client_operation_time_to_first_chunk_seconds"),
    ("gen_ai.client.operation.time_per_output_chunk", "gen_ai_client_operation_time_per_output_chunk_seconds"),
    ("gen_ai.server.request.duration", "gen_ai_server_request_duration_seconds"),
    ("gen_ai.server.time_to_first_token", "gen_ai_server_time_to_first_token_seconds"),
    ("gen_ai.server.time_per_output_token", "gen_ai_server_time_per_output_token_seconds"),
    ("http.server.request.duration", "http_server_request_duration_seconds"),
];

fn promtool() -> Option<PathBuf> {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"].iter().map(PathBuf::from).find(|p| p.exists())
}

fn prometheus_bin() -> Option<PathBuf> {
    ["/usr/bin/prometheus", "/usr/local/bin/prometheus"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// Starts a real Prometheus scraping `target` every second; `None` when not installed.
fn start_prometheus(target: SocketAddr, dir: &Path) -> Option<(Kill, SocketAddr)> {
    let bin = prometheus_bin()?;
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: ollama-tracer\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .ok()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let kill = Kill(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http_get(addr, "/-/ready").is_ok_and(|(h, _)| h.contains(" 200 ")) {
            return Some((kill, addr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "prometheus did not become ready: {}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
}

/// One instant query's single value.
fn query(prom: SocketAddr, q: &str) -> Option<f64> {
    let enc: String = q
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_-.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect();
    let (_, body) = http_get(prom, &format!("/api/v1/query?query={enc}")).ok()?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

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
    // Scrape until every call is in (health is refreshed every 250 ms).
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        assert!(Instant::now() < deadline, "the endpoint never showed all calls");
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

    let mut out = String::new();
    child.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
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
