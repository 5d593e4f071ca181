//! Pods of this node from the Kubernetes API: a cgroup path names a pod UID and a container
//! id; the pod object names the pod, its namespace, the container, and the workload that owns
//! it.
//!
//! One watch (`kube`'s watcher: list, then watch from the list's resourceVersion, re-listing
//! with backoff after errors) on the pods with `spec.nodeName=<node>` keeps a map UID →
//! [`PodInfo`]. Owners are followed one step further than the pod's own reference where the
//! workload hides behind a controller object: ReplicaSet → Deployment and Job → CronJob, by
//! `GET` on the ReplicaSet or Job (cached). Without RBAC for those, a ReplicaSet's Deployment
//! is taken from its name and the pod's `pod-template-hash` label (the Deployment controller
//! names ReplicaSets `<deployment>-<pod-template-hash>`); a Job's CronJob is then left out.
//!
//! Deleted pods stay known for [`DELETED_GRACE`], so calls that end just after their pod is
//! gone are still attributed. Memory: the node's pods (a kubelet runs at most a few hundred)
//! and the owner cache, both capped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tracer_core::identity::{Owner, PodInfo, WorkloadKind};

/// How long a deleted pod stays known.
pub const DELETED_GRACE: Duration = Duration::from_secs(300);
/// Most pods kept (live and recently deleted).
pub const MAX_PODS: usize = 20_000;
/// Most owner lookups cached, and for how long.
pub const MAX_OWNERS: usize = 4096;
pub const OWNER_TTL: Duration = Duration::from_secs(600);
/// Annotations with this prefix set resource attributes (OpenTelemetry's K8s convention).
pub const RESOURCE_ANNOTATION_PREFIX: &str = "resource.opentelemetry.io/";
/// Most such annotations kept per pod, and the longest value.
const MAX_ANNOTATIONS: usize = 16;
const MAX_ANNOTATION_BYTES: usize = 256;

/// The pod's controlling owner reference.
fn controller(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.as_deref()?.iter().find(|o| o.controller == Some(true))
}

/// `containerd://<id>`, `cri-o://<id>`, `docker://<id>` → `<id>`.
fn strip_runtime(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, id)| id)
}

