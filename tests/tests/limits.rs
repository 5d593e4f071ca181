//! Hostile and oversized traffic against the pipeline's bounds: slowloris heads, floods of
//! unfinished heads, 100 MB request bodies, 10 000 connections, endless pipelining, too many
//! calls in flight. Each bound holds, each overflow is counted, no call goes unreported, and the
//! heap the pipeline uses (measured by a counting allocator) stays small.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use testkit::drive;
use testkit::synth::{Packet, raw_connection};
use tracer_core::http::HttpConfig;
use tracer_core::llm::{Incomplete, LlmCall, LlmConfig};
use tracer_core::pipeline::{Pipeline, PipelineConfig, PipelineStats};
use tracer_core::reassembly::ReassemblyConfig;
use tracer_core::segment::{Orientation, Timestamp};

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded to the system allocator with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The heap is process-wide: measurements run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Feeds packets one by one through a pipeline (nothing else allocated in between), returning
/// the calls, the stats and the pipeline's peak heap above what was live before it started.
fn run_measured(packets: &[Packet], config: PipelineConfig) -> (Vec<LlmCall>, PipelineStats, usize) {
    let orientation = Orientation::new(&[11434]);
    let mut calls = Vec::with_capacity(20_000);
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut pipeline = Pipeline::new(config);
    {
        let mut out = |c: LlmCall| calls.push(c);
        for p in packets {
            if let Some(seg) = drive::segment(p, &orientation) {
                pipeline.push(&seg, &mut out);
            }
        }
    }
    let peak_during = PEAK.load(Ordering::Relaxed) - base;
    let mut out = |c: LlmCall| calls.push(c);
    pipeline.finish(&mut out);
    (calls, pipeline.stats(), peak_during)
}

fn client(i: usize) -> SocketAddr {
    SocketAddr::new([10, (i >> 16) as u8, (i >> 8) as u8, i as u8].into(), 40000 + (i % 20000) as u16)
}

const S: u64 = 1_000_000_000;

#[test]
fn slowloris_heads_are_dropped_when_they_stall_and_counted() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 50 clients each trickle a head one byte every 2 s and never finish it; a normal call
    // runs meanwhile on another connection.
    let head = b"POST /api/chat HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut packets = Vec::new();
    for i in 0..50 {
        let writes: Vec<(bool, &[u8], u64)> =
            head.iter().enumerate().map(|(k, _)| (true, &head[k..k + 1], 10 + (k as u64) * 2 * S + i as u64)).collect();
        packets.extend(raw_connection(client(i), &writes));
    }
    let body = br#"{"model":"m","prompt":"hi","stream":false}"#;
    let req = format!("POST /api/generate HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
    let resp_body = br#"{"model":"m","created_at":"t","response":"ok","done":true,"done_reason":"stop","prompt_eval_count":2,"eval_count":1}"#;
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        resp_body.len()
    );
    packets.extend(raw_connection(
        client(999),
        &[
            (true, req.as_bytes(), 150 * S),
            (true, body, 150 * S + 1),
            (false, resp.as_bytes(), 151 * S),
            (false, resp_body, 151 * S + 1),
        ],
    ));
    packets.sort_by_key(|p| p.ts_ns);
    let (calls, stats, _) = run_measured(&packets, PipelineConfig::default());
    assert_eq!(stats.http.stale_heads, 50, "every stalled head dropped once (then ignored in resync)");
    assert_eq!(calls.len(), 1, "the stalled heads were never requests");
    assert_eq!(calls[0].response.output_tokens, Some(1));
    assert!(calls[0].incomplete.is_empty());
}

#[test]
fn unfinished_heads_are_bounded_in_total() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 2 000 connections each send 30 KiB of a head that never ends: 60 MB if all were kept.
    let mut head = b"POST /api/chat HTTP/1.1\r\nX-Pad: ".to_vec();
    head.resize(30 * 1024, b'a');
    let mut packets = Vec::new();
    for i in 0..2_000 {
        packets.extend(raw_connection(client(i), &[(true, &head, 10 + i as u64 * 1_000)]));
    }
    // A tick of capture time later, the periodic rules run.
    packets.extend(raw_connection(client(5_000), &[(true, b"GET / HTTP/1.1\r\n\r\n", 3 * S)]));
    packets.sort_by_key(|p| p.ts_ns);
    let config = PipelineConfig {
        http: HttpConfig { max_partial_heads: 4 << 20, ..HttpConfig::default() },
        ..PipelineConfig::default()
    };
    let (_, stats, _) = run_measured(&packets, config.clone());
    let kept_after = 4 << 20;
    assert!(stats.http.head_evictions >= 2_000 - (kept_after / head.len()) as u64 - 1, "{:?}", stats.http);
    // The same flood replayed into a pipeline whose state we can look at.
    let orientation = Orientation::new(&[11434]);
    let mut p = Pipeline::new(config);
    let mut sink = |_c: LlmCall| {};
    for pk in &packets {
        if let Some(seg) = drive::segment(pk, &orientation) {
            p.push(&seg, &mut sink);
        }
    }
    p.expire(Timestamp(4 * S), &mut sink);
    assert!(p.partial_head_bytes() <= 4 << 20, "{} bytes of heads held", p.partial_head_bytes());
}

