//! Where each direction's stream starts and how far each side has got: what a segment's SYN,
//! ACK, first data or reset says about the sequence numbers. A direction whose SYN the capture
//! lost is placed by its first data, or earlier by what its peer acknowledged: every byte in
//! between was sent, and lost.

use super::{Conn, REUSE_WINDOW};
use crate::segment::Segment;

/// Learns what `seg` says of both directions' positions; returns how much of the opposite
/// stream its sender had received (its ACK as a stream position), when that is known.
#[inline]
pub(super) fn learn(conn: &mut Conn, seg: &Segment<'_>) -> Option<u64> {
    let d = seg.dir.index();
    if seg.flags.syn() && seg.flags.ack() && !conn.halves[1 - d].synced {
        // A SYN-ACK acknowledges the peer's SYN: the peer's stream starts at its ACK number,
        // even when the capture delivers that SYN, or the first data, only later.
        let other = &mut conn.halves[1 - d];
        other.synced = true;
        other.isn = Some(seg.ack.wrapping_sub(1));
        other.next_seq = seg.ack;
        other.next_pos = 0;
    }
    // The ACK tells how much of the opposite stream the sender has received.
    let mut peer_pos = None;
    if seg.flags.ack() {
        let other = &mut conn.halves[1 - d];
        if other.synced {
            let p = other.pos_of(seg.ack);
            if p >= 0 {
                other.note_acked(p as u64);
                peer_pos = Some(p as u64);
            }
        } else if !seg.flags.rst() {
            let a = seg.ack;
            let before = |x: u32, y: u32| (x.wrapping_sub(y) as i32) < 0;
            let (lo, hi) = match other.acked_unsynced {
                None => (a, a),
                Some((lo, hi)) => (if before(a, lo) { a } else { lo }, if before(hi, a) { a } else { hi }),
            };
            other.acked_unsynced = Some((lo, hi));
            let lead = u64::from(hi.wrapping_sub(lo));
            if (1..REUSE_WINDOW).contains(&lead) {
                // The peer received bytes of that direction that the capture never saw (its
                // ACK moved on): the stream starts where it was first acknowledged, with them
                // missing, so that what the sender sent after receiving them waits for them to
                // be declared lost (a response is not read as the one before's).
                other.synced = true;
                other.next_seq = lo;
                other.next_pos = 0;
                other.acked = Some(lead);
                other.acked_unsynced = None;
                peer_pos = Some(lead);
            }
        }
    }

    let half = &mut conn.halves[d];
    if seg.flags.syn() {
        if !half.synced {
            half.synced = true;
            half.isn = Some(seg.seq);
            half.next_seq = seg.seq.wrapping_add(1);
            half.next_pos = 0;
        }
    } else if !half.synced && (!seg.payload.is_empty() || seg.missing > 0) {
        // First data of a direction whose SYN we did not see: the stream starts here, or where
        // the peer acknowledged it from if that is before (every byte in between was sent, and
        // the capture lost it: a lost SYN-ACK, then the first response).
        half.synced = true;
        half.next_seq = seg.seq;
        half.next_pos = 0;
        if let Some((lo, hi)) = half.acked_unsynced.take() {
            let lead = u64::from(seg.seq.wrapping_sub(lo));
            if (1..REUSE_WINDOW).contains(&lead) {
                half.next_seq = lo;
                let acked = half.pos_of(hi);
                if acked > 0 {
                    half.acked = Some(acked as u64);
                }
            }
        }
    }
    peer_pos
}

/// What a reset says before the connection closes: its sequence number is where its sender's
/// stream had got to (bytes before it that the capture never saw were sent, and lost), and its
/// ACK, like any other, how much the sender had received.
pub(super) fn learn_reset(conn: &mut Conn, seg: &Segment<'_>) {
    let d = seg.dir.index();
    let half = &mut conn.halves[d];
    // After a FIN the sequence number counts it too: a FIN seen says where the data ended, and
    // one unseen may be the last number, so only what lies before that is known to be data.
    if half.synced && half.fin_pos.is_none() {
        let p = half.pos_of(seg.seq) - 1;
        if p > half.next_pos as i64 && ((p as u64) - half.next_pos) < REUSE_WINDOW {
            half.reset_pos = Some(p as u64);
        }
    }
    let other = &mut conn.halves[1 - d];
    if seg.flags.ack() && other.synced {
        let p = other.pos_of(seg.ack);
        if p > 0 && ((p as u64).saturating_sub(other.next_pos)) < REUSE_WINDOW {
            other.note_acked(p as u64);
        }
    }
}
