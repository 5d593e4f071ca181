//! ollama-tracer: passive tracing of Ollama calls from captured TCP traffic.
//!
//! Pipeline (each stage a plain struct with a non-blocking `push`, driven by files, tests,
//! benchmarks or the daemon): capture → [`segment::Segment`] → reassembly → http → llm → span → export.

pub mod attribution;
pub mod capture;
pub mod daemon;
pub mod export;
pub mod http;
pub mod json;
pub mod llm;
pub mod metrics;
pub mod pipeline;
pub mod reassembly;
pub mod replay;
pub mod segment;
pub mod span;
