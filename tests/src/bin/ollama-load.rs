//! `ollama-load`: concurrent Ollama calls against a server (the stand-in or a real Ollama), for
//! measuring the tracer under load. Prints a JSON summary; `--records` writes one JSON line per
//! call (client-side timestamps and the counts the server reported).
//!
//! Example, 100 concurrent streams of 500 tokens at 50 tokens/s against the stand-in:
//! `ollama-load --addr 127.0.0.1:11434 --connections 100 --model '@synth:tokens=500,rate=50/llama3.2'`

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use testkit::load::{self, LoadSpec, MakeRequest, Request};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Route {
    /// `/api/chat`
    Chat,
    /// `/api/generate`
    Generate,
    /// `/api/embed` (`--inputs` vectors)
    Embed,
    /// `/v1/chat/completions` (streams with `include_usage`)
    Openai,
}

#[derive(Parser, Debug)]
#[command(name = "ollama-load", about = "Concurrent Ollama calls, for measuring the tracer under load")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:11434")]
    addr: SocketAddr,
    /// Connections at once (each makes its calls one after the other, keep-alive).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Calls per connection (ignored with --duration).
    #[arg(long, default_value_t = 1)]
    calls: usize,
    /// Keep calling for this many seconds instead of --calls.
    #[arg(long)]
    duration: Option<f64>,
    /// Spread the connections' starts over this many seconds.
    #[arg(long, default_value_t = 0.0)]
    ramp: f64,
    #[arg(long, value_enum, default_value = "chat")]
    route: Route,
    /// Model name; stand-in scenarios go in front: `@synth:tokens=500,rate=50/llama3.2`.
    #[arg(long, default_value = "@synth:tokens=200,rate=50/llama3.2")]
    model: String,
    /// Ask for a whole answer instead of a stream.
    #[arg(long)]
    no_stream: bool,
    /// Inputs per `/api/embed` call.
    #[arg(long, default_value_t = 8)]
    inputs: usize,
    /// Write one JSON line per call here.
    #[arg(long)]
    records: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (model, stream, inputs, route) = (args.model.clone(), !args.no_stream, args.inputs, args.route);
    let make: MakeRequest = Arc::new(move |_, _| match route {
        Route::Chat => Request::chat(&model, stream, "Why is the sky blue?"),
        Route::Generate => Request::generate(&model, stream, "Why is the sky blue?"),
        Route::Embed => Request::embed(&model, inputs),
        Route::Openai => Request::openai_chat(&model, stream, "Why is the sky blue?"),
    });
    let mut spec = LoadSpec::new(args.addr, args.connections, args.calls, make);
    spec.duration = args.duration.map(Duration::from_secs_f64);
    spec.ramp = Duration::from_secs_f64(args.ramp);
    let t = Instant::now();
    let records = rt.block_on(load::run(spec));
    let summary = load::summary(&records, t.elapsed());
    if let Some(path) = &args.records {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for r in &records {
            serde_json::to_writer(&mut f, r)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
    }
    println!("{}", serde_json::to_string(&summary)?);
    if summary.errors > 0 {
        anyhow::bail!("{} of {} calls failed", summary.errors, summary.calls);
    }
    Ok(())
}
