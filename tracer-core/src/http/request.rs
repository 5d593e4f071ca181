//! The request direction: heads, bodies (de-chunked, decoded), and gaps in them.

use super::body::{BodyReader, Framing, Skipped};
use super::coding::{BodyCoding, Decoded};
use super::head::{self, parse_request};
use super::rejoin::{self, Payload, Piece, Rejoin};
use super::response::{Held, Rejoined};
use super::resync::{Found, StartKind};
use super::{Conn, Ctx, Exchange, HttpEvent, Mode, Outcome, take_head};
use crate::segment::{CaptureMeta, Direction, Timestamp};

impl Ctx<'_> {
    #[inline]
    pub(super) fn request_data<F: FnMut(HttpEvent<'_>)>(
        &mut self,
        c: &mut Conn,
        ts: Timestamp,
        pos: u64,
        data: &[u8],
        meta: CaptureMeta,
        out: &mut F,
    ) {
        let mut from = 0;
        while let Some((held, next)) = self.request_piece(c, ts, pos, data, from, meta, out) {
            for (p, bytes) in held {
                // No gap lies inside held bytes: they cannot send the body to be rejoined again.
                let again = self.request_piece(c, p.ts, p.pos, &bytes, 0, p.meta, out);
                debug_assert!(again.is_none(), "held bytes rejoined again");
            }
            from = next;
        }
    }

    /// Reads `data[from..]`; stops early when a rejoin hands back held bytes.
    #[allow(clippy::too_many_arguments)]
    fn request_piece<F: FnMut(HttpEvent<'_>)>(
        &mut self,
        c: &mut Conn,
        ts: Timestamp,
        pos: u64,
        data: &[u8],
        from: usize,
        meta: CaptureMeta,
        out: &mut F,
    ) -> Held {
        let mut i = from;
        while i < data.len() {
            match &mut c.req.mode {
                Mode::Ignore => return None,
                Mode::Rejoin(_) => {
                    match self.request_rejoin_piece(c, ts, pos + i as u64, &data[i..], i == 0, meta, out) {
                        Rejoined::Continue(offset) => i += offset,
                        Rejoined::AllTaken => return None,
                        Rejoined::Held(held, offset) => return Some((held, i + offset)),
                    }
                }
                Mode::Resync(r) => match r.scan_timed(&data[i..], i == 0, ts) {
                    (Found::NotYet, _) => {
                        self.stats.resync_skipped_bytes += (data.len() - i) as u64;
                        return None;
                    }
                    (Found::At { offset, carried }, first) => {
                        self.stats.resync_skipped_bytes += offset as u64;
                        c.req.head = carried;
                        c.req.head_ts = first;
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
                            return None;
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
                        return None;
                    };
                    i += used;
                    c.req.body_pos = pos + i as u64;
                    let parsed =
                        parse_request(&head_bytes, &self.config.keep_headers, &self.config.conversation_header);
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
                        is_head: head.is_head(),
                        is_connect: head.method == "CONNECT",
                        request_complete: framing == Framing::None,
                        ..Exchange::new(id, c.req.head_pos, ts)
                    });
                    c.req.resynced = false;
                    c.req.payload = Payload::for_content_type(head.content_type.as_deref());
                    let (coding, decoded) = BodyCoding::for_header(head.content_encoding.as_deref());
                    c.pending.back_mut().expect("just pushed").request_body = coding;
                    out(HttpEvent::Request {
                        conn: self.conn_id,
                        id,
                        flow: c.flow,
                        ts: c.req.head_ts,
                        head: Box::new(head),
                        meta,
                    });
                    if let Decoded::Failed = decoded {
                        out(HttpEvent::Undecodable { id, dir: Direction::ToServer });
                    }
                    if framing == Framing::None {
                        end_request_body(c.pending.back_mut().expect("just pushed"), ts, out);
                    } else {
                        c.req.mode = Mode::Body(BodyReader::new(framing));
                    }
                }
                Mode::Body(reader) => {
                    let mut owner = request_owner(&mut c.pending);
                    let fed = reader.feed(&data[i..], &mut |b| {
                        if let Some(ex) = owner.as_deref_mut() {
                            request_body(ex, b, ts, out);
                        }
                    });
                    match fed {
                        Ok(fed) => {
                            i += fed.consumed;
                            if let Some(ex) = owner {
                                ex.last_byte = ex.last_byte.max(ts);
                                if fed.done {
                                    end_request_body(ex, ts, out);
                                }
                            }
                            if fed.done {
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
        None
    }

    /// `len` request bytes were not captured.
    pub(super) fn request_gap<F: FnMut(HttpEvent<'_>)>(&mut self, c: &mut Conn, pos: u64, len: u64, out: &mut F) {
        let skipped = match &mut c.req.mode {
            Mode::Ignore => return,
            // Inside a body of known size the gap is skipped and parsing stays in step.
            Mode::Body(reader) => Some(reader.skip_gap(len)),
            Mode::Rejoin(b) => {
                // One more hole before the body's next chunk: only the hole widens.
                b.1.gap();
                c.req.lost_end = pos + len;
                self.stats.resync_skipped_bytes += b.1.take_skipped();
                if let Some(ex) = request_owner(&mut c.pending) {
                    ex.request_gap += len;
                }
                return;
            }
            Mode::Head | Mode::Resync(_) => None,
        };
        // Bytes after a body that ended in the gap begin the next request (whose head is lost).
        let mine = match skipped {
            Some(Skipped::EndedInside { after }) => len - after,
            _ => len,
        };
        if let Some(ex) = request_owner(&mut c.pending) {
            ex.request_gap += mine;
            if let Some(skipped) = skipped {
                let id = ex.id;
                let known = (skipped != Skipped::LostStep).then_some(mine);
                if let Decoded::Failed = ex.request_body.skip(known) {
                    out(HttpEvent::Undecodable { id, dir: Direction::ToServer });
                }
                out(HttpEvent::BodyGap { id, dir: Direction::ToServer, len: mine });
                if matches!(skipped, Skipped::InStep { done: true, .. } | Skipped::EndedInside { .. }) {
                    let last = ex.last_byte;
                    end_request_body(ex, last, out);
                }
            }
        }
        match skipped {
            Some(Skipped::InStep { done: false, .. }) => {}
            Some(Skipped::InStep { done: true, .. }) => c.req.mode = Mode::Head,
            Some(Skipped::LostStep) => {
                self.stats.resyncs += 1;
                let Mode::Body(reader) = std::mem::replace(&mut c.req.mode, Mode::Head) else { return };
                let rejoin = Rejoin::new(StartKind::Request, c.req.payload);
                c.req.mode = Mode::Rejoin(Box::new((reader, rejoin)));
                c.req.lost_at = pos;
                c.req.lost_end = pos + len;
            }
            Some(Skipped::EndedInside { .. }) => {
                c.lost_requests_at.push(pos + mine, pos + len);
                self.lost_step(&mut c.req, StartKind::Request, true);
            }
            None => {
                c.lost_requests_at.push(pos, pos + len);
                self.lost_step(&mut c.req, StartKind::Request, true);
            }
        }
    }

    /// A piece while the body is being rejoined after a gap (see `response::Rejoined`). (Apart,
    /// and cold: the loss-free path stays small.)
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn request_rejoin_piece<F: FnMut(HttpEvent<'_>)>(
        &mut self,
        c: &mut Conn,
        ts: Timestamp,
        pos: u64,
        data: &[u8],
        piece_start: bool,
        meta: CaptureMeta,
        out: &mut F,
    ) -> Rejoined {
        let Mode::Rejoin(b) = &mut c.req.mode else { return Rejoined::Continue(0) };
        let found = b.1.scan(data, Piece { ts, pos, peer_pos: None, meta }, piece_start);
        self.stats.resync_skipped_bytes += b.1.take_skipped();
        let rejoin::Found::At { at_chunk, carried, offset } = found else { return Rejoined::AllTaken };
        let first = carried.first().map_or(ts, |(p, _)| p.ts);
        self.request_rejoined(c, at_chunk, first, out);
        // Held bytes go through first, as if they arrived now, each with its own time.
        if carried.is_empty() { Rejoined::Continue(offset) } else { Rejoined::Held(carried, offset) }
    }

    /// A request body being rejoined after a gap: at a verified chunk it goes on; at a message
    /// start it ended in the gap.
    fn request_rejoined<F: FnMut(HttpEvent<'_>)>(&mut self, c: &mut Conn, at_chunk: bool, ts: Timestamp, out: &mut F) {
        self.stats.rejoins += 1;
        let Mode::Rejoin(b) = std::mem::replace(&mut c.req.mode, Mode::Head) else { return };
        let owner = request_owner(&mut c.pending);
        if at_chunk {
            let (mut reader, _) = *b;
            reader.rejoin_at_chunk();
            c.req.mode = Mode::Body(reader);
            if let Some(ex) = owner {
                out(HttpEvent::BodyRejoined { id: ex.id, dir: Direction::ToServer, ts });
            }
        } else {
            if let Some(ex) = owner {
                let last = ex.last_byte;
                end_request_body(ex, last, out);
            }
            // Whole requests may have followed the body in the gap.
            c.lost_requests_at.push(c.req.lost_at, c.req.lost_end);
        }
    }
}

/// The exchange whose request body is being read: the newest pending one, if its body is
/// unfinished. (When an early response already ended it, the rest of its body belongs to no one.)
pub(super) fn request_owner(pending: &mut std::collections::VecDeque<Exchange>) -> Option<&mut Exchange> {
    pending.back_mut().filter(|e| !e.request_complete)
}

/// De-chunked request body bytes: counted, decoded, handed on.
fn request_body<F: FnMut(HttpEvent<'_>)>(ex: &mut Exchange, data: &[u8], ts: Timestamp, out: &mut F) {
    let id = ex.id;
    let coding = &mut ex.request_body;
    let wire = coding.wire + data.len() as u64;
    if let Decoded::Failed = coding.feed(data, &mut |b| out(HttpEvent::RequestBody { id, ts, data: b, wire })) {
        out(HttpEvent::Undecodable { id, dir: Direction::ToServer });
    }
}

/// The request body is complete: what its decoder still holds, then its end.
pub(super) fn end_request_body<F: FnMut(HttpEvent<'_>)>(ex: &mut Exchange, ts: Timestamp, out: &mut F) {
    let id = ex.id;
    ex.request_complete = true;
    let wire = ex.request_body.wire;
    if let Decoded::Failed = ex.request_body.finish(&mut |b| out(HttpEvent::RequestBody { id, ts, data: b, wire })) {
        out(HttpEvent::Undecodable { id, dir: Direction::ToServer });
    }
    out(HttpEvent::RequestEnd { id, ts });
}
