//! Live capture: configuration, errors, and the choice between the eBPF capture and the
//! libpcap fallback (`--capture auto|ebpf|pcap`).
//!
//! Both backends hand out [`SegmentBatch`]es through an async `next_batch`; a batch holds at
//! most [`CaptureConfig::max_batch_segments`] segments and about
//! [`CaptureConfig::max_batch_bytes`] payload bytes, so memory stays bounded whatever the
//! traffic.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::segment::SegmentBatch;

use super::check::{self, CheckReport};
use super::ebpf::{EbpfCapture, KernelCounters};
use super::live_pcap::{PcapCapture, PcapCounters};

/// Default Ollama port.
pub const DEFAULT_PORT: u16 = 11434;

/// Where the eBPF programs attach.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum EbpfAttach {
    /// `cgroup_skb` ingress + egress on the root of the cgroup v2 hierarchy, found in
    /// `/proc/self/mountinfo`: every socket of every network namespace on the host.
    #[default]
    CgroupRoot,
    /// `cgroup_skb` ingress + egress on this cgroup v2 directory (its subtree only).
    Cgroup(PathBuf),
    /// TCX ingress + egress on these interfaces (Ethernet-framed devices: `lo`, veth, NICs).
    /// Does not see a pod's own loopback traffic unless that pod's `lo` is listed from inside.
    Tcx(Vec<String>),
}

/// What a live capture listens for and how much it buffers.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// Server ports (at most [`tracer_common::MAX_PORTS`], none zero).
    pub ports: Vec<u16>,
    /// eBPF hook placement.
    pub ebpf_attach: EbpfAttach,
    /// eBPF ring-buffer size in bytes (rounded up to a power of two ≥ 64 KiB).
    pub ring_bytes: u32,
    /// Also capture packets without payload and without SYN/FIN/RST (pure ACKs).
    pub emit_pure_acks: bool,
    /// Skip `cgroup_skb` ingress on loopback devices (the sender's egress already carries
    /// those packets): halves the records of localhost traffic, and so the daemon's work and
    /// the ring buffer's fill. Applies only at the root of the cgroup v2 hierarchy (see
    /// [`CaptureConfig::skips_loopback_ingress`]). On by default.
    pub skip_loopback_ingress: bool,
    /// Forward the kernel programs' aya-log debug lines to `tracing` (off by default).
    pub ebpf_debug_log: bool,
    /// libpcap: interfaces to capture on; empty = `any`.
    pub pcap_interfaces: Vec<String>,
    /// libpcap snap length.
    pub pcap_snaplen: u32,
    /// libpcap kernel buffer per interface, bytes.
    pub pcap_buffer_bytes: u32,
    /// Most segments per batch.
    pub max_batch_segments: usize,
    /// Payload bytes after which a batch is handed out.
    pub max_batch_bytes: usize,
    /// Where the eBPF capture sends socket events (the processes behind connects and
    /// listens); `None`: the tracepoint is not attached.
    pub attribution: Option<crate::attribution::Attribution>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            ports: vec![DEFAULT_PORT],
            ebpf_attach: EbpfAttach::default(),
            ring_bytes: tracer_common::DEFAULT_RING_BYTES,
            emit_pure_acks: false,
            skip_loopback_ingress: true,
            ebpf_debug_log: false,
            pcap_interfaces: Vec::new(),
            pcap_snaplen: 262_144,
            pcap_buffer_bytes: 64 << 20,
            max_batch_segments: 1024,
            max_batch_bytes: 4 << 20,
            attribution: None,
        }
    }
}

impl CaptureConfig {
    /// A default configuration for these server ports.
    pub fn with_ports(ports: &[u16]) -> Self {
        CaptureConfig { ports: ports.to_vec(), ..Default::default() }
    }

    /// Whether the eBPF programs skip loopback ingress. Only attached at the cgroup root is
    /// every local sender's egress seen: attached to a subtree, a local peer outside it is seen
    /// only when its packets enter a socket inside, at ingress; TCX hooks see both directions
    /// of `lo` anyway and ignore the flag.
    pub fn skips_loopback_ingress(&self) -> bool {
        self.skip_loopback_ingress
            && match &self.ebpf_attach {
                EbpfAttach::CgroupRoot => true,
                // The DaemonSet names the host's root by where it is mounted in the pod.
                EbpfAttach::Cgroup(dir) => is_cgroup2_root(dir),
                EbpfAttach::Tcx(_) => false,
            }
    }

