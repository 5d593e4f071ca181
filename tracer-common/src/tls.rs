//! TLS plaintext capture: what the uprobes on TLS libraries (OpenSSL/BoringSSL `SSL_read`,
//! `SSL_write` and their `_ex` forms; Go `crypto/tls.(*Conn).Read`/`Write`) share with the
//! daemon. The records go into the same ring buffer as the packets ([`crate::map::EVENTS`]),
//! told apart by their `hook` byte at offset 53 like every other record.
//!
//! # Sessions
//!
//! The kernel follows each TLS connection as a *session*, keyed by the process and the
//! library's connection object (`SSL *`, `*tls.Conn`): [`SessionKey`] → [`Session`]. A session
//! is first undecided; the host decides whether it is traced:
//! - the client's SNI (`SSL_ctrl(SSL_CTRL_SET_TLSEXT_HOSTNAME)`), when it sends one, or else
//! - the `Host` header of the first HTTP request the session carries (written by a client,
//!   read by a server), parsed in the kernel.
//!
//! A host in [`map::HOSTS`] makes the session *traced*; any other host, or a first request
//! that is not HTTP/1.x, makes it *ignored*: from then on its calls cost one map lookup and
//! none of its bytes are copied (counted in [`counter::TLS_BYTES_IGNORED`]). Bytes before the
//! first request (a connection opened before the tracer started, mid-response) are not copied
//! either.
//!
//! # Records
//!
//! - [`TlsDataHeader`] + `data_len` bytes ([`hook::TLS_DATA`](crate::hook::TLS_DATA)): the
//!   plaintext of one read or write of a traced session, at stream position `pos` of its
//!   direction (positions count every byte of the direction since the session was decided,
//!   copied or not, so a lost record is a gap of exact length). Sized to the data: one of
//!   [`DATA_CLASSES`] bytes follow the header, of which `data_len` are meaningful. A call
//!   larger than [`CHUNK_SIZE`](crate::CHUNK_SIZE) is split like a large skb; beyond
//!   [`MAX_CHUNKS_PER_CALL`] chunks the rest is `missing`.
//! - [`EventRecord`] ([`hook::TLS_EVENT`](crate::hook::TLS_EVENT)): a traced session's
//!   connection learnt ([`event::FLOW`]: the socket's 4-tuple and which end the process is),
//!   its end ([`event::CLOSE`]), or a new program ([`event::EXEC`], for the daemon to look for
//!   TLS libraries in it).
//!
//! # Which socket
//!
//! The 4-tuple comes from the kernel's socket behind the session's file descriptor
//! (`current->files->fdt->fd[fd]->private_data->sk`, at offsets the daemon reads from the
//! kernel's BTF: [`KernelOffsets`]). The descriptor comes from `SSL_set_fd` (and `_rfd`,
//! `_wfd`), from a read or write system call made inside `SSL_read`/`SSL_write` (a socket
//! BIO), from the first write system call the same thread makes after an `SSL_write` that
//! made none (memory BIOs: Node.js, Python's `SSLObject`), or from Go's `*tls.Conn` →
//! `net.Conn` → `*net.TCPConn` → `*netFD` → `Sysfd` ([`go_offsets`]).

/// Records of sessions in [`map::SESSIONS`], keyed by process and connection object.
pub const MAX_SESSIONS: u32 = 65_536;
/// Largest plaintext one call copies in records: [`MAX_CHUNKS_PER_CALL`] chunks.
pub const MAX_CHUNKS_PER_CALL: u32 = 32;
/// Bytes of a request's head the kernel looks at for its `Host` header.
pub const HEAD_SCAN: usize = 1024;
/// Longest host name (bytes, NUL-padded keys of [`map::HOSTS`]); longer names never match.
pub const HOST_LEN: usize = 64;
/// Most hosts the kernel's host set holds.
pub const MAX_HOSTS: u32 = 256;
/// Data sizes a record may carry after its header: the kernel reserves the smallest that fits
/// (ring-buffer reservations must be constant), the reader uses `data_len`.
pub const DATA_CLASSES: [usize; 4] = [256, 1024, 4096, 16384];

/// Which library a session's calls come from: [`TlsDataHeader::lib`], [`EventRecord::lib`]
/// (the uprobe's attach cookie for OpenSSL and BoringSSL).
pub mod lib {
    pub const OPENSSL: u8 = 1;
    pub const BORINGSSL: u8 = 2;
    pub const GO: u8 = 3;

    pub const fn name(lib: u8) -> &'static str {
        match lib {
            OPENSSL => "openssl",
            BORINGSSL => "boringssl",
            GO => "go",
            _ => "unknown",
        }
    }
}

