//! Request and response heads: httparse does the parsing; this module keeps only what later
//! stages need, and never keeps credentials.

use super::body::Framing;

/// Header names whose values are never kept, whatever the configuration says.
const NEVER_KEPT: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "openai-organization",
    "openai-project",
];

/// True for header names whose values must never leave the tracer.
pub fn is_secret_header(name: &str) -> bool {
    NEVER_KEPT.iter().any(|n| n.eq_ignore_ascii_case(name))
        || name.to_ascii_lowercase().contains("token")
        || name.to_ascii_lowercase().contains("secret")
}

/// Largest head we wait for; a longer one is not HTTP we can follow (or a slowloris).
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed HTTP head: {0}")]
    Malformed(String),
    #[error("HTTP head longer than {MAX_HEAD} bytes")]
    TooLong,
    #[error("invalid Content-Length")]
    BadLength,
}

/// What we keep of a request head.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// Path without the query string (queries can carry signatures: never exported).
    pub path: String,
    pub has_query: bool,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub expect_continue: bool,
    pub connection_close: bool,
    pub upgrade: bool,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// Headers on the configured allow-list (lower-case names), never secrets.
    pub kept_headers: Vec<(String, String)>,
    /// The conversation id the client sent in the configured header (`HttpConfig::conversation_header`).
    pub conversation_id: Option<String>,
    /// Stands for a request that was not captured (lost, or sent before the capture began),
    /// answered by a response we did see: every field above is unknown.
    pub unseen: bool,
}

impl RequestHead {
    pub fn framing(&self) -> Framing {
        if self.chunked {
            Framing::Chunked
        } else {
            match self.content_length {
                Some(n) if n > 0 => Framing::Length(n),
                _ => Framing::None,
            }
        }
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub version: u8,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub connection_close: bool,
}

impl ResponseHead {
    /// Body framing given the request method (RFC 9112 §6.3).
    pub fn framing(&self, request_was_head: bool) -> Framing {
        if request_was_head || (100..200).contains(&self.status) || self.status == 204 || self.status == 304 {
            Framing::None
        } else if self.chunked {
            Framing::Chunked
        } else if let Some(n) = self.content_length {
            if n == 0 { Framing::None } else { Framing::Length(n) }
        } else {
            Framing::UntilClose
        }
    }
}

/// Finds the end of a head (`\r\n\r\n`, or bare `\n\n`); returns its length including the blank line.
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while let Some(k) = memchr::memchr(b'\n', &buf[i..]) {
        let p = i + k;
        if p >= 1 && buf[p - 1] == b'\n' {
            return Some(p + 1);
        }
        if p >= 2 && buf[p - 1] == b'\r' && buf[p - 2] == b'\n' {
            return Some(p + 1);
        }
        i = p + 1;
        if i >= buf.len() {
            break;
        }
    }
    None
}

fn parse_length(value: &[u8]) -> Result<u64, HeadError> {
    let s = std::str::from_utf8(value).map_err(|_| HeadError::BadLength)?.trim();
    // Several identical values separated by commas are allowed; anything else is not.
    let mut parts = s.split(',').map(str::trim);
    let first: u64 = parts.next().ok_or(HeadError::BadLength)?.parse().map_err(|_| HeadError::BadLength)?;
    if parts.any(|p| p.parse::<u64>().ok() != Some(first)) {
        return Err(HeadError::BadLength);
    }
    // A terabyte body is not an Ollama call; such a value is noise and would blind us forever.
    if first > 1 << 40 {
        return Err(HeadError::BadLength);
    }
    Ok(first)
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).trim().to_string()
}

fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses a complete request head.
/// Longest conversation id kept from a header.
const MAX_CONVERSATION_ID: usize = 256;

