//! Recorded Ollama exchanges from `tests/fixtures/recorded/*.json` (schema and provenance in its
//! INDEX.md): inside the repository, so a fresh clone tests on its own.
//!
//! Bodies in the files are already de-chunked strings; header names keep the recorder's case and
//! order. Nothing here knows about wire framing: that is [`crate::wire`]'s job.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::wire::{BodyKind, detect_body_kind};

/// Placeholder ruby_llm cassettes use for the API base; it stood for `http://localhost:11434/v1`.
pub const OLLAMA_API_BASE: &str = "<OLLAMA_API_BASE>";
/// Authority `<OLLAMA_API_BASE>` stood for; also the fallback `Host`.
pub const OLLAMA_API_BASE_AUTHORITY: &str = "localhost:11434";

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no fixture named {0:?}")]
    NotFound(String),
}

/// Directory holding the recorded fixture JSON files.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("recorded")
}

/// Every fixture, sorted by name (deterministic order for combined captures and golden files).
pub fn load_all() -> Result<Vec<Fixture>, FixtureError> {
    load_dir(&fixtures_dir())
}

/// Every `*.json` fixture in `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Fixture>, FixtureError> {
    let io_err = |source| FixtureError::Io { path: dir.to_owned(), source };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let path = entry.map_err(io_err)?.path();
        if path.extension().is_some_and(|e| e == "json") {
            paths.push(path);
        }
    }
    paths.sort();
    paths.iter().map(|p| load_file(p)).collect()
}

/// One fixture by name, with or without the `.json` suffix.
pub fn load(name: &str) -> Result<Fixture, FixtureError> {
    let file = if name.ends_with(".json") { name.to_owned() } else { format!("{name}.json") };
    let path = fixtures_dir().join(file);
    if !path.exists() {
        return Err(FixtureError::NotFound(name.to_owned()));
    }
    load_file(&path)
}

/// Parse one fixture file; its name is the file stem.
pub fn load_file(path: &Path) -> Result<Fixture, FixtureError> {
    let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Io { path: path.to_owned(), source })?;
    let raw: RawFixture =
        serde_json::from_str(&text).map_err(|source| FixtureError::Parse { path: path.to_owned(), source })?;
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Fixture {
        name,
        source: raw.source,
        interaction_index: raw.interaction_index,
        request: raw.request,
        response: raw.response,
        notes: raw.notes,
    })
}

#[derive(Deserialize)]
struct RawFixture {
    source: String,
    #[serde(default)]
    interaction_index: u32,
    request: RecordedRequest,
    response: RecordedResponse,
    #[serde(default)]
    notes: Vec<String>,
}

/// One recorded request/response pair.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// File stem, e.g. `tmc-langchaingo__TestWithStreaming__0`.
    pub name: String,
    /// `owner/repo:path@commit` of the cassette it came from.
    pub source: String,
    pub interaction_index: u32,
    pub request: RecordedRequest,
    pub response: RecordedResponse,
    /// Conversion caveats (re-serialized bodies, Content-Length mismatches, ...).
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    /// Absolute URI as recorded (`http://localhost:11434/api/chat`, `<OLLAMA_API_BASE>/chat/completions`).
    pub uri: String,
    #[serde(default)]
    pub headers: Headers,
    #[serde(default)]
    pub body: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RecordedResponse {
    pub status: u16,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub headers: Headers,
    /// De-chunked body text.
    #[serde(default)]
    pub body: String,
}

impl Fixture {
    /// A call made up by a test or a benchmark: a JSON `POST` to `uri` (absolute, as recorded
    /// ones are) with `request_headers`, answered `200 OK` with `body` as `content_type`.
    pub fn made_up(
        name: String,
        source: &str,
        uri: String,
        request_headers: &[(&str, &str)],
        request_body: String,
        content_type: &str,
        body: String,
    ) -> Fixture {
        Fixture {
            name,
            source: source.to_owned(),
            interaction_index: 0,
            request: RecordedRequest {
                method: "POST".into(),
                uri,
                headers: Headers::from_pairs(request_headers),
                body: request_body,
            },
            response: RecordedResponse {
                status: 200,
                reason: "OK".into(),
                headers: Headers::from_pairs(&[("Content-Type", content_type)]),
                body,
            },
            notes: Vec::new(),
        }
    }

    /// Origin-form request target (`/api/chat`, `/v1/models?x=1`): what goes on the request line.
    pub fn request_target(&self) -> String {
        request_target(&self.request.uri)
    }

    /// Request path without the query string, e.g. `/v1/chat/completions`.
    pub fn path(&self) -> String {
        let target = self.request_target();
        match target.split_once('?') {
            Some((path, _)) => path.to_owned(),
            None => target,
        }
    }

    /// `host[:port]` the client addressed: the recorded `Host` header, else the URI authority.
    pub fn host(&self) -> String {
        if let Some(host) = self.request.headers.get("host") {
            return host.to_owned();
        }
        uri_authority(&self.request.uri).unwrap_or(OLLAMA_API_BASE_AUTHORITY).to_owned()
    }

