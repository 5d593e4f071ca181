//! The registry as an OTLP `ExportMetricsServiceRequest` (cumulative temporality), pushed every
//! `OTEL_METRIC_EXPORT_INTERVAL` and once more at shutdown. A failed push is counted and not
//! retried: the next one carries the same cumulative values.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use prost::Message as _;
use tonic::transport::Channel;

use super::catalog::{Attr, Attrs, Kind};
use super::registry::{Points, Reader, Registry, SharedRegistry};
use crate::transport::runtime::ExportRuntime;
use crate::transport::{self, ExportError, Failure, HeaderClient};
use crate::transport::{Compression, OtlpTarget, Protocol};
use tracer_core::span::{AttrValue, Resource};

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn any(v: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: any(value), ..Default::default() }
}

fn attrs(a: &Attrs) -> Vec<KeyValue> {
    a.iter()
        .map(|(k, v)| {
            kv(
                k,
                match v {
                    Attr::Str(s) => any_value::Value::StringValue(s.clone()),
                    Attr::Int(i) => any_value::Value::IntValue(*i),
                    Attr::Bool(b) => any_value::Value::BoolValue(*b),
                },
            )
        })
        .collect()
}

/// Our resource in OTLP form.
pub fn resource(r: &Resource) -> ProtoResource {
    ProtoResource {
        attributes: r
            .attributes
            .iter()
            .map(|a| {
                kv(
                    &a.key,
                    match &a.value {
                        AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
                        AttrValue::Int(i) => any_value::Value::IntValue(*i),
                        AttrValue::F64(f) => any_value::Value::DoubleValue(*f),
                        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
                        AttrValue::StrArray(v) => any_value::Value::ArrayValue(ArrayValue {
                            values: v
                                .iter()
                                .map(|s| AnyValue { value: Some(any_value::Value::StringValue(s.clone())) })
                                .collect(),
                        }),
                    },
                )
            })
            .collect(),
        ..Default::default()
    }
}

/// Every metric with at least one series, as of `now`.
pub fn request(reg: &Registry, res: &ProtoResource, now: SystemTime) -> ExportMetricsServiceRequest {
    let (start, now) = (nanos(reg.start), nanos(now));
    let cumulative = AggregationTemporality::Cumulative as i32;
    let mut metrics = Vec::new();
    for metric in reg.metrics() {
        let desc = &metric.desc;
        let data = match &metric.points {
            Points::Histogram(series) if !series.is_empty() => {
                let data_points = series
                    .iter()
                    .map(|(a, h)| HistogramDataPoint {
                        attributes: attrs(a),
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        count: h.count,
                        sum: Some(h.sum),
                        bucket_counts: h.counts.clone(),
                        explicit_bounds: desc.bounds.to_vec(),
                        min: h.min_max.map(|m| m.0),
                        max: h.min_max.map(|m| m.1),
                        ..Default::default()
                    })
                    .collect();
                Data::Histogram(Histogram { data_points, aggregation_temporality: cumulative })
            }
            Points::Counter(series) | Points::Gauge(series) if !series.is_empty() => {
                let counter = matches!(metric.points, Points::Counter(_));
                let data_points = series
                    .iter()
                    .map(|(a, v)| NumberDataPoint {
                        attributes: attrs(a),
                        start_time_unix_nano: if counter { start } else { 0 },
                        time_unix_nano: now,
                        value: Some(if desc.scale == 1.0 {
                            number_data_point::Value::AsInt(i64::try_from(*v).unwrap_or(i64::MAX))
                        } else {
                            number_data_point::Value::AsDouble(desc.value(*v))
                        }),
                        ..Default::default()
                    })
                    .collect();
                if counter {
                    Data::Sum(Sum { data_points, aggregation_temporality: cumulative, is_monotonic: true })
                } else {
                    Data::Gauge(Gauge { data_points })
                }
            }
            _ => continue,
        };
        metrics.push(Metric {
            name: desc.name.into(),
            description: desc.description.into(),
            unit: desc.unit.into(),
            data: Some(data),
            ..Default::default()
        });
    }
    for (desc, points) in reg.health() {
        let data_points = points
            .iter()
            .map(|p| NumberDataPoint {
                attributes: attrs(&p.attrs),
                start_time_unix_nano: if desc.kind == Kind::Counter { start } else { 0 },
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsInt(i64::try_from(p.value).unwrap_or(i64::MAX))),
                ..Default::default()
            })
            .collect();
        let data = match desc.kind {
            Kind::Counter => Data::Sum(Sum { data_points, aggregation_temporality: cumulative, is_monotonic: true }),
            _ => Data::Gauge(Gauge { data_points }),
        };
        metrics.push(Metric {
            name: desc.name.into(),
            description: desc.description.into(),
            unit: desc.unit.into(),
            data: Some(data),
            ..Default::default()
        });
    }
    let scope = InstrumentationScope {
        name: tracer_core::span::semconv::DISTRO_NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    // The schema of the names used, as the SDKs put it on the scope.
    let schema_url = reg.mode().schema_url().to_string();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(res.clone()),
            scope_metrics: vec![ScopeMetrics { scope: Some(scope), metrics, schema_url }],
            ..Default::default()
        }],
    }
}

