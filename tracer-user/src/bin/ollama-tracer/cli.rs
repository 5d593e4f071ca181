//! The command line: every command, flag and its help. Turned into the library's
//! configurations in [`crate::config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ollama_tracer::capture::CaptureMode;
use ollama_tracer::transport::Protocol;
use tracer_core::llm::content;
use tracer_core::llm::{Provider, Providers};
use tracer_core::span::ConversationIdAttribute;
use tracer_core::span::semconv::SemconvMode;

/// `--version`: the version, the commit it was built from, the target, and whether the kernel
/// programs are in this binary (without them only the libpcap fallback can capture).
#[cfg(ollama_tracer_ebpf)]
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("OLLAMA_TRACER_COMMIT"),
    ", ",
    env!("OLLAMA_TRACER_TARGET"),
    ", eBPF built in)"
);
#[cfg(not(ollama_tracer_ebpf))]
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("OLLAMA_TRACER_COMMIT"),
    ", ",
    env!("OLLAMA_TRACER_TARGET"),
    ", eBPF not built in: libpcap capture only)"
);

/// The common tasks, at the end of `--help`.
const EXAMPLES: &str = "\
Examples:
  sudo ollama-tracer                      trace every call to port 11434 on this host, one line each
  sudo ollama-tracer top                  the same, as a live terminal view
  ollama-tracer check                     what this host offers the live capture (eBPF or libpcap)
  ollama-tracer replay capture.pcap       the calls in a recording (tcpdump -i any -w capture.pcap port 11434)
  ollama-tracer replay --output json capture.pcap   ... as OTLP-shaped JSON spans
  sudo ollama-tracer --output text,otlp --otlp-endpoint http://collector:4318
                                          also send spans and metrics to an OpenTelemetry collector
  sudo ollama-tracer --metrics-addr       serve Prometheus metrics at http://127.0.0.1:9464/metrics

Live capture needs root or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (CAP_NET_RAW for libpcap).";

#[derive(Parser, Debug)]
#[command(
    name = "ollama-tracer",
    version = VERSION,
    about = "Trace every Ollama call from the wire: OpenTelemetry GenAI spans without touching clients or Ollama",
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `run` (the default command).
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Capture live traffic on this host (the default).
    Run(RunArgs),
    /// A live terminal view of the calls (as `run` captures them): rates, models, calls in
    /// flight, recent calls and their phases. Needs a terminal on stdout.
    Top(RunArgs),
    /// Replay recorded captures (pcap or pcapng) through the pipeline.
    Replay {
        /// Capture files; several are merged by timestamp. `-` is standard input, which like
        /// any pipe or FIFO is read as it comes (`tcpdump -U -w - | ollama-tracer replay -`):
        /// not validated first, a corrupt record ends it with an error after what came before.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        ports: PortArgs,
        /// Replay at this multiple of the recorded pace (1 = as recorded), instead of as fast as
        /// possible: a capture then stands in for live traffic (metrics endpoint, export).
        #[arg(long, value_name = "FACTOR")]
        speed: Option<f64>,
        /// Show the replay in `top`'s terminal view (with --speed, as it would have looked
        /// live); it stays up at the end until `q`.
        #[arg(long)]
        top: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Check what live capture needs on this host, and which capture `run` would use.
    /// Exit code: 0 eBPF possible, 2 only the libpcap fallback, 1 neither.
    Check {
        #[command(flatten)]
        capture: CaptureArgs,
    },
    /// Shell completions and man pages, from these definitions (what `cargo xtask dist` ships).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
}

#[derive(Subcommand, Debug)]
pub enum Generate {
    /// A completion script for SHELL on stdout.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Man pages (section 1) for the command and each subcommand, written into DIR.
    Man { dir: PathBuf },
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub capture: CaptureArgs,
    #[command(flatten)]
    pub attribution: AttributionArgs,
}

