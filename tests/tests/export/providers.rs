//! Other local servers that speak Ollama's `/v1` wire: `--port PORT=PROVIDER` makes the calls
//! on their ports theirs (`gen_ai.provider.name`, their routes, `http.route` as they serve it),
//! decoded as the same `/v1` dialects. Traffic shaped like each server's documented responses
//! (vLLM's OpenAI server, llama.cpp's llama-server with its `timings`, LM Studio with its
//! `stats`, the LiteLLM proxy on its unprefixed routes), beside Ollama on its own port.

use std::net::SocketAddr;

use serde_json::Value;
use testkit::fixtures::Fixture;
use testkit::output::*;
use testkit::pcap::{FileFormat, LinkType, TsPrecision, WriterConfig, write_file};
use testkit::synth::{ConnectionSpec, synthesize};
use testkit::wire::{RenderOptions, render};

struct Call {
    port: u16,
    path: &'static str,
    request: String,
    content_type: &'static str,
    response: String,
}

fn chat_request(model: &str, stream: bool) -> String {
    let usage = if stream { r#","stream_options":{"include_usage":true}"# } else { "" };
    format!(r#"{{"model":"{model}","stream":{stream}{usage},"messages":[{{"role":"user","content":"Say hello."}}]}}"#)
}

fn sse(events: &[String]) -> String {
    events.iter().map(|e| format!("data: {e}\n\n")).collect::<String>() + "data: [DONE]\n\n"
}

fn calls() -> Vec<Call> {
    let vllm_model = "Qwen/Qwen2.5-1.5B-Instruct";
    let vllm_chunk = |delta: &str, finish: &str| {
        format!(
            r#"{{"id":"chatcmpl-9a1b","object":"chat.completion.chunk","created":1767225600,"model":"{vllm_model}","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]}}"#
        )
    };
    vec![
        // vLLM, not streamed: `prompt_tokens_details` (with --enable-prompt-tokens-details).
        Call {
            port: 8000,
            path: "/v1/chat/completions",
            request: chat_request(vllm_model, false),
            content_type: "application/json",
            response: format!(
                r#"{{"id":"chatcmpl-7f3e","object":"chat.completion","created":1767225600,"model":"{vllm_model}","choices":[{{"index":0,"message":{{"role":"assistant","reasoning_content":null,"content":"Hello! How can I help?","tool_calls":[]}},"logprobs":null,"finish_reason":"stop","stop_reason":null}}],"usage":{{"prompt_tokens":19,"total_tokens":27,"completion_tokens":8,"prompt_tokens_details":{{"cached_tokens":16}}}},"prompt_logprobs":null,"kv_transfer_params":null}}"#
            ),
        },
        // vLLM, streamed with include_usage: the usage chunk has no choices.
        Call {
            port: 8000,
            path: "/v1/chat/completions",
            request: chat_request(vllm_model, true),
            content_type: "text/event-stream; charset=utf-8",
            response: sse(&[
                vllm_chunk(r#"{"role":"assistant","content":""}"#, "null"),
                vllm_chunk(r#"{"content":"Hello"}"#, "null"),
                vllm_chunk(r#"{"content":"!"}"#, "null"),
                vllm_chunk(r#"{"content":""}"#, r#""stop""#),
                format!(
                    r#"{{"id":"chatcmpl-9a1b","object":"chat.completion.chunk","created":1767225600,"model":"{vllm_model}","choices":[],"usage":{{"prompt_tokens":19,"total_tokens":22,"completion_tokens":3}}}}"#
                ),
            ]),
        },
        // llama-server on its unprefixed alias, with its `timings` (cache_n) and usage.
        Call {
            port: 8080,
            path: "/chat/completions",
            request: chat_request("gpt-3.5-turbo", false),
            content_type: "application/json; charset=utf-8",
            response: r#"{"choices":[{"finish_reason":"stop","index":0,"message":{"role":"assistant","content":"Hello there!"}}],"created":1767225600,"model":"gpt-3.5-turbo","system_fingerprint":"b6002-1f2e3d4c","object":"chat.completion","usage":{"completion_tokens":4,"prompt_tokens":21,"total_tokens":25,"prompt_tokens_details":{"cached_tokens":12}},"id":"chatcmpl-Ql9x","timings":{"cache_n":12,"prompt_n":9,"prompt_ms":30.1,"prompt_per_token_ms":3.34,"prompt_per_second":299.0,"predicted_n":4,"predicted_ms":52.5,"predicted_per_token_ms":13.1,"predicted_per_second":76.2}}"#.into(),
        },
        // LM Studio: `stats` and a fingerprint; embeddings too.
        Call {
            port: 1234,
            path: "/v1/chat/completions",
            request: chat_request("qwen2.5-7b-instruct", false),
            content_type: "application/json; charset=utf-8",
            response: r#"{"id":"chatcmpl-x7k2","object":"chat.completion","created":1767225600,"model":"qwen2.5-7b-instruct","choices":[{"index":0,"logprobs":null,"finish_reason":"stop","message":{"role":"assistant","content":"Hi!"}}],"usage":{"prompt_tokens":14,"completion_tokens":2,"total_tokens":16},"stats":{},"system_fingerprint":"qwen2.5-7b-instruct"}"#.into(),
        },
        Call {
            port: 1234,
            path: "/v1/embeddings",
            request: r#"{"model":"text-embedding-nomic-embed-text-v1.5","input":["a","b"]}"#.into(),
            content_type: "application/json; charset=utf-8",
            response: r#"{"object":"list","data":[{"object":"embedding","embedding":[0.1,0.2],"index":0},{"object":"embedding","embedding":[0.3,0.4],"index":1}],"model":"text-embedding-nomic-embed-text-v1.5","usage":{"prompt_tokens":4,"total_tokens":4}}"#.into(),
        },
        // The LiteLLM proxy, as its documented clients call it (base URL without /v1): a
        // reported 0 of cached tokens is no cache read.
        Call {
            port: 4000,
            path: "/chat/completions",
            request: chat_request("ollama/llama3.2", false),
            content_type: "application/json",
            response: r#"{"id":"chatcmpl-5c6d","created":1767225600,"model":"ollama/llama3.2","object":"chat.completion","system_fingerprint":null,"choices":[{"finish_reason":"stop","index":0,"message":{"content":"Hello","role":"assistant","tool_calls":null,"function_call":null}}],"usage":{"completion_tokens":5,"prompt_tokens":30,"total_tokens":35,"completion_tokens_details":null,"prompt_tokens_details":{"audio_tokens":null,"cached_tokens":0}}}"#.into(),
        },
        // Ollama's native route on vLLM's port is not an Ollama call there.
        Call {
            port: 8000,
            path: "/api/chat",
            request: chat_request("llama3.2", false),
            content_type: "application/json",
            response: r#"{"detail":"Not Found"}"#.into(),
        },
        // And Ollama on its own port stays Ollama.
        Call {
            port: 11434,
            path: "/v1/chat/completions",
            request: chat_request("llama3.2", false),
            content_type: "application/json",
            response: r#"{"id":"chatcmpl-417","object":"chat.completion","created":1767225600,"model":"llama3.2","system_fingerprint":"fp_ollama","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":26,"completion_tokens":3,"total_tokens":29}}"#.into(),
        },
    ]
}

/// (provider, span name, route, input, output, cache read) of a call's span.
type Expect = (Option<&'static str>, &'static str, &'static str, Option<i64>, Option<i64>, Option<i64>);

#[test]
fn other_servers_on_their_ports_are_their_own_providers() {
    let calls = calls();
    let specs: Vec<ConnectionSpec> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let f = Fixture::made_up(
                format!("provider-{i}"),
                "providers test",
                format!("http://127.0.0.1:{}{}", c.port, c.path),
                &[("Content-Type", "application/json"), ("User-Agent", "OpenAI/Python 2.11.0")],
                c.request.clone(),
                c.content_type,
                c.response.clone(),
            );
            let client: SocketAddr = format!("127.0.0.1:{}", 30_000 + i).parse().unwrap();
            let server: SocketAddr = format!("127.0.0.1:{}", c.port).parse().unwrap();
            ConnectionSpec::new(client, server)
                .seed(i as u64)
                .start_at(1_767_225_600_000_000_000 + i as u64 * 1_000_000_000)
                .exchange(render(&f, &RenderOptions::default()))
        })
        .collect();
    let capture = synthesize(&specs).unwrap();
    let dir = std::env::temp_dir().join(format!("ollama-tracer-providers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("providers.pcap");
    write_file(&path, WriterConfig::new(FileFormat::Pcap, TsPrecision::Nano, LinkType::LinuxSll2), &capture.packets)
        .unwrap();
    let r = run(bin()
        .args(["replay", "--output", "json", "--port", "8000=vllm", "--port", "8080=llama.cpp"])
        .args(["--port", "1234=lmstudio", "--port", "4000=LiteLLM", "--port", "11434"])
        .arg(&path));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(r.out.status.success(), "{}", r.stderr);
    let mut spans = call_spans(&json_spans(&r.stdout));
    spans.sort_by_key(|s| s["start_time_unix_nano"].as_u64());
    assert_eq!(spans.len(), calls.len(), "{}", r.stderr);
    let attr = |s: &Value, k: &str| s["attributes"][k].clone();
    let want: [Expect; 8] = [
        (Some("vllm"), "chat Qwen/Qwen2.5-1.5B-Instruct", "/v1/chat/completions", Some(19), Some(8), Some(16)),
        (Some("vllm"), "chat Qwen/Qwen2.5-1.5B-Instruct", "/v1/chat/completions", Some(19), Some(3), None),
        (Some("llama_cpp"), "chat gpt-3.5-turbo", "/chat/completions", Some(21), Some(4), Some(12)),
        (Some("lm_studio"), "chat qwen2.5-7b-instruct", "/v1/chat/completions", Some(14), Some(2), None),
        (Some("lm_studio"), "embeddings text-embedding-nomic-embed-text-v1.5", "/v1/embeddings", Some(4), None, None),
        (Some("litellm"), "chat ollama/llama3.2", "/chat/completions", Some(30), Some(5), None),
        (None, "POST", "", None, None, None),
        (Some("ollama"), "chat llama3.2", "/v1/chat/completions", Some(26), Some(3), None),
    ];
    for (s, (provider, name, route, input, output, cached)) in spans.iter().zip(want) {
        let what = format!("{} {}", s["name"], attr(s, "url.path"));
        assert_eq!(attr(s, "gen_ai.provider.name").as_str(), provider, "{what}");
        assert_eq!(s["name"].as_str(), Some(name), "{what}");
        assert_eq!(attr(s, "http.route").as_str().unwrap_or(""), route, "{what}");
        assert_eq!(attr(s, "gen_ai.usage.input_tokens").as_i64(), input, "{what}");
        assert_eq!(attr(s, "gen_ai.usage.output_tokens").as_i64(), output, "{what}");
        assert_eq!(attr(s, "gen_ai.usage.cache_read.input_tokens").as_i64(), cached, "{what}");
        if provider.is_some() {
            assert!(s["status"]["code"] != "error", "{what}: {s}");
            assert_eq!(
                attr(s, "gen_ai.response.finish_reasons").as_array().map(|a| a.len()),
                (output.is_some()).then_some(1),
                "{what}"
            );
        } else {
            // Not a GenAI call on that server: a plain HTTP span, no gen_ai.*.
            assert!(s["attributes"].as_object().unwrap().keys().all(|k| !k.starts_with("gen_ai.")), "{what}: {s}");
        }
    }
}

#[test]
fn a_port_names_a_known_provider() {
    for bad in ["8000=tgi", "0", "x=vllm", "70000"] {
        let out = bin().args(["replay", "--port", bad]).arg(real_capture()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--port {bad} accepted");
        assert!(stderr.contains("--port"), "{bad}: {stderr}");
    }
}
