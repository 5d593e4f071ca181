//! `ollama-tracer top` end to end: the real binary in a detached 100×30 tmux pane (its own tmux
//! server, killed on drop whatever happens), read back with `capture-pane`, driven with
//! `send-keys`. A paced replay of the real-clients capture needs no root; live `top` against the
//! stand-in with `ollama-load` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::harness::{Standin, serial, skipped, tests_dir, tracer_bin};

/// A tmux server of our own with one session running a command; the server is killed on drop.
struct Tmux {
    socket: String,
    dir: PathBuf,
}

impl Tmux {
    /// Runs `command` (a shell command line) in a 100×30 pane; `None` when tmux is missing.
    fn start(tag: &str, command: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            return None;
        }
        let socket = format!("ot-top-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&socket);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t = Tmux { socket, dir };
        // No user configuration; the pane keeps its size whatever client attaches.
        let status = t
            .cmd()
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", "100", "-y", "30", command])
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed");
        Some(t)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn screen(&self) -> String {
        let out = self.cmd().args(["capture-pane", "-p", "-t", "top"]).output().expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let status = self.cmd().args(["send-keys", "-t", "top"]).args(keys).status().unwrap();
        assert!(status.success());
    }

    /// The screen once `ok` holds, polled every 100 ms; the last screen in the panic message.
    fn wait(&self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{what}: not on screen after {timeout:?}:\n{s}\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.file("stderr")).unwrap_or_default()
    }

    /// The command's exit code, once it has exited.
    fn exit_code(&self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(s) = std::fs::read_to_string(self.file("rc"))
                && let Ok(rc) = s.trim().parse()
            {
                return rc;
            }
            assert!(Instant::now() < deadline, "did not exit after {timeout:?}:\n{}\n{}", self.screen(), self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `prog args…` with stderr to a file and the exit code written after it, for a tmux pane.
fn shell_line(t_dir: &Path, prog: &Path, args: &[String]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = quote(&prog.display().to_string());
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let err = t_dir.join("stderr");
    let rc = t_dir.join("rc");
    format!("{line} 2>{}; echo $? >{}", quote(&err.display().to_string()), quote(&rc.display().to_string()))
}

/// Starts `ollama-tracer ARGS` in tmux.
fn top_in_tmux(tag: &str, args: &[String]) -> Option<Tmux> {
    // The pane's command line needs the directory first: make a server, then respawn into it.
    let t = Tmux::start(tag, "sleep 600")?;
    let line = shell_line(&t.dir, &tracer_bin(), args);
    let status = t.cmd().args(["respawn-pane", "-k", "-t", "top", &line]).status().unwrap();
    assert!(status.success());
    Some(t)
}

/// The section of the screen under the title containing `title`, up to the next title.
fn section<'a>(screen: &'a str, title: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = screen.lines().collect();
    let Some(start) = lines.iter().position(|l| l.starts_with(' ') && l.contains(title) && l.contains("──")) else {
        return Vec::new();
    };
    // Skip the title and the column header.
    lines[start + 2..].iter().take_while(|l| !l.contains("──") && !l.starts_with(" q quit")).copied().collect()
}

/// In-flight rows of a model whose (possibly cut) name starts with `model`: (tokens, bar
/// cells done).
fn in_flight(screen: &str, model: &str) -> Vec<(u64, usize)> {
    section(screen, " in flight: ")
        .iter()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|m| m.starts_with(model)))
        .map(|l| {
            let tokens = l.split_whitespace().nth(3).and_then(|t| t.parse().ok()).unwrap_or(0);
            (tokens, l.chars().filter(|c| *c == '█').count())
        })
        .collect()
}

