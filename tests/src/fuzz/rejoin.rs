//! Bodies rejoined after gaps: a chunked response (NDJSON, SSE or other) of arbitrary documents
//! and chunking, optionally followed by a second exchange on the connection, cut into pieces of
//! which any may be missing, through `HttpTracker` and `CallAssembler`.
//!
//! Input: `[flags: u8][split seed: u64][lost: u64][docs: ([len: u8][bytes])...]`. Flags: bits
//! 0–1 the body (NDJSON, SSE, plain), bit 2 one chunk per document (else chunks of sizes from
//! the split seed), bit 3 a second exchange after the first. Bit `k` of `lost` drops the `k`th
//! piece of the response stream (pieces past 63 are kept). NDJSON and SSE documents carry no raw
//! CR, as JSON never does (Ollama's bodies are JSON documents); the plain body any bytes.
//!
//! Invariants: every exchange ends exactly once, nothing of it follows its end; bytes held to
//! rejoin stay within bounds; with nothing lost the body comes whole. For NDJSON and SSE bodies,
//! never a fabricated byte: each body byte handed on is the original's at its place — in step
//! after a gap inside known data, else from a true chunk start on after `BodyRejoined` — and a
//! token count the call reports is one a document of the body says.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use arbitrary::Unstructured;
use tracer_core::http::rejoin::MAX_CHUNK;
use tracer_core::http::{ExchangeId, HttpConfig, HttpEvent, HttpTracker};
use tracer_core::llm::{CallAssembler, LlmCall, LlmConfig};
use tracer_core::reassembly::{CloseReason, StreamEvent};
use tracer_core::segment::{CaptureMeta, Direction, FlowKey, Timestamp};

use super::input::{Encoder, SplitMix, split, take, take_bytes};

const REQUEST: &[u8] = b"POST /api/chat HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
const START_NS: u64 = 1_767_225_600_000_000_000;

/// The body kinds, by the low bits of the flags.
const CONTENT_TYPES: [&str; 3] = ["application/x-ndjson", "text/event-stream", "application/json"];

/// Fuzz bytes for a run (what [`run`] reads).
pub fn encode(flags: u8, split_seed: u64, lost: u64, docs: &[&[u8]]) -> Vec<u8> {
    let mut e = Encoder::default();
    e.u8(flags).u64(split_seed).u64(lost);
    for d in docs {
        let d = &d[..d.len().min(255)];
        e.u8(d.len() as u8).raw(d);
    }
    e.finish()
}

/// One response: its bytes on the wire, its de-chunked body and where each chunk starts in it.
struct Response {
    wire: Vec<u8>,
    body: Vec<u8>,
    starts: Vec<usize>,
}

