//! HTTP/1.x exchanges from reassembled byte streams: heads, de-chunked bodies as they arrive,
//! request/response pairing (keep-alive, pipelining, `100 Continue`), and resynchronisation when
//! bytes are missing or the capture started mid-connection.

pub mod body;
pub mod encoding;
pub mod head;
pub mod resync;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

// Keys are our own sequential ids, never attacker-chosen: the cheapest hash will do.
use rustc_hash::FxHashMap;

use self::body::{BodyReader, Framing};
use self::head::{RequestHead, ResponseHead, head_end, parse_request, parse_response};
use self::resync::{Found, Resync, StartKind};
use crate::reassembly::{CloseReason, ConnId, StreamEvent};
use crate::segment::{CaptureMeta, Direction, FlowKey, Timestamp};

/// Identifies one request/response exchange.
pub type ExchangeId = u64;

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Request headers (lower-case names) whose values are kept for export; secrets never are.
    pub keep_headers: Vec<String>,
    /// Bytes of unfinished heads held across all connections; beyond it the oldest are dropped.
    pub max_partial_heads: usize,
    /// A head still unfinished after this long (capture time) is dropped: heads arrive at
    /// once, so one trickling in is a stalled or hostile client (slowloris).
    pub head_timeout_ns: u64,
    /// Requests of one connection waiting for their responses (pipelining); beyond it the
    /// oldest is settled as unanswered.
    pub max_pending_per_conn: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            keep_headers: Vec::new(),
            max_partial_heads: 16 << 20,
            head_timeout_ns: 60_000_000_000,
            max_pending_per_conn: 128,
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
    /// Set when the connection closing ended the exchange.
    pub close: Option<CloseReason>,
    /// The client finished sending (FIN) before the response was complete.
    pub client_closed: bool,
    /// Capture time of the last byte seen of this exchange (either direction).
    pub last_byte: Timestamp,
}

/// Output of the HTTP stage.
#[derive(Debug)]
pub enum HttpEvent<'a> {
    /// A request head; `ts` is the capture time of its first byte.
    Request {
        conn: ConnId,
        id: ExchangeId,
        flow: FlowKey,
        ts: Timestamp,
        head: Box<RequestHead>,
        meta: CaptureMeta,
    },
    RequestBody {
        id: ExchangeId,
        ts: Timestamp,
        data: &'a [u8],
    },
    /// The request body is complete (`ts`: its last byte).
    RequestEnd {
        id: ExchangeId,
        ts: Timestamp,
    },
    /// An interim 1xx response (e.g. `100 Continue`).
    Interim {
        id: ExchangeId,
        ts: Timestamp,
        status: u16,
    },
    /// The final response head: `ts` of its first byte, `head_ts` of its last.
    Response {
        id: ExchangeId,
        ts: Timestamp,
        head_ts: Timestamp,
        head: ResponseHead,
    },
    /// De-chunked response body bytes.
    ResponseBody {
        id: ExchangeId,
        ts: Timestamp,
        data: &'a [u8],
    },
    /// `len` bytes of a body are missing, but the body goes on in step after them.
    BodyGap {
        id: ExchangeId,
        dir: Direction,
        len: u64,
    },
    /// The exchange is over: `ts` is the capture time of the response's last byte when complete,
    /// else when the exchange was given up. The last event for `id`.
    End {
        id: ExchangeId,
        ts: Timestamp,
        end: ExchangeEnd,
    },
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
    /// Bytes skipped while searching for a message start.
    pub resync_skipped_bytes: u64,
    /// Responses with no request to pair with (their request predates the capture).
    pub orphan_responses: u64,
    /// Connections switched to a tunnel (Upgrade, CONNECT).
    pub tunnels: u64,
    /// Unfinished heads dropped because all of them together exceeded the limit.
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
}

