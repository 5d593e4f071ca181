//! The attribution caches end to end on a fake host: a temporary cgroup tree and procfs.

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracer_core::identity::{Owner, PodInfo, WorkloadKind};
use tracer_core::llm::{LlmCall, Route};
use tracer_core::segment::{Peers, Timestamp};
use tracer_core::span::identity::{call_resource, span_attributes};
use tracer_core::span::{Resource, SpanBuilder, SpanConfig, semconv as sc};

use super::*;
use crate::capture::socket::SocketEventKind;

const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const POD: &str = "11111111-2222-3333-4444-555555555555";

struct Host {
    root: PathBuf,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

impl Host {
    fn new(tag: &str) -> Host {
        let root = std::env::temp_dir().join(format!("ot-attr-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("cg")).unwrap();
        fs::create_dir_all(root.join("proc")).unwrap();
        Host { root }
    }

    /// A cgroup holding `pids`; returns its id.
    fn cgroup(&self, path: &str, pids: &[u32]) -> u64 {
        let dir = self.root.join("cg").join(path.trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap();
        let procs: String = pids.iter().map(|p| format!("{p}\n")).collect();
        fs::write(dir.join("cgroup.procs"), procs).unwrap();
        fs::metadata(&dir).unwrap().ino()
    }

    fn process(&self, pid: u32, comm: &str, argv: &[&str]) {
        let d = self.root.join("proc").join(pid.to_string());
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("stat"), format!("{pid} ({comm}) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {pid}00 0 0"))
            .unwrap();
        fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        let cmdline: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
        fs::write(d.join("cmdline"), cmdline).unwrap();
    }

    fn attribution(&self) -> Attribution {
        let config = AttributionConfig {
            cgroup_root: self.root.join("cg"),
            proc_root: self.root.join("proc"),
            hold: Duration::from_secs(2),
            // As without CAP_SYS_PTRACE (the fake procfs has no descriptors anyway).
            read_fds: false,
            node_name: Some("node-a".into()),
            ..Default::default()
        };
        Attribution::start(config, None).unwrap()
    }
}

fn call(client: u16) -> LlmCall {
    let mut c = LlmCall::for_test(Route::Chat);
    c.flow.client = SocketAddr::new("10.0.0.2".parse().unwrap(), client);
    c.flow.server = "10.0.0.1:11434".parse().unwrap();
    c
}

/// Who the ends of `c` are, its connection first seen at `opened` (with its SYN when
/// `handshake`), waiting for lookups under way as the enrichment stage's hold would.
fn identify(a: &Attribution, c: &LlmCall, opened: Timestamp, handshake: bool) -> Option<Arc<CallIdentity>> {
    let mut c = c.clone();
    c.connection.opened = opened;
    c.connection.handshake = handshake;
    a.resolve_within(&c, Duration::from_secs(2)).identity()
}

fn attrs(id: &CallIdentity) -> HashMap<String, tracer_core::span::AttrValue> {
    let mut v = Vec::new();
    span_attributes(id, &mut v);
    v.into_iter().map(|kv| (kv.key.into_owned(), kv.value)).collect()
}

fn s(v: &str) -> tracer_core::span::AttrValue {
    tracer_core::span::AttrValue::Str(v.into())
}

#[test]
fn both_ends_from_cgroups_and_events() {
    let h = Host::new("ends");
    let server_cg = h.cgroup(
        &format!("/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{CID}.scope", POD.replace('-', "_")),
        &[40],
    );
    let client_cg = h.cgroup("/system.slice/agent.service", &[50, 51]);
    h.process(40, "ollama", &["/bin/ollama", "serve"]);
    h.process(50, "python3", &["python3", "agent.py", "--token", "abc"]);
    let a = h.attribution();
    let mut c = call(40000);
    c.connection.peers = Peers { client_cgroup: Some(client_cg), server_cgroup: Some(server_cg) };
    // The client's connect() as the tracepoint reports it.
    a.socket_event(SocketEvent {
        kind: SocketEventKind::Connect,
        ts: Timestamp(1_000),
        cgroup_id: Some(client_cg),
        local: c.flow.client,
        remote: c.flow.server,
        pid: 50,
        comm: "python3".into(),
        sock: 1,
    });
    a.prefetch(c.flow, Side::Server, server_cg);
    let id = identify(&a, &c, Timestamp(1_500), true).expect("identified");
    let m = attrs(&id);
    // Server: the only process of its container's cgroup (no fds in the fake procfs).
    assert_eq!(m[sc::PROCESS_PID], tracer_core::span::AttrValue::Int(40));
    assert_eq!(m[sc::PROCESS_EXECUTABLE_NAME], s("ollama"));
    assert_eq!(m[sc::PROCESS_COMMAND], s("/bin/ollama"));
    assert_eq!(m[sc::CONTAINER_ID], s(CID));
    assert_eq!(m[sc::K8S_POD_UID], s(POD));
    assert_eq!(m[sc::K8S_NODE_NAME], s("node-a"));
    assert!(!m.contains_key(sc::PROCESS_COMMAND_ARGS), "arguments only when asked for");
    // Client: from its connect(), in a systemd service.
    assert_eq!(m["ollama_tracer.client.process.pid"], tracer_core::span::AttrValue::Int(50));
    assert_eq!(m["ollama_tracer.client.process.executable.name"], s("python3"));
    assert_eq!(m["ollama_tracer.client.systemd.unit"], s("agent.service"));
    assert_eq!(m["ollama_tracer.client.process.linux.cgroup"], s("0::/system.slice/agent.service"));
    assert!(!m.contains_key("ollama_tracer.client.container.id"));

    // A connect() far from this connection's SYN is another connection's: not used, and the
    // client cgroup holds two processes, so the client process stays unknown.
    let id = identify(&a, &c, Timestamp(10_000_000_000), true).unwrap();
    assert!(id.client.process.is_none());
    assert!(id.client.cgroup.is_some());
    // Not the handshake: a connect() cannot be this connection's.
    let id = identify(&a, &c, Timestamp(1_500), false).unwrap();
    assert!(id.client.process.is_none());
    let st = a.stats();
    assert_eq!((st.socket_events, st.dropped_requests), (1, 0));
    assert!(st.cgroup_scans >= 1);
}

#[test]
fn unknown_and_remote_ends_stay_empty() {
    let h = Host::new("unknown");
    let a = h.attribution();
    // A remote client and a capture without cgroups (TCX, libpcap): nothing to say.
    assert!(identify(&a, &call(1), Timestamp(0), true).is_none());
    // A cgroup id that is nowhere in the tree.
    let mut c = call(2);
    c.connection.peers.server_cgroup = Some(u64::MAX - 1);
    let id = identify(&a, &c, Timestamp(0), true);
    assert!(id.is_none(), "{id:?}");
    // The init system's cgroup never names a server process.
    let init = h.cgroup("/init.scope", &[1]);
    h.process(1, "systemd", &["/sbin/init"]);
    let mut c = call(3);
    c.connection.peers.server_cgroup = Some(init);
    let id = identify(&a, &c, Timestamp(0), true).unwrap();
    assert!(id.server.process.is_none());
    assert_eq!(id.server.cgroup.as_ref().unwrap().systemd_unit.as_deref(), Some("init.scope"));
}

#[test]
fn listen_events_name_the_server() {
    let h = Host::new("listen");
    let cg = h.cgroup("/system.slice/ollama.service", &[60, 61]);
    h.process(60, "ollama", &["/usr/bin/ollama", "serve"]);
    h.process(61, "ollama", &["/usr/bin/ollama", "runner"]);
    let a = h.attribution();
    let mut c = call(4);
    c.connection.peers.server_cgroup = Some(cg);
    // Two processes and no fds to read: unknown…
    assert!(identify(&a, &c, Timestamp(0), true).unwrap().server.process.is_none());
    // …until the server's listen() is seen.
    a.socket_event(SocketEvent {
        kind: SocketEventKind::Listen,
        ts: Timestamp(5),
        cgroup_id: Some(cg),
        local: "0.0.0.0:11434".parse().unwrap(),
        remote: "0.0.0.0:0".parse().unwrap(),
        pid: 60,
        comm: "ollama".into(),
        sock: 77,
    });
    assert!(a.settle(Duration::from_secs(2)));
    let id = identify(&a, &c, Timestamp(0), true).unwrap();
    assert_eq!(id.server.process.as_ref().map(|p| p.pid), Some(60));
    assert_eq!(id.server.cgroup.as_ref().unwrap().systemd_unit.as_deref(), Some("ollama.service"));
    // Closed: back to unknown.
    a.socket_event(SocketEvent {
        kind: SocketEventKind::Unlisten,
        ts: Timestamp(6),
        cgroup_id: None,
        local: "0.0.0.0:11434".parse().unwrap(),
        remote: "0.0.0.0:0".parse().unwrap(),
        pid: 0,
        comm: String::new(),
        sock: 77,
    });
    assert!(a.settle(Duration::from_secs(2)));
    assert!(identify(&a, &c, Timestamp(0), true).unwrap().server.process.is_none());
}

#[test]
fn workload_names_the_service() {
    let pod = PodInfo {
        uid: POD.into(),
        name: "ollama-7d9f8b6c5d-x2x9q".into(),
        namespace: "ai".into(),
        node: Some("node-a".into()),
        containers: vec![(CID.into(), "ollama".into())],
        owners: vec![
            Owner { kind: WorkloadKind::ReplicaSet, name: "ollama-7d9f8b6c5d".into() },
            Owner { kind: WorkloadKind::Deployment, name: "ollama".into() },
        ],
        resource_annotations: vec![],
    };
    let cgroup = cgroup::parse_path(
        9,
        &format!("/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{CID}.scope", POD.replace('-', "_")),
    );
    let id = CallIdentity {
        server: Endpoint {
            cgroup: Some(Arc::new(cgroup)),
            process: None,
            pod: Some(Arc::new(pod.clone())),
            node_name: Some(Arc::from("node-a")),
        },
        client: Endpoint::default(),
        workload_service_name: true,
    };
    let m = attrs(&id);
    assert_eq!(m[sc::K8S_DEPLOYMENT_NAME], s("ollama"));
    assert_eq!(m[sc::K8S_REPLICASET_NAME], s("ollama-7d9f8b6c5d"));
    assert_eq!(m[sc::K8S_CONTAINER_NAME], s("ollama"));
    assert_eq!(m[sc::K8S_NAMESPACE_NAME], s("ai"));
    let base = Resource::new("ollama", Some("host".into()), Vec::new());
    let mut c = call(5);
    c.identity = Some(Arc::new(id.clone()));
    let r = call_resource(&base, &c);
    assert_eq!(r.get(sc::SERVICE_NAME), Some(&s("ollama")));
    assert_eq!(r.get(sc::SERVICE_NAMESPACE), Some(&s("ai")));
    assert_eq!(r.get(sc::SERVICE_INSTANCE_ID), Some(&s("ai.ollama-7d9f8b6c5d-x2x9q.ollama")));
    assert_eq!(r.get(sc::HOST_NAME), Some(&s("host")));
    // The annotation wins; a StatefulSet's pod is named after the StatefulSet.
    let mut p2 = pod.clone();
    p2.owners = vec![Owner { kind: WorkloadKind::StatefulSet, name: "ollama-gpu".into() }];
    let mut id2 = id.clone();
    id2.server.pod = Some(Arc::new(p2.clone()));
    c.identity = Some(Arc::new(id2.clone()));
    assert_eq!(call_resource(&base, &c).get(sc::SERVICE_NAME), Some(&s("ollama-gpu")));
    p2.resource_annotations = vec![("service.name".into(), "llm".into())];
    id2.server.pod = Some(Arc::new(p2));
    c.identity = Some(Arc::new(id2.clone()));
    assert_eq!(call_resource(&base, &c).get(sc::SERVICE_NAME), Some(&s("llm")));
    // Asked to keep the configured name, or no pod: the base resource.
    id2.workload_service_name = false;
    c.identity = Some(Arc::new(id2));
    assert!(matches!(call_resource(&base, &c), std::borrow::Cow::Borrowed(_)));
    c.identity = None;
    assert!(matches!(call_resource(&base, &c), std::borrow::Cow::Borrowed(_)));
    // The span builder puts the identity on the call's span only.
    c.identity = Some(Arc::new(id));
    let spans = SpanBuilder::new(SpanConfig { id_seed: Some(1), ..Default::default() }).build_all(&c);
    assert_eq!(spans[0].attr_str(sc::K8S_POD_NAME), Some("ollama-7d9f8b6c5d-x2x9q"));
}

#[test]
fn client_names() {
    assert_eq!(tracer_core::span::identity::client_name(sc::PROCESS_PID), "ollama_tracer.client.process.pid");
    assert_eq!(tracer_core::span::identity::client_name(sc::TRACER_SYSTEMD_UNIT), "ollama_tracer.client.systemd.unit");
    assert_eq!(tracer_core::span::identity::client_name(sc::K8S_CRONJOB_NAME), "ollama_tracer.client.k8s.cronjob.name");
}

#[allow(dead_code)]
fn unused(_: &Path) {}

/// A server cgroup whose `cgroup.procs` is a FIFO: the worker's lookup of its process blocks
/// until `release` writes to it, so "lookups under way" lasts exactly as long as a test wants.
struct Stalled {
    id: u64,
    fifo: PathBuf,
}

impl Stalled {
    fn new(h: &Host, path: &str) -> Stalled {
        let dir = h.root.join("cg").join(path.trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("cgroup.procs");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo creates a file and touches no memory of ours.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        Stalled { id: fs::metadata(&dir).unwrap().ino(), fifo }
    }

    /// Lets the worker's read finish: the cgroup holds `pid`.
    fn release(&self, pid: u32) {
        fs::write(&self.fifo, format!("{pid}\n")).unwrap();
    }
}

fn held_call(exchange: u64, server_cgroup: Option<u64>) -> LlmCall {
    let mut c = call(40_000 + exchange as u16);
    c.exchange = exchange;
    c.connection.peers.server_cgroup = server_cgroup;
    c
}

#[test]
fn the_enrichment_stage_never_waits_keeps_order_and_lets_go_at_the_deadline() {
    let h = Host::new("enrich");
    h.process(40, "ollama", &["/bin/ollama", "serve"]);
    let stalled = Stalled::new(&h, "/system.slice/ollama.service");
    let mut config = AttributionConfig {
        cgroup_root: h.root.join("cg"),
        proc_root: h.root.join("proc"),
        read_fds: false,
        ..Default::default()
    };
    config.hold = Duration::from_millis(50);
    let a = Attribution::start(config, None).unwrap();
    let woken = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let w = woken.clone();
    a.set_waker(Box::new(move || {
        w.fetch_add(1, Ordering::Relaxed);
    }));
    let mut e = enrich::Enricher::new(a.clone());
    let mut out: Vec<LlmCall> = Vec::new();
    let t0 = Instant::now();

    // Its server's process is being looked up (the worker is stuck in cgroup.procs): held.
    e.push(held_call(1, Some(stalled.id)), t0, &mut |c| out.push(c));
    // Nothing to look up, but it ended after call 1: it waits its turn.
    e.push(held_call(2, None), t0, &mut |c| out.push(c));
    assert!(out.is_empty() && e.held() == 2, "held in order: {:?}", out.iter().map(|c| c.exchange).collect::<Vec<_>>());
    assert_eq!(e.next_deadline(), Some(t0 + Duration::from_millis(50)));
    e.poll(t0 + Duration::from_millis(49), &mut |c| out.push(c));
    assert!(out.is_empty(), "not before the deadline");
    // The cgroup's path is answered (the worker then blocks on its processes).
    let until = Instant::now() + Duration::from_secs(5);
    while a.resolve(&held_call(1, Some(stalled.id))).identity().is_none() {
        assert!(Instant::now() < until, "the cgroup was never resolved");
        std::thread::sleep(Duration::from_millis(2));
    }
    // The deadline: both go, in order, call 1 with what was known (its cgroup, no process).
    e.poll(t0 + Duration::from_millis(50), &mut |c| out.push(c));
    assert_eq!(out.iter().map(|c| c.exchange).collect::<Vec<_>>(), [1, 2]);
    let id = out[0].identity.as_ref().expect("the cgroup was known");
    assert_eq!(id.server.cgroup.as_ref().map(|c| c.systemd_unit.as_deref()), Some(Some("ollama.service")));
    assert!(id.server.process.is_none(), "the process was not known by then");
    assert!(out[1].identity.is_none());
    let st = a.stats();
    assert_eq!((st.identified, st.waited, st.wait_timeouts), (2, 1, 1), "{st}");

    // Once answered, the worker wakes the driver and the next call goes at once.
    let before = woken.load(Ordering::Relaxed);
    stalled.release(40);
    assert!(a.settle(Duration::from_secs(5)));
    assert!(woken.load(Ordering::Relaxed) > before, "the waker was called");
    out.clear();
    e.push(held_call(3, Some(stalled.id)), Instant::now(), &mut |c| out.push(c));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].identity.as_ref().and_then(|i| i.server.process.as_ref()).map(|p| p.pid), Some(40));
    assert_eq!(e.held(), 0);
}

#[test]
fn an_answer_lets_a_held_call_go_before_its_deadline_and_the_end_lets_every_call_go() {
    let h = Host::new("enrich-answer");
    h.process(41, "ollama", &["/bin/ollama", "serve"]);
    let stalled = Stalled::new(&h, "/system.slice/ollama.service");
    let config = AttributionConfig {
        cgroup_root: h.root.join("cg"),
        proc_root: h.root.join("proc"),
        read_fds: false,
        hold: Duration::from_secs(30),
        ..Default::default()
    };
    let a = Attribution::start(config, None).unwrap();
    let mut e = enrich::Enricher::new(a.clone());
    let mut out: Vec<LlmCall> = Vec::new();
    let t0 = Instant::now();
    e.push(held_call(1, Some(stalled.id)), t0, &mut |c| out.push(c));
    assert!(out.is_empty());
    stalled.release(41);
    assert!(a.settle(Duration::from_secs(5)));
    e.poll(t0, &mut |c| out.push(c));
    assert_eq!(out.len(), 1, "answered: it goes long before its 30 s");
    assert_eq!(out[0].identity.as_ref().and_then(|i| i.server.process.as_ref()).map(|p| p.pid), Some(41));
    let st = a.stats();
    assert_eq!((st.waited, st.wait_timeouts), (1, 0), "{st}");

    // Too many held: the oldest goes at once (counted as given up), the rest at the end.
    let blocked = Stalled::new(&h, "/system.slice/other.service");
    out.clear();
    for i in 0..enrich::MAX_HELD as u64 + 1 {
        e.push(held_call(10 + i, Some(blocked.id)), t0, &mut |c| out.push(c));
    }
    assert_eq!(out.iter().map(|c| c.exchange).collect::<Vec<_>>(), [10], "the oldest made room");
    assert_eq!(e.held(), enrich::MAX_HELD);
    blocked.release(42);
    e.finish(&mut |c| out.push(c));
    assert_eq!(out.len(), enrich::MAX_HELD + 1, "every call goes at the end");
    assert!(out.windows(2).all(|w| w[0].exchange < w[1].exchange), "in order");
    assert_eq!(e.held(), 0);
}
