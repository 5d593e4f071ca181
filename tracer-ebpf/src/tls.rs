//! TLS plaintext: uprobes on the TLS libraries' read and write functions turn each call of a
//! traced session into records of its plaintext (see `tracer_common::tls` for the records and
//! the session rules).
//!
//! - OpenSSL / BoringSSL: `SSL_write`, `SSL_read` and their `_ex` forms at entry (the buffer and
//!   the session), one uretprobe for all four (how many bytes). `SSL_set_fd` (and `_rfd`,
//!   `_wfd`) names the socket, `SSL_ctrl` carries the SNI, `SSL_free` ends the session.
//! - Go `crypto/tls`: `(*Conn).Write` at entry (arguments in registers, Go's internal ABI: the
//!   receiver in RAX, the slice in RBX/RCX); `(*Conn).Read` at entry and at each of its return
//!   instructions (no uretprobes on Go stacks: a goroutine's stack moves when it grows, and the
//!   return address a uretprobe plants would move with it), matched by goroutine (R14);
//!   `(*Conn).Close` ends the session.
//!
//! Writes are stamped at entry (when the process handed the bytes over), reads at return (when
//! it had them). Records are reserved in the ring buffer at one of a few constant sizes and the
//! process's bytes read straight into them: no per-CPU scratch is shared between tasks.

