//! TLS plaintext capture: uprobes on the TLS libraries clients and servers use (OpenSSL and
//! BoringSSL, shared or linked into a program like Node; Go's `crypto/tls`) hand the plaintext
//! of the sessions with the hosts asked for to the same pipeline as the packets.
//!
//! - [`kernel`]: where the running kernel keeps a descriptor's socket (BTF), for the programs;
//! - [`binary`]: what TLS stack a file holds and where its functions are;
//! - [`targets`]: which files the host's processes run and map; include/exclude;
//! - `probes`: the thread that attaches the uprobes, at start and as programs are executed;
//! - [`records`]: the kernel's records decoded;
//! - [`streams`]: sessions into TCP connections of segments, one per connection;
//! - [`inventory`]: what `check` says per process.
//!
//! The kernel side (`tracer-ebpf/src/tls*.rs`) decides which sessions are traced (the host:
//! SNI or `Host` header) and copies only theirs; `tracer_common::tls` describes the records.

pub mod binary;
pub mod inventory;
pub mod kernel;
mod probes;
pub mod records;
pub mod streams;
pub mod targets;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::Ebpf;
use aya::maps::HashMap as BpfHashMap;
use aya::programs::trace_point::TracePointLinkId;
use aya::programs::{TracePoint, UProbe};
use tracer_common::tls::{HOST_LEN, KernelOffsets, READ_SYSCALLS, WRITE_SYSCALLS, config_flags, map, program};
use tracer_common::{counter, hook};
use tracer_core::segment::{FlowKey, Timestamp};

use self::probes::ProbeWorker;
pub use self::probes::{KEPT, ProbeStatus, THREAD_NAME, Target};
use self::records::{decode_event, decode_plaintext};
use self::streams::{StreamOut, StreamsConfig, TlsStreams};
use self::targets::ExeFilter;
use super::config::{CaptureError, TlsConfig, chain};
use super::counters::TlsCounters;
use super::programs::{load, program_mut};
use super::ring::ClockOffset;

/// Longest the start waits for the probes on the processes already running.
const FIRST_SCAN: Duration = Duration::from_secs(30);

/// The uprobe programs, loaded when TLS capture is on.
const UPROBES: [&str; 12] = [
    program::SSL_WRITE,
    program::SSL_WRITE_EX,
    program::SSL_READ,
    program::SSL_READ_EX,
    program::SSL_RETURN,
    program::SSL_SET_FD,
    program::SSL_CTRL,
    program::SSL_FREE,
    program::GO_WRITE,
    program::GO_READ,
    program::GO_READ_RET,
    program::GO_CLOSE,
];

/// The kernel maps only the TLS programs use: shrunk to one entry when TLS capture is off
/// (LRU hash maps are allocated whole when created).
pub const MAPS: [&str; 6] = [map::SESSIONS, map::ACTIVE, map::PENDING, map::GO_READS, map::PIDS, map::SOCKS];

/// What the object's loader sets for the TLS programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSettings {
    pub flags: u32,
    pub offsets: KernelOffsets,
}

impl LoadSettings {
    /// For `config` on the running kernel; `Err` says why TLS capture cannot run here.
    pub fn for_config(config: &TlsConfig) -> Result<LoadSettings, String> {
        // First, and nothing read before it: a deployment without it (the systemd unit, the
        // DaemonSet as shipped) runs as before, with one warning.
        if !caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).unwrap_or(false) {
            return Err("attaching uprobes needs CAP_SYS_ADMIN (perf_event_open of a uprobe)".into());
        }
        let offsets = kernel::running_kernel().map_err(|e| format!("no socket offsets from the kernel's BTF: {e}"))?;
        Ok(LoadSettings { flags: flags(config), offsets })
    }
}

