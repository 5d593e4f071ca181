//! Attribution: who called and who answered, as far as the host can know.
//!
//! For each end of a call that is a local socket: the process (pid, executable, command), the
//! cgroup and what its path says (container id, Kubernetes pod UID, systemd unit), and on
//! Kubernetes the pod, namespace, node, container and owning workload. The server's identity is
//! exported under the standard resource attribute names (`process.pid`, `container.id`,
//! `k8s.pod.name`, …) as span attributes, the client's under the same names behind
//! [`semconv::CLIENT_PREFIX`](crate::span::semconv::CLIENT_PREFIX); in Kubernetes the server's
//! workload also names the service ([`call_resource`]). docs/attribution.md has the whole
//! picture.
//!
//! Where each fact comes from:
//! - the cgroup of each end's socket: the eBPF `cgroup_skb` hooks, per packet, learnt by
//!   reassembly from both copies of a localhost packet ([`crate::segment::Peers`]);
//! - the client process: the `sock/inet_sock_set_state` tracepoint in `connect()`
//!   ([`SocketEvent`]), else the one process of the client's cgroup that holds the socket;
//! - the server process: the tracepoint in `listen()`, else the process of the server's cgroup
//!   that holds the listening socket (its file descriptors, which needs CAP_SYS_PTRACE), else
//!   the cgroup's only process;
//! - cgroup id → path: a walk of the cgroup v2 hierarchy ([`cgroup`]);
//! - pods: a watch of this node's pods ([`kubernetes`]).
//!
//! Nothing here runs on the capture's or the pipeline's hot path: `/proc` and the cgroup tree
//! are read by one worker thread fed through a bounded queue, the Kubernetes watch runs on the
//! async runtime, and [`Attribution::identify`] reads the caches, waiting at most
//! [`AttributionConfig::max_wait`] for lookups already under way (or none, when the worker is
//! behind). What is not known by then is left out of the span; what cannot be known for sure
//! is never guessed.

pub mod cgroup;
pub mod cli;
pub mod kubernetes;
pub mod process;
mod resource;

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use self::cgroup::CgroupInfo;
use self::cgroup::{CgroupError, CgroupIndex};
pub use self::kubernetes::{Kubernetes, PodInfo};
pub use self::process::ProcessInfo;
use self::process::{ArgPolicy, Finding, ProcFs};
pub use self::resource::{call_resource, span_attributes};
use crate::llm::LlmCall;
use crate::segment::{FlowKey, Side, Timestamp};

/// Requests waiting for the worker beyond which spans stop waiting for it.
const BUSY_QUEUE: u64 = 64;
/// Requests the worker's queue holds; beyond it they are dropped (and counted).
const QUEUE_CAPACITY: usize = 4096;
/// Entries per cache; the oldest quarter goes when one is full.
const MAX_ENTRIES: usize = 16_384;
/// A lookup that never answered (its request dropped) is retried after this.
const PENDING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long "no such cgroup" and a server process are believed.
const MISSING_TTL: Duration = Duration::from_secs(1);
const SERVER_TTL: Duration = Duration::from_secs(30);
/// A `connect()` belongs to a connection whose SYN was captured within this of it.
const CONNECT_WINDOW_NS: u64 = 2_000_000_000;
/// `connect()`s remembered per 4-tuple (a reused tuple keeps the latest).
const CONNECTS_PER_FLOW: usize = 4;

/// What attribution needs to know about its host.
#[derive(Clone, Debug)]
pub struct AttributionConfig {
    /// The cgroup v2 hierarchy's root directory (the node's, in a pod).
    pub cgroup_root: PathBuf,
    /// The procfs showing the host's processes (`/proc` with `hostPID`).
    pub proc_root: PathBuf,
    /// Also export `process.command_args` (cleaned of secret-looking values).
    pub process_args: bool,
    /// Look at other processes' file descriptors to find which one holds a socket (needs
    /// CAP_SYS_PTRACE; without it, or when off, a cgroup's only process is taken).
    pub read_fds: bool,
    /// Longest a span waits for lookups under way.
    pub max_wait: Duration,
    /// In Kubernetes, name the service after the server's workload (`service.name`).
    pub workload_service_name: bool,
    /// This node's name (`k8s.node.name` of pods without one).
    pub node_name: Option<String>,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig {
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            proc_root: PathBuf::from("/proc"),
            process_args: false,
            read_fds: true,
            max_wait: Duration::from_millis(5),
            workload_service_name: true,
            node_name: None,
        }
    }
}

