//! A load generator for live tests and measurements: many concurrent keep-alive connections,
//! each issuing Ollama calls one after the other through a small raw HTTP/1.1 client, with
//! wall-clock timestamps per call (request write, first response byte, end) and the counts the
//! response reported, so the tracer's spans can be checked call by call.
//!
//! Used in-process by the live tests and as the `ollama-load` binary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::standin::http::now_ns;

/// Longest response head accepted.
const MAX_HEAD: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("connection closed mid-response")]
    Closed,
    #[error("timed out")]
    Timeout,
}

/// One request to send.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// Extra header lines, e.g. `("X-Standin-Scenario", "slow")`.
    pub headers: Vec<(String, String)>,
}

impl Request {
    fn post(path: &str, body: Value) -> Request {
        Request { method: "POST".into(), path: path.into(), body: body.to_string().into_bytes(), headers: Vec::new() }
    }

    /// `/api/chat` with one user message.
    pub fn chat(model: &str, stream: bool, content: &str) -> Request {
        Request::post(
            "/api/chat",
            serde_json::json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": content}]}),
        )
    }

    /// `/api/generate`.
    pub fn generate(model: &str, stream: bool, prompt: &str) -> Request {
        Request::post("/api/generate", serde_json::json!({"model": model, "stream": stream, "prompt": prompt}))
    }

    /// `/api/embed` with `inputs` short inputs (the answer carries one vector per input).
    pub fn embed(model: &str, inputs: usize) -> Request {
        let input: Vec<String> = (0..inputs).map(|i| format!("input {i}")).collect();
        Request::post("/api/embed", serde_json::json!({"model": model, "input": input}))
    }

    /// `/v1/chat/completions` (with `stream_options.include_usage` when streamed).
    pub fn openai_chat(model: &str, stream: bool, content: &str) -> Request {
        let mut body = serde_json::json!({"model": model, "stream": stream,
            "messages": [{"role": "user", "content": content}]});
        if stream {
            body["stream_options"] = serde_json::json!({"include_usage": true});
        }
        Request::post("/v1/chat/completions", body)
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn render(&self, host: SocketAddr) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ollama-load\r\n", self.method, self.path);
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !self.body.is_empty() || self.method == "POST" {
            head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// What one call saw, client side.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CallRecord {
    /// Connection number and the call's index on it.
    pub conn: usize,
    pub index: usize,
    pub path: String,
    pub local_port: u16,
    pub status: u16,
    /// Wall clock, ns: just before the request was written.
    pub t_write_ns: u64,
    /// When the first response bytes were read.
    pub t_first_byte_ns: Option<u64>,
    /// When the last response byte was read (or the call failed).
    pub t_end_ns: u64,
    /// De-chunked body bytes.
    pub body_bytes: u64,
    /// NDJSON lines / SSE events in the body.
    pub units: u64,
    /// Counts the response reported (native final chunk or whole body, OpenAI `usage`).
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub embeddings: Option<u64>,
    pub done_reason: Option<String>,
    pub error: Option<String>,
}

impl CallRecord {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.status == 200
    }
}

/// A keep-alive client connection.
pub struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    local_port: u16,
    buf: Vec<u8>,
    /// Connection number, for records.
    pub id: usize,
    calls: usize,
    closed: bool,
}

