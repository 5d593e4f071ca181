//! The live daemon under load (`live`) and with many idle connections (`memory`): the real
//! `ollama-tracer run` attached while `ollama-load` and `bench-traffic` talk to the stand-in.
//!
//! Every process is a [`Guarded`] child: ended on any outcome; the tracer is stopped with
//! SIGINT (it detaches its programs and prints its summary) and, if it does not exit, killed —
//! the kernel then drops its links and programs with its file descriptors.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use super::proc::{Guarded, Memory, TracerSummary, cpu_time, tail};
use super::{Env, is_root, skipped_not_root};

/// A running `ollama-standin` on a free loopback port.
pub struct Standin {
    pub proc: Guarded,
    pub addr: SocketAddr,
}

impl Standin {
    pub fn start(env: &Env) -> Result<Standin> {
        Self::start_with(env, &[])
    }

    /// With more options (e.g. `--tls-dir`).
    pub fn start_with(env: &Env, extra: &[&std::ffi::OsStr]) -> Result<Standin> {
        let mut proc = Guarded::spawn(
            "ollama-standin",
            Command::new(env.bin("ollama-standin"))
                .args(["--listen", "127.0.0.1:0", "--ttft-ms", "20", "--drain-ms", "500"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        )?;
        let mut line = String::new();
        BufReader::new(proc.child.stdout.take().context("stand-in stdout")?).read_line(&mut line)?;
        let addr = line.trim().strip_prefix("listening on ").and_then(|a| a.parse().ok());
        let addr = addr.with_context(|| format!("stand-in said {line:?}"))?;
        Ok(Standin { proc, addr })
    }
}

/// A running `ollama-tracer run --output none`, its stderr in a file.
pub struct Tracer {
    pub proc: Guarded,
    stderr: PathBuf,
}

impl Tracer {
    /// Starts the daemon on `port` with `capture` (`ebpf` or `pcap`) and waits until it says
    /// its capture is attached.
    pub fn start(env: &Env, tag: &str, capture: &str, port: u16, extra: &[&str]) -> Result<Tracer> {
        Self::start_binary(env, &env.tracer, tag, capture, port, extra)
    }

    /// [`Tracer::start`] with another `ollama-tracer` binary (`--baseline`).
    pub fn start_binary(
        env: &Env,
        binary: &Path,
        tag: &str,
        capture: &str,
        port: u16,
        extra: &[&str],
    ) -> Result<Tracer> {
        let stderr = env.file(&format!("tracer-{tag}.stderr"));
        let mut proc = Guarded::spawn(
            "ollama-tracer",
            Command::new(binary)
                .args(["run", "--output", "none", "--capture", capture, "--port", &port.to_string()])
                .args(extra)
                .env("OLLAMA_TRACER_LOG", "info")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr)?),
        )?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&stderr).unwrap_or_default();
            if text.contains("capture: ") {
                break;
            }
            if let Ok(Some(st)) = proc.child.try_wait() {
                bail!("ollama-tracer exited ({st}) before attaching:\n{}", tail(&text, 20));
            }
            ensure!(Instant::now() < deadline, "ollama-tracer not attached after 60 s:\n{}", tail(&text, 20));
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Tracer { proc, stderr })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Waits until the tracer's log says `needle` (e.g. that it probes a program), at most
    /// `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            if text.contains(needle) {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "the tracer never said {needle:?}:\n{}", tail(&text, 20));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, then its summary.
    pub fn stop(mut self) -> Result<TracerSummary> {
        let st = self.proc.stop(libc::SIGINT, Duration::from_secs(30));
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        ensure!(st.is_some_and(|s| s.success()), "ollama-tracer ended with {st:?}:\n{}", tail(&text, 20));
        let s = TracerSummary::parse(&text)?;
        let _ = std::fs::remove_file(&self.stderr);
        Ok(s)
    }
}

/// A load run's parameters.
#[derive(Clone, Copy, Debug)]
struct Load {
    streams: usize,
    /// Tokens per second per stream (one NDJSON chunk each).
    rate: f64,
    /// Seconds of full load (after the ramp).
    secs: f64,
}

impl Load {
    /// Each call lasts `CALL_SECS`; connections start spread over one call, so the streams stay
    /// staggered and the load is even once all are running.
    const CALL_SECS: f64 = 5.0;

    fn tokens(&self) -> usize {
        (self.rate * Self::CALL_SECS).round().max(1.0) as usize
    }
}

