//! The TLS probes' own thread: it finds the files that hold TLS stacks and attaches the uprobes
//! to them — at start every process's executable and TLS libraries plus the system's
//! `libssl`, then each program as it is executed (the kernel's exec events) and the libraries
//! processes load later (looked at again shortly after each exec, and every
//! [`RESCAN`]) — and keeps the kernel's include/exclude verdicts per process.
//!
//! Uprobes are set on a file (device and inode): every process that maps it, present or
//! future, is probed, so each file is attached once. This thread keeps the capabilities
//! attaching needs (CAP_BPF, CAP_PERFMON, and CAP_SYS_PTRACE / CAP_DAC_READ_SEARCH to read
//! other processes' executables and maps) after the rest of the daemon has dropped them; it
//! reads `/proc` and ELF files, never traffic.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::UProbe;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope};
use caps::Capability;
use tracer_common::tls::{lib, pid_verdict, program};

use super::binary::{GoProbes, SslProbes, TlsStack};
use super::targets::{Candidate, ExeFilter, FileId, Inspections, candidates, exe_of, pids, system_libraries};

/// How often every process's maps are looked at again (libraries loaded later).
pub const RESCAN: Duration = Duration::from_secs(10);
/// After an exec, when the new program's libraries are looked at (the loader maps them, a
/// `dlopen` may come later).
const AFTER_EXEC: [Duration; 3] = [Duration::from_millis(50), Duration::from_millis(500), Duration::from_secs(3)];
/// Attempts at a file whose attaching fails, before it is left alone.
const ATTACH_TRIES: u32 = 3;
/// Exec events waiting for the thread; beyond, dropped (counted: the rescan catches up).
const QUEUE: usize = 4096;
/// What the thread keeps of the daemon's privileges.
pub const KEPT: &[Capability] = &[
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_SYS_ADMIN,
];
pub const THREAD_NAME: &str = "ot-tls-probes";

/// A file the probes were (or could not be) attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub path: String,
    pub stack: String,
    /// Uprobes attached.
    pub probes: usize,
    pub error: Option<String>,
}

/// What the thread did so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeStatus {
    pub targets: Vec<Target>,
    pub attach_failures: u64,
    pub execs: u64,
    pub execs_dropped: u64,
    pub scans: u64,
    pub first_scan_done: bool,
}

enum Work {
    Exec(u32),
    Stop,
}

/// The running thread.
pub struct ProbeWorker {
    tx: SyncSender<Work>,
    handle: Option<JoinHandle<()>>,
    status: Arc<(Mutex<ProbeStatus>, Condvar)>,
}

impl ProbeWorker {
    /// Starts the thread on `ebpf` (whose TLS programs are loaded); `pids` is the kernel's
    /// include/exclude map.
    pub fn start(
        ebpf: Arc<Mutex<Ebpf>>,
        pids_map: BpfHashMap<MapData, u32, u8>,
        filter: ExeFilter,
    ) -> std::io::Result<ProbeWorker> {
        let (tx, rx) = sync_channel(QUEUE);
        let status = Arc::new((Mutex::new(ProbeStatus::default()), Condvar::new()));
        let st = status.clone();
        let handle = std::thread::Builder::new().name(THREAD_NAME.into()).spawn(move || {
            if let Err(e) = crate::privileges::restrict_current_thread(KEPT) {
                tracing::warn!("tls probes: {e}");
            }
            let mut a = Attacher {
                ebpf,
                pids_map,
                filter,
                proc_root: PathBuf::from("/proc"),
                inspections: Inspections::default(),
                attached: HashMap::new(),
                later: BTreeSet::new(),
                failures: HashMap::new(),
                status: st,
            };
            a.run(rx);
        })?;
        Ok(ProbeWorker { tx, handle: Some(handle), status })
    }

