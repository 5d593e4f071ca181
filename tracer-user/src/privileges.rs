//! Least privilege: once the capture is attached, the tracer gives up the capabilities it no
//! longer needs, so that a bug in the code that parses other people's traffic cannot load BPF
//! programs, reconfigure the network or open raw sockets.
//!
//! Capabilities belong to threads in Linux, and a new thread inherits its creator's. The daemon
//! attaches on its main thread before it starts the pipeline, export and metrics threads, then
//! calls [`drop_after_attach`] there: every thread started afterwards has the reduced set.
//! Long-lived threads started earlier (attribution's worker, the signals thread) call
//! [`restrict_current_thread`] themselves.

use std::fmt;

use caps::{CapSet, Capability, CapsHashSet};

/// What the running daemon still needs after attaching: reading other processes'
/// `/proc/<pid>/fd` and `exe` for attribution (only when it was granted in the first place).
pub const KEPT_FOR_ATTRIBUTION: &[Capability] = &[Capability::CAP_SYS_PTRACE];

#[derive(Debug, thiserror::Error)]
#[error("cannot drop capabilities: {0}")]
pub struct PrivilegeError(String);

/// What a drop did, for the log and the tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Capabilities held (permitted) before, in kernel order.
    pub before: Vec<Capability>,
    /// Still held (permitted and effective) after.
    pub kept: Vec<Capability>,
    /// Whether the bounding set was reduced too (needs CAP_SETPCAP, which a full root has).
    pub bounding: bool,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |v: &[Capability]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" ")
            }
        };
        let dropped: Vec<Capability> = self.before.iter().filter(|c| !self.kept.contains(c)).copied().collect();
        write!(f, "dropped {} capabilities ({}); kept {}", dropped.len(), names(&dropped), names(&self.kept))?;
        if self.bounding {
            write!(f, "; bounding set reduced")?;
        }
        Ok(())
    }
}

fn sorted(set: &CapsHashSet) -> Vec<Capability> {
    let mut v: Vec<Capability> = set.iter().copied().collect();
    v.sort_by_key(|c| c.index());
    v
}

/// Reduces the calling thread to `keep` (those of them it holds): effective, permitted,
/// inheritable and ambient sets, and the bounding set when allowed to; sets `no_new_privs`, so
/// nothing executed later could gain privileges either. Dropping is always allowed, so an error
/// means the kernel refused a capability call outright (e.g. a seccomp filter).
pub fn restrict_current_thread(keep: &[Capability]) -> Result<Dropped, PrivilegeError> {
    let err = |e: caps::errors::CapsError| PrivilegeError(e.to_string());
    let permitted = caps::read(None, CapSet::Permitted).map_err(err)?;
    let keep: CapsHashSet = keep.iter().copied().filter(|c| permitted.contains(c)).collect();
    let mut bounding = false;
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).map_err(err)? {
        // As root: a later execve would otherwise get the whole bounding set back.
        for cap in caps::read(None, CapSet::Bounding).map_err(err)? {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(err)?;
                bounding = true;
            }
        }
    }
    // Ambient must stay a subset of permitted and inheritable: clear it first.
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    caps::clear(None, CapSet::Inheritable).map_err(err)?;
    caps::set(None, CapSet::Effective, &keep).map_err(err)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err)?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(PrivilegeError(format!("PR_SET_NO_NEW_PRIVS: {}", std::io::Error::last_os_error())));
    }
    let kept = caps::read(None, CapSet::Permitted).map_err(err)?;
    Ok(Dropped { before: sorted(&permitted), kept: sorted(&kept), bounding })
}

/// After the capture is attached (programs loaded and linked, ring buffer mapped, or the
/// libpcap socket open): keeps only what attribution still uses, when it is on.
pub fn drop_after_attach(attribution: bool) -> Result<Dropped, PrivilegeError> {
    restrict_current_thread(if attribution { KEPT_FOR_ATTRIBUTION } else { &[] })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a thread of its own, so the test process keeps its capabilities.
    fn in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().unwrap()
    }

    #[test]
    fn a_thread_keeps_only_what_it_asks_for_and_held() {
        let (dropped, eff, prm, amb, inh, nnp) = in_thread(|| {
            let d = restrict_current_thread(&[Capability::CAP_SYS_PTRACE]).unwrap();
            let r = |s| caps::read(None, s).unwrap();
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            let nnp = status.lines().any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1'));
            (d, r(CapSet::Effective), r(CapSet::Permitted), r(CapSet::Ambient), r(CapSet::Inheritable), nnp)
        });
        let held_ptrace = dropped.before.contains(&Capability::CAP_SYS_PTRACE);
        let want: CapsHashSet = if held_ptrace { [Capability::CAP_SYS_PTRACE].into() } else { CapsHashSet::new() };
        assert_eq!(eff, want);
        assert_eq!(prm, want);
        assert!(amb.is_empty() && inh.is_empty());
        assert!(nnp, "no_new_privs set");
        assert_eq!(dropped.kept, sorted(&want));
        if !held_ptrace {
            eprintln!("*** not root: the capability drop ran with nothing to drop ***");
        }
    }

    #[test]
    fn other_threads_are_untouched() {
        let before = caps::read(None, CapSet::Permitted).unwrap();
        in_thread(|| restrict_current_thread(&[]).unwrap());
        assert_eq!(caps::read(None, CapSet::Permitted).unwrap(), before);
    }

    #[test]
    fn the_summary_names_what_went_and_what_stayed() {
        let d = Dropped {
            before: vec![Capability::CAP_NET_ADMIN, Capability::CAP_SYS_PTRACE, Capability::CAP_BPF],
            kept: vec![Capability::CAP_SYS_PTRACE],
            bounding: false,
        };
        assert_eq!(d.to_string(), "dropped 2 capabilities (CAP_NET_ADMIN CAP_BPF); kept CAP_SYS_PTRACE");
        assert_eq!(Dropped::default().to_string(), "dropped 0 capabilities (none); kept none");
    }
}
