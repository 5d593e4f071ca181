//! Conversations and agent loops, seen passively.
//!
//! **Heuristic.** Every turn of a chat conversation resends the messages before it: the request
//! of turn N+1 starts with the messages of turn N's request (then the assistant's answer, then
//! the new user message or tool results). Each request is fingerprinted after every message;
//! a call from the same client host whose request extends an earlier request (one of its
//! shorter prefixes equals that whole request) continues that request's conversation: it
//! shares its inferred id (`ollama_tracer.conversation.id`) and links to the previous turn's
//! span. A request that extends none starts a conversation, whose id is derived from the
//! client, the request and its start time — so the same prompt sent twice is two
//! conversations. Being a hash of request content, the inferred id is never
//! `gen_ai.conversation.id` unless the user asks for it: the conventions reserve that for an
//! identifier the application has ([`ResponseChains`], the client's conversation header).
//!
//! When a response asks for tool calls and the next request of the conversation carries the
//! tools' results (after its last assistant message), the tool ran in between: an
//! `execute_tool {name}` span covers that gap, from the end of the response that asked for it to
//! the start of the request that reports it, as a child of the call that asked.
//!
//! **Limits.** A client that trims or rewrites its history (sliding windows, summaries) starts a
//! new conversation at the rewrite; the first turn seen after the tracer starts begins one.
//! Two conversations with identical histories from the same host join the most recent (or the
//! one whose tool calls the request answers, by call id). Tool results are matched by call id,
//! else by tool name, else in order. The gap includes the
//! client's own time around the tool. State is bounded: requests idle for an hour, or beyond the
//! most recent 10 000, are forgotten.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use ahash::AHashMap;

use crate::llm::LlmCall;
use crate::llm::call::ToolCall;
use crate::segment::Timestamp;

const MAX_CONVERSATIONS: usize = 10_000;
const IDLE_NS: u64 = 3600 * 1_000_000_000;

/// Where a span sits, to hang children on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanRef {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

/// A tool execution inferred between two calls of a conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolExecution {
    pub name: String,
    pub call_id: Option<String>,
    pub arguments: Option<String>,
    pub result: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
    /// The call whose response asked for the tool.
    pub parent: SpanRef,
}

/// The latest request of a conversation, keyed by its fingerprint.
#[derive(Debug)]
struct Conversation {
    id: u64,
    last: SpanRef,
    last_end: Timestamp,
    pending: Vec<ToolCall>,
    seen: Timestamp,
}

/// What [`Conversations::observe`] learnt about one call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Turn {
    /// The inferred conversation id (chat calls).
    pub id: Option<String>,
    /// The span of the conversation's previous turn.
    pub previous: Option<SpanRef>,
    /// The tool executions this call's request reveals, oldest first.
    pub tools: Vec<ToolExecution>,
}

/// Conversation state across calls.
#[derive(Debug, Default)]
pub struct Conversations {
    /// Requests by fingerprint; identical requests (the same prompt sent again) share a key,
    /// the most recent last.
    map: AHashMap<u64, Vec<Conversation>>,
}

/// Identical requests remembered per fingerprint.
const SAME_REQUEST_KEPT: usize = 4;

fn keyed(client: &std::net::IpAddr, fingerprint: u64) -> u64 {
    let mut h = DefaultHasher::new();
    client.hash(&mut h);
    fingerprint.hash(&mut h);
    h.finish()
}

impl Conversations {
    /// Records a completed chat call whose span is `span`; returns its conversation, previous
    /// turn and the tool executions it reveals.
    pub fn observe(&mut self, call: &LlmCall, span: SpanRef) -> Turn {
        let prefixes = &call.request.conversation.prefixes;
        let Some(&whole) = prefixes.last() else { return Turn::default() };
        let client = call.flow.client.ip();
        let now = call.times.end;
        let mut executions = Vec::new();
        // The longest earlier request this one extends; among identical ones, the one whose
        // tool calls this request answers, else the most recent.
        let results = &call.request.conversation.tool_results;
        let earlier =
            prefixes[..prefixes.len() - 1].iter().rev().map(|p| keyed(&client, *p)).find(|k| self.map.contains_key(k));
        let found = earlier.and_then(|k| self.map.get_mut(&k)).and_then(|same| {
            let answered = same
                .iter()
                .rposition(|c| c.pending.iter().any(|t| t.id.is_some() && results.iter().any(|r| r.id == t.id)));
            let i = answered.unwrap_or(same.len() - 1);
            same.get_mut(i)
        });
        let mut previous = None;
        let id = match found {
            Some(conv) => {
                previous = Some(conv.last);
                for result in results {
                    let pos = conv
                        .pending
                        .iter()
                        .position(|t| result.id.is_some() && t.id == result.id)
                        .or_else(|| conv.pending.iter().position(|t| result.name.as_deref() == Some(t.name.as_str())))
                        .or_else(|| (!conv.pending.is_empty()).then_some(0));
                    let Some(pos) = pos else { continue };
                    // Taken: a retried request does not report the same tool run again.
                    let tool = conv.pending.remove(pos);
                    // The request that carries the result starts after the tool ended.
                    let end = call.times.request_start.max(conv.last_end);
                    executions.push(ToolExecution {
                        name: tool.name,
                        call_id: tool.id.or_else(|| result.id.clone()),
                        arguments: tool.arguments,
                        result: result.content.clone(),
                        start: conv.last_end,
                        end,
                        parent: conv.last,
                    });
                }
                conv.seen = now;
                conv.id
            }
            None => {
                let mut h = DefaultHasher::new();
                keyed(&client, whole).hash(&mut h);
                call.times.request_start.0.hash(&mut h);
                h.finish()
            }
        };
        if self.map.len() >= MAX_CONVERSATIONS {
            self.evict(now);
        }
        let same = self.map.entry(keyed(&client, whole)).or_default();
        // A retry of the same turn replaces it; another conversation's identical request joins it.
        same.retain(|c| c.id != id);
        if same.len() == SAME_REQUEST_KEPT {
            same.remove(0);
        }
        same.push(Conversation { id, last: span, last_end: now, pending: call.response.tool_calls.clone(), seen: now });
        Turn { id: Some(format!("{id:016x}")), previous, tools: executions }
    }

