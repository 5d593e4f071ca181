//! TCP reassembly: segments in, ordered byte streams out — per connection and direction, with
//! duplicates removed, out-of-order segments held back (bounded), and every byte the capture
//! missed reported as a [`StreamEvent::Gap`] of exact length.
//!
//! Positions are 64-bit offsets from the start of each direction's stream, so sequence-number
//! wrap-around and multi-GB streams need no special cases downstream.

use std::collections::BTreeMap;

use ahash::AHashMap;

use crate::segment::{CaptureMeta, Direction, FlowKey, Peers, Segment, Side, Timestamp};

mod ordering;
mod sync;

/// Segments to wait, after the receiver acknowledged past a hole, before the hole is declared
/// lost (the capture may deliver a packet a little after the ACK that covers it).
const ACK_GRACE_SEGMENTS: u64 = 16;

/// How far from the followed stream a SYN's sequence number must be to mean a new connection on
/// the same 4-tuple (fresh ISNs are random, so a real reuse is almost never this close).
const REUSE_WINDOW: u64 = 1 << 20;

/// Identifies one TCP connection for the lifetime of the pipeline (a reused 4-tuple gets a new id).
pub type ConnId = u64;

#[derive(Clone, Debug)]
pub struct ReassemblyConfig {
    /// Out-of-order bytes held for one connection before the hole is declared a gap.
    pub max_buffer_per_conn: usize,
    /// Out-of-order bytes held for all connections together.
    pub max_buffer_total: usize,
    /// How long (capture time) out-of-order data waits for the missing bytes.
    pub reorder_wait_ns: u64,
    /// A connection with no segment for this long (capture time) is closed.
    pub idle_timeout_ns: u64,
    /// Connections tracked at once; beyond it the least recently active are evicted.
    pub max_connections: usize,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            max_buffer_per_conn: 1 << 20,
            max_buffer_total: 32 << 20,
            reorder_wait_ns: 2_000_000_000,
            // Ollama keeps connections open with no timeout and a model load can take minutes.
            idle_timeout_ns: 15 * 60 * 1_000_000_000,
            max_connections: 100_000,
        }
    }
}

/// Why a connection's tracking ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Both directions finished with FIN.
    Fin,
    /// A RST was seen, sent by the side the direction names (`ToServer`: the client).
    Reset { by: Direction },
    /// No segment for the idle timeout.
    Idle,
    /// Evicted to stay under the connection limit.
    Evicted,
    /// A new SYN reused the 4-tuple.
    Reused,
    /// The capture ended (end of file, daemon shutdown).
    CaptureEnd,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Fin => "fin",
            CloseReason::Reset { .. } => "reset",
            CloseReason::Idle => "idle",
            CloseReason::Evicted => "evicted",
            CloseReason::Reused => "reused",
            CloseReason::CaptureEnd => "capture_end",
        }
    }
}

/// Output of reassembly.
#[derive(Debug)]
pub enum StreamEvent<'a> {
    /// First segment of a connection. `handshake` is false when the capture started mid-connection
    /// (the byte streams then start at an arbitrary point).
    Open { conn: ConnId, flow: FlowKey, ts: Timestamp, handshake: bool },
    /// In-order bytes of one direction. `pos` is the stream offset of `data[0]`; `peer_pos` is how
    /// far the sender had received the opposite stream (its ACK), when known.
    Data {
        conn: ConnId,
        dir: Direction,
        ts: Timestamp,
        pos: u64,
        peer_pos: Option<u64>,
        data: &'a [u8],
        meta: CaptureMeta,
    },
    /// `len` bytes of one direction are missing from the capture, starting at `pos`.
    Gap { conn: ConnId, dir: Direction, ts: Timestamp, pos: u64, len: u64 },
    /// `len` bytes of one direction at `pos` were left out on purpose by the capture (it was
    /// told this body is not decoded, [`CaptureMeta::skipped`]): their number and time are
    /// exact, their content unknown. Not a loss.
    Skipped { conn: ConnId, dir: Direction, ts: Timestamp, pos: u64, len: u64 },
    /// The direction ended with FIN after all its bytes.
    End { conn: ConnId, dir: Direction, ts: Timestamp },
    /// The connection is gone; no more events for `conn`.
    Close { conn: ConnId, ts: Timestamp, reason: CloseReason },
    /// The cgroup of one end's socket became known (or changed): learnt from every copy of
    /// every packet, duplicates included, since a localhost packet names the sender's cgroup
    /// at egress and the receiver's at ingress and only one copy is delivered as data.
    Peer { conn: ConnId, flow: FlowKey, side: Side, cgroup: u64, ts: Timestamp },
}