    /// Recorded against Ollama Cloud rather than a local server.
    pub fn is_cloud(&self) -> bool {
        self.host().split(':').next().is_some_and(|h| h.eq_ignore_ascii_case("ollama.com"))
    }

    /// What the response body is, from its Content-Type and its bytes.
    pub fn response_body_kind(&self) -> BodyKind {
        detect_body_kind(self.response.headers.get("content-type"), self.response.body.as_bytes())
    }

    /// The response was a stream (NDJSON or SSE), whatever the request asked for.
    pub fn is_streamed(&self) -> bool {
        self.response_body_kind().is_streamed()
    }
}

/// Origin-form target of a recorded URI. `<OLLAMA_API_BASE>` expands to `/v1`.
pub fn request_target(uri: &str) -> String {
    if let Some(rest) = uri.strip_prefix(OLLAMA_API_BASE) {
        return format!("/v1{rest}");
    }
    if uri.starts_with('/') {
        return uri.to_owned();
    }
    let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    match after_scheme.find(['/', '?']) {
        Some(i) if after_scheme[i..].starts_with('/') => after_scheme[i..].to_owned(),
        Some(i) => format!("/{}", &after_scheme[i..]),
        None => "/".to_owned(),
    }
}

/// `host[:port]` of a recorded URI (`<OLLAMA_API_BASE>` → `localhost:11434`); `None` for origin-form.
pub fn uri_authority(uri: &str) -> Option<&str> {
    if uri.starts_with(OLLAMA_API_BASE) {
        return Some(OLLAMA_API_BASE_AUTHORITY);
    }
    let (_, rest) = uri.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Header block in recorded order; names keep their case, each name may carry several values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, Vec<String>)>);

impl Headers {
    /// One value per name, in the order given.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Headers {
        Headers(pairs.iter().map(|(k, v)| (k.to_string(), vec![v.to_string()])).collect())
    }

    /// First value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.first()).map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// `(name, value)` for every value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().flat_map(|(n, vs)| vs.iter().map(move |v| (n.as_str(), v.as_str())))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// serde_json's default map is sorted; header order matters for faithful rendering, so read the
// JSON object entry by entry.
impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeadersVisitor;

        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }

        impl<'de> Visitor<'de> for HeadersVisitor {
            type Value = Headers;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of header name to value list")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut out = Vec::new();
                while let Some((name, values)) = map.next_entry::<String, OneOrMany>()? {
                    let values = match values {
                        OneOrMany::One(v) => vec![v],
                        OneOrMany::Many(v) => v,
                    };
                    out.push((name, values));
                }
                Ok(Headers(out))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Headers, E> {
                Ok(Headers::default())
            }
        }

        deserializer.deserialize_any(HeadersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_every_fixture() {
        let all = load_all().expect("fixtures load");
        assert_eq!(all.len(), 259, "INDEX.md lists 259 fixtures");
        for f in &all {
            assert!(!f.request.method.is_empty(), "{}", f.name);
            assert!(f.request_target().starts_with('/'), "{}: {}", f.name, f.request_target());
            assert!((100..600).contains(&f.response.status), "{}", f.name);
        }
    }

    #[test]
    fn header_order_is_preserved() {
        let f = load("activeagents-activeagent__test_agent_streaming__0").unwrap();
        let names: Vec<_> = f.request.headers.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(&names[..3], ["Accept-Encoding", "Accept", "User-Agent"]);
        assert_eq!(f.request.headers.get("authorization"), Some("Bearer ollama"));
    }

    #[test]
    fn request_targets() {
        assert_eq!(request_target("<OLLAMA_API_BASE>/chat/completions"), "/v1/chat/completions");
        assert_eq!(request_target("http://localhost:11434/"), "/");
        assert_eq!(request_target("http://localhost:11434"), "/");
        assert_eq!(request_target("https://ollama.com/api/chat?ts=17"), "/api/chat?ts=17");
        assert_eq!(request_target("http://h:1?x=1"), "/?x=1");
        assert_eq!(request_target("/api/tags"), "/api/tags");
        assert_eq!(uri_authority("<OLLAMA_API_BASE>/models"), Some("localhost:11434"));
        assert_eq!(uri_authority("http://127.0.0.1:11434/api/chat"), Some("127.0.0.1:11434"));
    }

    #[test]
    fn ruby_llm_placeholder_resolves() {
        let all = load_all().unwrap();
        let f = all.iter().find(|f| f.request.uri.starts_with(OLLAMA_API_BASE)).unwrap();
        assert!(f.path().starts_with("/v1/"), "{}", f.path());
        assert_eq!(f.host(), "localhost:11434");
    }

    #[test]
    fn cloud_fixtures_are_flagged() {
        let all = load_all().unwrap();
        let cloud = all.iter().filter(|f| f.is_cloud()).count();
        // INDEX.md: 22 native + 16 openai-compat files from the Ollama Cloud host.
        assert_eq!(cloud, 38);
    }
}
