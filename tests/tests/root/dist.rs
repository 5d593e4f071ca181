//! The static binary of `cargo xtask dist` (scripts/build-dist.sh), run the way a person who
//! downloaded it runs it: alone in an empty directory, with an empty environment. It is static
//! (`ldd` says so), says its version, commit and that eBPF is built in, passes `check`, replays
//! a recorded capture into exactly the spans the debug build makes, and traces live calls with
//! its eBPF programs and with its built-in libpcap, logging plain text and one ready line.
//!
//! The binary is `$OLLAMA_TRACER_DIST_BIN` (`cargo xtask test` builds it before the tests), else
//! it is built here by scripts/build-dist.sh (minutes the first time, seconds when up to date).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::check::{check_values, pair};
use super::harness::{Standin, Tracer, serial, tracer_bin};

macro_rules! require_root {
    ($name:expr) => {
        if !testkit::privileged::require_root($name) {
            return;
        }
    };
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
}

fn dist_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("OLLAMA_TRACER_DIST_BIN") {
            return PathBuf::from(p);
        }
        let out = Command::new("bash")
            .arg(repo().join("scripts/build-dist.sh"))
            .current_dir(repo())
            .env("CARGO_BUILD_FLAGS", "--quiet")
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/build-dist.sh");
        assert!(out.status.success(), "scripts/build-dist.sh failed ({})", out.status);
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(stdout.lines().last().expect("scripts/build-dist.sh printed the binary's path").trim())
    })
}

/// A directory holding nothing but a copy of the binary (and what a test puts there); removed
/// on drop.
struct Alone {
    dir: PathBuf,
    bin: PathBuf,
}

impl Alone {
    fn new(tag: &str) -> Alone {
        let dir = std::env::temp_dir().join(format!("ot-dist-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("ollama-tracer");
        std::fs::copy(dist_bin(), &bin).expect("copy the dist binary");
        Alone { dir, bin }
    }

    /// The binary, run from its directory with nothing in its environment.
    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.current_dir(&self.dir).env_clear();
        c
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn dist_binary_is_static_and_says_what_it_is() {
    require_root!("dist_binary_is_static_and_says_what_it_is");
    let _g = serial();
    let alone = Alone::new("static");
    let ldd = Command::new("ldd").arg(&alone.bin).output().expect("run ldd");
    let (out, err) = text(&ldd);
    let said = format!("{out}{err}");
    println!("ldd: {}", said.trim());
    assert!(
        said.contains("not a dynamic executable") || said.contains("statically linked"),
        "ldd does not call it static:\n{said}"
    );
    assert!(!said.contains("=>"), "ldd lists shared libraries:\n{said}");

    let version = alone.command().arg("--version").output().expect("--version");
    let (v, _) = text(&version);
    println!("{}", v.trim());
    assert!(version.status.success());
    let want = format!("ollama-tracer {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(v.starts_with(&want), "{v:?} does not start with {want:?}");
    assert!(v.contains("-linux-musl") && v.trim_end().ends_with(", eBPF built in)"), "{v:?}");
    assert!(!v.contains("commit unknown"), "built from a git work tree, the commit is known: {v:?}");

    let help = alone.command().arg("--help").output().expect("--help");
    let (h, _) = text(&help);
    assert!(help.status.success() && h.contains("Examples:") && h.contains("replay capture.pcap"), "{h}");
}

#[test]
fn dist_binary_checks_and_replays_like_the_debug_build() {
    require_root!("dist_binary_checks_and_replays_like_the_debug_build");
    let _g = serial();
    let alone = Alone::new("replay");
    let check = alone.command().arg("check").output().expect("check");
    let (c, _) = text(&check);
    println!("{c}");
    assert_eq!(check.status.code(), Some(0), "as root on this kernel the eBPF capture must be possible:\n{c}");
    assert!(c.contains("eBPF object:     built in"), "{c}");

    let captures = repo().join("tests/data/captures");
    for name in ["real-clients.pcap", "real-clients-any.pcapng"] {
        std::fs::copy(captures.join(name), alone.dir.join(name)).unwrap();
        let replay = |cmd: &mut Command| {
            let out = cmd.args(["replay", "--output", "json", "--id-seed", "16", name]).output().expect("replay");
            let (stdout, stderr) = text(&out);
            assert!(out.status.success(), "{name}: {stderr}");
            stdout
        };
        let ours = replay(&mut alone.command());
        // The debug build the other tests use, in the same directory and empty environment.
        let mut debug = Command::new(tracer_bin());
        debug.current_dir(&alone.dir).env_clear();
        let theirs = replay(&mut debug);
        let spans = ours.lines().count();
        println!("{name}: {spans} spans, identical to the debug build's");
        assert!(spans > 10, "{name}: only {spans} spans");
        assert!(ours == theirs, "{name}: the dist binary's spans differ from the debug build's");
    }
}

/// Live calls to the stand-in, traced by the dist binary with `capture` (`ebpf`, `pcap`).
fn traces_live_calls(capture: &str) {
    let alone = Alone::new(capture);
    let standin = Standin::start(&["127.0.0.1:0"], None, &[]);
    let port = standin.addrs[0].port();
    let mut cmd = alone.command();
    cmd.args(["run", "--output", "json", "--capture", capture, "--port", &port.to_string()]);
    let what = format!("dist binary, {capture}");
    let tracer = Tracer::start_command(&what, cmd);
    let stderr = tracer.stderr();
    let ready =
        stderr.lines().find(|l| l.contains("ready: ")).unwrap_or_else(|| panic!("{what}: no ready line:\n{stderr}"));
    assert!(ready.contains(&format!("watching TCP port {port} — capture: ")), "{what}: {ready}");
    let backend = if capture == "ebpf" { "capture: eBPF: cgroup_skb on " } else { "capture: pcap on any" };
    assert!(ready.contains(backend) && ready.contains("spans: JSON on stdout"), "{what}: {ready}");

    let addr = standin.addrs[0].to_string();
    let body = r#"{"model":"llama3.2","messages":[{"role":"user","content":"Why is the sky blue?"}]}"#;
    for (path, body) in [("/api/chat", Some(body)), ("/api/tags", None)] {
        let mut call = Command::new(env!("CARGO_BIN_EXE_ollama-call"));
        call.args([addr.as_str(), path]).args(body).stdout(Stdio::null());
        assert!(call.status().expect("run ollama-call").success(), "{what}: {path} failed");
    }
    let truth = standin.truth(2);
    let spans = tracer.wait_spans(2, Duration::from_secs(10));
    assert_eq!(spans.len(), 2, "{what}: {} spans", spans.len());
    let finished = tracer.stop(libc::SIGTERM);
    assert!(finished.status.success(), "{what}: exit {}", finished.status);
    for (span, t) in pair(&finished.spans, &truth, &what) {
        check_values(span, t, &what);
    }
    // stderr is a pipe: plain text, no colour codes.
    assert!(!stderr.contains('\x1b'), "{what}: colour codes in a log that is not a terminal:\n{stderr:?}");
}

#[test]
fn dist_binary_traces_live_calls_with_ebpf_and_libpcap() {
    require_root!("dist_binary_traces_live_calls_with_ebpf_and_libpcap");
    let _g = serial();
    traces_live_calls("ebpf");
    traces_live_calls("pcap");
}
