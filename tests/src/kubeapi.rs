//! A stand-in Kubernetes API server on 127.0.0.1 for the tracer's pod watch: it answers the
//! list and watch of pods, `GET` of ReplicaSets and Jobs, from JSON documents shaped as the
//! API server sends them (`tests/data/k8s`), and records every request.
//!
//! The watch is a chunked response kept open; [`FakeApi::push`] sends an event on every open
//! watch. Unknown paths get the API's 404 `Status`; paths set with [`FakeApi::forbid`] its 403.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

/// `tests/data/k8s/<name>` parsed.
pub fn document(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/k8s").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Default)]
struct Routes {
    /// Path (no query) → object, for `GET`.
    objects: HashMap<String, Value>,
    forbidden: Vec<String>,
    /// The pods listed (the list's items).
    pods: Vec<Value>,
    resource_version: u64,
    requests: Vec<String>,
}

/// A running fake API server; stops when dropped (with the runtime it was started on).
pub struct FakeApi {
    pub addr: SocketAddr,
    routes: Arc<Mutex<Routes>>,
    events: broadcast::Sender<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

impl FakeApi {
    /// Starts on an ephemeral 127.0.0.1 port (inside a tokio runtime).
    pub async fn start() -> std::io::Result<FakeApi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let routes = Arc::new(Mutex::new(Routes { resource_version: 1000, ..Default::default() }));
        let (events, _) = broadcast::channel(64);
        let (r, e) = (routes.clone(), events.clone());
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, r.clone(), e.clone()));
            }
        });
        Ok(FakeApi { addr, routes, events, task })
    }

    /// The URL a client should use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a pod to the list.
    pub fn add_pod(&self, pod: Value) {
        self.routes.lock().unwrap().pods.push(pod);
    }

    /// Answers `GET path` with `object`.
    pub fn put(&self, path: &str, object: Value) {
        self.routes.lock().unwrap().objects.insert(path.to_string(), object);
    }

    /// Answers `GET path` with 403 Forbidden, as without RBAC for it.
    pub fn forbid(&self, path: &str) {
        self.routes.lock().unwrap().forbidden.push(path.to_string());
    }

    /// Sends a watch event (`ADDED`, `MODIFIED`, `DELETED`) to every open pod watch.
    pub fn push(&self, kind: &str, pod: Value) {
        let mut r = self.routes.lock().unwrap();
        r.resource_version += 1;
        let mut pod = pod;
        pod["metadata"]["resourceVersion"] = json!(r.resource_version.to_string());
        match kind {
            "DELETED" => r.pods.retain(|p| p["metadata"]["uid"] != pod["metadata"]["uid"]),
            _ => {
                r.pods.retain(|p| p["metadata"]["uid"] != pod["metadata"]["uid"]);
                r.pods.push(pod.clone());
            }
        }
        let _ = self.events.send(json!({"type": kind, "object": pod}).to_string());
    }

    /// Request targets seen so far (path and query).
    pub fn requests(&self) -> Vec<String> {
        self.routes.lock().unwrap().requests.clone()
    }
}

/// One client connection: requests in order, keep-alive, until the client closes.
async fn serve(mut conn: TcpStream, routes: Arc<Mutex<Routes>>, events: broadcast::Sender<String>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(&buf[..head_end]), Ok(httparse::Status::Complete(_))) {
            return;
        }
        let target = req.path.unwrap_or("/").to_string();
        buf.drain(..head_end);
        routes.lock().unwrap().requests.push(target.clone());
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let watch = query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
        if path == "/api/v1/pods" && watch {
            watch_stream(conn, events.subscribe()).await;
            return;
        }
        let (code, body) = respond(&routes, path);
        let reason = match code {
            200 => "OK",
            403 => "Forbidden",
            _ => "Not Found",
        };
        let body = body.to_string();
        let head = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if conn.write_all(head.as_bytes()).await.is_err() || conn.write_all(body.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn respond(routes: &Mutex<Routes>, path: &str) -> (u16, Value) {
    let r = routes.lock().unwrap();
    if path == "/api/v1/pods" {
        let list = json!({"kind": "PodList", "apiVersion": "v1",
                          "metadata": {"resourceVersion": r.resource_version.to_string()}, "items": r.pods});
        return (200, list);
    }
    if r.forbidden.iter().any(|p| p == path) {
        return (403, status(403, "Forbidden", &format!("{path} is forbidden: User cannot get resource")));
    }
    match r.objects.get(path) {
        Some(v) => (200, v.clone()),
        None => (404, status(404, "NotFound", &format!("{path} not found"))),
    }
}

async fn watch_stream(mut conn: TcpStream, mut events: broadcast::Receiver<String>) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if conn.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    while let Ok(ev) = events.recv().await {
        let line = format!("{ev}\n");
        let chunk = format!("{:x}\r\n{line}\r\n", line.len());
        if conn.write_all(chunk.as_bytes()).await.is_err() {
            return;
        }
    }
}
