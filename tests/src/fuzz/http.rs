//! HTTP exchange tracking (and call assembly on top of it) fed arbitrary byte streams in both
//! directions, split anywhere, with gaps, FINs and a close.
//!
//! Input: `[flags: u8]` then operations `[op: u8]...` (see [`Op`]); data and gap lengths are
//! `u16`, ACK positions `u32`. Flags: 1 handshake, 2 content capture, 4 tight HTTP limits (two
//! pending exchanges, 64 bytes of unfinished heads, heads stale after 5 operations), 8 one call
//! in flight.
//!
//! Invariants: every exchange starts with its request and ends exactly once, nothing of it
//! follows its end; bodies never exceed the bytes that carried them; counters match the events;
//! closing the connection settles every exchange into exactly one call whose byte counts are its
//! bodies' (a call reported early to stay within the limit: at most its bodies'); unfinished
//! heads and calls stay within their limits; no secret header is ever kept and no query string
//! reaches a call.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use arbitrary::Unstructured;
use tracer_core::http::head::is_secret_header;
use tracer_core::http::{ExchangeId, HttpConfig, HttpEvent, HttpTracker};
use tracer_core::llm::{CallAssembler, LlmCall, LlmConfig};
use tracer_core::reassembly::{CloseReason, StreamEvent};
use tracer_core::segment::{CaptureMeta, Direction, FlowKey, Timestamp};

use super::input::{Encoder, take, take_bytes};

const CONN: u64 = 1;
const START_NS: u64 = 1_767_225_600_000_000_000;

/// How a response segment reports what the server had received (its ACK).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerPos {
    /// Every request byte sent so far (what a live capture sees).
    Sent,
    None,
    Zero,
    At(u32),
}

/// One stream event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    ToServer(Vec<u8>),
    ToClient(Vec<u8>, PeerPos),
    Gap(Direction, u16),
    End(Direction),
    /// Closes the connection; nothing after it is read.
    Close(CloseReason),
}

const CLOSES: [CloseReason; 6] = [
    CloseReason::Fin,
    CloseReason::Reset { by: Direction::ToServer },
    CloseReason::Reset { by: Direction::ToClient },
    CloseReason::Idle,
    CloseReason::Reused,
    CloseReason::CaptureEnd,
];

fn dir_bit(d: Direction) -> u8 {
    (d == Direction::ToClient) as u8
}

fn dir_of(bit: u8) -> Direction {
    if bit & 1 == 0 { Direction::ToServer } else { Direction::ToClient }
}

impl Op {
    fn read(u: &mut Unstructured<'_>) -> Op {
        let op: u8 = take(u);
        match op % 8 {
            0 | 6 => {
                let len: u16 = take(u);
                Op::ToServer(take_bytes(u, len.into()).to_vec())
            }
            1 | 7 => {
                let peer = match (op >> 3) & 3 {
                    0 => PeerPos::Sent,
                    1 => PeerPos::None,
                    2 => PeerPos::Zero,
                    _ => PeerPos::At(take(u)),
                };
                let len: u16 = take(u);
                Op::ToClient(take_bytes(u, len.into()).to_vec(), peer)
            }
            2 => Op::Gap(dir_of(op >> 3), take(u)),
            3 | 4 => Op::End(dir_of(op >> 3)),
            _ => Op::Close(CLOSES[usize::from(op >> 3) % CLOSES.len()]),
        }
    }

    fn write(&self, e: &mut Encoder) {
        match self {
            Op::ToServer(b) => e.u8(0).u16(b.len() as u16).raw(b),
            Op::ToClient(b, peer) => {
                match peer {
                    PeerPos::Sent => e.u8(1),
                    PeerPos::None => e.u8(1 | 1 << 3),
                    PeerPos::Zero => e.u8(1 | 2 << 3),
                    PeerPos::At(p) => e.u8(1 | 3 << 3).u32(*p),
                };
                e.u16(b.len() as u16).raw(b)
            }
            Op::Gap(d, len) => e.u8(2 | dir_bit(*d) << 3).u16(*len),
            Op::End(d) => e.u8(3 | dir_bit(*d) << 3),
            Op::Close(r) => {
                let i = CLOSES.iter().position(|c| c == r).unwrap_or(0) as u8;
                e.u8(5 | i << 3)
            }
        };
    }
}

/// Fuzz bytes for a run: `handshake` (else the capture starts mid-connection), content capture,
/// and the operations. Data longer than 65535 bytes must be split by the caller.
pub fn encode(handshake: bool, capture: bool, ops: &[Op]) -> Vec<u8> {
    let mut e = Encoder::default();
    e.u8(u8::from(handshake) | u8::from(capture) << 1);
    for op in ops {
        op.write(&mut e);
    }
    e.finish()
}

#[derive(Debug, Default)]
struct Exchange {
    request_end: bool,
    status: Option<u16>,
    ended: bool,
    /// The bodies' sizes as sent: the latest `wire` of their events, then their end's.
    request_body: u64,
    response_body: u64,
    undecodable: [bool; 2],
}

