//! Attribution: who called and who answered, as far as the host can know.
//!
//! For each end of a call that is a local socket: the process (pid, executable, command), the
//! cgroup and what its path says (container id, Kubernetes pod UID, systemd unit), and on
//! Kubernetes the pod, namespace, node, container and owning workload — a
//! [`CallIdentity`], which span building turns into attributes
//! (`tracer_core::span::identity`). docs/attribution.md has the whole picture.
//!
//! Where each fact comes from:
//! - the cgroup of each end's socket: the eBPF `cgroup_skb` hooks, per packet, learnt by
//!   reassembly from both copies of a localhost packet (the call's `ConnFacts`);
//! - the client process: the `sock/inet_sock_set_state` tracepoint in `connect()`
//!   ([`SocketEvent`]), else the one process of the client's cgroup that holds the socket;
//! - the server process: the tracepoint in `listen()`, else the process of the server's cgroup
//!   that holds the listening socket (its file descriptors, which needs CAP_SYS_PTRACE), else
//!   the cgroup's only process;
//! - cgroup id → path: a walk of the cgroup v2 hierarchy ([`cgroup`]);
//! - pods: a watch of this node's pods ([`kubernetes`]).
//!
//! Attribution is a stage after the pipeline ([`enrich::Enricher`]) and never blocks it: `/proc`
//! and the cgroup tree are read by one worker thread ([`worker`]) fed through a bounded queue,
//! the Kubernetes watch runs on the async runtime, [`Attribution::resolve`] only reads the
//! caches, and a call whose lookups are still under way is held by the enrichment stage for at
//! most [`AttributionConfig::hold`] (counted when that runs out). What is not known by then is
//! left out of the span; what cannot be known for sure is never guessed.

mod cache;
pub mod cgroup;
pub mod enrich;
pub mod kubernetes;
pub mod process;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tracer_core::identity::{CallIdentity, CgroupInfo, Endpoint, ProcessInfo};
use tracer_core::llm::LlmCall;
use tracer_core::segment::{FlowKey, Side};

use self::cache::{CONNECT_WINDOW_NS, MISSING_TTL, Request, SERVER_TTL, State, want};
use self::cgroup::{CgroupError, CgroupIndex};
pub use self::kubernetes::Kubernetes;
use self::process::{ArgPolicy, ProcFs};
use self::worker::Worker;
use crate::capture::EbpfAttach;
use crate::capture::config::cgroup_root;
use crate::capture::socket::{SocketEvent, SocketEvents};

/// Requests the worker's queue holds; beyond it they are dropped (and counted).
const QUEUE_CAPACITY: usize = 4096;

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
    /// Longest the enrichment stage holds a call whose lookups are under way (the pipeline
    /// never waits: calls queue behind the held one, in order).
    pub hold: Duration,
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
            hold: Duration::from_millis(50),
            workload_service_name: true,
            node_name: None,
        }
    }
}

/// Counters of the attribution machinery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttributionStats {
    pub socket_events: u64,
    /// Requests the full queue refused.
    pub dropped_requests: u64,
    /// Calls identified, how many of them the enrichment stage held for a lookup, and how
    /// many it let go when [`AttributionConfig::hold`] ran out (or when too many were held).
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
pub(crate) struct Counters {
    pub(crate) socket_events: AtomicU64,
    pub(crate) dropped_requests: AtomicU64,
    pub(crate) identified: AtomicU64,
    pub(crate) waited: AtomicU64,
    pub(crate) wait_timeouts: AtomicU64,
    pub(crate) cgroup_scans: AtomicU64,
    pub(crate) cgroups_indexed: AtomicU64,
    pub(crate) owner_scans: AtomicU64,
    pub(crate) owner_no_access: AtomicU64,
}

/// What the handle, the worker and the enrichment stage share.
struct Shared {
    config: AttributionConfig,
    state: Mutex<State>,
    /// Signalled whenever the worker has handled a request ([`Attribution::settle`]).
    ready: Condvar,
    queued: AtomicU64,
    counters: Counters,
    kubernetes: Option<Kubernetes>,
    /// Called whenever the worker has handled a request: wakes the thread that holds calls
    /// (the run driver's), so a call goes out as soon as its lookups are answered.
    waker: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves caches that are still coherent maps: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How to start attribution, as the command line and the environment say.
#[derive(Clone, Debug)]
pub struct AttributionOptions {
    /// Also export `process.command_args` (cleaned of secret-looking values).
    pub process_args: bool,
    /// Ask the Kubernetes API for pods (when in a pod, or with `kubernetes_api`).
    pub kubernetes: bool,
    /// The API server to ask instead of the in-cluster one, without credentials.
    pub kubernetes_api: Option<String>,
    /// Whether this runs in a pod (`KUBERNETES_SERVICE_HOST`).
    pub in_cluster: bool,
    /// This node's name (`--node-name` or `K8S_NODE_NAME`).
    pub node_name: Option<String>,
    /// Name the service after a server's workload.
    pub workload_service_name: bool,
    /// See [`AttributionConfig::hold`].
    pub hold: Duration,
}

impl AttributionOptions {
    /// Starts attribution for a capture attached as `attach`; `None` (said in the log) when it
    /// cannot run here. Must run inside a tokio runtime (the Kubernetes watch runs on it).
    pub fn start(&self, attach: &EbpfAttach) -> Result<Option<Attribution>, AttributionError> {
        let cgroup_root: PathBuf = match attach {
            EbpfAttach::Cgroup(dir) => dir.clone(),
            EbpfAttach::CgroupRoot | EbpfAttach::Tcx(_) => match cgroup_root() {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("attribution off: {e}");
                    return Ok(None);
                }
            },
        };
        let kubernetes = self.kubernetes_client();
        let config = AttributionConfig {
            cgroup_root,
            process_args: self.process_args,
            hold: self.hold,
            workload_service_name: self.workload_service_name,
            node_name: self.node_name.clone(),
            ..AttributionConfig::default()
        };
        tracing::info!(
            "attribution: cgroups under {}, Kubernetes {}",
            config.cgroup_root.display(),
            kubernetes.as_ref().map_or("off".to_string(), |k| format!("pods of node {}", k.node()))
        );
        Attribution::start(config, kubernetes).map(Some)
    }

