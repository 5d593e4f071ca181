//! Capture programs: parse IPv4/IPv6 + TCP from an skb, keep packets whose source or
//! destination port is in the port bitmap, and write header + payload records sized to the
//! payload into the ring buffer. Every loss is counted in `OT_COUNTERS`.
//!
//! Hooks: `cgroup_skb` ingress/egress (attached to the cgroup v2 root: every socket of every
//! network namespace on the host; data starts at the network header) and TC/TCX
//! ingress/egress (per interface; data starts at the Ethernet header). None of them ever
//! changes the packet's fate.

use core::ffi::c_void;

use aya_ebpf::{
    Global,
    bindings::__sk_buff,
    helpers::generated::{bpf_ktime_get_ns, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    macros::{cgroup_skb, classifier},
    programs::{SkBuffContext, TcContext},
};
use aya_log_ebpf::debug;
use tracer_common::{
    AF_INET, AF_INET6, CHUNK_SIZE, MAX_CHUNKS_PER_SKB, MAX_PAYLOAD_PER_SKB, RECORD_HEADER_SIZE, SCRATCH_LEVELS,
    Scratch, SkipKey, config_flags, counter, hook, rec_flags,
};

use crate::base::{Cnt, DEPTH, EVENTS, SCRATCH, TCP_FIN, TCP_RST, TCP_SYN, is_server_port, ld, quiet_flags, wake};
use crate::skip;

/// `config_flags` bits, set by the loader (read-only after load, so the verifier prunes the
/// branches that are off).
#[unsafe(no_mangle)]
static OT_FLAGS: Global<u32> = Global::new(0);

const IPPROTO_TCP: u8 = 6;
const LOOPBACK_IFINDEX: u32 = 1;
const ETH_HLEN: u32 = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// A header-only record's room in the ring: the ring's own 8-byte header and ours.
const QUIET_RECORD_BYTES: u64 = 8 + RECORD_HEADER_SIZE as u64;
/// IPv6 extension headers walked before giving up.
const MAX_IPV6_EXT: u32 = 4;

/// What the header walk found.
struct Parsed {
    family: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
    /// Offset of the TCP header.
    l4off: u32,
    /// End of the IP packet from its length field, 0 when the field is 0 (GSO > 64 KiB).
    l3end: u32,
}

enum Walk {
    /// Not TCP over IP: none of our business.
    Other,
    /// Might have been TCP on our ports but could not be parsed.
    Failed,
    Tcp(Parsed),
}

#[inline(always)]
fn walk(skb: *mut __sk_buff, l3off: u32) -> Walk {
    let Some(b0) = ld::<u8>(skb, l3off) else {
        return Walk::Failed;
    };
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    match b0 >> 4 {
        4 => {
            let Some(h) = ld::<[u8; 20]>(skb, l3off) else {
                return Walk::Failed;
            };
            if h[9] != IPPROTO_TCP {
                return Walk::Other;
            }
            let ihl = ((h[0] & 0x0f) as u32) * 4;
            // More-fragments flag or a fragment offset: no (whole) TCP header here.
            if ihl < 20 || (h[6] & 0x3f) != 0 || h[7] != 0 {
                return Walk::Failed;
            }
            let tot = u16::from_be_bytes([h[2], h[3]]) as u32;
            saddr[..4].copy_from_slice(&h[12..16]);
            daddr[..4].copy_from_slice(&h[16..20]);
            let l4off = l3off + ihl;
            let Some(ports) = ld::<[u8; 4]>(skb, l4off) else {
                return Walk::Failed;
            };
            Walk::Tcp(Parsed {
                family: AF_INET,
                saddr,
                daddr,
                sport: u16::from_be_bytes([ports[0], ports[1]]),
                dport: u16::from_be_bytes([ports[2], ports[3]]),
                l4off,
                l3end: if tot == 0 { 0 } else { l3off + tot },
            })
        }
        6 => {
            let Some(h) = ld::<[u8; 8]>(skb, l3off) else {
                return Walk::Failed;
            };
            let plen = u16::from_be_bytes([h[4], h[5]]) as u32;
            let mut nh = h[6];
            let mut l4off = l3off + 40;
            let mut i = 0;
            // Hop-by-hop, routing and destination options headers may precede TCP.
            while i < MAX_IPV6_EXT {
                if nh == IPPROTO_TCP {
                    break;
                }
                if nh != 0 && nh != 43 && nh != 60 {
                    // 44 = fragment, 59 = no next header, anything else: not plain TCP.
                    return if nh == 44 { Walk::Failed } else { Walk::Other };
                }
                let Some(ext) = ld::<[u8; 2]>(skb, l4off) else {
                    return Walk::Failed;
                };
                nh = ext[0];
                l4off += (ext[1] as u32 + 1) * 8;
                i += 1;
            }
            if nh != IPPROTO_TCP {
                return Walk::Failed;
            }
            let Some(s) = ld::<[u8; 16]>(skb, l3off + 8) else {
                return Walk::Failed;
            };
            let Some(d) = ld::<[u8; 16]>(skb, l3off + 24) else {
                return Walk::Failed;
            };
            let Some(ports) = ld::<[u8; 4]>(skb, l4off) else {
                return Walk::Failed;
            };
            Walk::Tcp(Parsed {
                family: AF_INET6,
                saddr: s,
                daddr: d,
                sport: u16::from_be_bytes([ports[0], ports[1]]),
                dport: u16::from_be_bytes([ports[2], ports[3]]),
                l4off,
                l3end: if plen == 0 { 0 } else { l3off + 40 + plen },
            })
        }
        _ => Walk::Other,
    }
}

/// Claims this CPU's next scratch level; `None` when all are in use.
#[inline(always)]
fn enter() -> Option<(*mut Scratch, *mut u32)> {
    let depth = DEPTH.get_ptr_mut(0)?;
    let level = unsafe { *depth };
    if level >= SCRATCH_LEVELS {
        return None;
    }
    let scratch = SCRATCH.get_ptr_mut(level)?;
    unsafe { *depth = level + 1 };
    Some((scratch, depth))
}

#[inline(always)]
fn leave(depth: *mut u32) {
    unsafe {
        if *depth > 0 {
            *depth -= 1;
        }
    }
}

/// Captures one skb whose IP header starts at `l3off`.
#[inline(always)]
fn capture<C: aya_ebpf::EbpfContext>(ctx: &C, skb: *mut __sk_buff, l3off: u32, hook_id: u8) {
    let Some(cnt) = Cnt::get() else { return };
    cnt.add(counter::PACKETS_INSPECTED, 1);
    // A packet between two local sockets passes the cgroup hooks twice and is taken at its
    // sender's egress: the receiver's copy is left before any parsing (every packet of the
    // host's loopback traffic, whatever its port, costs one run instead of two walks).
    if hook_id == hook::CGROUP_INGRESS
        && OT_FLAGS.load() & config_flags::SKIP_LOOPBACK_INGRESS != 0
        && unsafe { (*skb).ifindex } == LOOPBACK_IFINDEX
    {
        cnt.add(counter::LOOPBACK_INGRESS_SKIPPED, 1);
        return;
    }
    let p = match walk(skb, l3off) {
        Walk::Other => return,
        Walk::Failed => {
            cnt.add(counter::PARSE_FAILURES, 1);
            return;
        }
        Walk::Tcp(p) => p,
    };
    if !is_server_port(p.sport) && !is_server_port(p.dport) {
        return;
    }
    let Some(tcp) = ld::<[u8; 14]>(skb, p.l4off) else {
        cnt.add(counter::PARSE_FAILURES, 1);
        return;
    };
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    let doff = ((tcp[12] >> 4) as u32) * 4;
    let tcp_flags = tcp[13];
    let poff = p.l4off + doff;
    let skb_len = unsafe { (*skb).len };
    let ifindex = unsafe { (*skb).ifindex };
    let mut end = skb_len;
    if p.l3end != 0 && p.l3end < end {
        end = p.l3end; // L2 padding
    }
    let payload_len = end.saturating_sub(poff);

    cnt.add(counter::PACKETS_MATCHED, 1);
    cnt.add(counter::BYTES_MATCHED, payload_len as u64);
    cnt.max(counter::MAX_SKB_LEN, skb_len as u64);

    let flags = OT_FLAGS.load();
    if payload_len == 0 && tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0 && flags & config_flags::EMIT_PURE_ACKS == 0 {
        cnt.add(counter::PURE_ACKS_SKIPPED, 1);
        return;
    }
    if flags & config_flags::DEBUG_LOG != 0 && tcp_flags & TCP_SYN != 0 {
        debug!(
            ctx,
            "{} SYN family={} {}->{} seq={} len={}",
            hook::name(hook_id),
            p.family,
            p.sport,
            p.dport,
            seq,
            skb_len
        );
    }

    let key =
        SkipKey { saddr: p.saddr, daddr: p.daddr, sport: p.sport, dport: p.dport, family: p.family, _pad: [0; 3] };
    let skipped = skip::skips(&key, seq, payload_len, tcp_flags);
    if skipped {
        cnt.add(counter::SKIPPED_PACKETS, 1);
        cnt.add(counter::SKIPPED_BYTES, payload_len as u64);
    }

    let Some((scratch, depth)) = enter() else {
        cnt.add(counter::NESTING_OVERFLOW, 1);
        cnt.add(counter::RINGBUF_LOST_RECORDS, 1);
        cnt.add(counter::RINGBUF_LOST_BYTES, payload_len as u64);
        return;
    };
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    unsafe {
        let h = &mut (*scratch).hdr;
        h.ts_ns = ts_ns;
        h.cgroup_id = cgroup_id;
        h.saddr = p.saddr;
        h.daddr = p.daddr;
        h.sport = p.sport;
        h.dport = p.dport;
        h.family = p.family;
        h.hook = hook_id;
        h.tcp_flags = tcp_flags;
        h.seq = seq;
        h.ack = ack;
        h.skb_len = skb_len;
        h.payload_len = payload_len;
        h.ifindex = ifindex;
    }
    unsafe { (*scratch).payload_start = poff };
    if skipped {
        // Header only: the bytes' sequence range and time, none of the bytes.
        unsafe {
            let h = &mut (*scratch).hdr;
            h.rec_flags = rec_flags::LAST | rec_flags::SKIPPED;
            h.payload_off = 0;
            h.data_len = 0;
            h.missing = payload_len;
        }
        let rec = unsafe { core::slice::from_raw_parts(scratch as *const u8, RECORD_HEADER_SIZE) };
        match EVENTS.output::<[u8]>(rec, quiet_flags(QUIET_RECORD_BYTES)) {
            Ok(()) => cnt.add(counter::RECORDS_SUBMITTED, 1),
            Err(_) => cnt.add(counter::RINGBUF_LOST_RECORDS, 1),
        }
        leave(depth);
        return;
    }
    let truncated = payload_len.saturating_sub(MAX_PAYLOAD_PER_SKB);
    if truncated > 0 {
        cnt.add(counter::TRUNCATED_BYTES, truncated as u64);
    }
    // A pure ACK is read whenever the daemon next reads for another reason.
    let (first_flags, first_wake) = if payload_len > 0 || tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
        let w = wake();
        (w.flags, Some(w))
    } else {
        (quiet_flags(QUIET_RECORD_BYTES), None)
    };
    let mut i: u32 = 0;
    while i < MAX_CHUNKS_PER_SKB {
        let flags = if i == 0 { first_flags } else { 0 };
        let Some(more) = emit_chunk(skb, scratch, cnt, i, flags) else { break };
        if i == 0
            && let Some(w) = &first_wake
        {
            w.written();
        }
        if !more {
            break;
        }
        i += 1;
    }
    skip::name_blob_skip(skb, scratch, depth, cnt);
    leave(depth);
}

