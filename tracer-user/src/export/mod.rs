//! Where spans go: stdout (JSON lines or one readable line per call); OTLP and Prometheus
//! alongside.

pub mod stdout;
pub mod time;
