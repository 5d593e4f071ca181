//! The eBPF capture: loads the `tracer-ebpf` programs, sets the server ports, attaches them,
//! reads the ring buffer with tokio's `AsyncFd` and turns records into [`SegmentBatch`]es.
//!
//! Hooks ([`EbpfAttach`]):
//! - default: `cgroup_skb` ingress + egress on the cgroup v2 root. Sees every TCP packet a
//!   local socket sends or receives, in every network namespace (host, pods, a pod's own
//!   loopback), with the socket's cgroup id. A packet between two local sockets is seen twice
//!   (sender's egress, receiver's ingress) with the same sequence numbers; reassembly dedups.
//! - TCX ingress + egress on named interfaces (no qdisc is created; links only).
//!
//! With attribution on, the `sock/inet_sock_set_state` tracepoint is attached too: it reports
//! the process behind each `connect()` to and `listen()` on a server port, as socket records
//! in the same ring buffer (handed to [`crate::attribution`], not turned into segments). It
//! needs tracefs (to find the tracepoint) and is optional: without it processes come from
//! `/proc` alone.
//!
//! Everything is detached when the capture is dropped or [`EbpfCapture::close`]d: aya holds
//! the attachments as bpf links owned by this process.
//!
//! Timestamps: the kernel stamps records with `bpf_ktime_get_ns()` (CLOCK_MONOTONIC); they are
//! turned into wall-clock time with a REALTIME − MONOTONIC offset measured at start and
//! refreshed every [`CLOCK_REFRESH`].

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
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
use tracer_common::{
    AF_INET, AF_INET6, CHUNK_SIZE, Counters, PORT_BITMAP_WORDS, RECORD_HEADER_SIZE, RecordHeader, SockRecord,
    config_flags, counter, global, hook, map, program, rec_flags, record_hook, sock_event, sock_state_tp,
};

use super::live::{CaptureConfig, CaptureError, EbpfAttach, cgroup_root, chain};
use crate::attribution::process::unmap;
use crate::attribution::{Attribution, SocketEvent, SocketEventKind};
use crate::segment::{CaptureMeta, Hook, Orientation, Segment, SegmentBatch, TcpFlags, Timestamp};

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
// Clock

/// CLOCK_REALTIME − CLOCK_MONOTONIC, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockOffset {
    pub realtime_minus_monotonic_ns: i64,
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the struct we pass; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

impl ClockOffset {
    /// Measures the offset: the tightest of a few MONOTONIC / REALTIME / MONOTONIC samples.
    pub fn measure() -> ClockOffset {
        let mut best = (i64::MAX, 0i64);
        for _ in 0..5 {
            let m1 = clock_ns(libc::CLOCK_MONOTONIC);
            let r = clock_ns(libc::CLOCK_REALTIME);
            let m2 = clock_ns(libc::CLOCK_MONOTONIC);
            let width = m2 - m1;
            if width < best.0 {
                best = (width, r - (m1 + width / 2));
            }
        }
        ClockOffset { realtime_minus_monotonic_ns: best.1 }
    }

    /// Wall-clock time of a CLOCK_MONOTONIC instant.
    pub fn to_wall(self, monotonic_ns: u64) -> Timestamp {
        let wall = (monotonic_ns as i128) + self.realtime_minus_monotonic_ns as i128;
        Timestamp(wall.clamp(0, u64::MAX as i128) as u64)
    }
}

// ---------------------------------------------------------------------------------------------
// Records

/// Why a ring-buffer record was not turned into a segment (counted, never fatal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record shorter than its header")]
    Short,
    #[error("record data length beyond the record or the chunk size")]
    BadLength,
    #[error("unknown address family")]
    BadFamily,
    #[error("unknown socket event")]
    BadEvent,
}

fn addr(family: u8, a: &[u8; 16]) -> Result<IpAddr, RecordError> {
    match family {
        AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
        AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(*a))),
        _ => Err(RecordError::BadFamily),
    }
}

