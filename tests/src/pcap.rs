//! pcap and pcapng writers for synthetic packets, with every link type the tracer reads, and
//! (through the tracer's own file reader) a capture file read back into packets.
//!
//! IP and TCP headers come from `etherparse` with correct checksums, so tshark/tcpdump decode the
//! files without complaints. Files are little-endian. Snap length truncates the captured frame
//! while the record keeps the original length.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, TcpHeader, TcpOptionElement};

use crate::synth::Packet;

#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("packet at {ts_ns} ns: {len}-byte payload does not fit one IP packet")]
    TooLarge { ts_ns: u64, len: usize },
    #[error("packet at {ts_ns} ns mixes IPv4 and IPv6 addresses")]
    MixedFamilies { ts_ns: u64 },
    #[error("record {record} does not exist ({records} records)")]
    NoSuchRecord { record: usize, records: usize },
    #[error("unknown link type {0:?}")]
    UnknownLinkType(String),
    #[error("reading a capture: {0}")]
    Read(#[from] tracer_core::capture::file::FileError),
}

/// Link-layer encapsulation of the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// BSD loopback (0): 4-byte address family in host (here: little-endian) order.
    Null,
    /// Ethernet II (1).
    Ethernet,
    /// Raw IP (101), the portable code.
    Raw,
    /// DLT_RAW as most BSDs and Linux number it in files (12).
    RawDlt12,
    /// DLT_RAW as OpenBSD numbers it (14).
    RawDlt14,
    /// Linux cooked capture v1 (113).
    LinuxSll,
    /// Linux cooked capture v2 (276): what `tcpdump -i any` writes.
    LinuxSll2,
}

impl LinkType {
    pub const ALL: [LinkType; 7] = [
        LinkType::Null,
        LinkType::Ethernet,
        LinkType::Raw,
        LinkType::RawDlt12,
        LinkType::RawDlt14,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
    ];

    /// Value of the file's link-type field.
    pub fn code(self) -> u16 {
        match self {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::Raw => 101,
            LinkType::RawDlt12 => 12,
            LinkType::RawDlt14 => 14,
            LinkType::LinuxSll => 113,
            LinkType::LinuxSll2 => 276,
        }
    }

    /// Bytes before the IP header.
    pub fn header_len(self) -> usize {
        match self {
            LinkType::Null => 4,
            LinkType::Ethernet => 14,
            LinkType::Raw | LinkType::RawDlt12 | LinkType::RawDlt14 => 0,
            LinkType::LinuxSll => 16,
            LinkType::LinuxSll2 => 20,
        }
    }

    /// Short name, as the `fixture-pcap` CLI takes it.
    pub fn name(self) -> &'static str {
        match self {
            LinkType::Null => "null",
            LinkType::Ethernet => "ethernet",
            LinkType::Raw => "raw",
            LinkType::RawDlt12 => "raw12",
            LinkType::RawDlt14 => "raw14",
            LinkType::LinuxSll => "sll",
            LinkType::LinuxSll2 => "sll2",
        }
    }
}

impl std::str::FromStr for LinkType {
    type Err = PcapError;
    fn from_str(s: &str) -> Result<Self, PcapError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "null" | "loopback" | "bsd-loopback" | "0" => LinkType::Null,
            "ethernet" | "en10mb" | "ether" | "1" => LinkType::Ethernet,
            "raw" | "101" => LinkType::Raw,
            "raw12" | "12" => LinkType::RawDlt12,
            "raw14" | "14" => LinkType::RawDlt14,
            "sll" | "linux-sll" | "113" => LinkType::LinuxSll,
            "sll2" | "linux-sll2" | "276" => LinkType::LinuxSll2,
            _ => return Err(PcapError::UnknownLinkType(s.to_owned())),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Pcap,
    PcapNg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsPrecision {
    Micro,
    Nano,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterConfig {
    pub format: FileFormat,
    pub precision: TsPrecision,
    pub link: LinkType,
    /// Longest frame kept per record; longer frames are cut, their original length recorded.
    pub snaplen: u32,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            format: FileFormat::Pcap,
            precision: TsPrecision::Micro,
            link: LinkType::Ethernet,
            snaplen: 262_144,
        }
    }
}

