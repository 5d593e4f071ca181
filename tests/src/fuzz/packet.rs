//! Link-layer frame decoding: an arbitrary frame under every link type.
//!
//! Input: `[extra: u16][port: u16][frame...]`; `orig_len` is the frame length plus `extra` (the
//! bytes a snap length cut off), the server ports are 11434 and `port`.
//!
//! Invariants: a segment's payload lies inside the frame; it never claims more missing bytes
//! than the capture cut; its flow has a server port on the server side; and an Ethernet frame
//! decodes the same whether it goes through the fast header path or, VLAN-tagged, through the
//! full parser.

use arbitrary::Unstructured;
use tracer_core::capture::packet::{Decoded, LinkType, PacketError, decode};
use tracer_core::segment::{Orientation, Segment, Timestamp};

use super::input::take;

const LINKS: [LinkType; 8] = [
    LinkType::Null,
    LinkType::Ethernet,
    LinkType::RawIp,
    LinkType::Loop,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Ipv4,
    LinkType::Ipv6,
];

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let extra: u16 = take(&mut u);
    let port: u16 = take(&mut u);
    let frame = u.take_rest();
    let orientation = Orientation::new(&[11434, port]);
    let orig_len = frame.len() as u32 + u32::from(extra);
    for link in LINKS {
        let decoded = decode(link, frame, orig_len, Timestamp(1), &orientation);
        if let Ok(Decoded::Segment(seg)) = &decoded {
            check_segment(link, seg, frame, orig_len, &orientation);
        }
    }
    ethernet_paths_agree(frame, orig_len, &orientation);
}

fn check_segment(link: LinkType, seg: &Segment<'_>, frame: &[u8], orig_len: u32, orientation: &Orientation) {
    let frame_range = frame.as_ptr_range();
    let payload = seg.payload.as_ptr_range();
    assert!(
        seg.payload.is_empty() || (frame_range.start <= payload.start && payload.end <= frame_range.end),
        "{link:?}: payload outside the frame"
    );
    let cut = orig_len.saturating_sub(frame.len() as u32);
    assert!(seg.missing <= cut, "{link:?}: {} bytes missing but the capture cut only {cut}", seg.missing);
    assert!(orientation.is_server_port(seg.flow.server.port()), "{link:?}: server side not on a server port");
    assert_eq!(seg.meta.ifindex.is_some(), link == LinkType::LinuxSll2, "{link:?}: ifindex");
}

/// What a decode produced, comparable across the two paths.
#[derive(Debug, PartialEq)]
enum Outcome {
    Segment {
        seg: String,
        payload: Vec<u8>,
    },
    Ignored,
    /// Counted as a malformed frame (which header was bad is not reported further).
    Malformed,
    Fragment,
}

fn outcome(r: Result<Decoded<'_>, PacketError>) -> Outcome {
    match r {
        Ok(Decoded::Segment(s)) => Outcome::Segment {
            seg: format!("{:?} {:?} {} {} {:?} {}", s.flow, s.dir, s.seq, s.ack, s.flags, s.missing),
            payload: s.payload.to_vec(),
        },
        Ok(Decoded::Ignored) => Outcome::Ignored,
        Err(PacketError::Fragment) => Outcome::Fragment,
        Err(_) => Outcome::Malformed,
    }
}

/// An untagged IPv4/IPv6 Ethernet frame takes the fast path; the same frame with an 802.1Q tag
/// takes etherparse's full parser. Both must see the same segment.
fn ethernet_paths_agree(frame: &[u8], orig_len: u32, orientation: &Orientation) {
    if frame.len() < 14 {
        return;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ethertype != 0x0800 && ethertype != 0x86dd {
        return;
    }
    let mut tagged = Vec::with_capacity(frame.len() + 4);
    tagged.extend_from_slice(&frame[..12]);
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x01]);
    tagged.extend_from_slice(&frame[12..]);
    let fast = outcome(decode(LinkType::Ethernet, frame, orig_len, Timestamp(1), orientation));
    let full = outcome(decode(LinkType::Ethernet, &tagged, orig_len + 4, Timestamp(1), orientation));
    assert_eq!(fast, full, "fast and full Ethernet decoding disagree");
}
