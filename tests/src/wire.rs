//! Render an exchange to the bytes a real client and the real Go Ollama server put on the wire.
//!
//! The response side models Go `net/http` (docs/ollama-wire.md §3.2, §5.3, §6.3): handler headers
//! sorted by canonical name, then `Date`, then `Content-Length` or `Transfer-Encoding: chunked`;
//! no `Server` header; a 2048-byte buffer in front of the chunk writer, so a body that fits and is
//! done before the first flush gets a `Content-Length`, anything else is chunked; streams flush
//! once per NDJSON line / SSE event (OpenAI's finish + usage + `[DONE]` in one flush); the chunked
//! terminator goes out when the handler returns.

use std::ops::Range;

use crate::fixtures::{Fixture, RecordedRequest, RecordedResponse};

/// Size of the buffer Go's `response` puts in front of its chunk writer (`bufferBeforeChunkingSize`).
pub const GO_RESPONSE_BUFFER: usize = 2048;

/// 2026-01-01T00:00:00Z: default wall clock for `Date` headers and synthetic captures, so output
/// never depends on when a test runs.
pub const DEFAULT_EPOCH_SECS: u64 = 1_767_225_600;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("invalid chunk size line at byte {0}")]
    BadChunkSize(usize),
    #[error("missing CRLF after chunk data at byte {0}")]
    MissingChunkCrlf(usize),
    #[error("chunked body ends early (need more bytes after byte {0})")]
    Incomplete(usize),
}

// ---------------------------------------------------------------------------------------------
// Body kinds and splitting
// ---------------------------------------------------------------------------------------------

/// What a response body is, which decides how the server writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum BodyKind {
    Empty,
    /// One JSON document (possibly pretty-printed, possibly ending in `\n`).
    Json,
    /// Native streaming: one JSON object per line.
    Ndjson,
    /// OpenAI/Anthropic streaming: `data: ...\n\n` events.
    Sse,
    /// Anything else (`Ollama is running`, `404 page not found`).
    Text,
}

impl BodyKind {
    pub fn is_streamed(self) -> bool {
        matches!(self, BodyKind::Ndjson | BodyKind::Sse)
    }

    /// The Content-Type Ollama sends for this kind.
    pub fn default_content_type(self) -> Option<&'static str> {
        match self {
            BodyKind::Empty => None,
            BodyKind::Json => Some("application/json; charset=utf-8"),
            BodyKind::Ndjson => Some("application/x-ndjson"),
            BodyKind::Sse => Some("text/event-stream"),
            BodyKind::Text => Some("text/plain; charset=utf-8"),
        }
    }
}

/// Classify a body. The Content-Type wins when it names a stream; otherwise the bytes decide,
/// because some recordings have no headers at all and Ollama Cloud labels NDJSON `application/json`.
pub fn detect_body_kind(content_type: Option<&str>, body: &[u8]) -> BodyKind {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    if body.is_empty() {
        return BodyKind::Empty;
    }
    if ct.contains("text/event-stream") || body.starts_with(b"data:") || body.starts_with(b"event:") {
        return BodyKind::Sse;
    }
    if ct.contains("ndjson") || looks_like_ndjson(body) {
        return BodyKind::Ndjson;
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if matches!(first, Some(b'{' | b'[')) { BodyKind::Json } else { BodyKind::Text }
}

/// At least two non-empty lines, each a complete JSON value.
fn looks_like_ndjson(body: &[u8]) -> bool {
    let mut lines = 0;
    for line in split_ndjson(body) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if line.is_empty() || serde_json::from_slice::<serde::de::IgnoredAny>(line).is_err() {
            return false;
        }
        lines += 1;
    }
    lines >= 2
}

/// NDJSON lines, each with its `\n` (the last one may lack it).
pub fn split_ndjson(body: &[u8]) -> Vec<&[u8]> {
    body.split_inclusive(|&b| b == b'\n').collect()
}

/// SSE events, each including the blank line that ends it (`\n\n` or `\r\n\r\n`). Trailing
/// bytes with no blank line after them form a last, incomplete event.
pub fn split_sse(body: &[u8]) -> Vec<&[u8]> {
    let mut events = Vec::new();
    let mut start = 0;
    let mut line_start = 0;
    for (i, &b) in body.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = &body[line_start..i];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // A blank line ends the event; one with no field lines before it stays part of the next.
        if line.is_empty() && line_start > start {
            events.push(&body[start..=i]);
            start = i + 1;
        }
        line_start = i + 1;
    }
    if start < body.len() {
        events.push(&body[start..]);
    }
    events
}

/// Lines (NDJSON) or events (SSE) of a streamed body; the whole body otherwise.
pub fn split_body(kind: BodyKind, body: &[u8]) -> Vec<&[u8]> {
    match kind {
        BodyKind::Ndjson => split_ndjson(body),
        BodyKind::Sse => split_sse(body),
        BodyKind::Empty => Vec::new(),
        BodyKind::Json | BodyKind::Text => vec![body],
    }
}

