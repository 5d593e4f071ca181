//! The stages wired together: segments in, calls out. No I/O, no threads, no waiting: the run
//! driver (replay and live), tests, fuzzers and benchmarks all drive this same struct. Calls
//! leave with what the capture saw of their connection ([`ConnFacts`]); who the ends are is
//! resolved after the pipeline, by the daemon's attribution stage.

use ahash::AHashMap;

use crate::http::{ExchangeId, HttpConfig, HttpEvent, HttpStats, HttpTracker};
use crate::llm::{CallAssembler, InFlightCall, LlmCall, LlmConfig, LlmStats};
use crate::reassembly::{ConnId, Reassembler, ReassemblyConfig, ReassemblyStats, StreamEvent};
use crate::segment::{ConnFacts, Direction, FlowKey, Peers, Segment, Side, Timestamp};

#[derive(Clone, Debug, Default)]
pub struct PipelineConfig {
    pub reassembly: ReassemblyConfig,
    pub http: HttpConfig,
    pub llm: LlmConfig,
    /// Keep each connection end's cgroup as the capture first names it, for
    /// [`Pipeline::drain_peers`] (the daemon starts its attribution lookups then, long before the
    /// connection's first call ends).
    pub collect_peers: bool,
    /// Collect the bodies longer than this that the capture may leave out (only counted, of
    /// known length, not content-coded), for [`Pipeline::drain_skips`]. `None`: none are.
    pub skip_bodies_over: Option<u64>,
}

/// Counters of every stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub reassembly: ReassemblyStats,
    pub http: HttpStats,
    pub llm: LlmStats,
}

/// How often (capture time) the time-based rules run.
const EXPIRE_EVERY_NS: u64 = 1_000_000_000;

/// Most calls in flight a snapshot copies (the oldest): more than a terminal shows.
pub const IN_FLIGHT_SHOWN: usize = 256;

/// The calls in progress at one moment (see [`Pipeline::in_flight`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InFlightSnapshot {
    /// Capture time of the snapshot.
    pub now: Timestamp,
    /// Calls in flight in all (`calls` holds at most the asked-for number, oldest first).
    pub total: usize,
    pub calls: Vec<InFlightCall>,
}

#[derive(Debug)]
pub struct Pipeline {
    reassembly: Reassembler,
    /// The stages after reassembly (borrowed apart from it while it emits).
    after: After,
    last_expire: Timestamp,
    /// Bodies that may be skipped since the last drain.
    skips: Vec<BodySkip>,
}

#[derive(Debug)]
struct After {
    http: HttpTracker,
    llm: CallAssembler,
    /// Open connections (reassembly bounds how many).
    conns: AHashMap<ConnId, ConnFacts>,
    /// Connection ends named since the last drain (only with `collect_peers`).
    peers: Option<Vec<PeerSeen>>,
    /// Bodies that may be skipped, as stream positions (only with `skip_bodies_over`).
    skippable: Option<(u64, Vec<SkippableBody>)>,
}

/// A body that may be skipped, by stream positions `[from, to)` of one direction.
type SkippableBody = (FlowKey, Direction, u64, u64);

/// A body whose bytes the capture may leave out: TCP sequence numbers `[from, to)` of one
/// direction of `flow`. Its bytes are only counted; they come back as
/// [`StreamEvent::Skipped`] and the call is reported as if they had been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodySkip {
    pub flow: FlowKey,
    pub dir: Direction,
    pub from: u32,
    pub to: u32,
    /// Body bytes after `to`: sequence ranges are compared modulo 2^32, so one range covers at
    /// most [`MAX_SKIP_BYTES`]; the kernel moves on to the next range of a longer body itself.
    pub more: u64,
}

/// Longest range of one skip (see [`BodySkip::more`]): well under 2 GiB.
pub const MAX_SKIP_BYTES: u64 = 1 << 30 | 1 << 29;

