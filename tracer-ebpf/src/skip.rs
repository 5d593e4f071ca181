//! Bodies not copied: the range map (`OT_SKIP`) user space writes and the packet path reads,
//! and the blob-upload heads the packet programs read themselves to write it first
//! (`tracer_common::blob_head`; docs/architecture.md says why).

use core::ffi::c_void;

use aya_ebpf::{Global, bindings::__sk_buff, helpers::generated::bpf_skb_load_bytes, macros::map, maps::LruHashMap};
use tracer_common::{
    MAX_SKIP_BYTES, MAX_SKIPS, Scratch, SkipKey, SkipRange,
    blob_head::{BLOB_UPLOAD, HEAD_SCAN, blob_head},
    counter,
};

use crate::base::{Cnt, SCRATCH, TCP_FIN, TCP_RST, TCP_SYN, is_server_port, ld};

#[map(name = "OT_SKIP")]
static SKIP: LruHashMap<SkipKey, SkipRange> = LruHashMap::with_max_entries(MAX_SKIPS, 0);

/// `tracer_common::global::SKIP_OVER`: blob uploads over this many bytes are skipped from the
/// packet after their head (0: never). Read-only after load, like `OT_FLAGS`.
#[unsafe(no_mangle)]
static OT_SKIP_OVER: Global<u64> = Global::new(0);

/// Whether this packet's payload lies wholly inside a range user space asked to skip. A packet
/// at or past the range's end moves the range on through a longer body (`more`), or ends the
/// skip (the entry goes), as does a FIN/RST; one that straddles the range's start or end is
/// copied whole.
#[inline(always)]
pub(crate) fn skips(key: &SkipKey, seq: u32, payload_len: u32, tcp_flags: u8) -> bool {
    let Some(r) = SKIP.get_ptr_mut(key) else { return false };
    let (mut from, mut to, more) = unsafe { ((*r).from, (*r).to, (*r).more) };
    let end = seq.wrapping_add(payload_len);
    if tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        let _ = SKIP.remove(key);
        return false;
    }
    if seq.wrapping_sub(to) as i32 >= 0 {
        let step = if more > MAX_SKIP_BYTES as u64 { MAX_SKIP_BYTES } else { more as u32 };
        // Past the body, or a jump past the next range: done.
        if step == 0 || seq.wrapping_sub(to) >= step {
            let _ = SKIP.remove(key);
            return false;
        }
        // `more` first: a program on another CPU that reads the new `more` with the old `to`
        // moves on by less, never past the body's end.
        unsafe {
            (*r).more = more - step as u64;
            (*r).from = to;
            (*r).to = to.wrapping_add(step);
        }
        from = to;
        to = to.wrapping_add(step);
    }
    payload_len > 0
        && tcp_flags & TCP_SYN == 0
        && seq.wrapping_sub(from) as i32 >= 0
        && to.wrapping_sub(end) as i32 >= 0
}

/// When this packet starts a blob upload whose body is over `OT_SKIP_OVER` bytes, names the
/// rest of the body (from the next packet on) for skipping, as user space would once the head
/// reached it. The head must lie whole in the packet's first `HEAD_SCAN` bytes, with one
/// `Content-Length` and no transfer or content coding; anything else is left to user space.
/// The packet's own bytes are copied as usual (before this runs).
///
/// Verifier: like `capture::emit_chunk`, it reads the packet's facts back from the scratch header, so
/// that every header-parse path arrives here in one state and the scan is walked once.
#[inline(always)]
pub(crate) fn name_blob_skip(skb: *mut __sk_buff, scratch: *mut Scratch, depth: *mut u32, cnt: Cnt) {
    let over = OT_SKIP_OVER.load();
    if over == 0 {
        return;
    }
    let h = unsafe { &raw const (*scratch).hdr };
    let (payload_len, poff, dport) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*h).payload_len),
            core::ptr::read_volatile(&raw const (*scratch).payload_start),
            core::ptr::read_volatile(&raw const (*h).dport),
        )
    };
    if payload_len < BLOB_UPLOAD.len() as u32 || !is_server_port(dport) {
        return;
    }
    if ld::<[u8; 16]>(skb, poff) != Some(BLOB_UPLOAD) {
        return;
    }
    let level = unsafe { *depth }.wrapping_sub(1);
    let found = ot_blob_head(skb, poff, payload_len, level);
    if found == 0 {
        return;
    }
    let (head_len, body_len) = ((found >> HEAD_SHIFT) as u32, found & ((1 << HEAD_SHIFT) - 1));
    if body_len <= over {
        return;
    }
    let first = if body_len > MAX_SKIP_BYTES as u64 { MAX_SKIP_BYTES } else { body_len as u32 };
    let more = body_len - first as u64;
    let (seq, key) = unsafe {
        let h = &*h;
        (
            h.seq,
            SkipKey { saddr: h.saddr, daddr: h.daddr, sport: h.sport, dport: h.dport, family: h.family, _pad: [0; 3] },
        )
    };
    let from = seq.wrapping_add(payload_len);
    let to = seq.wrapping_add(head_len).wrapping_add(first);
    // Nothing left past this packet.
    if to.wrapping_sub(from) as i32 <= 0 {
        return;
    }
    if SKIP.insert(&key, &SkipRange { from, to, more }, 0).is_ok() {
        cnt.add(counter::BLOB_SKIPS_NAMED, 1);
    }
}

/// Where [`ot_blob_head`] puts the head's length in its answer (the body's length below).
const HEAD_SHIFT: u32 = 52;

/// [`blob_head`] on the first bytes of the packet's payload at `poff` (`payload_len` long),
/// read into scratch level `level`: `head_len << HEAD_SHIFT | body_len`, 0 when the head is not
/// one to skip after.
///
/// Verifier: a global function (not inlined, external linkage), so it is verified once, on
/// its own, whatever state each packet path arrives in; inlined, the scan was walked again
/// for each of them (≈ 3 500 steps per byte scanned, past the million-step limit at 1 KiB).
#[unsafe(no_mangle)]
#[inline(never)]
pub fn ot_blob_head(skb: *mut __sk_buff, poff: u32, payload_len: u32, level: u32) -> u64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(level) else { return 0 };
    let want = if payload_len as usize > HEAD_SCAN { HEAD_SCAN } else { payload_len as usize };
    // [1, HEAD_SCAN] as the verifier sees it.
    let n = ((want.wrapping_sub(1)) & (HEAD_SCAN - 1)) + 1;
    let data = unsafe { (*scratch).data.as_mut_ptr() };
    if unsafe { bpf_skb_load_bytes(skb as *const c_void, poff, data as *mut c_void, n as u32) } != 0 {
        return 0;
    }
    // SAFETY: the scratch buffer is CHUNK_SIZE >= HEAD_SCAN bytes.
    let head = unsafe { &*(data as *const [u8; HEAD_SCAN]) };
    let cell = unsafe { &mut (*scratch).scan };
    match blob_head(head, n as u32, cell) {
        Some((head_len, body_len)) if body_len < 1 << HEAD_SHIFT => (head_len as u64) << HEAD_SHIFT | body_len,
        _ => 0,
    }
}
