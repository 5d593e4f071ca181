//! Replay end to end: `ollama-tracer replay` on the generated capture (≥ 1 GB of TCP payload),
//! and against tshark on the same bytes.
//!
//! tshark's equivalent of what the tracer does is TCP reassembly plus HTTP parsing with
//! de-chunked bodies, one line per HTTP message: `tshark -r F -d tcp.port==11434,http -Y http
//! -T fields -e …`, single pass. Its defaults already reassemble TCP streams and HTTP heads and
//! bodies (the `-o` flags only say so); port 11434 is not one of its HTTP ports, hence `-d`.
//! Two passes (`-2`) would double its work and flatter the ratio; tshark still dissects (and
//! de-chunks) every body without printing it, and it does not decode the NDJSON/SSE inside, while
//! the tracer decodes every chunk and writes JSON spans — so the comparison favours tshark.
//! tshark on a full gigabyte takes tens of minutes and gigabytes of memory: it runs on the first
//! 64 MB of the capture, and the tracer runs on that same slice for the ratio.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use super::Env;
use super::proc::{Measured, TracerSummary, measure};

/// Generates (or finds) the benchmark capture in the work directory.
pub fn generate(env: &Env, bytes: u64) -> Result<Value> {
    let out = env.file(&format!("bench-capture-{bytes}.json"));
    let m = measure(
        "bench-capture",
        Command::new(env.bin("bench-capture")).args(["--bytes", &bytes.to_string()]).env("TMPDIR", &env.work),
        &out,
    )?;
    let v: Value = serde_json::from_str(std::fs::read_to_string(&out)?.trim()).context("bench-capture output")?;
    eprintln!("  capture: {v} (generated in {:.1} s)", m.wall_s);
    Ok(v)
}

/// A tracer binary replaying `file` to JSON lines (written to /dev/null) once.
fn replay_once(bin: &Path, file: &Path) -> Result<(Measured, TracerSummary)> {
    let m = measure(
        "ollama-tracer replay",
        Command::new(bin).arg("replay").arg(file).args(["--output", "json"]),
        Path::new("/dev/null"),
    )?;
    let s = TracerSummary::parse(&m.stderr)?;
    Ok((m, s))
}

/// The best (least CPU) of `runs` replays of `file` by this tree's tracer and, with
/// `--baseline`, by the baseline binary, their runs interleaved so that both see the same
/// machine.
fn tracer_replay(env: &Env, file: &Path, runs: usize) -> Result<(Best, Option<Best>)> {
    let (mut ours, mut base): (Option<Best>, Option<Best>) = (None, None);
    let keep = |best: &mut Option<Best>, r: Best| {
        if best.as_ref().is_none_or(|(b, _)| r.0.cpu_s() < b.cpu_s()) {
            *best = Some(r);
        }
    };
    for _ in 0..runs {
        if let Some(b) = &env.baseline {
            keep(&mut base, replay_once(b, file)?);
        }
        keep(&mut ours, replay_once(&env.tracer, file)?);
    }
    Ok((ours.context("no run")?, base))
}

type Best = (Measured, TracerSummary);

/// The first records of a little-endian pcap file holding at least `bytes` bytes, as a new
/// file (whole records only).
fn slice(src: &Path, dst: &Path, bytes: u64) -> Result<u64> {
    let mut r = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(src)?);
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(dst)?);
    let mut head = [0u8; 24];
    r.read_exact(&mut head)?;
    let magic = u32::from_le_bytes(head[..4].try_into()?);
    ensure!(magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d, "not a little-endian pcap file (magic {magic:#x})");
    w.write_all(&head)?;
    let mut written = 24u64;
    let mut rec = [0u8; 16];
    let mut data = Vec::new();
    while written < bytes {
        match r.read_exact(&mut rec) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(rec[8..12].try_into()?) as usize;
        data.resize(len, 0);
        r.read_exact(&mut data)?;
        w.write_all(&rec)?;
        w.write_all(&data)?;
        written += 16 + len as u64;
    }
    w.flush()?;
    Ok(written)
}

/// tshark's HTTP reassembly of `file`: the run, and the HTTP requests and responses it found.
fn tshark(env: &Env, file: &Path) -> Result<(Measured, u64, u64)> {
    let out = env.file("tshark.tsv");
    let m = measure("tshark", Command::new("tshark").args(tshark_args(file)), &out)?;
    let (mut requests, mut responses) = (0, 0);
    for line in std::fs::read_to_string(&out)?.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.get(2).is_some_and(|m| !m.is_empty()) {
            requests += 1;
        }
        if f.get(4).is_some_and(|c| !c.is_empty()) {
            responses += 1;
        }
    }
    let _ = std::fs::remove_file(&out);
    Ok((m, requests, responses))
}

