//! Project tasks. The README's two commands are `cargo xtask run` and `cargo xtask test`; both
//! first install what is missing (idempotent, quiet when everything is present): `run` only what
//! building and running the tracer needs, `test` everything the tests use too.
//! `cargo xtask dist` builds the static binary people download; `cargo xtask bench` runs the
//! benchmarks of docs/benchmarks.md.

mod bench;
mod fresh;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use bench::is_root;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "ollama-tracer project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building, running and testing needs (scripts/setup.sh): libpcap, the
    /// nightly's rust-src, bpf-linker against the nightly's LLVM, tracefs; the tests' Debian
    /// packages, Python venvs, Prometheus, cargo-deny, cargo-fuzz, Node.
    Setup,
    /// Install only what building and running need (scripts/setup-ebpf-toolchain.sh), build the
    /// binary (release, eBPF included) and run it; arguments go to `ollama-tracer` (default:
    /// `run`, the live capture).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up and run every test, lint and check the project has.
    Test {
        /// Skip formatting and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Skip the deployment checks (scripts/validate-deploy.sh).
        #[arg(long)]
        no_deploy: bool,
    },
    /// Build the static binary (scripts/build-dist.sh): musl, libpcap and the eBPF object
    /// inside, with completions, man pages, a tarball and its sha256 in target/dist.
    Dist,
    /// Build the static binary the container image ships (scripts/build-dist.sh) and check the
    /// deployment files with it (scripts/validate-deploy.sh).
    Deploy,
    /// Copy the tree where nothing is beside it (no ../shared) and run the pipeline's tests
    /// there: what a fresh clone would do (part of `test`).
    Fresh,
    /// Build in release and run the benchmarks (docs/benchmarks.md): results.json and
    /// summary.md in --out (default target/bench).
    Bench(bench::BenchArgs),
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn setup() -> Result<()> {
    let root = root();
    run(Command::new("bash").arg(root.join("scripts/setup.sh")).current_dir(&root))
}

/// Runs a build script that prints the binary's path last (scripts/build-release.sh, the
/// release build of `cargo xtask run`; scripts/build-dist.sh, the static binary); returns it.
fn build(script: &str, quiet: bool) -> Result<PathBuf> {
    let root = root();
    let mut cmd = Command::new("bash");
    cmd.arg(root.join(script)).current_dir(&root);
    if quiet {
        cmd.env("CARGO_BUILD_FLAGS", "--quiet");
    }
    let out = cmd.stderr(std::process::Stdio::inherit()).output().with_context(|| format!("cannot start {script}"))?;
    if !out.status.success() {
        bail!("{script} failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout.lines().last().map(str::trim).filter(|l| !l.is_empty());
    Ok(PathBuf::from(path.with_context(|| format!("{script} printed no binary path"))?))
}

/// Deployment checks (hadolint, Helm render + kubernetes-validate, checkov, systemd-analyze,
/// the image's binary run with the deployed privileges).
fn validate_deploy(bin: &Path) -> Result<()> {
    let root = root();
    run(Command::new("bash").arg(root.join("scripts/validate-deploy.sh")).arg("--binary").arg(bin).current_dir(&root))
}

fn main() -> ExitCode {
    match Cli::parse().command.exec() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Task {
    fn exec(self) -> Result<()> {
        match self {
            Task::Setup => setup(),
            Task::Run { args } => {
                // Only what building and running need: build-release.sh installs the eBPF
                // toolchain and libpcap (scripts/setup-ebpf-toolchain.sh), nothing the tests use.
                let bin = build("scripts/build-release.sh", true)?;
                let args = if args.is_empty() { vec!["run".to_string()] } else { args };
                run(Command::new(bin).args(args))
            }
            Task::Fresh => fresh::check(&root()),
            Task::Dist => build("scripts/build-dist.sh", false).map(|bin| eprintln!("xtask: {}", bin.display())),
            Task::Deploy => {
                setup()?;
                let bin = build("scripts/build-dist.sh", false)?;
                validate_deploy(&bin)
            }
            Task::Bench(args) => {
                setup()?;
                bench::run(&args, &root())
            }
            Task::Test { no_lint, no_deploy } => {
                setup()?;
                if !is_root() {
                    eprintln!("xtask: WARNING: not root: privileged eBPF and capture tests will be SKIPPED");
                }
                if !no_lint {
                    run(cargo().args(["fmt", "--all", "--check"]))?;
                    run(cargo()
                        .args(["clippy", "--workspace", "--all-targets", "--quiet", "--", "-D", "warnings"])
                        .env("OLLAMA_TRACER_REQUIRE_EBPF", "1"))?;
                    // Supply chain: sources, licences, wildcards, RustSec advisories (deny.toml).
                    run(Command::new("bash").arg(root().join("scripts/audit.sh")).current_dir(root()))?;
                }
                // The static binary people download and the image ships: the root tests run it
                // from an empty directory and environment (tests/tests/root/dist.rs), the
                // deployment checks below use it.
                let dist = build("scripts/build-dist.sh", true)?;
                // The eBPF object must be built in for the tests that use it.
                run(cargo()
                    .args(["test", "--workspace", "--no-fail-fast"])
                    .env("OLLAMA_TRACER_REQUIRE_EBPF", "1")
                    .env("OLLAMA_TRACER_DIST_BIN", &dist))?;
                // The same tree copied where nothing is beside it: no test reads outside it.
                fresh::check(&root())?;
                // Every benchmark once with tiny sizes on the debug binaries just tested: the
                // harness works and its figures are sane (never a speed check).
                let smoke = bench::BenchArgs {
                    smoke: true,
                    only: Vec::new(),
                    release: false,
                    out: Some(std::env::temp_dir().join(format!("ollama-tracer-bench-smoke-{}", std::process::id()))),
                    keep: false,
                    baseline: None,
                };
                let result = bench::run(&smoke, &root());
                if let Some(out) = &smoke.out {
                    let _ = std::fs::remove_dir_all(out);
                }
                result.context("benchmark smoke run")?;
                if !no_deploy {
                    // The deployment files checked, and the binary deploy/Dockerfile ships run
                    // with their privileges.
                    validate_deploy(&dist)?;
                }
                eprintln!("xtask: all tests passed");
                Ok(())
            }
        }
    }
}
