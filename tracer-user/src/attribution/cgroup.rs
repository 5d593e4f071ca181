//! cgroup v2 ids → paths → what the path says: container id, pod uid, systemd unit.
//!
//! A socket's cgroup id (from `bpf_skb_cgroup_id` or `bpf_get_current_cgroup_id`) is the
//! inode number of its cgroup's directory in the v2 hierarchy. The kernel offers no way back
//! from id to path without CAP_DAC_READ_SEARCH (`open_by_handle_at`), so [`CgroupIndex`]
//! walks the hierarchy and keeps an id → path index, rebuilt when an id is missing, at most
//! once per [`RESCAN_INTERVAL`] (a miss right after a walk waits for the next one: a new
//! container's cgroup must not be reported missing because another appeared just before).
//!
//! [`parse_path`] reads the naming conventions of the container runtimes and the kubelet:
//! systemd driver (`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
//! cri-containerd-<id>.scope`, `docker-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`)
//! and cgroupfs driver (`kubepods/burstable/pod<uid>/<id>`, `docker/<id>`). Only a v2 path is
//! ever parsed: on hybrid hosts where a runtime keeps containers in v1 controllers only, the
//! v2 path names no container and nothing is reported — nothing is guessed.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracer_core::identity::CgroupInfo;

/// Least time between two walks of the hierarchy.
pub const RESCAN_INTERVAL: Duration = Duration::from_millis(200);
/// Most cgroups indexed (a busy Kubernetes node has a few thousand).
pub const MAX_CGROUPS: usize = 100_000;
/// Deepest directory level walked below the root (kubelet's layout is 4 deep; nested
/// runtimes such as kind add a few).
pub const MAX_DEPTH: usize = 16;

/// systemd units of container runtimes: a process directly in one is the runtime itself or,
/// on hybrid hosts, a container the runtime keeps in v1 only — either way no unit to report.
const RUNTIME_UNITS: &[&str] =
    &["containerd.service", "docker.service", "crio.service", "podman.service", "kubelet.service", "k3s.service"];

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A pod UID as the kubelet writes it in paths (systemd escapes `-` as `_`), normalised.
fn pod_uid(s: &str) -> Option<String> {
    let uid = s.replace('_', "-");
    let ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    ok.then(|| uid.to_ascii_lowercase())
}

