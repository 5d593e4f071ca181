//! `ollama-tracer`: trace every Ollama call from the wire. Parses the command line and hands the
//! command to the library's run driver (or to `check`).

mod cli;
mod config;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use ollama_tracer::capture::check::{CheckReport, plan};
use ollama_tracer::capture::tls;
use ollama_tracer::privileges;
use ollama_tracer::run::inputs::STDIN;
use ollama_tracer::run::{self, Source};
use ollama_tracer::settings::Environment;
use ollama_tracer::top::logs;

use crate::cli::{CaptureArgs, Cli, Command, Generate, RunArgs};

fn main() -> ExitCode {
    let env = Environment::from_process();
    tracing_subscriber::fmt()
        // Held back while `top` has the terminal.
        .with_writer(logs::writer)
        // Colour only for a person at a terminal: a file, a pipe or the journal gets plain text.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()))
        .with_env_filter(
            env.log_filter()
                .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
                .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => live(cli.run, &env, false),
        Some(Command::Run(args)) => live(args, &env, false),
        Some(Command::Top(args)) => live(args, &env, true),
        Some(Command::Replay { files, ports, speed, top, common }) => replay(files, &ports, speed, top, &common, &env),
        Some(Command::Check { capture }) => return check(&capture),
        Some(Command::Generate { what }) => generate(what),
    };
    // Whatever `top` held back (it releases them itself when it ends normally).
    logs::release();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ollama-tracer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn replay(
    paths: Vec<std::path::PathBuf>,
    ports: &cli::PortArgs,
    speed: Option<f64>,
    top: bool,
    common: &cli::Common,
    env: &Environment,
) -> Result<()> {
    if speed.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
        anyhow::bail!("--speed must be a positive number");
    }
    // A capture file is untrusted input and replay needs no privilege: give up any held.
    if let Err(e) = privileges::restrict_current_thread(&[]) {
        tracing::warn!("{e}");
    }
    if paths.iter().filter(|p| p.as_os_str() == STDIN).count() > 1 {
        anyhow::bail!("cannot replay: standard input ({STDIN}) can be named once");
    }
    let (files, pumps) = run::inputs::open(&paths).context("cannot replay")?;
    let config = common.run_config(env, top, ports)?;
    run::run(Source::Replay { files, pumps, ports: ports.numbers(), speed }, config)?;
    Ok(())
}

fn live(args: RunArgs, env: &Environment, top: bool) -> Result<()> {
    let config = args.common.run_config(env, top, &args.capture.ports)?;
    let source = Source::Live {
        mode: args.capture.mode,
        capture: args.capture.config(),
        attribution: args.attribution.options(env),
    };
    run::run(source, config)?;
    Ok(())
}

fn generate(what: Generate) -> Result<()> {
    let mut cmd = Cli::command();
    match what {
        Generate::Completion { shell } => {
            clap_complete::generate(shell, &mut cmd, "ollama-tracer", &mut std::io::stdout());
        }
        Generate::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
        }
    }
    Ok(())
}

fn check(args: &CaptureArgs) -> ExitCode {
    let config = args.config();
    let report = CheckReport::gather_for(&config);
    println!("{report}");
    let (backend, why) = plan(args.mode, &config, &report);
    println!("run would use: {backend} ({why})");
    if config.tls.enabled {
        // Which processes' TLS the uprobes would see (reads /proc and their files).
        let processes = tls::inventory::gather(std::path::Path::new("/proc"));
        println!("{}", tls::inventory::Report(&processes));
    }
    ExitCode::from(report.exit_code() as u8)
}
