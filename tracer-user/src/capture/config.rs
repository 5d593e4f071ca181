//! What a live capture is asked to do (`--capture`, ports, hooks, buffers), and what can go
//! wrong starting or running one.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::mounts::{find_mount, is_cgroup2_root};
use super::socket::SocketEventSink;

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
    /// eBPF: bodies longer than this whose bytes the pipeline only counts (blob uploads,
    /// answers it does not decode) are reported by length and time, not copied into the ring
    /// buffer. `None`: every byte is copied.
    pub skip_bodies_over: Option<u64>,
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
    pub socket_events: Option<SocketEventSink>,
    /// TLS plaintext from uprobes on TLS libraries (eBPF capture only).
    pub tls: TlsConfig,
}

/// Hosts whose TLS sessions are always decoded.
pub const DEFAULT_TLS_HOSTS: [&str; 1] = ["ollama.com"];

/// `--tls`, `--tls-host`, `--tls-include-exe`, `--tls-exclude-exe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// `--tls auto`: probe the TLS libraries when the eBPF capture runs and the kernel allows
    /// (a failure is a warning, the packet capture goes on); `off`: never.
    pub enabled: bool,
    /// Hosts whose sessions are decoded besides [`DEFAULT_TLS_HOSTS`] (`*`: every host); by
    /// name or address, without port.
    pub hosts: Vec<String>,
    /// Executables whose processes are probed (glob on the path, or on the file name when
    /// the pattern has no `/`); empty: all.
    pub include_exe: Vec<String>,
    /// Executables whose processes are not probed.
    pub exclude_exe: Vec<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig { enabled: true, hosts: Vec::new(), include_exe: Vec::new(), exclude_exe: Vec::new() }
    }
}

impl TlsConfig {
    /// The hosts as the kernel compares them (lower case, no port or brackets), defaults
    /// first; `Err` names a host that can never match.
    pub fn normalized_hosts(&self) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = DEFAULT_TLS_HOSTS.iter().map(|h| h.to_string()).collect();
        for h in &self.hosts {
            let h = h.trim().to_ascii_lowercase();
            let bare = match h.strip_prefix('[') {
                Some(rest) => rest.split(']').next().unwrap_or("").to_owned(),
                None if h.matches(':').count() == 1 => h.split(':').next().unwrap_or("").to_owned(),
                None => h,
            };
            if bare.is_empty() || bare.len() >= tracer_common::tls::HOST_LEN {
                return Err(format!(
                    "--tls-host {bare:?}: a host name of 1 to {} bytes",
                    tracer_common::tls::HOST_LEN - 1
                ));
            }
            if !out.contains(&bare) {
                out.push(bare);
            }
        }
        Ok(out)
    }
}

/// Bodies shorter than this are copied whatever they are: telling the kernel to skip costs a
/// map update, about what copying a few KiB does.
pub const DEFAULT_SKIP_BODIES_OVER: u64 = 64 << 10;

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            ports: vec![DEFAULT_PORT],
            ebpf_attach: EbpfAttach::default(),
            ring_bytes: tracer_common::DEFAULT_RING_BYTES,
            emit_pure_acks: false,
            skip_loopback_ingress: true,
            ebpf_debug_log: false,
            skip_bodies_over: Some(DEFAULT_SKIP_BODIES_OVER),
            pcap_interfaces: Vec::new(),
            pcap_snaplen: 262_144,
            pcap_buffer_bytes: 64 << 20,
            max_batch_segments: 1024,
            max_batch_bytes: 4 << 20,
            socket_events: None,
            tls: TlsConfig::default(),
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
        self.tls.normalized_hosts().map_err(CaptureError::Config)?;
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

/// The cgroup v2 directory `EbpfAttach::CgroupRoot` resolves to.
pub fn cgroup_root() -> Result<PathBuf, CaptureError> {
    find_mount("cgroup2")
        .map(|m| m.mount_point)
        .ok_or_else(|| CaptureError::Unavailable("no cgroup v2 hierarchy mounted".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_root_named_by_its_mount_point_skips_loopback_ingress() {
        let Some(mount) = super::super::mounts::find_mount("cgroup2") else {
            println!("*** SKIPPED cgroup2 root detection: no cgroup v2 hierarchy mounted ***");
            return;
        };
        let bound = CaptureConfig { ebpf_attach: EbpfAttach::Cgroup(mount.mount_point.clone()), ..Default::default() };
        assert!(bound.skips_loopback_ingress());
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
        let tls =
            |hosts: &[&str]| TlsConfig { hosts: hosts.iter().map(|h| h.to_string()).collect(), ..Default::default() };
        assert_eq!(
            tls(&["Ollama.Example.com:443", "[::1]:8443", "127.0.0.1", "::1", "ollama.com"]).normalized_hosts(),
            Ok(vec!["ollama.com".into(), "ollama.example.com".into(), "::1".into(), "127.0.0.1".into()])
        );
        assert!(tls(&[""]).normalized_hosts().is_err());
        assert!(CaptureConfig { tls: tls(&[&"x".repeat(64)]), ..Default::default() }.validate().is_err());
        assert_eq!("auto".parse::<CaptureMode>(), Ok(CaptureMode::Auto));
        assert_eq!("pcap".parse::<CaptureMode>().unwrap().to_string(), "pcap");
        assert!("bpf".parse::<CaptureMode>().is_err());
    }
}