/// Container id and runtime of one path component, if it is a container's cgroup.
fn container_of(component: &str) -> Option<(String, &'static str)> {
    let scoped = |prefix: &str| component.strip_prefix(prefix).and_then(|r| r.strip_suffix(".scope"));
    let runtimes: [(&str, &'static str); 5] = [
        ("cri-containerd-", "containerd"),
        ("docker-", "docker"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
        ("nerdctl-", "containerd"),
    ];
    for (prefix, runtime) in runtimes {
        if let Some(id) = scoped(prefix)
            && is_container_id(id)
        {
            return Some((id.to_string(), runtime));
        }
    }
    // containerd with systemd-style names in a cgroupfs tree: `<slice>:cri-containerd:<id>`.
    if let Some((_, id)) = component.rsplit_once(":cri-containerd:")
        && is_container_id(id)
    {
        return Some((id.to_string(), "containerd"));
    }
    // cgroupfs driver: the bare id (`/kubepods/burstable/pod<uid>/<id>`, `/docker/<id>`).
    is_container_id(component).then(|| (component.to_string(), ""))
}

/// The pod UID in one path component of a kubepods tree.
fn pod_of(component: &str) -> Option<String> {
    // cgroupfs: `pod<uid>`; systemd: `kubepods-<qos>-pod<uid>.slice`, `kubepods-pod<uid>.slice`,
    // maybe with a `:cri-containerd:<id>` suffix (see above).
    let c = component.split(':').next().unwrap_or(component);
    let c = c.strip_suffix(".slice").unwrap_or(c);
    let at = c.rfind("pod")?;
    if at > 0 && !c[..at].ends_with('-') {
        return None;
    }
    pod_uid(&c[at + 3..])
}

/// Reads what a v2 cgroup path (from the root, `/`-separated) says.
pub fn parse_path(id: u64, path: &str) -> CgroupInfo {
    let mut info = CgroupInfo { id, path: path.to_string(), ..Default::default() };
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let in_kubepods = |i: usize| components[..=i].iter().any(|c| c.contains("kubepods"));
    // The innermost container: a sidecar's own sub-cgroups (`<id>.scope/init`) still count.
    let mut container_at = None;
    for (i, c) in components.iter().enumerate().rev() {
        if let Some((cid, runtime)) = container_of(c) {
            info.container_id = Some(cid);
            info.runtime = (!runtime.is_empty()).then_some(runtime);
            container_at = Some(i);
            break;
        }
    }
    for (i, c) in components.iter().enumerate() {
        if in_kubepods(i)
            && let Some(uid) = pod_of(c)
        {
            info.pod_uid = Some(uid);
        }
    }
    if info.runtime.is_none() && info.container_id.is_some() {
        // A bare 64-hex directory is a container only under a container tree.
        let parent_known = container_at.is_some_and(|i| {
            i > 0 && {
                let parent = components[i - 1];
                parent == "docker"
                    || parent.contains("kubepods")
                    || pod_of(parent).is_some()
                    || parent == "libpod_parent"
            }
        });
        if !parent_known {
            info.container_id = None;
        }
    }
    if info.container_id.is_none() {
        info.systemd_unit = components
            .iter()
            .rev()
            .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
            .map(|c| c.to_string())
            .filter(|u| !RUNTIME_UNITS.contains(&u.as_str()));
    }
    info
}

/// Errors of the cgroup index.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup v2 root {path}: {source}")]
    Root { path: PathBuf, source: std::io::Error },
}

/// id → path index of a cgroup v2 hierarchy.
#[derive(Debug)]
pub struct CgroupIndex {
    root: PathBuf,
    root_id: u64,
    paths: HashMap<u64, String>,
    last_scan: Option<Instant>,
    /// Walks done, directories seen by the last one, and whether it hit a limit.
    pub scans: u64,
    pub last_scan_entries: usize,
    pub last_scan_truncated: bool,
    pub last_scan_time: Duration,
}

impl CgroupIndex {
    /// An index of the hierarchy mounted at `root` (not walked yet).
    pub fn new(root: &Path) -> Result<CgroupIndex, CgroupError> {
        let meta = fs::metadata(root).map_err(|source| CgroupError::Root { path: root.to_path_buf(), source })?;
        Ok(CgroupIndex {
            root: root.to_path_buf(),
            root_id: meta.ino(),
            paths: HashMap::new(),
            last_scan: None,
            scans: 0,
            last_scan_entries: 0,
            last_scan_truncated: false,
            last_scan_time: Duration::ZERO,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a cgroup path from [`CgroupIndex::path`].
    pub fn dir(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// The path of cgroup `id`, walking the hierarchy again when it is not indexed (waiting
    /// first, when the last walk is less than [`RESCAN_INTERVAL`] old). `None`: no such cgroup
    /// (gone, or outside this hierarchy).
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == self.root_id {
            return Some("/".into());
        }
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        if let Some(t) = self.last_scan {
            std::thread::sleep(RESCAN_INTERVAL.saturating_sub(t.elapsed()));
        }
        self.rescan();
        self.paths.get(&id).cloned()
    }

    /// Walks the whole hierarchy again (depth-first, bounded).
    pub fn rescan(&mut self) {
        let t = Instant::now();
        let mut paths = HashMap::with_capacity(self.paths.len().max(64));
        let mut stack: Vec<(PathBuf, String, usize)> = vec![(self.root.clone(), String::new(), 0)];
        let mut truncated = false;
        while let Some((dir, rel, depth)) = stack.pop() {
            // A cgroup removed while we walk, or one we may not read: skip it.
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                // cgroup directories only; the interface files are regular files.
                let Ok(ft) = e.file_type() else { continue };
                if !ft.is_dir() {
                    continue;
                }
                let Ok(meta) = e.metadata() else { continue };
                let Some(name) = e.file_name().to_str().map(str::to_owned) else { continue };
                if paths.len() >= MAX_CGROUPS {
                    truncated = true;
                    break;
                }
                let child_rel = format!("{rel}/{name}");
                paths.insert(meta.ino(), child_rel.clone());
                if depth + 1 < MAX_DEPTH {
                    stack.push((e.path(), child_rel, depth + 1));
                } else {
                    truncated = true;
                }
            }
        }
        self.paths = paths;
        self.last_scan = Some(Instant::now());
        self.scans += 1;
        self.last_scan_entries = self.paths.len();
        self.last_scan_truncated = truncated;
        self.last_scan_time = t.elapsed();
    }

    /// Cgroups indexed now.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f8e1c3a9b2d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";
    const UID: &str = "2c7f4b1e-8d3a-4e5f-9a6b-0c1d2e3f4a5b";

    fn uid_(u: &str) -> String {
        u.replace('-', "_")
    }

    #[test]
    fn kubelet_systemd_driver() {
        for (runtime, scope) in [
            ("containerd", format!("cri-containerd-{ID}.scope")),
            ("cri-o", format!("crio-{ID}.scope")),
            ("docker", format!("docker-{ID}.scope")),
        ] {
            for qos in ["besteffort", "burstable"] {
                let p = format!("/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{}.slice/{scope}", uid_(UID));
                let i = parse_path(7, &p);
                assert_eq!(i.container_id.as_deref(), Some(ID), "{p}");
                assert_eq!(i.runtime, Some(runtime), "{p}");
                assert_eq!(i.pod_uid.as_deref(), Some(UID), "{p}");
                assert_eq!(i.systemd_unit, None, "{p}");
                assert_eq!(i.path, p);
            }
        }
        // Guaranteed QoS pods sit directly under kubepods.slice.
        let p = format!("/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{ID}.scope", uid_(UID));
        let i = parse_path(1, &p);
        assert_eq!((i.container_id.as_deref(), i.pod_uid.as_deref()), (Some(ID), Some(UID)));
        // The pod's own slice (the pause container lives in its own scope): a pod, no container.
        let p = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice", uid_(UID));
        let i = parse_path(1, &p);
        assert_eq!((i.container_id, i.pod_uid.as_deref()), (None, Some(UID)));
    }

    #[test]
    fn kubelet_cgroupfs_driver_and_nested() {
        let i = parse_path(1, &format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert_eq!((i.container_id.as_deref(), i.pod_uid.as_deref(), i.runtime), (Some(ID), Some(UID), None));
        let i = parse_path(1, &format!("/kubepods/pod{UID}/{ID}"));
        assert_eq!((i.container_id.as_deref(), i.pod_uid.as_deref()), (Some(ID), Some(UID)));
        // kind / k3s-in-docker: a kubelet inside a container, with its own kubepods tree.
        let p = format!(
            "/system.slice/docker-{ID}.scope/kubelet.slice/kubelet-kubepods.slice/\
             kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{}.slice/cri-containerd-{}.scope",
            uid_(UID),
            ID.replace('4', "5")
        );
        let i = parse_path(1, &p);
        assert_eq!(i.container_id, Some(ID.replace('4', "5")), "innermost container wins");
        assert_eq!(i.pod_uid.as_deref(), Some(UID));
        // containerd placing systemd-named cgroups in a cgroupfs tree.
        let p =
            format!("/system.slice/containerd.service/kubepods-burstable-pod{}.slice:cri-containerd:{ID}", uid_(UID));
        let i = parse_path(1, &p);
        assert_eq!((i.container_id.as_deref(), i.pod_uid.as_deref()), (Some(ID), Some(UID)));
    }

    #[test]
    fn docker_podman_and_services() {
        let i = parse_path(1, &format!("/system.slice/docker-{ID}.scope"));
        assert_eq!((i.container_id.as_deref(), i.runtime, i.pod_uid), (Some(ID), Some("docker"), None));
        let i = parse_path(1, &format!("/docker/{ID}"));
        assert_eq!(i.container_id.as_deref(), Some(ID));
        let i = parse_path(1, &format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"));
        assert_eq!((i.container_id.as_deref(), i.runtime), (Some(ID), Some("podman")));
        // A container's own sub-cgroup (systemd inside the container, or `init`).
        let i = parse_path(1, &format!("/machine.slice/libpod-{ID}.scope/container"));
        assert_eq!(i.container_id.as_deref(), Some(ID));
        // Monitors are not the container.
        let i = parse_path(1, &format!("/machine.slice/libpod-conmon-{ID}.scope"));
        assert_eq!(i.container_id, None);
        let i = parse_path(1, &format!("/system.slice/crio-conmon-{ID}.scope"));
        assert_eq!(i.container_id, None);
        // systemd services and sessions.
        let i = parse_path(1, "/system.slice/ollama.service");
        assert_eq!((i.systemd_unit.as_deref(), i.container_id, i.pod_uid), (Some("ollama.service"), None, None));
        let i = parse_path(1, "/system.slice/ollama.service/runner");
        assert_eq!(i.systemd_unit.as_deref(), Some("ollama.service"));
        let i = parse_path(1, "/user.slice/user-1000.slice/session-3.scope");
        assert_eq!(i.systemd_unit.as_deref(), Some("session-3.scope"));
        assert!(parse_path(1, "/init.scope").is_init());
        assert!(parse_path(1, "/").is_init());
        // A process directly in a runtime's unit: on hybrid hosts a container kept in v1 only.
        let i = parse_path(1, "/system.slice/containerd.service");
        assert_eq!((i.container_id, i.systemd_unit), (None, None));
    }

    #[test]
    fn odd_paths_report_nothing() {
        for p in [
            "",
            "/",
            "/foo",
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podnot-a-uid.slice",
            &format!("/kubepods.slice/kubepods-burstable-pod{}.slice", &UID[..30]),
            &format!("/system.slice/docker-{}.scope", &ID[..63]),
            &format!("/system.slice/docker-{}.scope", ID.to_uppercase()),
            &format!("/some/{ID}"),
            &format!("/notpod{UID}"),
            "/a/b/c/d/e/f/g/h/i/j/k/l",
            "/kubepods/burstable/pod",
            "///",
            "/lxc.payload.web/system.slice",
        ] {
            let i = parse_path(1, p);
            assert_eq!((i.container_id.as_deref(), i.pod_uid.as_deref()), (None, None), "{p:?}");
        }
        // A pod uid outside a kubepods tree is not a pod.
        assert_eq!(parse_path(1, &format!("/system.slice/pod{UID}")).pod_uid, None);
    }

    #[test]
    fn index_walks_and_rescans() {
        let root = std::env::temp_dir().join(format!("ot-cgroup-index-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let deep = root.join(format!("kubepods.slice/kubepods-pod{}.slice/cri-containerd-{ID}.scope", uid_(UID)));
        fs::create_dir_all(&deep).unwrap();
        fs::write(root.join("cgroup.procs"), "").unwrap();
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        let mut idx = CgroupIndex::new(&root).unwrap();
        assert_eq!(idx.path(ino(&root)).as_deref(), Some("/"));
        let path = idx.path(ino(&deep)).unwrap();
        assert_eq!(path, format!("/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{ID}.scope", uid_(UID)));
        assert_eq!(idx.dir(&path), deep);
        assert_eq!(idx.len(), 3, "directories only");
        // A cgroup created later is found by the next walk, which waits for the interval.
        let late = root.join("system.slice/ollama.service");
        fs::create_dir_all(&late).unwrap();
        let (scans, t) = (idx.scans, Instant::now());
        assert_eq!(idx.path(ino(&late)).as_deref(), Some("/system.slice/ollama.service"));
        assert_eq!(idx.scans, scans + 1);
        assert!(t.elapsed() >= RESCAN_INTERVAL / 2, "rate-limited");
        assert_eq!(idx.path(u64::MAX), None);
        assert_eq!(idx.path(ino(&deep)).as_deref(), Some(path.as_str()), "known ids need no walk");
        fs::remove_dir_all(&root).unwrap();
    }
}