/// A socket event from the kernel (`sock/inet_sock_set_state`), with the process behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketEvent {
    pub kind: SocketEventKind,
    /// Capture clock (wall time) of the `connect()`, `listen()` or close.
    pub ts: Timestamp,
    /// cgroup v2 id of the calling task (`None` for `Unlisten`).
    pub cgroup_id: Option<u64>,
    /// The socket's own address and its peer's (IPv4-mapped IPv6 shown as IPv4).
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Process id (thread group) and command name of the caller.
    pub pid: u32,
    pub comm: String,
    /// Opaque socket id pairing `Listen` and `Unlisten`.
    pub sock: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketEventKind {
    Connect,
    Listen,
    Unlisten,
}

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
    /// Whether the server's workload names the service ([`call_resource`]).
    pub workload_service_name: bool,
}

/// Counters of the attribution machinery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttributionStats {
    pub socket_events: u64,
    /// Requests the full queue refused.
    pub dropped_requests: u64,
    /// Calls identified, and how many of them waited for a lookup and how many gave up
    /// waiting.
    pub identified: u64,
    pub waited: u64,
    pub wait_timeouts: u64,
    /// Walks of the cgroup tree, and cgroups it held last time.
    pub cgroup_scans: u64,
    pub cgroups_indexed: u64,
    /// `/proc` lookups of socket owners, and those refused for lack of ptrace access.
    pub owner_scans: u64,
    pub owner_no_access: u64,
}

impl std::fmt::Display for AttributionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "attribution: {} calls ({} waited, {} gave up waiting), {} socket events, {} requests dropped, \
             {} cgroup walks ({} cgroups), {} owner scans ({} without descriptor access)",
            self.identified,
            self.waited,
            self.wait_timeouts,
            self.socket_events,
            self.dropped_requests,
            self.cgroup_scans,
            self.cgroups_indexed,
            self.owner_scans,
            self.owner_no_access
        )
    }
}

#[derive(Default)]
struct Counters {
    socket_events: AtomicU64,
    dropped_requests: AtomicU64,
    identified: AtomicU64,
    waited: AtomicU64,
    wait_timeouts: AtomicU64,
    cgroup_scans: AtomicU64,
    cgroups_indexed: AtomicU64,
    owner_scans: AtomicU64,
    owner_no_access: AtomicU64,
}

enum Request {
    Socket(SocketEvent),
    Cgroup(u64),
    Server { cgroup: u64, port: u16 },
    Client { flow: FlowKey, cgroup: u64 },
}

/// A cache entry: asked for, or answered.
#[derive(Clone, Debug)]
enum Slot<T> {
    Pending(Instant),
    Ready(T, Instant),
}

impl<T: Clone> Slot<T> {
    fn at(&self) -> Instant {
        match self {
            Slot::Pending(t) | Slot::Ready(_, t) => *t,
        }
    }
}

#[derive(Clone, Debug)]
struct Connect {
    ts: Timestamp,
    process: Arc<ProcessInfo>,
    cgroup_id: Option<u64>,
    at: Instant,
}

#[derive(Clone, Debug)]
struct Listener {
    cgroup_id: Option<u64>,
    port: u16,
    process: Arc<ProcessInfo>,
    at: Instant,
}

type ProcSlot = Slot<Option<Arc<ProcessInfo>>>;

#[derive(Default)]
struct State {
    cgroups: HashMap<u64, Slot<Option<Arc<CgroupInfo>>>>,
    connects: HashMap<FlowKey, Vec<Connect>>,
    listeners: HashMap<u64, Listener>,
    servers: HashMap<(u64, u16), ProcSlot>,
    clients: HashMap<(FlowKey, u64), ProcSlot>,
}

