//! The whole replay pipeline from arbitrary bytes as a capture file (pcap or pcapng): file
//! validation, frame walking, merging, decoding, reassembly, HTTP, calls.
//!
//! Input: the file's bytes. Its length picks the variant, so the corpus covers all of them:
//! content capture on for even lengths; for lengths divisible by three the file is replayed
//! twice, merged (as two interfaces that saw the same packets).
//!
//! Invariants: opening fails only with a format error; a file that opens walks exactly the
//! records it validated; every frame is counted once; every HTTP exchange becomes exactly one
//! call, and so does every request (and a response whose request the capture missed, at most);
//! reassembly never delivers more than it was given.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::OnceLock;

use tracer_core::capture::file::{CaptureFile, FileError};
use tracer_core::llm::LlmConfig;
use tracer_core::pipeline::PipelineConfig;
use tracer_core::replay::replay;

/// One scratch file per process (libFuzzer's parallel jobs are processes).
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::path::Path::new("/dev/shm");
        let dir = if dir.is_dir() { dir.to_path_buf() } else { std::env::temp_dir() };
        dir.join(format!("ollama-tracer-fuzz-replay-{}.cap", std::process::id()))
    })
}

pub fn run(data: &[u8]) {
    let path = scratch();
    let mut f = std::fs::File::create(path).expect("scratch file");
    f.write_all(data).expect("scratch file");
    drop(f);
    check_file(path, data.len());
}

fn check_file(path: &PathBuf, len: usize) {
    let copies = if len.is_multiple_of(3) { 2 } else { 1 };
    let mut files = Vec::new();
    for _ in 0..copies {
        match CaptureFile::open(path) {
            Ok(f) => files.push(f),
            // The scratch file is there and readable: an I/O error is the reader's fault.
            Err(FileError::Io { error, .. }) => panic!("reading the scratch file ({len} bytes): {error}"),
            Err(FileError::NotACapture { .. } | FileError::Corrupt { .. }) => return,
        }
    }
    // Two walks of one file agree: the same frames, ended the same way (at the end, at a cut
    // record, or at an error and its offset).
    let walk = |f: &CaptureFile| {
        let mut frames = f.frames();
        let mut walked = 0u64;
        while frames.next().is_some() {
            walked += 1;
        }
        assert!(frames.next().is_none(), "a walk stays ended");
        (walked, frames.cut_short(), frames.error().map(ToString::to_string))
    };
    let first = walk(&files[0]);
    assert_eq!(walk(&files[0]), first, "two walks of one file");
    let records = first.0;

    let llm = LlmConfig { capture_content: len.is_multiple_of(2), ..Default::default() };
    let config = PipelineConfig { llm, ..Default::default() };
    let mut calls = 0u64;
    let report = replay(&files, &[11434], config, &mut |_| calls += 1);
    let c = &report.capture;
    assert_eq!(c.frames, records * copies, "frames counted");
    assert_eq!(report.ended_on, first.2, "the error that ended the file, reported by the replay");
    assert_eq!(c.truncated_files, first.1.map_or(0, |_| copies), "files ended by a cut record");
    assert_eq!(c.packets + c.ignored + c.malformed + c.unsupported + c.fragments, c.frames, "frame outcomes {c:?}");
    let p = &report.pipeline;
    assert_eq!(p.reassembly.segments, c.packets, "segments reaching reassembly");
    assert_eq!(p.reassembly.payload_bytes, c.payload_bytes, "payload bytes reaching reassembly");
    assert!(p.reassembly.delivered_bytes <= p.reassembly.payload_bytes, "delivered more than captured");
    assert_eq!(p.llm.calls, calls, "calls counted vs emitted");
    assert_eq!(p.http.complete + p.http.truncated + p.http.no_response, calls, "one call per exchange");
    // Every request ends as a call, and so does a response whose request the capture missed.
    assert!(p.http.requests <= calls, "a request without its call");
    assert!(calls <= p.http.requests + p.http.orphan_responses, "a call without a request or response");
}
