//! From identities to OpenTelemetry names: span attributes for both ends, and the service a
//! Kubernetes server's workload names.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

use crate::identity::{CallIdentity, Endpoint, WorkloadKind};
use crate::llm::LlmCall;
use crate::span::semconv as sc;
use crate::span::{AttrValue, KeyValue, Resource};

/// Every name an endpoint's attributes use.
const NAMES: [&str; 19] = [
    sc::PROCESS_PID,
    sc::PROCESS_EXECUTABLE_NAME,
    sc::PROCESS_EXECUTABLE_PATH,
    sc::PROCESS_COMMAND,
    sc::PROCESS_COMMAND_ARGS,
    sc::PROCESS_LINUX_CGROUP,
    sc::CONTAINER_ID,
    sc::K8S_POD_UID,
    sc::K8S_POD_NAME,
    sc::K8S_NAMESPACE_NAME,
    sc::K8S_NODE_NAME,
    sc::K8S_CONTAINER_NAME,
    sc::K8S_REPLICASET_NAME,
    sc::K8S_DEPLOYMENT_NAME,
    sc::K8S_STATEFULSET_NAME,
    sc::K8S_DAEMONSET_NAME,
    sc::K8S_JOB_NAME,
    sc::K8S_CRONJOB_NAME,
    sc::TRACER_SYSTEMD_UNIT,
];

/// The client's name for a server attribute: the prefix, then the name without the tracer's
/// own namespace (`process.pid` → `ollama_tracer.client.process.pid`,
/// `ollama_tracer.systemd.unit` → `ollama_tracer.client.systemd.unit`). Built once.
pub fn client_name(name: &'static str) -> &'static str {
    static CLIENT: LazyLock<HashMap<&'static str, &'static str>> = LazyLock::new(|| {
        NAMES
            .iter()
            .map(|n| {
                let bare = n.strip_prefix("ollama_tracer.").unwrap_or(n);
                (*n, &*Box::leak(format!("{}{bare}", sc::CLIENT_PREFIX).into_boxed_str()))
            })
            .collect()
    });
    CLIENT.get(name).copied().unwrap_or(name)
}

fn workload_name(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::ReplicaSet => sc::K8S_REPLICASET_NAME,
        WorkloadKind::Deployment => sc::K8S_DEPLOYMENT_NAME,
        WorkloadKind::StatefulSet => sc::K8S_STATEFULSET_NAME,
        WorkloadKind::DaemonSet => sc::K8S_DAEMONSET_NAME,
        WorkloadKind::Job => sc::K8S_JOB_NAME,
        WorkloadKind::CronJob => sc::K8S_CRONJOB_NAME,
    }
}

fn endpoint(e: &Endpoint, client: bool, out: &mut Vec<KeyValue>) {
    let mut put = |name: &'static str, value: AttrValue| {
        out.push(KeyValue { key: Cow::Borrowed(if client { client_name(name) } else { name }), value });
    };
    if let Some(p) = &e.process {
        put(sc::PROCESS_PID, AttrValue::Int(p.pid.into()));
        if let Some(v) = &p.executable_name {
            put(sc::PROCESS_EXECUTABLE_NAME, v.clone().into());
        }
        if let Some(v) = &p.executable_path {
            put(sc::PROCESS_EXECUTABLE_PATH, v.clone().into());
        }
        if let Some(v) = &p.command {
            put(sc::PROCESS_COMMAND, v.clone().into());
        }
        if let Some(v) = &p.args {
            put(sc::PROCESS_COMMAND_ARGS, AttrValue::StrArray(v.clone()));
        }
    }
    if let Some(c) = &e.cgroup {
        put(sc::PROCESS_LINUX_CGROUP, format!("0::{}", c.path).into());
        if let Some(v) = &c.container_id {
            put(sc::CONTAINER_ID, v.clone().into());
        }
        if let Some(v) = &c.pod_uid {
            put(sc::K8S_POD_UID, v.clone().into());
        }
        if let Some(v) = &c.systemd_unit {
            put(sc::TRACER_SYSTEMD_UNIT, v.clone().into());
        }
    }
    if let Some(pod) = &e.pod {
        put(sc::K8S_POD_NAME, pod.name.clone().into());
        put(sc::K8S_NAMESPACE_NAME, pod.namespace.clone().into());
        if let Some(name) =
            e.cgroup.as_ref().and_then(|c| c.container_id.as_deref()).and_then(|id| pod.container_name(id))
        {
            put(sc::K8S_CONTAINER_NAME, name.to_string().into());
        }
        for o in &pod.owners {
            put(workload_name(o.kind), o.name.clone().into());
        }
    }
    if let Some(n) = &e.node_name {
        put(sc::K8S_NODE_NAME, n.to_string().into());
    }
}

/// The identity attributes of a call's span: the server's under the standard names, the
/// client's behind [`sc::CLIENT_PREFIX`].
pub fn span_attributes(id: &CallIdentity, out: &mut Vec<KeyValue>) {
    endpoint(&id.server, false, out);
    endpoint(&id.client, true, out);
}

/// `service.name`, `service.namespace` and `service.instance.id` of a server in a pod, per
/// OpenTelemetry's Kubernetes convention: the pod's `resource.opentelemetry.io/*` annotations,
/// else the workload from the top (Deployment, ReplicaSet, StatefulSet, DaemonSet, CronJob,
/// Job), the pod, the container; the namespace; `<namespace>.<pod>.<container>`. (The
/// well-known `app.kubernetes.io/*` labels are not used: the convention wants them opt-in.)
fn server_service(id: &CallIdentity) -> Option<[(&'static str, String); 3]> {
    let pod = id.server.pod.as_ref()?;
    let container =
        id.server.cgroup.as_ref().and_then(|c| c.container_id.as_deref()).and_then(|c| pod.container_name(c));
    let order = [
        WorkloadKind::Deployment,
        WorkloadKind::ReplicaSet,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
        WorkloadKind::CronJob,
        WorkloadKind::Job,
    ];
    let name = pod
        .annotation(sc::SERVICE_NAME)
        .or_else(|| order.iter().find_map(|k| pod.owner(*k)))
        .unwrap_or(&pod.name)
        .to_string();
    let namespace = pod.annotation(sc::SERVICE_NAMESPACE).unwrap_or(&pod.namespace).to_string();
    let instance = match (pod.annotation(sc::SERVICE_INSTANCE_ID), container) {
        (Some(v), _) => v.to_string(),
        (None, Some(c)) => format!("{}.{}.{c}", pod.namespace, pod.name),
        (None, None) => format!("{}.{}", pod.namespace, pod.name),
    };
    Some([(sc::SERVICE_NAME, name), (sc::SERVICE_NAMESPACE, namespace), (sc::SERVICE_INSTANCE_ID, instance)])
}

/// The resource a call's spans are reported under: `base`, with the service named after the
/// server's Kubernetes workload when the server is in a pod (and that is wanted).
pub fn call_resource<'a>(base: &'a Resource, call: &LlmCall) -> Cow<'a, Resource> {
    let Some(service) = call.identity.as_deref().filter(|id| id.workload_service_name).and_then(server_service) else {
        return Cow::Borrowed(base);
    };
    let mut r = base.clone();
    for (k, v) in service {
        match r.attributes.iter_mut().find(|a| a.key == k) {
            Some(a) => a.value = AttrValue::Str(v),
            None => r.attributes.push(KeyValue::new(k, v)),
        }
    }
    Cow::Owned(r)
}
