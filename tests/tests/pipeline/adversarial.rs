//! Adversarial captures: reordering, duplicates, loss, resets, late starts, long keep-alive
//! connections, pipelining, `100 Continue`, garbage on the port, snap lengths, every link type.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::Value;

use testkit::drive;
use testkit::fixtures::{self, Fixture};
use testkit::pcap::{FileFormat, LinkType, TsPrecision, WriterConfig, write_file};
use testkit::synth::{Close, ConnectionSpec, ExchangeSpec, Packet, perturb, raw_connection, synthesize};
use testkit::wire::{self, RenderOptions};
use tracer_core::llm::{ErrorKind, Incomplete, LlmCall, Route};
use tracer_core::pipeline::PipelineConfig;
use tracer_core::replay;

fn fixture(name: &str) -> Fixture {
    fixtures::load(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn render(f: &Fixture) -> wire::ExchangeWire {
    wire::render(f, &RenderOptions::default())
}

const NATIVE_STREAM: &str = "traceloop-openllmetry__test_ollama_streaming_chat_legacy__0";
const NATIVE_JSON: &str =
    "crmne-ruby_llm__chat_basic_chat_functionality_ollama_llama3_1_8b_can_have_a_basic_conversation__0";
const GENERATE_STREAM: &str = "traceloop-openllmetry__test_ollama_streaming_generation_legacy__0";

/// The tokens the final chunk of a native stream reports.
fn native_tokens(f: &Fixture) -> (u64, u64) {
    let last: Value =
        f.response.body.lines().rfind(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).unwrap();
    (last["prompt_eval_count"].as_u64().unwrap(), last["eval_count"].as_u64().unwrap())
}

fn assert_exact(call: &LlmCall, f: &Fixture) {
    let (input, output) = native_tokens(f);
    assert_eq!(call.response.input_tokens, Some(input), "{}", f.name);
    assert_eq!(call.response.output_tokens, Some(output), "{}", f.name);
    assert!(call.incomplete.is_empty(), "{}: {:?}", f.name, call.incomplete);
    assert!(call.error.is_none(), "{}: {:?}", f.name, call.error);
}

/// Numbers a damaged call may report: the right one, or none at all.
fn assert_no_wrong_numbers(call: &LlmCall, f: &Fixture) {
    let (input, output) = native_tokens(f);
    assert!(
        call.response.input_tokens.is_none_or(|v| v == input),
        "{}: input {:?}",
        f.name,
        call.response.input_tokens
    );
    assert!(
        call.response.output_tokens.is_none_or(|v| v == output),
        "{}: output {:?}",
        f.name,
        call.response.output_tokens
    );
    if let Some(m) = &call.response.model {
        assert_eq!(Some(m.as_str()), call.request.model.as_deref().or(Some(m.as_str())));
    }
}

fn keepalive(names: &[&str], n: usize, seed: u64) -> (Vec<Packet>, Vec<Fixture>) {
    let fs: Vec<Fixture> = (0..n).map(|i| fixture(names[i % names.len()])).collect();
    let mut spec = ConnectionSpec::loopback_v4(42000).seed(seed);
    for f in &fs {
        spec = spec.exchange(render(f));
    }
    (synthesize(&[spec]).unwrap().packets, fs)
}

#[test]
fn hundred_calls_on_one_keepalive_connection() {
    let (packets, fs) = keepalive(&[NATIVE_STREAM, NATIVE_JSON, GENERATE_STREAM], 100, 1);
    let (calls, stats) = drive::calls(&packets);
    assert_eq!(calls.len(), 100);
    for (call, f) in calls.iter().zip(&fs) {
        assert_exact(call, f);
    }
    assert_eq!(stats.reassembly.connections, 1);
    assert_eq!(stats.http.parse_errors, 0);
}

#[test]
fn pipelined_requests_pair_in_order() {
    let names = [NATIVE_JSON, NATIVE_STREAM, GENERATE_STREAM, NATIVE_JSON];
    let mut spec = ConnectionSpec::loopback_v4(42001).seed(2);
    for (i, n) in names.iter().enumerate() {
        spec = spec.exchange(ExchangeSpec { pipelined: i > 0, ..ExchangeSpec::from(render(&fixture(n))) });
    }
    let capture = synthesize(&[spec]).unwrap();
    let (calls, _) = drive::calls(&capture.packets);
    assert_eq!(calls.len(), 4);
    for ((call, n), truth) in calls.iter().zip(names).zip(&capture.connections[0].exchanges) {
        assert_exact(call, &fixture(n));
        assert_eq!(call.times.request_start.0, truth.request_first_byte_ns);
        assert_eq!(Some(call.times.end.0), truth.response_last_byte_ns);
    }
}

#[test]
fn reordered_and_duplicated_segments_change_nothing_but_timing() {
    let (base, fs) = keepalive(&[NATIVE_STREAM, GENERATE_STREAM], 6, 3);
    let (want, _) = drive::calls(&base);
    let mut rng = StdRng::seed_from_u64(3);
    for round in 0..20 {
        let mut p = base.clone();
        perturb::shuffle_windows(&mut p, 4, &mut rng);
        perturb::duplicate_random(&mut p, 0.2, &mut rng);
        let (calls, stats) = drive::calls(&p);
        assert_eq!(calls.len(), want.len(), "round {round}");
        for (call, f) in calls.iter().zip(&fs) {
            assert_exact(call, f);
        }
        assert!(stats.reassembly.duplicate_bytes > 0 || stats.reassembly.out_of_order_segments > 0);
    }
}

#[test]
fn dropped_segments_flag_the_call_and_never_lie() {
    let (base, fs) = keepalive(&[NATIVE_STREAM, GENERATE_STREAM, NATIVE_JSON], 9, 4);
    let mut rng = StdRng::seed_from_u64(4);
    let data: Vec<usize> = (0..base.len()).filter(|&i| !base[i].payload.is_empty()).collect();
    for round in 0..300 {
        let mut p = base.clone();
        let mut victims: Vec<usize> =
            (0..rng.random_range(1..=3)).map(|_| data[rng.random_range(0..data.len())]).collect();
        victims.sort_unstable();
        victims.dedup();
        let lost_requests = victims.iter().filter(|&&v| base[v].dst.port() == 11434).count();
        perturb::drop_indices(&mut p, &victims);
        let (calls, stats) = drive::calls(&p);
        assert!(stats.reassembly.gaps >= 1, "round {round}: the gap is detected");
        assert!(calls.iter().any(|c| c.is_incomplete()), "round {round}: a call that lost bytes is flagged");
        for call in &calls {
            // Find the fixture by what the request said (route and model), or for a call whose
            // request was lost, by its response's model and route.
            let found =
                fs.iter().find(|f| f.path() == call.path && fixture_model(f) == call.request.model).or_else(|| {
                    (!call.request_seen())
                        .then(|| {
                            fs.iter().find(|f| {
                                Route::classify("POST", &f.path()) == call.route
                                    && fixture_model(f) == call.response.model
                            })
                        })
                        .flatten()
                });
            if let Some(f) = found {
                assert_no_wrong_numbers(call, f);
                if !call.is_incomplete() {
                    assert_exact(call, f);
                }
            }
        }
        // Every call yields exactly one span unless both its request head and its response
        // head were lost (nothing is left that says a call happened).
        assert!(calls.len() <= fs.len(), "round {round}: {} calls for {} exchanges", calls.len(), fs.len());
        if lost_requests + lost_response_heads(&base, &victims) < 2 {
            assert_eq!(calls.len(), fs.len(), "round {round}: one span per call");
        }
    }
}

/// Dropped packets that carried the start of a response head.
fn lost_response_heads(base: &[Packet], victims: &[usize]) -> usize {
    victims.iter().filter(|&&v| base[v].src.port() == 11434 && base[v].payload.starts_with(b"HTTP/")).count()
}

/// Response bytes the capture lost (its tail, or its head), then an ordinary close: the call
/// is flagged (response gap), but the capture cannot tell how the response ended, so it must
/// not claim the client cancelled or the server hung up (a ring-buffer overflow did exactly
/// this to live spans).
#[test]
fn response_bytes_lost_by_the_capture_are_not_a_cancellation() {
    for name in [NATIVE_STREAM, GENERATE_STREAM] {
        for close in [Close::ClientFin, Close::ServerFin] {
            let f = fixture(name);
            let spec = ConnectionSpec::loopback_v4(42003).close(close).exchange(render(&f));
            let base = synthesize(&[spec]).unwrap().packets;
            let server_data: Vec<usize> =
                (0..base.len()).filter(|&i| base[i].src.port() == 11434 && !base[i].payload.is_empty()).collect();
            let n = server_data.len();
            // The chunked terminator alone, the last chunk with it, the head (with the first
            // chunk: Go sends them together), the head and the next chunk.
            for lost in [&server_data[n - 1..], &server_data[n - 2..], &server_data[..1], &server_data[..2]] {
                let mut p = base.clone();
                perturb::drop_indices(&mut p, lost);
                let (calls, stats) = drive::calls(&p);
                let what = format!("{name} {close:?}, server segments {lost:?} of {server_data:?} lost");
                assert_eq!(calls.len(), 1, "{what}");
                let c = &calls[0];
                assert!(stats.reassembly.gaps >= 1, "{what}");
                assert!(c.incomplete.contains(&Incomplete::ResponseGap), "{what}: {:?}", c.incomplete);
                assert_eq!(c.error, None, "{what}: nothing says how the response ended");
                assert_no_wrong_numbers(c, &f);
            }
        }
    }
}

/// A stream still flowing when the capture ends (the daemon stopped, the file ends): flagged
/// incomplete (capture ended), with no error claimed — the server did not end the stream, the
/// capture did.
#[test]
fn a_stream_cut_by_the_end_of_the_capture_claims_no_error() {
    for name in [NATIVE_STREAM, GENERATE_STREAM] {
        let f = fixture(name);
        let spec = ConnectionSpec::loopback_v4(42004).close(Close::Open).exchange(render(&f));
        let mut p = synthesize(&[spec]).unwrap().packets;
        p.truncate(p.len() / 2);
        let (calls, _) = drive::calls(&p);
        assert_eq!(calls.len(), 1, "{name}");
        let c = &calls[0];
        assert!(c.incomplete.contains(&Incomplete::CaptureEnded), "{name}: {:?}", c.incomplete);
        assert_eq!(c.error, None, "{name}: the capture ended, not the stream");
        assert_ne!(c.response.finish_reasons, vec!["error".to_string()], "{name}");
        assert_eq!((c.response.input_tokens, c.response.output_tokens), (None, None), "{name}: no final chunk seen");
    }
}

fn fixture_model(f: &Fixture) -> Option<String> {
    serde_json::from_str::<Value>(&f.request.body).ok()?.get("model")?.as_str().map(str::to_owned)
}

#[test]
fn client_reset_mid_stream_is_cancelled_server_reset_is_server_closed() {
    for (close, kind) in [
        (Close::ClientRst, ErrorKind::Cancelled),
        (Close::ServerRst, ErrorKind::ServerClosed),
        (Close::ClientFin, ErrorKind::Cancelled),
    ] {
        let f = fixture(NATIVE_STREAM);
        let spec = ConnectionSpec::loopback_v4(42002)
            .close(close)
            .exchange(ExchangeSpec { cut_after_writes: Some(5), ..ExchangeSpec::from(render(&f)) });
        let (calls, _) = drive::calls(&synthesize(&[spec]).unwrap().packets);
        assert_eq!(calls.len(), 1);
        let c = &calls[0];
        assert_eq!(c.error.as_ref().map(|e| e.kind.clone()), Some(kind), "{close:?}");
        assert!(c.incomplete.contains(&Incomplete::Truncated), "{close:?}: {:?}", c.incomplete);
        assert_eq!((c.response.input_tokens, c.response.output_tokens), (None, None), "no final chunk, no counts");
        assert_eq!(c.response.finish_reasons, vec!["error".to_string()]);
        assert!(c.times.first_output.is_some());
    }
}

#[test]
fn capture_starting_mid_stream_skips_that_call_and_follows_the_next() {
    let (base, fs) = keepalive(&[NATIVE_STREAM, NATIVE_JSON, GENERATE_STREAM], 3, 5);
    // Start while the first response is streaming: after its head and a few chunks.
    let server_data: Vec<&Packet> = base.iter().filter(|p| p.src.port() == 11434 && !p.payload.is_empty()).collect();
    let start = server_data[3].ts_ns;
    let mut p = base.clone();
    perturb::start_at(&mut p, start);
    let (calls, stats) = drive::calls(&p);
    assert_eq!(calls.len(), 2, "the partial call is skipped (counted), the next two are reported");
    assert_exact(&calls[0], &fs[1]);
    assert_exact(&calls[1], &fs[2]);
    assert_eq!(stats.reassembly.midstream_connections, 1);
    assert!(stats.http.resync_skipped_bytes > 0);
}

/// A capture that starts after a request was sent (a daemon restarted while a model loads):
/// the call is still reported, from its response, flagged `request_unseen`, with the response's
/// own numbers and nothing measured from the missing request.
#[test]
fn capture_starting_between_request_and_response_reports_the_call_from_its_response() {
    for (first, second, route) in [
        (NATIVE_JSON, NATIVE_STREAM, Route::Chat),
        (NATIVE_STREAM, NATIVE_JSON, Route::Chat),
        (GENERATE_STREAM, NATIVE_JSON, Route::Generate),
    ] {
        let (base, fs) = keepalive(&[first, second], 2, 6);
        let first_response = base.iter().find(|p| p.src.port() == 11434 && !p.payload.is_empty()).unwrap().ts_ns;
        let mut p = base.clone();
        perturb::start_at(&mut p, first_response);
        let (calls, stats) = drive::calls(&p);
        assert_eq!(calls.len(), 2, "{first}: one span per call");
        assert_eq!(stats.http.orphan_responses, 1);
        let c = &calls[0];
        assert_eq!(c.incomplete, vec![Incomplete::RequestUnseen], "{first}");
        assert_eq!(c.route, route, "{first}: the route told from the response");
        let (input, output) = native_tokens(&fs[0]);
        assert_eq!((c.response.input_tokens, c.response.output_tokens), (Some(input), Some(output)), "{first}");
        assert_eq!(c.time_to_first_chunk(), None, "{first}: nothing measured from the unseen request");
        assert_eq!(c.times.request_start.0, first_response);
        assert_exact(&calls[1], &fs[1]);
    }
}

#[test]
fn expect_100_continue() {
    let body = br#"{"model":"llama3.2","prompt":"hi","stream":false}"#;
    let head = format!(
        "POST /api/generate HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let resp = br#"{"model":"llama3.2","created_at":"2025-01-01T00:00:00Z","response":"Hello","done":true,"done_reason":"stop","prompt_eval_count":3,"eval_count":2}"#;
    let final_head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        resp.len()
    );
    let packets = raw_connection(
        "127.0.0.1:42010".parse().unwrap(),
        &[
            (true, head.as_bytes(), 10),
            (false, b"HTTP/1.1 100 Continue\r\n\r\n", 20),
            (true, body, 30),
            (false, final_head.as_bytes(), 40),
            (false, resp, 50),
        ],
    );
    let (calls, stats) = drive::calls(&packets);
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c.status, Some(200));
    assert_eq!((c.response.input_tokens, c.response.output_tokens), (Some(3), Some(2)));
    assert_eq!(c.request.model.as_deref(), Some("llama3.2"));
    assert_eq!((c.times.request_start.0, c.times.end.0), (10, 50));
    assert_eq!(stats.http.interim, 1);
}

#[test]
fn garbage_on_the_port_is_counted_and_ignored() {
    let garbage: Vec<u8> = (0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut packets = raw_connection(
        "127.0.0.1:42011".parse().unwrap(),
        &[(true, &garbage, 10), (false, b"\x00\x01binary reply", 20)],
    );
    let (good, fs) = keepalive(&[NATIVE_JSON], 1, 7);
    packets.extend(good);
    packets.sort_by_key(|p| p.ts_ns);
    let (calls, stats) = drive::calls(&packets);
    assert_eq!(calls.len(), 1);
    assert_exact(&calls[0], &fs[0]);
    assert!(stats.http.parse_errors >= 1, "garbage is counted");
}

#[test]
fn snap_length_truncation_flags_calls_without_wrong_numbers() {
    let (mut p, fs) = keepalive(&[NATIVE_STREAM, NATIVE_JSON], 4, 8);
    perturb::truncate_all(&mut p, 100);
    let (calls, stats) = drive::calls(&p);
    assert!(stats.reassembly.gap_bytes > 0);
    let names: BTreeSet<_> = fs.iter().map(|f| f.name.clone()).collect();
    assert!(!names.is_empty());
    for (call, f) in calls.iter().zip(&fs) {
        assert!(call.is_incomplete(), "{:?}", call.incomplete);
        assert_no_wrong_numbers(call, f);
    }
}

#[test]
fn every_link_type_and_file_format_replays_identically() {
    let (packets, _) = keepalive(&[NATIVE_STREAM, NATIVE_JSON, GENERATE_STREAM], 3, 9);
    let (want, _) = drive::calls(&packets);
    let dir = std::env::temp_dir().join(format!("ollama-tracer-links-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for link in [
        LinkType::Ethernet,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::Raw,
        LinkType::RawDlt12,
        LinkType::RawDlt14,
        LinkType::Null,
    ] {
        for (format, precision) in [
            (FileFormat::Pcap, TsPrecision::Nano),
            (FileFormat::Pcap, TsPrecision::Micro),
            (FileFormat::PcapNg, TsPrecision::Nano),
        ] {
            let path = dir.join(format!("{}-{format:?}-{precision:?}.cap", link.name()));
            write_file(&path, WriterConfig::new(format, precision, link), &packets).unwrap();
            let files = replay::open_all(&[&path]).unwrap();
            let mut got = Vec::new();
            let report = replay::replay(&files, &[11434], PipelineConfig::default(), &mut |c| got.push(c));
            assert_eq!(got.len(), want.len(), "{path:?}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.response, w.response, "{path:?}");
                assert_eq!(g.request, w.request, "{path:?}");
                if precision == TsPrecision::Nano {
                    assert_eq!(g.times, w.times, "{path:?}");
                } else {
                    assert_eq!(g.times.request_start.0 / 1000, w.times.request_start.0 / 1000, "{path:?}");
                }
            }
            assert_eq!(report.capture.malformed + report.capture.unsupported, 0, "{path:?}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
