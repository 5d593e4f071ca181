//! What tracing costs the traffic it watches: bulk throughput (one large response), a large
//! blob upload to the stand-in (an `ollama create`: bytes no decoder reads, which the eBPF
//! capture reports by length without copying), and the latency of small keep-alive calls on
//! loopback — without the tracer, with the eBPF capture, with the libpcap fallback, and with
//! `--baseline` the baseline binary's eBPF capture too. Rounds interleave the modes (in a
//! rotating order), so a machine that gets busier or quieter during the run affects them
//! alike; figures are medians over rounds.

use std::process::Command;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::live::{Standin, Tracer};
use super::proc::measure;
use super::{Env, is_root};

/// `ebpf-base`: the `--baseline` binary's eBPF capture.
const MODES: [&str; 4] = ["none", "ebpf", "ebpf-base", "pcap"];

/// The upload that goes before the measured ones.
const WARM_UP_BYTES: u64 = 1 << 20;

/// Measured uploads per round and mode: one 0.25 s transfer moves ±5 % between rounds, so the
/// median is taken over every upload of every round.
const UPLOADS_PER_ROUND: usize = 3;

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn traffic(env: &Env, args: &[&str]) -> Result<Value> {
    let out = env.file("traffic.json");
    measure("bench-traffic", Command::new(env.bin("bench-traffic")).args(args), &out)?;
    let v = serde_json::from_str(std::fs::read_to_string(&out)?.trim()).context("bench-traffic output")?;
    Ok(v)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

/// The same settings with the baseline binary as the tracer.
fn baseline_env(env: &Env) -> Option<Env> {
    Some(Env {
        smoke: env.smoke,
        root: env.root.clone(),
        tracer: env.baseline.clone()?,
        baseline: None,
        bins: env.bins.clone(),
        work: env.work.clone(),
    })
}

pub fn run(env: &Env) -> Result<Value> {
    let (rounds, bytes, upload, calls) =
        if env.smoke { (1, 20_000_000u64, 20_000_000u64, 300) } else { (5, 1_000_000_000, 1 << 30, 20_000) };
    let base_env = baseline_env(env);
    let modes: Vec<&str> = if is_root() {
        MODES.iter().copied().filter(|m| *m != "ebpf-base" || base_env.is_some()).collect()
    } else {
        eprintln!("*** SKIPPED: not root *** (xtask bench cost: the eBPF and libpcap modes)");
        vec!["none"]
    };
    let standin = Standin::start(env)?;
    let mut runs = Vec::new();
    for round in 0..rounds {
        for i in 0..modes.len() {
            let mode = modes[(i + round) % modes.len()];
            let port = free_port()?;
            let sp = standin.addr.port().to_string();
            let start = |tag: &str| -> Result<Option<Tracer>> {
                Ok(match mode {
                    "none" => None,
                    "ebpf-base" => {
                        let b = base_env.as_ref().expect("ebpf-base only with --baseline");
                        Some(Tracer::start(b, &format!("cost-{tag}-ebpf-base"), "ebpf", port, &["--port", &sp])?)
                    }
                    capture => {
                        Some(Tracer::start(env, &format!("cost-{tag}-{capture}"), capture, port, &["--port", &sp])?)
                    }
                })
            };
            // The uploads under a tracer of their own, so that what they lost is their own. A
            // first small upload (in every mode) takes what a tracer does once per server it
            // has not seen yet out of the measured ones: the owner scan of /proc (≈ 12 ms of
            // CPU here).
            let tracer = start("upload")?;
            let addr = standin.addr.to_string();
            traffic(env, &["upload", "--addr", &addr, "--bytes", &WARM_UP_BYTES.to_string()])?;
            let mut ups = Vec::with_capacity(UPLOADS_PER_ROUND);
            for _ in 0..UPLOADS_PER_ROUND {
                let up = traffic(env, &["upload", "--addr", &addr, "--bytes", &upload.to_string()])?;
                anyhow::ensure!(up["status"].as_str().is_some_and(|s| s.contains(" 201 ")), "upload refused: {up}");
                ups.push(up);
            }
            let upload_summary = tracer.map(Tracer::stop).transpose()?;
            let up_rates: Vec<f64> = ups.iter().filter_map(|u| u["mb_per_s"].as_f64()).collect();
            let tracer = start("bulk")?;
            let p = port.to_string();
            let bulk = traffic(env, &["bulk", "--port", &p, "--bytes", &bytes.to_string()])?;
            let lat = traffic(env, &["latency", "--port", &p, "--calls", &calls.to_string()])?;
            let summary = tracer.map(Tracer::stop).transpose()?;
            eprintln!(
                "  round {round} {mode}: bulk {:.0} MB/s, uploads {} MB/s, latency p50 {:.1} µs p99 {:.1} µs{}{}",
                bulk["mb_per_s"].as_f64().unwrap_or(0.0),
                up_rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" "),
                lat["p50_us"].as_f64().unwrap_or(0.0),
                lat["p99_us"].as_f64().unwrap_or(0.0),
                summary
                    .as_ref()
                    .map_or(String::new(), |s| format!(", kernel drops {} (bulk, latency)", s.kernel_drops)),
                upload_summary.as_ref().map_or(String::new(), |s| format!(", {} (upload)", s.kernel_drops)),
            );
            anyhow::ensure!(bulk["bytes"].as_u64() == Some(bytes), "bulk transfer incomplete: {bulk}");
            if let Some(s) = &upload_summary
                && s.kernel_drops == 0
            {
                let expected = 1 + UPLOADS_PER_ROUND as u64;
                anyhow::ensure!(
                    s.calls >= expected,
                    "{mode}: the tracer saw {} of {expected} uploads:\n{}",
                    s.calls,
                    s.text
                );
            }
            if let Some(s) = &summary
                && s.kernel_drops == 0
            {
                // Sanity: without drops the tracer saw every call.
                let expected = 1 + calls as u64 + calls as u64 / 100;
                anyhow::ensure!(
                    s.calls >= expected,
                    "{mode}: the tracer saw {} of {expected} calls:\n{}",
                    s.calls,
                    s.text
                );
            }
            runs.push(json!({
                "round": round, "mode": mode, "port": port, "bulk": bulk, "uploads": ups, "latency": lat,
                "tracer": summary.map(|s| s.json()),
                "tracer_upload": upload_summary.map(|s| s.json()),
            }));
        }
    }
    drop(standin);
    let pick = |mode: &str, f: &dyn Fn(&Value) -> Option<f64>| {
        median(runs.iter().filter(|r| r["mode"] == mode).filter_map(f).collect())
    };
    // Every measured upload of the mode, over all rounds.
    let pick_upload = |mode: &str| {
        median(
            runs.iter()
                .filter(|r| r["mode"] == mode)
                .flat_map(|r| r["uploads"].as_array().into_iter().flatten())
                .filter_map(|u| u["mb_per_s"].as_f64())
                .collect(),
        )
    };
    let mut by_mode = serde_json::Map::new();
    let base_tp = pick("none", &|r| r["bulk"]["mb_per_s"].as_f64());
    let base_up = pick_upload("none");
    let base_p50 = pick("none", &|r| r["latency"]["p50_us"].as_f64());
    let base_p99 = pick("none", &|r| r["latency"]["p99_us"].as_f64());
    for mode in &modes {
        let tp = pick(mode, &|r| r["bulk"]["mb_per_s"].as_f64());
        let up = pick_upload(mode);
        let p50 = pick(mode, &|r| r["latency"]["p50_us"].as_f64());
        let p99 = pick(mode, &|r| r["latency"]["p99_us"].as_f64());
        let drops = pick(mode, &|r| r["tracer"]["kernel_drops"].as_f64());
        let upload_drops = pick(mode, &|r| r["tracer_upload"]["kernel_drops"].as_f64());
        by_mode.insert(
            (*mode).to_owned(),
            json!({
                "bulk_mb_per_s": tp, "bulk_vs_untraced": tp / base_tp,
                "upload_mb_per_s": up, "upload_vs_untraced": up / base_up, "kernel_drops": drops,
                "upload_kernel_drops": upload_drops,
                "p50_us": p50, "p99_us": p99, "p50_delta_us": p50 - base_p50, "p99_delta_us": p99 - base_p99,
            }),
        );
    }
    Ok(json!({
        "rounds": rounds, "bulk_bytes": bytes, "upload_bytes": upload, "uploads_per_round": UPLOADS_PER_ROUND,
        "calls": calls,
        "baseline": env.baseline.as_ref().map(|p| p.display().to_string()),
        "medians": by_mode, "runs": runs,
    }))
}
