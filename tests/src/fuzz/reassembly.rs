//! TCP reassembly under arbitrary segment sequences: any order, duplicates, overlaps, gaps,
//! SYN/FIN/RST anywhere, sequence numbers near the wrap, truncated captures, time jumps, up to
//! four connections, with small buffer limits so overflow paths run, and eBPF socket metadata
//! (hook and cgroup) on any segment.
//!
//! A segment's bytes are a function of their sequence numbers (as in real TCP, a retransmission
//! carries the same bytes), so every delivered byte can be checked against its stream position.
//!
//! Invariants: per connection and direction, data and gaps tile the stream from position 0
//! without overlap or hole, and each delivered byte is the one sent at that position; the
//! counters equal what the events say; held bytes stay within the configured limits; every
//! connection opened is closed exactly once, nothing follows its close, and the end of capture
//! leaves nothing held; a peer is reported only when it changes, for its connection's flow.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use arbitrary::Unstructured;
use tracer_core::reassembly::{CloseReason, ConnId, Reassembler, ReassemblyConfig, StreamEvent};
use tracer_core::segment::{CaptureMeta, Direction, FlowKey, Hook, Segment, Side, TcpFlags, Timestamp};

use super::input::{Encoder, take};

/// Longest payload of one fuzzed segment.
const MAX_LEN: u16 = 4096;
const START_NS: u64 = 1_767_225_600_000_000_000;

/// Limits and initial sequence numbers of a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Header {
    pub max_buffer_per_conn: u16,
    pub max_buffer_total: u16,
    pub max_connections: u8,
    /// Milliseconds.
    pub reorder_wait: u16,
    /// Units of 10 ms.
    pub idle_timeout: u16,
    pub client_isn: u32,
    pub server_isn: u32,
}

/// One segment, relative to its connection's initial sequence numbers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Op {
    pub to_client: bool,
    /// Connection 0..4 (client ports 40000..40004).
    pub flow: u8,
    /// Run the time-based rules after this segment.
    pub expire: bool,
    /// SYN, FIN, RST (ACK is set when `ack` is).
    pub flags: u8,
    /// Sequence number minus the sender's ISN.
    pub rel_seq: u32,
    pub len: u16,
    /// Payload bytes the capture kept, when fewer than `len`.
    pub captured: Option<u16>,
    /// Acknowledgment number minus the peer's ISN.
    pub ack: Option<u32>,
    /// Capture time since the previous segment, in units of 100 µs.
    pub dt: u16,
    /// Where an eBPF capture saw it: 0 nowhere (libpcap, files), else an index into [`HOOKS`].
    pub hook: u8,
    /// cgroup id of the socket (0..32), with a hook.
    pub cgroup: u8,
}

const HOOKS: [Hook; 3] = [Hook::CgroupIngress, Hook::CgroupEgress, Hook::TcEgress];

impl Header {
    fn read(u: &mut Unstructured<'_>) -> Self {
        Header {
            max_buffer_per_conn: take(u),
            max_buffer_total: take(u),
            max_connections: take(u),
            reorder_wait: take(u),
            idle_timeout: take(u),
            client_isn: take(u),
            server_isn: take(u),
        }
    }

    fn write(&self, e: &mut Encoder) {
        e.u16(self.max_buffer_per_conn)
            .u16(self.max_buffer_total)
            .u8(self.max_connections)
            .u16(self.reorder_wait)
            .u16(self.idle_timeout)
            .u32(self.client_isn)
            .u32(self.server_isn);
    }

    fn config(&self) -> ReassemblyConfig {
        ReassemblyConfig {
            max_buffer_per_conn: 1 + usize::from(self.max_buffer_per_conn),
            max_buffer_total: 1 + 2 * usize::from(self.max_buffer_total),
            reorder_wait_ns: u64::from(self.reorder_wait) * 1_000_000,
            idle_timeout_ns: u64::from(self.idle_timeout) * 10_000_000,
            max_connections: 1 + usize::from(self.max_connections % 4),
        }
    }
}

impl Op {
    fn read(u: &mut Unstructured<'_>) -> Self {
        let ctl: u8 = take(u);
        let flags: u8 = take(u);
        let rel_seq = take(u);
        let len: u16 = take(u);
        let keep: u16 = take(u);
        let ack: u32 = take(u);
        let dt = take(u);
        let len = len % (MAX_LEN + 1);
        Op {
            to_client: ctl & 1 != 0,
            flow: (ctl >> 1) & 3,
            expire: ctl & 8 != 0,
            flags: flags & (TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST),
            hook: ctl >> 6,
            cgroup: flags >> 3,
            rel_seq,
            len,
            captured: (ctl & 16 != 0).then_some(keep.min(len)),
            ack: (ctl & 32 != 0).then_some(ack),
            dt,
        }
    }

