//! Records shared by the kernel programs (`tracer-ebpf`) and the daemon (`tracer-user`).
//! Treated as a wire format: `#[repr(C)]`, explicit sizes, asserted layout.
#![no_std]