    /// Forgets idle conversations, and the least recent eighth when still full.
    fn evict(&mut self, now: Timestamp) {
        let latest = |same: &Vec<Conversation>| same.iter().map(|c| c.seen).max().unwrap_or(Timestamp(0));
        self.map.retain(|_, same| now.since(latest(same)) < IDLE_NS as i64);
        if self.map.len() >= MAX_CONVERSATIONS {
            let mut seen: Vec<Timestamp> = self.map.values().map(latest).collect();
            seen.sort_unstable();
            let cutoff = seen[seen.len() / 8];
            self.map.retain(|_, same| latest(same) > cutoff);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Responses API chains: a request naming `previous_response_id` continues the conversation
/// that response belongs to, whose id is the first response's id — an identifier the traffic
/// carries. Bounded: the oldest half is forgotten when full.
#[derive(Debug, Default)]
pub struct ResponseChains {
    /// Response id → its chain's first response's id, the span of the call that answered it,
    /// and when it was recorded.
    roots: AHashMap<String, (String, SpanRef, u64)>,
    tick: u64,
}

/// Where a Responses call stands in its chain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChainPosition {
    /// The chain's id (its first response's), when the call continues one.
    pub conversation: Option<String>,
    /// The span of the call that produced the previous response, when it was seen.
    pub previous: Option<SpanRef>,
}

/// Responses remembered for chains.
const MAX_RESPONSES: usize = 10_000;

impl ResponseChains {
    /// Records a Responses call (its span `me`): where it stands in its chain.
    pub fn observe(&mut self, previous: Option<&str>, response_id: Option<&str>, me: SpanRef) -> ChainPosition {
        self.tick += 1;
        let known = previous.and_then(|p| self.roots.get(p));
        let position = ChainPosition {
            conversation: previous.map(|p| known.map_or_else(|| p.to_string(), |(r, _, _)| r.clone())),
            previous: known.map(|(_, span, _)| *span),
        };
        if let Some(id) = response_id {
            if self.roots.len() >= MAX_RESPONSES {
                let mut ticks: Vec<u64> = self.roots.values().map(|(_, _, t)| *t).collect();
                ticks.sort_unstable();
                let cutoff = ticks[ticks.len() / 2];
                self.roots.retain(|_, (_, _, t)| *t > cutoff);
            }
            let chain_root = position.conversation.clone().unwrap_or_else(|| id.to_string());
            self.roots.insert(id.to_string(), (chain_root, me, self.tick));
        }
        position
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_of_responses_is_one_conversation_named_after_its_first_response() {
        let mut c = ResponseChains::default();
        let span = |n: u8| SpanRef { trace_id: [n; 16], span_id: [n; 8], flags: 1 };
        assert_eq!(
            c.observe(None, Some("resp_1"), span(1)),
            ChainPosition::default(),
            "a first response starts nothing yet"
        );
        let p = c.observe(Some("resp_1"), Some("resp_2"), span(2));
        assert_eq!((p.conversation.as_deref(), p.previous), (Some("resp_1"), Some(span(1))));
        let p = c.observe(Some("resp_2"), Some("resp_3"), span(3));
        assert_eq!((p.conversation.as_deref(), p.previous), (Some("resp_1"), Some(span(2))));
        // A previous response the tracer never saw still names the conversation.
        let p = c.observe(Some("resp_x"), Some("resp_y"), span(4));
        assert_eq!((p.conversation.as_deref(), p.previous), (Some("resp_x"), None));
        let p = c.observe(Some("resp_y"), None, span(5));
        assert_eq!((p.conversation.as_deref(), p.previous), (Some("resp_x"), Some(span(4))));
    }
}
