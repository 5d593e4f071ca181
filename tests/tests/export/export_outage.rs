//! The collector goes away for 60 s under a steady stream of calls (a capture replayed at its
//! recorded pace, 100 calls/s), then comes back. Proven: the tracer's memory stays bounded by
//! the queue cap (resident anonymous memory sampled all along), the drop counter equals exactly
//! the spans produced minus the spans the collector received, and export resumes by itself —
//! spans of calls made after the outage arrive.

use std::collections::HashSet;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use testkit::otlp::{Receiver, Transport};
use testkit::output::*;

const PER_SECOND: u64 = 100;
const SECONDS: u64 = 80;
/// Wall-clock seconds after the start when the collector goes down, and how long it stays down.
const DOWN_AT: u64 = 8;
const DOWN_FOR: u64 = 60;
const QUEUE_BYTES: u64 = 1 << 20;

/// `RssAnon` of a process, bytes (its heap and stacks; not the mapped capture file).
fn rss_anon(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("RssAnon:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

#[test]
fn collector_down_for_a_minute() {
    let capture = testkit::bench_capture::steady(PER_SECOND, SECONDS).unwrap();
    let mut receiver = Receiver::start(Transport::Http).unwrap();
    let mut child = bin()
        .args(["replay", "--speed", "1", "--output", "none"])
        .arg(&capture.path)
        .args(["--otlp-endpoint", &receiver.url()])
        .args(["--otlp-queue-spans", "1000000", "--otlp-queue-bytes", &QUEUE_BYTES.to_string()])
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "1000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let start = Instant::now();
    let (mut before, mut during, mut after) = (0u64, 0u64, 0u64);
    let mut down = false;
    let mut arrived_before_down = 0;
    loop {
        let t = start.elapsed();
        if !down && t >= Duration::from_secs(DOWN_AT) {
            arrived_before_down = receiver.received().spans().len();
            receiver.stop();
            down = true;
        }
        if down && receiver_is_down(&receiver) && t >= Duration::from_secs(DOWN_AT + DOWN_FOR) {
            receiver.restart().unwrap();
        }
        match child.try_wait().unwrap() {
            Some(_) => break,
            None => {
                if let Some(rss) = rss_anon(pid) {
                    let slot = if t < Duration::from_secs(DOWN_AT) {
                        &mut before
                    } else if t < Duration::from_secs(DOWN_AT + DOWN_FOR) {
                        &mut during
                    } else {
                        &mut after
                    };
                    *slot = (*slot).max(rss);
                }
            }
        }
        assert!(t < Duration::from_secs(SECONDS + 40), "the replay did not end");
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(child.wait().unwrap().success(), "{stderr}");

    let produced = summary_number(&stderr, "ollama-tracer summary", "spans");
    let exported = summary_number(&stderr, "otlp:", "spans exported");
    let dropped = summary_number(&stderr, "otlp:", "dropped");
    let queue_full = summary_number(&stderr, "otlp:", "queue full");
    let received = receiver.received().spans();
    let unique: HashSet<Vec<u8>> = received.iter().map(|(_, _, s)| s.span_id.clone()).collect();
    eprintln!(
        "outage: produced {produced}, received {}, dropped {dropped} ({queue_full} queue full); RssAnon max before {:.1} MiB, during {:.1} MiB, after {:.1} MiB; {} arrived before the outage",
        received.len(),
        before as f64 / 1048576.0,
        during as f64 / 1048576.0,
        after as f64 / 1048576.0,
        arrived_before_down
    );
    assert_eq!(summary_number(&stderr, "ollama-tracer summary", "calls"), capture.calls);
    assert!(produced >= capture.calls, "a span per call, and children");
    assert_eq!(unique.len(), received.len(), "no span arrives twice");
    assert_eq!(exported, received.len() as u64, "what the tracer counts as exported is what arrived");
    assert_eq!(produced - exported, dropped, "every lost span is counted, exactly");
    assert_eq!(dropped, queue_full, "losses come from the full queue only (none at shutdown)");
    // A minute of 100 calls/s cannot fit a 1 MiB queue: most of the outage was dropped…
    assert!(queue_full > (DOWN_FOR - 10) * PER_SECOND / 2, "{queue_full} dropped");
    // …and the memory stayed bounded: an unbounded buffer would hold ~6000 spans (> 10 MiB).
    assert!(before > 0 && during > 0);
    assert!(during < before + 4 * QUEUE_BYTES + (4 << 20), "RssAnon grew from {before} to {during}");
    // Export resumed by itself: calls made after the collector came back arrived.
    let t0 = 1_767_225_600_000_000_000u64;
    let late = received
        .iter()
        .filter(|(_, _, s)| s.start_time_unix_nano > t0 + (DOWN_AT + DOWN_FOR + 2) * 1_000_000_000)
        .count();
    assert!(late as u64 >= PER_SECOND * 5, "{late} spans from after the outage arrived");
    // The metrics say the same: drops by reason, and failed attempts while down.
    let rec = receiver.received();
    let (_, _, metrics) = rec.last_metrics().expect("metrics after the outage");
    let value = |name: &str, attr: Option<(&str, &str)>| -> i64 {
        use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
        let m = metrics.iter().find(|m| m.name == name).unwrap();
        let pts = match &m.data {
            Some(Data::Sum(s)) => &s.data_points,
            Some(Data::Gauge(g)) => &g.data_points,
            _ => panic!(),
        };
        let p = pts
            .iter()
            .find(|p| attr.is_none_or(|(k, v)| kvs(&p.attributes) == vec![(k.to_string(), serde_json::Value::from(v))]))
            .unwrap();
        match p.value {
            Some(number_data_point::Value::AsInt(i)) => i,
            _ => panic!(),
        }
    };
    assert_eq!(value("ollama_tracer.export.dropped", Some(("reason", "queue_full"))) as u64, queue_full);
    assert!(value("ollama_tracer.export.failures", Some(("signal", "traces"))) > 0);
    assert!(value("ollama_tracer.export.failures", Some(("signal", "metrics"))) > 0);
}

fn receiver_is_down(r: &Receiver) -> bool {
    std::net::TcpStream::connect_timeout(&r.addr, Duration::from_millis(100)).is_err()
}
