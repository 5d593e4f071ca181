//! ollama-tracer kernel programs: packet capture (`capture.rs`) and the processes behind
//! sockets (`sock.rs`). Built only for the BPF target (by
//! `tracer-user/build.rs` through aya-build); on the host this is an empty binary.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod capture;
#[cfg(target_arch = "bpf")]
mod sock;

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
