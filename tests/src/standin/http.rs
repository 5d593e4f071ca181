//! A hand-written HTTP/1.1 server connection, so every byte and every flush is under control:
//! serial request handling (pipelining-safe), keep-alive, `Expect: 100-continue`, chunked and
//! Content-Length request bodies, HTTP/1.0, HEAD. Responses are framed by [`crate::wire`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use super::compose::{App, Call};
use super::reply::{Body, Cut, Pace};
use super::route::{Route, Routed, route};
use super::stream::Stream;
use super::truth::Observer;
use crate::wire::{
    Framing, FramingChoice, GoBodyWriter, HttpVersion, ResponseOptions, WriteContent, closes_after, decide_framing,
    render_head,
};

/// Go's `DefaultMaxHeaderBytes`.
const MAX_HEAD_BYTES: usize = 1 << 20;
/// Request bodies are kept whole (they are JSON to decode); refuse absurd ones.
const MAX_BODY_BYTES: usize = 256 << 20;
/// Go discards at most this much of an unread body before giving up on the connection.
const MAX_DRAIN_BYTES: usize = 256 << 10;
/// A blob upload (a whole GGUF file, gigabytes) is streamed to disk by Ollama; the stand-in
/// keeps its first bytes and counts the rest, whatever its size.
const BLOB_KEPT_BYTES: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("request body larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("connection closed mid-request")]
    Truncated,
}

/// Wall clock in ns since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A parsed request.
struct Request {
    method: String,
    target: String,
    path: String,
    version: HttpVersion,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
    expect_continue: bool,
    continue_sent: bool,
    /// The client asked to close after this exchange.
    wants_close: bool,
    /// The body was left unread (Go then closes after the reply).
    body_unread: bool,
    /// Body bytes read and dropped after the first [`BLOB_KEPT_BYTES`] (a blob upload).
    body_dropped: u64,
    t_first_ns: u64,
    t_end_ns: u64,
    t_end: Instant,
    t_continue_ns: Option<u64>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The read side of a connection: buffered bytes plus when each read returned them.
struct Reader {
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// `(end offset, wall ns, instant)` of reads whose bytes are still (partly) buffered.
    reads: VecDeque<(u64, u64, Instant)>,
    eof: bool,
}

impl Reader {
    fn new() -> Reader {
        Reader { buf: Vec::with_capacity(8192), base: 0, reads: VecDeque::new(), eof: false }
    }

    async fn fill(&mut self, stream: &mut Stream) -> Result<usize, ConnError> {
        let mut tmp = [0u8; 16384];
        let n = stream.read(&mut tmp).await?;
        // Timestamp right after the read returned: the closest user space gets to arrival.
        let (ns, at) = (now_ns(), Instant::now());
        if n == 0 {
            self.eof = true;
        } else {
            self.buf.extend_from_slice(&tmp[..n]);
            self.reads.push_back((self.base + self.buf.len() as u64, ns, at));
        }
        Ok(n)
    }

    /// When the read returning buffered byte `i` happened.
    fn time_of(&self, i: usize) -> (u64, Instant) {
        let off = self.base + i as u64;
        self.reads
            .iter()
            .find(|(end, _, _)| off < *end)
            .or(self.reads.back())
            .map_or_else(|| (now_ns(), Instant::now()), |&(_, ns, at)| (ns, at))
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
        self.base += n as u64;
        while self.reads.front().is_some_and(|(end, _, _)| *end <= self.base) {
            self.reads.pop_front();
        }
    }

