//! Which TLS sessions are traced: the host a session talks to, from the client's SNI or from
//! the `Host` header of its first HTTP request, looked up in the host set the daemon filled.
//! Decided once per session; an ignored session's bytes are never copied to user space.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_loop, bpf_probe_read_user, bpf_probe_read_user_str},
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use tracer_common::tls::{HEAD_SCAN, HOST_LEN, HostScratch, MAX_HOSTS, config_flags};

use crate::tls_state::{OT_TLS_FLAGS, opaque};

#[map(name = "OT_TLS_HOSTS")]
static HOSTS: HashMap<[u8; HOST_LEN], u8> = HashMap::with_max_entries(MAX_HOSTS, 0);

#[map(name = "OT_TLS_SCRATCH")]
static SCRATCH: PerCpuArray<HostScratch> = PerCpuArray::with_max_entries(1, 0);

/// `\nhost:` folded (see [`fold`]) as the last six bytes of a big-endian window.
const NEEDLE: u64 = 0x2a_68_6f_73_74_3a;
const WINDOW: u64 = 0xffff_ffff_ffff;
/// `\r\n\r\n` folded: the head ended without a `Host` header.
const HEAD_END: u64 = 0x2d2a_2d2a;

/// What the first bytes of a session say about tracing it.
pub enum Decision {
    /// Not the start of an HTTP/1.x request: wait for one.
    NotARequest,
    Trace,
    Ignore,
}

/// Sets bit 5: ASCII letters to lower case, digits, `.`, `-`, `:` unchanged (the daemon folds
/// the hosts it lists the same way). Branch-free on purpose: a branch per byte would give the
/// verifier two states per byte to follow through the rest of the program.
#[inline(always)]
fn fold(c: u8) -> u8 {
    c | 0x20
}

/// [`fold`], keeping NUL as NUL (the padding of a name), still without a branch.
#[inline(always)]
fn fold_nonzero(c: u8) -> u8 {
    c | ((((u32::from(c) + 0xff) >> 8) as u8) << 5)
}

#[inline(always)]
fn any_host() -> bool {
    OT_TLS_FLAGS.load() & config_flags::ANY_HOST != 0
}

/// The host set holds this (NUL-padded, lower-case) name.
#[inline(always)]
fn listed(host: &[u8; HOST_LEN]) -> bool {
    // SAFETY: a lookup by value; the map holds plain bytes.
    unsafe { HOSTS.get(host).is_some() }
}

/// A client set its SNI to the C string at `name`: trace the session when the host is listed.
#[inline(always)]
pub fn decide_sni(name: u64) -> bool {
    if any_host() {
        return true;
    }
    let Some(sc) = SCRATCH.get_ptr_mut(0) else { return false };
    // SAFETY: per-CPU scratch owned by this program run; the string read is bounded by the
    // destination and fails cleanly on a bad pointer.
    unsafe {
        let host = &mut (*sc).host;
        *host = [0; HOST_LEN];
        let n = bpf_probe_read_user_str(host.as_mut_ptr().cast(), HOST_LEN as u32, name as *const _);
        if n <= 1 {
            return false;
        }
        let mut i = 0;
        while i < HOST_LEN {
            host[i] = fold_nonzero(host[i]);
            i += 1;
        }
        // A name that filled the buffer was cut: it cannot be one of ours.
        if host[HOST_LEN - 1] != 0 {
            return false;
        }
        listed(host)
    }
}

/// The first `len` bytes at `buf` of a session not decided yet: a request whose `Host` is
/// listed is traced, any other request ignored; anything else is not a request start.
#[inline(always)]
pub fn decide_head(buf: u64, len: u64) -> Decision {
    let Some(sc) = SCRATCH.get_ptr_mut(0) else { return Decision::NotARequest };
    let n = if len > HEAD_SCAN as u64 { HEAD_SCAN as u32 } else { len as u32 };
    if n < 16 {
        return Decision::NotARequest;
    }
    // Provably 1 ..= HEAD_SCAN for the verifier.
    let n = ((n - 1) & (HEAD_SCAN as u32 - 1)) + 1;
    // SAFETY: reads at most HEAD_SCAN bytes of the process's buffer into the scratch head.
    let r = unsafe { bpf_probe_read_user((*sc).head.as_mut_ptr().cast(), n, buf as *const _) };
    if r != 0 {
        return Decision::NotARequest;
    }
    // SAFETY: the scratch entry is ours for this program run.
    let head = unsafe { &(*sc).head };
    if !is_request_start(head) {
        return Decision::NotARequest;
    }
    if any_host() {
        return Decision::Trace;
    }
    // SAFETY: as above.
    let host = unsafe { &mut (*sc).host };
    if find_host(head, n, host) && listed(host) { Decision::Trace } else { Decision::Ignore }
}

