//! `ollama-tracer check`: what this host offers the live capture, which backend `run` would
//! use and why, and what is missing for eBPF. Reads only `/proc`, `/sys` and rlimits; loads
//! nothing.

use std::fmt;
use std::path::Path;

use super::config::{Backend, CaptureConfig, CaptureMode, EbpfAttach};
use super::ebpf;
use super::mounts::{Mount, find_mount};
use super::tls::kernel;

/// Linux capability numbers.
pub mod cap {
    pub const NET_ADMIN: u32 = 12;
    pub const NET_RAW: u32 = 13;
    pub const SYS_ADMIN: u32 = 21;
    pub const PERFMON: u32 = 38;
    pub const BPF: u32 = 39;
}

/// The effective capabilities that matter for capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `CapEff` from `/proc/self/status`.
    pub effective: u64,
}

impl Capabilities {
    /// Reads `CapEff` of this process; all-zero when it cannot be read.
    pub fn current() -> Capabilities {
        let effective = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| parse_cap_eff(&s)).unwrap_or(0);
        Capabilities { effective }
    }

    pub fn has(self, cap: u32) -> bool {
        cap < 64 && self.effective & (1u64 << cap) != 0
    }
    pub fn bpf(self) -> bool {
        self.has(cap::BPF)
    }
    pub fn perfmon(self) -> bool {
        self.has(cap::PERFMON)
    }
    pub fn net_admin(self) -> bool {
        self.has(cap::NET_ADMIN)
    }
    pub fn net_raw(self) -> bool {
        self.has(cap::NET_RAW)
    }
    pub fn sys_admin(self) -> bool {
        self.has(cap::SYS_ADMIN)
    }
    /// May create BPF maps and load programs (CAP_BPF, or CAP_SYS_ADMIN which implies it).
    pub fn can_bpf(self) -> bool {
        self.bpf() || self.sys_admin()
    }
    /// May load programs that read packet data with the verifier's full budget: without
    /// CAP_PERFMON (or CAP_SYS_ADMIN) the verifier refuses ours as too complex.
    pub fn can_trace(self) -> bool {
        self.perfmon() || self.sys_admin()
    }
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// `RLIMIT_MEMLOCK`; `None` = unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memlock {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

fn memlock() -> Option<Memlock> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return None;
    }
    let conv = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY { None } else { Some(v) }
    };
    Some(Memlock { soft: conv(r.rlim_cur), hard: conv(r.rlim_max) })
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// `(major, minor)` of a release string like "6.18.0-foo".
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// What the host offers.
#[derive(Clone, Debug)]
pub struct CheckReport {
    pub kernel_release: String,
    pub kernel_version: Option<(u32, u32)>,
    /// `/sys/kernel/btf/vmlinux` exists (the capture programs do not need it; reported for
    /// diagnosis).
    pub btf: bool,
    pub euid: u32,
    pub caps: Capabilities,
    pub cgroup2: Option<Mount>,
    pub tracefs: Option<Mount>,
    pub memlock: Option<Memlock>,
    /// `Ok` when the eBPF object is embedded in this binary, else why not.
    pub ebpf_built_in: Result<(), &'static str>,
    /// Which capture `run --capture auto` would use, and why.
    pub planned: (Backend, String),
    /// Whether the TLS uprobes can run here (with the eBPF capture), else why not.
    pub tls: Result<(), String>,
}

/// Kernel needed by the eBPF capture: the BPF ring buffer (5.8); below it, cgroup bpf links
/// (5.7), bounded loops (5.3) and global data (5.2) come earlier still.
pub const MIN_KERNEL_EBPF: (u32, u32) = (5, 8);
/// TCX links (only for [`EbpfAttach::Tcx`]).
pub const MIN_KERNEL_TCX: (u32, u32) = (6, 6);

