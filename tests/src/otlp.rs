//! A real OTLP receiver for tests, built from the `opentelemetry-proto` definitions: a tonic
//! gRPC server (`TraceService`, `MetricsService`) or an HTTP server (`/v1/traces`,
//! `/v1/metrics`; protobuf or JSON, gzip or plain). It keeps every request with its headers, and
//! can be stopped and restarted on the same port (a collector outage).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::runtime::Runtime;

/// Which transport the receiver speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Arrival<T> {
    /// Lower-case header / metadata names.
    pub headers: Vec<(String, String)>,
    /// HTTP only: the request's content type.
    pub content_type: Option<String>,
    pub request: T,
}

impl<T> Arrival<T> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Default, Debug)]
pub struct Received {
    pub traces: Vec<Arrival<ExportTraceServiceRequest>>,
    pub metrics: Vec<Arrival<ExportMetricsServiceRequest>>,
}

impl Received {
    /// Every span with its resource and scope, in arrival order.
    pub fn spans(&self) -> Vec<(Resource, InstrumentationScope, Span)> {
        let mut out = Vec::new();
        for a in &self.traces {
            for rs in &a.request.resource_spans {
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push((
                            rs.resource.clone().unwrap_or_default(),
                            ss.scope.clone().unwrap_or_default(),
                            s.clone(),
                        ));
                    }
                }
            }
        }
        out
    }

    /// The metrics of the last metrics request, with its resource and scope.
    pub fn last_metrics(&self) -> Option<(Resource, InstrumentationScope, Vec<Metric>)> {
        let a = self.metrics.last()?;
        let rm = a.request.resource_metrics.first()?;
        let sm = rm.scope_metrics.first()?;
        Some((rm.resource.clone().unwrap_or_default(), sm.scope.clone().unwrap_or_default(), sm.metrics.clone()))
    }
}

#[derive(Default, Debug)]
struct State {
    received: Mutex<Received>,
    /// Every response waits this long (milliseconds): a slow collector.
    delay_ms: std::sync::atomic::AtomicU64,
    /// And this long per span it carries (microseconds): a collector whose time grows with
    /// the batch.
    delay_per_span_us: std::sync::atomic::AtomicU64,
}

type Shared = Arc<State>;

async fn delay(s: &Shared, spans: u64) {
    let ms = s.delay_ms.load(std::sync::atomic::Ordering::Relaxed);
    let per_span = s.delay_per_span_us.load(std::sync::atomic::Ordering::Relaxed);
    let wait = Duration::from_millis(ms) + Duration::from_micros(per_span * spans);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

fn span_count(r: &ExportTraceServiceRequest) -> u64 {
    r.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len() as u64).sum()
}

fn lock(s: &Shared) -> MutexGuard<'_, Received> {
    s.received.lock().unwrap_or_else(|e| e.into_inner())
}

struct Grpc(Shared);

