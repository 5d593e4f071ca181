use std::net::SocketAddr;

use super::*;
use crate::segment::{TcpFlags, Timestamp};

fn flow() -> FlowKey {
    FlowKey { client: "127.0.0.1:40000".parse::<SocketAddr>().unwrap(), server: "127.0.0.1:11434".parse().unwrap() }
}

/// Collected output, with data concatenated per direction and gaps marked as `#<len>`.
#[derive(Default, Debug)]
struct Out {
    streams: [Vec<u8>; 2],
    /// Where the current connection's streams begin in `streams`.
    base: [usize; 2],
    gaps: Vec<(Direction, u64, u64)>,
    opens: Vec<bool>,
    ends: Vec<Direction>,
    closes: Vec<CloseReason>,
    peers: Vec<(Side, u64)>,
    /// Data and gaps in the order they came, as `C:bytes` / `S:#len`.
    order: Vec<String>,
}

impl Out {
    fn sink(&mut self) -> impl FnMut(StreamEvent<'_>) + '_ {
        |ev| match ev {
            StreamEvent::Open { handshake, .. } => {
                self.opens.push(handshake);
                self.base = [self.streams[0].len(), self.streams[1].len()];
            }
            StreamEvent::Data { dir, pos, data, .. } => {
                let d = dir.index();
                assert_eq!(pos as usize, self.streams[d].len() - self.base[d], "positions are contiguous");
                self.order.push(format!("{}:{}", if d == 0 { 'C' } else { 'S' }, String::from_utf8_lossy(data)));
                self.streams[dir.index()].extend_from_slice(data)
            }
            StreamEvent::Gap { dir, pos, len, .. } => {
                let d = dir.index();
                assert_eq!(pos as usize, self.streams[d].len() - self.base[d]);
                self.gaps.push((dir, pos, len));
                self.order.push(format!("{}:#{len}", if d == 0 { 'C' } else { 'S' }));
                self.streams[dir.index()].extend(std::iter::repeat_n(b'#', len as usize));
            }
            StreamEvent::Skipped { dir, pos, len, .. } => {
                let d = dir.index();
                assert_eq!(pos as usize, self.streams[d].len() - self.base[d]);
                self.order.push(format!("{}:~{len}", if d == 0 { 'C' } else { 'S' }));
                self.streams[dir.index()].extend(std::iter::repeat_n(b'~', len as usize));
            }
            StreamEvent::End { dir, .. } => self.ends.push(dir),
            StreamEvent::Close { reason, .. } => self.closes.push(reason),
            StreamEvent::Peer { side, cgroup, .. } => self.peers.push((side, cgroup)),
        }
    }
}

struct Seg {
    dir: Direction,
    seq: u32,
    ack: u32,
    flags: u8,
    data: Vec<u8>,
    missing: u32,
}

fn seg(dir: Direction, seq: u32, flags: u8, data: &[u8]) -> Seg {
    Seg { dir, seq, ack: 0, flags, data: data.to_vec(), missing: 0 }
}

fn run(r: &mut Reassembler, segs: &[Seg], out: &mut Out) {
    run_at(r, flow(), 1_000, segs, out);
}

/// Feeds `segs` on `flow`, the first at capture time `t0` ns, then one every nanosecond.
fn run_at(r: &mut Reassembler, flow: FlowKey, t0: u64, segs: &[Seg], out: &mut Out) {
    let mut sink = out.sink();
    for (i, s) in segs.iter().enumerate() {
        let segment = Segment {
            ts: Timestamp(t0 + i as u64),
            flow,
            dir: s.dir,
            seq: s.seq,
            ack: s.ack,
            flags: TcpFlags(s.flags),
            payload: &s.data,
            missing: s.missing,
            meta: Default::default(),
        };
        r.push(&segment, &mut sink);
    }
}

const C: Direction = Direction::ToServer;
const S: Direction = Direction::ToClient;
const SYN: u8 = TcpFlags::SYN;
const ACK: u8 = TcpFlags::ACK;
const FIN: u8 = TcpFlags::FIN | TcpFlags::ACK;

fn handshake(cisn: u32, sisn: u32) -> Vec<Seg> {
    vec![seg(C, cisn, SYN, b""), seg(S, sisn, SYN | ACK, b""), seg(C, cisn + 1, ACK, b"")]
}

#[test]
fn in_order_with_handshake_and_fin() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut segs = handshake(100, 9000);
    segs.push(seg(C, 101, ACK, b"GET / HTTP/1.1\r\n\r\n"));
    segs.push(seg(S, 9001, ACK, b"HTTP/1.1 200 OK\r\n"));
    segs.push(seg(S, 9001 + 17, FIN, b"\r\n"));
    segs.push(seg(C, 101 + 18, FIN, b""));
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    assert_eq!(out.opens, vec![true]);
    assert_eq!(out.streams[0], b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(out.streams[1], b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(out.ends, vec![S, C]);
    assert_eq!(out.closes, vec![CloseReason::Fin]);
    assert_eq!(r.connections(), 0);
}

#[test]
fn reordered_duplicated_and_overlapping_segments() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut segs = handshake(u32::MAX - 3, 5); // client sequence numbers wrap
    let base = (u32::MAX - 3).wrapping_add(1);
    segs.push(seg(C, base.wrapping_add(6), ACK, b"ghijkl"));
    segs.push(seg(C, base, ACK, b"abc"));
    segs.push(seg(C, base, ACK, b"abc")); // exact duplicate
    segs.push(seg(C, base.wrapping_add(2), ACK, b"cdefg")); // overlaps both sides
    segs.push(seg(C, base.wrapping_add(6), ACK, b"ghijkl")); // retransmit of delivered data
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    r.finish(&mut out.sink());
    assert_eq!(out.streams[0], b"abcdefghijkl");
    assert!(out.gaps.is_empty());
    assert_eq!(r.stats().delivered_bytes, 12);
}

#[test]
fn hole_acknowledged_by_peer_is_a_gap() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut segs = handshake(0, 1000);
    segs.push(seg(S, 1001, ACK, b"aaaa"));
    // bytes 1005..1009 never captured
    segs.push(seg(S, 1009, ACK, b"cccc"));
    let mut ack = seg(C, 1, ACK, b"");
    ack.ack = 1013; // client received everything
    segs.push(ack);
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    // The capture may still deliver the bytes a little late: not yet a gap.
    assert_eq!(out.streams[1], b"aaaa");
    let mut more = Vec::new();
    for _ in 0..ACK_GRACE_SEGMENTS {
        let mut a = seg(C, 1, ACK, b"");
        a.ack = 1013;
        more.push(a);
    }
    run(&mut r, &more, &mut out);
    assert_eq!(out.streams[1], b"aaaa####cccc");
    assert_eq!(out.gaps, vec![(S, 4, 4)]);
}

