//! The processes behind sockets on the server ports, from the `sock/inet_sock_set_state`
//! tracepoint (packets carry only the socket's cgroup; pids are known only in process context).
//!
//! - `CLOSE → SYN_SENT` runs inside `connect()`, in the caller's context, before the source
//!   port is chosen: the caller's pid, command and cgroup are stashed by socket address.
//! - `SYN_SENT → ESTABLISHED` (softirq, any task) has the full 4-tuple: the stash becomes a
//!   `CONNECT` record. `SYN_SENT → CLOSE` (a failed connect) drops the stash.
//! - `CLOSE → LISTEN` runs inside `listen()`: a `LISTEN` record with the caller.
//! - `LISTEN → CLOSE`: an `UNLISTEN` record (the socket address pairs it with its `LISTEN`).
//!
//! Only sockets whose destination (connect) or local (listen) port is a server port are
//! recorded. Record loss (ring full) is counted like packet loss. Any socket's close also ends
//! the TLS session on it, if any (`tls_sock.rs`).

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use tracer_common::{
    AF_INET, AF_INET6, COMM_LEN, Connecting, SockRecord, counter, hook, sock_event, sock_state_tp as tp, tcp_state,
};

use crate::base::{EVENTS, add_counter, is_server_port, wake};
use crate::tls_sock::socket_closed;

/// Sockets between connect() and ESTABLISHED; LRU so that transitions we never see (a socket
/// freed in SYN_SENT without a state change) cannot fill it.
#[map(name = "OT_CONNECTING")]
static CONNECTING: LruHashMap<u64, Connecting> = LruHashMap::with_max_entries(8192, 0);

const IPPROTO_TCP: u16 = 6;

#[inline(always)]
fn rd<T>(ctx: &TracePointContext, off: usize) -> Option<T> {
    // SAFETY: reads the tracepoint's own record at an offset the loader checked against the
    // kernel's format file.
    unsafe { ctx.read_at::<T>(off) }.ok()
}

#[inline(always)]
fn comm() -> [u8; COMM_LEN] {
    bpf_get_current_comm().unwrap_or([0; COMM_LEN])
}

#[tracepoint]
pub fn ot_sock_state(ctx: TracePointContext) -> u32 {
    sock_state(&ctx);
    0
}

#[inline(always)]
fn sock_state(ctx: &TracePointContext) -> Option<()> {
    if rd::<u16>(ctx, tp::PROTOCOL)? != IPPROTO_TCP {
        return None;
    }
    let old = rd::<i32>(ctx, tp::OLDSTATE)?;
    let new = rd::<i32>(ctx, tp::NEWSTATE)?;
    let sk = rd::<u64>(ctx, tp::SKADDR)?;
    if new == tcp_state::CLOSE {
        // Any port: a TLS session's socket (its connection's end ends the session).
        socket_closed(sk, old);
    }
    match (old, new) {
        (tcp_state::CLOSE, tcp_state::SYN_SENT) => {
            if !is_server_port(rd::<u16>(ctx, tp::DPORT)?) {
                return None;
            }
            let pid_tgid = bpf_get_current_pid_tgid();
            let c = Connecting {
                // SAFETY: helpers without preconditions.
                ts_ns: unsafe { bpf_ktime_get_ns() },
                cgroup_id: unsafe { bpf_get_current_cgroup_id() },
                tgid: (pid_tgid >> 32) as u32,
                pid: pid_tgid as u32,
                comm: comm(),
            };
            let _ = CONNECTING.insert(&sk, &c, 0);
        }
        (tcp_state::SYN_SENT, tcp_state::ESTABLISHED) => {
            // SAFETY: the value is copied out before the entry is removed.
            let c = unsafe { *CONNECTING.get(&sk)? };
            let _ = CONNECTING.remove(&sk);
            let mut r = record(ctx, sk, sock_event::CONNECT)?;
            r.ts_ns = c.ts_ns;
            r.cgroup_id = c.cgroup_id;
            r.tgid = c.tgid;
            r.pid = c.pid;
            r.comm = c.comm;
            emit(&r);
        }
        (tcp_state::SYN_SENT, tcp_state::CLOSE) => {
            let _ = CONNECTING.remove(&sk);
        }
        (tcp_state::CLOSE, tcp_state::LISTEN) | (tcp_state::LISTEN, tcp_state::CLOSE) => {
            if !is_server_port(rd::<u16>(ctx, tp::SPORT)?) {
                return None;
            }
            let listen = new == tcp_state::LISTEN;
            let mut r = record(ctx, sk, if listen { sock_event::LISTEN } else { sock_event::UNLISTEN })?;
            if listen {
                let pid_tgid = bpf_get_current_pid_tgid();
                // SAFETY: helpers without preconditions.
                r.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
                r.tgid = (pid_tgid >> 32) as u32;
                r.pid = pid_tgid as u32;
                r.comm = comm();
            }
            emit(&r);
        }
        _ => {}
    }
    Some(())
}

/// A record with the socket's addresses and ports.
#[inline(always)]
fn record(ctx: &TracePointContext, sk: u64, event: u8) -> Option<SockRecord> {
    let family = rd::<u16>(ctx, tp::FAMILY)? as u8;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if family == AF_INET6 {
        saddr = rd::<[u8; 16]>(ctx, tp::SADDR_V6)?;
        daddr = rd::<[u8; 16]>(ctx, tp::DADDR_V6)?;
    } else if family == AF_INET {
        saddr[..4].copy_from_slice(&rd::<[u8; 4]>(ctx, tp::SADDR)?);
        daddr[..4].copy_from_slice(&rd::<[u8; 4]>(ctx, tp::DADDR)?);
    } else {
        return None;
    }
    Some(SockRecord {
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id: 0,
        saddr,
        daddr,
        sport: rd::<u16>(ctx, tp::SPORT)?,
        dport: rd::<u16>(ctx, tp::DPORT)?,
        family,
        hook: hook::SOCK_STATE,
        event,
        _pad: 0,
        tgid: 0,
        pid: 0,
        sock: sk,
        comm: [0; COMM_LEN],
    })
}

#[inline(always)]
fn emit(r: &SockRecord) {
    let wake = wake();
    if EVENTS.output::<SockRecord>(r, wake.flags).is_ok() {
        wake.written();
        add_counter(counter::SOCK_RECORDS, 1);
    } else {
        add_counter(counter::SOCK_RECORDS_LOST, 1);
    }
}