    /// Ensure `n` bytes are buffered.
    async fn need(&mut self, stream: &mut Stream, n: usize) -> Result<(), ConnError> {
        while self.buf.len() < n {
            if self.fill(stream).await? == 0 {
                return Err(ConnError::Truncated);
            }
        }
        Ok(())
    }
}

/// Serve one connection until the client closes, asks to close, or the server shuts down.
pub async fn serve(
    mut stream: Stream,
    peer: SocketAddr,
    local: SocketAddr,
    conn_id: u64,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Each write is one flush: never let Nagle merge NDJSON lines.
    let _ = stream.tcp().set_nodelay(true);
    let mut reader = Reader::new();
    let mut index = 0u64;
    loop {
        // Between requests an idle connection gives way to shutdown (Go's Shutdown closes idle
        // connections); a request already arriving is served.
        if reader.buf.is_empty() {
            tokio::select! {
                r = reader.fill(&mut stream) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                () = super::stopped(&mut shutdown) => return,
            }
        }
        let req = match read_request(&mut stream, &mut reader).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(ConnError::Io(_) | ConnError::Truncated) => return,
            Err(e) => {
                // Go answers unparseable requests with a plain 400 and closes.
                let msg = match e {
                    ConnError::HeadTooLarge => "431 Request Header Fields Too Large",
                    ConnError::BodyTooLarge => "413 Request Entity Too Large",
                    _ => "400 Bad Request",
                };
                let resp = format!(
                    "HTTP/1.1 {msg}\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n{msg}"
                );
                let _ = stream.write_all(resp.as_bytes()).await;
                return;
            }
        };
        let next = respond(&mut stream, &req, peer, local, conn_id, index, &shared).await;
        index += 1;
        match next {
            Next::KeepAlive => {}
            Next::Close => {
                let _ = stream.shutdown().await;
                return;
            }
            // Dropping the socket with SO_LINGER 0 set: the kernel sends RST.
            Next::Abort => return,
        }
    }
}

async fn read_request(stream: &mut Stream, reader: &mut Reader) -> Result<Option<Request>, ConnError> {
    // Go tolerates blank lines before a request line.
    loop {
        let skip = reader.buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
        reader.consume(skip);
        if !reader.buf.is_empty() {
            break;
        }
        if reader.eof || reader.fill(stream).await? == 0 {
            return Ok(None);
        }
    }
    let (t_first_ns, _) = reader.time_of(0);
    let (head_len, method, target, version, headers) = loop {
        let mut hdrs = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Request::new(&mut hdrs);
        match parsed.parse(&reader.buf) {
            Ok(httparse::Status::Complete(n)) => {
                let version = match parsed.version {
                    Some(0) => HttpVersion::Http10,
                    _ => HttpVersion::Http11,
                };
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                break (
                    n,
                    parsed.method.unwrap_or("").to_owned(),
                    parsed.path.unwrap_or("/").to_owned(),
                    version,
                    headers,
                );
            }
            Ok(httparse::Status::Partial) => {
                if reader.buf.len() > MAX_HEAD_BYTES {
                    return Err(ConnError::HeadTooLarge);
                }
                if reader.fill(stream).await? == 0 {
                    return Err(ConnError::Truncated);
                }
            }
            Err(e) => return Err(ConnError::Malformed(e.to_string())),
        }
    };
    let header = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let chunked = header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let content_length = match (chunked, header("content-length")) {
        (true, _) | (false, None) => 0,
        (false, Some(v)) => {
            v.trim().parse::<usize>().map_err(|_| ConnError::Malformed(format!("bad Content-Length {v:?}")))?
        }
    };
    let blob = matches!(route(&method, target.split(['?', '#']).next().unwrap_or("/")), Routed::Found(Route::Blob(_)))
        && !chunked;
    if content_length > MAX_BODY_BYTES && !blob {
        return Err(ConnError::BodyTooLarge);
    }
    let connection = header("connection").unwrap_or("").to_ascii_lowercase();
    let wants_close = match version {
        HttpVersion::Http11 => connection.split(',').any(|t| t.trim() == "close"),
        HttpVersion::Http10 => !connection.split(',').any(|t| t.trim() == "keep-alive"),
    };
    let expect_continue =
        version == HttpVersion::Http11 && header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    let has_body = chunked || content_length > 0;
    let path = target.split(['?', '#']).next().unwrap_or("/").to_owned();
    // A request without a body ends with the read that completed its head.
    let (t_end_ns, t_end) = reader.time_of(head_len - 1);
    reader.consume(head_len);

    let mut req = Request {
        method,
        target,
        path,
        version,
        headers,
        body: Vec::new(),
        chunked,
        expect_continue,
        continue_sent: false,
        wants_close,
        body_unread: false,
        body_dropped: 0,
        t_first_ns,
        t_end_ns,
        t_end,
        t_continue_ns: None,
    };
    let reads_body = App::reads_body(&req.method, &req.path);
    if expect_continue && has_body && !reads_body {
        // Go only sends `100 Continue` when the handler reads; a handler that does not makes
        // Go close the connection after the reply instead of reading the body.
        req.body_unread = true;
    } else if has_body {
        if expect_continue {
            let t = now_ns();
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            req.continue_sent = true;
            req.t_continue_ns = Some(t);
        }
        let limit = if reads_body { MAX_BODY_BYTES } else { MAX_DRAIN_BYTES };
        let end = if chunked {
            read_chunked(stream, reader, &mut req.body, limit).await?
        } else if blob && content_length > BLOB_KEPT_BYTES {
            reader.need(stream, BLOB_KEPT_BYTES).await?;
            req.body.extend_from_slice(&reader.buf[..BLOB_KEPT_BYTES]);
            reader.consume(BLOB_KEPT_BYTES);
            let rest = content_length - BLOB_KEPT_BYTES;
            (req.t_end_ns, req.t_end) = drop_bytes(stream, reader, rest).await?;
            req.body_dropped = rest as u64;
            0
        } else if content_length > limit {
            req.body_unread = true;
            0
        } else {
            reader.need(stream, content_length).await?;
            req.body.extend_from_slice(&reader.buf[..content_length]);
            content_length
        };
        if end > 0 {
            (req.t_end_ns, req.t_end) = reader.time_of(end - 1);
        }
        reader.consume(end);
    }
    Ok(Some(req))
}

