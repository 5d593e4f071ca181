//! `ollama-standin` end to end: started as a process on a free port, driven by a raw TCP
//! client, checked byte by byte (framing, connection handling, scenarios) and against its
//! ground-truth log; plus the real Python clients when their venv exists.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A running stand-in; killed (by its pid) on drop.
struct StandIn {
    child: Child,
    addr: SocketAddr,
    truth: PathBuf,
    dir: PathBuf,
}

impl StandIn {
    fn start(extra: &[&str]) -> StandIn {
        let dir = std::env::temp_dir().join(format!(
            "standin-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let truth = dir.join("truth.jsonl");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ollama-standin"))
            .args(["--listen", "127.0.0.1:0", "--truth"])
            .arg(&truth)
            .args(["--ttft-ms", "20", "--gap-ms", "2", "--slow-ttft-ms", "400"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ollama-standin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
            .parse()
            .unwrap();
        StandIn { child, addr, truth, dir }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// The first `n` truth records, waiting for them to be written.
    fn truth(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.truth).unwrap_or_default();
            // Only whole lines: the writer may be half way through the next one.
            let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            let recs: Vec<Value> = whole.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            if recs.len() >= n {
                return recs;
            }
            assert!(Instant::now() < deadline, "only {} of {n} truth records", recs.len());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One request on a fresh connection.
    fn call(&self, req: &[u8]) -> Response {
        let mut s = self.connect();
        s.write_all(req).unwrap();
        read_response(&mut s, req.starts_with(b"HEAD "))
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        // SIGTERM by pid, so the server flushes and exits cleanly; then make sure it is gone.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn post(path: &str, body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:11434\r\nContent-Type: application/json\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get(method: &str, path: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:11434\r\n\r\n").into_bytes()
}

#[derive(Debug, Default)]
struct Response {
    status: u16,
    version: String,
    headers: Vec<(String, String)>,
    head: String,
    /// De-chunked body.
    body: Vec<u8>,
    /// Each HTTP chunk's data (chunked framing only).
    chunks: Vec<Vec<u8>>,
    /// The chunked terminator arrived.
    terminated: bool,
    /// The read ended with a reset.
    reset: bool,
    /// When the head's first byte was read.
    t_head: Option<Instant>,
    t_sent: Option<Instant>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn lines(&self) -> Vec<Value> {
        self.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// `data:` payloads of SSE events.
    fn sse_data(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_owned))
            .collect()
    }
}

/// Byte reader over a socket that remembers a reset.
struct Wire<'a> {
    s: &'a mut TcpStream,
    buf: Vec<u8>,
    reset: bool,
    eof: bool,
    first_read: Option<Instant>,
}

impl Wire<'_> {
    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 65536];
        match self.s.read(&mut tmp) {
            Ok(0) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.first_read.get_or_insert_with(Instant::now);
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                self.reset = true;
                false
            }
            Err(e) => panic!("read: {e}"),
        }
    }

    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf[..i].to_vec()).unwrap();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }
}

/// Read one response (after any `100 Continue`). `head_only`: the request was HEAD.
fn read_response(s: &mut TcpStream, head_only: bool) -> Response {
    let mut w = Wire { s, buf: Vec::new(), reset: false, eof: false, first_read: None };
    read_response_from(&mut w, head_only)
}

