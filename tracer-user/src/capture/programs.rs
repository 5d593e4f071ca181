//! The eBPF object's programs by name, as the capture's parts (packets, sockets, TLS) load,
//! attach and detach them.

use aya::Ebpf;
use aya::programs::{CgroupSkb, ProgramError, SchedClassifier, TracePoint, UProbe};

use super::config::{CaptureError, chain};

/// Turns aya's program error into the capture's, naming the program.
pub fn prog_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> CaptureError {
    move |e| CaptureError::Program { program: name, detail: chain(&e) }
}

/// Loads program `p` (named `name`) into the kernel. A load the verifier gave up because a
/// signal reached the process (EAGAIN) is run again, as libbpf does: the packet programs take
/// the verifier a while (the blob-head scan), long enough for a signal to land in it.
pub fn load<P: LoadProgram>(p: &mut P, name: &'static str) -> Result<(), CaptureError> {
    let mut tries = 0;
    loop {
        match p.load_program() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && tries < 5 =>
            {
                tries += 1
            }
            r => return r.map_err(prog_err(name)),
        }
    }
}

/// aya's program types whose `load` takes no arguments.
pub trait LoadProgram {
    fn load_program(&mut self) -> Result<(), ProgramError>;
}

macro_rules! load_program {
    ($($t:ty),*) => {$(
        impl LoadProgram for $t {
            fn load_program(&mut self) -> Result<(), ProgramError> {
                self.load()
            }
        }
    )*};
}
load_program!(CgroupSkb, SchedClassifier, TracePoint, UProbe);

/// Program `name` of `ebpf`, as its type `P`.
pub fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, CaptureError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p =
        ebpf.program_mut(name).ok_or(CaptureError::Program { program: name, detail: "not in the object".into() })?;
    p.try_into().map_err(prog_err(name))
}
