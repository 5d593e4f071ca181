//! Live capture against real traffic: the eBPF capture (cgroup_skb on the cgroup v2 root, and
//! TCX on `lo`) and the libpcap fallback.
//!
//! Every test needs root (loading BPF, AF_PACKET, network namespaces); without it each prints
//! "SKIPPED: not root" and passes. The eBPF tests also print "SKIPPED" when the binary was
//! built without the eBPF object. Ports are ephemeral ones picked at run time (never 11434).
//! Namespaces are removed by a Drop guard, also when a test fails.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use testkit::privileged::serial;

use ollama_tracer::capture::counters::KernelCounters;
use ollama_tracer::capture::ebpf::{self, EbpfCapture};
use ollama_tracer::capture::pcap::PcapCapture;
use ollama_tracer::capture::{Backend, CaptureConfig, CaptureMode, EbpfAttach, LiveCapture, LiveCounters, start_live};
use tracer_core::segment::{CaptureMeta, Direction, FlowKey, Hook, SegmentBatch, TcpFlags, Timestamp};

macro_rules! require_root {
    ($name:expr) => {
        if !testkit::privileged::require_root($name) {
            return;
        }
    };
}

macro_rules! require_ebpf {
    ($name:expr) => {
        require_root!($name);
        if let Err(why) = ebpf::object() {
            testkit::privileged::skipped($name, &format!("eBPF object not built in: {why}"));
            return;
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Traffic

/// Deterministic pseudo-random bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Moves the calling thread into a network namespace (sockets created afterwards live there).
fn enter_netns(name: &str) {
    let f = File::open(format!("/var/run/netns/{name}")).expect("open netns");
    // SAFETY: setns on a valid namespace fd; affects only this thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

struct Exchange {
    request: Vec<u8>,
    response: Vec<u8>,
    server_port: u16,
    server: thread::JoinHandle<Result<(), String>>,
    go: mpsc::Sender<()>,
    client: Option<thread::JoinHandle<Result<u64, String>>>,
    done: Arc<AtomicBool>,
}

/// Starts a server thread (optionally inside `server_ns`) listening on `bind_ip` with an
/// ephemeral port; the client (optionally inside `client_ns`) connects to `connect_ip` once
/// [`Exchange::go`] is called. The client sends `request`, the server answers `response` and
/// closes.
fn exchange(
    bind_ip: IpAddr,
    connect_ip: IpAddr,
    server_ns: Option<String>,
    client_ns: Option<String>,
    request_len: usize,
    response_len: usize,
) -> Exchange {
    let request = pattern(request_len, 0x1234_5678);
    let response = pattern(response_len, 0x9abc_def0);
    let (port_tx, port_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (req, resp) = (request.clone(), response.clone());
    let server = thread::spawn(move || -> Result<(), String> {
        if let Some(ns) = &server_ns {
            enter_netns(ns);
        }
        let l = TcpListener::bind(SocketAddr::new(bind_ip, 0)).map_err(|e| format!("bind: {e}"))?;
        port_tx.send(l.local_addr().unwrap().port()).unwrap();
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut s, _) = loop {
            match l.accept() {
                Ok(x) => break x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err("no client".into());
                    }
                    thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = vec![0u8; req.len()];
        s.read_exact(&mut got).map_err(|e| format!("server read: {e}"))?;
        if got != req {
            return Err("server got a different request".into());
        }
        s.write_all(&resp).map_err(|e| format!("server write: {e}"))?;
        s.shutdown(std::net::Shutdown::Write).ok();
        // Wait for the client's FIN.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).ok();
        Ok(())
    });
    let server_port = port_rx.recv_timeout(Duration::from_secs(5)).expect("server port");
    let done = Arc::new(AtomicBool::new(false));
    let (req, resp, d) = (request.clone(), response.clone(), done.clone());
    let client = thread::spawn(move || -> Result<u64, String> {
        let r = (|| {
            if let Some(ns) = &client_ns {
                enter_netns(ns);
            }
            go_rx.recv().map_err(|_| "never told to go".to_owned())?;
            let mut s = TcpStream::connect_timeout(&SocketAddr::new(connect_ip, server_port), Duration::from_secs(5))
                .map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let t_send = now_ns();
            s.write_all(&req).map_err(|e| format!("client write: {e}"))?;
            let mut got = Vec::with_capacity(resp.len());
            s.read_to_end(&mut got).map_err(|e| format!("client read: {e}"))?;
            if got != resp {
                return Err(format!("client got {} bytes, expected {}", got.len(), resp.len()));
            }
            Ok(t_send)
        })();
        d.store(true, Ordering::SeqCst);
        r
    });
    Exchange { request, response, server_port, server, go: go_tx, client: Some(client), done }
}

// ---------------------------------------------------------------------------------------------
// Collection and reassembly

#[derive(Clone, Debug)]
struct Seg {
    ts: Timestamp,
    flow: FlowKey,
    dir: Direction,
    seq: u32,
    flags: TcpFlags,
    payload: Vec<u8>,
    missing: u32,
    meta: CaptureMeta,
}

/// Reads batches until `done` is set and nothing arrived for `idle`, or `max` passed.
async fn collect(cap: &mut LiveCapture, done: &AtomicBool, idle: Duration, max: Duration) -> (Vec<Seg>, usize) {
    let start = Instant::now();
    let mut batch = SegmentBatch::default();
    let mut out = Vec::new();
    let mut batches = 0;
    loop {
        let left = max.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        let wait = if done.load(Ordering::SeqCst) { idle.min(left) } else { left.min(Duration::from_millis(200)) };
        match tokio::time::timeout(wait, cap.next_batch(&mut batch)).await {
            Ok(Ok(())) => {
                batches += 1;
                assert!(!batch.is_empty(), "next_batch returned an empty batch");
                for s in batch.iter() {
                    out.push(Seg {
                        ts: s.ts,
                        flow: s.flow,
                        dir: s.dir,
                        seq: s.seq,
                        flags: s.flags,
                        payload: s.payload.to_vec(),
                        missing: s.missing,
                        meta: s.meta,
                    });
                }
            }
            Ok(Err(e)) => panic!("next_batch: {e}"),
            Err(_) => {
                if done.load(Ordering::SeqCst) {
                    break;
                }
            }
        }
    }
    (out, batches)
}

/// Seq-ordered concatenation of one direction of the connection to `port`, deduplicated by
/// sequence number. Fails on a gap or a truncated segment.
fn reassemble(segs: &[Seg], port: u16, dir: Direction) -> Result<Vec<u8>, String> {
    let mine: Vec<&Seg> = segs.iter().filter(|s| s.flow.server.port() == port && s.dir == dir).collect();
    let syn = mine.iter().find(|s| s.flags.syn()).ok_or(format!("no SYN seen for {dir:?}"))?;
    let base = syn.seq.wrapping_add(1);
    let mut pieces: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for s in &mine {
        if s.missing != 0 {
            return Err(format!("segment at seq {} misses {} bytes", s.seq, s.missing));
        }
        if s.payload.is_empty() {
            continue;
        }
        let start = if s.flags.syn() { s.seq.wrapping_add(1) } else { s.seq };
        let rel = start.wrapping_sub(base) as u64;
        let e = pieces.entry(rel).or_default();
        if s.payload.len() > e.len() {
            if !e.is_empty() && s.payload[..e.len()] != e[..] {
                return Err(format!("two different payloads at offset {rel}"));
            }
            *e = s.payload.clone();
        } else if s.payload[..] != e[..s.payload.len()] {
            return Err(format!("two different payloads at offset {rel}"));
        }
    }
    let mut out = Vec::new();
    for (rel, p) in pieces {
        let next = out.len() as u64;
        if rel > next {
            return Err(format!("gap at offset {next} (next piece at {rel})"));
        }
        let skip = (next - rel) as usize;
        if skip < p.len() {
            out.extend_from_slice(&p[skip..]);
        }
    }
    Ok(out)
}

fn bpftool_links_of(prog_ids: &[u32]) -> Vec<u32> {
    let Ok(out) = Command::new("bpftool").args(["-j", "link", "show"]).output() else {
        println!("note: bpftool not available, relying on aya's link list");
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    v.as_array()
        .map(|a| {
            a.iter()
                .filter(|l| l["prog_id"].as_u64().is_some_and(|p| prog_ids.contains(&(p as u32))))
                .filter_map(|l| l["id"].as_u64().map(|x| x as u32))
                .collect()
        })
        .unwrap_or_default()
}

fn bpftool_progs(prog_ids: &[u32]) -> Vec<u32> {
    let Ok(out) = Command::new("bpftool").args(["-j", "prog", "show"]).output() else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    v.as_array()
        .map(|a| {
            a.iter().filter_map(|p| p["id"].as_u64().map(|x| x as u32)).filter(|id| prog_ids.contains(id)).collect()
        })
        .unwrap_or_default()
}

/// After close: none of `prog_ids`' links or programs remain (programs are freed after an RCU
/// grace period, so allow a moment).
fn assert_nothing_left(prog_ids: &[u32]) {
    assert!(!prog_ids.is_empty());
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let links: Vec<u32> = aya::programs::loaded_links()
            .flatten()
            .filter(|l| prog_ids.contains(&l.program_id()))
            .map(|l| l.id())
            .collect();
        let progs: Vec<u32> =
            aya::programs::loaded_programs().flatten().map(|p| p.id()).filter(|id| prog_ids.contains(id)).collect();
        let bt_links = bpftool_links_of(prog_ids);
        let bt_progs = bpftool_progs(prog_ids);
        if links.is_empty() && progs.is_empty() && bt_links.is_empty() && bt_progs.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("left behind: links {links:?} / bpftool {bt_links:?}, programs {progs:?} / bpftool {bt_progs:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

struct Outcome {
    segs: Vec<Seg>,
    t_send: u64,
    counters: LiveCounters,
    batches: usize,
}

/// Runs one exchange under an already started capture and checks both directions byte for
/// byte and the timestamp of the first request byte.
fn run_and_check(rt: &tokio::runtime::Runtime, cap: &mut LiveCapture, mut ex: Exchange, what: &str) -> Outcome {
    ex.go.send(()).unwrap();
    let (segs, batches) = rt.block_on(collect(cap, &ex.done, Duration::from_millis(300), Duration::from_secs(30)));
    let t_send = ex.client.take().unwrap().join().unwrap().unwrap_or_else(|e| panic!("{what}: client: {e}"));
    ex.server.join().unwrap().unwrap_or_else(|e| panic!("{what}: server: {e}"));
    let counters = cap.counters();

    let up = reassemble(&segs, ex.server_port, Direction::ToServer).unwrap_or_else(|e| panic!("{what}: request: {e}"));
    let down =
        reassemble(&segs, ex.server_port, Direction::ToClient).unwrap_or_else(|e| panic!("{what}: response: {e}"));
    assert_eq!(up.len(), ex.request.len(), "{what}: request length");
    assert!(up == ex.request, "{what}: request bytes differ");
    assert_eq!(down.len(), ex.response.len(), "{what}: response length");
    assert!(down == ex.response, "{what}: response bytes differ");

    // The first request byte was captured within a few ms of the client's write.
    let first = segs
        .iter()
        .filter(|s| s.flow.server.port() == ex.server_port && s.dir == Direction::ToServer && !s.payload.is_empty())
        .min_by_key(|s| s.ts)
        .unwrap();
    let skew_ms = first.ts.since(Timestamp(t_send)) as f64 / 1e6;
    println!("{what}: first request byte captured {skew_ms:+.3} ms after the client's write");
    assert!(skew_ms.abs() < 10.0, "{what}: timestamp off by {skew_ms} ms");
    Outcome { segs, t_send, counters, batches }
}

fn ebpf_counters(c: &LiveCounters) -> KernelCounters {
    match c {
        LiveCounters::Ebpf(k) => *k,
        LiveCounters::Pcap(_) => panic!("not an eBPF capture"),
    }
}

fn start_ebpf(config: &CaptureConfig) -> (LiveCapture, Vec<u32>, Duration) {
    let t = Instant::now();
    let c = EbpfCapture::start(config).unwrap_or_else(|e| panic!("EbpfCapture::start: {e}"));
    let took = t.elapsed();
    let ids = c.program_ids();
    let insns: Vec<(String, Option<u32>)> = aya::programs::loaded_programs()
        .flatten()
        .filter(|p| ids.contains(&p.id()))
        .map(|p| (p.name_as_str().unwrap_or("?").to_owned(), p.verified_instruction_count()))
        .collect();
    println!("start: {took:?} ({:?}), verified instructions {insns:?}", c.start_timings());
    (LiveCapture::Ebpf(Box::new(c)), ids, took)
}

fn close_ebpf(cap: LiveCapture, ids: &[u32], what: &str) {
    let LiveCapture::Ebpf(c) = cap else { panic!("not eBPF") };
    let took = c.close();
    println!("{what}: detached in {took:?}");
    assert_nothing_left(ids);
}

fn assert_no_kernel_loss(k: &KernelCounters, what: &str) {
    // Every matched payload byte is either delivered, reported by length or counted as lost
    // (loopback ingress, when left, is left before it is matched).
    assert_eq!(k.bytes_matched, k.bytes_submitted + k.skipped_bytes + k.lost_bytes(), "{what}: byte accounting: {k:?}");
    assert_eq!(k.ringbuf_lost_records, 0, "{what}: ring buffer lost records: {k:?}");
    assert_eq!(k.truncated_bytes, 0, "{what}: truncated: {k:?}");
    assert_eq!(k.load_failures, 0, "{what}: load failures: {k:?}");
    assert_eq!(k.nesting_overflow, 0, "{what}: nesting overflow: {k:?}");
}

const MB5: usize = 5 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Network namespaces

/// A network namespace (and optionally a veth pair into it), removed on drop.
struct Netns {
    name: String,
    host_if: Option<String>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Netns {
    fn create(tag: &str) -> Netns {
        let name = format!("ot-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns { name, host_if: None };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// veth pair: host end unnumbered, namespace end with `addr`/32; routes both ways.
    fn veth(&mut self, tag: &str, addr: &str) {
        let id = std::process::id() % 100_000;
        let host_if = format!("ot{tag}{id}h");
        let ns_if = format!("ot{tag}{id}n");
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &self.name]);
        self.host_if = Some(host_if.clone());
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &self.name, "addr", "add", &format!("{addr}/32"), "dev", &ns_if]);
        ip(&["-n", &self.name, "link", "set", &ns_if, "up"]);
        ip(&["route", "add", &format!("{addr}/32"), "dev", &host_if]);
        ip(&["-n", &self.name, "route", "add", "default", "dev", &ns_if]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(h) = &self.host_if {
            let _ = Command::new("ip").args(["link", "del", h]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

// ---------------------------------------------------------------------------------------------
// eBPF tests

#[test]
fn ebpf_localhost_ipv4_large_response() {
    require_ebpf!("ebpf_localhost_ipv4_large_response");
    let _g = serial();
    let rt = rt();
    let _enter = rt.enter();
    let ex = exchange("127.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap(), None, None, 300_000, MB5);
    let config = CaptureConfig::with_ports(&[ex.server_port]);
    let (mut cap, ids, attach) = start_ebpf(&config);
    println!("eBPF ipv4: {} attached in {attach:?}", cap.describe());
    let o = run_and_check(&rt, &mut cap, ex, "eBPF ipv4");
    let k = ebpf_counters(&o.counters);
    assert_no_kernel_loss(&k, "eBPF ipv4");
    // Localhost: both sockets are local, so every data packet arrives twice (egress of the
    // sender, ingress of the receiver), and each copy carries the same sequence numbers.
    let resp_records = o.segs.iter().filter(|s| s.dir == Direction::ToClient && !s.payload.is_empty()).count();
    println!(
        "eBPF ipv4: {} segments in {} batches, {resp_records} response records for 5 MiB (both copies), \
         max skb {} B, counters {:?}",
        o.segs.len(),
        o.batches,
        k.max_skb_len,
        k
    );
    assert!(k.max_skb_len > 16 * 1024, "expected TSO/GRO super-packets, max skb {}", k.max_skb_len);
    // How the two copies line up: same (direction, seq) and same length, or not.
    let mut by_seq: std::collections::HashMap<(Direction, u32), Vec<usize>> = Default::default();
    for s in o.segs.iter().filter(|s| !s.payload.is_empty()) {
        by_seq.entry((s.dir, s.seq)).or_default().push(s.payload.len());
    }
    let identical = by_seq.values().filter(|v| v.len() == 2 && v[0] == v[1]).count();
    println!(
        "eBPF ipv4: {} distinct (dir, seq) payload records, {identical} seen exactly twice with equal length",
        by_seq.len()
    );
    assert!(o.segs.iter().all(|s| s.meta.cgroup_id.is_some()), "cgroup_skb gives every record a cgroup id");
    assert!(o.t_send > 0);
    close_ebpf(cap, &ids, "eBPF ipv4");
}

#[test]
fn ebpf_localhost_ipv6() {
    require_ebpf!("ebpf_localhost_ipv6");
    let _g = serial();
    let rt = rt();
    let _enter = rt.enter();
    let ex = exchange("::1".parse().unwrap(), "::1".parse().unwrap(), None, None, 70_000, 1_000_000);
    let config = CaptureConfig::with_ports(&[ex.server_port]);
    let (mut cap, ids, _) = start_ebpf(&config);
    let o = run_and_check(&rt, &mut cap, ex, "eBPF ipv6");
    assert_no_kernel_loss(&ebpf_counters(&o.counters), "eBPF ipv6");
    assert!(o.segs.iter().all(|s| s.flow.server.is_ipv6()));
    close_ebpf(cap, &ids, "eBPF ipv6");
}

#[test]
fn ebpf_server_in_netns_reached_from_host() {
    require_ebpf!("ebpf_server_in_netns_reached_from_host");
    let _g = serial();
    let rt = rt();
    let _enter = rt.enter();
    let mut ns = Netns::create("srv");
    let addr = "10.231.77.2";
    ns.veth("a", addr);
    let ex = exchange(addr.parse().unwrap(), addr.parse().unwrap(), Some(ns.name.clone()), None, 50_000, MB5);
    // Over veth every packet is recorded twice (client egress, server ingress): the 5 MiB
    // response is a 10 MiB burst, more than the default ring holds if this test's reader (a
    // debug build, one thread) falls behind. The subject here is namespaces, not ring sizing.
    let config = CaptureConfig { ring_bytes: 32 << 20, ..CaptureConfig::with_ports(&[ex.server_port]) };
    let (mut cap, ids, _) = start_ebpf(&config);
    let o = run_and_check(&rt, &mut cap, ex, "eBPF netns server");
    assert_no_kernel_loss(&ebpf_counters(&o.counters), "eBPF netns server");
    // Both ends are local sockets (host and namespace): seen at the client's egress and the
    // server's ingress, on different interfaces (the two veth ends).
    let ifaces: std::collections::BTreeSet<u32> =
        o.segs.iter().filter(|s| s.dir == Direction::ToServer).filter_map(|s| s.meta.ifindex).collect();
    println!("eBPF netns server: request seen on ifindexes {ifaces:?}");
    close_ebpf(cap, &ids, "eBPF netns server");
}

#[test]
fn ebpf_pod_local_loopback() {
    require_ebpf!("ebpf_pod_local_loopback");
    let _g = serial();
    let rt = rt();
    let _enter = rt.enter();
    let ns = Netns::create("pod");
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let ex = exchange(lo, lo, Some(ns.name.clone()), Some(ns.name.clone()), 20_000, 2_000_000);
    let config = CaptureConfig::with_ports(&[ex.server_port]);
    let (mut cap, ids, _) = start_ebpf(&config);
    let o = run_and_check(&rt, &mut cap, ex, "eBPF pod loopback");
    assert_no_kernel_loss(&ebpf_counters(&o.counters), "eBPF pod loopback");
    close_ebpf(cap, &ids, "eBPF pod loopback");
}

#[test]
fn ebpf_skip_loopback_ingress_sees_each_packet_once() {
    require_ebpf!("ebpf_skip_loopback_ingress_sees_each_packet_once");
    let _g = serial();
    let rt = rt();
    let _enter = rt.enter();
    let ex = exchange("127.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap(), None, None, 10_000, MB5);
    let config = CaptureConfig { skip_loopback_ingress: true, ..CaptureConfig::with_ports(&[ex.server_port]) };
    let (mut cap, ids, _) = start_ebpf(&config);
    let o = run_and_check(&rt, &mut cap, ex, "eBPF lo egress only");
    let k = ebpf_counters(&o.counters);
    assert_no_kernel_loss(&k, "eBPF lo egress only");
    assert!(k.loopback_ingress_skipped > 0);
    // Each packet is seen once, at its sender's egress: no record comes from loopback ingress,
    // and no sequence number is seen at two hooks. Records repeating a sequence number at the
    // same hook are TCP's own retransmissions (window probes of a slow reader on a loaded
    // machine: 16 of 340 records once), which are real packets.
    let data: Vec<_> = o.segs.iter().filter(|s| !s.payload.is_empty()).collect();
    let not_egress = data.iter().filter(|s| s.meta.hook != Some(Hook::CgroupEgress)).count();
    assert_eq!(not_egress, 0, "{not_egress} of {} records not from the sender's egress", data.len());
    let mut hooks: std::collections::HashMap<(Direction, u32), Option<Hook>> = Default::default();
    let copies = data.iter().filter(|s| *hooks.entry((s.dir, s.seq)).or_insert(s.meta.hook) != s.meta.hook).count();
    assert_eq!(copies, 0, "{copies} of {} records are a second hook's copy", data.len());
    let mut seen = std::collections::HashSet::new();
    let retransmitted = data.iter().filter(|s| !seen.insert((s.dir, s.seq))).count();
    let resp_records = o.segs.iter().filter(|s| s.dir == Direction::ToClient && !s.payload.is_empty()).count();
    println!(
        "eBPF lo egress only: {resp_records} records for the 5 MiB response, max skb {}, {retransmitted} retransmissions",
        k.max_skb_len
    );
    close_ebpf(cap, &ids, "eBPF lo egress only");
}

#[test]
fn ebpf_tcx_on_lo() {
    require_ebpf!("ebpf_tcx_on_lo");
    let _g = serial();
    let rt = rt();
    let _enter = rt.enter();
    let ex = exchange("127.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap(), None, None, 30_000, 1_000_000);
    let config = CaptureConfig {
        ebpf_attach: EbpfAttach::Tcx(vec!["lo".into()]),
        ..CaptureConfig::with_ports(&[ex.server_port])
    };
    let (mut cap, ids, _) = start_ebpf(&config);
    let o = run_and_check(&rt, &mut cap, ex, "eBPF TCX lo");
    assert_no_kernel_loss(&ebpf_counters(&o.counters), "eBPF TCX lo");
    close_ebpf(cap, &ids, "eBPF TCX lo");
    // TCX links only: no clsact qdisc appeared on lo.
    let q = Command::new("tc").args(["qdisc", "show", "dev", "lo"]).output();
    if let Ok(q) = q {
        let q = String::from_utf8_lossy(&q.stdout);
        assert!(!q.contains("clsact"), "qdisc left behind: {q}");
    }
}

#[test]
fn ebpf_ports_can_change_while_attached() {
    require_ebpf!("ebpf_ports_can_change_while_attached");
    let _g = serial();
    let rt = rt();
    let _enter = rt.enter();
    let ex = exchange("127.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap(), None, None, 1000, 1000);
    // Start on an unrelated port, then switch to the server's (several ports at once).
    let mut c = EbpfCapture::start(&CaptureConfig::with_ports(&[1])).unwrap();
    c.set_ports(&[1, ex.server_port]).unwrap();
    let ids = c.program_ids();
    let mut cap = LiveCapture::Ebpf(Box::new(c));
    run_and_check(&rt, &mut cap, ex, "eBPF set_ports");
    close_ebpf(cap, &ids, "eBPF set_ports");
}

#[test]
fn auto_selects_ebpf_with_reason() {
    require_ebpf!("auto_selects_ebpf_with_reason");
    let _g = serial();
    let rt = rt();
    let _enter = rt.enter();
    let (cap, reason) = start_live(CaptureMode::Auto, &CaptureConfig::with_ports(&[1])).unwrap();
    println!("auto: {reason}");
    assert_eq!(cap.backend(), Backend::Ebpf);
    assert!(reason.starts_with("eBPF: cgroup_skb on /"), "{reason}");
    let ids = match &cap {
        LiveCapture::Ebpf(c) => c.program_ids(),
        LiveCapture::Pcap(_) => unreachable!(),
    };
    cap.close();
    assert_nothing_left(&ids);
    let (cap, reason) = start_live(CaptureMode::Pcap, &CaptureConfig::with_ports(&[1])).unwrap();
    assert_eq!(cap.backend(), Backend::Pcap);
    assert_eq!(reason, "pcap on any: requested");
}

// ---------------------------------------------------------------------------------------------
// libpcap fallback

#[test]
fn pcap_lo_large_response() {
    require_root!("pcap_lo_large_response");
    let _g = serial();
    let rt = rt();
    let _enter = rt.enter();
    let ex = exchange("127.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap(), None, None, 300_000, MB5);
    let config = CaptureConfig { pcap_interfaces: vec!["lo".into()], ..CaptureConfig::with_ports(&[ex.server_port]) };
    let mut cap = LiveCapture::Pcap(PcapCapture::start(&config).unwrap());
    println!("pcap: {}", cap.describe());
    let o = run_and_check(&rt, &mut cap, ex, "pcap lo");
    let LiveCounters::Pcap(p) = o.counters else { panic!() };
    println!("pcap lo: {} segments in {} batches, {p:?}", o.segs.len(), o.batches);
    assert_eq!(p.dropped, 0, "pcap dropped packets: {p:?}");
    assert_eq!(p.truncated_frames, 0);
    // On lo, libpcap keeps one copy of each packet.
    let mut seen = std::collections::HashSet::new();
    for s in o.segs.iter().filter(|s| !s.payload.is_empty()) {
        assert!(seen.insert((s.dir, s.seq)), "pcap duplicate at seq {}", s.seq);
    }
    cap.close();
}

#[test]
fn pcap_any_ipv6() {
    require_root!("pcap_any_ipv6");
    let _g = serial();
    let rt = rt();
    let _enter = rt.enter();
    let ex = exchange("::1".parse().unwrap(), "::1".parse().unwrap(), None, None, 40_000, 1_000_000);
    let config = CaptureConfig::with_ports(&[ex.server_port]);
    let (mut cap, reason) = start_live(CaptureMode::Pcap, &config).unwrap();
    assert_eq!(reason, "pcap on any: requested");
    let o = run_and_check(&rt, &mut cap, ex, "pcap any v6");
    assert!(o.segs.iter().all(|s| s.meta.ifindex.is_some()), "SLL2 carries the interface index");
    cap.close();
}

/// What an unfiltered handle on `any` saw of one TCP packet (cooked v2 header, then IP).
#[derive(Debug)]
struct Seen {
    /// The outgoing copy of a loopback packet (the incoming one is the same packet).
    loopback_out: bool,
    /// A segment reassembly needs: payload, or SYN, FIN or RST.
    needed: bool,
    /// Source port and sequence number of a segment with payload.
    data_seq: Option<(u16, u32)>,
}

/// Decodes the few header fields the filter looks at (the snap length cuts the payload).
fn seen(frame: &[u8], lo_ifindex: u32) -> Option<Seen> {
    let ifindex = u32::from_be_bytes(frame.get(4..8)?.try_into().ok()?);
    let outgoing = *frame.get(10)? == 4;
    let ip = frame.get(20..)?;
    let (ip_payload_len, tcp) = match ip.first()? >> 4 {
        4 => {
            let ihl = ((ip[0] & 0xf) as i64) * 4;
            (i64::from(u16::from_be_bytes([ip[2], ip[3]])) - ihl, ip.get(ihl as usize..)?)
        }
        6 => (i64::from(u16::from_be_bytes([ip[4], ip[5]])), ip.get(40..)?),
        _ => return None,
    };
    // A GSO packet's length field may be 0: not a pure ACK (as the filter reckons).
    let data = ip_payload_len - ((tcp.get(12)? >> 4) as i64) * 4;
    let flags = *tcp.get(13)?;
    let sport = u16::from_be_bytes([*tcp.first()?, *tcp.get(1)?]);
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    Some(Seen {
        loopback_out: outgoing && ifindex == lo_ifindex,
        needed: data != 0 || flags & 0x7 != 0,
        data_seq: (data != 0).then_some((sport, seq)),
    })
}

/// The kernel filter of the fallback: pure ACKs and the outgoing copy of loopback packets never
/// reach user space, and what does reach it is exactly the rest. An unfiltered handle on `any`
/// (ports only, headers only) counts what was on the wire meanwhile; both exchanges' bytes are
/// checked as in the other tests.
#[test]
fn pcap_filter_drops_pure_acks_and_the_loopback_copy() {
    require_root!("pcap_filter_drops_pure_acks_and_the_loopback_copy");
    let _g = serial();
    let rt = rt();
    let _enter = rt.enter();
    let ex = exchange("127.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap(), None, None, 300_000, MB5);
    let port = ex.server_port;
    // SAFETY: a NUL-terminated literal.
    let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    assert_ne!(lo, 0, "no lo");
    let mut all = pcap::Capture::from_device("any")
        .unwrap()
        .snaplen(128)
        .buffer_size(64 << 20)
        .timeout(5)
        .open()
        .unwrap()
        // Polled: a blocking TPACKET_V3 read waits forever once the traffic stops.
        .setnonblock()
        .unwrap();
    all.set_datalink(pcap::Linktype(276)).unwrap();
    all.filter(&format!("tcp and port {port}"), true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let reference = thread::spawn(move || {
        let mut seen_all = Vec::new();
        loop {
            match all.next_packet() {
                Ok(p) => seen_all.push(seen(p.data, lo).expect("a TCP packet on `any`")),
                // Told to stop once the capture under test saw nothing for a while: the
                // kernel hands over the last block within its 5 ms timeout.
                Err(pcap::Error::TimeoutExpired) if s.load(Ordering::SeqCst) => {
                    thread::sleep(Duration::from_millis(100));
                    if let Ok(p) = all.next_packet() {
                        seen_all.push(seen(p.data, lo).expect("a TCP packet on `any`"));
                        continue;
                    }
                    break;
                }
                Err(pcap::Error::TimeoutExpired) => thread::sleep(Duration::from_millis(2)),
                Err(e) => panic!("reference capture: {e}"),
            }
        }
        (seen_all, all.stats().unwrap())
    });
    let config = CaptureConfig::with_ports(&[port]);
    let (mut cap, _) = start_live(CaptureMode::Pcap, &config).unwrap();
    println!("pcap: {}", cap.describe());
    let o = run_and_check(&rt, &mut cap, ex, "pcap filter");
    stop.store(true, Ordering::SeqCst);
    let (wire, stats) = reference.join().unwrap();
    let LiveCounters::Pcap(p) = o.counters else { panic!("not pcap") };
    assert_eq!(stats.dropped, 0, "the reference handle dropped packets");
    assert_eq!((p.dropped, p.if_dropped, p.decode_errors, p.truncated_frames), (0, 0, 0, 0), "{p:?}");

    // libpcap drops the outgoing copy of a loopback packet itself, after the kernel copied it
    // into the ring and counted it (`received`): the unfiltered handle shows it that way.
    let copies = stats.received as usize - wire.iter().filter(|w| !w.loopback_out).count();
    let pure_acks = wire.iter().filter(|w| !w.loopback_out && !w.needed).count();
    let needed = wire.iter().filter(|w| !w.loopback_out && w.needed).count();
    println!(
        "pcap filter: on the wire {} packets ({} received by the kernel: {copies} outgoing loopback copies), \
         {pure_acks} pure ACKs; delivered {} (received by the kernel {})",
        wire.len(),
        stats.received,
        p.frames,
        p.received
    );
    // There was something to refuse: both copies of every packet, and pure ACKs.
    assert_eq!(copies, wire.len(), "every loopback packet has an outgoing copy");
    assert!(pure_acks > 0, "no pure ACK to refuse");
    assert_eq!(p.frames, needed as u64, "packets delivered to user space");
    // The kernel's own count: nothing refused reached the ring (no copy, no ACK).
    assert_eq!(p.received, p.frames, "the kernel passed more than was read (filtered in user space?)");
    assert_eq!(o.segs.len(), needed, "segments");
    for s in &o.segs {
        assert!(!s.payload.is_empty() || s.flags.syn() || s.flags.fin() || s.flags.rst(), "a pure ACK: {s:?}");
    }
    // One segment per data packet on the wire, each once: a sequence number delivered twice was
    // sent twice (TCP's own retransmission, e.g. a window probe on a loaded machine), not
    // taken at two places.
    let mut on_wire: Vec<(u16, u32)> = wire.iter().filter(|w| !w.loopback_out).filter_map(|w| w.data_seq).collect();
    let mut delivered: Vec<(u16, u32)> = o
        .segs
        .iter()
        .filter(|s| !s.payload.is_empty())
        .map(|s| (if s.dir == Direction::ToServer { s.flow.client.port() } else { s.flow.server.port() }, s.seq))
        .collect();
    on_wire.sort_unstable();
    delivered.sort_unstable();
    assert!(!on_wire.is_empty(), "no data packet seen on the wire");
    assert_eq!(delivered, on_wire, "data segments delivered against those on the wire");
    cap.close();
}

/// Not a pass/fail test: measures ring-buffer loss under three back-to-back 100 MiB
/// localhost downloads. Run with
/// `cargo test --release -p ollama-tracer-tests --test root -- --ignored --nocapture live_capture::ebpf_throughput`.
#[test]
#[ignore]
fn ebpf_throughput_measure() {
    require_ebpf!("ebpf_throughput_measure");
    let _g = serial();
    let rt = rt();
    let _enter = rt.enter();
    const SIZE: usize = 100 << 20;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // OT_RING_BYTES: ring-buffer size to measure with (default 32 MiB).
    let ring_bytes = std::env::var("OT_RING_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(32 << 20);
    let config = CaptureConfig { ring_bytes, ..CaptureConfig::with_ports(&[port]) };
    let c = EbpfCapture::start(&config).unwrap();
    let ids = c.program_ids();
    let mut cap = LiveCapture::Ebpf(Box::new(c));
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let server = thread::spawn(move || {
        let block = pattern(1 << 20, 7);
        for _ in 0..3 {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 4];
            s.read_exact(&mut req).unwrap();
            for _ in 0..SIZE / block.len() {
                s.write_all(&block).unwrap();
            }
        }
    });
    let client = thread::spawn(move || {
        let t = Instant::now();
        for _ in 0..3 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET!").unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0;
            loop {
                let k = s.read(&mut buf).unwrap();
                if k == 0 {
                    break;
                }
                n += k;
            }
            assert_eq!(n, SIZE);
        }
        d.store(true, Ordering::SeqCst);
        t.elapsed()
    });
    let read = rt.block_on(async {
        let mut batch = SegmentBatch::default();
        let mut bytes = 0u64;
        loop {
            match tokio::time::timeout(Duration::from_millis(300), cap.next_batch(&mut batch)).await {
                Ok(r) => {
                    r.unwrap();
                    bytes += batch.data.len() as u64;
                }
                Err(_) if done.load(Ordering::SeqCst) => break bytes,
                Err(_) => {}
            }
        }
    });
    let took = client.join().unwrap();
    server.join().unwrap();
    let k = ebpf_counters(&cap.counters());
    let rate = 3.0 * SIZE as f64 / took.as_secs_f64() / 1e9;
    println!("throughput: 3 x 100 MiB in {took:?} ({rate:.2} GB/s), read {read} payload bytes, kernel {k:?}");
    if let LiveCapture::Ebpf(c) = &cap {
        println!("reader: {:?}", c.reader_counters());
    }
    assert_eq!(k.bytes_matched, k.bytes_submitted + k.lost_bytes(), "byte accounting");
    close_ebpf(cap, &ids, "throughput");
}

#[test]
fn ebpf_debug_log_and_pure_acks() {
    require_ebpf!("ebpf_debug_log_and_pure_acks");
    let _g = serial();
    let rt = rt();
    let _enter = rt.enter();
    let ex = exchange("127.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap(), None, None, 1000, 100_000);
    let _ = tracing_subscriber::fmt().with_max_level(tracing::Level::DEBUG).with_test_writer().try_init();
    // The aya-log code paths are only verified when the flag is on: load them once.
    let config =
        CaptureConfig { ebpf_debug_log: true, emit_pure_acks: true, ..CaptureConfig::with_ports(&[ex.server_port]) };
    let (mut cap, ids, _) = start_ebpf(&config);
    let o = run_and_check(&rt, &mut cap, ex, "eBPF debug log");
    let k = ebpf_counters(&o.counters);
    assert_eq!(k.pure_acks_skipped, 0);
    assert!(o.segs.iter().any(|s| s.payload.is_empty() && s.flags.0 == TcpFlags::ACK), "pure ACKs emitted");
    close_ebpf(cap, &ids, "eBPF debug log");
}