#[derive(Clone)]
enum Client {
    Grpc { client: MetricsServiceClient<Channel>, metadata: tonic::metadata::MetadataMap },
    Http { client: HeaderClient, url: String, json: bool, gzip: bool },
}

impl Client {
    async fn push(&self, req: ExportMetricsServiceRequest) -> Result<(), (Failure, String)> {
        match self {
            Client::Grpc { client, metadata } => {
                let mut request = tonic::Request::new(req);
                *request.metadata_mut() = metadata.clone();
                client
                    .clone()
                    .export(request)
                    .await
                    .map(|_| ())
                    .map_err(|s| (transport::classify_grpc(s.code()), format!("gRPC {:?}: {}", s.code(), s.message())))
            }
            Client::Http { client, url, json, gzip } => {
                let (body, ctype) = if *json {
                    (serde_json::to_vec(&req).map_err(|e| (Failure::Rejected, e.to_string()))?, "application/json")
                } else {
                    (req.encode_to_vec(), "application/x-protobuf")
                };
                let mut builder = http::Request::post(url.as_str()).header(http::header::CONTENT_TYPE, ctype);
                let body = if *gzip {
                    use std::io::Write;
                    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    enc.write_all(&body).and_then(|_| enc.finish()).map_err(|e| (Failure::Rejected, e.to_string()))?
                } else {
                    body
                };
                if *gzip {
                    builder = builder.header(http::header::CONTENT_ENCODING, "gzip");
                }
                let request = builder.body(bytes::Bytes::from(body)).map_err(|e| (Failure::Rejected, e.to_string()))?;
                match client.send(request).await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => {
                        Err((transport::classify_http_status(r.status().as_u16()), format!("HTTP {}", r.status())))
                    }
                    Err(e) => Err((Failure::Retry, format!("network error: {e}"))),
                }
            }
        }
    }
}

/// Pushes the registry to an OTLP endpoint periodically.
pub struct MetricsPusher {
    client: Client,
    registry: SharedRegistry,
    resource: ProtoResource,
    timeout: Duration,
    url: String,
    runtime: ExportRuntime,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsPusher {
    pub fn start(
        target: &OtlpTarget,
        interval: Duration,
        timeout: Duration,
        registry: SharedRegistry,
        res: &Resource,
        runtime: &ExportRuntime,
    ) -> Result<Self, ExportError> {
        let client = match target.protocol {
            Protocol::Grpc => {
                let channel = runtime.enter(|| transport::grpc_channel(target))?;
                let mut client = MetricsServiceClient::new(channel);
                if target.compression == Some(Compression::Gzip) {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                Client::Grpc { client, metadata: transport::grpc_metadata(target) }
            }
            p => Client::Http {
                client: transport::http_client(target)?,
                url: target.url.clone(),
                json: p == Protocol::HttpJson,
                gzip: target.compression == Some(Compression::Gzip),
            },
        };
        let resource = resource(res);
        let timeout = timeout.min(target.timeout.max(Duration::from_millis(1)));
        let (c, reg, r, url) = (client.clone(), registry.clone(), resource.clone(), target.url.clone());
        let task = runtime.spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                failing = push_once(&c, &reg, &r, timeout, &url, failing).await.is_err();
            }
        });
        Ok(MetricsPusher {
            client,
            registry,
            resource,
            timeout,
            url: target.url.clone(),
            runtime: runtime.clone(),
            task,
        })
    }

    /// Stops the periodic push and pushes the final values, waiting at most `timeout` (and
    /// the push's own timeout).
    pub fn finish(self, timeout: Option<Duration>) {
        self.task.abort();
        let t = timeout.map_or(self.timeout, |t| t.min(self.timeout));
        let (client, registry, resource, url) = (self.client, self.registry, self.resource, self.url);
        let handle = self.runtime.handle();
        let fut = async move { push_once(&client, &registry, &resource, t, &url, false).await };
        // Called from the pipeline thread or main, never from inside the export runtime.
        let _ = std::thread::scope(|s| s.spawn(|| handle.block_on(fut)).join());
    }
}

async fn push_once(
    client: &Client,
    registry: &SharedRegistry,
    res: &ProtoResource,
    timeout: Duration,
    url: &str,
    was_failing: bool,
) -> Result<(), ()> {
    let req = {
        let mut reg = registry.lock();
        reg.read_peaks(Reader::Otlp);
        request(&reg, res, SystemTime::now())
    };
    let outcome = match tokio::time::timeout(timeout, client.push(req)).await {
        Ok(r) => r,
        Err(_) => Err((Failure::Retry, "timed out".into())),
    };
    match outcome {
        Ok(()) => {
            if was_failing {
                tracing::info!(endpoint = %url, "OTLP metrics export resumed");
            }
            Ok(())
        }
        Err((_, msg)) => {
            registry.lock().metrics_failures.fetch_add(1, Ordering::Relaxed);
            if !was_failing {
                tracing::warn!(endpoint = %url, error = %msg, "OTLP metrics export failed (the next push carries the same cumulative values)");
            }
            Err(())
        }
    }
}