use aya_ebpf::{
    EbpfContext,
    helpers::generated::{bpf_get_attach_cookie, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::{
    CHUNK_SIZE, counter, hook,
    tls::{
        Active, DATA_HEADER_SIZE, MAX_CHUNKS_PER_CALL, SSL_CTRL_SET_TLSEXT_HOSTNAME, Session, SessionKey,
        TlsDataHeader, config_flags, data_flags, dir, end, lib, pid_verdict, verdict,
    },
};

use crate::base::{EVENTS, add_counter, wake_reserved};
use crate::tls_host::{Decision, decide_head, decide_sni};
use crate::tls_sock::{close_session, go_sock, learn_sock, try_flow};
use crate::tls_state::{ACTIVE, OT_TLS_FLAGS, PENDING, PIDS, SESSIONS, key, now, opaque, pid_tgid, session};

#[map(name = "OT_TLS_GO_READS")]
static GO_READS: LruHashMap<SessionKey, Active> = LruHashMap::with_max_entries(16_384, 0);

/// Include/exclude by executable (the daemon keeps the map): may this process be traced?
#[inline(always)]
fn pid_allowed(tgid: u32) -> bool {
    let flags = OT_TLS_FLAGS.load();
    if flags & config_flags::PID_FILTER == 0 {
        return true;
    }
    // SAFETY: a lookup by value.
    let allowed = match unsafe { PIDS.get(&tgid) } {
        Some(v) => *v == pid_verdict::ALLOW,
        None => flags & config_flags::DEFAULT_DENY == 0,
    };
    if !allowed {
        add_counter(counter::TLS_PID_FILTERED, 1);
    }
    allowed
}

/// The library an OpenSSL-style probe was attached for (its cookie), OpenSSL by default.
#[inline(always)]
fn cookie_lib<C: EbpfContext>(ctx: &C) -> u8 {
    // SAFETY: the context is the probe's own.
    let c = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u8;
    if c == 0 { lib::OPENSSL } else { c }
}

// ---------------------------------------------------------------------------------------------
// OpenSSL / BoringSSL

#[inline(always)]
fn ssl_entry(ctx: &ProbeContext, d: u8, ex: bool) -> Option<()> {
    let id = pid_tgid();
    if !pid_allowed((id >> 32) as u32) {
        return None;
    }
    let a = Active {
        conn: ctx.arg::<u64>(0)?,
        buf: ctx.arg::<u64>(1)?,
        len_ptr: if ex { ctx.arg::<u64>(3)? } else { 0 },
        ts_ns: now(),
        dir: d,
        lib: cookie_lib(ctx),
        ex: ex as u8,
        _pad: [0; 5],
    };
    let _ = ACTIVE.insert(&id, &a, 0);
    // A new call: a write system call after an older one no longer names its socket.
    let _ = PENDING.remove(&id);
    Some(())
}

#[uprobe]
pub fn ot_tls_ssl_write(ctx: ProbeContext) -> u32 {
    ssl_entry(&ctx, dir::WRITE, false);
    0
}

#[uprobe]
pub fn ot_tls_ssl_write_ex(ctx: ProbeContext) -> u32 {
    ssl_entry(&ctx, dir::WRITE, true);
    0
}

#[uprobe]
pub fn ot_tls_ssl_read(ctx: ProbeContext) -> u32 {
    ssl_entry(&ctx, dir::READ, false);
    0
}

#[uprobe]
pub fn ot_tls_ssl_read_ex(ctx: ProbeContext) -> u32 {
    ssl_entry(&ctx, dir::READ, true);
    0
}

#[uretprobe]
pub fn ot_tls_ssl_ret(ctx: RetProbeContext) -> u32 {
    ssl_return(&ctx);
    0
}

#[inline(always)]
fn ssl_return(ctx: &RetProbeContext) -> Option<()> {
    let id = pid_tgid();
    // SAFETY: copied out before the entry is removed.
    let a = unsafe { *ACTIVE.get(&id)? };
    let _ = ACTIVE.remove(&id);
    let ret: i64 = ctx.ret::<i32>() as i64;
    let n = if a.ex == 1 {
        if ret != 1 {
            return None;
        }
        // SAFETY: the caller's size_t, written by the call that just returned.
        unsafe { aya_ebpf::helpers::bpf_probe_read_user(a.len_ptr as *const u64) }.ok()?
    } else {
        if ret <= 0 {
            return None;
        }
        ret as u64
    };
    let k = key((id >> 32) as u32, a.conn);
    let ts = if a.dir == dir::WRITE { a.ts_ns } else { now() };
    let s = plaintext(&k, a.dir, a.lib, ts, a.buf, n)?;
    // No system call inside the write named the socket (a memory BIO): the thread's next write
    // system call will.
    // SAFETY: a map value pointer of this run.
    if a.dir == dir::WRITE && unsafe { (*s).sock } == 0 {
        let _ = PENDING.insert(&id, &k, 0);
    }
    Some(())
}

#[uprobe]
pub fn ot_tls_ssl_set_fd(ctx: ProbeContext) -> u32 {
    let id = pid_tgid();
    let tgid = (id >> 32) as u32;
    if let (Some(ssl), Some(fd)) = (ctx.arg::<u64>(0), ctx.arg::<i32>(1))
        && pid_allowed(tgid)
    {
        let k = key(tgid, ssl);
        // A descriptor given to an SSL object starts a connection (an object may be reused).
        if let Some(s) = SESSIONS.get_ptr_mut(&k) {
            // SAFETY: a map value pointer of this run.
            if unsafe { (*s).sock } != 0 {
                close_session(&k);
            }
        }
        learn_sock(&k, fd, cookie_lib(&ctx));
    }
    0
}

#[uprobe]
pub fn ot_tls_ssl_ctrl(ctx: ProbeContext) -> u32 {
    sni(&ctx);
    0
}

#[inline(always)]
fn sni(ctx: &ProbeContext) -> Option<()> {
    if ctx.arg::<i32>(1)? != SSL_CTRL_SET_TLSEXT_HOSTNAME {
        return None;
    }
    let tgid = (pid_tgid() >> 32) as u32;
    if !pid_allowed(tgid) {
        return None;
    }
    let k = key(tgid, ctx.arg::<u64>(0)?);
    let s = session(&k, cookie_lib(ctx))?;
    // SAFETY: a map value pointer of this run.
    unsafe {
        if (*s).verdict != verdict::UNDECIDED {
            return None;
        }
        if decide_sni(ctx.arg::<u64>(3)?) {
            (*s).verdict = verdict::TRACED;
            (*s).end = end::CLIENT;
            add_counter(counter::TLS_SESSIONS_TRACED, 1);
        } else {
            (*s).verdict = verdict::IGNORED;
            add_counter(counter::TLS_SESSIONS_IGNORED, 1);
        }
    }
    Some(())
}

#[uprobe]
pub fn ot_tls_ssl_free(ctx: ProbeContext) -> u32 {
    if let Some(ssl) = ctx.arg::<u64>(0) {
        close_session(&key((pid_tgid() >> 32) as u32, ssl));
    }
    0
}

// ---------------------------------------------------------------------------------------------
// Go crypto/tls (amd64, internal ABI: arguments and results in RAX, RBX, RCX, ...; g in R14)

#[uprobe]
pub fn ot_tls_go_write(ctx: ProbeContext) -> u32 {
    go_write(&ctx);
    0
}

#[inline(always)]
fn go_write(ctx: &ProbeContext) -> Option<()> {
    let tgid = (pid_tgid() >> 32) as u32;
    if !pid_allowed(tgid) {
        return None;
    }
    // SAFETY: the probe's registers.
    let (c, buf, len) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx, (*ctx.regs).rcx) };
    let k = key(tgid, c);
    go_sock(&k, c);
    // At entry: Go's reader goroutine may see the answer before this call returns, and a
    // record written at return could then come after it.
    plaintext(&k, dir::WRITE, lib::GO, now(), buf, len)?;
    Some(())
}