    fn write(&self, e: &mut Encoder) {
        let ctl = u8::from(self.to_client)
            | (self.flow & 3) << 1
            | u8::from(self.expire) << 3
            | u8::from(self.captured.is_some()) << 4
            | u8::from(self.ack.is_some()) << 5
            | (self.hook & 3) << 6;
        e.u8(ctl)
            .u8(self.flags & 7 | self.cgroup << 3)
            .u32(self.rel_seq)
            .u16(self.len)
            .u16(self.captured.unwrap_or(0))
            .u32(self.ack.unwrap_or(0))
            .u16(self.dt);
    }
}

/// Fuzz bytes for a header and segments (seeds from recorded traffic).
pub fn encode(header: &Header, ops: &[Op]) -> Vec<u8> {
    let mut e = Encoder::default();
    header.write(&mut e);
    for op in ops {
        op.write(&mut e);
    }
    e.finish()
}

/// The byte a sender puts at sequence number `seq`.
fn byte_at(seq: u32) -> u8 {
    seq as u8
}

fn flow(i: u8) -> FlowKey {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    FlowKey { client: SocketAddr::new(lo, 40_000 + u16::from(i)), server: SocketAddr::new(lo, 11434) }
}

#[derive(Debug, Default)]
struct StreamCheck {
    next: u64,
    /// `byte - position` (mod 256), fixed by the stream's first byte.
    shift: Option<u8>,
    ended: bool,
}

#[derive(Debug)]
struct ConnCheck {
    flow: FlowKey,
    closed: bool,
    dirs: [StreamCheck; 2],
    /// Last cgroup reported for the client and the server.
    peers: [Option<u64>; 2],
}

/// Checks the event stream as it comes.
#[derive(Debug, Default)]
struct Checker {
    conns: HashMap<ConnId, ConnCheck>,
    opened: u64,
    delivered: u64,
    gaps: u64,
    gap_bytes: u64,
    closes: HashMap<&'static str, u64>,
}

impl Checker {
    fn conn(&mut self, id: ConnId) -> &mut ConnCheck {
        let c = self.conns.get_mut(&id).unwrap_or_else(|| panic!("event for connection {id} before its Open"));
        assert!(!c.closed, "event for connection {id} after its Close");
        c
    }

    fn event(&mut self, ev: &StreamEvent<'_>) {
        match *ev {
            StreamEvent::Open { conn, flow, .. } => {
                let c = ConnCheck { flow, closed: false, dirs: Default::default(), peers: [None; 2] };
                assert!(self.conns.insert(conn, c).is_none(), "connection {conn} opened twice");
                self.opened += 1;
            }
            StreamEvent::Data { conn, dir, pos, data, .. } => {
                assert!(!data.is_empty(), "empty Data event");
                let s = &mut self.conn(conn).dirs[dir.index()];
                assert_eq!(pos, s.next, "{dir:?} data at {pos}, stream was at {}", s.next);
                for (i, &b) in data.iter().enumerate() {
                    let shift = b.wrapping_sub((pos + i as u64) as u8);
                    assert_eq!(*s.shift.get_or_insert(shift), shift, "{dir:?} byte at {} misplaced", pos + i as u64);
                }
                s.next += data.len() as u64;
                self.delivered += data.len() as u64;
            }
            StreamEvent::Gap { conn, dir, pos, len, .. } => {
                assert!(len > 0, "empty Gap event");
                let s = &mut self.conn(conn).dirs[dir.index()];
                assert_eq!(pos, s.next, "{dir:?} gap at {pos}, stream was at {}", s.next);
                s.next += len;
                self.gaps += 1;
                self.gap_bytes += len;
            }
            // No segment here says its bytes were skipped on purpose.
            StreamEvent::Skipped { .. } => panic!("a skip from segments that skipped nothing"),
            StreamEvent::End { conn, dir, .. } => {
                let s = &mut self.conn(conn).dirs[dir.index()];
                assert!(!s.ended, "{dir:?} ended twice");
                s.ended = true;
            }
            StreamEvent::Close { conn, reason, .. } => {
                self.conn(conn).closed = true;
                *self.closes.entry(reason.as_str()).or_default() += 1;
            }
            StreamEvent::Peer { conn, flow, side, cgroup, .. } => {
                let c = self.conn(conn);
                assert_eq!(flow, c.flow, "peer of connection {conn} on another flow");
                let last = &mut c.peers[usize::from(side == Side::Server)];
                assert_ne!(*last, Some(cgroup), "{side:?} cgroup {cgroup} reported twice in a row");
                *last = Some(cgroup);
            }
        }
    }

