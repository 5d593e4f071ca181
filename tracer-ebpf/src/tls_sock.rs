//! Which socket a TLS session runs on, and the session's events.
//!
//! A descriptor becomes a socket by walking `current->files->fdt->fd[fd]->private_data->sk` at
//! offsets the daemon read from the kernel's BTF (`OT_KOFFSETS`); a socket becomes a 4-tuple
//! from its `sock_common`. Descriptors come from `SSL_set_fd`, from Go's `*tls.Conn`, from the
//! read and write system calls made inside an OpenSSL call (socket BIOs), and from the first
//! write system call after an `SSL_write` that made none (memory BIOs: the process sends the
//! encrypted bytes itself, right after). The system-call tracepoints cost every read and write
//! on the host one or two map lookups by thread.

use aya_ebpf::{
    Global,
    helpers::generated::{bpf_get_current_cgroup_id, bpf_get_current_task},
    helpers::{bpf_get_current_comm, bpf_probe_read_kernel, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use tracer_common::{
    AF_INET, AF_INET6, COMM_LEN, counter, hook, tcp_state,
    tls::{
        EventRecord, KernelOffsets, MAX_SESSIONS, SYSCALL_ARG0, Session, SessionKey, closer, config_flags, event,
        go_offsets, lib, pid_verdict, verdict,
    },
};

use crate::base::{EVENTS, add_counter, wake};
use crate::tls_state::{ACTIVE, OT_TLS_FLAGS, PENDING, PIDS, SESSIONS, key, now, pid_tgid, session};

/// The sessions' sockets: a socket's close ends its session.
#[map(name = "OT_TLS_SOCKS")]
static SOCKS: LruHashMap<u64, SessionKey> = LruHashMap::with_max_entries(MAX_SESSIONS, 0);

/// Kernel structure offsets (all zero: no descriptor is ever resolved).
#[unsafe(no_mangle)]
static OT_KOFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::ZERO);

const IPPROTO_TCP: u16 = 6;

#[inline(always)]
fn kread<T>(addr: u64) -> Option<T> {
    // SAFETY: a checked read of kernel memory; a bad address fails the helper.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

#[inline(always)]
fn uread<T>(addr: u64) -> Option<T> {
    // SAFETY: a checked read of the process's memory.
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// The TCP socket behind descriptor `fd` of the current process.
#[inline(always)]
fn sock_of_fd(fd: i32) -> Option<u64> {
    let o = OT_KOFFSETS.load();
    if o.task_files == 0 || fd < 0 {
        return None;
    }
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = kread(task + u64::from(o.task_files))?;
    let fdt: u64 = kread(files + u64::from(o.files_fdt))?;
    let max: u32 = kread(fdt + u64::from(o.fdt_max_fds))?;
    if fd as u32 >= max {
        return None;
    }
    let array: u64 = kread(fdt + u64::from(o.fdt_fd))?;
    let file: u64 = kread(array + (fd as u64) * 8)?;
    if file == 0 {
        return None;
    }
    if o.socket_file_ops != 0 && kread::<u64>(file + u64::from(o.file_f_op))? != o.socket_file_ops {
        return None;
    }
    let socket: u64 = kread(file + u64::from(o.file_private_data))?;
    let sk: u64 = kread(socket + u64::from(o.socket_sk))?;
    let family: u16 = kread(sk + u64::from(o.skc_family))?;
    if family != u16::from(AF_INET) && family != u16::from(AF_INET6) {
        return None;
    }
    if kread::<u16>(sk + u64::from(o.sk_protocol))? != IPPROTO_TCP {
        return None;
    }
    Some(sk)
}

/// Session `k` runs on descriptor `fd`, if that is a TCP socket (first answer wins).
#[inline(always)]
pub(crate) fn learn_sock(k: &SessionKey, fd: i32, l: u8) -> Option<()> {
    let s = session(k, l)?;
    // SAFETY: a map value pointer of this run.
    unsafe {
        if (*s).sock != 0 || (*s).verdict == verdict::IGNORED {
            return None;
        }
        let Some(sk) = sock_of_fd(fd) else {
            add_counter(counter::TLS_NOT_SOCKETS, 1);
            return None;
        };
        (*s).sock = sk;
        (*s).fd = fd;
        let _ = SOCKS.insert(&sk, k, 0);
        if (*s).verdict == verdict::TRACED && (*s).flow_sent == 0 {
            try_flow(k, s);
        }
    }
    Some(())
}

/// Go: the descriptor behind `c` (`*tls.Conn` over a `*net.TCPConn`), when not known yet.
#[inline(always)]
pub(crate) fn go_sock(k: &SessionKey, c: u64) -> Option<()> {
    let s = session(k, lib::GO)?;
    // SAFETY: a map value pointer of this run.
    if unsafe { (*s).sock } != 0 {
        return None;
    }
    let data: u64 = uread(c + go_offsets::CONN_DATA)?;
    let netfd: u64 = uread(data + go_offsets::TCPCONN_FD)?;
    let sysfd: i64 = uread(netfd + go_offsets::NETFD_SYSFD)?;
    learn_sock(k, sysfd as i32, lib::GO)
}

#[inline(always)]
fn event_record(k: &SessionKey, s: &Session, ev: u8) -> EventRecord {
    let id = pid_tgid();
    EventRecord {
        ts_ns: now(),
        // SAFETY: helper without preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        hook: hook::TLS_EVENT,
        event: ev,
        lib: s.lib,
        tgid: k.tgid,
        tid: id as u32,
        conn: k.conn,
        end: s.end,
        fd: s.fd,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
        ..EventRecord::default()
    }
}

#[inline(always)]
fn emit(ev: &EventRecord) -> bool {
    let wake = wake();
    if EVENTS.output::<EventRecord>(ev, wake.flags).is_ok() {
        wake.written();
        true
    } else {
        add_counter(counter::TLS_EVENTS_LOST, 1);
        false
    }
}

/// Reports a traced session's socket once it is connected.
#[inline(always)]
pub(crate) fn try_flow(k: &SessionKey, s: *mut Session) -> Option<()> {
    let o = OT_KOFFSETS.load();
    // SAFETY: a map value pointer of this run.
    let sv = unsafe { *s };
    let sk = sv.sock;
    let mut ev = event_record(k, &sv, event::FLOW);
    let family: u16 = kread(sk + u64::from(o.skc_family))?;
    if family == u16::from(AF_INET) {
        ev.saddr[..4].copy_from_slice(&kread::<[u8; 4]>(sk + u64::from(o.skc_rcv_saddr))?);
        ev.daddr[..4].copy_from_slice(&kread::<[u8; 4]>(sk + u64::from(o.skc_daddr))?);
    } else {
        ev.saddr = kread(sk + u64::from(o.skc_v6_rcv_saddr))?;
        ev.daddr = kread(sk + u64::from(o.skc_v6_daddr))?;
    }
    ev.family = family as u8;
    ev.sport = kread(sk + u64::from(o.skc_num))?;
    ev.dport = u16::from_be(kread(sk + u64::from(o.skc_dport))?);
    if ev.dport == 0 {
        // Not connected yet: the next call tries again.
        return None;
    }
    if emit(&ev) {
        // SAFETY: as above.
        unsafe { (*s).flow_sent = 1 };
        add_counter(counter::TLS_FLOWS, 1);
    }
    Some(())
}

/// The session ends (`SSL_free`, `(*Conn).Close`, a descriptor given to a used object): the
/// process ended it.
#[inline(always)]
pub(crate) fn close_session(k: &SessionKey) -> Option<()> {
    end_session(k, closer::LOCAL)
}

#[inline(always)]
fn end_session(k: &SessionKey, by: u8) -> Option<()> {
    // SAFETY: copied out before the entry is removed.
    let s = unsafe { *SESSIONS.get(k)? };
    let _ = SESSIONS.remove(k);
    if s.sock != 0 {
        let _ = SOCKS.remove(&s.sock);
    }
    if s.verdict == verdict::TRACED && s.flow_sent == 1 {
        let mut ev = event_record(k, &s, event::CLOSE);
        ev.closer = by;
        emit(&ev);
    }
    Some(())
}

/// A TCP socket went to CLOSE (`sock/inet_sock_set_state`, from `old`): the session on it
/// ends. Who closed first: the FIN states say it; a reset or abort from ESTABLISHED is the
/// process's own when it runs in the process's context (its `close()`), the peer's otherwise
/// (an RST received, in softirq).
#[inline(always)]
pub(crate) fn socket_closed(sk: u64, old: i32) -> Option<()> {
    // SAFETY: copied out before the entry is removed.
    let k = unsafe { *SOCKS.get(&sk)? };
    let _ = SOCKS.remove(&sk);
    let by = match old {
        tcp_state::FIN_WAIT1 | tcp_state::FIN_WAIT2 | tcp_state::CLOSING | tcp_state::TIME_WAIT => closer::LOCAL,
        tcp_state::CLOSE_WAIT | tcp_state::LAST_ACK => closer::PEER,
        _ if (pid_tgid() >> 32) as u32 == k.tgid => closer::LOCAL,
        _ => closer::PEER,
    };
    end_session(&k, by)
}

#[tracepoint]
pub fn ot_tls_sys_read(ctx: TracePointContext) -> u32 {
    syscall_fd(&ctx, false);
    0
}

#[tracepoint]
pub fn ot_tls_sys_write(ctx: TracePointContext) -> u32 {
    syscall_fd(&ctx, true);
    0
}

#[inline(always)]
fn syscall_fd(ctx: &TracePointContext, write: bool) -> Option<()> {
    let id = pid_tgid();
    // SAFETY: a lookup by value, copied out.
    if let Some(a) = unsafe { ACTIVE.get(&id) } {
        let (conn, l) = (a.conn, a.lib);
        // SAFETY: the tracepoint's own record; the descriptor is its first argument.
        let fd = unsafe { ctx.read_at::<u64>(SYSCALL_ARG0) }.ok()? as i32;
        return learn_sock(&key((id >> 32) as u32, conn), fd, l);
    }
    if !write {
        return None;
    }
    // SAFETY: as above.
    let k = unsafe { *PENDING.get(&id)? };
    let _ = PENDING.remove(&id);
    // SAFETY: as above.
    let fd = unsafe { ctx.read_at::<u64>(SYSCALL_ARG0) }.ok()? as i32;
    learn_sock(&k, fd, 0)
}

#[tracepoint]
pub fn ot_tls_exec(_ctx: TracePointContext) -> u32 {
    let id = pid_tgid();
    if OT_TLS_FLAGS.load() & config_flags::PID_FILTER != 0 {
        // Not traced until the daemon has judged the new program (it sets the verdict, or
        // removes this entry when the default applies).
        let _ = PIDS.insert(&((id >> 32) as u32), &pid_verdict::PENDING, 0);
    }
    let ev = EventRecord {
        ts_ns: now(),
        hook: hook::TLS_EVENT,
        event: event::EXEC,
        tgid: (id >> 32) as u32,
        tid: id as u32,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
        ..EventRecord::default()
    };
    if emit(&ev) {
        add_counter(counter::TLS_EXECS, 1);
    }
    0
}