#[derive(Debug, Default)]
struct Checker {
    exchanges: HashMap<ExchangeId, Exchange>,
    requests: u64,
    /// Requests reported for responses whose request the capture did not see.
    unseen: u64,
    responses: u64,
    interim: u64,
    ends: u64,
    request_body: u64,
    response_body: u64,
}

impl Checker {
    fn open(&mut self, id: ExchangeId, what: &str) -> &mut Exchange {
        let ex = self.exchanges.get_mut(&id).unwrap_or_else(|| panic!("{what} for exchange {id} before its request"));
        assert!(!ex.ended, "{what} for exchange {id} after its end");
        ex
    }

    fn event(&mut self, ev: &HttpEvent<'_>) {
        match ev {
            HttpEvent::Request { id, head, .. } => {
                assert!(self.exchanges.insert(*id, Exchange::default()).is_none(), "exchange {id} requested twice");
                assert!(!head.path.contains('?'), "query string kept in {:?}", head.path);
                if head.unseen {
                    self.unseen += 1;
                } else {
                    self.requests += 1;
                }
            }
            HttpEvent::RequestBody { id, wire, .. } => {
                let ex = self.open(*id, "request body");
                assert!(!ex.request_end, "request body after the request's end");
                assert!(!ex.undecodable[0], "request body after it became undecodable");
                assert!(*wire >= ex.request_body, "request body size went back");
                ex.request_body = *wire;
            }
            HttpEvent::RequestEnd { id, .. } => {
                let ex = self.open(*id, "request end");
                assert!(!ex.request_end, "request ended twice");
                ex.request_end = true;
            }
            HttpEvent::Interim { id, .. } => {
                let ex = self.open(*id, "interim response");
                assert!(ex.status.is_none(), "interim response after the final one");
                self.interim += 1;
            }
            HttpEvent::Response { id, head, .. } => {
                let ex = self.open(*id, "response");
                assert!(ex.status.is_none(), "two responses for exchange {id}");
                ex.status = Some(head.status);
                self.responses += 1;
            }
            HttpEvent::ResponseBody { id, wire, .. } => {
                let ex = self.open(*id, "response body");
                assert!(ex.status.is_some(), "response body before the response head");
                assert!(!ex.undecodable[1], "response body after it became undecodable");
                assert!(*wire >= ex.response_body, "response body size went back");
                ex.response_body = *wire;
            }
            HttpEvent::BodyGap { id, .. } => {
                self.open(*id, "body gap");
            }
            HttpEvent::BodyRejoined { id, dir, .. } => {
                let ex = self.open(*id, "body rejoined");
                assert!(*dir == Direction::ToServer || ex.status.is_some(), "response body rejoined before its head");
                assert!(*dir == Direction::ToClient || !ex.request_end, "request body rejoined after its end");
            }
            HttpEvent::Undecodable { id, dir } => {
                let ex = self.open(*id, "undecodable body");
                let said = &mut ex.undecodable[dir.index()];
                assert!(!*said, "a body said undecodable twice");
                *said = true;
            }
            HttpEvent::End { id, end, .. } => {
                let ex = self.open(*id, "end");
                assert!(end.request_body_bytes >= ex.request_body, "request body smaller at its end");
                assert!(end.response_body_bytes >= ex.response_body, "response body smaller at its end");
                ex.request_body = end.request_body_bytes;
                ex.response_body = end.response_body_bytes;
                ex.ended = true;
                self.request_body += end.request_body_bytes;
                self.response_body += end.response_body_bytes;
                self.ends += 1;
            }
        }
    }
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let flags: u8 = take(&mut u);
    let keep = ["user-agent", "authorization", "x-api-key", "x-request-id", "cookie"];
    let mut http = HttpConfig { keep_headers: keep.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    let tight = flags & 4 != 0;
    if tight {
        http = HttpConfig { max_pending_per_conn: 2, max_partial_heads: 64, head_timeout_ns: 5_000_000, ..http };
    }
    let max_partial_heads = http.max_partial_heads;
    let mut tracker = HttpTracker::new(http);
    let max_calls = if flags & 8 != 0 { 1 } else { LlmConfig::default().max_calls_in_flight };
    let mut assembler = CallAssembler::new(LlmConfig {
        capture_content: flags & 2 != 0,
        max_calls_in_flight: max_calls,
        ..LlmConfig::default()
    });
    let mut check = Checker::default();
    // Each call, and whether its exchange had ended when it was reported.
    let mut calls: Vec<(LlmCall, bool)> = Vec::new();
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let flow = FlowKey { client: SocketAddr::new(lo, 40_000), server: SocketAddr::new(lo, 11434) };
    let mut ts = START_NS;
    let mut pos = [0u64; 2];
    let mut fed = [0u64; 2];

    let mut push = |tracker: &mut HttpTracker, ev: StreamEvent<'_>, check: &mut Checker, calls: &mut Vec<_>| {
        tracker.push(ev, &mut |hev| {
            check.event(&hev);
            assembler.push(hev, &mut |c| {
                let ended = check.exchanges.get(&c.exchange).is_some_and(|e| e.ended);
                calls.push((c, ended));
            });
            assert!(assembler.in_flight() <= max_calls, "{} calls in flight", assembler.in_flight());
        });
    };

