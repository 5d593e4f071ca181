//! The response direction: heads paired with their requests, bodies (de-chunked, decoded), and
//! gaps in them.

use super::body::{BodyReader, Framing, Skipped};
use super::coding::{BodyCoding, Decoded};
use super::head::{self, RequestHead, ResponseHead, parse_response};
use super::rejoin::{self, Payload, Piece, Rejoin};
use super::resync::{Found, StartKind};
use super::{Conn, Ctx, Exchange, HttpEvent, Mode, Outcome, take_head};
use crate::segment::{CaptureMeta, Direction, Timestamp};

/// Bytes held while a body was being rejoined, to go through first (each from where it came),
/// and where in the piece reading goes on after them.
pub(super) type Held = Option<(Vec<(Piece, Vec<u8>)>, usize)>;

/// What a piece did to a body being rejoined.
pub(super) enum Rejoined {
    /// Read on from this offset of the piece, in the mode now set.
    Continue(usize),
    /// Held, or passed over: nothing more of the piece.
    AllTaken,
    /// Found again: these held bytes first, then the piece from this offset.
    Held(Vec<(Piece, Vec<u8>)>, usize),
}

impl Ctx<'_> {
    #[inline]
    pub(super) fn response_data<F: FnMut(HttpEvent<'_>)>(
        &mut self,
        c: &mut Conn,
        ts: Timestamp,
        pos: u64,
        peer_pos: Option<u64>,
        data: &[u8],
        out: &mut F,
    ) {
        let mut from = 0;
        while let Some((held, next)) = self.response_piece(c, ts, pos, peer_pos, data, from, out) {
            for (p, bytes) in held {
                // No gap lies inside held bytes: they cannot send the body to be rejoined again.
                let again = self.response_piece(c, p.ts, p.pos, p.peer_pos, &bytes, 0, out);
                debug_assert!(again.is_none(), "held bytes rejoined again");
            }
            from = next;
        }
    }

    /// Reads `data[from..]`; stops early when a rejoin hands back held bytes (see [`Held`]).
    #[allow(clippy::too_many_arguments)]
    fn response_piece<F: FnMut(HttpEvent<'_>)>(
        &mut self,
        c: &mut Conn,
        ts: Timestamp,
        pos: u64,
        peer_pos: Option<u64>,
        data: &[u8],
        from: usize,
        out: &mut F,
    ) -> Held {
        let mut i = from;
        while i < data.len() {
            match &mut c.resp.mode {
                Mode::Ignore => return None,
                Mode::Rejoin(_) => {
                    match self.response_rejoin_piece(c, ts, pos + i as u64, peer_pos, &data[i..], i == 0, out) {
                        Rejoined::Continue(offset) => i += offset,
                        Rejoined::AllTaken => return None,
                        Rejoined::Held(held, offset) => return Some((held, i + offset)),
                    }
                }
                Mode::Resync(r) => match r.scan_timed(&data[i..], i == 0, ts) {
                    (Found::NotYet, _) => {
                        self.stats.resync_skipped_bytes += (data.len() - i) as u64;
                        maybe_answers(c, peer_pos);
                        return None;
                    }
                    (Found::At { offset, carried }, first) => {
                        self.stats.resync_skipped_bytes += offset as u64;
                        if offset > 0 {
                            maybe_answers(c, peer_pos);
                        }
                        c.resp.head = carried;
                        c.resp.head_ts = first;
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
                        return None;
                    };
                    i += used;
                    c.resp.body_pos = pos + i as u64;
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
                    let mut owner = c.pending.front_mut().filter(|e| e.responded);
                    let id = owner.as_ref().map(|e| e.id);
                    let fed = reader.feed(&data[i..], &mut |b| {
                        if let Some(ex) = owner.as_deref_mut() {
                            response_body(ex, b, ts, out);
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
        None
    }

    /// A piece while the body is being rejoined after a gap: how far into it reading goes on
    /// (the rest is for the mode now set), with the held bytes that go first when the body was
    /// found again. (Apart, and cold: the loss-free path stays small.)
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn response_rejoin_piece<F: FnMut(HttpEvent<'_>)>(
        &mut self,
        c: &mut Conn,
        ts: Timestamp,
        pos: u64,
        peer_pos: Option<u64>,
        data: &[u8],
        piece_start: bool,
        out: &mut F,
    ) -> Rejoined {
        if answers_later(c, peer_pos) {
            // The server had received a later request when it sent this: the body being
            // rejoined ended in the gap (responses go in order), and these bytes are a later
            // response's, its head lost with them.
            let responded = c.pending.front().is_some_and(|e| e.responded);
            if let Mode::Rejoin(b) = &c.resp.mode {
                self.stats.resync_skipped_bytes += b.1.held() as u64;
            }
            self.stats.rejoins += 1;
            self.end_in_gap(c, responded, out);
            self.lost_step(&mut c.resp, StartKind::Response, true);
            return Rejoined::Continue(0);
        }
        let Mode::Rejoin(b) = &mut c.resp.mode else { return Rejoined::Continue(0) };
        let piece = Piece { ts, pos, peer_pos, meta: CaptureMeta::default() };
        let found = b.1.scan(data, piece, piece_start);
        self.stats.resync_skipped_bytes += b.1.take_skipped();
        let rejoin::Found::At { at_chunk, carried, offset } = found else { return Rejoined::AllTaken };
        let first = carried.first().map_or(ts, |(p, _)| p.ts);
        self.response_rejoined(c, at_chunk, first, out);
        // Held bytes go through first, as if they arrived now, each with its own time.
        if carried.is_empty() { Rejoined::Continue(offset) } else { Rejoined::Held(carried, offset) }
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
        // The server had received past request bytes the capture lost, outside any body: the
        // requests among them were answered first, and the ones before them by responses lost
        // too. (A client that pipelined into the loss makes this split one call in two, each
        // flagged: never a request paired with another's response.)
        if let Some(p) = peer_pos
            && let Some(lost) = c.lost_requests_at.passed(p)
        {
            while c.pending.front().is_some_and(|e| e.start_pos < lost && !e.responded) {
                let ts0 = c.pending[0].last_byte;
                self.end_front(c, ts0, Outcome::NoResponse, None, out);
            }
            c.lost_requests_at.settle(p);
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
            c.pending.push_front(Exchange { request_complete: true, ..Exchange::new(id, 0, ts) });
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
        let (coding, decoded) = BodyCoding::for_header(head.content_encoding.as_deref());
        ex.response_body = coding;
        if framing != Framing::Chunked {
            // Only chunked framing can tell how many chunks a gap took.
            ex.response_gap_chunks = None;
        }
        c.resp.payload = Payload::for_content_type(head.content_type.as_deref());
        out(HttpEvent::Response { id, ts: c.resp.head_ts, head_ts: ts, head });
        if let Decoded::Failed = decoded {
            out(HttpEvent::Undecodable { id, dir: Direction::ToClient });
        }
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

    /// `len` response bytes were not captured.
    pub(super) fn response_gap<F: FnMut(HttpEvent<'_>)>(&mut self, c: &mut Conn, len: u64, out: &mut F) {
        let skipped = match &mut c.resp.mode {
            Mode::Ignore => return,
            Mode::Body(reader) => Some(reader.skip_gap(len)),
            Mode::Rejoin(b) => {
                // One more hole before the body's next chunk: only the hole widens. (The body
                // may have ended in it, and the next response begun: see below.)
                b.1.gap();
                self.stats.resync_skipped_bytes += b.1.take_skipped();
                if let Some(ex) = c.pending.front_mut() {
                    ex.response_gap += len;
                }
                waiting_may_have_lost(c);
                return;
            }
            Mode::Head | Mode::Resync(_) => None,
        };
        let responded = c.pending.front().is_some_and(|e| e.responded);
        // Server bytes belong to the oldest unanswered exchange, also before its response head
        // was seen (the gap may well have held that head); those after a body that ended in
        // the gap, to the next one.
        let (mine, after) = match skipped {
            Some(Skipped::EndedInside { after }) if responded => (len - after, after),
            _ => (len, 0),
        };
        if !matches!(skipped, Some(Skipped::InStep { done: false, .. })) {
            // Unless the gap lay inside a body it leaves going on, it may have held the end of
            // one response and the start of the next.
            waiting_may_have_lost(c);
        }
        if let Some(ex) = c.pending.front_mut() {
            ex.response_gap += mine;
            if let (true, Some(skipped)) = (responded, skipped) {
                let id = ex.id;
                let known = match skipped {
                    Skipped::InStep { new_chunk, .. } => {
                        ex.response_gap_chunks = ex.response_gap_chunks.map(|n| n + u64::from(new_chunk));
                        Some(mine)
                    }
                    Skipped::EndedInside { .. } => Some(mine),
                    Skipped::LostStep => {
                        ex.response_gap_chunks = None;
                        None
                    }
                };
                if let Decoded::Failed = ex.response_body.skip(known) {
                    out(HttpEvent::Undecodable { id, dir: Direction::ToClient });
                }
                out(HttpEvent::BodyGap { id, dir: Direction::ToClient, len: mine });
            }
        }
        match skipped {
            Some(Skipped::InStep { done: false, .. }) => {}
            Some(Skipped::InStep { done: true, .. }) => {
                c.resp.mode = Mode::Head;
                self.end_in_gap(c, responded, out);
            }
            Some(Skipped::EndedInside { .. }) => {
                self.end_in_gap(c, responded, out);
                if let Some(next) = c.pending.front_mut().filter(|_| after > 0) {
                    next.response_gap += after;
                }
                self.lost_step(&mut c.resp, StartKind::Response, true);
            }
            Some(Skipped::LostStep) => {
                self.stats.resyncs += 1;
                let Mode::Body(reader) = std::mem::replace(&mut c.resp.mode, Mode::Head) else { return };
                let rejoin = Rejoin::new(StartKind::Response, c.resp.payload);
                c.resp.mode = Mode::Rejoin(Box::new((reader, rejoin)));
            }
            None => self.lost_step(&mut c.resp, StartKind::Response, true),
        }
    }

    /// The body ended in a gap: its exchange ends where its last byte was seen.
    fn end_in_gap<F: FnMut(HttpEvent<'_>)>(&mut self, c: &mut Conn, responded: bool, out: &mut F) {
        if responded && let Some(last) = c.pending.front().map(|e| e.last_byte) {
            self.end_front_lost(c, last, Outcome::Complete, None, true, out);
        }
    }

    /// A body being rejoined after a gap: at a verified chunk it goes on; at a message start it
    /// ended in the gap.
    fn response_rejoined<F: FnMut(HttpEvent<'_>)>(&mut self, c: &mut Conn, at_chunk: bool, ts: Timestamp, out: &mut F) {
        self.stats.rejoins += 1;
        let Mode::Rejoin(b) = std::mem::replace(&mut c.resp.mode, Mode::Head) else { return };
        let responded = c.pending.front().is_some_and(|e| e.responded);
        if at_chunk {
            let (mut reader, _) = *b;
            reader.rejoin_at_chunk();
            c.resp.mode = Mode::Body(reader);
            if responded && let Some(ex) = c.pending.front() {
                out(HttpEvent::BodyRejoined { id: ex.id, dir: Direction::ToClient, ts });
            }
        } else {
            self.end_in_gap(c, responded, out);
            // Pairing after a loss of step goes by what the server had received.
            c.resp.resynced = true;
        }
    }
}

/// Response bytes sent after the server had received a request later than the oldest unanswered
/// one (or request bytes the capture lost): they cannot be that one's.
fn answers_later(c: &Conn, peer_pos: Option<u64>) -> bool {
    let (Some(p), Some(front)) = (peer_pos, c.pending.front()) else { return false };
    c.pending.get(1).is_some_and(|next| next.start_pos < p) || c.lost_requests_at.between(front.start_pos, p)
}

/// A response gap that may hold the start of a response: that of any exchange waiting behind
/// the oldest (which the gap's bytes are counted to).
fn waiting_may_have_lost(c: &mut Conn) {
    for ex in c.pending.iter_mut().skip(1) {
        ex.response_maybe_lost = true;
    }
}

/// Server bytes skipped unplaced (no message start in them): the response of any exchange whose
/// request the server had received when it sent them (`peer_pos`; all when unknown) may have
/// been among them.
fn maybe_answers(c: &mut Conn, peer_pos: Option<u64>) {
    for ex in c.pending.iter_mut().filter(|e| peer_pos.is_none_or(|p| e.start_pos < p)) {
        ex.response_maybe_lost = true;
    }
}

/// De-chunked response body bytes: counted, decoded, handed on.
fn response_body<F: FnMut(HttpEvent<'_>)>(ex: &mut Exchange, data: &[u8], ts: Timestamp, out: &mut F) {
    let id = ex.id;
    let coding = &mut ex.response_body;
    let wire = coding.wire + data.len() as u64;
    if let Decoded::Failed = coding.feed(data, &mut |b| out(HttpEvent::ResponseBody { id, ts, data: b, wire })) {
        out(HttpEvent::Undecodable { id, dir: Direction::ToClient });
    }
}
