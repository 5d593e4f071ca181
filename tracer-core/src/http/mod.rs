//! HTTP/1.x exchanges from reassembled byte streams: heads, bodies as they arrive (de-chunked,
//! their `Content-Encoding` undone), request/response pairing (keep-alive, pipelining,
//! `100 Continue`), and resynchronisation when bytes are missing or the capture started
//! mid-connection: a body whose framing a gap took is rejoined at its next verified chunk
//! ([`rejoin`]), a direction that lost step looks for the next message ([`resync`]). One file
//! per direction ([`request`], [`response`]); what they share here.

pub mod body;
mod coding;
pub mod encoding;
pub mod head;
pub mod rejoin;
mod request;
mod response;
pub mod resync;
mod skip;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

// Keys are our own sequential ids, never attacker-chosen: the cheapest hash will do.
use rustc_hash::FxHashMap;

use self::body::{BodyReader, Framing};
use self::coding::{BodyCoding, Decoded};
use self::head::{RequestHead, ResponseHead, head_end};
use self::rejoin::{Payload, Rejoin};
use self::resync::{Resync, StartKind};
use crate::reassembly::{CloseReason, ConnId, StreamEvent};
use crate::segment::{CaptureMeta, Direction, FlowKey, Timestamp};

/// Identifies one request/response exchange.
pub type ExchangeId = u64;

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Request headers (lower-case names) whose values are kept for export; secrets never are.
    pub keep_headers: Vec<String>,
    /// Bytes of unfinished heads, and of bodies being rejoined after a gap, held across all
    /// connections; beyond it the oldest are dropped.
    pub max_partial_heads: usize,
    /// A head still unfinished after this long (capture time) is dropped: heads arrive at
    /// once, so one trickling in is a stalled or hostile client (slowloris).
    pub head_timeout_ns: u64,
    /// Requests of one connection waiting for their responses (pipelining); beyond it the
    /// oldest is settled as unanswered.
    pub max_pending_per_conn: usize,
    /// Request header (lower-case name) whose value is the client's conversation id; empty:
    /// none is read.
    pub conversation_header: String,
}

/// The conversation header read by default: an id the client chose to send.
pub const DEFAULT_CONVERSATION_HEADER: &str = "x-conversation-id";

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            keep_headers: Vec::new(),
            max_partial_heads: 16 << 20,
            head_timeout_ns: 60_000_000_000,
            max_pending_per_conn: 128,
            conversation_header: DEFAULT_CONVERSATION_HEADER.to_string(),
        }
    }
}

/// How an exchange ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The whole response was seen.
    Complete,
    /// The response started but did not finish (connection reset or closed, bytes lost).
    Truncated,
    /// No response was seen.
    NoResponse,
}

/// Everything known about how an exchange ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExchangeEnd {
    pub outcome: Outcome,
    /// The request body was received completely.
    pub request_complete: bool,
    /// Bytes of the request the capture missed.
    pub request_gap_bytes: u64,
    /// Bytes of the response the capture missed.
    pub response_gap_bytes: u64,
    /// HTTP chunks of the response that lost bytes, where the framing tells: every gap lay
    /// inside one chunk's data (`None` when one took chunk framing, or the body is not chunked).
    pub response_gap_chunks: Option<u64>,
    /// Server bytes the capture lost or could not place passed while the exchange waited for
    /// its response head, and none was seen since: its response may have been among them, so
    /// how it ended is unknown.
    pub response_maybe_lost: bool,
    /// Set when the connection closing ended the exchange.
    pub close: Option<CloseReason>,
    /// The client finished sending (FIN) before the response was complete.
    pub client_closed: bool,
    /// Capture time of the last byte seen of this exchange (either direction).
    pub last_byte: Timestamp,
    /// The response's end lay in a gap (the body ended in it, or was still behind one when the
    /// connection ended): the exchange ends at its last byte seen, not at its true end.
    pub end_lost: bool,
    /// Body bytes as sent (de-chunked, still content-coded), each direction; bytes the capture
    /// missed are included where their number is known.
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    /// A body lost a number of bytes the framing does not tell (it was rejoined after a gap
    /// that took chunk framing): its size above is a lower bound, not the size sent.
    pub request_body_partial: bool,
    pub response_body_partial: bool,
}

