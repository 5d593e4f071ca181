//! Processes from `/proc`: who a pid is (executable, command), which processes a cgroup holds,
//! and which of them owns a given socket.
//!
//! What needs which privilege (measured, see docs/attribution.md): `stat`, `comm`, `cmdline`,
//! `net/tcp{,6}` and a cgroup's `cgroup.procs` are readable by anyone; the targets of
//! `/proc/<pid>/exe` and `/proc/<pid>/fd/*` (socket inodes) need ptrace read access, i.e.
//! CAP_SYS_PTRACE for another user's process or one with capabilities we lack. Without it,
//! [`ProcFs::find_listener`] and [`ProcFs::find_connection`] answer [`Finding::NoAccess`] and
//! the caller falls back to what needs no fds (a cgroup holding a single process).
//!
//! Every read is bounded, and odd contents (a process gone mid-read, a comm with `)` or spaces,
//! non-UTF-8 arguments, truncated lines) give "unknown", never an error that stops anything.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use tracer_core::identity::ProcessInfo;
use tracer_core::segment::unmap_v4;

use tracer_core::llm::content::ContentConfig;

/// Processes of one cgroup looked at, at most.
pub const MAX_PROCS: usize = 512;
/// File descriptors of one process looked at, at most.
pub const MAX_FDS: usize = 16_384;
/// Lines of one `/proc/<pid>/net/tcp{,6}` read, at most.
pub const MAX_TCP_LINES: usize = 200_000;
/// Longest `process.command` kept, bytes.
pub const MAX_COMMAND_BYTES: usize = 256;
/// Arguments kept with `process.command_args`, and the longest one.
pub const MAX_ARGS: usize = 32;
pub const MAX_ARG_BYTES: usize = 256;
/// Bytes of `/proc/<pid>/cmdline` read.
const MAX_CMDLINE_BYTES: u64 = 16 * 1024;

/// Result of looking for a socket's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finding {
    Found(u32),
    /// Several processes hold it and none is the parent of the others.
    Ambiguous,
    /// The socket is not in the tables, or no process we could read holds it.
    NotFound,
    /// The processes' file descriptors cannot be read (no ptrace access).
    NoAccess,
}

/// One line of `/proc/<pid>/net/tcp{,6}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpEntry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

/// TCP_LISTEN in `/proc/net/tcp`'s `st` column.
const ST_LISTEN: u8 = 0x0A;

/// How arguments are cleaned when `process.command_args` is on.
#[derive(Clone, Debug)]
pub struct ArgPolicy {
    cleaner: ContentConfig,
}

impl ArgPolicy {
    /// The default redactions (tokens, API keys) plus the secret-looking-flag rules.
    pub fn new() -> ArgPolicy {
        let cleaner = ContentConfig::capturing(MAX_ARG_BYTES, true, &[]).expect("built-in patterns compile");
        ArgPolicy { cleaner }
    }

    /// Cleans `argv[1..]`: the value of a flag or variable whose name looks like a secret is
    /// replaced (`--token=…`, `--api-key …`, `PASSWORD=…`), credentials in URLs too, then the
    /// default redactions apply and each argument is cut at [`MAX_ARG_BYTES`].
    pub fn clean(&self, args: &[String]) -> Vec<String> {
        static SECRET: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"(?i)(pass(word|wd|phrase)?|secret|token|api[_-]?key|apikey|auth|cred|private[_-]?key|cookie|session|signature|access[_-]?key)")
                .expect("valid")
        });
        static URL_USERINFO: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@").expect("valid"));
        let mut out = Vec::with_capacity(args.len().min(MAX_ARGS));
        let mut redact_next = false;
        for a in args.iter().take(MAX_ARGS) {
            if std::mem::take(&mut redact_next) && !a.starts_with('-') {
                out.push("[REDACTED]".to_string());
                continue;
            }
            let a = match a.split_once('=') {
                Some((k, _)) if SECRET.is_match(k) => format!("{k}=[REDACTED]"),
                Some(_) => a.clone(),
                None => {
                    redact_next = a.starts_with('-') && SECRET.is_match(a);
                    a.clone()
                }
            };
            let a = URL_USERINFO.replace_all(&a, "${1}[REDACTED]@");
            out.push(self.cleaner.clean(&a));
        }
        out
    }
}