/// Reads and drops `n` bytes, straight from the socket past what is buffered; when the read
/// that returned the last of them happened.
async fn drop_bytes(stream: &mut Stream, reader: &mut Reader, n: usize) -> Result<(u64, Instant), ConnError> {
    let have = reader.buf.len().min(n);
    let mut at = if have > 0 { reader.time_of(have - 1) } else { (now_ns(), Instant::now()) };
    reader.consume(have);
    let mut left = n - have;
    let mut tmp = vec![0u8; 256 << 10];
    while left > 0 {
        // Never past the body: what follows is the next request's.
        let want = left.min(tmp.len());
        let got = stream.read(&mut tmp[..want]).await?;
        if got == 0 {
            return Err(ConnError::Truncated);
        }
        at = (now_ns(), Instant::now());
        left -= got;
    }
    Ok(at)
}

/// Decode a chunked body in the buffer (reading more as needed) into `out`; returns how many
/// buffered bytes the framing used (not yet consumed).
async fn read_chunked(
    stream: &mut Stream,
    reader: &mut Reader,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, ConnError> {
    let mut pos = 0;
    loop {
        let line_end = loop {
            if let Some(i) = reader.buf[pos..].windows(2).position(|w| w == b"\r\n") {
                break pos + i;
            }
            if reader.buf.len() - pos > 4096 {
                return Err(ConnError::Malformed("chunk size line too long".into()));
            }
            if reader.fill(stream).await? == 0 {
                return Err(ConnError::Truncated);
            }
        };
        let line = &reader.buf[pos..line_end];
        let hex = line.split(|&b| b == b';').next().unwrap_or(line);
        let size = std::str::from_utf8(hex)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .ok_or_else(|| ConnError::Malformed("bad chunk size".into()))?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let end = loop {
                    if let Some(i) = reader.buf[pos..].windows(2).position(|w| w == b"\r\n") {
                        break pos + i;
                    }
                    if reader.fill(stream).await? == 0 {
                        return Err(ConnError::Truncated);
                    }
                };
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    return Ok(pos);
                }
            }
        }
        if out.len() + size > limit {
            return Err(ConnError::BodyTooLarge);
        }
        reader.need(stream, pos + size + 2).await?;
        out.extend_from_slice(&reader.buf[pos..pos + size]);
        if &reader.buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(ConnError::Malformed("missing CRLF after chunk".into()));
        }
        pos += size + 2;
    }
}

/// What the connection does after a reply.
enum Next {
    KeepAlive,
    /// Close with FIN (client asked, HTTP/1.0 body until close, shutdown, a FIN cut).
    Close,
    /// Drop without shutdown: the reset scenario set SO_LINGER 0, or a write failed.
    Abort,
}

