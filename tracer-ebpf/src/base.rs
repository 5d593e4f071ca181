//! What every kernel program builds on: the maps they share (the ring buffer, the counters,
//! the server ports, the per-CPU scratch), the counters' access, and reading bytes from an skb.

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::{
    bindings::__sk_buff,
    bindings::{
        BPF_RB_AVAIL_DATA, BPF_RB_CONS_POS, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_PROD_POS, BPF_RB_RING_SIZE,
    },
    helpers::generated::bpf_skb_load_bytes,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use tracer_common::{Counters, DEFAULT_RING_BYTES, PORT_BITMAP_WORDS, SCRATCH_LEVELS, Scratch};

#[map(name = "OT_EVENTS")]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map(name = "OT_COUNTERS")]
pub(crate) static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "OT_PORTS")]
pub(crate) static PORTS: Array<u64> = Array::with_max_entries(PORT_BITMAP_WORDS, 0);

#[map(name = "OT_SCRATCH")]
pub(crate) static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(SCRATCH_LEVELS, 0);

#[map(name = "OT_DEPTH")]
pub(crate) static DEPTH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Just past where the last record that needed reading started ([`wake`]): once the
/// reader's position is beyond it, the reader has read every such record. One slot for all
/// CPUs, read and written without atomics: a race costs a wake-up too many, or leaves records
/// for the daemon's periodic read of the ring (docs/architecture.md, "Waking the reader").
#[map(name = "OT_LOUD")]
static LOUD: Array<u64> = Array::with_max_entries(1, 0);

pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;

/// This CPU's counters, looked up once per packet.
#[derive(Clone, Copy)]
pub(crate) struct Cnt(*mut Counters);

impl Cnt {
    #[inline(always)]
    pub(crate) fn get() -> Option<Cnt> {
        COUNTERS.get_ptr_mut(0).map(Cnt)
    }

    /// Per-CPU, and programs on one CPU nest strictly, so a plain add is enough in practice
    /// (a nested program interrupting between load and store could lose one increment).
    #[inline(always)]
    pub(crate) fn add(self, idx: u32, v: u64) {
        unsafe { (*self.0)[idx as usize] += v }
    }

    #[inline(always)]
    pub(crate) fn max(self, idx: u32, v: u64) {
        unsafe {
            let p = &mut (*self.0)[idx as usize];
            if *p < v {
                *p = v
            }
        }
    }
}

/// Adds to one of this CPU's counters (programs other than the packet path).
#[inline(always)]
pub(crate) fn add_counter(idx: u32, v: u64) {
    if let Some(c) = Cnt::get() {
        c.add(idx, v);
    }
}

#[inline(always)]
pub(crate) fn ld<T>(skb: *mut __sk_buff, off: u32) -> Option<T> {
    let mut v = MaybeUninit::<T>::uninit();
    let r = unsafe {
        bpf_skb_load_bytes(skb as *const c_void, off, v.as_mut_ptr() as *mut c_void, core::mem::size_of::<T>() as u32)
    };
    if r == 0 { Some(unsafe { v.assume_init() }) } else { None }
}

#[inline(always)]
pub(crate) fn is_server_port(port: u16) -> bool {
    match PORTS.get((port >> 6) as u32) {
        Some(w) => (*w >> (port & 63)) & 1 != 0,
        None => false,
    }
}

/// Output flags for a record of `size` bytes nobody needs promptly (a skipped body's length, a
/// pure ACK: thousands a second during an upload): no wake-up, except one each time the
/// unread part of the ring grows past another eighth of it, so that a long body never fills it
/// unread (one per record beyond an eighth would be an interrupt per record).
#[inline(always)]
pub(crate) fn quiet_flags(size: u64) -> u64 {
    let unread = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let step = EVENTS.query(BPF_RB_RING_SIZE as u64) / 8;
    if step > 0 && unread / step != (unread + size) / step {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// How to write a record the daemon should read now (bytes, a SYN, FIN or RST, a TLS or socket
/// event): [`Wake::flags`] to write it with, then [`Wake::written`] once the ring took it.
pub(crate) struct Wake {
    pub(crate) flags: u64,
    /// Where the ring's writer was: the record starts there or after.
    at: u64,
}

/// The ring wakes its reader for a record that is first in line; after quiet records this one
/// no longer is, so it forces the wake-up when the reader has read every earlier record that
/// needed reading (it then drained the ring and sleeps, or will) and only quiet ones lie
/// unread before this one. A reader still behind a record that needed reading reads on to this
/// one without a wake-up, so none is forced then: as many wake-ups as the ring's own rule.
#[inline(always)]
pub(crate) fn wake() -> Wake {
    let at = EVENTS.query(BPF_RB_PROD_POS as u64);
    Wake { flags: flags_at(at), at }
}

impl Wake {
    /// The ring took the record: a reader past its start has read it. Not for a record the
    /// full ring refused, which no reader will pass.
    #[inline(always)]
    pub(crate) fn written(&self) {
        loud_at(self.at);
    }
}

/// [`wake`] for a record of `size` bytes already reserved (the writer's position is past it):
/// the ring has taken it, so it counts at once. Its start is taken as the writer's position
/// less its room, which a reservation on another CPU in between makes wrong: a race as above.
/// All in one place, after the record is filled, so that the verifier does not carry the
/// flags through the record's paths (the TLS programs reserve in loops).
#[inline(always)]
pub(crate) fn wake_reserved(size: u64) -> u64 {
    let start = EVENTS.query(BPF_RB_PROD_POS as u64).saturating_sub((size + 8 + 7) & !7);
    let flags = flags_at(start);
    loud_at(start);
    flags
}

/// The flags of a record needing reading that starts at ring position `start` ([`wake`]).
#[inline(always)]
fn flags_at(start: u64) -> u64 {
    let consumer = EVENTS.query(BPF_RB_CONS_POS as u64);
    let read_all = LOUD.get(0).is_none_or(|loud| consumer >= *loud);
    if read_all && consumer < start { BPF_RB_FORCE_WAKEUP as u64 } else { 0 }
}

/// A record needing reading, starting at ring position `start`, is in the ring.
#[inline(always)]
fn loud_at(start: u64) {
    if let Some(loud) = LOUD.get_ptr_mut(0) {
        // SAFETY: a map value of this program's map; plain u64 access (see `LOUD`).
        unsafe { *loud = start + 1 };
    }
}
