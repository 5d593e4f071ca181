//! The TLS uprobes' ring-buffer records, decoded: plaintext of a session's call, and session
//! events (its socket, its end, a program started). Pure functions over bytes: the records
//! are a wire format (`tracer_common::tls`).

use std::net::SocketAddr;

use tracer_common::CHUNK_SIZE;
use tracer_common::tls::{DATA_HEADER_SIZE, EventRecord, TlsDataHeader, closer, dir, end, event};
use tracer_core::segment::{Timestamp, TlsLibrary, unmap_v4};

use crate::capture::ring::{ClockOffset, RecordError, ip};

/// A session: the process and its library's connection object (`SSL *`, `*tls.Conn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    pub pid: u32,
    pub conn: u64,
}

/// What the probed process did with a record's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    Wrote,
    Read,
}

impl Io {
    pub fn index(self) -> usize {
        match self {
            Io::Wrote => 0,
            Io::Read => 1,
        }
    }
}

/// Which end of its connection a probed process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Client,
    Server,
}

/// Plaintext of one call (or one chunk of a large call) of a traced session.
#[derive(Clone, Copy, Debug)]
pub struct Plaintext<'a> {
    pub session: SessionId,
    pub tid: u32,
    pub ts: Timestamp,
    pub io: Io,
    /// Stream position of `data[0]` in its direction.
    pub pos: u64,
    /// Bytes of the other direction so far.
    pub peer_pos: u64,
    pub library: Option<TlsLibrary>,
    pub data: &'a [u8],
    /// Bytes right after `data` that no record carries.
    pub missing: u32,
}

/// A traced session's socket, as the kernel found it behind the session's descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionFlow {
    pub session: SessionId,
    pub ts: Timestamp,
    pub library: Option<TlsLibrary>,
    pub end: End,
    /// The process's own end and its peer (IPv4-mapped IPv6 shown as IPv4).
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub cgroup_id: Option<u64>,
    pub comm: String,
}

/// A session event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsEvent {
    Flow(SessionFlow),
    /// `local_first`: the probed process closed first (its library's free or close, its
    /// socket's close), else its peer did; `None`: not known.
    Closed {
        session: SessionId,
        ts: Timestamp,
        local_first: Option<bool>,
    },
    /// A process executed a program: the daemon looks for TLS libraries in it.
    Exec {
        pid: u32,
        ts: Timestamp,
    },
}

/// Decodes a `hook::TLS_DATA` record.
pub fn decode_plaintext(buf: &[u8], clock: ClockOffset) -> Result<Plaintext<'_>, RecordError> {
    let h = TlsDataHeader::read_from(buf).ok_or(RecordError::Short)?;
    let len = h.data_len as usize;
    if len > CHUNK_SIZE || DATA_HEADER_SIZE + len > buf.len() {
        return Err(RecordError::BadLength);
    }
    let io = match h.dir {
        dir::WRITE => Io::Wrote,
        dir::READ => Io::Read,
        _ => return Err(RecordError::BadEvent),
    };
    Ok(Plaintext {
        session: SessionId { pid: h.tgid, conn: h.conn },
        tid: h.tid,
        ts: clock.to_wall(h.ts_ns),
        io,
        pos: h.pos,
        peer_pos: h.peer_pos,
        library: TlsLibrary::from_wire(h.lib),
        data: &buf[DATA_HEADER_SIZE..DATA_HEADER_SIZE + len],
        missing: h.missing,
    })
}

