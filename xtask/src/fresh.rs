//! The repository on its own: the tree's files (what `git ls-files` lists, committed or not,
//! ignored ones left out) copied into an empty directory with nothing beside it, and the
//! pipeline's tests run there — so a fresh clone with no `../shared` next to it tests on its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Removes the copy on any outcome.
struct Copy(PathBuf);

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn check(root: &Path) -> Result<()> {
    let out = Command::new("git")
        .current_dir(root)
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .output()
        .context("cannot run git ls-files")?;
    if !out.status.success() {
        bail!("git ls-files failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let dir = Copy(std::env::temp_dir().join(format!("ollama-tracer-fresh-{}", std::process::id())));
    let tree = dir.0.join("ollama-tracer");
    let mut files = 0;
    for name in out.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let rel = Path::new(std::str::from_utf8(name).context("a file name that is not UTF-8")?);
        let (from, to) = (root.join(rel), tree.join(rel));
        // Listed but deleted in the work tree: a fresh clone would not have it either.
        if !from.exists() {
            continue;
        }
        std::fs::create_dir_all(to.parent().expect("a file has a parent"))?;
        std::fs::copy(&from, &to).with_context(|| format!("copying {}", rel.display()))?;
        files += 1;
    }
    eprintln!("xtask: fresh copy: {files} files in {} (nothing beside it); running its tests", tree.display());
    // A target directory of its own, kept between runs (<target>/fresh-copy). Not the main one:
    // cargo gives the copy's crates the same hashes as the tree's (paths inside a workspace are
    // taken relative to it), so their artefacts, built from the copy with its absolute paths
    // baked in (CARGO_MANIFEST_DIR), replaced the tree's, and the benchmark smoke run after this
    // started a stand-in looking for fixtures in the deleted copy. The Python clients' venv is
    // test tooling, not data.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("fresh-copy");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&tree)
        .args([
            "test",
            "--quiet",
            "--offline",
            "-p",
            "tracer-core",
            "-p",
            "ollama-tracer-tests",
            "--lib",
            "--test",
            "pipeline",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .env("OLLAMA_TRACER_VENV", root.join("tests/.venv"))
        // The pipeline's tests need no kernel programs: do not build them again for the copy.
        .env("AYA_BUILD_SKIP", "1")
        .env_remove("OLLAMA_TRACER_REQUIRE_EBPF")
        .status()
        .context("cannot run cargo test in the copy")?;
    if !status.success() {
        bail!("the tests failed in a copy of the tree with nothing beside it ({status})");
    }
    Ok(())
}