#[uprobe]
pub fn ot_tls_go_read(ctx: ProbeContext) -> u32 {
    let tgid = (pid_tgid() >> 32) as u32;
    if pid_allowed(tgid) {
        // SAFETY: the probe's registers.
        let (c, buf, g) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx, (*ctx.regs).r14) };
        let a = Active { conn: c, buf, len_ptr: 0, ts_ns: now(), dir: dir::READ, lib: lib::GO, ex: 0, _pad: [0; 5] };
        let _ = GO_READS.insert(&key(tgid, g), &a, 0);
    }
    0
}

#[uprobe]
pub fn ot_tls_go_read_ret(ctx: ProbeContext) -> u32 {
    go_read_ret(&ctx);
    0
}

#[inline(always)]
fn go_read_ret(ctx: &ProbeContext) -> Option<()> {
    let tgid = (pid_tgid() >> 32) as u32;
    // SAFETY: the probe's registers.
    let (n, g) = unsafe { ((*ctx.regs).rax as i64, (*ctx.regs).r14) };
    let gk = key(tgid, g);
    // SAFETY: copied out before the entry is removed.
    let a = unsafe { *GO_READS.get(&gk)? };
    let _ = GO_READS.remove(&gk);
    if n <= 0 {
        return None;
    }
    let k = key(tgid, a.conn);
    go_sock(&k, a.conn);
    plaintext(&k, dir::READ, lib::GO, now(), a.buf, n as u64)?;
    Some(())
}

#[uprobe]
pub fn ot_tls_go_close(ctx: ProbeContext) -> u32 {
    // SAFETY: the probe's registers.
    let c = unsafe { (*ctx.regs).rax };
    close_session(&key((pid_tgid() >> 32) as u32, c));
    0
}

// ---------------------------------------------------------------------------------------------
// Plaintext into records

/// `n` plaintext bytes at `buf` went `d` through session `k`: decides the session on its first
/// request, then copies the bytes of a traced one. Returns the session.
#[inline(always)]
fn plaintext(k: &SessionKey, d: u8, l: u8, ts: u64, buf: u64, n: u64) -> Option<*mut Session> {
    add_counter(counter::TLS_CALLS, 1);
    add_counter(counter::TLS_BYTES, n);
    let s = session(k, l)?;
    // SAFETY: a map value pointer of this run.
    unsafe {
        match (*s).verdict {
            verdict::TRACED => {}
            verdict::UNDECIDED => match decide_head(buf, n) {
                Decision::Trace => {
                    (*s).verdict = verdict::TRACED;
                    (*s).end = if d == dir::WRITE { end::CLIENT } else { end::SERVER };
                    add_counter(counter::TLS_SESSIONS_TRACED, 1);
                }
                Decision::Ignore => {
                    (*s).verdict = verdict::IGNORED;
                    add_counter(counter::TLS_SESSIONS_IGNORED, 1);
                    add_counter(counter::TLS_BYTES_IGNORED, n);
                    return Some(s);
                }
                Decision::NotARequest => {
                    add_counter(counter::TLS_BYTES_IGNORED, n);
                    return Some(s);
                }
            },
            _ => {
                add_counter(counter::TLS_BYTES_IGNORED, n);
                return Some(s);
            }
        }
        if (*s).end == end::UNKNOWN {
            (*s).end = if d == dir::WRITE { end::CLIENT } else { end::SERVER };
        }
        if (*s).flow_sent == 0 && (*s).sock != 0 {
            try_flow(k, s);
        }
        let di = (d & 1) as usize;
        let pos = (*s).pos[di];
        let peer = (*s).pos[di ^ 1];
        (*s).pos[di] = pos + n;
        let id = pid_tgid();
        let hdr = TlsDataHeader {
            ts_ns: ts,
            conn: k.conn,
            pos,
            peer_pos: peer,
            tgid: k.tgid,
            tid: id as u32,
            data_len: 0,
            missing: 0,
            dir: d,
            lib: (*s).lib,
            flags: 0,
            _pad: [0; 2],
            hook: hook::TLS_DATA,
            _pad2: [0; 2],
        };
        copy_out(&hdr, buf, n);
    }
    Some(s)
}

