//! The recorded fixtures, indexed by what they can answer, and the pick of a fitting one.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::api::{ApiRequest, get};
use super::route::{Route, Routed, route};
use crate::fixtures::{Fixture, FixtureError};
use crate::wire::{BodyKind, split_body, sse_data};

/// What a fixture's exchange shows, computed once at start-up.
#[derive(Clone, Debug)]
pub struct Entry {
    pub fixture: Arc<Fixture>,
    pub path: String,
    pub kind: BodyKind,
    /// Tools offered in the request (names).
    pub tools_offered: bool,
    pub offered: Vec<String>,
    /// The request's last message is a tool result.
    pub tool_result: bool,
    /// Tool call names in the response.
    pub tool_calls: Vec<String>,
    pub thinking: bool,
    /// An SSE usage chunk (`choices: []` with `usage`) is present.
    pub usage_chunk: bool,
    /// Streams end with their terminator (`done:true` / `[DONE]`).
    pub complete: bool,
    /// Vectors in an embeddings response.
    pub embeddings: Option<usize>,
    pub cloud: bool,
    /// The body is the server's bytes (not re-serialized or pretty-printed by the recorder).
    pub faithful: bool,
}

impl Entry {
    pub fn name(&self) -> &str {
        &self.fixture.name
    }

    fn new(fixture: Fixture) -> Entry {
        let path = fixture.path();
        let kind = fixture.response_body_kind();
        let api_route = match route(&fixture.request.method.to_ascii_uppercase(), &path) {
            Routed::Found(r) => r,
            _ => Route::Root,
        };
        let req = ApiRequest::parse(&api_route, fixture.request.body.as_bytes());
        let body = fixture.response.body.as_bytes();
        let mut tool_calls = Vec::new();
        let mut thinking = false;
        let mut usage_chunk = false;
        let mut complete = !kind.is_streamed();
        let mut embeddings = None;
        for unit in split_body(kind, body) {
            let payload = match kind {
                BodyKind::Sse => sse_data(unit).unwrap_or_default(),
                _ => unit.to_vec(),
            };
            if payload == b"[DONE]" {
                complete = true;
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(&payload) else {
                continue;
            };
            if get(&v, "done").and_then(Value::as_bool) == Some(true) {
                complete = true;
            }
            let choice = get(&v, "choices").and_then(Value::as_array).and_then(|c| c.first());
            let message =
                get(&v, "message").or_else(|| choice.and_then(|c| get(c, "message").or_else(|| get(c, "delta"))));
            if let Some(m) = message {
                for key in ["thinking", "reasoning", "reasoning_content"] {
                    if get(m, key).and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
                        thinking = true;
                    }
                }
                if let Some(calls) = get(m, "tool_calls").and_then(Value::as_array) {
                    tool_calls.extend(calls.iter().filter_map(|c| {
                        get(c, "function").and_then(|f| get(f, "name")).and_then(Value::as_str).map(str::to_owned)
                    }));
                }
            }
            if get(&v, "thinking").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
                thinking = true;
            }
            if kind == BodyKind::Sse
                && get(&v, "usage").is_some()
                && get(&v, "choices").and_then(Value::as_array).is_some_and(Vec::is_empty)
            {
                usage_chunk = true;
            }
            if let Some(e) = get(&v, "embeddings").or_else(|| get(&v, "data")).and_then(Value::as_array) {
                embeddings = Some(e.len());
            }
        }
        let reformatted = kind == BodyKind::Json && body.windows(2).any(|w| w == b"\n ");
        let faithful =
            !reformatted && !fixture.notes.iter().any(|n| n.contains("re-serialized") || n.contains("Content-Length"));
        Entry {
            path,
            kind,
            tools_offered: !req.tools.is_empty(),
            offered: req.tools.clone(),
            tool_result: req.ends_with_tool_result(),
            tool_calls,
            thinking,
            usage_chunk,
            complete,
            embeddings,
            cloud: fixture.is_cloud(),
            faithful,
            fixture: Arc::new(fixture),
        }
    }
}