fn read_response_from(w: &mut Wire<'_>, head_only: bool) -> Response {
    let mut r = Response::default();
    let status_line = loop {
        let line = w.line().expect("status line");
        if line.is_empty() {
            continue;
        }
        if line.starts_with("HTTP/1.1 100") {
            assert_eq!(w.line().as_deref(), Some(""), "100 Continue has no headers");
            continue;
        }
        break line;
    };
    r.t_head = w.first_read;
    r.head = status_line.clone() + "\r\n";
    let mut parts = status_line.splitn(3, ' ');
    r.version = parts.next().unwrap().to_owned();
    r.status = parts.next().unwrap().parse().unwrap();
    loop {
        let line = w.line().expect("header line");
        r.head.push_str(&line);
        r.head.push_str("\r\n");
        if line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(": ").unwrap();
        r.headers.push((n.to_owned(), v.to_owned()));
    }
    if head_only {
        return r;
    }
    if r.header("transfer-encoding") == Some("chunked") {
        while let Some(size_line) = w.line() {
            let size = usize::from_str_radix(&size_line, 16).unwrap();
            if size == 0 {
                assert_eq!(w.line().as_deref(), Some(""));
                r.terminated = true;
                break;
            }
            let Some(data) = w.take(size + 2) else { break };
            assert_eq!(&data[size..], b"\r\n");
            r.body.extend_from_slice(&data[..size]);
            r.chunks.push(data[..size].to_vec());
        }
    } else if let Some(cl) = r.header("content-length") {
        let n: usize = cl.parse().unwrap();
        r.body = w.take(n).expect("full body");
    } else {
        while w.fill() {}
        r.body = std::mem::take(&mut w.buf);
    }
    r.reset = w.reset;
    r.t_sent = Some(Instant::now());
    r
}

fn assert_timestamps_ordered(t: &Value) {
    let get = |k: &str| t[k].as_u64();
    let first = get("t_request_first_byte_ns").unwrap();
    let end = get("t_request_end_ns").unwrap();
    let resp = get("t_response_first_byte_ns").unwrap();
    let last = get("t_last_byte_ns").unwrap();
    assert!(first <= end && end <= resp && resp <= last, "{t}");
    if let Some(c) = get("t_first_content_ns") {
        assert!(resp <= c && c <= last, "{t}");
    }
}