    push(
        &mut tracker,
        StreamEvent::Open { conn: CONN, flow, ts: Timestamp(ts), handshake: flags & 1 != 0 },
        &mut check,
        &mut calls,
    );
    let mut close = CloseReason::CaptureEnd;
    while !u.is_empty() {
        ts += 1_000_000;
        let t = Timestamp(ts);
        let op = Op::read(&mut u);
        let ev = match &op {
            Op::ToServer(b) if !b.is_empty() => {
                fed[0] += b.len() as u64;
                let p = pos[0];
                pos[0] += b.len() as u64;
                StreamEvent::Data {
                    conn: CONN,
                    dir: Direction::ToServer,
                    ts: t,
                    pos: p,
                    peer_pos: Some(pos[1]),
                    data: b,
                    meta: CaptureMeta::default(),
                }
            }
            Op::ToClient(b, peer) if !b.is_empty() => {
                fed[1] += b.len() as u64;
                let p = pos[1];
                pos[1] += b.len() as u64;
                let peer_pos = match peer {
                    PeerPos::Sent => Some(pos[0]),
                    PeerPos::None => None,
                    PeerPos::Zero => Some(0),
                    PeerPos::At(x) => Some(u64::from(*x)),
                };
                let meta = CaptureMeta::default();
                StreamEvent::Data { conn: CONN, dir: Direction::ToClient, ts: t, pos: p, peer_pos, data: b, meta }
            }
            Op::ToServer(_) | Op::ToClient(..) => continue,
            Op::Gap(d, len) if *len > 0 => {
                // Missed bytes are the stream's too: bodies count them where their number is known.
                fed[d.index()] += u64::from(*len);
                let p = pos[d.index()];
                pos[d.index()] += u64::from(*len);
                StreamEvent::Gap { conn: CONN, dir: *d, ts: t, pos: p, len: u64::from(*len) }
            }
            Op::Gap(..) => continue,
            Op::End(d) => StreamEvent::End { conn: CONN, dir: *d, ts: t },
            Op::Close(reason) => {
                close = *reason;
                break;
            }
        };
        push(&mut tracker, ev, &mut check, &mut calls);
        if tight {
            tracker.expire(t);
            let held = tracker.partial_head_bytes();
            assert!(held <= max_partial_heads, "{held} bytes of unfinished heads held");
        }
    }
    ts += 1_000_000;
    push(&mut tracker, StreamEvent::Close { conn: CONN, ts: Timestamp(ts), reason: close }, &mut check, &mut calls);

    assert_eq!(tracker.in_flight(), 0, "exchanges left after the connection closed");
    assert_eq!(assembler.in_flight(), 0, "calls left after the connection closed");
    assert!(check.exchanges.values().all(|e| e.ended), "an exchange never ended");
    // Sizes as sent, so within what carried them (decoded bodies may be larger: compression).
    assert!(check.request_body <= fed[0], "request bodies larger than the request stream");
    assert!(check.response_body <= fed[1], "response bodies larger than the response stream");
    let s = tracker.stats();
    assert_eq!(s.requests, check.requests, "requests counter");
    assert!(check.unseen <= s.orphan_responses, "unseen requests without an orphan response");
    assert_eq!(s.responses, check.responses, "responses counter");
    assert_eq!(s.interim, check.interim, "interim counter");
    assert_eq!(s.complete + s.truncated + s.no_response, check.ends, "outcome counters");
    assert_eq!(calls.len() as u64, check.ends, "one call per exchange");
    let early = calls.iter().filter(|(_, ended)| !ended).count() as u64;
    assert_eq!(assembler.stats().evicted, early, "calls reported before their exchange ended");
    let mut seen = HashSet::new();
    for (call, ended) in &calls {
        let id = call.exchange;
        assert!(seen.insert(id), "two calls for exchange {id}");
        let ex = &check.exchanges[&id];
        if *ended {
            assert_eq!(call.request.body_bytes, ex.request_body, "request body size of exchange {id}");
            assert_eq!(call.response.body_bytes, ex.response_body, "response body size of exchange {id}");
            assert_eq!(call.status, ex.status, "status of exchange {id}");
        } else {
            assert!(call.request.body_bytes <= ex.request_body, "request body size of early call {id}");
            assert!(call.response.body_bytes <= ex.response_body, "response body size of early call {id}");
            assert!(call.status.is_none() || call.status == ex.status, "status of early call {id}");
        }
        assert!(!call.path.contains('?'), "query string in a call's path");
        for (name, _) in &call.headers {
            assert!(!is_secret_header(name), "secret header {name} kept");
        }
    }
}
