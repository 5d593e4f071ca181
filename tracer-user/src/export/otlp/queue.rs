//! The span export queue, shared by the sink (on the pipeline thread) and the export worker:
//! spans and bytes counted with the batch in flight, so the caps bound everything held.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracer_core::span::{Resource, SpanRecord};

use super::QueueConfig;
use crate::report::ExportCounters;

/// A queued span: its size estimate and the resource it is reported under.
pub(super) struct Queued {
    pub span: SpanRecord,
    pub size: usize,
    pub resource: Arc<Resource>,
}

pub(super) struct State {
    pub queue: VecDeque<Queued>,
    /// Spans and bytes of the queue plus the batch in flight.
    pub spans: usize,
    pub bytes: usize,
    /// When the oldest queued span arrived.
    pub oldest: Option<Instant>,
    pub flush: bool,
    /// Set by shutdown: export everything now.
    pub closing: bool,
    /// Set by shutdown when the end is bounded: give up then.
    pub deadline: Option<Instant>,
}

pub(super) struct Shared {
    pub state: Mutex<State>,
    /// Wakes the worker (a full batch, a flush, shutdown).
    pub wake: Notify,
    /// Wakes a sink waiting for room (offline delivery).
    pub room: Condvar,
    /// The shutdown deadline, for cutting short an export still in flight when it passes.
    pub deadline: tokio::sync::watch::Sender<Option<Instant>>,
    pub counters: Arc<ExportCounters>,
    pub config: QueueConfig,
    /// Offline delivery's stop (SIGINT): set, nothing waits any more.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// How often a sink waiting for room looks at the stop flag.
const ROOM_POLL: Duration = Duration::from_millis(100);

impl Shared {
    pub fn new(config: QueueConfig, counters: Arc<ExportCounters>, cancel: Option<Arc<AtomicBool>>) -> Self {
        Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                spans: 0,
                bytes: 0,
                oldest: None,
                flush: false,
                closing: false,
                deadline: None,
            }),
            wake: Notify::new(),
            room: Condvar::new(),
            deadline: tokio::sync::watch::Sender::new(None),
            counters,
            config,
            cancel,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn publish(&self, st: &State) {
        self.counters.queue_spans.store(st.spans as u64, Ordering::Relaxed);
        self.counters.queue_bytes.store(st.bytes as u64, Ordering::Relaxed);
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Queues `spans` under `resource`. Live delivery drops (and counts) what does not fit;
    /// offline delivery waits for room, unless cancelled (then the span counts as dropped at
    /// shutdown: the run was stopped) or the span alone exceeds the byte cap.
    pub fn enqueue(&self, spans: &[SpanRecord], resource: &Arc<Resource>, size: impl Fn(&SpanRecord) -> usize) {
        let cfg = self.config;
        let offline = self.cancel.is_some();
        let mut st = self.lock();
        let mut wake = false;
        for span in spans {
            let size = size(span);
            let fits = |st: &State| st.spans < cfg.max_spans && st.bytes + size <= cfg.max_bytes;
            if offline && !fits(&st) && size <= cfg.max_bytes {
                // The worker must be sending to make room: a full queue is a due batch.
                st.flush = true;
                self.wake.notify_one();
                while !fits(&st) && !self.cancelled() {
                    st = self.room.wait_timeout(st, ROOM_POLL).unwrap_or_else(|e| e.into_inner()).0;
                }
                if !fits(&st) {
                    self.counters.enqueued.fetch_add(1, Ordering::Relaxed);
                    self.counters.dropped_shutdown.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            if !fits(&st) {
                self.counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            st.queue.push_back(Queued { span: span.clone(), size, resource: resource.clone() });
            st.spans += 1;
            st.bytes += size;
            st.oldest.get_or_insert_with(Instant::now);
            self.counters.enqueued.fetch_add(1, Ordering::Relaxed);
            wake |= st.queue.len() >= cfg.batch_size;
        }
        self.publish(&st);
        drop(st);
        if wake {
            self.wake.notify_one();
        }
    }

    /// The worker is done with `n` spans of `bytes` (exported, refused or given up).
    pub fn release(&self, st: &mut State, n: usize, bytes: usize) {
        st.spans -= n;
        st.bytes -= bytes;
        self.publish(st);
        self.room.notify_all();
    }
}
