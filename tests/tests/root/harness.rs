//! Processes and system state for the live tests: the `ollama-tracer` binary run as a child
//! (spans read from its stdout, the summary from its stderr), the stand-in, the Python client
//! drivers, network namespaces, and the checks that nothing stays attached.
//!
//! Every child process and namespace is owned by a guard whose `Drop` ends it by its pid (or
//! deletes it), so a failing test leaves nothing behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use testkit::privileged::{serial, skipped};

pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub use testkit::process::tracer_bin;

/// The Python of the client venv (scripts/setup-python.sh).
pub fn python() -> PathBuf {
    let venv = std::env::var_os("OLLAMA_TRACER_VENV").map(PathBuf::from).unwrap_or_else(|| tests_dir().join(".venv"));
    let py = venv.join("bin/python");
    assert!(py.exists(), "{} missing: run scripts/setup-python.sh (cargo xtask test does)", py.display());
    py
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ot-live-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill on the pid of a child we own (not yet reaped, so not reused).
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Ends a child: `sig` (if any), then up to `grace` for it to exit, then SIGKILL.
fn end_child(child: &mut Child, sig: Option<libc::c_int>, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    if let Some(sig) = sig {
        signal(child.id(), sig);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// `ip netns exec NS` in front of a command, when `netns` is given.
fn command(program: &Path, netns: Option<&str>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A Python client driver, real-time scheduled (`chrt -f 10`): its socket reader thread then
/// takes each response chunk as it arrives even when the machine is busy, so the kernel does
/// not merge it with the next one and the client's receive times stay exact. (The drivers
/// block on I/O; the kernel's real-time throttling bounds them anyway.)
fn driver_command(script: &str, netns: Option<&str>) -> Command {
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "chrt", "-f", "10"]);
            c
        }
        None => {
            let mut c = Command::new("chrt");
            c.args(["-f", "10"]);
            c
        }
    };
    c.arg(python()).arg(tests_dir().join("clients").join(script));
    c
}

// ---------------------------------------------------------------------------------------------
// The stand-in

/// A running `ollama-standin` (optionally inside a network namespace).
pub struct Standin {
    child: Child,
    /// The addresses asked for, in order (traced).
    pub addrs: Vec<SocketAddr>,
    /// One more address on the first one's IP, not traced: the drivers' warm-up runs there.
    pub warmup: SocketAddr,
    truth: PathBuf,
    dir: PathBuf,
    /// Behind TLS: the directory holding the test CA (`ca.pem`) and the server's key pair.
    pub tls: Option<PathBuf>,
}

impl Standin {
    /// Listens on each of `listen` (port 0: a free port), plus a warm-up address. Timing:
    /// 50 ms to the first chunk, 4 ms between chunks (short runs, yet each chunk its own read).
    pub fn start(listen: &[&str], netns: Option<&str>, extra: &[&str]) -> Standin {
        Self::spawn(listen, netns, extra, false)
    }

    /// [`Standin::start`] behind TLS (`--tls-dir`): a test CA made for this run; the drivers
    /// trust it and talk https://.
    pub fn start_tls(listen: &[&str]) -> Standin {
        Self::spawn(listen, None, &[], true)
    }