impl WriterConfig {
    pub fn new(format: FileFormat, precision: TsPrecision, link: LinkType) -> Self {
        WriterConfig { format, precision, link, ..Default::default() }
    }
}

const PCAP_MAGIC_MICRO: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NANO: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_IDB: u32 = 0x0000_0001;
const PCAPNG_EPB: u32 = 0x0000_0006;
const PCAPNG_BOM: u32 = 0x1a2b_3c4d;

const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
const PACKET_HOST: u8 = 0;
const PACKET_OUTGOING: u8 = 4;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const BSD_AF_INET: u32 = 2;
/// macOS's AF_INET6, where NULL-link loopback captures usually come from.
const BSD_AF_INET6_DARWIN: u32 = 30;

/// IP header + TCP header + payload with correct lengths and checksums.
pub fn ip_packet(p: &Packet) -> Result<Vec<u8>, PcapError> {
    let mut tcp = TcpHeader::new(p.src.port(), p.dst.port(), p.seq, p.window);
    tcp.acknowledgment_number = p.ack;
    tcp.fin = p.flags.fin();
    tcp.syn = p.flags.syn();
    tcp.rst = p.flags.rst();
    tcp.psh = p.flags.psh();
    tcp.ack = p.flags.ack();
    if let Some(opts) = p.syn_options {
        tcp.set_options(&[
            TcpOptionElement::MaximumSegmentSize(opts.mss),
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(opts.window_scale),
        ])
        .expect("8 bytes of options fit");
    }
    let too_large = || PcapError::TooLarge { ts_ns: p.ts_ns, len: p.payload.len() };
    let mut out = Vec::with_capacity(60 + p.payload.len());
    match (p.src.ip(), p.dst.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let tcp_len = u16::try_from(tcp.header_len() + p.payload.len()).map_err(|_| too_large())?;
            let mut ip =
                Ipv4Header::new(tcp_len, 64, IpNumber::TCP, src.octets(), dst.octets()).map_err(|_| too_large())?;
            // Deterministic, varying identification (Linux sets one per packet even with DF).
            ip.identification = (p.seq as u16) ^ (p.ack as u16).rotate_left(5);
            ip.header_checksum = ip.calc_header_checksum();
            tcp.checksum = tcp.calc_checksum_ipv4(&ip, &p.payload).map_err(|_| too_large())?;
            ip.write(&mut out)?;
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let payload_length = u16::try_from(tcp.header_len() + p.payload.len()).map_err(|_| too_large())?;
            let ip = Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length,
                next_header: IpNumber::TCP,
                hop_limit: 64,
                source: src.octets(),
                destination: dst.octets(),
            };
            tcp.checksum = tcp.calc_checksum_ipv6(&ip, &p.payload).map_err(|_| too_large())?;
            ip.write(&mut out)?;
        }
        _ => return Err(PcapError::MixedFamilies { ts_ns: p.ts_ns }),
    }
    tcp.write(&mut out)?;
    out.extend_from_slice(&p.payload);
    Ok(out)
}

fn is_loopback(a: &SocketAddr) -> bool {
    a.ip().is_loopback()
}

