//! The request direction: heads, bodies (de-chunked, decoded), and gaps in them.

use super::body::{BodyReader, Framing};
use super::coding::{BodyCoding, Decoded};
use super::head::{self, parse_request};
use super::resync::{Found, StartKind};
use super::{Conn, Ctx, Exchange, HttpEvent, Mode, Outcome, take_head};
use crate::segment::{CaptureMeta, Direction, Timestamp};

impl Ctx<'_> {
    pub(super) fn request_data<F: FnMut(HttpEvent<'_>)>(
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
                        request_body: BodyCoding::default(),
                        response_body: BodyCoding::default(),
                    });
                    c.req.resynced = false;
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
    }

    /// `len` request bytes were not captured.
    pub(super) fn request_gap<F: FnMut(HttpEvent<'_>)>(&mut self, c: &mut Conn, ts: Timestamp, len: u64, out: &mut F) {
        let mut owner = request_owner(&mut c.pending);
        if let Some(ex) = owner.as_deref_mut() {
            ex.request_gap += len;
        }
        // Inside a body of known size the gap is skipped and parsing stays in step.
        let in_step = match &mut c.req.mode {
            Mode::Ignore => return,
            Mode::Body(reader) => reader.skip(len).then(|| reader.is_done()),
            _ => None,
        };
        if in_step.is_some()
            && let Some(ex) = owner.as_deref()
        {
            out(HttpEvent::BodyGap { id: ex.id, dir: Direction::ToServer, len });
        }
        match in_step {
            Some(true) => {
                if let Some(ex) = owner {
                    end_request_body(ex, ts, out);
                }
                c.req.mode = Mode::Head;
            }
            Some(false) => {}
            None => self.lost_step(&mut c.req, StartKind::Request, true),
        }
    }
}

/// The exchange whose request body is being read: the newest pending one, if its body is
/// unfinished. (When an early response already ended it, the rest of its body belongs to no one.)
fn request_owner(pending: &mut std::collections::VecDeque<Exchange>) -> Option<&mut Exchange> {
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
fn end_request_body<F: FnMut(HttpEvent<'_>)>(ex: &mut Exchange, ts: Timestamp, out: &mut F) {
    let id = ex.id;
    ex.request_complete = true;
    let wire = ex.request_body.wire;
    if let Decoded::Failed = ex.request_body.finish(&mut |b| out(HttpEvent::RequestBody { id, ts, data: b, wire })) {
        out(HttpEvent::Undecodable { id, dir: Direction::ToServer });
    }
    out(HttpEvent::RequestEnd { id, ts });
}
