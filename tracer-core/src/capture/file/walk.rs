//! Walking the records of a pcap or pcapng file in a [`Reader`]'s buffer.

use pcap_parser::pcapng::{Block, parse_block_be, parse_block_le};

use super::reader::Reader;
use crate::capture::packet::LinkType;
use crate::segment::Timestamp;

/// Largest record we accept. libpcap's own maximum snap length is 256 KiB; anything far beyond is
/// a corrupt length field, not a packet.
pub(super) const MAX_RECORD: usize = 16 << 20;

pub(super) const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_IDB: u32 = 0x0000_0001;
const PCAPNG_SPB: u32 = 0x0000_0003;
const PCAPNG_EPB: u32 = 0x0000_0006;
const PCAPNG_OBSOLETE_PB: u32 = 0x0000_0002;

/// A frame as recorded.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub ts: Timestamp,
    /// `None` for link types we do not decode (counted by the caller).
    pub link: Option<LinkType>,
    pub data: &'a [u8],
    pub orig_len: u32,
    /// Offset of the record in its file, for messages.
    pub offset: u64,
}

/// A frame of a reader's buffer, by position: what a reader keeps of a frame it has read but
/// not yet handed out (a merge holds one per file).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Held {
    pub(super) ts: Timestamp,
    link: Option<LinkType>,
    at: usize,
    len: usize,
    orig_len: u32,
    offset: u64,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Format {
    Pcap { big_endian: bool, nanos: bool, link: Option<LinkType>, data_start: usize },
    PcapNg,
}

/// A pcap record's 16-byte header, read by hand: it is most of the file walk's cost.
#[derive(Clone, Copy)]
struct PcapRecord {
    ts_sec: u32,
    ts_frac: u32,
    caplen: usize,
    origlen: u32,
}

impl PcapRecord {
    #[inline(always)]
    fn read(head: &[u8; 16], big_endian: bool) -> Self {
        let word = |i: usize| {
            let b = [head[i], head[i + 1], head[i + 2], head[i + 3]];
            if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
        };
        PcapRecord { ts_sec: word(0), ts_frac: word(4), caplen: word(8) as usize, origlen: word(12) }
    }

    /// The fraction is less than a second in the file's unit.
    #[inline(always)]
    fn time_valid(&self, nanos: bool) -> bool {
        self.ts_frac < if nanos { 1_000_000_000 } else { 1_000_000 }
    }
}

pub(super) enum WalkError {
    Truncated { offset: u64 },
    Corrupt { offset: u64, what: String },
    Io(std::io::Error),
}

impl From<std::io::Error> for WalkError {
    fn from(e: std::io::Error) -> Self {
        WalkError::Io(e)
    }
}

#[derive(Clone, Copy)]
struct Interface {
    link: Option<LinkType>,
    /// Units per second.
    resolution: u64,
    offset_secs: i64,
}

/// Walks records of either format.
pub(super) struct Walker<'f> {
    format: Format,
    reader: Reader<'f>,
    // pcapng state, per section
    big_endian: bool,
    interfaces: Vec<Interface>,
}

impl<'f> Walker<'f> {
    pub(super) fn new(format: Format, mut reader: Reader<'f>) -> Self {
        if let Format::Pcap { data_start, .. } = format {
            reader.skip(data_start);
        }
        Walker { format, reader, big_endian: false, interfaces: Vec::new() }
    }

