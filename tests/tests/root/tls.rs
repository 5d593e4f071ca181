//! Every Ollama call, even encrypted (issue 19, "Proof"): the stand-in behind TLS (rustls, a
//! test CA made for the run) on an address of its own, the real `ollama-tracer` with
//! `--tls-host` that address, and real clients over https:// — the `ollama` and `openai` Python
//! clients (Python's ssl on the system's OpenSSL), the `ollama` npm client (Node's OpenSSL), a
//! small Go client built here with the system's Go (crypto/tls) — each call one exact span
//! saying `https` and the library, times within 2 ms of the client's view at the TLS layer.
//! Also: both ends of a connection probed (a Go client through a Go TLS proxy) give one span
//! per call; the ciphertext of a traced TLS port is dropped; TLS sessions with other hosts
//! never reach user space (the kernel's counters).
//!
//! Needs root and the eBPF object, like the other live tests (`SKIPPED` said loudly otherwise).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::check::{self, check_sessions_tls, check_values};
use super::harness::{Standin, Tracer, run_driver, run_node_driver, serial};
use super::live::{args, ebpf_missing, port_args};

/// An address of this test run's own on loopback (127.77.X.n, X from the process id): other
/// TLS traffic to 127.0.0.1 on a shared machine is not the test's.
fn test_ip(n: u8) -> String {
    format!("127.77.{}.{n}", std::process::id() % 250)
}

/// Waits until the tracer says it probes `path` (a program it saw start), or panics.
fn wait_probed(tracer: &Tracer, path: &Path, what: &str) {
    let needle = format!("tls: probing {} (", path.display());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tracer.stderr().contains(&needle) {
        assert!(Instant::now() < deadline, "{what}: {} not probed within 30 s:\n{}", path.display(), tracer.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Node's TLS is probed: through the system's libssl (probed at start) when Node links it,
/// else in the `node` executable, probed when a `node` first runs — so one runs first.
fn ensure_node_probed(tracer: &Tracer, what: &str) {
    let node = std::fs::canonicalize(which("node")).expect("node (scripts/setup-node.sh)");
    let ldd = Command::new("ldd").arg(&node).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if ldd.is_ok_and(|l| l.contains("libssl.so")) {
        return;
    }
    let st = Command::new(&node).args(["-e", "setTimeout(() => {}, 1000)"]).status().expect("run node");
    assert!(st.success());
    wait_probed(tracer, &node, what);
}

fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{name} not on PATH"))
}

/// The Go client (tests/clients/go), built once per test run with the system's Go.
fn go_client() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let go = std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join("go")).find(|p| p.is_file()))
            .expect("`go` not on PATH: run scripts/setup-go.sh (cargo xtask test does)");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-client");
        std::fs::create_dir_all(&dir).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/go/main.go");
        let out = dir.join("ollama-go-client");
        let st = Command::new(go)
            .arg("build")
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("gopath"))
            .env("GOFLAGS", "-buildvcs=false")
            .env("CGO_ENABLED", "0")
            .status()
            .expect("go build");
        assert!(st.success(), "go build {}", src.display());
        out
    })
    .clone()
}

/// Runs the Go client against `url` once the tracer probes it (it starts, waits on stdin, the
/// tracer sees its exec and attaches, then it goes); its records, each without error.
fn run_go_client(tracer: &Tracer, url: &str, ca: &Path, what: &str) -> Vec<Value> {
    let bin = go_client();
    let mut child = Reaped(
        Command::new(&bin)
            .args(["--wait", "--base-url", url])
            .arg("--ca")
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run the Go client"),
    );
    let mut out = child.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    wait_probed(tracer, &bin, what);
    writeln!(child.0.stdin.take().unwrap(), "go").unwrap();
    let st = child.0.wait().unwrap();
    let text = reader.join().unwrap();
    assert!(st.success(), "{what}: the Go client exited {st}:\n{text}");
    let recs: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for r in &recs {
        assert!(r["error"].is_null(), "{what}: call {} failed: {}", r["call"], r["error"]);
    }
    recs
}

/// A child that is killed and reaped when dropped: also when the test panics before its end
/// (a proxy left running kept the test binary's output open after a failure).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The tracer on `host`'s TLS sessions (and, with `ports`, the packets of those ports).
fn tracer(what: &str, host: &str, ports: &[&Standin]) -> Tracer {
    let mut a = args(&["--capture", "ebpf", "--tls-host", host]);
    a.extend(if ports.is_empty() { args(&["--port", "1"]) } else { port_args(ports) });
    Tracer::start(what, &a)
}

