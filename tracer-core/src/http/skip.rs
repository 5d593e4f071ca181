//! Bodies the capture was told not to copy: which bodies may be skipped (a `Content-Length`
//! body not content-coded, so its size is all the stages after need), and the skipped bytes
//! themselves ([`StreamEvent::Skipped`](crate::reassembly::StreamEvent::Skipped)) — counted
//! into the body and its times exactly, as if the bytes had been read.

use super::body::{Framing, Skipped};
use super::request::{end_request_body, request_owner};
use super::{Conn, Ctx, ExchangeId, HttpEvent, HttpTracker, Mode, Outcome};
use crate::reassembly::ConnId;
use crate::segment::{Direction, Timestamp};

impl HttpTracker {
    /// The stream positions `[from, to)` of exchange `id`'s body in direction `dir`, when that
    /// body is being read now, has a known length and no content coding: its bytes may be
    /// skipped by the capture without changing what this stage reports.
    pub fn skippable_body(&self, conn: ConnId, id: ExchangeId, dir: Direction) -> Option<(u64, u64)> {
        let c = self.conns.get(&conn)?;
        let (side, ex) = match dir {
            Direction::ToServer => (&c.req, c.pending.back().filter(|e| !e.request_complete)?),
            Direction::ToClient => (&c.resp, c.pending.front().filter(|e| e.responded)?),
        };
        let coding = match dir {
            Direction::ToServer => &ex.request_body,
            Direction::ToClient => &ex.response_body,
        };
        let Mode::Body(reader) = &side.mode else { return None };
        let Framing::Length(n) = reader.framing() else { return None };
        (ex.id == id && !reader.is_done() && coding.is_identity()).then_some((side.body_pos, side.body_pos + n))
    }
}

impl Ctx<'_> {
    /// `len` bytes the capture skipped on purpose. Inside a body of known length they count
    /// as its bytes (size, last byte time, its end); anywhere else they are as good as lost
    /// (`false`: the caller treats them as a gap).
    pub(super) fn body_skipped<F: FnMut(HttpEvent<'_>)>(
        &mut self,
        c: &mut Conn,
        dir: Direction,
        ts: Timestamp,
        len: u64,
        out: &mut F,
    ) -> bool {
        let done = {
            let Conn { req, resp, pending, .. } = &mut *c;
            let (side, ex) = match dir {
                Direction::ToServer => (req, request_owner(pending)),
                Direction::ToClient => (resp, pending.front_mut().filter(|e| e.responded)),
            };
            let Some(ex) = ex else { return false };
            let Mode::Body(reader) = &mut side.mode else { return false };
            let coding = match dir {
                Direction::ToServer => &mut ex.request_body,
                Direction::ToClient => &mut ex.response_body,
            };
            if !matches!(reader.framing(), Framing::Length(_)) || reader.remaining() < len || !coding.is_identity() {
                return false;
            }
            let Skipped::InStep { done, .. } = reader.skip_gap(len) else { return false };
            // No decoder: counting cannot fail.
            let _ = coding.skip(Some(len));
            ex.last_byte = ex.last_byte.max(ts);
            self.stats.skipped_bytes += len;
            if done {
                side.mode = Mode::Head;
                if dir == Direction::ToServer {
                    end_request_body(ex, ts, out);
                }
            }
            done
        };
        if done && dir == Direction::ToClient {
            self.end_front(c, ts, Outcome::Complete, None, out);
        }
        true
    }
}
