//! Records shared by the kernel programs (`tracer-ebpf`) and the daemon (`tracer-user`).
//! Treated as a wire format: `#[repr(C)]`, explicit sizes, asserted layout.
//!
//! # Ring-buffer record
//!
//! Every record in [`map::EVENTS`] is a [`RecordHeader`] followed immediately by
//! `data_len` bytes of TCP payload (`0 ..= CHUNK_SIZE`). Records are sized to the payload they
//! carry (the kernel rounds each ring-buffer entry up to 8 bytes; the reader must use
//! `data_len`, not the entry length, and must ignore trailing bytes).
//!
//! One socket buffer (skb) on a configured port produces one record when it carries no payload
//! (SYN, FIN, RST; pure ACKs only when asked for) and otherwise one record per `CHUNK_SIZE`
//! slice of its payload: large TSO/GRO skbs (up to 512 KiB on `lo`) are split across several
//! records that share `ts_ns`, `seq`, `ack`, `skb_len` and `payload_len` and differ by
//! `payload_off`. The first payload byte of a record has TCP sequence number
//! `seq + payload_off (+ 1 if SYN)`.
//!
//! # Record kinds
//!
//! Every record shares the first 54 bytes of [`RecordHeader`] (time, cgroup id, addresses,
//! ports, family) and its `hook` byte at offset 53 says what it is: one of the packet hooks
//! above, or [`hook::SOCK_STATE`] for a [`SockRecord`] (a socket event from the
//! `sock/inet_sock_set_state` tracepoint, carrying the process behind a connect or a listen).
//! Readers dispatch on [`record_hook`] before reading the rest. The TLS plaintext capture's
//! records ([`hook::TLS_DATA`], [`hook::TLS_EVENT`]) are described in [`tls`].
#![no_std]

pub mod blob_head;
pub mod tls;

/// Version of this wire format; bump on any layout or meaning change.
pub const RECORD_VERSION: u32 = 4;

/// Largest TCP payload slice carried by one record.
pub const CHUNK_SIZE: usize = 16 * 1024;
/// Most records one skb is split into; payload beyond `CHUNK_SIZE * MAX_CHUNKS_PER_SKB`
/// (512 KiB, the largest GSO size Linux builds) is counted as truncated.
pub const MAX_CHUNKS_PER_SKB: u32 = 32;
/// Largest payload captured from one skb.
pub const MAX_PAYLOAD_PER_SKB: u32 = CHUNK_SIZE as u32 * MAX_CHUNKS_PER_SKB;

/// Most server ports the userspace accepts (the kernel's port set is a bitmap over all
/// 65 536 ports, so this is a sanity limit of the configuration, not of the map).
pub const MAX_PORTS: usize = 64;
/// Number of `u64` words in the port bitmap map [`map::PORTS`] (65 536 bits).
pub const PORT_BITMAP_WORDS: u32 = 65536 / 64;

/// Default ring-buffer size in bytes (a power-of-two multiple of the page size). 8 MiB holds
/// half a second of 1 000 streams × 100 tokens/s (docs/benchmarks.md) with localhost packets
/// taken once, while the daemon reads it every 2 ms; its data pages are mapped twice into the
/// daemon, so it counts 16 MiB in RSS.
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;

/// How deep programs may nest on one CPU (process context, softirq, hardirq, NMI); each level
/// has its own per-CPU scratch record.
pub const SCRATCH_LEVELS: u32 = 4;

/// Address family values of [`RecordHeader::family`] (Linux `AF_INET`, `AF_INET6`).
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// Where a record was captured: [`RecordHeader::hook`].
pub mod hook {
    /// `cgroup_skb/ingress` on a cgroup v2 directory (normally the root): a packet delivered
    /// to a local socket of any network namespace.
    pub const CGROUP_INGRESS: u8 = 1;
    /// `cgroup_skb/egress`: a packet sent by a local socket of any network namespace.
    pub const CGROUP_EGRESS: u8 = 2;
    /// TC (TCX) ingress on an interface.
    pub const TC_INGRESS: u8 = 3;
    /// TC (TCX) egress on an interface.
    pub const TC_EGRESS: u8 = 4;
    /// Not a packet: a [`crate::SockRecord`] from the `sock/inet_sock_set_state` tracepoint.
    pub const SOCK_STATE: u8 = 5;
    /// Not a packet: TLS plaintext from a uprobe ([`crate::tls::TlsDataHeader`] + data).
    pub const TLS_DATA: u8 = 6;
    /// Not a packet: a TLS session's socket, its end, or a new program
    /// ([`crate::tls::EventRecord`]).
    pub const TLS_EVENT: u8 = 7;

