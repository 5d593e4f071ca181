//! `ollama-standin`: a stand-in Ollama server for testing the tracer against real clients.
//!
//! Replays recorded Ollama responses (tests/fixtures/recorded) with the real server's framing
//! and pacing, synthesises the routes nothing was recorded for, and writes ground truth. See
//! `testkit::standin` for the details and `--help` for the scenarios.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use testkit::standin::{Config, DEFAULT_VERSION, SCENARIO_HELP, Server, Timing, tls};

#[derive(Parser, Debug)]
#[command(
    name = "ollama-standin",
    about = "Stand-in Ollama server: replays recorded Ollama responses with the real framing and timing, logs ground truth",
    after_help = SCENARIO_HELP
)]
struct Args {
    /// Address to listen on; repeat for several (port 0 picks a free port).
    #[arg(long = "listen", default_value = "127.0.0.1:11434")]
    listen: Vec<SocketAddr>,
    /// Append one JSON object per call (ground truth) to this file (truncated at start).
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Write the first listener's port to this file once listening.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// Time to first chunk, ms.
    #[arg(long, default_value_t = 50)]
    ttft_ms: u64,
    /// Gap between streamed chunks, ms (ignored with --tokens-per-sec).
    #[arg(long, default_value_t = 15)]
    gap_ms: u64,
    /// Streaming rate instead of --gap-ms.
    #[arg(long)]
    tokens_per_sec: Option<f64>,
    /// Time to first chunk of the `slow` scenario, ms.
    #[arg(long, default_value_t = 3000)]
    slow_ttft_ms: u64,
    /// Wait before answering a metadata route (`/api/version`, `/api/tags` …), ms.
    #[arg(long, default_value_t = 1)]
    meta_delay_ms: u64,
    /// Cap on the wait before a replayed non-streamed fixture, ms.
    #[arg(long, default_value_t = 1000)]
    max_whole_delay_ms: u64,
    /// Loading a model the first call to it needs (a cold start, reported as its
    /// load_duration; 0: none). Explicit load requests wait for it too.
    #[arg(long, default_value_t = 0)]
    load_ms: u64,
    /// Version `/api/version` reports.
    #[arg(long, default_value = DEFAULT_VERSION)]
    version: String,
    /// On SIGTERM/SIGINT, how long calls in progress may take to finish, ms.
    #[arg(long, default_value_t = 2000)]
    drain_ms: u64,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Serve HTTPS: make a test CA and a certificate for localhost, 127.0.0.1-3, ::1, the
    /// listen addresses and *.test names, write the CA to DIR/ca.pem (and the server's
    /// certificate and key), and serve TLS on every listener.
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    rt.build()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let gap = match args.tokens_per_sec {
        Some(r) if r > 0.0 => Duration::from_secs_f64(1.0 / r),
        Some(_) => anyhow::bail!("--tokens-per-sec must be positive"),
        None => Duration::from_millis(args.gap_ms),
    };
    let tls = match &args.tls_dir {
        Some(dir) => {
            let ips: Vec<_> = args.listen.iter().map(|a| a.ip()).collect();
            Some(tls::server_config(dir, &ips).context("--tls-dir")?)
        }
        None => None,
    };
    let config = Config {
        listen: args.listen,
        truth: args.truth,
        timing: Timing {
            ttft: Duration::from_millis(args.ttft_ms),
            gap,
            slow_ttft: Duration::from_millis(args.slow_ttft_ms),
            max_whole_delay: Duration::from_millis(args.max_whole_delay_ms),
            cold_load: Duration::from_millis(args.load_ms),
            meta_delay: Duration::from_millis(args.meta_delay_ms),
        },
        version: args.version,
        drain: Duration::from_millis(args.drain_ms),
        tls,
    };
    let server = Server::bind(config).await?;
    let addrs = server.local_addrs();
    if let (Some(path), Some(first)) = (&args.port_file, addrs.first()) {
        // Write then rename, so a watcher never reads a half-written file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{}\n", first.port()))
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for a in &addrs {
        println!("listening on {a}");
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    server.run(shutdown_signal()).await;
    eprintln!("ollama-standin: stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers, run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