/// The oldest kernel `attach` works on, and what it brings.
pub fn kernel_requirement(attach: &EbpfAttach) -> ((u32, u32), &'static str) {
    match attach {
        EbpfAttach::Tcx(_) => (MIN_KERNEL_TCX, "TCX links"),
        _ => (MIN_KERNEL_EBPF, "the BPF ring buffer"),
    }
}

impl CheckReport {
    /// Looks at this host, with the default capture configuration.
    pub fn gather() -> CheckReport {
        Self::gather_for(&CaptureConfig::default())
    }

    /// Looks at this host for `config`.
    pub fn gather_for(config: &CaptureConfig) -> CheckReport {
        let kernel_release = kernel_release();
        let mut r = CheckReport {
            kernel_version: parse_kernel_version(&kernel_release),
            kernel_release,
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            // SAFETY: geteuid has no preconditions.
            euid: unsafe { libc::geteuid() },
            caps: Capabilities::current(),
            cgroup2: find_mount("cgroup2"),
            tracefs: find_mount("tracefs"),
            memlock: memlock(),
            ebpf_built_in: ebpf::object().map(|_| ()),
            planned: (Backend::Pcap, String::new()),
            tls: Ok(()),
        };
        r.tls = r.tls_readiness();
        r.planned = plan(CaptureMode::Auto, config, &r);
        r
    }

    /// What keeps the eBPF capture from running with `config` (empty = nothing known).
    pub fn missing_for_ebpf(&self, config: &CaptureConfig) -> Vec<String> {
        let mut m = Vec::new();
        if let Err(why) = self.ebpf_built_in {
            m.push(format!("eBPF object not built in ({why})"));
        }
        if let Some(old) = self.kernel_too_old(&config.ebpf_attach) {
            m.push(old);
        }
        if !self.caps.can_bpf() {
            m.push("no CAP_BPF".to_owned());
        }
        if !self.caps.can_trace() {
            m.push("no CAP_PERFMON".to_owned());
        }
        if !self.caps.net_admin() {
            m.push("no CAP_NET_ADMIN".to_owned());
        }
        if config.ebpf_attach == EbpfAttach::CgroupRoot && self.cgroup2.is_none() {
            m.push("no cgroup v2 hierarchy mounted".to_owned());
        }
        m
    }

    /// Why this kernel is too old for `attach`, if it is ("kernel 5.4.0 older than 5.8 (the BPF
    /// ring buffer)"). An unreadable version is not held against it: loading will tell.
    pub fn kernel_too_old(&self, attach: &EbpfAttach) -> Option<String> {
        let (min, what) = kernel_requirement(attach);
        let v = self.kernel_version?;
        (v < min).then(|| format!("kernel {} older than {}.{} ({what})", self.kernel_release, min.0, min.1))
    }

    /// What the TLS uprobes need besides the eBPF capture: the kernel's BTF (socket offsets),
    /// tracefs (system-call and exec tracepoints) and CAP_SYS_ADMIN (`perf_event_open` of a
    /// uprobe asks for it, CAP_PERFMON is not enough here).
    fn tls_readiness(&self) -> Result<(), String> {
        let mut missing = Vec::new();
        if let Err(e) = kernel::running_kernel() {
            missing.push(format!("no socket offsets ({e})"));
        }
        if self.tracefs.is_none() {
            missing.push("tracefs not mounted (no sockets for memory BIOs, no exec events)".to_owned());
        }
        if !self.caps.sys_admin() {
            missing.push("no CAP_SYS_ADMIN (uprobes)".to_owned());
        }
        if missing.is_empty() { Ok(()) } else { Err(missing.join(", ")) }
    }

    /// Whether the eBPF capture should start here (default configuration).
    pub fn ok_for_ebpf(&self) -> bool {
        self.missing_for_ebpf(&CaptureConfig::default()).is_empty()
    }

    /// Whether the libpcap fallback should start here.
    pub fn ok_for_pcap(&self) -> bool {
        self.caps.net_raw()
    }

