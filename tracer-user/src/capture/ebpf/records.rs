//! The ring buffer's records, decoded: packet records into [`Segment`]s, socket records (the
//! `sock/inet_sock_set_state` tracepoint) into [`SocketEvent`]s, kernel times into wall-clock
//! times. Pure functions over bytes: the records are a wire format (`tracer_common`).

use std::net::SocketAddr;

use tracer_common::{CHUNK_SIZE, RECORD_HEADER_SIZE, RecordHeader, SockRecord, rec_flags, sock_event, sock_state_tp};
use tracer_core::segment::{CaptureMeta, Hook, Orientation, Segment, TcpFlags, unmap_v4};

use crate::capture::ring::ip;
pub use crate::capture::ring::{ClockOffset, RecordError};
use crate::capture::socket::{SocketEvent, SocketEventKind};

/// Turns one ring-buffer record into a segment; `Ok(None)` when neither port is a server port
/// (the ports changed while the record was in flight).
///
/// A record carrying a slice of a larger skb becomes a segment of its own: its `seq` is that
/// of its first byte, SYN stays on the first slice only, FIN/RST/PSH on the last only.
pub fn decode_record<'a>(
    buf: &'a [u8],
    orientation: &Orientation,
    clock: ClockOffset,
) -> Result<Option<Segment<'a>>, RecordError> {
    let h = RecordHeader::read_from(buf).ok_or(RecordError::Short)?;
    let len = h.data_len as usize;
    if len > CHUNK_SIZE || RECORD_HEADER_SIZE + len > buf.len() {
        return Err(RecordError::BadLength);
    }
    let payload = &buf[RECORD_HEADER_SIZE..RECORD_HEADER_SIZE + len];
    let src = SocketAddr::new(ip(h.family, &h.saddr)?, h.sport);
    let dst = SocketAddr::new(ip(h.family, &h.daddr)?, h.dport);
    let Some((flow, dir)) = orientation.orient(src, dst) else {
        return Ok(None);
    };
    let first = h.payload_off == 0;
    let last = h.rec_flags & rec_flags::LAST != 0;
    let syn = h.tcp_flags & TcpFlags::SYN != 0;
    let mut flags = h.tcp_flags;
    let mut seq = h.seq.wrapping_add(h.payload_off);
    if !first {
        flags &= !TcpFlags::SYN;
        if syn {
            seq = seq.wrapping_add(1); // the SYN occupies one sequence number before the data
        }
    }
    if !last {
        flags &= !(TcpFlags::FIN | TcpFlags::RST | TcpFlags::PSH);
    }
    Ok(Some(Segment {
        ts: clock.to_wall(h.ts_ns),
        flow,
        dir,
        seq,
        ack: h.ack,
        flags: TcpFlags(flags),
        payload,
        missing: h.missing,
        meta: CaptureMeta {
            cgroup_id: (h.cgroup_id != 0).then_some(h.cgroup_id),
            ifindex: (h.ifindex != 0).then_some(h.ifindex),
            hook: Hook::from_wire(h.hook),
            tls: None,
            skipped: h.rec_flags & rec_flags::SKIPPED != 0,
        },
    }))
}

/// Turns a socket record (`hook::SOCK_STATE`) into a [`SocketEvent`].
pub fn decode_sock_record(buf: &[u8], clock: ClockOffset) -> Result<SocketEvent, RecordError> {
    let r = SockRecord::read_from(buf).ok_or(RecordError::Short)?;
    let kind = match r.event {
        sock_event::CONNECT => SocketEventKind::Connect,
        sock_event::LISTEN => SocketEventKind::Listen,
        sock_event::UNLISTEN => SocketEventKind::Unlisten,
        _ => return Err(RecordError::BadEvent),
    };
    let comm = r.comm.split(|b| *b == 0).next().unwrap_or_default();
    Ok(SocketEvent {
        kind,
        ts: clock.to_wall(r.ts_ns),
        cgroup_id: (r.cgroup_id != 0).then_some(r.cgroup_id),
        local: unmap_v4(SocketAddr::new(ip(r.family, &r.saddr)?, r.sport)),
        remote: unmap_v4(SocketAddr::new(ip(r.family, &r.daddr)?, r.dport)),
        pid: r.tgid,
        comm: String::from_utf8_lossy(comm).into_owned(),
        sock: r.sock,
    })
}

