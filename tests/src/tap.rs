//! A recording TCP proxy: real clients talk to a real server through it, and what crossed it
//! comes back as the packets a capture on the server's port would have seen. No privileges
//! needed, so client-library tests run in plain `cargo test` (the privileged tests capture the
//! same traffic with eBPF and libpcap).
//!
//! Each read on either side becomes data segments (MSS-sized) stamped with the read's wall
//! time; the peer's ACK follows a microsecond later; FIN and RST are forwarded and recorded.
//! The server side is presented as `server` (127.0.0.1:11434 by default) whatever the real
//! upstream's address, so the tracer's port filter sees Ollama's port.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::synth::{Packet, SynOptions, TcpFlags};

/// Largest segment payload (loopback MTU 65536 minus IPv4 and TCP headers with options).
const MSS: usize = 65_483;
/// Delay of a synthetic ACK or handshake step after what it answers.
const HOP_NS: u64 = 1_000;

#[derive(Clone, Debug, PartialEq, Eq)]
enum What {
    Open,
    Data(Vec<u8>),
    Fin,
    Rst,
}

#[derive(Clone, Debug)]
struct Event {
    ts_ns: u64,
    conn: usize,
    from_client: bool,
    what: What,
}

#[derive(Default)]
struct Log {
    events: Vec<Event>,
    clients: Vec<SocketAddr>,
}

/// A running tap. Stops (and closes its connections) on drop.
pub struct Tap {
    addr: SocketAddr,
    server: SocketAddr,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn record(log: &Mutex<Log>, conn: usize, from_client: bool, what: What) {
    let mut log = log.lock().expect("tap log");
    // Stamped under the lock, so the log is in time order across threads.
    let ts_ns = now_ns();
    log.events.push(Event { ts_ns, conn, from_client, what });
}

impl Tap {
    /// Listens on 127.0.0.1 (any free port) and forwards to `upstream`, presenting the server
    /// as 127.0.0.1:11434.
    pub fn start(upstream: SocketAddr) -> std::io::Result<Tap> {
        Tap::start_as(upstream, "127.0.0.1:11434".parse().expect("address"))
    }

    /// As [`Tap::start`], presenting the server as `server`.
    pub fn start_as(upstream: SocketAddr, server: SocketAddr) -> std::io::Result<Tap> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || accept_loop(listener, upstream, log, stop))
        };
        Ok(Tap { addr, server, log, stop, acceptor: Some(acceptor) })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL for HTTP clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Packets of everything recorded so far, in time order.
    pub fn packets(&self) -> Vec<Packet> {
        let log = self.log.lock().expect("tap log");
        packetize(&log, self.server)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, log: Arc<Mutex<Log>>, stop: Arc<AtomicBool>) {
    let mut pumps: Vec<JoinHandle<()>> = Vec::new();
    let mut sockets: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, peer)) => {
                let Ok(server) = TcpStream::connect(upstream) else {
                    // Upstream down: the client sees a reset, as it would from the server.
                    let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let conn = {
                    let mut l = log.lock().expect("tap log");
                    l.clients.push(peer);
                    l.clients.len() - 1
                };
                record(&log, conn, true, What::Open);
                for (from, to, from_client) in
                    [(client.try_clone(), server.try_clone(), true), (server.try_clone(), client.try_clone(), false)]
                {
                    let (Ok(from), Ok(to)) = (from, to) else { continue };
                    let log = log.clone();
                    pumps.push(std::thread::spawn(move || pump(from, to, &log, conn, from_client)));
                }
                sockets.push(client);
                sockets.push(server);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    for s in &sockets {
        let _ = s.shutdown(Shutdown::Both);
    }
    for p in pumps {
        let _ = p.join();
    }
}

/// Copies one direction, recording each read; forwards EOF as FIN and a reset as RST.
fn pump(mut from: TcpStream, mut to: TcpStream, log: &Mutex<Log>, conn: usize, from_client: bool) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                record(log, conn, from_client, What::Fin);
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                record(log, conn, from_client, What::Data(buf[..n].to_vec()));
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                record(log, conn, from_client, What::Rst);
                // Pass the reset on: close with a zero linger.
                let _ = socket2::SockRef::from(&to).set_linger(Some(Duration::ZERO));
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            Err(_) => return,
        }
    }
}

/// A server that answers each request on a connection with the next scripted response, written
/// in the given pieces with `gap` between them: for what the stand-in does not produce
/// (compressed bodies, odd error streams). Serves one connection at a time until dropped.
pub struct ScriptedServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ScriptedServer {
    pub fn start(responses: Vec<Vec<Vec<u8>>>, gap: Duration) -> std::io::Result<ScriptedServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut script = responses.into_iter();
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_nodelay(true);
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                'requests: loop {
                    // One request: head, then a Content-Length body.
                    let need = loop {
                        let mut headers = [httparse::EMPTY_HEADER; 64];
                        let mut req = httparse::Request::new(&mut headers);
                        if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                            let len = req
                                .headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break n + len;
                        }
                        let mut tmp = [0u8; 65536];
                        match s.read(&mut tmp) {
                            Ok(0) | Err(_) => break 'requests,
                            Ok(k) => buf.extend_from_slice(&tmp[..k]),
                        }
                    };
                    while buf.len() < need {
                        let mut tmp = [0u8; 65536];
                        match s.read(&mut tmp) {
                            Ok(0) | Err(_) => break 'requests,
                            Ok(k) => buf.extend_from_slice(&tmp[..k]),
                        }
                    }
                    buf.drain(..need);
                    let Some(pieces) = script.next() else { break };
                    for (i, p) in pieces.iter().enumerate() {
                        if i > 0 {
                            std::thread::sleep(gap);
                        }
                        if s.write_all(p).is_err() {
                            break 'requests;
                        }
                    }
                }
            }
        });
        Ok(ScriptedServer { addr, stop, handle: Some(handle) })
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Per-connection TCP state while packetizing.
struct Conn {
    client: SocketAddr,
    /// Next sequence number of client and server.
    next: [u32; 2],
    closed: [bool; 2],
}

