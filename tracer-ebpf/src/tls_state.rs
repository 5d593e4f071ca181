//! What the TLS probes keep between calls: the sessions, the call in flight per thread, the
//! socket a write system call is still to name, the process verdicts, the loader's flags, and
//! the small helpers all TLS programs use. Its own module so that the probes (`tls.rs`), the
//! host decision (`tls_host.rs`) and the socket tracking (`tls_sock.rs`) each depend on it and
//! not on one another.

use aya_ebpf::{
    Global,
    helpers::generated::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::LruHashMap,
};
use tracer_common::tls::{Active, MAX_SESSIONS, Session, SessionKey};

#[map(name = "OT_TLS_SESSIONS")]
pub(crate) static SESSIONS: LruHashMap<SessionKey, Session> = LruHashMap::with_max_entries(MAX_SESSIONS, 0);

#[map(name = "OT_TLS_ACTIVE")]
pub(crate) static ACTIVE: LruHashMap<u64, Active> = LruHashMap::with_max_entries(16_384, 0);

#[map(name = "OT_TLS_PENDING")]
pub(crate) static PENDING: LruHashMap<u64, SessionKey> = LruHashMap::with_max_entries(16_384, 0);

#[map(name = "OT_TLS_PIDS")]
pub(crate) static PIDS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(65_536, 0);

/// `tracer_common::tls::config_flags`, set by the loader.
#[unsafe(no_mangle)]
pub(crate) static OT_TLS_FLAGS: Global<u32> = Global::new(0);

#[inline(always)]
pub(crate) fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub(crate) fn pid_tgid() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_get_current_pid_tgid() }
}

#[inline(always)]
pub(crate) fn key(tgid: u32, conn: u64) -> SessionKey {
    SessionKey { tgid, _pad: 0, conn }
}

/// The session of `k`, created undecided when new.
#[inline(always)]
pub(crate) fn session(k: &SessionKey, lib: u8) -> Option<*mut Session> {
    if let Some(s) = SESSIONS.get_ptr_mut(k) {
        return Some(s);
    }
    let fresh = Session { fd: -1, lib, ..Session::default() };
    let _ = SESSIONS.insert(k, &fresh, 0);
    SESSIONS.get_ptr_mut(k)
}

/// `v`, as a value the verifier knows nothing about.
#[inline(always)]
pub(crate) fn opaque(v: u64) -> u64 {
    let mut out = 0u64;
    // SAFETY: an 8-byte copy between two locals of this program's stack.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel((&mut out as *mut u64).cast(), 8, (&v as *const u64).cast())
    };
    out
}
