//! Which files hold the TLS stacks of this host's processes: each process's executable (Node,
//! Go programs, anything with OpenSSL linked in) and the TLS libraries it maps (`libssl*`),
//! identified as the kernel identifies uprobe targets — by device and inode — so that a file
//! is looked at and probed once however many processes use it, and a container's own copy of
//! a library is a target of its own. Also: which executables the user includes or excludes.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::binary::{self, TlsStack};

/// A file as the kernel knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// A file that may hold a TLS stack, and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: FileId,
    /// A path this process can open and the kernel can attach to (through `/proc/<pid>/root`
    /// for another mount namespace's files).
    pub path: PathBuf,
    /// The path as its process sees it.
    pub shown: String,
}

fn id_of(path: &Path) -> Option<FileId> {
    let m = std::fs::metadata(path).ok()?;
    m.is_file().then(|| FileId { dev: m.dev(), ino: m.ino() })
}

/// The path to reach file `id` by: the path its process shows when that is the same file here
/// (it outlives the process), else the one through the process (another mount namespace).
fn reachable(id: FileId, shown: &str, through_process: PathBuf) -> PathBuf {
    let plain = Path::new(shown);
    if plain.is_absolute() && id_of(plain) == Some(id) { plain.to_path_buf() } else { through_process }
}

/// Whether a mapped file's name is a TLS library's.
pub fn is_tls_library(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.starts_with("libssl.so") || base.starts_with("libssl3.so") || base.contains("boringssl")
}

/// Process ids under `proc_root`.
pub fn pids(proc_root: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(proc_root) else { return Vec::new() };
    let mut v: Vec<u32> = dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    v.sort_unstable();
    v
}

/// A process's executable path as it sees it (`None` for kernel threads and gone processes).
pub fn exe_of(proc_root: &Path, pid: u32) -> Option<String> {
    let link = std::fs::read_link(proc_root.join(pid.to_string()).join("exe")).ok()?;
    Some(link.to_string_lossy().trim_end_matches(" (deleted)").to_owned())
}

/// The files of process `pid` that may hold a TLS stack: its executable and the TLS
/// libraries it maps.
pub fn candidates(proc_root: &Path, pid: u32) -> Vec<Candidate> {
    let base = proc_root.join(pid.to_string());
    let mut out = Vec::new();
    let exe = base.join("exe");
    if let (Some(id), Some(shown)) = (id_of(&exe), exe_of(proc_root, pid)) {
        out.push(Candidate { id, path: reachable(id, &shown, exe), shown });
    }
    let Ok(maps) = std::fs::read_to_string(base.join("maps")) else { return out };
    for line in maps.lines() {
        // address perms offset dev inode path
        let mut f = line.split_whitespace();
        let path = match (f.next(), f.next(), f.next(), f.next(), f.next(), f.next()) {
            (Some(_), Some(_), Some(_), Some(_), Some(_), Some(p)) => p,
            _ => continue,
        };
        if !is_tls_library(path) || out.iter().any(|c| c.shown == path) {
            continue;
        }
        let reach = base.join("root").join(path.trim_start_matches('/'));
        if let Some(id) = id_of(&reach) {
            out.push(Candidate { id, path: reachable(id, path, reach), shown: path.to_owned() });
        }
    }
    out
}

/// The TLS libraries installed where the system's loader finds them, so that processes started
/// later are probed from their first call (uprobes on a file apply to every process that maps
/// it, present and future).
pub fn system_libraries() -> Vec<Candidate> {
    const DIRS: [&str; 8] = [
        "/usr/lib/x86_64-linux-gnu",
        "/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/lib64",
        "/usr/lib",
        "/lib",
        "/usr/local/lib",
        "/usr/local/lib64",
    ];
    let mut out: Vec<Candidate> = Vec::new();
    for dir in DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for path in names {
            let shown = path.to_string_lossy().into_owned();
            if !is_tls_library(&shown) {
                continue;
            }
            if let Some(id) = id_of(&path)
                && !out.iter().any(|c| c.id == id)
            {
                out.push(Candidate { id, path, shown });
            }
        }
    }
    out
}

/// What each file holds, looked at once per file.
#[derive(Debug, Default)]
pub struct Inspections {
    seen: HashMap<FileId, Arc<TlsStack>>,
}

impl Inspections {
    /// The TLS stack of `c` (an unreadable or malformed file holds none, said once in the log).
    pub fn stack(&mut self, c: &Candidate) -> Arc<TlsStack> {
        if let Some(s) = self.seen.get(&c.id) {
            return s.clone();
        }
        let stack = match binary::inspect(&c.path, &c.shown) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("tls: cannot look into {}: {e}", c.shown);
                TlsStack::None
            }
        };
        let stack = Arc::new(stack);
        self.seen.insert(c.id, stack.clone());
        stack
    }
}

/// `--tls-include-exe` / `--tls-exclude-exe`: glob patterns (`*`, `?`) on an executable's path,
/// or on its file name when the pattern has no `/`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExeFilter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl ExeFilter {
    /// Whether any pattern was given (the kernel then consults the per-process verdicts).
    pub fn active(&self) -> bool {
        !self.include.is_empty() || !self.exclude.is_empty()
    }

    /// Whether a process running `exe` may be traced.
    pub fn allows(&self, exe: &str) -> bool {
        let hit = |p: &String| {
            let subject = if p.contains('/') { exe } else { exe.rsplit('/').next().unwrap_or(exe) };
            glob(p.as_bytes(), subject.as_bytes())
        };
        (self.include.is_empty() || self.include.iter().any(hit)) && !self.exclude.iter().any(hit)
    }

    /// The verdict of a process not named in the kernel's map.
    pub fn default_allows(&self) -> bool {
        self.include.is_empty()
    }
}

/// Glob matching with `*` (any run) and `?` (one byte).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_filters() {
        assert!(glob(b"python*", b"python3.11"));
        assert!(glob(b"*/bin/node", b"/usr/bin/node"));
        assert!(glob(b"n?de", b"node"));
        assert!(!glob(b"node", b"nodejs"));
        assert!(glob(b"*", b""));
        let f = ExeFilter { include: vec!["python*".into(), "/opt/*".into()], exclude: vec!["python3.9".into()] };
        assert!(f.active() && !f.default_allows());
        assert!(f.allows("/usr/bin/python3.11"));
        assert!(!f.allows("/usr/bin/python3.9"));
        assert!(f.allows("/opt/app/run"));
        assert!(!f.allows("/usr/bin/node"));
        let none = ExeFilter::default();
        assert!(!none.active() && none.allows("/anything") && none.default_allows());
        let ex = ExeFilter { include: vec![], exclude: vec!["curl".into()] };
        assert!(ex.default_allows() && !ex.allows("/usr/bin/curl") && ex.allows("/usr/bin/wget"));
    }

    #[test]
    fn tls_library_names() {
        for yes in ["/usr/lib/x86_64-linux-gnu/libssl.so.3", "libssl.so.1.1", "/opt/x/libboringssl.so"] {
            assert!(is_tls_library(yes), "{yes}");
        }
        for no in ["/usr/lib/libcrypto.so.3", "/usr/lib/libsslfoo.a", "[heap]"] {
            assert!(!is_tls_library(no), "{no}");
        }
    }

    #[test]
    fn this_process_has_an_executable() {
        let me = std::process::id();
        let c = candidates(Path::new("/proc"), me);
        let exe = std::env::current_exe().unwrap();
        assert!(!c.is_empty() && c[0].path == exe, "the executable by its own path: {c:?}");
        assert!(pids(Path::new("/proc")).contains(&me));
    }
}