/// Counters of reassembly, for the summary and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    pub segments: u64,
    pub payload_bytes: u64,
    pub delivered_bytes: u64,
    pub duplicate_bytes: u64,
    pub out_of_order_segments: u64,
    pub gaps: u64,
    pub gap_bytes: u64,
    /// Bytes the capture left out on purpose ([`StreamEvent::Skipped`]).
    pub skipped_bytes: u64,
    pub connections: u64,
    pub midstream_connections: u64,
    pub closed_fin: u64,
    pub closed_reset: u64,
    pub closed_idle: u64,
    pub evicted: u64,
    pub buffer_overflows: u64,
    /// Segments that arrived for a connection already closed (late retransmits, stray ACKs).
    pub late_segments: u64,
}

#[derive(Debug)]
struct Held {
    ts: Timestamp,
    data: Vec<u8>,
    meta: CaptureMeta,
    peer_pos: Option<u64>,
    /// Bytes the capture cut off the end of this segment.
    missing: u32,
}

/// One direction of a connection. `repr(C)`, fields ordered by use: what every in-order
/// segment reads or writes comes first, together, and what only SYNs, holes and resets touch
/// after it — with many connections in flight, the lines a packet touches are the cost.
#[derive(Debug, Default)]
#[repr(C)]
struct Half {
    next_pos: u64,
    /// Highest position the peer has acknowledged (the receiver has every byte before it).
    acked: Option<u64>,
    /// Stream position of the FIN, once seen.
    fin_pos: Option<u64>,
    /// Out-of-order data keyed by stream position.
    held: BTreeMap<u64, Held>,
    /// Connection segment count and capture time when the peer was first seen acknowledging
    /// past a hole.
    hole_acked_at: Option<(u64, Timestamp)>,
    next_seq: u32,
    /// Stream synchronised: `next_seq` ↔ `next_pos` is known.
    synced: bool,
    ended: bool,
    isn: Option<u32>,
    held_bytes: usize,
    /// Capture time at which the oldest held segment arrived.
    held_since: Option<Timestamp>,
    /// The lowest and highest sequence numbers the peer acknowledged before this direction
    /// was synchronised (its SYN lost with the handshake's other bytes): where the stream
    /// starts, and how much of it the peer had received.
    acked_unsynced: Option<(u32, u32)>,
    /// Stream position a reset from this side said its stream had got to.
    reset_pos: Option<u64>,
}

impl Half {
    /// Stream position of sequence number `seq`, relative to the next expected byte.
    fn pos_of(&self, seq: u32) -> i64 {
        self.next_pos as i64 + seq.wrapping_sub(self.next_seq) as i32 as i64
    }

    /// The peer has received every byte before position `p`.
    fn note_acked(&mut self, p: u64) {
        self.acked = Some(self.acked.map_or(p, |a| a.max(p)));
    }

    /// End of the data the peer acknowledged (a FIN's sequence number is not a data byte).
    fn acked_data(&self) -> Option<u64> {
        let acked = self.acked?;
        Some(match self.fin_pos {
            Some(fin) => acked.min(fin),
            None => acked,
        })
    }

    fn advance(&mut self, to: u64) {
        let delta = to - self.next_pos;
        self.next_pos = to;
        self.next_seq = self.next_seq.wrapping_add(delta as u32);
    }
}

#[derive(Debug)]
#[repr(C)]
struct Conn {
    id: ConnId,
    last_ts: Timestamp,
    /// Segments seen on this connection.
    segments: u64,
    halves: [Half; 2],
    /// The cgroups of its two sockets, as far as seen.
    peers: Peers,
}

/// Which end's cgroup a segment names, if it can be trusted to: data and SYNs are sent by
/// the connection's own sockets (a SYN-ACK by the listener). Bare ACKs, FINs and RSTs are
/// skipped: the kernel answers some of those from a per-namespace control socket (RSTs,
/// TIME_WAIT ACKs) whose cgroup is nobody's.
fn peer_of(seg: &Segment<'_>) -> Option<(Side, u64)> {
    if seg.flags.rst() || (seg.payload.is_empty() && seg.missing == 0 && !seg.flags.syn()) {
        return None;
    }
    Some((seg.meta.socket_side(seg.dir)?, seg.meta.cgroup_id?))
}