/// Decodes a `hook::TLS_EVENT` record.
pub fn decode_event(buf: &[u8], clock: ClockOffset) -> Result<TlsEvent, RecordError> {
    let r = EventRecord::read_from(buf).ok_or(RecordError::Short)?;
    let session = SessionId { pid: r.tgid, conn: r.conn };
    let ts = clock.to_wall(r.ts_ns);
    match r.event {
        event::FLOW => {
            let end = match r.end {
                end::CLIENT => End::Client,
                end::SERVER => End::Server,
                _ => return Err(RecordError::BadEvent),
            };
            let comm = r.comm.split(|b| *b == 0).next().unwrap_or_default();
            Ok(TlsEvent::Flow(SessionFlow {
                session,
                ts,
                library: TlsLibrary::from_wire(r.lib),
                end,
                local: unmap_v4(SocketAddr::new(ip(r.family, &r.saddr)?, r.sport)),
                remote: unmap_v4(SocketAddr::new(ip(r.family, &r.daddr)?, r.dport)),
                cgroup_id: (r.cgroup_id != 0).then_some(r.cgroup_id),
                comm: String::from_utf8_lossy(comm).into_owned(),
            }))
        }
        event::CLOSE => Ok(TlsEvent::Closed {
            session,
            ts,
            local_first: match r.closer {
                closer::LOCAL => Some(true),
                closer::PEER => Some(false),
                _ => None,
            },
        }),
        event::EXEC => Ok(TlsEvent::Exec { pid: r.tgid, ts }),
        _ => Err(RecordError::BadEvent),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use tracer_common::AF_INET6;
    use tracer_common::{hook, tls::lib};

    /// A data record as the kernel writes it (reserved at a data class, padded).
    pub(crate) fn data_record(h: TlsDataHeader, data: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; DATA_HEADER_SIZE];
        // SAFETY: TlsDataHeader is POD of exactly DATA_HEADER_SIZE bytes.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<TlsDataHeader>(), h) };
        v.extend_from_slice(data);
        v.resize(DATA_HEADER_SIZE + 256.max(data.len()), 0xee);
        v
    }

    pub(crate) fn event_record(r: EventRecord) -> Vec<u8> {
        let mut v = vec![0u8; std::mem::size_of::<EventRecord>()];
        // SAFETY: EventRecord is POD of exactly this size.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<EventRecord>(), r) };
        v
    }

    #[test]
    fn decodes_plaintext_and_rejects_bad_lengths() {
        let clock = ClockOffset { realtime_minus_monotonic_ns: 1_000 };
        let h = TlsDataHeader {
            ts_ns: 5,
            conn: 0xdead,
            pos: 10,
            peer_pos: 3,
            tgid: 42,
            tid: 43,
            data_len: 5,
            dir: dir::READ,
            lib: lib::GO,
            hook: hook::TLS_DATA,
            ..TlsDataHeader::default()
        };
        let buf = data_record(h, b"hello");
        let p = decode_plaintext(&buf, clock).unwrap();
        assert_eq!(
            (p.session, p.tid, p.ts, p.io),
            (SessionId { pid: 42, conn: 0xdead }, 43, Timestamp(1_005), Io::Read)
        );
        assert_eq!((p.pos, p.peer_pos, p.data, p.library), (10, 3, &b"hello"[..], Some(TlsLibrary::Go)));
        let long = TlsDataHeader { data_len: 400, ..h };
        assert_eq!(decode_plaintext(&data_record(long, b"x"), clock).unwrap_err(), RecordError::BadLength);
        assert_eq!(decode_plaintext(&buf[..20], clock).unwrap_err(), RecordError::Short);
        let bad = TlsDataHeader { dir: 7, ..h };
        assert_eq!(decode_plaintext(&data_record(bad, b"hello"), clock).unwrap_err(), RecordError::BadEvent);
    }

    #[test]
    fn decodes_events() {
        let clock = ClockOffset { realtime_minus_monotonic_ns: 0 };
        let mut r = EventRecord {
            ts_ns: 9,
            cgroup_id: 7,
            family: AF_INET6,
            hook: hook::TLS_EVENT,
            event: event::FLOW,
            lib: lib::OPENSSL,
            tgid: 100,
            conn: 0x55,
            end: end::CLIENT,
            sport: 40000,
            dport: 443,
            ..EventRecord::default()
        };
        r.saddr = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets();
        r.daddr = Ipv6Addr::LOCALHOST.octets();
        r.comm[..6].copy_from_slice(b"python");
        let TlsEvent::Flow(f) = decode_event(&event_record(r), clock).unwrap() else { panic!() };
        assert_eq!(f.local, "10.0.0.1:40000".parse().unwrap(), "IPv4-mapped shown as IPv4");
        assert_eq!(f.remote, "[::1]:443".parse().unwrap());
        assert_eq!((f.end, f.cgroup_id, f.comm.as_str()), (End::Client, Some(7), "python"));
        let close = EventRecord { event: event::CLOSE, closer: closer::PEER, ..r };
        assert_eq!(
            decode_event(&event_record(close), clock).unwrap(),
            TlsEvent::Closed {
                session: SessionId { pid: 100, conn: 0x55 },
                ts: Timestamp(9),
                local_first: Some(false)
            }
        );
        let exec = EventRecord { event: event::EXEC, ..r };
        assert_eq!(decode_event(&event_record(exec), clock).unwrap(), TlsEvent::Exec { pid: 100, ts: Timestamp(9) });
        assert_eq!(decode_event(&event_record(EventRecord { end: 0, ..r }), clock).unwrap_err(), RecordError::BadEvent);
        assert_eq!(decode_event(&[0; 10], clock).unwrap_err(), RecordError::Short);
    }
}