/// Chunks per second the load generator received during `[from, to]` (ns): each call's chunks
/// spread evenly over its duration.
fn chunks_in_window(records: &str, from: u64, to: u64) -> f64 {
    let mut chunks = 0.0;
    for l in records.lines() {
        let Ok(r) = serde_json::from_str::<Value>(l) else { continue };
        let (Some(a), Some(b), Some(u)) = (r["t_first_byte_ns"].as_u64(), r["t_end_ns"].as_u64(), r["units"].as_u64())
        else {
            continue;
        };
        if b <= a {
            continue;
        }
        let overlap = b.min(to).saturating_sub(a.max(from)) as f64;
        chunks += u as f64 * overlap / (b - a) as f64;
    }
    chunks / ((to - from) as f64 / 1e9)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Which binary a run measures: this tree's, or the `--baseline` one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Binary {
    Tree,
    Baseline,
}

/// The libpcap line of the tracer's summary: packets the kernel filter passed into the ring
/// (`received`) and packets dropped because the ring was full.
fn pcap_line(summary: &str) -> Option<(u64, u64)> {
    let line = summary.lines().find_map(|l| l.trim().strip_prefix("libpcap: "))?;
    let num = |suffix: &str| line.split(", ").find_map(|part| part.strip_suffix(suffix)?.trim().parse().ok());
    Some((num(" received")?, num(" dropped (buffer)")?))
}

/// One run: stand-in, tracer (`capture`), `ollama-load`; figures over the full-load window.
fn load_run(env: &Env, capture: &str, load: Load, extra: &[&str]) -> Result<Value> {
    load_run_of(env, Binary::Tree, capture, load, extra)
}

