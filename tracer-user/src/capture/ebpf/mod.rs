//! The eBPF capture: loads the `tracer-ebpf` programs, sets the server ports, attaches them,
//! reads the ring buffer with tokio's `AsyncFd` and turns records into [`SegmentBatch`]es.
//!
//! Hooks ([`EbpfAttach`]):
//! - default: `cgroup_skb` ingress + egress on the cgroup v2 root. Sees every TCP packet a
//!   local socket sends or receives, in every network namespace (host, pods, a pod's own
//!   loopback), with the socket's cgroup id. A packet between two local sockets over a
//!   loopback device is taken once, at the sender's egress (its ingress copy is skipped in the
//!   kernel: half the records); between local sockets over other devices (veth pairs of
//!   network namespaces) it is seen twice with the same sequence numbers, and reassembly
//!   dedups.
//! - TCX ingress + egress on named interfaces (no qdisc is created; links only).
//!
//! With attribution on, the `sock/inet_sock_set_state` tracepoint is attached too: it reports
//! the process behind each `connect()` to and `listen()` on a server port, as socket records
//! in the same ring buffer (handed to [`CaptureConfig::socket_events`], not turned into segments). It
//! needs tracefs (to find the tracepoint) and is optional: without it processes come from
//! `/proc` alone.
//!
//! Everything is detached when the capture is dropped or [`EbpfCapture::close`]d: aya holds
//! the attachments as bpf links owned by this process.
//!
//! Timestamps: the kernel stamps records with `bpf_ktime_get_ns()` (CLOCK_MONOTONIC); they are
//! turned into wall-clock time with a REALTIME − MONOTONIC offset measured at start and
//! refreshed every [`CLOCK_REFRESH`].

mod log;
mod reader;
pub mod records;
pub mod skips;
mod tls_feed;

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::cgroup_skb::CgroupSkbLinkId;
use aya::programs::links::LinkOrder;
use aya::programs::tc::{SchedClassifierLinkId, TcAttachOptions};
use aya::programs::trace_point::TracePointLinkId;
use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, SchedClassifier, TcAttachType, TracePoint};
use aya::{Ebpf, EbpfLoader};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracer_common::{Counters, PORT_BITMAP_WORDS, config_flags, counter, global, map, program};
use tracer_core::segment::{Orientation, SegmentBatch};

use self::reader::RingReader;
use self::records::{ClockOffset, check_sock_state_format};
use super::config::{CaptureConfig, CaptureError, EbpfAttach, cgroup_root, chain};
use super::counters::{KernelCounters, ReaderCounters};
use super::programs::{load, prog_err, program_mut};
use super::tls::TlsCapture;

/// How often the REALTIME − MONOTONIC offset is re-measured.
pub const CLOCK_REFRESH: Duration = Duration::from_secs(1);