/// A connection end's cgroup, as the capture first named it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerSeen {
    pub flow: FlowKey,
    pub side: Side,
    pub cgroup: u64,
}

/// Peers kept between two drains at most; a driver that falls behind loses early hints only
/// (the calls still carry their connection's cgroups).
const MAX_PEERS_KEPT: usize = 4096;

impl After {
    /// One reassembly event through HTTP and call assembly; calls leave with their
    /// connection's facts.
    fn push<F: FnMut(LlmCall)>(&mut self, ev: StreamEvent<'_>, out: &mut F) {
        match ev {
            StreamEvent::Open { conn, ts, handshake, .. } => {
                self.conns.insert(conn, ConnFacts { peers: Peers::default(), opened: ts, handshake });
            }
            StreamEvent::Peer { conn, flow, side, cgroup, .. } => {
                if let Some(f) = self.conns.get_mut(&conn) {
                    f.peers.set(side, cgroup);
                }
                if let Some(peers) = self.peers.as_mut().filter(|p| p.len() < MAX_PEERS_KEPT) {
                    peers.push(PeerSeen { flow, side, cgroup });
                }
                return;
            }
            _ => {}
        }
        let (closed, data_of) = match ev {
            StreamEvent::Close { conn, .. } => (Some(conn), None),
            StreamEvent::Data { conn, .. } if self.skippable.is_some() => (None, Some(conn)),
            _ => (None, None),
        };
        let (llm, conns) = (&mut self.llm, &self.conns);
        // Heads that start a body only counted (heads come in data only).
        let mut counted: Vec<(ExchangeId, Direction, FlowKey)> = Vec::new();
        self.http.push(ev, &mut |hev| {
            let head = match (&hev, data_of) {
                (HttpEvent::Request { id, .. }, Some(_)) => Some((*id, Direction::ToServer)),
                (HttpEvent::Response { id, .. }, Some(_)) => Some((*id, Direction::ToClient)),
                _ => None,
            };
            llm.push(hev, &mut |mut call: LlmCall| {
                if let Some(f) = conns.get(&call.conn) {
                    call.connection = *f;
                }
                out(call)
            });
            if let Some((id, dir)) = head
                && let Some(flow) = llm.body_only_counted(id, dir)
            {
                counted.push((id, dir, flow));
            }
        });
        if let (Some(conn), Some((over, found))) = (data_of, self.skippable.as_mut()) {
            // Now the HTTP stage reads those bodies: where they lie.
            for (id, dir, flow) in counted {
                if let Some((from, to)) = self.http.skippable_body(conn, id, dir)
                    && to - from > *over
                    && found.len() < MAX_PEERS_KEPT
                {
                    found.push((flow, dir, from, to));
                }
            }
        }
        if let Some(conn) = closed {
            self.conns.remove(&conn);
        }
    }
}

impl Pipeline {
    pub fn new(config: PipelineConfig) -> Self {
        Pipeline {
            reassembly: Reassembler::new(config.reassembly),
            after: After {
                http: HttpTracker::new(config.http),
                llm: CallAssembler::new(config.llm),
                conns: AHashMap::new(),
                peers: config.collect_peers.then(Vec::new),
                skippable: config.skip_bodies_over.map(|n| (n, Vec::new())),
            },
            skips: Vec::new(),
            last_expire: Timestamp(0),
        }
    }

    /// Feeds one segment; completed calls go to `out`.
    pub fn push<F: FnMut(LlmCall)>(&mut self, seg: &Segment<'_>, out: &mut F) {
        let after = &mut self.after;
        self.reassembly.push(seg, &mut |ev| after.push(ev, out));
        if let Some((_, found)) = after.skippable.as_mut().filter(|(_, f)| !f.is_empty()) {
            for (flow, dir, from, end) in found.drain(..) {
                let seq = |pos| self.reassembly.seq_at(&flow, dir, pos);
                let to = end.min(from + MAX_SKIP_BYTES);
                if let (Some(from), Some(to_seq)) = (seq(from), seq(to))
                    && self.skips.len() < MAX_PEERS_KEPT
                {
                    self.skips.push(BodySkip { flow, dir, from, to: to_seq, more: end - to });
                }
            }
        }
        // Saturating: a capture file may carry any timestamp, up to u64::MAX.
        if seg.ts.0 >= self.last_expire.0.saturating_add(EXPIRE_EVERY_NS) {
            self.expire(seg.ts, out);
        }
    }