/// A stable MAC per address: zeros on loopback (as Linux `lo` frames have), else locally
/// administered `02:..` from the address bytes.
fn mac_of(a: &SocketAddr) -> [u8; 6] {
    if is_loopback(a) {
        return [0; 6];
    }
    let tail: [u8; 4] = match a.ip() {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    [0x02, 0x00, tail[0], tail[1], tail[2], tail[3]]
}

/// The link-layer header for `p`. The capture is taken on the host of the lower port's side
/// (the server): its packets are outgoing, the peer's incoming; loopback shows all as incoming,
/// as `tcpdump -i any` prints `lo In`.
pub fn link_header(p: &Packet, link: LinkType) -> Vec<u8> {
    let v4 = p.src.is_ipv4();
    let ethertype = if v4 { ETHERTYPE_IPV4 } else { ETHERTYPE_IPV6 };
    let loopback = is_loopback(&p.src) && is_loopback(&p.dst);
    let (arphrd, pkttype, ifindex) = if loopback {
        (ARPHRD_LOOPBACK, PACKET_HOST, 1u32)
    } else if p.src.port() < p.dst.port() {
        (ARPHRD_ETHER, PACKET_OUTGOING, 2)
    } else {
        (ARPHRD_ETHER, PACKET_HOST, 2)
    };
    let mut addr = [0u8; 8];
    addr[..6].copy_from_slice(&mac_of(&p.src));
    let mut h = Vec::with_capacity(link.header_len());
    match link {
        LinkType::Null => {
            let af = if v4 { BSD_AF_INET } else { BSD_AF_INET6_DARWIN };
            h.extend_from_slice(&af.to_le_bytes());
        }
        LinkType::Ethernet => {
            h.extend_from_slice(&mac_of(&p.dst));
            h.extend_from_slice(&mac_of(&p.src));
            h.extend_from_slice(&ethertype.to_be_bytes());
        }
        LinkType::Raw | LinkType::RawDlt12 | LinkType::RawDlt14 => {}
        LinkType::LinuxSll => {
            h.extend_from_slice(&u16::from(pkttype).to_be_bytes());
            h.extend_from_slice(&arphrd.to_be_bytes());
            h.extend_from_slice(&6u16.to_be_bytes());
            h.extend_from_slice(&addr);
            h.extend_from_slice(&ethertype.to_be_bytes());
        }
        LinkType::LinuxSll2 => {
            h.extend_from_slice(&ethertype.to_be_bytes());
            h.extend_from_slice(&0u16.to_be_bytes());
            h.extend_from_slice(&ifindex.to_be_bytes());
            h.extend_from_slice(&arphrd.to_be_bytes());
            h.push(pkttype);
            h.push(6);
            h.extend_from_slice(&addr);
        }
    }
    debug_assert_eq!(h.len(), link.header_len());
    h
}

/// A frame ready for a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The whole frame (original length = `bytes.len()`).
    pub bytes: Vec<u8>,
    /// How many of those bytes the capture keeps (payload truncation only; snaplen applies later).
    pub captured: usize,
}

/// Link header + IP + TCP + payload; `captured` honours [`Packet::captured_payload`].
pub fn frame(p: &Packet, link: LinkType) -> Result<Frame, PcapError> {
    let mut bytes = link_header(p, link);
    bytes.extend_from_slice(&ip_packet(p)?);
    let missing = p.payload.len() - p.captured_len();
    let captured = bytes.len() - missing;
    Ok(Frame { bytes, captured })
}

/// Streams records into a pcap or pcapng file.
pub struct CaptureWriter<W: Write> {
    out: W,
    cfg: WriterConfig,
    written: u64,
    record_offsets: Vec<u64>,
}

impl<W: Write> CaptureWriter<W> {
    /// Write the file header (pcap global header, or pcapng SHB + IDB).
    pub fn new(mut out: W, cfg: WriterConfig) -> Result<Self, PcapError> {
        let header = match cfg.format {
            FileFormat::Pcap => pcap_global_header(&cfg),
            FileFormat::PcapNg => {
                let mut h = pcapng_shb();
                h.extend_from_slice(&pcapng_idb(&cfg));
                h
            }
        };
        out.write_all(&header)?;
        Ok(CaptureWriter { out, cfg, written: header.len() as u64, record_offsets: Vec::new() })
    }

    pub fn config(&self) -> &WriterConfig {
        &self.cfg
    }

