//! One connection's bytes in order: a segment's bytes delivered at once when they follow what
//! was delivered, held while ahead of a hole or of their cause (the other direction's bytes an
//! ACK says the sender had received), released with an exact gap when the hole is given up,
//! and the ends of each direction and of the connection.

use super::{ACK_GRACE_SEGMENTS, CloseReason, Conn, ConnId, Core, Held, StreamEvent, dir_of};
use crate::segment::{Direction, Segment, Timestamp};

impl Core {
    /// Places a segment's bytes: delivered at once when in order, held when ahead of a hole or
    /// ahead of its cause (see [`Self::causal`]).
    pub(super) fn accept<F: FnMut(StreamEvent<'_>)>(
        &mut self,
        conn: &mut Conn,
        d: usize,
        seg: &Segment<'_>,
        p0: i64,
        peer_pos: Option<u64>,
        out: &mut F,
    ) {
        let dir = seg.dir;
        let id = conn.id;
        let half = &conn.halves[d];
        let wire_len = seg.payload.len() as i64 + seg.missing as i64;
        let next = half.next_pos as i64;
        if p0 + wire_len <= next {
            self.stats.duplicate_bytes += seg.payload.len() as u64;
            return;
        }
        if p0 > next || !Self::causal(conn, d, peer_pos) {
            self.stats.out_of_order_segments += 1;
            self.hold(conn, d, seg, p0.max(next) as u64, (p0.max(next) - p0) as usize, peer_pos, out);
            return;
        }
        let half = &mut conn.halves[d];
        let skip = (half.next_pos as i64 - p0) as usize;
        if skip < seg.payload.len() {
            self.stats.duplicate_bytes += skip as u64;
            let data = &seg.payload[skip..];
            let pos = half.next_pos;
            half.advance(pos + data.len() as u64);
            self.stats.delivered_bytes += data.len() as u64;
            out(StreamEvent::Data { conn: id, dir, ts: seg.ts, pos, peer_pos, data, meta: seg.meta });
        } else {
            self.stats.duplicate_bytes += seg.payload.len() as u64;
        }
        let half = &mut conn.halves[d];
        let end = (p0 + wire_len) as u64;
        if end > half.next_pos {
            // The capture kept only part of this segment (snap length / kernel truncation), or
            // was told to leave its bytes out.
            let pos = half.next_pos;
            half.advance(end);
            self.missed(id, dir, seg.ts, pos, end - pos, seg.meta.skipped, out);
        }
    }

    /// Bytes of a segment that no record carried: a gap, or a skip when the capture left them
    /// out on purpose.
    #[allow(clippy::too_many_arguments)]
    fn missed<F: FnMut(StreamEvent<'_>)>(
        &mut self,
        conn: ConnId,
        dir: Direction,
        ts: Timestamp,
        pos: u64,
        len: u64,
        skipped: bool,
        out: &mut F,
    ) {
        if skipped {
            self.stats.skipped_bytes += len;
            out(StreamEvent::Skipped { conn, dir, ts, pos, len });
        } else {
            self.stats.gaps += 1;
            self.stats.gap_bytes += len;
            out(StreamEvent::Gap { conn, dir, ts, pos, len });
        }
    }

    /// A segment may be delivered only once the bytes its sender had received (its ACK) have
    /// been delivered in the other direction: a response cannot come before the request it
    /// answers, whatever order the capture recorded them in (several CPUs, interfaces, files).
    pub(super) fn causal(conn: &Conn, d: usize, peer_pos: Option<u64>) -> bool {
        let other = &conn.halves[1 - d];
        match peer_pos {
            Some(p) if other.synced => p <= other.next_pos,
            _ => true,
        }
    }