/// Notes what `seg` says about the cgroups of `conn`'s sockets; reports a change.
fn learn_peer<F: FnMut(StreamEvent<'_>)>(conn: &mut Conn, seg: &Segment<'_>, out: &mut F) {
    if let Some((side, cgroup)) = peer_of(seg)
        && conn.peers.set(side, cgroup)
    {
        out(StreamEvent::Peer { conn: conn.id, flow: seg.flow, side, cgroup, ts: seg.ts });
    }
}

/// The reassembly stage.
#[derive(Debug)]
pub struct Reassembler {
    conns: AHashMap<FlowKey, Conn>,
    /// Connections that finished with FIN lately, so a retransmission captured after the close
    /// is counted late instead of opening a new connection (bounded: see [`Self::remember`]).
    finished: AHashMap<FlowKey, Finished>,
    core: Core,
}

/// Where each direction of a finished connection ended (the sequence number of its FIN).
#[derive(Clone, Copy, Debug)]
struct Finished {
    ends: [u32; 2],
    ts: Timestamp,
}

/// Everything but the connection table, so a connection can be worked on in place while the
/// counters and limits are updated.
#[derive(Debug)]
struct Core {
    config: ReassemblyConfig,
    next_id: ConnId,
    held_total: usize,
    stats: ReassemblyStats,
    now: Timestamp,
}

impl Reassembler {
    pub fn new(config: ReassemblyConfig) -> Self {
        Reassembler {
            conns: AHashMap::new(),
            finished: AHashMap::new(),
            core: Core { config, next_id: 1, held_total: 0, stats: ReassemblyStats::default(), now: Timestamp(0) },
        }
    }