    pub fn write_packet(&mut self, p: &Packet) -> Result<(), PcapError> {
        let f = frame(p, self.cfg.link)?;
        self.write_frame(p.ts_ns, &f.bytes[..f.captured], f.bytes.len())
    }

    /// Write one record of captured `data` whose frame was `orig_len` bytes on the wire; the
    /// snap length cuts `data` further.
    pub fn write_frame(&mut self, ts_ns: u64, data: &[u8], orig_len: usize) -> Result<(), PcapError> {
        let data = &data[..data.len().min(self.cfg.snaplen as usize)];
        let ts = match self.cfg.precision {
            TsPrecision::Micro => ts_ns / 1_000,
            TsPrecision::Nano => ts_ns,
        };
        let mut rec = Vec::with_capacity(32 + data.len());
        match self.cfg.format {
            FileFormat::Pcap => {
                let per_sec = match self.cfg.precision {
                    TsPrecision::Micro => 1_000_000,
                    TsPrecision::Nano => 1_000_000_000,
                };
                rec.extend_from_slice(&((ts / per_sec) as u32).to_le_bytes());
                rec.extend_from_slice(&((ts % per_sec) as u32).to_le_bytes());
                rec.extend_from_slice(&(data.len() as u32).to_le_bytes());
                rec.extend_from_slice(&(orig_len as u32).to_le_bytes());
                rec.extend_from_slice(data);
            }
            FileFormat::PcapNg => {
                let mut body = Vec::with_capacity(20 + data.len() + 3);
                body.extend_from_slice(&0u32.to_le_bytes()); // interface 0
                body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
                body.extend_from_slice(&(ts as u32).to_le_bytes());
                body.extend_from_slice(&(data.len() as u32).to_le_bytes());
                body.extend_from_slice(&(orig_len as u32).to_le_bytes());
                body.extend_from_slice(data);
                pad4(&mut body);
                rec = pcapng_block(PCAPNG_EPB, &body);
            }
        }
        self.out.write_all(&rec)?;
        self.record_offsets.push(self.written);
        self.written += rec.len() as u64;
        Ok(())
    }

    /// File offsets of the records written so far (pcap record header / pcapng EPB start).
    pub fn record_offsets(&self) -> &[u64] {
        &self.record_offsets
    }

    pub fn finish(mut self) -> Result<W, PcapError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn pcap_global_header(cfg: &WriterConfig) -> Vec<u8> {
    let magic = match cfg.precision {
        TsPrecision::Micro => PCAP_MAGIC_MICRO,
        TsPrecision::Nano => PCAP_MAGIC_NANO,
    };
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&magic.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    h.extend_from_slice(&cfg.snaplen.to_le_bytes());
    h.extend_from_slice(&u32::from(cfg.link.code()).to_le_bytes());
    h
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

/// Block: type, total length, body (already padded), total length.
fn pcapng_block(kind: u32, body: &[u8]) -> Vec<u8> {
    let total = (12 + body.len()) as u32;
    let mut b = Vec::with_capacity(total as usize);
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&total.to_le_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(&total.to_le_bytes());
    b
}

fn push_option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&(value.len() as u16).to_le_bytes());
    body.extend_from_slice(value);
    pad4(body);
}

fn pcapng_shb() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&PCAPNG_BOM.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&(-1i64).to_le_bytes()); // section length unknown
    push_option(&mut body, 4, b"ollama-tracer testkit"); // shb_userappl
    push_option(&mut body, 0, &[]); // opt_endofopt
    pcapng_block(PCAPNG_SHB, &body)
}

fn pcapng_idb(cfg: &WriterConfig) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&cfg.link.code().to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&cfg.snaplen.to_le_bytes());
    let name: &[u8] = match cfg.link {
        LinkType::LinuxSll | LinkType::LinuxSll2 => b"any",
        _ => b"lo",
    };
    push_option(&mut body, 2, name); // if_name
    let resol = match cfg.precision {
        TsPrecision::Micro => 6u8,
        TsPrecision::Nano => 9u8,
    };
    push_option(&mut body, 9, &[resol]); // if_tsresol: 10^-resol seconds
    push_option(&mut body, 0, &[]);
    pcapng_block(PCAPNG_IDB, &body)
}

