//! The stages wired together: segments in, calls out. No I/O, no threads: the replay command,
//! the live daemon, tests, fuzzers and benchmarks all drive this same struct.

use crate::http::{HttpConfig, HttpStats, HttpTracker};
use crate::llm::{CallAssembler, LlmCall, LlmConfig, LlmStats};
use crate::reassembly::{Reassembler, ReassemblyConfig, ReassemblyStats};
use crate::segment::{Segment, Timestamp};

#[derive(Clone, Debug, Default)]
pub struct PipelineConfig {
    pub reassembly: ReassemblyConfig,
    pub http: HttpConfig,
    pub llm: LlmConfig,
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

#[derive(Debug)]
pub struct Pipeline {
    reassembly: Reassembler,
    http: HttpTracker,
    llm: CallAssembler,
    last_expire: Timestamp,
}

impl Pipeline {
    pub fn new(config: PipelineConfig) -> Self {
        Pipeline {
            reassembly: Reassembler::new(config.reassembly),
            http: HttpTracker::new(config.http),
            llm: CallAssembler::new(config.llm),
            last_expire: Timestamp(0),
        }
    }

    /// Feeds one segment; completed calls go to `out`.
    pub fn push<F: FnMut(LlmCall)>(&mut self, seg: &Segment<'_>, out: &mut F) {
        let (http, llm) = (&mut self.http, &mut self.llm);
        self.reassembly.push(seg, &mut |ev| http.push(ev, &mut |hev| llm.push(hev, out)));
        // Saturating: a capture file may carry any timestamp, up to u64::MAX.
        if seg.ts.0 >= self.last_expire.0.saturating_add(EXPIRE_EVERY_NS) {
            self.expire(seg.ts, out);
        }
    }

    /// Applies time-based rules (held data, idle connections) at capture time `now`.
    pub fn expire<F: FnMut(LlmCall)>(&mut self, now: Timestamp, out: &mut F) {
        self.last_expire = now;
        let (http, llm) = (&mut self.http, &mut self.llm);
        self.reassembly.expire(now, &mut |ev| http.push(ev, &mut |hev| llm.push(hev, out)));
    }

    /// End of capture: every call still open is reported (flagged incomplete).
    pub fn finish<F: FnMut(LlmCall)>(&mut self, out: &mut F) {
        let (http, llm) = (&mut self.http, &mut self.llm);
        self.reassembly.finish(&mut |ev| http.push(ev, &mut |hev| llm.push(hev, out)));
    }

    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            reassembly: self.reassembly.stats().clone(),
            http: self.http.stats().clone(),
            llm: self.llm.stats().clone(),
        }
    }

    /// Connections tracked now.
    pub fn connections(&self) -> usize {
        self.reassembly.connections()
    }

    /// Calls in flight now.
    pub fn calls_in_flight(&self) -> usize {
        self.llm.in_flight()
    }

    /// Bytes held out of order now.
    pub fn held_bytes(&self) -> usize {
        self.reassembly.held_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{Direction, FlowKey, TcpFlags};

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
