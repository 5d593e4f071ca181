//! `cargo xtask bench`: every benchmark of docs/benchmarks.md, end to end, with one command.
//!
//! - `stages`: the criterion benchmarks of the pipeline's stages and of the whole replay
//!   pipeline (tests/benches);
//! - `replay`: `ollama-tracer replay` on a generated capture of ≥ 1 GB, and against tshark
//!   doing HTTP reassembly on the same bytes;
//! - `live` (root): the daemon attached (eBPF, then libpcap) while `ollama-load` streams against
//!   the stand-in: CPU, RSS, kernel drops, spans; then the knee, where drops begin;
//! - `cost` (root): bulk throughput and small-call latency on loopback without the tracer, with
//!   eBPF, with libpcap, interleaved;
//! - `memory` (root): 10 000 idle keep-alive connections and 100 slow streams, the tracer's RSS;
//! - `tls` (root): the TLS probes' cost: small calls over TLS (Go, curl) with and without the
//!   tracer, the kernel programs' time per TLS record, 100 TLS streams' daemon CPU.
//!
//! Raw results go to `DIR/results.json`, a summary to `DIR/summary.md`. `--smoke` runs each with
//! tiny sizes (seconds, debug binaries): it checks the harness and that the figures are sane,
//! never a speed. Generated captures and logs live in one work directory, removed at the end.

mod cost;
mod live;
mod proc;
mod replay;
mod report;
mod stages;
mod tls;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

pub use proc::is_root;

/// Benchmark names, in the order they run.
pub const ALL: [&str; 6] = ["stages", "replay", "live", "cost", "memory", "tls"];

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Tiny sizes, seconds per benchmark, debug binaries: checks the harness, not the speed.
    #[arg(long)]
    pub smoke: bool,
    /// Run only these benchmarks (stages, replay, live, cost, memory, tls).
    #[arg(long, num_args = 1.., value_name = "NAME")]
    pub only: Vec<String>,
    /// Where results.json and summary.md go (default: target/bench, target/bench-smoke).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// With --smoke: the release binaries (default: the debug ones `cargo test` built).
    #[arg(long)]
    pub release: bool,
    /// Keep the generated captures and logs (in DIR/work).
    #[arg(long)]
    pub keep: bool,
    /// An `ollama-tracer` binary to measure beside this tree's, interleaved in the same run (the
    /// "before" of a change: build it from the earlier commit, e.g. in a git worktree).
    #[arg(long, value_name = "BINARY")]
    pub baseline: Option<PathBuf>,
}

/// What every benchmark needs: sizes, binaries, directories.
pub struct Env {
    pub smoke: bool,
    pub root: PathBuf,
    /// The `ollama-tracer` binary (eBPF built in).
    pub tracer: PathBuf,
    /// `--baseline`: the binary measured beside `tracer`, interleaved, when given.
    pub baseline: Option<PathBuf>,
    /// Where the test binaries are (ollama-standin, ollama-load, bench-capture, bench-traffic).
    pub bins: PathBuf,
    /// Captures, logs, slices: removed at the end unless `--keep`.
    pub work: PathBuf,
}

impl Env {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }

    /// A path in the work directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }
}

/// Removes the work directory on any outcome (captures are large, the disk is small).
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

/// Builds what the benchmarks run: the tracer, and the helper binaries (stand-in, capture
/// generator, load clients). Not `--smoke`: the tracer in the `measure` profile — the codegen
/// of the binary people download (`dist`: one unit, whole-program LTO), with symbols for
/// profilers; the helpers in plain release, whose speed is not measured (each under
/// whole-program LTO would add minutes). `--smoke`: the debug binaries `cargo test` built.
/// Returns (tracer, helpers' directory).
fn build(root: &Path, debug: bool) -> Result<(PathBuf, PathBuf)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let profiles: &[(&str, &[&str])] = if debug {
        // One invocation: built together the tracer and the helpers share their dependencies'
        // features as in `cargo test`, so nothing is rebuilt.
        &[("dev", &["-p", "tracer-user", "--bin", "ollama-tracer", "-p", "ollama-tracer-tests", "--bins"])]
    } else {
        &[
            ("release", &["-p", "ollama-tracer-tests", "--bins"]),
            ("measure", &["-p", "tracer-user", "--bin", "ollama-tracer"]),
        ]
    };
    for (profile, what) in profiles {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(root).args(["build", "--quiet", "--locked", "--profile", profile]).args(*what);
        // The eBPF object must be built in; the environment is the one of the build being
        // reused (`cargo test` in `cargo xtask test`, scripts/build-release.sh), or build.rs
        // would run again.
        cmd.env("OLLAMA_TRACER_REQUIRE_EBPF", "1");
        if !debug {
            cmd.env("OLLAMA_TRACER_EBPF_TOOLCHAIN", "nightly");
        }
        super::run(&mut cmd)?;
    }
    let dir = |d: &str| target_dir(root).join(d);
    Ok(if debug {
        (dir("debug").join("ollama-tracer"), dir("debug"))
    } else {
        (dir("measure").join("ollama-tracer"), dir("release"))
    })
}

