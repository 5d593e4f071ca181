//! Writes (or finds, cached) the benchmark capture and prints what it holds as one JSON line:
//! `bench-capture --bytes 1000000000`.

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Generate the large benchmark capture (cached in the temp dir)")]
struct Args {
    /// TCP payload bytes to generate at least.
    #[arg(long, default_value_t = 1_000_000_000)]
    bytes: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
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
