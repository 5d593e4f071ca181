//! The attribution caches: cgroups, socket owners, `connect()`s and `listen()`s seen, each
//! entry asked for (pending) or answered, bounded and aged.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracer_core::identity::{CgroupInfo, ProcessInfo};
use tracer_core::segment::{FlowKey, Timestamp};

use crate::capture::socket::SocketEvent;

/// Entries per cache; the oldest quarter goes when one is full.
pub(super) const MAX_ENTRIES: usize = 16_384;
/// A lookup that never answered (its request dropped) is retried after this.
pub(super) const PENDING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long "no such cgroup" and a server process are believed.
pub(super) const MISSING_TTL: Duration = Duration::from_secs(1);
pub(super) const SERVER_TTL: Duration = Duration::from_secs(30);
/// A `connect()` belongs to a connection whose SYN was captured within this of it.
pub(super) const CONNECT_WINDOW_NS: u64 = 2_000_000_000;
/// `connect()`s remembered per 4-tuple (a reused tuple keeps the latest).
pub(super) const CONNECTS_PER_FLOW: usize = 4;

pub(super) enum Request {
    Socket(SocketEvent),
    Cgroup(u64),
    Server { cgroup: u64, port: u16 },
    Client { flow: FlowKey, cgroup: u64 },
}

/// A cache entry: asked for, or answered.
#[derive(Clone, Debug)]
pub(super) enum Slot<T> {
    Pending(Instant),
    Ready(T, Instant),
}

impl<T: Clone> Slot<T> {
    pub(super) fn at(&self) -> Instant {
        match self {
            Slot::Pending(t) | Slot::Ready(_, t) => *t,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Connect {
    pub(super) ts: Timestamp,
    pub(super) process: Arc<ProcessInfo>,
    pub(super) cgroup_id: Option<u64>,
    pub(super) at: Instant,
}

#[derive(Clone, Debug)]
pub(super) struct Listener {
    pub(super) cgroup_id: Option<u64>,
    pub(super) port: u16,
    pub(super) process: Arc<ProcessInfo>,
    pub(super) at: Instant,
}

pub(super) type ProcSlot = Slot<Option<Arc<ProcessInfo>>>;

#[derive(Default)]
pub(super) struct State {
    pub(super) cgroups: HashMap<u64, Slot<Option<Arc<CgroupInfo>>>>,
    pub(super) connects: HashMap<FlowKey, Vec<Connect>>,
    pub(super) listeners: HashMap<u64, Listener>,
    pub(super) servers: HashMap<(u64, u16), ProcSlot>,
    pub(super) clients: HashMap<(FlowKey, u64), ProcSlot>,
}

/// Keeps a cache under [`MAX_ENTRIES`]: drops the oldest quarter when full.
pub(super) fn trim<K: Eq + Hash + Clone, V>(map: &mut HashMap<K, V>, at: impl Fn(&V) -> Instant) {
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
pub(super) fn want<K: Eq + Hash + Clone, T: Clone>(
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