impl Conn {
    pub async fn connect(addr: SocketAddr, id: usize) -> Result<Conn, LoadError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let local_port = stream.local_addr()?.port();
        Ok(Conn { stream, peer: addr, local_port, buf: Vec::new(), id, calls: 0, closed: false })
    }

    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    /// Whether the server closed the connection (no further calls possible).
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Sends `req` and reads the whole response. Errors are recorded, not returned.
    pub async fn call(&mut self, req: &Request) -> CallRecord {
        let mut rec = CallRecord {
            conn: self.id,
            index: self.calls,
            path: req.path.clone(),
            local_port: self.local_port,
            ..Default::default()
        };
        self.calls += 1;
        let bytes = req.render(self.peer);
        let result = async {
            self.write_stamped(&bytes, &mut rec).await?;
            self.read_response(&mut rec).await
        }
        .await;
        rec.t_end_ns = now_ns();
        match result {
            Ok(body) => summarize(&mut rec, &body),
            Err(e) => {
                self.closed = true;
                rec.error = Some(e.to_string());
            }
        }
        rec
    }

    /// Writes `bytes`, stamping `t_write_ns` just before the first write system call (no
    /// await in between: `write_all` may yield to other tasks first, by many ms under load).
    async fn write_stamped(&mut self, bytes: &[u8], rec: &mut CallRecord) -> Result<(), LoadError> {
        let mut off = 0;
        while off < bytes.len() {
            self.stream.writable().await?;
            let t = now_ns();
            match self.stream.try_write(&bytes[off..]) {
                Ok(n) => {
                    if off == 0 {
                        rec.t_write_ns = t;
                    }
                    off += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn fill(&mut self, rec: &mut CallRecord) -> Result<bool, LoadError> {
        let mut chunk = [0u8; 64 << 10];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            self.closed = true;
            return Ok(false);
        }
        rec.t_first_byte_ns.get_or_insert_with(now_ns);
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(true)
    }

    /// Reads one response; returns its de-chunked body and leaves what follows in `buf`.
    async fn read_response(&mut self, rec: &mut CallRecord) -> Result<Vec<u8>, LoadError> {
        let (head_len, status, framing) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let framing = framing_of(resp.headers)?;
                    if status == 100 {
                        self.buf.drain(..n);
                        continue;
                    }
                    break (n, status, framing);
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > MAX_HEAD {
                        return Err(LoadError::Malformed("response head too large".into()));
                    }
                    if !self.fill(rec).await? {
                        return Err(LoadError::Closed);
                    }
                }
                Err(e) => return Err(LoadError::Malformed(e.to_string())),
            }
        };
        rec.status = status;
        self.buf.drain(..head_len);
        let mut body = Vec::new();
        match framing {
            Framing::Length(n) => {
                while self.buf.len() < n {
                    if !self.fill(rec).await? {
                        return Err(LoadError::Closed);
                    }
                }
                body.extend(self.buf.drain(..n));
            }
            Framing::Chunked => loop {
                let Some(eol) = find(&self.buf, b"\r\n") else {
                    if !self.fill(rec).await? {
                        return Err(LoadError::Closed);
                    }
                    continue;
                };
                let line =
                    std::str::from_utf8(&self.buf[..eol]).map_err(|_| LoadError::Malformed("chunk size".into()))?;
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| LoadError::Malformed(format!("chunk size {line:?}")))?;
                if size == 0 {
                    // Trailers (none expected) end with an empty line.
                    while find(&self.buf[eol + 2..], b"\r\n").is_none() {
                        if !self.fill(rec).await? {
                            return Err(LoadError::Closed);
                        }
                    }
                    let end = eol + 2 + find(&self.buf[eol + 2..], b"\r\n").unwrap_or(0) + 2;
                    self.buf.drain(..end);
                    break;
                }
                while self.buf.len() < eol + 2 + size + 2 {
                    if !self.fill(rec).await? {
                        return Err(LoadError::Closed);
                    }
                }
                body.extend_from_slice(&self.buf[eol + 2..eol + 2 + size]);
                self.buf.drain(..eol + 2 + size + 2);
            },
            Framing::UntilClose => {
                while self.fill(rec).await? {}
                body.append(&mut self.buf);
            }
        }
        Ok(body)
    }
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn framing_of(headers: &[httparse::Header<'_>]) -> Result<Framing, LoadError> {
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") && h.value.eq_ignore_ascii_case(b"chunked") {
            return Ok(Framing::Chunked);
        }
    }
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| LoadError::Malformed("content-length".into()))?;
            return Ok(Framing::Length(n));
        }
    }
    Ok(Framing::UntilClose)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Fills the record's counts from the body: NDJSON (native streams), SSE (OpenAI streams) or
