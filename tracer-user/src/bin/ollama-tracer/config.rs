//! From the command line and the environment to the library's configurations: each value is
//! resolved once here (the content configuration and its redaction patterns included), then
//! handed to the stages that use it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use ollama_tracer::attribution::AttributionOptions;
use ollama_tracer::capture::{CaptureConfig, CaptureMode, EbpfAttach, TlsConfig};
use ollama_tracer::run::RunConfig;
use ollama_tracer::settings::{self, CliExport, Environment};
use ollama_tracer::top::TopConfig;
use tracer_core::http::HttpConfig;
use tracer_core::llm::content::ContentConfig;
use tracer_core::llm::{LlmConfig, Providers};
use tracer_core::pipeline::PipelineConfig;
use tracer_core::reassembly::ReassemblyConfig;
use tracer_core::span::SpanConfig;
use tracer_core::span::sampling::{Head, SamplingConfig};
use tracer_core::span::stage::SpanStageConfig;

use crate::cli::{AttachArg, AttributionArgs, CaptureArgs, Common, PortArgs, Toggle, TraceArgs, nanos};

impl TraceArgs {
    /// Content capture: the flag or the GenAI instrumentations' environment switch.
    fn content(&self, env: &Environment) -> Result<Option<ContentConfig>> {
        let (from_env, warning) = env.capture_content();
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        if !(self.capture_content || from_env) {
            return Ok(None);
        }
        if self.content_max_bytes == 0 {
            anyhow::bail!("--content-max-bytes must be at least 1");
        }
        let config = ContentConfig::capturing(self.content_max_bytes, !self.no_default_redactions, &self.redact)
            .context("bad --redact pattern")?;
        Ok(Some(config))
    }

    fn sampling(&self, env: &Environment) -> Result<SamplingConfig> {
        let mut config = match self.sample_ratio {
            Some(r) if (0.0..=1.0).contains(&r) => SamplingConfig { head: Head::TraceIdRatio(r), ..Default::default() },
            Some(r) => anyhow::bail!("--sample-ratio {r} is not between 0 and 1"),
            None => {
                let (sampler, arg) = env.sampler();
                SamplingConfig::from_otel(sampler, arg).context("OTEL_TRACES_SAMPLER")?
            }
        };
        config.keep_errors = !self.no_keep_errors;
        config.keep_slower_than_ns = self.keep_slower_than.map(nanos);
        Ok(config)
    }
}

impl Common {
    fn pipeline(&self, content: bool, providers: Providers) -> PipelineConfig {
        let l = &self.limits;
        PipelineConfig {
            reassembly: ReassemblyConfig {
                max_buffer_per_conn: l.max_reorder_per_conn,
                max_buffer_total: l.max_reorder_total,
                idle_timeout_ns: nanos(l.idle_timeout),
                max_connections: l.max_connections.max(1),
                ..ReassemblyConfig::default()
            },
            http: HttpConfig {
                keep_headers: self.keep_headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
                max_partial_heads: l.max_partial_heads,
                head_timeout_ns: nanos(l.head_timeout),
                max_pending_per_conn: l.max_pending_per_conn.max(1),
                conversation_header: match self.trace.conversation_header.trim().to_ascii_lowercase() {
                    h if h == "none" => String::new(),
                    h => h,
                },
            },
            llm: LlmConfig { capture_content: content, max_calls_in_flight: l.max_calls_in_flight.max(1), providers },
            collect_peers: false,
            // The live eBPF capture turns it on (run::live).
            skip_bodies_over: None,
        }
    }

    fn export(&self, top: bool) -> CliExport {
        // `top` draws on stdout: nothing else goes there unless asked for (and then refused).
        let outputs = if top && self.output.is_empty() { vec!["none".to_string()] } else { self.output.clone() };
        CliExport {
            outputs,
            otlp_endpoint: self.otlp_endpoint.clone(),
            otlp_protocol: self.otlp_protocol,
            otlp_headers: self.otlp_headers.clone(),
            otlp_timeout: self.otlp_timeout.map(Duration::from_millis),
            metrics_addr: self.metrics_addr.clone(),
            queue_spans: self.otlp_queue_spans,
            queue_bytes: self.otlp_queue_bytes,
            service_name: self.service_name.clone(),
            compat: self.compat.clone(),
            semconv: self.semconv,
        }
    }

    /// Everything after the source, for a run with (`top`) or without the terminal view, of
    /// the servers on `ports`.
    pub fn run_config(&self, env: &Environment, top: bool, ports: &PortArgs) -> Result<RunConfig> {
        let content = self.trace.content(env)?;
        let (export, warnings) = settings::resolve(&self.export(top), env)?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        let cold_start_ns = nanos(self.trace.cold_start_threshold);
        Ok(RunConfig {
            pipeline: self.pipeline(content.is_some(), ports.providers()),
            spans: SpanStageConfig {
                spans: SpanConfig {
                    id_seed: self.id_seed,
                    cold_start_ns: Some(cold_start_ns),
                    content: content.clone(),
                    semconv: export.semconv,
                    conversation_id: self.trace.conversation_id_attribute.into(),
                },
                sampling: self.trace.sampling(env)?,
                openinference: export.openinference,
            },
            resource: settings::resource(&export, host_name()),
            export,
            // The source is filled in by the run; content is shown only when captured.
            top: top.then(|| TopConfig { source: String::new(), cold_start_ns, content }),
            flush_timeout: self.flush_timeout.map(Duration::from_millis),
            quiet: self.quiet,
        })
    }
}

impl CaptureArgs {
    pub fn config(&self) -> CaptureConfig {
        CaptureConfig {
            ports: self.ports.numbers(),
            ebpf_attach: match (self.ebpf_attach, &self.cgroup) {
                (AttachArg::Tcx, _) => EbpfAttach::Tcx(self.interfaces.clone()),
                (AttachArg::Cgroup, Some(dir)) => EbpfAttach::Cgroup(dir.clone()),
                (AttachArg::Cgroup, None) => EbpfAttach::CgroupRoot,
            },
            ring_bytes: self.ring_buffer_mb.saturating_mul(1 << 20),
            // The receiver's ACKs tell which missing bytes will never come: needed to end a
            // call whose last chunk the capture lost.
            emit_pure_acks: true,
            ebpf_debug_log: self.ebpf_debug_log,
            skip_bodies_over: (self.skip_bodies_over > 0).then_some(self.skip_bodies_over),
            pcap_interfaces: self.interfaces.clone(),
            tls: TlsConfig {
                // libpcap sees packets only.
                enabled: self.tls == Toggle::Auto && self.mode != CaptureMode::Pcap,
                hosts: self.tls_hosts.clone(),
                include_exe: self.tls_include_exe.clone(),
                exclude_exe: self.tls_exclude_exe.clone(),
            },
            ..CaptureConfig::default()
        }
    }
}

impl AttributionArgs {
    /// How to start attribution; `None` when it is off.
    pub fn options(&self, env: &Environment) -> Option<AttributionOptions> {
        (self.attribution == Toggle::Auto).then(|| AttributionOptions {
            process_args: self.process_args,
            kubernetes: self.kubernetes == Toggle::Auto,
            kubernetes_api: self.kubernetes_api.clone(),
            in_cluster: env.in_cluster(),
            node_name: self.node_name.clone().or_else(|| env.node_name().map(str::to_string)),
            workload_service_name: !self.keep_service_name,
            hold: self.attribution_wait,
        })
    }
}

fn host_name() -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys/kernel/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
