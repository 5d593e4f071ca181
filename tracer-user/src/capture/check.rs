//! `ollama-tracer check`: what this host offers the live capture, which backend `run` would
//! use and why, and what is missing for eBPF. Reads only `/proc`, `/sys` and rlimits; loads
//! nothing.

use std::fmt;
use std::path::{Path, PathBuf};

use super::ebpf;
use super::live::{self, Backend, CaptureConfig, CaptureMode, EbpfAttach};

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

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    /// The mounted directory inside its filesystem: "/" unless a cgroup namespace or a bind
    /// mount shows a subtree only.
    pub root: String,
    pub fs_type: String,
}

/// First mount of `fs_type` in `/proc/self/mountinfo` (one with root "/" preferred).
pub fn find_mount(fs_type: &str) -> Option<Mount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    find_mount_in(&text, fs_type)
}

fn find_mount_in(mountinfo: &str, fs_type: &str) -> Option<Mount> {
    let mut found: Option<Mount> = None;
    for line in mountinfo.lines() {
        let Some(m) = parse_mountinfo_line(line) else {
            continue;
        };
        if m.fs_type != fs_type {
            continue;
        }
        if m.root == "/" {
            return Some(m);
        }
        found.get_or_insert(m);
    }
    found
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let root = unescape(l.nth(3)?);
    let mount_point = PathBuf::from(unescape(l.next()?));
    let fs_type = right.split(' ').next()?.to_owned();
    Some(Mount { mount_point, root, fs_type })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
}

/// Kernel needed by the eBPF capture: ring buffer (5.8), cgroup bpf links (5.7).
pub const MIN_KERNEL_EBPF: (u32, u32) = (5, 8);
/// TCX links (only for [`EbpfAttach::Tcx`]).
pub const MIN_KERNEL_TCX: (u32, u32) = (6, 6);

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
        };
        r.planned = live::plan(CaptureMode::Auto, config, &r);
        r
    }

    /// What keeps the eBPF capture from running with `config` (empty = nothing known).
    pub fn missing_for_ebpf(&self, config: &CaptureConfig) -> Vec<String> {
        let mut m = Vec::new();
        if let Err(why) = self.ebpf_built_in {
            m.push(format!("eBPF object not built in ({why})"));
        }
        let min = match config.ebpf_attach {
            EbpfAttach::Tcx(_) => MIN_KERNEL_TCX,
            _ => MIN_KERNEL_EBPF,
        };
        match self.kernel_version {
            Some(v) if v < min => m.push(format!("kernel {} older than {}.{}", self.kernel_release, min.0, min.1)),
            _ => {}
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
        writeln!(f, "kernel:          {}", self.kernel_release)?;
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
        let missing = self.missing_for_ebpf(&CaptureConfig::default());
        if missing.is_empty() {
            write!(f, "eBPF:            ready")
        } else {
            write!(f, "eBPF missing:    {}", missing.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let text = "\
22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
40 30 0:35 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
41 22 0:12 / /sys/kernel/tracing rw - tracefs nodev rw
42 22 0:13 /sub /mnt/with\\040space rw - cgroup2 cgroup2 rw
";
        let m = find_mount_in(text, "cgroup2").unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m.root, "/");
        let t = find_mount_in(text, "tracefs").unwrap();
        assert_eq!(t.mount_point, PathBuf::from("/sys/kernel/tracing"));
        let l = parse_mountinfo_line("42 22 0:13 /sub /mnt/with\\040space rw - cgroup2 cgroup2 rw").unwrap();
        assert_eq!(l.mount_point, PathBuf::from("/mnt/with space"));
        assert!(find_mount_in(text, "bpf").is_none());
        // Only a subtree mounted: still found, root reported.
        let only_sub = "42 22 0:13 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(find_mount_in(only_sub, "cgroup2").unwrap().root, "/kubepods/pod1");
        assert!(parse_mountinfo_line("garbage").is_none());
    }

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
        let (b, why) = live::plan(CaptureMode::Auto, &CaptureConfig::default(), &unpriv);
        assert_eq!(b, Backend::Pcap);
        assert!(why.starts_with("pcap on any: eBPF unavailable:") && why.contains("no CAP_BPF"), "{why}");
        assert_eq!(unpriv.exit_code(), 1);
        // CAP_BPF and CAP_NET_ADMIN without CAP_PERFMON: the verifier would refuse the programs.
        let mut no_perfmon = r.clone();
        no_perfmon.caps = Capabilities { effective: (1 << cap::BPF) | (1 << cap::NET_ADMIN) };
        assert!(no_perfmon.missing_for_ebpf(&CaptureConfig::default()).contains(&"no CAP_PERFMON".to_string()));
    }
}
