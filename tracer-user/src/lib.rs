//! The ollama-tracer daemon: everything that waits or touches the system, around the pure
//! pipeline of `tracer_core`.
//!
//! ```text
//! capture ─Segment─▶ [tracer_core pipeline] ─LlmCall─▶ attribution ─▶ [span stage] ─TracedCall─▶ sinks
//! (eBPF | libpcap | files)                             (live eBPF)                       (stdout, OTLP, metrics, top)
//! ```
//!
//! - [`capture`]: the live back-ends (eBPF programs, libpcap) and `check`;
//! - [`attribution`]: who the ends of a call are (processes, containers, pods), a stage after
//!   the pipeline that never blocks it;
//! - [`sink`], [`export`], [`metrics`], [`top`]: where traced calls go;
//! - [`transport`]: the OTLP connections export and metrics share;
//! - [`settings`]: the environment and the command line, resolved once;
//! - [`run`]: one run driver for every source, with its ticks, signals, view and summary;
//! - [`report`]: every stage's counters in one record.
//!
//! docs/architecture.md has the picture and the recipes.

pub mod attribution;
pub mod capture;
pub mod export;
pub mod metrics;
pub mod privileges;
pub mod report;
pub mod run;
pub mod settings;
pub mod sink;
pub mod top;
pub mod transport;