fn packetize(log: &Log, server: SocketAddr) -> Vec<Packet> {
    let mut conns: Vec<Conn> = log
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| Conn {
            client: *c,
            next: [1_000_000u32.wrapping_mul(i as u32 + 1), 3_000_000_000u32.wrapping_add(i as u32 * 7919)],
            closed: [false; 2],
        })
        .collect();
    let mut out = Vec::new();
    let syn_opts = Some(SynOptions { mss: MSS as u16, window_scale: 7 });
    for ev in &log.events {
        let c = &mut conns[ev.conn];
        let (me, peer) = if ev.from_client { (0, 1) } else { (1, 0) };
        let (src, dst) = if ev.from_client { (c.client, server) } else { (server, c.client) };
        let pkt = |ts_ns, src, dst, seq, ack, flags, payload: Vec<u8>, syn_options| Packet {
            ts_ns,
            src,
            dst,
            seq,
            ack,
            flags: TcpFlags(flags),
            window: 512,
            syn_options,
            payload,
            captured_payload: None,
        };
        match &ev.what {
            What::Open => {
                // The handshake just before the accept.
                let t = ev.ts_ns.saturating_sub(3 * HOP_NS);
                let (cs, ss) = (c.next[0], c.next[1]);
                out.push(pkt(t, c.client, server, cs, 0, TcpFlags::SYN, Vec::new(), syn_opts));
                out.push(pkt(
                    t + HOP_NS,
                    server,
                    c.client,
                    ss,
                    cs + 1,
                    TcpFlags::SYN | TcpFlags::ACK,
                    Vec::new(),
                    syn_opts,
                ));
                out.push(pkt(t + 2 * HOP_NS, c.client, server, cs + 1, ss + 1, TcpFlags::ACK, Vec::new(), None));
                c.next = [cs + 1, ss + 1];
            }
            What::Data(bytes) => {
                let mut t = ev.ts_ns;
                for chunk in bytes.chunks(MSS) {
                    let flags = TcpFlags::ACK | TcpFlags::PSH;
                    out.push(pkt(t, src, dst, c.next[me], c.next[peer], flags, chunk.to_vec(), None));
                    c.next[me] = c.next[me].wrapping_add(chunk.len() as u32);
                    t += 1;
                }
                out.push(pkt(t + HOP_NS, dst, src, c.next[peer], c.next[me], TcpFlags::ACK, Vec::new(), None));
            }
            What::Fin => {
                if c.closed[me] {
                    continue;
                }
                c.closed[me] = true;
                out.push(pkt(
                    ev.ts_ns,
                    src,
                    dst,
                    c.next[me],
                    c.next[peer],
                    TcpFlags::FIN | TcpFlags::ACK,
                    Vec::new(),
                    None,
                ));
                c.next[me] = c.next[me].wrapping_add(1);
                out.push(pkt(ev.ts_ns + HOP_NS, dst, src, c.next[peer], c.next[me], TcpFlags::ACK, Vec::new(), None));
            }
            What::Rst => {
                // Reading from this side failed with a reset: this side sent it.
                if c.closed == [true; 2] {
                    continue;
                }
                c.closed = [true; 2];
                out.push(pkt(ev.ts_ns, src, dst, c.next[me], 0, TcpFlags::RST, Vec::new(), None));
            }
        }
    }
    // ACKs stamped a hop after what they answer may pass later events.
    out.sort_by_key(|p| p.ts_ns);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_through_the_tap_becomes_a_consistent_tcp_conversation() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = server.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = [0u8; 1024];
            loop {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    return;
                }
                s.write_all(&buf[..n]).unwrap();
            }
        });
        let tap = Tap::start(upstream).unwrap();
        let mut c = TcpStream::connect(tap.addr()).unwrap();
        c.write_all(b"hello").unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        echo.join().unwrap();
        // The server's FIN is recorded when the pump sees EOF.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let packets = loop {
            let p = tap.packets();
            if p.iter().filter(|p| p.flags.fin()).count() == 2 || std::time::Instant::now() > deadline {
                break p;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let server_addr: SocketAddr = "127.0.0.1:11434".parse().unwrap();
        let client = c.local_addr().unwrap();
        assert!(packets[0].flags.syn() && packets[0].src == client && packets[0].dst == server_addr);
        let data: Vec<&Packet> = packets.iter().filter(|p| !p.payload.is_empty()).collect();
        assert_eq!(data.len(), 2);
        assert_eq!(data[0].payload, b"hello");
        assert_eq!(data[1].src, server_addr);
        assert_eq!(data[1].ack, data[0].seq_end(), "the echo acknowledges the request");
        assert_eq!(packets.iter().filter(|p| p.flags.fin()).count(), 2);
        assert!(packets.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
        assert_eq!(crate::synth::reassemble(&packets, client, server_addr), b"hello");
    }
}
