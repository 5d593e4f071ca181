//! Fixtures for privileged tests: cgroup v2 directories named like the kubelet's, network
//! namespaces joined by veth pairs, and processes started inside them. Everything is removed
//! by a guard's `Drop`, also when the test fails: processes are killed first (declare them
//! after the cgroups and namespaces they live in), then cgroups emptied and removed innermost
//! first, then namespaces deleted.

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rand::Rng;

pub use crate::privileged::{is_root, skipped};

/// The cgroup v2 hierarchy's mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
/// hybrid hosts).
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mount_point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// `n` random lower-case hex digits.
pub fn hex(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n).map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap()).collect()
}

/// A random pod UID (`8-4-4-4-12` hex).
pub fn pod_uid() -> String {
    format!("{}-{}-4{}-a{}-{}", hex(8), hex(4), hex(3), hex(3), hex(12))
}

/// The kubelet's (systemd driver) cgroup of a containerd container: `kubepods.slice/
/// kubepods-<qos>.slice/kubepods-<qos>-pod<uid with _>.slice/cri-containerd-<id>.scope` for the
/// `burstable` and `besteffort` classes, `kubepods.slice/kubepods-pod<uid>.slice/…` for
/// guaranteed pods (`qos` `None`).
pub fn kubelet_path(qos: Option<&str>, pod_uid: &str, container_id: &str) -> String {
    let uid = pod_uid.replace('-', "_");
    let scope = format!("cri-containerd-{container_id}.scope");
    match qos {
        Some(q) => format!("kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{uid}.slice/{scope}"),
        None => format!("kubepods.slice/kubepods-pod{uid}.slice/{scope}"),
    }
}

/// cgroup directories created for a test, removed (innermost first) on drop.
pub struct Cgroups {
    root: PathBuf,
    created: Vec<PathBuf>,
}

impl Cgroups {
    pub fn new(root: &Path) -> Cgroups {
        Cgroups { root: root.to_path_buf(), created: Vec::new() }
    }

    /// Creates `rel` (and its missing parents) under the root; returns its directory.
    pub fn create(&mut self, rel: &str) -> std::io::Result<PathBuf> {
        let mut dir = self.root.clone();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if !dir.exists() {
                fs::create_dir(&dir)?;
                self.created.push(dir.clone());
            }
        }
        Ok(dir)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            // Whatever is still inside goes back to the root first (a cgroup with processes
            // cannot be removed).
            if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines() {
                    let _ = fs::write(self.root.join("cgroup.procs"), pid);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while fs::remove_dir(dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A network namespace, deleted on drop (with the veth ends inside it).
pub struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) -> std::io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr))))
    }
}

impl Netns {
    pub fn create(tag: &str) -> std::io::Result<Netns> {
        let name = format!("ot-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A veth pair between two namespaces: `a_addr` on `a`'s end, `b_addr` on `b`'s (both
    /// /24 of the same subnet).
    pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> std::io::Result<()> {
        let id = std::process::id() % 100_000;
        let (ea, eb) = (format!("ota{id}"), format!("otb{id}"));
        ip(&["link", "add", &ea, "netns", &a.name, "type", "veth", "peer", "name", &eb, "netns", &b.name])?;
        for (ns, dev, addr) in [(a, &ea, a_addr), (b, &eb, b_addr)] {
            ip(&["-n", &ns.name, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", &ns.name, "link", "set", dev, "up"])?;
        }
        Ok(())
    }

    fn file(&self) -> std::io::Result<File> {
        File::open(format!("/var/run/netns/{}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A child process, killed on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` inside the cgroup directory `cgroup` and, if given, the network namespace
/// `netns`: the child joins both between fork and exec, so everything it does (its first
/// socket included) happens there.
pub fn spawn_in(cmd: &mut Command, cgroup: &Path, netns: Option<&Netns>) -> std::io::Result<Child> {
    let procs: OwnedFd = OpenOptions::new().write(true).open(cgroup.join("cgroup.procs"))?.into();
    let ns: Option<OwnedFd> = netns.map(|n| n.file().map(OwnedFd::from)).transpose()?;
    let (procs_fd, ns_fd) = (procs.as_raw_fd(), ns.as_ref().map(|f| f.as_raw_fd()));
    // SAFETY: the closure runs in the child between fork and exec; it only formats into a
    // stack buffer and makes system calls (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            let mut buf = [0u8; 12];
            let mut n = libc::getpid() as u32;
            let mut i = buf.len();
            loop {
                i -= 1;
                buf[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            if libc::write(procs_fd, buf[i..].as_ptr().cast(), buf.len() - i) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = ns_fd
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop((procs, ns));
    child
}

/// `CAP_SYS_PTRACE`, for [`drop_effective_capability`].
pub const CAP_SYS_PTRACE: u32 = 19;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Removes one capability from the calling thread's effective and permitted sets (Linux
/// credentials are per thread; threads it starts afterwards inherit the loss).
pub fn drop_effective_capability(cap: u32) -> std::io::Result<()> {
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = CapHeader { version: VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget/capset with a version-3 header and two data words, as the ABI requires.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, data.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        data[word].effective &= !bit;
        data[word].permitted &= !bit;
        if libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
