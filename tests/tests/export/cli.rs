//! The `ollama-tracer replay` command on broken and cut-short files.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(testkit::process::tracer_bin())
}

fn temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ollama-tracer-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A pcap global header (µs, little-endian, raw IP).
fn pcap_header() -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&262_144u32.to_le_bytes());
    h.extend_from_slice(&101u32.to_le_bytes());
    h
}

/// One raw-IPv4 TCP packet 127.0.0.1:40000 → :11434 carrying `payload`.
fn record(payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1];
    let total = (20 + 20 + payload.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&11434u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18;
    let mut frame = ip;
    frame.extend_from_slice(&tcp);
    frame.extend_from_slice(payload);
    let mut r = Vec::new();
    r.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    r.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    r.extend_from_slice(&frame);
    r
}

/// A capture of one record carrying `payload`, then a corrupt one: the bytes and the corrupt
/// record's offset.
fn corrupt_after(payload: &[u8]) -> (Vec<u8>, usize) {
    let mut bytes = pcap_header();
    bytes.extend(record(payload));
    let bad_at = bytes.len();
    let mut bad = record(b"x");
    bad[8..12].copy_from_slice(&0x7fff_fff0u32.to_le_bytes()); // absurd caplen
    bytes.extend(bad);
    (bytes, bad_at)
}

#[test]
fn not_a_capture_is_an_error() {
    let path = temp("text.pcap", b"this is not a capture file at all");
    let out = bin().arg("replay").arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a pcap or pcapng file"));
}

