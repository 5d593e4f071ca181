//! The criterion benchmarks (tests/benches `stages` and `pipeline`), their estimates collected
//! from criterion's output directory. `--smoke` runs them once each as tests
//! (`cargo test --bench`, debug, `OLLAMA_TRACER_BENCH_SMOKE=1` shrinks the captures).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::Env;

const BENCHES: [&str; 2] = ["stages", "pipeline"];

/// Every `new/estimates.json` under `dir` (criterion's layout: group/function/new/).
fn collect(dir: &Path, out: &mut Vec<Value>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        let (est, bench) = (p.join("new/estimates.json"), p.join("new/benchmark.json"));
        if let (Ok(est), Ok(bench)) = (std::fs::read_to_string(&est), std::fs::read_to_string(&bench)) {
            let (Ok(est), Ok(bench)) = (serde_json::from_str::<Value>(&est), serde_json::from_str::<Value>(&bench))
            else {
                continue;
            };
            let ns = est["mean"]["point_estimate"].as_f64().unwrap_or(f64::NAN);
            let mut v = json!({"id": bench["full_id"], "mean_ns": ns,
                "ci_ns": [est["mean"]["confidence_interval"]["lower_bound"], est["mean"]["confidence_interval"]["upper_bound"]]});
            if let Some(b) = bench["throughput"]["Bytes"].as_f64() {
                v["mib_per_s"] = json!(b / (ns / 1e9) / (1 << 20) as f64);
            }
            if let Some(n) = bench["throughput"]["Elements"].as_f64() {
                v["per_s"] = json!(n / (ns / 1e9));
            }
            out.push(v);
        } else {
            collect(&p, out);
        }
    }
}

pub fn run(env: &Env) -> Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Absolute: cargo runs the benchmarks from the package's directory, not from here (`--out`
    // may be relative).
    let work = std::path::absolute(&env.work).unwrap_or_else(|_| env.work.clone());
    cmd.current_dir(&env.root).env("OLLAMA_TRACER_REQUIRE_EBPF", "1").env("TMPDIR", work);
    if env.smoke {
        cmd.args(["test", "--quiet", "-p", "ollama-tracer-tests"]).env("OLLAMA_TRACER_BENCH_SMOKE", "1");
    } else {
        cmd.args(["bench", "--quiet", "-p", "ollama-tracer-tests"]);
    }
    for b in BENCHES {
        cmd.args(["--bench", b]);
    }
    if !env.smoke {
        cmd.args(["--", "--noplot"]);
    }
    super::super::run(&mut cmd).context("criterion benchmarks")?;
    if env.smoke {
        return Ok(json!({"mode": "test (each benchmark once)", "benches": BENCHES}));
    }
    let criterion = super::target_dir(&env.root).join("criterion");
    let mut results = Vec::new();
    for group in ["stage", "decode", "spans", "replay"] {
        collect(&criterion.join(group), &mut results);
    }
    results.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(json!({"benches": BENCHES, "results": results}))
}
