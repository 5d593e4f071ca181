//! What the TLS probes cost (`tls`): the stand-in behind TLS, clients on the libraries the
//! tracer probes — the Go client of the tests (crypto/tls) and curl (the system's OpenSSL) —
//! and the tracer with and without TLS capture, interleaved in rotating order:
//! - latency of small keep-alive calls (one `SSL_write`/`Write` and one read each): p50 and
//!   p99, and what the probes add per call;
//! - one uprobe hit: a C loop calling `SSL_free(NULL)` (a no-op the tracer probes) in the
//!   system's libssl, with and without the tracer — the trap's cost, paid at each probed call;
//! - the kernel programs' own time per run (`kernel.bpf_stats_enabled`), per TLS record;
//! - 100 concurrent streams over TLS: the daemon's CPU and the kernel's counters.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use super::live::{Standin, Tracer};
use super::proc::{cpu_time, num_before};
use super::{Env, is_root, skipped_not_root};

/// Modes compared: the tracer not running; running with the stand-in's host not asked for
/// (the probes fire, the kernel ignores the sessions: no copy, no work in the daemon); and
/// tracing it (`--tls off` would measure nothing: no probe is attached then).
const MODES: [&str; 3] = ["none", "tls-ignored", "tls"];
const HOST: &str = "127.0.0.1";
/// A host no call goes to (TEST-NET-1).
const OTHER_HOST: &str = "192.0.2.1";

/// The stand-in behind TLS (on 127.0.0.1), no delay on metadata routes (the calls measure the
/// transport).
struct TlsStandin {
    _standin: Standin,
    url: String,
    ca: PathBuf,
}

impl TlsStandin {
    fn start(env: &Env) -> Result<TlsStandin> {
        let dir = env.file("tls");
        let opts = ["--meta-delay-ms".as_ref(), "0".as_ref(), "--tls-dir".as_ref(), dir.as_os_str()];
        let standin = Standin::start_with(env, &opts)?;
        let url = format!("https://{}", standin.addr);
        Ok(TlsStandin { _standin: standin, url, ca: dir.join("ca.pem") })
    }
}

/// The Go client of the tests, built with the system's Go into the work directory.
fn go_client(env: &Env) -> Result<PathBuf> {
    let out = env.file("ollama-go-client");
    let st = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(env.root.join("tests/clients/go/main.go"))
        .env("GOCACHE", env.file("gocache"))
        .env("GOPATH", env.file("gopath"))
        .env("GOFLAGS", "-buildvcs=false")
        .env("CGO_ENABLED", "0")
        .status()
        .context("running `go build` (scripts/setup-go.sh installs Go)")?;
    ensure!(st.success(), "go build of tests/clients/go failed");
    Ok(out)
}

/// Runs the Go client with `args`; under a tracer, lets it go only once the tracer probes it
/// (a new program is probed when it starts). Its one JSON line.
fn go_run(bin: &Path, s: &TlsStandin, tracer: Option<&Tracer>, args: &[&str]) -> Result<Value> {
    let mut child = Command::new(bin)
        .args(["--wait", "--base-url", &s.url, "--ca"])
        .arg(&s.ca)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    if let Some(t) = tracer {
        t.wait_log(&format!("tls: probing {} (", bin.display()), Duration::from_secs(30))?;
    }
    writeln!(child.stdin.take().context("stdin")?, "go")?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "the Go client failed: {}", String::from_utf8_lossy(&out.stdout));
    serde_json::from_slice(&out.stdout).context("the Go client's result")
}

/// `n` small keep-alive calls with curl (the system's OpenSSL); their p50 and p99 in µs.
fn curl_latency(s: &TlsStandin, n: usize) -> Result<Value> {
    let url = format!("{}/api/version", s.url);
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--cacert"]).arg(&s.ca).args(["-w", "%{time_total}\\n"]);
    for _ in 0..n {
        cmd.args(["-o", "/dev/null", &url]);
    }
    let out = cmd.output().context("curl")?;
    ensure!(out.status.success(), "curl failed");
    let mut us: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .map(|t| t * 1e6)
        .collect();
    ensure!(us.len() == n, "curl timed {} of {n} transfers", us.len());
    // The first transfer opens the connection and does the handshake.
    us.remove(0);
    us.sort_by(f64::total_cmp);
    Ok(json!({"calls": us.len(), "p50_us": us[us.len() / 2], "p99_us": us[us.len() * 99 / 100]}))
}

