//! `ollama-tracer`: trace every Ollama call from the wire.

use std::io::{self, BufWriter, IsTerminal, LineWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use ollama_tracer::capture::check::CheckReport;
use ollama_tracer::capture::live::{CaptureConfig, CaptureMode, EbpfAttach, plan};
use ollama_tracer::daemon::{Live, LiveOptions};
use ollama_tracer::export::{Outputs, Sink, StdoutFormat, StdoutSink};
use ollama_tracer::http::HttpConfig;
use ollama_tracer::pipeline::PipelineConfig;
use ollama_tracer::replay::{open_all, replay};
use ollama_tracer::span::{Resource, SpanConfig, semconv};

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
    /// Replay recorded captures (pcap or pcapng) through the pipeline.
    Replay {
        /// Capture files; several are merged by timestamp.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        ports: PortArgs,
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
    #[arg(long, default_value_t = 32)]
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
    /// Where spans go: `text` (one line per call), `json` (one OTLP-shaped span per line),
    /// `none`.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Request header to export as `http.request.header.<name>` (repeatable). Credentials and
    /// cookies are never exported.
    #[arg(long = "keep-header", value_name = "NAME", default_value = "user-agent")]
    keep_headers: Vec<String>,
    /// `service.name` of the spans (default: $OTEL_SERVICE_NAME, else `ollama`).
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = semconv::DEFAULT_SERVICE_NAME)]
    service_name: String,
    /// Seed for trace and span ids, for reproducible output.
    #[arg(long, hide = true)]
    id_seed: Option<u64>,
    /// Do not print the summary on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
    None,
}

impl Output {
    fn format(self) -> StdoutFormat {
        match self {
            Output::Text => StdoutFormat::Text,
            Output::Json => StdoutFormat::Json,
            Output::None => StdoutFormat::None,
        }
    }
}

impl Common {
    fn pipeline(&self) -> PipelineConfig {
        PipelineConfig {
            http: HttpConfig { keep_headers: self.keep_headers.iter().map(|h| h.to_ascii_lowercase()).collect() },
            ..Default::default()
        }
    }

    fn resource(&self) -> Resource {
        Resource::new(&self.service_name, host_name(), Vec::new())
    }

    fn span_config(&self) -> SpanConfig {
        SpanConfig { id_seed: self.id_seed, ..Default::default() }
    }

    fn outputs(&self) -> Outputs {
        let sinks: Vec<Box<dyn Sink>> = vec![Box::new(StdoutSink::new(self.output.format(), stdout_writer()))];
        Outputs::new(self.resource(), self.span_config(), sinks)
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
        .with_writer(io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OLLAMA_TRACER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => run_command(cli.run),
        Some(Command::Run(args)) => run_command(args),
        Some(Command::Replay { files, ports, common }) => replay_command(&files, &ports.ports, &common),
        Some(Command::Check { capture }) => return check_command(&capture),
    };
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

fn replay_command(paths: &[PathBuf], ports: &[u16], common: &Common) -> Result<()> {
    let files = open_all(paths).context("cannot replay")?;
    for f in &files {
        if let Some(offset) = f.truncated_at() {
            eprintln!(
                "ollama-tracer: warning: {}: last record at byte offset {offset} is cut short (ignored)",
                f.path().display()
            );
        }
    }
    let mut outputs = common.outputs();
    let mut report = replay(&files, ports, common.pipeline(), &mut |c| outputs.call(c));
    report.spans = outputs.spans();
    outputs.shutdown(std::time::Duration::from_secs(5)).context("writing spans")?;
    if !common.quiet {
        eprintln!("{report}");
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

fn run_command(args: RunArgs) -> Result<()> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async {
        let opts =
            LiveOptions { mode: args.capture.mode, capture: args.capture.config(), pipeline: args.common.pipeline() };
        let live = Live::start(&opts).context("cannot start the live capture")?;
        tracing::info!("capture: {}", live.reason());
        let outputs = args.common.outputs();
        let report = live.run(opts.pipeline, outputs, shutdown_signal()).await?;
        if !args.common.quiet {
            eprintln!("{report}");
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
