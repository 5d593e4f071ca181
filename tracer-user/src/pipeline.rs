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
        if seg.ts.0 >= self.last_expire.0 + EXPIRE_EVERY_NS {
            self.expire(seg.ts, out);
        }
    }

    /// Applies time-based rules (held data, idle connections) at capture time `now`.
    pub fn expire<F: FnMut(LlmCall)>(&mut self, now: Timestamp, out: &mut F) {
        self.last_expire = now;
        let (http, llm) = (&mut self.http, &mut self.llm);
        self.reassembly.expire(now, &mut |ev| http.push(ev, &mut |hev| llm.push(hev, out)));
        self.http.expire(now);
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

    /// Bytes held in unfinished HTTP heads now.
    pub fn partial_head_bytes(&self) -> usize {
        self.http.partial_head_bytes()
    }

    /// Bytes held out of order now.
    pub fn held_bytes(&self) -> usize {
        self.reassembly.held_bytes()
    }
}
