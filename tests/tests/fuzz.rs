//! The fuzz targets of `tracer-core/fuzz` in the ordinary test run.
//!
//! - Every committed seed and regression input goes through its target's code (the same
//!   functions the fuzzers call) with stable Rust: a fixed bug stays fixed.
//! - When the nightly toolchain and cargo-fuzz are installed (`scripts/setup-fuzz.sh`, which
//!   `cargo xtask test` runs as part of its set-up), every target is fuzzed for a few seconds
//!   from the seeds; otherwise the test says loudly that it was skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Seconds each target is fuzzed for by the smoke run (12 targets: under two minutes).
const SMOKE_SECONDS: u32 = 8;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracer-core/fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.expect("directory entry").path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

#[test]
fn committed_seeds_and_regressions_pass_every_target() {
    let mut failures = Vec::new();
    for (name, body) in testkit::fuzz::TARGETS {
        let seeds = files(&fuzz_dir().join("seeds").join(name));
        assert!(!seeds.is_empty(), "no seeds for {name}: run the fuzz-seeds generator");
        let regressions = files(&fuzz_dir().join("regressions").join(name));
        println!("{name}: {} seeds, {} regressions", seeds.len(), regressions.len());
        for path in seeds.iter().chain(&regressions) {
            let data = std::fs::read(path).expect("reading a corpus file");
            if let Err(panic) = std::panic::catch_unwind(|| body(&data)) {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{name}: {}: {why}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{} input(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// A command run outside of this test's cargo: its variables would pin the stable toolchain,
/// and some dependencies' build scripts watch them (ring: `CARGO_PKG_NAME`), so a build from
/// here would not reuse one from `scripts/fuzz.sh` run by hand, and the next one not this.
fn clean(cmd: &mut Command) -> &mut Command {
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        let from_cargo = (name.starts_with("CARGO") && name != "CARGO_HOME")
            || name.starts_with("RUSTUP_TOOLCHAIN")
            || name.starts_with("RUSTC")
            || name.starts_with("RUSTDOC")
            || ["RUSTFLAGS", "RUST_RECURSION_COUNT", "OUT_DIR", "LD_LIBRARY_PATH"].contains(&&*name);
        if from_cargo {
            cmd.env_remove(&var);
        }
    }
    cmd
}

fn fuzzing_available() -> Result<(), String> {
    let out = clean(Command::new("cargo").args(["+nightly", "fuzz", "--version"]))
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`cargo +nightly fuzz` unavailable: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

#[test]
fn every_fuzz_target_runs_briefly_without_findings() {
    if let Err(why) = fuzzing_available() {
        println!("*** SKIPPED fuzz smoke run: {why} (scripts/setup-fuzz.sh installs it) ***");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fuzz.sh");
    // A corpus of its own: starting from the committed seeds only keeps the run short and the
    // same on every machine, whatever longer runs left in tracer-core/fuzz/corpus.
    let corpus = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-smoke-corpus");
    let _ = std::fs::remove_dir_all(&corpus);
    let out = clean(Command::new("bash").arg(&script).arg(SMOKE_SECONDS.to_string()))
        .env("FUZZ_JOBS", "1")
        .env("FUZZ_CORPUS", &corpus)
        .output()
        .expect("running scripts/fuzz.sh");
    let _ = std::fs::remove_dir_all(&corpus);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "fuzzing found something (or could not build):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, _) in testkit::fuzz::TARGETS {
        let line = stdout.lines().find(|l| l.split_whitespace().next() == Some(name));
        let execs: u64 = line.and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(execs > 0, "{name} did not run: {line:?}");
    }
}