fn load_run_of(env: &Env, binary: Binary, capture: &str, load: Load, extra: &[&str]) -> Result<Value> {
    let standin = Standin::start(env)?;
    let (path, label) = match (binary, &env.baseline) {
        (Binary::Baseline, Some(b)) => (b.as_path(), format!("{capture} (baseline)")),
        (Binary::Baseline, None) => bail!("no --baseline binary"),
        (Binary::Tree, _) => (env.tracer.as_path(), capture.to_owned()),
    };
    let tracer = Tracer::start_binary(env, path, capture, capture, standin.addr.port(), extra)?;
    std::thread::sleep(Duration::from_millis(500));
    let idle = Memory::of(tracer.pid()).context("tracer /proc")?;
    let records = env.file(&format!("load-{capture}.jsonl"));
    let summary_out = env.file(&format!("load-{capture}.json"));
    let ramp = Load::CALL_SECS;
    let mut loadgen = Guarded::spawn(
        "ollama-load",
        Command::new(env.bin("ollama-load"))
            .args(["--addr", &standin.addr.to_string(), "--connections", &load.streams.to_string()])
            .args(["--duration", &(ramp + load.secs).to_string(), "--ramp", &ramp.to_string()])
            .args(["--model", &format!("@synth:tokens={},rate={}/llama3.2", load.tokens(), load.rate)])
            .arg("--records")
            .arg(&records)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&summary_out)?)
            .stderr(Stdio::inherit()),
    )?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(ramp));
    loadgen.check_running()?;
    let (w0, c0, g0, s0) = (now_ns(), cpu_time(tracer.pid()), cpu_time(loadgen.pid()), cpu_time(standin.proc.pid()));
    let mut peak = Memory::default();
    let mut last = Memory::default();
    while t0.elapsed().as_secs_f64() < ramp + load.secs {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(m) = Memory::of(tracer.pid()) {
            if m.rss > peak.rss {
                peak = m;
            }
            last = m;
        }
    }
    let (w1, c1, g1, s1) = (now_ns(), cpu_time(tracer.pid()), cpu_time(loadgen.pid()), cpu_time(standin.proc.pid()));
    let window = (w1 - w0) as f64 / 1e9;
    let pct = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => (b - a).as_secs_f64() / window * 100.0,
        _ => f64::NAN,
    };
    // The calls in flight finish (no new ones start), then the tracer's last tick.
    let deadline = Instant::now() + Duration::from_secs_f64(Load::CALL_SECS * 4.0 + 30.0);
    let status = loop {
        if let Some(st) = loadgen.child.try_wait()? {
            break st;
        }
        ensure!(Instant::now() < deadline, "ollama-load did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(1500));
    let mem_end = Memory::of(tracer.pid()).unwrap_or_default();
    let summary = tracer.stop()?;
    let gen_summary: Value =
        serde_json::from_str(std::fs::read_to_string(&summary_out)?.trim()).context("ollama-load summary")?;
    let recs = std::fs::read_to_string(&records)?;
    let rate = chunks_in_window(&recs, w0, w1);
    let _ = std::fs::remove_file(&records);
    let calls = gen_summary["calls"].as_u64().unwrap_or(0);
    let errors = gen_summary["errors"].as_u64().unwrap_or(0);
    ensure!(status.success() || errors > 0, "ollama-load failed ({status})");
    let complete = summary.calls.saturating_sub(summary.incomplete);
    let pcap = pcap_line(&summary.text);
    let v = json!({
        "capture": label, "binary": path.display().to_string(),
        "pcap_received": pcap.map(|p| p.0), "pcap_dropped": pcap.map(|p| p.1), "streams": load.streams, "tokens_per_s": load.rate, "tokens_per_call": load.tokens(),
        "window_s": window, "target_chunks_per_s": load.streams as f64 * load.rate, "chunks_per_s": rate,
        "tracer_cpu_pct": pct(c0, c1), "load_generator_cpu_pct": pct(g0, g1), "standin_cpu_pct": pct(s0, s1),
        "tracer_memory_idle": idle.json(), "tracer_memory_peak_in_window": peak.json(), "tracer_memory_end_of_window": last.json(),
        "tracer_memory_after_load": mem_end.json(),
        "calls": calls, "call_errors": errors, "tracer_calls": summary.calls, "spans_complete": complete,
        "kernel_drops": summary.kernel_drops, "tracer": summary.json(),
    });
    eprintln!(
        "  {label} {} x {} tok/s: {:.0} chunks/s, tracer {:.1} % CPU, peak RSS {:.1} MiB, drops {}{}, spans {complete}/{calls}",
        load.streams,
        load.rate,
        rate,
        pct(c0, c1),
        peak.rss as f64 / 1024.0,
        summary.kernel_drops,
        pcap.map(|(r, _)| format!(" (libpcap received {r})")).unwrap_or_default()
    );
    // Sanity, never speed: without drops, every call the generator made is one span; drops
    // (the kernel's buffer full: a figure, not a failure) lose calls and flag others.
    ensure!(
        summary.kernel_drops > 0 || summary.calls == calls,
        "{calls} calls made, the tracer saw {} without any drop:\n{}",
        summary.calls,
        summary.text
    );
    ensure!(rate > 0.0 && pct(c0, c1).is_finite(), "no load measured: {v}");
    Ok(v)
}

pub fn run_load(env: &Env) -> Result<Value> {
    if !is_root() {
        return Ok(skipped_not_root("live"));
    }
    if env.smoke {
        let load = Load { streams: 20, rate: 20.0, secs: 2.0 };
        let ebpf = load_run(env, "ebpf", Load { secs: 2.0, ..load }, &[])?;
        let pcap = load_run(env, "pcap", load, &[])?;
        return Ok(json!({"runs": [ebpf, pcap], "knee": []}));
    }
    let goal = Load { streams: 1000, rate: 100.0, secs: 30.0 };
    let ebpf = load_run(env, "ebpf", goal, &[])?;
    // libpcap at the goal: with --baseline, the baseline's and this tree's runs alternate, so
    // both see the same machine (the others' load on it drifts over minutes).
    let mut runs = vec![ebpf];
    let rounds = if env.baseline.is_some() { PCAP_ROUNDS } else { 1 };
    let mut pcap_drops = 0;
    for _ in 0..rounds {
        if env.baseline.is_some() {
            runs.push(load_run_of(env, Binary::Baseline, "pcap", goal, &[])?);
        }
        let r = load_run(env, "pcap", goal, &[])?;
        pcap_drops += r["kernel_drops"].as_u64().unwrap_or(0);
        runs.push(r);
    }
    // The knee: more tokens per second on as many streams until the kernel drops records,
    // or the machine (load generator, stand-in and tracer on two cores) cannot go faster.
    let mut knee = Vec::new();
    find_knee(env, "ebpf", goal, &[200.0, 400.0, 800.0, 1600.0], &mut knee)?;
    // The same for libpcap, from where it held the goal without a drop.
    if pcap_drops == 0 {
        find_knee(env, "pcap", goal, &[200.0, 400.0, 800.0], &mut knee)?;
    }
    Ok(json!({"runs": runs, "knee": knee}))
}

/// Runs `capture` at each rate in turn (15 s each) until it drops or the machine delivers
/// less than 80 % of what was asked.
fn find_knee(env: &Env, capture: &str, goal: Load, rates: &[f64], knee: &mut Vec<Value>) -> Result<()> {
    for &rate in rates {
        let r = load_run(env, capture, Load { rate, secs: 15.0, ..goal }, &[])?;
        let drops = r["kernel_drops"].as_u64().unwrap_or(0);
        let reached = r["chunks_per_s"].as_f64().unwrap_or(0.0) / r["target_chunks_per_s"].as_f64().unwrap_or(1.0);
        knee.push(r);
        if drops > 0 || reached < 0.8 {
            break;
        }
    }
    Ok(())
}

/// libpcap rounds at the goal with `--baseline` (each: the baseline's run, then this tree's).
const PCAP_ROUNDS: usize = 2;

/// 10 000 idle keep-alive connections (each made one call) and 100 slow streams against the
/// stand-in, the eBPF tracer attached: its memory over the whole run.
pub fn run_memory(env: &Env) -> Result<Value> {
    if !is_root() {
        return Ok(skipped_not_root("memory"));
    }
    let (idle_conns, streams, secs) = if env.smoke { (300, 10, 3.0) } else { (10_000, 100, 30.0) };
    let standin = Standin::start(env)?;
    let tracer = Tracer::start(env, "memory", "ebpf", standin.addr.port(), &[])?;
    let pid = tracer.pid();
    let before = Memory::of(pid).context("tracer /proc")?;
    let t0 = Instant::now();
    let mut idle = Guarded::spawn(
        "bench-traffic idle",
        Command::new(env.bin("bench-traffic"))
            .args(["idle", "--addr", &standin.addr.to_string(), "--connections", &idle_conns.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )?;
    let mut line = String::new();
    BufReader::new(idle.child.stdout.take().context("idle stdout")?).read_line(&mut line)?;
    let ready: Value =
        serde_json::from_str(line.trim()).with_context(|| format!("bench-traffic idle said {line:?}"))?;
    ensure!(ready["ready"].as_u64() == Some(idle_conns as u64), "idle connections: {ready}");
    let after_idle = Memory::of(pid).unwrap_or_default();
    // Slow streams: 5 tokens/s, each call lasting the whole window.
    let tokens = (5.0 * secs) as usize;
    let mut loadgen = Guarded::spawn(
        "ollama-load",
        Command::new(env.bin("ollama-load"))
            .args(["--addr", &standin.addr.to_string(), "--connections", &streams.to_string(), "--calls", "1"])
            .args(["--model", &format!("@synth:tokens={tokens},rate=5/llama3.2")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )?;
    let mut peak = after_idle;
    let status = loop {
        if let Some(m) = Memory::of(pid)
            && m.rss > peak.rss
        {
            peak = m;
        }
        if let Some(st) = loadgen.child.try_wait()? {
            break st;
        }
        ensure!(t0.elapsed().as_secs_f64() < secs * 3.0 + 60.0, "the slow streams did not finish");
        std::thread::sleep(Duration::from_millis(250));
    };
    ensure!(status.success(), "ollama-load failed ({status})");
    let end = Memory::of(pid).unwrap_or_default();
    // Close the idle connections, then the tracer's summary.
    drop(idle.child.stdin.take());
    idle.stop(libc::SIGTERM, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    let summary = tracer.stop()?;
    drop(standin);
    let calls = (idle_conns + streams) as u64;
    ensure!(
        summary.kernel_drops > 0 || summary.calls == calls,
        "{calls} calls made, the tracer saw {} without any drop:\n{}",
        summary.calls,
        summary.text
    );
    eprintln!(
        "  {idle_conns} idle connections + {streams} slow streams: peak RSS {:.1} MiB ({:.1} MiB without the ring buffer mapping)",
        peak.hwm.max(peak.rss) as f64 / 1024.0,
        peak.rss.saturating_sub(peak.bpf_maps) as f64 / 1024.0
    );
    Ok(json!({
        "idle_connections": idle_conns, "slow_streams": streams, "stream_secs": secs, "idle_open_secs": ready["open_secs"],
        "tracer_memory_before": before.json(), "tracer_memory_after_idle_connections": after_idle.json(),
        "tracer_memory_peak": peak.json(), "tracer_memory_end": end.json(),
        "tracer_calls": summary.calls, "kernel_drops": summary.kernel_drops, "tracer": summary.json(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_in_a_window_are_prorated() {
        // 100 chunks over [0, 10 s], 50 over [5, 15 s]; window [5, 10 s]: 50 + 25 chunks in 5 s.
        let recs = r#"{"t_first_byte_ns":0,"t_end_ns":10000000000,"units":100}
{"t_first_byte_ns":5000000000,"t_end_ns":15000000000,"units":50}
{"t_first_byte_ns":null,"t_end_ns":1,"units":3}"#;
        assert_eq!(chunks_in_window(recs, 5_000_000_000, 10_000_000_000), 15.0);
    }

    #[test]
    fn reads_the_libpcap_line() {
        let s = "ollama-tracer summary: 1 packets\n  libpcap: 1200 received, 34 dropped (buffer), 0 dropped (interface), 0 truncated frames, 0 undecodable\n";
        assert_eq!(pcap_line(s), Some((1200, 34)));
        assert_eq!(pcap_line("ollama-tracer summary: 1 packets\n  kernel: 5 packets matched"), None);
    }
}