/// The `data:` payloads of one SSE event, joined with `\n` as the SSE spec says.
pub fn sse_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            let d = data.get_or_insert_with(Vec::new);
            if !d.is_empty() {
                d.push(b'\n');
            }
            d.extend_from_slice(rest);
        }
    }
    data
}

/// An OpenAI chunk whose choices carry a `finish_reason`: the start of the server's last flush.
fn sse_is_finish(event: &[u8]) -> bool {
    let Some(data) = sse_data(event) else {
        return false;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) else {
        return false;
    };
    v.get("choices")
        .and_then(|c| c.as_array())
        .is_some_and(|choices| choices.iter().any(|c| c.get("finish_reason").is_some_and(|r| r.is_string())))
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// How the request body is framed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RequestBodyFraming {
    /// `Content-Length` recomputed from the body (what most clients do).
    #[default]
    ContentLength,
    /// `Transfer-Encoding: chunked` with chunks of at most this many bytes.
    Chunked { chunk_size: usize },
    /// Chunked (16 KiB chunks, as Ruby's Net::HTTP streams) when the recording says the client
    /// sent `Transfer-Encoding: chunked`, else `Content-Length`.
    AsRecorded,
}

#[derive(Clone, Debug, Default)]
pub struct RequestOptions {
    /// `Host` value; default: the recorded `Host` header, else the URI's authority.
    pub host: Option<String>,
    /// Added after the recorded headers, e.g. `("traceparent", "00-...")`, `("Authorization", ...)`.
    pub extra_headers: Vec<(String, String)>,
    pub body_framing: RequestBodyFraming,
}

/// A rendered request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestWire {
    /// Head and framed body, exactly as sent.
    pub bytes: Vec<u8>,
    /// Length of the head (request line + headers + blank line); the framed body follows.
    pub head_len: usize,
}

impl RequestWire {
    pub fn head(&self) -> &[u8] {
        &self.bytes[..self.head_len]
    }
    /// The body as framed on the wire (chunk framing included when chunked).
    pub fn framed_body(&self) -> &[u8] {
        &self.bytes[self.head_len..]
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the framing headers we recompute.
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
];

/// Request line, `Host`, the recorded headers in order (hop-by-hop and framing headers dropped),
/// caller headers, recomputed framing header, body.
pub fn render_request(req: &RecordedRequest, opts: &RequestOptions) -> RequestWire {
    let target = crate::fixtures::request_target(&req.uri);
    let host = opts.host.clone().unwrap_or_else(|| {
        req.headers
            .get("host")
            .or_else(|| crate::fixtures::uri_authority(&req.uri))
            .unwrap_or(crate::fixtures::OLLAMA_API_BASE_AUTHORITY)
            .to_owned()
    });
    let host_name =
        req.headers.0.iter().find(|(n, _)| n.eq_ignore_ascii_case("host")).map_or("Host", |(n, _)| n.as_str());

    let body = req.body.as_bytes();
    let recorded_chunked =
        req.headers.get("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let chunk_size = match opts.body_framing {
        RequestBodyFraming::ContentLength => None,
        RequestBodyFraming::Chunked { chunk_size } => Some(chunk_size.max(1)),
        RequestBodyFraming::AsRecorded => recorded_chunked.then_some(16 * 1024),
    };
    let method = req.method.to_ascii_uppercase();
    let framing_header = match chunk_size {
        Some(_) => Some(("Transfer-Encoding".to_owned(), "chunked".to_owned())),
        None if !body.is_empty() || matches!(method.as_str(), "POST" | "PUT" | "PATCH") => {
            Some(("Content-Length".to_owned(), body.len().to_string()))
        }
        None => None,
    };
    // Keep the recorded spelling (`content-length` vs `Content-Length`) and slot of the framing header.
    let recorded_framing = req
        .headers
        .0
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding"));

    let mut head = format!("{method} {target} HTTP/1.1\r\n{host_name}: {host}\r\n");
    let mut framing_written = false;
    for (name, values) in &req.headers.0 {
        let lower = name.to_ascii_lowercase();
        if recorded_framing.is_some_and(|(n, _)| n == name)
            && let Some((fname, fvalue)) = &framing_header
        {
            let fname = respell_like(fname, name);
            head.push_str(&format!("{fname}: {fvalue}\r\n"));
            framing_written = true;
        }
        if DROPPED_REQUEST_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        for v in values {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    for (name, value) in &opts.extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !framing_written && let Some((fname, fvalue)) = &framing_header {
        head.push_str(&format!("{fname}: {fvalue}\r\n"));
    }
    head.push_str("\r\n");

    let mut bytes = head.into_bytes();
    let head_len = bytes.len();
    match chunk_size {
        Some(size) => {
            for chunk in body.chunks(size) {
                bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                bytes.extend_from_slice(chunk);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
        }
        None => bytes.extend_from_slice(body),
    }
    RequestWire { bytes, head_len }
}

/// `name` in the letter case style of `like` (all lower if `like` is all lower).
fn respell_like(name: &str, like: &str) -> String {
    if like.chars().all(|c| !c.is_ascii_uppercase()) { name.to_ascii_lowercase() } else { name.to_owned() }
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// How the response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Framing {
    ContentLength,
    Chunked,
    /// HTTP/1.0 reply Go could not length: no framing header, the body ends at connection close.
    UntilClose,
    /// HEAD reply whose length Go did not know when it wrote the head: no framing header, no body.
    Unframed,
}

/// Caller's framing choice; `Auto` applies Go's rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FramingChoice {
    /// Streams and bodies over 2048 bytes chunked, and small bodies whose recording shows a
    /// flush before the handler returned (recorded `Transfer-Encoding: chunked`, e.g. an error
    /// written from inside `c.Stream`); `Content-Length` otherwise.
    #[default]
    Auto,
    ContentLength,
    Chunked,
}

/// HTTP version of the request, which the reply repeats (Ollama serves 1.0 and 1.1 only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub enum HttpVersion {
    Http10,
    #[default]
    Http11,
}

impl HttpVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http10 => "HTTP/1.0",
            HttpVersion::Http11 => "HTTP/1.1",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ResponseOptions {
    /// Wall clock for the `Date` header (seconds since the epoch). Synthesis restamps it.
    pub date_unix_secs: u64,
    pub framing: FramingChoice,
    /// Extra handler headers (e.g. `Cache-Control: no-cache` as the Responses/Anthropic SSE
    /// writers set); sorted with the others, as Go writes them.
    pub extra_headers: Vec<(String, String)>,
    /// Also copy the recorded end-to-end headers (minus Date/Server/framing/hop-by-hop). Off by
    /// default: recordings carry proxy and recorder additions the local server never sends.
    pub copy_recorded_headers: bool,
    /// Flush OpenAI's finish chunk, usage chunk and `[DONE]` together, as the server does.
    /// Off: one flush per event.
    pub sse_tail_in_one_flush: bool,
    /// Version of the request line. HTTP/1.0 gets no chunking (Go closes instead).
    pub version: HttpVersion,
    /// The request was `HEAD`: Go writes the head only, with a length if the handler finished
    /// within its buffer.
    pub head_request: bool,
    /// The request asked to close (`Connection: close` on 1.1, or a 1.0 request without
    /// `Connection: keep-alive`).
    pub client_wants_close: bool,
}

impl Default for ResponseOptions {
    fn default() -> Self {
        ResponseOptions {
            date_unix_secs: DEFAULT_EPOCH_SECS,
            framing: FramingChoice::Auto,
            extra_headers: Vec::new(),
            copy_recorded_headers: false,
            sse_tail_in_one_flush: true,
            version: HttpVersion::Http11,
            head_request: false,
            client_wants_close: false,
        }
    }
}

/// What one write carries, in terms of the de-chunked body.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum WriteContent {
    /// A whole non-streamed body (or a streamed body forced to `Content-Length`).
    Body,
    /// NDJSON line `n` (0-based).
    NdjsonLine(usize),
    /// SSE events `range` (0-based), flushed together.
    SseEvents(Range<usize>),
    /// `0\r\n\r\n`.
    Terminator,
}

/// Bytes the server flushed at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyWrite {
    /// Exactly as on the wire, chunk framing included.
    pub bytes: Vec<u8>,
    pub content: WriteContent,
    /// Range of the de-chunked body this write carries (empty for the terminator).
    pub body: Range<usize>,
    /// HTTP chunks in this write (0 when not chunked).
    pub chunks: usize,
}

