//! What a request body asks for, read the way Ollama's decoders read it.
//!
//! Go's `encoding/json` matches keys case-insensitively (an exact match wins), ignores unknown
//! keys and trailing bytes; the Content-Type is never looked at (docs/ollama-wire.md §0).

use serde_json::Value;

use super::route::Route;

/// The parts of a request body the stand-in acts on.
#[derive(Clone, Debug, Default)]
pub struct ApiRequest {
    /// The decoded body (`None` when empty or not JSON).
    pub json: Option<Value>,
    /// Why decoding failed (Go-like message), for the 400 reply.
    pub decode_error: Option<String>,
    pub body_empty: bool,
    pub model: Option<String>,
    /// `stream` exactly as sent (`None`: absent or null).
    pub stream: Option<bool>,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// Names of the tools offered (`tools[].function.name`, or Anthropic/Responses `tools[].name`).
    pub tools: Vec<String>,
    /// Role of the last message (`tool` / `user` / …); Anthropic tool results count as `tool`.
    pub last_role: Option<String>,
    /// `messages` length, when there is a `messages` array.
    pub messages: Option<usize>,
    /// `prompt` (generate, completions, legacy embeddings).
    pub prompt: Option<String>,
    /// Thinking explicitly requested (`think` true/level, `reasoning_effort`, Anthropic `thinking`).
    pub think: bool,
    /// `keep_alive` is zero (`0`, `"0"`, `"0s"`): a load request becomes an unload.
    pub keep_alive_zero: bool,
    /// Embedding inputs (`input` string → 1, array → its length; legacy `prompt` → 1).
    pub inputs: Option<usize>,
    /// Characters of prompt-like text (for synthetic prompt token estimates).
    pub prompt_chars: usize,
    /// `max_tokens` / `num_predict` / `max_output_tokens`.
    pub max_tokens: Option<u64>,
    /// The prompt as the model reads it, part by part (system, then each message, or the
    /// prompt): a hash of each part and the characters up to its end — what a prompt cache
    /// matches on.
    pub prompt_parts: Vec<(u64, usize)>,
}