/// The pod as kept (owners resolved separately); `None` without a UID or name.
pub fn pod_info(pod: &Pod, owners: Vec<Owner>) -> Option<PodInfo> {
    let m = &pod.metadata;
    let mut containers = Vec::new();
    if let Some(st) = &pod.status {
        let all = [&st.container_statuses, &st.init_container_statuses, &st.ephemeral_container_statuses];
        for statuses in all.into_iter().flatten() {
            for c in statuses {
                if let Some(id) = c.container_id.as_deref() {
                    containers.push((strip_runtime(id).to_string(), c.name.clone()));
                }
            }
        }
    }
    let mut resource_annotations = Vec::new();
    for (k, v) in m.annotations.iter().flatten() {
        if let Some(attr) = k.strip_prefix(RESOURCE_ANNOTATION_PREFIX)
            && !attr.is_empty()
            && resource_annotations.len() < MAX_ANNOTATIONS
        {
            let v = &v[..v.floor_char_boundary(MAX_ANNOTATION_BYTES)];
            resource_annotations.push((attr.to_string(), v.to_string()));
        }
    }
    Some(PodInfo {
        uid: m.uid.clone()?,
        name: m.name.clone()?,
        namespace: m.namespace.clone().unwrap_or_default(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        containers,
        owners,
        resource_annotations,
    })
}

/// A ReplicaSet's Deployment from names alone: `<deployment>-<pod-template-hash>`.
fn deployment_from_hash(replicaset: &str, labels: Option<&BTreeMap<String, String>>) -> Option<String> {
    let hash = labels?.get("pod-template-hash")?;
    let prefix = replicaset.strip_suffix(hash.as_str())?.strip_suffix('-')?;
    (!prefix.is_empty()).then(|| prefix.to_string())
}

/// Looks owners up in the API, caching answers (including "none").
pub struct OwnerResolver {
    client: kube::Client,
    cache: HashMap<(String, WorkloadKind, String), (Instant, Option<Owner>)>,
    /// Lookups answered by the API, and those that failed (forbidden, not found, …).
    pub lookups: u64,
    pub failures: u64,
}

impl OwnerResolver {
    pub fn new(client: kube::Client) -> OwnerResolver {
        OwnerResolver { client, cache: HashMap::new(), lookups: 0, failures: 0 }
    }

    /// The controller of a ReplicaSet or Job: `Ok(None)` when it has none, `Err` when the
    /// lookup failed.
    async fn parent(&mut self, ns: &str, kind: WorkloadKind, name: &str) -> Result<Option<Owner>, kube::Error> {
        let key = (ns.to_string(), kind, name.to_string());
        if let Some((at, owner)) = self.cache.get(&key)
            && at.elapsed() < OWNER_TTL
        {
            return Ok(owner.clone());
        }
        let meta = match kind {
            WorkloadKind::ReplicaSet => {
                Api::<ReplicaSet>::namespaced(self.client.clone(), ns).get(name).await?.metadata
            }
            WorkloadKind::Job => Api::<Job>::namespaced(self.client.clone(), ns).get(name).await?.metadata,
            _ => return Ok(None),
        };
        self.lookups += 1;
        let owner = controller(&meta)
            .and_then(|o| Some(Owner { kind: WorkloadKind::from_kind(&o.kind)?, name: o.name.clone() }));
        if self.cache.len() >= MAX_OWNERS {
            self.cache.retain(|_, (at, _)| at.elapsed() < OWNER_TTL);
            if self.cache.len() >= MAX_OWNERS {
                self.cache.clear();
            }
        }
        self.cache.insert(key, (Instant::now(), owner.clone()));
        Ok(owner)
    }

    /// The pod's owners: its controller and, for a ReplicaSet or Job, that one's controller.
    pub async fn owners(&mut self, pod: &Pod) -> Vec<Owner> {
        let m = &pod.metadata;
        let Some(c) = controller(m) else { return Vec::new() };
        let Some(kind) = WorkloadKind::from_kind(&c.kind) else { return Vec::new() };
        let ns = m.namespace.as_deref().unwrap_or_default();
        let mut owners = vec![Owner { kind, name: c.name.clone() }];
        if matches!(kind, WorkloadKind::ReplicaSet | WorkloadKind::Job) {
            match self.parent(ns, kind, &c.name).await {
                Ok(Some(parent)) => owners.push(parent),
                Ok(None) => {}
                Err(e) => {
                    self.failures += 1;
                    tracing::debug!(error = %e, "owner of {ns}/{}: lookup failed", c.name);
                    if kind == WorkloadKind::ReplicaSet
                        && let Some(d) = deployment_from_hash(&c.name, m.labels.as_ref())
                    {
                        owners.push(Owner { kind: WorkloadKind::Deployment, name: d });
                    }
                }
            }
        }
        owners
    }
}

/// Pods by UID, shared between the watch task and the lookups.
#[derive(Debug, Default)]
struct PodStore {
    by_uid: HashMap<String, Arc<PodInfo>>,
    /// Deleted pods, oldest first, with when they went.
    deleted: VecDeque<(Instant, String)>,
    /// The first full list has arrived.
    synced: bool,
    applied: u64,
}

impl PodStore {
    fn apply(&mut self, info: PodInfo) {
        self.applied += 1;
        self.deleted.retain(|(_, uid)| *uid != info.uid);
        if self.by_uid.len() >= MAX_PODS && !self.by_uid.contains_key(&info.uid) {
            self.expire(true);
        }
        self.by_uid.insert(info.uid.clone(), Arc::new(info));
    }

    fn delete(&mut self, uid: &str) {
        if self.by_uid.contains_key(uid) && !self.deleted.iter().any(|(_, u)| u == uid) {
            self.deleted.push_back((Instant::now(), uid.to_string()));
        }
        self.expire(false);
    }

    /// Forgets deleted pods past their grace (all of them when `force`).
    fn expire(&mut self, force: bool) {
        while let Some((at, _)) = self.deleted.front() {
            if !force && at.elapsed() < DELETED_GRACE {
                break;
            }
            let (_, uid) = self.deleted.pop_front().expect("front");
            self.by_uid.remove(&uid);
        }
    }
}

/// The node's pods, kept current by a background watch.
#[derive(Clone, Debug)]
pub struct Kubernetes {
    store: Arc<RwLock<PodStore>>,
    node: String,
    /// Held only for its drop: the watch stops with the last clone.
    _watch: Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why the Kubernetes metadata is not available.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("not in a Kubernetes pod: {0}")]
    NotInCluster(#[from] kube::config::InClusterError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("must run inside a tokio runtime")]
    NoRuntime,
    #[error("bad API server URL {0}")]
    Url(String),
}

impl Kubernetes {
    /// From the pod's service account (`KUBERNETES_SERVICE_HOST`/`_PORT`, the token and CA
    /// under `/var/run/secrets/kubernetes.io/serviceaccount`).
    pub fn in_cluster(node: String) -> Result<Kubernetes, KubeError> {
        let config = kube::Config::incluster()?;
        Kubernetes::start(kube::Client::try_from(config)?, node)
    }

    /// An API server at `url` without credentials (`kubectl proxy`, tests).
    pub fn from_url(url: &str, node: String) -> Result<Kubernetes, KubeError> {
        let uri = url.parse().map_err(|e| KubeError::Url(format!("{url}: {e}")))?;
        Kubernetes::start(kube::Client::try_from(kube::Config::new(uri))?, node)
    }

    /// Starts watching `node`'s pods with `client` (on the current tokio runtime).
    pub fn start(client: kube::Client, node: String) -> Result<Kubernetes, KubeError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| KubeError::NoRuntime)?;
        let store = Arc::new(RwLock::new(PodStore::default()));
        let task = handle.spawn(watch(client, node.clone(), store.clone()));
        Ok(Kubernetes { store, node, _watch: Arc::new(AbortOnDrop(task)) })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The pod with this UID, if known (or deleted within the grace).
    pub fn pod(&self, uid: &str) -> Option<Arc<PodInfo>> {
        self.store.read().ok()?.by_uid.get(uid).cloned()
    }

    /// Whether the first list has arrived.
    pub fn synced(&self) -> bool {
        self.store.read().is_ok_and(|s| s.synced)
    }

    /// Pods known now (including recently deleted ones).
    pub fn pods(&self) -> usize {
        self.store.read().map_or(0, |s| s.by_uid.len())
    }
}

