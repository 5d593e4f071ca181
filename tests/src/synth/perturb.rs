//! Capture imperfections applied to a packet list: reordering, duplicates, loss, resegmentation,
//! snap length, and a capture that starts late; and [`lossy`], all three of the first at given
//! rates, as a passive capture under load delivers them (a full ring buffer, libpcap behind,
//! tcpdump with a small buffer). Timestamps stay non-decreasing in list order, as in a real
//! capture file: reordering moves packets, not the clock.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

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

/// Rates of a lossy capture, per payload-carrying segment (see [`lossy`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossModel {
    /// Dropped: the capture never saw it.
    pub drop: f64,
    /// Seen twice (two hooks, a retransmission).
    pub duplicate: f64,
    /// Recorded up to `window` places later than sent (its capture time unchanged).
    pub reorder: f64,
    pub window: usize,
}

impl LossModel {
    /// `drop` loss with 2 % duplicated and 2 % reordered by up to 3 places.
    pub fn dropping(drop: f64) -> Self {
        LossModel { drop, duplicate: 0.02, reorder: 0.02, window: 3 }
    }
}

/// What [`lossy`] did: the capture, where each of its packets came from and which input packets
/// it dropped (indices into the input).
#[derive(Clone, Debug, Default)]
pub struct Lossy {
    pub packets: Vec<Packet>,
    pub origin: Vec<usize>,
    pub dropped: Vec<usize>,
    pub duplicated: usize,
    pub reordered: usize,
}

/// `packets` as a lossy capture saw them, deterministic by `seed`: each payload-carrying segment
/// dropped, duplicated (right after itself) and moved a few places later (with its own
/// timestamp, so records are then out of time order) at the model's rates. Segments without payload (handshakes, pure ACKs, FINs)
/// are kept, as the loss of a payload is what costs the tracer.
pub fn lossy(packets: &[Packet], model: &LossModel, seed: u64) -> Lossy {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Lossy::default();
    for (i, p) in packets.iter().enumerate() {
        if p.payload.is_empty() {
            out.packets.push(p.clone());
            out.origin.push(i);
            continue;
        }
        if rng.random_bool(model.drop) {
            out.dropped.push(i);
            continue;
        }
        out.packets.push(p.clone());
        out.origin.push(i);
        if rng.random_bool(model.duplicate) {
            out.packets.push(p.clone());
            out.origin.push(i);
            out.duplicated += 1;
        }
    }
    let n = out.packets.len();
    for i in 0..n {
        if !out.packets[i].payload.is_empty() && model.window > 0 && rng.random_bool(model.reorder) {
            let j = (i + rng.random_range(1..=model.window)).min(n - 1);
            if j > i {
                // Moved later, keeping its capture time: records of several CPUs merged out of
                // order (a reordered packet whose clock moved would change what was captured).
                out.packets[i..=j].rotate_left(1);
                out.origin[i..=j].rotate_left(1);
                out.reordered += 1;
            }
        }
    }
    out
}

/// `copies` of a capture's packets interleaved into one capture, as if its clients had run that
/// many times at once: copy `k` has its client ports moved up by `k × port_step` and its clock
/// by `k × time_step_ns`. Returns the packets in time order and, for each, its copy and its
/// index in `packets`.
pub fn replicate(
    packets: &[Packet],
    copies: usize,
    port_step: u16,
    time_step_ns: u64,
    server_port: u16,
) -> (Vec<Packet>, Vec<(usize, usize)>) {
    let mut all: Vec<(Packet, (usize, usize))> = Vec::with_capacity(packets.len() * copies);
    for k in 0..copies {
        for (j, p) in packets.iter().enumerate() {
            let mut q = p.clone();
            let shift = |a: &mut std::net::SocketAddr| {
                if a.port() != server_port {
                    a.set_port(a.port().wrapping_add(port_step.wrapping_mul(k as u16)));
                }
            };
            shift(&mut q.src);
            shift(&mut q.dst);
            q.ts_ns += k as u64 * time_step_ns;
            all.push((q, (k, j)));
        }
    }
    // Stable: within a copy, file order stays.
    all.sort_by_key(|(p, _)| p.ts_ns);
    all.into_iter().unzip()
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
    fn lossy_is_deterministic_and_drops_only_what_it_says() {
        let (spec, packets, c2s, s2c) = conn();
        let model = LossModel::dropping(0.2);
        let a = lossy(&packets, &model, 7);
        let b = lossy(&packets, &model, 7);
        assert_eq!((a.packets.clone(), a.dropped.clone()), (b.packets, b.dropped));
        assert_ne!(a.packets, lossy(&packets, &model, 8).packets);
        assert!(!a.dropped.is_empty() && a.dropped.iter().all(|&i| !packets[i].payload.is_empty()));
        for (p, &i) in a.packets.iter().zip(&a.origin) {
            assert_eq!(*p, packets[i], "each packet as it was, times included");
        }
        // Without drops, duplicates and late records change no byte of either stream.
        let kept = lossy(&packets, &LossModel { drop: 0.0, duplicate: 0.3, reorder: 0.3, window: 3 }, 1);
        assert!(kept.duplicated > 0 && kept.reordered > 0);
        let mut ordered = kept.packets.clone();
        ordered.sort_by_key(|p| p.ts_ns);
        assert_eq!(reassemble(&ordered, spec.client, spec.server), c2s);
        assert_eq!(reassemble(&ordered, spec.server, spec.client), s2c);
    }

    #[test]
    fn replicas_interleave_on_their_own_ports() {
        let (spec, packets, ..) = conn();
        let (all, origin) = replicate(&packets, 3, 100, 1_000, spec.server.port());
        assert_eq!(all.len(), 3 * packets.len());
        assert!(monotonic(&all));
        for (p, &(k, j)) in all.iter().zip(&origin) {
            let client = if p.src == spec.server { p.dst } else { p.src };
            assert_eq!(client.port(), spec.client.port() + 100 * k as u16);
            assert_eq!(p.ts_ns, packets[j].ts_ns + 1_000 * k as u64);
            assert_eq!(p.payload, packets[j].payload);
        }
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
