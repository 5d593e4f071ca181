//! ollama-tracer kernel programs, on what they share (`base.rs`: maps, counters, skb reads):
//! packet capture (`capture.rs`; bodies it need not copy, `skip.rs`), the processes behind
//! sockets (`sock.rs`), and TLS plaintext from uprobes on TLS libraries (`tls.rs`: the probes and the
//! records; `tls_state.rs`: the maps they share; `tls_host.rs`: which sessions are traced;
//! `tls_sock.rs`: their sockets and events).
//! Built only for the BPF target (by `tracer-user/build.rs` through aya-build); on the host
//! this is an empty binary.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod base;
#[cfg(target_arch = "bpf")]
mod capture;
#[cfg(target_arch = "bpf")]
mod skip;
#[cfg(target_arch = "bpf")]
mod sock;
#[cfg(target_arch = "bpf")]
mod tls;
#[cfg(target_arch = "bpf")]
mod tls_host;
#[cfg(target_arch = "bpf")]
mod tls_sock;
#[cfg(target_arch = "bpf")]
mod tls_state;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