    /// Short name for logs and reports.
    pub const fn name(hook: u8) -> &'static str {
        match hook {
            CGROUP_INGRESS => "cgroup_skb/ingress",
            CGROUP_EGRESS => "cgroup_skb/egress",
            TC_INGRESS => "tc/ingress",
            TC_EGRESS => "tc/egress",
            SOCK_STATE => "tracepoint/sock/inet_sock_set_state",
            TLS_DATA => "uprobe/tls",
            TLS_EVENT => "uprobe/tls event",
            _ => "unknown",
        }
    }
}

/// Bits of [`RecordHeader::rec_flags`].
pub mod rec_flags {
    /// This is the last record produced for its skb.
    pub const LAST: u8 = 0x01;
    /// `missing` payload bytes that follow this record's data were not captured
    /// (per-skb cap, or a failed load).
    pub const TRUNCATED: u8 = 0x02;
    /// Loading this record's payload from the skb failed: `data_len` is 0 and the slice is
    /// counted in `missing`.
    pub const LOAD_FAILED: u8 = 0x04;
    /// The skb's payload was left out on purpose: user space asked (in [`crate::map::SKIP`])
    /// for its bytes not to be copied. `data_len` is 0 and `missing` is the payload length;
    /// not a loss.
    pub const SKIPPED: u8 = 0x08;
}

/// Bits of the load-time global [`global::FLAGS`].
pub mod config_flags {
    /// Also emit records for packets without payload and without SYN/FIN/RST (pure ACKs).
    pub const EMIT_PURE_ACKS: u32 = 0x01;
    /// Skip `cgroup_skb/ingress` packets that arrive on a loopback device (ifindex 1 of their
    /// namespace): the sending socket of the same host already produced them at egress.
    /// Halves the record volume of localhost traffic; off by default.
    pub const SKIP_LOOPBACK_INGRESS: u32 = 0x02;
    /// Emit aya-log debug lines (connection starts); the loader also needs aya-log enabled.
    pub const DEBUG_LOG: u32 = 0x04;
}

/// Map names, as the loader finds them in the object.
pub mod map {
    /// `BPF_MAP_TYPE_RINGBUF`: header + payload records.
    pub const EVENTS: &str = "OT_EVENTS";
    /// `BPF_MAP_TYPE_PERCPU_ARRAY<Counters>` of one entry: [`crate::Counters`], indexed by
    /// [`crate::counter`].
    pub const COUNTERS: &str = "OT_COUNTERS";
    /// `BPF_MAP_TYPE_ARRAY<u64>` of [`crate::PORT_BITMAP_WORDS`] entries: bit `p % 64` of word
    /// `p / 64` set = port `p` is a server port. Can be changed while attached.
    pub const PORTS: &str = "OT_PORTS";
    /// `BPF_MAP_TYPE_PERCPU_ARRAY<Scratch>` of [`crate::SCRATCH_LEVELS`] entries.
    pub const SCRATCH: &str = "OT_SCRATCH";
    /// `BPF_MAP_TYPE_PERCPU_ARRAY<u32>`, one entry: current nesting depth on the CPU.
    pub const DEPTH: &str = "OT_DEPTH";
    /// `BPF_MAP_TYPE_LRU_HASH<u64, Connecting>`: sockets between `connect()` (SYN_SENT, in
    /// the caller's context) and ESTABLISHED (when the source port is known), by socket
    /// address.
    pub const CONNECTING: &str = "OT_CONNECTING";
    /// `BPF_MAP_TYPE_LRU_HASH<SkipKey, SkipRange>` of [`crate::MAX_SKIPS`] entries: byte
    /// ranges of one direction of a flow whose payload is not copied (bodies user space does
    /// not decode). Written by user space (and by the kernel for blob uploads, see
    /// [`crate::global::SKIP_OVER`]), deleted by the kernel when a packet at or past the
    /// range's end (or a FIN/RST) comes by.
    pub const SKIP: &str = "OT_SKIP";
}