/// An HTTP/1.x method and a space: what a client's first write and a server's first read start
/// with (HTTP/2's preface `PRI * HTTP/2.0` is not one).
#[inline(always)]
fn is_request_start(head: &[u8; HEAD_SCAN]) -> bool {
    let w = u64::from_be_bytes([head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7]]);
    let m4 = w >> 32;
    let m5 = w >> 24;
    let m6 = w >> 16;
    let m7 = w >> 8;
    m4 == u64::from(u32::from_be_bytes(*b"GET "))
        || m4 == u64::from(u32::from_be_bytes(*b"PUT "))
        || m5 == u64::from_be_bytes([0, 0, 0, b'P', b'O', b'S', b'T', b' '])
        || m5 == u64::from_be_bytes([0, 0, 0, b'H', b'E', b'A', b'D', b' '])
        || m6 == u64::from_be_bytes([0, 0, b'P', b'A', b'T', b'C', b'H', b' '])
        || m7 == u64::from_be_bytes([0, b'D', b'E', b'L', b'E', b'T', b'E', b' '])
        || m7 == u64::from_be_bytes([0, b'O', b'P', b'T', b'I', b'O', b'N', b'S'])
}

/// Where the search for the `Host` header is ([`scan_step`]'s state, on the caller's stack).
#[repr(C)]
struct Scan {
    limit: u32,
    /// Just past `host:` once found (or past the head's end).
    at: u32,
    window: u64,
}

/// One byte of the search: 1 stops the loop.
#[inline(never)]
extern "C" fn scan_step(i: u64, ctx: *mut c_void) -> i64 {
    let scan = ctx.cast::<Scan>();
    let Some(sc) = SCRATCH.get_ptr(0) else { return 1 };
    // SAFETY: `ctx` is the caller's `Scan`; the scratch entry is this CPU's.
    unsafe {
        let i = i as u32;
        if i >= (*scan).limit {
            return 1;
        }
        let c = (*sc).head[(i & (HEAD_SCAN as u32 - 1)) as usize];
        let window = (((*scan).window << 8) | u64::from(fold(c))) & WINDOW;
        (*scan).window = window;
        if window == NEEDLE || window & 0xffff_ffff == HEAD_END {
            (*scan).at = i + 1;
            return 1;
        }
    }
    0
}

/// Copies the `Host` header's host (lower case, without port or IPv6 brackets) into `host`,
/// NUL-padded; false when the head has none (within `n` bytes) or it is too long.
///
/// Find the header (in `bpf_loop`), skip blanks, copy the value: loops whose only
/// data-dependent branch is their exit, so that the verifier's states at each head are alike.
#[inline(always)]
fn find_host(head: &[u8; HEAD_SCAN], n: u32, host: &mut [u8; HOST_LEN]) -> bool {
    *host = [0; HOST_LEN];
    let mask = HEAD_SCAN as u32 - 1;
    // The search runs in `bpf_loop`: its step is verified once, not once per byte.
    let mut scan = Scan { limit: n, at: 0, window: 0 };
    // SAFETY: the step only touches `scan` (on this stack) and the per-CPU scratch.
    unsafe {
        bpf_loop(HEAD_SCAN as u32, scan_step as *mut c_void, (&mut scan as *mut Scan).cast(), 0);
    }
    let (at, window) = (scan.at, scan.window);
    if at == 0 || window != NEEDLE {
        return false;
    }
    let mut at = opaque(u64::from(at)) as u32;
    // Unknown to the compiler too: else it proves `p < n ≤ HEAD_SCAN` and drops the masks
    // below, which the verifier needs.
    let n = opaque(u64::from(n)) as u32;
    let mut j: u32 = 0;
    while j < 16 && at < n && matches!(head[(at & mask) as usize], b' ' | b'\t') {
        at += 1;
        j += 1;
    }
    let bracket = at < n && head[(at & mask) as usize] == b'[';
    if bracket {
        at += 1;
    }
    let mut k: usize = 0;
    let mut ended = false;
    while k < HOST_LEN - 1 {
        let p = at + k as u32;
        if p >= n {
            break;
        }
        let c = head[(p & mask) as usize];
        let stop = if bracket { c == b']' } else { c == b':' || c == b' ' };
        if stop || c == b'\r' || c == b'\n' {
            ended = !bracket || c == b']';
            break;
        }
        host[k & (HOST_LEN - 1)] = fold(c);
        k += 1;
    }
    opaque(u64::from(ended && k > 0)) == 1
}
