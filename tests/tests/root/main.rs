//! Tests that need root: the live capture back-ends (eBPF, libpcap), the live daemon against
//! real clients (over TCP and over TLS), attribution on a real kernel, live export, `top`, and
//! the static binary of `cargo xtask dist` run alone (`dist`). Each checks
//! `testkit::privileged::require_root` first (a loud `SKIPPED` without root; CI runs as root)
//! and runs one at a time (`testkit::privileged::serial`).

mod attribution;
mod check;
mod dist;
mod export_live;
mod harness;
#[macro_use]
mod live;
mod live_capture;
mod pcap_filter;
mod skip;
mod tls;
mod top;
