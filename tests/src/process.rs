//! Test processes: the stand-in server started from its binary, and the Python venv of the
//! real client libraries.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