#[test]
fn a_hole_released_after_its_grace_takes_no_later_hole_with_it() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut segs = handshake(0, 1000);
    segs.push(seg(S, 1001, ACK, b"aaaa"));
    // 1005..1009 lost; 1013..1017 recorded late, behind the ACK that covers everything.
    segs.push(seg(S, 1009, ACK, b"cccc"));
    segs.push(seg(S, 1017, ACK, b"eeee"));
    for _ in 0..=ACK_GRACE_SEGMENTS {
        let mut a = seg(C, 1, ACK, b"");
        a.ack = 1021;
        segs.push(a);
    }
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    // The first hole has waited its grace: a gap. The second waits for its own.
    assert_eq!(out.streams[1], b"aaaa####cccc");
    run(&mut r, &[seg(S, 1013, ACK, b"dddd")], &mut out);
    assert_eq!(out.streams[1], b"aaaa####ccccddddeeee");
    assert_eq!(out.gaps, vec![(S, 4, 4)]);
}

#[test]
fn data_held_for_its_cause_waits_on_the_other_directions_hole_not_ahead_of_it() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut segs = handshake(0, 1000);
    segs.push(seg(C, 1, ACK, b"GET1"));
    // 5..9 lost; 9..13 seen; 13..17 lost; 17..21 seen. The server had it all when it answered.
    segs.push(seg(C, 9, ACK, b"CCCC"));
    segs.push(seg(C, 17, ACK, b"EEEE"));
    let mut reply = seg(S, 1001, ACK, b"RRRR");
    reply.ack = 21;
    segs.push(reply);
    // The client acknowledges the reply (held, for its cause) again and again.
    for _ in 0..=2 * ACK_GRACE_SEGMENTS {
        let mut a = seg(C, 21, ACK, b"");
        a.ack = 1005;
        segs.push(a);
    }
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    // Each request hole is given up in turn; the reply never passes the bytes it answers.
    assert_eq!(out.order, ["C:GET1", "C:#4", "C:CCCC", "C:#4", "C:EEEE", "S:RRRR"]);
}