    /// For scripts: 0 = eBPF capture possible, 2 = only the pcap fallback, 1 = no live capture.
    pub fn exit_code(&self) -> i32 {
        if self.ok_for_ebpf() {
            0
        } else if self.ok_for_pcap() {
            2
        } else {
            1
        }
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let meets = |min: (u32, u32)| match self.kernel_version {
            Some(v) if v >= min => "yes",
            Some(_) => "NO",
            None => "unknown",
        };
        writeln!(
            f,
            "kernel:          {} (eBPF capture needs {}.{}: {}; TCX needs {}.{}: {}; libpcap: any)",
            self.kernel_release,
            MIN_KERNEL_EBPF.0,
            MIN_KERNEL_EBPF.1,
            meets(MIN_KERNEL_EBPF),
            MIN_KERNEL_TCX.0,
            MIN_KERNEL_TCX.1,
            meets(MIN_KERNEL_TCX)
        )?;
        writeln!(f, "BTF:             {}", if self.btf { "/sys/kernel/btf/vmlinux" } else { "absent" })?;
        writeln!(f, "euid:            {}", self.euid)?;
        let c = self.caps;
        writeln!(
            f,
            "capabilities:    CAP_BPF {}, CAP_PERFMON {}, CAP_NET_ADMIN {}, CAP_NET_RAW {}, CAP_SYS_ADMIN {} (CapEff {:016x})",
            yes(c.bpf()),
            yes(c.perfmon()),
            yes(c.net_admin()),
            yes(c.net_raw()),
            yes(c.sys_admin()),
            c.effective
        )?;
        match &self.cgroup2 {
            Some(m) if m.root == "/" => writeln!(f, "cgroup v2:       {}", m.mount_point.display())?,
            Some(m) => writeln!(
                f,
                "cgroup v2:       {} (shows subtree {} only: other containers' sockets are not seen)",
                m.mount_point.display(),
                m.root
            )?,
            None => writeln!(f, "cgroup v2:       not mounted")?,
        }
        match &self.tracefs {
            Some(m) => writeln!(f, "tracefs:         {}", m.mount_point.display())?,
            None => writeln!(f, "tracefs:         not mounted (not needed by the capture)")?,
        }
        let fmt_lim = |v: Option<u64>| v.map_or("unlimited".to_owned(), |v| format!("{} KiB", v / 1024));
        match self.memlock {
            Some(m) => writeln!(
                f,
                "memlock:         soft {}, hard {}{}",
                fmt_lim(m.soft),
                fmt_lim(m.hard),
                if self.kernel_version.is_some_and(|v| v >= (5, 11)) {
                    " (not used for BPF memory since 5.11)"
                } else {
                    ""
                }
            )?,
            None => writeln!(f, "memlock:         unknown")?,
        }
        match self.ebpf_built_in {
            Ok(()) => writeln!(f, "eBPF object:     built in")?,
            Err(why) => writeln!(f, "eBPF object:     not built in ({why})")?,
        }
        writeln!(f, "capture:         {}", self.planned.1)?;
        match &self.tls {
            Ok(()) => writeln!(f, "TLS uprobes:     ready (OpenSSL, BoringSSL, Go crypto/tls)")?,
            Err(why) => writeln!(f, "TLS uprobes:     unavailable: {why}")?,
        }
        let missing = self.missing_for_ebpf(&CaptureConfig::default());
        if missing.is_empty() {
            write!(f, "eBPF:            ready")
        } else {
            write!(f, "eBPF missing:    {}", missing.join("; "))
        }
    }
}

/// Which backend `run` would use and why, from the [`CheckReport`] alone (nothing is loaded).
pub fn plan(mode: CaptureMode, config: &CaptureConfig, report: &CheckReport) -> (Backend, String) {
    let pcap_where = pcap_where(config);
    match mode {
        CaptureMode::Pcap => (Backend::Pcap, format!("pcap on {pcap_where}: requested")),
        CaptureMode::Ebpf => (Backend::Ebpf, format!("eBPF: {} (requested)", ebpf_where(config, report))),
        CaptureMode::Auto => {
            let missing = report.missing_for_ebpf(config);
            if missing.is_empty() {
                (Backend::Ebpf, format!("eBPF: {}", ebpf_where(config, report)))
            } else {
                (Backend::Pcap, format!("pcap on {pcap_where}: eBPF unavailable: {}", missing.join(", ")))
            }
        }
    }
}