impl ApiRequest {
    pub fn parse(route: &Route, body: &[u8]) -> ApiRequest {
        let mut req = ApiRequest { body_empty: body.is_empty(), ..Default::default() };
        if body.is_empty() {
            return req;
        }
        // Go decodes the first value and ignores what follows it.
        let mut de = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
        let json = match de.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                req.decode_error = Some(go_decode_error(&e, body));
                return req;
            }
            None => {
                req.decode_error = Some("unexpected EOF".into());
                return req;
            }
        };
        req.model = get(&json, "model").or_else(|| get(&json, "name")).and_then(Value::as_str).map(str::to_owned);
        req.stream = get(&json, "stream").and_then(Value::as_bool);
        req.include_usage = get(&json, "stream_options")
            .and_then(|o| get(o, "include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if let Some(tools) = get(&json, "tools").and_then(Value::as_array) {
            req.tools = tools
                .iter()
                .filter_map(|t| {
                    get(t, "function")
                        .and_then(|f| get(f, "name"))
                        .or_else(|| get(t, "name"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect();
        }
        let messages = get(&json, "messages")
            .and_then(Value::as_array)
            .or_else(|| get(&json, "input").and_then(Value::as_array).filter(|_| *route == Route::V1Responses));
        let part = |req: &mut ApiRequest, v: &Value, chars: usize| {
            req.prompt_chars += chars;
            req.prompt_parts.push((hash(v), req.prompt_chars));
        };
        for key in ["system", "instructions"] {
            if let Some(v) = get(&json, key) {
                part(&mut req, v, text_chars(v));
            }
        }
        if let Some(msgs) = messages {
            req.messages = Some(msgs.len());
            req.last_role = msgs.last().map(last_role);
            for m in msgs {
                part(&mut req, m, text_chars(m));
            }
        }
        if let Some(p) = get(&json, "prompt").and_then(Value::as_str) {
            part(&mut req, &Value::String(p.to_owned()), p.chars().count());
            req.prompt = Some(p.to_owned());
        }
        req.think = match get(&json, "think") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => !s.is_empty(),
            _ => false,
        } || get(&json, "reasoning_effort").and_then(Value::as_str).is_some_and(|e| e != "none")
            || get(&json, "reasoning")
                .and_then(|r| get(r, "effort"))
                .and_then(Value::as_str)
                .is_some_and(|e| e != "none")
            || get(&json, "thinking")
                .and_then(|t| get(t, "type"))
                .and_then(Value::as_str)
                .is_some_and(|t| t == "enabled" || t == "adaptive");
        req.keep_alive_zero = match get(&json, "keep_alive") {
            Some(Value::Number(n)) => n.as_f64() == Some(0.0),
            Some(Value::String(s)) => matches!(s.as_str(), "0" | "0s" | "0m" | "0h"),
            _ => false,
        };
        match route {
            Route::Embed | Route::V1Embeddings => match get(&json, "input") {
                Some(Value::String(s)) => {
                    req.prompt_chars += s.chars().count();
                    req.inputs = Some(usize::from(!s.is_empty() || *route == Route::V1Embeddings));
                }
                Some(Value::Array(a)) => {
                    req.prompt_chars += a.iter().map(text_chars).sum::<usize>();
                    req.inputs = Some(a.len());
                }
                _ => req.inputs = Some(0),
            },
            Route::Embeddings => {
                req.inputs = Some(usize::from(req.prompt.as_deref().is_some_and(|p| !p.is_empty())));
            }
            _ => {}
        }
        req.max_tokens = ["max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| get(&json, k).and_then(Value::as_u64))
            .or_else(|| get(&json, "options").and_then(|o| get(o, "num_predict")).and_then(Value::as_u64));
        req.json = Some(json);
        req
    }

    /// The stream flag Ollama acts on: explicit value, else the route's default.
    pub fn effective_stream(&self, route: &Route) -> bool {
        self.stream.unwrap_or(route.streams_by_default())
    }

    /// The last message hands a tool result back (second turn of a tool call).
    pub fn ends_with_tool_result(&self) -> bool {
        self.last_role.as_deref() == Some("tool")
    }

    /// Synthetic prompt token count: ~4 characters per token plus template overhead.
    pub fn prompt_tokens_estimate(&self) -> u64 {
        (self.prompt_chars as u64).div_ceil(4) + 10
    }
}

fn hash(v: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    h.finish()
}

/// `key` in a JSON object, Go style: exact match first, else a case-insensitive one.
pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(key)
        .or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
        .filter(|v| !v.is_null())
}

fn last_role(msg: &Value) -> String {
    // Anthropic: a user message whose content blocks are tool_result; Responses: an item of
    // type function_call_output.
    let blocks_are_results = get(msg, "content")
        .and_then(Value::as_array)
        .is_some_and(|b| b.iter().any(|b| get(b, "type").and_then(Value::as_str) == Some("tool_result")));
    let item_is_output = get(msg, "type").and_then(Value::as_str) == Some("function_call_output");
    if blocks_are_results || item_is_output {
        return "tool".into();
    }
    get(msg, "role").and_then(Value::as_str).map(str::to_ascii_lowercase).unwrap_or_default()
}

/// Characters of text anywhere in a message-like value.
fn text_chars(v: &Value) -> usize {
    match v {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.iter().map(text_chars).sum(),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "content" | "text" | "input" | "output"))
            .map(|(_, v)| text_chars(v))
            .sum(),
        _ => 0,
    }
}

/// A message in the style of Go's json decoder errors.
fn go_decode_error(e: &serde_json::Error, body: &[u8]) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => "unexpected EOF".into(),
        _ => {
            // Go: "invalid character 'x' looking for beginning of value".
            let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied().unwrap_or(b' ');
            if matches!(first, b'{' | b'[' | b'"') || first.is_ascii_digit() {
                format!("invalid character in JSON: {e}")
            } else {
                format!("invalid character '{}' looking for beginning of value", first as char)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_go() {
        let r = ApiRequest::parse(
            &Route::Chat,
            br#"{"MODEL":"m","messages":[{"role":"user","content":"hi"},{"role":"TOOL","content":"x"}],"tools":[{"type":"function","function":{"name":"get_weather"}}],"keep_alive":0} trailing"#,
        );
        assert_eq!(r.model.as_deref(), Some("m"));
        assert_eq!(r.stream, None);
        assert!(r.effective_stream(&Route::Chat));
        assert_eq!(r.tools, ["get_weather"]);
        assert!(r.ends_with_tool_result());
        assert!(r.keep_alive_zero);
        let r = ApiRequest::parse(
            &Route::V1Chat,
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
        );
        assert!(r.include_usage && r.effective_stream(&Route::V1Chat));
        assert_eq!(r.messages, Some(0));
        assert!(!ApiRequest::parse(&Route::V1Chat, br#"{"model":"m"}"#).effective_stream(&Route::V1Chat));
        let r = ApiRequest::parse(&Route::Embed, br#"{"model":"m","input":["a","b"]}"#);
        assert_eq!(r.inputs, Some(2));
        let r = ApiRequest::parse(&Route::Chat, b"x");
        assert_eq!(r.decode_error.as_deref(), Some("invalid character 'x' looking for beginning of value"));
    }
}
