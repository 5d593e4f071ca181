//! The libpcap fallback's kernel filter (`capture::pcap::filter`) applied to recorded captures:
//! the same filter string, compiled by libpcap to classic BPF and run on every frame, refuses
//! pure ACKs; the calls and spans replayed from what it keeps must be those of the whole
//! capture. Needs no root (libpcap compiles and runs the program in user space here); the live
//! side is `live_capture::pcap_filter_drops_pure_acks_and_the_loopback_copy`.
//!
//! Captures: the committed real-client capture (tcpdump, Ethernet), ten copies of it
//! interleaved, and the golden fixtures synthesized with several segmentations. Lossy variants
//! (payload segments dropped, duplicated, moved) are compared too: a pure ACK is also how
//! reassembly learns that a hole was acknowledged, so there a gap may be declared from a later
//! segment — the test counts what that changes.

use std::path::PathBuf;

use ollama_tracer::capture::pcap::filter;
use testkit::drive;
use testkit::pcap::{LinkType, frame, read_packets};
use testkit::synth::Packet;
use testkit::synth::perturb::{LossModel, lossy, replicate};

fn real_clients() -> Vec<Packet> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/captures/real-clients.pcap");
    read_packets(&path, &[11434]).expect("the committed capture")
}

/// The packets the fallback's filter passes, each judged on its Ethernet frame.
fn kept_by_filter(packets: &[Packet], ports: &[u16]) -> Vec<Packet> {
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
    let program = dead.compile(&filter::for_files(ports), true).unwrap();
    packets.iter().filter(|p| program.filter(&frame(p, LinkType::Ethernet).unwrap().bytes)).cloned().collect()
}

fn is_pure_ack(p: &Packet) -> bool {
    p.payload.is_empty() && !p.flags.syn() && !p.flags.fin() && !p.flags.rst()
}

/// Calls and spans, each as its debug text (every field), in completion order.
fn spans(packets: &[Packet]) -> Vec<String> {
    drive::spans(packets).iter().map(|(c, s)| format!("{c:?}\n{s:?}")).collect()
}

/// Calls alone, each as its debug text, sorted (under loss a call may complete at another
/// packet, which changes the order and with it the span ids, not the call).
fn calls(packets: &[Packet]) -> Vec<String> {
    let mut v: Vec<String> = drive::calls(packets).0.iter().map(|c| format!("{c:?}")).collect();
    v.sort();
    v
}

/// Replays `packets` whole and filtered; returns (pure ACKs refused, spans that differ).
fn compare(packets: &[Packet], what: &str) -> (usize, usize) {
    compare_by(packets, what, spans)
}

fn compare_by(packets: &[Packet], what: &str, spans: fn(&[Packet]) -> Vec<String>) -> (usize, usize) {
    let kept = kept_by_filter(packets, &[11434]);
    let acks = packets.iter().filter(|p| is_pure_ack(p)).count();
    // Exactly the pure ACKs are refused: everything else passes.
    assert_eq!(kept.len(), packets.len() - acks, "{what}: kept");
    assert!(kept.iter().all(|p| !is_pure_ack(p)), "{what}: a pure ACK passed");
    let (whole, filtered) = (spans(packets), spans(&kept));
    assert_eq!(whole.len(), filtered.len(), "{what}: number of calls");
    let differ = whole.iter().zip(&filtered).filter(|(a, b)| a != b).count();
    if differ > 0 && std::env::var_os("SHOW_DIFF").is_some() {
        let (a, b) = whole.iter().zip(&filtered).find(|(a, b)| a != b).unwrap();
        println!("{what}: first difference:\nwhole:    {a}\nfiltered: {b}");
    }
    (acks, differ)
}

#[test]
fn filtered_real_capture_gives_the_same_spans() {
    let packets = real_clients();
    let (acks, differ) = compare(&packets, "real clients");
    println!("real clients: {} packets, {acks} pure ACKs refused", packets.len());
    assert!(acks > 100, "the capture has pure ACKs to refuse");
    assert_eq!(differ, 0, "spans differ with the filter");
    assert!(!spans(&packets).is_empty());
}

#[test]
fn filtered_interleaved_copies_give_the_same_spans() {
    let (packets, _) = replicate(&real_clients(), 10, 613, 37_000_000, 11434);
    let (acks, differ) = compare(&packets, "ten copies");
    println!("ten copies: {} packets, {acks} pure ACKs refused", packets.len());
    assert_eq!(differ, 0, "spans differ with the filter");
}

#[test]
fn filtered_golden_fixtures_give_the_same_spans() {
    use testkit::fixtures;
    use testkit::synth::{ConnectionSpec, Segmentation, TcpConfig, synthesize};
    use testkit::wire::{self, RenderOptions};
    let fixtures = fixtures::load_all().expect("fixtures");
    let segmentations = [Segmentation::Mss, Segmentation::Fixed(7), Segmentation::Random { min: 1, max: 300 }];
    let mut total = 0;
    for (k, seg) in segmentations.into_iter().enumerate() {
        let specs: Vec<ConnectionSpec> = fixtures
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let tcp = TcpConfig { response_segmentation: seg, request_segmentation: seg, ..TcpConfig::default() };
                ConnectionSpec::loopback_v4(20_000 + i as u16)
                    .seed(i as u64 + 1000 * k as u64)
                    .start_at(i as u64 * 10_000_000)
                    .tcp(tcp)
                    .exchange(wire::render(f, &RenderOptions::default()))
            })
            .collect();
        let cap = synthesize(&specs).expect("synthesize");
        let (acks, differ) = compare(&cap.packets, &format!("fixtures, {seg:?}"));
        assert!(acks > 0);
        assert_eq!(differ, 0, "fixtures, {seg:?}: spans differ with the filter");
        total += cap.packets.len();
    }
    println!("golden fixtures: {total} packets replayed whole and filtered");
}

/// Under loss the pure ACKs are evidence that a hole was acknowledged; without them the gap is
/// found from the next data segment, FIN or the reorder wait. Measured, with a bound: calls must
/// stay as many, and what differs is reported.
#[test]
fn filtered_lossy_captures() {
    let base = real_clients();
    let mut differing = 0;
    let mut n = 0;
    for seed in 1..=10 {
        for rate in [0.01, 0.05] {
            let l = lossy(&base, &LossModel::dropping(rate), seed);
            let (_, differ) = compare_by(&l.packets, &format!("lossy {rate} seed {seed}"), calls);
            differing += differ;
            n += calls(&l.packets).len();
        }
    }
    println!("lossy captures: {differing} of {n} calls differ with the filter");
}
