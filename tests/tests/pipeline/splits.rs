//! Split-point invariance: the same exchange cut into TCP segments anywhere gives the same span.
//! (Split parts keep their packet's timestamp, so even the times must not move.)

use rand::{Rng, SeedableRng, rngs::StdRng};

use testkit::drive;
use testkit::fixtures::{self, Fixture};
use testkit::synth::{ConnectionSpec, Packet, perturb, synthesize};
use testkit::wire::{self, RenderOptions};
use tracer_core::span::SpanRecord;

fn packets(f: &Fixture, i: usize) -> Vec<Packet> {
    let rendered = wire::render(f, &RenderOptions::default());
    synthesize(&[ConnectionSpec::loopback_v4(41000 + i as u16).seed(i as u64).exchange(rendered)])
        .expect("synthesize")
        .packets
}

/// Everything about a span except its ids.
fn essence(span: &SpanRecord) -> String {
    format!(
        "{} {:?} {} {} {:?} {:?} {:?}",
        span.name, span.kind, span.start.0, span.end.0, span.status, span.status_message, span.attributes
    )
}

fn one_span(packets: &[Packet], what: &str) -> String {
    let spans = drive::spans(packets);
    assert_eq!(spans.len(), 1, "{what}: one span per call");
    essence(&spans[0].1)
}

/// Fixtures of every shape, small enough to cut at every byte.
const EVERY_BYTE: &[&str] = &[
    "crmne-ruby_llm__chat_basic_chat_functionality_ollama_llama3_1_8b_can_have_a_basic_conversation__0",
    "traceloop-openllmetry__test_ollama_streaming_chat_legacy__0",
    "traceloop-openllmetry__test_ollama_streaming_generation_legacy__0",
    "crmne-ruby_llm__chat_function_calling_llama3_1_8b_can_use_tools_without_parameters__0",
    "llmrb-llm__successful_list__0",
];

fn by_name(all: &[Fixture], name: &str) -> (usize, Fixture) {
    let i = all.iter().position(|f| f.name == name).unwrap_or_else(|| panic!("fixture {name}"));
    (i, all[i].clone())
}

/// Adds representative /v1 and error fixtures (found by shape, so renamed fixtures don't matter).
fn representatives(all: &[Fixture]) -> Vec<(usize, Fixture)> {
    let mut out: Vec<(usize, Fixture)> = EVERY_BYTE.iter().map(|n| by_name(all, n)).collect();
    let small = |f: &&Fixture| f.response.body.len() < 6_000 && f.request.body.len() < 4_000;
    let mut pick = |pred: &dyn Fn(&Fixture) -> bool| {
        if let Some((i, f)) = all.iter().enumerate().filter(|(_, f)| small(f)).find(|(_, f)| pred(f)) {
            out.push((i, f.clone()));
        }
    };
    pick(&|f| f.path() == "/v1/chat/completions" && f.is_streamed() && f.response.body.contains("\"choices\":[]"));
    pick(&|f| f.path() == "/v1/chat/completions" && !f.is_streamed() && f.response.status == 200);
    pick(&|f| f.path() == "/v1/embeddings" && f.response.status == 200);
    pick(&|f| f.path() == "/api/embed" && f.response.status == 200);
    pick(&|f| f.response.status == 404);
    out
}

#[test]
fn every_byte_boundary_gives_the_same_span() {
    let all = fixtures::load_all().expect("fixtures");
    for (i, f) in representatives(&all) {
        let base = packets(&f, i);
        let want = one_span(&base, &f.name);
        for p in 0..base.len() {
            for off in 1..base[p].payload.len() {
                let mut cut = base.clone();
                perturb::split_payload(&mut cut, p, &[off]).unwrap();
                assert_eq!(one_span(&cut, &f.name), want, "{}: packet {p} cut at {off}", f.name);
            }
        }
    }
}

#[test]
fn one_byte_segments_give_the_same_span() {
    let all = fixtures::load_all().expect("fixtures");
    for (i, f) in all.iter().enumerate() {
        let base = packets(f, i);
        let want = one_span(&base, &f.name);
        let mut cut = base.clone();
        perturb::split_all(&mut cut, 1);
        assert_eq!(one_span(&cut, &f.name), want, "{}: one byte per segment", f.name);
    }
}

#[test]
fn random_multiway_splits_give_the_same_span() {
    let all = fixtures::load_all().expect("fixtures");
    let mut rng = StdRng::seed_from_u64(7);
    for (i, f) in all.iter().enumerate() {
        let base = packets(f, i);
        let want = one_span(&base, &f.name);
        for round in 0..4 {
            let mut cut = base.clone();
            let mut p = 0;
            while p < cut.len() {
                let len = cut[p].payload.len();
                if len > 1 {
                    let k = rng.random_range(1..=len.min(6)) - 1;
                    let mut offs: Vec<usize> = (0..k).map(|_| rng.random_range(1..len)).collect();
                    offs.sort_unstable();
                    offs.dedup();
                    if !offs.is_empty() {
                        p += perturb::split_payload(&mut cut, p, &offs).unwrap();
                        continue;
                    }
                }
                p += 1;
            }
            assert_eq!(one_span(&cut, &f.name), want, "{}: random split round {round}", f.name);
        }
    }
}
