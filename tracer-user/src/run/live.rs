//! The live source: the capture (eBPF ring buffer or libpcap) read by a tokio task, the driver on
//! a thread of its own, fed through a bounded channel of batches. When the driver falls behind,
//! the channel fills, the capture task waits, and the kernel's buffer absorbs the burst or
//! drops — counted, never silent. On a stop the capture's buffer is read out, the capture
//! detached, and the driver finishes.

use std::thread::Thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::{self, error::TryRecvError};
use tracer_core::capture::CaptureStats;
use tracer_core::segment::{SegmentBatch, Timestamp};

use super::TICK;
use super::driver::Driver;
use super::stop::Stop;
use crate::capture::{CaptureError, LiveCapture, LiveCounters};
use crate::report::Report;

/// Batches in flight between the capture and the driver.
const QUEUE_BATCHES: usize = 16;
/// After a batch smaller than [`COALESCE_BELOW`] segments, how long the capture task lets the
/// kernel's buffer fill before reading again. Without it a steady trickle (1 000 streams each
/// writing a chunk every 10 ms) wakes the daemon for nearly every packet — an epoll wake-up, a
/// channel hand-over and a thread wake-up per segment, most of the daemon's CPU. Spans only
/// come out later by as much; their times are the kernel's.
const COALESCE: Duration = Duration::from_millis(2);
/// Batches at least this large were not a trickle: read on at once.
const COALESCE_BELOW: usize = 256;
/// At shutdown, the longest the capture's buffer is read out for, and the quiet that ends it.
const DRAIN: Duration = Duration::from_secs(1);
const DRAIN_QUIET: Duration = Duration::from_millis(20);
/// Longest the driver thread sleeps without a message (it wakes earlier for held calls).
const IDLE: Duration = Duration::from_secs(1);

enum Msg {
    Batch(SegmentBatch),
    /// Wall-clock now (lets idle connections and held data time out without traffic), and the
    /// capture's own counters for the health report.
    Tick(Timestamp, LiveCounters),
    /// The capture is detached: its final counters.
    End(LiveCounters),
}

fn now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64))
}

/// The driver's thread: handles messages as they come, and held calls when their time is up.
/// Woken by the capture task after each message (`unpark`) and by attribution's worker.
fn consume(mut rx: mpsc::Receiver<Msg>, mut driver: Driver) -> (Driver, Report) {
    let mut stats = CaptureStats::default();
    let mut last_live = None;
    loop {
        match rx.try_recv() {
            Ok(Msg::Batch(batch)) => {
                for seg in batch.iter() {
                    stats.frames += 1;
                    stats.packets += 1;
                    stats.payload_bytes += seg.payload.len() as u64;
                    driver.segment(&seg);
                }
            }
            Ok(Msg::Tick(now, live)) => {
                driver.expire(now);
                driver.tick(now, &stats, Some(live.clone()));
                last_live = Some(live);
            }
            Ok(Msg::End(live)) => last_live = Some(live),
            Err(TryRecvError::Empty) => {
                driver.poll();
                std::thread::park_timeout(driver.next_deadline().unwrap_or(IDLE).min(IDLE));
            }
            Err(TryRecvError::Disconnected) => break,
        }
        driver.poll();
    }
    let report = driver.finish(now(), &stats, last_live);
    (driver, report)
}

/// Niceness of every thread of the live daemon (threads started later inherit it).
const NICE: libc::c_int = 10;

/// Lowers the daemon's threads' priority. The traffic it watches wakes it: every 2 ms the
/// capture task reads the ring buffer and the pipeline thread works through the batch, some
/// hundreds of µs for a busy connection. At normal priority a thread that slept has the
/// scheduler's favour, and a traced client or server waiting for the same core waits out the
/// batch: small keep-alive calls went from p99 ≈ 35 µs to 50–1 000 µs in 7 of 10 runs. With the
/// daemon stopped (programs still attached) the p99 is the untraced one: the daemon's CPU, not
/// the kernel programs. At nice 19 the tail went too, but on a busy host the pipeline thread
/// then names a bulk body to skip so late that the ring buffer overflows first (drops in 3 of
/// 4 runs of a 1 GB transfer); nice 10 kept both (docs/benchmarks.md, cost).
fn yield_to_traffic() {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return };
    for tid in tasks.flatten().filter_map(|t| t.file_name().to_str()?.parse::<libc::id_t>().ok()) {
        // SAFETY: setpriority reads its arguments only; failure leaves the priority as it was.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, NICE) } != 0 {
            tracing::debug!(tid, "could not lower the thread's priority");
        }
    }
}

