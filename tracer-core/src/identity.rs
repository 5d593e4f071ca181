//! Who the two ends of a call are: the process, its cgroup (and what the cgroup's path says),
//! and on Kubernetes its pod and workload. Plain data: the daemon's attribution stage fills it
//! in (from `/proc`, the cgroup tree and the Kubernetes API), span building reads it
//! ([`crate::span::identity`]).

use std::sync::Arc;

/// What is known about one end of a call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Endpoint {
    pub cgroup: Option<Arc<CgroupInfo>>,
    pub process: Option<Arc<ProcessInfo>>,
    pub pod: Option<Arc<PodInfo>>,
    /// The node, for an end in a pod.
    pub node_name: Option<Arc<str>>,
}

impl Endpoint {
    pub fn is_empty(&self) -> bool {
        self.cgroup.is_none() && self.process.is_none() && self.pod.is_none()
    }
}

/// Both ends of a call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallIdentity {
    pub client: Endpoint,
    pub server: Endpoint,
    /// Whether the server's workload names the service ([`crate::span::identity::call_resource`]).
    pub workload_service_name: bool,
}

/// What a cgroup path says about the processes in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupInfo {
    pub id: u64,
    /// Path from the v2 root, as `/proc/<pid>/cgroup` shows it (`/system.slice/ollama.service`).
    pub path: String,
    /// 64 lower-case hex digits.
    pub container_id: Option<String>,
    /// `containerd`, `docker`, `cri-o`, `podman`, when the path says which.
    pub runtime: Option<&'static str>,
    /// Kubernetes pod UID (`_` of systemd's escaping turned back into `-`).
    pub pod_uid: Option<String>,
    /// The innermost systemd unit (`ollama.service`, `session-3.scope`) outside containers.
    pub systemd_unit: Option<String>,
}

impl CgroupInfo {
    /// `/` or `init.scope`: a process alone there is the init system, never taken for a
    /// socket's owner without proof (a socket-activated server's listening socket belongs to
    /// the cgroup of the init system that created it).
    pub fn is_init(&self) -> bool {
        self.path == "/" || self.systemd_unit.as_deref() == Some("init.scope")
    }
}

/// Who a process is, as exported (`process.*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// In the kernel's (the node's) PID namespace.
    pub pid: u32,
    /// Clock ticks after boot at which it started (`stat` field 22): with the pid, an identity
    /// that survives pid reuse.
    pub start_ticks: Option<u64>,
    /// Base name of `/proc/<pid>/exe` when readable, else the kernel's command name.
    pub executable_name: Option<String>,
    /// `/proc/<pid>/exe` (needs ptrace access).
    pub executable_path: Option<String>,
    /// `argv[0]`.
    pub command: Option<String>,
    /// `argv[1..]`, only when asked for, with secret-looking values redacted.
    pub args: Option<Vec<String>>,
}

/// Workload kinds with an OpenTelemetry `k8s.<kind>.name` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    ReplicaSet,
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
}

impl WorkloadKind {
    /// From a Kubernetes object `kind`.
    pub fn from_kind(kind: &str) -> Option<WorkloadKind> {
        Some(match kind {
            "ReplicaSet" => WorkloadKind::ReplicaSet,
            "Deployment" => WorkloadKind::Deployment,
            "StatefulSet" => WorkloadKind::StatefulSet,
            "DaemonSet" => WorkloadKind::DaemonSet,
            "Job" => WorkloadKind::Job,
            "CronJob" => WorkloadKind::CronJob,
            _ => return None,
        })
    }
}

/// One owner of a pod (the pod's own controller first, then that one's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub kind: WorkloadKind,
    pub name: String,
}

/// What the API says about a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub node: Option<String>,
    /// Container id (the runtime prefix `containerd://` stripped) → container name, for the
    /// containers that have started (init and ephemeral containers included).
    pub containers: Vec<(String, String)>,
    /// The pod's controller, then its controller's (at most two).
    pub owners: Vec<Owner>,
    /// `resource.opentelemetry.io/<attribute>` annotations: attribute → value.
    pub resource_annotations: Vec<(String, String)>,
}

impl PodInfo {
    /// The name of the container with this id.
    pub fn container_name(&self, container_id: &str) -> Option<&str> {
        self.containers.iter().find(|(id, _)| id == container_id).map(|(_, n)| n.as_str())
    }

    pub fn owner(&self, kind: WorkloadKind) -> Option<&str> {
        self.owners.iter().find(|o| o.kind == kind).map(|o| o.name.as_str())
    }

    pub fn annotation(&self, attribute: &str) -> Option<&str> {
        self.resource_annotations.iter().find(|(k, _)| k == attribute).map(|(_, v)| v.as_str())
    }
}
