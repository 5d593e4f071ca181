//! Connections to an OTLP endpoint, shared by the span export and the metrics push: where and how
//! a signal is sent ([`OtlpTarget`]), a tonic channel (gRPC) or a reqwest client (HTTP) with the
//! resolved headers applied last, the classification of export errors into "retry" and "the
//! collector refused it", and the export side's own async [`runtime`].

pub mod runtime;

use std::fmt;
use std::str::FromStr;
use std::sync::Once;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry_http::{HttpClient, HttpError};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// OTLP wire protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Ok(Protocol::HttpJson),
            other => Err(format!("unknown OTLP protocol `{other}` (expected grpc, http/protobuf or http/json)")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        })
    }
}

/// Payload compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
}

/// Which telemetry signal a setting is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    /// The signal's part of `OTEL_EXPORTER_OTLP_<SIGNAL>_*` variable names.
    pub fn env(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
        }
    }
    /// OTLP/HTTP path appended to a base endpoint.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
        }
    }
}

/// Where and how one signal is sent.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpTarget {
    /// Full URL: for HTTP including the signal path, for gRPC the server's root.
    pub url: String,
    pub protocol: Protocol,
    /// Lower-case names; applied last, so they win over anything the SDK adds.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub compression: Option<Compression>,
}

/// Why an exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("OTLP endpoint `{url}`: {message}")]
    Endpoint { url: String, message: String },
    #[error("building the OTLP exporter: {0}")]
    Build(String),
    #[error("starting the export runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("Prometheus endpoint {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}

/// One process-wide rustls provider (ring): reqwest is built without one of its own.
fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only when another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A gRPC channel to `target` (lazy: connects on first use, reconnects by itself). Needs a
/// tokio runtime context.
pub fn grpc_channel(target: &OtlpTarget) -> Result<Channel, ExportError> {
    install_crypto();
    let err = |message: String| ExportError::Endpoint { url: target.url.clone(), message };
    let mut endpoint = Endpoint::from_shared(target.url.clone()).map_err(|e| err(e.to_string()))?;
    if target.url.starts_with("https://") {
        endpoint =
            endpoint.tls_config(ClientTlsConfig::new().with_native_roots()).map_err(|e| err(format!("TLS: {e}")))?;
    }
    Ok(endpoint.timeout(target.timeout).connect_lazy())
}

/// gRPC metadata from the resolved headers.
pub fn grpc_metadata(target: &OtlpTarget) -> MetadataMap {
    let mut map = MetadataMap::new();
    for (k, v) in &target.headers {
        if let (Ok(k), Ok(v)) = (MetadataKey::from_bytes(k.as_bytes()), MetadataValue::try_from(v.as_str())) {
            map.insert(k, v);
        }
    }
    map
}

/// An HTTP client for `target`: plain or rustls, the target's timeout per request.
pub fn http_client(target: &OtlpTarget) -> Result<HeaderClient, ExportError> {
    install_crypto();
    let client = reqwest::Client::builder()
        .timeout(target.timeout)
        .build()
        .map_err(|e| ExportError::Endpoint { url: target.url.clone(), message: e.to_string() })?;
    let mut headers = HeaderMap::new();
    for (k, v) in &target.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            headers.insert(k, v);
        }
    }
    Ok(HeaderClient { client, headers })
}

/// The HTTP client handed to the SDK exporter. The SDK merges `OTEL_EXPORTER_OTLP_*HEADERS` over
/// what it is given; setting the resolved headers here, last, makes the command line win.
#[derive(Clone, Debug)]
pub struct HeaderClient {
    pub client: reqwest::Client,
    pub headers: HeaderMap,
}

/// Largest response body read from a collector (the OTLP response is a few bytes).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

impl HeaderClient {
    /// Sends one request; the status and body, or a transport error.
    pub async fn send(&self, request: http::Request<bytes::Bytes>) -> Result<http::Response<bytes::Bytes>, HttpError> {
        let (mut parts, body) = request.into_parts();
        for (k, v) in &self.headers {
            parts.headers.insert(k.clone(), v.clone());
        }
        let request: reqwest::Request = http::Request::from_parts(parts, body).try_into()?;
        let mut response = self.client.execute(request).await?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err("response body too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        let mut out = http::Response::builder().status(status).body(body.freeze())?;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

#[async_trait::async_trait]
impl HttpClient for HeaderClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, HttpError> {
        self.send(request).await
    }
}

/// What to do after a failed export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The collector is unreachable, overloaded or timed out: keep the batch, retry later.
    Retry,
    /// The collector refused the data (bad request, auth, not found…): retrying cannot help.
    Rejected,
}

/// Classifies the SDK exporter's error text (its error type carries only a message). The
/// formats are those of opentelemetry-otlp 0.33 (unit-tested below, so an upgrade that changes
/// them fails here); anything unrecognised is retried, which can only cost queue space.
pub fn classify(message: &str) -> Failure {
    // OTLP/HTTP: "HTTP export failed with status code: 503", "HTTP export failed: network error".
    if let Some(rest) = message.split("status code: ").nth(1) {
        let code: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        return match code.parse::<u16>() {
            Ok(429 | 502 | 503 | 504) => Failure::Retry,
            Ok(_) => Failure::Rejected,
            Err(_) => Failure::Retry,
        };
    }
    // OTLP/gRPC: "… export failed with gRPC code: Unavailable[: detail]".
    if let Some(rest) = message.split("gRPC code: ").nth(1) {
        let code: String = rest.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
        return match code.as_str() {
            "Unavailable" | "Cancelled" | "DeadlineExceeded" | "Aborted" | "OutOfRange" | "DataLoss"
            | "ResourceExhausted" => Failure::Retry,
            "InvalidArgument" | "NotFound" | "AlreadyExists" | "PermissionDenied" | "FailedPrecondition"
            | "Unimplemented" | "Internal" | "Unauthenticated" | "Unknown" => Failure::Rejected,
            _ => Failure::Retry,
        };
    }
    Failure::Retry
}

/// A failed metrics push over HTTP, classified the same way.
pub fn classify_http_status(status: u16) -> Failure {
    match status {
        429 | 502 | 503 | 504 => Failure::Retry,
        _ => Failure::Rejected,
    }
}

/// A failed metrics push over gRPC.
pub fn classify_grpc(code: tonic::Code) -> Failure {
    use tonic::Code::*;
    match code {
        Unavailable | Cancelled | DeadlineExceeded | Aborted | OutOfRange | DataLoss | ResourceExhausted => {
            Failure::Retry
        }
        _ => Failure::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_sdk_messages() {
        assert_eq!(classify("HTTP export failed: network error"), Failure::Retry);
        assert_eq!(classify("HTTP export failed with status code: 503"), Failure::Retry);
        assert_eq!(classify("HTTP export failed with status code: 429"), Failure::Retry);
        assert_eq!(classify("HTTP export failed with status code: 422"), Failure::Rejected);
        assert_eq!(classify("HTTP export failed with status code: 415"), Failure::Rejected);
        assert_eq!(
            classify("TonicTracesClient export failed with gRPC code: Unavailable: transport error: tcp connect error"),
            Failure::Retry
        );
        assert_eq!(classify("TonicTracesClient export failed with gRPC code: Unauthenticated"), Failure::Rejected);
        assert_eq!(classify("something new"), Failure::Retry);
    }
}
