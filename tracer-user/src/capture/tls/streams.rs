//! TLS plaintext into the segments reassembly reads: each traced session becomes one TCP
//! connection with its real 4-tuple, oriented client → server by which end the probed process
//! is, its bytes at their stream positions (synthetic sequence numbers from fixed initial ones),
//! a handshake when the session's socket becomes known and a FIN each way when it ends. From
//! there on HTTP, call assembly, spans, metrics, `top` and attribution see a connection like any
//! other; its segments carry the library (`CaptureMeta::tls`), so its spans say `https`.
//!
//! One call, one span, however many ways it is seen:
//! - a connection whose two ends are both probed processes on this host gives two sessions with
//!   the same 4-tuple: the first whose socket is known owns the connection, the other's bytes
//!   are dropped (counted as `duplicate_bytes`);
//! - the packets of a connection a TLS session owns (its port is a traced port too) are dropped
//!   by the packet path ([`TlsStreams::owns`]): on the wire they are ciphertext.
//!
//! A session's bytes can arrive before its socket is known (memory BIOs learn it from the write
//! system call that follows): they are held, bounded in bytes and in time, and dropped counted
//! (`unresolved_bytes`) when the socket never comes. Pure: no I/O, no clock but the records'.

use std::collections::VecDeque;

use std::collections::HashMap;
use tracer_core::segment::{CaptureMeta, Direction, FlowKey, Hook, Segment, TcpFlags, Timestamp, TlsLibrary};

use super::records::{End, Io, Plaintext, SessionFlow, SessionId, TlsEvent};
pub use crate::capture::counters::TlsStreamStats;
use crate::capture::socket::{SocketEvent, SocketEventKind};

/// Initial sequence numbers of every TLS connection (each connection is its own sequence
/// space; only packets of the same 4-tuple could meet them, and those are dropped).
const CLIENT_ISN: u32 = 0x7115_0000;
const SERVER_ISN: u32 = 0x7115_8000;

/// Bounds of what waits for a session's socket.
#[derive(Clone, Debug)]
pub struct StreamsConfig {
    /// How long (capture time) a record waits for its session's socket.
    pub hold_ns: u64,
    pub max_held_per_session: usize,
    pub max_held_total: usize,
    /// Sessions followed at once; beyond, the least recently active is forgotten.
    pub max_sessions: usize,
    /// How long a closed connection's packets are still dropped, and a session with no record
    /// is kept.
    pub closed_memory_ns: u64,
    pub idle_ns: u64,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            hold_ns: 2_000_000_000,
            max_held_per_session: 1 << 20,
            max_held_total: 16 << 20,
            max_sessions: 65_536,
            closed_memory_ns: 30_000_000_000,
            idle_ns: 15 * 60 * 1_000_000_000,
        }
    }
}

#[derive(Debug)]
struct Held {
    ts: Timestamp,
    io: Io,
    pos: u64,
    peer_pos: u64,
    missing: u32,
    data: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
struct Conn {
    flow: FlowKey,
    end: End,
    cgroup: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Socket not known yet: records are held.
    Waiting,
    /// The session feeds its connection.
    Owner,
    /// The other end of a connection another session feeds.
    Duplicate,
}

#[derive(Debug)]
struct Session {
    library: Option<TlsLibrary>,
    role: Role,
    conn: Option<Conn>,
    held: VecDeque<Held>,
    held_bytes: usize,
    /// End of each direction's bytes seen, by `Direction::index` (for the FINs).
    next: [u64; 2],
    last_ts: Timestamp,
}

#[derive(Clone, Copy, Debug)]
struct Owner {
    session: SessionId,
    closed: Option<Timestamp>,
}

/// The TLS sessions in progress and the connections they feed.
#[derive(Debug, Default)]
pub struct TlsStreams {
    config: StreamsConfig,
    sessions: HashMap<SessionId, Session>,
    owners: HashMap<FlowKey, Owner>,
    held_total: usize,
    stats: TlsStreamStats,
}

/// Where a session's segments and socket events go.
pub trait StreamOut {
    fn segment(&mut self, seg: &Segment<'_>);
    fn socket_event(&mut self, ev: SocketEvent);
}

impl TlsStreams {
    pub fn new(config: StreamsConfig) -> Self {
        TlsStreams { config, ..Default::default() }
    }

