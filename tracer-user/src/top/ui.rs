//! The UI thread: owns the terminal (raw mode, alternate screen), redraws at the refresh rate
//! and on input, and measures its own CPU time.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyEventKind};

use super::SharedTop;
use super::render;
use super::screen::{Action, App};

/// How often the view is rebuilt from the state (the pipeline's ticks bring calls in flight
/// at the same pace).
pub const REFRESH: Duration = Duration::from_millis(250);

/// What the UI thread cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct UiStats {
    pub frames: u64,
    /// CPU time of the UI thread (user + system).
    pub cpu: Duration,
    pub wall: Duration,
}

impl UiStats {
    /// CPU time as a share of one core over the run, percent.
    pub fn core_percent(&self) -> f64 {
        if self.wall.is_zero() { 0.0 } else { self.cpu.as_secs_f64() / self.wall.as_secs_f64() * 100.0 }
    }
}

impl std::fmt::Display for UiStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "top: {} frames drawn; UI thread CPU {:.3} s over {:.1} s ({:.2} % of a core)",
            self.frames,
            self.cpu.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.core_percent()
        )
    }
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we own; RUSAGE_THREAD is Linux's per-thread
    // accounting of the caller.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The running UI thread.
pub struct Ui {
    thread: JoinHandle<io::Result<UiStats>>,
}

impl Ui {
    /// Takes over the terminal on a thread of its own. `quit` ends it (set by the caller, or by
    /// the UI on `q`, which then calls `on_quit`).
    pub fn spawn(state: SharedTop, quit: Arc<AtomicBool>, on_quit: Box<dyn FnOnce() + Send>) -> io::Result<Ui> {
        let thread = std::thread::Builder::new().name("ollama-tracer-top".into()).spawn(move || {
            let result = run(&state, &quit);
            // Whatever happened, the terminal is given back before anyone else writes to it.
            ratatui::restore();
            quit.store(true, Ordering::Relaxed);
            on_quit();
            result
        })?;
        Ok(Ui { thread })
    }

    /// Waits for the UI to end (it ends once `quit` is set).
    pub fn join(self) -> io::Result<UiStats> {
        self.thread.join().map_err(|_| io::Error::other("the top UI thread panicked"))?
    }
}

fn run(state: &SharedTop, quit: &AtomicBool) -> io::Result<UiStats> {
    let started = Instant::now();
    let cpu0 = thread_cpu();
    let mut terminal = ratatui::try_init()?;
    let mut app = App::new(&state.lock());
    let mut frames = 0u64;
    let mut next = Instant::now() + REFRESH;
    'frames: while !quit.load(Ordering::Relaxed) {
        terminal.draw(|f| render::draw(f, &app.screen, &app.view))?;
        frames += 1;
        // Input until the next refresh; a key that changes the view redraws at once.
        loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                next += REFRESH;
                app.rebuild(&state.lock());
                break;
            }
            // Short polls: a quit from elsewhere is seen within 100 ms.
            if event::poll(left.min(Duration::from_millis(100)))? {
                match event::read()? {
                    Event::Key(k) if k.kind != KeyEventKind::Release => match app.key(k) {
                        Action::Quit => break 'frames,
                        Action::Refresh => {
                            app.rebuild(&state.lock());
                            break;
                        }
                        Action::Redraw => break,
                        Action::None => {}
                    },
                    Event::Resize(..) => break,
                    _ => {}
                }
            }
            if quit.load(Ordering::Relaxed) {
                break 'frames;
            }
        }
        // Behind (a slow terminal): the next refresh is one period from now, not a burst.
        if next < Instant::now() {
            next = Instant::now() + REFRESH;
        }
    }
    Ok(UiStats { frames, cpu: thread_cpu() - cpu0, wall: started.elapsed() })
}
