//! When a run ends early: SIGINT, SIGTERM, or `q` in `top`. One flag, set once, seen by the
//! replay loop (polled), the live loop (awaited) and the terminal view (polled).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::Notify;

/// What runs once when a stop comes.
pub type StopHook = Box<dyn FnOnce() + Send>;

#[derive(Clone, Default)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    /// Set by a signal only (not by `q`, which also ends a replay's view normally): what stops
    /// an offline export from waiting.
    signalled: Arc<AtomicBool>,
    notify: Arc<Notify>,
    /// Run once when a stop comes: what a blocked reader needs to see it (a replayed stream's
    /// pipe is closed).
    hooks: Arc<Mutex<Vec<StopHook>>>,
}

impl Stop {
    /// A stop set by SIGINT and SIGTERM (a thread of its own waits for them: the handler
    /// itself only writes to a pipe, as async-signal safety asks). The thread starts before a
    /// live capture attaches, so it gives up every capability itself: it needs none.
    pub fn on_signals() -> io::Result<Stop> {
        let stop = Stop::default();
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let s = stop.clone();
        std::thread::Builder::new().name("ollama-tracer-signals".into()).spawn(move || {
            if let Err(e) = crate::privileges::restrict_current_thread(&[]) {
                tracing::warn!("signals thread: {e}");
            }
            if signals.forever().next().is_some() {
                s.signalled.store(true, Ordering::SeqCst);
                s.request();
            }
        })?;
        Ok(stop)
    }

    pub fn request(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        self.run_hooks();
    }

    /// Runs `hook` when a stop comes (at once if one came already).
    pub fn on_request(&self, hook: StopHook) {
        self.hooks.lock().unwrap_or_else(PoisonError::into_inner).push(hook);
        if self.requested() {
            self.run_hooks();
        }
    }

    fn run_hooks(&self) {
        let hooks = std::mem::take(&mut *self.hooks.lock().unwrap_or_else(PoisonError::into_inner));
        for hook in hooks {
            hook();
        }
    }

    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Set once SIGINT or SIGTERM came (not by `q`).
    pub fn signalled(&self) -> Arc<AtomicBool> {
        self.signalled.clone()
    }

    /// The flag itself, for the terminal view (which sets it on `q`).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// Wakes [`Stop::wait`] after the flag was set directly (by the terminal view).
    pub fn wake(&self) {
        self.notify.notify_waiters();
        self.run_hooks();
    }

    /// Until a stop is requested.
    pub async fn wait(&self) {
        loop {
            // Registered before the flag is read: a request in between is not missed.
            let notified = self.notify.notified();
            if self.requested() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_ends_the_wait_whenever_it_comes() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let stop = Stop::default();
        let s = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            s.request();
        });
        rt.block_on(stop.wait());
        assert!(stop.requested());
        // Already requested: returns at once.
        rt.block_on(stop.wait());
    }
}