/// A host as the kernel compares it: each byte with bit 5 set (lower case for letters; the
/// kernel folds what it reads the same way, without branches), NUL-padded.
pub fn host_key(host: &str) -> [u8; HOST_LEN] {
    let mut key = [0u8; HOST_LEN];
    for (k, b) in key.iter_mut().zip(host.bytes().take(HOST_LEN - 1)) {
        *k = b | 0x20;
    }
    key
}

fn filter(config: &TlsConfig) -> ExeFilter {
    ExeFilter { include: config.include_exe.clone(), exclude: config.exclude_exe.clone() }
}

/// The programs' `config_flags` for `config`.
pub fn flags(config: &TlsConfig) -> u32 {
    let mut flags = 0;
    if config.hosts.iter().any(|h| h.trim() == "*") {
        flags |= config_flags::ANY_HOST;
    }
    let f = filter(config);
    if f.active() {
        flags |= config_flags::PID_FILTER;
        if !f.default_allows() {
            flags |= config_flags::DEFAULT_DENY;
        }
    }
    flags
}

/// The TLS part of a running eBPF capture: the probes' thread and the sessions in progress.
pub struct TlsCapture {
    streams: TlsStreams,
    probes: Option<ProbeWorker>,
    tracepoints: Vec<(&'static str, TracePointLinkId)>,
    ebpf: Arc<Mutex<Ebpf>>,
}

impl TlsCapture {
    /// Loads the TLS programs of `ebpf` (loaded with [`LoadSettings`]), fills the host set,
    /// attaches the system-call and exec tracepoints and starts the probes' thread; returns
    /// once the processes running now are probed.
    pub fn start(ebpf: &Arc<Mutex<Ebpf>>, config: &TlsConfig) -> Result<TlsCapture, CaptureError> {
        let hosts = config.normalized_hosts().map_err(CaptureError::Config)?;
        let mut tracepoints = Vec::new();
        let pids = {
            let mut e = ebpf.lock().unwrap_or_else(|p| p.into_inner());
            for name in UPROBES {
                load(program_mut::<UProbe>(&mut e, name)?, name)?;
            }
            let exec: [&str; 1] = ["sched_process_exec"];
            for (name, category, events) in [
                (program::SYS_READ, "syscalls", &READ_SYSCALLS[..]),
                (program::SYS_WRITE, "syscalls", &WRITE_SYSCALLS[..]),
                (program::EXEC, "sched", &exec[..]),
            ] {
                let p: &mut TracePoint = program_mut(&mut e, name)?;
                load(p, name)?;
                for ev in events {
                    match p.attach(category, ev) {
                        Ok(id) => tracepoints.push((name, id)),
                        // Without them: no sockets for memory BIOs (Node, Python's SSLObject),
                        // or no new programs probed until the next rescan.
                        Err(e) => tracing::warn!("tls: tracepoint {category}/{ev}: {}", chain(&e)),
                    }
                }
            }
            let take = |e: &mut Ebpf, name: &'static str| {
                e.take_map(name).ok_or(CaptureError::Map { map: name, detail: "not in the object".into() })
            };
            let map_err =
                |name: &'static str| move |e: aya::maps::MapError| CaptureError::Map { map: name, detail: chain(&e) };
            let mut host_set: BpfHashMap<_, [u8; HOST_LEN], u8> =
                BpfHashMap::try_from(take(&mut e, map::HOSTS)?).map_err(map_err(map::HOSTS))?;
            for h in &hosts {
                host_set.insert(host_key(h), 1, 0).map_err(map_err(map::HOSTS))?;
            }
            BpfHashMap::try_from(take(&mut e, map::PIDS)?).map_err(map_err(map::PIDS))?
        };
        let probes = ProbeWorker::start(ebpf.clone(), pids, filter(config))?;
        if !probes.wait_first_scan(FIRST_SCAN) {
            tracing::warn!("tls: the first scan of the processes is still running: their first calls may be missed");
        }
        tracing::info!("tls: decoding sessions with {}", hosts.join(", "));
        Ok(TlsCapture {
            streams: TlsStreams::new(StreamsConfig::default()),
            probes: Some(probes),
            tracepoints,
            ebpf: ebpf.clone(),
        })
    }

