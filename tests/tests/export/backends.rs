//! End to end against the real backends, installed from PyPI into `tests/.venv-backends`
//! (`scripts/setup-python.sh`) and started here on free ports: MLflow (`mlflow server`, OTLP/HTTP
//! with its experiment header) and Arize Phoenix (`phoenix serve`, OTLP/gRPC with the project as
//! a resource attribute, and OTLP/HTTP with the project header and `--compat openinference`).
//! The real-client capture, and a capture of the real clients' two-turn conversations against a
//! server that reports prompt-cache hits (the stand-in, through the tap), are replayed into
//! each, then read back through each backend's own API: every call must show as exactly one
//! LLM / chat / embedding span (phases and model management as none of these) with its model,
//! token usage and cache hits, and each later turn with its link to the previous one.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::output::*;

fn venv() -> Option<PathBuf> {
    let dir = std::env::var_os("OLLAMA_TRACER_BACKENDS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/.venv-backends"));
    (dir.join("bin/mlflow").exists() && dir.join("bin/phoenix").exists()).then_some(dir)
}

/// A backend process group: stopped (TERM, then KILL) however the test ends.
struct Backend {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
}

impl Backend {
    fn start(mut cmd: Command, dir: &Path, addr: SocketAddr) -> Backend {
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            // Its own process group: workers and job consumers go with it.
            .process_group(0)
            .spawn()
            .expect("start backend");
        Backend { child, log, addr }
    }

    fn wait_healthy(&mut self, path: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok((200, _)) = http("GET", self.addr, path, None) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("backend exited ({status}): {}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("backend not healthy after {timeout:?}: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: signals to the process group this test created.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: as above; whatever of the group is left.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http("GET", addr, path, None).unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Polls `f` until it returns `Ok`, or panics after `timeout` with its last error.
fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "timed out waiting for {what}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The real `ollama`, `openai` and `anthropic` clients' two-turn conversations (cache_session.py)
/// against the stand-in, which reports prompt-cache hits, recorded by the tap: 12 calls.
fn cache_capture(dir: &Path) -> PathBuf {
    use testkit::pcap::{FileFormat, LinkType, TsPrecision, WriterConfig, write_file};
    let python = testkit::process::venv_python("backends cache capture").expect("tests/.venv");
    let standin =
        testkit::process::StandInProcess::start(env!("CARGO_BIN_EXE_ollama-standin").as_ref(), &[]).expect("stand-in");
    let tap = testkit::tap::Tap::start(standin.addr).expect("tap");
    let out = Command::new(python)
        .arg(testkit::process::client_script("cache_session.py"))
        .args(["--base-url", &tap.url()])
        .output()
        .expect("run cache_session.py");
    assert!(out.status.success(), "cache_session.py: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(standin.truth(12).len(), 12);
    std::thread::sleep(Duration::from_millis(200));
    let path = dir.join("cache.pcap");
    write_file(&path, WriterConfig::new(FileFormat::Pcap, TsPrecision::Nano, LinkType::LinuxSll2), &tap.packets())
        .unwrap();
    path
}

/// GenAI calls in the replay: the real capture's 17 and the cache session's 12.
const GENAI_CALLS: usize = 17 + 12;

/// Replays the captures into a backend; `seed` gives the run its own trace and span ids (a
/// backend keeps the first span it gets with an id).
fn replay_into(seed: u64, cache: &Path, args: &[&str], envs: &[(&str, &str)]) -> Vec<Value> {
    let mut cmd = bin();
    cmd.args(["replay", "--output", "json", "--id-seed", &seed.to_string()]).arg(real_capture()).arg(cache).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let r = run(&mut cmd);
    let spans = json_spans(&r.stdout);
    assert_eq!(summary_number(&r.stderr, "otlp:", "spans exported"), spans.len() as u64, "{}", r.stderr);
    spans
}

/// A span id as MLflow returns it (base64 of the bytes), in hex.
fn base64_hex(b64: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut acc, mut bits, mut out) = (0u32, 0, String::new());
    for c in b64.bytes().take_while(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).unwrap_or_else(|| panic!("not base64: {b64}")) as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push_str(&format!("{:02x}", (acc >> bits) & 0xff));
        }
    }
    out
}

fn attr_str<'a>(s: &'a Value, k: &str) -> Option<&'a str> {
    s["attributes"][k].as_str()
}