/// Load-time globals (`EbpfLoader::override_global`).
pub mod global {
    /// `u32`: [`crate::config_flags`].
    pub const FLAGS: &str = "OT_FLAGS";
    /// `u64`: blob uploads (`POST /api/blobs/…`) whose `Content-Length` is over this many
    /// bytes are skipped from the packet after their head on, by the programs themselves (0:
    /// never). User space would name the same range, but only after its head has crossed the
    /// ring, and at several GB/s the ring fills first.
    pub const SKIP_OVER: &str = "OT_SKIP_OVER";
}

/// Program names in the object.
pub mod program {
    pub const CGROUP_INGRESS: &str = "ot_cg_ingress";
    pub const CGROUP_EGRESS: &str = "ot_cg_egress";
    pub const TC_INGRESS: &str = "ot_tc_ingress";
    pub const TC_EGRESS: &str = "ot_tc_egress";
    /// Tracepoint `sock/inet_sock_set_state`: [`crate::SockRecord`]s.
    pub const SOCK_STATE: &str = "ot_sock_state";
}

/// The value of the per-CPU counter map [`map::COUNTERS`] (one entry; the kernel looks it up
/// once per packet), indexed by [`counter`].
pub type Counters = [u64; counter::COUNT as usize];

/// Indices into [`Counters`]. All are sums over CPUs except
/// [`counter::MAX_SKB_LEN`], which is a maximum.
pub mod counter {
    /// skbs the programs ran on (every protocol).
    pub const PACKETS_INSPECTED: u32 = 0;
    /// TCP packets on a configured port.
    pub const PACKETS_MATCHED: u32 = 1;
    /// TCP payload bytes of matched packets.
    pub const BYTES_MATCHED: u32 = 2;
    /// Records written to the ring buffer.
    pub const RECORDS_SUBMITTED: u32 = 3;
    /// Payload bytes in records written to the ring buffer.
    pub const BYTES_SUBMITTED: u32 = 4;
    /// Records lost because the ring buffer was full.
    pub const RINGBUF_LOST_RECORDS: u32 = 5;
    /// Payload bytes lost because the ring buffer was full.
    pub const RINGBUF_LOST_BYTES: u32 = 6;
    /// Payload bytes beyond [`crate::MAX_PAYLOAD_PER_SKB`] not captured.
    pub const TRUNCATED_BYTES: u32 = 7;
    /// `bpf_skb_load_bytes` of payload failed.
    pub const LOAD_FAILURES: u32 = 8;
    /// Payload bytes not captured because their load failed.
    pub const LOAD_FAILED_BYTES: u32 = 9;
    /// TCP/IP headers that could not be read or parsed (short packet, unsupported IPv6
    /// extension chain, IPv4 fragment): such packets might have been on a configured port.
    pub const PARSE_FAILURES: u32 = 10;
    /// Matched packets without payload or SYN/FIN/RST that were not emitted.
    pub const PURE_ACKS_SKIPPED: u32 = 11;
    /// Loopback packets left at the cgroup ingress hook by
    /// [`crate::config_flags::SKIP_LOOPBACK_INGRESS`] before any parsing (any port: they are
    /// taken at their sender's egress), so not in [`PACKETS_MATCHED`].
    pub const LOOPBACK_INGRESS_SKIPPED: u32 = 12;
    /// Programs that found all per-CPU scratch levels busy (packet not captured).
    pub const NESTING_OVERFLOW: u32 = 13;
    /// Largest `skb->len` of a matched packet (maximum over CPUs, not a sum).
    pub const MAX_SKB_LEN: u32 = 14;
    /// [`crate::SockRecord`]s written to the ring buffer.
    pub const SOCK_RECORDS: u32 = 15;
    /// [`crate::SockRecord`]s lost because the ring buffer was full (not in
    /// [`RINGBUF_LOST_RECORDS`], which counts packet records).
    pub const SOCK_RECORDS_LOST: u32 = 16;
    /// TLS reads and writes the uprobes saw complete (every session), and their plaintext
    /// bytes.
    pub const TLS_CALLS: u32 = 18;
    pub const TLS_BYTES: u32 = 19;
    /// TLS sessions decided for tracing, and against (another host, not HTTP/1.x).
    pub const TLS_SESSIONS_TRACED: u32 = 20;
    pub const TLS_SESSIONS_IGNORED: u32 = 21;
    /// Plaintext bytes not copied because their session was ignored or not yet decided.
    pub const TLS_BYTES_IGNORED: u32 = 22;
    /// TLS data records written to the ring buffer, and their bytes.
    pub const TLS_RECORDS_SUBMITTED: u32 = 23;
    pub const TLS_BYTES_SUBMITTED: u32 = 24;
    /// TLS data records (and their bytes) lost because the ring buffer was full.
    pub const TLS_RECORDS_LOST: u32 = 25;
    pub const TLS_BYTES_LOST: u32 = 26;
    /// Bytes of a call beyond [`crate::tls::MAX_CHUNKS_PER_CALL`] chunks, not copied.
    pub const TLS_TRUNCATED_BYTES: u32 = 27;
    /// Bytes that could not be read from the process (`bpf_probe_read_user` failed).
    pub const TLS_READ_FAILED_BYTES: u32 = 28;
    /// Session sockets reported ([`crate::tls::event::FLOW`]).
    pub const TLS_FLOWS: u32 = 29;
    /// Descriptors looked at for a session that led to no TCP socket.
    pub const TLS_NOT_SOCKETS: u32 = 30;
    /// TLS event records (flows, closes, execs) lost because the ring buffer was full.
    pub const TLS_EVENTS_LOST: u32 = 31;
    /// Programs executed (exec events written).
    pub const TLS_EXECS: u32 = 32;
    /// TLS calls of processes left out by include/exclude (`--tls-include-exe` …).
    pub const TLS_PID_FILTERED: u32 = 33;
    /// Packets whose payload was not copied because user space asked to skip it
    /// ([`crate::map::SKIP`]), and their payload bytes (in [`BYTES_MATCHED`], not in
    /// [`BYTES_SUBMITTED`]).
    pub const SKIPPED_PACKETS: u32 = 34;
    pub const SKIPPED_BYTES: u32 = 35;
    /// Blob uploads whose body the programs named for skipping themselves, from the upload's
    /// head (see [`crate::global::SKIP_OVER`]).
    pub const BLOB_SKIPS_NAMED: u32 = 36;
    /// Number of counters.
    pub const COUNT: u32 = 37;
}

