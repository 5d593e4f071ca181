//! Live capture back-ends: the eBPF programs ([`ebpf`]) and the libpcap fallback ([`pcap`]),
//! chosen by `--capture auto|ebpf|pcap`, checked by [`check`]. Each hands out
//! [`SegmentBatch`]es through an async `next_batch`; a batch holds at most
//! [`CaptureConfig::max_batch_segments`] segments and about [`CaptureConfig::max_batch_bytes`]
//! payload bytes, so memory stays bounded whatever the traffic. Recorded files and the decoding
//! of frames are `tracer_core::capture`'s.

pub mod check;
pub mod config;
pub mod counters;
pub mod ebpf;
pub mod mounts;
pub mod pcap;
pub mod programs;
pub mod ring;
pub mod socket;
pub mod tls;

use tracer_core::segment::SegmentBatch;

use self::check::{CheckReport, pcap_where};
use self::config::chain;
pub use self::config::{
    Backend, CaptureConfig, CaptureError, CaptureMode, DEFAULT_PORT, DEFAULT_SKIP_BODIES_OVER, EbpfAttach, TlsConfig,
};
pub use self::counters::LiveCounters;
use self::ebpf::EbpfCapture;
use self::pcap::PcapCapture;

/// A running live capture.
pub enum LiveCapture {
    Ebpf(Box<EbpfCapture>),
    Pcap(PcapCapture),
}

impl LiveCapture {
    /// Clears `batch` and fills it with at least one segment (waits until there is one).
    pub async fn next_batch(&mut self, batch: &mut SegmentBatch) -> Result<(), CaptureError> {
        match self {
            LiveCapture::Ebpf(c) => c.next_batch(batch).await,
            LiveCapture::Pcap(c) => c.next_batch(batch).await,
        }
    }

    /// Clears `batch` and fills it with what is there now, without waiting: records the eBPF
    /// programs leave without a wake-up. `true` once nothing is left, `false` when the batch
    /// filled first. libpcap wakes its reader for every packet: nothing to do.
    pub fn poll_now(&mut self, batch: &mut SegmentBatch) -> bool {
        match self {
            LiveCapture::Ebpf(c) => c.poll_now(batch),
            LiveCapture::Pcap(_) => {
                batch.clear();
                true
            }
        }
    }

    /// Where the pipeline says which bodies need not be copied, and from what length (eBPF
    /// with [`CaptureConfig::skip_bodies_over`] only).
    pub fn body_skipper(&self) -> Option<(u64, std::sync::Arc<ebpf::skips::BodySkipper>)> {
        match self {
            LiveCapture::Ebpf(c) => c.body_skipper(),
            LiveCapture::Pcap(_) => None,
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            LiveCapture::Ebpf(_) => Backend::Ebpf,
            LiveCapture::Pcap(_) => Backend::Pcap,
        }
    }

    /// One line: what is attached where.
    pub fn describe(&self) -> String {
        match self {
            LiveCapture::Ebpf(c) => c.describe(),
            LiveCapture::Pcap(c) => c.describe(),
        }
    }

    pub fn counters(&mut self) -> LiveCounters {
        match self {
            LiveCapture::Ebpf(c) => LiveCounters::Ebpf(c.kernel_counters()),
            LiveCapture::Pcap(c) => LiveCounters::Pcap(c.counters()),
        }
    }

    /// Detaches/stops the capture; dropping does the same.
    pub fn close(self) {
        match self {
            LiveCapture::Ebpf(c) => {
                c.close();
            }
            LiveCapture::Pcap(c) => c.close(),
        }
    }
}

/// Starts a live capture as `mode` says. `auto` tries eBPF and falls back to libpcap.
/// Returns the capture and a one-line reason, e.g. "eBPF: cgroup_skb on /sys/fs/cgroup/unified"
/// or "pcap on any: eBPF unavailable: no CAP_BPF".
pub fn start_live(mode: CaptureMode, config: &CaptureConfig) -> Result<(LiveCapture, String), CaptureError> {
    config.validate()?;
    match mode {
        CaptureMode::Ebpf => {
            // Said plainly before the loader fails on it with an errno.
            if let Some(old) = CheckReport::gather().kernel_too_old(&config.ebpf_attach) {
                return Err(CaptureError::Unavailable(format!(
                    "{old}: use --capture pcap (any kernel){}",
                    if matches!(config.ebpf_attach, EbpfAttach::Tcx(_)) {
                        ", or --ebpf-attach cgroup (5.8)"
                    } else {
                        ""
                    }
                )));
            }
            let c = EbpfCapture::start(config)?;
            let reason = format!("eBPF: {}", c.describe());
            Ok((LiveCapture::Ebpf(Box::new(c)), reason))
        }
        CaptureMode::Pcap => {
            let c = PcapCapture::start(config)?;
            let reason = format!("pcap on {}: requested", pcap_where(config));
            Ok((LiveCapture::Pcap(c), reason))
        }
        CaptureMode::Auto => {
            let report = CheckReport::gather();
            let missing = report.missing_for_ebpf(config);
            let why = if missing.is_empty() {
                match EbpfCapture::start(config) {
                    Ok(c) => {
                        let reason = format!("eBPF: {}", c.describe());
                        return Ok((LiveCapture::Ebpf(Box::new(c)), reason));
                    }
                    Err(e) => chain(&e),
                }
            } else {
                format!("eBPF unavailable: {}", missing.join(", "))
            };
            let c = PcapCapture::start(config)?;
            let reason = format!("pcap on {}: {}", pcap_where(config), one_line(&why));
            Ok((LiveCapture::Pcap(c), reason))
        }
    }
}

fn one_line(s: &str) -> String {
    let first = s.lines().next().unwrap_or("");
    if first.len() > 200 { format!("{}…", &first[..first.floor_char_boundary(200)]) } else { first.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_can_move_to_a_task() {
        fn assert_send<T: Send>() {}
        assert_send::<LiveCapture>();
        assert_send::<EbpfCapture>();
        assert_send::<PcapCapture>();
    }
}