    /// The frame `held` refers to, as long as the reader has not moved on.
    pub(super) fn frame(&self, held: &Held) -> Frame<'_> {
        Frame {
            ts: held.ts,
            link: held.link,
            data: &self.reader.buf[held.at..held.at + held.len],
            orig_len: held.orig_len,
            offset: held.offset,
        }
    }

    /// A pcap record wholly in the buffer, valid: what [`Self::next_record`] reads for almost
    /// every record, without its result's error case (a `String` inside, so a wide value
    /// returned through memory) or a call. `None` is not the end: anything else — pcapng, a
    /// record crossing the buffer's end, a bad length or time — takes `next_record`, which
    /// reads the same record again and decides.
    #[inline(always)]
    pub(super) fn next_buffered(&mut self) -> Option<Held> {
        let Format::Pcap { big_endian, nanos, link, .. } = self.format else { return None };
        let rest = self.reader.buffered();
        let h = PcapRecord::read(rest.first_chunk()?, big_endian);
        if h.caplen > MAX_RECORD || rest.len() - 16 < h.caplen || !h.time_valid(nanos) {
            return None;
        }
        Some(self.take_pcap(h, nanos, link))
    }

    pub(super) fn next_record(&mut self) -> Result<Option<Held>, WalkError> {
        match self.format {
            Format::Pcap { big_endian, nanos, link, .. } => self.next_pcap(big_endian, nanos, link),
            Format::PcapNg => self.next_pcapng(),
        }
    }

    fn next_pcap(&mut self, big_endian: bool, nanos: bool, link: Option<LinkType>) -> Result<Option<Held>, WalkError> {
        let offset = self.reader.pos();
        let rest = self.reader.fill(16)?;
        if rest.is_empty() {
            return Ok(None);
        }
        let Some(head) = rest.first_chunk() else {
            return Err(WalkError::Truncated { offset });
        };
        let h = PcapRecord::read(head, big_endian);
        if h.caplen > MAX_RECORD {
            return Err(WalkError::Corrupt { offset, what: format!("record length {} is not a packet", h.caplen) });
        }
        if self.reader.fill(16 + h.caplen)?.len() < 16 + h.caplen {
            return Err(WalkError::Truncated { offset });
        }
        if !h.time_valid(nanos) {
            let what = format!("timestamp fraction {} out of range", h.ts_frac);
            return Err(WalkError::Corrupt { offset, what });
        }
        Ok(Some(self.take_pcap(h, nanos, link)))
    }

    /// Consumes the record `h` heads, checked and wholly in the buffer.
    #[inline(always)]
    fn take_pcap(&mut self, h: PcapRecord, nanos: bool, link: Option<LinkType>) -> Held {
        let offset = self.reader.pos();
        let at = self.reader.consume(16 + h.caplen) + 16;
        let frac_ns = if nanos { h.ts_frac as u64 } else { h.ts_frac as u64 * 1000 };
        Held {
            ts: Timestamp(h.ts_sec as u64 * 1_000_000_000 + frac_ns),
            link,
            at,
            len: h.caplen,
            orig_len: h.origlen.max(h.caplen as u32),
            offset,
        }
    }

    fn next_pcapng(&mut self) -> Result<Option<Held>, WalkError> {
        loop {
            let offset = self.reader.pos();
            let head = self.reader.fill(12)?;
            if head.is_empty() {
                return Ok(None);
            }
            if head.len() < 12 {
                return Err(WalkError::Truncated { offset });
            }
            let raw_type = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            if raw_type == PCAPNG_SHB {
                // The byte-order magic decides the endianness of this whole section.
                let bom = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
                self.big_endian = match bom {
                    0x1A2B_3C4D => false,
                    0x4D3C_2B1A => true,
                    _ => return Err(WalkError::Corrupt { offset, what: format!("bad byte-order magic {bom:#x}") }),
                };
                self.interfaces.clear();
            }
            let big_endian = self.big_endian;
            let rd = |b: &[u8]| {
                let a = [b[0], b[1], b[2], b[3]];
                if big_endian { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }
            };
            let block_type = rd(&head[0..4]);
            let total = rd(&head[4..8]) as usize;
            if total < 12 || !total.is_multiple_of(4) || total > MAX_RECORD {
                return Err(WalkError::Corrupt { offset, what: format!("block length {total} is invalid") });
            }
            if total > self.reader.fill(total)?.len() {
                return Err(WalkError::Truncated { offset });
            }
            let start = self.reader.start;
            let rest = &self.reader.buf[start..start + total];
            if rd(&rest[total - 4..total]) as usize != total {
                return Err(WalkError::Corrupt { offset, what: "block trailer length differs from header".into() });
            }
            let parsed = if big_endian { parse_block_be(rest) } else { parse_block_le(rest) };
            let corrupt = |what: &str| WalkError::Corrupt { offset, what: what.to_string() };
            // Where a frame's bytes are in the buffer.
            let at = |data: &[u8]| start + (data.as_ptr() as usize - rest.as_ptr() as usize);
            let held = match block_type {
                PCAPNG_IDB => {
                    let Ok((_, Block::InterfaceDescription(idb))) = parsed else {
                        return Err(corrupt("unreadable interface description block"));
                    };
                    let resolution =
                        idb.ts_resolution().filter(|r| *r > 0).ok_or_else(|| corrupt("invalid if_tsresol"))?;
                    self.interfaces.push(Interface {
                        link: LinkType::from_linktype(idb.linktype.0),
                        resolution,
                        offset_secs: idb.ts_offset(),
                    });
                    None
                }
                PCAPNG_EPB | PCAPNG_OBSOLETE_PB => {
                    let (if_id, ts_high, ts_low, caplen, origlen, data) = match parsed {
                        Ok((_, Block::EnhancedPacket(epb))) => {
                            (epb.if_id, epb.ts_high, epb.ts_low, epb.caplen, epb.origlen, epb.data)
                        }
                        // The obsolete Packet Block has the EPB layout with a 16-bit interface id.
                        _ if block_type == PCAPNG_OBSOLETE_PB && total >= 32 => {
                            let if_id = if big_endian {
                                u16::from_be_bytes([rest[8], rest[9]])
                            } else {
                                u16::from_le_bytes([rest[8], rest[9]])
                            } as u32;
                            let caplen = rd(&rest[20..24]);
                            (
                                if_id,
                                rd(&rest[12..16]),
                                rd(&rest[16..20]),
                                caplen,
                                rd(&rest[24..28]),
                                &rest[28..total - 4],
                            )
                        }
                        _ => return Err(corrupt("unreadable packet block")),
                    };
                    let iface = *self
                        .interfaces
                        .get(if_id as usize)
                        .ok_or_else(|| corrupt("packet for an undeclared interface"))?;
                    if caplen as usize > data.len() {
                        return Err(corrupt("captured length exceeds the block"));
                    }
                    let units = ((ts_high as u64) << 32) | ts_low as u64;
                    let ns = (units as u128 * 1_000_000_000 / iface.resolution as u128) as i128
                        + iface.offset_secs as i128 * 1_000_000_000;
                    Some(Held {
                        ts: Timestamp(ns.clamp(0, u64::MAX as i128) as u64),
                        link: iface.link,
                        at: at(data),
                        len: caplen as usize,
                        orig_len: origlen.max(caplen),
                        offset,
                    })
                }
                PCAPNG_SPB => {
                    // Simple Packet Blocks carry no timestamp: without one no span time can be
                    // right, so the frame is handed on with no link type and counted as unusable.
                    let data = &rest[12..total - 4];
                    let origlen = rd(&rest[8..12]);
                    let caplen = (origlen as usize).min(data.len());
                    Some(Held { ts: Timestamp(0), link: None, at: at(data), len: caplen, orig_len: origlen, offset })
                }
                _ => None, // section header, statistics, name resolution, custom: nothing to do
            };
            self.reader.consume(total);
            if held.is_some() {
                return Ok(held);
            }
        }
    }
}