#[test]
fn native_chat_stream_is_one_line_per_chunk_and_matches_truth() {
    let s = StandIn::start(&[]);
    let r = s.call(&post("/api/chat", r#"{"model":"my-model:7b","messages":[{"role":"user","content":"hi"}]}"#, ""));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert!(r.header("date").is_some() && r.header("server").is_none());
    assert!(r.terminated);
    // Go: handler headers sorted, then Date, then Transfer-Encoding.
    assert!(r.head.starts_with("HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nDate: "));
    assert!(r.head.ends_with("GMT\r\nTransfer-Encoding: chunked\r\n\r\n"));
    for c in &r.chunks {
        assert_eq!(c.iter().filter(|&&b| b == b'\n').count(), 1, "one line per chunk");
        assert!(c.ends_with(b"\n"));
    }
    let lines = r.lines();
    assert!(lines.iter().all(|l| l["model"] == "my-model:7b"));
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true);
    let content: String = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();

    let t = &s.truth(1)[0];
    assert_eq!(t["path"], "/api/chat");
    assert_eq!(t["model"], "my-model:7b");
    assert_eq!(t["stream"], true);
    assert_eq!(t["stream_requested"], Value::Null);
    assert_eq!(t["source"], "fixture");
    assert_eq!(t["status"], 200);
    assert_eq!(t["framing"], "chunked");
    assert_eq!(t["chunks"].as_u64().unwrap() as usize, lines.len());
    assert_eq!(t["http_chunks"].as_u64().unwrap() as usize, r.chunks.len());
    assert_eq!(t["eval_count"], last["eval_count"]);
    assert_eq!(t["prompt_eval_count"], last["prompt_eval_count"]);
    assert_eq!(t["done_reason"], last["done_reason"]);
    assert_eq!(t["content"], content);
    assert_eq!(t["stream_terminator"], true);
    assert_eq!(t["chunked_terminator"], true);
    assert_eq!(t["outcome"], "complete");
    assert_eq!(t["response_body_bytes"].as_u64().unwrap() as usize, r.body.len());
    assert_eq!(t["client_addr"], "127.0.0.1");
    assert_timestamps_ordered(t);
}

#[test]
fn small_bodies_get_content_length_and_head_gets_headers_only() {
    let s = StandIn::start(&[]);
    let v = s.call(&get("GET", "/api/version"));
    assert_eq!(v.status, 200);
    assert_eq!(v.header("content-length"), Some("20"));
    assert_eq!(v.text(), r#"{"version":"0.34.2"}"#);
    assert_eq!(v.header("content-type"), Some("application/json; charset=utf-8"));

    let mut c = s.connect();
    c.write_all(&get("HEAD", "/")).unwrap();
    let h = read_response(&mut c, true);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("17"));
    // No body followed: the next response on the connection starts right away.
    c.write_all(&get("GET", "/")).unwrap();
    let g = read_response(&mut c, false);
    assert_eq!(g.text(), "Ollama is running");
    let t = s.truth(3);
    assert_eq!(t[1]["method"], "HEAD");
    assert_eq!(t[1]["response_body_bytes"], 0);
    assert_eq!(t[1]["framing"], "content_length");
    assert_eq!(t[2]["conn"], t[1]["conn"]);
    assert_eq!(t[2]["conn_request"], 1);
}

#[test]
fn gin_fallbacks() {
    let s = StandIn::start(&[]);
    let r = s.call(&get("GET", "/nope"));
    assert_eq!((r.status, r.text().as_str()), (404, "404 page not found"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = s.call(&get("GET", "/api/chat"));
    assert_eq!((r.status, r.text().as_str()), (405, "405 method not allowed"));
    let r = s.call(&get("HEAD", "/api/ps"));
    assert_eq!(r.status, 405);
    let r = s.call(&post("/api/chat/", "{}", ""));
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location"), Some("/api/chat"));
    let r = s.call(&get("GET", "/v1/models/llama3.2:1b"));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["id"], "llama3.2:1b");
    let r = s.call(&get("GET", "/api/ps"));
    assert_eq!(r.status, 200);
    let r = s.call(&post("/api/chat", "x", ""));
    assert_eq!(r.status, 400);
    assert!(r.text().contains("invalid character 'x'"));
}

#[test]
fn expect_continue_gets_interim_100() {
    let s = StandIn::start(&[]);
    let body = r#"{"model":"m","prompt":"hi","stream":false}"#;
    let mut c = s.connect();
    let req = post("/api/generate", body, "Expect: 100-continue\r\n");
    let head_len = req.len() - body.len();
    c.write_all(&req[..head_len]).unwrap();
    let mut interim = [0u8; 25];
    c.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.write_all(&req[head_len..]).unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
    let t = &s.truth(1)[0];
    assert_eq!(t["expect_continue"], true);
    assert_eq!(t["continue_sent"], true);
    assert_eq!(t["stream"], false);
    assert!(t["t_continue_sent_ns"].as_u64().unwrap() >= t["t_request_first_byte_ns"].as_u64().unwrap());
    assert!(t["t_request_end_ns"].as_u64().unwrap() >= t["t_continue_sent_ns"].as_u64().unwrap());
}

#[test]
fn chunked_request_body_and_keep_alive() {
    let s = StandIn::start(&[]);
    let mut c = s.connect();
    let body = br#"{"model":"emb","input":["a","b"]}"#;
    let mut req = b"POST /api/embed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in body.chunks(7) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    c.write_all(&req).unwrap();
    let r = read_response(&mut c, false);
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(v["model"], "emb");
    for _ in 0..2 {
        c.write_all(&get("GET", "/api/tags")).unwrap();
        assert_eq!(read_response(&mut c, false).status, 200);
    }
    let t = s.truth(3);
    assert_eq!(t[0]["request_chunked"], true);
    assert_eq!(t[0]["request_body_bytes"].as_u64().unwrap() as usize, body.len());
    assert_eq!(t[0]["embeddings"], 2);
    for (i, rec) in t.iter().enumerate() {
        assert_eq!(rec["conn"], t[0]["conn"]);
        assert_eq!(rec["conn_request"], i as u64);
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = StandIn::start(&[]);
    let mut c = s.connect();
    let mut all = Vec::new();
    all.extend(post("/api/generate", r#"{"model":"a","prompt":"x"}"#, ""));
    all.extend(get("GET", "/api/version"));
    all.extend(post("/v1/chat/completions", r#"{"model":"b","messages":[{"role":"user","content":"x"}]}"#, ""));
    c.write_all(&all).unwrap();
    let mut w = Wire { s: &mut c, buf: Vec::new(), reset: false, eof: false, first_read: None };
    let r1 = read_response_from(&mut w, false);
    let r2 = read_response_from(&mut w, false);
    let r3 = read_response_from(&mut w, false);
    assert_eq!(r1.lines().last().unwrap()["model"], "a");
    assert_eq!(r2.text(), r#"{"version":"0.34.2"}"#);
    let v: Value = serde_json::from_slice(&r3.body).unwrap();
    assert_eq!(v["model"], "b");
    assert_eq!(v["object"], "chat.completion");
    let t = s.truth(3);
    let paths: Vec<_> = t.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/api/generate", "/api/version", "/v1/chat/completions"]);
    // All three arrived in one read: they share the first-byte time.
    assert_eq!(t[0]["t_request_first_byte_ns"], t[2]["t_request_first_byte_ns"]);
    // Served serially: the second starts after the first ended.
    assert!(t[1]["t_response_first_byte_ns"].as_u64() >= t[0]["t_last_byte_ns"].as_u64());
}

#[test]
fn http10_body_ends_at_close() {
    let s = StandIn::start(&[]);
    let body = r#"{"model":"m","prompt":"hi"}"#;
    let req = format!("POST /api/generate HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let r = s.call(req.as_bytes());
    assert_eq!(r.version, "HTTP/1.0");
    assert!(r.header("transfer-encoding").is_none() && r.header("content-length").is_none());
    assert_eq!(r.lines().last().unwrap()["done"], true);
    assert_eq!(s.truth(1)[0]["framing"], "until_close");
}

#[test]
fn openai_streams_honour_include_usage() {
    let s = StandIn::start(&[]);
    for usage in [true, false] {
        let body = format!(
            r#"{{"model":"gpt-x","stream":true,"stream_options":{{"include_usage":{usage}}},"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        let r = s.call(&post("/v1/chat/completions", &body, ""));
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        let data = r.sse_data();
        assert_eq!(data.last().unwrap(), "[DONE]");
        let has_usage = data
            .iter()
            .filter(|d| *d != "[DONE]")
            .any(|d| serde_json::from_str::<Value>(d).unwrap()["choices"] == serde_json::json!([]));
        assert_eq!(has_usage, usage);
        for d in data.iter().filter(|d| *d != "[DONE]") {
            assert_eq!(serde_json::from_str::<Value>(d).unwrap()["model"], "gpt-x");
        }
        // Last HTTP chunk before the terminator holds the finish/usage/[DONE] tail together.
        assert!(String::from_utf8_lossy(r.chunks.last().unwrap()).ends_with("data: [DONE]\n\n"));
    }
    let t = s.truth(2);
    assert!(t[0]["input_tokens"].is_u64() && t[0]["usage"].is_object());
    assert!(t[1]["usage"].is_null());
    assert_eq!(t[0]["stream_terminator"], true);
}

#[test]
fn scenario_error_midstream_per_api() {
    let s = StandIn::start(&[]);
    // Native: N content lines, then {"error"} with status 200, chunked terminator, no done.
    let r = s.call(&post(
        "/api/chat",
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        "X-Standin-Scenario: error-midstream:after=2\r\n",
    ));
    assert_eq!(r.status, 200);
    assert!(r.terminated);
    let lines = r.lines();
    assert!(lines.last().unwrap()["error"].is_string());
    assert!(lines.iter().all(|l| l["done"] != true));
    // OpenAI: the empty-model chunk, no [DONE].
    let r = s.call(&post(
        "/v1/chat/completions",
        r#"{"model":"@error-midstream/m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        "",
    ));
    let data = r.sse_data();
    assert!(!data.contains(&"[DONE]".to_owned()));
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["model"], "");
    // Anthropic: just stops, no message_stop.
    let r = s.call(&post(
        "/v1/messages",
        r#"{"model":"@error-midstream/claude","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        "",
    ));
    assert!(r.terminated);
    assert!(!r.text().contains("message_stop"));
    assert!(r.text().contains("text_delta"));
    // Non-streamed: a 500.
    let r = s.call(&post(
        "/api/generate",
        r#"{"model":"m","prompt":"x","stream":false}"#,
        "X-Standin-Scenario: error-midstream\r\n",
    ));
    assert_eq!(r.status, 500);
    let t = s.truth(4);
    assert!(t[0]["error"].as_str().unwrap().len() > 10);
    assert_eq!(t[0]["stream_terminator"], false);
    assert_eq!(t[0]["output_chunks"], 2);
    assert_eq!(t[0]["outcome"], "error");
    assert_eq!(t[1]["stream_terminator"], false);
    assert_eq!(t[1]["scenario"], "error-midstream:after=3");
    assert_eq!(t[2]["stream_terminator"], false);
    assert_eq!(t[3]["status"], 500);
}

#[test]
fn scenario_http_errors() {
    let s = StandIn::start(&[]);
    let r = s.call(&post("/api/chat", r#"{"model":"@http-404/ghost","messages":[]}"#, ""));
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), r#"{"error":"model '@http-404/ghost' not found"}"#);
    let r = s.call(&post(
        "/v1/chat/completions",
        r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#,
        "X-Standin-Scenario: http-500\r\n",
    ));
    assert_eq!(r.status, 500);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["type"], "api_error");
    let r = s.call(&post(
        "/v1/messages",
        r#"{"model":"x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
        "X-Standin-Scenario: http-429\r\n",
    ));
    assert_eq!(r.status, 429);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    let r = s.call(&post("/api/chat", "{}", "X-Standin-Scenario: bogus\r\n"));
    assert_eq!(r.status, 400);
    let t = s.truth(4);
    assert_eq!(t[0]["status"], 404);
    assert_eq!(t[0]["outcome"], "error");
    assert_eq!(t[0]["framing"], "content_length");
}

#[test]
fn scenario_rst_and_close_midstream() {
    let s = StandIn::start(&[]);
    let mut c = s.connect();
    c.write_all(&post(
        "/api/generate",
        r#"{"model":"m","prompt":"hi"}"#,
        "X-Standin-Scenario: rst-midstream:after=2\r\n",
    ))
    .unwrap();
    let r = read_response(&mut c, false);
    assert!(!r.terminated);
    assert!(r.reset, "connection reset");
    assert_eq!(r.lines().len(), 2);
    let r = s.call(&post("/api/generate", r#"{"model":"@close-midstream:after=1/m","prompt":"hi"}"#, ""));
    assert!(!r.terminated && !r.reset);
    assert_eq!(r.lines().len(), 1);
    let t = s.truth(2);
    assert_eq!(t[0]["outcome"], "reset");
    assert_eq!(t[0]["chunked_terminator"], false);
    assert_eq!(t[1]["outcome"], "closed");
}

#[test]
fn scenario_slow_synth_load_thinking_tools_fixture() {
    let s = StandIn::start(&[]);
    // slow: TTFT from the server's own clock.
    let r = s.call(&post("/api/generate", r#"{"model":"@slow/m","prompt":"x"}"#, ""));
    assert_eq!(r.status, 200);
    // synth: N tokens, eval_count = N, durations consistent.
    let r = s.call(&post(
        "/api/chat",
        r#"{"model":"m","messages":[{"role":"user","content":"hello there"}]}"#,
        "X-Standin-Scenario: synth:tokens=25,rate=500,think=3\r\n",
    ));
    let lines = r.lines();
    assert_eq!(lines.len(), 29);
    let last = lines.last().unwrap();
    assert_eq!(last["eval_count"], 28);
    assert!(last["eval_duration"].as_u64().unwrap() >= 27 * 2_000_000 - 1);
    assert!(last["total_duration"].as_u64() > last["eval_duration"].as_u64());
    // load: one JSON object even though streaming was the default.
    let r = s.call(&post("/api/generate", r#"{"model":"m"}"#, ""));
    assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(r.lines()[0]["done_reason"], "load");
    let r = s.call(&post("/api/chat", r#"{"model":"m","messages":[],"keep_alive":0}"#, ""));
    assert_eq!(r.lines()[0]["done_reason"], "unload");
    // thinking (fixture with thinking), tools (synthetic tool call on /v1/messages).
    let r = s.call(&post(
        "/api/chat",
        r#"{"model":"q","stream":false,"messages":[{"role":"user","content":"x"}]}"#,
        "X-Standin-Scenario: thinking\r\n",
    ));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(!v["message"]["thinking"].as_str().unwrap().is_empty());
    let r = s.call(&post(
        "/v1/messages",
        r#"{"model":"@tools/c","max_tokens":50,"stream":true,"tools":[{"name":"lookup","input_schema":{}}],"messages":[{"role":"user","content":"x"}]}"#,
        "",
    ));
    assert!(r.text().contains(r#""name":"lookup""#));
    assert!(r.text().contains(r#""stop_reason":"tool_use""#));
    // fixture=<name>: that recording, model rewritten.
    let r = s.call(&post(
        "/api/chat",
        r#"{"model":"renamed","messages":[{"role":"user","content":"x"}]}"#,
        "X-Standin-Scenario: fixture=tmc-langchaingo__TestWithStreaming__0\r\n",
    ));
    let lines = r.lines();
    assert_eq!(lines[0]["message"]["content"], "Okay");
    assert!(lines.iter().all(|l| l["model"] == "renamed"));

    let t = s.truth(7);
    let ttft = t[0]["t_response_first_byte_ns"].as_u64().unwrap() - t[0]["t_request_end_ns"].as_u64().unwrap();
    assert!(ttft >= 400_000_000, "slow TTFT {ttft}");
    assert_eq!(t[1]["eval_count"], 28);
    assert_eq!(t[1]["output_chunks"], 28);
    assert_eq!(t[1]["source"], "synthetic");
    assert_eq!(t[2]["done_reason"], "load");
    assert_eq!(t[2]["stream"], false);
    assert_eq!(t[5]["tool_calls"], serde_json::json!(["lookup"]));
    assert_eq!(t[5]["finish_reason"], "tool_use");
    assert_eq!(t[6]["fixture"], "tmc-langchaingo__TestWithStreaming__0");
    for rec in &t {
        assert_timestamps_ordered(rec);
    }
}

#[test]
fn native_tools_two_turns() {
    let s = StandIn::start(&[]);
    let tools = r#"[{"type":"function","function":{"name":"weather","parameters":{"type":"object","properties":{}}}}]"#;
    let r = s.call(&post(
        "/api/chat",
        &format!(
            r#"{{"model":"m","stream":false,"tools":{tools},"messages":[{{"role":"user","content":"weather?"}}]}}"#
        ),
        "",
    ));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["message"]["tool_calls"][0]["function"]["name"], "weather");
    let r = s.call(&post(
        "/api/chat",
        &format!(r#"{{"model":"m","stream":false,"tools":{tools},"messages":[{{"role":"user","content":"weather?"}},{{"role":"tool","content":"15C"}}]}}"#),
        "",
    ));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(v["message"]["tool_calls"].is_null());
    let t = s.truth(2);
    assert_eq!(t[0]["tool_calls"], serde_json::json!(["weather"]));
    assert_eq!(t[1]["tool_calls"], serde_json::json!([]));
}

#[test]
fn many_concurrent_synthetic_streams() {
    let s = StandIn::start(&[]);
    const N: usize = 200;
    let addr = s.addr;
    let handles: Vec<_> = (0..N)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                c.write_all(&post(
                    "/api/generate",
                    &format!(r#"{{"model":"@synth:tokens=20,rate=100/m{i}","prompt":"x"}}"#),
                    "",
                ))
                .unwrap();
                let r = read_response(&mut c, false);
                assert!(r.terminated);
                r.lines().len()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 21);
    }
    let t = s.truth(N);
    assert!(t.iter().all(|r| r["outcome"] == "complete" && r["eval_count"] == 20));
}

/// The real Python clients (ollama, openai, anthropic) against the stand-in.
#[test]
fn python_drivers_against_standin() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("OLLAMA_TRACER_VENV").map(PathBuf::from).unwrap_or_else(|| root.join(".venv"));
    let python = venv.join("bin").join("python");
    if !python.exists() {
        eprintln!(
            "\n*** SKIPPED python_drivers_against_standin: no Python venv at {} ***\n\
             *** run scripts/setup-python.sh to create it ***\n",
            venv.display()
        );
        return;
    }
    let s = StandIn::start(&[]);
    let url = format!("http://{}", s.addr);
    let mut observed = Vec::new();
    for session in ["native", "openai", "anthropic"] {
        let out = Command::new(&python)
            .arg(root.join("clients").join(format!("{session}_session.py")))
            .args(["--base-url", &url])
            .output()
            .expect("run python driver");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{session} driver failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        observed.extend(stdout.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    let truth = s.truth(observed.len());
    assert_eq!(truth.len(), observed.len(), "one truth record per client call");
    compare_clients_with_truth(&observed, &truth);
    let ua = |i: usize| truth[i]["user_agent"].as_str().unwrap_or("").to_owned();
    assert!(ua(0).starts_with("ollama-python/"));
    assert!(truth.iter().any(|t| { t["user_agent"].as_str().is_some_and(|u| u.starts_with("OpenAI/Python")) }));
    assert!(truth.iter().any(|t| { t["user_agent"].as_str().is_some_and(|u| u.starts_with("Anthropic/Python")) }));
}

/// What each client saw agrees with what the stand-in says it sent.
fn compare_clients_with_truth(observed: &[Value], truth: &[Value]) {
    for (c, t) in observed.iter().zip(truth) {
        let call = c["call"].as_str().unwrap();
        assert_eq!(c["route"], t["path"], "{call}");
        assert!(c["error"].is_null(), "{call}: {}", c["error"]);
        assert_eq!(c["stream"], t["stream"], "{call}");
        assert_eq!(c["content"], t["content"], "{call}");
        if !c["input_tokens"].is_null() {
            assert_eq!(c["input_tokens"], t["input_tokens"], "{call}");
        }
        if !c["output_tokens"].is_null() {
            assert_eq!(c["output_tokens"], t["output_tokens"], "{call}");
        }
        if !c["cache_read_input_tokens"].is_null() {
            assert_eq!(c["cache_read_input_tokens"], t["cache_read_input_tokens"], "{call}");
        }
        if !c["finish_reason"].is_null() {
            let truth_reason = if t["done_reason"].is_null() { &t["finish_reason"] } else { &t["done_reason"] };
            assert_eq!(&c["finish_reason"], truth_reason, "{call}");
        }
        assert_eq!(c["tool_calls"], t["tool_calls"], "{call}");
        // The client saw the first chunk after the server wrote it.
        assert!(c["t_first_chunk_ns"].as_u64() >= t["t_response_first_byte_ns"].as_u64(), "{call}");
        assert!(c["t_start_ns"].as_u64() <= t["t_request_first_byte_ns"].as_u64(), "{call}");
    }
}

/// The committed capture's truth and client logs agree (tests/data/captures/README.md).
#[test]
fn committed_capture_is_consistent() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/captures");
    let read = |name: &str| -> Vec<Value> {
        std::fs::read_to_string(dir.join(name)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let truth = read("real-clients.truth.jsonl");
    let clients = read("real-clients.clients.jsonl");
    assert_eq!(truth.len(), 18);
    assert_eq!(clients.len(), truth.len());
    compare_clients_with_truth(&clients, &truth);
    for f in ["real-clients.pcap", "real-clients-any.pcapng"] {
        let len = std::fs::metadata(dir.join(f)).unwrap().len();
        assert!(len > 10_000 && len < 2_000_000, "{f}: {len} bytes");
    }
}
