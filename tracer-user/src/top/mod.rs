//! `ollama-tracer top`: a live terminal view of the calls, fed by the same pipeline as `run`
//! (or by a paced `replay --top`).
//!
//! The pipeline thread folds each completed call into a [`TopState`] through [`TopSink`] (a
//! short lock per call) and, at each tick, hands it the calls in flight (a snapshot taken only
//! because this sink asks for one). The UI thread ([`ui`]) locks the state once per refresh to
//! build a [`Screen`] — plain data, bounded — and draws it without the lock. State, screen and
//! drawing are separate so the tests drive them headlessly.

pub mod logs;
pub mod quantiles;
pub mod render;
pub mod screen;
pub mod state;
pub mod ui;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};

use tracer_core::pipeline::InFlightSnapshot;
use tracer_core::span::stage::TracedCall;

use crate::report::Report;
use crate::sink::Sink;

pub use self::screen::{Screen, View};
pub use self::state::{TopConfig, TopState};

/// The state, shared by the pipeline (writes) and the UI (reads once per refresh).
#[derive(Clone)]
pub struct SharedTop(Arc<Mutex<TopState>>);

impl SharedTop {
    pub fn new(config: TopConfig) -> Self {
        SharedTop(Arc::new(Mutex::new(TopState::new(config))))
    }

    pub fn lock(&self) -> MutexGuard<'_, TopState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sink feeding `top`.
pub struct TopSink {
    state: SharedTop,
}

impl TopSink {
    pub fn new(state: SharedTop) -> Self {
        TopSink { state }
    }
}

impl Sink for TopSink {
    fn export(&mut self, traced: &TracedCall) {
        self.state.lock().record(&traced.call);
    }

    fn health(&mut self, report: &Report) {
        self.state.lock().set_health(report);
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn wants_in_flight(&self) -> bool {
        true
    }

    fn in_flight(&mut self, snapshot: &InFlightSnapshot) {
        self.state.lock().set_in_flight(snapshot);
    }
}
