//! `ollama-tracer`: trace every Ollama call from the wire.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use ollama_tracer::export::stdout::{write_json, write_text};
use ollama_tracer::http::HttpConfig;
use ollama_tracer::llm::LlmCall;
use ollama_tracer::pipeline::PipelineConfig;
use ollama_tracer::replay::{open_all, replay};
use ollama_tracer::span::{Resource, SpanBuilder, SpanConfig, semconv};

#[derive(Parser, Debug)]
#[command(name = "ollama-tracer", version, about = "Trace every Ollama call from the wire: OpenTelemetry GenAI spans without touching clients or Ollama")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Replay recorded captures (pcap or pcapng) through the pipeline.
    Replay {
        /// Capture files; several are merged by timestamp.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args, Debug)]
struct Common {
    /// Ollama server port(s) to trace.
    #[arg(long = "port", default_value = "11434", value_name = "PORT")]
    ports: Vec<u16>,
    /// Where spans go: `text` (one line per call), `json` (one OTLP-shaped span per line).
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
    /// Nothing (summary only).
    None,
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ollama-tracer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Replay { files, common } => replay_command(&files, &common),
    }
}

fn replay_command(paths: &[PathBuf], common: &Common) -> Result<()> {
    let files = open_all(paths).context("cannot replay")?;
    for f in &files {
        if let Some(offset) = f.truncated_at() {
            eprintln!("ollama-tracer: warning: {}: last record at byte offset {offset} is cut short (ignored)", f.path().display());
        }
    }
    let resource = Resource::new(&common.service_name, host_name(), Vec::new());
    let mut builder = SpanBuilder::new(SpanConfig { id_seed: common.id_seed });
    let stdout = io::stdout();
    let mut w = BufWriter::new(stdout.lock());
    let mut spans = 0u64;
    let mut write_err: Option<io::Error> = None;
    let config = PipelineConfig {
        http: HttpConfig { keep_headers: common.keep_headers.iter().map(|h| h.to_ascii_lowercase()).collect() },
        ..Default::default()
    };
    let mut sink = |call: LlmCall| {
        let span = builder.build(&call);
        spans += 1;
        let res = match common.output {
            Output::Json => write_json(&mut w, &span, &resource),
            Output::Text => write_text(&mut w, &call, &span),
            Output::None => Ok(()),
        };
        if let Err(e) = res
            && write_err.is_none()
        {
            write_err = Some(e);
        }
    };
    let mut report = replay(&files, &common.ports, config, &mut sink);
    report.spans = spans;
    if let Some(e) = write_err
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        return Err(e).context("writing spans");
    }
    w.flush().ok();
    if !common.quiet {
        eprintln!("{report}");
    }
    Ok(())
}
