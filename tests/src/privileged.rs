//! Tests that need root (eBPF, libpcap, network namespaces, cgroups): the one place that says
//! whether they can run here and, when they cannot, says so loudly.
//!
//! CI runs as root, so there every privileged test runs; a skip is only for a developer's
//! unprivileged `cargo test`, and it is printed on the real stderr (libtest does not capture
//! direct writes) so it is seen without `--nocapture`.

use std::io::Write;
use std::sync::{Mutex, MutexGuard};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Prints `*** SKIPPED: <test>: <why> ***` where it is seen.
pub fn skipped(test: &str, why: &str) {
    let _ = std::io::stderr().write_all(format!("*** SKIPPED: {test}: {why} ***\n").as_bytes());
}

/// Whether `test` can run: true as root; otherwise it says `SKIPPED: … not root` loudly.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    skipped(test, "not root");
    false
}

/// Privileged tests run one at a time. They could share the machine (each has its own ports,
/// namespaces and cgroups), but their timing checks (2 ms) should not compete with each other
/// for the two cores, and some watch host-wide state (leftover programs, links).
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
