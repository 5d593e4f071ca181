//! The enrichment stage: calls from the pipeline, with who their ends are filled in.
//!
//! It never waits. A call whose lookups are answered goes straight on; one whose lookups are
//! still under way is held — and the calls after it queue behind it, so calls leave in the
//! order the pipeline produced them — until its lookups are answered (the worker wakes the
//! driver) or [`AttributionConfig::hold`](super::AttributionConfig::hold) has passed, when it
//! goes with what is known then (counted as `wait_timeouts`). At most [`MAX_HELD`] calls are
//! held; beyond it the oldest goes at once (counted the same way).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracer_core::llm::LlmCall;
use tracer_core::pipeline::PeerSeen;

use super::{Attribution, Resolution};

/// Calls held at most (a few seconds of a busy host's calls at the default hold).
pub const MAX_HELD: usize = 4096;

struct Held {
    call: LlmCall,
    /// When it goes whatever is known.
    until: Instant,
    /// Held for its own lookups (not only queued behind another call).
    waiting: bool,
}

pub struct Enricher {
    attribution: Attribution,
    hold: Duration,
    held: VecDeque<Held>,
}

impl Enricher {
    pub fn new(attribution: Attribution) -> Self {
        let hold = attribution.config().hold;
        Enricher { attribution, hold, held: VecDeque::new() }
    }

    pub fn attribution(&self) -> &Attribution {
        &self.attribution
    }

    /// A connection end the capture named: its lookups start now, long before its calls end.
    pub fn prefetch(&self, peer: &PeerSeen) {
        self.attribution.prefetch(peer.flow, peer.side, peer.cgroup);
    }

    /// Calls held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// When the oldest held call goes at the latest.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.front().map(|h| h.until)
    }

    /// One call from the pipeline; it and any calls it releases go to `out`, in order.
    pub fn push<F: FnMut(LlmCall)>(&mut self, mut call: LlmCall, now: Instant, out: &mut F) {
        if self.held.is_empty() {
            match self.attribution.resolve(&call) {
                Resolution::Known(id) => {
                    call.identity = id;
                    self.count(false, false);
                    out(call);
                    return;
                }
                Resolution::Pending(id) => {
                    call.identity = id;
                    self.held.push_back(Held { call, until: now + self.hold, waiting: true });
                    return;
                }
            }
        }
        if self.held.len() >= MAX_HELD {
            self.release_front(true, out);
        }
        self.held.push_back(Held { call, until: now + self.hold, waiting: false });
        self.poll(now, out);
    }

    /// Lets go of the held calls whose lookups are answered or whose time is up, in order.
    pub fn poll<F: FnMut(LlmCall)>(&mut self, now: Instant, out: &mut F) {
        while let Some(front) = self.held.front_mut() {
            match self.attribution.resolve(&front.call) {
                Resolution::Known(id) => {
                    front.call.identity = id;
                    self.release_front(false, out);
                }
                Resolution::Pending(id) => {
                    front.call.identity = id;
                    if now < front.until {
                        front.waiting = true;
                        return;
                    }
                    front.waiting = true;
                    self.release_front(true, out);
                }
            }
        }
    }

    /// End of the run: every held call goes, after what is left of its hold.
    pub fn finish<F: FnMut(LlmCall)>(&mut self, out: &mut F) {
        while let Some(mut h) = self.held.pop_front() {
            let left = h.until.saturating_duration_since(Instant::now());
            let resolution = self.attribution.resolve_within(&h.call, left);
            let timed_out = matches!(resolution, Resolution::Pending(_));
            h.call.identity = resolution.identity();
            self.count(h.waiting || timed_out, timed_out);
            out(h.call);
        }
    }

    fn release_front<F: FnMut(LlmCall)>(&mut self, timed_out: bool, out: &mut F) {
        if let Some(h) = self.held.pop_front() {
            self.count(h.waiting, timed_out);
            out(h.call);
        }
    }

    fn count(&self, waited: bool, timed_out: bool) {
        let c = self.attribution.counters();
        c.identified.fetch_add(1, Ordering::Relaxed);
        if waited {
            c.waited.fetch_add(1, Ordering::Relaxed);
        }
        if timed_out {
            c.wait_timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }
}