/// Calls per model in the models table.
fn model_calls(screen: &str) -> BTreeMap<String, u64> {
    section(screen, " models ")
        .iter()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn top_replay_under_tmux() {
    let capture = tests_dir().join("data/captures/real-clients.pcap");
    let args: Vec<String> = ["replay", "--top", "--speed", "1"]
        .iter()
        .map(|s| s.to_string())
        .chain([capture.display().to_string()])
        .collect();
    let Some(t) = top_in_tmux("replay", &args) else {
        skipped("top_replay_under_tmux", "tmux not installed (scripts/setup-ebpf-toolchain.sh installs it)");
        return;
    };
    t.wait("the header", Duration::from_secs(30), |s| s.starts_with("ollama-tracer top · replay ×1 · "));
    // The qwen3 thinking stream (714 chunks over about 10 s) while it runs: its bar grows.
    let first = t.wait("qwen3 in flight", Duration::from_secs(20), |s| !in_flight(s, "qwen3").is_empty());
    let (tokens0, bar0) = in_flight(&first, "qwen3")[0];
    std::thread::sleep(Duration::from_millis(1500));
    let later = t.screen();
    let now = in_flight(&later, "qwen3");
    assert_eq!(now.len(), 1, "still in flight 1.5 s later:\n{later}");
    assert!(now[0].0 > tokens0 && now[0].1 > bar0, "{tokens0}/{bar0} then {now:?}\n{later}");

    // At the end: every call, per model as the stand-in's ground truth says.
    let end = t.wait("the end of the replay", Duration::from_secs(30), |s| s.contains(" · ended"));
    assert!(end.lines().next().unwrap().contains("18 calls · 0 in flight"), "{end}");
    let mut truth: BTreeMap<String, u64> = BTreeMap::new();
    for line in std::fs::read_to_string(tests_dir().join("data/captures/real-clients.truth.jsonl")).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(m) = v["model"].as_str() {
            *truth.entry(m.to_string()).or_default() += 1;
        }
    }
    assert_eq!(model_calls(&end), truth, "{end}");
    assert!(end.lines().any(|l| l.starts_with("calls/s ") && l.contains("kernel drops 0")), "{end}");
    let recent = section(&end, " recent calls ");
    assert!(recent.len() >= 15, "{end}");
    assert!(recent.iter().all(|l| l.contains("127.0.0.1:") && l.contains(" 200 ")), "{end}");
    assert!(recent.iter().any(|l| l.contains('▓')), "a load phase shows:\n{end}");

    // The newest call's detail, then back, then quit.
    t.keys(&["Enter"]);
    let detail = t.wait("the detail", Duration::from_secs(5), |s| s.contains("call #18 · Esc to close"));
    assert!(detail.contains("request     POST /v1/messages  status 200"), "{detail}");
    assert!(detail.contains("finish      end_turn"), "{detail}");
    t.keys(&["Escape"]);
    t.wait("the detail closed", Duration::from_secs(5), |s| !s.contains("Esc to close"));
    t.keys(&["q"]);
    assert_eq!(t.exit_code(Duration::from_secs(10)), 0, "{}", t.stderr());
    let err = t.stderr();
    assert!(err.contains(" 18 calls, "), "{err}");
    assert!(err.contains("top: ") && err.contains("UI thread CPU"), "{err}");
}

struct Load(Child);
impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn top_live_under_tmux() {
    if !testkit::privileged::require_root("top_live_under_tmux") {
        return;
    }
    let _g = serial();
    let standin = Standin::start(&["127.0.0.1:0"], None, &[]);
    let args: Vec<String> =
        ["top", "--port", &standin.addrs[0].port().to_string()].iter().map(|s| s.to_string()).collect();
    let Some(t) = top_in_tmux("live", &args) else {
        skipped("top_live_under_tmux", "tmux not installed (scripts/setup-ebpf-toolchain.sh installs it)");
        return;
    };
    t.wait("the header", Duration::from_secs(60), |s| s.starts_with("ollama-tracer top · live "));
    // Three connections, two 3 s streams each (60 tokens at 20/s). The model is named as sent,
    // scenario and all (cut to the column's width).
    let load = Load(
        Command::new(env!("CARGO_BIN_EXE_ollama-load"))
            .args(["--addr", &standin.addrs[0].to_string(), "--connections", "3", "--calls", "2"])
            .args(["--model", "@synth:tokens=60,rate=20/llama3.2"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start ollama-load"),
    );
    let model = "@synth:tokens=60";
    let first = t.wait("three streams in flight", Duration::from_secs(10), |s| in_flight(s, model).len() == 3);
    let before = in_flight(&first, model);
    std::thread::sleep(Duration::from_millis(1000));
    let later = t.screen();
    let after = in_flight(&later, model);
    let sum = |rows: &[(u64, usize)]| rows.iter().fold((0, 0), |(t, b), r| (t + r.0, b + r.1));
    let (before, after) = (sum(&before), sum(&after));
    assert!(after.0 > before.0 && after.1 > before.1, "tokens and bars grow: {before:?} then {after:?}\n{later}");
    let recent_ok = |s: &str| {
        section(s, " recent calls ").iter().filter(|l| l.contains("@synth:tokens=") && l.contains(" 200 ")).count()
    };
    // The pane is read while a frame may be half drawn (the header already counting a call
    // whose row is not written yet): wait for a screen showing the six calls in the recent
    // list too, then hold the whole frame to the rest.
    let end = t.wait("six calls, listed", Duration::from_secs(20), |s| {
        model_calls(s).iter().any(|(m, n)| m.starts_with(model) && *n == 6) && recent_ok(s) == 6
    });
    // Done calls leave the in-flight list with the frame that counts them.
    assert!(end.lines().next().unwrap().contains("6 calls · 0 in flight"), "{end}");
    assert!(section(&end, " in flight: ").iter().all(|l| l.trim().is_empty()), "{end}");
    assert_eq!(recent_ok(&end), 6, "{end}");
    drop(load);
    t.keys(&["q"]);
    assert_eq!(t.exit_code(Duration::from_secs(20)), 0, "{}", t.stderr());
    assert!(t.stderr().contains("6 calls"), "{}", t.stderr());
}
