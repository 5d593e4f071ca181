//! Extra attribute names some backends need to render our spans well, behind an option.
//!
//! `--compat openinference`: Arize Phoenix's native schema. Phoenix already converts the GenAI
//! names (span kind from `gen_ai.operation.name`, model, tokens), but without `llm.provider` it
//! shows no provider and embeddings traces get no model pill; the mirrors fix that. MLflow reads
//! `openinference.span.kind` *before* the GenAI names, so with this option a chat span becomes
//! an LLM span there instead of CHAT_MODEL — hence opt-in.

use crate::span::semconv as sc;
use crate::span::{AttrValue, KeyValue, SpanRecord};

/// Adds the OpenInference mirrors of a GenAI span's attributes (other spans are left alone).
pub fn openinference(span: &mut SpanRecord) {
    let Some(AttrValue::Str(op)) = span.attr(sc::GEN_AI_OPERATION_NAME) else { return };
    let kind = match op.as_str() {
        "embeddings" => sc::OPENINFERENCE_KIND_EMBEDDING,
        "execute_tool" => sc::OPENINFERENCE_KIND_TOOL,
        _ => sc::OPENINFERENCE_KIND_LLM,
    };
    let int = |k: &str| match span.attr(k) {
        Some(AttrValue::Int(i)) => Some(*i),
        _ => None,
    };
    let string = |k: &str| match span.attr(k) {
        Some(AttrValue::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let mut add = vec![KeyValue::new(sc::OPENINFERENCE_SPAN_KIND, kind)];
    // Phoenix groups a conversation's traces by its session.
    if let Some(id) = string(sc::GEN_AI_CONVERSATION_ID) {
        add.push(KeyValue::new(sc::SESSION_ID, id));
    }
    if kind == sc::OPENINFERENCE_KIND_TOOL {
        if let Some(name) = string(sc::GEN_AI_TOOL_NAME) {
            add.push(KeyValue::new(sc::OPENINFERENCE_TOOL_NAME, name));
        }
        span.attributes.extend(add);
        return;
    }
    if let Some(provider) = string(sc::GEN_AI_PROVIDER_NAME) {
        add.push(KeyValue::new(sc::LLM_PROVIDER, provider.clone()));
        add.push(KeyValue::new(sc::LLM_SYSTEM, provider));
    }
    if let Some(model) = string(sc::GEN_AI_RESPONSE_MODEL).or_else(|| string(sc::GEN_AI_REQUEST_MODEL)) {
        let key = if kind == sc::OPENINFERENCE_KIND_EMBEDDING { sc::EMBEDDING_MODEL_NAME } else { sc::LLM_MODEL_NAME };
        add.push(KeyValue::new(key, model));
    }
    let (input, output) = (int(sc::GEN_AI_USAGE_INPUT_TOKENS), int(sc::GEN_AI_USAGE_OUTPUT_TOKENS));
    if let Some(i) = input {
        add.push(KeyValue::new(sc::LLM_TOKEN_COUNT_PROMPT, i));
    }
    if let Some(o) = output {
        add.push(KeyValue::new(sc::LLM_TOKEN_COUNT_COMPLETION, o));
    }
    if let (Some(i), Some(o)) = (input, output) {
        add.push(KeyValue::new(sc::LLM_TOKEN_COUNT_TOTAL, i + o));
    }
    if let Some(c) = int(sc::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS) {
        add.push(KeyValue::new(sc::LLM_TOKEN_COUNT_PROMPT_CACHE_READ, c));
    }
    // Request parameters as OpenInference's JSON object, keyed as the OpenAI API names them.
    let mut params = serde_json::Map::new();
    for (attr, name) in [
        (sc::GEN_AI_REQUEST_TEMPERATURE, "temperature"),
        (sc::GEN_AI_REQUEST_TOP_P, "top_p"),
        (sc::GEN_AI_REQUEST_TOP_K, "top_k"),
        (sc::GEN_AI_REQUEST_MAX_TOKENS, "max_tokens"),
        (sc::GEN_AI_REQUEST_SEED, "seed"),
        (sc::GEN_AI_REQUEST_STOP_SEQUENCES, "stop"),
        (sc::GEN_AI_REQUEST_FREQUENCY_PENALTY, "frequency_penalty"),
        (sc::GEN_AI_REQUEST_PRESENCE_PENALTY, "presence_penalty"),
        (sc::GEN_AI_REQUEST_STREAM, "stream"),
    ] {
        let v = match span.attr(attr) {
            Some(AttrValue::F64(f)) => serde_json::json!(f),
            Some(AttrValue::Int(i)) => serde_json::json!(i),
            Some(AttrValue::Bool(b)) => serde_json::json!(b),
            Some(AttrValue::Str(s)) => serde_json::json!(s),
            Some(AttrValue::StrArray(a)) => serde_json::json!(a),
            None => continue,
        };
        params.insert(name.to_string(), v);
    }
    if !params.is_empty() {
        add.push(KeyValue::new(sc::LLM_INVOCATION_PARAMETERS, serde_json::Value::Object(params).to_string()));
    }
    span.attributes.extend(add);
}