impl ExchangeEnd {
    /// The capture lost sight of the connection (it ended, idled out or was evicted) rather
    /// than the connection closing.
    pub fn capture_lost(&self) -> bool {
        matches!(self.close, Some(CloseReason::CaptureEnd | CloseReason::Idle | CloseReason::Evicted))
    }

    /// When the exchange ended as far as anyone can tell, given the time `ts` it was settled
    /// at: a call cut by the end of the capture ends where it was last seen, not when it was
    /// given up.
    pub fn end_time(&self, ts: Timestamp) -> Timestamp {
        if self.outcome != Outcome::Complete && self.capture_lost() { self.last_byte } else { ts }
    }
}

/// Output of the HTTP stage.
#[derive(Debug)]
pub enum HttpEvent<'a> {
    /// A request head; `ts` is the capture time of its first byte.
    Request { conn: ConnId, id: ExchangeId, flow: FlowKey, ts: Timestamp, head: Box<RequestHead>, meta: CaptureMeta },
    /// Request body bytes as the client wrote them (de-chunked, decoded); `wire`: the body's
    /// bytes as sent so far.
    RequestBody { id: ExchangeId, ts: Timestamp, data: &'a [u8], wire: u64 },
    /// The request body is complete (`ts`: its last byte).
    RequestEnd { id: ExchangeId, ts: Timestamp },
    /// An interim 1xx response (e.g. `100 Continue`).
    Interim { id: ExchangeId, ts: Timestamp, status: u16 },
    /// The final response head: `ts` of its first byte, `head_ts` of its last.
    Response { id: ExchangeId, ts: Timestamp, head_ts: Timestamp, head: ResponseHead },
    /// Response body bytes as the server wrote them (de-chunked, decoded); `wire` as above.
    ResponseBody { id: ExchangeId, ts: Timestamp, data: &'a [u8], wire: u64 },
    /// `len` bytes of a body are missing. The body goes on in step right after them (they lay
    /// inside data of known length), or, when they took chunk framing, nothing of it comes
    /// until [`HttpEvent::BodyRejoined`] (or its end).
    BodyGap { id: ExchangeId, dir: Direction, len: u64 },
    /// The body's framing was found again after a gap: what follows starts a chunk, verified
    /// (its size and CRLF, and for NDJSON and SSE that it ends a line or an event); the body
    /// bytes in between are lost, in a number not known. `ts`: the first byte of that chunk.
    BodyRejoined { id: ExchangeId, dir: Direction, ts: Timestamp },
    /// A body's content coding is unknown or its bytes are corrupt: nothing more of it comes.
    Undecodable { id: ExchangeId, dir: Direction },
    /// The exchange is over: `ts` is the capture time of the response's last byte when complete,
    /// else when the exchange was given up. The last event for `id`.
    End { id: ExchangeId, ts: Timestamp, end: ExchangeEnd },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpStats {
    pub requests: u64,
    pub responses: u64,
    pub complete: u64,
    pub truncated: u64,
    pub no_response: u64,
    pub interim: u64,
    /// Heads or bodies that could not be parsed.
    pub parse_errors: u64,
    /// Times a direction lost step and searched for the next message.
    pub resyncs: u64,
    /// Bytes skipped while searching for a message start or a body's next chunk.
    pub resync_skipped_bytes: u64,
    /// Bodies whose framing a gap took, found again: at a verified chunk, or at the next
    /// message (the body ended in the gap).
    pub rejoins: u64,
    /// Responses with no request to pair with (their request predates the capture).
    pub orphan_responses: u64,
    /// Connections switched to a tunnel (Upgrade, CONNECT).
    pub tunnels: u64,
    /// Body bytes the capture skipped on purpose, counted in their bodies.
    pub skipped_bytes: u64,
    /// Skipped bytes that did not fall in a body of known length (treated as lost).
    pub skips_misplaced: u64,
    /// Unfinished heads (or bodies being rejoined) dropped because all of them together exceeded
    /// the limit.
    pub head_evictions: u64,
    /// Unfinished heads dropped because they stalled (slowloris).
    pub stale_heads: u64,
    /// Exchanges settled as unanswered because a connection had too many pending.
    pub pending_overflows: u64,
}

#[derive(Debug)]
enum Mode {
    /// Reading a head (possibly none started yet).
    Head,
    Body(BodyReader),
    /// A gap took the body's framing: looking for its next chunk, or for the next message (the
    /// body ended in the gap). The reader goes on at that chunk.
    Rejoin(Box<(BodyReader, Rejoin)>),
    /// Lost step: looking for the next message start.
    Resync(Resync),
    /// Nothing more to parse (tunnel, or the connection will close).
    Ignore,
}

#[derive(Debug)]
struct Side {
    mode: Mode,
    head: Vec<u8>,
    head_ts: Timestamp,
    /// Stream position of the first byte of the head being read.
    head_pos: u64,
    /// The side resynchronised since its last message: pairing must not trust FIFO order.
    resynced: bool,
    /// What verifies a chunk of the current body when it is rejoined after a gap.
    payload: Payload,
    /// Stream position of the gap that sent the current body to be rejoined.
    lost_at: u64,
    /// Where the last gap of that body being rejoined ended.
    lost_end: u64,
    /// Stream position of the first byte of the current body.
    body_pos: u64,
}

impl Side {
    fn new(kind: StartKind, midstream: bool) -> Self {
        Side {
            mode: if midstream { Mode::Resync(Resync::new(kind, true)) } else { Mode::Head },
            head: Vec::new(),
            head_ts: Timestamp(0),
            head_pos: 0,
            resynced: midstream,
            payload: Payload::Any,
            lost_at: 0,
            lost_end: 0,
            body_pos: 0,
        }
    }

    /// Bytes held while parsing (an unfinished head, or a body being rejoined), and since when.
    fn held(&self) -> (usize, Timestamp) {
        match &self.mode {
            Mode::Rejoin(b) => (b.1.held(), b.1.held_since().unwrap_or(self.head_ts)),
            _ => (self.head.len(), self.head_ts),
        }
    }
}

#[derive(Debug)]
struct Exchange {
    id: ExchangeId,
    /// Request-stream position of the request's first byte.
    start_pos: u64,
    is_head: bool,
    is_connect: bool,
    request_complete: bool,
    /// The response head was seen.
    responded: bool,
    request_gap: u64,
    response_gap: u64,
    /// See [`ExchangeEnd::response_gap_chunks`].
    response_gap_chunks: Option<u64>,
    /// See [`ExchangeEnd::response_maybe_lost`].
    response_maybe_lost: bool,
    last_byte: Timestamp,
    client_fin: bool,
    request_body: BodyCoding,
    response_body: BodyCoding,
}

impl Exchange {
    fn new(id: ExchangeId, start_pos: u64, last_byte: Timestamp) -> Self {
        Exchange {
            id,
            start_pos,
            is_head: false,
            is_connect: false,
            request_complete: false,
            responded: false,
            request_gap: 0,
            response_gap: 0,
            response_gap_chunks: Some(0),
            response_maybe_lost: false,
            last_byte,
            client_fin: false,
            request_body: BodyCoding::default(),
            response_body: BodyCoding::default(),
        }
    }
}

#[derive(Debug)]
struct Conn {
    flow: FlowKey,
    req: Side,
    resp: Side,
    /// Exchanges whose request was seen and whose response is not finished, oldest first.
    pending: VecDeque<Exchange>,
    /// Request-stream positions from which bytes were lost outside any body being followed:
    /// whole requests may have been among them, so a response the server sent after receiving
    /// past one does not answer the requests before it.
    lost_requests_at: LostRequests,
}

/// The request-stream ranges of [`Conn::lost_requests_at`], oldest first: each loss counts, as
/// a response may come after the server received past a later one than the first, and so does
/// each part of one (a single gap may hold several requests; bounded: the oldest go).
#[derive(Debug, Default)]
struct LostRequests(Vec<(u64, u64)>);

impl LostRequests {
    const MAX: usize = 64;

    fn push(&mut self, from: u64, to: u64) {
        if from < to && self.0.last().is_none_or(|&(a, _)| from > a) {
            if self.0.len() == Self::MAX {
                self.0.remove(0);
            }
            self.0.push((from, to));
        }
    }

    /// Where the latest loss starts that the server had received past once it had `p` request
    /// bytes.
    fn passed(&self, p: u64) -> Option<u64> {
        self.0.iter().rev().map(|&(a, _)| a).find(|&a| a < p)
    }

    /// Whether a loss starts at or after `from` and before `p`. (A seen request's first byte
    /// starts no loss; an answer whose request went unseen stands at 0.)
    fn between(&self, from: u64, p: u64) -> bool {
        self.0.iter().any(|&(a, _)| from <= a && a < p)
    }

    /// A response sent once the server had `p` request bytes settled the losses before `p`:
    /// they go, and what lies past `p` of one stays, starting at `p` (a later request may
    /// start there).
    fn settle(&mut self, p: u64) {
        self.0.retain(|&(_, b)| b > p);
        for r in &mut self.0 {
            r.0 = r.0.max(p);
        }
    }
}

/// The HTTP stage.
#[derive(Debug)]
pub struct HttpTracker {
    config: HttpConfig,
    conns: FxHashMap<ConnId, Conn>,
    next_id: ExchangeId,
    stats: HttpStats,
}

impl HttpTracker {
    pub fn new(config: HttpConfig) -> Self {
        HttpTracker { config, conns: FxHashMap::default(), next_id: 1, stats: HttpStats::default() }
    }

    pub fn stats(&self) -> &HttpStats {
        &self.stats
    }

    /// Exchanges waiting for (the rest of) their response.
    pub fn in_flight(&self) -> usize {
        self.conns.values().map(|c| c.pending.len()).sum()
    }

    /// Bytes held in unfinished heads and bodies being rejoined.
    pub fn partial_head_bytes(&self) -> usize {
        self.conns.values().map(|c| c.req.held().0 + c.resp.held().0).sum()
    }

    /// Time-based and memory rules, run periodically (capture time `now`): stalled heads are
    /// dropped, then the oldest unfinished heads until all fit the limit. A dropped head's
    /// side looks for the next message, as after any loss of step.
    pub fn expire(&mut self, now: Timestamp) {
        let timeout = self.config.head_timeout_ns as i64;
        let mut held = Vec::new();
        for c in self.conns.values_mut() {
            for (side, kind) in [(&mut c.req, StartKind::Request), (&mut c.resp, StartKind::Response)] {
                let (len, since) = side.held();
                if len == 0 {
                    continue;
                }
                // (A body being rejoined waits for its next chunk, which may come slowly.)
                if !matches!(side.mode, Mode::Rejoin(_)) && now.since(since) >= timeout {
                    self.stats.stale_heads += 1;
                    drop_head(&mut self.stats, side, kind);
                } else {
                    held.push((since, len));
                }
            }
        }
        let total: usize = held.iter().map(|(_, n)| n).sum();
        if total <= self.config.max_partial_heads {
            return;
        }
        // The newest heads that fit stay; older ones go.
        held.sort_unstable_by_key(|(ts, _)| std::cmp::Reverse(*ts));
        let mut kept = 0usize;
        let mut cutoff = None;
        for (ts, n) in held {
            kept += n;
            if kept > self.config.max_partial_heads {
                cutoff = Some(ts);
                break;
            }
        }
        let Some(cutoff) = cutoff else { return };
        for c in self.conns.values_mut() {
            for (side, kind) in [(&mut c.req, StartKind::Request), (&mut c.resp, StartKind::Response)] {
                let (len, since) = side.held();
                if len > 0 && since <= cutoff {
                    self.stats.head_evictions += 1;
                    drop_head(&mut self.stats, side, kind);
                }
            }
        }
    }

    pub fn push<F: FnMut(HttpEvent<'_>)>(&mut self, ev: StreamEvent<'_>, out: &mut F) {
        match ev {
            StreamEvent::Open { conn, flow, handshake, .. } => {
                let midstream = !handshake;
                self.conns.insert(
                    conn,
                    Conn {
                        flow,
                        req: Side::new(StartKind::Request, midstream),
                        resp: Side::new(StartKind::Response, midstream),
                        pending: VecDeque::new(),
                        lost_requests_at: LostRequests::default(),
                    },
                );
            }
            StreamEvent::Data { conn, dir, ts, pos, peer_pos, data, meta } => {
                let Some(c) = self.conns.get_mut(&conn) else { return };
                let mut ctx =
                    Ctx { config: &self.config, stats: &mut self.stats, next_id: &mut self.next_id, conn_id: conn };
                match dir {
                    Direction::ToServer => ctx.request_data(c, ts, pos, data, meta, out),
                    Direction::ToClient => ctx.response_data(c, ts, pos, peer_pos, data, out),
                }
            }
            StreamEvent::Gap { conn, dir, pos, len, .. } => {
                let Some(c) = self.conns.get_mut(&conn) else { return };
                let mut ctx =
                    Ctx { config: &self.config, stats: &mut self.stats, next_id: &mut self.next_id, conn_id: conn };
                match dir {
                    Direction::ToServer => ctx.request_gap(c, pos, len, out),
                    Direction::ToClient => ctx.response_gap(c, len, out),
                }
            }
            StreamEvent::Skipped { conn, dir, ts, pos, len } => {
                let Some(c) = self.conns.get_mut(&conn) else { return };
                let mut ctx =
                    Ctx { config: &self.config, stats: &mut self.stats, next_id: &mut self.next_id, conn_id: conn };
                if !ctx.body_skipped(c, dir, ts, len, out) {
                    ctx.stats.skips_misplaced += 1;
                    match dir {
                        Direction::ToServer => ctx.request_gap(c, pos, len, out),
                        Direction::ToClient => ctx.response_gap(c, len, out),
                    }
                }
            }
            StreamEvent::End { conn, dir, ts } => {
                let Some(c) = self.conns.get_mut(&conn) else { return };
                let mut ctx =
                    Ctx { config: &self.config, stats: &mut self.stats, next_id: &mut self.next_id, conn_id: conn };
                if dir == Direction::ToClient {
                    // The server will send nothing more: whatever is unanswered stays so.
                    ctx.finish(c, ts, None, out);
                    c.resp.mode = Mode::Ignore;
                } else {
                    for ex in c.pending.iter_mut() {
                        ex.client_fin = true;
                    }
                    if let Mode::Body(reader) = &c.req.mode
                        && !reader.is_done()
                    {
                        c.req.mode = Mode::Ignore;
                    }
                }
            }
            // Who the ends are is the pipeline's business (it attaches them to the calls).
            StreamEvent::Peer { .. } => {}
            StreamEvent::Close { conn, ts, reason } => {
                let Some(mut c) = self.conns.remove(&conn) else { return };
                let mut ctx =
                    Ctx { config: &self.config, stats: &mut self.stats, next_id: &mut self.next_id, conn_id: conn };
                ctx.finish(&mut c, ts, Some(reason), out);
            }
        }
    }
}

/// Drops a side's unfinished head or rejoin (its memory too) and looks for the next message.
fn drop_head(stats: &mut HttpStats, side: &mut Side, kind: StartKind) {
    stats.resyncs += 1;
    side.head = Vec::new();
    side.resynced = true;
    side.mode = Mode::Resync(Resync::new(kind, true));
}

/// The parts of the tracker a connection's handlers need, borrowed apart from the connection map.
pub(super) struct Ctx<'t> {
    config: &'t HttpConfig,
    stats: &'t mut HttpStats,
    next_id: &'t mut ExchangeId,
    conn_id: ConnId,
}

impl Ctx<'_> {
    /// Ends the oldest pending exchange.
    fn end_front<F: FnMut(HttpEvent<'_>)>(
        &mut self,
        c: &mut Conn,
        ts: Timestamp,
        outcome: Outcome,
        close: Option<CloseReason>,
        out: &mut F,
    ) {
        self.end_front_lost(c, ts, outcome, close, false, out);
    }

    /// [`Self::end_front`], saying whether the response's end was lost in a gap.
    fn end_front_lost<F: FnMut(HttpEvent<'_>)>(
        &mut self,
        c: &mut Conn,
        ts: Timestamp,
        outcome: Outcome,
        close: Option<CloseReason>,
        end_lost: bool,
        out: &mut F,
    ) {
        let Some(mut ex) = c.pending.pop_front() else { return };
        match outcome {
            Outcome::Complete => self.stats.complete += 1,
            Outcome::Truncated => self.stats.truncated += 1,
            Outcome::NoResponse => self.stats.no_response += 1,
        }
        let end = ExchangeEnd {
            outcome,
            request_complete: ex.request_complete,
            request_gap_bytes: ex.request_gap,
            response_gap_bytes: ex.response_gap,
            response_gap_chunks: ex.response_gap_chunks,
            response_maybe_lost: ex.response_maybe_lost && !ex.responded,
            close,
            client_closed: ex.client_fin,
            last_byte: ex.last_byte,
            end_lost,
            request_body_bytes: ex.request_body.wire,
            response_body_bytes: ex.response_body.wire,
            request_body_partial: ex.request_body.partial,
            response_body_partial: ex.response_body.partial,
        };
        if ex.responded {
            // What the response's decoder still holds, as of when the response ended.
            let (id, at, wire) = (ex.id, end.end_time(ts), ex.response_body.wire);
            let flushed = ex.response_body.finish(&mut |b| out(HttpEvent::ResponseBody { id, ts: at, data: b, wire }));
            if let Decoded::Failed = flushed {
                out(HttpEvent::Undecodable { id, dir: Direction::ToClient });
            }
        }
        out(HttpEvent::End { id: ex.id, ts, end });
    }

    /// A direction lost step: search for the next message start from here.
    fn lost_step(&mut self, side: &mut Side, kind: StartKind, after_gap: bool) {
        if !after_gap {
            self.stats.parse_errors += 1;
        }
        if !matches!(side.mode, Mode::Resync(_)) {
            self.stats.resyncs += 1;
        }
        side.head = Vec::new();
        side.resynced = true;
        side.mode = Mode::Resync(Resync::new(kind, after_gap));
    }

    /// The server side or the connection ended: settle every pending exchange.
    fn finish<F: FnMut(HttpEvent<'_>)>(
        &mut self,
        c: &mut Conn,
        ts: Timestamp,
        close: Option<CloseReason>,
        out: &mut F,
    ) {
        if let Some(front) = c.pending.front()
            && front.responded
        {
            // A read-until-close body ends normally when the server closes (FIN), not on a reset.
            let complete = matches!(&mut c.resp.mode, Mode::Body(r) if r.framing() == Framing::UntilClose)
                && !matches!(
                    close,
                    Some(
                        CloseReason::Reset { .. } | CloseReason::CaptureEnd | CloseReason::Idle | CloseReason::Evicted
                    )
                );
            // A body still behind a gap may have ended in it long before: the last byte seen is
            // its end as far as anyone can tell.
            let behind_gap = matches!(c.resp.mode, Mode::Rejoin(_));
            let end_ts = if complete || behind_gap { front.last_byte } else { ts };
            let outcome = if complete { Outcome::Complete } else { Outcome::Truncated };
            self.end_front_lost(c, end_ts, outcome, close, behind_gap, out);
        }
        while !c.pending.is_empty() {
            self.end_front(c, ts, Outcome::NoResponse, close, out);
        }
        c.resp.mode = Mode::Head;
    }
}

/// Accumulates head bytes; when the head is complete returns it and how many bytes of `data`
/// it used. The common case — a whole head inside one piece — copies nothing more than the head.
pub(super) fn take_head(buf: &mut Vec<u8>, data: &[u8]) -> Option<(Vec<u8>, usize)> {
    if buf.is_empty() {
        if let Some(end) = head_end(data, 0) {
            return Some((data[..end].to_vec(), end));
        }
        buf.extend_from_slice(&data[..data.len().min(head::MAX_HEAD + 1)]);
        return None;
    }
    let old = buf.len();
    let room = (head::MAX_HEAD + 1).saturating_sub(old);
    buf.extend_from_slice(&data[..data.len().min(room)]);
    match head_end(buf, old) {
        Some(end) => {
            let used = end - old;
            buf.truncate(end);
            Some((std::mem::take(buf), used))
        }
        None => None,
    }
}