    /// One line: what is probed.
    pub fn describe(&self) -> String {
        let status = self.status();
        let probed = status.targets.iter().filter(|t| t.probes > 0).count();
        format!("TLS uprobes on {probed} files")
    }

    pub fn status(&self) -> ProbeStatus {
        self.probes.as_ref().map(ProbeWorker::status).unwrap_or_default()
    }

    /// A ring-buffer record of the TLS programs (`hook::TLS_DATA` or `hook::TLS_EVENT`).
    pub fn record(&mut self, hook_byte: u8, item: &[u8], clock: ClockOffset, out: &mut impl StreamOut) {
        if hook_byte == hook::TLS_DATA {
            match decode_plaintext(item, clock) {
                Ok(p) => self.streams.plaintext(&p, out),
                Err(_) => self.streams.malformed(),
            }
            return;
        }
        match decode_event(item, clock) {
            Ok(ev) => {
                if let Some((pid, _)) = self.streams.event(ev, out)
                    && let Some(p) = &self.probes
                {
                    p.exec(pid);
                }
            }
            Err(_) => self.streams.malformed(),
        }
    }

    /// Whether the packets of `flow` are to be dropped (a TLS session feeds that connection).
    pub fn owns(&mut self, flow: &FlowKey) -> bool {
        self.streams.owns(flow)
    }

    /// Time-based rules (records waiting for their socket, closed connections).
    pub fn expire(&mut self, now: Timestamp) {
        self.streams.expire(now);
    }

    /// The counters, with the kernel's from `kernel` (summed over CPUs, by index).
    pub fn counters(&self, kernel: impl Fn(u32) -> u64) -> TlsCounters {
        let status = self.status();
        TlsCounters {
            calls: kernel(counter::TLS_CALLS),
            bytes: kernel(counter::TLS_BYTES),
            sessions_traced: kernel(counter::TLS_SESSIONS_TRACED),
            sessions_ignored: kernel(counter::TLS_SESSIONS_IGNORED),
            bytes_ignored: kernel(counter::TLS_BYTES_IGNORED),
            records_submitted: kernel(counter::TLS_RECORDS_SUBMITTED),
            bytes_submitted: kernel(counter::TLS_BYTES_SUBMITTED),
            records_lost: kernel(counter::TLS_RECORDS_LOST),
            bytes_lost: kernel(counter::TLS_BYTES_LOST),
            truncated_bytes: kernel(counter::TLS_TRUNCATED_BYTES),
            read_failed_bytes: kernel(counter::TLS_READ_FAILED_BYTES),
            flows_found: kernel(counter::TLS_FLOWS),
            not_sockets: kernel(counter::TLS_NOT_SOCKETS),
            events_lost: kernel(counter::TLS_EVENTS_LOST),
            execs: kernel(counter::TLS_EXECS),
            pid_filtered: kernel(counter::TLS_PID_FILTERED),
            streams: self.streams.stats(),
            targets: status.targets.iter().filter(|t| t.probes > 0).count() as u64,
            attach_failures: status.attach_failures,
            execs_dropped: status.execs_dropped,
        }
    }

    /// Detaches the uprobes (the probes' thread ends) and the tracepoints.
    pub fn close(&mut self) {
        if let Some(p) = self.probes.take() {
            p.stop();
        }
        let mut e = self.ebpf.lock().unwrap_or_else(|p| p.into_inner());
        for (name, id) in self.tracepoints.drain(..) {
            if let Ok(p) = program_mut::<TracePoint>(&mut e, name)
                && let Err(err) = p.detach(id)
            {
                tracing::debug!("tls: detaching {name}: {err}");
            }
        }
    }
}

impl Drop for TlsCapture {
    fn drop(&mut self) {
        self.close();
    }
}
