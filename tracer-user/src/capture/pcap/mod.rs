//! The libpcap fallback: live capture on `any` (Linux cooked v2 headers) or on chosen
//! interfaces, filtered in the kernel by a classic BPF filter ([`filter`]: the server ports, one
//! copy of a loopback packet, no pure ACKs), read without blocking through tokio's `AsyncFd`,
//! decoded by [`packet::decode`] (the same decoder as file replay) into [`SegmentBatch`]es.
//!
//! Each handle is opened nonblocking with nanosecond timestamps, a large kernel buffer and the
//! configured snap length (262 144 by default: TSO/GRO packets on `lo` reach 64 KiB and more).
//! Not in immediate mode: libpcap then uses TPACKET_V2, whose ring has one fixed slot per
//! packet sized for the snap length — 64 MiB held 128 packets, and 1 000 streams overflowed it
//! in a millisecond. TPACKET_V3 packs packets by their length into blocks the kernel hands over
//! when full or [`BLOCK_TIMEOUT_MS`] after their first packet, which bounds the added latency.
//! Readiness comes from the selectable fd and reads stop at the first "no packet".
//!
//! Duplicates: the filter refuses the outgoing copy of a loopback packet in the kernel (libpcap
//! would drop it only after copying it), so a localhost packet is seen once. A packet that
//! crosses two captured interfaces (say a veth pair end and a bridge) is seen once per
//! interface; reassembly dedups by sequence number.

pub mod filter;

use std::future::poll_fn;
use std::os::fd::{AsRawFd, RawFd};
use std::task::Poll;

use pcap::{Active, Capture, Precision};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use tracer_core::capture::packet::{self, Decoded, LinkType};
use tracer_core::segment::{Orientation, SegmentBatch, Timestamp};

use super::config::{CaptureConfig, CaptureError};
use super::counters::PcapCounters;

const LINKTYPE_LINUX_SLL2: i32 = 276;

/// How long a TPACKET_V3 block waits for more packets before the kernel hands it over: what a
/// packet may wait in the ring when traffic is light.
pub const BLOCK_TIMEOUT_MS: i32 = 5;

struct Handle {
    name: String,
    link: LinkType,
    fd: AsyncFd<ActiveFd>,
    stats_base: (u64, u64, u64),
}

/// `Capture<Active>` with its selectable fd, for `AsyncFd`.
struct ActiveFd(Capture<Active>);

impl AsRawFd for ActiveFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A running libpcap capture. Must be started inside a tokio runtime.
pub struct PcapCapture {
    handles: Vec<Handle>,
    orientation: Orientation,
    max_segments: usize,
    max_bytes: usize,
    /// Largest frame, reserved in the batch before each read.
    snaplen: usize,
    counters: PcapCounters,
    /// Round-robin start, so one busy interface cannot starve the others.
    next: usize,
    description: String,
}

fn pcap_err(interface: &str) -> impl Fn(pcap::Error) -> CaptureError + '_ {
    move |source| CaptureError::Pcap { interface: interface.to_owned(), source }
}

fn open(interface: &str, config: &CaptureConfig) -> Result<Handle, CaptureError> {
    let err = pcap_err(interface);
    let filter = filter::for_live(&config.ports, filter::loopback_of(interface));
    let cap = Capture::from_device(interface)
        .map_err(&err)?
        .snaplen(config.pcap_snaplen as i32)
        .buffer_size(config.pcap_buffer_bytes.min(i32::MAX as u32) as i32)
        .precision(Precision::Nano)
        .immediate_mode(false)
        .timeout(BLOCK_TIMEOUT_MS)
        .promisc(false)
        .open()
        .map_err(&err)?;
    let mut cap = cap.setnonblock().map_err(&err)?;
    if interface == "any" {
        // Cooked v2 carries the interface index; libpcap defaults to v1 on `any`.
        let _ = cap.set_datalink(pcap::Linktype(LINKTYPE_LINUX_SLL2));
    }
    cap.filter(&filter, true).map_err(&err)?;
    let dlt = cap.get_datalink().0;
    let link = LinkType::from_linktype(dlt).ok_or(CaptureError::LinkType(dlt))?;
    let mut h = Handle {
        name: interface.to_owned(),
        link,
        // SAFETY: the pcap handle owns its fd and keeps it open and unchanged until dropped
        // together with the AsyncFd.
        fd: unsafe { AsyncFd::register_with_interest(ActiveFd(cap), Interest::READABLE) }
            .map_err(|e| CaptureError::Io(e.into_parts().1))?,
        stats_base: (0, 0, 0),
    };
    // Packets that arrived before the filter was set are not ours to count.
    if let Ok(s) = h.fd.get_mut().0.stats() {
        h.stats_base = (s.received as u64, s.dropped as u64, s.if_dropped as u64);
    }
    Ok(h)
}