impl Default for ArgPolicy {
    fn default() -> Self {
        ArgPolicy::new()
    }
}

/// A procfs, normally `/proc` (tests give another root).
#[derive(Clone, Debug)]
pub struct ProcFs {
    root: PathBuf,
    /// Whether to look at other processes' file descriptors at all.
    read_fds: bool,
}

/// `stat` fields we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    pub start_ticks: u64,
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> ProcFs {
        ProcFs { root: root.into(), read_fds: true }
    }

    /// Never reads file descriptors: socket owners are then [`Finding::NoAccess`], as
    /// without CAP_SYS_PTRACE.
    pub fn without_fds(mut self) -> ProcFs {
        self.read_fds = false;
        self
    }

    fn pid_path(&self, pid: u32, rest: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(rest)
    }

    /// Parent and start time; `None` when gone or unreadable.
    pub fn stat(&self, pid: u32) -> Option<Stat> {
        let s = read_bounded(&self.pid_path(pid, "stat"), 4096)?;
        parse_stat(&s)
    }

    /// Who `pid` is. `comm_hint` is the command name the kernel reported (kept when the
    /// process is already gone). `None` when nothing at all is known.
    pub fn process(&self, pid: u32, comm_hint: Option<&str>, args: Option<&ArgPolicy>) -> Option<ProcessInfo> {
        let stat = self.stat(pid);
        let comm = read_bounded(&self.pid_path(pid, "comm"), 64)
            .map(|s| s.trim_end_matches('\n').to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| comm_hint.map(str::to_owned).filter(|s| !s.is_empty()));
        let exe = fs::read_link(self.pid_path(pid, "exe"))
            .ok()
            .and_then(|p| p.to_str().map(|s| s.trim_end_matches(" (deleted)").to_string()))
            .filter(|s| s.starts_with('/'));
        let argv = self.cmdline(pid);
        if stat.is_none() && comm.is_none() && argv.is_empty() {
            return None;
        }
        let executable_name =
            exe.as_deref().and_then(|p| Path::new(p).file_name()).and_then(|n| n.to_str()).map(str::to_owned).or(comm);
        let command = argv.first().map(|a| bounded(a, MAX_COMMAND_BYTES)).filter(|a| !a.is_empty());
        let args = args.map(|policy| policy.clean(argv.get(1..).unwrap_or_default()));
        Some(ProcessInfo {
            pid,
            start_ticks: stat.map(|s| s.start_ticks),
            executable_name,
            executable_path: exe,
            command,
            args,
        })
    }

    /// `argv`, as far as readable (non-UTF-8 bytes replaced).
    fn cmdline(&self, pid: u32) -> Vec<String> {
        let Ok(f) = fs::File::open(self.pid_path(pid, "cmdline")) else { return Vec::new() };
        let mut buf = Vec::new();
        if f.take(MAX_CMDLINE_BYTES).read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        let buf = buf.strip_suffix(b"\0").unwrap_or(&buf);
        if buf.is_empty() {
            return Vec::new();
        }
        buf.split(|b| *b == 0).take(MAX_ARGS + 1).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
    }

    /// The processes of a cgroup (its `cgroup.procs`, pids as this procfs numbers them).
    pub fn cgroup_procs(dir: &Path) -> Vec<u32> {
        let Some(s) = read_bounded(&dir.join("cgroup.procs"), 64 * 1024) else { return Vec::new() };
        s.lines().filter_map(|l| l.trim().parse::<u32>().ok()).filter(|p| *p > 0).take(MAX_PROCS).collect()
    }

    /// The TCP sockets of `pid`'s network namespace (IPv4 and IPv6 tables).
    pub fn tcp_table(&self, pid: u32) -> Vec<TcpEntry> {
        let mut out = Vec::new();
        for table in ["net/tcp", "net/tcp6"] {
            let Ok(f) = fs::File::open(self.pid_path(pid, table)) else { continue };
            let mut text = String::new();
            // A node with very many sockets: read a bounded prefix (about 150 bytes a line).
            if f.take((MAX_TCP_LINES * 160) as u64).read_to_string(&mut text).is_err() {
                continue;
            }
            out.extend(text.lines().skip(1).take(MAX_TCP_LINES).filter_map(parse_tcp_line));
        }
        out
    }

    /// Inodes of the sockets `pid` holds; `None` when its descriptors cannot be read (no
    /// ptrace access), what could be read otherwise.
    pub fn socket_inodes(&self, pid: u32) -> Option<HashSet<u64>> {
        if !self.read_fds {
            return None;
        }
        let dir = match fs::read_dir(self.pid_path(pid, "fd")) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return None,
            Err(_) => return Some(HashSet::new()),
        };
        let mut inodes = HashSet::new();
        let mut denied = false;
        let mut read_any = false;
        for e in dir.flatten().take(MAX_FDS) {
            match fs::read_link(e.path()) {
                Ok(target) => {
                    read_any = true;
                    if let Some(ino) = target.to_str().and_then(socket_inode) {
                        inodes.insert(ino);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied = true,
                Err(_) => {}
            }
        }
        if denied && !read_any { None } else { Some(inodes) }
    }

    /// Which of `pids` listens on TCP `port` (any address).
    pub fn find_listener(&self, pids: &[u32], port: u16) -> Finding {
        self.find_holder(pids, |e| e.state == ST_LISTEN && e.local.port() == port)
    }

    /// Which of `pids` holds the socket connected from `local` to `remote`.
    pub fn find_connection(&self, pids: &[u32], local: SocketAddr, remote: SocketAddr) -> Finding {
        let (local, remote) = (unmap_v4(local), unmap_v4(remote));
        self.find_holder(pids, |e| e.state != ST_LISTEN && unmap_v4(e.local) == local && unmap_v4(e.remote) == remote)
    }

    /// The process among `pids` whose descriptors hold a socket matching `want` in its
    /// namespace's table. Sockets shared by a parent and its children (pre-forking servers)
    /// are the parent's.
    fn find_holder(&self, pids: &[u32], want: impl Fn(&TcpEntry) -> bool) -> Finding {
        let pids = &pids[..pids.len().min(MAX_PROCS)];
        if pids.is_empty() {
            return Finding::NotFound;
        }
        // Namespaces are read once each; a pid whose namespace link is unreadable is assumed
        // to share the first one's (the processes of one cgroup normally do).
        let mut tables: HashMap<Option<String>, HashSet<u64>> = HashMap::new();
        let mut holders = Vec::new();
        let mut no_access = 0;
        let mut entries = 0;
        for &pid in pids {
            let ns = fs::read_link(self.pid_path(pid, "ns/net")).ok().and_then(|p| p.to_str().map(str::to_owned));
            let wanted = tables.entry(ns).or_insert_with(|| {
                let table = self.tcp_table(pid);
                entries += table.len();
                table.iter().filter(|e| want(e)).map(|e| e.inode).collect()
            });
            if wanted.is_empty() {
                continue;
            }
            match self.socket_inodes(pid) {
                Some(held) => {
                    if !held.is_disjoint(wanted) {
                        holders.push(pid);
                    }
                }
                None => no_access += 1,
            }
        }
        if entries == 0 {
            // No table could be read (a namespace with no socket at all cannot hold ours).
            return Finding::NoAccess;
        }
        if tables.values().all(HashSet::is_empty) {
            return Finding::NotFound;
        }
        match holders.len() {
            0 if no_access > 0 => Finding::NoAccess,
            0 => Finding::NotFound,
            1 => Finding::Found(holders[0]),
            _ => {
                let roots: Vec<u32> = holders
                    .iter()
                    .copied()
                    .filter(|p| self.stat(*p).is_none_or(|s| !holders.contains(&s.ppid)))
                    .collect();
                if roots.len() == 1 { Finding::Found(roots[0]) } else { Finding::Ambiguous }
            }
        }
    }
}