#[test]
fn a_100_mb_request_body_is_read_in_bounded_memory() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A chat request whose single message is 100 MB of text, then its answer.
    let prefix = br#"{"model":"llama3.2","stream":false,"messages":[{"role":"user","content":""#;
    let suffix = br#""}]}"#;
    let text_len = 100 * 1024 * 1024;
    let total = prefix.len() + text_len + suffix.len();
    let head = format!("POST /api/chat HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {total}\r\n\r\n");
    let chunk = vec![b'x'; 64 * 1024];
    let mut writes: Vec<(bool, &[u8], u64)> = vec![(true, head.as_bytes(), 10), (true, prefix, 11)];
    let mut ts = 12;
    for _ in 0..text_len / chunk.len() {
        writes.push((true, &chunk, ts));
        ts += 1;
    }
    writes.push((true, suffix, ts));
    let resp_body = br#"{"model":"llama3.2","created_at":"t","message":{"role":"assistant","content":"long"},"done":true,"done_reason":"stop","prompt_eval_count":26000000,"eval_count":1}"#;
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        resp_body.len()
    );
    writes.push((false, resp.as_bytes(), ts + 10));
    writes.push((false, resp_body, ts + 11));
    let packets = raw_connection(client(1), &writes);
    for capture_content in [false, true] {
        let config =
            PipelineConfig { llm: LlmConfig { capture_content, ..LlmConfig::default() }, ..PipelineConfig::default() };
        let (calls, _, peak) = run_measured(&packets, config);
        assert_eq!(calls.len(), 1);
        let c = &calls[0];
        assert_eq!(c.request.body_bytes, total as u64);
        assert_eq!(c.request.model.as_deref(), Some("llama3.2"));
        assert_eq!(c.request.messages, Some(1));
        assert_eq!(c.response.input_tokens, Some(26_000_000));
        assert!(c.incomplete.is_empty(), "{:?}", c.incomplete);
        // Content capture keeps at most its bounded share of the text.
        assert!(peak < 4 << 20, "capture_content={capture_content}: {peak} bytes of heap at peak");
    }
}

#[test]
fn ten_thousand_connections_and_the_connection_cap() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 10 000 clients each send a request and wait: no response yet.
    let body = br#"{"model":"m","prompt":"hi"}"#;
    let req = format!(
        "POST /api/generate HTTP/1.1\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        std::str::from_utf8(body).unwrap()
    );
    let mut packets = Vec::new();
    for i in 0..10_000 {
        packets.extend(raw_connection(client(i), &[(true, req.as_bytes(), 10 + i as u64 * 100)]));
    }
    packets.sort_by_key(|p| p.ts_ns);
    let (calls, stats, peak) = run_measured(&packets, PipelineConfig::default());
    assert_eq!(stats.reassembly.connections, 10_000);
    assert_eq!(calls.len(), 10_000, "every unanswered request is reported at the end");
    assert!(calls.iter().all(|c| c.incomplete.contains(&Incomplete::NoResponse)));
    assert!(peak < 64 << 20, "10 000 connections with a call each: {peak} bytes of heap");
    eprintln!(
        "10 000 connections with a call in flight each: {:.1} MiB of heap at peak",
        peak as f64 / (1 << 20) as f64
    );

    // Capped at 2 000 connections: the least recently active are closed, their calls reported
    // (flagged) as they go.
    let config = PipelineConfig {
        reassembly: ReassemblyConfig { max_connections: 2_000, ..ReassemblyConfig::default() },
        ..PipelineConfig::default()
    };
    let (calls, stats, capped_peak) = run_measured(&packets, config);
    assert!(stats.reassembly.evicted >= 8_000, "{:?}", stats.reassembly);
    assert_eq!(calls.len(), 10_000);
    assert!(capped_peak < peak, "{capped_peak} vs {peak}");
}

#[test]
fn endless_pipelining_and_too_many_calls_in_flight_are_bounded_and_reported() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // One client pipelines 300 requests the server never answers.
    let req = b"GET /api/tags HTTP/1.1\r\n\r\n";
    let writes: Vec<(bool, &[u8], u64)> = (0..300).map(|i| (true, &req[..], 10 + i)).collect();
    let packets = raw_connection(client(1), &writes);
    let (calls, stats, _) = run_measured(&packets, PipelineConfig::default());
    assert_eq!(stats.http.pending_overflows, 300 - 128);
    assert_eq!(calls.len(), 300, "settled early or at the end, each is reported once");

    // 150 connections with a request each, at most 100 calls in flight.
    let mut packets = Vec::new();
    for i in 0..150 {
        packets.extend(raw_connection(client(i), &[(true, &req[..], 10 + i as u64)]));
    }
    packets.sort_by_key(|p| p.ts_ns);
    let config = PipelineConfig {
        llm: LlmConfig { max_calls_in_flight: 100, ..LlmConfig::default() },
        ..PipelineConfig::default()
    };
    let (calls, stats, _) = run_measured(&packets, config);
    assert_eq!(stats.llm.evicted, 50);
    assert_eq!(calls.len(), 150);
    let early: Vec<&LlmCall> = calls.iter().take(50).collect();
    assert!(early.iter().all(|c| c.incomplete.contains(&Incomplete::CaptureEnded)), "flagged as cut short");
}