/// Write `packets` as a whole capture into `out`.
pub fn write_capture<W: Write>(out: W, cfg: WriterConfig, packets: &[Packet]) -> Result<W, PcapError> {
    let mut w = CaptureWriter::new(out, cfg)?;
    for p in packets {
        w.write_packet(p)?;
    }
    w.finish()
}

/// A whole capture as bytes.
pub fn to_bytes(cfg: WriterConfig, packets: &[Packet]) -> Result<Vec<u8>, PcapError> {
    write_capture(Vec::new(), cfg, packets)
}

/// A whole capture written to `path`.
pub fn write_file(path: &Path, cfg: WriterConfig, packets: &[Packet]) -> Result<(), PcapError> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    write_capture(file, cfg, packets)?;
    Ok(())
}

/// The TCP segments on `ports` of a capture file (pcap or pcapng, any link type the tracer
/// reads), as packets in file order: what a real capture looked like, to perturb and replay.
/// (Options of SYNs and window sizes are not kept: the tracer reads neither.)
pub fn read_packets(path: &Path, ports: &[u16]) -> Result<Vec<Packet>, PcapError> {
    let files = tracer_core::replay::open_all(&[path])?;
    let mut frames = tracer_core::replay::Frames::new(&files, ports);
    let mut out = Vec::new();
    let mut take = |read: tracer_core::replay::Read<'_, '_>| {
        let Some(seg) = read.segment else { return };
        let (src, dst) = match seg.dir {
            tracer_core::segment::Direction::ToServer => (seg.flow.client, seg.flow.server),
            tracer_core::segment::Direction::ToClient => (seg.flow.server, seg.flow.client),
        };
        let captured = seg.payload.len();
        let mut payload = seg.payload.to_vec();
        payload.resize(captured + seg.missing as usize, 0);
        out.push(Packet {
            ts_ns: seg.ts.0,
            src,
            dst,
            seq: seg.seq,
            ack: seg.ack,
            flags: crate::synth::TcpFlags(seg.flags.0),
            window: u16::MAX,
            syn_options: None,
            payload,
            captured_payload: (seg.missing > 0).then_some(captured),
        });
    };
    while frames.with_next(&mut take).is_some() {}
    // A corrupt record ends a capture where it lies: not a capture to perturb.
    match frames.take_error() {
        Some(e) => Err(e.into()),
        None => Ok(out),
    }
}

/// Damage to put into a capture for error-path tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// The first four bytes are not a known magic.
    BadMagic,
    /// Record `n`'s length field claims ~2 GiB (pcap `incl_len`, pcapng block total length).
    AbsurdRecordLength { record: usize },
    /// The file ends halfway through record `n`.
    TruncatedRecord { record: usize },
    /// Record `n` says it captured more bytes than the packet had (`incl_len > orig_len`).
    CaplenExceedsOrigLen { record: usize },
}