    pub fn stats(&self) -> TlsStreamStats {
        self.stats
    }

    /// A record that failed to decode.
    pub fn malformed(&mut self) {
        self.stats.malformed_records += 1;
    }

    /// Whether packets of `flow` are to be dropped: a TLS session owns (or owned lately) the
    /// connection, and on the wire its bytes are ciphertext. Counts the drop.
    pub fn owns(&mut self, flow: &FlowKey) -> bool {
        let owned = self.owners.contains_key(flow);
        if owned {
            self.stats.wire_segments_dropped += 1;
        }
        owned
    }

    /// Sessions followed now.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// One record of plaintext.
    pub fn plaintext(&mut self, p: &Plaintext<'_>, out: &mut impl StreamOut) {
        self.stats.records += 1;
        self.stats.bytes += p.data.len() as u64;
        if !self.sessions.contains_key(&p.session) {
            self.make_room(p.ts);
        }
        let s = self.sessions.entry(p.session).or_insert_with(|| Session::new(p.library, p.ts));
        s.last_ts = s.last_ts.max(p.ts);
        s.library = s.library.or(p.library);
        match s.role {
            Role::Owner => {
                let conn = s.conn.expect("an owner has its connection");
                s.advance(conn.end, p.io, p.pos + p.data.len() as u64 + u64::from(p.missing));
                let seg = data_segment(&conn, s.library, p.io, p.pos, p.peer_pos, p.ts, p.data, p.missing);
                out.segment(&seg);
            }
            Role::Duplicate => self.stats.duplicate_bytes += p.data.len() as u64 + u64::from(p.missing),
            Role::Waiting => {
                let size = p.data.len();
                if s.held_bytes + size > self.config.max_held_per_session
                    || self.held_total + size > self.config.max_held_total
                {
                    self.stats.unresolved_bytes += size as u64 + u64::from(p.missing);
                    return;
                }
                s.held.push_back(Held {
                    ts: p.ts,
                    io: p.io,
                    pos: p.pos,
                    peer_pos: p.peer_pos,
                    missing: p.missing,
                    data: p.data.to_vec(),
                });
                s.held_bytes += size;
                self.held_total += size;
            }
        }
    }

    /// One session event; an `Exec` is returned for the caller (the probes look at the new
    /// program).
    pub fn event(&mut self, ev: TlsEvent, out: &mut impl StreamOut) -> Option<(u32, Timestamp)> {
        match ev {
            TlsEvent::Flow(f) => self.flow(f, out),
            TlsEvent::Closed { session, ts, local_first } => self.closed(session, ts, local_first.unwrap_or(true), out),
            TlsEvent::Exec { pid, ts } => return Some((pid, ts)),
        }
        None
    }