#[test]
fn late_capture_of_acknowledged_bytes_is_not_a_gap() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut segs = handshake(0, 1000);
    segs.push(seg(S, 1001, ACK, b"aaaa"));
    let mut ack = seg(C, 1, ACK, b"");
    ack.ack = 1013;
    segs.push(seg(S, 1009, ACK, b"cccc"));
    segs.push(ack);
    segs.push(seg(S, 1005, ACK, b"bbbb")); // captured after the ACK that covers it
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    assert_eq!(out.streams[1], b"aaaabbbbcccc");
    assert!(out.gaps.is_empty());
}

#[test]
fn lost_last_segment_before_fin_is_settled_by_time() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut segs = handshake(0, 1000);
    segs.push(seg(S, 1001, ACK, b"aaaa"));
    // bytes 1005..1009 lost, then the server's FIN and the client's ACK of it
    segs.push(seg(S, 1009, FIN, b""));
    let mut ack = seg(C, 1, FIN, b"");
    ack.ack = 1010;
    segs.push(ack);
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    assert!(out.closes.is_empty());
    r.expire(Timestamp(10_000_000_000), &mut out.sink());
    assert_eq!(out.streams[1], b"aaaa####");
    assert_eq!(out.closes, vec![CloseReason::Fin]);
}

#[test]
fn a_connection_both_ends_closed_is_not_cut_by_the_end_of_the_capture() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut segs = handshake(0, 1000);
    segs.push(seg(S, 1001, ACK, b"aaaa"));
    // 1005..1009 lost; both FINs seen, then the capture ends before the hole is given up.
    segs.push(seg(S, 1009, FIN, b""));
    let mut fin = seg(C, 1, FIN, b"");
    fin.ack = 1010;
    segs.push(fin);
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    r.finish(&mut out.sink());
    assert_eq!(out.streams[1], b"aaaa####");
    assert_eq!(out.closes, vec![CloseReason::Fin], "closed by its ends, its hole given up");
    // Without both FINs the capture did end first.
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut segs = handshake(0, 1000);
    segs.push(seg(S, 1001, ACK, b"aaaa"));
    segs.push(seg(S, 1009, FIN, b""));
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    r.finish(&mut out.sink());
    assert_eq!(out.closes, vec![CloseReason::CaptureEnd]);
}

#[test]
fn truncated_capture_becomes_gap() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut segs = handshake(0, 1000);
    let mut s = seg(S, 1001, ACK, b"abc");
    s.missing = 5;
    segs.push(s);
    segs.push(seg(S, 1009, ACK, b"z"));
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    assert_eq!(out.streams[1], b"abc#####z");
}

#[test]
fn midstream_start_and_reset() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let segs =
        vec![seg(S, 777, ACK, b"tail of a body"), seg(C, 5, ACK, b"POST /api/chat"), seg(C, 19, TcpFlags::RST, b"")];
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    assert_eq!(out.opens, vec![false]);
    assert_eq!(out.streams[1], b"tail of a body");
    assert_eq!(out.closes, vec![CloseReason::Reset { by: Direction::ToServer }]);
    assert_eq!(r.stats().midstream_connections, 1);
}

#[test]
fn unfilled_hole_is_released_at_end_and_by_buffer_cap() {
    let cfg = ReassemblyConfig { max_buffer_per_conn: 8, ..Default::default() };
    let mut r = Reassembler::new(cfg);
    let mut segs = handshake(0, 0);
    segs.push(seg(C, 1, ACK, b"ab"));
    segs.push(seg(C, 5, ACK, b"efgh")); // hole at 3..5, held
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    assert_eq!(out.streams[0], b"ab");
    run(&mut r, &[seg(C, 9, ACK, b"ijklmnop")], &mut out); // exceeds cap: released
    assert_eq!(out.streams[0], b"ab##efghijklmnop");
    assert_eq!(r.stats().buffer_overflows, 1);
    assert_eq!(r.held_bytes(), 0);
}

