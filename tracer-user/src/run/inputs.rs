//! Opening what `replay` reads: capture files, and streams (standard input as `-`, FIFOs),
//! which a thread of their own pumps into a pipe the replay reads.
//!
//! Why the pump: a replay's read of an idle stream blocks until the stream's next bytes, so a
//! stop (SIGINT, SIGTERM to the tracer alone while tcpdump waits for traffic) would not be seen
//! until then. A pipe of our own can be closed when the stop comes: the replay then reads to
//! its end, and flushes and summarises as for any end of input.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tracer_core::capture::file::{CaptureFile, FileError};

use super::stop::StopHook;

/// The path that names standard input.
pub const STDIN: &str = "-";

/// The capture files of `paths` ([`STDIN`] is standard input), in order, and the pumps of
/// those that are streams.
pub fn open(paths: &[PathBuf]) -> Result<(Vec<CaptureFile>, Vec<Pump>), FileError> {
    let mut files = Vec::with_capacity(paths.len());
    let mut pumps = Vec::new();
    for path in paths {
        let io = |error| FileError::Io { path: path.clone(), error };
        let source = if path.as_os_str() == STDIN {
            File::from(io::stdin().as_fd().try_clone_to_owned().map_err(io)?)
        } else {
            File::open(path).map_err(io)?
        };
        let meta = source.metadata().map_err(io)?;
        // A regular file (standard input redirected from one too) is read as one, by positioned
        // reads. A directory is refused there too.
        if meta.is_file() || meta.is_dir() {
            files.push(CaptureFile::from_file(path.clone(), source)?);
            continue;
        }
        let (reader, pump) = Pump::start(path, source).map_err(io)?;
        files.push(CaptureFile::from_file(path.clone(), reader)?);
        pumps.push(pump);
    }
    Ok((files, pumps))
}

/// A stream copied by a thread into a pipe the replay reads; [`Pump::closer`] ends that pipe.
pub struct Pump {
    path: PathBuf,
    /// The pipe's only write end; held by the thread while it writes.
    writer: Arc<Mutex<Option<io::PipeWriter>>>,
    /// Set by a stop: the thread lets the pipe go after the write it is in, if any.
    closing: Arc<AtomicBool>,
    error: Arc<Mutex<Option<io::Error>>>,
}

impl Pump {
    fn start(path: &Path, mut source: File) -> io::Result<(File, Pump)> {
        let (reader, writer) = io::pipe()?;
        let writer = Arc::new(Mutex::new(Some(writer)));
        let error = Arc::new(Mutex::new(None));
        let closing = Arc::new(AtomicBool::new(false));
        let (w, e, c) = (writer.clone(), error.clone(), closing.clone());
        std::thread::Builder::new().name("ollama-tracer-input".into()).spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            let failed = loop {
                let n = match source.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => break Some(err),
                };
                let wrote = match w.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
                    Some(out) => out.write_all(&buf[..n]).is_ok(),
                    // Closed by a stop.
                    None => false,
                };
                // Looked at once the pipe is let go of: a stop that found it held is seen here.
                if !wrote || c.load(Ordering::SeqCst) {
                    break None;
                }
            };
            *e.lock().unwrap_or_else(PoisonError::into_inner) = failed;
            w.lock().unwrap_or_else(PoisonError::into_inner).take();
        })?;
        Ok((File::from(OwnedFd::from(reader)), Pump { path: path.to_path_buf(), writer, closing, error }))
    }

    /// Ends the replay's pipe where it is: what was handed on is still read, then the end.
    /// Never waits: a thread blocked reading an idle stream holds nothing, and one in the
    /// middle of a write lets the pipe go when that write is done (a write the replay no longer
    /// reads may never be: then the replay has stopped reading already).
    pub fn closer(&self) -> StopHook {
        let (writer, closing) = (self.writer.clone(), self.closing.clone());
        Box::new(move || {
            closing.store(true, Ordering::SeqCst);
            if let Ok(mut w) = writer.try_lock() {
                w.take();
            }
        })
    }

    /// A read of the stream that failed (the replay saw an end there), taken out to report it.
    pub fn take_error(&self) -> Option<FileError> {
        let error = self.error.lock().unwrap_or_else(PoisonError::into_inner).take()?;
        Some(FileError::Io { path: self.path.clone(), error })
    }
}