/// Turns one ring-buffer record into a segment; `Ok(None)` when neither port is a server port
/// (the ports changed while the record was in flight).
///
/// A record carrying a slice of a larger skb becomes a segment of its own: its `seq` is that
/// of its first byte, SYN stays on the first slice only, FIN/RST/PSH on the last only.
pub fn decode_record<'a>(
    buf: &'a [u8],
    orientation: &Orientation,
    clock: ClockOffset,
) -> Result<Option<Segment<'a>>, RecordError> {
    let h = RecordHeader::read_from(buf).ok_or(RecordError::Short)?;
    let len = h.data_len as usize;
    if len > CHUNK_SIZE || RECORD_HEADER_SIZE + len > buf.len() {
        return Err(RecordError::BadLength);
    }
    let payload = &buf[RECORD_HEADER_SIZE..RECORD_HEADER_SIZE + len];
    let src = SocketAddr::new(addr(h.family, &h.saddr)?, h.sport);
    let dst = SocketAddr::new(addr(h.family, &h.daddr)?, h.dport);
    let Some((flow, dir)) = orientation.orient(src, dst) else {
        return Ok(None);
    };
    let first = h.payload_off == 0;
    let last = h.rec_flags & rec_flags::LAST != 0;
    let syn = h.tcp_flags & TcpFlags::SYN != 0;
    let mut flags = h.tcp_flags;
    let mut seq = h.seq.wrapping_add(h.payload_off);
    if !first {
        flags &= !TcpFlags::SYN;
        if syn {
            seq = seq.wrapping_add(1); // the SYN occupies one sequence number before the data
        }
    }
    if !last {
        flags &= !(TcpFlags::FIN | TcpFlags::RST | TcpFlags::PSH);
    }
    Ok(Some(Segment {
        ts: clock.to_wall(h.ts_ns),
        flow,
        dir,
        seq,
        ack: h.ack,
        flags: TcpFlags(flags),
        payload,
        missing: h.missing,
        meta: CaptureMeta {
            cgroup_id: (h.cgroup_id != 0).then_some(h.cgroup_id),
            ifindex: (h.ifindex != 0).then_some(h.ifindex),
            hook: Hook::from_wire(h.hook),
        },
    }))
}

/// Turns a socket record (`hook::SOCK_STATE`) into a [`SocketEvent`].
pub fn decode_sock_record(buf: &[u8], clock: ClockOffset) -> Result<SocketEvent, RecordError> {
    let r = SockRecord::read_from(buf).ok_or(RecordError::Short)?;
    let kind = match r.event {
        sock_event::CONNECT => SocketEventKind::Connect,
        sock_event::LISTEN => SocketEventKind::Listen,
        sock_event::UNLISTEN => SocketEventKind::Unlisten,
        _ => return Err(RecordError::BadEvent),
    };
    let comm = r.comm.split(|b| *b == 0).next().unwrap_or_default();
    Ok(SocketEvent {
        kind,
        ts: clock.to_wall(r.ts_ns),
        cgroup_id: (r.cgroup_id != 0).then_some(r.cgroup_id),
        local: unmap(SocketAddr::new(addr(r.family, &r.saddr)?, r.sport)),
        remote: unmap(SocketAddr::new(addr(r.family, &r.daddr)?, r.dport)),
        pid: r.tgid,
        comm: String::from_utf8_lossy(comm).into_owned(),
        sock: r.sock,
    })
}

