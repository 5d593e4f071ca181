//! No credential leaves the tracer. The real `ollama`, `openai` and `anthropic` clients run with
//! their API keys set (`OLLAMA_API_KEY`, `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`: the keys travel as
//! `Authorization: Bearer …` and `x-api-key`), and raw requests add a cookie, a proxy
//! credential, a key in the query string and a key pasted into a prompt. Their capture is
//! replayed by the real binary with every output on — JSON spans, text lines, OTLP traces and
//! metrics into a real receiver, debug logs — with content capture on and those headers asked
//! for by name: no key appears in any of it (the prompt's key only as `[REDACTED]`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use testkit::otlp::{Receiver, Transport};
use testkit::pcap::{FileFormat, LinkType, TsPrecision, WriterConfig, write_capture};
use testkit::process::{StandInProcess, client_script, tracer_bin, venv_python};
use testkit::tap::Tap;

const OLLAMA_KEY: &str = "ollama-key-4f1c9b2e7d";
const OPENAI_KEY: &str = "sk-proj-openaikey8a7b6c5d4e3f2a1b";
const ANTHROPIC_KEY: &str = "sk-ant-api03-anthropickey9z8y7x";
const COOKIE: &str = "cookie-session-77e2a91c";
const PROXY: &str = "cHJveHl1c2VyOnByb3h5cGFzcw";
const QUERY_KEY: &str = "query-key-5d3e1f0a";
const PROMPT_KEY: &str = "sk-pastedintoprompt0123456789abcdef";
/// The tracer's own credential for its collector (`OTEL_EXPORTER_OTLP_HEADERS`): sent there,
/// never printed.
const COLLECTOR_TOKEN: &str = "collector-token-0b9f8e7d";
const SECRETS: [&str; 8] =
    [OLLAMA_KEY, OPENAI_KEY, ANTHROPIC_KEY, COOKIE, PROXY, QUERY_KEY, PROMPT_KEY, COLLECTOR_TOKEN];

fn raw_call(url: &str, head: &str, body: &str) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect to the tap");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("{head}Host: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert!(out.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&out));
}

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} leaked {s:?}");
    }
    let lower = text.to_ascii_lowercase();
    for h in ["authorization", "x-api-key", "cookie"] {
        assert!(!lower.contains(&format!("http.request.header.{h}")), "{what} exported the {h} header");
    }
}

#[test]
fn credentials_from_real_clients_never_leave_the_tracer() {
    let Some(python) = venv_python("credentials_from_real_clients_never_leave_the_tracer") else { return };
    let standin = StandInProcess::start(env!("CARGO_BIN_EXE_ollama-standin").as_ref(), &[]).expect("stand-in");
    let tap = Tap::start(standin.addr).expect("tap");
    let mut calls = 0;
    for (script, env) in [
        ("native_session.py", ("OLLAMA_API_KEY", OLLAMA_KEY)),
        ("openai_session.py", ("OPENAI_API_KEY", OPENAI_KEY)),
        ("anthropic_session.py", ("ANTHROPIC_API_KEY", ANTHROPIC_KEY)),
    ] {
        let out = Command::new(&python)
            .arg(client_script(script))
            .args(["--base-url", &tap.url()])
            .env(env.0, env.1)
            .output()
            .expect("run a client");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{script}:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        calls += stdout.lines().count();
    }
    let prompt = format!(
        r#"{{"model":"llama3.2","stream":false,"messages":[{{"role":"user","content":"my key is {PROMPT_KEY}, keep it"}}]}}"#
    );
    raw_call(
        &tap.url(),
        &format!(
            "POST /api/chat?api_key={QUERY_KEY} HTTP/1.1\r\nCookie: session={COOKIE}\r\nProxy-Authorization: Basic {PROXY}\r\nContent-Type: application/json\r\n"
        ),
        &prompt,
    );
    calls += 1;
    std::thread::sleep(Duration::from_millis(200));
    let packets = tap.packets();

    let dir = std::env::temp_dir().join(format!("ollama-tracer-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("secrets.pcap");
    let cfg = WriterConfig::new(FileFormat::Pcap, TsPrecision::Nano, LinkType::Ethernet);
    let file = write_capture(Vec::new(), cfg, &packets).expect("write the capture");
    // The capture really carries every secret: otherwise this test could not fail.
    let raw = String::from_utf8_lossy(&file).into_owned();
    for s in &SECRETS[..7] {
        assert!(raw.contains(s), "the capture carries {s}");
    }
    std::fs::write(&pcap, &file).unwrap();

    let receiver = Receiver::start(Transport::Http).expect("receiver");
    let run = |output: &str| {
        let out = Command::new(tracer_bin())
            .args(["replay", "--output", output, "--capture-content", "--otlp-endpoint", &receiver.url()])
            .args(["--keep-header", "authorization", "--keep-header", "x-api-key", "--keep-header", "cookie"])
            .args(["--keep-header", "proxy-authorization", "--keep-header", "content-type"])
            .arg(&pcap)
            .env("OLLAMA_TRACER_LOG", "debug")
            .env("OTEL_METRICS_EXPORTER", "otlp")
            .env("OTEL_EXPORTER_OTLP_HEADERS", format!("authorization=Bearer%20{COLLECTOR_TOKEN}"))
            .output()
            .expect("run the tracer");
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert!(out.status.success(), "{stderr}");
        (stdout, stderr)
    };
    let (json, json_log) = run("json,otlp");
    let (text, text_log) = run("text");
    std::fs::remove_dir_all(&dir).ok();

    let spans: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let servers = spans.iter().filter(|s| s["kind"] == "server").count();
    assert_eq!(servers, calls, "one span per call");
    // Content capture was on: the prompt is there, its key redacted; the harmless header asked
    // for alongside the secret ones was kept.
    assert!(json.contains("my key is [REDACTED], keep it"), "the prompt is captured, redacted");
    assert!(json.contains("http.request.header.content-type"), "asked-for headers are exported");
    assert!(spans.iter().all(|s| !s["attributes"]["url.path"].as_str().unwrap_or("").contains('?')));
    assert_clean("JSON spans", &json);
    assert_clean("text output", &text);
    assert_clean("logs", &json_log);
    assert_clean("logs", &text_log);
    let rec = receiver.received();
    assert!(rec.traces.iter().map(|a| a.request.resource_spans.len()).sum::<usize>() > 0, "OTLP spans arrived");
    assert!(!rec.metrics.is_empty(), "OTLP metrics arrived");
    let bearer = format!("Bearer {COLLECTOR_TOKEN}");
    assert_eq!(rec.traces[0].header("authorization"), Some(bearer.as_str()), "the collector got its credential");
    assert_clean("OTLP traces", &format!("{:?}", rec.traces.iter().map(|a| &a.request).collect::<Vec<_>>()));
    assert_clean("OTLP metrics", &format!("{:?}", rec.metrics.iter().map(|a| &a.request).collect::<Vec<_>>()));
}
