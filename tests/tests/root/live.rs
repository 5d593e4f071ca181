//! The live daemon end to end (issue 3, "Proof"): the real `ollama-tracer` binary runs as a
//! child process (`run --output json`), real clients talk to the stand-in, and the spans it
//! prints are checked against the stand-in's ground truth and the clients' own wire-level
//! timings.
//!
//! Needs root (eBPF, libpcap, network namespaces): without it every test prints
//! `SKIPPED: not root` and passes. The eBPF tests also need the eBPF object built in
//! (`ollama-tracer check` exit 0); with `OLLAMA_TRACER_REQUIRE_EBPF=1` (as `cargo xtask test`
//! sets) its absence is a failure, not a skip.
//!
//! Isolation: every stand-in listens on a free port picked at run time (never 11434) and the
//! tracer is told that port (`--port`), so these tests can share the machine with anything;
//! namespaces and interfaces carry the test process id. They still run one at a time (a lock),
//! so their 2 ms timing checks do not compete with each other for the cores.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use testkit::load::{self, CallRecord, Conn, LoadSpec, MakeRequest, Request};

use super::check;
use super::check::{check_exact, check_sessions, pair};
use super::harness::{self, Netns, Session, Standin, Tracer, run_driver, run_node_driver, serial, tracer_bin};

macro_rules! require_root {
    ($name:expr) => {
        if !testkit::privileged::require_root($name) {
            return;
        }
    };
}

/// Why the eBPF capture cannot run here, if it cannot (from `ollama-tracer check`).
pub(super) fn ebpf_missing() -> Option<String> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        let out = Command::new(tracer_bin()).arg("check").output().expect("ollama-tracer check");
        (out.status.code() != Some(0)).then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .clone()
}

macro_rules! require_ebpf {
    ($name:expr) => {
        require_root!($name);
        if let Some(why) = ebpf_missing() {
            let required = std::env::var("OLLAMA_TRACER_REQUIRE_EBPF").is_ok_and(|v| v == "1");
            assert!(!required, "OLLAMA_TRACER_REQUIRE_EBPF=1 but eBPF capture is unavailable:\n{why}");
            testkit::privileged::skipped($name, &format!("eBPF capture unavailable:\n{why}"));
            return;
        }
    };
}

pub(super) fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `--port P` for every address of every stand-in.
pub(super) fn port_args(standins: &[&Standin]) -> Vec<String> {
    let mut ports: Vec<u16> = standins.iter().flat_map(|s| s.addrs.iter().map(|a| a.port())).collect();
    ports.sort_unstable();
    ports.dedup();
    ports.into_iter().flat_map(|p| ["--port".to_string(), p.to_string()]).collect()
}

/// Addresses inside our namespaces: 10.233.X.N with X from the process id, so two test runs at
/// once do not route over each other.
fn ns_addr(n: u8) -> String {
    format!("10.233.{}.{n}", std::process::id() % 250)
}

// ---------------------------------------------------------------------------------------------
// Real clients on loopback

/// The real `ollama`, `openai` and `anthropic` clients on 127.0.0.1, and `ollama` on [::1],
/// traced by the capture `mode`: one exact span per call, client timings within 2 ms.
fn real_clients_on_loopback(mode: &str, what: &str) {
    let _g = serial();
    let standin = Standin::start(&["127.0.0.1:0", "[::1]:0"], None, &[]);
    let mut a = args(&["--capture", mode]);
    a.extend(port_args(&[&standin]));
    let tracer = Tracer::start(what, &a);

    let mut clients = Vec::new();
    for script in ["native_session.py", "openai_session.py", "anthropic_session.py"] {
        clients.extend(run_driver(script, &standin, 0, None));
    }
    let v6 = run_driver("native_session.py", &standin, 1, None);
    assert!(v6.iter().all(|c| c["local_addr"] == "::1"), "the IPv6 session used [::1]");
    clients.extend(v6);
    let truth = standin.truth(clients.len());

    // Spans reach a pipe while the daemon runs (flushed every tick), not only at exit.
    let live = tracer.wait_spans(truth.len(), Duration::from_secs(5));
    assert_eq!(live.len(), truth.len(), "{what}: spans written while running");
    check::capabilities_dropped(tracer.pid(), what);
    let fin = tracer.stop(libc::SIGINT);
    assert!(fin.status.success(), "{what}: exit status {}", fin.status);
    check_sessions(&fin.spans, &truth, &clients, what);
    let v6_spans = fin.spans.iter().filter(|s| check::attr(s, "server.address") == Some(&Value::from("::1"))).count();
    assert_eq!(v6_spans, truth.iter().filter(|t| t["client_addr"] == "::1").count(), "{what}: IPv6 spans");

    let s = &fin.summary;
    assert_eq!((s.calls, s.spans), (truth.len() as u64, fin.written as u64), "{what}: summary\n{}", s.text);
    assert_eq!((s.gaps, s.incomplete, s.kernel_drops), (0, 0, 0), "{what}: losses\n{}", s.text);
    match mode {
        "ebpf" => assert_eq!(s.ringbuf_lost_records, Some(0), "{what}: kernel line\n{}", s.text),
        _ => assert_eq!(s.pcap_dropped, Some(0), "{what}: libpcap line\n{}", s.text),
    }
}

