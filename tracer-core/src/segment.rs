//! The record every capture source produces: one TCP segment seen on the wire, oriented
//! client → server by the configured server ports. Everything after the capture consumes only this.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Capture time in nanoseconds since the UNIX epoch (wall clock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const fn from_nanos(ns: u64) -> Self {
        Timestamp(ns)
    }
    pub const fn nanos(self) -> u64 {
        self.0
    }
    /// Signed difference `self - earlier` in nanoseconds (wrapping, so timestamps beyond
    /// `i64::MAX` from a corrupt file cannot overflow; real differences are far within range).
    pub fn since(self, earlier: Timestamp) -> i64 {
        self.0.wrapping_sub(earlier.0) as i64
    }
    pub fn saturating_add_nanos(self, ns: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ns))
    }
    pub fn saturating_sub_nanos(self, ns: u64) -> Timestamp {
        Timestamp(self.0.saturating_sub(ns))
    }
}

/// Which way a segment travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → Ollama (requests).
    ToServer,
    /// Ollama → client (responses).
    ToClient,
}

impl Direction {
    pub fn index(self) -> usize {
        match self {
            Direction::ToServer => 0,
            Direction::ToClient => 1,
        }
    }
    pub fn reverse(self) -> Direction {
        match self {
            Direction::ToServer => Direction::ToClient,
            Direction::ToClient => Direction::ToServer,
        }
    }
}

/// A TCP connection, oriented: `server` is the endpoint on a configured server port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// Hashed per packet (several tables are keyed by it): addresses and ports folded into three
/// words instead of the derived walk over both `SocketAddr` enums and their v6 fields. Equal
/// keys hash equally; v6 flow info and scope, which equality also compares, only add
/// collisions.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        fn ip(a: &SocketAddr) -> u128 {
            match a.ip() {
                IpAddr::V4(v4) => u32::from(v4) as u128,
                IpAddr::V6(v6) => u128::from(v6) ^ (1 << 127),
            }
        }
        let (c, s) = (ip(&self.client), ip(&self.server));
        state.write_u64((c as u64) ^ ((c >> 64) as u64).rotate_left(17));
        state.write_u64((s as u64) ^ ((s >> 64) as u64).rotate_left(17));
        state.write_u32(u32::from(self.client.port()) << 16 | u32::from(self.server.port()));
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {}", self.client, self.server)
    }
}

/// TCP header flags, as on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;

    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
}

/// What the capture source knows about a segment besides its bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CaptureMeta {
    /// cgroup v2 id of the local socket that sent/received it (eBPF cgroup_skb hooks only).
    pub cgroup_id: Option<u64>,
    /// Interface index the packet was seen on, when known.
    pub ifindex: Option<u32>,
    /// Where the eBPF capture saw it; `None` for libpcap and files.
    pub hook: Option<Hook>,
    /// The TLS library the plaintext was read from (TLS capture: uprobes on the library);
    /// `None` for packets.
    pub tls: Option<TlsLibrary>,
    /// The segment's `missing` bytes were left out on purpose: the live capture was told not
    /// to copy this body's bytes (the pipeline does not decode them). A known skip, not a loss.
    pub skipped: bool,
}

/// A TLS library whose plaintext the capture reads (`tracer_common::tls::lib`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsLibrary {
    OpenSsl,
    BoringSsl,
    /// Go's `crypto/tls`.
    Go,
}

impl TlsLibrary {
    /// From a record's `lib` byte; `None` for anything else.
    pub fn from_wire(lib: u8) -> Option<TlsLibrary> {
        match lib {
            tracer_common::tls::lib::OPENSSL => Some(TlsLibrary::OpenSsl),
            tracer_common::tls::lib::BORINGSSL => Some(TlsLibrary::BoringSsl),
            tracer_common::tls::lib::GO => Some(TlsLibrary::Go),
            _ => None,
        }
    }

    /// The name spans carry (`ollama_tracer.tls.library`).
    pub fn name(self) -> &'static str {
        match self {
            TlsLibrary::OpenSsl => "openssl",
            TlsLibrary::BoringSsl => "boringssl",
            TlsLibrary::Go => "go",
        }
    }
}