/// A rendered response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseWire {
    /// Status line and headers through the blank line.
    pub head: Vec<u8>,
    /// Body writes in order; for chunked framing the last one is the terminator.
    pub writes: Vec<BodyWrite>,
    pub framing: Framing,
    pub body_kind: BodyKind,
    /// Writes are paced by generation (tokens); otherwise they all leave at once.
    pub streamed: bool,
    /// The de-chunked body.
    pub body: Vec<u8>,
    /// Go closes the connection after this reply.
    pub close_after: bool,
}

impl ResponseWire {
    /// Head followed by every write.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.head.clone();
        for w in &self.writes {
            out.extend_from_slice(&w.bytes);
        }
        out
    }

    /// Replace the `Date` header's value (always 29 bytes, so lengths do not change).
    pub fn set_date(&mut self, unix_secs: u64) {
        set_date(&mut self.head, unix_secs);
    }
}

/// Replace the `Date` value in a rendered head (always 29 bytes, so lengths do not change).
pub fn set_date(head: &mut [u8], unix_secs: u64) {
    let needle = b"\r\nDate: ";
    if let Some(pos) = head.windows(needle.len()).position(|w| w == needle) {
        let start = pos + needle.len();
        let date = http_date(unix_secs);
        head[start..start + date.len()].copy_from_slice(date.as_bytes());
    }
}

/// Request and response of one exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeWire {
    pub request: RequestWire,
    pub response: ResponseWire,
}

#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    pub request: RequestOptions,
    pub response: ResponseOptions,
}

/// Render a fixture's exchange.
pub fn render(fixture: &Fixture, opts: &RenderOptions) -> ExchangeWire {
    ExchangeWire {
        request: render_request(&fixture.request, &opts.request),
        response: render_response(&fixture.response, &opts.response),
    }
}

