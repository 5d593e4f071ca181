//! Writes the fuzz seed corpora from the recorded Ollama fixtures: frames, segment sequences,
//! HTTP byte streams, bodies, compressed bodies and capture files, each in its target's input
//! format (the encoders of `ollama_tracer_fuzz`). Deterministic; small fixtures only, so the
//! committed seeds stay a few MB.
//!
//! cargo run --release --manifest-path tracer-core/fuzz/Cargo.toml -p ollama-tracer-fuzz-seedgen -- [--out DIR]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracer_core::llm::Route;
use testkit::fixtures::{self, Fixture};
use testkit::fuzz::{chunked, coding, decoders, http, reassembly, rejoin};
use testkit::pcap::{self, Corruption, FileFormat, LinkType, TsPrecision, WriterConfig};
use testkit::synth::{self, ConnectionSpec, ETHERNET_MSS, Packet, TcpConfig, perturb};
use testkit::wire::{self, BodyKind, RenderOptions};

/// Fixtures whose request and response together are at most this large are used.
const SMALL: usize = 6_000;
/// Fixtures used per target where every one would be redundant.
const PER_TARGET: usize = 40;
const CLIENT_ISN: u32 = 0xfff0_0000;
const SERVER_ISN: u32 = 0x7fff_ff00;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = match (args.next().as_deref(), args.next()) {
        (Some("--out"), Some(dir)) => PathBuf::from(dir),
        (None, _) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds"),
        _ => anyhow::bail!("usage: fuzz-seeds [--out DIR]"),
    };
    let all = fixtures::load_all().context("loading fixtures")?;
    let mut small: Vec<&Fixture> =
        all.iter().filter(|f| f.request.body.len() + f.response.body.len() <= SMALL).collect();
    // One of each route and body kind first, so a short list still covers every shape.
    small.sort_by_key(|f| (f.path(), f.response_body_kind() as u8, f.response.status, f.name.clone()));
    let mut seen = std::collections::HashSet::new();
    let (firsts, rest): (Vec<&Fixture>, Vec<&Fixture>) =
        small.iter().partition(|f| seen.insert((f.path(), f.response_body_kind() as u8, f.response.status)));
    let picked: Vec<&Fixture> = firsts.into_iter().chain(rest).take(PER_TARGET).collect();

    let mut seeds = Seeds::default();
    for (i, f) in picked.iter().enumerate() {
        let wire = wire::render(f, &RenderOptions::default());
        let spec = ConnectionSpec::loopback_v4(41_000 + i as u16)
            .seed(i as u64)
            .tcp(TcpConfig {
                client_isn: Some(CLIENT_ISN),
                server_isn: Some(SERVER_ISN),
                client_mss: ETHERNET_MSS,
                server_mss: ETHERNET_MSS,
                ..TcpConfig::default()
            })
            .exchange(wire.clone());
        let packets = synth::synthesize(&[spec]).context("synthesize")?.packets;
        let name = short(&f.name);
        packet_seeds(&mut seeds, &name, &packets, i)?;
        reassembly_seeds(&mut seeds, &name, &packets, i);
        http_seed(&mut seeds, &name, &[&wire]);
        body_seeds(&mut seeds, &name, f);
        rejoin_seeds(&mut seeds, &name, f, i);
        chunked_seeds(&mut seeds, &name, f, i);
        if i < 12 {
            replay_seeds(&mut seeds, &name, &packets, i)?;
        }
    }
    // Keep-alive: several exchanges on one connection.
    let wires: Vec<wire::ExchangeWire> =
        picked.iter().take(4).map(|f| wire::render(f, &RenderOptions::default())).collect();
    http_seed(&mut seeds, "keepalive", &wires.iter().collect::<Vec<_>>());
    coding_seeds(&mut seeds, &picked)?;

    let mut total = 0;
    for ((target, name), bytes) in &seeds.0 {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join(name), bytes)?;
        total += bytes.len();
    }
    println!("wrote {} seeds ({} KiB) to {}", seeds.0.len(), total / 1024, out.display());
    Ok(())
}