/// [`TlsDataHeader::dir`]: what the probed process did with the bytes.
pub mod dir {
    /// It wrote them (`SSL_write`, `(*Conn).Write`).
    pub const WRITE: u8 = 0;
    /// It read them (`SSL_read`, `(*Conn).Read`).
    pub const READ: u8 = 1;
}

/// [`Session::end`], [`EventRecord::end`]: which end of the connection the process is.
pub mod end {
    pub const UNKNOWN: u8 = 0;
    /// It sent the first request (or an SNI).
    pub const CLIENT: u8 = 1;
    /// It received the first request.
    pub const SERVER: u8 = 2;
}

/// [`Session::verdict`].
pub mod verdict {
    pub const UNDECIDED: u8 = 0;
    pub const TRACED: u8 = 1;
    pub const IGNORED: u8 = 2;
}

/// [`EventRecord::closer`]: which end of a closed session's connection closed first.
pub mod closer {
    pub const UNKNOWN: u8 = 0;
    /// The probed process (its `SSL_free`, `Close`, or its socket's close or reset).
    pub const LOCAL: u8 = 1;
    /// Its peer (a FIN or RST received first).
    pub const PEER: u8 = 2;
}

/// [`EventRecord::event`].
pub mod event {
    /// A traced session's socket is known: addresses, ports, the process and its end.
    pub const FLOW: u8 = 1;
    /// A traced session ended (`SSL_free`, `(*Conn).Close`, or its TCP socket closed).
    pub const CLOSE: u8 = 2;
    /// A program was executed (`sched/sched_process_exec`): `tgid` and `comm` only.
    pub const EXEC: u8 = 3;
}

/// Bits of [`TlsDataHeader::flags`].
pub mod data_flags {
    /// The last record of its call.
    pub const LAST: u8 = 0x01;
    /// `missing` bytes after this record's data were not copied.
    pub const TRUNCATED: u8 = 0x02;
    /// Reading the data from the process failed: `data_len` is 0, the bytes are `missing`.
    pub const READ_FAILED: u8 = 0x04;
}

/// Bits of the load-time global [`global::FLAGS`].
pub mod config_flags {
    /// Every host is traced (`--tls-host '*'`): any HTTP/1.x request decides for tracing.
    pub const ANY_HOST: u32 = 0x01;
    /// Processes are filtered by [`super::map::PIDS`] (include/exclude by executable).
    pub const PID_FILTER: u32 = 0x02;
    /// With [`PID_FILTER`]: a process not in the map is not traced (an include list was given).
    pub const DEFAULT_DENY: u32 = 0x04;
}

/// [`map::PIDS`] values.
pub mod pid_verdict {
    pub const ALLOW: u8 = 1;
    pub const DENY: u8 = 2;
    /// Just executed a program the daemon has not judged yet: not traced until it has (an
    /// excluded program is never traced, not even for its first calls).
    pub const PENDING: u8 = 3;
}

/// Map names.
pub mod map {
    /// `LRU_HASH<SessionKey, Session>`.
    pub const SESSIONS: &str = "OT_TLS_SESSIONS";
    /// `LRU_HASH<u64 pid_tgid, Active>`: an OpenSSL call in progress on a thread.
    pub const ACTIVE: &str = "OT_TLS_ACTIVE";
    /// `LRU_HASH<u64 pid_tgid, SessionKey>`: a thread's session waiting for its descriptor
    /// from the thread's next write system call (memory BIOs).
    pub const PENDING: &str = "OT_TLS_PENDING";
    /// `LRU_HASH<SessionKey { tgid, goroutine }, Active>`: a Go `Read` in progress.
    pub const GO_READS: &str = "OT_TLS_GO_READS";
    /// `HASH<[u8; HOST_LEN], u8>`: the hosts whose sessions are traced (lower case, no port).
    pub const HOSTS: &str = "OT_TLS_HOSTS";
    /// `LRU_HASH<u32 tgid, u8>` of [`super::pid_verdict`]: include/exclude by executable.
    pub const PIDS: &str = "OT_TLS_PIDS";
    /// `PERCPU_ARRAY<HostScratch>`, one entry: the head and host being looked at.
    pub const SCRATCH: &str = "OT_TLS_SCRATCH";
    /// `LRU_HASH<u64 sock, SessionKey>`: the sessions' sockets, so that a socket's close (the
    /// `sock/inet_sock_set_state` tracepoint) ends its session.
    pub const SOCKS: &str = "OT_TLS_SOCKS";
}

/// Load-time globals.
pub mod global {
    /// `u32`: [`super::config_flags`].
    pub const FLAGS: &str = "OT_TLS_FLAGS";
    /// [`super::KernelOffsets`].
    pub const OFFSETS: &str = "OT_KOFFSETS";
}