/// Answer one request.
async fn respond(
    stream: &mut Stream,
    req: &Request,
    peer: SocketAddr,
    local: SocketAddr,
    conn_id: u64,
    index: u64,
    shared: &Shared,
) -> Next {
    let call =
        Call { method: &req.method, path: &req.path, headers: &req.headers, body: &req.body, t0_ns: req.t_end_ns };
    let planned = shared.app.plan(&call);
    let reply = planned.reply;
    let head_request = req.method == "HEAD";
    let mut opts = ResponseOptions {
        framing: FramingChoice::Auto,
        version: req.version,
        head_request,
        client_wants_close: req.wants_close || req.body_unread,
        ..Default::default()
    };

    let mut obs = Observer::new(planned.stream);
    let t = &mut obs.truth;
    t.conn = conn_id;
    t.conn_request = index;
    t.client_addr = peer.ip().to_string();
    t.client_port = peer.port();
    t.server_addr = local.to_string();
    t.method = req.method.clone();
    t.target = req.target.clone();
    t.path = req.path.clone();
    t.http_version = req.version.as_str().to_owned();
    t.model = planned.model;
    t.stream = planned.stream;
    t.stream_requested = planned.stream_requested;
    t.scenario = planned.scenario;
    (t.source, t.fixture) = match &reply.source {
        super::reply::Source::Fixture(n) => ("fixture".into(), Some(n.clone())),
        super::reply::Source::Synthetic => ("synthetic".into(), None),
        super::reply::Source::Builtin => ("builtin".into(), None),
    };
    t.user_agent = req.header("user-agent").map(str::to_owned);
    t.traceparent = req.header("traceparent").map(str::to_owned);
    t.credentials_sent = req.header("authorization").is_some() || req.header("x-api-key").is_some();
    t.expect_continue = req.expect_continue;
    t.continue_sent = req.continue_sent;
    t.request_chunked = req.chunked;
    t.request_body_bytes = req.body.len() as u64 + req.body_dropped;
    t.status = reply.status;
    t.content_type = reply.content_type().map(str::to_owned);
    t.t_request_first_byte_ns = req.t_first_ns;
    t.t_request_end_ns = req.t_end_ns;
    t.t_continue_sent_ns = req.t_continue_ns;
    if req.continue_sent {
        t.response_wire_bytes += 25;
    }

    let start = req.t_end + reply.delay;
    // (No timer for no delay: tokio's rounds up to its next millisecond tick.)
    if !reply.delay.is_zero() {
        tokio::time::sleep_until(start).await;
    }
    opts.date_unix_secs = now_ns() / 1_000_000_000;

    let mut outcome = "complete";
    let mut keep = true;
    let mut abort = false;
    match reply.body {
        Body::Whole { bytes, kind, flushed_early } => {
            let framing = decide_framing(kind, bytes.len(), flushed_early, &opts);
            keep &= !closes_after(framing, &opts);
            let head = render_head(reply.status, "", &reply.headers, framing, bytes.len(), &opts);
            let mut out = head;
            let mut w = GoBodyWriter::new(framing == Framing::Chunked);
            let body_written = !head_request && framing != Framing::Unframed;
            if body_written {
                w.write(&bytes);
                w.flush(WriteContent::Body);
            }
            let writes = w.finish();
            let cut = reply.cut.map(|(_, c)| c);
            for wr in &writes {
                if cut.is_some() && wr.content == WriteContent::Terminator {
                    continue;
                }
                obs.truth.http_chunks += wr.chunks as u64;
                obs.truth.chunked_terminator |= wr.content == WriteContent::Terminator;
                out.extend_from_slice(&wr.bytes);
            }
            let mut sent_body: &[u8] = if body_written { &bytes } else { &[] };
            if cut.is_some() {
                // A crash half way through writing the one body.
                let keep_len = out.len() - sent_body.len() / 2;
                out.truncate(keep_len);
                sent_body = &sent_body[..sent_body.len() - sent_body.len() / 2];
            }
            let output = obs.observe(kind, sent_body);
            obs.truth.response_body_bytes = sent_body.len() as u64;
            obs.truth.writes = u64::from(!sent_body.is_empty());
            let t_write = now_ns();
            obs.truth.t_response_first_byte_ns = Some(t_write);
            if output {
                obs.truth.t_first_content_ns = Some(t_write);
            }
            obs.truth.response_wire_bytes += out.len() as u64;
            if stream.write_all(&out).await.is_err() {
                outcome = "client_gone";
                abort = true;
            }
            if let Some(c) = cut {
                outcome = cut_connection(stream, c).await;
                abort = true;
            }
            obs.truth.framing = framing_name(framing).into();
        }
        Body::Stream { kind, units } => {
            let framing = decide_framing(kind, usize::MAX, false, &opts);
            keep &= !closes_after(framing, &opts);
            obs.truth.framing = framing_name(framing).into();
            let mut pending_head = Some(render_head(reply.status, "", &reply.headers, framing, 0, &opts));
            let mut w = GoBodyWriter::new(framing == Framing::Chunked);
            let mut step = 0u32;
            let mut first = true;
            let mut failed = false;
            if !head_request && framing != Framing::Unframed {
                for unit in units {
                    if !first && unit.pace == Pace::Step {
                        step += 1;
                        tokio::time::sleep_until(start + reply.gap * step).await;
                    }
                    first = false;
                    w.write(&unit.bytes);
                    w.flush(unit.content.clone());
                    let mut out = pending_head.take().unwrap_or_default();
                    for wr in w.take_writes() {
                        obs.truth.http_chunks += wr.chunks as u64;
                        out.extend_from_slice(&wr.bytes);
                    }
                    let output = obs.observe(kind, &unit.bytes);
                    obs.truth.response_body_bytes += unit.bytes.len() as u64;
                    obs.truth.writes += 1;
                    let t_write = now_ns();
                    obs.truth.t_response_first_byte_ns.get_or_insert(t_write);
                    if output {
                        obs.truth.t_first_content_ns.get_or_insert(t_write);
                    }
                    obs.truth.response_wire_bytes += out.len() as u64;
                    if stream.write_all(&out).await.is_err() {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                outcome = "client_gone";
                abort = true;
            } else if let Some((_, c)) = reply.cut {
                if let Some(head) = pending_head.take() {
                    obs.truth.t_response_first_byte_ns = Some(now_ns());
                    obs.truth.response_wire_bytes += head.len() as u64;
                    let _ = stream.write_all(&head).await;
                }
                outcome = cut_connection(stream, c).await;
                abort = true;
            } else {
                let mut out = pending_head.take().unwrap_or_default();
                let mut has_terminator = false;
                for wr in w.finish() {
                    has_terminator |= wr.content == WriteContent::Terminator;
                    obs.truth.http_chunks += wr.chunks as u64;
                    out.extend_from_slice(&wr.bytes);
                }
                if !out.is_empty() {
                    obs.truth.t_response_first_byte_ns.get_or_insert_with(now_ns);
                    obs.truth.response_wire_bytes += out.len() as u64;
                    if stream.write_all(&out).await.is_err() {
                        outcome = "client_gone";
                        abort = true;
                    } else {
                        obs.truth.chunked_terminator = has_terminator;
                    }
                }
            }
        }
    }
    let _ = stream.flush().await;
    obs.truth.t_last_byte_ns = Some(now_ns());
    if outcome == "complete" && (reply.status >= 400 || obs.truth.error.is_some()) {
        outcome = "error";
    }
    obs.truth.outcome = outcome.into();
    shared.record(obs.truth);
    if abort {
        Next::Abort
    } else if keep && !shared.shutting_down() {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// End the connection as the scenario says: RST (linger 0) or FIN without a terminator.
async fn cut_connection(stream: &mut Stream, cut: Cut) -> &'static str {
    match cut {
        Cut::Reset => {
            // SO_LINGER 0 makes close() send RST; the caller drops the stream right after.
            let _ = socket2::SockRef::from(stream.tcp()).set_linger(Some(Duration::ZERO));
            "reset"
        }
        Cut::Close => {
            let _ = stream.shutdown().await;
            "closed"
        }
    }
}

fn framing_name(f: Framing) -> &'static str {
    match f {
        Framing::ContentLength => "content_length",
        Framing::Chunked => "chunked",
        Framing::UntilClose => "until_close",
        Framing::Unframed => "unframed",
    }
}