    fn flow(&mut self, f: SessionFlow, out: &mut impl StreamOut) {
        self.stats.flows += 1;
        let (client, server) = match f.end {
            End::Client => (f.local, f.remote),
            End::Server => (f.remote, f.local),
        };
        let conn = Conn { flow: FlowKey { client, server }, end: f.end, cgroup: f.cgroup_id };
        if self.sessions.get(&f.session).is_some_and(|s| s.role == Role::Owner) {
            // The connection object moved to another socket without an end: end the old one.
            self.closed(f.session, f.ts, true, out);
        }
        if !self.sessions.contains_key(&f.session) {
            self.make_room(f.ts);
        }
        let taken = self
            .owners
            .get(&conn.flow)
            .is_some_and(|o| o.session != f.session && o.closed.is_none() && self.sessions.contains_key(&o.session));
        let s = self.sessions.entry(f.session).or_insert_with(|| Session::new(f.library, f.ts));
        s.library = s.library.or(f.library);
        s.conn = Some(conn);
        s.last_ts = s.last_ts.max(f.ts);
        let held: Vec<Held> = s.held.drain(..).collect();
        self.held_total -= s.held_bytes;
        s.held_bytes = 0;
        if taken {
            s.role = Role::Duplicate;
            self.stats.duplicate_sessions += 1;
            self.stats.duplicate_bytes += held.iter().map(|h| h.data.len() as u64 + u64::from(h.missing)).sum::<u64>();
            return;
        }
        s.role = Role::Owner;
        self.stats.connections += 1;
        self.owners.insert(conn.flow, Owner { session: f.session, closed: None });
        let opened = held.iter().map(|h| h.ts).min().map_or(f.ts, |t| t.min(f.ts));
        let library = s.library;
        for (dir, flags) in [(Direction::ToServer, TcpFlags::SYN), (Direction::ToClient, TcpFlags::SYN | TcpFlags::ACK)]
        {
            out.segment(&control_segment(&conn, library, dir, opened, 0, [0, 0], flags));
        }
        for h in &held {
            s.advance(conn.end, h.io, h.pos + h.data.len() as u64 + u64::from(h.missing));
            out.segment(&data_segment(&conn, library, h.io, h.pos, h.peer_pos, h.ts, &h.data, h.missing));
        }
        if f.end == End::Client {
            // Attribution: the process behind the client's end, as a connect() would name it.
            out.socket_event(SocketEvent {
                kind: SocketEventKind::Connect,
                ts: opened,
                cgroup_id: f.cgroup_id,
                local: f.local,
                remote: f.remote,
                pid: f.session.pid,
                comm: f.comm,
                sock: f.session.conn,
            });
        }
    }

    /// The session ended: a FIN each way, first from the end that closed first (a client that
    /// goes first cancels a response in progress; a server that does cuts it short).
    fn closed(&mut self, session: SessionId, ts: Timestamp, local_first: bool, out: &mut impl StreamOut) {
        let Some(s) = self.sessions.remove(&session) else { return };
        self.held_total -= s.held_bytes;
        if s.role == Role::Waiting {
            self.stats.unresolved_bytes +=
                s.held.iter().map(|h| h.data.len() as u64 + u64::from(h.missing)).sum::<u64>();
        }
        let (Role::Owner, Some(conn)) = (s.role, s.conn) else { return };
        let local = direction(conn.end, Io::Wrote);
        let first = if local_first { local } else { local.reverse() };
        for dir in [first, first.reverse()] {
            out.segment(&control_segment(
                &conn,
                s.library,
                dir,
                ts,
                s.next[dir.index()],
                s.next,
                TcpFlags::FIN | TcpFlags::ACK,
            ));
        }
        if let Some(o) = self.owners.get_mut(&conn.flow).filter(|o| o.session == session) {
            o.closed = Some(ts);
        }
    }

    /// Time-based rules at capture time `now`: records waiting too long for their socket are
    /// dropped, closed connections and idle sessions forgotten.
    pub fn expire(&mut self, now: Timestamp) {
        let cfg = &self.config;
        let mut dropped = 0u64;
        let mut freed = 0usize;
        self.sessions.retain(|_, s| {
            while s.held.front().is_some_and(|h| now.since(h.ts) > cfg.hold_ns as i64) {
                let h = s.held.pop_front().expect("front exists");
                dropped += h.data.len() as u64 + u64::from(h.missing);
                freed += h.data.len();
                s.held_bytes -= h.data.len();
            }
            now.since(s.last_ts) <= cfg.idle_ns as i64
        });
        self.held_total -= freed;
        self.stats.unresolved_bytes += dropped;
        let sessions = &self.sessions;
        self.owners.retain(|_, o| match o.closed {
            Some(t) => now.since(t) <= cfg.closed_memory_ns as i64,
            None => sessions.contains_key(&o.session),
        });
    }

