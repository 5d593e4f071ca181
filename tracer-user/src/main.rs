//! `ollama-tracer`: trace every Ollama call from the wire.

use std::io::{self, BufWriter, IsTerminal, LineWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use ollama_tracer::attribution::cli::AttributionArgs;
use ollama_tracer::capture::check::CheckReport;
use ollama_tracer::capture::live::{CaptureConfig, CaptureMode, EbpfAttach, plan};
use ollama_tracer::daemon::{Live, LiveOptions};
use ollama_tracer::export::config::{self, CliExport, Protocol, StdoutChoice};
use ollama_tracer::export::{Outputs, setup};
use ollama_tracer::http::HttpConfig;
use ollama_tracer::llm::LlmConfig;
use ollama_tracer::llm::content::{self, ContentConfig};
use ollama_tracer::pipeline::PipelineConfig;
use ollama_tracer::privileges;
use ollama_tracer::reassembly::ReassemblyConfig;
use ollama_tracer::replay::{ReplayEvent, ReplayOptions, open_all, replay_with};
use ollama_tracer::span::SpanConfig;
use ollama_tracer::span::sampling::{Head, SamplingConfig};
use ollama_tracer::top::ui::{Ui, UiStats};
use ollama_tracer::top::{SharedTop, TopConfig, TopSink, logs};

#[derive(Parser, Debug)]
#[command(
    name = "ollama-tracer",
    version,
    about = "Trace every Ollama call from the wire: OpenTelemetry GenAI spans without touching clients or Ollama",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options of `run` (the default command).
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Capture live traffic on this host (the default).
    Run(RunArgs),
    /// A live terminal view of the calls (as `run` captures them): rates, models, calls in
    /// flight, recent calls and their phases. Needs a terminal on stdout.
    Top(RunArgs),
    /// Replay recorded captures (pcap or pcapng) through the pipeline.
    Replay {
        /// Capture files; several are merged by timestamp.
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
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    capture: CaptureArgs,
    #[command(flatten)]
    attribution: AttributionArgs,
}

#[derive(Args, Debug, Clone)]
struct CaptureArgs {
    /// Capture backend: `auto` (eBPF, else libpcap), `ebpf`, `pcap`.
    #[arg(long = "capture", default_value = "auto", value_parser = parse_mode)]
    mode: CaptureMode,
    #[command(flatten)]
    ports: PortArgs,
    /// Where the eBPF programs attach: `cgroup` (every socket of the host, every network
    /// namespace, pods included) or `tcx` (the interfaces given with --interface).
    #[arg(long, value_enum, default_value = "cgroup")]
    ebpf_attach: AttachArg,
    /// cgroup v2 directory to attach to (default: the hierarchy's root, i.e. the whole host).
    #[arg(long, value_name = "DIR")]
    cgroup: Option<PathBuf>,
    /// Interface(s): for `--ebpf-attach tcx` and the libpcap fallback (default: all).
    #[arg(long = "interface", value_name = "IFACE")]
    interfaces: Vec<String>,
    /// eBPF ring buffer size, MiB.
    #[arg(long, default_value_t = tracer_common::DEFAULT_RING_BYTES >> 20)]
    ring_buffer_mb: u32,
    /// Forward the kernel programs' debug log.
    #[arg(long)]
    ebpf_debug_log: bool,
}

#[derive(Args, Debug, Clone)]
struct PortArgs {
    /// Ollama server port(s) to trace.
    #[arg(long = "port", default_value = "11434", value_name = "PORT")]
    ports: Vec<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AttachArg {
    Cgroup,
    Tcx,
}

fn parse_mode(s: &str) -> Result<CaptureMode, String> {
    s.parse()
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Where spans go: `text` (one line per call on stdout, the default), `json` (one
    /// OTLP-shaped span per line on stdout), `none` (nothing on stdout), `otlp` (to the OTLP
    /// endpoint). Comma-separated or repeated, e.g. `--output text,otlp`.
    #[arg(long, value_name = "OUTPUT")]
    output: Vec<String>,
    /// OTLP endpoint for spans and metrics (base URL; `/v1/traces` and `/v1/metrics` are
    /// appended for HTTP). Overrides OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]ENDPOINT.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// OTLP protocol: `grpc`, `http/protobuf` (default), `http/json`. Overrides
    /// OTEL_EXPORTER_OTLP_PROTOCOL.
    #[arg(long, value_name = "PROTOCOL", value_parser = parse_protocol)]
    otlp_protocol: Option<Protocol>,
    /// Header sent with every OTLP request (repeatable), e.g.
    /// `x-mlflow-experiment-id=1`. Overrides the same name from OTEL_EXPORTER_OTLP_HEADERS.
    #[arg(long = "otlp-header", value_name = "NAME=VALUE")]
    otlp_headers: Vec<String>,
    /// OTLP request timeout, milliseconds (default: OTEL_EXPORTER_OTLP_TIMEOUT, else 10000).
    #[arg(long, value_name = "MS")]
    otlp_timeout: Option<u64>,
    /// Most spans waiting for OTLP export (default: OTEL_BSP_MAX_QUEUE_SIZE, else 2048); more
    /// are dropped and counted.
    #[arg(long, value_name = "N")]
    otlp_queue_spans: Option<usize>,
    /// Most bytes of spans waiting for OTLP export (default 16 MiB); more are dropped and
    /// counted.
    #[arg(long, value_name = "BYTES")]
    otlp_queue_bytes: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics. `PORT` or `HOST:PORT`; a bare port, or
    /// the flag alone (127.0.0.1:9464), listens on 127.0.0.1 only. Off unless given (or
    /// OTEL_METRICS_EXPORTER=prometheus).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    metrics_addr: Option<String>,
    /// Extra attribute names for a backend: `openinference` (Arize Phoenix's `llm.*`,
    /// `openinference.span.kind`; note it turns MLflow's CHAT_MODEL spans into LLM spans).
    #[arg(long, value_name = "DIALECT")]
    compat: Vec<String>,
    /// Request header to export as `http.request.header.<name>` (repeatable). Credentials and
    /// cookies are never exported.
    #[arg(long = "keep-header", value_name = "NAME", default_value = "user-agent")]
    keep_headers: Vec<String>,
    /// `service.name` of spans and metrics (default: $OTEL_SERVICE_NAME, else `service.name` in
    /// $OTEL_RESOURCE_ATTRIBUTES, else `ollama`).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    service_name: Option<String>,
    /// Seed for trace and span ids, for reproducible output.
    #[arg(long, hide = true)]
    id_seed: Option<u64>,
    /// At the end (of the replay, or on SIGINT/SIGTERM), how long queued spans and the last
    /// metrics get to reach the collector; what is left then is counted as dropped.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    flush_timeout: u64,
    /// Do not print the summary on stderr.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    trace: TraceArgs,
    #[command(flatten)]
    limits: LimitsArgs,
}

/// Bounds on what the pipeline holds; each overflow is counted in the summary and metrics.
#[derive(Args, Debug, Clone)]
struct LimitsArgs {
    /// Connections tracked at once (the least recently active are evicted beyond it).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_connections: usize,
    /// Out-of-order bytes held per connection before the hole is declared a gap.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "1MiB")]
    max_reorder_per_conn: usize,
    /// Out-of-order bytes held for all connections together.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "32MiB")]
    max_reorder_total: usize,
    /// Bytes of unfinished HTTP heads held for all connections together.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "16MiB")]
    max_partial_heads: usize,
    /// Pipelined requests waiting per connection.
    #[arg(long, value_name = "N", default_value_t = 128)]
    max_pending_per_conn: usize,
    /// Calls followed at once (the oldest is reported, flagged, beyond it).
    #[arg(long, value_name = "N", default_value_t = 16_384)]
    max_calls_in_flight: usize,
    /// A connection silent this long is closed (its open calls flagged).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "15min")]
    idle_timeout: Duration,
    /// An HTTP head still unfinished after this long is dropped (slowloris).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "60s")]
    head_timeout: Duration,
}

/// A byte size: a number with an optional unit (`k`/`KiB`, `m`/`MiB`, `g`/`GiB`; powers of 2).
fn parse_size(s: &str) -> Result<usize, String> {
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

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// What goes into spans and which spans are kept.
#[derive(Args, Debug, Clone)]
struct TraceArgs {
    /// Record message content: `gen_ai.input.messages`, `gen_ai.output.messages`,
    /// `gen_ai.system_instructions`, `gen_ai.tool.definitions` and tool-call arguments. Off by
    /// default (also on with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true|SPAN_ONLY|
    /// SPAN_AND_EVENT).
    #[arg(long)]
    capture_content: bool,
    /// With content capture: longest text part kept, bytes (longer ones are cut and marked).
    #[arg(long, value_name = "BYTES", default_value_t = content::DEFAULT_MAX_PART_BYTES)]
    content_max_bytes: usize,
    /// With content capture: a regular expression whose matches are replaced by `[REDACTED]`
    /// (repeatable), on top of the default ones (bearer tokens, API keys).
    #[arg(long = "redact", value_name = "REGEX")]
    redact: Vec<String>,
    /// With content capture: do not apply the default redactions.
    #[arg(long)]
    no_default_redactions: bool,
    /// Keep this fraction of traces (0..1) that carry no sampled parent decision. Overrides
    /// OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (as `parentbased_traceidratio`).
    #[arg(long, value_name = "RATIO")]
    sample_ratio: Option<f64>,
    /// Let the head sampler drop failed calls too (by default every failed call is kept).
    #[arg(long)]
    no_keep_errors: bool,
    /// Keep every call at least this long whatever the head sampler says, e.g. `30s`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    keep_slower_than: Option<Duration>,
    /// A model load at least this long is a cold start (`ollama.cold_start`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "500ms")]
    cold_start_threshold: Duration,
}

/// The environment switch the OpenTelemetry GenAI instrumentations use for content capture.
const CAPTURE_CONTENT_ENV: &str = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";

impl TraceArgs {
    fn content(&self) -> Result<Option<ContentConfig>> {
        let from_env = match std::env::var(CAPTURE_CONTENT_ENV) {
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                // Content goes on spans only; an events-only request is honoured the same way
                // rather than dropped, since spans are the only place we emit it.
                "true" | "1" | "span_only" | "span_and_event" | "event_only" => true,
                "" | "false" | "0" | "no_content" => false,
                other => {
                    tracing::warn!("{CAPTURE_CONTENT_ENV}={other:?} is not understood; content is not captured");
                    false
                }
            },
            Err(_) => false,
        };
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

    fn sampling(&self) -> Result<SamplingConfig> {
        let mut config = match self.sample_ratio {
            Some(r) if (0.0..=1.0).contains(&r) => SamplingConfig { head: Head::TraceIdRatio(r), ..Default::default() },
            Some(r) => anyhow::bail!("--sample-ratio {r} is not between 0 and 1"),
            None => SamplingConfig::from_otel(
                std::env::var("OTEL_TRACES_SAMPLER").ok().as_deref(),
                std::env::var("OTEL_TRACES_SAMPLER_ARG").ok().as_deref(),
            )
            .context("OTEL_TRACES_SAMPLER")?,
        };
        config.keep_errors = !self.no_keep_errors;
        config.keep_slower_than_ns = self.keep_slower_than.map(nanos);
        Ok(config)
    }
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    s.parse()
}

impl Common {
    fn pipeline(&self) -> Result<PipelineConfig> {
        let l = &self.limits;
        Ok(PipelineConfig {
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
            },
            llm: LlmConfig {
                capture_content: self.trace.content()?.is_some(),
                max_calls_in_flight: l.max_calls_in_flight.max(1),
            },
            // Set by `run` (AttributionArgs::install): live eBPF capture only.
            attribution: None,
        })
    }

    /// What `top` shows besides the calls: its source, the cold-start threshold, and whether
    /// content may be shown (only when content capture was asked for).
    fn top_config(&self, source: String) -> Result<TopConfig> {
        Ok(TopConfig { source, cold_start_ns: nanos(self.trace.cold_start_threshold), content: self.trace.content()? })
    }

    fn span_config(&self) -> Result<SpanConfig> {
        Ok(SpanConfig {
            id_seed: self.id_seed,
            cold_start_ns: Some(nanos(self.trace.cold_start_threshold)),
            content: self.trace.content()?,
        })
    }

    /// Resolves the export settings (command line over environment) and builds the outputs.
    fn outputs(&self) -> Result<Outputs> {
        self.outputs_for(false)
    }

    /// The outputs of `top`: stdout is the view, so nothing else may write there (no spans on
    /// stdout unless asked for, and then refused; no console metrics).
    fn top_outputs(&self) -> Result<Outputs> {
        self.outputs_for(true)
    }

    fn outputs_for(&self, top: bool) -> Result<Outputs> {
        let outputs = if top && self.output.is_empty() { vec!["none".to_string()] } else { self.output.clone() };
        let cli = CliExport {
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
        };
        let (settings, warnings) = config::resolve(&cli, &|k| std::env::var(k).ok())?;
        if top && (settings.stdout != StdoutChoice::None || settings.console_metrics) {
            anyhow::bail!(
                "`top` draws on stdout: spans (--output text|json) and console metrics cannot go there too (use --output none|otlp, --metrics-addr)"
            );
        }
        for w in warnings {
            tracing::warn!("{w}");
        }
        let resource = setup::resource(&settings, host_name());
        let built = setup::build(&settings, resource, self.span_config()?, stdout_writer())?;
        Ok(built.outputs.with_sampling_config(self.trace.sampling()?))
    }
}

impl CaptureArgs {
    fn config(&self) -> CaptureConfig {
        CaptureConfig {
            ports: self.ports.ports.clone(),
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
            pcap_interfaces: self.interfaces.clone(),
            ..CaptureConfig::default()
        }
    }
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        // Held back while `top` has the terminal.
        .with_writer(logs::writer)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OLLAMA_TRACER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => run_command(cli.run, false),
        Some(Command::Run(args)) => run_command(args, false),
        Some(Command::Top(args)) => run_command(args, true),
        Some(Command::Replay { files, ports, speed, top, common }) => {
            replay_command(&files, &ports.ports, speed, top, &common)
        }
        Some(Command::Check { capture }) => return check_command(&capture),
    };
    // Whatever `top` held back (it releases them itself when it ends normally).
    logs::release();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ollama-tracer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Stdout: line-buffered on a terminal (each call shows as it completes), block-buffered else.
fn stdout_writer() -> Box<dyn Write + Send> {
    if io::stdout().is_terminal() {
        Box::new(LineWriter::new(io::stdout()))
    } else {
        Box::new(BufWriter::with_capacity(1 << 16, io::stdout()))
    }
}

fn replay_command(paths: &[PathBuf], ports: &[u16], speed: Option<f64>, top: bool, common: &Common) -> Result<()> {
    if speed.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
        anyhow::bail!("--speed must be a positive number");
    }
    if top {
        require_terminal()?;
    }
    // A capture file is untrusted input and replay needs no privilege: give up any held.
    if let Err(e) = privileges::restrict_current_thread(&[]) {
        tracing::warn!("{e}");
    }
    let files = open_all(paths).context("cannot replay")?;
    for f in &files {
        if let Some(offset) = f.truncated_at() {
            eprintln!(
                "ollama-tracer: warning: {}: last record at byte offset {offset} is cut short (ignored)",
                f.path().display()
            );
        }
    }
    // SIGINT/SIGTERM end the replay early; what was seen is still flushed and summarised.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handler")?;
    }
    let mut view = None;
    let mut outputs = if top {
        let source = speed.map_or_else(|| "replay".to_string(), |s| format!("replay ×{s}"));
        let shared = SharedTop::new(common.top_config(source)?);
        let outputs = common.top_outputs()?.with_sink(Box::new(TopSink::new(shared.clone())));
        // `q` stops the replay too (the same flag as the signals).
        logs::hold();
        view =
            Some((Ui::spawn(shared.clone(), stop.clone(), Box::new(|| {})).context("cannot start the view")?, shared));
        outputs
    } else {
        common.outputs()?
    };
    let opts =
        ReplayOptions { speed, stop: Some(stop.clone()), tick: Some(Duration::from_millis(250)), in_flight: top };
    let mut report = replay_with(&files, ports, common.pipeline()?, &opts, &mut |ev| match ev {
        ReplayEvent::Call(c) => outputs.call(c),
        ReplayEvent::Tick(r) => {
            let mut r = r.clone();
            r.spans = outputs.spans();
            outputs.health(&r);
        }
        ReplayEvent::InFlight(s) => outputs.in_flight(s),
    });
    report.spans = outputs.spans();
    // The final snapshot first: the last metrics push and scrape carry the final counters.
    outputs.health(&report);
    // The view stays up on the final state until `q` (or a signal).
    let ui_stats = match view {
        Some((ui, shared)) => {
            shared.lock().finished = true;
            let stats = ui.join();
            logs::release();
            Some(stats.context("the terminal view failed")?)
        }
        None => None,
    };
    let shut = outputs.shutdown(Duration::from_millis(common.flush_timeout));
    report.export = outputs.export_stats();
    if !common.quiet {
        eprintln!("{report}");
        if let Some(s) = ui_stats {
            eprintln!("  {s}");
        }
    }
    shut.context("writing spans")?;
    Ok(())
}

/// `top` draws on the terminal: anything else on stdout is a mistake, said before starting.
fn require_terminal() -> Result<()> {
    if !io::stdout().is_terminal() {
        anyhow::bail!(
            "`top` needs a terminal on stdout, and stdout is a pipe or a file: use `run` (or `replay`) for text or JSON output"
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn run_command(args: RunArgs, top: bool) -> Result<()> {
    if top {
        require_terminal()?;
    }
    // Blocking-pool threads started before the capability drop (DNS for the Kubernetes client)
    // keep the full set while they live: let them go after 100 ms idle, not tokio's 10 s.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(Duration::from_millis(100))
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut opts = LiveOptions {
            mode: args.capture.mode,
            capture: args.capture.config(),
            pipeline: args.common.pipeline()?,
            flush_timeout: Duration::from_millis(args.common.flush_timeout),
        };
        args.attribution
            .install(opts.mode, &mut opts.capture, &mut opts.pipeline)
            .context("cannot start attribution")?;
        let live = Live::start(&opts).context("cannot start the live capture")?;
        tracing::info!("capture: {}", live.reason());
        // Attached: from here on nothing needs to load programs, attach or open raw sockets.
        // The threads started below (pipeline, export, metrics, the view) inherit the reduced set.
        match privileges::drop_after_attach(opts.pipeline.attribution.is_some()) {
            Ok(d) => tracing::info!("privileges: {d}"),
            Err(e) => tracing::warn!("{e}; running with the capabilities it was given"),
        }
        let attribution = opts.pipeline.attribution.clone();
        let (report, ui_stats) = if top {
            let source = if live.reason().starts_with("eBPF") { "live eBPF" } else { "live pcap" };
            let shared = SharedTop::new(args.common.top_config(source.to_string())?);
            let outputs = args.common.top_outputs()?.with_sink(Box::new(TopSink::new(shared.clone())));
            let quit = Arc::new(AtomicBool::new(false));
            let asked = Arc::new(tokio::sync::Notify::new());
            let on_quit = {
                let asked = asked.clone();
                Box::new(move || asked.notify_one())
            };
            logs::hold();
            let ui = Ui::spawn(shared.clone(), quit.clone(), on_quit).context("cannot start the view")?;
            let until = async {
                tokio::select! {
                    _ = shutdown_signal() => {}
                    _ = asked.notified() => {}
                }
            };
            let report = live.run(opts.pipeline, opts.flush_timeout, outputs, until).await;
            quit.store(true, std::sync::atomic::Ordering::Relaxed);
            let stats = ui.join();
            logs::release();
            (report?, Some(stats.context("the terminal view failed")?))
        } else {
            let outputs = args.common.outputs()?;
            (live.run(opts.pipeline, opts.flush_timeout, outputs, shutdown_signal()).await?, None::<UiStats>)
        };
        if !args.common.quiet {
            eprintln!("{report}");
            if let Some(a) = attribution {
                eprintln!("  {}", a.stats());
            }
            if let Some(s) = ui_stats {
                eprintln!("  {s}");
            }
        }
        Ok(())
    })
}

fn check_command(args: &CaptureArgs) -> ExitCode {
    let config = args.config();
    let report = CheckReport::gather_for(&config);
    println!("{report}");
    let (backend, why) = plan(args.mode, &config, &report);
    println!("run would use: {backend} ({why})");
    ExitCode::from(report.exit_code() as u8)
}
