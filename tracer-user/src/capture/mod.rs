//! Capture sources. Each produces [`crate::segment::Segment`]s: recorded files here, live eBPF and
//! libpcap capture alongside.

pub mod file;
pub mod packet;
