//! Capture files and packets: recorded pcap/pcapng files ([`file`]) and link-layer frames
//! decoded into [`Segment`](crate::segment::Segment)s ([`packet`]). Live capture back-ends
//! (eBPF, libpcap) live in the daemon and produce the same segments.

pub mod file;
pub mod packet;

use self::packet::{Decoded, PacketError};

/// Counters of the capture stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames read.
    pub frames: u64,
    /// TCP segments on the server ports.
    pub packets: u64,
    /// TCP payload bytes of those segments (captured).
    pub payload_bytes: u64,
    /// Frames that were not TCP on a server port.
    pub ignored: u64,
    /// Frames whose headers could not be decoded.
    pub malformed: u64,
    /// Frames of a link type we do not decode, or without a timestamp.
    pub unsupported: u64,
    /// IP fragments (not reassembled).
    pub fragments: u64,
    /// Files whose last record was cut short.
    pub truncated_files: u64,
    /// Packets the kernel or capture library reported lost (live capture).
    pub kernel_drops: u64,
}

impl CaptureStats {
    /// Counts one frame's decoding outcome.
    pub fn count(&mut self, result: &Result<Decoded<'_>, PacketError>) {
        self.frames += 1;
        match result {
            Ok(Decoded::Segment(seg)) => {
                self.packets += 1;
                self.payload_bytes += seg.payload.len() as u64;
            }
            Ok(Decoded::Ignored) => self.ignored += 1,
            Err(PacketError::Fragment) => self.fragments += 1,
            Err(_) => self.malformed += 1,
        }
    }
}
