//! Writes (or finds, cached) the benchmark capture and prints what it holds as one JSON line:
//! `bench-capture --bytes 1000000000`. With `--steady RATE --seconds N --out FILE`, writes a
//! capture of RATE calls a second instead (each on its own connection; for `replay --speed 1`
//! as stand-in live traffic, e.g. measuring `top` at 1 000 calls/s).

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Generate the large benchmark capture (cached in the temp dir)")]
struct Args {
    /// TCP payload bytes to generate at least.
    #[arg(long, default_value_t = 1_000_000_000)]
    bytes: u64,
    /// Calls per second of a steady capture (with --seconds and --out).
    #[arg(long, requires_all = ["seconds", "out"])]
    steady: Option<u64>,
    #[arg(long)]
    seconds: Option<u64>,
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// With --steady: only streamed fixtures whose response body is at most this many bytes.
    #[arg(long, default_value_t = usize::MAX)]
    max_body: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let (Some(rate), Some(seconds), Some(out)) = (args.steady, args.seconds, &args.out) {
        let cap = testkit::bench_capture::steady_small(rate, seconds, args.max_body)?;
        // Moved out of the temp file that removes itself.
        std::fs::copy(&cap.path, out)?;
        println!("{}", serde_json::json!({"path": out, "calls": cap.calls, "payload_bytes": cap.payload_bytes}));
        return Ok(());
    }
    let (cap, kinds) = testkit::bench_capture::large_mix(args.bytes)?;
    println!(
        "{}",
        serde_json::json!({
            "path": cap.path, "calls": cap.calls, "payload_bytes": cap.payload_bytes, "file_bytes": cap.file_bytes,
            "native_streams": kinds[0], "openai_streams": kinds[1], "embed_batches": kinds[2],
        })
    );
    Ok(())
}
