//! One run, whatever feeds it: recorded files (`replay`) or a live capture (`run`, `top`).
//!
//! [`run`] owns what every run has: the outputs built from the settings, the span stage, the
//! terminal view when asked for, SIGINT/SIGTERM, the health ticks, the end (calls in flight
//! ended as incomplete, outputs flushed within the flush timeout) and the summary. The source
//! only feeds segments to the [`driver::Driver`]: [`replay`] on this thread, [`live`] from the
//! capture's async task to a pipeline thread.

pub mod driver;
pub mod inputs;
mod live;
pub mod outputs;
mod replay;
pub mod stop;

use std::io::{self, BufWriter, IsTerminal, LineWriter, Write};
use std::time::Duration;

use tracer_core::capture::file::{CaptureFile, FileError};
use tracer_core::pipeline::PipelineConfig;
use tracer_core::span::Resource;
use tracer_core::span::stage::{SpanStage, SpanStageConfig};

use self::driver::Driver;
use self::stop::Stop;
use crate::attribution::enrich::Enricher;
use crate::attribution::{AttributionError, AttributionOptions};
use crate::capture::{CaptureConfig, CaptureError, CaptureMode, LiveCapture, socket::SocketEventSink};
use crate::export::otlp::Delivery;
use crate::report::Report;
use crate::settings::{ExportSettings, StdoutChoice};
use crate::sink::Outputs;
use crate::top::ui::{Ui, UiStats};
use crate::top::{SharedTop, TopConfig, TopSink, logs};
use crate::transport::ExportError;

/// How often the health report (and `top`'s snapshot) is taken, and a quiet live capture's
/// time-based rules run.
pub const TICK: Duration = Duration::from_millis(250);

/// A live run's end: how long queued spans and the last metrics get by default.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// What feeds a run.
// Built once per run.
#[allow(clippy::large_enum_variant)]
pub enum Source {
    /// Recorded files, merged by timestamp; `speed`: a multiple of the recorded pace (`None`:
    /// as fast as possible).
    Replay { files: Vec<CaptureFile>, pumps: Vec<inputs::Pump>, ports: Vec<u16>, speed: Option<f64> },
    /// A live capture, started by the run (inside its runtime), with attribution unless `None`.
    Live { mode: CaptureMode, capture: CaptureConfig, attribution: Option<AttributionOptions> },
}

/// Everything after the source.
pub struct RunConfig {
    pub pipeline: PipelineConfig,
    pub spans: SpanStageConfig,
    pub export: ExportSettings,
    pub resource: Resource,
    /// `top`: the terminal view instead of (or beside) the other outputs; its `source` is filled
    /// in by the run.
    pub top: Option<TopConfig>,
    /// How long queued spans and the last metrics get at the end: for a live capture (and a
    /// paced replay) [`DEFAULT_FLUSH_TIMEOUT`] when `None`; a replay as fast as it reads is an
    /// offline job that waits until everything is delivered when `None`.
    pub flush_timeout: Option<Duration>,
    /// No summary on stderr.
    pub quiet: bool,
}

// Capture and Attribution name their cause in their own message and are not its `source`:
// printed as a chain (`{:#}`), it would otherwise come twice.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start the live capture: {0}")]
    Capture(CaptureError),
    #[error("cannot start attribution: {0}")]
    Attribution(AttributionError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(
        "`top` draws on stdout: spans (--output text|json) and console metrics cannot go there too (use --output none|otlp, --metrics-addr)"
    )]
    TopStdout,
    #[error(
        "`top` needs a terminal on stdout, and stdout is a pipe or a file: use `run` (or `replay`) for text or JSON output"
    )]
    TopTerminal,
    #[error("{what}: {source}")]
    Io { what: &'static str, source: io::Error },
    #[error("writing spans: {0}")]
    Write(io::Error),
    /// A stream being replayed ended on a corrupt record or a failed read; what came before
    /// was traced, flushed and summarised.
    #[error("replay ended early: {0}")]
    Replay(FileError),
}

impl From<CaptureError> for RunError {
    fn from(e: CaptureError) -> Self {
        RunError::Capture(e)
    }
}

impl From<AttributionError> for RunError {
    fn from(e: AttributionError) -> Self {
        RunError::Attribution(e)
    }
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}

/// Stdout: line-buffered on a terminal (each call shows as it completes), block-buffered else.
fn stdout_writer() -> Box<dyn Write + Send> {
    if io::stdout().is_terminal() {
        Box::new(LineWriter::new(io::stdout()))
    } else {
        Box::new(BufWriter::with_capacity(1 << 16, io::stdout()))
    }
}

/// The terminal view of a run, while it is up.
struct View {
    ui: Ui,
    state: SharedTop,
}