/// Checks the kernel's `sock/inet_sock_set_state` record layout (its tracefs `format` file)
/// against the offsets the kernel program reads.
pub fn check_sock_state_format(format: &str) -> Result<(), String> {
    for (name, offset, size) in sock_state_tp::FIELDS {
        let line = format
            .lines()
            .find(|l| {
                l.trim_start().strip_prefix("field:").and_then(|f| f.split(';').next()).is_some_and(|decl| {
                    let last = decl.split_whitespace().last().unwrap_or("");
                    last.split('[').next() == Some(name)
                })
            })
            .ok_or_else(|| format!("no field {name}"))?;
        let get = |key: &str| {
            line.split(';').find_map(|p| p.trim().strip_prefix(key)).and_then(|v| v.trim().parse::<usize>().ok())
        };
        if get("offset:") != Some(offset) || get("size:") != Some(size) {
            return Err(format!("field {name} is not at offset {offset} size {size}: {}", line.trim()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::hook;
    use tracer_common::{AF_INET, AF_INET6};
    use tracer_core::segment::Timestamp;

    fn record(h: RecordHeader, data: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; RECORD_HEADER_SIZE];
        // SAFETY: RecordHeader is POD of exactly RECORD_HEADER_SIZE bytes.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<RecordHeader>(), h) };
        v.extend_from_slice(data);
        while !v.len().is_multiple_of(8) {
            v.push(0xee); // ring-buffer padding
        }
        v
    }

    fn hdr() -> RecordHeader {
        let mut h = RecordHeader::ZERO;
        h.family = AF_INET;
        h.hook = hook::CGROUP_EGRESS;
        h.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        h.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        h.sport = 40000;
        h.dport = 11434;
        h.seq = 1000;
        h.ack = 7;
        h.ts_ns = 5_000_000_000;
        h.cgroup_id = 42;
        h.ifindex = 1;
        h
    }

    #[test]
    fn decodes_and_orients() {
        let o = Orientation::new(&[11434]);
        let clock = ClockOffset { realtime_minus_monotonic_ns: 1_700_000_000_000_000_000 };
        let mut h = hdr();
        h.tcp_flags = TcpFlags::ACK | TcpFlags::PSH;
        h.payload_len = 5;
        h.data_len = 5;
        h.rec_flags = rec_flags::LAST;
        let buf = record(h, b"hello");
        let s = decode_record(&buf, &o, clock).unwrap().unwrap();
        assert_eq!(s.payload, b"hello");
        assert_eq!(s.seq, 1000);
        assert_eq!(s.dir, tracer_core::segment::Direction::ToServer);
        assert_eq!(s.flow.server, "127.0.0.2:11434".parse().unwrap());
        assert_eq!(s.ts, Timestamp(1_700_000_005_000_000_000));
        assert_eq!(s.meta.cgroup_id, Some(42));
        assert_eq!(s.flags.0, TcpFlags::ACK | TcpFlags::PSH);

        // Reverse direction, IPv6.
        let mut h6 = hdr();
        h6.family = AF_INET6;
        h6.saddr = std::net::Ipv6Addr::LOCALHOST.octets();
        h6.daddr = std::net::Ipv6Addr::LOCALHOST.octets();
        h6.sport = 11434;
        h6.dport = 40000;
        h6.rec_flags = rec_flags::LAST;
        let buf = record(h6, b"");
        let s = decode_record(&buf, &o, clock).unwrap().unwrap();
        assert_eq!(s.dir, tracer_core::segment::Direction::ToClient);
        assert_eq!(s.flow.client, "[::1]:40000".parse().unwrap());
    }

    #[test]
    fn split_records_get_their_own_seq_and_flags() {
        let o = Orientation::new(&[11434]);
        let clock = ClockOffset { realtime_minus_monotonic_ns: 0 };
        let mut h = hdr();
        h.tcp_flags = TcpFlags::SYN | TcpFlags::ACK | TcpFlags::FIN | TcpFlags::PSH;
        h.payload_len = 20000;
        // Middle... here: second and last slice of a SYN+data+FIN skb.
        h.payload_off = CHUNK_SIZE as u32;
        h.data_len = 3;
        h.rec_flags = rec_flags::LAST;
        let buf = record(h, b"xyz");
        let s = decode_record(&buf, &o, clock).unwrap().unwrap();
        assert_eq!(s.seq, 1000 + 1 + CHUNK_SIZE as u32);
        assert!(!s.flags.syn() && s.flags.fin());
        // First slice, not last: SYN kept, FIN dropped.
        h.payload_off = 0;
        h.rec_flags = 0;
        let buf = record(h, b"abc");
        let s = decode_record(&buf, &o, clock).unwrap().unwrap();
        assert_eq!(s.seq, 1000);
        assert!(s.flags.syn() && !s.flags.fin());
        // Truncation is carried over.
        h.rec_flags = rec_flags::LAST | rec_flags::TRUNCATED;
        h.missing = 99;
        let buf = record(h, b"abc");
        assert_eq!(decode_record(&buf, &o, clock).unwrap().unwrap().missing, 99);
    }

    #[test]
    fn rejects_bad_records() {
        let o = Orientation::new(&[11434]);
        let clock = ClockOffset { realtime_minus_monotonic_ns: 0 };
        assert_eq!(decode_record(&[0u8; 10], &o, clock).unwrap_err(), RecordError::Short);
        let mut h = hdr();
        h.data_len = 100;
        assert_eq!(decode_record(&record(h, b"short"), &o, clock).unwrap_err(), RecordError::BadLength);
        let mut h = hdr();
        h.family = 99;
        assert_eq!(decode_record(&record(h, b""), &o, clock).unwrap_err(), RecordError::BadFamily);
        let mut h = hdr();
        h.dport = 80;
        assert!(decode_record(&record(h, b""), &o, clock).unwrap().is_none());
    }
}
