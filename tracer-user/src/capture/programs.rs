//! The eBPF object's programs by name, as the capture's parts (packets, sockets, TLS) load,
//! attach and detach them.

use aya::Ebpf;

use super::config::{CaptureError, chain};

/// Turns aya's program error into the capture's, naming the program.
pub fn prog_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> CaptureError {
    move |e| CaptureError::Program { program: name, detail: chain(&e) }
}

/// Program `name` of `ebpf`, as its type `P`.
pub fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, CaptureError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p =
        ebpf.program_mut(name).ok_or(CaptureError::Program { program: name, detail: "not in the object".into() })?;
    p.try_into().map_err(prog_err(name))
}
