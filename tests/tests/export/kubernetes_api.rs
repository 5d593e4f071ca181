//! The pod watch against a stand-in Kubernetes API server on 127.0.0.1 answering with recorded
//! objects (`tests/data/k8s`): the node's pods listed, their owners followed (ReplicaSet →
//! Deployment, Job → CronJob), watch events applied, and what happens without RBAC for
//! ReplicaSets. No privileges needed.

use std::time::{Duration, Instant};

use serde_json::json;

use ollama_tracer::attribution::Kubernetes;
use testkit::kubeapi::{FakeApi, document};
use tracer_core::identity::{Owner, WorkloadKind};

const OLLAMA_UID: &str = "8a3f6c2e-5b1d-4e9a-b7c4-2d8e0f1a6b93";
const AGENT_UID: &str = "f0e1d2c3-b4a5-4968-8776-5a4b3c2d1e0f";

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn owner(kind: WorkloadKind, name: &str) -> Owner {
    Owner { kind, name: name.into() }
}

#[test]
fn pods_and_workloads_of_the_node() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let _enter = rt.enter();
    let api = rt.block_on(FakeApi::start()).unwrap();
    api.add_pod(document("pod-ollama.json"));
    api.add_pod(document("pod-agent.json"));
    api.put("/apis/apps/v1/namespaces/ai/replicasets/ollama-6f7b9c8d4", document("replicaset-ollama.json"));
    api.put("/apis/batch/v1/namespaces/agents/jobs/nightly-eval-29400480", document("job-agent.json"));
    let k = Kubernetes::from_url(&api.url(), "gpu-node-3".into()).unwrap();
    wait_for("the first list", || k.synced());

    let ollama = k.pod(OLLAMA_UID).expect("the Ollama pod");
    assert_eq!((ollama.name.as_str(), ollama.namespace.as_str()), ("ollama-6f7b9c8d4-qk2xz", "ai"));
    assert_eq!(ollama.node.as_deref(), Some("gpu-node-3"));
    assert_eq!(
        ollama.owners,
        [owner(WorkloadKind::ReplicaSet, "ollama-6f7b9c8d4"), owner(WorkloadKind::Deployment, "ollama")]
    );
    assert_eq!(
        ollama.container_name("3b9e1f0c7a6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f"),
        Some("ollama")
    );
    let agent = k.pod(AGENT_UID).expect("the agent pod");
    assert_eq!(
        agent.owners,
        [owner(WorkloadKind::Job, "nightly-eval-29400480"), owner(WorkloadKind::CronJob, "nightly-eval")]
    );
    assert_eq!(agent.annotation("service.name"), Some("nightly-eval"));
    assert_eq!(k.pods(), 2);

    // Only this node's pods are asked for, then watched from the list's version.
    let requests = api.requests();
    let list = requests.iter().find(|r| r.starts_with("/api/v1/pods?") && !r.contains("watch=")).unwrap();
    assert!(list.contains("fieldSelector=spec.nodeName%3Dgpu-node-3"), "{list}");
    wait_for("the watch", || api.requests().iter().any(|r| r.contains("watch=true")));
    let watch = api.requests().into_iter().find(|r| r.contains("watch=true")).unwrap();
    assert!(watch.contains("resourceVersion=1000") && watch.contains("spec.nodeName%3Dgpu-node-3"), "{watch}");

    // A StatefulSet pod arrives; without RBAC for ReplicaSets, a Deployment's name comes from
    // the ReplicaSet's name and the pod-template-hash label.
    let mut gpu = document("pod-ollama.json");
    gpu["metadata"]["uid"] = json!("0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e");
    gpu["metadata"]["name"] = json!("ollama-gpu-0");
    gpu["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "ollama-gpu", "uid": "u", "controller": true}]);
    api.push("ADDED", gpu.clone());
    let mut canary = document("pod-ollama.json");
    canary["metadata"]["uid"] = json!("1c2d3e4f-5a6b-4c7d-9e8f-0a1b2c3d4e5f");
    canary["metadata"]["labels"]["pod-template-hash"] = json!("5c4d3e2f1");
    canary["metadata"]["ownerReferences"][0]["name"] = json!("ollama-canary-5c4d3e2f1");
    api.forbid("/apis/apps/v1/namespaces/ai/replicasets/ollama-canary-5c4d3e2f1");
    api.push("ADDED", canary);
    wait_for("the watched pods", || k.pods() == 4);
    assert_eq!(
        k.pod("0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e").unwrap().owners,
        [owner(WorkloadKind::StatefulSet, "ollama-gpu")]
    );
    assert_eq!(
        k.pod("1c2d3e4f-5a6b-4c7d-9e8f-0a1b2c3d4e5f").unwrap().owners,
        [owner(WorkloadKind::ReplicaSet, "ollama-canary-5c4d3e2f1"), owner(WorkloadKind::Deployment, "ollama-canary")]
    );
    // A deleted pod stays known for a while: calls ending just after it went keep their names.
    api.push("DELETED", gpu);
    std::thread::sleep(Duration::from_millis(200));
    assert!(k.pod("0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e").is_some());
    // The ReplicaSet was asked for once, however many pods it owns.
    let rs = api.requests().iter().filter(|r| r.ends_with("/replicasets/ollama-6f7b9c8d4")).count();
    assert_eq!(rs, 1);
}

#[test]
fn an_unreachable_api_leaves_pods_unknown() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let _enter = rt.enter();
    // A port nothing listens on: the watch retries in the background, lookups find nothing.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let k = Kubernetes::from_url(&format!("http://127.0.0.1:{port}"), "n".into()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!k.synced());
    assert!(k.pod(OLLAMA_UID).is_none());
    assert!(Kubernetes::from_url("not a url", "n".into()).is_err());
}