/// Keeps a cache under [`MAX_ENTRIES`]: drops the oldest quarter when full.
fn trim<K: Eq + Hash + Clone, V>(map: &mut HashMap<K, V>, at: impl Fn(&V) -> Instant) {
    if map.len() < MAX_ENTRIES {
        return;
    }
    let mut ages: Vec<(Instant, K)> = map.iter().map(|(k, v)| (at(v), k.clone())).collect();
    ages.sort_unstable_by_key(|(t, _)| *t);
    for (_, k) in ages.into_iter().take(MAX_ENTRIES / 4) {
        map.remove(&k);
    }
}

/// A cached answer for `key` while `fresh`; otherwise `None`, with the lookup asked for
/// (unless one is under way).
fn want<K: Eq + Hash + Clone, T: Clone>(
    map: &mut HashMap<K, Slot<T>>,
    key: K,
    fresh: impl Fn(&T, Instant) -> bool,
    ask: impl FnOnce() -> Request,
    asks: &mut Vec<Request>,
) -> Option<T> {
    match map.get(&key) {
        Some(Slot::Ready(v, at)) if fresh(v, *at) => return Some(v.clone()),
        Some(Slot::Pending(at)) if at.elapsed() < PENDING_TIMEOUT => return None,
        _ => {}
    }
    trim(map, Slot::at);
    map.insert(key, Slot::Pending(Instant::now()));
    asks.push(ask());
    None
}

struct Shared {
    config: AttributionConfig,
    state: Mutex<State>,
    ready: Condvar,
    queued: AtomicU64,
    counters: Counters,
    kubernetes: Option<Kubernetes>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves caches that are still coherent maps: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Errors starting attribution.
#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("cannot start the attribution thread: {0}")]
    Thread(std::io::Error),
}

/// Handle to the attribution caches and their worker (cheap to clone; the worker stops when
/// the last handle is dropped).
#[derive(Clone)]
pub struct Attribution {
    shared: Arc<Shared>,
    tx: SyncSender<Request>,
}

impl std::fmt::Debug for Attribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attribution").field("config", &self.shared.config).finish_non_exhaustive()
    }
}

