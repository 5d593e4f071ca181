//! The response direction: heads paired with their requests, bodies (de-chunked, decoded), and
//! gaps in them.

use super::body::{BodyReader, Framing};
use super::coding::{BodyCoding, Decoded};
use super::head::{self, RequestHead, ResponseHead, parse_response};
use super::resync::{Found, StartKind};
use super::{Conn, Ctx, Exchange, HttpEvent, Mode, Outcome, take_head};
use crate::segment::{CaptureMeta, Direction, Timestamp};

impl Ctx<'_> {
    pub(super) fn response_data<F: FnMut(HttpEvent<'_>)>(
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
                request_body: BodyCoding::default(),
                response_body: BodyCoding::default(),
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
        let (coding, decoded) = BodyCoding::for_header(head.content_encoding.as_deref());
        ex.response_body = coding;
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
    pub(super) fn response_gap<F: FnMut(HttpEvent<'_>)>(&mut self, c: &mut Conn, ts: Timestamp, len: u64, out: &mut F) {
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
            out(HttpEvent::BodyGap { id: ex.id, dir: Direction::ToClient, len });
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

/// De-chunked response body bytes: counted, decoded, handed on.
fn response_body<F: FnMut(HttpEvent<'_>)>(ex: &mut Exchange, data: &[u8], ts: Timestamp, out: &mut F) {
    let id = ex.id;
    let coding = &mut ex.response_body;
    let wire = coding.wire + data.len() as u64;
    if let Decoded::Failed = coding.feed(data, &mut |b| out(HttpEvent::ResponseBody { id, ts, data: b, wire })) {
        out(HttpEvent::Undecodable { id, dir: Direction::ToClient });
    }
}
