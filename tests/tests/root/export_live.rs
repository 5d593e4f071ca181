//! The live daemon (`ollama-tracer run`, root) exporting: calls to a local stand-in on a free
//! port show on its Prometheus endpoint while it runs, and on SIGTERM the daemon flushes their
//! spans and the final metrics to a real OTLP receiver before it exits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use testkit::otlp::{Receiver, Transport};
use testkit::output::*;

const REPLY: &str = r#"{"model":"llama3.2","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":"hi"},"done_reason":"stop","done":true,"total_duration":5000000,"load_duration":1000000,"prompt_eval_count":3,"prompt_eval_duration":2000000,"eval_count":2,"eval_duration":1000000}"#;

/// A minimal Ollama: answers every `POST /api/chat` with one non-streamed reply.
fn standin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in l.incoming().flatten() {
            let mut s = stream;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Head, then Content-Length bytes of body.
            let body_end = loop {
                let Ok(n) = s.read(&mut chunk) else { break None };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        break Some(());
                    }
                }
            };
            if body_end.is_some() {
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{REPLY}",
                    REPLY.len()
                );
            }
        }
    });
    addr
}

fn chat(addr: SocketAddr) {
    let body = r#"{"model":"llama3.2","messages":[{"role":"user","content":"hello"}],"stream":false}"#;
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /api/chat HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[test]
fn daemon_exports_and_flushes_on_sigterm() {
    if !testkit::privileged::require_root("daemon_exports_and_flushes_on_sigterm") {
        return;
    }
    let _serial = testkit::privileged::serial();
    let ollama = standin();
    let receiver = Receiver::start(Transport::Grpc).unwrap();
    let metrics_port = free_port();
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let mut child = bin()
        .args(["run", "--port", &ollama.port().to_string(), "--output", "json"])
        .args(["--otlp-endpoint", &receiver.url(), "--otlp-protocol", "grpc"])
        .args(["--metrics-addr", &metrics_port.to_string()])
        .env("OTEL_METRIC_EXPORT_INTERVAL", "600000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Up when the endpoint answers; the capture is attached before outputs start.
    let deadline = Instant::now() + Duration::from_secs(30);
    while http("GET", metrics, "/metrics", None).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        chat(ollama);
    }
    // The endpoint counts them while the daemon runs (health is refreshed every 250 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http("GET", metrics, "/metrics", None).unwrap();
        let calls =
            body.lines().find(|l| l.starts_with("ollama_tracer_calls_total")).and_then(|l| l.rsplit(' ').next());
        let tokens = body.lines().any(|l| l.starts_with("gen_ai_client_token_usage_count") && l.ends_with(" 3"));
        if calls == Some("3") && tokens {
            break;
        }
        assert!(Instant::now() < deadline, "calls never showed on the endpoint:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing is exported yet (batches wait up to 1 s, metrics every 10 min)… then SIGTERM.
    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    let mut stderr = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "flushed within the timeout");
    let spans = json_spans(&stdout);
    assert_eq!(call_spans(&spans).len(), 3, "{stderr}");
    let rec = receiver.received();
    let got = rec.spans();
    assert_eq!(got.len(), spans.len(), "every span, children included, reached the collector: {stderr}");
    assert_eq!(got.iter().filter(|(_, _, s)| s.kind == 2).count(), 3);
    for (_, _, s) in &got {
        if s.kind == 2 {
            assert_eq!(s.name, "chat llama3.2");
        }
        assert!(spans.iter().any(|j| j["span_id"].as_str() == Some(hex(&s.span_id).as_str())));
    }
    let (_, _, m) = rec.last_metrics().expect("the final metrics push at shutdown");
    assert!(m.iter().any(|m| m.name == "gen_ai.client.operation.duration"));
    assert_eq!(summary_number(&stderr, "otlp:", "spans exported"), spans.len() as u64, "{stderr}");
}
