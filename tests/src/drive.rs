//! Runs synthetic packets through the tracer's pipeline in memory, exactly as a capture would.

use std::net::SocketAddr;

use tracer_core::llm::LlmCall;
use tracer_core::pipeline::{Pipeline, PipelineConfig, PipelineStats};
use tracer_core::segment::{CaptureMeta, Orientation, Segment, TcpFlags, Timestamp};
use tracer_core::span::{SpanBuilder, SpanConfig, SpanRecord};

use crate::synth::Packet;

/// The tracer's view of one synthetic packet (`None` when it is not on a server port).
pub fn segment<'a>(p: &'a Packet, orientation: &Orientation) -> Option<Segment<'a>> {
    let (flow, dir) = orientation.orient(p.src, p.dst)?;
    let captured = p.captured_len();
    Some(Segment {
        ts: Timestamp(p.ts_ns),
        flow,
        dir,
        seq: p.seq,
        ack: p.ack,
        flags: TcpFlags(p.flags.0),
        payload: &p.payload[..captured],
        missing: (p.payload.len() - captured) as u32,
        meta: CaptureMeta::default(),
    })
}

/// Feeds packets (in order) through a fresh pipeline; returns the calls in completion order.
pub fn calls_with(packets: &[Packet], ports: &[u16], config: PipelineConfig) -> (Vec<LlmCall>, PipelineStats) {
    let orientation = Orientation::new(ports);
    let mut pipeline = Pipeline::new(config);
    let mut calls = Vec::new();
    let mut out = |c: LlmCall| calls.push(c);
    for p in packets {
        if let Some(seg) = segment(p, &orientation) {
            pipeline.push(&seg, &mut out);
        }
    }
    pipeline.finish(&mut out);
    let stats = pipeline.stats();
    (calls, stats)
}

/// [`calls_with`] on port 11434 with the default configuration.
pub fn calls(packets: &[Packet]) -> (Vec<LlmCall>, PipelineStats) {
    calls_with(packets, &[11434], PipelineConfig::default())
}

/// Calls and their spans (ids from a fixed seed).
pub fn spans(packets: &[Packet]) -> Vec<(LlmCall, SpanRecord)> {
    let (calls, _) = calls(packets);
    let mut builder = SpanBuilder::new(SpanConfig { id_seed: Some(1), ..Default::default() });
    calls
        .into_iter()
        .map(|c| {
            let s = builder.build(&c);
            (c, s)
        })
        .collect()
}

/// The call of one connection's client address, if any.
pub fn call_of(calls: &[LlmCall], client: SocketAddr) -> Vec<&LlmCall> {
    calls.iter().filter(|c| c.flow.client == client).collect()
}

/// Every span of every call (the call's own span first, then its children), calls in
/// completion order, with the given configurations.
pub fn all_spans(packets: &[Packet], pipeline: PipelineConfig, spans: SpanConfig) -> Vec<(LlmCall, Vec<SpanRecord>)> {
    let (calls, _) = calls_with(packets, &[11434], pipeline);
    let mut builder = SpanBuilder::new(spans);
    calls
        .into_iter()
        .map(|c| {
            let s = builder.build_all(&c);
            (c, s)
        })
        .collect()
}