/// Our TLS programs' run time and run count from the kernel's statistics, by program name.
fn bpf_stats() -> Value {
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output();
    let progs: Value = out.ok().and_then(|o| serde_json::from_slice(&o.stdout).ok()).unwrap_or(Value::Null);
    let mut by = serde_json::Map::new();
    for p in progs.as_array().into_iter().flatten() {
        let Some(name) = p["name"].as_str().filter(|n| n.starts_with("ot_tls_")) else { continue };
        let (ns, cnt) = (p["run_time_ns"].as_u64().unwrap_or(0), p["run_cnt"].as_u64().unwrap_or(0));
        let e = by.entry(name.to_owned()).or_insert(json!({"run_time_ns": 0, "run_cnt": 0}));
        e["run_time_ns"] = json!(e["run_time_ns"].as_u64().unwrap_or(0) + ns);
        e["run_cnt"] = json!(e["run_cnt"].as_u64().unwrap_or(0) + cnt);
    }
    Value::Object(by)
}

/// A loop of `SSL_free(NULL)` calls in the system's libssl (no headers needed), built with cc.
fn free_loop(env: &Env) -> Result<PathBuf> {
    let src = env.file("free-loop.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <stdlib.h>
#include <time.h>
void SSL_free(void *);
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) SSL_free(NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"#,
    )?;
    let out = env.file("free-loop");
    let st = Command::new("cc").args(["-O2", "-o"]).arg(&out).arg(&src).arg("-l:libssl.so.3").status()?;
    ensure!(st.success(), "cc free-loop.c -l:libssl.so.3 failed");
    Ok(out)
}

/// ns per `SSL_free(NULL)` call, the best of three runs of `n`.
fn free_loop_ns(bin: &Path, n: usize) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let out = Command::new(bin).arg(n.to_string()).output()?;
        ensure!(out.status.success(), "free-loop failed");
        best = best.min(String::from_utf8_lossy(&out.stdout).trim().parse::<f64>()?);
    }
    Ok(best)
}

/// The cost of one uprobe hit: the loop untraced, then with the probes attached.
fn uprobe_hit(env: &Env, n: usize) -> Result<Value> {
    let bin = free_loop(env)?;
    let untraced = free_loop_ns(&bin, n)?;
    let tracer = tls_tracer(env, "tls-uprobe", OTHER_HOST)?;
    let probed = free_loop_ns(&bin, n);
    tracer.stop()?;
    let probed = probed?;
    Ok(json!({"calls": n, "untraced_ns": untraced, "probed_ns": probed, "hit_ns": probed - untraced}))
}

