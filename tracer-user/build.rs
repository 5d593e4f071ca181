//! Builds the kernel programs (`tracer-ebpf`) for the BPF target with aya-build and the nightly
//! toolchain, for embedding with `include_bytes_aligned!`.
//!
//! Without the BPF toolchain (bpf-linker on PATH, the nightly toolchain with `rust-src`) the
//! crate still builds: a `cargo:warning` says why, the `ollama_tracer_ebpf` cfg stays unset and
//! the eBPF capture reports "not built in" at run time. `OLLAMA_TRACER_REQUIRE_EBPF=1` turns
//! that into a hard error. `scripts/setup-ebpf-toolchain.sh` installs the toolchain.
//!
//! It also records what `ollama-tracer --version` says: the commit (`OLLAMA_TRACER_COMMIT` when
//! set, as in the container build where `.git` is not copied; else `git rev-parse HEAD`; else
//! `unknown`) and the target.
//!
//! Env: `OLLAMA_TRACER_EBPF_TOOLCHAIN` (rustup toolchain, default `nightly`),
//! `OLLAMA_TRACER_REQUIRE_EBPF`, `OLLAMA_TRACER_COMMIT`, and aya-build's `AYA_BUILD_SKIP`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const REQUIRE: &str = "OLLAMA_TRACER_REQUIRE_EBPF";
const TOOLCHAIN: &str = "OLLAMA_TRACER_EBPF_TOOLCHAIN";
const EBPF_PACKAGE: &str = "tracer-ebpf";
const COMMIT: &str = "OLLAMA_TRACER_COMMIT";

fn main() {
    version_facts();
    println!("cargo::rustc-check-cfg=cfg(ollama_tracer_ebpf)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={REQUIRE}");
    println!("cargo:rerun-if-env-changed={TOOLCHAIN}");
    // A toolchain installed later (bpf-linker on PATH) is picked up on the next build.
    println!("cargo:rerun-if-env-changed=PATH");

    let require = env::var(REQUIRE).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    match build() {
        Ok(()) => println!("cargo:rustc-cfg=ollama_tracer_ebpf"),
        Err(reason) => {
            if require {
                eprintln!("error: {REQUIRE} is set but the eBPF programs could not be built: {reason}");
                eprintln!("hint: run scripts/setup-ebpf-toolchain.sh");
                std::process::exit(1);
            }
            println!(
                "cargo:warning=building without the eBPF capture ({reason}); \
                 run scripts/setup-ebpf-toolchain.sh to get it"
            );
            let one_line = reason.replace(['\n', '\r'], " ");
            println!("cargo:rustc-env=OLLAMA_TRACER_EBPF_MISSING={one_line}");
        }
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR not set")?);
    let workspace = manifest_dir.parent().ok_or("tracer-user has no parent directory")?;
    let ebpf_dir = workspace.join(EBPF_PACKAGE);
    let common_dir = workspace.join("tracer-common");
    if !ebpf_dir.join("Cargo.toml").is_file() {
        return Err(format!("{} not found", ebpf_dir.display()));
    }
    // aya-build watches tracer-ebpf; the record layout lives in tracer-common.
    println!("cargo:rerun-if-changed={}", common_dir.display());

    let Some(linker) = find_on_path("bpf-linker") else {
        // Rebuild once it gets installed where the setup script puts it (a directory is
        // scanned for changes; a missing file would make cargo rerun this script every time).
        if let Some(bin) = cargo_home().map(|h| h.join("bin")).filter(|b| b.is_dir()) {
            println!("cargo:rerun-if-changed={}", bin.display());
        }
        return Err("bpf-linker not found on PATH".to_owned());
    };
    println!("cargo:rerun-if-changed={}", linker.display());

    let toolchain = env::var(TOOLCHAIN).unwrap_or_else(|_| "nightly".to_owned());
    let sysroot = Command::new("rustup")
        .args(["run", &toolchain, "rustc", "--print", "sysroot"])
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if !sysroot.status.success() {
        if let Some(hashes) = rustup_home().map(|h| h.join("update-hashes")).filter(|d| d.is_dir()) {
            println!("cargo:rerun-if-changed={}", hashes.display());
        }
        return Err(format!("rust toolchain `{toolchain}` not installed"));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    // rustup rewrites this file when a component is added.
    println!("cargo:rerun-if-changed={}", sysroot.join("lib/rustlib/components").display());
    if !sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml").is_file() {
        return Err(format!("rust-src missing for toolchain `{toolchain}`"));
    }

    let root_dir = ebpf_dir.to_str().ok_or("non-UTF-8 workspace path")?;
    let package = aya_build::Package { name: EBPF_PACKAGE, root_dir, ..Default::default() };
    let toolchain_ref: &'static str = Box::leak(toolchain.into_boxed_str());
    let tc = if toolchain_ref == "nightly" {
        aya_build::Toolchain::Nightly
    } else {
        aya_build::Toolchain::Custom(toolchain_ref)
    };
    // aya-build turns every line the nested cargo prints into a `cargo:warning`: 40 "Compiling"
    // lines on every build. Quiet keeps its warnings and errors, which are worth seeing.
    // SAFETY: the build script is single-threaded here.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf([package], tc).map_err(|e| format!("aya-build failed: {e:#}"))?;

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);
    if !out_dir.join(EBPF_PACKAGE).is_file() {
        // AYA_BUILD_SKIP=1, or aya-build produced nothing.
        return Err("eBPF build skipped (AYA_BUILD_SKIP)".to_owned());
    }
    Ok(())
}

/// `OLLAMA_TRACER_COMMIT` and `OLLAMA_TRACER_TARGET` for the binary's `--version`.
fn version_facts() {
    println!("cargo:rerun-if-env-changed={COMMIT}");
    let commit = env::var(COMMIT).ok().filter(|c| !c.trim().is_empty()).or_else(git_head);
    println!("cargo:rustc-env={COMMIT}={}", commit.as_deref().map_or("unknown", |c| &c[..c.len().min(12)]));
    println!("cargo:rustc-env=OLLAMA_TRACER_TARGET={}", env::var("TARGET").unwrap_or_default());
}

/// The checked-out commit, when building from a git work tree. Reruns when HEAD moves: the
/// files git updates then (HEAD, the branch's ref, packed refs) are watched.
fn git_head() -> Option<String> {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
        Some(String::from_utf8(out.stdout).ok()?.trim().to_owned())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    for path in [git(&["rev-parse", "--git-path", "HEAD"]), git(&["rev-parse", "--git-path", "packed-refs"])]
        .into_iter()
        .flatten()
        .chain(git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git(&["rev-parse", "--git-path", &r])))
    {
        let path = PathBuf::from(path);
        // Relative paths are relative to where git ran: this package's directory.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(head)
}

fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME").map(PathBuf::from).or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
}

fn rustup_home() -> Option<PathBuf> {
    env::var_os("RUSTUP_HOME").map(PathBuf::from).or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".rustup")))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