pub(crate) fn pcap_where(config: &CaptureConfig) -> String {
    if config.pcap_interfaces.is_empty() { "any".to_owned() } else { config.pcap_interfaces.join(",") }
}

fn ebpf_where(config: &CaptureConfig, report: &CheckReport) -> String {
    match &config.ebpf_attach {
        EbpfAttach::CgroupRoot => match &report.cgroup2 {
            Some(m) => format!("cgroup_skb on {}", m.mount_point.display()),
            None => "cgroup_skb on the cgroup v2 root (not mounted)".to_owned(),
        },
        EbpfAttach::Cgroup(p) => format!("cgroup_skb on {}", p.display()),
        EbpfAttach::Tcx(ifaces) => format!("TCX on {}", ifaces.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_caps_and_versions() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let caps = Capabilities { effective: parse_cap_eff(status).unwrap() };
        assert!(caps.bpf() && caps.perfmon() && caps.net_admin() && caps.net_raw() && caps.sys_admin());
        let none = Capabilities { effective: parse_cap_eff("CapEff:\t0000000000003000\n").unwrap() };
        assert!(!none.can_bpf() && none.net_admin() && none.net_raw());
        assert_eq!(parse_kernel_version("6.18.0-rc1+"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.8"), Some((5, 8)));
        assert_eq!(parse_kernel_version("x"), None);
    }

    #[test]
    fn report_displays_and_plans() {
        let r = CheckReport::gather();
        let text = r.to_string();
        println!("{text}\nexit code {}", r.exit_code());
        assert!(text.contains("kernel:"), "{text}");
        assert!(text.contains("capture:"), "{text}");
        // Without privileges the plan must name the reason.
        let mut unpriv = r.clone();
        unpriv.caps = Capabilities { effective: 0 };
        let (b, why) = plan(CaptureMode::Auto, &CaptureConfig::default(), &unpriv);
        assert_eq!(b, Backend::Pcap);
        assert!(why.starts_with("pcap on any: eBPF unavailable:") && why.contains("no CAP_BPF"), "{why}");
        assert_eq!(unpriv.exit_code(), 1);
        // An old kernel: the fallback says why; TCX asks for a newer one than cgroup_skb.
        let mut old = r.clone();
        old.kernel_release = "5.4.0-150-generic".into();
        old.kernel_version = parse_kernel_version(&old.kernel_release);
        let (b, why) = plan(CaptureMode::Auto, &CaptureConfig::default(), &old);
        assert_eq!(b, Backend::Pcap);
        assert!(why.contains("kernel 5.4.0-150-generic older than 5.8 (the BPF ring buffer)"), "{why}");
        let mut six_one = r.clone();
        six_one.kernel_version = Some((6, 1));
        let tcx = EbpfAttach::Tcx(vec!["lo".into()]);
        assert!(six_one.kernel_too_old(&EbpfAttach::CgroupRoot).is_none());
        assert!(six_one.kernel_too_old(&tcx).is_some_and(|w| w.contains("older than 6.6 (TCX links)")));
        assert!(six_one.to_string().contains("TCX needs 6.6: NO"), "{six_one}");
        // CAP_BPF and CAP_NET_ADMIN without CAP_PERFMON: the verifier would refuse the programs.
        let mut no_perfmon = r.clone();
        no_perfmon.caps = Capabilities { effective: (1 << cap::BPF) | (1 << cap::NET_ADMIN) };
        assert!(no_perfmon.missing_for_ebpf(&CaptureConfig::default()).contains(&"no CAP_PERFMON".to_string()));
    }
}