    /// A process executed a program (non-blocking; dropped and counted when the queue is full).
    pub fn exec(&self, pid: u32) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Work::Exec(pid)) {
            self.status.0.lock().unwrap_or_else(|e| e.into_inner()).execs_dropped += 1;
        }
    }

    /// Waits (at most `timeout`) for the first scan: the probes on the processes running at
    /// start are then attached.
    pub fn wait_first_scan(&self, timeout: Duration) -> bool {
        let (lock, cv) = &*self.status;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = cv.wait_timeout_while(guard, timeout, |s| !s.first_scan_done).unwrap_or_else(|e| e.into_inner());
        g.first_scan_done
    }

    pub fn status(&self) -> ProbeStatus {
        self.status.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Detaches every uprobe and ends the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.tx.send(Work::Stop);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for ProbeWorker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Attacher {
    ebpf: Arc<Mutex<Ebpf>>,
    pids_map: BpfHashMap<MapData, u32, u8>,
    filter: ExeFilter,
    proc_root: PathBuf,
    inspections: Inspections,
    /// Files looked at (probed or not), with the links attached to them.
    attached: HashMap<FileId, Vec<(&'static str, UProbeLinkId)>>,
    /// Processes whose libraries are to be looked at again, by when.
    later: BTreeSet<(Instant, u32)>,
    /// Attach attempts that failed, by file.
    failures: HashMap<FileId, u32>,
    status: Arc<(Mutex<ProbeStatus>, Condvar)>,
}

impl Attacher {
    fn run(&mut self, rx: Receiver<Work>) {
        for c in system_libraries() {
            self.consider(&c);
        }
        self.scan();
        {
            let (lock, cv) = &*self.status;
            lock.lock().unwrap_or_else(|e| e.into_inner()).first_scan_done = true;
            cv.notify_all();
        }
        let mut next_scan = Instant::now() + RESCAN;
        loop {
            let now = Instant::now();
            let next = self.later.first().map_or(next_scan, |(t, _)| (*t).min(next_scan));
            match rx.recv_timeout(next.saturating_duration_since(now)) {
                Ok(Work::Exec(pid)) => self.exec(pid),
                Ok(Work::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            while let Some(&(t, pid)) = self.later.first().filter(|(t, _)| *t <= now) {
                self.later.remove(&(t, pid));
                self.process(pid);
            }
            if now >= next_scan {
                self.scan();
                next_scan = now + RESCAN;
            }
        }
        self.detach_all();
    }

    fn with_status(&self, f: impl FnOnce(&mut ProbeStatus)) {
        f(&mut self.status.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Every process: its verdict and its files.
    fn scan(&mut self) {
        for pid in pids(&self.proc_root) {
            self.process(pid);
        }
        self.with_status(|s| s.scans += 1);
    }

    fn exec(&mut self, pid: u32) {
        self.with_status(|s| s.execs += 1);
        self.process(pid);
        let now = Instant::now();
        for d in AFTER_EXEC {
            if self.later.len() < QUEUE {
                self.later.insert((now + d, pid));
            }
        }
    }

    fn process(&mut self, pid: u32) {
        if self.filter.active()
            && let Some(exe) = exe_of(&self.proc_root, pid)
        {
            let allowed = self.filter.allows(&exe);
            // Only processes that differ from the default are named (a reused pid is renamed; a
            // program just executed waits as PENDING, set by the kernel, until this).
            let r = if allowed == self.filter.default_allows() {
                self.pids_map.remove(&pid)
            } else {
                let v = if allowed { pid_verdict::ALLOW } else { pid_verdict::DENY };
                self.pids_map.insert(pid, v, 0)
            };
            if let Err(e) = r
                && !matches!(e, aya::maps::MapError::KeyNotFound)
            {
                tracing::debug!("tls: include/exclude verdict of {pid}: {e}");
            }
        }
        for c in candidates(&self.proc_root, pid) {
            self.consider(&c);
        }
    }

    /// Attaches to `c` if it holds a TLS stack not probed yet.
    fn consider(&mut self, c: &Candidate) {
        if self.attached.contains_key(&c.id) {
            return;
        }
        let stack = self.inspections.stack(c);
        let links = match &*stack {
            TlsStack::None => {
                self.attached.insert(c.id, Vec::new());
                return;
            }
            TlsStack::NotProbed(why) => {
                tracing::info!("tls: {}: {why}", c.shown);
                self.attached.insert(c.id, Vec::new());
                self.record(c, &stack, 0, Some(why.clone()));
                return;
            }
            TlsStack::OpenSsl(p) => self.attach_ssl(&c.path, p),
            TlsStack::Go(g) => self.attach_go(&c.path, g),
        };
        match links {
            Ok(links) => {
                tracing::info!("tls: probing {} ({stack}): {} uprobes", c.shown, links.len());
                self.record(c, &stack, links.len(), None);
                self.attached.insert(c.id, links);
            }
            Err(e) => {
                // A later scan tries again (the process may have gone with the path), a few
                // times.
                let tries = self.failures.entry(c.id).or_insert(0);
                *tries += 1;
                if *tries >= ATTACH_TRIES {
                    tracing::warn!(
                        "tls: cannot probe {} ({stack}): {e}; giving up after {ATTACH_TRIES} tries",
                        c.shown
                    );
                    self.attached.insert(c.id, Vec::new());
                } else {
                    tracing::warn!("tls: cannot probe {} ({stack}): {e}", c.shown);
                }
                self.record(c, &stack, 0, Some(e));
                self.with_status(|s| s.attach_failures += 1);
            }
        }
    }

    fn record(&self, c: &Candidate, stack: &TlsStack, probes: usize, error: Option<String>) {
        let t = Target { path: c.shown.clone(), stack: stack.to_string(), probes, error };
        self.with_status(|s| {
            if let Some(old) = s.targets.iter_mut().find(|o| o.path == t.path) {
                *old = t;
            } else if s.targets.len() < 1024 {
                s.targets.push(t);
            }
        });
    }

    fn attach_ssl(&mut self, path: &Path, p: &SslProbes) -> Result<Vec<(&'static str, UProbeLinkId)>, String> {
        let cookie = u64::from(if p.boringssl { lib::BORINGSSL } else { lib::OPENSSL });
        let mut plan: Vec<(&'static str, u64)> = Vec::new();
        for (f, prog) in [
            ("SSL_write", program::SSL_WRITE),
            ("SSL_write_ex", program::SSL_WRITE_EX),
            ("SSL_read", program::SSL_READ),
            ("SSL_read_ex", program::SSL_READ_EX),
        ] {
            if let Some(&off) = p.offsets.get(f) {
                plan.push((prog, off));
                plan.push((program::SSL_RETURN, off));
            }
        }
        for (f, prog) in [
            ("SSL_set_fd", program::SSL_SET_FD),
            ("SSL_set_rfd", program::SSL_SET_FD),
            ("SSL_set_wfd", program::SSL_SET_FD),
            ("SSL_ctrl", program::SSL_CTRL),
            ("SSL_free", program::SSL_FREE),
        ] {
            if let Some(&off) = p.offsets.get(f) {
                plan.push((prog, off));
            }
        }
        self.attach_plan(path, &plan, Some(cookie))
    }

    fn attach_go(&mut self, path: &Path, g: &GoProbes) -> Result<Vec<(&'static str, UProbeLinkId)>, String> {
        let mut plan = vec![(program::GO_WRITE, g.write), (program::GO_READ, g.read)];
        plan.extend(g.read_returns.iter().map(|&o| (program::GO_READ_RET, o)));
        if let Some(c) = g.close {
            plan.push((program::GO_CLOSE, c));
        }
        self.attach_plan(path, &plan, None)
    }

    /// All or nothing: a file half probed would see writes without reads.
    fn attach_plan(
        &mut self,
        path: &Path,
        plan: &[(&'static str, u64)],
        cookie: Option<u64>,
    ) -> Result<Vec<(&'static str, UProbeLinkId)>, String> {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(|e| e.into_inner());
        let mut links = Vec::new();
        for &(prog, offset) in plan {
            let r = uprobe(&mut ebpf, prog).and_then(|p| {
                let point = UProbeAttachPoint { location: UProbeAttachLocation::AbsoluteOffset(offset), cookie };
                p.attach(point, path, UProbeScope::AllProcesses).map_err(|e| crate::capture::config::chain(&e))
            });
            match r {
                Ok(id) => links.push((prog, id)),
                Err(e) => {
                    detach(&mut ebpf, links);
                    return Err(format!("{prog} at {offset:#x}: {e}"));
                }
            }
        }
        Ok(links)
    }

    fn detach_all(&mut self) {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(|e| e.into_inner());
        for (_, links) in self.attached.drain() {
            detach(&mut ebpf, links);
        }
    }
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, String> {
    let p = ebpf.program_mut(name).ok_or_else(|| format!("program {name} not in the object"))?;
    p.try_into().map_err(|e: aya::programs::ProgramError| e.to_string())
}

fn detach(ebpf: &mut Ebpf, links: Vec<(&'static str, UProbeLinkId)>) {
    for (prog, id) in links {
        if let Ok(p) = uprobe(ebpf, prog)
            && let Err(e) = p.detach(id)
        {
            tracing::debug!("tls: detaching {prog}: {e}");
        }
    }
}