    fn closed(&self, reason: CloseReason) -> u64 {
        self.closes.get(reason.as_str()).copied().unwrap_or(0)
    }
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let header = Header::read(&mut u);
    let config = header.config();
    let mut r = Reassembler::new(config.clone());
    let mut check = Checker::default();
    let mut ts = START_NS;
    let mut payload = Vec::new();
    let mut pushed = 0u64;
    let mut fed = 0u64;
    while !u.is_empty() {
        let op = Op::read(&mut u);
        ts += u64::from(op.dt) * 100_000;
        let (isn, peer_isn) = match op.to_client {
            false => (header.client_isn, header.server_isn),
            true => (header.server_isn, header.client_isn),
        };
        // Each connection has its own sequence spaces.
        let conn_shift = u32::from(op.flow) << 28;
        let seq = isn.wrapping_add(conn_shift).wrapping_add(op.rel_seq);
        // Data starts after the SYN, as the sender numbers it.
        let first = seq.wrapping_add(u32::from(op.flags & TcpFlags::SYN != 0));
        payload.clear();
        payload.extend((0..u32::from(op.len)).map(|i| byte_at(first.wrapping_add(i))));
        let kept = op.captured.map_or(payload.len(), usize::from);
        let mut flags = op.flags;
        if op.ack.is_some() {
            flags |= TcpFlags::ACK;
        }
        let seg = Segment {
            ts: Timestamp(ts),
            flow: flow(op.flow),
            dir: if op.to_client { Direction::ToClient } else { Direction::ToServer },
            seq,
            ack: peer_isn.wrapping_add(conn_shift).wrapping_add(op.ack.unwrap_or(0)),
            flags: TcpFlags(flags),
            payload: &payload[..kept],
            missing: (payload.len() - kept) as u32,
            meta: match op.hook {
                0 => CaptureMeta::default(),
                h => CaptureMeta {
                    cgroup_id: Some(u64::from(op.cgroup)),
                    ifindex: Some(1),
                    hook: Some(HOOKS[usize::from(h) - 1]),
                    tls: None,
                    skipped: false,
                },
            },
        };
        r.push(&seg, &mut |ev| check.event(&ev));
        pushed += 1;
        fed += kept as u64;
        if op.expire {
            r.expire(Timestamp(ts), &mut |ev| check.event(&ev));
        }
        let held = r.held_bytes();
        assert!(held <= config.max_buffer_total, "{held} bytes held, limit {}", config.max_buffer_total);
        // The per-connection limit applies to each direction.
        assert!(
            held <= 2 * config.max_buffer_per_conn * r.connections(),
            "{held} bytes held by {} connections",
            r.connections()
        );
        assert!(r.connections() <= config.max_connections, "{} connections tracked", r.connections());
    }
    r.finish(&mut |ev| check.event(&ev));

    assert_eq!(r.held_bytes(), 0, "bytes held after the end of capture");
    assert_eq!(r.connections(), 0, "connections left after the end of capture");
    assert!(check.conns.values().all(|c| c.closed), "a connection was never closed");
    let s = r.stats();
    assert_eq!(s.segments, pushed);
    assert_eq!(s.payload_bytes, fed);
    assert_eq!(s.delivered_bytes, check.delivered, "delivered_bytes counter");
    assert_eq!((s.gaps, s.gap_bytes), (check.gaps, check.gap_bytes), "gap counters");
    assert!(s.delivered_bytes + s.duplicate_bytes <= s.payload_bytes, "more bytes accounted than fed: {s:?}");
    assert_eq!(s.connections, check.opened, "connections counter");
    assert_eq!(s.closed_fin, check.closed(CloseReason::Fin), "closed_fin counter");
    assert_eq!(s.closed_reset, check.closed(CloseReason::Reset { by: Direction::ToServer }), "closed_reset counter");
    assert_eq!(s.closed_idle, check.closed(CloseReason::Idle), "closed_idle counter");
    assert_eq!(s.evicted, check.closed(CloseReason::Evicted), "evicted counter");
}
