//! `bench-traffic`: the traffic of the cost and memory benchmarks (`cargo xtask bench`), one
//! JSON line of results on stdout.
//!
//! - `bench-traffic bulk --port P --bytes N`: one N-byte response over loopback, throughput;
//! - `bench-traffic upload --addr A --bytes N`: one N-byte blob upload to the stand-in at A;
//! - `bench-traffic latency --port P --calls N`: N small keep-alive calls, p50/p90/p99;
//! - `bench-traffic idle --addr A --connections N`: N connections that each make one call, then
//!   stay open and silent until stdin closes (prints `ready` once they are all open).

use std::io::Read;
use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use testkit::traffic;

#[derive(Parser)]
#[command(name = "bench-traffic", about = "Traffic for the tracer's cost and memory benchmarks")]
struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// One large response (server and client in this process).
    Bulk {
        /// Server port on 127.0.0.1 (0: a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[arg(long, default_value_t = 1_000_000_000)]
        bytes: u64,
    },
    /// One large blob upload to a server (the stand-in) at `addr`.
    Upload {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
    },
    /// Small calls one after the other on a keep-alive connection.
    Latency {
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[arg(long, default_value_t = 10_000)]
        calls: usize,
    },
    /// Idle keep-alive connections to a server (each makes one call first).
    Idle {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Connections opened (then called) at a time.
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().what {
        What::Bulk { port, bytes } => println!("{}", serde_json::to_string(&traffic::bulk(port, bytes)?)?),
        What::Upload { addr, bytes } => println!("{}", serde_json::to_string(&traffic::upload(addr, bytes)?)?),
        What::Latency { port, calls } => println!("{}", serde_json::to_string(&traffic::latency(port, calls)?)?),
        What::Idle { addr, connections, batch } => {
            let t = std::time::Instant::now();
            let idle = traffic::idle(addr, connections, batch)?;
            println!("{}", serde_json::json!({"ready": idle.conns.len(), "open_secs": t.elapsed().as_secs_f64()}));
            // Held until whoever started us closes our stdin (or kills us).
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        }
    }
    Ok(())
}