    /// Applies time-based rules (held data, idle connections) at capture time `now`.
    pub fn expire<F: FnMut(LlmCall)>(&mut self, now: Timestamp, out: &mut F) {
        self.last_expire = now;
        let after = &mut self.after;
        self.reassembly.expire(now, &mut |ev| after.push(ev, out));
        self.after.http.expire(now);
    }

    /// End of capture: every call still open is reported (flagged incomplete).
    pub fn finish<F: FnMut(LlmCall)>(&mut self, out: &mut F) {
        let after = &mut self.after;
        self.reassembly.finish(&mut |ev| after.push(ev, out));
    }

    /// The connection ends named since the last call (with [`PipelineConfig::collect_peers`]).
    pub fn drain_peers(&mut self, out: &mut Vec<PeerSeen>) {
        if let Some(p) = self.after.peers.as_mut() {
            out.append(p);
        }
    }

    /// Starts (or stops, `None`) collecting the bodies the capture may leave out, as
    /// [`PipelineConfig::skip_bodies_over`] does.
    pub fn skip_bodies_over(&mut self, over: Option<u64>) {
        self.after.skippable = over.map(|n| (n, Vec::new()));
    }

    /// The bodies found since the last call that the capture may leave out (with
    /// [`PipelineConfig::skip_bodies_over`]).
    pub fn drain_skips(&mut self, out: &mut Vec<BodySkip>) {
        out.append(&mut self.skips);
    }

    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            reassembly: self.reassembly.stats().clone(),
            http: self.after.http.stats().clone(),
            llm: self.after.llm.stats().clone(),
        }
    }

    /// Connections tracked now.
    pub fn connections(&self) -> usize {
        self.reassembly.connections()
    }

    /// Calls in flight now.
    pub fn calls_in_flight(&self) -> usize {
        self.after.llm.in_flight()
    }

    /// The in-flight gauges (per model, operation and API), with the peaks since the previous
    /// reading; the peaks start again.
    pub fn read_in_flight(&mut self) -> Vec<crate::llm::gauge::InFlightReading> {
        self.after.llm.read_in_flight()
    }

    /// A snapshot of the calls in flight (the `max` oldest), as of capture time `now`; for
    /// `top`, taken at its refresh rate. `into` is reused.
    pub fn in_flight(&self, now: Timestamp, max: usize, into: &mut InFlightSnapshot) {
        into.now = now;
        into.total = self.after.llm.in_flight_calls(&mut into.calls, max);
    }

    /// Bytes held in unfinished HTTP heads now.
    pub fn partial_head_bytes(&self) -> usize {
        self.after.http.partial_head_bytes()
    }

    /// Bytes held out of order now.
    pub fn held_bytes(&self) -> usize {
        self.reassembly.held_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{Direction, TcpFlags};

    #[test]
    fn timestamps_at_the_end_of_time_do_not_overflow() {
        let flow = FlowKey { client: "127.0.0.1:40000".parse().unwrap(), server: "127.0.0.1:11434".parse().unwrap() };
        let mut p = Pipeline::new(PipelineConfig::default());
        for ts in [u64::MAX - 5, u64::MAX, 3] {
            let seg = Segment {
                ts: Timestamp(ts),
                flow,
                dir: Direction::ToServer,
                seq: 1,
                ack: 0,
                flags: TcpFlags(TcpFlags::ACK),
                payload: b"GET / HTTP/1.1\r\n\r\n",
                missing: 0,
                meta: Default::default(),
            };
            p.push(&seg, &mut |_| {});
        }
        p.finish(&mut |_| {});
    }

    /// A blob upload and a large plain-text answer whose bodies the capture skipped: the
    /// pipeline asked for exactly their sequence ranges, and the call comes out as if every
    /// byte had been read — sizes, times, status, nothing lost.
    #[test]
    fn skipped_bodies_keep_the_call_exact() {
        let flow = FlowKey { client: "127.0.0.1:40000".parse().unwrap(), server: "127.0.0.1:11434".parse().unwrap() };
        let mut p = Pipeline::new(PipelineConfig { skip_bodies_over: Some(1000), ..Default::default() });
        let mut calls = Vec::new();
        let mut skips = Vec::new();
        let mut push = |p: &mut Pipeline, dir, seq: u32, ack: u32, payload: &[u8], skipped: u32, ts: u64, flags: u8| {
            let seg = Segment {
                ts: Timestamp(ts),
                flow,
                dir,
                seq,
                ack,
                flags: TcpFlags(flags),
                payload,
                missing: skipped,
                meta: crate::segment::CaptureMeta { skipped: skipped > 0, ..Default::default() },
            };
            p.push(&seg, &mut |c| calls.push(c));
        };
        let (c, s) = (Direction::ToServer, Direction::ToClient);
        let ack = TcpFlags::ACK;
        push(&mut p, c, 1000, 0, b"", 0, 10, TcpFlags::SYN);
        push(&mut p, s, 5000, 1001, b"", 0, 11, TcpFlags::SYN | ack);
        let head = b"POST /api/blobs/sha256:ab HTTP/1.1\r\nContent-Length: 5000\r\n\r\n";
        let h = head.len() as u32;
        push(&mut p, c, 1001, 5001, &[&head[..], b"0123456789"].concat(), 0, 20, ack);
        p.drain_skips(&mut skips);
        assert_eq!(skips, [BodySkip { flow, dir: c, from: 1001 + h, to: 1001 + h + 5000, more: 0 }]);
        // The rest of the body, as the kernel reports it once told: lengths and times only.
        push(&mut p, c, 1001 + h + 10, 5001, b"", 2990, 30, ack);
        push(&mut p, c, 1001 + h + 3000, 5001, b"", 2000, 40, ack);
        let resp = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        push(&mut p, s, 5001, 1001 + h + 5000, resp, 0, 50, ack);
        // A large answer only counted: plain text.
        let head2 = b"GET / HTTP/1.1\r\n\r\n";
        let q = 1001 + h + 5000;
        push(&mut p, c, q, 5001 + resp.len() as u32, head2, 0, 60, ack);
        let r = 5001 + resp.len() as u32;
        let resp2 = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4000\r\n\r\nOllama";
        push(&mut p, s, r, q + head2.len() as u32, resp2, 0, 70, ack);
        p.drain_skips(&mut skips);
        let b = r + resp2.len() as u32 - 6;
        assert_eq!(skips[1], BodySkip { flow, dir: s, from: b, to: b + 4000, more: 0 });
        push(&mut p, s, b + 6, q + head2.len() as u32, b"", 3994, 80, ack);
        assert_eq!(calls.len(), 2, "{calls:#?}");
        let (up, get) = (&calls[0], &calls[1]);
        assert_eq!((up.status, up.request.body_bytes, up.request.lost_bytes), (Some(201), 5000, 0));
        assert_eq!((up.times.request_end, up.times.end), (Some(Timestamp(40)), Timestamp(50)));
        assert_eq!((get.status, get.response.body_bytes, get.times.end), (Some(200), 4000, Timestamp(80)));
        assert!(!up.is_incomplete() && !get.is_incomplete(), "{calls:#?}");
        let st = p.stats();
        assert_eq!((st.reassembly.skipped_bytes, st.http.skipped_bytes, st.reassembly.gap_bytes), (8984, 8984, 0));
    }
}