fn no_losses(s: &super::harness::Summary, what: &str) {
    assert_eq!((s.gaps, s.incomplete, s.kernel_drops), (0, 0, 0), "{what}: losses\n{}", s.text);
    let t = s.tls.as_ref().unwrap_or_else(|| panic!("{what}: no tls line\n{}", s.text));
    assert_eq!((t.records_lost, t.unresolved_bytes), (0, 0), "{what}: TLS losses\n{}", s.text);
    assert!(t.files > 0 && t.connections > 0, "{what}: probes attached, connections made\n{}", s.text);
}

/// The real `ollama` and `openai` Python clients over https:// (httpcore's own TLS stream:
/// Python's ssl, SSL_write_ex/SSL_read_ex on a socket BIO, the system's libssl). The TLS port
/// is a traced port too: its packets (ciphertext) are seen on the wire and dropped, the calls
/// come from the probes, once each.
#[test]
fn tls_python_clients_over_https() {
    require_ebpf!("tls_python_clients_over_https");
    let what = "TLS Python clients";
    let _g = serial();
    let ip = test_ip(1);
    let standin = Standin::start_tls(&[&format!("{ip}:0")]);
    let tracer = tracer(what, &ip, &[&standin]);
    let mut clients = run_driver("native_session.py", &standin, 0, None);
    clients.extend(run_driver("openai_session.py", &standin, 0, None));
    assert!(clients.iter().all(|c| c["write_stamp"] == "tls"), "{what}: the drivers timed the TLS layer");
    let truth = standin.truth(clients.len());
    let live = tracer.wait_spans(truth.len(), Duration::from_secs(5));
    assert_eq!(live.len(), truth.len(), "{what}: spans written while running");
    check::capabilities_dropped(tracer.pid(), what);
    let fin = tracer.stop(libc::SIGINT);
    assert!(fin.status.success(), "{what}: exit status {}", fin.status);
    check_sessions_tls(&fin.spans, &truth, &clients, "openssl", what);
    no_losses(&fin.summary, what);
    let t = fin.summary.tls.unwrap();
    assert!(t.ciphertext_dropped > 0, "{what}: the TLS port's packets were seen and dropped\n{}", fin.summary.text);
    println!("{what}: {} ciphertext packets of the traced port dropped", t.ciphertext_dropped);
}

/// The real `ollama` npm client over https:// (Node's fetch on Node's OpenSSL: memory BIOs,
/// the socket learnt from the write that follows each `SSL_write`). Every call one exact span;
/// the stream the client aborts after its first chunk: one span, cancelled, no tokens made up.
#[test]
fn tls_npm_client_over_https() {
    require_ebpf!("tls_npm_client_over_https");
    let what = "TLS npm client";
    let _g = serial();
    let ip = test_ip(2);
    let standin = Standin::start_tls(&[&format!("{ip}:0")]);
    let tracer = tracer(what, &ip, &[]);
    ensure_node_probed(&tracer, what);
    let clients = run_node_driver("native_session.mjs", &standin);
    assert_eq!(clients.len(), 10, "{what}: calls the session makes");
    let truth = standin.truth(clients.len());
    tracer.wait_spans(truth.len(), Duration::from_secs(5));
    let fin = tracer.stop(libc::SIGINT);
    assert!(fin.status.success(), "{what}: exit status {}", fin.status);
    let mut aborted = 0;
    for (span, t) in check::pair(&fin.spans, &truth, what) {
        check::check_tls(span, "openssl", what);
        if t["outcome"] == "client_gone" {
            aborted += 1;
            assert!(check::incomplete(span), "{what}: the aborted stream is flagged incomplete: {span}");
            assert_eq!(check::attr(span, "error.type"), Some(&Value::from("cancelled")), "{what}: {span}");
            assert_eq!(check::attr(span, "gen_ai.usage.output_tokens"), None, "{what}: no tokens made up: {span}");
        } else {
            check_values(span, t, what);
            check::check_server_times_tls(span, t, what);
        }
    }
    assert_eq!(aborted, 1, "{what}: the stand-in saw the client abort one stream");
    let client_tokens: Vec<_> = clients.iter().map(|c| c["output_tokens"].as_u64()).collect();
    let mut spans: Vec<&Value> = fin.spans.iter().collect();
    spans.sort_by_key(|s| check::start(s));
    let span_tokens: Vec<_> = spans.iter().map(|s| check::attr_u64(s, "gen_ai.usage.output_tokens")).collect();
    assert_eq!(span_tokens, client_tokens, "{what}: output tokens, call by call, as the client read them");
    let s = &fin.summary;
    assert_eq!((s.gaps, s.kernel_drops), (0, 0), "{what}: losses\n{}", s.text);
    assert_eq!(s.tls.as_ref().map(|t| (t.records_lost, t.unresolved_bytes)), Some((0, 0)), "{}", s.text);
}