#[test]
fn reused_tuple_starts_a_new_connection() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut segs = handshake(10, 20);
    segs.push(seg(C, 11, ACK, b"first"));
    // A fresh ISN far from the old stream: a new connection, not a late SYN.
    segs.extend(handshake(3_000_000_000, 6000));
    segs.push(seg(C, 3_000_000_001, ACK, b"second"));
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    assert_eq!(out.opens, vec![true, true]);
    assert_eq!(out.closes, vec![CloseReason::Reused]);
    assert_eq!(out.streams[0], b"firstsecond");
}

#[test]
fn idle_connections_expire() {
    let cfg = ReassemblyConfig { idle_timeout_ns: 10, ..Default::default() };
    let mut r = Reassembler::new(cfg);
    let mut out = Out::default();
    run(&mut r, &handshake(0, 0), &mut out);
    r.expire(Timestamp(1_000_000), &mut out.sink());
    assert_eq!(out.closes, vec![CloseReason::Idle]);
    assert_eq!(r.connections(), 0);
}

#[test]
fn data_past_a_fin_is_forgotten_when_the_connection_finishes() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut segs = handshake(100, 9000);
    segs.push(seg(C, 101, ACK, b"GET"));
    segs.push(seg(C, 104, FIN, b""));
    // Bytes beyond the client's FIN (never valid TCP) are held: no segment can fill before them.
    segs.push(seg(C, 110, ACK, b"junk"));
    segs.push(seg(S, 9001, FIN, b""));
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    assert_eq!(out.closes, vec![CloseReason::Fin]);
    assert_eq!(r.connections(), 0);
    // The finished connection's held bytes no longer count against the limits.
    assert_eq!(r.held_bytes(), 0);
}

#[test]
fn a_syn_ack_tells_where_the_peer_stream_starts() {
    // The capture delivered the client's SYN after its first two data segments, in reverse
    // order; the server's SYN-ACK came first and says the client's data starts at 101.
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let segs = vec![
        Seg { ack: 101, ..seg(S, 9000, SYN | ACK, b"") },
        Seg { ack: 9001, ..seg(C, 104, ACK, b"def") },
        Seg { ack: 9001, ..seg(C, 101, ACK, b"abc") },
        seg(C, 100, SYN, b""),
    ];
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    r.finish(&mut out.sink());
    assert_eq!(out.opens, vec![true]);
    assert_eq!(out.streams[0], b"abcdef");
    assert!(out.gaps.is_empty());
}

/// A connection that exchanges `GET`/`OK` and finishes with FIN on both sides.
fn closed_exchange() -> Vec<Seg> {
    let mut segs = handshake(100, 9000);
    segs.push(seg(C, 101, ACK, b"GET"));
    segs.push(seg(S, 9001, ACK, b"OK"));
    segs.push(seg(C, 104, FIN, b""));
    segs.push(seg(S, 9003, FIN, b""));
    segs
}

#[test]
fn a_retransmission_after_the_close_is_late_not_a_new_connection() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut segs = closed_exchange();
    // Both copies of a packet seen at two hooks, the second one after the close.
    segs.push(seg(S, 9001, ACK, b"OK"));
    segs.push(seg(C, 101, ACK, b"GET"));
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    assert_eq!(out.opens, vec![true]);
    assert_eq!(out.closes, vec![CloseReason::Fin]);
    assert_eq!(r.stats().late_segments, 2);
    // Bytes past where the connection ended are not a retransmission of it.
    run(&mut r, &[seg(C, 104, ACK, b"more")], &mut out);
    assert_eq!(out.opens, vec![true, false]);
    // A new connection on the same 4-tuple still opens.
    run(&mut r, &[seg(C, 7_000_000, SYN, b""), seg(C, 7_000_001, ACK, b"GET")], &mut out);
    r.finish(&mut out.sink());
    assert_eq!(out.opens, vec![true, false, true]);
}