    fn spawn(listen: &[&str], netns: Option<&str>, extra: &[&str], tls: bool) -> Standin {
        let dir = temp_dir("standin");
        let truth = dir.join("truth.jsonl");
        let tls = tls.then(|| dir.join("tls"));
        let mut cmd = command(Path::new(env!("CARGO_BIN_EXE_ollama-standin")), netns);
        if let Some(t) = &tls {
            cmd.arg("--tls-dir").arg(t);
        }
        let first: SocketAddr = listen[0].parse().expect("listen address");
        // Behind TLS the tracer is told the traced addresses' host: warm-ups go to another.
        let warmup_ip = if tls.is_some() { std::net::Ipv4Addr::LOCALHOST.into() } else { first.ip() };
        let warmup = SocketAddr::new(warmup_ip, 0).to_string();
        for l in listen.iter().chain([&warmup.as_str()]) {
            cmd.args(["--listen", l]);
        }
        let mut child = cmd
            .arg("--truth")
            .arg(&truth)
            .args(["--gap-ms", "4", "--drain-ms", "500"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ollama-standin");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for _ in 0..=listen.len() {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("stand-in said {line:?}"));
            addrs.push(addr.parse().unwrap());
        }
        let warmup = addrs.pop().unwrap();
        Standin { child, addrs, warmup, truth, dir, tls }
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn url(&self, i: usize) -> String {
        format!("{}://{}", self.scheme(), self.addrs[i])
    }

    pub fn warmup_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.warmup)
    }

    /// The test CA to trust, behind TLS.
    pub fn ca(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|d| d.join("ca.pem"))
    }

    /// Truth records of the traced addresses written so far (whole lines only).
    pub fn truth_now(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.truth).unwrap_or_default();
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        whole
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|t| t["server_addr"].as_str().and_then(|a| a.parse::<SocketAddr>().ok()) != Some(self.warmup))
            .collect()
    }

    /// At least `n` truth records, waiting up to 10 s for them.
    pub fn truth(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let recs = self.truth_now();
            if recs.len() >= n {
                return recs;
            }
            assert!(Instant::now() < deadline, "only {} of {n} truth records", recs.len());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        end_child(&mut self.child, Some(libc::SIGTERM), Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// The tracer

/// Program and link ids a tracer process holds (from its fds' fdinfo).
#[derive(Clone, Debug, Default)]
pub struct BpfIds {
    pub progs: Vec<u32>,
    pub links: Vec<u32>,
}

fn bpf_ids_of(pid: u32) -> BpfIds {
    let mut ids = BpfIds::default();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return ids };
    for e in dir.flatten() {
        let Ok(info) = std::fs::read_to_string(e.path()) else { continue };
        let field =
            |name: &str| info.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<u32>().ok()));
        match (field("link_id:"), field("prog_id:")) {
            (Some(link), _) => ids.links.push(link),
            (None, Some(prog)) => ids.progs.push(prog),
            _ => {}
        }
    }
    ids.progs.sort_unstable();
    ids.progs.dedup();
    ids.links.sort_unstable();
    ids
}

fn bpftool_ids(what: &str) -> Vec<u32> {
    let out = Command::new("bpftool").args(["-j", what, "show"]).output().expect("run bpftool (scripts/setup.sh)");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array().map(|a| a.iter().filter_map(|x| x["id"].as_u64().map(|i| i as u32)).collect()).unwrap_or_default()
}

