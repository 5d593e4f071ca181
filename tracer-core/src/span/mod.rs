//! Spans from calls: the one place that turns an [`LlmCall`](crate::llm::LlmCall) into
//! OpenTelemetry's vocabulary ([`builder`], [`semconv`]), decides which are kept ([`sampling`],
//! [`stage`]) and links the turns of a conversation ([`conversation`]). Spans carry capture
//! times, never the time the daemon got round to building them.

pub mod builder;
pub mod compat;
pub mod conversation;
pub mod identity;
pub mod record;
pub mod sampling;
pub mod semconv;
pub mod stage;
pub mod trace_context;

#[cfg(test)]
mod tests;

pub use self::builder::{ConversationIdAttribute, DEFAULT_COLD_START_NS, SpanBuilder, SpanConfig};
pub use self::record::{
    AttrValue, KeyValue, Resource, SpanEvent, SpanKind, SpanLink, SpanRecord, StatusCode, hex, push_hex,
};