fn response(kind: usize, docs: &[Vec<u8>], per_doc: bool, rng: &mut SplitMix) -> Response {
    let mut body = Vec::new();
    let mut bounds = Vec::new();
    for d in docs {
        match kind {
            0 => {
                body.extend(d.iter().filter(|&&c| c != b'\r'));
                body.push(b'\n');
            }
            1 => {
                body.extend_from_slice(b"data: ");
                body.extend(d.iter().filter(|&&c| c != b'\r' && c != b'\n'));
                body.extend_from_slice(b"\n\n");
            }
            _ => body.extend_from_slice(d),
        }
        bounds.push(body.len());
    }
    // Chunk ends: after each document, or at sizes from the seed.
    let mut ends = Vec::new();
    if per_doc {
        ends = bounds.into_iter().filter(|&b| b > 0).collect();
        ends.dedup();
    } else {
        let mut at = 0;
        while at < body.len() {
            at = (at + 1 + rng.below(300)).min(body.len());
            ends.push(at);
        }
    }
    let mut wire =
        format!("HTTP/1.1 200 OK\r\nContent-Type: {}\r\nTransfer-Encoding: chunked\r\n\r\n", CONTENT_TYPES[kind])
            .into_bytes();
    let mut starts = Vec::new();
    let mut from = 0;
    for end in ends {
        if end > from {
            starts.push(from);
            wire.extend_from_slice(format!("{:x}\r\n", end - from).as_bytes());
            wire.extend_from_slice(&body[from..end]);
            wire.extend_from_slice(b"\r\n");
            from = end;
        }
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    Response { wire, body, starts }
}

/// Where the next delivered body byte of an exchange may come from.
#[derive(Debug)]
struct Follow {
    body: usize,
    /// The positions it may be at (several while repeated bytes leave it open), or `None` after
    /// a rejoin: then any chunk start past the earliest of `last`.
    at: Option<Vec<usize>>,
    last: Vec<usize>,
    ended: bool,
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let flags: u8 = take(&mut u);
    let split_seed: u64 = take(&mut u);
    let lost: u64 = take(&mut u);
    let mut docs = Vec::new();
    while !u.is_empty() && docs.len() < 512 {
        let len: u8 = take(&mut u);
        docs.push(take_bytes(&mut u, len.into()).to_vec());
    }
    let kind = usize::from(flags & 3).min(2);
    let mut rng = SplitMix::new(split_seed);
    let mut responses = vec![response(kind, &docs, flags & 4 != 0, &mut rng)];
    if flags & 8 != 0 {
        let mut second = docs.clone();
        second.reverse();
        responses.push(response(kind, &second, true, &mut rng));
    }
    // Token counts the bodies say, read as leniently as anyone might (a call may report one of
    // these, or none).
    const KEY: &[u8] = b"\"eval_count\":";
    let mut said = HashSet::new();
    for r in &responses {
        for (k, _) in r.body.windows(KEY.len()).enumerate().filter(|(_, w)| *w == KEY) {
            let rest = &r.body[k + KEY.len()..];
            let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
            if let Some(n) = std::str::from_utf8(&rest[..digits]).ok().and_then(|d| d.parse::<u64>().ok()) {
                said.insert(n);
            }
        }
    }
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let flow = FlowKey { client: SocketAddr::new(lo, 40_001), server: SocketAddr::new(lo, 11434) };
    let mut http = HttpTracker::new(HttpConfig::default());
    let mut llm = CallAssembler::new(LlmConfig::default());
    let mut follow: HashMap<ExchangeId, Follow> = HashMap::new();
    let mut calls: Vec<LlmCall> = Vec::new();
    let mut opened = 0usize;
    let mut ts = START_NS;
    let mut pos = [0u64; 2];
    let checked = kind < 2;

    let mut push = |ev: StreamEvent<'_>, follow: &mut HashMap<ExchangeId, Follow>, calls: &mut Vec<LlmCall>| {
        http.push(ev, &mut |hev| {
            match &hev {
                HttpEvent::Request { id, .. } => {
                    follow.insert(*id, Follow { body: opened, at: Some(vec![0]), last: vec![0], ended: false });
                    opened += 1;
                }
                HttpEvent::ResponseBody { id, data, .. } => {
                    let f = follow.get_mut(id).expect("a body of a known exchange");
                    assert!(!f.ended, "body after the end");
                    if let Some(r) = responses.get(f.body) {
                        let from = match f.at.take() {
                            Some(at) => at,
                            None => {
                                let min = f.last.iter().copied().min().unwrap_or(0);
                                r.starts.iter().copied().filter(|&k| k >= min).collect()
                            }
                        };
                        let at: Vec<usize> = from
                            .into_iter()
                            .filter(|&p| r.body.get(p..).is_some_and(|b| b.starts_with(data)))
                            .map(|p| p + data.len())
                            .collect();
                        // (Plain bodies can hold anything, a chunk quoted whole included.)
                        assert!(
                            !checked || !at.is_empty(),
                            "body bytes not the original's: {:?}",
                            String::from_utf8_lossy(data)
                        );
                        f.last = at.clone();
                        f.at = Some(at);
                    }
                }
                HttpEvent::BodyGap { id, len, dir: Direction::ToClient } => {
                    let f = follow.get_mut(id).expect("a gap of a known exchange");
                    f.at = f.at.take().map(|at| at.into_iter().map(|p| p + *len as usize).collect());
                }
                HttpEvent::BodyRejoined { id, dir: Direction::ToClient, .. } => {
                    follow.get_mut(id).expect("a known exchange").at = None;
                }
                HttpEvent::End { id, .. } => {
                    let f = follow.get_mut(id).expect("an end of a known exchange");
                    assert!(!f.ended, "exchange {id} ended twice");
                    f.ended = true;
                }
                _ => {}
            }
            llm.push(hev, &mut |c| calls.push(c));
        });
        let held = http.partial_head_bytes();
        assert!(held <= 2 * (MAX_CHUNK + 16 * 1024), "{held} bytes held");
    };

    push(StreamEvent::Open { conn: 1, flow, ts: Timestamp(ts), handshake: true }, &mut follow, &mut calls);
    let mut piece = 0usize;
    let mut lost_any = false;
    for r in &responses {
        ts += 1_000;
        let p = pos[0];
        pos[0] += REQUEST.len() as u64;
        let meta = CaptureMeta::default();
        let ev = StreamEvent::Data {
            conn: 1,
            dir: Direction::ToServer,
            ts: Timestamp(ts),
            pos: p,
            peer_pos: Some(pos[1]),
            data: REQUEST,
            meta,
        };
        push(ev, &mut follow, &mut calls);
        for bytes in split(&r.wire, split_seed ^ 0x5a5a) {
            ts += 1_000;
            let p = pos[1];
            pos[1] += bytes.len() as u64;
            let drop = piece < 64 && lost >> piece & 1 == 1;
            piece += 1;
            let ev = if drop {
                lost_any = true;
                StreamEvent::Gap {
                    conn: 1,
                    dir: Direction::ToClient,
                    ts: Timestamp(ts),
                    pos: p,
                    len: bytes.len() as u64,
                }
            } else {
                let peer_pos = Some(pos[0]);
                StreamEvent::Data {
                    conn: 1,
                    dir: Direction::ToClient,
                    ts: Timestamp(ts),
                    pos: p,
                    peer_pos,
                    data: bytes,
                    meta,
                }
            };
            push(ev, &mut follow, &mut calls);
        }
    }
    ts += 1_000;
    push(StreamEvent::Close { conn: 1, ts: Timestamp(ts), reason: CloseReason::Fin }, &mut follow, &mut calls);

    assert!(follow.values().all(|f| f.ended), "an exchange never ended");
    assert_eq!(calls.len(), follow.len(), "one call per exchange");
    for c in calls.iter().filter(|_| checked) {
        if let Some(n) = c.response.output_tokens {
            assert!(said.contains(&n), "{n} tokens reported, said by no document");
        }
    }
    if !lost_any {
        for f in follow.values() {
            assert_eq!(f.at, Some(vec![responses[f.body].body.len()]), "a body without loss comes whole");
        }
    }
}
