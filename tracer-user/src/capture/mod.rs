//! Capture sources. Each produces [`crate::segment::Segment`]s: recorded files here, live eBPF and
//! libpcap capture alongside.

pub mod file;
pub mod packet;

// Live capture (eBPF and libpcap), backend selection and the `check` report.
pub mod check;
pub mod ebpf;
pub mod live;
pub mod live_pcap;
