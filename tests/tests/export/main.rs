//! The `ollama-tracer` binary and daemon library without privileges: replays exported to real
//! receivers and backends (OTLP, Prometheus, MLflow, Phoenix), the command line, secrets kept
//! out of every output, attribution's Kubernetes watch against a stand-in API server.

mod agent_loop;
mod backends;
mod cli;
mod export_otlp;
mod export_outage;
mod export_resource;
mod export_slow;
mod kubernetes_api;
mod prometheus;
mod providers;
mod secrets;
mod server_metrics;