/// A capture of `packets` with `corruption` applied.
pub fn corrupt_bytes(cfg: WriterConfig, packets: &[Packet], corruption: Corruption) -> Result<Vec<u8>, PcapError> {
    let mut w = CaptureWriter::new(Vec::new(), cfg)?;
    for p in packets {
        w.write_packet(p)?;
    }
    let offsets: Vec<usize> = w.record_offsets().iter().map(|&o| o as usize).collect();
    let mut bytes = w.finish()?;
    let record =
        |n: usize| offsets.get(n).copied().ok_or(PcapError::NoSuchRecord { record: n, records: offsets.len() });
    let put = |bytes: &mut Vec<u8>, at: usize, v: u32| bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let get = |bytes: &[u8], at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    match (corruption, cfg.format) {
        (Corruption::BadMagic, _) => bytes[..4].copy_from_slice(&0xdead_beef_u32.to_le_bytes()),
        (Corruption::AbsurdRecordLength { record: n }, FileFormat::Pcap) => {
            let at = record(n)?;
            put(&mut bytes, at + 8, 0x7fff_fff0);
            put(&mut bytes, at + 12, 0x7fff_fff0);
        }
        (Corruption::AbsurdRecordLength { record: n }, FileFormat::PcapNg) => {
            let at = record(n)?;
            put(&mut bytes, at + 4, 0x7fff_fff0);
        }
        (Corruption::TruncatedRecord { record: n }, format) => {
            let at = record(n)?;
            let header = if format == FileFormat::Pcap { 16 } else { 28 };
            let end = offsets.get(n + 1).copied().unwrap_or(bytes.len());
            bytes.truncate(at + header + (end - at - header) / 2);
        }
        (Corruption::CaplenExceedsOrigLen { record: n }, format) => {
            let at = record(n)?;
            let (incl, orig) = if format == FileFormat::Pcap { (at + 8, at + 12) } else { (at + 20, at + 24) };
            let caplen = get(&bytes, incl);
            put(&mut bytes, orig, caplen.saturating_sub(1));
        }
    }
    Ok(bytes)
}