#[test]
fn finished_connections_are_remembered_for_the_reorder_wait_only() {
    let config = ReassemblyConfig::default();
    let wait = config.reorder_wait_ns;
    let mut r = Reassembler::new(config);
    let mut out = Out::default();
    run(&mut r, &closed_exchange(), &mut out);
    r.expire(Timestamp(1_000 + wait), &mut out.sink());
    run_at(&mut r, flow(), 1_000 + wait, &[seg(S, 9001, ACK, b"OK")], &mut out);
    assert_eq!(out.opens, vec![true], "within the wait: late");
    r.expire(Timestamp(1_000 + 2 * wait + 10), &mut out.sink());
    assert!(r.finished.is_empty());
    run_at(&mut r, flow(), 1_000 + 2 * wait + 10, &[seg(S, 9001, ACK, b"OK")], &mut out);
    assert_eq!(out.opens, vec![true, false], "after the wait: a connection of its own");
}

#[test]
fn the_memory_of_finished_connections_is_bounded() {
    let mut r = Reassembler::new(ReassemblyConfig { max_connections: 2, ..Default::default() });
    let mut out = Out::default();
    for port in 0..5u16 {
        let mut f = flow();
        f.client.set_port(40_000 + port);
        run_at(&mut r, f, 1_000 + u64::from(port) * 10, &closed_exchange(), &mut out);
        assert!(r.finished.len() <= 2, "{} remembered", r.finished.len());
    }
    assert_eq!(out.closes, vec![CloseReason::Fin; 5]);
    assert!(r.conns.is_empty());
}

/// Each end's cgroup is learnt from the copy of a packet seen at that end's socket, duplicates
/// included; RSTs, bare ACKs and TC captures teach nothing.
#[test]
fn peers_learnt_from_both_copies() {
    use crate::segment::{CaptureMeta, Hook};
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut out = Out::default();
    let mut sink = out.sink();
    let at = |hook: Hook, cgroup: u64| CaptureMeta {
        cgroup_id: Some(cgroup),
        ifindex: Some(1),
        hook: Some(hook),
        tls: None,
        skipped: false,
    };
    let steps: Vec<(Direction, u32, u8, &[u8], CaptureMeta)> = vec![
        // SYN leaves the client (egress: client's cgroup 10) and reaches the listener (ingress: 20).
        (C, 100, SYN, b"", at(Hook::CgroupEgress, 10)),
        (C, 100, SYN, b"", at(Hook::CgroupIngress, 20)),
        // A bare ACK and a RST from a control socket in another cgroup are ignored.
        (C, 101, TcpFlags::ACK, b"", at(Hook::CgroupEgress, 99)),
        // The request, twice: delivered once, but both copies count.
        (C, 101, TcpFlags::ACK, b"GET", at(Hook::CgroupEgress, 10)),
        (C, 101, TcpFlags::ACK, b"GET", at(Hook::CgroupIngress, 20)),
        // A TC copy carries no socket.
        (
            S,
            500,
            TcpFlags::ACK,
            b"OK",
            CaptureMeta { cgroup_id: None, ifindex: Some(1), hook: Some(Hook::TcEgress), tls: None, skipped: false },
        ),
        (S, 502, TcpFlags::RST, b"", at(Hook::CgroupEgress, 99)),
    ];
    for (i, (dir, seq, flags, data, meta)) in steps.into_iter().enumerate() {
        let segment = Segment {
            ts: Timestamp(1_000 + i as u64),
            flow: flow(),
            dir,
            seq,
            ack: 0,
            flags: TcpFlags(flags),
            payload: data,
            missing: 0,
            meta,
        };
        r.push(&segment, &mut sink);
    }
    drop(sink);
    assert_eq!(out.peers, vec![(Side::Client, 10), (Side::Server, 20)]);
    assert_eq!(&out.streams[0][..], b"GET");
}

