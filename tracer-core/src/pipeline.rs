//! The stages wired together: segments in, calls out. No I/O, no threads, no waiting: the run
//! driver (replay and live), tests, fuzzers and benchmarks all drive this same struct. Calls
//! leave with what the capture saw of their connection ([`ConnFacts`]); who the ends are is
//! resolved after the pipeline, by the daemon's attribution stage.

use ahash::AHashMap;

use crate::http::{HttpConfig, HttpStats, HttpTracker};
use crate::llm::{CallAssembler, InFlightCall, LlmCall, LlmConfig, LlmStats};
use crate::reassembly::{ConnId, Reassembler, ReassemblyConfig, ReassemblyStats, StreamEvent};
use crate::segment::{ConnFacts, FlowKey, Peers, Segment, Side, Timestamp};

#[derive(Clone, Debug, Default)]
pub struct PipelineConfig {
    pub reassembly: ReassemblyConfig,
    pub http: HttpConfig,
    pub llm: LlmConfig,
    /// Keep each connection end's cgroup as the capture first names it, for
    /// [`Pipeline::drain_peers`] (the daemon starts its attribution lookups then, long before the
    /// connection's first call ends).
    pub collect_peers: bool,
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
}

#[derive(Debug)]
struct After {
    http: HttpTracker,
    llm: CallAssembler,
    /// Open connections (reassembly bounds how many).
    conns: AHashMap<ConnId, ConnFacts>,
    /// Connection ends named since the last drain (only with `collect_peers`).
    peers: Option<Vec<PeerSeen>>,
}

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
        let closed = match ev {
            StreamEvent::Close { conn, .. } => Some(conn),
            _ => None,
        };
        let (llm, conns) = (&mut self.llm, &self.conns);
        self.http.push(ev, &mut |hev| {
            llm.push(hev, &mut |mut call: LlmCall| {
                if let Some(f) = conns.get(&call.conn) {
                    call.connection = *f;
                }
                out(call)
            })
        });
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
            },
            last_expire: Timestamp(0),
        }
    }

    /// Feeds one segment; completed calls go to `out`.
    pub fn push<F: FnMut(LlmCall)>(&mut self, seg: &Segment<'_>, out: &mut F) {
        let after = &mut self.after;
        self.reassembly.push(seg, &mut |ev| after.push(ev, out));
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
}
