//! Where the kernel's file systems are mounted (`/proc/self/mountinfo`): the cgroup v2
//! hierarchy the capture attaches to, tracefs for the tracepoint.

use std::path::PathBuf;

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

/// Whether `dir` is the root of a cgroup v2 hierarchy, wherever it is mounted: a cgroup2 file
/// system whose directory is kernfs node 1. A cgroup namespace's root is a non-root cgroup and
/// has another node id.
pub fn is_cgroup2_root(dir: &std::path::Path) -> bool {
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
    fn the_cgroup2_root_is_known_wherever_it_is_mounted() {
        assert!(!is_cgroup2_root(std::path::Path::new("/")));
        assert!(!is_cgroup2_root(std::path::Path::new("/nonexistent")));
        let Some(mount) = find_mount("cgroup2") else {
            println!("*** SKIPPED cgroup2 root detection: no cgroup v2 hierarchy mounted ***");
            return;
        };
        assert!(is_cgroup2_root(&mount.mount_point));
        // A child cgroup (where we may create one) is not the root.
        let child = mount.mount_point.join(format!("ollama-tracer-probe-{}", std::process::id()));
        if std::fs::create_dir(&child).is_ok() {
            let is_root = is_cgroup2_root(&child);
            let _ = std::fs::remove_dir(&child);
            assert!(!is_root);
        }
    }
}