#[test]
fn skipped_bytes_are_placed_exactly_and_are_no_gap() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut out = Out::default();
    run(&mut r, &[seg(C, 100, SYN, b""), seg(C, 101, ACK, b"head")], &mut out);
    let skipped = |seq: u32, len: u32, ts: u64| Segment {
        ts: Timestamp(ts),
        flow: flow(),
        dir: C,
        seq,
        ack: 0,
        flags: TcpFlags(ACK),
        payload: b"",
        missing: len,
        meta: CaptureMeta { skipped: true, ..CaptureMeta::default() },
    };
    let mut sink = out.sink();
    // In order, then one held behind a later skip that arrived first (out of order).
    r.push(&skipped(105, 10, 2_000), &mut sink);
    r.push(&skipped(120, 5, 2_001), &mut sink);
    r.push(&skipped(115, 5, 2_002), &mut sink);
    let data = Segment { seq: 125, payload: b"tail", missing: 0, meta: CaptureMeta::default(), ..skipped(0, 0, 2_003) };
    r.push(&data, &mut sink);
    drop(sink);
    assert_eq!(out.order, ["C:head", "C:~10", "C:~5", "C:~5", "C:tail"]);
    assert!(out.gaps.is_empty());
    assert_eq!(r.stats().skipped_bytes, 20);
    assert_eq!(r.stats().gap_bytes, 0);
    assert_eq!(r.seq_at(&flow(), C, 4), Some(105));
    assert_eq!(r.seq_at(&flow(), S, 0), None);
}

#[test]
fn a_lost_syn_ack_leaves_the_peer_stream_starting_where_it_was_acknowledged() {
    // The SYN-ACK and the whole first response were lost; the client's ACKs say the server's
    // stream starts at 9001 and that 10 bytes came before the response seen at 9011.
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let segs = vec![
        seg(C, 100, SYN, b""),
        Seg { ack: 9001, ..seg(C, 101, ACK, b"") },
        Seg { ack: 9001, ..seg(C, 101, ACK, b"GET /a") },
        Seg { ack: 9011, ..seg(C, 107, ACK, b"GET /b") },
        Seg { ack: 113, ..seg(S, 9011, ACK, b"second") },
        Seg { ack: 9017, ..seg(C, 113, ACK, b"") },
        Seg { ack: 9017, ..seg(C, 113, ACK, b"") },
        Seg { ack: 9017, ..seg(C, 113, ACK, b"") },
        Seg { ack: 9017, ..seg(C, 113, ACK, b"") },
    ];
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    r.finish(&mut out.sink());
    assert_eq!(out.gaps, vec![(S, 0, 10)]);
    assert_eq!(out.streams[1], b"##########second");
    // The lost response goes before `GET /b`, whose ACK says the client had received it.
    assert_eq!(out.order, vec!["C:GET /a", "S:#10", "C:GET /b", "S:second"]);
}

/// A handshake, then `GET` answered by `OK`, each acknowledging what came before.
fn get_answered_ok() -> Vec<Seg> {
    let mut segs = handshake(100, 9000);
    segs.push(Seg { ack: 9001, ..seg(C, 101, ACK, b"GET") });
    segs.push(Seg { ack: 104, ..seg(S, 9001, ACK, b"OK") });
    segs
}

#[test]
fn a_reset_right_after_a_lost_last_segment_ends_the_stream_with_its_gap() {
    // The server's last 5 bytes were lost; the client acknowledged them and reset at once,
    // before the grace for acknowledged holes was up.
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut segs = get_answered_ok();
    segs.push(Seg { ack: 9008, ..seg(C, 104, ACK, b"") });
    segs.push(Seg { ack: 9008, ..seg(C, 104, TcpFlags::RST | ACK, b"") });
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    assert_eq!(out.gaps, vec![(S, 2, 5)]);
    assert_eq!(out.streams[1], b"OK#####");
    assert_eq!(out.closes, vec![CloseReason::Reset { by: C }]);
}

#[test]
fn a_reset_after_a_fin_counts_the_fin_not_a_lost_byte() {
    // A client that closes, then resets: the reset's sequence number is one past its FIN.
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut segs = get_answered_ok();
    segs.push(Seg { ack: 9003, ..seg(C, 104, FIN, b"") });
    segs.push(Seg { ack: 9003, ..seg(C, 105, TcpFlags::RST | ACK, b"") });
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    assert!(out.gaps.is_empty(), "{:?}", out.gaps);
    // Without the FIN in the capture, its sequence number is still no lost byte.
    let mut r = Reassembler::new(ReassemblyConfig::default());
    segs.remove(segs.len() - 2);
    let mut out = Out::default();
    run(&mut r, &segs, &mut out);
    assert!(out.gaps.is_empty(), "{:?}", out.gaps);
}
