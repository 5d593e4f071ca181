//! Socket events: the processes behind `connect()` to and `listen()` on a server port, as the
//! eBPF capture's tracepoint reports them. The capture hands them to whoever asked
//! ([`CaptureConfig::socket_events`](super::config::CaptureConfig::socket_events)) — the
//! daemon's attribution — without knowing what it does with them.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use tracer_core::segment::Timestamp;

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

/// Takes the socket events a capture reads; must not block (it runs on the capture's task).
pub trait SocketEvents: Send + Sync {
    fn socket_event(&self, ev: SocketEvent);
}

/// A shared [`SocketEvents`] receiver, as a capture configuration holds it.
#[derive(Clone)]
pub struct SocketEventSink(pub Arc<dyn SocketEvents>);

impl SocketEventSink {
    pub fn socket_event(&self, ev: SocketEvent) {
        self.0.socket_event(ev);
    }
}

impl fmt::Debug for SocketEventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SocketEventSink")
    }
}