impl Attribution {
    /// Starts the worker. `kubernetes`: the node's pods, when in a cluster.
    pub fn start(config: AttributionConfig, kubernetes: Option<Kubernetes>) -> Result<Attribution, AttributionError> {
        let index = CgroupIndex::new(&config.cgroup_root)?;
        let procfs = ProcFs::new(config.proc_root.clone());
        let procfs = if config.read_fds { procfs } else { procfs.without_fds() };
        let args = config.process_args.then(ArgPolicy::new);
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            queued: AtomicU64::new(0),
            counters: Counters::default(),
            kubernetes,
        });
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let worker = Worker { shared: shared.clone(), index, procfs, args };
        std::thread::Builder::new()
            .name("ollama-tracer-attribution".into())
            .spawn(move || worker.run(rx))
            .map_err(AttributionError::Thread)?;
        Ok(Attribution { shared, tx })
    }

    pub fn config(&self) -> &AttributionConfig {
        &self.shared.config
    }

    pub fn kubernetes(&self) -> Option<&Kubernetes> {
        self.shared.kubernetes.as_ref()
    }

    fn send(&self, r: Request) -> bool {
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(r) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                self.shared.counters.dropped_requests.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// A socket event from the kernel (never blocks).
    pub fn socket_event(&self, ev: SocketEvent) {
        self.shared.counters.socket_events.fetch_add(1, Ordering::Relaxed);
        self.send(Request::Socket(ev));
    }

    /// A connection's end was seen in `cgroup`: starts the lookups its calls will need, so
    /// they are ready when the first call ends (never blocks).
    pub fn prefetch(&self, flow: FlowKey, side: Side, cgroup: u64) {
        let mut st = self.shared.state();
        let mut asks = Vec::new();
        self.want_cgroup(&mut st, cgroup, &mut asks);
        if side == Side::Server {
            self.want_server(&mut st, cgroup, flow.server.port(), &mut asks);
        }
        drop(st);
        for r in asks {
            self.send(r);
        }
    }

    fn want_cgroup(&self, st: &mut State, id: u64, asks: &mut Vec<Request>) -> Option<Option<Arc<CgroupInfo>>> {
        let fresh = |v: &Option<_>, at: Instant| v.is_some() || at.elapsed() < MISSING_TTL;
        want(&mut st.cgroups, id, fresh, || Request::Cgroup(id), asks)
    }

    fn want_server(
        &self,
        st: &mut State,
        cgroup: u64,
        port: u16,
        asks: &mut Vec<Request>,
    ) -> Option<Option<Arc<ProcessInfo>>> {
        let fresh = |_: &Option<_>, at: Instant| at.elapsed() < SERVER_TTL;
        want(&mut st.servers, (cgroup, port), fresh, || Request::Server { cgroup, port }, asks)
    }

    fn want_client(
        &self,
        st: &mut State,
        flow: FlowKey,
        cgroup: u64,
        asks: &mut Vec<Request>,
    ) -> Option<Option<Arc<ProcessInfo>>> {
        // A connection's client does not change: an answer stays good.
        want(&mut st.clients, (flow, cgroup), |_, _| true, || Request::Client { flow, cgroup }, asks)
    }

    /// Who the two ends of `call` are. `opened`/`handshake`: when its connection was first
    /// seen and whether that was its SYN. Waits at most [`AttributionConfig::max_wait`] for
    /// lookups under way; `None` when nothing is known about either end.
    pub fn identify(&self, call: &LlmCall, opened: Timestamp, handshake: bool) -> Option<Arc<CallIdentity>> {
        let c = &self.shared.counters;
        let busy = self.shared.queued.load(Ordering::Relaxed) > BUSY_QUEUE;
        let deadline = Instant::now() + if busy { Duration::ZERO } else { self.shared.config.max_wait };
        let mut st = self.shared.state();
        let mut waited = false;
        loop {
            let mut asks = Vec::new();
            let (id, pending) = self.build(&mut st, call, opened, handshake, &mut asks);
            if !asks.is_empty() {
                drop(st);
                for r in asks {
                    self.send(r);
                }
                // Look again before waiting: the worker may have answered already.
                st = self.shared.state();
                continue;
            }
            let now = Instant::now();
            if !pending || now >= deadline {
                c.identified.fetch_add(1, Ordering::Relaxed);
                if waited {
                    c.waited.fetch_add(1, Ordering::Relaxed);
                }
                if pending && !busy {
                    c.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                return (!id.client.is_empty() || !id.server.is_empty()).then(|| Arc::new(id));
            }
            waited = true;
            st = self.shared.ready.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// What the caches say now; `true` when some lookup is still under way.
    fn build(
        &self,
        st: &mut State,
        call: &LlmCall,
        opened: Timestamp,
        handshake: bool,
        asks: &mut Vec<Request>,
    ) -> (CallIdentity, bool) {
        let mut pending = false;
        let peers = call.peers;
        // The client: its connect() when the tracepoint saw it, else its cgroup's owner.
        let connect = handshake
            .then(|| st.connects.get(&call.flow))
            .flatten()
            .and_then(|v| v.iter().rev().find(|c| c.ts.0.abs_diff(opened.0) <= CONNECT_WINDOW_NS))
            .cloned();
        let client_cgroup = peers.client_cgroup.or(connect.as_ref().and_then(|c| c.cgroup_id));
        let mut client = Endpoint::default();
        if let Some(id) = client_cgroup {
            match self.want_cgroup(st, id, asks) {
                Some(info) => client.cgroup = info,
                None => pending = true,
            }
        }
        match &connect {
            Some(c) => client.process = Some(c.process.clone()),
            None => {
                if let Some(id) = peers.client_cgroup {
                    match self.want_client(st, call.flow, id, asks) {
                        Some(p) => client.process = p,
                        None => pending = true,
                    }
                }
            }
        }
        let mut server = Endpoint::default();
        if let Some(id) = peers.server_cgroup {
            match self.want_cgroup(st, id, asks) {
                Some(info) => server.cgroup = info,
                None => pending = true,
            }
            match self.want_server(st, id, call.flow.server.port(), asks) {
                Some(p) => server.process = p,
                None => pending = true,
            }
        }
        for e in [&mut client, &mut server] {
            self.pod_of(e);
        }
        (CallIdentity { client, server, workload_service_name: self.shared.config.workload_service_name }, pending)
    }

    /// The pod of an end whose cgroup names one.
    fn pod_of(&self, e: &mut Endpoint) {
        let Some(uid) = e.cgroup.as_ref().and_then(|c| c.pod_uid.as_deref()) else { return };
        let Some(k) = &self.shared.kubernetes else {
            e.node_name = self.shared.config.node_name.as_deref().map(Arc::from);
            return;
        };
        e.pod = k.pod(uid);
        let node = e.pod.as_ref().and_then(|p| p.node.as_deref()).unwrap_or(k.node());
        e.node_name = Some(Arc::from(node));
    }

    /// Waits until the worker has handled every request sent so far (at most `timeout`);
    /// whether it has. For tests and shutdown.
    pub fn settle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state();
        while self.shared.queued.load(Ordering::Relaxed) > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self.shared.ready.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }

    pub fn stats(&self) -> AttributionStats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AttributionStats {
            socket_events: g(&c.socket_events),
            dropped_requests: g(&c.dropped_requests),
            identified: g(&c.identified),
            waited: g(&c.waited),
            wait_timeouts: g(&c.wait_timeouts),
            cgroup_scans: g(&c.cgroup_scans),
            cgroups_indexed: g(&c.cgroups_indexed),
            owner_scans: g(&c.owner_scans),
            owner_no_access: g(&c.owner_no_access),
        }
    }
}

/// The thread that reads `/proc` and the cgroup tree.
struct Worker {
    shared: Arc<Shared>,
    index: CgroupIndex,
    procfs: ProcFs,
    args: Option<ArgPolicy>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Request>) {
        while let Ok(r) = rx.recv() {
            self.handle(r);
            // Counted down once handled, so that `settle` means "answered".
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            self.shared.ready.notify_all();
        }
    }

    fn handle(&mut self, r: Request) {
        match r {
            Request::Socket(ev) => self.socket(ev),
            Request::Cgroup(id) => {
                self.cgroup(id);
            }
            Request::Server { cgroup, port } => {
                let process = self.server(cgroup, port);
                let mut st = self.shared.state();
                st.servers.insert((cgroup, port), Slot::Ready(process, Instant::now()));
            }
            Request::Client { flow, cgroup } => {
                let process = self.client(flow, cgroup);
                let mut st = self.shared.state();
                st.clients.insert((flow, cgroup), Slot::Ready(process, Instant::now()));
            }
        }
    }

    /// Resolves and caches a cgroup's path and what it says.
    fn cgroup(&mut self, id: u64) -> Option<Arc<CgroupInfo>> {
        if let Some(Slot::Ready(Some(info), _)) = self.shared.state().cgroups.get(&id) {
            return Some(info.clone());
        }
        let scans = self.index.scans;
        let info = self.index.path(id).map(|p| Arc::new(cgroup::parse_path(id, &p)));
        let c = &self.shared.counters;
        if self.index.scans != scans {
            c.cgroup_scans.fetch_add(1, Ordering::Relaxed);
            c.cgroups_indexed.store(self.index.len() as u64, Ordering::Relaxed);
            tracing::debug!(
                cgroups = self.index.last_scan_entries,
                truncated = self.index.last_scan_truncated,
                took = ?self.index.last_scan_time,
                "cgroup tree walked"
            );
        }
        let mut st = self.shared.state();
        trim(&mut st.cgroups, Slot::at);
        st.cgroups.insert(id, Slot::Ready(info.clone(), Instant::now()));
        info
    }

    fn process(&self, pid: u32, comm: Option<&str>) -> Option<Arc<ProcessInfo>> {
        self.procfs.process(pid, comm, self.args.as_ref()).map(Arc::new)
    }

    /// Which process of `pids` holds the socket, by its descriptors; without ptrace access
    /// the cgroup's only process — unless the cgroup is the init system's (see
    /// [`CgroupInfo::is_init`]).
    fn owner(&self, info: &CgroupInfo, pids: &[u32], finding: Finding) -> Option<Arc<ProcessInfo>> {
        let c = &self.shared.counters;
        c.owner_scans.fetch_add(1, Ordering::Relaxed);
        match finding {
            Finding::Found(pid) => self.process(pid, None),
            Finding::NoAccess => {
                c.owner_no_access.fetch_add(1, Ordering::Relaxed);
                match pids {
                    [only] if !info.is_init() => self.process(*only, None),
                    _ => None,
                }
            }
            Finding::Ambiguous | Finding::NotFound => None,
        }
    }

    fn server(&mut self, cgroup: u64, port: u16) -> Option<Arc<ProcessInfo>> {
        let info = self.cgroup(cgroup)?;
        // A listen() the tracepoint saw, by a process still alive.
        let seen: Vec<Arc<ProcessInfo>> = {
            let st = self.shared.state();
            st.listeners
                .values()
                .filter(|l| l.port == port && l.cgroup_id == Some(cgroup))
                .map(|l| l.process.clone())
                .collect()
        };
        let alive: Vec<&Arc<ProcessInfo>> = seen
            .iter()
            .filter(|p| self.procfs.stat(p.pid).is_some_and(|s| Some(s.start_ticks) == p.start_ticks))
            .collect();
        if let Some(first) = alive.first()
            && alive.iter().all(|p| p.pid == first.pid)
        {
            return Some((*first).clone());
        }
        let pids = ProcFs::cgroup_procs(&self.index.dir(&info.path));
        let finding = self.procfs.find_listener(&pids, port);
        self.owner(&info, &pids, finding)
    }

    fn client(&mut self, flow: FlowKey, cgroup: u64) -> Option<Arc<ProcessInfo>> {
        let info = self.cgroup(cgroup)?;
        let pids = ProcFs::cgroup_procs(&self.index.dir(&info.path));
        let finding = self.procfs.find_connection(&pids, flow.client, flow.server);
        self.owner(&info, &pids, finding)
    }

    fn socket(&mut self, ev: SocketEvent) {
        let now = Instant::now();
        match ev.kind {
            SocketEventKind::Connect => {
                let process = self.process(ev.pid, Some(&ev.comm)).unwrap_or_else(|| {
                    Arc::new(ProcessInfo { pid: ev.pid, executable_name: Some(ev.comm.clone()), ..Default::default() })
                });
                let flow = FlowKey { client: ev.local, server: ev.remote };
                let mut st = self.shared.state();
                trim(&mut st.connects, |v| v.last().map_or(now, |c| c.at));
                let v = st.connects.entry(flow).or_default();
                if v.len() == CONNECTS_PER_FLOW {
                    v.remove(0);
                }
                v.push(Connect { ts: ev.ts, process, cgroup_id: ev.cgroup_id, at: now });
            }
            SocketEventKind::Listen => {
                let Some(process) = self.process(ev.pid, Some(&ev.comm)) else { return };
                let mut st = self.shared.state();
                trim(&mut st.listeners, |l| l.at);
                let port = ev.local.port();
                if let Some(cg) = ev.cgroup_id {
                    // Whoever answered for this port before is asked again.
                    st.servers.remove(&(cg, port));
                }
                st.listeners.insert(ev.sock, Listener { cgroup_id: ev.cgroup_id, port, process, at: now });
            }
            SocketEventKind::Unlisten => {
                let mut st = self.shared.state();
                if let Some(l) = st.listeners.remove(&ev.sock)
                    && let Some(cg) = l.cgroup_id
                {
                    st.servers.remove(&(cg, l.port));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