/// Header of every ring-buffer record; `data_len` payload bytes follow it.
///
/// Addresses are in network byte order as on the wire (IPv4 in the first 4 bytes, the rest
/// zero); ports, `seq`, `ack` in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// `bpf_ktime_get_ns()` when the program ran (CLOCK_MONOTONIC, ns).
    pub ts_ns: u64,
    /// cgroup v2 id of the local socket (`bpf_skb_cgroup_id`), 0 when unknown.
    pub cgroup_id: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// One of [`hook`].
    pub hook: u8,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, ...).
    pub tcp_flags: u8,
    /// [`rec_flags`].
    pub rec_flags: u8,
    /// TCP sequence number of the skb (its header's, not this record's first byte).
    pub seq: u32,
    pub ack: u32,
    /// `skb->len` (from the network header on).
    pub skb_len: u32,
    /// TCP payload bytes in the whole skb.
    pub payload_len: u32,
    /// Offset of this record's data within the skb's payload.
    pub payload_off: u32,
    /// Payload bytes following this header.
    pub data_len: u32,
    /// Payload bytes right after this record's data that no record carries (see
    /// [`rec_flags::TRUNCATED`]); 0 normally.
    pub missing: u32,
    /// Interface index the packet was seen on (`skb->ifindex`).
    pub ifindex: u32,
}

/// Size of [`RecordHeader`] on the wire.
pub const RECORD_HEADER_SIZE: usize = 88;
const _: () = assert!(core::mem::size_of::<RecordHeader>() == RECORD_HEADER_SIZE);
const _: () = assert!(core::mem::align_of::<RecordHeader>() == 8);
const _: () = assert!(core::mem::offset_of!(RecordHeader, saddr) == 16);
const _: () = assert!(core::mem::offset_of!(RecordHeader, sport) == 48);
const _: () = assert!(core::mem::offset_of!(RecordHeader, family) == 52);
const _: () = assert!(core::mem::offset_of!(RecordHeader, seq) == 56);
const _: () = assert!(core::mem::offset_of!(RecordHeader, ifindex) == 84);
const _: () = assert!(CHUNK_SIZE.is_power_of_two());

impl RecordHeader {
    /// An all-zero header (for initialising scratch space).
    pub const ZERO: RecordHeader = RecordHeader {
        ts_ns: 0,
        cgroup_id: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        sport: 0,
        dport: 0,
        family: 0,
        hook: 0,
        tcp_flags: 0,
        rec_flags: 0,
        seq: 0,
        ack: 0,
        skb_len: 0,
        payload_len: 0,
        payload_off: 0,
        data_len: 0,
        missing: 0,
        ifindex: 0,
    };