/// Checks the kernel's `sock/inet_sock_set_state` record layout (its tracefs `format` file)
/// against the offsets the kernel program reads.
pub fn check_sock_state_format(format: &str) -> Result<(), String> {
    for (name, offset, size) in sock_state_tp::FIELDS {
        let line = format
            .lines()
            .find(|l| {
                l.trim_start().strip_prefix("field:").and_then(|f| f.split(';').next()).is_some_and(|decl| {
                    let last = decl.split_whitespace().last().unwrap_or("");
                    last.split('[').next() == Some(name)
                })
            })
            .ok_or_else(|| format!("no field {name}"))?;
        let get = |key: &str| {
            line.split(';').find_map(|p| p.trim().strip_prefix(key)).and_then(|v| v.trim().parse::<usize>().ok())
        };
        if get("offset:") != Some(offset) || get("size:") != Some(size) {
            return Err(format!("field {name} is not at offset {offset} size {size}: {}", line.trim()));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Counters

/// The kernel programs' counters, summed over CPUs (see `tracer_common::counter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub packets_inspected: u64,
    pub packets_matched: u64,
    pub bytes_matched: u64,
    pub records_submitted: u64,
    pub bytes_submitted: u64,
    pub ringbuf_lost_records: u64,
    pub ringbuf_lost_bytes: u64,
    pub truncated_bytes: u64,
    pub load_failures: u64,
    pub load_failed_bytes: u64,
    pub parse_failures: u64,
    pub pure_acks_skipped: u64,
    pub loopback_ingress_skipped: u64,
    pub nesting_overflow: u64,
    /// Largest skb seen on a server port (a maximum, not a sum).
    pub max_skb_len: u64,
    /// Socket records (attribution) written, and lost to a full ring buffer.
    pub sock_records: u64,
    pub sock_records_lost: u64,
}

impl KernelCounters {
    /// Payload bytes the kernel saw but did not deliver (ring full, truncation, load failure).
    pub fn lost_bytes(&self) -> u64 {
        self.ringbuf_lost_bytes + self.truncated_bytes + self.load_failed_bytes
    }

    /// Named values, for metrics and logs.
    pub fn named(&self) -> [(&'static str, u64); 17] {
        [
            ("packets_inspected", self.packets_inspected),
            ("packets_matched", self.packets_matched),
            ("bytes_matched", self.bytes_matched),
            ("records_submitted", self.records_submitted),
            ("bytes_submitted", self.bytes_submitted),
            ("ringbuf_lost_records", self.ringbuf_lost_records),
            ("ringbuf_lost_bytes", self.ringbuf_lost_bytes),
            ("truncated_bytes", self.truncated_bytes),
            ("load_failures", self.load_failures),
            ("load_failed_bytes", self.load_failed_bytes),
            ("parse_failures", self.parse_failures),
            ("pure_acks_skipped", self.pure_acks_skipped),
            ("loopback_ingress_skipped", self.loopback_ingress_skipped),
            ("nesting_overflow", self.nesting_overflow),
            ("max_skb_len", self.max_skb_len),
            ("sock_records", self.sock_records),
            ("sock_records_lost", self.sock_records_lost),
        ]
    }
}

/// Counters kept by the reader in userspace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderCounters {
    pub records_read: u64,
    pub payload_bytes_read: u64,
    /// Records that failed [`decode_record`].
    pub malformed_records: u64,
    /// Records on ports no longer configured.
    pub unoriented_records: u64,
    /// Socket records (connect/listen events for attribution).
    pub socket_records: u64,
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
    ebpf: Ebpf,
    orientation: Orientation,
    clock: ClockOffset,
    clock_measured: Instant,
    max_segments: usize,
    max_bytes: usize,
    reader: ReaderCounters,
    description: String,
    timings: StartTimings,
    attribution: Option<Attribution>,
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> CaptureError {
    move |e| CaptureError::Map { map: name, detail: chain(&e) }
}

fn prog_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> CaptureError {
    move |e| CaptureError::Program { program: name, detail: chain(&e) }
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

        let mut flags = 0u32;
        if config.emit_pure_acks {
            flags |= config_flags::EMIT_PURE_ACKS;
        }
        if config.skip_loopback_ingress {
            flags |= config_flags::SKIP_LOOPBACK_INGRESS;
        }
        if config.ebpf_debug_log {
            flags |= config_flags::DEBUG_LOG;
        }
        // aya-log's level global: 0 = off, 4 = debug.
        let log_level: u8 = if config.ebpf_debug_log { 4 } else { 0 };
        let ring_bytes = config.ring_bytes.next_power_of_two();
        let mut ebpf = EbpfLoader::new()
            .override_global(global::FLAGS, &flags, true)
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .map_max_entries(map::EVENTS, ring_bytes)
            .load(object)
            .map_err(|e| CaptureError::Load(chain(&e)))?;

        let logger = if config.ebpf_debug_log { start_logger(&mut ebpf) } else { None };

        let mut ports_map: Array<MapData, u64> =
            Array::try_from(take_map(&mut ebpf, map::PORTS)?).map_err(map_err(map::PORTS))?;
        let words = port_bitmap(&config.ports);
        for (i, w) in words.iter().enumerate() {
            if *w != 0 {
                ports_map.set(i as u32, w, 0).map_err(map_err(map::PORTS))?;
            }
        }
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
        if config.attribution.is_some() {
            // Optional: without it, processes come from /proc alone.
            match attach_sock_state(&mut ebpf, &mut links) {
                Ok(()) => description.push_str(" + tracepoint sock/inet_sock_set_state"),
                Err(e) => tracing::warn!("attribution: no connect/listen events ({e}); processes from /proc only"),
            }
        }
        let timings = StartTimings { object: object_time, verify: verify_time, attach: t2.elapsed() };
        tracing::debug!(?timings, "eBPF capture attached: {description}");

        Ok(EbpfCapture {
            ring,
            logger,
            counters_map,
            ports_map,
            links,
            ebpf,
            orientation: Orientation::new(&config.ports),
            clock: ClockOffset::measure(),
            clock_measured: Instant::now(),
            max_segments: config.max_batch_segments,
            max_bytes: config.max_batch_bytes,
            reader: ReaderCounters::default(),
            description,
            timings,
            attribution: config.attribution.clone(),
        })
    }

    /// Clears `batch` and fills it with at least one segment, waiting until the kernel has
    /// something. Returns after draining the ring buffer or reaching the batch limits.
    pub async fn next_batch(&mut self, batch: &mut SegmentBatch) -> Result<(), CaptureError> {
        batch.clear();
        loop {
            if self.clock_measured.elapsed() >= CLOCK_REFRESH {
                self.clock = ClockOffset::measure();
                self.clock_measured = Instant::now();
            }
            let EbpfCapture { ring, orientation, clock, reader, max_segments, max_bytes, attribution, .. } = self;
            let mut guard = ring.readable_mut().await?;
            let rb = guard.get_inner_mut();
            let mut drained = false;
            while batch.is_empty() || (batch.len() < *max_segments && batch.data.len() + CHUNK_SIZE <= *max_bytes) {
                let Some(item) = rb.next() else {
                    drained = true;
                    break;
                };
                reader.records_read += 1;
                if record_hook(&item) == Some(hook::SOCK_STATE) {
                    reader.socket_records += 1;
                    match decode_sock_record(&item, *clock) {
                        Ok(ev) => {
                            if let Some(a) = attribution.as_ref() {
                                a.socket_event(ev);
                            }
                        }
                        Err(_) => reader.malformed_records += 1,
                    }
                    continue;
                }
                match decode_record(&item, orientation, *clock) {
                    Ok(Some(seg)) => {
                        reader.payload_bytes_read += seg.payload.len() as u64;
                        batch.push(&seg);
                    }
                    Ok(None) => reader.unoriented_records += 1,
                    Err(_) => reader.malformed_records += 1,
                }
            }
            if drained {
                guard.clear_ready();
            }
            if !batch.is_empty() {
                return Ok(());
            }
        }
    }

    /// Changes the server ports while attached.
    pub fn set_ports(&mut self, ports: &[u16]) -> Result<(), CaptureError> {
        let probe = CaptureConfig { ports: ports.to_vec(), ..CaptureConfig::default() };
        probe.validate()?;
        let old = port_bitmap(self.orientation.ports());
        let new = port_bitmap(ports);
        for (i, (o, n)) in old.iter().zip(&new).enumerate() {
            if o != n {
                self.ports_map.set(i as u32, n, 0).map_err(map_err(map::PORTS))?;
            }
        }
        self.orientation = Orientation::new(ports);
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
        }
    }

    /// What the reader counted.
    pub fn reader_counters(&self) -> ReaderCounters {
        self.reader
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
        for (_, p) in self.ebpf.programs() {
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
        for link in std::mem::take(&mut self.links) {
            let (name, r) = match link {
                AttachedLink::Cgroup(name, id) => (
                    name,
                    program_mut::<CgroupSkb>(&mut self.ebpf, name).and_then(|p| p.detach(id).map_err(prog_err(name))),
                ),
                AttachedLink::Tc(name, id) => (
                    name,
                    program_mut::<SchedClassifier>(&mut self.ebpf, name)
                        .and_then(|p| p.detach(id).map_err(prog_err(name))),
                ),
                AttachedLink::TracePoint(name, id) => (
                    name,
                    program_mut::<TracePoint>(&mut self.ebpf, name).and_then(|p| p.detach(id).map_err(prog_err(name))),
                ),
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

fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, CaptureError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p =
        ebpf.program_mut(name).ok_or(CaptureError::Program { program: name, detail: "not in the object".into() })?;
    p.try_into().map_err(prog_err(name))
}

fn load_programs(ebpf: &mut Ebpf, attach: &EbpfAttach) -> Result<(), CaptureError> {
    match attach {
        EbpfAttach::CgroupRoot | EbpfAttach::Cgroup(_) => {
            for name in [program::CGROUP_INGRESS, program::CGROUP_EGRESS] {
                program_mut::<CgroupSkb>(ebpf, name)?.load().map_err(prog_err(name))?;
            }
        }
        EbpfAttach::Tcx(_) => {
            for name in [program::TC_INGRESS, program::TC_EGRESS] {
                program_mut::<SchedClassifier>(ebpf, name)?.load().map_err(prog_err(name))?;
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
    p.load().map_err(prog_err(name))?;
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

/// Forwards aya-log records to `tracing` (target `ebpf`).
struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        tracing::debug!(target: "ebpf", "{}", record.args());
    }
    fn flush(&self) {}
}

fn start_logger(ebpf: &mut Ebpf) -> Option<tokio::task::JoinHandle<()>> {
    let logger = match aya_log::EbpfLogger::init_with_logger(ebpf, TracingLog) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("eBPF debug log unavailable: {e}");
            return None;
        }
    };
    // SAFETY: the logger owns its ring-buffer fd for its whole life.
    let mut fd = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            let e = e.into_parts().1;
            tracing::warn!("eBPF debug log unavailable: {e}");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while let Ok(mut guard) = fd.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
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
    use tracer_common::hook;

    fn record(h: RecordHeader, data: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; RECORD_HEADER_SIZE];
        // SAFETY: RecordHeader is POD of exactly RECORD_HEADER_SIZE bytes.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<RecordHeader>(), h) };
        v.extend_from_slice(data);
        while !v.len().is_multiple_of(8) {
            v.push(0xee); // ring-buffer padding
        }
        v
    }

    fn hdr() -> RecordHeader {
        let mut h = RecordHeader::ZERO;
        h.family = AF_INET;
        h.hook = hook::CGROUP_EGRESS;
        h.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        h.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        h.sport = 40000;
        h.dport = 11434;
        h.seq = 1000;
        h.ack = 7;
        h.ts_ns = 5_000_000_000;
        h.cgroup_id = 42;
        h.ifindex = 1;
        h
    }

    #[test]
    fn decodes_and_orients() {
        let o = Orientation::new(&[11434]);
        let clock = ClockOffset { realtime_minus_monotonic_ns: 1_700_000_000_000_000_000 };
        let mut h = hdr();
        h.tcp_flags = TcpFlags::ACK | TcpFlags::PSH;
        h.payload_len = 5;
        h.data_len = 5;
        h.rec_flags = rec_flags::LAST;
        let buf = record(h, b"hello");
        let s = decode_record(&buf, &o, clock).unwrap().unwrap();
        assert_eq!(s.payload, b"hello");
        assert_eq!(s.seq, 1000);
        assert_eq!(s.dir, crate::segment::Direction::ToServer);
        assert_eq!(s.flow.server, "127.0.0.2:11434".parse().unwrap());
        assert_eq!(s.ts, Timestamp(1_700_000_005_000_000_000));
        assert_eq!(s.meta.cgroup_id, Some(42));
        assert_eq!(s.flags.0, TcpFlags::ACK | TcpFlags::PSH);

        // Reverse direction, IPv6.
        let mut h6 = hdr();
        h6.family = AF_INET6;
        h6.saddr = std::net::Ipv6Addr::LOCALHOST.octets();
        h6.daddr = std::net::Ipv6Addr::LOCALHOST.octets();
        h6.sport = 11434;
        h6.dport = 40000;
        h6.rec_flags = rec_flags::LAST;
        let buf = record(h6, b"");
        let s = decode_record(&buf, &o, clock).unwrap().unwrap();
        assert_eq!(s.dir, crate::segment::Direction::ToClient);
        assert_eq!(s.flow.client, "[::1]:40000".parse().unwrap());
    }

    #[test]
    fn split_records_get_their_own_seq_and_flags() {
        let o = Orientation::new(&[11434]);
        let clock = ClockOffset { realtime_minus_monotonic_ns: 0 };
        let mut h = hdr();
        h.tcp_flags = TcpFlags::SYN | TcpFlags::ACK | TcpFlags::FIN | TcpFlags::PSH;
        h.payload_len = 20000;
        // Middle... here: second and last slice of a SYN+data+FIN skb.
        h.payload_off = CHUNK_SIZE as u32;
        h.data_len = 3;
        h.rec_flags = rec_flags::LAST;
        let buf = record(h, b"xyz");
        let s = decode_record(&buf, &o, clock).unwrap().unwrap();
        assert_eq!(s.seq, 1000 + 1 + CHUNK_SIZE as u32);
        assert!(!s.flags.syn() && s.flags.fin());
        // First slice, not last: SYN kept, FIN dropped.
        h.payload_off = 0;
        h.rec_flags = 0;
        let buf = record(h, b"abc");
        let s = decode_record(&buf, &o, clock).unwrap().unwrap();
        assert_eq!(s.seq, 1000);
        assert!(s.flags.syn() && !s.flags.fin());
        // Truncation is carried over.
        h.rec_flags = rec_flags::LAST | rec_flags::TRUNCATED;
        h.missing = 99;
        let buf = record(h, b"abc");
        assert_eq!(decode_record(&buf, &o, clock).unwrap().unwrap().missing, 99);
    }

    #[test]
    fn rejects_bad_records() {
        let o = Orientation::new(&[11434]);
        let clock = ClockOffset { realtime_minus_monotonic_ns: 0 };
        assert_eq!(decode_record(&[0u8; 10], &o, clock).unwrap_err(), RecordError::Short);
        let mut h = hdr();
        h.data_len = 100;
        assert_eq!(decode_record(&record(h, b"short"), &o, clock).unwrap_err(), RecordError::BadLength);
        let mut h = hdr();
        h.family = 99;
        assert_eq!(decode_record(&record(h, b""), &o, clock).unwrap_err(), RecordError::BadFamily);
        let mut h = hdr();
        h.dport = 80;
        assert!(decode_record(&record(h, b""), &o, clock).unwrap().is_none());
    }

    #[test]
    fn clock_offset_tracks_realtime() {
        let c = ClockOffset::measure();
        let mono = clock_ns(libc::CLOCK_MONOTONIC) as u64;
        let wall = c.to_wall(mono).0 as i128;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128;
        assert!((wall - now).abs() < 5_000_000, "offset off by {} ns", wall - now);
    }

    #[test]
    fn bitmap_sets_ports() {
        let w = port_bitmap(&[11434, 0xffff, 1]);
        assert_eq!(w[11434 / 64] >> (11434 % 64) & 1, 1);
        assert_eq!(w[1023] >> 63, 1);
        assert_eq!(w[0], 2);
    }
}