    /// Keeps the session table under its limit: forgets the least recently active session.
    fn make_room(&mut self, now: Timestamp) {
        if self.sessions.len() < self.config.max_sessions {
            return;
        }
        self.expire(now);
        if self.sessions.len() < self.config.max_sessions {
            return;
        }
        if let Some(id) = self.sessions.iter().min_by_key(|(_, s)| s.last_ts).map(|(id, _)| *id)
            && let Some(s) = self.sessions.remove(&id)
        {
            self.held_total -= s.held_bytes;
            self.stats.unresolved_bytes += s.held_bytes as u64;
            self.stats.evicted_sessions += 1;
        }
    }
}

impl Session {
    fn new(library: Option<TlsLibrary>, ts: Timestamp) -> Session {
        Session {
            library,
            role: Role::Waiting,
            conn: None,
            held: VecDeque::new(),
            held_bytes: 0,
            next: [0; 2],
            last_ts: ts,
        }
    }

    fn advance(&mut self, end: End, io: Io, to: u64) {
        let d = direction(end, io).index();
        self.next[d] = self.next[d].max(to);
    }
}

/// Which way bytes travel that the process at `end` wrote or read.
fn direction(end: End, io: Io) -> Direction {
    match (end, io) {
        (End::Client, Io::Wrote) | (End::Server, Io::Read) => Direction::ToServer,
        _ => Direction::ToClient,
    }
}

fn isn(dir: Direction) -> u32 {
    match dir {
        Direction::ToServer => CLIENT_ISN,
        Direction::ToClient => SERVER_ISN,
    }
}

/// What a segment says about the socket that sent it: the probed process's cgroup, as a
/// packet sent by it (egress) or delivered to it (ingress) would.
fn meta(conn: &Conn, library: Option<TlsLibrary>, io: Option<Io>) -> CaptureMeta {
    CaptureMeta {
        cgroup_id: io.and(conn.cgroup),
        ifindex: None,
        hook: io.map(|io| match io {
            Io::Wrote => Hook::CgroupEgress,
            Io::Read => Hook::CgroupIngress,
        }),
        tls: Some(library.unwrap_or(TlsLibrary::OpenSsl)),
        skipped: false,
    }
}

#[allow(clippy::too_many_arguments)]
fn data_segment<'a>(
    conn: &Conn,
    library: Option<TlsLibrary>,
    io: Io,
    pos: u64,
    peer_pos: u64,
    ts: Timestamp,
    data: &'a [u8],
    missing: u32,
) -> Segment<'a> {
    let dir = direction(conn.end, io);
    Segment {
        ts,
        flow: conn.flow,
        dir,
        seq: isn(dir).wrapping_add(1).wrapping_add(pos as u32),
        ack: isn(dir.reverse()).wrapping_add(1).wrapping_add(peer_pos as u32),
        flags: TcpFlags(TcpFlags::ACK | TcpFlags::PSH),
        payload: data,
        missing,
        meta: meta(conn, library, Some(io)),
    }
}

/// A handshake or end segment of `dir` at stream position `pos` (`next`: both directions' ends,
/// for the acknowledgement).
fn control_segment(
    conn: &Conn,
    library: Option<TlsLibrary>,
    dir: Direction,
    ts: Timestamp,
    pos: u64,
    next: [u64; 2],
    flags: u8,
) -> Segment<'static> {
    let syn = flags & TcpFlags::SYN != 0;
    let (seq, ack) = if syn {
        (isn(dir), if dir == Direction::ToClient { CLIENT_ISN.wrapping_add(1) } else { 0 })
    } else {
        (
            isn(dir).wrapping_add(1).wrapping_add(pos as u32),
            isn(dir.reverse()).wrapping_add(1).wrapping_add(next[dir.reverse().index()] as u32),
        )
    };
    // Sent by the probed process when it is that direction's sender.
    let sender_is_probed =
        matches!((conn.end, dir), (End::Client, Direction::ToServer) | (End::Server, Direction::ToClient));
    Segment {
        ts,
        flow: conn.flow,
        dir,
        seq,
        ack,
        flags: TcpFlags(flags),
        payload: &[],
        missing: 0,
        meta: meta(conn, library, sender_is_probed.then_some(Io::Wrote)),
    }
}