    /// Checks the values both backends rely on.
    pub fn validate(&self) -> Result<(), CaptureError> {
        if self.ports.is_empty() {
            return Err(CaptureError::Config("no server port configured".into()));
        }
        if self.ports.len() > tracer_common::MAX_PORTS {
            return Err(CaptureError::Config(format!(
                "{} server ports configured, at most {} allowed",
                self.ports.len(),
                tracer_common::MAX_PORTS
            )));
        }
        if self.ports.contains(&0) {
            return Err(CaptureError::Config("port 0 is not a server port".into()));
        }
        if self.max_batch_segments == 0 || self.max_batch_bytes < tracer_common::CHUNK_SIZE {
            return Err(CaptureError::Config(format!(
                "batch limits too small (need ≥ 1 segment and ≥ {} bytes)",
                tracer_common::CHUNK_SIZE
            )));
        }
        if !(64 * 1024..=1 << 30).contains(&self.ring_bytes) {
            return Err(CaptureError::Config("ring buffer must be 64 KiB ..= 1 GiB".into()));
        }
        if !(1500..=262_144).contains(&self.pcap_snaplen) {
            return Err(CaptureError::Config("pcap snap length must be 1500 ..= 262144".into()));
        }
        if let EbpfAttach::Tcx(ifaces) = &self.ebpf_attach
            && ifaces.is_empty()
        {
            return Err(CaptureError::Config("TCX attach needs at least one interface".into()));
        }
        Ok(())
    }
}

/// Everything that can go wrong starting or running a live capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("invalid capture configuration: {0}")]
    Config(String),
    #[error("eBPF capture not built in: {0}")]
    NotBuiltIn(&'static str),
    #[error("eBPF unavailable: {0}")]
    Unavailable(String),
    #[error("loading the eBPF object: {0}")]
    Load(String),
    #[error("eBPF program {program}: {detail}")]
    Program { program: &'static str, detail: String },
    #[error("eBPF map {map}: {detail}")]
    Map { map: &'static str, detail: String },
    #[error("attaching {what}: {detail}")]
    Attach { what: String, detail: String },
    #[error("pcap on {interface}: {source}")]
    Pcap { interface: String, source: pcap::Error },
    #[error("pcap: link type {0} not supported")]
    LinkType(i32),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the capture was closed")]
    Closed,
}

/// Formats an error with its `source()` chain (aya keeps the interesting part, e.g. the
/// errno or the verifier log, in the source).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

/// `--capture` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CaptureMode {
    /// eBPF when it can be loaded and attached, else libpcap.
    #[default]
    Auto,
    Ebpf,
    Pcap,
}

impl FromStr for CaptureMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(CaptureMode::Auto),
            "ebpf" => Ok(CaptureMode::Ebpf),
            "pcap" => Ok(CaptureMode::Pcap),
            _ => Err(format!("unknown capture mode `{s}` (expected auto, ebpf or pcap)")),
        }
    }
}

impl fmt::Display for CaptureMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CaptureMode::Auto => "auto",
            CaptureMode::Ebpf => "ebpf",
            CaptureMode::Pcap => "pcap",
        })
    }
}

/// Which backend a capture uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Ebpf,
    Pcap,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Ebpf => "eBPF",
            Backend::Pcap => "pcap",
        })
    }
}

/// Loss counters of a running capture, whichever the backend.
#[derive(Clone, Debug)]
pub enum LiveCounters {
    Ebpf(KernelCounters),
    Pcap(PcapCounters),
}

/// A running live capture.
pub enum LiveCapture {
    Ebpf(Box<EbpfCapture>),
    Pcap(PcapCapture),
}

impl LiveCapture {
    /// Clears `batch` and fills it with at least one segment (waits until there is one).
    pub async fn next_batch(&mut self, batch: &mut SegmentBatch) -> Result<(), CaptureError> {
        match self {
            LiveCapture::Ebpf(c) => c.next_batch(batch).await,
            LiveCapture::Pcap(c) => c.next_batch(batch).await,
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            LiveCapture::Ebpf(_) => Backend::Ebpf,
            LiveCapture::Pcap(_) => Backend::Pcap,
        }
    }

    /// One line: what is attached where.
    pub fn describe(&self) -> String {
        match self {
            LiveCapture::Ebpf(c) => c.describe(),
            LiveCapture::Pcap(c) => c.describe(),
        }
    }

    pub fn counters(&mut self) -> LiveCounters {
        match self {
            LiveCapture::Ebpf(c) => LiveCounters::Ebpf(c.kernel_counters()),
            LiveCapture::Pcap(c) => LiveCounters::Pcap(c.counters()),
        }
    }