/// one JSON document.
fn summarize(rec: &mut CallRecord, body: &[u8]) {
    rec.body_bytes = body.len() as u64;
    let text = String::from_utf8_lossy(body);
    let docs: Vec<Value> = if text.starts_with("data:") || text.contains("\n\ndata:") {
        text.split("\n\n")
            .filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim))
            .filter(|d| !d.is_empty())
            .inspect(|_| rec.units += 1)
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect()
    } else {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .inspect(|_| rec.units += 1)
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    for d in &docs {
        let n = |k: &str| d.get(k).and_then(Value::as_u64);
        if let Some(x) = n("prompt_eval_count") {
            rec.input_tokens = Some(x);
        }
        if let Some(x) = n("eval_count") {
            rec.output_tokens = Some(x);
        }
        if let Some(r) = d.get("done_reason").and_then(Value::as_str) {
            rec.done_reason = Some(r.to_owned());
        }
        if let Some(e) = d.get("embeddings").and_then(Value::as_array) {
            rec.embeddings = Some(e.len() as u64);
        }
        if let Some(u) = d.get("usage").filter(|u| u.is_object()) {
            rec.input_tokens = u.get("prompt_tokens").and_then(Value::as_u64).or(rec.input_tokens);
            rec.output_tokens = u.get("completion_tokens").and_then(Value::as_u64).or(rec.output_tokens);
        }
        if let Some(e) = d.get("error") {
            rec.error = Some(format!("error in body: {e}"));
        }
    }
}

/// Which request a connection sends as its `index`-th call.
pub type MakeRequest = Arc<dyn Fn(usize, usize) -> Request + Send + Sync>;

/// A load run: `connections` connections at once, each making calls back to back until it has
/// made `calls_per_connection`, or (with `duration`) until the time is up.
#[derive(Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub connections: usize,
    pub calls_per_connection: usize,
    pub duration: Option<Duration>,
    /// Connections start spread over this time (0: all at once).
    pub ramp: Duration,
    pub make: MakeRequest,
    /// A call taking longer than this fails (and ends its connection).
    pub call_timeout: Duration,
}

impl LoadSpec {
    pub fn new(addr: SocketAddr, connections: usize, calls_per_connection: usize, make: MakeRequest) -> LoadSpec {
        LoadSpec {
            addr,
            connections,
            calls_per_connection,
            duration: None,
            ramp: Duration::ZERO,
            make,
            call_timeout: Duration::from_secs(120),
        }
    }
}