/// Prompt-cache hits as Ollama ≥ 0.33 reports them, through the real `ollama`, `openai` and
/// `anthropic` clients (native chat, chat completions, Responses, Anthropic messages): turn 1
/// nothing cached (no attribute, whether the API leaves the field out or sends 0), turns 2 and
/// 3 their history cached, carried exactly, with the conventions' input total.
#[test]
fn ebpf_cached_tokens_from_real_clients() {
    require_ebpf!("ebpf_cached_tokens_from_real_clients");
    let what = "eBPF cached tokens";
    let _g = serial();
    let standin = Standin::start(&["127.0.0.1:0"], None, &[]);
    let mut a = args(&["--capture", "ebpf"]);
    a.extend(port_args(&[&standin]));
    let tracer = Tracer::start(what, &a);
    let clients = run_driver("cache_session.py", &standin, 0, None);
    assert_eq!(clients.len(), 12, "{what}: four APIs, three turns each");
    let truth = standin.truth(clients.len());
    let fin = tracer.stop(libc::SIGINT);
    assert!(fin.status.success(), "{what}: exit status {}", fin.status);
    check_sessions(&fin.spans, &truth, &clients, what);
    for (i, c) in clients.iter().enumerate() {
        let span = check::span_of(&fin.spans, c);
        let cached = check::attr(span, "gen_ai.usage.cache_read.input_tokens").and_then(Value::as_u64);
        match i % 3 {
            0 => assert_eq!(cached, None, "{what}: {}: nothing cached yet", c["call"]),
            _ => assert!(cached.is_some_and(|n| n > 0), "{what}: {}: {cached:?}", c["call"]),
        }
        // Each API its own way; the span's input is the total, hits included.
        let input = check::attr(span, "gen_ai.usage.input_tokens").and_then(Value::as_u64).unwrap();
        assert!(input > cached.unwrap_or(0), "{what}: {}", c["call"]);
    }
}