impl Side {
    fn new(kind: StartKind, midstream: bool) -> Self {
        Side {
            mode: if midstream { Mode::Resync(Resync::new(kind, true)) } else { Mode::Head },
            head: Vec::new(),
            head_ts: Timestamp(0),
            head_pos: 0,
            resynced: midstream,
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
    last_byte: Timestamp,
    client_fin: bool,
}

#[derive(Debug)]
struct Conn {
    flow: FlowKey,
    req: Side,
    resp: Side,
    /// Exchanges whose request was seen and whose response is not finished, oldest first.
    pending: VecDeque<Exchange>,
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

    /// Bytes held in unfinished heads.
    pub fn partial_head_bytes(&self) -> usize {
        self.conns.values().map(|c| c.req.head.len() + c.resp.head.len()).sum()
    }

    /// Time-based and memory rules, run periodically (capture time `now`): stalled heads are
    /// dropped, then the oldest unfinished heads until all fit the limit. A dropped head's
    /// side looks for the next message, as after any loss of step.
    pub fn expire(&mut self, now: Timestamp) {
        let timeout = self.config.head_timeout_ns as i64;
        let mut held = Vec::new();
        for c in self.conns.values_mut() {
            for (side, kind) in [(&mut c.req, StartKind::Request), (&mut c.resp, StartKind::Response)] {
                if side.head.is_empty() {
                    continue;
                }
                if now.since(side.head_ts) >= timeout {
                    self.stats.stale_heads += 1;
                    drop_head(&mut self.stats, side, kind);
                } else {
                    held.push((side.head_ts, side.head.len()));
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
                if !side.head.is_empty() && side.head_ts <= cutoff {
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
            StreamEvent::Gap { conn, dir, ts, len, .. } => {
                let Some(c) = self.conns.get_mut(&conn) else { return };
                let mut ctx =
                    Ctx { config: &self.config, stats: &mut self.stats, next_id: &mut self.next_id, conn_id: conn };
                ctx.gap(c, dir, ts, len, out);
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

/// Drops a side's unfinished head (its memory too) and looks for the next message.
fn drop_head(stats: &mut HttpStats, side: &mut Side, kind: StartKind) {
    stats.resyncs += 1;
    side.head = Vec::new();
    side.resynced = true;
    side.mode = Mode::Resync(Resync::new(kind, true));
}

/// The parts of the tracker a connection's handlers need, borrowed apart from the connection map.
struct Ctx<'t> {
    config: &'t HttpConfig,
    stats: &'t mut HttpStats,
    next_id: &'t mut ExchangeId,
    conn_id: ConnId,
}

impl Ctx<'_> {
    fn request_data<F: FnMut(HttpEvent<'_>)>(
        &mut self,
        c: &mut Conn,
        ts: Timestamp,
        pos: u64,
        data: &[u8],
        meta: CaptureMeta,
        out: &mut F,
    ) {
        let mut i = 0;
        while i < data.len() {
            match &mut c.req.mode {
                Mode::Ignore => return,
                Mode::Resync(r) => match r.scan(&data[i..]) {
                    Found::NotYet => {
                        self.stats.resync_skipped_bytes += (data.len() - i) as u64;
                        return;
                    }
                    Found::At { offset, carried } => {
                        self.stats.resync_skipped_bytes += offset as u64;
                        c.req.head = carried;
                        c.req.head_ts = ts;
                        c.req.head_pos = pos + (i + offset) as u64 - c.req.head.len() as u64;
                        c.req.mode = Mode::Head;
                        i += offset;
                    }
                },
                Mode::Head => {
                    if c.req.head.is_empty() {
                        // Blank lines between requests are allowed and ignored.
                        while i < data.len() && (data[i] == b'\r' || data[i] == b'\n') {
                            i += 1;
                        }
                        if i == data.len() {
                            return;
                        }
                        if !data[i].is_ascii_alphabetic() {
                            self.lost_step(&mut c.req, StartKind::Request, false);
                            continue;
                        }
                        c.req.head_ts = ts;
                        c.req.head_pos = pos + i as u64;
                    }
                    let Some((head_bytes, used)) = take_head(&mut c.req.head, &data[i..]) else {
                        if c.req.head.len() > head::MAX_HEAD {
                            self.lost_step(&mut c.req, StartKind::Request, false);
                            c.req.head.clear();
                        }
                        return;
                    };
                    i += used;
                    let parsed = parse_request(&head_bytes, &self.config.keep_headers);
                    c.req.head.clear();
                    let head = match parsed {
                        Ok(h) => h,
                        Err(_) => {
                            self.lost_step(&mut c.req, StartKind::Request, false);
                            continue;
                        }
                    };
                    if c.pending.len() >= self.config.max_pending_per_conn {
                        // A client pipelining without end while the server answers nothing:
                        // the oldest request is settled as unanswered to bound the queue.
                        self.stats.pending_overflows += 1;
                        self.end_front(c, ts, Outcome::NoResponse, None, out);
                    }
                    let id = *self.next_id;
                    *self.next_id += 1;
                    self.stats.requests += 1;
                    let framing = head.framing();
                    c.pending.push_back(Exchange {
                        id,
                        start_pos: c.req.head_pos,
                        is_head: head.is_head(),
                        is_connect: head.method == "CONNECT",
                        request_complete: framing == Framing::None,
                        responded: false,
                        request_gap: 0,
                        response_gap: 0,
                        last_byte: ts,
                        client_fin: false,
                    });
                    c.req.resynced = false;
                    out(HttpEvent::Request {
                        conn: self.conn_id,
                        id,
                        flow: c.flow,
                        ts: c.req.head_ts,
                        head: Box::new(head),
                        meta,
                    });
                    if framing == Framing::None {
                        out(HttpEvent::RequestEnd { id, ts });
                    } else {
                        c.req.mode = Mode::Body(BodyReader::new(framing));
                    }
                }
                Mode::Body(reader) => {
                    let id = request_owner(&c.pending);
                    let fed = reader.feed(&data[i..], &mut |b| {
                        if let Some(id) = id {
                            out(HttpEvent::RequestBody { id, ts, data: b });
                        }
                    });
                    match fed {
                        Ok(fed) => {
                            i += fed.consumed;
                            if let Some(ex) = c.pending.iter_mut().rev().find(|e| Some(e.id) == id) {
                                ex.last_byte = ex.last_byte.max(ts);
                            }
                            if fed.done {
                                if let Some(id) = id {
                                    if let Some(ex) = c.pending.iter_mut().find(|e| e.id == id) {
                                        ex.request_complete = true;
                                    }
                                    out(HttpEvent::RequestEnd { id, ts });
                                }
                                c.req.mode = Mode::Head;
                            }
                        }
                        Err(broken) => {
                            // Resume the search where the framing broke: what came before it
                            // was this body's.
                            i += broken.at;
                            self.lost_step(&mut c.req, StartKind::Request, false);
                        }
                    }
                }
            }
        }
    }

    fn response_data<F: FnMut(HttpEvent<'_>)>(
        &mut self,
        c: &mut Conn,
        ts: Timestamp,
        pos: u64,
        peer_pos: Option<u64>,
        data: &[u8],
        out: &mut F,
    ) {
        let mut i = 0;
        while i < data.len() {
            match &mut c.resp.mode {
                Mode::Ignore => return,
                Mode::Resync(r) => match r.scan(&data[i..]) {
                    Found::NotYet => {
                        self.stats.resync_skipped_bytes += (data.len() - i) as u64;
                        return;
                    }
                    Found::At { offset, carried } => {
                        self.stats.resync_skipped_bytes += offset as u64;
                        c.resp.head = carried;
                        c.resp.head_ts = ts;
                        c.resp.head_pos = pos + (i + offset) as u64 - c.resp.head.len() as u64;
                        c.resp.mode = Mode::Head;
                        i += offset;
                    }
                },
                Mode::Head => {
                    if c.resp.head.is_empty() {
                        if !data[i].is_ascii_alphabetic() {
                            self.lost_step(&mut c.resp, StartKind::Response, false);
                            continue;
                        }
                        c.resp.head_ts = ts;
                        c.resp.head_pos = pos + i as u64;
                    }
                    let Some((head_bytes, used)) = take_head(&mut c.resp.head, &data[i..]) else {
                        if c.resp.head.len() > head::MAX_HEAD {
                            self.lost_step(&mut c.resp, StartKind::Response, false);
                            c.resp.head.clear();
                        }
                        return;
                    };
                    i += used;
                    let parsed = parse_response(&head_bytes);
                    c.resp.head.clear();
                    let head = match parsed {
                        Ok(h) => h,
                        Err(_) => {
                            self.lost_step(&mut c.resp, StartKind::Response, false);
                            continue;
                        }
                    };
                    self.response_head(c, head, ts, peer_pos, out);
                }
                Mode::Body(reader) => {
                    let owner = c.pending.front_mut().filter(|e| e.responded);
                    let id = owner.as_ref().map(|e| e.id);
                    let fed = reader.feed(&data[i..], &mut |b| {
                        if let Some(id) = id {
                            out(HttpEvent::ResponseBody { id, ts, data: b });
                        }
                    });
                    if let Some(ex) = owner {
                        ex.last_byte = ex.last_byte.max(ts);
                    }
                    match fed {
                        Ok(fed) => {
                            i += fed.consumed;
                            if fed.done {
                                c.resp.mode = Mode::Head;
                                if id.is_some() {
                                    self.end_front(c, ts, Outcome::Complete, None, out);
                                }
                            }
                        }
                        Err(broken) => {
                            // Resume the search where the framing broke: what came before it
                            // was this body's (and was handed on as such).
                            i += broken.at;
                            if id.is_some() {
                                self.end_front(c, ts, Outcome::Truncated, None, out);
                            }
                            self.lost_step(&mut c.resp, StartKind::Response, false);
                        }
                    }
                }
            }
        }
    }

    /// Pairs a parsed response head with its request.
    fn response_head<F: FnMut(HttpEvent<'_>)>(
        &mut self,
        c: &mut Conn,
        head: ResponseHead,
        ts: Timestamp,
        peer_pos: Option<u64>,
        out: &mut F,
    ) {
        // The server had received `peer_pos` request bytes when it sent this: it cannot answer a
        // request that starts later. After a resync the answered request is the latest one it had
        // started to receive (clients wait for a response before sending the next request), and
        // older unanswered ones lost their responses in the gap.
        if c.resp.resynced
            && let Some(p) = peer_pos
        {
            while c.pending.len() > 1 && c.pending[1].start_pos < p && !c.pending[0].responded {
                let ts0 = c.pending[0].last_byte;
                self.end_front(c, ts0, Outcome::NoResponse, None, out);
            }
        }
        let answers = match (c.pending.front(), peer_pos) {
            (None, _) => false,
            (Some(ex), Some(p)) => ex.start_pos < p,
            (Some(_), None) => true,
        };
        if !answers {
            self.stats.orphan_responses += 1;
            let framing_for_orphan = head.framing(false);
            if (100..200).contains(&head.status) {
                // An interim answer to a request we did not see: nothing to report.
                c.resp.mode = if framing_for_orphan == Framing::None {
                    Mode::Head
                } else {
                    Mode::Body(BodyReader::new(framing_for_orphan))
                };
                return;
            }
            // Its request was lost or predates the capture: the call still happened, so it is
            // reported from what its response says, under a request marked unseen.
            let id = *self.next_id;
            *self.next_id += 1;
            c.pending.push_front(Exchange {
                id,
                start_pos: 0,
                is_head: false,
                is_connect: false,
                request_complete: true,
                responded: false,
                request_gap: 0,
                response_gap: 0,
                last_byte: ts,
                client_fin: false,
            });
            let unseen = RequestHead { unseen: true, ..RequestHead::default() };
            out(HttpEvent::Request {
                conn: self.conn_id,
                id,
                flow: c.flow,
                ts: c.resp.head_ts,
                head: Box::new(unseen),
                meta: CaptureMeta::default(),
            });
        }
        c.resp.resynced = false;
        let ex = c.pending.front_mut().expect("checked above");
        ex.last_byte = ex.last_byte.max(ts);
        let id = ex.id;
        if (100..200).contains(&head.status) && head.status != 101 {
            self.stats.interim += 1;
            out(HttpEvent::Interim { id, ts: c.resp.head_ts, status: head.status });
            c.resp.mode = Mode::Head;
            return;
        }
        self.stats.responses += 1;
        ex.responded = true;
        let framing = head.framing(ex.is_head);
        let tunnel = head.status == 101 || (ex.is_connect && (200..300).contains(&head.status));
        let close = head.connection_close;
        out(HttpEvent::Response { id, ts: c.resp.head_ts, head_ts: ts, head });
        if tunnel {
            self.stats.tunnels += 1;
            self.end_front(c, ts, Outcome::Complete, None, out);
            c.req.mode = Mode::Ignore;
            c.resp.mode = Mode::Ignore;
            return;
        }
        if framing == Framing::None {
            self.end_front(c, ts, Outcome::Complete, None, out);
            c.resp.mode = if close { Mode::Ignore } else { Mode::Head };
        } else {
            c.resp.mode = Mode::Body(BodyReader::new(framing));
        }
    }

    /// Ends the oldest pending exchange.
    fn end_front<F: FnMut(HttpEvent<'_>)>(
        &mut self,
        c: &mut Conn,
        ts: Timestamp,
        outcome: Outcome,
        close: Option<CloseReason>,
        out: &mut F,
    ) {
        let Some(ex) = c.pending.pop_front() else { return };
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
            close,
            client_closed: ex.client_fin,
            last_byte: ex.last_byte,
        };
        out(HttpEvent::End { id: ex.id, ts, end });
    }

    fn gap<F: FnMut(HttpEvent<'_>)>(&mut self, c: &mut Conn, dir: Direction, ts: Timestamp, len: u64, out: &mut F) {
        match dir {
            Direction::ToServer => {
                let owner = request_owner(&c.pending);
                if let Some(ex) = c.pending.iter_mut().rev().find(|e| Some(e.id) == owner) {
                    ex.request_gap += len;
                }
                // Inside a body of known size the gap is skipped and parsing stays in step.
                let in_step = match &mut c.req.mode {
                    Mode::Ignore => return,
                    Mode::Body(reader) => reader.skip(len).then(|| reader.is_done()),
                    _ => None,
                };
                if in_step.is_some()
                    && let Some(id) = owner
                {
                    out(HttpEvent::BodyGap { id, dir, len });
                }
                match in_step {
                    Some(true) => {
                        if let Some(ex) = c.pending.iter_mut().rev().find(|e| Some(e.id) == owner) {
                            ex.request_complete = true;
                        }
                        if let Some(id) = owner {
                            out(HttpEvent::RequestEnd { id, ts });
                        }
                        c.req.mode = Mode::Head;
                    }
                    Some(false) => {}
                    None => self.lost_step(&mut c.req, StartKind::Request, true),
                }
            }
            Direction::ToClient => {
                let responded = c.pending.front().is_some_and(|e| e.responded);
                // Server bytes belong to the oldest unanswered exchange, also before its
                // response head was seen: the gap may well have held that head.
                if let Some(ex) = c.pending.front_mut() {
                    ex.response_gap += len;
                }
                let in_step = match &mut c.resp.mode {
                    Mode::Ignore => return,
                    Mode::Body(reader) => reader.skip(len).then(|| reader.is_done()),
                    _ => None,
                };
                if in_step.is_some()
                    && responded
                    && let Some(ex) = c.pending.front()
                {
                    out(HttpEvent::BodyGap { id: ex.id, dir, len });
                }
                match in_step {
                    Some(true) => {
                        c.resp.mode = Mode::Head;
                        if responded {
                            self.end_front(c, ts, Outcome::Complete, None, out);
                        }
                    }
                    Some(false) => {}
                    None => {
                        if responded && matches!(c.resp.mode, Mode::Body(_)) {
                            self.end_front(c, ts, Outcome::Truncated, None, out);
                        }
                        self.lost_step(&mut c.resp, StartKind::Response, true);
                    }
                }
            }
        }
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
            let end_ts = if complete { front.last_byte } else { ts };
            let outcome = if complete { Outcome::Complete } else { Outcome::Truncated };
            self.end_front(c, end_ts, outcome, close, out);
        }
        while !c.pending.is_empty() {
            self.end_front(c, ts, Outcome::NoResponse, close, out);
        }
        c.resp.mode = Mode::Head;
    }
}

/// The exchange whose request body is being read: the newest pending one, if its body is
/// unfinished. (When an early response already ended it, the rest of its body belongs to no one.)
fn request_owner(pending: &VecDeque<Exchange>) -> Option<ExchangeId> {
    pending.back().filter(|e| !e.request_complete).map(|e| e.id)
}

/// Accumulates head bytes; when the head is complete returns it and how many bytes of `data`
/// it used. The common case — a whole head inside one piece — copies nothing more than the head.
fn take_head(buf: &mut Vec<u8>, data: &[u8]) -> Option<(Vec<u8>, usize)> {
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