impl PcapCapture {
    /// Opens a handle on each configured interface (`any` when none).
    pub fn start(config: &CaptureConfig) -> Result<PcapCapture, CaptureError> {
        config.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(CaptureError::Config("PcapCapture::start must run inside a tokio runtime".into()));
        }
        let names: Vec<String> =
            if config.pcap_interfaces.is_empty() { vec!["any".to_owned()] } else { config.pcap_interfaces.clone() };
        let mut handles = Vec::with_capacity(names.len());
        for n in &names {
            handles.push(open(n, config)?);
        }
        let description = format!(
            "pcap on {} (kernel filter: TCP on ports {:?}, segments with data, SYN, FIN or RST, loopback once)",
            names.join(","),
            config.ports
        );
        Ok(PcapCapture {
            handles,
            orientation: Orientation::new(&config.ports),
            max_segments: config.max_batch_segments,
            max_bytes: config.max_batch_bytes,
            snaplen: config.pcap_snaplen as usize,
            counters: PcapCounters::default(),
            next: 0,
            description,
        })
    }

    /// Clears `batch` and fills it with at least one segment, waiting until one arrives.
    pub async fn next_batch(&mut self, batch: &mut SegmentBatch) -> Result<(), CaptureError> {
        batch.clear();
        loop {
            let PcapCapture { handles, orientation, max_segments, max_bytes, snaplen, counters, next, .. } = self;
            let n = handles.len();
            if n == 0 {
                return Err(CaptureError::Closed);
            }
            // Wait until some handle is readable, then drain that one.
            let idx = poll_fn(|cx| {
                for k in 0..n {
                    let i = (*next + k) % n;
                    match handles[i].fd.poll_read_ready(cx) {
                        Poll::Ready(Ok(_)) => return Poll::Ready(Ok(i)),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {}
                    }
                }
                Poll::Pending
            })
            .await?;
            *next = (idx + 1) % n;
            let h = &mut handles[idx];
            let link = h.link;
            // Ready already: this returns at once.
            let mut g = h.fd.readable_mut().await?;
            let cap = &mut g.get_inner_mut().0;
            let mut drained = false;
            while batch.is_empty() || (batch.len() < *max_segments && batch.data.len() + *snaplen <= *max_bytes) {
                let pkt = match cap.next_packet() {
                    Ok(p) => p,
                    Err(pcap::Error::TimeoutExpired) | Err(pcap::Error::NoMorePackets) => {
                        drained = true;
                        break;
                    }
                    Err(e) => {
                        return Err(CaptureError::Pcap { interface: h.name.clone(), source: e });
                    }
                };
                counters.frames += 1;
                let hdr = pkt.header;
                if hdr.caplen < hdr.len {
                    counters.truncated_frames += 1;
                }
                // With Precision::Nano, tv_usec holds nanoseconds.
                let ts = Timestamp(
                    (hdr.ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(hdr.ts.tv_usec as u64),
                );
                match packet::decode(link, pkt.data, hdr.len, ts, orientation) {
                    Ok(Decoded::Segment(seg)) => batch.push(&seg),
                    Ok(Decoded::Ignored) => {}
                    Err(_) => counters.decode_errors += 1,
                }
            }
            if drained {
                g.clear_ready();
            }
            if !batch.is_empty() {
                return Ok(());
            }
        }
    }

    /// libpcap drop counters (since start) plus our own counts.
    pub fn counters(&mut self) -> PcapCounters {
        let mut c = self.counters;
        for h in &mut self.handles {
            if let Ok(s) = h.fd.get_mut().0.stats() {
                c.received += (s.received as u64).saturating_sub(h.stats_base.0);
                c.dropped += (s.dropped as u64).saturating_sub(h.stats_base.1);
                c.if_dropped += (s.if_dropped as u64).saturating_sub(h.stats_base.2);
            }
        }
        c
    }

    /// One line: interfaces and filter.
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// Closes the handles.
    pub fn close(self) {
        drop(self);
    }
}
