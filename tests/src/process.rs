//! Test processes: the stand-in server started from its binary, and the Python venv of the
//! real client libraries.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A running `ollama-standin`; stopped (SIGTERM, then SIGKILL) and its files removed on drop.
pub struct StandInProcess {
    child: Child,
    pub addr: SocketAddr,
    truth: PathBuf,
    dir: PathBuf,
}

impl StandInProcess {
    /// Starts `bin` (the `ollama-standin` binary) on a free loopback port with short timings.
    pub fn start(bin: &Path, extra: &[&str]) -> std::io::Result<StandInProcess> {
        let dir = std::env::temp_dir().join(format!(
            "standin-proc-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let truth = dir.join("truth.jsonl");
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--truth"])
            .arg(&truth)
            .args(["--ttft-ms", "20", "--gap-ms", "2"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line)?;
        let addr = match line.trim().strip_prefix("listening on ").and_then(|a| a.parse().ok()) {
            Some(a) => a,
            None => {
                let _ = child.kill();
                return Err(std::io::Error::other(format!("unexpected ready line {line:?}")));
            }
        };
        Ok(StandInProcess { child, addr, truth, dir })
    }

    /// The first `n` ground-truth records, waiting up to 10 s for them to be written.
    pub fn truth(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.truth).unwrap_or_default();
            // Only whole lines: the writer may be half way through the next one.
            let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            let recs: Vec<Value> = whole.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            if recs.len() >= n || Instant::now() >= deadline {
                return recs;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for StandInProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The venv's Python with the real client libraries (`$OLLAMA_TRACER_VENV`, else
/// `tests/.venv`), or `None` after saying loudly that `test` is skipped.
pub fn venv_python(test: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("OLLAMA_TRACER_VENV").map(PathBuf::from).unwrap_or_else(|| root.join(".venv"));
    let python = venv.join("bin").join("python");
    if python.exists() {
        return Some(python);
    }
    eprintln!(
        "\n*** SKIPPED {test}: no Python venv at {} ***\n*** run scripts/setup-python.sh (or cargo xtask test) to create it ***\n",
        venv.display()
    );
    None
}

/// A client script in `tests/clients`.
pub fn client_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients").join(name)
}

/// The `ollama-tracer` binary of this build profile, brought up to date once per test run.
///
/// It belongs to another package, so cargo does not build it for this test target; a nested
/// `cargo build` does (a no-op under `cargo test --workspace`, which built it already; cargo
/// holds no lock while tests run). `OLLAMA_TRACER_BIN` overrides.
pub fn tracer_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("OLLAMA_TRACER_BIN") {
            return PathBuf::from(p);
        }
        // <target>/<profile>/deps/<test>-<hash>
        let exe = std::env::current_exe().expect("test executable");
        let profile_dir = exe.parent().and_then(Path::parent).expect("profile directory").to_path_buf();
        let target_dir = profile_dir.parent().expect("target directory");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_owned(),
            Some(p) => p.to_owned(),
            None => "dev".to_owned(),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let t = Instant::now();
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "tracer-user", "--bin", "ollama-tracer", "--profile", &profile])
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .expect("run cargo build for ollama-tracer");
        assert!(status.success(), "cargo build of ollama-tracer failed");
        println!("ollama-tracer ({profile}) up to date in {:?}", t.elapsed());
        profile_dir.join("ollama-tracer")
    })
    .clone()
}