#[test]
fn missing_file_is_an_error() {
    let out = bin().args(["replay", "/nonexistent/capture.pcap"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/capture.pcap"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "the reason once: {err}");
}

#[test]
fn cut_short_last_record_is_a_warning() {
    let mut bytes = pcap_header();
    bytes.extend(record(b"GET /api/version HTTP/1.1\r\n\r\n"));
    let cut_at = bytes.len();
    let last = record(b"GET /api/tags HTTP/1.1\r\n\r\n");
    bytes.extend(&last[..last.len() / 2]);
    let path = temp("cut.pcap", &bytes);
    let out = bin().args(["replay", "--output", "json"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("byte offset {cut_at}")), "{err}");
    // The request seen is reported (no response: incomplete), as one JSON line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let span: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(span["attributes"]["ollama_tracer.incomplete"], true);
    assert_eq!(span["name"], "GET /api/version");
}

/// The committed real capture (tests/data/captures/real-clients.pcap): 18 calls by real clients.
fn real_capture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/captures/real-clients.pcap")
}

fn replay_json(args: &[&str], env: &[(&str, &str)]) -> (bool, Vec<serde_json::Value>, String) {
    let mut cmd = bin();
    cmd.arg("replay").arg(real_capture()).args(["--output", "json", "--quiet"]).args(args);
    cmd.env_remove("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT").env_remove("OTEL_TRACES_SAMPLER");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let spans = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (out.status.success(), spans, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn has_content(spans: &[serde_json::Value]) -> bool {
    spans.iter().any(|s| s["attributes"].get("gen_ai.input.messages").is_some())
}

#[test]
fn content_capture_is_off_by_default_and_on_by_flag_or_environment() {
    let (ok, spans, _) = replay_json(&[], &[]);
    assert!(ok);
    assert_eq!(spans.iter().filter(|s| s["parent_span_id"] == "" || s["kind"] == "server").count(), 18);
    assert!(!has_content(&spans), "content is opt-in");
    let (ok, spans, _) = replay_json(&["--capture-content", "--content-max-bytes", "16"], &[]);
    assert!(ok);
    assert!(has_content(&spans));
    let long = spans
        .iter()
        .filter_map(|s| s["attributes"]["gen_ai.output.messages"].as_str())
        .any(|m| m.contains("…[truncated"));
    assert!(long, "parts cut at 16 bytes");
    for v in ["true", "SPAN_ONLY", "span_and_event"] {
        let (_, spans, _) = replay_json(&[], &[("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", v)]);
        assert!(has_content(&spans), "{v}");
    }
    let (_, spans, _) = replay_json(&[], &[("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "NO_CONTENT")]);
    assert!(!has_content(&spans));
    // A custom redaction applies to every captured text.
    let (_, spans, _) = replay_json(&["--capture-content", "--redact", "(?i)berlin"], &[]);
    let all = serde_json::to_string(&spans).unwrap();
    assert!(!all.to_lowercase().contains("berlin") && all.contains("[REDACTED]"));
    let (ok, _, err) = replay_json(&["--capture-content", "--redact", "(unclosed"], &[]);
    assert!(!ok && err.contains("--redact"), "{err}");
}

#[test]
fn sampling_flags_and_environment() {
    let calls = |spans: &[serde_json::Value]| spans.iter().filter(|s| s["kind"] == "server").count();
    let (_, spans, _) = replay_json(&["--sample-ratio", "0"], &[]);
    assert_eq!(calls(&spans), 0, "nothing kept at ratio 0 (no errors in this capture)");
    let (_, spans, _) = replay_json(&["--sample-ratio", "0", "--keep-slower-than", "1s"], &[]);
    assert_eq!(calls(&spans), 1, "only the 10.7 s thinking call");
    let (_, spans, _) = replay_json(&[], &[("OTEL_TRACES_SAMPLER", "always_off")]);
    assert_eq!(calls(&spans), 0);
    let (_, spans, _) = replay_json(&[], &[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "1")]);
    assert_eq!(calls(&spans), 18);
    let (ok, _, err) = replay_json(&["--sample-ratio", "2"], &[]);
    assert!(!ok && err.contains("between 0 and 1"), "{err}");
    let (ok, _, err) = replay_json(&[], &[("OTEL_TRACES_SAMPLER", "jaeger_remote")]);
    assert!(!ok && err.contains("unknown sampler"), "{err}");
}

#[test]
fn cold_start_threshold_is_configurable() {
    let cold =
        |spans: &[serde_json::Value]| spans.iter().filter(|s| s["attributes"]["ollama.cold_start"] == true).count();
    let default = cold(&replay_json(&[], &[]).1);
    assert!(default > 0, "the recorded fixtures include model loads");
    assert!(cold(&replay_json(&["--cold-start-threshold", "1ms"], &[]).1) > default);
    assert_eq!(cold(&replay_json(&["--cold-start-threshold", "1h"], &[]).1), 0);
}

#[test]
fn top_refuses_a_stdout_that_is_not_a_terminal() {
    // Refused before anything starts: no capture, no replay, no root needed.
    for args in [&["top"][..], &["replay", "--top", "--speed", "1"][..]] {
        let mut cmd = bin();
        cmd.args(args);
        if args[0] == "replay" {
            cmd.arg(real_capture());
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("`top` needs a terminal on stdout, and stdout is a pipe or a file"), "{err}");
    }
}

/// Spans without their random ids, in order: what two replays of the same bytes must agree on.
fn without_ids(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let span = v.as_object_mut().unwrap();
            for k in ["trace_id", "span_id", "parent_span_id"] {
                span.remove(k);
            }
            // Links point at spans by those ids too: their kinds are kept.
            for link in span.get_mut("links").and_then(|l| l.as_array_mut()).into_iter().flatten() {
                link.as_object_mut().unwrap().retain(|k, _| k == "attributes");
            }
            v
        })
        .collect()
}

/// `cmd` started with its three standard streams piped to the test.
fn spawn_piped(mut cmd: Command) -> std::process::Child {
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// `cmd` with `bytes` written into its standard input through a pipe, in pieces, while it runs.
fn with_piped_stdin(cmd: Command, bytes: Vec<u8>) -> std::process::Output {
    use std::io::Write;
    let mut child = spawn_piped(cmd);
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for piece in bytes.chunks(64 << 10) {
            if stdin.write_all(piece).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn standard_input_replays_as_the_file_does() {
    let file = bin().arg("replay").arg(real_capture()).args(["--output", "json", "--quiet"]).output().unwrap();
    assert!(file.status.success());
    let mut cmd = bin();
    cmd.args(["replay", "-", "--output", "json", "--quiet"]);
    let piped = with_piped_stdin(cmd, std::fs::read(real_capture()).unwrap());
    assert!(piped.status.success(), "{}", String::from_utf8_lossy(&piped.stderr));
    let (a, b) = (without_ids(&file.stdout), without_ids(&piped.stdout));
    assert_eq!(a.iter().filter(|s| s["kind"] == "server").count(), 18);
    assert_eq!(a, b, "the same spans from a pipe as from the file");

    let twice = bin().args(["replay", "-", "-"]).output().unwrap();
    assert!(!twice.status.success());
    assert!(String::from_utf8_lossy(&twice.stderr).contains("can be named once"));
}

/// A capture is read once: a corrupt record ends it with an error naming its offset, after
/// the calls before it were traced — a file as a stream (standard input).
#[test]
fn a_corrupt_capture_ends_with_the_offset_after_tracing_what_came_before() {
    let (bytes, bad_at) = corrupt_after(b"GET /api/version HTTP/1.1\r\n\r\n");
    let path = temp("corrupt.pcap", &bytes);
    let from_file = bin().args(["replay", "--output", "json"]).arg(&path).output().unwrap();
    let mut cmd = bin();
    cmd.args(["replay", "-", "--output", "json"]);
    let from_stream = with_piped_stdin(cmd, bytes);
    for (out, name) in [(from_file, path.display().to_string()), (from_stream, "-".to_string())] {
        assert!(!out.status.success(), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{name}: corrupt capture at byte offset {bad_at}")), "{err}");
        assert!(err.contains("ollama-tracer summary"), "summarised before the error: {err}");
        let spans = without_ids(&out.stdout);
        assert_eq!(spans.len(), 1, "the request before the corrupt record is traced: {spans:?}");
        assert_eq!(spans[0]["name"], "GET /api/version");
    }
}

/// A capture killed while writing ends in a cut record: the calls before it are traced, and
/// a warning names the record's offset (not an error).
#[test]
fn a_capture_cut_short_is_traced_to_its_cut_with_a_warning() {
    let mut bytes = pcap_header();
    bytes.extend(record(b"GET /api/version HTTP/1.1\r\n\r\n"));
    let cut_at = bytes.len();
    let mut cut = record(b"GET /api/tags HTTP/1.1\r\n\r\n");
    cut.truncate(cut.len() - 5);
    bytes.extend(cut);
    let path = temp("cut.pcap", &bytes);
    let out = bin().args(["replay", "--output", "json"]).arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warning = format!("warning: {}: last record at byte offset {cut_at} is cut short", path.display());
    assert!(err.contains(&warning), "{err}");
    assert!(err.contains("1 capture file(s) ended with a cut-short record"), "{err}");
    assert_eq!(without_ids(&out.stdout).len(), 1, "the request before the cut record is traced");
}

/// A replay of the real capture fed through its standard input, left open (as tcpdump leaves
/// it while it waits for traffic); its spans come line by line through the receiver.
struct OpenStream {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
}

impl OpenStream {
    fn start() -> OpenStream {
        use std::io::{BufRead, Write};
        let mut cmd = bin();
        cmd.args(["replay", "-", "--output", "json"]);
        let mut child = spawn_piped(cmd);
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&std::fs::read(real_capture()).unwrap()).unwrap();
        stdin.flush().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                if tx.send(line.unwrap()).is_err() {
                    return;
                }
            }
        });
        OpenStream { child, stdin, lines, reader }
    }

    fn span(&self, n: usize) -> String {
        let line =
            self.lines.recv_timeout(std::time::Duration::from_secs(20)).unwrap_or_else(|e| panic!("span {n}: {e}"));
        assert!(line.contains("\"kind\":\"server\"") || line.contains("\"kind\":\"internal\""), "{line}");
        line
    }

    /// Waits for the end (`max`), then closes the pipe: the exit status and standard error.
    fn end(mut self, max: std::time::Duration) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + max;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                self.child.kill().unwrap();
                panic!("the replay did not end within {max:?} while its input stayed open");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        drop(self.stdin);
        self.reader.join().unwrap();
        assert!(self.lines.try_recv().is_err(), "no span after those read");
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut err).unwrap();
        (status, err)
    }
}

/// Each call is written as it completes, while the pipe stays open (tcpdump still running);
/// once every call of the capture is out, the pipe has nothing more to give (tcpdump waiting
/// for traffic), and SIGTERM to the tracer alone still ends the replay, summarised.
#[test]
fn a_stream_writes_each_call_while_open_and_a_stop_ends_it_when_idle() {
    let stream = OpenStream::start();
    for n in 0..38 {
        stream.span(n);
    }
    // SAFETY: a signal to our own child, by its pid.
    assert_eq!(unsafe { libc::kill(stream.child.id() as i32, libc::SIGTERM) }, 0);
    let (status, err) = stream.end(std::time::Duration::from_secs(20));
    assert!(status.success(), "{err}");
    assert!(err.contains("18 calls, 38 spans"), "summarised: {err}");
}