/// Program names in the object.
pub mod program {
    pub const SSL_WRITE: &str = "ot_tls_ssl_write";
    pub const SSL_WRITE_EX: &str = "ot_tls_ssl_write_ex";
    pub const SSL_READ: &str = "ot_tls_ssl_read";
    pub const SSL_READ_EX: &str = "ot_tls_ssl_read_ex";
    /// uretprobe shared by the four above.
    pub const SSL_RETURN: &str = "ot_tls_ssl_ret";
    /// `SSL_set_fd`, `SSL_set_rfd`, `SSL_set_wfd`.
    pub const SSL_SET_FD: &str = "ot_tls_ssl_set_fd";
    pub const SSL_CTRL: &str = "ot_tls_ssl_ctrl";
    pub const SSL_FREE: &str = "ot_tls_ssl_free";
    pub const GO_WRITE: &str = "ot_tls_go_write";
    pub const GO_READ: &str = "ot_tls_go_read";
    /// Attached at each return instruction of `(*Conn).Read`.
    pub const GO_READ_RET: &str = "ot_tls_go_read_ret";
    pub const GO_CLOSE: &str = "ot_tls_go_close";
    /// `syscalls/sys_enter_{read,readv,recvfrom,recvmsg}`.
    pub const SYS_READ: &str = "ot_tls_sys_read";
    /// `syscalls/sys_enter_{write,writev,sendto,sendmsg}`.
    pub const SYS_WRITE: &str = "ot_tls_sys_write";
    /// `sched/sched_process_exec`.
    pub const EXEC: &str = "ot_tls_exec";
}

/// The system calls whose descriptor argument names a session's socket.
pub const READ_SYSCALLS: [&str; 4] = ["sys_enter_read", "sys_enter_readv", "sys_enter_recvfrom", "sys_enter_recvmsg"];
pub const WRITE_SYSCALLS: [&str; 4] = ["sys_enter_write", "sys_enter_writev", "sys_enter_sendto", "sys_enter_sendmsg"];
/// Offset of the first argument (the descriptor) in a `syscalls/sys_enter_*` record.
pub const SYSCALL_ARG0: usize = 16;

/// `SSL_CTRL_SET_TLSEXT_HOSTNAME`: `SSL_set_tlsext_host_name` is a macro over `SSL_ctrl`.
pub const SSL_CTRL_SET_TLSEXT_HOSTNAME: i32 = 55;

/// Field offsets in Go's structures, on 64-bit platforms, stable since Go 1.9: `*tls.Conn`
/// starts with `conn net.Conn` (an interface: type word, data word); `*net.TCPConn` is a
/// `conn{fd *netFD}`; `netFD` starts with `pfd poll.FD`, whose `Sysfd int` follows
/// `fdmu fdMutex` (16 bytes).
pub mod go_offsets {
    pub const CONN_DATA: u64 = 8;
    pub const TCPCONN_FD: u64 = 0;
    pub const NETFD_SYSFD: u64 = 16;
}

/// What identifies a session (and, with a goroutine for `conn`, a Go read in progress).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub tgid: u32,
    pub _pad: u32,
    /// `SSL *` or `*tls.Conn` (or the goroutine, in [`map::GO_READS`]).
    pub conn: u64,
}

/// A session as the kernel follows it ([`map::SESSIONS`] value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// Bytes of each direction ([`dir`]) since the session was decided.
    pub pos: [u64; 2],
    /// Kernel address of the socket, 0 while unknown.
    pub sock: u64,
    pub fd: i32,
    /// [`verdict`].
    pub verdict: u8,
    /// [`end`].
    pub end: u8,
    /// [`lib`].
    pub lib: u8,
    /// The [`event::FLOW`] record was written.
    pub flow_sent: u8,
}

/// A call in progress ([`map::ACTIVE`], [`map::GO_READS`] values).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Active {
    pub conn: u64,
    pub buf: u64,
    /// `size_t *` of the `_ex` forms (bytes written or read), 0 otherwise.
    pub len_ptr: u64,
    /// `bpf_ktime_get_ns()` at entry.
    pub ts_ns: u64,
    pub dir: u8,
    pub lib: u8,
    pub ex: u8,
    pub _pad: [u8; 5],
}

/// Header of a [`hook::TLS_DATA`](crate::hook::TLS_DATA) record; `data_len` bytes follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsDataHeader {
    /// Writes: entry of the call (when the process handed the bytes over); reads: its return
    /// (when the process had them). `bpf_ktime_get_ns()`.
    pub ts_ns: u64,
    pub conn: u64,
    /// Stream position of the first data byte, in its direction.
    pub pos: u64,
    /// Bytes of the other direction so far (what the process had sent or received).
    pub peer_pos: u64,
    pub tgid: u32,
    pub tid: u32,
    pub data_len: u32,
    /// Bytes right after the data that no record carries.
    pub missing: u32,
    /// [`dir`].
    pub dir: u8,
    /// [`lib`].
    pub lib: u8,
    /// [`data_flags`].
    pub flags: u8,
    pub _pad: [u8; 2],
    /// Always [`hook::TLS_DATA`](crate::hook::TLS_DATA) (offset 53, as in every record).
    pub hook: u8,
    pub _pad2: [u8; 2],
}