impl CaptureMeta {
    /// Which end of the connection `cgroup_id` belongs to, for a segment travelling `dir`.
    ///
    /// `cgroup_skb` runs for the local socket: at egress the sender's, at ingress the
    /// receiver's. So a request seen at egress names the client's cgroup and at ingress the
    /// server's; a response the other way round. TC hooks see interfaces, not sockets.
    pub fn socket_side(&self, dir: Direction) -> Option<Side> {
        match (self.hook?, dir) {
            (Hook::CgroupEgress, Direction::ToServer) | (Hook::CgroupIngress, Direction::ToClient) => {
                Some(Side::Client)
            }
            (Hook::CgroupIngress, Direction::ToServer) | (Hook::CgroupEgress, Direction::ToClient) => {
                Some(Side::Server)
            }
            (Hook::TcIngress | Hook::TcEgress, _) => None,
        }
    }
}

/// The eBPF hook a segment was captured at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `cgroup_skb/ingress`: delivered to a local socket.
    CgroupIngress,
    /// `cgroup_skb/egress`: sent by a local socket.
    CgroupEgress,
    TcIngress,
    TcEgress,
}

impl Hook {
    /// From the record's `hook` byte (`tracer_common::hook`); `None` for anything else.
    pub fn from_wire(hook: u8) -> Option<Hook> {
        match hook {
            tracer_common::hook::CGROUP_INGRESS => Some(Hook::CgroupIngress),
            tracer_common::hook::CGROUP_EGRESS => Some(Hook::CgroupEgress),
            tracer_common::hook::TC_INGRESS => Some(Hook::TcIngress),
            tracer_common::hook::TC_EGRESS => Some(Hook::TcEgress),
            _ => None,
        }
    }
}

/// One end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Client,
    Server,
}

/// What the capture learnt about the sockets at both ends of a connection: each end's cgroup
/// v2 id, when that end is a local socket the eBPF `cgroup_skb` hooks saw. A remote end, TC
/// and libpcap captures leave it `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Peers {
    pub client_cgroup: Option<u64>,
    pub server_cgroup: Option<u64>,
}

impl Peers {
    pub fn get(&self, side: Side) -> Option<u64> {
        match side {
            Side::Client => self.client_cgroup,
            Side::Server => self.server_cgroup,
        }
    }

    /// Records `cgroup` for `side`; true when that changed what was known.
    pub fn set(&mut self, side: Side, cgroup: u64) -> bool {
        let slot = match side {
            Side::Client => &mut self.client_cgroup,
            Side::Server => &mut self.server_cgroup,
        };
        let changed = *slot != Some(cgroup);
        *slot = Some(cgroup);
        changed
    }
}

/// What the capture saw of a call's connection, for attribution after the pipeline: its two
/// sockets' cgroups, when it was first seen, and whether that was its handshake (a SYN, so a
/// `connect()` seen about then is this connection's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnFacts {
    pub peers: Peers,
    pub opened: Timestamp,
    pub handshake: bool,
}

/// One TCP segment. `payload` is what was captured; `missing` counts payload bytes the segment
/// carried on the wire but the capture did not keep (snap length, kernel truncation), which
/// reassembly turns into a gap.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub ts: Timestamp,
    pub flow: FlowKey,
    pub dir: Direction,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub payload: &'a [u8],
    pub missing: u32,
    pub meta: CaptureMeta,
}

impl Segment<'_> {
    /// Address of the side that sent this segment.
    pub fn source(&self) -> SocketAddr {
        match self.dir {
            Direction::ToServer => self.flow.client,
            Direction::ToClient => self.flow.server,
        }
    }
}

/// Decides which side of a TCP packet is the Ollama server, from the configured ports.
#[derive(Clone, Debug)]
pub struct Orientation {
    ports: Vec<u16>,
}