/// Seeds by (target, file name).
#[derive(Default)]
struct Seeds(BTreeMap<(&'static str, String), Vec<u8>>);

impl Seeds {
    fn add(&mut self, target: &'static str, name: impl Into<String>, bytes: Vec<u8>) {
        self.0.insert((target, name.into()), bytes);
    }
}

/// Fixture names are long; seeds only need to be told apart.
fn short(name: &str) -> String {
    let tail: String = name.chars().rev().take(48).collect::<Vec<_>>().into_iter().rev().collect();
    tail.trim_start_matches('_').to_string()
}

/// The SYN, the first request and response segments and the FIN, framed for each link type.
fn packet_seeds(seeds: &mut Seeds, name: &str, packets: &[Packet], i: usize) -> Result<()> {
    let link = LinkType::ALL[i % LinkType::ALL.len()];
    let firsts = [
        packets.iter().position(|p| p.flags.syn()),
        packets.iter().position(|p| !p.payload.is_empty()),
        packets.iter().position(|p| p.src.port() == synth::OLLAMA_PORT && !p.payload.is_empty()),
        packets.iter().position(|p| p.flags.fin()),
    ];
    for (k, at) in firsts.into_iter().flatten().enumerate() {
        let mut p = packets[at].clone();
        p.payload.truncate(256);
        let frame = pcap::frame(&p, link)?;
        let mut bytes = 0u16.to_le_bytes().to_vec();
        bytes.extend_from_slice(&11434u16.to_le_bytes());
        bytes.extend_from_slice(&frame.bytes);
        seeds.add("packet", format!("{name}-{}-{k}", link.name()), bytes);
    }
    Ok(())
}

fn ops_of(packets: &[Packet]) -> Vec<reassembly::Op> {
    let mut prev = packets.first().map_or(0, |p| p.ts_ns);
    packets
        .iter()
        .map(|p| {
            let to_client = p.src.port() == synth::OLLAMA_PORT;
            let (isn, peer) = if to_client { (SERVER_ISN, CLIENT_ISN) } else { (CLIENT_ISN, SERVER_ISN) };
            let dt = ((p.ts_ns.saturating_sub(prev)) / 100_000).min(u64::from(u16::MAX)) as u16;
            prev = p.ts_ns;
            reassembly::Op {
                to_client,
                flow: 0,
                expire: dt > 0,
                flags: p.flags.0 & 0x07,
                rel_seq: p.seq.wrapping_sub(isn),
                len: p.payload.len().min(4096) as u16,
                captured: p.captured_payload.map(|c| c as u16),
                ack: p.flags.ack().then(|| p.ack.wrapping_sub(peer)),
                dt,
                ..Default::default()
            }
        })
        .collect()
}

/// The connection as captured, and perturbed: reordered, duplicated, lossy, cut short.
fn reassembly_seeds(seeds: &mut Seeds, name: &str, packets: &[Packet], i: usize) {
    let header = reassembly::Header {
        max_buffer_per_conn: 8_192,
        max_buffer_total: 12_000,
        max_connections: 3,
        reorder_wait: 2_000,
        idle_timeout: 60_000,
        client_isn: CLIENT_ISN,
        server_isn: SERVER_ISN,
    };
    seeds.add("reassembly", format!("{name}-clean"), reassembly::encode(&header, &ops_of(packets)));
    let mut p = packets.to_vec();
    match i % 4 {
        0 => {
            let n = p.len();
            for k in (1..n.saturating_sub(1)).step_by(3) {
                perturb::swap(&mut p, k, k + 1).expect("in range");
            }
        }
        1 => {
            for k in (0..p.len()).step_by(4).rev() {
                perturb::duplicate(&mut p, k, 0).expect("in range");
            }
        }
        2 => {
            let lossy: Vec<usize> = (0..p.len()).filter(|k| k % 5 == 3 && !p[*k].payload.is_empty()).collect();
            perturb::drop_indices(&mut p, &lossy);
        }
        _ => perturb::truncate_all(&mut p, 64),
    }
    seeds.add("reassembly", format!("{name}-perturbed"), reassembly::encode(&header, &ops_of(&p)));
}

/// Exchanges on one connection as the tracker sees them: each request, each response write.
fn http_seed(seeds: &mut Seeds, name: &str, wires: &[&wire::ExchangeWire]) {
    let mut ops = Vec::new();
    for w in wires {
        for piece in w.request.bytes.chunks(u16::MAX as usize) {
            ops.push(http::Op::ToServer(piece.to_vec()));
        }
        let mut first = w.response.head.clone();
        let mut writes = w.response.writes.iter();
        // Go sends the head with the first body write.
        if let Some(wr) = writes.next() {
            first.extend_from_slice(&wr.bytes);
        }
        for bytes in std::iter::once(first).chain(writes.map(|wr| wr.bytes.clone())) {
            for piece in bytes.chunks(u16::MAX as usize) {
                ops.push(http::Op::ToClient(piece.to_vec(), http::PeerPos::Sent));
            }
        }
    }
    ops.push(http::Op::End(tracer_core::segment::Direction::ToServer));
    ops.push(http::Op::Close(tracer_core::reassembly::CloseReason::Fin));
    seeds.add("http", name.to_string(), http::encode(true, name.len() % 2 == 0, &ops));
}

/// A streamed body's documents, one chunk each (as Ollama writes them), with pieces lost.
fn rejoin_seeds(seeds: &mut Seeds, name: &str, f: &Fixture, i: usize) {
    let kind = match f.response_body_kind() {
        BodyKind::Ndjson => 0u8,
        BodyKind::Sse => 1,
        _ => return,
    };
    let body = f.response.body.as_bytes();
    let docs: Vec<Vec<u8>> = wire::split_body(f.response_body_kind(), body)
        .into_iter()
        .map(|d| match kind {
            0 => d.strip_suffix(b"\n").unwrap_or(d).to_vec(),
            _ => wire::sse_data(d).unwrap_or_default(),
        })
        .collect();
    let docs: Vec<&[u8]> = docs.iter().map(Vec::as_slice).collect();
    // Pieces of up to 300 bytes (split regime 2); one, two and a run of pieces lost.
    let flags = kind | 4 | if i % 2 == 0 { 8 } else { 0 };
    for (k, lost) in [0b100u64, 0b1_0010_0100, 0b1111_0000].into_iter().enumerate() {
        seeds.add("rejoin", format!("{name}-{k}"), rejoin::encode(flags, 2 + 4 * i as u64, lost, &docs));
    }
}

/// A response body in chunked framing: one chunk per document as Ollama writes it, then the
/// same in odd framing the fast path leaves to the state machine (upper-case hex with leading
/// zeros, an extension, bare LFs, a trailer), each cut by several split regimes.
fn chunked_seeds(seeds: &mut Seeds, name: &str, f: &Fixture, i: usize) {
    let body = f.response.body.as_bytes();
    let docs = wire::split_body(f.response_body_kind(), body);
    let docs = if docs.is_empty() { vec![body] } else { docs };
    let mut plain = Vec::new();
    let mut odd = Vec::new();
    for (k, d) in docs.iter().enumerate() {
        plain.extend_from_slice(format!("{:x}\r\n", d.len()).as_bytes());
        plain.extend_from_slice(d);
        plain.extend_from_slice(b"\r\n");
        let size = match k % 3 {
            0 => format!("{:04X}\r\n", d.len()),
            1 => format!("{:x};ext=1\r\n", d.len()),
            _ => format!("{:x}\n", d.len()),
        };
        odd.extend_from_slice(size.as_bytes());
        odd.extend_from_slice(d);
        odd.extend_from_slice(if k % 2 == 0 { b"\r\n" } else { b"\n" });
    }
    plain.extend_from_slice(b"0\r\n\r\n");
    odd.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
    for (k, seed) in [3u64, 2 + 4 * i as u64, 1].into_iter().enumerate() {
        seeds.add("chunked", format!("{name}-{k}"), chunked::encode(seed, &plain));
    }
    seeds.add("chunked", format!("{name}-odd"), chunked::encode(3 + 4 * i as u64, &odd));
}

fn content_type_index(f: &Fixture) -> u8 {
    let ct = f.response.headers.get("content-type").map(str::to_ascii_lowercase);
    let found = decoders::CONTENT_TYPES.iter().position(|c| c.map(str::to_ascii_lowercase) == ct);
    let by_kind = match f.response_body_kind() {
        BodyKind::Ndjson => 0,
        BodyKind::Sse => 1,
        BodyKind::Json => 2,
        BodyKind::Empty => 3,
        BodyKind::Text => 4,
    };
    found.unwrap_or(by_kind) as u8
}

/// Bodies for the framers, the decoders and the JSON scanner.
fn body_seeds(seeds: &mut Seeds, name: &str, f: &Fixture) {
    let route = Route::classify(&f.request.method.to_ascii_uppercase(), &f.path());
    let req = f.request.body.as_bytes();
    let resp = f.response.body.as_bytes();
    let capture = name.len() % 2 == 0;
    seeds.add("request", name.to_string(), decoders::encode_request(route, capture, req));
    let ctype = content_type_index(f);
    seeds.add("response", name.to_string(), decoders::encode_response(route, f.response.status, ctype, capture, resp));
    let mode = match f.response_body_kind() {
        BodyKind::Ndjson => 0u8,
        BodyKind::Sse => 2,
        _ => 1,
    };
    let mut framing = vec![mode];
    framing.extend_from_slice(&2u64.to_le_bytes());
    framing.extend_from_slice(&0u16.to_le_bytes());
    framing.extend_from_slice(resp);
    seeds.add("framing", name.to_string(), framing);
    // JSON documents: the request, and the first and last chunk of a stream.
    let mut docs: Vec<&[u8]> = vec![req];
    let chunks = wire::split_body(f.response_body_kind(), resp);
    docs.extend(chunks.first().copied());
    docs.extend(chunks.last().copied());
    for (k, doc) in docs.into_iter().enumerate() {
        let doc = wire::sse_data(doc).unwrap_or_else(|| doc.to_vec());
        if doc.first().is_some_and(|c| matches!(c, b'{' | b'[')) {
            let mut bytes = 3u64.to_le_bytes().to_vec();
            bytes.extend_from_slice(&doc);
            seeds.add("json", format!("{name}-{k}"), bytes);
        }
    }
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data)?;
    Ok(e.finish()?)
}

fn zlib(data: &[u8]) -> Result<Vec<u8>> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data)?;
    Ok(e.finish()?)
}