pub const DATA_HEADER_SIZE: usize = 56;
const _: () = assert!(core::mem::size_of::<TlsDataHeader>() == DATA_HEADER_SIZE);
const _: () = assert!(core::mem::offset_of!(TlsDataHeader, hook) == 53);

impl TlsDataHeader {
    /// Reads a header from the start of a ring-buffer entry (any alignment).
    pub fn read_from(buf: &[u8]) -> Option<TlsDataHeader> {
        if buf.len() < DATA_HEADER_SIZE {
            return None;
        }
        // SAFETY: length checked; plain old data valid for any bit pattern.
        Some(unsafe { core::ptr::read_unaligned(buf.as_ptr().cast::<TlsDataHeader>()) })
    }
}

/// A [`hook::TLS_EVENT`](crate::hook::TLS_EVENT) record. The first 54 bytes are laid out as in
/// [`crate::RecordHeader`]. Addresses in network byte order (IPv4 in the first 4 bytes), ports
/// in host byte order; `saddr`/`sport` are the process's own end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventRecord {
    pub ts_ns: u64,
    /// cgroup v2 id of the process.
    pub cgroup_id: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u8,
    /// Always [`hook::TLS_EVENT`](crate::hook::TLS_EVENT).
    pub hook: u8,
    /// [`event`].
    pub event: u8,
    /// [`lib`].
    pub lib: u8,
    pub tgid: u32,
    pub tid: u32,
    pub conn: u64,
    /// [`end`].
    pub end: u8,
    /// [`closer`] ([`event::CLOSE`]).
    pub closer: u8,
    pub _pad: [u8; 2],
    pub fd: i32,
    pub comm: [u8; crate::COMM_LEN],
}

pub const EVENT_RECORD_SIZE: usize = 96;
const _: () = assert!(core::mem::size_of::<EventRecord>() == EVENT_RECORD_SIZE);
const _: () = assert!(core::mem::offset_of!(EventRecord, hook) == 53);
const _: () = assert!(core::mem::offset_of!(EventRecord, family) == 52);
const _: () = assert!(core::mem::offset_of!(EventRecord, conn) == 64);

impl EventRecord {
    /// Reads an event record from a ring-buffer entry (any alignment).
    pub fn read_from(buf: &[u8]) -> Option<EventRecord> {
        if buf.len() < EVENT_RECORD_SIZE {
            return None;
        }
        // SAFETY: length checked; plain old data valid for any bit pattern.
        Some(unsafe { core::ptr::read_unaligned(buf.as_ptr().cast::<EventRecord>()) })
    }
}

/// Per-CPU space for looking at a request's head and a host name ([`map::SCRATCH`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HostScratch {
    pub head: [u8; HEAD_SCAN],
    pub host: [u8; HOST_LEN],
}

/// Offsets into the kernel's structures the programs walk from a descriptor to its socket,
/// read by the daemon from the running kernel's BTF. All zero: the walk is off (no 4-tuples).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_f_op: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    pub skc_family: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub sk_protocol: u32,
    pub _pad: u32,
    /// Address of `socket_file_ops` (from `/proc/kallsyms`): a descriptor whose file has
    /// other operations is not a socket. 0: not checked (the family and protocol still are).
    pub socket_file_ops: u64,
}

impl KernelOffsets {
    /// Nothing known: the kernel programs resolve no descriptor.
    pub const ZERO: KernelOffsets = KernelOffsets {
        task_files: 0,
        files_fdt: 0,
        fdt_max_fds: 0,
        fdt_fd: 0,
        file_f_op: 0,
        file_private_data: 0,
        socket_sk: 0,
        skc_family: 0,
        skc_daddr: 0,
        skc_rcv_saddr: 0,
        skc_dport: 0,
        skc_num: 0,
        skc_v6_daddr: 0,
        skc_v6_rcv_saddr: 0,
        sk_protocol: 0,
        _pad: 0,
        socket_file_ops: 0,
    };
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all are `#[repr(C)]` plain old data.
    unsafe impl aya::Pod for super::SessionKey {}
    unsafe impl aya::Pod for super::Session {}
    unsafe impl aya::Pod for super::Active {}
    unsafe impl aya::Pod for super::KernelOffsets {}
}