/// Sets `kernel.bpf_stats_enabled` and puts the old value back when dropped.
struct BpfStats(String);

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    fn enable() -> BpfStats {
        let old = std::fs::read_to_string(Self::PATH).unwrap_or_else(|_| "0".into());
        let _ = std::fs::write(Self::PATH, "1");
        BpfStats(old.trim().to_owned())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn tls_tracer(env: &Env, tag: &str, host: &str) -> Result<Tracer> {
    // Port 1: nothing on the wire; every call comes from the probes.
    Tracer::start(env, tag, "ebpf", 1, &["--tls-host", host])
}

pub fn run(env: &Env) -> Result<Value> {
    if !is_root() {
        return Ok(skipped_not_root("tls"));
    }
    let (rounds, go_calls, curl_calls, streams, secs) =
        if env.smoke { (1, 300, 30, 10, 3.0) } else { (5, 5000, 500, 100, 30.0) };
    let go = go_client(env)?;
    let standin = TlsStandin::start(env)?;
    let mut runs = Vec::new();
    for round in 0..rounds {
        for i in 0..MODES.len() {
            let mode = MODES[(i + round) % MODES.len()];
            let tracer = match mode {
                "tls" => Some(tls_tracer(env, "tls-latency", HOST)?),
                "tls-ignored" => Some(tls_tracer(env, "tls-ignored", OTHER_HOST)?),
                _ => None,
            };
            let go_lat = go_run(&go, &standin, tracer.as_ref(), &["--bench-latency", &go_calls.to_string()])?;
            let curl_lat = curl_latency(&standin, curl_calls)?;
            let summary = tracer.map(Tracer::stop).transpose()?;
            eprintln!(
                "  round {round} {mode}: Go p50 {:.1} µs p99 {:.1} µs; curl p50 {:.1} µs p99 {:.1} µs",
                go_lat["p50_us"].as_f64().unwrap_or(0.0),
                go_lat["p99_us"].as_f64().unwrap_or(0.0),
                curl_lat["p50_us"].as_f64().unwrap_or(0.0),
                curl_lat["p99_us"].as_f64().unwrap_or(0.0)
            );
            if let Some(s) = summary.as_ref().filter(|_| mode == "tls") {
                // Sanity: the probes saw the calls (warm-up included).
                let expected = (go_calls + curl_calls) as u64;
                ensure!(s.calls >= expected, "tls: the tracer saw {} of {expected} calls:\n{}", s.calls, s.text);
            }
            runs.push(json!({"round": round, "mode": mode, "go": go_lat, "curl": curl_lat,
                "tracer": summary.map(|s| s.json())}));
        }
    }
    let pick = |mode: &str, client: &str, key: &str| {
        median(runs.iter().filter(|r| r["mode"] == mode).filter_map(|r| r[client][key].as_f64()).collect())
    };
    let mut latency = serde_json::Map::new();
    for client in ["go", "curl"] {
        let (b50, b99) = (pick("none", client, "p50_us"), pick("none", client, "p99_us"));
        let (i50, i99) = (pick("tls-ignored", client, "p50_us"), pick("tls-ignored", client, "p99_us"));
        let (p50, p99) = (pick("tls", client, "p50_us"), pick("tls", client, "p99_us"));
        latency.insert(
            client.into(),
            json!({"untraced_p50_us": b50, "untraced_p99_us": b99,
                "ignored_p50_us": i50, "ignored_p99_us": i99, "ignored_added_p50_us": i50 - b50,
                "traced_p50_us": p50, "traced_p99_us": p99, "added_p50_us": p50 - b50, "added_p99_us": p99 - b99}),
        );
    }
    let streams_run = streams_run(env, &go, &standin, streams, secs)?;
    let hit = uprobe_hit(env, if env.smoke { 20_000 } else { 200_000 })?;
    eprintln!("  one uprobe hit: {:.0} ns", hit["hit_ns"].as_f64().unwrap_or(0.0));
    Ok(json!({"rounds": rounds, "go_calls": go_calls, "curl_calls": curl_calls, "latency": latency,
        "uprobe": hit, "streams": streams_run, "runs": runs}))
}

/// `streams` TLS streams at once for `secs`, traced: the daemon's CPU over the run, the kernel
/// programs' time per record, the counters.
fn streams_run(env: &Env, go: &Path, standin: &TlsStandin, streams: usize, secs: f64) -> Result<Value> {
    let _stats = BpfStats::enable();
    let tracer = tls_tracer(env, "tls-streams", HOST)?;
    let before = bpf_stats();
    let cpu0 = cpu_time(tracer.pid()).context("tracer CPU")?;
    let t0 = Instant::now();
    let model = "@synth:tokens=250,rate=50/llama3.2";
    let r = go_run(
        go,
        standin,
        Some(&tracer),
        &["--bench-streams", &streams.to_string(), "--secs", &secs.to_string(), "--model", model],
    )?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (cpu_time(tracer.pid()).context("tracer CPU")? - cpu0).as_secs_f64();
    let after = bpf_stats();
    let s = tracer.stop()?;
    ensure!(r["errors"] == 0, "streams failed: {r}");
    let calls = r["calls"].as_u64().unwrap_or(0);
    ensure!(s.spans >= calls, "tls: {} spans for {calls} calls:\n{}", s.spans, s.text);
    let tls_line = s.text.lines().find(|l| l.trim_start().starts_with("tls:")).unwrap_or("").to_owned();
    let records = num_before(tls_line.split("; ").nth(3).unwrap_or(""), " records (").unwrap_or(0);
    let lost = tls_line.split("submitted, ").nth(1).and_then(|x| num_before(x, " records (")).unwrap_or(0);
    let mut programs = serde_json::Map::new();
    for (name, a) in after.as_object().into_iter().flatten() {
        let b = &before[name.as_str()];
        let ns = a["run_time_ns"].as_u64().unwrap_or(0).saturating_sub(b["run_time_ns"].as_u64().unwrap_or(0));
        let cnt = a["run_cnt"].as_u64().unwrap_or(0).saturating_sub(b["run_cnt"].as_u64().unwrap_or(0));
        if cnt > 0 {
            programs.insert(name.clone(), json!({"runs": cnt, "ns_per_run": ns as f64 / cnt as f64}));
        }
    }
    if calls == 0 {
        bail!("no stream completed");
    }
    Ok(json!({
        "streams": streams, "secs": secs, "wall_s": wall, "calls": calls, "chunks": r["chunks"],
        "chunks_per_s": r["chunks"].as_f64().unwrap_or(0.0) / wall,
        "tracer_cpu_percent": cpu / wall * 100.0, "records": records, "records_lost": lost,
        "programs": programs, "tracer": s.json(),
    }))
}