/// The server metrics of a live eBPF capture, scraped by a real Prometheus while the daemon
/// runs: six streams to one model at once, an explicit load and unload, `/api/ps` answers (the
/// stand-in loads models, 600 ms) — the in-flight peak, loads, unloads, residency, busy time and
/// tokens by calling workload equal what the stand-in sent.
#[test]
fn ebpf_server_metrics_scraped_by_prometheus() {
    use testkit::prometheus::{free_port, query, start_prometheus};
    use testkit::server_traffic::{BURST, CALLS, STREAMS};
    require_ebpf!("ebpf_server_metrics_scraped_by_prometheus");
    let what = "eBPF server metrics";
    let _g = serial();
    let standin = Standin::start(&["127.0.0.1:0"], None, &["--load-ms", "600"]);
    let port = free_port();
    let mut a = args(&["--capture", "ebpf", "--metrics-addr", &port.to_string()]);
    a.extend(port_args(&[&standin]));
    let tracer = Tracer::start(what, &a);
    let endpoint: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = harness::temp_dir("prometheus");
    let Some((_prom, prom)) = start_prometheus(endpoint, &dir) else {
        testkit::privileged::skipped("ebpf_server_metrics_scraped_by_prometheus", "no prometheus server installed");
        return;
    };
    testkit::server_traffic::drive(standin.addrs[0]);
    let truth = standin.truth(CALLS);
    assert_eq!(truth.len(), CALLS);
    // Until Prometheus has scraped every call's metrics.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let model = format!("gen_ai_request_model=\"{BURST}\"");
    while query(prom, &format!("sum(ollama_client_tokens_total{{{model},gen_ai_token_type=\"output\"}})"))
        != Some(truth.iter().filter(|t| t["model"] == BURST).filter_map(|t| t["output_tokens"].as_u64()).sum::<u64>()
            as f64)
    {
        assert!(std::time::Instant::now() < deadline, "{what}: Prometheus never saw every call");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_millis(2500));
    // The six streams overlapped: a peak of six, however the scrapes fell.
    let peak = query(
        prom,
        &format!("max(max_over_time(ollama_requests_in_flight_peak{{{model},ollama_api=\"native\"}}[5m]))"),
    );
    assert_eq!(peak, Some(STREAMS as f64), "{what}: in-flight peak");
    assert_eq!(query(prom, &format!("sum(ollama_requests_in_flight{{{model}}})")), Some(0.0), "{what}: none left");
    let cold = query(prom, &format!("sum(ollama_model_loads_total{{{model},ollama_load_reason=\"cold\"}})"));
    assert_eq!(cold, Some(1.0), "{what}: the first stream loaded the model");
    let loads =
        query(prom, "sum(ollama_model_loads_total{gen_ai_request_model=\"second\",ollama_load_reason=\"request\"})");
    assert_eq!(loads, Some(1.0), "{what}: the explicit load");
    assert_eq!(query(prom, "sum(ollama_model_unloads_total{gen_ai_request_model=\"second\"})"), Some(1.0));
    assert_eq!(query(prom, "count(ollama_models_loaded)"), Some(1.0), "{what}: the last /api/ps listed one model");
    assert_eq!(query(prom, &format!("sum(ollama_models_loaded{{ollama_model=\"{BURST}\"}})")), Some(1.0));
    for (phase, field) in
        [("load", "load_duration"), ("prompt_eval", "prompt_eval_duration"), ("eval", "eval_duration")]
    {
        let ns: u64 = truth.iter().filter(|t| t["model"] == BURST).filter_map(|t| t[field].as_u64()).sum();
        let got =
            query(prom, &format!("sum(ollama_model_busy_time_seconds_total{{{model},ollama_phase=\"{phase}\"}})"));
        assert_eq!(got, Some(ns as f64 / 1e9), "{what}: busy time, {phase}");
    }
    // Who called: this test process (attribution names its executable), not `unknown`.
    let input: u64 = truth.iter().filter(|t| t["model"] == BURST).filter_map(|t| t["input_tokens"].as_u64()).sum();
    let by_workload = query(
        prom,
        &format!(
            "sum(ollama_client_tokens_total{{{model},gen_ai_token_type=\"input\",ollama_tracer_client_workload!=\"unknown\"}})"
        ),
    );
    assert_eq!(by_workload, Some(input as f64), "{what}: tokens by calling workload");
    let fin = tracer.stop(libc::SIGINT);
    assert!(fin.status.success(), "{what}: exit status {}", fin.status);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ebpf_real_clients_on_loopback() {
    require_ebpf!("ebpf_real_clients_on_loopback");
    real_clients_on_loopback("ebpf", "eBPF loopback");
}

#[test]
fn pcap_real_clients_on_loopback() {
    require_root!("pcap_real_clients_on_loopback");
    real_clients_on_loopback("pcap", "pcap loopback");
}

/// The real `ollama` npm client, on Node's fetch (undici): its own connection handling,
/// headers and stream reading. Every call is one exact span; the stream the client aborts after
/// its first chunk is one span flagged incomplete and cancelled, with no tokens made up.
#[test]
fn ebpf_npm_client_on_loopback() {
    require_ebpf!("ebpf_npm_client_on_loopback");
    let what = "eBPF npm client";
    let _g = serial();
    let standin = Standin::start(&["127.0.0.1:0"], None, &[]);
    let mut a = args(&["--capture", "ebpf"]);
    a.extend(port_args(&[&standin]));
    let tracer = Tracer::start(what, &a);
    let clients = run_node_driver("native_session.mjs", &standin);
    assert_eq!(clients.len(), 10, "{what}: calls the session makes");
    let truth = standin.truth(clients.len());
    let fin = tracer.stop(libc::SIGINT);
    assert!(fin.status.success(), "{what}: exit status {}", fin.status);
    let mut aborted = 0;
    for (span, t) in pair(&fin.spans, &truth, what) {
        if t["outcome"] == "client_gone" {
            aborted += 1;
            assert_eq!(check::attr(span, "url.path"), Some(&Value::from("/api/chat")), "{what}: aborted call's route");
            assert!(check::incomplete(span), "{what}: the aborted stream is flagged incomplete: {span}");
            assert_eq!(check::attr(span, "error.type"), Some(&Value::from("cancelled")), "{what}: {span}");
            assert_eq!(check::attr(span, "gen_ai.usage.output_tokens"), None, "{what}: no tokens made up: {span}");
        } else {
            check_exact(span, t, what);
        }
    }
    assert_eq!(aborted, 1, "{what}: the stand-in saw the client abort one stream");
    let client_tokens: Vec<_> = clients.iter().map(|c| c["output_tokens"].as_u64()).collect();
    let span_tokens: Vec<_> = {
        let mut spans: Vec<&Value> = fin.spans.iter().collect();
        spans.sort_by_key(|s| check::start(s));
        spans.iter().map(|s| check::attr_u64(s, "gen_ai.usage.output_tokens")).collect()
    };
    assert_eq!(span_tokens, client_tokens, "{what}: output tokens, call by call, as the client read them");
}

// ---------------------------------------------------------------------------------------------
// Network namespaces

/// Server in one namespace, client in another, routed through the host over two veth pairs;
/// and server and client inside a third namespace over its own loopback. The eBPF tracer on
/// the host sees every call once (a routed packet is seen at the client's egress and the
/// server's ingress: deduplicated), the pod's loopback included. A libpcap tracer on the host
/// at the same time sees the routed calls once each too (on both host-side veths:
/// deduplicated), and cannot see the pod's loopback.
#[test]
fn namespaces_routed_and_pod_loopback() {
    require_ebpf!("namespaces_routed_and_pod_loopback");
    let _g = serial();
    let mut srv = Netns::create("srv");
    let mut cli = Netns::create("cli");
    let pod = Netns::create("pod");
    let srv_addr = ns_addr(2);
    let srv_if = srv.veth_to_host("s", &srv_addr);
    let cli_if = cli.veth_to_host("c", &ns_addr(3));
    let routed = Standin::start(&[&format!("{srv_addr}:0")], Some(&srv.name), &[]);
    let local = Standin::start(&["127.0.0.1:0"], Some(&pod.name), &[]);

    let mut a = args(&["--capture", "ebpf"]);
    a.extend(port_args(&[&routed, &local]));
    let ebpf = Tracer::start("eBPF namespaces", &a);
    let mut a = args(&["--capture", "pcap"]);
    a.extend(port_args(&[&routed]));
    let pcap = Tracer::start("pcap namespaces", &a);

    let routed_clients = run_driver("native_session.py", &routed, 0, Some(&cli.name));
    assert!(routed_clients.iter().all(|c| c["local_addr"] == ns_addr(3).as_str()));
    let local_clients = run_driver("native_session.py", &local, 0, Some(&pod.name));
    let routed_truth = routed.truth(routed_clients.len());
    let local_truth = local.truth(local_clients.len());
    ebpf.wait_spans(routed_truth.len() + local_truth.len(), Duration::from_secs(5));
    pcap.wait_spans(routed_truth.len(), Duration::from_secs(5));

    let e = ebpf.stop(libc::SIGINT);
    let p = pcap.stop(libc::SIGINT);
    assert!(e.status.success() && p.status.success());
    let mut truth = routed_truth.clone();
    truth.extend(local_truth.iter().cloned());
    let mut clients = routed_clients.clone();
    clients.extend(local_clients);
    check_sessions(&e.spans, &truth, &clients, "eBPF namespaces");
    check_sessions(&p.spans, &routed_truth, &routed_clients, "pcap namespaces");
    for f in [&e, &p] {
        assert_eq!((f.summary.gaps, f.summary.incomplete, f.summary.kernel_drops), (0, 0, 0), "{}", f.summary.text);
    }
    // Every packet was captured twice (client egress and server ingress for eBPF, the two
    // host-side veths for libpcap), and each call still gave one span.
    assert!(e.summary.duplicate_bytes > 0 && p.summary.duplicate_bytes > 0, "{}\n{}", e.summary.text, p.summary.text);
    println!(
        "namespaces: duplicates removed: eBPF {} bytes, libpcap {} bytes",
        e.summary.duplicate_bytes, p.summary.duplicate_bytes
    );
    for iface in [&srv_if, &cli_if] {
        harness::assert_interface_clean(iface, &e.ids, None);
    }
    // (The stand-ins end before their namespaces: declared after them, dropped before.)
}

/// The pairing helpers themselves: a span per call, by client address and port.
#[test]
fn pairing_matches_calls_to_spans() {
    let span = |addr: &str, port: u64, t: u64| serde_json::json!({"start_time_unix_nano": t, "attributes": {"client.address": addr, "client.port": port}});
    let truth = |addr: &str, port: u64, t: u64| serde_json::json!({"client_addr": addr, "client_port": port, "t_request_first_byte_ns": t, "path": "/", "model": null});
    let spans = vec![span("10.0.0.1", 5, 20), span("127.0.0.1", 5, 10), span("10.0.0.1", 5, 10)];
    let calls = vec![truth("10.0.0.1", 5, 11), truth("10.0.0.1", 5, 21), truth("127.0.0.1", 5, 11)];
    let pairs = pair(&spans, &calls, "pairing");
    for (s, t) in pairs {
        assert_eq!(s["attributes"]["client.address"], t["client_addr"]);
        assert_eq!(s["start_time_unix_nano"].as_u64().unwrap() + 1, t["t_request_first_byte_ns"].as_u64().unwrap());
    }
}

// ---------------------------------------------------------------------------------------------
// Load, overflow, late start, signals

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Calls on one fresh keep-alive connection, one after the other.
fn sequential(rt: &tokio::runtime::Runtime, addr: SocketAddr, reqs: Vec<Request>) -> Vec<CallRecord> {
    let n = reqs.len();
    let make: MakeRequest = Arc::new(move |_, i| reqs[i].clone());
    let recs = rt.block_on(load::run(LoadSpec::new(addr, 1, n, make)));
    for r in &recs {
        assert!(r.ok(), "{r:?}");
    }
    recs
}

fn small_calls() -> Vec<Request> {
    vec![
        Request::chat("@synth:tokens=20/llama3.2", true, "Why is the sky blue?"),
        Request::chat("llama3.2", false, "Say hello."),
        Request::generate("@synth:tokens=12/llama3.2", true, "Once upon a time"),
        Request::embed("all-minilm", 3),
        Request::openai_chat("@synth:tokens=15/llama3.2", true, "Write a haiku."),
    ]
}

/// A burst far beyond a 1 MiB ring buffer (the smallest `--ring-buffer-mb` allows): 16 embed
/// calls answering ~3.6 MB each and 16 fast streams, all at once. The kernel counts the
/// records it could not queue, the summary reports them, every call that lost bytes is
/// flagged incomplete, no span carries a number the stand-in did not send, and the daemon
/// goes on: calls after the burst are exact.
#[test]
fn ebpf_ring_buffer_overflow() {
    require_ebpf!("ebpf_ring_buffer_overflow");
    let _g = serial();
    let standin = Standin::start(&["127.0.0.1:0"], None, &[]);
    let addr = standin.addrs[0];
    let mut a = args(&["--capture", "ebpf", "--ring-buffer-mb", "1"]);
    a.extend(port_args(&[&standin]));
    let mut tracer = Tracer::start("overflow", &a);
    let rt = runtime();

    let make: MakeRequest = Arc::new(|c, _| {
        if c % 2 == 0 {
            Request::embed("all-minilm", 20_000)
        } else {
            Request::chat("@synth:tokens=2000,rate=5000,ttft=5/llama3.2", true, "Count to a thousand.")
        }
    });
    let burst = rt.block_on(load::run(LoadSpec::new(addr, 32, 1, make)));
    assert!(burst.iter().all(CallRecord::ok), "the burst's calls themselves succeed");
    assert!(tracer.running(), "the daemon survives the burst");
    let after = sequential(&rt, addr, small_calls());
    let truth = standin.truth(burst.len() + after.len());
    tracer.wait_spans(truth.len(), Duration::from_secs(5));
    let fin = tracer.stop(libc::SIGINT);
    assert!(fin.status.success(), "exit status {}", fin.status);

    let s = &fin.summary;
    let lost = s.ringbuf_lost_records.expect("kernel line in the summary");
    assert!(lost > 0, "the burst overflowed the ring buffer:\n{}", s.text);
    assert!(s.ringbuf_lost_bytes.unwrap_or(0) > 0);
    assert_eq!(s.kernel_drops, lost, "summary: kernel drops = records lost");
    assert!(s.gaps > 0 && s.incomplete > 0, "losses become gaps and flagged spans:\n{}", s.text);

    // Every span is right about what it says.
    let mut flagged = 0;
    for span in &fin.spans {
        let t = check::truth_of(&truth, span).unwrap_or_else(|| panic!("span of no call: {}", check::brief(span)));
        check::check_no_wrong_numbers(span, t, "overflow");
        flagged += usize::from(check::incomplete(span));
    }
    // A call has no span only when its request was lost too (its response then resyncs away).
    let missing = truth.len() - fin.spans.len();
    assert!(
        missing as u64 <= s.orphan_responses + s.resyncs,
        "{missing} calls without a span, not explained by lost requests:\n{}",
        s.text
    );
    // After the burst: exact again.
    let after_ports: Vec<u64> = after.iter().map(|r| u64::from(r.local_port)).collect();
    let after_spans: Vec<Value> =
        fin.spans.iter().filter(|s| after_ports.contains(&check::client_port(s))).cloned().collect();
    let after_truth: Vec<Value> =
        truth.iter().filter(|t| after_ports.contains(&t["client_port"].as_u64().unwrap())).cloned().collect();
    for (span, t) in pair(&after_spans, &after_truth, "after the overflow") {
        check_exact(span, t, "after the overflow");
    }
    println!(
        "overflow: {lost} records ({} bytes) lost in the kernel; {} of {} burst calls flagged incomplete, \
         {missing} without a span; the {} calls after it exact",
        s.ringbuf_lost_bytes.unwrap_or(0),
        flagged,
        burst.len(),
        after.len()
    );
}

/// The tracer starts while a long stream flows on a keep-alive connection of the real
/// `ollama` client: that call is skipped (counted as a mid-stream connection) or reported
/// incomplete, never with a wrong number; the calls that follow on the same connection are
/// exact.
#[test]
fn ebpf_started_mid_stream() {
    require_ebpf!("ebpf_started_mid_stream");
    let _g = serial();
    let standin = Standin::start(&["127.0.0.1:0"], None, &[]);
    let mut session = Session::start("midstream_session.py", &["--base-url", &standin.url(0)]);
    assert_eq!(session.line(Duration::from_secs(30))["event"], "first_chunk");
    let mut a = args(&["--capture", "ebpf"]);
    a.extend(port_args(&[&standin]));
    let tracer = Tracer::start("mid-stream", &a);
    let long = session.line(Duration::from_secs(60));
    assert_eq!(long["call"], "long_stream");
    let end = long["t_last_read_ns"].as_u64().unwrap();
    assert!(tracer.attached_ns < end, "attached before the stream ended (so part of it was captured)");
    println!("mid-stream: attached {:.0} ms before the stream ended", (end - tracer.attached_ns) as f64 / 1e6);
    session.say("go");
    let rest = session.finish();
    assert_eq!(rest.len(), 3);
    assert!(rest.iter().all(|c| c["local_port"] == long["local_port"]), "same keep-alive connection");
    let truth = standin.truth(4);
    tracer.wait_spans(3, Duration::from_secs(5));
    let fin = tracer.stop(libc::SIGINT);
    assert!(fin.status.success());

    let long_truth = truth.iter().find(|t| t["model"].as_str().is_some_and(|m| m.starts_with("@synth"))).unwrap();
    let long_spans: Vec<&Value> =
        fin.spans.iter().filter(|s| check::attr(s, "gen_ai.request.model") == Some(&long_truth["model"])).collect();
    match long_spans.as_slice() {
        [] => assert!(
            fin.summary.midstream_connections >= 1 && fin.summary.resync_skipped_bytes > 0,
            "a skipped call is counted:\n{}",
            fin.summary.text
        ),
        [span] => {
            assert!(check::incomplete(span), "the partly seen call is flagged: {}", check::brief(span));
            check::check_no_wrong_numbers(span, long_truth, "mid-stream");
        }
        more => panic!("{} spans for the interrupted call", more.len()),
    }
    let next_truth: Vec<Value> = truth.iter().filter(|t| !std::ptr::eq(*t, long_truth)).cloned().collect();
    let next_spans: Vec<Value> = fin.spans.iter().filter(|s| !long_spans.contains(s)).cloned().collect();
    check_sessions(&next_spans, &next_truth, &rest, "after a mid-stream start");
    println!(
        "mid-stream: the interrupted call {}; {} mid-stream connection(s), {} bytes skipped",
        if long_spans.is_empty() { "was skipped" } else { "was reported incomplete" },
        fin.summary.midstream_connections,
        fin.summary.resync_skipped_bytes
    );
}

/// SIGTERM while a stream is in flight: the daemon detaches, ends that call as an incomplete
/// span (capture ended; no counts it did not see), prints the summary with the kernel's
/// counters, and exits 0. A call completed before is exact.
#[test]
fn ebpf_sigterm_ends_in_flight_calls() {
    require_ebpf!("ebpf_sigterm_ends_in_flight_calls");
    let _g = serial();
    let standin = Standin::start(&["127.0.0.1:0"], None, &[]);
    let addr = standin.addrs[0];
    let mut a = args(&["--capture", "ebpf"]);
    a.extend(port_args(&[&standin]));
    let tracer = Tracer::start("SIGTERM", &a);
    let rt = runtime();
    let before = sequential(&rt, addr, vec![Request::chat("@synth:tokens=10/llama3.2", true, "hi")]);
    let long = rt.spawn(async move {
        let mut conn = Conn::connect(addr, 0).await.unwrap();
        conn.call(&Request::chat("@synth:tokens=100,rate=50/llama3.2", true, "Tell me a story.")).await
    });
    std::thread::sleep(Duration::from_millis(700));
    let fin = tracer.stop(libc::SIGTERM);
    assert!(fin.status.success(), "SIGTERM exit status {}", fin.status);
    assert!(fin.summary.text.contains("\n  kernel: "), "kernel counters in the summary:\n{}", fin.summary.text);
    assert_eq!(fin.summary.ringbuf_lost_records, Some(0));
    let long = rt.block_on(long).unwrap();
    assert!(long.ok(), "{long:?}");
    let truth = standin.truth(2);
    assert_eq!(fin.spans.len(), 2, "the finished call and the one in flight");
    let done = fin.spans.iter().find(|s| check::client_port(s) == u64::from(before[0].local_port)).unwrap();
    check_exact(done, check::truth_of(&truth, done).unwrap(), "before SIGTERM");
    let cut = fin.spans.iter().find(|s| check::client_port(s) == u64::from(long.local_port)).unwrap();
    assert!(check::incomplete(cut), "in-flight call flagged: {}", check::brief(cut));
    let reasons = check::attr(cut, "ollama_tracer.incomplete_reasons").cloned().unwrap_or_default();
    assert!(reasons.to_string().contains("capture_ended"), "reasons {reasons}");
    assert_eq!(check::attr_u64(cut, "gen_ai.usage.output_tokens"), None, "no count before the final chunk");
    assert_eq!(check::attr(cut, "error.type"), None, "the tracer stopped, the stream did not: {cut}");
    assert_ne!(cut["status"]["code"], "error", "{cut}");
    assert!(check::ttfc(cut).is_some(), "its first chunk was seen");
    check::check_no_wrong_numbers(cut, check::truth_of(&truth, cut).unwrap(), "in flight at SIGTERM");
    check::check_load_start(cut, &long, "in flight at SIGTERM");
}

/// Calls that ended just before SIGINT are still in the kernel's buffer (the daemon lets it
/// fill a couple of milliseconds between reads): the daemon reads it out before detaching, so
/// each of them still gives its exact span.
fn sigint_right_after_calls(mode: &str, what: &str) {
    let _g = serial();
    let standin = Standin::start(&["127.0.0.1:0"], None, &["--ttft-ms", "0"]);
    let addr = standin.addrs[0];
    let mut a = args(&["--capture", mode]);
    a.extend(port_args(&[&standin]));
    let tracer = Tracer::start(what, &a);
    let rt = runtime();
    let reqs: Vec<Request> = (0..100).map(|_| Request::chat("@synth:tokens=2/llama3.2", true, "Say hello.")).collect();
    let recs = sequential(&rt, addr, reqs);
    // At once: no waiting for the spans.
    let fin = tracer.stop(libc::SIGINT);
    assert!(fin.status.success(), "{what}: exit status {}", fin.status);
    assert_eq!(fin.summary.kernel_drops, 0, "{what}:\n{}", fin.summary.text);
    let truth = standin.truth(recs.len());
    assert_eq!(fin.spans.len(), recs.len(), "{what}: one span per call, the last ones included");
    for (span, t) in pair(&fin.spans, &truth, what) {
        check_exact(span, t, what);
    }
}

#[test]
fn ebpf_sigint_right_after_calls_loses_none() {
    require_ebpf!("ebpf_sigint_right_after_calls_loses_none");
    sigint_right_after_calls("ebpf", "eBPF SIGINT right after calls");
}

#[test]
fn pcap_sigint_right_after_calls_loses_none() {
    require_ebpf!("pcap_sigint_right_after_calls_loses_none");
    sigint_right_after_calls("pcap", "pcap SIGINT right after calls");
}

/// `--ebpf-attach tcx --interface lo`: TCX links only, each loopback packet seen on egress and
/// ingress (deduplicated: one exact span per call); after SIGINT no link, no program and no
/// qdisc remains on `lo`.
#[test]
fn ebpf_tcx_on_lo_leaves_nothing_behind() {
    require_ebpf!("ebpf_tcx_on_lo_leaves_nothing_behind");
    let _g = serial();
    let standin = Standin::start(&["127.0.0.1:0"], None, &[]);
    let mut a = args(&["--capture", "ebpf", "--ebpf-attach", "tcx", "--interface", "lo"]);
    a.extend(port_args(&[&standin]));
    let tracer = Tracer::start("TCX lo", &a);
    assert!(!tracer.ids.links.is_empty(), "TCX links held by the tracer");
    let rt = runtime();
    let recs = sequential(&rt, standin.addrs[0], small_calls());
    let truth = standin.truth(recs.len());
    tracer.wait_spans(truth.len(), Duration::from_secs(5));
    let fin = tracer.stop(libc::SIGINT);
    assert!(fin.status.success());
    for (span, t) in pair(&fin.spans, &truth, "TCX lo") {
        check_exact(span, t, "TCX lo");
    }
    for (span, rec) in fin.spans.iter().zip({
        let mut r = recs.clone();
        r.sort_by_key(|r| r.t_write_ns);
        r
    }) {
        check::check_load_start(span, &rec, "TCX lo");
    }
    harness::assert_interface_clean("lo", &fin.ids, None);
}

/// A daemon killed with SIGKILL cannot detach anything itself: its links (cgroup and TCX) are
/// tied to its file descriptors, so the kernel removes them and the programs with the process,
/// and no qdisc was ever created.
#[test]
fn ebpf_killed_daemon_leaves_nothing_attached() {
    require_ebpf!("ebpf_killed_daemon_leaves_nothing_attached");
    let _g = serial();
    let cgroup = Tracer::start("SIGKILL cgroup", &args(&["--capture", "ebpf", "--port", "1"]));
    let ids = cgroup.kill();
    assert!(!ids.links.is_empty());
    let tcx = Tracer::start(
        "SIGKILL TCX",
        &args(&["--capture", "ebpf", "--ebpf-attach", "tcx", "--interface", "lo", "--port", "1"]),
    );
    let ids = tcx.kill();
    harness::assert_interface_clean("lo", &ids, None);
}

/// 100 streams at once (the load generator, 100 keep-alive connections): one exact span per
/// call, no kernel loss with the default ring buffer.
#[test]
fn ebpf_100_concurrent_streams() {
    require_ebpf!("ebpf_100_concurrent_streams");
    let _g = serial();
    let standin = Standin::start(&["127.0.0.1:0"], None, &[]);
    let mut a = args(&["--capture", "ebpf"]);
    a.extend(port_args(&[&standin]));
    let tracer = Tracer::start("100 streams", &a);
    let rt = runtime();
    let make: MakeRequest = Arc::new(|c, _| {
        if c % 4 == 3 {
            Request::openai_chat("@synth:tokens=100,rate=50/llama3.2", true, "Tell me a story.")
        } else {
            Request::chat("@synth:tokens=100,rate=50/llama3.2", true, "Tell me a story.")
        }
    });
    let recs = rt.block_on(load::run(LoadSpec::new(standin.addrs[0], 100, 2, make)));
    assert!(recs.iter().all(CallRecord::ok));
    let truth = standin.truth(recs.len());
    tracer.wait_spans(truth.len(), Duration::from_secs(10));
    let fin = tracer.stop(libc::SIGINT);
    assert!(fin.status.success());
    for (span, t) in pair(&fin.spans, &truth, "100 streams") {
        check::check_values(span, t, "100 streams");
    }
    let mut worst = 0f64;
    for r in &recs {
        let span = fin
            .spans
            .iter()
            .filter(|s| check::client_port(s) == u64::from(r.local_port))
            .min_by_key(|s| check::start(s).abs_diff(r.t_write_ns))
            .unwrap();
        worst = worst.max(check::check_load_start(span, r, "100 streams").abs());
    }
    assert_eq!((fin.summary.gaps, fin.summary.ringbuf_lost_records), (0, Some(0)), "{}", fin.summary.text);
    println!("100 streams: {} calls, one exact span each, starts within {worst:.3} ms of the writes", recs.len());
}

// ---------------------------------------------------------------------------------------------
// Measurement

/// CPU time (user + system) of a process so far, and its resident set now, in KiB.
fn cpu_and_rss(pid: u32) -> Option<(Duration, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches(" kB").trim().parse().ok()?;
    Some((Duration::from_nanos(ticks * 1_000_000_000 / hz), rss))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Not a pass/fail test: the daemon's CPU and memory while 100 streams run at once, and the
/// kernel's counters. Use the release build:
/// `cargo test --release -p ollama-tracer-tests --test root -- --ignored --nocapture live::measure`.
/// Env: MEASURE_SECS (30), MEASURE_STREAMS (100), MEASURE_TOKENS (250), MEASURE_RATE (50
/// tokens/s per stream), MEASURE_CAPTURE (ebpf | pcap), MEASURE_RING_MB (the eBPF ring buffer,
/// default the daemon's: its pages are mapped twice into the daemon and count in its RSS).
#[test]
#[ignore]
fn measure_100_concurrent_streams() {
    require_ebpf!("measure_100_concurrent_streams");
    let _g = serial();
    let secs: f64 = env_or("MEASURE_SECS", 30.0);
    let streams: usize = env_or("MEASURE_STREAMS", 100);
    let tokens: usize = env_or("MEASURE_TOKENS", 250);
    let rate: f64 = env_or("MEASURE_RATE", 50.0);
    let capture: String = env_or("MEASURE_CAPTURE", "ebpf".to_string());
    let standin = Standin::start(&["127.0.0.1:0"], None, &[]);
    let mut a = args(&["--capture", &capture]);
    if let Ok(mb) = std::env::var("MEASURE_RING_MB") {
        a.extend(["--ring-buffer-mb".to_owned(), mb]);
    }
    a.extend(port_args(&[&standin]));
    let tracer = Tracer::start("measure", &a);
    let pid = tracer.pid();
    std::thread::sleep(Duration::from_secs(1));
    let (idle_cpu, idle_rss) = cpu_and_rss(pid).expect("tracer /proc");

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(s) = cpu_and_rss(pid) {
                    samples.push((std::time::Instant::now(), s));
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            samples
        })
    };
    let model = format!("@synth:tokens={tokens},rate={rate}/llama3.2");
    let make: MakeRequest = Arc::new(move |_, _| Request::chat(&model, true, "Tell me a story."));
    let mut spec = LoadSpec::new(standin.addrs[0], streams, 0, make);
    spec.duration = Some(Duration::from_secs_f64(secs));
    // Spread the starts over one call's length, so the streams stay staggered.
    spec.ramp = Duration::from_secs_f64(tokens as f64 / rate);
    let t0 = std::time::Instant::now();
    let recs = runtime().block_on(load::run(spec));
    let wall = t0.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let samples = sampler.join().unwrap();
    // Peak RSS, and what it is made of: the daemon's own heap (anon) vs the ring buffer's
    // pages mapped from the kernel (shared/file).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field =
        |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned()).unwrap_or_default();
    let hwm = format!(
        "peak {}; now anon {}, file {}, shmem {}",
        field("VmHWM:"),
        field("RssAnon:"),
        field("RssFile:"),
        field("RssShmem:")
    );
    let truth = standin.truth(recs.len());
    tracer.wait_spans(truth.len(), Duration::from_secs(10));
    let fin = tracer.stop(libc::SIGINT);

    // The full-load window: after the ramp, while every connection streams.
    let ramp_end = Duration::from_secs_f64(tokens as f64 / rate);
    let full: Vec<&(std::time::Instant, (Duration, u64))> =
        samples.iter().filter(|(t, _)| t.duration_since(t0) >= ramp_end).collect();
    let (first, last) = (full.first().expect("samples"), full.last().expect("samples"));
    let cpu = (last.1.0 - first.1.0).as_secs_f64() / last.0.duration_since(first.0).as_secs_f64() * 100.0;
    let rss_max = full.iter().map(|s| s.1.1).max().unwrap_or(0);
    let rss_mean = full.iter().map(|s| s.1.1).sum::<u64>() / full.len() as u64;
    let chunks: u64 = recs.iter().map(|r| r.units).sum();
    let ok = recs.iter().filter(|r| r.ok()).count();
    println!(
        "measure ({capture}, {} build): {streams} concurrent streams of {tokens} tokens at {rate} tokens/s, {wall:.1?}",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    println!(
        "  calls {} ({} ok), spans {}, {:.0} chunks/s",
        recs.len(),
        ok,
        fin.spans.len(),
        chunks as f64 / wall.as_secs_f64()
    );
    println!(
        "  daemon CPU {cpu:.1} % of one core (idle before: {:.1?} total), RSS {:.1} MiB max / {:.1} MiB mean \
         (idle {:.1} MiB; {hwm})",
        idle_cpu,
        rss_max as f64 / 1024.0,
        rss_mean as f64 / 1024.0,
        idle_rss as f64 / 1024.0
    );
    println!("  {}", fin.summary.text.trim_end().replace('\n', "\n  "));
    assert_eq!(fin.spans.len(), truth.len(), "one span per call");
}