#[cfg(ollama_tracer_ebpf)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// The embedded eBPF object, or why this binary was built without it.
pub fn object() -> Result<&'static [u8], &'static str> {
    #[cfg(ollama_tracer_ebpf)]
    {
        Ok(OBJECT)
    }
    #[cfg(not(ollama_tracer_ebpf))]
    {
        Err(match option_env!("OLLAMA_TRACER_EBPF_MISSING") {
            Some(why) => why,
            None => "built without the BPF toolchain",
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The capture

/// Where the time of [`EbpfCapture::start`] went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartTimings {
    /// Parsing the object, creating maps, setting ports.
    pub object: Duration,
    /// Loading the programs (the verifier).
    pub verify: Duration,
    /// Creating the links.
    pub attach: Duration,
}

enum AttachedLink {
    Cgroup(&'static str, CgroupSkbLinkId),
    Tc(&'static str, SchedClassifierLinkId),
    TracePoint(&'static str, TracePointLinkId),
}

/// A running eBPF capture. Must be started inside a tokio runtime.
pub struct EbpfCapture {
    // Field order = drop order: stop reading before the programs go.
    ring: AsyncFd<RingBuf<MapData>>,
    logger: Option<tokio::task::JoinHandle<()>>,
    counters_map: PerCpuArray<MapData, Counters>,
    ports_map: Array<MapData, u64>,
    links: Vec<AttachedLink>,
    /// TLS plaintext (uprobes), when on: detached before the packet programs.
    tls: Option<TlsCapture>,
    /// Shared with the TLS probes' thread, which attaches uprobes as programs start.
    ebpf: Arc<Mutex<Ebpf>>,
    reader: RingReader,
    clock_measured: Instant,
    description: String,
    timings: StartTimings,
    /// Tells the kernel which bodies not to copy (when [`CaptureConfig::skip_bodies_over`]).
    skipper: Option<(u64, Arc<skips::BodySkipper>)>,
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> CaptureError {
    move |e| CaptureError::Map { map: name, detail: chain(&e) }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, CaptureError> {
    ebpf.take_map(name).ok_or(CaptureError::Map { map: name, detail: "not in the object".into() })
}

/// Port bitmap words for a set of ports.
fn port_bitmap(ports: &[u16]) -> Vec<u64> {
    let mut words = vec![0u64; PORT_BITMAP_WORDS as usize];
    for &p in ports {
        words[(p >> 6) as usize] |= 1u64 << (p & 63);
    }
    words
}

/// The programs' load-time [`config_flags`] for `config`.
fn program_flags(config: &CaptureConfig) -> u32 {
    let mut flags = 0u32;
    if config.emit_pure_acks {
        flags |= config_flags::EMIT_PURE_ACKS;
    }
    if config.skips_loopback_ingress() {
        flags |= config_flags::SKIP_LOOPBACK_INGRESS;
    }
    if config.ebpf_debug_log {
        flags |= config_flags::DEBUG_LOG;
    }
    flags
}

impl EbpfCapture {
    /// Loads the programs, sets the ports and attaches as `config.ebpf_attach` says.
    pub fn start(config: &CaptureConfig) -> Result<EbpfCapture, CaptureError> {
        config.validate()?;
        let object = object().map_err(CaptureError::NotBuiltIn)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(CaptureError::Config("EbpfCapture::start must run inside a tokio runtime".into()));
        }
        raise_memlock();
        let t0 = Instant::now();

        let flags = program_flags(config);
        // aya-log's level global: 0 = off, 4 = debug.
        let log_level: u8 = if config.ebpf_debug_log { 4 } else { 0 };
        let ring_bytes = config.ring_bytes.next_power_of_two();
        let skip_over: u64 = config.skip_bodies_over.unwrap_or(0);
        let tls_settings = tls_feed::settings(config);
        let mut loader = EbpfLoader::new();
        loader
            .override_global(global::FLAGS, &flags, true)
            .override_global(global::SKIP_OVER, &skip_over, true)
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .map_max_entries(map::EVENTS, ring_bytes);
        tls_feed::configure(&mut loader, tls_settings.as_ref());
        let mut ebpf = loader.load(object).map_err(|e| CaptureError::Load(chain(&e)))?;

        let logger = if config.ebpf_debug_log { log::start_logger(&mut ebpf) } else { None };

        let mut ports_map: Array<MapData, u64> =
            Array::try_from(take_map(&mut ebpf, map::PORTS)?).map_err(map_err(map::PORTS))?;
        let words = port_bitmap(&config.ports);
        for (i, w) in words.iter().enumerate() {
            if *w != 0 {
                ports_map.set(i as u32, w, 0).map_err(map_err(map::PORTS))?;
            }
        }
        let skipper = match config.skip_bodies_over {
            Some(over) => Some((over, Arc::new(skips::BodySkipper::new(take_map(&mut ebpf, map::SKIP)?)?))),
            None => None,
        };
        let counters_map: PerCpuArray<MapData, Counters> =
            PerCpuArray::try_from(take_map(&mut ebpf, map::COUNTERS)?).map_err(map_err(map::COUNTERS))?;
        let ring: RingBuf<MapData> =
            RingBuf::try_from(take_map(&mut ebpf, map::EVENTS)?).map_err(map_err(map::EVENTS))?;
        // SAFETY: the ring buffer owns its map fd and keeps it open and unchanged while the
        // AsyncFd owns it.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| CaptureError::Io(e.into_parts().1))?;

        let object_time = t0.elapsed();
        let t1 = Instant::now();
        load_programs(&mut ebpf, &config.ebpf_attach)?;
        let verify_time = t1.elapsed();
        let t2 = Instant::now();
        let mut links = Vec::new();
        let mut description = match &config.ebpf_attach {
            EbpfAttach::CgroupRoot => {
                let root = cgroup_root()?;
                attach_cgroup(&mut ebpf, &root, &mut links)?;
                format!("cgroup_skb on {}", root.display())
            }
            EbpfAttach::Cgroup(dir) => {
                attach_cgroup(&mut ebpf, dir, &mut links)?;
                format!("cgroup_skb on {}", dir.display())
            }
            EbpfAttach::Tcx(ifaces) => {
                attach_tcx(&mut ebpf, ifaces, &mut links)?;
                format!("TCX on {}", ifaces.join(","))
            }
        };
        if config.socket_events.is_some() || tls_settings.is_some() {
            // Optional: without it, processes come from /proc alone, and a TLS session ends
            // with its library's free or close only.
            match attach_sock_state(&mut ebpf, &mut links) {
                Ok(()) => description.push_str(" + tracepoint sock/inet_sock_set_state"),
                Err(e) => tracing::warn!("no socket events ({e}): processes from /proc only, TLS sessions end late"),
            }
        }
        let ebpf = Arc::new(Mutex::new(ebpf));
        let tls = tls_settings.and_then(|_| tls_feed::start(&ebpf, config));
        if let Some(t) = &tls {
            description.push_str(&format!(" + {}", t.describe()));
        }
        let timings = StartTimings { object: object_time, verify: verify_time, attach: t2.elapsed() };
        tracing::debug!(?timings, "eBPF capture attached: {description}");

        Ok(EbpfCapture {
            ring,
            logger,
            counters_map,
            ports_map,
            links,
            tls,
            ebpf,
            reader: RingReader {
                orientation: Orientation::new(&config.ports),
                clock: ClockOffset::measure(),
                max_segments: config.max_batch_segments,
                max_bytes: config.max_batch_bytes,
                counters: ReaderCounters::default(),
                socket_events: config.socket_events.clone(),
            },
            clock_measured: Instant::now(),
            description,
            timings,
            skipper,
        })
    }

    /// Clears `batch` and fills it with at least one segment, waiting until the kernel has
    /// something. Returns after draining the ring buffer or reaching the batch limits.
    pub async fn next_batch(&mut self, batch: &mut SegmentBatch) -> Result<(), CaptureError> {
        batch.clear();
        loop {
            self.refresh_clock();
            let mut guard = self.ring.readable_mut().await?;
            let drained = self.reader.fill(guard.get_inner_mut(), &mut self.tls, batch);
            if drained {
                guard.clear_ready();
            }
            if !batch.is_empty() {
                return Ok(());
            }
        }
    }

    /// Clears `batch` and fills it with what the ring holds now, without waiting: `true` once
    /// the ring is empty, `false` when the batch filled first. The programs leave some records
    /// without a wake-up (a skipped body's lengths, pure ACKs: `quiet_flags` in tracer-ebpf's
    /// `base.rs`); the daemon reads them this way each tick, so none waits longer than that.
    pub fn poll_now(&mut self, batch: &mut SegmentBatch) -> bool {
        batch.clear();
        self.refresh_clock();
        self.reader.fill(self.ring.get_mut(), &mut self.tls, batch)
    }

    fn refresh_clock(&mut self) {
        if self.clock_measured.elapsed() >= CLOCK_REFRESH {
            self.reader.clock = ClockOffset::measure();
            self.clock_measured = Instant::now();
            if let Some(t) = self.tls.as_mut() {
                t.expire(self.reader.clock.to_wall(super::ring::clock_ns(libc::CLOCK_MONOTONIC) as u64));
            }
        }
    }

    /// Changes the server ports while attached.
    pub fn set_ports(&mut self, ports: &[u16]) -> Result<(), CaptureError> {
        let probe = CaptureConfig { ports: ports.to_vec(), ..CaptureConfig::default() };
        probe.validate()?;
        let old = port_bitmap(self.reader.orientation.ports());
        let new = port_bitmap(ports);
        for (i, (o, n)) in old.iter().zip(&new).enumerate() {
            if o != n {
                self.ports_map.set(i as u32, n, 0).map_err(map_err(map::PORTS))?;
            }
        }
        self.reader.orientation = Orientation::new(ports);
        Ok(())
    }

    /// Kernel counters summed over CPUs (`max_skb_len`: maximum).
    pub fn kernel_counters(&self) -> KernelCounters {
        let per_cpu = self.counters_map.get(&0, 0).ok();
        let get = |idx: u32, max: bool| -> u64 {
            let Some(v) = &per_cpu else { return 0 };
            let vals = v.iter().map(|c| c[idx as usize]);
            if max { vals.max().unwrap_or(0) } else { vals.fold(0u64, u64::wrapping_add) }
        };
        KernelCounters {
            packets_inspected: get(counter::PACKETS_INSPECTED, false),
            packets_matched: get(counter::PACKETS_MATCHED, false),
            bytes_matched: get(counter::BYTES_MATCHED, false),
            records_submitted: get(counter::RECORDS_SUBMITTED, false),
            bytes_submitted: get(counter::BYTES_SUBMITTED, false),
            ringbuf_lost_records: get(counter::RINGBUF_LOST_RECORDS, false),
            ringbuf_lost_bytes: get(counter::RINGBUF_LOST_BYTES, false),
            truncated_bytes: get(counter::TRUNCATED_BYTES, false),
            load_failures: get(counter::LOAD_FAILURES, false),
            load_failed_bytes: get(counter::LOAD_FAILED_BYTES, false),
            parse_failures: get(counter::PARSE_FAILURES, false),
            pure_acks_skipped: get(counter::PURE_ACKS_SKIPPED, false),
            loopback_ingress_skipped: get(counter::LOOPBACK_INGRESS_SKIPPED, false),
            nesting_overflow: get(counter::NESTING_OVERFLOW, false),
            max_skb_len: get(counter::MAX_SKB_LEN, true),
            sock_records: get(counter::SOCK_RECORDS, false),
            sock_records_lost: get(counter::SOCK_RECORDS_LOST, false),
            skipped_packets: get(counter::SKIPPED_PACKETS, false),
            skipped_bytes: get(counter::SKIPPED_BYTES, false),
            blob_skips_named: get(counter::BLOB_SKIPS_NAMED, false),
            tls: self.tls.as_ref().map(|t| t.counters(|i| get(i, false))),
        }
    }

    /// Where the pipeline says which bodies need not be copied, when skipping is on.
    pub fn body_skipper(&self) -> Option<(u64, Arc<skips::BodySkipper>)> {
        self.skipper.clone()
    }

    /// What the reader counted.
    pub fn reader_counters(&self) -> ReaderCounters {
        self.reader.counters
    }

    /// One line: what is attached where.
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// How long starting took, by phase.
    pub fn start_timings(&self) -> StartTimings {
        self.timings
    }

    /// The kernel ids of our loaded programs (for diagnostics and tests).
    pub fn program_ids(&self) -> Vec<u32> {
        let mut ids = Vec::new();
        let ebpf = self.ebpf.lock().unwrap_or_else(|e| e.into_inner());
        for (_, p) in ebpf.programs() {
            if let Ok(info) = p.info() {
                ids.push(info.id());
            }
        }
        ids
    }

    /// Detaches every hook and unloads the programs; returns how long detaching took.
    pub fn close(mut self) -> Duration {
        let t = Instant::now();
        self.detach_all();
        drop(self);
        t.elapsed()
    }

    fn detach_all(&mut self) {
        if let Some(l) = self.logger.take() {
            l.abort();
        }
        if let Some(mut t) = self.tls.take() {
            t.close();
        }
        let mut guard = self.ebpf.lock().unwrap_or_else(|e| e.into_inner());
        let ebpf = &mut *guard;
        for link in std::mem::take(&mut self.links) {
            let (name, r) = match link {
                AttachedLink::Cgroup(name, id) => {
                    (name, program_mut::<CgroupSkb>(ebpf, name).and_then(|p| p.detach(id).map_err(prog_err(name))))
                }
                AttachedLink::Tc(name, id) => (
                    name,
                    program_mut::<SchedClassifier>(ebpf, name).and_then(|p| p.detach(id).map_err(prog_err(name))),
                ),
                AttachedLink::TracePoint(name, id) => {
                    (name, program_mut::<TracePoint>(ebpf, name).and_then(|p| p.detach(id).map_err(prog_err(name))))
                }
            };
            if let Err(e) = r {
                // The link still goes when the program is dropped below.
                tracing::warn!("detaching {name}: {e}");
            }
        }
    }
}

impl Drop for EbpfCapture {
    fn drop(&mut self) {
        self.detach_all();
    }
}

fn load_programs(ebpf: &mut Ebpf, attach: &EbpfAttach) -> Result<(), CaptureError> {
    match attach {
        EbpfAttach::CgroupRoot | EbpfAttach::Cgroup(_) => {
            for name in [program::CGROUP_INGRESS, program::CGROUP_EGRESS] {
                let p = program_mut::<CgroupSkb>(ebpf, name)?;
                load(p, name)?;
            }
        }
        EbpfAttach::Tcx(_) => {
            for name in [program::TC_INGRESS, program::TC_EGRESS] {
                let p = program_mut::<SchedClassifier>(ebpf, name)?;
                load(p, name)?;
            }
        }
    }
    Ok(())
}

fn attach_cgroup(ebpf: &mut Ebpf, dir: &PathBuf, links: &mut Vec<AttachedLink>) -> Result<(), CaptureError> {
    let cg = File::open(dir)
        .map_err(|e| CaptureError::Attach { what: format!("cgroup {}", dir.display()), detail: e.to_string() })?;
    for (name, at) in
        [(program::CGROUP_INGRESS, CgroupSkbAttachType::Ingress), (program::CGROUP_EGRESS, CgroupSkbAttachType::Egress)]
    {
        let p: &mut CgroupSkb = program_mut(ebpf, name)?;
        // Links are multi-attach by nature; AllowMultiple is EINVAL for bpf_link_create here.
        let id = p
            .attach(&cg, at, CgroupAttachMode::Single)
            .map_err(|e| CaptureError::Attach { what: format!("{name} to {}", dir.display()), detail: chain(&e) })?;
        links.push(AttachedLink::Cgroup(name, id));
    }
    Ok(())
}

fn attach_tcx(ebpf: &mut Ebpf, ifaces: &[String], links: &mut Vec<AttachedLink>) -> Result<(), CaptureError> {
    for (name, at) in [(program::TC_INGRESS, TcAttachType::Ingress), (program::TC_EGRESS, TcAttachType::Egress)] {
        let p: &mut SchedClassifier = program_mut(ebpf, name)?;
        for iface in ifaces {
            // TCX links only: nothing (no clsact qdisc) outlives the process.
            let id = p
                .attach_with_options(iface, at, TcAttachOptions::TcxOrder(LinkOrder::default()))
                .map_err(|e| CaptureError::Attach { what: format!("{name} to {iface}"), detail: chain(&e) })?;
            links.push(AttachedLink::Tc(name, id));
        }
    }
    Ok(())
}

/// Where tracefs is (aya looks in the same two places).
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Loads and attaches the `sock/inet_sock_set_state` program after checking the tracepoint's
/// layout.
fn attach_sock_state(ebpf: &mut Ebpf, links: &mut Vec<AttachedLink>) -> Result<(), CaptureError> {
    let format = TRACEFS
        .iter()
        .find_map(|t| std::fs::read_to_string(format!("{t}/events/sock/inet_sock_set_state/format")).ok())
        .ok_or_else(|| CaptureError::Unavailable("tracefs not mounted (/sys/kernel/tracing)".into()))?;
    check_sock_state_format(&format)
        .map_err(|e| CaptureError::Unavailable(format!("unexpected sock/inet_sock_set_state layout: {e}")))?;
    let name = program::SOCK_STATE;
    let p: &mut TracePoint = program_mut(ebpf, name)?;
    load(p, name)?;
    let id = p
        .attach("sock", "inet_sock_set_state")
        .map_err(|e| CaptureError::Attach { what: format!("{name} to sock/inet_sock_set_state"), detail: chain(&e) })?;
    links.push(AttachedLink::TracePoint(name, id));
    Ok(())
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
fn raise_memlock() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads the struct we pass; failure is harmless here.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// Programs and links of ours (`ot_*` programs) currently in the kernel: `(link ids,
/// program ids)`. For tests and `check`.
pub fn leftover_objects() -> (Vec<u32>, Vec<u32>) {
    let mut progs = Vec::new();
    for info in aya::programs::loaded_programs().flatten() {
        if info.name_as_str().is_some_and(|n| n.starts_with("ot_")) {
            progs.push(info.id());
        }
    }
    let mut links = Vec::new();
    for info in aya::programs::loaded_links().flatten() {
        if progs.contains(&info.program_id()) {
            links.push(info.id());
        }
    }
    (links, progs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_ingress_is_skipped_by_default_only_at_the_cgroup_root() {
        let skip = |c: &CaptureConfig| program_flags(c) & config_flags::SKIP_LOOPBACK_INGRESS != 0;
        let root = CaptureConfig::default();
        assert!(skip(&root));
        assert!(!skip(&CaptureConfig { skip_loopback_ingress: false, ..root.clone() }));
        // A subtree does not see every local sender's egress; TCX sees lo both ways anyway.
        assert!(!skip(&CaptureConfig { ebpf_attach: EbpfAttach::Cgroup("/sys/fs/cgroup/x".into()), ..root.clone() }));
        assert!(!skip(&CaptureConfig { ebpf_attach: EbpfAttach::Tcx(vec!["lo".into()]), ..root.clone() }));
        let all = CaptureConfig { emit_pure_acks: true, ebpf_debug_log: true, ..root };
        assert_eq!(
            program_flags(&all),
            config_flags::EMIT_PURE_ACKS | config_flags::SKIP_LOOPBACK_INGRESS | config_flags::DEBUG_LOG
        );
    }

    #[test]
    fn bitmap_sets_ports() {
        let w = port_bitmap(&[11434, 0xffff, 1]);
        assert_eq!(w[11434 / 64] >> (11434 % 64) & 1, 1);
        assert_eq!(w[1023] >> 63, 1);
        assert_eq!(w[0], 2);
    }
}