/// The capture task's end of the channel.
struct Feed {
    tx: mpsc::Sender<Msg>,
    consumer: Thread,
}

impl Feed {
    /// Sends (waiting while the channel is full) and wakes the driver; false once it is gone.
    async fn send(&self, msg: Msg) -> bool {
        let sent = self.tx.send(msg).await.is_ok();
        self.consumer.unpark();
        sent
    }

    /// No more messages: the driver finishes once it has read the rest.
    fn close(self) {
        let Feed { tx, consumer } = self;
        drop(tx);
        consumer.unpark();
    }
}

/// Runs `capture` into `driver` until `stop`; the driver (to shut its outputs down) and what
/// the run saw.
pub(super) async fn feed(
    mut capture: LiveCapture,
    mut driver: Driver,
    stop: &Stop,
) -> Result<(Driver, Report), CaptureError> {
    yield_to_traffic();
    if let Some((over, skipper)) = capture.body_skipper() {
        driver.skip_bodies(over, Box::new(move |s| skipper.skip(s)));
    }
    let attribution = driver.attribution().cloned();
    let (tx, rx) = mpsc::channel::<Msg>(QUEUE_BATCHES);
    let worker = std::thread::Builder::new()
        .name("ollama-tracer-pipeline".into())
        .spawn(move || consume(rx, driver))
        .map_err(|e| CaptureError::Config(format!("cannot start the pipeline thread: {e}")))?;
    let feed = Feed { tx, consumer: worker.thread().clone() };
    if let Some(a) = attribution {
        // An answered lookup may let a held call go: wake the driver for it.
        let consumer = feed.consumer.clone();
        a.set_waker(Box::new(move || consumer.unpark()));
    }

    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = SegmentBatch::default();
    let pause = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(pause);
    let mut paused = false;
    let result = loop {
        tokio::select! {
            _ = stop.wait() => break Ok(()),
            _ = tick.tick() => {
                // What the kernel left without waking us (a skipped body's lengths, pure
                // ACKs), all of it, comes before the tick, so that times and counts are read in
                // order.
                let mut open = true;
                while open {
                    let drained = capture.poll_now(&mut batch);
                    open = batch.is_empty() || feed.send(Msg::Batch(std::mem::take(&mut batch))).await;
                    if drained {
                        break;
                    }
                }
                if !open || !feed.send(Msg::Tick(now(), capture.counters())).await {
                    break Ok(());
                }
            }
            () = &mut pause, if paused => paused = false,
            got = capture.next_batch(&mut batch), if !paused => {
                if let Err(e) = got {
                    break Err(e);
                }
                if batch.len() < COALESCE_BELOW {
                    pause.as_mut().reset(tokio::time::Instant::now() + COALESCE);
                    paused = true;
                }
                if !feed.send(Msg::Batch(std::mem::take(&mut batch))).await {
                    break Ok(());
                }
            }
        }
    };
    // What the kernel captured before the stop is still in its buffer (the last coalescing
    // pause, a burst): read it out until it stays empty for DRAIN_QUIET, for at most DRAIN,
    // before detaching.
    if result.is_ok() {
        let deadline = tokio::time::Instant::now() + DRAIN;
        loop {
            // Records left without a wake-up first; then wait for more, briefly.
            let _ = capture.poll_now(&mut batch);
            if batch.is_empty() {
                let until = (tokio::time::Instant::now() + DRAIN_QUIET).min(deadline);
                let Ok(Ok(())) = tokio::time::timeout_at(until, capture.next_batch(&mut batch)).await else { break };
            }
            if !feed.send(Msg::Batch(std::mem::take(&mut batch))).await || tokio::time::Instant::now() >= deadline {
                break;
            }
        }
    }
    // Counters before detaching, then detach: no programs or links outlive the daemon.
    let counters = capture.counters();
    capture.close();
    feed.send(Msg::End(counters)).await;
    feed.close();
    let (driver, report) = worker.join().map_err(|_| CaptureError::Config("the pipeline thread panicked".into()))?;
    result?;
    Ok((driver, report))
}