fn raw_deflate(data: &[u8]) -> Result<Vec<u8>> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data)?;
    Ok(e.finish()?)
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// Compressed fixture bodies, and bodies that inflate a thousandfold (bombs must stay bounded).
fn coding_seeds(seeds: &mut Seeds, picked: &[&Fixture]) -> Result<()> {
    for (i, f) in picked.iter().enumerate().take(8) {
        let body = f.response.body.as_bytes();
        let name = short(&f.name);
        seeds.add("content_coding", format!("{name}-gzip"), coding::encode("gzip", &gzip(body)?));
        let deflated = if i % 2 == 0 { zlib(body)? } else { raw_deflate(body)? };
        seeds.add("content_coding", format!("{name}-deflate"), coding::encode("deflate", &deflated));
        seeds.add("content_coding", format!("{name}-zstd"), coding::encode("zstd", &zstd(body)));
    }
    let bomb = vec![b'0'; 16 << 20];
    seeds.add("content_coding", "bomb-gzip", coding::encode("gzip", &gzip(&bomb)?));
    seeds.add("content_coding", "bomb-zstd", coding::encode("zstd", &zstd(&bomb)));
    Ok(())
}

/// Capture files in every format and link type, and damaged ones.
fn replay_seeds(seeds: &mut Seeds, name: &str, packets: &[Packet], i: usize) -> Result<()> {
    let link = LinkType::ALL[i % LinkType::ALL.len()];
    let (format, precision) = match i % 3 {
        0 => (FileFormat::Pcap, TsPrecision::Micro),
        1 => (FileFormat::Pcap, TsPrecision::Nano),
        _ => (FileFormat::PcapNg, TsPrecision::Nano),
    };
    let cfg = WriterConfig::new(format, precision, link);
    seeds.add("replay", format!("{name}-{}", link.name()), pcap::to_bytes(cfg, packets)?);
    let corruption = match i % 4 {
        0 => Corruption::TruncatedRecord { record: packets.len() / 2 },
        1 => Corruption::CaplenExceedsOrigLen { record: 3 },
        2 => Corruption::AbsurdRecordLength { record: 2 },
        _ => Corruption::BadMagic,
    };
    seeds.add("replay", format!("{name}-{}-damaged", link.name()), pcap::corrupt_bytes(cfg, packets, corruption)?);
    Ok(())
}