    pub fn stats(&self) -> &ReassemblyStats {
        &self.core.stats
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Bytes currently held out of order, across all connections.
    pub fn held_bytes(&self) -> usize {
        self.core.held_total
    }

    /// The TCP sequence number of stream position `pos` of `flow`'s direction `dir`, once
    /// that direction is in step.
    pub fn seq_at(&self, flow: &FlowKey, dir: Direction, pos: u64) -> Option<u32> {
        let half = &self.conns.get(flow)?.halves[dir.index()];
        half.synced.then(|| half.next_seq.wrapping_add(pos.wrapping_sub(half.next_pos) as u32))
    }

    /// Latest capture time seen.
    pub fn now(&self) -> Timestamp {
        self.core.now
    }

    /// Feeds one segment.
    pub fn push<F: FnMut(StreamEvent<'_>)>(&mut self, seg: &Segment<'_>, out: &mut F) {
        self.core.stats.segments += 1;
        self.core.stats.payload_bytes += seg.payload.len() as u64;
        if seg.ts > self.core.now {
            self.core.now = seg.ts;
        }
        let d = seg.dir.index();

        if seg.flags.syn()
            && let Some(conn) = self.conns.get(&seg.flow)
        {
            let half = &conn.halves[d];
            // A SYN that fits the stream we follow is a retransmission or one captured late;
            // a reused 4-tuple starts from a fresh, unrelated sequence number.
            let fits = half.isn == Some(seg.seq) || {
                let p = half.pos_of(seg.seq.wrapping_add(1));
                (-(REUSE_WINDOW as i64)..=half.next_pos as i64 + REUSE_WINDOW as i64).contains(&p)
            };
            if !fits && half.synced {
                // Same 4-tuple, new connection: finish the old one first.
                let conn = self.conns.remove(&seg.flow).expect("present");
                self.core.close_conn(conn, seg.ts, CloseReason::Reused, out);
            }
        }

        // The common case: a segment of a known connection, worked on in place.
        if !seg.flags.rst()
            && let Some(conn) = self.conns.get_mut(&seg.flow)
        {
            learn_peer(conn, seg, out);
            if self.core.segment(conn, seg, out) {
                self.forget_finished(seg.flow);
            }
            return;
        }

        if !self.conns.contains_key(&seg.flow) {
            if !seg.flags.syn() && seg.payload.is_empty() && seg.missing == 0 {
                // A bare ACK/FIN/RST of a connection we never saw carrying data: nothing to
                // reassemble, and opening state for it would let stray packets grow the table.
                self.core.stats.late_segments += 1;
                return;
            }
            if let Some(f) = self.finished.get(&seg.flow) {
                let end = seg.seq.wrapping_add(seg.payload.len() as u32).wrapping_add(seg.missing);
                if seg.flags.syn() {
                    // A new connection on the same 4-tuple.
                    self.finished.remove(&seg.flow);
                } else if u64::from(f.ends[d].wrapping_sub(end)) < REUSE_WINDOW {
                    // Bytes from just before the FIN of a connection that finished: a
                    // retransmission (a new connection's random ISN is almost never this close).
                    self.core.stats.late_segments += 1;
                    return;
                }
            }
            if self.conns.len() >= self.core.config.max_connections {
                self.evict_oldest(out);
            }
            let id = self.core.next_id;
            self.core.next_id += 1;
            let handshake = seg.flags.syn();
            self.core.stats.connections += 1;
            if !handshake {
                self.core.stats.midstream_connections += 1;
            }
            self.conns.insert(
                seg.flow,
                Conn {
                    id,
                    halves: [Half::default(), Half::default()],
                    last_ts: seg.ts,
                    segments: 0,
                    peers: Peers::default(),
                },
            );
            out(StreamEvent::Open { conn: id, flow: seg.flow, ts: seg.ts, handshake });
        }

        if seg.flags.rst() {
            let mut conn = self.conns.remove(&seg.flow).expect("inserted above");
            sync::learn_reset(&mut conn, seg);
            self.core.close_conn(conn, seg.ts, CloseReason::Reset { by: seg.dir }, out);
            return;
        }
        let conn = self.conns.get_mut(&seg.flow).expect("inserted above");
        learn_peer(conn, seg, out);
        if self.core.segment(conn, seg, out) {
            self.forget_finished(seg.flow);
        }
    }
}

impl Core {
    /// Applies one segment to its connection; true when the connection is finished.
    fn segment<F: FnMut(StreamEvent<'_>)>(&mut self, conn: &mut Conn, seg: &Segment<'_>, out: &mut F) -> bool {
        let d = seg.dir.index();
        conn.last_ts = conn.last_ts.max(seg.ts);
        conn.segments += 1;

        let id = conn.id;
        let peer_pos = sync::learn(conn, seg);
        let half = &mut conn.halves[d];
        if half.synced {
            let p0 = half.pos_of(seg.seq.wrapping_add(seg.flags.syn() as u32));
            let wire_len = seg.payload.len() as u64 + seg.missing as u64;
            if seg.flags.fin() && p0 >= 0 {
                half.fin_pos.get_or_insert(p0 as u64 + wire_len);
            }
            if wire_len > 0 {
                self.accept(conn, d, seg, p0, peer_pos, out);
            }
        }
        // What this segment delivered may release held data of either direction.
        self.drain_both(conn, out);

        // Bytes the peer acknowledged but we never saw: released after a grace period.
        self.release_acked(conn, 0, seg.ts, out);
        self.release_acked(conn, 1, seg.ts, out);
        self.check_end(conn, 0, seg.ts, out);
        self.check_end(conn, 1, seg.ts, out);

        if conn.halves.iter().all(|h| h.ended) {
            self.discard_held(conn);
            self.stats.closed_fin += 1;
            out(StreamEvent::Close { conn: id, ts: seg.ts, reason: CloseReason::Fin });
            return true;
        }
        false
    }

