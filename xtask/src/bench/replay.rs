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

/// Environment variable: TCP payload bytes of the generated capture (default 1 GB).
const BYTES_VAR: &str = "OLLAMA_TRACER_BENCH_REPLAY_BYTES";
/// Replays of each capture by each binary (default 3): more on a noisy machine, whose best run
/// is then nearer the true cost.
const RUNS_VAR: &str = "OLLAMA_TRACER_BENCH_REPLAY_RUNS";

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

/// The recording of the real client libraries (tests/data/captures): 18 calls on 6 connections.
const REAL_CLIENTS: &str = "tests/data/captures/real-clients.pcap";

/// `src` (a little-endian Ethernet/IPv4 pcap of loopback traffic to port 11434) repeated until
/// the file holds at least `bytes`: copy k follows copy k − 1 in time (shifted by the whole
/// recording plus a second) and its clients talk from 127.x.y.z of their own, so every copy's
/// connections are new ones. Returns the number of copies.
fn tile(src: &Path, dst: &Path, bytes: u64) -> Result<u64> {
    let data = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    ensure!(data.len() > 24, "{}: too short", src.display());
    let word = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    ensure!(word(&data, 0) == 0xa1b2_c3d4 && word(&data, 20) == 1, "{}: not a µs Ethernet pcap", src.display());
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let len = word(&data, at + 8) as usize;
        ensure!(at + 16 + len <= data.len(), "{}: cut record at {at}", src.display());
        records.push(at..at + 16 + len);
        at += 16 + len;
    }
    let us =
        |r: &std::ops::Range<usize>| u64::from(word(&data, r.start)) * 1_000_000 + u64::from(word(&data, r.start + 4));
    let (first, last) = (us(records.first().context("no records")?), us(records.last().context("no records")?));
    let shift = last - first + 1_000_000;
    let copies = bytes.div_ceil(data.len() as u64 - 24).max(1);
    ensure!(copies < 250 * 250, "{copies} copies: more than there are client addresses");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(dst)?);
    w.write_all(&data[..24])?;
    let mut rec = Vec::new();
    for k in 0..copies {
        let client = [127, 1 + (k / 250) as u8, (k % 250) as u8 + 1, 1];
        for r in &records {
            rec.clear();
            rec.extend_from_slice(&data[r.clone()]);
            let t = us(r) + k * shift;
            rec[0..4].copy_from_slice(&((t / 1_000_000) as u32).to_le_bytes());
            rec[4..8].copy_from_slice(&((t % 1_000_000) as u32).to_le_bytes());
            // Ethernet (14 bytes), IPv4 (IHL words), TCP: the client is the side not on 11434.
            let ip = 16 + 14;
            if rec.len() >= ip + 20 && rec[ip - 2..ip] == [0x08, 0x00] {
                let tcp = ip + usize::from(rec[ip] & 0x0f) * 4;
                if rec.len() >= tcp + 4 {
                    let server_is_src = u16::from_be_bytes([rec[tcp], rec[tcp + 1]]) == 11434;
                    let addr = ip + if server_is_src { 16 } else { 12 };
                    rec[addr..addr + 4].copy_from_slice(&client);
                }
            }
            w.write_all(&rec)?;
        }
    }
    w.flush()?;
    Ok(copies)
}

/// The real-client recording tiled to about `bytes`, replayed by this tree's tracer and the
/// baseline (interleaved): every copy's calls must be seen.
fn real_clients(env: &Env, bytes: u64, runs: usize) -> Result<Value> {
    let src = env.root.join(REAL_CLIENTS);
    let (_, one) = replay_once(&env.tracer, &src)?;
    let dst = env.file("real-clients-tiled.pcap");
    let copies = tile(&src, &dst, bytes)?;
    let file_bytes = std::fs::metadata(&dst)?.len();
    let ((ours, os), base) = tracer_replay(env, &dst, runs)?;
    let _ = std::fs::remove_file(&dst);
    ensure!(
        os.calls == one.calls * copies && os.payload_bytes == one.payload_bytes * copies,
        "{copies} copies of {} calls / {} bytes: the tracer saw {} calls / {} bytes",
        one.calls,
        one.payload_bytes,
        os.calls,
        os.payload_bytes
    );
    eprintln!(
        "  real clients ×{copies}: {:.0} MB/s per core, peak RSS {} MiB{}",
        os.payload_bytes as f64 / ours.cpu_s() / 1e6,
        ours.max_rss_kib / 1024,
        base.as_ref()
            .map(|(b, _)| format!(
                "; baseline {:.0} MB/s, {} MiB",
                os.payload_bytes as f64 / b.cpu_s() / 1e6,
                b.max_rss_kib / 1024
            ))
            .unwrap_or_default()
    );
    Ok(json!({
        "source": REAL_CLIENTS, "copies": copies, "file_bytes": file_bytes,
        "calls": os.calls, "payload_bytes": os.payload_bytes, "runs": runs,
        "tracer": figures(&ours, os.payload_bytes), "summary": os.json(),
        "baseline": base.map(|(b, _)| figures(&b, os.payload_bytes)),
    }))
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
    let (mut bytes, slice_bytes, runs) =
        if env.smoke { (3_000_000, u64::MAX, 1) } else { (1_000_000_000, 64_000_000, 3) };
    // A larger capture (memory bounded by the work, not the file: a 2 GB file), on request.
    if let Some(b) = std::env::var(BYTES_VAR).ok().and_then(|v| v.parse().ok()) {
        bytes = b;
    }
    let runs = std::env::var(RUNS_VAR).ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(runs);
    let real = real_clients(env, if env.smoke { 3_000_000 } else { 1_000_000_000 }, runs)?;
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
        "real_clients": real,
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
