//! The thread that reads `/proc` and the cgroup tree, answering the caches' requests.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use tracer_core::identity::{CgroupInfo, ProcessInfo};
use tracer_core::segment::FlowKey;

use super::Shared;
use super::cache::{CONNECTS_PER_FLOW, Connect, Listener, Request, Slot, trim};
use super::cgroup::{self, CgroupIndex};
use super::process::{ArgPolicy, Finding, ProcFs};
use crate::capture::socket::{SocketEvent, SocketEventKind};

/// The thread that reads `/proc` and the cgroup tree.
pub(super) struct Worker {
    shared: Arc<Shared>,
    index: CgroupIndex,
    procfs: ProcFs,
    args: Option<ArgPolicy>,
}

impl Worker {
    pub(super) fn new(shared: Arc<Shared>, index: CgroupIndex, procfs: ProcFs, args: Option<ArgPolicy>) -> Worker {
        Worker { shared, index, procfs, args }
    }

    pub(super) fn run(mut self, rx: Receiver<Request>) {
        // Started before the capture attaches, so it does not inherit the daemon's drop: it
        // needs at most ptrace read access to other processes' /proc entries.
        if let Err(e) = crate::privileges::restrict_current_thread(crate::privileges::KEPT_FOR_ATTRIBUTION) {
            tracing::warn!("attribution: {e}");
        }
        while let Ok(r) = rx.recv() {
            self.handle(r);
            // The held call may go now (its driver re-reads the caches).
            if let Some(wake) = self.shared.waker.get() {
                wake();
            }
            // Counted down once handled (and its waker told), so that `settle` means "answered".
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