/// None of `ids` is loaded or attached any more, per bpftool (programs are freed after an RCU
/// grace period: allow a moment).
pub fn assert_detached(ids: &BpfIds, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let progs: Vec<u32> = bpftool_ids("prog").into_iter().filter(|i| ids.progs.contains(i)).collect();
        let links: Vec<u32> = bpftool_ids("link").into_iter().filter(|i| ids.links.contains(i)).collect();
        if progs.is_empty() && links.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: left attached: programs {progs:?}, links {links:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No qdisc of ours (clsact/ingress) and no tc/TCX program of `ids` on the interface.
pub fn assert_interface_clean(iface: &str, ids: &BpfIds, netns: Option<&str>) {
    let mut tc = Command::new("tc");
    if let Some(ns) = netns {
        tc.args(["-n", ns]);
    }
    let q = tc.args(["qdisc", "show", "dev", iface]).output().expect("run tc");
    let q = String::from_utf8_lossy(&q.stdout);
    assert!(!q.contains("clsact") && !q.contains("qdisc ingress"), "{iface}: qdisc left behind: {q}");
    let net = Command::new("bpftool").args(["-j", "net", "show", "dev", iface]).output().expect("run bpftool net");
    let net = String::from_utf8_lossy(&net.stdout);
    for p in &ids.progs {
        assert!(!net.contains(&format!("\"prog_id\":{p}")), "{iface}: program {p} still attached: {net}");
    }
}

/// The summary the tracer prints on stderr at exit, with the numbers the tests look at.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub text: String,
    pub calls: u64,
    pub spans: u64,
    pub gaps: u64,
    pub incomplete: u64,
    pub kernel_drops: u64,
    /// Bytes seen more than once (e.g. at both ends of a local connection), deduplicated.
    pub duplicate_bytes: u64,
    pub midstream_connections: u64,
    pub resyncs: u64,
    /// Bytes skipped looking for the next request or response (a call seen only in part).
    pub resync_skipped_bytes: u64,
    pub orphan_responses: u64,
    /// `kernel:` line (eBPF): records and bytes lost to a full ring buffer.
    pub ringbuf_lost_records: Option<u64>,
    pub ringbuf_lost_bytes: Option<u64>,
    /// `kernel:` line: body bytes (and packets) reported by length only, and bytes copied.
    pub skipped_bytes: Option<u64>,
    pub skipped_packets: Option<u64>,
    /// Blob uploads the kernel named for skipping itself.
    pub blob_skips_named: Option<u64>,
    pub bytes_submitted: Option<u64>,
    /// `libpcap:` line: packets dropped (buffer).
    pub pcap_dropped: Option<u64>,
    /// `tls:` line, when TLS capture ran.
    pub tls: Option<TlsSummary>,
}

/// The summary's `tls:` line.
#[derive(Clone, Debug, Default)]
pub struct TlsSummary {
    pub files: u64,
    /// Reads and writes the probes saw (every session), and their bytes.
    pub calls: u64,
    pub bytes: u64,
    /// Calls of processes left out by include/exclude.
    pub excluded: u64,
    pub sessions_traced: u64,
    pub sessions_ignored: u64,
    pub bytes_ignored: u64,
    pub records_submitted: u64,
    pub bytes_submitted: u64,
    pub records_lost: u64,
    pub connections: u64,
    pub other_ends: u64,
    pub unresolved_bytes: u64,
    pub ciphertext_dropped: u64,
}

impl TlsSummary {
    fn parse(line: &str) -> Option<TlsSummary> {
        let line = line.trim_start().strip_prefix("tls: ")?;
        let submitted = line.split("; ").nth(3)?;
        Some(TlsSummary {
            files: num_before(line, " files probed")?,
            calls: num_before(line, " reads and writes")?,
            bytes: num_before(line, " bytes) seen")?,
            excluded: num_before(line, " of excluded processes")?,
            sessions_traced: num_before(line, " sessions traced")?,
            sessions_ignored: num_before(line, " ignored (")?,
            bytes_ignored: num_before(line, " bytes never copied")?,
            records_submitted: num_before(submitted, " records (")?,
            bytes_submitted: num_before(submitted, " bytes) submitted")?,
            records_lost: submitted.split("submitted, ").nth(1).and_then(|s| num_before(s, " records ("))?,
            connections: num_before(line, " connections")?,
            other_ends: num_before(line, " other ends")?,
            unresolved_bytes: num_before(line, " bytes without a socket")?,
            ciphertext_dropped: num_before(line, " ciphertext packets dropped")?,
        })
    }
}

/// The number right after `label` in `text` ("gaps: 3 (…" → 3).
fn num_after(text: &str, label: &str) -> Option<u64> {
    let rest = &text[text.find(label)? + label.len()..];
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

/// The number just before `label` in `text` ("27 calls" → 27).
fn num_before(text: &str, label: &str) -> Option<u64> {
    let at = text.find(label)?;
    let head = text[..at].trim_end();
    let digits: String = head.chars().rev().take_while(char::is_ascii_digit).collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

impl Summary {
    fn parse(stderr: &str) -> Option<Summary> {
        let at = stderr.find("ollama-tracer summary:")?;
        let text = stderr[at..].to_owned();
        let line = |prefix: &str| text.lines().find(|l| l.trim_start().starts_with(prefix)).unwrap_or("").to_owned();
        let first = line("ollama-tracer summary:");
        let gaps = line("gaps:");
        let frames = line("frames:");
        let tcp = line("tcp:");
        let kernel = line("kernel:");
        let pcap = line("libpcap:");
        let tls = line("tls:");
        Some(Summary {
            calls: num_before(&first, " calls")?,
            spans: num_before(&first, " spans")?,
            gaps: num_after(&gaps, "gaps: ")?,
            incomplete: num_after(&gaps, "incomplete spans: ")?,
            kernel_drops: num_after(&frames, "kernel drops: ")?,
            duplicate_bytes: num_after(&tcp, "tcp: ")?,
            midstream_connections: num_before(&tcp, " mid-stream connections")?,
            resyncs: num_before(&tcp, " resyncs")?,
            resync_skipped_bytes: num_before(&tcp, " bytes skipped")?,
            orphan_responses: num_before(&tcp, " orphan responses")?,
            ringbuf_lost_records: kernel.split("submitted, ").nth(1).and_then(|s| num_before(s, " records")),
            ringbuf_lost_bytes: kernel.split("submitted, ").nth(1).and_then(|s| num_before(s, " bytes) lost")),
            skipped_bytes: num_before(&kernel, " body bytes skipped"),
            skipped_packets: kernel.split("body bytes skipped (").nth(1).and_then(|s| num_before(s, " packets,")),
            blob_skips_named: num_before(&kernel, " blob uploads named by the kernel"),
            bytes_submitted: num_before(&kernel, " bytes) submitted"),
            pcap_dropped: num_before(&pcap, " dropped (buffer)"),
            tls: TlsSummary::parse(&tls),
            text,
        })
    }
}

/// What a stopped tracer left: exit status, every span it wrote, its summary.
pub struct Finished {
    pub status: ExitStatus,
    /// What the tracer had loaded and attached (all gone now).
    pub ids: BpfIds,
    /// The call spans (server kind).
    pub spans: Vec<Value>,
    /// Every span written, children (phases, conversations, tools) included.
    pub written: usize,
    pub summary: Summary,
}

/// A running `ollama-tracer run --output json`.
pub struct Tracer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    pub ids: BpfIds,
    /// Wall clock when the capture said it was attached.
    pub attached_ns: u64,
    what: String,
}

impl Tracer {
    /// Starts the tracer with `args` (after `run --output json`) and waits until it reports
    /// its capture attached.
    pub fn start(what: &str, args: &[String]) -> Tracer {
        let mut cmd = Command::new(tracer_bin());
        cmd.args(["run", "--output", "json"]).args(args).env("OLLAMA_TRACER_LOG", "info").env("NO_COLOR", "1");
        Tracer::start_command(what, cmd)
    }

    /// Starts `cmd` (an `ollama-tracer run --output json …` set up by the caller: another
    /// binary, directory or environment) and waits until it reports its capture attached.
    pub fn start_command(what: &str, mut cmd: Command) -> Tracer {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ollama-tracer");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let (out, l) = (child.stdout.take().unwrap(), lines.clone());
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push(line);
            }
        }));
        let (mut err, e) = (child.stderr.take().unwrap(), stderr.clone());
        readers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                e.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }));
        let mut t = Tracer { child, lines, stderr, readers, ids: BpfIds::default(), attached_ns: 0, what: what.into() };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if t.stderr.lock().unwrap().contains("capture: ") {
                t.attached_ns = now_ns();
                break;
            }
            if let Ok(Some(st)) = t.child.try_wait() {
                panic!("{what}: ollama-tracer exited ({st}) before attaching:\n{}", t.stderr.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "{what}: tracer not attached after 60 s:\n{}", t.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
        t.ids = bpf_ids_of(t.child.id());
        println!("{what}: {} (programs {:?}, links {:?})", t.capture_line(), t.ids.progs, t.ids.links);
        t
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn capture_line(&self) -> String {
        self.stderr().lines().find(|l| l.contains("capture: ")).unwrap_or("").trim().to_owned()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Call spans written so far (the server span of each call; its phase, conversation and
    /// tool children are left out).
    pub fn spans(&self) -> Vec<Value> {
        self.all_spans().into_iter().filter(|s| s["kind"] == "server").collect()
    }

    /// Every span written so far, children included.
    pub fn all_spans(&self) -> Vec<Value> {
        let lines = self.lines.lock().unwrap();
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("span line {l:?}: {e}"))).collect()
    }

    /// Waits until at least `n` spans were written (the daemon flushes each tick).
    pub fn wait_spans(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= n || Instant::now() >= deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` (SIGINT or SIGTERM), waits for the exit, checks that nothing of ours stays
    /// attached, and returns what the tracer wrote.
    pub fn stop(mut self, sig: libc::c_int) -> Finished {
        let status = end_child(&mut self.child, Some(sig), Duration::from_secs(20)).expect("tracer exit status");
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let stderr = self.stderr();
        let spans = self.spans();
        let written = self.all_spans().len();
        assert_detached(&self.ids, &self.what);
        let summary = Summary::parse(&stderr)
            .unwrap_or_else(|| panic!("{}: no summary in the tracer's stderr ({status}):\n{stderr}", self.what));
        println!("{}: exit {status}\n{}", self.what, summary.text.trim_end());
        Finished { status, ids: std::mem::take(&mut self.ids), spans, written, summary }
    }
}

impl Tracer {
    /// SIGKILL (no chance to detach anything itself): the kernel still drops its links and
    /// programs with its file descriptors. Checks that, returns the ids.
    pub fn kill(mut self) -> BpfIds {
        end_child(&mut self.child, Some(libc::SIGKILL), Duration::from_secs(5)).expect("killed tracer");
        let ids = std::mem::take(&mut self.ids);
        assert_detached(&ids, &format!("{} (SIGKILL)", self.what));
        ids
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // Only after a failure (stop() ended it already): the kernel drops the links with the fds.
        end_child(&mut self.child, Some(libc::SIGKILL), Duration::from_secs(5));
    }
}

// ---------------------------------------------------------------------------------------------
// Python client drivers

/// Runs `tests/clients/<script>` against the stand-in's traced address `i` (inside `netns` if
/// given), after a warm-up run against its untraced one; the per-call records. Every call
/// must have succeeded, within 3 minutes.
pub fn run_driver(script: &str, standin: &Standin, i: usize, netns: Option<&str>) -> Vec<Value> {
    let mut cmd = driver_command(script, netns);
    cmd.args(["--base-url", &standin.url(i), "--warmup-url", &standin.warmup_url()]);
    if let Some(ca) = standin.ca() {
        cmd.env("STANDIN_CA", ca);
    }
    collect_driver(cmd, script)
}

/// Runs a session of the real `ollama` npm client (tests/clients/node, on Node's own fetch)
/// against the stand-in's first address; its JSON lines, one per call.
pub fn run_node_driver(script: &str, standin: &Standin) -> Vec<Value> {
    let dir = tests_dir().join("clients/node");
    assert!(
        dir.join("node_modules/ollama/package.json").exists(),
        "{} has no node_modules: run scripts/setup-node.sh (cargo xtask test does)",
        dir.display()
    );
    let mut cmd = Command::new("chrt");
    cmd.args(["-f", "10", "node"]).arg(dir.join(script)).args(["--base-url", &standin.url(0)]);
    if let Some(ca) = standin.ca() {
        cmd.env("NODE_EXTRA_CA_CERTS", ca);
    }
    collect_driver(cmd, script)
}

/// Runs a driver to its end (killed after 3 min) and returns its records, each without error.
pub fn collect_driver(mut cmd: Command, script: &str) -> Vec<Value> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("run the driver {script}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let status = end_child(&mut child, None, Duration::from_secs(180)).expect("driver exit status");
    let text = reader.join().unwrap();
    assert!(status.success(), "{script} exited {status} (killed after 3 min if it hung):\n{text}");
    let recs: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for r in &recs {
        assert!(r["error"].is_null(), "{script}: call {} failed: {}", r["call"], r["error"]);
    }
    recs
}

/// A driver whose stdin and stdout the test talks to while it runs.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    reader: Option<JoinHandle<()>>,
}

impl Session {
    pub fn start(script: &str, args: &[&str]) -> Session {
        let mut child = driver_command(script, None)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python driver");
        let stdin = child.stdin.take();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Session { child, stdin, lines, reader: Some(reader) }
    }

    /// The next line the driver printed.
    pub fn line(&self, timeout: Duration) -> Value {
        let l = self.lines.recv_timeout(timeout).expect("driver output");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("driver line {l:?}: {e}"))
    }

    pub fn say(&mut self, line: &str) {
        let s = self.stdin.as_mut().expect("stdin");
        writeln!(s, "{line}").unwrap();
        s.flush().unwrap();
    }

    /// Closes stdin, waits for the exit and returns the remaining lines.
    pub fn finish(mut self) -> Vec<Value> {
        drop(self.stdin.take());
        let st = end_child(&mut self.child, None, Duration::from_secs(60)).expect("driver exit");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let rest: Vec<Value> = self.lines.try_iter().map(|l| serde_json::from_str(&l).unwrap()).collect();
        assert!(st.success(), "driver exited {st}");
        rest
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        end_child(&mut self.child, Some(libc::SIGKILL), Duration::from_secs(1));
    }
}

// ---------------------------------------------------------------------------------------------
// Network namespaces

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn sysctl(key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// A network namespace of ours, with veth pairs to the host; removed on drop together with
/// its host-side interfaces and any process still inside.
pub struct Netns {
    pub name: String,
    host_ifs: Vec<String>,
}

impl Netns {
    pub fn create(tag: &str) -> Netns {
        let name = format!("ot-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns { name, host_ifs: Vec::new() };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// A veth pair: `addr`/32 on the namespace end (its default route), the host end without
    /// an address, routing to `addr` and — with forwarding and proxy ARP on this interface
    /// only — relaying between namespaces. Returns the host-side interface name.
    pub fn veth_to_host(&mut self, tag: &str, addr: &str) -> String {
        let id = std::process::id() % 100_000;
        let host_if = format!("ot{tag}{id}h");
        let ns_if = format!("ot{tag}{id}n");
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &self.name]);
        self.host_ifs.push(host_if.clone());
        sysctl(&format!("net.ipv4.conf.{host_if}.forwarding"), "1");
        sysctl(&format!("net.ipv4.conf.{host_if}.proxy_arp"), "1");
        // Proxy ARP answers after up to 0.8 s by default.
        sysctl(&format!("net.ipv4.neigh.{host_if}.proxy_delay"), "0");
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &self.name, "addr", "add", &format!("{addr}/32"), "dev", &ns_if]);
        ip(&["-n", &self.name, "link", "set", &ns_if, "up"]);
        ip(&["route", "add", &format!("{addr}/32"), "dev", &host_if]);
        ip(&["-n", &self.name, "route", "add", "default", "dev", &ns_if]);
        host_if
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside (a failed test) keep the namespace and its veths alive.
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
                signal(pid, libc::SIGKILL);
            }
        }
        for h in &self.host_ifs {
            let _ = Command::new("ip").args(["link", "del", h]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