fn read_bounded(path: &Path, max: u64) -> Option<String> {
    let f = fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max { s.to_string() } else { s[..s.floor_char_boundary(max)].to_string() }
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// `pid (comm) S ppid …`: the command name may hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat(s: &str) -> Option<Stat> {
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state (field 3) … starttime (field 22).
    Some(Stat { ppid: f.get(1)?.parse().ok()?, start_ticks: f.get(19)?.parse().ok()? })
}

/// An address as `/proc/net/tcp{,6}` prints it: the raw 32-bit words of the (network order)
/// address in host order, then the port.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |w: &str| u32::from_str_radix(w, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// `  0: 0100007F:2CAA 00000000:0000 0A … uid timeout inode …`
pub fn parse_tcp_line(line: &str) -> Option<TcpEntry> {
    let f: Vec<&str> = line.split_whitespace().take(10).collect();
    Some(TcpEntry {
        local: parse_addr(f.get(1)?)?,
        remote: parse_addr(f.get(2)?)?,
        state: u8::from_str_radix(f.get(3)?, 16).ok()?,
        inode: f.get(9)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let s = "4242 (we ird) (x) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 123 456";
        assert_eq!(parse_stat(s), Some(Stat { ppid: 17, start_ticks: 987654 }));
        assert_eq!(parse_stat("4242 (cut"), None);
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn tcp_lines() {
        let v4 = "   0: 0100007F:2CAA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 249652 1 0000000083e9b302 100 0 0 10 0";
        let e = parse_tcp_line(v4).unwrap();
        assert_eq!(e.local, "127.0.0.1:11434".parse().unwrap());
        assert_eq!((e.state, e.inode), (ST_LISTEN, 249652));
        // ::1 and an IPv4-mapped peer, as an x86 kernel prints them.
        let v6 = "   1: 00000000000000000000000001000000:2CAA 0000000000000000FFFF00000100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 7777 1 0";
        let e = parse_tcp_line(v6).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(e.local, "[::1]:11434".parse().unwrap());
            assert_eq!(unmap_v4(e.remote), "127.0.0.1:40000".parse().unwrap());
        }
        assert_eq!((e.state, e.inode), (1, 7777));
        for bad in [
            "",
            "  sl  local_address rem_address",
            "0: zz:1 0:0 0A 0 0 0 0 0 1",
            "0: 0100007F:2CAA 00000000:0000 0A 0 0 0 0 0 x",
        ] {
            assert_eq!(parse_tcp_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn args_are_cleaned() {
        let p = ArgPolicy::new();
        let args: Vec<String> = [
            "--model",
            "llama3.2",
            "--api-key",
            "s3cr3t",
            "--token=abc",
            "PASSWORD=hunter2",
            "--url=https://user:pw@example.invalid/x",
            "--auth",
            "--verbose",
            "Bearer abcdefgh",
            &"x".repeat(1000),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = p.clean(&args);
        assert_eq!(
            c[..9],
            [
                "--model",
                "llama3.2",
                "--api-key",
                "[REDACTED]",
                "--token=[REDACTED]",
                "PASSWORD=[REDACTED]",
                "--url=https://[REDACTED]@example.invalid/x",
                "--auth",
                "--verbose",
            ]
        );
        assert_eq!(c[9], "[REDACTED]");
        assert!(c[10].len() < 300 && c[10].contains("truncated"));
        let many: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        assert_eq!(p.clean(&many).len(), MAX_ARGS);
    }

    /// A fake procfs: two processes of one cgroup sharing a namespace, one holding the
    /// listener and a connection.
    fn fake_proc(tag: &str, fds_readable: bool) -> (PathBuf, ProcFs) {
        let root = std::env::temp_dir().join(format!("ot-fakeproc-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (pid, ppid, comm, cmdline) in [
            (100u32, 1u32, "ollama", &b"/usr/bin/ollama\0serve\0"[..]),
            (101, 100, "ollama", b"/usr/bin/ollama\0runner\0--port\x0040001\0"),
        ] {
            let d = root.join(pid.to_string());
            fs::create_dir_all(d.join("net")).unwrap();
            fs::create_dir_all(d.join("fd")).unwrap();
            fs::create_dir_all(d.join("ns")).unwrap();
            fs::write(
                d.join("stat"),
                format!("{pid} ({comm}) S {ppid} 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {} 0 0", 1000 + pid),
            )
            .unwrap();
            fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
            fs::write(d.join("cmdline"), cmdline).unwrap();
            fs::write(
                d.join("net/tcp"),
                "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                 0: 0100007F:2CAA 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 5001 1 0\n\
                 1: 0100007F:9C41 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 5002 1 0\n\
                 2: 0100007F:2CAA 0100007F:9C40 01 00000000:00000000 00:00000000 00000000 0 0 5003 1 0\n\
                 3: 0100007F:9C40 0100007F:2CAA 01 00000000:00000000 00:00000000 00000000 0 0 5004 1 0\n",
            )
            .unwrap();
            std::os::unix::fs::symlink("net:[4026531840]", d.join("ns/net")).unwrap();
            if fds_readable {
                let held: &[u64] = if pid == 100 { &[5001, 5003] } else { &[5002] };
                for (i, ino) in held.iter().enumerate() {
                    std::os::unix::fs::symlink(format!("socket:[{ino}]"), d.join(format!("fd/{}", i + 3))).unwrap();
                }
                std::os::unix::fs::symlink("/dev/null", d.join("fd/0")).unwrap();
            }
        }
        let cg = root.join("cg");
        fs::create_dir_all(&cg).unwrap();
        fs::write(cg.join("cgroup.procs"), "100\n101\n\ngarbage\n0\n").unwrap();
        let procfs = ProcFs::new(&root);
        (root, procfs)
    }

    #[test]
    fn owners_from_fake_proc() {
        let (root, p) = fake_proc("owners", true);
        let pids = ProcFs::cgroup_procs(&root.join("cg"));
        assert_eq!(pids, vec![100, 101]);
        assert_eq!(p.find_listener(&pids, 11434), Finding::Found(100));
        assert_eq!(p.find_listener(&pids, 40001), Finding::Found(101));
        assert_eq!(p.find_listener(&pids, 1), Finding::NotFound);
        let server: SocketAddr = "127.0.0.1:11434".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(p.find_connection(&pids, server, client), Finding::Found(100));
        // Nobody here holds the client end (5004).
        assert_eq!(p.find_connection(&pids, client, server), Finding::NotFound);
        let info = p.process(100, None, None).unwrap();
        assert_eq!(info.executable_name.as_deref(), Some("ollama"), "comm when exe is unreadable");
        assert_eq!(info.command.as_deref(), Some("/usr/bin/ollama"));
        assert_eq!((info.start_ticks, info.args), (Some(1100), None));
        let info = p.process(101, None, Some(&ArgPolicy::new())).unwrap();
        assert_eq!(info.args.unwrap(), ["runner", "--port", "40001"]);
        // Gone: only what the kernel said.
        let gone = p.process(999, Some("curl"), None).unwrap();
        assert_eq!((gone.executable_name.as_deref(), gone.command), (Some("curl"), None));
        assert_eq!(p.process(998, None, None), None);
        fs::remove_dir_all(&root).unwrap();
    }
}
