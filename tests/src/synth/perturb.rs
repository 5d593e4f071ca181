//! Capture imperfections applied to a packet list: reordering, duplicates, loss, resegmentation,
//! snap length, and a capture that starts late. Timestamps stay non-decreasing in list order,
//! as in a real capture file: reordering moves packets, not the clock.

use rand::Rng;
use rand::seq::SliceRandom;

use super::{Packet, TcpFlags};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PerturbError {
    #[error("packet index {index} out of range ({len} packets)")]
    NoSuchPacket { index: usize, len: usize },
    #[error("split offset {offset} is not inside the {len}-byte payload")]
    BadOffset { offset: usize, len: usize },
}

fn check(packets: &[Packet], index: usize) -> Result<(), PerturbError> {
    if index < packets.len() { Ok(()) } else { Err(PerturbError::NoSuchPacket { index, len: packets.len() }) }
}

/// Exchange packets `i` and `j`; each keeps the other's timestamp slot.
pub fn swap(packets: &mut [Packet], i: usize, j: usize) -> Result<(), PerturbError> {
    check(packets, i)?;
    check(packets, j)?;
    let (ti, tj) = (packets[i].ts_ns, packets[j].ts_ns);
    packets.swap(i, j);
    packets[i].ts_ns = ti;
    packets[j].ts_ns = tj;
    Ok(())
}

/// Shuffle packets inside consecutive windows of `window` packets (timestamps stay in place).
pub fn shuffle_windows(packets: &mut [Packet], window: usize, rng: &mut impl Rng) {
    if window < 2 {
        return;
    }
    for chunk in packets.chunks_mut(window) {
        let slots: Vec<u64> = chunk.iter().map(|p| p.ts_ns).collect();
        chunk.shuffle(rng);
        for (p, ts) in chunk.iter_mut().zip(slots) {
            p.ts_ns = ts;
        }
    }
}

/// Insert a copy of packet `i` that arrives `delay_ns` later (0: a packet seen at two hooks;
/// more: a retransmission). Returns the copy's index.
pub fn duplicate(packets: &mut Vec<Packet>, i: usize, delay_ns: u64) -> Result<usize, PerturbError> {
    check(packets, i)?;
    let mut copy = packets[i].clone();
    copy.ts_ns += delay_ns;
    let at = i + 1 + packets[i + 1..].iter().take_while(|p| p.ts_ns <= copy.ts_ns).count();
    packets.insert(at, copy);
    Ok(at)
}

/// Duplicate each packet with probability `p`, right after itself. Returns how many were added.
pub fn duplicate_random(packets: &mut Vec<Packet>, p: f64, rng: &mut impl Rng) -> usize {
    let mut out = Vec::with_capacity(packets.len());
    let mut added = 0;
    for pkt in packets.drain(..) {
        let dup = rng.random_bool(p);
        if dup {
            out.push(pkt.clone());
            added += 1;
        }
        out.push(pkt);
    }
    *packets = out;
    added
}

/// Remove the packets at `indices` (any order, duplicates ignored).
pub fn drop_indices(packets: &mut Vec<Packet>, indices: &[usize]) {
    let mut i = 0;
    packets.retain(|_| {
        let keep = !indices.contains(&i);
        i += 1;
        keep
    });
}

/// Remove packets matching `pred`; returns how many.
pub fn drop_where(packets: &mut Vec<Packet>, pred: impl Fn(&Packet) -> bool) -> usize {
    let before = packets.len();
    packets.retain(|p| !pred(p));
    before - packets.len()
}

/// Drop each payload-carrying packet with probability `p`. Returns how many were dropped.
pub fn drop_random(packets: &mut Vec<Packet>, p: f64, rng: &mut impl Rng) -> usize {
    let before = packets.len();
    packets.retain(|pkt| pkt.payload.is_empty() || !rng.random_bool(p));
    before - packets.len()
}

/// Split packet `i` at payload `offsets` (strictly increasing, inside the payload) into several
/// packets with the same timestamp and correct sequence numbers. SYN stays on the first part,
/// FIN and PSH move to the last. Returns the number of parts.
pub fn split_payload(packets: &mut Vec<Packet>, i: usize, offsets: &[usize]) -> Result<usize, PerturbError> {
    check(packets, i)?;
    let orig = packets[i].clone();
    let len = orig.payload.len();
    let mut cuts = vec![0];
    for &off in offsets {
        if off == 0 || off >= len || off <= *cuts.last().unwrap_or(&0) {
            return Err(PerturbError::BadOffset { offset: off, len });
        }
        cuts.push(off);
    }
    cuts.push(len);
    let captured = orig.captured_len();
    let syn = u32::from(orig.flags.syn());
    let n = cuts.len() - 1;
    let parts: Vec<Packet> = cuts
        .windows(2)
        .enumerate()
        .map(|(k, w)| {
            let (first, last) = (k == 0, k + 1 == n);
            let mut flags = orig.flags.0;
            if !first {
                flags &= !TcpFlags::SYN;
            }
            if !last {
                flags &= !(TcpFlags::FIN | TcpFlags::PSH);
            }
            let seq = if first { orig.seq } else { orig.seq.wrapping_add(syn).wrapping_add(w[0] as u32) };
            Packet {
                seq,
                flags: TcpFlags(flags),
                syn_options: if first { orig.syn_options } else { None },
                payload: orig.payload[w[0]..w[1]].to_vec(),
                captured_payload: orig.captured_payload.map(|_| captured.saturating_sub(w[0]).min(w[1] - w[0])),
                ..orig.clone()
            }
        })
        .collect();
    packets.splice(i..=i, parts);
    Ok(n)
}