/// Runs `source` to its end (or a stop) and prints the summary; what the run saw.
pub fn run(source: Source, config: RunConfig) -> Result<Report, RunError> {
    if config.top.is_some() {
        if !io::stdout().is_terminal() {
            return Err(RunError::TopTerminal);
        }
        if config.export.stdout != StdoutChoice::None || config.export.console_metrics {
            return Err(RunError::TopStdout);
        }
    }
    let stop = Stop::on_signals().map_err(io_err("installing the signal handlers"))?;
    let mut ended_on = None;
    let (report, ui_stats, shut) = match source {
        Source::Replay { files, pumps, ports, speed } => {
            for pump in &pumps {
                stop.on_request(pump.closer());
            }
            let source = speed.map_or_else(|| "replay".to_string(), |s| format!("replay ×{s}"));
            // Paced, a replay stands in for live traffic, export included; as fast as it
            // reads, it is an offline job that waits for the collector.
            let (delivery, flush) = match speed {
                Some(_) => (Delivery::Live, Some(config.flush_timeout.unwrap_or(DEFAULT_FLUSH_TIMEOUT))),
                None => (Delivery::Offline { stop: stop.signalled() }, config.flush_timeout),
            };
            let (mut driver, view, _) = prepare(&config, None, source, &stop, delivery)?;
            let fed = replay::feed(&files, &ports, speed, &stop, &mut driver);
            ended_on = fed.error.or_else(|| pumps.iter().find_map(inputs::Pump::take_error));
            let mut report = driver.finish(fed.last_ts, &fed.capture, None);
            // The view stays up on the final state until `q` (or a signal).
            let ui_stats = end_view(view, false)?;
            // Known only once read, and said once the view is gone.
            for (path, offset) in &fed.cut_short {
                eprintln!(
                    "ollama-tracer: warning: {}: last record at byte offset {offset} is cut short (ignored)",
                    path.display()
                );
            }
            let shut = driver.shutdown(flush, &mut report);
            (report, ui_stats, shut)
        }
        Source::Live { mode, capture, attribution } => {
            // Blocking-pool threads started before the capability drop (DNS for the Kubernetes
            // client) keep the full set while they live: let them go after 100 ms idle, not
            // tokio's 10 s.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_keep_alive(Duration::from_millis(100))
                .build()
                .map_err(io_err("starting the async runtime"))?;
            let (driver, mut report, ui_stats) =
                runtime.block_on(live_run(mode, capture, attribution, &config, &stop))?;
            let shut = driver.shutdown(Some(config.flush_timeout.unwrap_or(DEFAULT_FLUSH_TIMEOUT)), &mut report);
            (report, ui_stats, shut)
        }
    };
    if !config.quiet {
        eprintln!("{report}");
        if let Some(s) = ui_stats {
            eprintln!("  {s}");
        }
    }
    shut.map_err(RunError::Write)?;
    match ended_on {
        Some(e) => Err(RunError::Replay(e)),
        None => Ok(report),
    }
}

async fn live_run(
    mode: CaptureMode,
    mut capture: CaptureConfig,
    attribution: Option<AttributionOptions>,
    config: &RunConfig,
    stop: &Stop,
) -> Result<(Driver, Report, Option<UiStats>), RunError> {
    let attribution = match (attribution, mode) {
        // libpcap sees no sockets: nothing to attribute.
        (Some(opts), CaptureMode::Auto | CaptureMode::Ebpf) => opts.start(&capture.ebpf_attach)?,
        _ => None,
    };
    if let Some(a) = &attribution {
        capture.socket_events = Some(SocketEventSink(std::sync::Arc::new(a.clone())));
    }
    let (live, reason) = crate::capture::start_live(mode, &capture)?;
    // Attached: from here on nothing needs to load programs, attach or open raw sockets. The
    // threads started below (pipeline, export, metrics, the view) inherit the reduced set.
    match crate::privileges::drop_after_attach(attribution.is_some()) {
        Ok(d) => tracing::info!("privileges: {d}"),
        Err(e) => tracing::warn!("{e}; running with the capabilities it was given"),
    }
    let source = if matches!(live, LiveCapture::Ebpf(_)) { "live eBPF" } else { "live pcap" };
    let (driver, view, outputs) =
        prepare(config, attribution.map(Enricher::new), source.to_string(), stop, Delivery::Live)?;
    // One line a person (or a unit's journal) can tell the state from: what is watched, how,
    // and where the spans go. Tests wait for its "capture: ".
    let ports: Vec<String> = capture.ports.iter().map(u16::to_string).collect();
    let plural = if ports.len() == 1 { "" } else { "s" };
    tracing::info!("ready: watching TCP port{plural} {} — capture: {reason}; spans: {outputs}", ports.join(", "));
    let fed = live::feed(live, driver, stop).await;
    // Whatever ended the capture ends the view too.
    stop.request();
    let ui_stats = end_view(view, true)?;
    let (driver, report) = fed?;
    Ok((driver, report, ui_stats))
}

/// The outputs, the span stage and (for `top`) the view, around a driver; and where spans go,
/// in words.
fn prepare(
    config: &RunConfig,
    enricher: Option<Enricher>,
    source: String,
    stop: &Stop,
    delivery: Delivery,
) -> Result<(Driver, Option<View>, String), RunError> {
    let cold_start_ns = config.spans.spans.cold_start_ns.unwrap_or(tracer_core::span::DEFAULT_COLD_START_NS);
    let built = outputs::build(&config.export, &config.resource, stdout_writer(), delivery, cold_start_ns)?;
    let described = outputs::describe(&config.export, built.metrics_addr, config.top.is_some());
    let mut sinks: Outputs = built.outputs;
    let spans = SpanStage::new(config.resource.clone(), config.spans.clone());
    let view = match &config.top {
        Some(top) => {
            let state = SharedTop::new(TopConfig { source, ..top.clone() });
            sinks.push(Box::new(TopSink::new(state.clone())));
            logs::hold();
            let s = stop.clone();
            // `q` sets the stop flag itself; the live loop also needs waking.
            let ui = Ui::spawn(state.clone(), stop.flag(), Box::new(move || s.wake()))
                .map_err(io_err("cannot start the view"))?;
            Some(View { ui, state })
        }
        None => None,
    };
    Ok((Driver::new(config.pipeline.clone(), enricher, spans, sinks), view, described))
}

/// Ends the view: a replay's stays up on its final state until `q` (or a signal); a live one
/// ends with the capture.
fn end_view(view: Option<View>, live: bool) -> Result<Option<UiStats>, RunError> {
    let Some(View { ui, state }) = view else { return Ok(None) };
    if !live {
        state.lock().finished = true;
    }
    let stats = ui.join();
    logs::release();
    stats.map(Some).map_err(io_err("the terminal view failed"))
}
