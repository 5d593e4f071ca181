//! Log lines while the terminal view is up: held back (the last few, the rest counted) instead
//! of written over the view, and printed once the terminal is restored.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Mutex;

/// Lines held at most.
const HELD_LINES: usize = 200;

struct Held {
    lines: VecDeque<Vec<u8>>,
    dropped: u64,
}

static HELD: Mutex<Option<Held>> = Mutex::new(None);

fn held() -> std::sync::MutexGuard<'static, Option<Held>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// From now on log lines are held.
pub fn hold() {
    *held() = Some(Held { lines: VecDeque::new(), dropped: 0 });
}

/// Stops holding; writes what was held to stderr.
pub fn release() {
    let Some(h) = held().take() else { return };
    let mut err = io::stderr().lock();
    if h.dropped > 0 {
        let _ = writeln!(err, "ollama-tracer: {} earlier log lines were not kept while `top` ran", h.dropped);
    }
    for line in h.lines {
        let _ = err.write_all(&line);
    }
}

/// The log writer: stderr, or the held lines while the view is up.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut guard = held();
        match guard.as_mut() {
            Some(h) => {
                if h.lines.len() == HELD_LINES {
                    h.lines.pop_front();
                    h.dropped += 1;
                }
                h.lines.push_back(buf.to_vec());
                Ok(buf.len())
            }
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// For `tracing_subscriber::fmt().with_writer(...)`.
pub fn writer() -> LogWriter {
    LogWriter
}