#[derive(Args, Debug, Clone)]
pub struct CaptureArgs {
    /// Capture backend: `auto` (eBPF, else libpcap), `ebpf`, `pcap`.
    #[arg(long = "capture", default_value = "auto", value_parser = parse_mode)]
    pub mode: CaptureMode,
    #[command(flatten)]
    pub ports: PortArgs,
    /// Where the eBPF programs attach: `cgroup` (every socket of the host, every network
    /// namespace, pods included) or `tcx` (the interfaces given with --interface).
    #[arg(long, value_enum, default_value = "cgroup")]
    pub ebpf_attach: AttachArg,
    /// cgroup v2 directory to attach to (default: the hierarchy's root, i.e. the whole host).
    #[arg(long, value_name = "DIR")]
    pub cgroup: Option<PathBuf>,
    /// Interface(s): for `--ebpf-attach tcx` and the libpcap fallback (default: all).
    #[arg(long = "interface", value_name = "IFACE")]
    pub interfaces: Vec<String>,
    /// eBPF ring buffer size, MiB.
    #[arg(long, default_value_t = tracer_common::DEFAULT_RING_BYTES >> 20)]
    pub ring_buffer_mb: u32,
    /// eBPF: bodies longer than this many bytes that no decoder reads (blob uploads, answers
    /// that are not JSON, NDJSON or SSE) are reported by the kernel by length and time, not
    /// copied to user space; their calls stay exact. 0 copies every body.
    #[arg(long, value_name = "BYTES", default_value_t = ollama_tracer::capture::DEFAULT_SKIP_BODIES_OVER)]
    pub skip_bodies_over: u64,
    /// Forward the kernel programs' debug log.
    #[arg(long)]
    pub ebpf_debug_log: bool,
    /// TLS plaintext from uprobes on TLS libraries (OpenSSL, BoringSSL, Go crypto/tls), with
    /// the eBPF capture: `auto` (when the kernel allows it; else a warning) or `off`.
    #[arg(long = "tls", value_enum, default_value = "auto", value_name = "MODE")]
    pub tls: Toggle,
    /// Also decode TLS sessions with this host (the client's SNI, else the `Host` header; no
    /// port), repeatable; `ollama.com` always; `*`: every host. Other sessions' bytes never
    /// leave the kernel.
    #[arg(long = "tls-host", value_name = "HOST")]
    pub tls_hosts: Vec<String>,
    /// Probe only processes running these executables (glob on the path, or on the file name
    /// when it has no `/`; repeatable).
    #[arg(long = "tls-include-exe", value_name = "GLOB")]
    pub tls_include_exe: Vec<String>,
    /// Do not probe processes running these executables (repeatable).
    #[arg(long = "tls-exclude-exe", value_name = "GLOB")]
    pub tls_exclude_exe: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct PortArgs {
    /// Server port(s) to trace (repeatable). `PORT=PROVIDER` names another server speaking
    /// the same `/v1` wire on it: `vllm`, `llama.cpp`, `lmstudio`, `litellm` (e.g.
    /// `--port 8000=vllm`); `gen_ai.provider.name` and the routes follow it.
    #[arg(long = "port", default_value = "11434", value_name = "PORT[=PROVIDER]", value_parser = parse_port)]
    pub ports: Vec<(u16, Provider)>,
}

impl PortArgs {
    pub fn numbers(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.ports.iter().map(|(p, _)| *p).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    pub fn providers(&self) -> Providers {
        Providers::new(self.ports.iter().copied())
    }
}

/// `PORT` or `PORT=PROVIDER`.
pub fn parse_port(s: &str) -> Result<(u16, Provider), String> {
    let (port, provider) = match s.split_once('=') {
        Some((port, provider)) => (port, provider.parse::<Provider>().map_err(|e| e.to_string())?),
        None => (s, Provider::Ollama),
    };
    let port: u16 = port.trim().parse().map_err(|_| format!("{port:?} is not a port number"))?;
    if port == 0 {
        return Err("port 0 cannot be traced".into());
    }
    Ok((port, provider))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AttachArg {
    Cgroup,
    Tcx,
}

pub fn parse_mode(s: &str) -> Result<CaptureMode, String> {
    s.parse()
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Where spans go: `text` (one line per call on stdout, the default), `json` (one
    /// OTLP-shaped span per line on stdout), `none` (nothing on stdout), `otlp` (to the OTLP
    /// endpoint). Comma-separated or repeated, e.g. `--output text,otlp`.
    #[arg(long, value_name = "OUTPUT")]
    pub output: Vec<String>,
    /// OTLP endpoint for spans and metrics (base URL; `/v1/traces` and `/v1/metrics` are
    /// appended for HTTP). Overrides OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]ENDPOINT.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol: `grpc`, `http/protobuf` (default), `http/json`. Overrides
    /// OTEL_EXPORTER_OTLP_PROTOCOL.
    #[arg(long, value_name = "PROTOCOL", value_parser = parse_protocol)]
    pub otlp_protocol: Option<Protocol>,
    /// Header sent with every OTLP request (repeatable), e.g.
    /// `x-mlflow-experiment-id=1`. Overrides the same name from OTEL_EXPORTER_OTLP_HEADERS.
    #[arg(long = "otlp-header", value_name = "NAME=VALUE")]
    pub otlp_headers: Vec<String>,
    /// OTLP request timeout, milliseconds (default: OTEL_EXPORTER_OTLP_TIMEOUT, else 10000).
    #[arg(long, value_name = "MS")]
    pub otlp_timeout: Option<u64>,
    /// Most spans waiting for OTLP export (default: OTEL_BSP_MAX_QUEUE_SIZE, else 2048); more
    /// are dropped and counted.
    #[arg(long, value_name = "N")]
    pub otlp_queue_spans: Option<usize>,
    /// Most bytes of spans waiting for OTLP export (default 16 MiB); more are dropped and
    /// counted.
    #[arg(long, value_name = "BYTES")]
    pub otlp_queue_bytes: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics. `PORT` or `HOST:PORT`; a bare port, or
    /// the flag alone (127.0.0.1:9464), listens on 127.0.0.1 only. Off unless given (or
    /// OTEL_METRICS_EXPORTER=prometheus).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    pub metrics_addr: Option<String>,
    /// Extra attribute names for a backend: `openinference` (Arize Phoenix's `llm.*`,
    /// `openinference.span.kind`; note it turns MLflow's CHAT_MODEL spans into LLM spans).
    #[arg(long, value_name = "DIALECT")]
    pub compat: Vec<String>,
    /// Request header to export as `http.request.header.<name>` (repeatable). Credentials and
    /// cookies are never exported.
    #[arg(long = "keep-header", value_name = "NAME", default_value = "user-agent")]
    pub keep_headers: Vec<String>,
    /// `service.name` of spans and metrics (default: $OTEL_SERVICE_NAME, else `service.name` in
    /// $OTEL_RESOURCE_ATTRIBUTES, else `ollama`).
    #[arg(long)]
    pub service_name: Option<String>,
    /// GenAI semantic conventions of span and metric names: `v1.41` (what backends read
    /// today; the default) or `latest` (the current `semantic-conventions-genai` names; also
    /// with OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental). See the README's table.
    #[arg(long, value_name = "VERSION", value_parser = parse_semconv)]
    pub semconv: Option<SemconvMode>,
    /// Seed for trace and span ids, for reproducible output.
    #[arg(long, hide = true)]
    pub id_seed: Option<u64>,
    /// At the end (on SIGINT/SIGTERM, or of a replay), how long queued spans and the last
    /// metrics get to reach the collector; what is left then is counted as dropped. Default:
    /// 10000 for a live capture; a replay waits until everything is delivered (SIGINT stops
    /// it), unless this is given.
    #[arg(long, value_name = "MS")]
    pub flush_timeout: Option<u64>,
    /// Do not print the summary on stderr.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub trace: TraceArgs,
    #[command(flatten)]
    pub limits: LimitsArgs,
}

/// Bounds on what the pipeline holds; each overflow is counted in the summary and metrics.
#[derive(Args, Debug, Clone)]
pub struct LimitsArgs {
    /// Connections tracked at once (the least recently active are evicted beyond it).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Out-of-order bytes held per connection before the hole is declared a gap.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "1MiB")]
    pub max_reorder_per_conn: usize,
    /// Out-of-order bytes held for all connections together.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "32MiB")]
    pub max_reorder_total: usize,
    /// Bytes of unfinished HTTP heads held for all connections together.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "16MiB")]
    pub max_partial_heads: usize,
    /// Pipelined requests waiting per connection.
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub max_pending_per_conn: usize,
    /// Calls followed at once (the oldest is reported, flagged, beyond it).
    #[arg(long, value_name = "N", default_value_t = 16_384)]
    pub max_calls_in_flight: usize,
    /// A connection silent this long is closed (its open calls flagged).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "15min")]
    pub idle_timeout: Duration,
    /// An HTTP head still unfinished after this long is dropped (slowloris).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "60s")]
    pub head_timeout: Duration,
}

/// A byte size: a number with an optional unit (`k`/`KiB`, `m`/`MiB`, `g`/`GiB`; powers of 2).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("{s:?}: unknown unit (use KiB, MiB or GiB)")),
    };
    n.checked_mul(1usize << shift).ok_or_else(|| format!("{s:?} is too large"))
}

pub fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// What goes into spans and which spans are kept.
#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// Record message content: `gen_ai.input.messages`, `gen_ai.output.messages`,
    /// `gen_ai.system_instructions`, `gen_ai.tool.definitions` and tool-call arguments. Off by
    /// default (also on with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true|SPAN_ONLY|
    /// SPAN_AND_EVENT).
    #[arg(long)]
    pub capture_content: bool,
    /// With content capture: longest text part kept, bytes (longer ones are cut and marked).
    #[arg(long, value_name = "BYTES", default_value_t = content::DEFAULT_MAX_PART_BYTES)]
    pub content_max_bytes: usize,
    /// With content capture: a regular expression whose matches are replaced by `[REDACTED]`
    /// (repeatable), on top of the default ones (bearer tokens, API keys).
    #[arg(long = "redact", value_name = "REGEX")]
    pub redact: Vec<String>,
    /// With content capture: do not apply the default redactions.
    #[arg(long)]
    pub no_default_redactions: bool,
    /// Keep this fraction of traces (0..1) that carry no sampled parent decision. Overrides
    /// OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (as `parentbased_traceidratio`).
    #[arg(long, value_name = "RATIO")]
    pub sample_ratio: Option<f64>,
    /// Let the head sampler drop failed calls too (by default every failed call is kept).
    #[arg(long)]
    pub no_keep_errors: bool,
    /// Keep every call at least this long whatever the head sampler says, e.g. `30s`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_slower_than: Option<Duration>,
    /// Where the conversation the tracer infers (from message histories resent turn after
    /// turn) goes: `vendor` (`ollama_tracer.conversation.id`, the default: the conventions say
    /// a hash of request content SHOULD NOT be `gen_ai.conversation.id`) or `gen_ai` (also
    /// `gen_ai.conversation.id`, and Phoenix's `session.id` with --compat openinference: a
    /// deviation, for backends that group conversations by it). An id the traffic carries
    /// (Responses `conversation`/`previous_response_id`, --conversation-header) is always
    /// `gen_ai.conversation.id`.
    #[arg(long, value_enum, value_name = "WHERE", default_value = "vendor")]
    pub conversation_id_attribute: ConversationIdArg,
    /// Request header carrying the client's own conversation id, honoured as
    /// `gen_ai.conversation.id` (`none`: no header is read).
    #[arg(long, value_name = "NAME", default_value = tracer_core::http::DEFAULT_CONVERSATION_HEADER)]
    pub conversation_header: String,
    /// A model load at least this long is a cold start (`ollama.cold_start`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "500ms")]
    pub cold_start_threshold: Duration,
}

pub fn parse_semconv(s: &str) -> Result<SemconvMode, String> {
    s.parse()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConversationIdArg {
    /// `ollama_tracer.conversation.id` only.
    Vendor,
    /// Also `gen_ai.conversation.id`.
    #[value(name = "gen_ai")]
    GenAi,
}

impl From<ConversationIdArg> for ConversationIdAttribute {
    fn from(a: ConversationIdArg) -> Self {
        match a {
            ConversationIdArg::Vendor => ConversationIdAttribute::Vendor,
            ConversationIdArg::GenAi => ConversationIdAttribute::GenAi,
        }
    }
}

pub fn parse_protocol(s: &str) -> Result<Protocol, String> {
    s.parse()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Toggle {
    Auto,
    Off,
}

/// Who called and who answered (see docs/attribution.md).
#[derive(clap::Args, Debug, Clone)]
pub struct AttributionArgs {
    /// Attribute calls to the processes, containers and pods at both ends (eBPF capture only):
    /// `auto` or `off`.
    #[arg(long = "attribution", value_enum, default_value = "auto", value_name = "MODE")]
    pub attribution: Toggle,
    /// Also export `process.command_args` (the arguments, values of secret-looking flags
    /// redacted). Off by default: command lines can carry secrets.
    #[arg(long)]
    pub process_args: bool,
    /// Pod, namespace and workload names from the Kubernetes API: `auto` (when running in a
    /// pod and the node name is known) or `off`.
    #[arg(long = "kubernetes", value_enum, default_value = "auto", value_name = "MODE")]
    pub kubernetes: Toggle,
    /// The API server to ask instead of the in-cluster one, without credentials (e.g. a
    /// `kubectl proxy` on a node).
    #[arg(long, value_name = "URL", hide = true)]
    pub kubernetes_api: Option<String>,
    /// This node's name: the pods watched are those scheduled on it (default: $K8S_NODE_NAME).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Keep --service-name for a server in a pod instead of naming the service after its
    /// workload.
    #[arg(long)]
    pub keep_service_name: bool,
    /// Longest a call is held for attribution lookups under way (the pipeline never waits;
    /// calls behind it keep their order). Counted in the summary when it runs out.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "50ms")]
    pub attribution_wait: Duration,
}
