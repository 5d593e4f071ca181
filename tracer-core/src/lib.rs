//! The pipeline of ollama-tracer, without I/O: captured packets (or recorded capture files) in,
//! Ollama calls and their OpenTelemetry spans out.
//!
//! ```text
//! capture ─Segment─▶ reassembly ─StreamEvent─▶ http ─HttpEvent─▶ llm ─LlmCall─▶ span ─TracedCall─▶
//! ```
//!
//! Each stage is a plain struct with a non-blocking `push(input, &mut out)`; [`pipeline`] wires
//! the stages from segments to calls, [`span::SpanStage`] turns calls into spans. The daemon
//! (`tracer-user`) owns everything that waits or touches the system: live capture, attribution,
//! export, the terminal view. docs/architecture.md has the picture.

pub mod capture;
pub mod http;
pub mod identity;
pub mod json;
pub mod llm;
pub mod pipeline;
pub mod reassembly;
pub mod replay;
pub mod segment;
pub mod span;
