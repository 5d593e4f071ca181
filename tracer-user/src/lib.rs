//! ollama-tracer: passive tracing of Ollama calls from captured TCP traffic.
//!
//! Pipeline (each stage a plain struct with a non-blocking `push`, driven by files, tests,
//! benchmarks or the daemon): capture → [`segment::Segment`] → reassembly → http → llm → span → export.

pub mod segment;
pub mod capture;
pub mod reassembly;
pub mod json;
pub mod http;
pub mod llm;
pub mod span;
pub mod export;
pub mod pipeline;
pub mod replay;