/// The machine the figures come from.
fn machine() -> Value {
    let out = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let lscpu = out("lscpu", &[]);
    let pick = |key: &str| {
        lscpu.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim_start_matches(':').trim().to_owned())
    };
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .unwrap_or(0);
    json!({
        "cpu": pick("Model name"), "cpus": pick("CPU(s)"), "hypervisor": pick("Hypervisor vendor"),
        "l2": pick("L2 cache"), "l3": pick("L3 cache"),
        "kernel": out("uname", &["-r"]), "memory_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
        "os": std::fs::read_to_string("/etc/debian_version").map(|s| format!("Debian {}", s.trim())).unwrap_or_default(),
        "rustc": out("rustc", &["--version"]), "tshark": out("tshark", &["--version"]).lines().next().unwrap_or("").to_owned(),
        "loadavg_at_start": proc::loadavg(),
        "other_busy_processes": busy_processes(),
    })
}

/// Processes other than ours using CPU right now (another engineer's build, a fuzzer), from
/// `ps`: what the load average at the time means.
fn busy_processes() -> Vec<String> {
    let out = Command::new("ps").args(["-eo", "pcpu,ni,comm", "--sort=-pcpu", "--no-headers"]).output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().next().and_then(|c| c.parse::<f64>().ok()).is_some_and(|c| c >= 5.0))
        .take(8)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// Runs the benchmarks `args` selects. Fails if any benchmark failed (the others still run and are written).
pub fn run(args: &BenchArgs, root: &Path) -> Result<()> {
    for n in &args.only {
        if !ALL.contains(&n.as_str()) {
            bail!("unknown benchmark {n:?} (known: {})", ALL.join(", "));
        }
    }
    let selected: Vec<&str> =
        ALL.iter().copied().filter(|n| args.only.is_empty() || args.only.iter().any(|o| o == n)).collect();
    let out =
        args.out.clone().unwrap_or_else(|| target_dir(root).join(if args.smoke { "bench-smoke" } else { "bench" }));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // Root may raise the limit for the memory benchmark's 10 000 connections (children
    // inherit it); without root the root-only benchmarks are skipped anyway.
    if is_root() {
        // 10 000 connections: as many descriptors in the client and in the stand-in.
        proc::raise_nofile(65_536, 10_500)?;
    }
    let (tracer, bins) = build(root, args.smoke && !args.release)?;
    let work = out.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let _cleanup = WorkDir { path: work.clone(), keep: args.keep };
    if let Some(b) = &args.baseline
        && !b.is_file()
    {
        bail!("--baseline {}: no such file", b.display());
    }
    let baseline = args.baseline.as_ref().map(|b| std::fs::canonicalize(b).unwrap_or_else(|_| b.clone()));
    let env = Env { smoke: args.smoke, root: root.to_path_buf(), tracer, baseline, bins, work };

    let machine = machine();
    let mut results = Map::new();
    let mut failed = Vec::new();
    let started = Instant::now();
    for name in &selected {
        eprintln!("xtask bench: {name}{}", if args.smoke { " (smoke)" } else { "" });
        let t = Instant::now();
        let load_before = proc::loadavg();
        let r = match *name {
            "stages" => stages::run(&env),
            "replay" => replay::run(&env),
            "live" => live::run_load(&env),
            "cost" => cost::run(&env),
            "memory" => live::run_memory(&env),
            "tls" => tls::run(&env),
            _ => unreachable!("checked above"),
        };
        let mut v = match r {
            Ok(v) => v,
            Err(e) => {
                eprintln!("xtask bench: {name} FAILED: {e:#}");
                failed.push(*name);
                json!({"error": format!("{e:#}")})
            }
        };
        if let Some(o) = v.as_object_mut() {
            o.insert("loadavg_before".into(), load_before);
            o.insert("loadavg_after".into(), proc::loadavg());
            o.insert("secs".into(), json!(t.elapsed().as_secs_f64()));
        }
        results.insert((*name).to_owned(), v);
        // Written after each benchmark: a long run that fails late keeps what it measured.
        write_results(&out, args.smoke, &machine, &results, started)?;
    }
    eprintln!("xtask bench: results in {}", out.display());
    if !failed.is_empty() {
        bail!("benchmark(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

fn write_results(
    out: &Path,
    smoke: bool,
    machine: &Value,
    results: &Map<String, Value>,
    started: Instant,
) -> Result<()> {
    let doc = json!({
        "smoke": smoke,
        "machine": machine,
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "secs": started.elapsed().as_secs_f64(),
        "benchmarks": results,
    });
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&doc)?)?;
    std::fs::write(out.join("summary.md"), report::markdown(&doc))?;
    Ok(())
}

/// Says loudly that a root-only benchmark did not run, and records it.
pub fn skipped_not_root(what: &str) -> Value {
    eprintln!("*** SKIPPED: not root *** (xtask bench {what}: attaches eBPF / libpcap)");
    json!({"skipped": "not root"})
}