    /// Keeps a copy of a segment's bytes from `skip` on, at stream position `at`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn hold<F: FnMut(StreamEvent<'_>)>(
        &mut self,
        conn: &mut Conn,
        d: usize,
        seg: &Segment<'_>,
        at: u64,
        skip: usize,
        peer_pos: Option<u64>,
        out: &mut F,
    ) {
        let half = &mut conn.halves[d];
        let data = &seg.payload[skip.min(seg.payload.len())..];
        let missing =
            if skip > seg.payload.len() { seg.missing - (skip - seg.payload.len()) as u32 } else { seg.missing };
        let len = data.len();
        match half.held.get(&at) {
            Some(existing) if existing.data.len() >= len => {
                self.stats.duplicate_bytes += len as u64;
                return;
            }
            Some(existing) => {
                let old = existing.data.len();
                half.held_bytes -= old;
                self.held_total -= old;
            }
            None => {}
        }
        half.held.insert(at, Held { ts: seg.ts, data: data.to_vec(), meta: seg.meta, peer_pos, missing });
        half.held_bytes += len;
        self.held_total += len;
        half.held_since.get_or_insert(seg.ts);
        if half.held_bytes > self.config.max_buffer_per_conn || self.held_total > self.config.max_buffer_total {
            self.stats.buffer_overflows += 1;
            self.flush_holes(conn, d, out);
        }
    }

    /// Declares the bytes from the next expected position up to `to` missing.
    pub(super) fn gap<F: FnMut(StreamEvent<'_>)>(
        &mut self,
        conn: &mut Conn,
        d: usize,
        ts: Timestamp,
        to: u64,
        out: &mut F,
    ) {
        let half = &mut conn.halves[d];
        if to <= half.next_pos {
            return;
        }
        let pos = half.next_pos;
        half.advance(to);
        self.stats.gaps += 1;
        self.stats.gap_bytes += to - pos;
        out(StreamEvent::Gap { conn: conn.id, dir: dir_of(d), ts, pos, len: to - pos });
    }

    /// [`Self::gap`], letting the other direction's data that waits for part of it go in between:
    /// the bytes a request's ACK says the server had sent are declared lost before the request
    /// is delivered, the rest after it (they may be its response).
    fn gap_causal<F: FnMut(StreamEvent)>(&mut self, conn: &mut Conn, d: usize, ts: Timestamp, to: u64, out: &mut F) {
        loop {
            let next = conn.halves[d].next_pos;
            // The first of the other direction's held data sent after its sender had received
            // part of what is declared lost here.
            let other = &conn.halves[1 - d];
            let Some(n) = other.held.values().filter_map(|h| h.peer_pos).find(|&n| next < n && n < to) else { break };
            self.gap(conn, d, ts, n, out);
            // What of the other direction lies before it goes first: its holes declared lost one
            // by one (sent before it, they waited for no more than it did), its data delivered.
            loop {
                self.drain_both(conn, out);
                let (other, mine) = (&conn.halves[1 - d], conn.halves[d].next_pos);
                match other.held.first_key_value() {
                    Some((&start, h)) if start > other.next_pos && h.peer_pos.is_none_or(|p| p <= mine) => {
                        let hts = h.ts;
                        self.gap(conn, 1 - d, hts, start, out);
                    }
                    _ => break,
                }
            }
        }
        self.gap(conn, d, ts, to, out);
    }

    /// Delivers held segments that have become contiguous and whose cause has been delivered;
    /// with `force_first`, the first contiguous one regardless of its cause. Returns whether
    /// anything moved.
    pub(super) fn drain<F: FnMut(StreamEvent<'_>)>(
        &mut self,
        conn: &mut Conn,
        d: usize,
        force_first: bool,
        out: &mut F,
    ) -> bool {
        let id = conn.id;
        let mut moved = false;
        let mut force = force_first;
        loop {
            let half = &conn.halves[d];
            let Some((&start, held)) = half.held.first_key_value() else { break };
            if start > half.next_pos || (!force && !Self::causal(conn, d, held.peer_pos)) {
                break;
            }
            force = false;
            let half = &mut conn.halves[d];
            let held = half.held.remove(&start).expect("first entry");
            half.held_bytes -= held.data.len();
            self.held_total -= held.data.len();
            let end = start + held.data.len() as u64;
            let wire_end = end + held.missing as u64;
            if end > half.next_pos {
                let skip = (half.next_pos - start) as usize;
                self.stats.duplicate_bytes += skip as u64;
                let pos = half.next_pos;
                half.advance(end);
                self.stats.delivered_bytes += (held.data.len() - skip) as u64;
                moved = true;
                out(StreamEvent::Data {
                    conn: id,
                    dir: dir_of(d),
                    ts: held.ts,
                    pos,
                    peer_pos: held.peer_pos,
                    data: &held.data[skip..],
                    meta: held.meta,
                });
            } else {
                self.stats.duplicate_bytes += held.data.len() as u64;
            }
            if wire_end > half.next_pos {
                let pos = half.next_pos;
                half.advance(wire_end);
                moved = true;
                self.missed(id, dir_of(d), held.ts, pos, wire_end - pos, held.meta.skipped, out);
            }
        }
        let half = &mut conn.halves[d];
        if half.held.is_empty() {
            half.held_since = None;
        }
        moved
    }

    /// Delivers whatever either direction can deliver now, until neither moves.
    #[inline]
    pub(super) fn drain_both<F: FnMut(StreamEvent<'_>)>(&mut self, conn: &mut Conn, out: &mut F) {
        // In-order traffic holds nothing: checked here, not by two calls per segment (their
        // entry and exit were ≈ 4 % of a replay's instructions).
        if conn.halves[0].held.is_empty() && conn.halves[1].held.is_empty() {
            return;
        }
        while self.drain(conn, 0, false, out) | self.drain(conn, 1, false, out) {}
    }

    /// Gives up waiting: every hole before held data becomes a gap and all held data is
    /// delivered — still in causal order where the other direction can supply the cause, so a
    /// response after a lost one pairs with the right request.
    pub(super) fn flush_holes<F: FnMut(StreamEvent<'_>)>(&mut self, conn: &mut Conn, d: usize, out: &mut F) {
        loop {
            self.drain_both(conn, out);
            let Some((&start, held)) = conn.halves[d].held.first_key_value() else { break };
            // The hole is stamped with the arrival of the bytes after it.
            let hts = held.ts;
            if start > conn.halves[d].next_pos {
                self.gap(conn, d, hts, start, out);
                continue;
            }
            self.unblock(conn, d, hts, out);
        }
        conn.halves[d].held_since = None;
    }

    /// The first held data of direction `d` follows what was delivered but waits for its
    /// cause: bytes of the other direction that the capture lost go first, as a gap — the
    /// oldest hole there, or the bytes its peer acknowledged, no further than the cause needs
    /// (a response after a lost request is then not paired with an older one, and the other
    /// direction's later losses stay after it). With nothing lost there, it is delivered anyway.
    fn unblock<F: FnMut(StreamEvent<'_>)>(&mut self, conn: &mut Conn, d: usize, ts: Timestamp, out: &mut F) {
        let need = conn.halves[d].held.first_key_value().and_then(|(_, h)| h.peer_pos);
        let upto = |to: u64| need.map_or(to, |n| to.min(n));
        let other = &conn.halves[1 - d];
        match other.held.first_key_value() {
            Some((&start, held)) if start > other.next_pos => {
                let hts = held.ts;
                self.gap(conn, 1 - d, hts, upto(start), out);
            }
            _ => match other.acked_data().filter(|&a| upto(a) > other.next_pos) {
                Some(to) => self.gap(conn, 1 - d, ts, upto(to), out),
                // Blocked only by a cause that never came: deliver it anyway.
                None => {
                    self.drain(conn, d, true, out);
                }
            },
        }
    }

    /// When the receiver acknowledged bytes we have not seen, they were delivered but (so far)
    /// not captured: no retransmission will bring them. The capture itself may still deliver
    /// them a little late (records merged from several CPUs or interfaces), so they are declared
    /// lost only after a grace of further segments on the connection (or the reorder wait, in
    /// `expire`).
    #[inline]
    pub(super) fn release_acked<F: FnMut(StreamEvent<'_>)>(
        &mut self,
        conn: &mut Conn,
        d: usize,
        ts: Timestamp,
        out: &mut F,
    ) {
        // The common case, nothing acknowledged past what was delivered, without a call.
        let half = &mut conn.halves[d];
        if half.acked_data().is_none_or(|a| a <= half.next_pos) {
            half.hole_acked_at = None;
            return;
        }
        self.hole_acked(conn, d, ts, out);
    }

    /// The peer acknowledged past a hole of direction `d`: its grace starts, or is up.
    #[inline(never)]
    fn hole_acked<F: FnMut(StreamEvent<'_>)>(&mut self, conn: &mut Conn, d: usize, ts: Timestamp, out: &mut F) {
        let segments = conn.segments;
        let half = &mut conn.halves[d];
        let (since, _) = *half.hole_acked_at.get_or_insert((segments, ts));
        if segments - since < ACK_GRACE_SEGMENTS {
            return;
        }
        self.settle_first_hole(conn, d, ts, out);
    }

    /// The oldest hole of a direction has waited its grace: it becomes a gap and what follows it
    /// is delivered up to the next hole, which gets a grace of its own (a packet merely recorded
    /// late behind a lost one would otherwise be declared lost with it). Data held only for its
    /// cause waits on the other direction's oldest hole: that one is given up (it is older).
    fn settle_first_hole<F: FnMut(StreamEvent<'_>)>(&mut self, conn: &mut Conn, d: usize, ts: Timestamp, out: &mut F) {
        conn.halves[d].hole_acked_at = None;
        loop {
            self.drain_both(conn, out);
            let half = &conn.halves[d];
            match half.held.first_key_value() {
                Some((&start, held)) if start > half.next_pos => {
                    // The hole is stamped with the arrival of the bytes after it.
                    let hts = held.ts;
                    self.gap(conn, d, hts, start, out);
                    break;
                }
                Some(_) => self.unblock(conn, d, ts, out),
                None => {
                    // Acknowledged bytes never captured.
                    if let Some(to) = half.acked_data() {
                        self.gap_causal(conn, d, ts, to, out);
                    }
                    break;
                }
            }
        }
        self.drain_both(conn, out);
        self.check_end(conn, d, ts, out);
    }

    /// Stops waiting for missing bytes of a direction: holes become gaps, held data is delivered,
    /// bytes the peer acknowledged are declared missing, and an acknowledged FIN ends it.
    pub(super) fn settle<F: FnMut(StreamEvent<'_>)>(&mut self, conn: &mut Conn, d: usize, ts: Timestamp, out: &mut F) {
        conn.halves[d].hole_acked_at = None;
        self.flush_holes(conn, d, out);
        // Acknowledged bytes never captured.
        if let Some(to) = conn.halves[d].acked_data() {
            self.gap_causal(conn, d, ts, to, out);
        }
        self.drain_both(conn, out);
        self.check_end(conn, d, ts, out);
    }

    /// Emits `End` once every byte up to a direction's FIN is delivered (or, when `force`, declares
    /// the rest missing).
    #[inline]
    pub(super) fn check_end<F: FnMut(StreamEvent<'_>)>(
        &mut self,
        conn: &mut Conn,
        d: usize,
        ts: Timestamp,
        out: &mut F,
    ) {
        let half = &mut conn.halves[d];
        if half.ended {
            return;
        }
        if half.fin_pos.is_some_and(|fin| half.next_pos >= fin) && half.held.is_empty() {
            half.ended = true;
            out(StreamEvent::End { conn: conn.id, dir: dir_of(d), ts });
        }
    }

    pub(super) fn close_conn<F: FnMut(StreamEvent<'_>)>(
        &mut self,
        mut conn: Conn,
        ts: Timestamp,
        reason: CloseReason,
        out: &mut F,
    ) {
        for d in 0..2 {
            self.flush_holes(&mut conn, d, out);
            // Bytes before a FIN, bytes the peer acknowledged before their grace was up (the
            // stream's end lies in them: a reset right after a lost last segment), bytes before
            // where a reset said its sender had got to: all sent, and lost.
            let half = &conn.halves[d];
            for to in [half.fin_pos, half.acked_data(), half.reset_pos].into_iter().flatten() {
                self.gap_causal(&mut conn, d, ts, to, out);
            }
        }
        match reason {
            CloseReason::Reset { .. } => self.stats.closed_reset += 1,
            CloseReason::Idle => self.stats.closed_idle += 1,
            CloseReason::Evicted => self.stats.evicted += 1,
            CloseReason::Fin | CloseReason::Reused | CloseReason::CaptureEnd => {}
        }
        out(StreamEvent::Close { conn: conn.id, ts, reason });
    }
}
