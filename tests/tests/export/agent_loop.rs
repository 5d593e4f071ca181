//! A two-turn tool loop run by an OpenTelemetry-instrumented agent with the real `ollama` and
//! `openai` Python clients (tests/clients/agent_loop.py), against the stand-in, through the
//! recording tap: the tracer's spans join the agent's traces as children of its client spans,
//! both turns share a conversation id, and the tool's execution becomes its own span.

use std::process::Command;

use serde_json::Value;

use ollama_tracer::export::stdout::write_json;
use testkit::process::{StandInProcess, client_script, venv_python};
use testkit::tap::Tap;
use tracer_core::llm::LlmConfig;
use tracer_core::llm::content::ContentConfig;
use tracer_core::pipeline::PipelineConfig;
use tracer_core::span::{AttrValue, Resource, SpanConfig, SpanKind, SpanRecord, hex, semconv as sc};

const TOOL_MS: u64 = 60;

#[test]
fn tool_loop_through_real_clients_joins_the_agents_trace() {
    let Some(python) = venv_python("tool_loop_through_real_clients_joins_the_agents_trace") else { return };
    let standin = StandInProcess::start(env!("CARGO_BIN_EXE_ollama-standin").as_ref(), &[]).expect("stand-in");
    let tap = Tap::start(standin.addr).expect("tap");
    let out = Command::new(python)
        .arg(client_script("agent_loop.py"))
        .args(["--base-url", &tap.url(), "--tool-ms", &TOOL_MS.to_string()])
        .output()
        .expect("run agent_loop.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "agent_loop.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let client: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let truth = standin.truth(4);
    assert_eq!(truth.len(), 4);
    // Let the tap see the last bytes and FINs.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let packets = tap.packets();

    let content = ContentConfig::capturing(4096, true, &[]).unwrap();
    let spans = testkit::drive::all_spans(
        &packets,
        PipelineConfig { llm: LlmConfig { capture_content: true, ..LlmConfig::default() }, ..Default::default() },
        SpanConfig { id_seed: Some(5), content: Some(content), ..Default::default() },
    );
    assert_eq!(spans.len(), 4, "one call per model request");
    let mut calls = spans.clone();
    calls.sort_by_key(|(c, _)| c.times.request_start);

    // Nothing secret anywhere in what we would export, even with content capture on.
    let resource = Resource::new("ollama", None, Vec::new());
    let mut json = Vec::new();
    for (_, ss) in &spans {
        for s in ss {
            write_json(&mut json, s, &resource).unwrap();
        }
    }
    let json = String::from_utf8(json).unwrap();
    assert!(!json.contains("sk-test-secret-key"), "the API key leaked");
    assert!(!json.to_ascii_lowercase().contains("authorization"));

    let by_name = |trace: &str, name: &str| -> Vec<&Value> {
        client.iter().filter(|s| s["trace_id"] == trace && s["name"] == name).collect()
    };
    let agents: Vec<&Value> = client.iter().filter(|s| s["name"] == "agent").collect();
    assert_eq!(agents.len(), 2);
    let mut conversations = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        let trace = agent["trace_id"].as_str().unwrap();
        let what = agent["test.client"].as_str().unwrap();
        let turns = [by_name(trace, "llm turn 1")[0], by_name(trace, "llm turn 2")[0]];
        let tool = by_name(trace, "tool weather")[0];
        let (ours, ours_all): (Vec<_>, Vec<_>) =
            (vec![&calls[2 * i].1[0], &calls[2 * i + 1].1[0]], vec![&calls[2 * i].1, &calls[2 * i + 1].1]);
        for (n, (turn, span)) in turns.iter().zip(&ours).enumerate() {
            let call = &calls[2 * i + n].0;
            let t = &truth[2 * i + n];
            assert_eq!(call.traceparent.as_deref(), turn["test.traceparent"].as_str(), "{what} turn {}", n + 1);
            assert_eq!(hex(&span.trace_id), trace, "{what} turn {}: joins the agent's trace", n + 1);
            assert_eq!(
                span.parent_span_id.map(|p| hex(&p)).as_deref(),
                turn["span_id"].as_str(),
                "{what} turn {}: child of the client span",
                n + 1
            );
            assert_eq!(span.kind, SpanKind::Server);
            assert_eq!(span.flags & 1, 1, "sampled, as the parent said");
            assert!(t["input_tokens"].as_i64().is_some() && t["output_tokens"].as_i64().is_some());
            assert_eq!(
                span.attr_int(sc::GEN_AI_USAGE_INPUT_TOKENS),
                t["input_tokens"].as_i64(),
                "{what} turn {}",
                n + 1
            );
            assert_eq!(
                span.attr_int(sc::GEN_AI_USAGE_OUTPUT_TOKENS),
                t["output_tokens"].as_i64(),
                "{what} turn {}",
                n + 1
            );
            // Inside the client's span (the tap stamps bytes as they cross it).
            let (cs, ce) = (turn["start_ns"].as_u64().unwrap(), turn["end_ns"].as_u64().unwrap());
            assert!(span.start.0 >= cs && span.end.0 <= ce, "{what} turn {}: span inside the client span", n + 1);
        }
        // Turn 1 asked for the tool; turn 2 carried its result.
        assert!((ours[0]).attr_str(sc::GEN_AI_OUTPUT_MESSAGES).is_some_and(|m| m.contains("\"tool_call\"")));
        assert!((ours[1]).attr_str(sc::GEN_AI_INPUT_MESSAGES).is_some_and(|m| m.contains("Berlin: 15°C")));
        // One conversation, inferred: the tracer's own attribute, never gen_ai.conversation.id
        // (a hash of request content), and turn 2 links to turn 1, naming the tool call.
        let conv = (ours[0]).attr_str(sc::TRACER_CONVERSATION_ID).expect("conversation id").to_owned();
        assert_eq!((ours[1]).attr_str(sc::TRACER_CONVERSATION_ID), Some(conv.as_str()), "{what}: one conversation");
        assert!(ours.iter().all(|s| s.attr(sc::GEN_AI_CONVERSATION_ID).is_none()), "{what}: no gen_ai.conversation.id");
        assert!(ours[0].links.is_empty(), "{what}: turn 1 links nowhere");
        assert_eq!(ours[1].links.len(), 1, "{what}: turn 2 links to turn 1");
        let link = &ours[1].links[0];
        assert_eq!((link.trace_id, link.span_id), (ours[0].trace_id, ours[0].span_id), "{what}: the link's ids");
        let link_attr = |k: &str| link.attributes.iter().find(|a| a.key == k).map(|a| a.value.clone());
        assert_eq!(link_attr(sc::TRACER_LINK_TYPE), Some(AttrValue::Str(sc::LINK_PREVIOUS_TURN.into())));
        let tool_call_id = ours_all[1]
            .iter()
            .find(|s| s.name.starts_with("execute_tool"))
            .and_then(|s| s.attr(sc::GEN_AI_TOOL_CALL_ID).cloned());
        assert_eq!(link_attr(sc::GEN_AI_TOOL_CALL_ID), tool_call_id, "{what}: names the tool call (when it has an id)");
        conversations.push(conv);

        // The tool span: reported with turn 2, a child of turn 1's call span, covering the
        // client's tool span.
        assert!(ours_all[0].iter().all(|s| !s.name.starts_with("execute_tool")));
        let tools: Vec<&SpanRecord> = ours_all[1].iter().filter(|s| s.name == "execute_tool weather").collect();
        assert_eq!(tools.len(), 1, "{what}: one tool span");
        let ts = tools[0];
        assert_eq!(ts.trace_id, ours[0].trace_id);
        assert_eq!(ts.parent_span_id, Some(ours[0].span_id), "{what}: child of the call that asked for it");
        assert_eq!(ts.kind, SpanKind::Internal);
        assert_eq!(ts.attr_str(sc::GEN_AI_OPERATION_NAME), Some("execute_tool"));
        assert_eq!(ts.attr_str(sc::GEN_AI_TOOL_NAME), Some("weather"));
        assert_eq!(ts.attr_str(sc::TRACER_CONVERSATION_ID), (ours[0]).attr_str(sc::TRACER_CONVERSATION_ID));
        assert_eq!(ts.start, ours[0].end, "{what}: the tool starts when the answer asking for it ended");
        assert_eq!(ts.end, ours[1].start, "{what}: and ends when the request with its result started");
        let (tool_start, tool_end) = (tool["start_ns"].as_u64().unwrap(), tool["end_ns"].as_u64().unwrap());
        assert!(ts.start.0 <= tool_start && ts.end.0 >= tool_end, "{what}: covers the client's tool run");
        assert!(ts.end.0 - ts.start.0 >= TOOL_MS * 1_000_000);
        eprintln!(
            "{what}: tool span {} ms, client tool {} ms, conversation {conv}",
            (ts.end.0 - ts.start.0) / 1_000_000,
            (tool_end - tool_start) / 1_000_000,
            conv = conversations[i]
        );
        if let Some(ids) = turns[0]["test.tool_call_ids"].as_array() {
            assert_eq!(ts.attr_str(sc::GEN_AI_TOOL_CALL_ID), ids[0].as_str(), "{what}: the call id");
        }
        assert_eq!(ts.attr_str(sc::GEN_AI_TOOL_CALL_RESULT), Some("Berlin: 15°C, light wind"));
    }
    assert_ne!(conversations[0], conversations[1], "two agents, two conversations");
}