/// Runs the load; every call's record, in no particular order.
pub async fn run(spec: LoadSpec) -> Vec<CallRecord> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..spec.connections {
        let spec = spec.clone();
        tasks.spawn(async move {
            if !spec.ramp.is_zero() {
                tokio::time::sleep(spec.ramp.mul_f64(c as f64 / spec.connections as f64)).await;
            }
            let mut out = Vec::new();
            let mut conn = match Conn::connect(spec.addr, c).await {
                Ok(conn) => conn,
                Err(e) => {
                    let t = now_ns();
                    out.push(CallRecord {
                        conn: c,
                        t_write_ns: t,
                        t_end_ns: t,
                        error: Some(format!("connect: {e}")),
                        ..Default::default()
                    });
                    return out;
                }
            };
            for i in 0.. {
                let more = match spec.duration {
                    Some(d) => started.elapsed() < d,
                    None => i < spec.calls_per_connection,
                };
                if !more || conn.closed() {
                    break;
                }
                let req = (spec.make)(c, i);
                let rec = match tokio::time::timeout(spec.call_timeout, conn.call(&req)).await {
                    Ok(rec) => rec,
                    Err(_) => {
                        let t = now_ns();
                        out.push(CallRecord {
                            conn: c,
                            index: i,
                            path: req.path.clone(),
                            local_port: conn.local_port(),
                            t_write_ns: t,
                            t_end_ns: t,
                            error: Some(LoadError::Timeout.to_string()),
                            ..Default::default()
                        });
                        break;
                    }
                };
                out.push(rec);
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(recs) = r {
            all.extend(recs);
        }
    }
    all
}

/// Totals of a run, for printing.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub calls: usize,
    pub errors: usize,
    pub body_bytes: u64,
    pub units: u64,
    pub wall_s: f64,
    pub first_byte_ms_p50: Option<f64>,
    pub first_byte_ms_p99: Option<f64>,
}

pub fn summary(records: &[CallRecord], wall: Duration) -> Summary {
    let mut fb: Vec<f64> =
        records.iter().filter_map(|r| r.t_first_byte_ns.map(|t| t.saturating_sub(r.t_write_ns) as f64 / 1e6)).collect();
    fb.sort_by(f64::total_cmp);
    let pct = |p: f64| (!fb.is_empty()).then(|| fb[((fb.len() - 1) as f64 * p).round() as usize]);
    Summary {
        calls: records.len(),
        errors: records.iter().filter(|r| !r.ok()).count(),
        body_bytes: records.iter().map(|r| r.body_bytes).sum(),
        units: records.iter().map(|r| r.units).sum(),
        wall_s: wall.as_secs_f64(),
        first_byte_ms_p50: pct(0.5),
        first_byte_ms_p99: pct(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_native_openai_and_embed_bodies() {
        let mut r = CallRecord::default();
        summarize(
            &mut r,
            b"{\"message\":{\"content\":\"a\"},\"done\":false}\n{\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":7,\"eval_count\":2}\n",
        );
        assert_eq!(
            (r.units, r.input_tokens, r.output_tokens, r.done_reason.as_deref()),
            (2, Some(7), Some(2), Some("stop"))
        );
        let mut r = CallRecord::default();
        summarize(
            &mut r,
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n",
        );
        assert_eq!((r.units, r.input_tokens, r.output_tokens), (3, Some(3), Some(1)));
        let mut r = CallRecord::default();
        summarize(&mut r, b"{\"model\":\"m\",\"embeddings\":[[0.1],[0.2]],\"prompt_eval_count\":4}");
        assert_eq!((r.embeddings, r.input_tokens), (Some(2), Some(4)));
    }

    #[test]
    fn talks_to_the_standin() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let config = crate::standin::Config {
                listen: vec!["127.0.0.1:0".parse().unwrap()],
                timing: crate::standin::Timing {
                    ttft: Duration::from_millis(5),
                    gap: Duration::from_millis(1),
                    ..Default::default()
                },
                ..Default::default()
            };
            let server = crate::standin::Server::bind(config).await.unwrap();
            let addr = server.local_addrs()[0];
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let srv = tokio::spawn(server.run(async move {
                let _ = stop_rx.await;
            }));
            let make: MakeRequest = Arc::new(|c, i| match (c + i) % 3 {
                0 => Request::chat("@synth:tokens=5/llama3.2", true, "hi"),
                1 => Request::embed("all-minilm", 3),
                _ => Request::openai_chat("@synth:tokens=4/llama3.2", true, "hi"),
            });
            let recs = run(LoadSpec::new(addr, 4, 3, make)).await;
            assert_eq!(recs.len(), 12);
            for r in &recs {
                assert!(r.ok(), "{r:?}");
                match r.path.as_str() {
                    "/api/chat" => assert_eq!(r.output_tokens, Some(5), "{r:?}"),
                    "/api/embed" => assert_eq!(r.embeddings, Some(3), "{r:?}"),
                    _ => assert_eq!(r.output_tokens, Some(4), "{r:?}"),
                }
            }
            // Keep-alive: three calls per connection, one port each.
            let ports: std::collections::BTreeSet<u16> = recs.iter().map(|r| r.local_port).collect();
            assert_eq!(ports.len(), 4);
            let _ = stop_tx.send(());
            srv.await.unwrap();
        });
    }
}
