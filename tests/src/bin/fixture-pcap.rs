//! Regenerate test captures from the recorded fixtures: one capture per fixture (its own
//! connection) plus `all.<ext>`, every fixture on a few interleaved keep-alive connections.
//!
//! cargo run -p ollama-tracer-tests --bin fixture-pcap -- --out DIR [--link sll2] [--format pcapng]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use testkit::fixtures;
use testkit::pcap::{self, FileFormat, LinkType, TsPrecision, WriterConfig};
use testkit::synth::{self, ConnectionSpec, DEFAULT_START_NS, Segmentation, TcpConfig};
use testkit::wire::{RenderOptions, render};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// pcap, microsecond timestamps.
    Pcap,
    /// pcap, nanosecond timestamps.
    PcapNs,
    /// pcapng, nanosecond timestamps.
    Pcapng,
    /// pcapng, microsecond timestamps.
    PcapngUs,
}

#[derive(Parser, Debug)]
#[command(about = "Write one capture per recorded Ollama fixture plus a combined capture")]
struct Args {
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Link type: null, ethernet, raw, raw12, raw14, sll, sll2.
    #[arg(long, default_value = "ethernet")]
    link: LinkType,
    #[arg(long, value_enum, default_value_t = Format::Pcap)]
    format: Format,
    /// Use [::1] instead of 127.0.0.1.
    #[arg(long)]
    ipv6: bool,
    /// Largest TCP payload per segment (default: loopback's 65483).
    #[arg(long, default_value_t = synth::LOOPBACK_MSS)]
    mss: usize,
    /// Seed for ISNs (and random segmentation with --random-segments).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Cut requests into random segments of 1..=MSS bytes.
    #[arg(long)]
    random_segments: bool,
    /// Keep-alive connections in the combined capture.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Only fixtures whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Also write `<capture>.truth.json` with the ground truth of each capture.
    #[arg(long)]
    truth: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (format, precision, ext) = match args.format {
        Format::Pcap => (FileFormat::Pcap, TsPrecision::Micro, "pcap"),
        Format::PcapNs => (FileFormat::Pcap, TsPrecision::Nano, "pcap"),
        Format::Pcapng => (FileFormat::PcapNg, TsPrecision::Nano, "pcapng"),
        Format::PcapngUs => (FileFormat::PcapNg, TsPrecision::Micro, "pcapng"),
    };
    let cfg = WriterConfig::new(format, precision, args.link);
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;

    let mut all = fixtures::load_all().context("loading fixtures")?;
    if let Some(only) = &args.only {
        all.retain(|f| f.name.contains(only.as_str()));
    }
    anyhow::ensure!(!all.is_empty(), "no fixtures selected");

    let tcp = TcpConfig {
        client_mss: args.mss,
        server_mss: args.mss,
        request_segmentation: if args.random_segments {
            Segmentation::Random { min: 1, max: args.mss }
        } else {
            Segmentation::Mss
        },
        ..TcpConfig::default()
    };
    let base = |port: u16| {
        let spec = if args.ipv6 { ConnectionSpec::loopback_v6(port) } else { ConnectionSpec::loopback_v4(port) };
        spec.tcp(tcp)
    };

    for (i, f) in all.iter().enumerate() {
        let spec = base(40_000 + (i % 20_000) as u16)
            .seed(args.seed.wrapping_add(i as u64))
            .exchange(render(f, &RenderOptions::default()));
        let capture = synth::synthesize(&[spec]).with_context(|| format!("synthesizing {}", f.name))?;
        write(&args.out.join(format!("{}.{ext}", f.name)), cfg, &capture, args.truth)?;
    }

    // Combined: fixture i on connection i % n, connections staggered by 10 ms.
    let n = args.connections.max(1);
    let mut specs: Vec<ConnectionSpec> = (0..n)
        .map(|c| {
            base(39_000 + c as u16)
                .seed(args.seed.wrapping_mul(1_000).wrapping_add(c as u64))
                .start_at(DEFAULT_START_NS + c as u64 * 10_000_000)
        })
        .collect();
    for (i, f) in all.iter().enumerate() {
        specs[i % n].exchanges.push(render(f, &RenderOptions::default()).into());
    }
    let capture = synth::synthesize(&specs).context("synthesizing the combined capture")?;
    write(&args.out.join(format!("all.{ext}")), cfg, &capture, args.truth)?;
    println!(
        "wrote {} per-fixture captures and all.{ext} ({} packets, {} connections) to {}",
        all.len(),
        capture.packets.len(),
        n,
        args.out.display()
    );
    Ok(())
}

fn write(path: &Path, cfg: WriterConfig, capture: &synth::Capture, truth: bool) -> Result<()> {
    pcap::write_file(path, cfg, &capture.packets).with_context(|| format!("writing {}", path.display()))?;
    if truth {
        let json = serde_json::to_vec_pretty(&capture.connections)?;
        let mut truth_path = path.as_os_str().to_owned();
        truth_path.push(".truth.json");
        std::fs::write(&truth_path, json).with_context(|| format!("writing {truth_path:?}"))?;
    }
    Ok(())
}