/// Writes record `i` of the skb described by the scratch header: whether more follow, `None`
/// when none was written (the skb has no more, or the ring buffer is full).
///
/// Verifier: everything but the loop counter is re-read from the scratch map value here.
/// Map memory is not tracked, so the loop head carries no packet-derived ranges: the states
/// of all header-parse paths (IPv4, IPv6 with 0..4 extension headers, ...) become equal there
/// and are pruned, instead of each being walked through all iterations. The mask rebuilds a
/// provable [1, CHUNK_SIZE] length for the load and the output.
#[inline(always)]
fn emit_chunk(skb: *mut __sk_buff, scratch: *mut Scratch, cnt: Cnt, i: u32, wake: u64) -> Option<bool> {
    let (payload_len, poff) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*scratch).hdr.payload_len),
            core::ptr::read_volatile(&raw const (*scratch).payload_start),
        )
    };
    let captured = if payload_len > MAX_PAYLOAD_PER_SKB { MAX_PAYLOAD_PER_SKB } else { payload_len };
    let off = i * CHUNK_SIZE as u32;
    if i > 0 && off >= captured {
        return None;
    }
    let remaining = captured.saturating_sub(off);
    let want = if remaining > CHUNK_SIZE as u32 { CHUNK_SIZE as u32 } else { remaining };
    let last = off + want >= captured;
    let mut rflags = if last { rec_flags::LAST } else { 0 };
    let mut missing = if last { payload_len - captured } else { 0 };
    let mut got: u32 = 0;
    if want > 0 {
        let n = ((want - 1) & (CHUNK_SIZE as u32 - 1)) + 1;
        let r = unsafe {
            bpf_skb_load_bytes(skb as *const c_void, poff + off, (*scratch).data.as_mut_ptr() as *mut c_void, n)
        };
        if r == 0 {
            got = n;
        } else {
            cnt.add(counter::LOAD_FAILURES, 1);
            cnt.add(counter::LOAD_FAILED_BYTES, want as u64);
            rflags |= rec_flags::LOAD_FAILED | rec_flags::TRUNCATED;
            missing += want;
        }
    }
    if missing > 0 {
        rflags |= rec_flags::TRUNCATED;
    }
    unsafe {
        let h = &mut (*scratch).hdr;
        h.rec_flags = rflags;
        h.payload_off = off;
        h.data_len = got;
        h.missing = missing;
    }
    let size = RECORD_HEADER_SIZE + (got as usize & (CHUNK_SIZE * 2 - 1));
    let size = if size > RECORD_HEADER_SIZE + CHUNK_SIZE { RECORD_HEADER_SIZE + CHUNK_SIZE } else { size };
    let rec = unsafe { core::slice::from_raw_parts(scratch as *const u8, size) };
    match EVENTS.output::<[u8]>(rec, wake) {
        Ok(()) => {
            cnt.add(counter::RECORDS_SUBMITTED, 1);
            cnt.add(counter::BYTES_SUBMITTED, got as u64);
            Some(!last)
        }
        Err(_) => {
            // Ring full: this and every later record of the skb are lost.
            let left = captured - off;
            let records = if left == 0 { 1 } else { left.div_ceil(CHUNK_SIZE as u32) };
            cnt.add(counter::RINGBUF_LOST_RECORDS, records as u64);
            cnt.add(counter::RINGBUF_LOST_BYTES, left as u64);
            None
        }
    }
}

#[inline(always)]
fn eth_l3(skb: *mut __sk_buff) -> Option<u32> {
    // skb->protocol is the ethertype in network byte order.
    let proto = u16::from_be(unsafe { (*skb).protocol } as u16);
    if proto == ETH_P_IP || proto == ETH_P_IPV6 { Some(ETH_HLEN) } else { None }
}

#[cgroup_skb(ingress)]
pub fn ot_cg_ingress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, ctx.skb.skb, 0, hook::CGROUP_INGRESS);
    1 // allow
}

#[cgroup_skb(egress)]
pub fn ot_cg_egress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, ctx.skb.skb, 0, hook::CGROUP_EGRESS);
    1 // allow
}

#[classifier]
pub fn ot_tc_ingress(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    if let Some(l3) = eth_l3(skb) {
        capture(&ctx, skb, l3, hook::TC_INGRESS);
    }
    -1 // TC_ACT_UNSPEC / TCX_NEXT: never interfere
}

#[classifier]
pub fn ot_tc_egress(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    if let Some(l3) = eth_l3(skb) {
        capture(&ctx, skb, l3, hook::TC_EGRESS);
    }
    -1
}