    /// Reads a header from the start of a ring-buffer entry (any alignment); `None` if the
    /// entry is shorter than a header.
    pub fn read_from(buf: &[u8]) -> Option<RecordHeader> {
        if buf.len() < RECORD_HEADER_SIZE {
            return None;
        }
        // SAFETY: length checked; RecordHeader is plain old data valid for any bit pattern.
        Some(unsafe { core::ptr::read_unaligned(buf.as_ptr().cast::<RecordHeader>()) })
    }
}

/// Per-CPU scratch space the kernel assembles a record in before `bpf_ringbuf_output` copies
/// `RECORD_HEADER_SIZE + data_len` bytes of it into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scratch {
    pub hdr: RecordHeader,
    pub data: [u8; CHUNK_SIZE],
    /// Offset of the TCP payload in the skb (kernel-private; not part of any record).
    pub payload_start: u32,
    /// Kernel-private too: where the blob-head scan hands values from one pass to the next
    /// ([`crate::blob_head::blob_head`]).
    pub scan: blob_head::ScanCells,
}
const _: () = assert!(core::mem::offset_of!(Scratch, data) == RECORD_HEADER_SIZE);
const _: () = assert!(core::mem::size_of::<Scratch>() == RECORD_HEADER_SIZE + CHUNK_SIZE + 8 + 32);
// Per-CPU map values are limited to 32 KiB.
const _: () = assert!(core::mem::size_of::<Scratch>() <= 32 * 1024);

/// The `hook` byte of a ring-buffer record (offset 53, shared by every record kind), `None`
/// when the record is too short to have one.
pub fn record_hook(buf: &[u8]) -> Option<u8> {
    buf.get(core::mem::offset_of!(RecordHeader, hook)).copied()
}

/// What a [`SockRecord`] reports: [`SockRecord::event`].
pub mod sock_event {
    /// A connection to a server port was established; the process is the one that called
    /// `connect()` (recorded at SYN_SENT), the addresses are the socket's own (`saddr`/`sport`
    /// local, `daddr`/`dport` the server).
    pub const CONNECT: u8 = 1;
    /// A socket started listening on a server port; the process is the one that called
    /// `listen()`.
    pub const LISTEN: u8 = 2;
    /// A listening socket on a server port was closed (`sock` says which).
    pub const UNLISTEN: u8 = 3;
}

/// Length of the kernel's task command name (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// A socket event with the process behind it (ring-buffer record with `hook ==
/// hook::SOCK_STATE`). Same size as [`RecordHeader`] and the same first 54 bytes.
///
/// Addresses in network byte order (IPv4 in the first 4 bytes), ports in host byte order.
/// Process ids are the kernel's (the initial PID namespace: the node's, as `hostPID` shows
/// them).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockRecord {
    /// `bpf_ktime_get_ns()` of the `connect()` / `listen()` / close.
    pub ts_ns: u64,
    /// cgroup v2 id of the task that called `connect()` / `listen()` (0 for `UNLISTEN`).
    pub cgroup_id: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// [`AF_INET`] or [`AF_INET6`] (the socket's: an IPv4 peer of an IPv6 socket is
    /// IPv4-mapped).
    pub family: u8,
    /// Always [`hook::SOCK_STATE`].
    pub hook: u8,
    /// One of [`sock_event`].
    pub event: u8,
    pub _pad: u8,
    /// Process (thread group) id and thread id of the task.
    pub tgid: u32,
    pub pid: u32,
    /// Kernel address of the socket: an opaque id pairing `LISTEN` with `UNLISTEN`.
    pub sock: u64,
    /// The task's command name, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// Size of [`SockRecord`] on the wire.
pub const SOCK_RECORD_SIZE: usize = 88;
const _: () = assert!(core::mem::size_of::<SockRecord>() == SOCK_RECORD_SIZE);
const _: () = assert!(core::mem::offset_of!(SockRecord, hook) == core::mem::offset_of!(RecordHeader, hook));
const _: () = assert!(core::mem::offset_of!(SockRecord, family) == core::mem::offset_of!(RecordHeader, family));
const _: () = assert!(core::mem::offset_of!(SockRecord, sport) == core::mem::offset_of!(RecordHeader, sport));
const _: () = assert!(core::mem::offset_of!(SockRecord, tgid) == 56);
const _: () = assert!(core::mem::offset_of!(SockRecord, comm) == 72);

