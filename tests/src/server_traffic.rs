//! Traffic that exercises the server metrics: through the tap to a stand-in that loads models
//! (600 ms) — an explicit load, six streams to one model at once (the first loads it), two
//! `/api/ps` answers around an unload, two OpenAI calls. Recorded to a pcap, with the truth.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::pcap::{FileFormat, LinkType, TsPrecision, WriterConfig, write_file};
use crate::process::StandInProcess;
use crate::tap::Tap;

/// The model the streams use.
pub const BURST: &str = "burst";
/// Streams of `burst` at once.
pub const STREAMS: usize = 6;
/// Every call: synthesised, 30 tokens at 30 per second.
const SYNTH: &str = "synth:tokens=30,rate=30";
/// Calls made in all.
pub const CALLS: usize = 1 + STREAMS + 5;

/// A recorded run: the capture, and what the stand-in says it sent (one record per call).
pub struct ServerTraffic {
    pub pcap: PathBuf,
    pub truth: Vec<Value>,
}

/// One request on its own connection; the whole response read (the server closes after it).
fn call(addr: SocketAddr, method: &str, path: &str, body: &str) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:11434\r\nX-Standin-Scenario: {SYNTH}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    assert!(out.starts_with(b"HTTP/1.1 200"), "{path}: {}", String::from_utf8_lossy(&out[..out.len().min(200)]));
}

/// The traffic, to `addr` (a stand-in started with `--load-ms`).
pub fn drive(addr: SocketAddr) {
    // An explicit load (cold: the load request waits).
    call(addr, "POST", "/api/generate", r#"{"model":"second"}"#);
    // Streams to one model at once; the first to arrive loads it.
    let streams: Vec<_> = (0..STREAMS)
        .map(|i| {
            std::thread::spawn(move || {
                let body = format!(r#"{{"model":"{BURST}","messages":[{{"role":"user","content":"stream {i}"}}]}}"#);
                call(addr, "POST", "/api/chat", &body);
            })
        })
        .collect();
    for s in streams {
        s.join().expect("stream");
    }
    call(addr, "GET", "/api/ps", "");
    call(addr, "POST", "/api/generate", r#"{"model":"second","keep_alive":0}"#);
    call(addr, "GET", "/api/ps", "");
    for _ in 0..2 {
        let body = format!(r#"{{"model":"{BURST}","messages":[{{"role":"user","content":"hi"}}]}}"#);
        call(addr, "POST", "/v1/chat/completions", &body);
    }
}

/// Runs the traffic through the tap against the stand-in binary `standin`, writing
/// `dir/server.pcap`.
pub fn record(standin: &Path, dir: &Path) -> ServerTraffic {
    let standin = StandInProcess::start(standin, &["--load-ms", "600"]).expect("stand-in");
    let tap = Tap::start(standin.addr).expect("tap");
    drive(tap.addr());
    let truth = standin.truth(CALLS);
    assert_eq!(truth.len(), CALLS);
    // The tap sees the last bytes and FINs.
    std::thread::sleep(Duration::from_millis(200));
    let pcap = dir.join("server.pcap");
    write_file(&pcap, WriterConfig::new(FileFormat::Pcap, TsPrecision::Nano, LinkType::LinuxSll2), &tap.packets())
        .expect("write the capture");
    ServerTraffic { pcap, truth }
}
