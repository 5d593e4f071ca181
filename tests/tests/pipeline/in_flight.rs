//! The calls in flight as `top` sees them: snapshots of the pipeline taken between packets of
//! a streamed call, against what the call turns out to be once complete.

use testkit::drive;
use testkit::fixtures;
use testkit::synth::{ConnectionSpec, synthesize};
use testkit::wire::{self, RenderOptions};
use tracer_core::llm::{LlmCall, Route};
use tracer_core::pipeline::{InFlightSnapshot, Pipeline, PipelineConfig};
use tracer_core::segment::{Orientation, Timestamp};

#[test]
fn snapshots_follow_a_stream_and_cost_nothing_once_it_ends() {
    let all = fixtures::load_all().unwrap();
    let f = all
        .iter()
        .find(|f| f.is_streamed() && f.response.status == 200 && f.path() == "/api/chat")
        .expect("a streamed /api/chat fixture");
    let spec = ConnectionSpec::loopback_v4(43_001).seed(1).exchange(wire::render(f, &RenderOptions::default()));
    let capture = synthesize(&[spec]).unwrap();
    let orientation = Orientation::new(&[11434]);
    let mut pipeline = Pipeline::new(PipelineConfig::default());
    let mut done: Vec<LlmCall> = Vec::new();
    let mut snap = InFlightSnapshot::default();
    let mut seen: Vec<(bool, u64)> = Vec::new();
    for p in &capture.packets {
        if let Some(seg) = drive::segment(p, &orientation) {
            pipeline.push(&seg, &mut |c| done.push(c));
        }
        pipeline.in_flight(Timestamp(p.ts_ns), 8, &mut snap);
        assert_eq!(snap.now, Timestamp(p.ts_ns));
        assert_eq!(snap.total, snap.calls.len());
        if let Some(c) = snap.calls.first() {
            assert_eq!(c.flow.client.port(), 43_001);
            assert_eq!(c.route, Route::Chat);
            seen.push((c.responding, c.output_chunks));
        }
    }
    pipeline.finish(&mut |c| done.push(c));
    assert_eq!(done.len(), 1);
    let call = &done[0];
    // While in flight: the request's model, the start of the request, output counted as it came.
    assert!(seen.len() > 3, "{seen:?}");
    assert!(!seen[0].0, "no response yet at the first packet");
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "never shrinks: {seen:?}");
    let most = seen.iter().map(|s| s.1).max().unwrap();
    assert!(most > 0 && most <= call.response.output_chunks, "{most} of {}", call.response.output_chunks);
    // Once complete it is gone from the snapshot.
    pipeline.in_flight(Timestamp(u64::MAX), 8, &mut snap);
    assert_eq!((snap.total, snap.calls.len()), (0, 0));
}

#[test]
fn snapshots_keep_the_oldest_calls_and_count_all() {
    let all = fixtures::load_all().unwrap();
    let f = all.iter().find(|f| f.is_streamed() && f.response.status == 200).unwrap();
    // Ten connections, started last-port-first; the capture stops before any response.
    let specs: Vec<ConnectionSpec> = (0..10u16)
        .map(|i| {
            ConnectionSpec::loopback_v4(44_000 + i)
                .seed(i as u64)
                .start_at(1_000_000_000 * (10 - i as u64))
                .exchange(wire::render(f, &RenderOptions::default()))
        })
        .collect();
    let capture = synthesize(&specs).unwrap();
    // Each connection's packets up to its response.
    let before_response = |p: &&testkit::synth::Packet| {
        capture.connections.iter().any(|c| {
            (c.client == p.src || c.client == p.dst)
                && c.exchanges[0].response_first_byte_ns.is_some_and(|t| p.ts_ns < t)
        })
    };
    let orientation = Orientation::new(&[11434]);
    let mut pipeline = Pipeline::new(PipelineConfig::default());
    for p in capture.packets.iter().filter(before_response) {
        if let Some(seg) = drive::segment(p, &orientation) {
            pipeline.push(&seg, &mut |_| {});
        }
    }
    let mut snap = InFlightSnapshot::default();
    pipeline.in_flight(Timestamp(0), 3, &mut snap);
    assert_eq!(snap.total, 10);
    let ports: Vec<u16> = snap.calls.iter().map(|c| c.flow.client.port()).collect();
    // Started last-port-first: the oldest three are the highest ports.
    assert_eq!(ports, [44_009, 44_008, 44_007]);
    let model: serde_json::Value = serde_json::from_str(&f.request.body).unwrap();
    assert!(snap.calls.iter().all(|c| !c.responding && c.model.as_deref() == model["model"].as_str()));
}