impl SockRecord {
    /// Reads a socket record from a ring-buffer entry (any alignment); `None` if shorter.
    pub fn read_from(buf: &[u8]) -> Option<SockRecord> {
        if buf.len() < SOCK_RECORD_SIZE {
            return None;
        }
        // SAFETY: length checked; SockRecord is plain old data valid for any bit pattern.
        Some(unsafe { core::ptr::read_unaligned(buf.as_ptr().cast::<SockRecord>()) })
    }
}

/// Most body skips the kernel keeps at once (LRU: the least recently used goes first, and its
/// bytes are then simply copied).
pub const MAX_SKIPS: u32 = 4096;
/// Longest range one [`SkipRange`] covers: ranges are compared modulo 2^32, so one must stay
/// well under 2^31 (user space's `tracer_core::pipeline::MAX_SKIP_BYTES`, the same).
pub const MAX_SKIP_BYTES: u32 = 3 << 29;

/// Key of [`map::SKIP`]: one direction of a flow, as its packets carry it (`saddr`/`sport` the
/// sender). Addresses as in [`RecordHeader`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SkipKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<SkipKey>() == 40);

/// Value of [`map::SKIP`]: packets whose whole payload lies in `[from, to)` (TCP sequence
/// numbers, wrapping) are reported without their bytes. A body longer than [`MAX_SKIP_BYTES`]
/// has `more` bytes after `to`: the first packet at or past `to` moves the range on, `from`
/// to `to` and `to` up to [`MAX_SKIP_BYTES`] further.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkipRange {
    pub from: u32,
    pub to: u32,
    pub more: u64,
}
const _: () = assert!(core::mem::size_of::<SkipRange>() == 16);

/// What `connect()` left for the ESTABLISHED transition (value of [`map::CONNECTING`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connecting {
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub tgid: u32,
    pub pid: u32,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<Connecting>() == 40);

/// Field offsets of the `sock/inet_sock_set_state` tracepoint record the kernel program reads:
/// the layout with a 16-bit `protocol` (older kernels had 8 bits, which shifts the addresses).
/// The loader checks the kernel's `format` file against them and does not attach on a
/// mismatch.
pub mod sock_state_tp {
    pub const SKADDR: usize = 8;
    pub const OLDSTATE: usize = 16;
    pub const NEWSTATE: usize = 20;
    pub const SPORT: usize = 24;
    pub const DPORT: usize = 26;
    pub const FAMILY: usize = 28;
    pub const PROTOCOL: usize = 30;
    pub const SADDR: usize = 32;
    pub const DADDR: usize = 36;
    pub const SADDR_V6: usize = 40;
    pub const DADDR_V6: usize = 56;
    /// `(field name, offset, size)` as the `format` file lists them.
    pub const FIELDS: [(&str, usize, usize); 11] = [
        ("skaddr", SKADDR, 8),
        ("oldstate", OLDSTATE, 4),
        ("newstate", NEWSTATE, 4),
        ("sport", SPORT, 2),
        ("dport", DPORT, 2),
        ("family", FAMILY, 2),
        ("protocol", PROTOCOL, 2),
        ("saddr", SADDR, 4),
        ("daddr", DADDR, 4),
        ("saddr_v6", SADDR_V6, 16),
        ("daddr_v6", DADDR_V6, 16),
    ];
}

/// TCP states as the kernel numbers them (`include/net/tcp_states.h`).
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
    pub const FIN_WAIT1: i32 = 4;
    pub const FIN_WAIT2: i32 = 5;
    pub const TIME_WAIT: i32 = 6;
    pub const CLOSE: i32 = 7;
    pub const CLOSE_WAIT: i32 = 8;
    pub const LAST_ACK: i32 = 9;
    pub const LISTEN: i32 = 10;
    pub const CLOSING: i32 = 11;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all are `#[repr(C)]` plain old data without padding-sensitive invariants.
    unsafe impl aya::Pod for super::RecordHeader {}
    unsafe impl aya::Pod for super::Scratch {}
    unsafe impl aya::Pod for super::SockRecord {}
    unsafe impl aya::Pod for super::Connecting {}
    unsafe impl aya::Pod for super::SkipKey {}
    unsafe impl aya::Pod for super::SkipRange {}
}