fn metadata(m: &tonic::metadata::MetadataMap) -> Vec<(String, String)> {
    m.iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.to_string(), v.to_str().ok()?.to_string())),
            _ => None,
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = metadata(request.metadata());
        let request = request.into_inner();
        let spans = span_count(&request);
        lock(&self.0).traces.push(Arrival { headers, content_type: None, request });
        delay(&self.0, spans).await;
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let headers = metadata(request.metadata());
        lock(&self.0).metrics.push(Arrival { headers, content_type: None, request: request.into_inner() });
        delay(&self.0, 0).await;
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A running (or stopped) receiver.
pub struct Receiver {
    pub transport: Transport,
    pub addr: SocketAddr,
    received: Shared,
    runtime: Runtime,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Starts on a free 127.0.0.1 port.
    pub fn start(transport: Transport) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let mut r = Receiver { transport, addr, received: Shared::default(), runtime, task: None };
        r.serve(listener)?;
        Ok(r)
    }

    fn serve(&mut self, listener: std::net::TcpListener) -> anyhow::Result<()> {
        listener.set_nonblocking(true)?;
        let shared = self.received.clone();
        let transport = self.transport;
        let _guard = self.runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        self.task = Some(self.runtime.spawn(async move {
            match transport {
                Transport::Grpc => {
                    // Connections are served by this task (not spawned): aborting it closes them
                    // all, as a crashed collector would.
                    let mut conns = tokio::task::JoinSet::new();
                    let routes = tonic::service::Routes::new(TraceServiceServer::new(Grpc(shared.clone())))
                        .add_service(MetricsServiceServer::new(Grpc(shared)));
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        let svc = routes.clone().prepare();
                        conns.spawn(async move {
                            let svc = hyper_util::service::TowerToHyperService::new(svc);
                            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                }
                Transport::Http => {
                    let mut conns = tokio::task::JoinSet::new();
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        let shared = shared.clone();
                        conns.spawn(async move {
                            let service = hyper::service::service_fn(move |req| handle(req, shared.clone()));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        });
                    }
                }
            }
        }));
        Ok(())
    }

    /// Closes the port (connections refused) — everything already received is kept.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            // Let the abort drop the listener and open connections.
            self.runtime.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
        }
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match std::net::TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(e.into()),
            }
        };
        self.serve(listener)
    }

    /// Makes every response wait `ms` milliseconds (after the request was recorded).
    pub fn set_delay_ms(&self, ms: u64) {
        self.received.delay_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes every traces response wait besides `us` microseconds per span it carried.
    pub fn set_delay_per_span_us(&self, us: u64) {
        self.received.delay_per_span_us.store(us, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn received(&self) -> MutexGuard<'_, Received> {
        lock(&self.received)
    }

    /// Base URL to give the tracer (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until `pred` holds on what was received, or the timeout.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&Received) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.received()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn handle(req: Request<Incoming>, shared: Shared) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: StatusCode, body: Vec<u8>, ctype: &str| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, ctype.parse().expect("content type"));
        Ok(r)
    };
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let ctype = req.headers().get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let gzip = req.headers().get(hyper::header::CONTENT_ENCODING).is_some_and(|v| v == "gzip");
    let path = req.uri().path().to_string();
    let Ok(body) = req.into_body().collect().await else {
        return reply(StatusCode::BAD_REQUEST, b"body".to_vec(), "text/plain");
    };
    let mut body = body.to_bytes().to_vec();
    if gzip {
        use std::io::Read;
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out).is_err() {
            return reply(StatusCode::BAD_REQUEST, b"gzip".to_vec(), "text/plain");
        }
        body = out;
    }
    let json = match ctype.as_deref() {
        Some("application/x-protobuf") => false,
        Some("application/json") => true,
        _ => return reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, b"content type".to_vec(), "text/plain"),
    };
    fn decode<T: Message + Default + serde::de::DeserializeOwned>(json: bool, body: &[u8]) -> Option<T> {
        if json { serde_json::from_slice(body).ok() } else { T::decode(body).ok() }
    }
    let out_ctype = if json { "application/json" } else { "application/x-protobuf" };
    match path.as_str() {
        "/v1/traces" => match decode::<ExportTraceServiceRequest>(json, &body) {
            Some(request) => {
                let spans = span_count(&request);
                lock(&shared).traces.push(Arrival { headers, content_type: ctype, request });
                delay(&shared, spans).await;
                let resp = ExportTraceServiceResponse::default();
                let body = if json { serde_json::to_vec(&resp).unwrap_or_default() } else { resp.encode_to_vec() };
                reply(StatusCode::OK, body, out_ctype)
            }
            None => reply(StatusCode::BAD_REQUEST, b"decode".to_vec(), "text/plain"),
        },
        "/v1/metrics" => match decode::<ExportMetricsServiceRequest>(json, &body) {
            Some(request) => {
                lock(&shared).metrics.push(Arrival { headers, content_type: ctype, request });
                delay(&shared, 0).await;
                let resp = ExportMetricsServiceResponse::default();
                let body = if json { serde_json::to_vec(&resp).unwrap_or_default() } else { resp.encode_to_vec() };
                reply(StatusCode::OK, body, out_ctype)
            }
            None => reply(StatusCode::BAD_REQUEST, b"decode".to_vec(), "text/plain"),
        },
        _ => reply(StatusCode::NOT_FOUND, b"not found".to_vec(), "text/plain"),
    }
}