/// Writes the call's bytes as records of at most `CHUNK_SIZE` bytes each. A call that fits
/// one record is reserved at the smallest data class that holds it; larger ones go in
/// `CHUNK_SIZE` records.
#[inline(always)]
fn copy_out(hdr: &TlsDataHeader, buf: u64, n: u64) {
    let cap = (MAX_CHUNKS_PER_CALL as u64) * CHUNK_SIZE as u64;
    let captured = if n > cap { cap } else { n };
    if n > cap {
        add_counter(counter::TLS_TRUNCATED_BYTES, n - cap);
    }
    let missing = (n - captured) as u32;
    let single = if captured <= 256 {
        Some(record::<{ DATA_HEADER_SIZE + 256 }, 256>(hdr, 0, buf, captured as u32, true, missing))
    } else if captured <= 1024 {
        Some(record::<{ DATA_HEADER_SIZE + 1024 }, 1024>(hdr, 0, buf, captured as u32, true, missing))
    } else if captured <= 4096 {
        Some(record::<{ DATA_HEADER_SIZE + 4096 }, 4096>(hdr, 0, buf, captured as u32, true, missing))
    } else {
        None
    };
    match single {
        Some(true) => return,
        Some(false) => return lost(captured),
        None => {}
    }
    let mut i: u32 = 0;
    while i < MAX_CHUNKS_PER_CALL {
        // Re-read as an unknown: what the branches below learn about it must not follow the
        // verifier to the loop head (its states there would differ and not be pruned).
        let captured = opaque(captured);
        let off = (i as u64) * CHUNK_SIZE as u64;
        if off >= captured {
            break;
        }
        let rest = captured - off;
        let want = if rest > CHUNK_SIZE as u64 { CHUNK_SIZE as u32 } else { rest as u32 };
        let last = rest <= CHUNK_SIZE as u64;
        if !record::<{ DATA_HEADER_SIZE + CHUNK_SIZE }, CHUNK_SIZE>(
            hdr,
            off,
            buf,
            want,
            last,
            if last { missing } else { 0 },
        ) {
            return lost(rest);
        }
        i += 1;
    }
}

/// The ring buffer was full: `left` bytes of the call (this record and the rest) are lost, a
/// gap of exact length.
#[inline(always)]
fn lost(left: u64) {
    add_counter(counter::TLS_RECORDS_LOST, left.div_ceil(CHUNK_SIZE as u64).max(1));
    add_counter(counter::TLS_BYTES_LOST, left);
}

/// One record of `want` (1 ..= N) bytes from `buf + off`, reserved at size `SIZE` = header + N.
#[inline(always)]
fn record<const SIZE: usize, const N: usize>(
    hdr: &TlsDataHeader,
    off: u64,
    buf: u64,
    want: u32,
    last: bool,
    missing: u32,
) -> bool {
    let Some(mut entry) = EVENTS.reserve_bytes(SIZE, 0) else { return false };
    let base = entry.as_mut_ptr();
    let len = ((want.wrapping_sub(1)) & (N as u32 - 1)) + 1;
    // SAFETY: `len` ≤ N bytes into the N data bytes after the header of our reservation.
    let r = unsafe { bpf_probe_read_user(base.add(DATA_HEADER_SIZE).cast(), len, (buf + off) as *const _) };
    let mut h = *hdr;
    h.pos = hdr.pos + off;
    h.flags = if last { data_flags::LAST } else { 0 };
    h.missing = missing;
    if r == 0 {
        h.data_len = len;
        add_counter(counter::TLS_RECORDS_SUBMITTED, 1);
        add_counter(counter::TLS_BYTES_SUBMITTED, u64::from(len));
    } else {
        h.data_len = 0;
        h.missing += len;
        h.flags |= data_flags::READ_FAILED;
        add_counter(counter::TLS_READ_FAILED_BYTES, u64::from(len));
    }
    if h.missing > 0 {
        h.flags |= data_flags::TRUNCATED;
    }
    // SAFETY: the reservation starts with room for the header (8-byte aligned).
    unsafe { core::ptr::write_unaligned(base.cast::<TlsDataHeader>(), h) };
    entry.submit(wake_reserved(SIZE as u64));
    true
}
