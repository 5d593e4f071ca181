//! Decoding one captured frame (link layer → IPv4/IPv6 → TCP) into a [`Segment`].
//! etherparse does the header work; this module only knows link types and orientation.

use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

use crate::segment::{CaptureMeta, Orientation, Segment, TcpFlags, Timestamp};

/// Link types we decode (pcap LINKTYPE_* values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// BSD loopback: 4-byte address family in the writer's byte order.
    Null,
    Ethernet,
    /// Raw IPv4/IPv6 (LINKTYPE_RAW 101, and the DLT_RAW values 12/14 some systems write).
    RawIp,
    /// OpenBSD loopback: 4-byte address family, big-endian.
    Loop,
    /// Linux cooked capture v1 (`tcpdump -i any`, older libpcap).
    LinuxSll,
    /// Linux cooked capture v2 (`tcpdump -i any`, libpcap ≥ 1.10).
    LinuxSll2,
    Ipv4,
    Ipv6,
}

impl LinkType {
    pub fn from_linktype(value: i32) -> Option<LinkType> {
        Some(match value {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            12 | 14 | 101 => LinkType::RawIp,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            _ => return None,
        })
    }
}

/// Why a frame was not turned into a segment. None of these stop a capture; each is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("frame shorter than its link-layer header")]
    ShortLinkHeader,
    #[error("malformed IP header")]
    BadIp,
    #[error("malformed TCP header")]
    BadTcp,
    #[error("IP fragment (TCP over fragmented IP is not reassembled)")]
    Fragment,
}

/// Outcome of decoding a frame that is not an error.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// TCP on a server port.
    Segment(Segment<'a>),
    /// Not TCP, not IP, or TCP on other ports.
    Ignored,
}

/// Decodes one captured frame. `orig_len` is the frame's length on the wire (≥ `frame.len()` when
/// the capture truncated it).
pub fn decode<'a>(
    link: LinkType,
    frame: &'a [u8],
    orig_len: u32,
    ts: Timestamp,
    orientation: &Orientation,
) -> Result<Decoded<'a>, PacketError> {
    let mut meta = CaptureMeta::default();
    let sliced = match link {
        LinkType::Ethernet => LaxSlicedPacket::from_ethernet(frame).map_err(|_| PacketError::ShortLinkHeader)?,
        LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 => ip(frame)?,
        LinkType::Null | LinkType::Loop => {
            // The family value tells v4 from v6, but the IP version nibble says the same thing
            // without caring about byte order or which BSD numbered AF_INET6 how.
            if frame.len() < 4 {
                return Err(PacketError::ShortLinkHeader);
            }
            ip(&frame[4..])?
        }
        LinkType::LinuxSll => {
            if frame.len() < 16 {
                return Err(PacketError::ShortLinkHeader);
            }
            let proto = u16::from_be_bytes([frame[14], frame[15]]);
            LaxSlicedPacket::from_ether_type(EtherType(proto), &frame[16..])
        }
        LinkType::LinuxSll2 => {
            if frame.len() < 20 {
                return Err(PacketError::ShortLinkHeader);
            }
            let proto = u16::from_be_bytes([frame[0], frame[1]]);
            let ifindex = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            meta.ifindex = Some(ifindex);
            LaxSlicedPacket::from_ether_type(EtherType(proto), &frame[20..])
        }
    };
    from_sliced(sliced, frame.len() as u32, orig_len, ts, orientation, meta)
}

fn ip(data: &[u8]) -> Result<LaxSlicedPacket<'_>, PacketError> {
    LaxSlicedPacket::from_ip(data).map_err(|_| PacketError::BadIp)
}

fn from_sliced<'a>(
    sliced: LaxSlicedPacket<'a>,
    caplen: u32,
    orig_len: u32,
    ts: Timestamp,
    orientation: &Orientation,
    meta: CaptureMeta,
) -> Result<Decoded<'a>, PacketError> {
    let Some(net) = sliced.net else {
        return Ok(Decoded::Ignored);
    };
    let (src, dst, payload) = match &net {
        LaxNetSlice::Ipv4(v4) => {
            let h = v4.header();
            (IpAddr::V4(h.source_addr()), IpAddr::V4(h.destination_addr()), v4.payload())
        }
        LaxNetSlice::Ipv6(v6) => {
            let h = v6.header();
            (IpAddr::V6(h.source_addr()), IpAddr::V6(h.destination_addr()), v6.payload())
        }
        LaxNetSlice::Arp(_) => return Ok(Decoded::Ignored),
    };
    if payload.ip_number != etherparse::IpNumber::TCP {
        return Ok(Decoded::Ignored);
    }
    if payload.fragmented {
        return Err(PacketError::Fragment);
    }
    let tcp = match sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => tcp,
        _ => return Err(PacketError::BadTcp),
    };
    let src = SocketAddr::new(src, tcp.source_port());
    let dst = SocketAddr::new(dst, tcp.destination_port());
    let Some((flow, dir)) = orientation.orient(src, dst) else {
        return Ok(Decoded::Ignored);
    };
    // Bytes the capture cut off (snap length) belong to the end of the TCP payload.
    let missing = if payload.incomplete { orig_len.saturating_sub(caplen) } else { 0 };
    let flags = tcp.slice()[13];
    Ok(Decoded::Segment(Segment {
        ts,
        flow,
        dir,
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags: TcpFlags(flags),
        payload: tcp.payload(),
        missing,
        meta,
    }))
}