/// An OTLP-JSON-style value as MLflow returns it (`string_value`, `int_value`, `kvlist_value`…).
fn otlp_value(v: &Value) -> Value {
    if let Some(s) = v.get("string_value") {
        return s.clone();
    }
    if let Some(i) = v.get("int_value") {
        return i.as_str().and_then(|s| s.parse::<i64>().ok()).map_or(i.clone(), Value::from);
    }
    if let Some(kv) = v.get("kvlist_value") {
        let mut m = serde_json::Map::new();
        for e in kv["values"].as_array().into_iter().flatten() {
            m.insert(e["key"].as_str().unwrap_or_default().to_string(), otlp_value(&e["value"]));
        }
        return Value::Object(m);
    }
    v.clone()
}

/// One attribute of an MLflow span (`attributes` is a list of `{key, value}`).
fn mlflow_attr(span: &Value, key: &str) -> Option<Value> {
    span["attributes"].as_array()?.iter().find(|kv| kv["key"] == key).map(|kv| otlp_value(&kv["value"]))
}

#[test]
fn mlflow_and_phoenix_show_llm_spans() {
    let Some(venv) = venv() else {
        eprintln!("SKIPPED: no backends venv (tests/.venv-backends; scripts/setup-python.sh installs it)");
        return;
    };
    let root = TempDir(std::env::temp_dir().join(format!("ollama-tracer-backends-{}", std::process::id())));
    let (mlflow_dir, phoenix_dir) = (root.0.join("mlflow"), root.0.join("phoenix"));
    std::fs::create_dir_all(&mlflow_dir).unwrap();
    std::fs::create_dir_all(&phoenix_dir).unwrap();
    let cache = cache_capture(&root.0);

    // Both start together: each takes 10–20 s (more on a busy machine).
    let mlflow_port = free_port();
    let mut mlflow_cmd = Command::new(venv.join("bin/mlflow"));
    mlflow_cmd
        .args(["server", "--host", "127.0.0.1", "--port", &mlflow_port.to_string(), "--workers", "1"])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", mlflow_dir.join("mlflow.db").display()))
        .arg("--default-artifact-root")
        .arg(mlflow_dir.join("artifacts"));
    let mut mlflow = Backend::start(mlflow_cmd, &mlflow_dir, addr(mlflow_port));
    let (phoenix_port, phoenix_grpc) = (free_port(), free_port());
    let mut phoenix_cmd = Command::new(venv.join("bin/phoenix"));
    phoenix_cmd
        .arg("serve")
        .env("PHOENIX_HOST", "127.0.0.1")
        .env("PHOENIX_PORT", phoenix_port.to_string())
        .env("PHOENIX_GRPC_PORT", phoenix_grpc.to_string())
        .env("PHOENIX_WORKING_DIR", &phoenix_dir)
        .env("PHOENIX_TELEMETRY_ENABLED", "false");
    let mut phoenix = Backend::start(phoenix_cmd, &phoenix_dir, addr(phoenix_port));
    mlflow.wait_healthy("/health", Duration::from_secs(240));
    phoenix.wait_healthy("/healthz", Duration::from_secs(240));

    // ---- MLflow: OTLP/HTTP protobuf to /v1/traces with the experiment header.
    let (status, body) =
        http("POST", mlflow.addr, "/api/2.0/mlflow/experiments/create", Some(r#"{"name":"ollama-tracer-e2e"}"#))
            .unwrap();
    assert_eq!(status, 200, "{body}");
    let experiment = serde_json::from_str::<Value>(&body).unwrap()["experiment_id"].as_str().unwrap().to_string();
    let spans = replay_into(
        1,
        &cache,
        &[
            "--otlp-endpoint",
            &format!("http://{}", mlflow.addr),
            "--otlp-header",
            &format!("x-mlflow-experiment-id={experiment}"),
        ],
        // MLflow has no metrics endpoint.
        &[("OTEL_METRICS_EXPORTER", "none")],
    );
    // One trace per call; its children (Ollama's phases, tool runs) join their call's trace.
    let trace_ids: std::collections::BTreeSet<&str> = spans.iter().filter_map(|s| s["trace_id"].as_str()).collect();
    let traces = eventually(Duration::from_secs(60), "MLflow traces", || {
        let v = get_json(mlflow.addr, &format!("/api/2.0/mlflow/traces?experiment_ids={experiment}&max_results=100"));
        let t = v["traces"].as_array().cloned().unwrap_or_default();
        if t.len() == trace_ids.len() { Ok(t) } else { Err(format!("{} traces", t.len())) }
    });
    assert_eq!(traces.len(), trace_ids.len());
    let mut checked = 0;
    let (mut cached, mut linked) = (0, 0);
    let mut model_spans = 0;
    for id in &trace_ids {
        let t = get_json(mlflow.addr, &format!("/api/3.0/mlflow/traces/get?trace_id=tr-{id}"));
        for m in t["trace"]["spans"].as_array().unwrap() {
            let kind = mlflow_attr(m, "mlflow.spanType");
            model_spans +=
                matches!(kind.as_ref().and_then(Value::as_str), Some("LLM" | "CHAT_MODEL" | "EMBEDDING")) as usize;
        }
    }
    assert_eq!(model_spans, GENAI_CALLS, "MLflow: exactly one LLM / CHAT_MODEL / EMBEDDING span per GenAI call");
    for s in &spans {
        let Some(op) = attr_str(s, "gen_ai.operation.name") else { continue };
        let trace_id = format!("tr-{}", s["trace_id"].as_str().unwrap());
        let t = get_json(mlflow.addr, &format!("/api/3.0/mlflow/traces/get?trace_id={trace_id}"));
        let mspans = t["trace"]["spans"].as_array().unwrap_or_else(|| panic!("{trace_id}: {t}"));
        let in_trace = spans.iter().filter(|x| x["trace_id"] == s["trace_id"]).count();
        assert_eq!(mspans.len(), in_trace, "{trace_id}: the call and its children");
        let m = mspans
            .iter()
            .find(|m| m["name"].as_str() == s["name"].as_str())
            .unwrap_or_else(|| panic!("{trace_id}: no span {}", s["name"]));
        assert_eq!(m["name"].as_str(), s["name"].as_str());
        let want_type = match op {
            "chat" => "CHAT_MODEL",
            "text_completion" => "LLM",
            "execute_tool" => "TOOL",
            _ => "EMBEDDING",
        };
        assert_eq!(mlflow_attr(m, "mlflow.spanType"), Some(Value::from(want_type)), "{trace_id}: {m}");
        if op == "execute_tool" {
            // A tool run: no model, no tokens.
            continue;
        }
        let model = attr_str(s, "gen_ai.response.model").or(attr_str(s, "gen_ai.request.model")).unwrap();
        assert_eq!(mlflow_attr(m, "mlflow.llm.model"), Some(Value::from(model)), "{trace_id}");
        assert_eq!(mlflow_attr(m, "mlflow.llm.provider"), Some(Value::from("ollama")), "{trace_id}");
        let (input, output) = (
            s["attributes"]["gen_ai.usage.input_tokens"].as_i64(),
            s["attributes"]["gen_ai.usage.output_tokens"].as_i64(),
        );
        if let (Some(i), Some(o)) = (input, output) {
            let usage =
                mlflow_attr(m, "mlflow.chat.tokenUsage").unwrap_or_else(|| panic!("{trace_id}: no token usage: {m}"));
            assert_eq!(usage["input_tokens"].as_i64(), Some(i), "{trace_id}");
            assert_eq!(usage["output_tokens"].as_i64(), Some(o), "{trace_id}");
            assert_eq!(usage["total_tokens"].as_i64(), Some(i + o), "{trace_id}");
            // Cache hits: MLflow reads them into its token usage.
            let hits = s["attributes"]["gen_ai.usage.cache_read.input_tokens"].as_i64();
            assert_eq!(usage["cache_read_input_tokens"].as_i64(), hits, "{trace_id}: cache reads: {usage}");
            cached += hits.is_some() as usize;
        }
        // Links to the previous turn, kept with their ids and attributes.
        let want: Vec<String> =
            s["links"].as_array().into_iter().flatten().map(|l| l["span_id"].as_str().unwrap().to_owned()).collect();
        let got: Vec<String> =
            m["links"].as_array().into_iter().flatten().map(|l| base64_hex(l["span_id"].as_str().unwrap())).collect();
        assert_eq!(got, want, "{trace_id}: links");
        linked += !want.is_empty() as usize;
        checked += 1;
    }
    assert_eq!(checked, GENAI_CALLS, "every GenAI call read back from MLflow");
    assert_eq!(cached, 8, "MLflow: cache reads of every later turn of the cache session");
    assert!(linked >= 8, "MLflow: links of the later turns ({linked})");

    // ---- Phoenix over gRPC, project from the resource attribute.
    let grpc_spans = replay_into(
        2,
        &cache,
        &["--otlp-endpoint", &format!("http://127.0.0.1:{phoenix_grpc}"), "--otlp-protocol", "grpc"],
        &[("OTEL_METRICS_EXPORTER", "none"), ("OTEL_RESOURCE_ATTRIBUTES", "openinference.project.name=ollama-grpc")],
    );
    check_phoenix(phoenix.addr, "ollama-grpc", &grpc_spans, false);
    // ---- Phoenix over HTTP, project from the header, with the OpenInference mirrors.
    let http_spans = replay_into(
        3,
        &cache,
        &[
            "--otlp-endpoint",
            &format!("http://{}", phoenix.addr),
            "--otlp-header",
            "x-project-name=ollama-http",
            "--compat",
            "openinference",
            // Phoenix groups sessions by it: the deviation, asked for.
            "--conversation-id-attribute",
            "gen_ai",
        ],
        &[("OTEL_METRICS_EXPORTER", "none")],
    );
    check_phoenix(phoenix.addr, "ollama-http", &http_spans, true);

    // The servers stop before their directories go.
    drop(mlflow);
    drop(phoenix);
    drop(root);
}

/// Removed when dropped, test passed or not.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check_phoenix(addr: SocketAddr, project: &str, spans: &[Value], openinference: bool) {
    let got = eventually(Duration::from_secs(60), "Phoenix spans", || {
        let (status, body) =
            http("GET", addr, &format!("/v1/projects/{project}/spans?limit=1000"), None).map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("HTTP {status}: {body}"));
        }
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        let data = v["data"].as_array().cloned().unwrap_or_default();
        if data.len() == spans.len() { Ok(data) } else { Err(format!("{} spans", data.len())) }
    });
    let mut checked = 0;
    let model_spans = got.iter().filter(|p| matches!(p["span_kind"].as_str(), Some("LLM" | "EMBEDDING"))).count();
    assert_eq!(model_spans, GENAI_CALLS, "{project}: exactly one LLM / EMBEDDING span per GenAI call");
    let mut cached = 0;
    for s in spans {
        let span_id = s["span_id"].as_str().unwrap();
        let p = got
            .iter()
            .find(|p| p["context"]["span_id"].as_str() == Some(span_id))
            .unwrap_or_else(|| panic!("{project}: span {span_id} missing: {}", got[0]));
        assert_eq!(p["name"].as_str(), s["name"].as_str());
        assert_eq!(p["context"]["trace_id"].as_str(), s["trace_id"].as_str());
        let Some(op) = attr_str(s, "gen_ai.operation.name") else { continue };
        if op == "execute_tool" {
            // A tool run inferred from the conversation: present (above), no model, no tokens.
            continue;
        }
        let a = &p["attributes"];
        let embeddings = op == "embeddings";
        assert_eq!(
            p["span_kind"].as_str(),
            Some(if embeddings { "EMBEDDING" } else { "LLM" }),
            "{project} {span_id}: {p}"
        );
        let (model_key, want_model) = if embeddings {
            ("embedding.model_name", attr_str(s, "gen_ai.response.model").or(attr_str(s, "gen_ai.request.model")))
        } else if openinference {
            ("llm.model_name", attr_str(s, "gen_ai.response.model").or(attr_str(s, "gen_ai.request.model")))
        } else {
            // Phoenix's own conversion takes the request's model.
            ("llm.model_name", attr_str(s, "gen_ai.request.model"))
        };
        if !embeddings || openinference {
            assert_eq!(a[model_key].as_str(), want_model, "{project} {span_id}: {a}");
        }
        if let Some(i) = s["attributes"]["gen_ai.usage.input_tokens"].as_i64() {
            assert_eq!(a["llm.token_count.prompt"].as_i64(), Some(i), "{project} {span_id}: {a}");
        }
        if let Some(o) = s["attributes"]["gen_ai.usage.output_tokens"].as_i64() {
            assert_eq!(a["llm.token_count.completion"].as_i64(), Some(o), "{project} {span_id}: {a}");
        }
        if openinference {
            assert_eq!(a["llm.provider"].as_str(), Some("ollama"), "{project} {span_id}: {a}");
            // Sessions from the conversation (asked for with --conversation-id-attribute gen_ai).
            assert_eq!(a["session.id"].as_str(), attr_str(s, "gen_ai.conversation.id"), "{project} {span_id}: {a}");
        }
        // Cache hits: Phoenix reads them as OpenInference's prompt cache detail.
        let hits = s["attributes"]["gen_ai.usage.cache_read.input_tokens"].as_i64();
        assert_eq!(a["llm.token_count.prompt_details.cache_read"].as_i64(), hits, "{project} {span_id}: {a}");
        cached += hits.is_some() as usize;
        checked += 1;
    }
    assert_eq!(checked, GENAI_CALLS, "{project}: every GenAI call read back from Phoenix");
    assert_eq!(cached, 8, "{project}: cache reads of every later turn");
}