fn tshark_args(file: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec!["-r".into(), file.display().to_string()];
    for o in [
        "tcp.desegment_tcp_streams:TRUE",
        "http.desegment_headers:TRUE",
        "http.desegment_body:TRUE",
        "http.dechunk_body:TRUE",
    ] {
        a.extend(["-o".into(), o.into()]);
    }
    a.extend(["-d", "tcp.port==11434,http", "-Y", "http", "-T", "fields"].map(String::from));
    for f in [
        "frame.number",
        "tcp.stream",
        "http.request.method",
        "http.request.uri",
        "http.response.code",
        "http.content_type",
    ] {
        a.extend(["-e".into(), f.into()]);
    }
    a
}

/// Figures of one run over `payload` TCP payload bytes.
fn figures(m: &Measured, payload: u64) -> Value {
    let mut v = m.json();
    v["payload_mb_per_cpu_s"] = json!(payload as f64 / m.cpu_s().max(1e-9) / 1e6);
    v["payload_mb_per_wall_s"] = json!(payload as f64 / m.wall_s.max(1e-9) / 1e6);
    v
}

pub fn run(env: &Env) -> Result<Value> {
    let (bytes, slice_bytes, runs) = if env.smoke { (3_000_000, u64::MAX, 1) } else { (1_000_000_000, 64_000_000, 3) };
    let cap = generate(env, bytes)?;
    let path = PathBuf::from(cap["path"].as_str().context("capture path")?);
    let calls = cap["calls"].as_u64().context("capture calls")?;
    let payload = cap["payload_bytes"].as_u64().context("capture payload")?;

    let ((full, fs), base) = tracer_replay(env, &path, runs)?;
    eprintln!(
        "  tracer, whole capture: {:.2} s CPU, {:.0} MB/s per core, peak RSS {} MiB",
        full.cpu_s(),
        payload as f64 / full.cpu_s() / 1e6,
        full.max_rss_kib / 1024
    );
    if let Some((b, _)) = &base {
        eprintln!(
            "  baseline, whole capture: {:.2} s CPU, {:.0} MB/s per core, peak RSS {} MiB",
            b.cpu_s(),
            payload as f64 / b.cpu_s() / 1e6,
            b.max_rss_kib / 1024
        );
    }
    ensure!(
        fs.payload_bytes == payload,
        "the tracer read {} payload bytes, the capture holds {payload}",
        fs.payload_bytes
    );
    // Spans: one per call, and its children (phases).
    ensure!(
        fs.calls == calls && fs.spans >= calls,
        "{calls} calls in the capture, the tracer reported {} calls, {} spans",
        fs.calls,
        fs.spans
    );
    ensure!(fs.incomplete == 0 && fs.gaps == 0, "incomplete spans or gaps in a perfect capture:\n{}", fs.text);

    // The same bytes for both tools.
    let sliced = if slice_bytes < cap["file_bytes"].as_u64().unwrap_or(0) {
        let dst = env.file("slice.pcap");
        slice(&path, &dst, slice_bytes)?;
        dst
    } else {
        path.clone()
    };
    let ((ours, os), _) = tracer_replay(env, &sliced, runs)?;
    let (theirs, requests, responses) = tshark(env, &sliced)?;
    eprintln!(
        "  slice: tracer {:.2} s CPU, tshark {:.2} s CPU ({requests} requests, {responses} responses)",
        ours.cpu_s(),
        theirs.cpu_s()
    );
    // tshark must have done the work it is compared on: every request the tracer saw (calls
    // cut by the end of a slice included), and about as many responses (those cut short by
    // the slice's end it does not report).
    if requests < os.calls || responses + 256 < os.calls.saturating_sub(os.incomplete) {
        bail!(
            "tshark found {requests} requests and {responses} responses where the tracer found {} calls ({} complete): not the same work",
            os.calls,
            os.calls - os.incomplete
        );
    }
    if sliced != path {
        let _ = std::fs::remove_file(&sliced);
    }
    let _ = std::fs::remove_file(&path);
    Ok(json!({
        "capture": cap,
        "tracer_whole": {"runs": runs, "best": figures(&full, payload), "summary": fs.json()},
        "baseline_whole": base.map(|(b, bs)| json!({
            "binary": env.baseline.as_ref().map(|p| p.display().to_string()),
            "runs": runs, "best": figures(&b, payload), "summary": bs.json(),
            "cpu_ratio": b.cpu_s() / full.cpu_s().max(1e-9),
        })),
        "slice": {
            "bytes": if sliced == path { cap["file_bytes"].as_u64().unwrap_or(0) } else { slice_bytes },
            "payload_bytes": os.payload_bytes,
            "tracer": figures(&ours, os.payload_bytes), "tracer_calls": os.calls,
            "tshark": figures(&theirs, os.payload_bytes), "tshark_requests": requests, "tshark_responses": responses,
            "tshark_command": format!("tshark {}", tshark_args(Path::new("SLICE.pcap")).join(" ")),
            "ratio_cpu": theirs.cpu_s() / ours.cpu_s().max(1e-9),
            "ratio_wall": theirs.wall_s / ours.wall_s.max(1e-9),
            "ratio_peak_rss": theirs.max_rss_kib as f64 / ours.max_rss_kib.max(1) as f64,
        },
    }))
}