/// Resegment every payload longer than `max` into `max`-byte pieces.
pub fn split_all(packets: &mut Vec<Packet>, max: usize) {
    let max = max.max(1);
    let mut i = 0;
    while i < packets.len() {
        let len = packets[i].payload.len();
        if len > max {
            let offsets: Vec<usize> = (1..len.div_ceil(max)).map(|k| k * max).collect();
            let n = split_payload(packets, i, &offsets).expect("offsets are inside the payload");
            i += n;
        } else {
            i += 1;
        }
    }
}

/// Keep only the first `keep` payload bytes of packet `i` in the capture (the packet's original
/// length is unchanged, as with a snap length).
pub fn truncate_captured(packets: &mut [Packet], i: usize, keep: usize) -> Result<(), PerturbError> {
    check(packets, i)?;
    let p = &mut packets[i];
    p.captured_payload = Some(keep.min(p.payload.len()));
    Ok(())
}

/// Apply a payload snap length to every packet.
pub fn truncate_all(packets: &mut [Packet], keep: usize) {
    for p in packets {
        if p.payload.len() > keep {
            p.captured_payload = Some(keep);
        }
    }
}

/// Drop everything captured before `ts_ns` (the tracer started mid-connection).
pub fn start_at(packets: &mut Vec<Packet>, ts_ns: u64) -> usize {
    drop_where(packets, |p| p.ts_ns < ts_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::synth::{ConnectionSpec, reassemble, synthesize_connection};
    use crate::wire::{RenderOptions, render};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn conn() -> (ConnectionSpec, Vec<Packet>, Vec<u8>, Vec<u8>) {
        let f = fixtures::load("tmc-langchaingo__TestWithStreaming__0").unwrap();
        let w = render(&f, &RenderOptions::default());
        let spec = ConnectionSpec::loopback_v4(41_000).seed(5).exchange(w);
        let (packets, _) = synthesize_connection(&spec).unwrap();
        let c2s = reassemble(&packets, spec.client, spec.server);
        let s2c = reassemble(&packets, spec.server, spec.client);
        (spec, packets, c2s, s2c)
    }

    fn monotonic(p: &[Packet]) -> bool {
        p.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns)
    }

    #[test]
    fn reorder_and_duplicate_keep_the_stream() {
        let (spec, packets, c2s, s2c) = conn();
        let mut rng = StdRng::seed_from_u64(1);
        let mut p = packets.clone();
        shuffle_windows(&mut p, 4, &mut rng);
        assert_ne!(p, packets);
        assert!(monotonic(&p));
        swap(&mut p, 5, 9).unwrap();
        assert!(monotonic(&p));
        let added = duplicate_random(&mut p, 0.2, &mut rng);
        assert!(added > 0);
        let at = duplicate(&mut p, 10, 3_000_000).unwrap();
        assert!(at > 10 && monotonic(&p));
        assert_eq!(reassemble(&p, spec.client, spec.server), c2s);
        assert_eq!(reassemble(&p, spec.server, spec.client), s2c);
        assert_eq!(swap(&mut p, 0, 10_000), Err(PerturbError::NoSuchPacket { index: 10_000, len: p.len() }));
    }

    #[test]
    fn split_keeps_sequence_numbers() {
        let (spec, mut packets, c2s, s2c) = conn();
        let req = packets.iter().position(|p| p.src == spec.client && !p.payload.is_empty()).unwrap();
        let len = packets[req].payload.len();
        let n = split_payload(&mut packets, req, &[1, 2, len / 2, len - 1]).unwrap();
        assert_eq!(n, 5);
        assert_eq!(packets[req].payload.len(), 1);
        assert!(!packets[req].flags.psh() && packets[req + 4].flags.psh());
        for k in 0..4 {
            assert_eq!(packets[req + k].seq_end(), packets[req + k + 1].seq);
        }
        split_all(&mut packets, 7);
        assert!(packets.iter().all(|p| p.payload.len() <= 7));
        assert!(monotonic(&packets));
        assert_eq!(reassemble(&packets, spec.client, spec.server), c2s);
        assert_eq!(reassemble(&packets, spec.server, spec.client), s2c);
        assert_eq!(split_payload(&mut packets, req, &[0]), Err(PerturbError::BadOffset { offset: 0, len: 1 }));
    }

    #[test]
    fn loss_snaplen_and_late_start() {
        let (spec, packets, _, s2c) = conn();
        let mut p = packets.clone();
        let dropped = drop_random(&mut p, 0.3, &mut StdRng::seed_from_u64(2));
        assert!(dropped > 0);
        assert!(reassemble(&p, spec.server, spec.client).len() < s2c.len());

        let mut p = packets.clone();
        let i = p.iter().position(|p| p.src == spec.server && p.payload.len() > 40).unwrap();
        truncate_captured(&mut p, i, 40).unwrap();
        assert_eq!(p[i].captured_len(), 40);
        split_payload(&mut p, i, &[30, 50]).unwrap();
        assert_eq!([p[i].captured_len(), p[i + 1].captured_len(), p[i + 2].captured_len()], [30, 10, 0]);

        let mut p = packets.clone();
        let mid = p[p.len() / 2].ts_ns;
        let removed = start_at(&mut p, mid);
        assert!(removed > 0 && p.iter().all(|p| p.ts_ns >= mid));
        assert!(!p.iter().any(|p| p.flags.syn()));
        drop_indices(&mut p, &[0, 1, 1]);
        assert_eq!(p.len(), packets.len() - removed - 2);
    }
}