/// [`corrupt_bytes`] written to `path`.
pub fn write_corrupt_file(
    path: &Path,
    cfg: WriterConfig,
    packets: &[Packet],
    corruption: Corruption,
) -> Result<(), PcapError> {
    std::fs::write(path, corrupt_bytes(cfg, packets, corruption)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::synth::perturb;
    use crate::synth::{ConnectionSpec, synthesize};
    use crate::wire::{RenderOptions, render};
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use pcap_parser::data::{PacketData, get_packetdata};
    use pcap_parser::{Linktype, PcapBlockOwned, PcapError as ReadError, create_reader};

    /// One parsed record: timestamp in ns, link type, captured bytes, original length.
    struct Record {
        ts_ns: u64,
        link: Linktype,
        data: Vec<u8>,
        orig_len: u32,
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Record>, String> {
        // A buffer as large as the file: records never need the buffer to grow.
        let mut reader = create_reader(bytes.len().max(65_536), bytes).map_err(|e| format!("{e:?}"))?;
        let mut out = Vec::new();
        let mut link = Linktype(0);
        let mut nanos = false;
        let mut if_ts_nanos = false;
        loop {
            match reader.next() {
                Ok((offset, block)) => {
                    match block {
                        PcapBlockOwned::LegacyHeader(h) => {
                            link = h.network;
                            nanos = h.is_nanosecond_precision();
                        }
                        PcapBlockOwned::Legacy(b) => {
                            let frac = u64::from(b.ts_usec) * if nanos { 1 } else { 1_000 };
                            out.push(Record {
                                ts_ns: u64::from(b.ts_sec) * 1_000_000_000 + frac,
                                link,
                                data: b.data[..b.caplen as usize].to_vec(),
                                orig_len: b.origlen,
                            });
                        }
                        PcapBlockOwned::NG(pcap_parser::Block::InterfaceDescription(idb)) => {
                            link = idb.linktype;
                            if_ts_nanos = idb.if_tsresol == 9;
                        }
                        PcapBlockOwned::NG(pcap_parser::Block::EnhancedPacket(epb)) => {
                            let ts = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                            out.push(Record {
                                ts_ns: if if_ts_nanos { ts } else { ts * 1_000 },
                                link,
                                data: epb.data[..epb.caplen as usize].to_vec(),
                                orig_len: epb.origlen,
                            });
                        }
                        PcapBlockOwned::NG(_) => {}
                    }
                    reader.consume(offset);
                }
                Err(ReadError::Eof) => return Ok(out),
                Err(ReadError::Incomplete(_)) => {
                    if reader.reader_exhausted() {
                        return Err("truncated".into());
                    }
                    reader.refill().map_err(|e| format!("{e:?}"))?;
                }
                Err(e) => return Err(format!("{e:?}")),
            }
        }
    }

    fn sample_packets(v6: bool) -> Vec<Packet> {
        let f = fixtures::load(
            "crmne-ruby_llm__chat_streaming_responses_ollama_mistral-small3_1_supports_streaming_responses__0",
        )
        .unwrap();
        let w = render(&f, &RenderOptions::default());
        let spec = if v6 { ConnectionSpec::loopback_v6(42_000) } else { ConnectionSpec::loopback_v4(42_000) };
        synthesize(&[spec.seed(11).exchange(w)]).unwrap().packets
    }

    /// Every format × precision × link type × family: records parse back with pcap-parser, the
    /// link header decodes to the right IP version, etherparse validates IP/TCP and the payload
    /// and timestamps are ours.
    #[test]
    fn every_link_type_round_trips() {
        for v6 in [false, true] {
            let packets = sample_packets(v6);
            for format in [FileFormat::Pcap, FileFormat::PcapNg] {
                for precision in [TsPrecision::Micro, TsPrecision::Nano] {
                    for link in LinkType::ALL {
                        let cfg = WriterConfig::new(format, precision, link);
                        let bytes = to_bytes(cfg, &packets).unwrap();
                        let records = read_all(&bytes).unwrap();
                        assert_eq!(records.len(), packets.len(), "{cfg:?}");
                        for (r, p) in records.iter().zip(&packets) {
                            assert_eq!(r.link.0, i32::from(link.code()));
                            let want_ts =
                                if precision == TsPrecision::Micro { p.ts_ns / 1_000 * 1_000 } else { p.ts_ns };
                            assert_eq!(r.ts_ns, want_ts, "{cfg:?}");
                            assert_eq!(r.orig_len as usize, r.data.len());
                            check_record(r, p, link, v6);
                        }
                    }
                }
            }
        }
    }

    fn check_record(r: &Record, p: &Packet, link: LinkType, v6: bool) {
        // pcap-parser knows 101 but not the 12/14 aliases; those carry plain IP too.
        let l3 = match link {
            LinkType::RawDlt12 | LinkType::RawDlt14 => r.data.clone(),
            _ => match get_packetdata(&r.data, r.link, r.data.len()).expect("link header decodes") {
                PacketData::L2(eth) => {
                    assert_eq!(link, LinkType::Ethernet);
                    let et = u16::from_be_bytes([eth[12], eth[13]]);
                    assert_eq!(et, if v6 { 0x86dd } else { 0x0800 });
                    eth[14..].to_vec()
                }
                PacketData::L3(et, ip) => {
                    assert_eq!(et, if v6 { 0x86dd } else { 0x0800 }, "{link:?}");
                    ip.to_vec()
                }
                other => panic!("{link:?}: {other:?}"),
            },
        };
        let sliced = SlicedPacket::from_ip(&l3).expect("IP/TCP parse");
        match (&sliced.net, v6) {
            (Some(NetSlice::Ipv4(ip)), false) => {
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
            }
            (Some(NetSlice::Ipv6(_)), true) => {}
            other => panic!("unexpected network layer {other:?}"),
        }
        let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else { panic!("not TCP") };
        assert_eq!(tcp.sequence_number(), p.seq);
        assert_eq!(tcp.acknowledgment_number(), p.ack);
        assert_eq!(tcp.payload(), &p.payload[..]);
        let header = tcp.to_header();
        let sum = match (p.src.ip(), p.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => header.calc_checksum_ipv4_raw(s.octets(), d.octets(), tcp.payload()),
            (IpAddr::V6(s), IpAddr::V6(d)) => header.calc_checksum_ipv6_raw(s.octets(), d.octets(), tcp.payload()),
            _ => unreachable!(),
        }
        .unwrap();
        assert_eq!(header.checksum, sum, "TCP checksum");
        if p.flags.syn() {
            assert_eq!(header.options.len(), 8);
        }
    }

    #[test]
    fn snaplen_and_truncated_payload_keep_original_length() {
        let mut packets = sample_packets(false);
        let big = packets.iter().position(|p| p.payload.len() > 200).unwrap();
        perturb::truncate_captured(&mut packets, big, 10).unwrap();
        for format in [FileFormat::Pcap, FileFormat::PcapNg] {
            let cfg = WriterConfig { snaplen: 96, ..WriterConfig::new(format, TsPrecision::Nano, LinkType::LinuxSll2) };
            let records = read_all(&to_bytes(cfg, &packets).unwrap()).unwrap();
            for (r, p) in records.iter().zip(&packets) {
                let full = 20 + 20 + if p.flags.syn() { 8 } else { 0 } + 20 + p.payload.len();
                assert_eq!(r.orig_len as usize, full);
                assert!(r.data.len() <= 96);
            }
            let r = &records[big];
            assert_eq!(r.data.len(), 20 + 20 + 20 + 10, "payload truncation below the snaplen");
        }
    }

    #[test]
    fn corrupt_files_fail_to_parse() {
        let packets = sample_packets(false);
        for format in [FileFormat::Pcap, FileFormat::PcapNg] {
            let cfg = WriterConfig::new(format, TsPrecision::Micro, LinkType::Ethernet);
            let good = to_bytes(cfg, &packets).unwrap();
            for c in [
                Corruption::BadMagic,
                Corruption::AbsurdRecordLength { record: 3 },
                Corruption::TruncatedRecord { record: 5 },
            ] {
                let bad = corrupt_bytes(cfg, &packets, c).unwrap();
                assert_ne!(bad, good);
                let parsed = read_all(&bad);
                let complete = parsed.as_ref().is_ok_and(|r| r.len() == packets.len());
                assert!(!complete, "{format:?} {c:?} must not parse cleanly");
            }
            let bad = corrupt_bytes(cfg, &packets, Corruption::CaplenExceedsOrigLen { record: 2 }).unwrap();
            assert_eq!(bad.len(), good.len());
            assert!(matches!(
                corrupt_bytes(cfg, &packets, Corruption::TruncatedRecord { record: 10_000 }),
                Err(PcapError::NoSuchRecord { .. })
            ));
        }
    }

    #[test]
    fn link_types_parse_from_names() {
        for l in LinkType::ALL {
            assert_eq!(l.name().parse::<LinkType>().unwrap(), l);
            assert_eq!(l.code().to_string().parse::<LinkType>().unwrap(), l);
        }
        assert!("token-ring".parse::<LinkType>().is_err());
    }

    #[test]
    fn a_written_capture_reads_back_into_the_same_packets() {
        let mut packets = sample_packets(false);
        perturb::truncate_captured(&mut packets, 3, 10).unwrap();
        let dir = std::env::temp_dir().join(format!("ollama-tracer-readback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (format, link) in [(FileFormat::Pcap, LinkType::Ethernet), (FileFormat::PcapNg, LinkType::LinuxSll2)] {
            let path = dir.join(format!("{}.cap", link.name()));
            write_file(&path, WriterConfig::new(format, TsPrecision::Nano, link), &packets).unwrap();
            let back = read_packets(&path, &[11434]).unwrap();
            assert_eq!(back.len(), packets.len());
            for (b, p) in back.iter().zip(&packets) {
                assert_eq!(
                    (b.ts_ns, b.src, b.dst, b.seq, b.ack, b.flags),
                    (p.ts_ns, p.src, p.dst, p.seq, p.ack, p.flags)
                );
                assert_eq!((b.payload.len(), b.captured_len()), (p.payload.len(), p.captured_len()));
                assert_eq!(b.payload[..b.captured_len()], p.payload[..p.captured_len()]);
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
