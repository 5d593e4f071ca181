//! Conversations and agent loops, seen passively.
//!
//! **Heuristic.** Every turn of a chat conversation resends the messages before it: the request
//! of turn N+1 starts with the messages of turn N's request (then the assistant's answer, then
//! the new user message or tool results). Each request is fingerprinted after every message;
//! a call from the same client host whose request extends an earlier request (one of its
//! shorter prefixes equals that whole request) continues that request's conversation, and
//! shares its `gen_ai.conversation.id`. A request that extends none starts a conversation,
//! whose id is derived from the client, the request and its start time — so the same prompt
//! sent twice is two conversations.
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
    /// Records a completed chat call whose span is `span`; returns its conversation id and the
    /// tool executions it reveals.
    pub fn observe(&mut self, call: &LlmCall, span: SpanRef) -> (Option<String>, Vec<ToolExecution>) {
        let prefixes = &call.request.conversation.prefixes;
        let Some(&whole) = prefixes.last() else { return (None, Vec::new()) };
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
        let id = match found {
            Some(conv) => {
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
        (Some(format!("{id:016x}")), executions)
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