async fn watch(client: kube::Client, node: String, store: Arc<RwLock<PodStore>>) {
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut owners = OwnerResolver::new(client);
    let mut stream = watcher(pods, config).default_backoff().boxed();
    // The pods of a list in progress (Init … InitDone), swapped in whole at InitDone.
    let mut listing: Option<Vec<PodInfo>> = None;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                // The watcher retries with backoff; say so once per failure.
                tracing::warn!(error = %e, "Kubernetes pod watch on node {node}");
                continue;
            }
        };
        match ev {
            watcher::Event::Init => listing = Some(Vec::new()),
            watcher::Event::InitApply(pod) => {
                let o = owners.owners(&pod).await;
                if let (Some(l), Some(info)) = (listing.as_mut(), pod_info(&pod, o)) {
                    l.push(info);
                }
            }
            watcher::Event::InitDone => {
                let Some(list) = listing.take() else { continue };
                let Ok(mut s) = store.write() else { return };
                let listed: std::collections::HashSet<&str> = list.iter().map(|p| p.uid.as_str()).collect();
                let gone: Vec<String> = s.by_uid.keys().filter(|u| !listed.contains(u.as_str())).cloned().collect();
                for uid in gone {
                    s.delete(&uid);
                }
                for info in list {
                    s.apply(info);
                }
                if !s.synced {
                    tracing::info!("Kubernetes: {} pods on node {node}", s.by_uid.len());
                }
                s.synced = true;
            }
            watcher::Event::Apply(pod) => {
                let o = owners.owners(&pod).await;
                if let Some(info) = pod_info(&pod, o)
                    && let Ok(mut s) = store.write()
                {
                    s.apply(info);
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref()
                    && let Ok(mut s) = store.write()
                {
                    s.delete(uid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn pod_fields() {
        let p = pod(serde_json::json!({
            "metadata": {
                "name": "ollama-7d9f8b6c5d-x2x9q", "namespace": "ai", "uid": "2c7f4b1e-8d3a-4e5f-9a6b-0c1d2e3f4a5b",
                "labels": {"app": "ollama", "pod-template-hash": "7d9f8b6c5d"},
                "annotations": {"resource.opentelemetry.io/service.name": "llm", "other": "x",
                                "resource.opentelemetry.io/": "empty"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "ollama-7d9f8b6c5d",
                                      "uid": "u", "controller": true, "blockOwnerDeletion": true}]
            },
            "spec": {"nodeName": "node-1", "containers": [{"name": "ollama"}]},
            "status": {"containerStatuses": [{"name": "ollama", "containerID": "containerd://abc", "image": "i",
                "imageID": "", "ready": true, "restartCount": 0}],
                "initContainerStatuses": [{"name": "pull", "containerID": "cri-o://def", "image": "i",
                "imageID": "", "ready": false, "restartCount": 0}]}
        }));
        let info = pod_info(&p, vec![]).unwrap();
        assert_eq!(
            (info.name.as_str(), info.namespace.as_str(), info.node.as_deref()),
            ("ollama-7d9f8b6c5d-x2x9q", "ai", Some("node-1"))
        );
        assert_eq!(info.container_name("abc"), Some("ollama"));
        assert_eq!(info.container_name("def"), Some("pull"));
        assert_eq!(info.container_name("zzz"), None);
        assert_eq!(info.resource_annotations, vec![("service.name".to_string(), "llm".to_string())]);
        assert_eq!(controller(&p.metadata).map(|o| o.name.as_str()), Some("ollama-7d9f8b6c5d"));
        assert_eq!(deployment_from_hash("ollama-7d9f8b6c5d", p.metadata.labels.as_ref()).as_deref(), Some("ollama"));
        assert_eq!(deployment_from_hash("other-7d9f8b6c5d0", p.metadata.labels.as_ref()), None);
        assert_eq!(deployment_from_hash("-7d9f8b6c5d", p.metadata.labels.as_ref()), None);
        assert_eq!(deployment_from_hash("ollama-7d9f8b6c5d", None), None);
        // No UID: not kept.
        assert!(pod_info(&pod(serde_json::json!({"metadata": {"name": "x"}})), vec![]).is_none());
    }

    #[test]
    fn store_keeps_deleted_pods_for_a_while() {
        let mut s = PodStore::default();
        let info = |uid: &str| PodInfo { uid: uid.into(), name: uid.into(), ..Default::default() };
        s.apply(info("a"));
        s.apply(info("b"));
        s.delete("a");
        assert!(s.by_uid.contains_key("a"), "still known within the grace");
        s.apply(info("a"));
        assert!(s.deleted.is_empty(), "recreated: no longer deleted");
        s.delete("b");
        s.expire(true);
        assert!(!s.by_uid.contains_key("b"));
        assert_eq!(s.by_uid.len(), 1);
    }
}
