//! A lossy copy of a capture, as a passive tracer under load sees one: payload segments dropped,
//! duplicated and recorded out of order at given rates, deterministic by seed
//! (`testkit::synth::perturb::lossy`); optionally several copies of its clients interleaved first.
//! Replay both with `ollama-tracer replay` to see what the loss costs.
//!
//! cargo run -p ollama-tracer-tests --bin perturb-capture -- IN OUT [--drop 0.01] [--seed 1]

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use testkit::pcap::{self, FileFormat, LinkType, TsPrecision, WriterConfig};
use testkit::synth::perturb::{LossModel, lossy, replicate};

#[derive(Parser, Debug)]
#[command(about = "Write a lossy copy of a pcap/pcapng capture of Ollama traffic")]
struct Args {
    /// Capture to read (pcap or pcapng, any link type the tracer reads).
    input: PathBuf,
    /// pcap (ns, Ethernet) to write.
    output: PathBuf,
    /// Share of payload segments dropped.
    #[arg(long, default_value_t = 0.01)]
    drop: f64,
    /// Share of payload segments seen twice.
    #[arg(long, default_value_t = 0.02)]
    duplicate: f64,
    /// Share of payload segments recorded up to `--window` places late.
    #[arg(long, default_value_t = 0.02)]
    reorder: f64,
    #[arg(long, default_value_t = 3)]
    window: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Copies of the capture's clients, interleaved 37 ms apart on distinct ports, before the loss.
    #[arg(long, default_value_t = 1)]
    copies: usize,
    /// Server port(s) of the capture.
    #[arg(long, default_values_t = [11434])]
    port: Vec<u16>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let packets =
        pcap::read_packets(&args.input, &args.port).with_context(|| format!("reading {}", args.input.display()))?;
    let server = args.port[0];
    let (packets, _) = replicate(&packets, args.copies.max(1), 613, 37_000_000, server);
    let model = LossModel { drop: args.drop, duplicate: args.duplicate, reorder: args.reorder, window: args.window };
    let out = lossy(&packets, &model, args.seed);
    let cfg = WriterConfig::new(FileFormat::Pcap, TsPrecision::Nano, LinkType::Ethernet);
    pcap::write_file(&args.output, cfg, &out.packets).with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "{}: {} packets; {} payload segments dropped, {} duplicated, {} reordered",
        args.output.display(),
        out.packets.len(),
        out.dropped.len(),
        out.duplicated,
        out.reordered
    );
    Ok(())
}