    /// Forgets what a finished connection still holds: bytes past a FIN, which no segment can
    /// make deliverable. Without this the total held would count them forever.
    fn discard_held(&mut self, conn: &mut Conn) {
        for half in &mut conn.halves {
            self.held_total -= half.held_bytes;
            half.held_bytes = 0;
            half.held.clear();
            half.held_since = None;
        }
    }
}

impl Reassembler {
    /// Applies the time-based rules at capture time `now`: out-of-order data that waited too long
    /// is released with a gap, idle connections are closed. Call regularly (the pipeline does).
    pub fn expire<F: FnMut(StreamEvent<'_>)>(&mut self, now: Timestamp, out: &mut F) {
        if now > self.core.now {
            self.core.now = now;
        }
        let idle = self.core.config.idle_timeout_ns;
        let wait = self.core.config.reorder_wait_ns;
        let mut idle_keys = Vec::new();
        let mut stale_keys = Vec::new();
        for (key, conn) in &self.conns {
            if now.since(conn.last_ts) > idle as i64 {
                idle_keys.push(*key);
            } else if conn.halves.iter().any(|h| Self::waited_too_long(h, now, wait)) {
                stale_keys.push(*key);
            }
        }
        stale_keys.sort_unstable_by_key(|k| self.conns[k].id);
        for key in stale_keys {
            let mut conn = self.conns.remove(&key).expect("listed");
            for d in 0..2 {
                if Self::waited_too_long(&conn.halves[d], now, wait) {
                    self.core.settle(&mut conn, d, now, out);
                }
            }
            let finished = conn.halves.iter().all(|h| h.ended);
            if finished {
                self.core.discard_held(&mut conn);
                self.core.stats.closed_fin += 1;
                out(StreamEvent::Close { conn: conn.id, ts: now, reason: CloseReason::Fin });
                self.remember(key, &conn);
            } else {
                self.conns.insert(key, conn);
            }
        }
        // A retransmission is not expected later than out-of-order data would be.
        self.finished.retain(|_, f| now.since(f.ts) <= wait as i64);
        // Deterministic order for reproducible output.
        idle_keys.sort_unstable_by_key(|k| self.conns[k].id);
        for key in idle_keys {
            let conn = self.conns.remove(&key).expect("listed");
            self.core.close_conn(conn, now, CloseReason::Idle, out);
        }
    }

    /// Out-of-order data or an acknowledged hole has waited longer than the reorder wait.
    fn waited_too_long(h: &Half, now: Timestamp, wait: u64) -> bool {
        h.held_since.is_some_and(|t| now.since(t) > wait as i64)
            || h.hole_acked_at.is_some_and(|(_, t)| now.since(t) > wait as i64)
    }

    /// Ends every connection (end of capture).
    pub fn finish<F: FnMut(StreamEvent<'_>)>(&mut self, out: &mut F) {
        self.finished.clear();
        let mut conns: Vec<Conn> = self.conns.drain().map(|(_, c)| c).collect();
        conns.sort_unstable_by_key(|c| c.id);
        let now = self.core.now;
        for conn in conns {
            // Both ends sent FIN: it closed by itself; only bytes missing before the FINs kept
            // it open (their gaps come first).
            let reason = if conn.halves.iter().all(|h| h.fin_pos.is_some()) {
                self.core.stats.closed_fin += 1;
                CloseReason::Fin
            } else {
                CloseReason::CaptureEnd
            };
            self.core.close_conn(conn, now, reason, out);
        }
    }

    /// Drops a connection whose directions both finished with FIN, remembering where they ended.
    fn forget_finished(&mut self, flow: FlowKey) {
        let conn = self.conns.remove(&flow).expect("a finished connection is tracked");
        self.remember(flow, &conn);
    }

    /// Remembers where a connection that finished with FIN ended, for the reorder wait.
    fn remember(&mut self, flow: FlowKey, conn: &Conn) {
        // Bounded like the connection table; forgetting them all at once only means a late
        // retransmission may open a connection of its own, as it would without this memory.
        if self.finished.len() >= self.core.config.max_connections {
            self.finished.clear();
        }
        // Sequence number of the FIN (ended means every byte up to it was delivered).
        let end = |h: &Half| {
            let fin = h.fin_pos.map_or(h.next_pos, |fin| fin.min(h.next_pos));
            h.next_seq.wrapping_sub((h.next_pos - fin) as u32)
        };
        let ends = [end(&conn.halves[0]), end(&conn.halves[1])];
        self.finished.insert(flow, Finished { ends, ts: self.core.now });
    }

    fn evict_oldest<F: FnMut(StreamEvent<'_>)>(&mut self, out: &mut F) {
        // Evict an eighth at once so the scan is amortised over many new connections.
        let mut by_age: Vec<(Timestamp, ConnId, FlowKey)> =
            self.conns.iter().map(|(k, c)| (c.last_ts, c.id, *k)).collect();
        by_age.sort_unstable();
        let n = (self.conns.len() / 8).max(1);
        for (_, _, key) in by_age.into_iter().take(n) {
            let conn = self.conns.remove(&key).expect("listed");
            let ts = self.core.now;
            self.core.close_conn(conn, ts, CloseReason::Evicted, out);
        }
    }
}

fn dir_of(d: usize) -> Direction {
    if d == 0 { Direction::ToServer } else { Direction::ToClient }
}

#[cfg(test)]
mod tests;