/// A Go client (net/http, crypto/tls) built here: Go's `(*Conn).Write` read at entry, `Read`
/// at each of its return instructions (no uretprobes on Go stacks), the socket from the
/// `*tls.Conn`. The program is new to the tracer: it is probed when it starts (exec events),
/// then makes its calls.
#[test]
fn tls_go_client_over_https() {
    require_ebpf!("tls_go_client_over_https");
    let what = "TLS Go client";
    let _g = serial();
    let ip = test_ip(3);
    let standin = Standin::start_tls(&[&format!("{ip}:0")]);
    let tracer = tracer(what, &ip, &[]);
    let clients = run_go_client(&tracer, &standin.url(0), &standin.ca().unwrap(), what);
    assert_eq!(clients.len(), 7, "{what}: calls the session makes");
    let truth = standin.truth(clients.len());
    tracer.wait_spans(truth.len(), Duration::from_secs(5));
    let fin = tracer.stop(libc::SIGINT);
    assert!(fin.status.success(), "{what}: exit status {}", fin.status);
    check_sessions_tls(&fin.spans, &truth, &clients, "go", what);
    no_losses(&fin.summary, what);
}

/// Both ends of each TLS connection on this host and probed: the Go client calls a Go HTTPS
/// proxy (the same program, `--serve`) in front of the stand-in. Each call is one span (the
/// other end's copy is dropped, counted), exact; the proxy's own leg to the stand-in (with the
/// stand-in's host, as proxies send) is a session with a host not asked for, never copied.
#[test]
fn tls_both_ends_probed_one_span_per_call() {
    require_ebpf!("tls_both_ends_probed_one_span_per_call");
    let what = "TLS both ends";
    let _g = serial();
    let (upstream_ip, proxy_ip) = (test_ip(4), test_ip(5));
    // The stand-in also listens on the proxy's address: its certificate then names it too.
    let standin = Standin::start_tls(&[&format!("{upstream_ip}:0"), &format!("{proxy_ip}:0")]);
    let tls_dir = standin.tls.clone().unwrap();
    let tracer = tracer(what, &proxy_ip, &[]);
    let mut proxy = Reaped(
        Command::new(go_client())
            .args(["--serve", &format!("{proxy_ip}:0"), "--upstream", &standin.url(0)])
            .arg("--ca")
            .arg(standin.ca().unwrap())
            .arg("--cert")
            .arg(tls_dir.join("server.pem"))
            .arg("--key")
            .arg(tls_dir.join("server-key.pem"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Go proxy"),
    );
    let mut line = String::new();
    BufReader::new(proxy.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let proxy_addr =
        line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("proxy said {line:?}")).to_owned();
    let clients = run_go_client(&tracer, &format!("https://{proxy_addr}"), &standin.ca().unwrap(), what);
    let truth = standin.truth(clients.len());
    tracer.wait_spans(clients.len(), Duration::from_secs(5));
    let fin = tracer.stop(libc::SIGINT);
    drop(proxy);
    assert!(fin.status.success(), "{what}: exit status {}", fin.status);
    assert_eq!(fin.spans.len(), clients.len(), "{what}: one span per call\n{}", fin.summary.text);
    let mut spans: Vec<&Value> = fin.spans.iter().collect();
    spans.sort_by_key(|s| check::start(s));
    let mut truth: Vec<&Value> = truth.iter().collect();
    truth.sort_by_key(|t| t["t_request_first_byte_ns"].as_u64());
    for (span, t) in spans.iter().zip(truth) {
        check_values(span, t, what);
        check::check_tls(span, "go", what);
        assert_eq!(
            check::attr(span, "server.address"),
            Some(&Value::from(proxy_ip.as_str())),
            "{what}: the proxy's call"
        );
    }
    no_losses(&fin.summary, what);
    let t = fin.summary.tls.unwrap();
    assert!(t.other_ends >= 1, "{what}: the other end was seen and dropped\n{}", fin.summary.text);
    assert!(t.sessions_ignored >= 1, "{what}: the proxy's leg to the stand-in is not traced\n{}", fin.summary.text);
    println!("{what}: {} calls, one span each; {} other end(s) dropped", clients.len(), t.other_ends);
}

/// HTTPS with hosts not asked for — by SNI (curl naming `unrelated.test`) and by `Host` header
/// (an address, no SNI) — while the probes run: the kernel sees the calls, decides against
/// the sessions and copies none of their bytes (no record submitted, every byte counted as
/// never copied), and no span comes out.
#[test]
fn tls_other_hosts_never_reach_user_space() {
    require_ebpf!("tls_other_hosts_never_reach_user_space");
    let what = "TLS other hosts";
    let _g = serial();
    let (traced, other) = (test_ip(6), test_ip(7));
    let standin = Standin::start_tls(&[&format!("{other}:0")]);
    let tracer = tracer(what, &traced, &[]);
    let port = standin.addrs[0].port();
    let ca = standin.ca().unwrap();
    let curl = |extra: &[&str], url: &str| {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&ca)
            .args(extra)
            .arg(url)
            .args(["-d", r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":true}"#])
            .output()
            .expect("curl");
        assert!(out.status.success(), "{what}: curl {url}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout.len()
    };
    let resolve = format!("unrelated.test:{port}:{other}");
    let by_sni = curl(&["--resolve", &resolve], &format!("https://unrelated.test:{port}/api/chat"));
    let by_host = curl(&[], &format!("https://{other}:{port}/api/chat"));
    assert!(by_sni > 0 && by_host > 0);
    let fin = tracer.stop(libc::SIGINT);
    assert!(fin.status.success(), "{what}: exit status {}", fin.status);
    let t = fin.summary.tls.clone().unwrap_or_else(|| panic!("{what}: no tls line\n{}", fin.summary.text));
    assert!(
        t.calls > 0 && t.bytes as usize >= by_sni + by_host,
        "{what}: the probes saw the calls\n{}",
        fin.summary.text
    );
    assert!(t.sessions_ignored >= 2, "{what}: both sessions decided against\n{}", fin.summary.text);
    assert_eq!((t.sessions_traced, t.records_submitted, t.bytes_submitted), (0, 0, 0), "{what}\n{}", fin.summary.text);
    assert!(t.bytes_ignored as usize >= by_sni + by_host, "{what}: their bytes never copied\n{}", fin.summary.text);
    assert!(fin.spans.is_empty(), "{what}: no span of another host: {:?}", fin.spans);
    println!(
        "{what}: {} reads and writes ({} bytes) seen, {} sessions ignored, 0 bytes copied to user space",
        t.calls, t.bytes, t.sessions_ignored
    );
}

/// `--tls-exclude-exe curl`: curl's calls to a traced host are left out in the kernel (counted),
/// while the Go client's calls to it are traced.
#[test]
fn tls_exclude_by_executable() {
    require_ebpf!("tls_exclude_by_executable");
    let what = "TLS exclude curl";
    let _g = serial();
    let ip = test_ip(8);
    let standin = Standin::start_tls(&[&format!("{ip}:0")]);
    let mut a = args(&["--capture", "ebpf", "--port", "1", "--tls-host", &ip, "--tls-exclude-exe", "curl"]);
    a.extend(args(&["--tls-exclude-exe", "/nonexistent/*"]));
    let tracer = Tracer::start(what, &a);
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(standin.ca().unwrap())
        .arg(format!("{}/api/tags", standin.url(0)))
        .output()
        .expect("curl");
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    let clients = run_go_client(&tracer, &standin.url(0), &standin.ca().unwrap(), what);
    let truth = standin.truth(clients.len() + 1);
    tracer.wait_spans(clients.len(), Duration::from_secs(5));
    let fin = tracer.stop(libc::SIGINT);
    assert!(fin.status.success(), "{what}: exit status {}", fin.status);
    let go_truth: Vec<Value> = truth.iter().filter(|t| t["path"] != "/api/tags").cloned().collect();
    check_sessions_tls(&fin.spans, &go_truth, &clients, "go", what);
    let t = fin.summary.tls.unwrap();
    assert!(t.excluded > 0, "{what}: curl's calls were left out in the kernel\n{}", fin.summary.text);
}