/// Headers a Go handler does not send itself or that we compute.
const SKIPPED_RESPONSE_HEADERS: &[&str] = &[
    "date",
    "server",
    "content-length",
    "transfer-encoding",
    "content-type",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Go's framing decision for a body of `kind` and `body_len` bytes. `flushed_early`: the
/// handler flushed before returning even though the body is small (an error from `c.Stream`).
pub fn decide_framing(kind: BodyKind, body_len: usize, flushed_early: bool, opts: &ResponseOptions) -> Framing {
    let lengthable = match opts.framing {
        FramingChoice::ContentLength => true,
        FramingChoice::Chunked => false,
        FramingChoice::Auto => {
            !kind.is_streamed() && body_len <= GO_RESPONSE_BUFFER && !(flushed_early && body_len > 0)
        }
    };
    // Go: a HEAD reply gets a length only if the handler wrote something and finished first.
    if opts.head_request {
        return if lengthable && body_len > 0 { Framing::ContentLength } else { Framing::Unframed };
    }
    match (lengthable, opts.version) {
        (true, _) => Framing::ContentLength,
        (false, HttpVersion::Http11) => Framing::Chunked,
        (false, HttpVersion::Http10) => Framing::UntilClose,
    }
}

/// Whether Go closes the connection after a reply framed `framing`.
pub fn closes_after(framing: Framing, opts: &ResponseOptions) -> bool {
    opts.client_wants_close || framing == Framing::UntilClose
}

/// Status line and headers as Go writes them: handler headers sorted by canonical name, then
/// `Date`, `Content-Length`, `Connection`, `Transfer-Encoding` (net/http `extraHeader` order).
/// `handler_headers` must include `Content-Type` when the handler set one.
pub fn render_head(
    status: u16,
    reason: &str,
    handler_headers: &[(String, String)],
    framing: Framing,
    body_len: usize,
    opts: &ResponseOptions,
) -> Vec<u8> {
    let close = closes_after(framing, opts);
    let mut handler: Vec<(String, String)> = handler_headers
        .iter()
        .map(|(n, v)| (canonical_header_key(n), v.clone()))
        // Go drops a handler's own `Connection` when it decides to close.
        .filter(|(n, _)| !(close && n == "Connection"))
        .collect();
    handler.sort_by(|a, b| a.0.cmp(&b.0)); // stable: values of one name keep their order
    let reason = if reason.is_empty() {
        go_status_text(status).map_or_else(|| format!("status code {status}"), str::to_owned)
    } else {
        reason.to_owned()
    };
    let mut head = format!("{} {status} {reason}\r\n", opts.version.as_str());
    for (name, value) in &handler {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Date: {}\r\n", http_date(opts.date_unix_secs)));
    if framing == Framing::ContentLength {
        head.push_str(&format!("Content-Length: {body_len}\r\n"));
    }
    if close && opts.version == HttpVersion::Http11 {
        head.push_str("Connection: close\r\n");
    } else if !close && opts.version == HttpVersion::Http10 {
        // A 1.0 client that asked for keep-alive is told it got it.
        head.push_str("Connection: keep-alive\r\n");
    }
    if framing == Framing::Chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// How the server flushes a body: `(body range, what it is)` per flush. Streams flush once per
/// NDJSON line or SSE event (OpenAI's finish + usage + `[DONE]` together when
/// `sse_tail_in_one_flush`); anything else is one write.
pub fn flush_plan(
    kind: BodyKind,
    body: &[u8],
    streamed: bool,
    sse_tail_in_one_flush: bool,
) -> Vec<(Range<usize>, WriteContent)> {
    let mut plan = Vec::new();
    if body.is_empty() {
        return plan;
    }
    if streamed && kind == BodyKind::Ndjson {
        let mut at = 0;
        for (i, line) in split_ndjson(body).into_iter().enumerate() {
            plan.push((at..at + line.len(), WriteContent::NdjsonLine(i)));
            at += line.len();
        }
    } else if streamed && kind == BodyKind::Sse {
        let events = split_sse(body);
        let tail_start = if sse_tail_in_one_flush {
            events.iter().position(|e| sse_is_finish(e)).unwrap_or(events.len())
        } else {
            events.len()
        };
        let mut at = 0;
        for (i, event) in events[..tail_start].iter().enumerate() {
            plan.push((at..at + event.len(), WriteContent::SseEvents(i..i + 1)));
            at += event.len();
        }
        if tail_start < events.len() {
            plan.push((at..body.len(), WriteContent::SseEvents(tail_start..events.len())));
        }
    } else {
        plan.push((0..body.len(), WriteContent::Body));
    }
    plan
}

/// Render a response as Go `net/http` writes it.
pub fn render_response(resp: &RecordedResponse, opts: &ResponseOptions) -> ResponseWire {
    let body = resp.body.as_bytes();
    let recorded_ct = resp.headers.get("content-type");
    let kind = detect_body_kind(recorded_ct, body);
    let recorded_chunked =
        resp.headers.get("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let framing = decide_framing(kind, body.len(), recorded_chunked, opts);

    let mut handler: Vec<(String, String)> = Vec::new();
    if let Some(ct) = recorded_ct.or(kind.default_content_type()) {
        handler.push(("Content-Type".to_owned(), ct.to_owned()));
    }
    if opts.copy_recorded_headers {
        for (name, value) in resp.headers.iter() {
            if !SKIPPED_RESPONSE_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                handler.push((name.to_owned(), value.to_owned()));
            }
        }
    }
    handler.extend(opts.extra_headers.iter().cloned());
    let head = render_head(resp.status, &resp.reason, &handler, framing, body.len(), opts);

    let streamed = matches!(framing, Framing::Chunked | Framing::UntilClose) && kind.is_streamed();
    let mut w = GoBodyWriter::new(framing == Framing::Chunked);
    if framing != Framing::Unframed && !opts.head_request {
        for (range, content) in flush_plan(kind, body, streamed, opts.sse_tail_in_one_flush) {
            w.write(&body[range]);
            w.flush(content);
        }
    }
    ResponseWire {
        head,
        writes: w.finish(),
        framing,
        body_kind: kind,
        streamed,
        body: body.to_vec(),
        close_after: closes_after(framing, opts),
    }
}

/// Go's `response.w` (a 2048-byte bufio.Writer) over its `chunkWriter`, reduced to what decides
/// chunk boundaries: small writes collect in the buffer, a write larger than the free space
/// fills and flushes it (or, into an empty buffer, goes straight through as one chunk).
///
/// Public so a live server (the stand-in) can frame a body it produces piece by piece with the
/// same rules [`render_response`] applies to a whole one: `write` + `flush`, then
/// [`take_writes`](Self::take_writes) what is ready to go out.
pub struct GoBodyWriter {
    chunked: bool,
    buf: Vec<u8>,
    pending: Vec<u8>,
    pending_chunks: usize,
    body_start: usize,
    body_end: usize,
    writes: Vec<BodyWrite>,
}

impl GoBodyWriter {
    pub fn new(chunked: bool) -> Self {
        GoBodyWriter {
            chunked,
            buf: Vec::with_capacity(GO_RESPONSE_BUFFER),
            pending: Vec::new(),
            pending_chunks: 0,
            body_start: 0,
            body_end: 0,
            writes: Vec::new(),
        }
    }

    /// `ResponseWriter.Write`: buffer, spilling to chunks as Go does.
    pub fn write(&mut self, mut p: &[u8]) {
        while p.len() > GO_RESPONSE_BUFFER - self.buf.len() {
            let n = if self.buf.is_empty() {
                self.chunk_write(p);
                p.len()
            } else {
                let n = GO_RESPONSE_BUFFER - self.buf.len();
                self.buf.extend_from_slice(&p[..n]);
                self.drain_buffer();
                n
            };
            p = &p[n..];
        }
        self.buf.extend_from_slice(p);
    }

    fn drain_buffer(&mut self) {
        if !self.buf.is_empty() {
            let data = std::mem::take(&mut self.buf);
            self.chunk_write(&data);
        }
    }

    fn chunk_write(&mut self, p: &[u8]) {
        if p.is_empty() {
            return;
        }
        if self.chunked {
            self.pending.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
            self.pending.extend_from_slice(p);
            self.pending.extend_from_slice(b"\r\n");
            self.pending_chunks += 1;
        } else {
            self.pending.extend_from_slice(p);
        }
        self.body_end += p.len();
    }

    /// `http.Flusher.Flush`: buffer to the chunk writer, chunk writer to the socket.
    pub fn flush(&mut self, content: WriteContent) {
        self.drain_buffer();
        if self.pending.is_empty() {
            return;
        }
        self.writes.push(BodyWrite {
            bytes: std::mem::take(&mut self.pending),
            content,
            body: self.body_start..self.body_end,
            chunks: std::mem::take(&mut self.pending_chunks),
        });
        self.body_start = self.body_end;
    }

    /// Writes completed so far (each one what a single flush put on the socket).
    pub fn take_writes(&mut self) -> Vec<BodyWrite> {
        std::mem::take(&mut self.writes)
    }

    /// Handler returned: `finishRequest` flushes and closes the chunk writer.
    pub fn finish(mut self) -> Vec<BodyWrite> {
        self.flush(WriteContent::Body);
        if self.chunked {
            self.writes.push(BodyWrite {
                bytes: b"0\r\n\r\n".to_vec(),
                content: WriteContent::Terminator,
                body: self.body_end..self.body_end,
                chunks: 0,
            });
        }
        self.writes
    }
}

/// Go's `textproto.CanonicalMIMEHeaderKey` for ordinary header names.
pub fn canonical_header_key(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() });
        upper = c == '-';
    }
    out
}