    fn kubernetes_client(&self) -> Option<Kubernetes> {
        if !self.kubernetes || !(self.in_cluster || self.kubernetes_api.is_some()) {
            return None;
        }
        let Some(node) = self.node_name.clone().filter(|n| !n.is_empty()) else {
            tracing::warn!("Kubernetes metadata off: the node name is unknown (--node-name or K8S_NODE_NAME)");
            return None;
        };
        let k = match &self.kubernetes_api {
            Some(url) => Kubernetes::from_url(url, node),
            None => Kubernetes::in_cluster(node),
        };
        match k {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!("Kubernetes metadata off: {e}");
                None
            }
        }
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

/// What the caches say about a call's ends now.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// Everything that can be known is known (`None`: nothing about either end).
    Known(Option<Arc<CallIdentity>>),
    /// Lookups are under way; what is known so far.
    Pending(Option<Arc<CallIdentity>>),
}

impl Resolution {
    /// What is known, complete or not.
    pub fn identity(self) -> Option<Arc<CallIdentity>> {
        match self {
            Resolution::Known(id) | Resolution::Pending(id) => id,
        }
    }
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

/// Requests waiting for the worker beyond which calls are not held for it.
const BUSY_QUEUE: u64 = 64;

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
            waker: OnceLock::new(),
        });
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let worker = Worker::new(shared.clone(), index, procfs, args);
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

    /// Sets what the worker calls after each answer (once; later calls are ignored).
    pub fn set_waker(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let _ = self.shared.waker.set(wake);
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.counters
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

    /// Who the two ends of `call` are, from the caches as they are now (never waits); the
    /// lookups still missing are asked for. A worker that is behind is not waited for: what is
    /// known is then all that will be.
    pub fn resolve(&self, call: &LlmCall) -> Resolution {
        let mut st = self.shared.state();
        let mut asks = Vec::new();
        let (id, pending) = self.build(&mut st, call, &mut asks);
        drop(st);
        for r in asks {
            self.send(r);
        }
        let id = (!id.client.is_empty() || !id.server.is_empty()).then(|| Arc::new(id));
        if pending && !self.busy() { Resolution::Pending(id) } else { Resolution::Known(id) }
    }

    fn busy(&self) -> bool {
        self.shared.queued.load(Ordering::Relaxed) > BUSY_QUEUE
    }

    /// [`resolve`](Self::resolve), waiting at most `timeout` for lookups under way. Never on the
    /// pipeline's path: for tests, and for calls still held when a run ends.
    pub fn resolve_within(&self, call: &LlmCall, timeout: Duration) -> Resolution {
        let deadline = Instant::now() + timeout;
        loop {
            match self.resolve(call) {
                known @ Resolution::Known(_) => return known,
                pending @ Resolution::Pending(_) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return pending;
                    }
                    let st = self.shared.state();
                    // Answers that arrived since `resolve` looked are seen on the next round.
                    drop(self.shared.ready.wait_timeout(st, (deadline - now).min(Duration::from_millis(5))));
                }
            }
        }
    }

    /// What the caches say now; `true` when some lookup is still under way.
    fn build(&self, st: &mut State, call: &LlmCall, asks: &mut Vec<Request>) -> (CallIdentity, bool) {
        let mut pending = false;
        let conn = call.connection;
        let peers = conn.peers;
        // The client: its connect() when the tracepoint saw it, else its cgroup's owner.
        let connect = conn
            .handshake
            .then(|| st.connects.get(&call.flow))
            .flatten()
            .and_then(|v| v.iter().rev().find(|c| c.ts.0.abs_diff(conn.opened.0) <= CONNECT_WINDOW_NS))
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

/// The eBPF capture's socket events go straight to the worker.
impl SocketEvents for Attribution {
    fn socket_event(&self, ev: SocketEvent) {
        Attribution::socket_event(self, ev);
    }
}

#[cfg(test)]
mod tests;