pub fn parse_request(buf: &[u8], keep: &[String], conversation_header: &str) -> Result<RequestHead, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed("incomplete".into())),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    }
    let target = req.path.unwrap_or("/");
    let (path, has_query) = match target.split_once('?') {
        Some((p, _)) => (p, true),
        None => (target, false),
    };
    // Absolute-form targets (`http://host:11434/api/chat`) come from proxies.
    let path = match path.find("://") {
        Some(i) => path[i + 3..].find('/').map_or("/", |j| &path[i + 3 + j..]),
        None => path,
    };
    let mut head = RequestHead {
        method: req.method.unwrap_or("").to_string(),
        path: path.to_string(),
        has_query,
        version: req.version.unwrap_or(1),
        ..Default::default()
    };
    head.connection_close = head.version == 0;
    for h in req.headers.iter() {
        let name = h.name;
        let value = h.value;
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(parse_length(value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value
                .split(|&b| b == b',')
                .next_back()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type = Some(text(value));
        } else if name.eq_ignore_ascii_case("content-encoding") {
            head.content_encoding = Some(text(value).to_ascii_lowercase());
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = has_token(value, "100-continue");
        } else if name.eq_ignore_ascii_case("connection") {
            if has_token(value, "close") {
                head.connection_close = true;
            } else if has_token(value, "keep-alive") {
                head.connection_close = false;
            }
            if has_token(value, "upgrade") {
                head.upgrade = true;
            }
        } else if name.eq_ignore_ascii_case("host") {
            head.host = Some(text(value));
        } else if name.eq_ignore_ascii_case("user-agent") {
            head.user_agent = Some(text(value));
        } else if name.eq_ignore_ascii_case("traceparent") {
            head.traceparent = Some(text(value));
        } else if name.eq_ignore_ascii_case("tracestate") {
            // Several tracestate headers combine into one list (W3C §3.3.1).
            let v = text(value);
            head.tracestate = Some(match head.tracestate.take() {
                Some(prev) => format!("{prev},{v}"),
                None => v,
            });
        }
        if !conversation_header.is_empty() && name.eq_ignore_ascii_case(conversation_header) {
            let id = text(value);
            if !id.is_empty() && id.len() <= MAX_CONVERSATION_ID {
                head.conversation_id = Some(id);
            }
        }
        if !keep.is_empty() && !is_secret_header(name) && keep.iter().any(|k| k.eq_ignore_ascii_case(name)) {
            head.kept_headers.push((name.to_ascii_lowercase(), text(value)));
        }
    }
    if head.method == "CONNECT" {
        head.upgrade = true;
    }
    Ok(head)
}

/// Parses a complete response head.
pub fn parse_response(buf: &[u8]) -> Result<ResponseHead, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed("incomplete".into())),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    }
    let mut head =
        ResponseHead { status: resp.code.unwrap_or(0), version: resp.version.unwrap_or(1), ..Default::default() };
    head.connection_close = head.version == 0;
    for h in resp.headers.iter() {
        let (name, value) = (h.name, h.value);
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(parse_length(value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value
                .split(|&b| b == b',')
                .next_back()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type = Some(text(value));
        } else if name.eq_ignore_ascii_case("content-encoding") {
            head.content_encoding = Some(text(value).to_ascii_lowercase());
        } else if name.eq_ignore_ascii_case("connection") {
            if has_token(value, "close") {
                head.connection_close = true;
            } else if has_token(value, "keep-alive") {
                head.connection_close = false;
            }
        }
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_keeps_what_matters_and_no_secrets() {
        let raw = b"POST /api/chat?ts=123 HTTP/1.1\r\nHost: localhost:11434\r\nAuthorization: Bearer sk-secret\r\nX-Api-Key: k\r\nCookie: a=b\r\nUser-Agent: ollama-python/0.6.1\r\nContent-Length: 42\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\ntracestate: a=1\r\nTraceState: b=2\r\n\r\n";
        let keep = vec!["user-agent".to_string(), "authorization".to_string(), "cookie".to_string()];
        let h = parse_request(raw, &keep, "").unwrap();
        assert_eq!(h.method, "POST");
        assert_eq!(h.path, "/api/chat");
        assert!(h.has_query);
        assert_eq!(h.content_length, Some(42));
        assert_eq!(h.framing(), Framing::Length(42));
        assert_eq!(h.tracestate.as_deref(), Some("a=1,b=2"));
        assert_eq!(h.kept_headers, vec![("user-agent".to_string(), "ollama-python/0.6.1".to_string())]);
        let dump = format!("{h:?}");
        assert!(!dump.contains("sk-secret") && !dump.contains("a=b"), "{dump}");
    }

    #[test]
    fn response_framing_rules() {
        let h = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(h.framing(false), Framing::Chunked);
        assert_eq!(h.framing(true), Framing::None);
        let h = parse_response(b"HTTP/1.0 200 OK\r\n\r\n").unwrap();
        assert_eq!(h.framing(false), Framing::UntilClose);
        assert!(h.connection_close);
        let h = parse_response(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(h.framing(false), Framing::None);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n"),
            Err(HeadError::BadLength)
        );
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n"), Err(HeadError::BadLength));
    }

    #[test]
    fn head_end_finds_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody", 0), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nbody", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        let buf = b"GET / HTTP/1.1\r\n\r\n";
        for from in 0..buf.len() {
            assert_eq!(head_end(buf, from), Some(18));
        }
    }
}