    /// Detaches/stops the capture; dropping does the same.
    pub fn close(self) {
        match self {
            LiveCapture::Ebpf(c) => {
                c.close();
            }
            LiveCapture::Pcap(c) => c.close(),
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

/// Starts a live capture as `mode` says. `auto` tries eBPF and falls back to libpcap.
/// Returns the capture and a one-line reason, e.g. "eBPF: cgroup_skb on /sys/fs/cgroup/unified"
/// or "pcap on any: eBPF unavailable: no CAP_BPF".
pub fn start_live(mode: CaptureMode, config: &CaptureConfig) -> Result<(LiveCapture, String), CaptureError> {
    config.validate()?;
    match mode {
        CaptureMode::Ebpf => {
            let c = EbpfCapture::start(config)?;
            let reason = format!("eBPF: {}", c.describe());
            Ok((LiveCapture::Ebpf(Box::new(c)), reason))
        }
        CaptureMode::Pcap => {
            let c = PcapCapture::start(config)?;
            let reason = format!("pcap on {}: requested", pcap_where(config));
            Ok((LiveCapture::Pcap(c), reason))
        }
        CaptureMode::Auto => {
            let report = CheckReport::gather();
            let missing = report.missing_for_ebpf(config);
            let why = if missing.is_empty() {
                match EbpfCapture::start(config) {
                    Ok(c) => {
                        let reason = format!("eBPF: {}", c.describe());
                        return Ok((LiveCapture::Ebpf(Box::new(c)), reason));
                    }
                    Err(e) => chain(&e),
                }
            } else {
                format!("eBPF unavailable: {}", missing.join(", "))
            };
            let c = PcapCapture::start(config)?;
            let reason = format!("pcap on {}: {}", pcap_where(config), one_line(&why));
            Ok((LiveCapture::Pcap(c), reason))
        }
    }
}

fn one_line(s: &str) -> String {
    let first = s.lines().next().unwrap_or("");
    if first.len() > 200 { format!("{}…", &first[..first.floor_char_boundary(200)]) } else { first.to_owned() }
}

fn pcap_where(config: &CaptureConfig) -> String {
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

/// The cgroup v2 directory `EbpfAttach::CgroupRoot` resolves to.
pub(crate) fn cgroup_root() -> Result<PathBuf, CaptureError> {
    check::find_mount("cgroup2")
        .map(|m| m.mount_point)
        .ok_or_else(|| CaptureError::Unavailable("no cgroup v2 hierarchy mounted".into()))
}

/// Whether `dir` is the root of a cgroup v2 hierarchy, wherever it is mounted: a cgroup2 file
/// system whose directory is kernfs node 1. A cgroup namespace's root is a non-root cgroup and
/// has another node id.
pub(crate) fn is_cgroup2_root(dir: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; `path` is a valid C string.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut fs) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64, u32 or i32 elsewhere
    let cgroup2 = fs.f_type as i64 == CGROUP2_SUPER_MAGIC;
    cgroup2 && std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.ino() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_root_is_known_wherever_it_is_mounted() {
        assert!(!is_cgroup2_root(std::path::Path::new("/")));
        assert!(!is_cgroup2_root(std::path::Path::new("/nonexistent")));
        let Some(mount) = check::find_mount("cgroup2") else {
            println!("*** SKIPPED cgroup2 root detection: no cgroup v2 hierarchy mounted ***");
            return;
        };
        assert!(is_cgroup2_root(&mount.mount_point));
        let bound = CaptureConfig { ebpf_attach: EbpfAttach::Cgroup(mount.mount_point.clone()), ..Default::default() };
        assert!(bound.skips_loopback_ingress());
        // A child cgroup (where we may create one) is not the root.
        let child = mount.mount_point.join(format!("ollama-tracer-probe-{}", std::process::id()));
        if std::fs::create_dir(&child).is_ok() {
            let is_root = is_cgroup2_root(&child);
            let _ = std::fs::remove_dir(&child);
            assert!(!is_root);
        }
    }

    #[test]
    fn captures_can_move_to_a_task() {
        fn assert_send<T: Send>() {}
        assert_send::<LiveCapture>();
        assert_send::<EbpfCapture>();
        assert_send::<PcapCapture>();
    }

    #[test]
    fn config_validation_and_modes() {
        assert!(CaptureConfig::default().validate().is_ok());
        assert!(CaptureConfig::with_ports(&[]).validate().is_err());
        assert!(CaptureConfig::with_ports(&[0]).validate().is_err());
        let many: Vec<u16> = (1..=65).collect();
        assert!(CaptureConfig::with_ports(&many).validate().is_err());
        let tcx = CaptureConfig { ebpf_attach: EbpfAttach::Tcx(vec![]), ..Default::default() };
        assert!(tcx.validate().is_err());
        assert_eq!("auto".parse::<CaptureMode>(), Ok(CaptureMode::Auto));
        assert_eq!("pcap".parse::<CaptureMode>().unwrap().to_string(), "pcap");
        assert!("bpf".parse::<CaptureMode>().is_err());
    }
}