impl Orientation {
    pub fn new(ports: &[u16]) -> Self {
        let mut ports = ports.to_vec();
        ports.sort_unstable();
        ports.dedup();
        Orientation { ports }
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// A loop over the (few) ports: `contains` went through a slice search that is not
    /// inlined, twice per packet (2 % of a replay).
    #[inline]
    #[allow(clippy::manual_contains)] // measured: `contains` is the slower one here
    pub fn is_server_port(&self, port: u16) -> bool {
        self.ports.iter().any(|&p| p == port)
    }

    /// Orients a packet from `src` to `dst`; `None` when neither side is a server port.
    pub fn orient(&self, src: SocketAddr, dst: SocketAddr) -> Option<(FlowKey, Direction)> {
        Some(if self.to_server(&src, &dst)? {
            (FlowKey { client: src, server: dst }, Direction::ToServer)
        } else {
            (FlowKey { client: dst, server: src }, Direction::ToClient)
        })
    }

    /// Whether a packet from `src` to `dst` goes to the server; `None` when neither side is a
    /// server port. (What [`Self::orient`] decides, without building the flow: the packet
    /// decoder builds it in the segment itself.)
    #[inline]
    pub fn to_server(&self, src: &SocketAddr, dst: &SocketAddr) -> Option<bool> {
        match (self.is_server_port(src.port()), self.is_server_port(dst.port())) {
            (false, false) => None,
            (false, true) => Some(true),
            (true, false) => Some(false),
            // Both ends on server ports (e.g. 11434 ↔ 11434): pick a stable side so both
            // directions agree.
            (true, true) => Some((dst.port(), dst.ip()) < (src.port(), src.ip())),
        }
    }
}

/// Compact display for an IP address (IPv4-mapped IPv6 shown as IPv4).
pub fn display_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// IPv4-mapped IPv6 (a dual-stack socket talking IPv4) as plain IPv4, as packets show it.
pub fn unmap_v4(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

/// A segment's header without its bytes; the bytes live in the owning [`SegmentBatch`].
#[derive(Clone, Copy, Debug)]
pub struct SegmentHeader {
    pub ts: Timestamp,
    pub flow: FlowKey,
    pub dir: Direction,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub missing: u32,
    pub meta: CaptureMeta,
    /// Byte range of the payload inside [`SegmentBatch::data`].
    pub start: u32,
    pub len: u32,
}

/// Owned segments from a live capture, handed from the capture task to the pipeline in batches
/// (one buffer reused, no allocation per packet).
#[derive(Debug, Default)]
pub struct SegmentBatch {
    pub data: Vec<u8>,
    pub headers: Vec<SegmentHeader>,
}

impl SegmentBatch {
    pub fn clear(&mut self) {
        self.data.clear();
        self.headers.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// Copies `seg` into the batch.
    pub fn push(&mut self, seg: &Segment<'_>) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(seg.payload);
        self.headers.push(SegmentHeader {
            ts: seg.ts,
            flow: seg.flow,
            dir: seg.dir,
            seq: seg.seq,
            ack: seg.ack,
            flags: seg.flags,
            missing: seg.missing,
            meta: seg.meta,
            start,
            len: seg.payload.len() as u32,
        });
    }

    pub fn iter(&self) -> impl Iterator<Item = Segment<'_>> + '_ {
        self.headers.iter().map(move |h| Segment {
            ts: h.ts,
            flow: h.flow,
            dir: h.dir,
            seq: h.seq,
            ack: h.ack,
            flags: h.flags,
            payload: &self.data[h.start as usize..(h.start + h.len) as usize],
            missing: h.missing,
            meta: h.meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn differences_of_any_timestamps_do_not_overflow() {
        assert_eq!(Timestamp(5).since(Timestamp(3)), 2);
        assert_eq!(Timestamp(3).since(Timestamp(5)), -2);
        assert_eq!(Timestamp(u64::MAX).since(Timestamp(u64::MAX - 7)), 7);
        // A corrupt file's timestamps more than i64::MAX apart: some value, no overflow.
        assert_eq!(Timestamp(1 << 63).since(Timestamp(1)), i64::MAX);
    }
}