/// Go's `http.StatusText` for the codes Ollama produces.
pub fn go_status_text(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => return None,
    })
}

/// RFC 9110 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), Go's `http.TimeFormat`.
pub fn http_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Strict decoder for a chunked body (no trailers expected, extensions ignored): returns the
/// de-chunked bytes and how many input bytes the framing used, through the terminator.
pub fn decode_chunked(data: &[u8]) -> Result<(Vec<u8>, usize), WireError> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let line_end =
            data[pos..].windows(2).position(|w| w == b"\r\n").map(|i| pos + i).ok_or(WireError::Incomplete(pos))?;
        let line = &data[pos..line_end];
        let hex = line.split(|&b| b == b';').next().unwrap_or(line);
        let size = std::str::from_utf8(hex)
            .ok()
            .filter(|s| !s.is_empty())
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .ok_or(WireError::BadChunkSize(pos))?;
        pos = line_end + 2;
        if size == 0 {
            // Trailer section: header lines until an empty line.
            loop {
                let end = data[pos..]
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .map(|i| pos + i)
                    .ok_or(WireError::Incomplete(pos))?;
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    return Ok((out, pos));
                }
            }
        }
        if data.len() < pos + size + 2 {
            return Err(WireError::Incomplete(pos));
        }
        out.extend_from_slice(&data[pos..pos + size]);
        pos += size;
        if &data[pos..pos + 2] != b"\r\n" {
            return Err(WireError::MissingChunkCrlf(pos));
        }
        pos += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, load_all};

    fn parse_response_head(head: &[u8]) -> (u16, Vec<(String, String)>) {
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hdrs);
        let status = r.parse(head).expect("valid head");
        assert_eq!(status, httparse::Status::Complete(head.len()), "head ends at the blank line");
        let headers =
            r.headers.iter().map(|h| (h.name.to_owned(), String::from_utf8(h.value.to_vec()).unwrap())).collect();
        (r.code.unwrap(), headers)
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(DEFAULT_EPOCH_SECS), "Thu, 01 Jan 2026 00:00:00 GMT");
        assert_eq!(http_date(1_761_504_501), "Sun, 26 Oct 2025 18:48:21 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn canonical_keys() {
        assert_eq!(canonical_header_key("content-type"), "Content-Type");
        assert_eq!(canonical_header_key("X-REQUEST-ID"), "X-Request-Id");
    }

    #[test]
    fn splits_ndjson_and_sse() {
        assert_eq!(split_ndjson(b"{}\n{}\n"), vec![&b"{}\n"[..], b"{}\n"]);
        assert_eq!(split_ndjson(b"{}\n{\"a\""), vec![&b"{}\n"[..], b"{\"a\""]);
        let sse = b"data: {\"a\":1}\n\nevent: x\ndata: 2\n\ndata: [DONE]\n\n";
        let ev = split_sse(sse);
        assert_eq!(ev, vec![&b"data: {\"a\":1}\n\n"[..], b"event: x\ndata: 2\n\n", b"data: [DONE]\n\n"]);
        assert_eq!(split_sse(b"data: 1\r\n\r\ndata: 2\r\n\r\n").len(), 2);
        assert_eq!(split_sse(b"data: 1\n\ndata: 2"), vec![&b"data: 1\n\n"[..], b"data: 2"]);
        assert_eq!(sse_data(b"event: x\ndata: a\ndata: b\n\n").unwrap(), b"a\nb");
    }

    #[test]
    fn body_kinds() {
        assert_eq!(detect_body_kind(None, b""), BodyKind::Empty);
        assert_eq!(detect_body_kind(Some("application/json"), b"{\"a\":1}\n{\"a\":2}\n"), BodyKind::Ndjson);
        assert_eq!(detect_body_kind(None, b"{\n  \"a\": 1\n}"), BodyKind::Json);
        assert_eq!(detect_body_kind(Some("application/json"), b"{\"a\":1}\n"), BodyKind::Json);
        assert_eq!(detect_body_kind(Some("text/plain"), b"Ollama is running"), BodyKind::Text);
        assert_eq!(detect_body_kind(Some("text/event-stream"), b"data: x\n\n"), BodyKind::Sse);
    }

    #[test]
    fn decode_chunked_rejects_garbage() {
        assert_eq!(decode_chunked(b"3\r\nabc\r\n0\r\n\r\nrest").unwrap(), (b"abc".to_vec(), 13));
        assert_eq!(decode_chunked(b"zz\r\n"), Err(WireError::BadChunkSize(0)));
        assert_eq!(decode_chunked(b"3\r\nabcX\r\n"), Err(WireError::MissingChunkCrlf(6)));
        assert!(matches!(decode_chunked(b"3\r\nab"), Err(WireError::Incomplete(_))));
    }

    #[test]
    fn go_buffer_splits_large_flushes_at_2048() {
        let mut w = GoBodyWriter::new(true);
        w.write(&[b'a'; 1500]);
        w.write(&[b'b'; 1500]);
        w.flush(WriteContent::Body);
        let writes = w.finish();
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[0].chunks, 2);
        let (body, _) = decode_chunked(&[&writes[0].bytes[..], &writes[1].bytes[..]].concat()).unwrap();
        assert_eq!(body.len(), 3000);
        assert!(writes[0].bytes.starts_with(b"800\r\n"), "first chunk is the full 2048-byte buffer");
        // One write bigger than the empty buffer goes through as a single chunk.
        let mut w = GoBodyWriter::new(true);
        w.write(&[b'c'; 5000]);
        w.flush(WriteContent::Body);
        assert!(w.finish()[0].bytes.starts_with(b"1388\r\n"));
    }

    /// Every fixture: the head parses, framing follows Go's rules, the writes de-chunk back to the
    /// recorded body, and streamed bodies have one HTTP chunk per line / event.
    #[test]
    fn every_fixture_round_trips() {
        for f in load_all().unwrap() {
            let wire = render(&f, &RenderOptions::default());
            let resp = &wire.response;
            let (status, headers) = parse_response_head(&resp.head);
            assert_eq!(status, f.response.status, "{}", f.name);
            let names: Vec<_> = headers.iter().map(|(n, _)| n.as_str()).collect();
            assert!(!names.contains(&"Server"), "{}", f.name);
            assert!(names.contains(&"Date"), "{}", f.name);
            let body = f.response.body.as_bytes();
            let mut rest = Vec::new();
            for w in &resp.writes {
                rest.extend_from_slice(&w.bytes);
            }
            match resp.framing {
                Framing::ContentLength => {
                    assert!(body.len() <= GO_RESPONSE_BUFFER, "{}", f.name);
                    assert!(headers.contains(&("Content-Length".into(), body.len().to_string())));
                    assert_eq!(rest, body, "{}", f.name);
                }
                Framing::Chunked => {
                    assert!(headers.contains(&("Transfer-Encoding".into(), "chunked".into())));
                    let (decoded, used) = decode_chunked(&rest).unwrap();
                    assert_eq!(used, rest.len(), "{}", f.name);
                    assert_eq!(decoded, body, "{}", f.name);
                    assert_eq!(resp.writes.last().unwrap().content, WriteContent::Terminator);
                }
                Framing::UntilClose | Framing::Unframed => {
                    panic!("{}: HTTP/1.1 GET/POST is never unframed", f.name)
                }
            }
            let kind = f.response_body_kind();
            if kind == BodyKind::Ndjson {
                let lines = split_ndjson(body);
                assert_eq!(resp.writes.len(), lines.len() + 1, "{}", f.name);
                for (i, (w, line)) in resp.writes.iter().zip(&lines).enumerate() {
                    assert_eq!(w.content, WriteContent::NdjsonLine(i));
                    assert_eq!(w.chunks, 1, "{}: one chunk per line", f.name);
                    assert_eq!(&body[w.body.clone()], *line);
                }
            }
            if kind == BodyKind::Sse {
                let events = split_sse(body);
                let last = &resp.writes[resp.writes.len() - 2];
                let WriteContent::SseEvents(r) = &last.content else { panic!("{}", f.name) };
                assert_eq!(r.end, events.len(), "{}", f.name);
                assert!(sse_is_finish(events[r.start]), "{}: tail starts at the finish chunk", f.name);
                assert!(sse_data(events[events.len() - 1]).unwrap() == b"[DONE]", "{}", f.name);
            }
        }
    }

    #[test]
    fn openai_tail_is_one_chunk() {
        let f = fixtures::load(
            "crmne-ruby_llm__chat_streaming_responses_ollama_mistral-small3_1_supports_streaming_responses__0",
        )
        .unwrap();
        let wire = render(&f, &RenderOptions::default());
        let writes = &wire.response.writes;
        let tail = &writes[writes.len() - 2];
        assert_eq!(tail.chunks, 1);
        let (data, _) = decode_chunked(&[&tail.bytes[..], b"0\r\n\r\n"].concat()).unwrap();
        let events = split_sse(&data);
        assert_eq!(events.len(), 3, "finish + usage + [DONE]");
        assert!(events[1].windows(8).any(|w| w == b"\"usage\":"));

        let per_event = RenderOptions {
            response: ResponseOptions { sse_tail_in_one_flush: false, ..Default::default() },
            ..Default::default()
        };
        let wire2 = render(&f, &per_event);
        assert_eq!(wire2.response.writes.len(), writes.len() + 2);
    }

    #[test]
    fn go_head_layout() {
        let f = fixtures::load("Arize-ai-openinference__test_chat_stream__0").unwrap();
        let wire = render(&f, &RenderOptions::default());
        assert_eq!(
            String::from_utf8(wire.response.head.clone()).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n\
             Date: Thu, 01 Jan 2026 00:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let small = fixtures::load("alexrudall-ruby-openai__ollama_llama3_chat__0").unwrap();
        let wire = render(&small, &RenderOptions::default());
        assert_eq!(
            String::from_utf8(wire.response.bytes()).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Date: Thu, 01 Jan 2026 00:00:00 GMT\r\nContent-Length: 17\r\n\r\nOllama is running"
        );
        let mut resp = wire.response.clone();
        resp.set_date(784_111_777);
        assert!(String::from_utf8(resp.head).unwrap().contains("Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"));
    }

    #[test]
    fn head_http10_and_close_follow_go() {
        let small = fixtures::load("alexrudall-ruby-openai__ollama_llama3_chat__0").unwrap();
        let head = ResponseOptions { head_request: true, ..Default::default() };
        let wire = render_response(&small.response, &head);
        assert_eq!(wire.framing, Framing::ContentLength);
        assert!(wire.writes.is_empty());
        assert!(String::from_utf8_lossy(&wire.head).contains("Content-Length: 17\r\n"));

        let stream = fixtures::load("Arize-ai-openinference__test_chat_stream__0").unwrap();
        let wire = render_response(&stream.response, &head);
        assert_eq!(wire.framing, Framing::Unframed);
        let text = String::from_utf8(wire.head).unwrap();
        assert!(!text.contains("Transfer-Encoding") && !text.contains("Content-Length"));

        let http10 = ResponseOptions { version: HttpVersion::Http10, ..Default::default() };
        let wire = render_response(&stream.response, &http10);
        assert_eq!(wire.framing, Framing::UntilClose);
        assert!(wire.close_after);
        assert!(wire.head.starts_with(b"HTTP/1.0 200 OK\r\n"));
        assert_eq!(wire.bytes()[wire.head.len()..], *stream.response.body.as_bytes());
        let wire = render_response(&small.response, &http10);
        assert!(!wire.close_after);
        assert!(String::from_utf8_lossy(&wire.head).contains("Connection: keep-alive\r\n"));

        let close = ResponseOptions { client_wants_close: true, ..Default::default() };
        let wire = render_response(&stream.response, &close);
        assert!(wire.close_after);
        assert!(
            String::from_utf8(wire.head).unwrap().ends_with("Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
        );
    }

    #[test]
    fn body_writer_is_incremental() {
        let mut w = GoBodyWriter::new(true);
        w.write(b"{}\n");
        w.flush(WriteContent::NdjsonLine(0));
        let first = w.take_writes();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].bytes, b"3\r\n{}\n\r\n");
        w.write(b"{}\n");
        w.flush(WriteContent::NdjsonLine(1));
        let rest = w.finish();
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[0].body, 3..6);
        assert_eq!(rest[1].content, WriteContent::Terminator);
    }

    #[test]
    fn small_error_from_stream_path_is_chunked() {
        let f = fixtures::load("tmc-langchaingo__TestWithTruncateFalse__0").unwrap();
        let wire = render(&f, &RenderOptions::default());
        assert_eq!(wire.response.framing, Framing::Chunked);
        assert!(!wire.response.streamed);
        assert_eq!(wire.response.writes.len(), 2);
    }

    #[test]
    fn request_rendering() {
        let f = fixtures::load("activeagents-activeagent__test_agent_streaming__0").unwrap();
        let opts = RequestOptions {
            extra_headers: vec![(
                "traceparent".into(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            )],
            ..Default::default()
        };
        let req = render_request(&f.request, &opts);
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut hdrs);
        assert_eq!(parsed.parse(&req.bytes).unwrap(), httparse::Status::Complete(req.head_len));
        assert_eq!(parsed.method, Some("POST"));
        assert_eq!(parsed.path, Some("/v1/chat/completions"));
        let names: Vec<_> = parsed.headers.iter().map(|h| h.name).collect();
        assert_eq!(names[0], "Host");
        assert_eq!(names[1], "Accept-Encoding");
        assert!(names.contains(&"traceparent"));
        let cl: Vec<_> = parsed.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length")).collect();
        assert_eq!(cl.len(), 1);
        // The recording says 154, the body is 194 bytes: we recompute.
        assert_eq!(cl[0].value, b"194");
        assert_eq!(req.framed_body(), f.request.body.as_bytes());
    }

    #[test]
    fn every_request_parses_and_carries_its_body() {
        for f in load_all().unwrap() {
            for framing in [RequestBodyFraming::ContentLength, RequestBodyFraming::AsRecorded] {
                let req = render_request(&f.request, &RequestOptions { body_framing: framing, ..Default::default() });
                let mut hdrs = [httparse::EMPTY_HEADER; 64];
                let mut parsed = httparse::Request::new(&mut hdrs);
                assert_eq!(parsed.parse(&req.bytes).unwrap(), httparse::Status::Complete(req.head_len), "{}", f.name);
                let te = parsed.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
                let cl = parsed.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length")).count();
                assert!(!(te && cl > 0), "{}: both framings", f.name);
                assert!(cl <= 1, "{}", f.name);
                let body = if te { decode_chunked(req.framed_body()).unwrap().0 } else { req.framed_body().to_vec() };
                assert_eq!(body, f.request.body.as_bytes(), "{}", f.name);
                assert!(!parsed.headers.iter().any(|h| h.name.eq_ignore_ascii_case("connection")));
            }
        }
    }

    #[test]
    fn chunked_request_bodies() {
        let f = fixtures::load("llmrb-llm__llm_file_local_image__0").unwrap();
        let req = render_request(
            &f.request,
            &RequestOptions { body_framing: RequestBodyFraming::AsRecorded, ..Default::default() },
        );
        assert!(String::from_utf8_lossy(req.head()).contains("Transfer-Encoding: chunked\r\n"));
        let (body, used) = decode_chunked(req.framed_body()).unwrap();
        assert_eq!(used, req.framed_body().len());
        assert_eq!(body, f.request.body.as_bytes());
    }
}
