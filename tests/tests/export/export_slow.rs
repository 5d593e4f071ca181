//! A replay is an offline job: into a collector that takes 12 s to answer each request, every
//! span of a 5 000-span replay arrives, once, and the summary says none was dropped; SIGINT
//! stops the wait and counts what was left. A collector whose time grows with the batch gets
//! smaller batches instead of timeouts forever (live delivery, bounded flush).

use std::collections::HashSet;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use testkit::otlp::{Receiver, Transport};
use testkit::output::*;

/// Spans the receiver got, and how many distinct span ids among them.
fn received(receiver: &Receiver) -> (usize, usize) {
    let spans = receiver.received().spans();
    let ids: HashSet<Vec<u8>> = spans.iter().map(|(_, _, s)| s.span_id.clone()).collect();
    (spans.len(), ids.len())
}

/// A capture of at least 5 000 spans, and its exact span count.
fn five_thousand_spans() -> (testkit::bench_capture::TempCapture, u64) {
    let capture = testkit::bench_capture::steady(100, 20).unwrap();
    let n = spans_of(&capture.path);
    assert!(n >= 5_000, "{n} spans");
    (capture, n)
}

#[test]
fn a_collector_answering_after_12_s_gets_every_span_once() {
    let (capture, n) = five_thousand_spans();
    let receiver = Receiver::start(Transport::Http).unwrap();
    receiver.set_delay_ms(12_000);
    let started = Instant::now();
    let r = run(bin()
        .args(["replay", "--output", "none"])
        .arg(&capture.path)
        .args(["--otlp-endpoint", &receiver.url()])
        .env("OTEL_METRICS_EXPORTER", "none"));
    let took = started.elapsed();
    let s = &r.stderr;
    assert_eq!(summary_number(s, "otlp:", "spans exported"), n, "{s}");
    assert_eq!(summary_number(s, "otlp:", "dropped"), 0, "{s}");
    assert_eq!(summary_number(s, "otlp:", "timed out"), 0, "{s}: a 12 s answer is within an offline request's time");
    assert_eq!(received(&receiver), (n as usize, n as usize), "every span arrived, none twice");
    println!("{n} spans into a 12 s collector: {took:?}");
}

#[test]
fn sigint_ends_an_offline_flush_and_counts_the_rest() {
    let (capture, n) = five_thousand_spans();
    let receiver = Receiver::start(Transport::Http).unwrap();
    receiver.set_delay_ms(12_000);
    let mut child = bin()
        .args(["replay", "--output", "none"])
        .arg(&capture.path)
        .args(["--otlp-endpoint", &receiver.url()])
        .env("OTEL_METRICS_EXPORTER", "none")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first request is with the collector: the replay waits for it.
    assert!(receiver.wait_until(Duration::from_secs(60), |r| !r.traces.is_empty()), "no export began");
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "the replay waits for the collector");
    let stopped = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stopped.elapsed() < Duration::from_secs(5), "SIGINT ends the wait promptly: {:?}", stopped.elapsed());
    assert!(status.success(), "{stderr}");
    let exported = summary_number(&stderr, "otlp:", "spans exported");
    let dropped = summary_number(&stderr, "otlp:", "dropped");
    assert_eq!(exported, 0, "{stderr}: nothing was acknowledged before the stop");
    assert_eq!(summary_number(&stderr, "otlp:", "at shutdown"), dropped, "{stderr}");
    assert_eq!(summary_number(&stderr, "otlp:", "queue full"), 0, "{stderr}: offline, nothing dropped for room");
    // Every span is accounted for: the replay stopped reading, so the spans it made are the
    // ones counted (produced = exported + dropped).
    let spans = summary_number(&stderr, "ollama-tracer summary:", "spans");
    assert_eq!(exported + dropped, spans, "{stderr}");
    assert!(spans <= n);
}

#[test]
fn batches_shrink_when_a_collector_times_out() {
    let (capture, n) = five_thousand_spans();
    let receiver = Receiver::start(Transport::Http).unwrap();
    // 2 ms a span: a 512-span request takes 1 s, over the 400 ms timeout; 128 spans fit.
    receiver.set_delay_per_span_us(2_000);
    let r = run(bin()
        // Paced, a replay stands in for live traffic: live delivery, the timeout as configured.
        .args(["replay", "--speed", "100", "--output", "none", "--flush-timeout", "60000"])
        .arg(&capture.path)
        .args(["--otlp-endpoint", &receiver.url()])
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "400")
        .env("OTEL_BSP_MAX_QUEUE_SIZE", "100000"));
    let s = &r.stderr;
    assert_eq!(summary_number(s, "otlp:", "spans exported"), n, "{s}");
    assert_eq!(summary_number(s, "otlp:", "dropped"), 0, "{s}");
    assert!(summary_number(s, "otlp:", "timed out") >= 1, "{s}: the first full batch timed out");
    let rec = receiver.received();
    let largest_late = rec
        .traces
        .iter()
        .rev()
        .take(5)
        .map(|a| a.request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum::<usize>())
        .max()
        .unwrap();
    assert!(largest_late <= 256, "later requests are smaller: {largest_late}");
}