/// What a request needs from a fixture. `None` fields do not constrain.
#[derive(Clone, Debug, Default)]
pub struct Want {
    pub path: String,
    pub stream: bool,
    /// OpenAI streams: the usage chunk must be there iff the client asked for it.
    pub usage_chunk: Option<bool>,
    /// A tool call in the response (true), or none (false).
    pub tool_calls: Option<bool>,
    /// Thinking in the response (true), or none (false).
    pub thinking: Option<bool>,
    /// Preferences, not requirements.
    pub prefer_tool_result: bool,
    pub prefer_tools_offered: bool,
    pub prefer_no_thinking: bool,
    pub offered_tools: Vec<String>,
    pub embeddings: Option<usize>,
}

/// Every fixture, indexed.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

impl Catalog {
    pub fn load() -> Result<Catalog, FixtureError> {
        Ok(Catalog::from_fixtures(crate::fixtures::load_all()?))
    }

    pub fn from_fixtures(fixtures: Vec<Fixture>) -> Catalog {
        let entries: Vec<Entry> = fixtures.into_iter().map(Entry::new).collect();
        let by_name = entries.iter().enumerate().map(|(i, e)| (e.name().to_owned(), i)).collect();
        Catalog { entries, by_name }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The best fixture for `want`: every requirement met, then the most preferences, then local
    /// over cloud, then the smallest body (small captures), then the name (deterministic).
    pub fn pick(&self, want: &Want) -> Option<&Entry> {
        self.entries.iter().filter(|e| fits(e, want)).max_by(|a, b| {
            score(a, want)
                .cmp(&score(b, want))
                .then(b.fixture.response.body.len().cmp(&a.fixture.response.body.len()))
                .then(b.name().cmp(a.name()))
        })
    }
}

fn fits(e: &Entry, want: &Want) -> bool {
    e.path == want.path
        && e.fixture.response.status == 200
        && e.faithful
        && e.complete
        && e.kind.is_streamed() == want.stream
        && want.usage_chunk.is_none_or(|u| u == e.usage_chunk)
        && want.tool_calls.is_none_or(|t| t != e.tool_calls.is_empty())
        && want.thinking.is_none_or(|t| t == e.thinking)
        && want.embeddings.is_none_or(|n| e.embeddings == Some(n))
}

fn score(e: &Entry, want: &Want) -> u32 {
    let mut s = 0;
    if want.prefer_tool_result == e.tool_result {
        s += 8;
    }
    if want.prefer_no_thinking && !e.thinking {
        s += 4;
    }
    if want.prefer_tools_offered == e.tools_offered {
        s += 2;
    }
    if !e.tool_calls.is_empty() && e.tool_calls.iter().all(|n| want.offered_tools.contains(n)) {
        s += 2;
    }
    if e.offered.iter().any(|n| want.offered_tools.contains(n)) {
        s += 2;
    }
    if !e.cloud {
        s += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_fitting_fixtures() {
        let cat = Catalog::load().unwrap();
        assert_eq!(cat.len(), 259);
        let stream_chat = cat
            .pick(&Want {
                path: "/api/chat".into(),
                stream: true,
                tool_calls: Some(false),
                prefer_no_thinking: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(stream_chat.kind, BodyKind::Ndjson);
        assert!(!stream_chat.thinking);
        let tools = cat
            .pick(&Want {
                path: "/api/chat".into(),
                stream: false,
                tool_calls: Some(true),
                prefer_tools_offered: true,
                ..Default::default()
            })
            .unwrap();
        assert!(!tools.tool_calls.is_empty());
        for usage in [true, false] {
            let e = cat
                .pick(&Want {
                    path: "/v1/chat/completions".into(),
                    stream: true,
                    usage_chunk: Some(usage),
                    tool_calls: Some(false),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(e.usage_chunk, usage, "{}", e.name());
        }
        let think = cat
            .pick(&Want { path: "/api/chat".into(), stream: true, thinking: Some(true), ..Default::default() })
            .map(|e| e.name().to_owned());
        assert!(think.is_some());
        assert!(cat.pick(&Want { path: "/v1/messages".into(), stream: true, ..Default::default() }).is_none());
    }
}
