//! In Kubernetes each call's spans are reported under the resource of the server's workload
//! (`service.name` from its Deployment, StatefulSet or annotation): the OTLP exporter must send
//! every span under its own call's resource, also when calls of different workloads alternate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ollama_tracer::run::outputs;
use ollama_tracer::settings::{self, CliExport, Environment};
use ollama_tracer::transport::Protocol;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::resource::v1::Resource;
use testkit::otlp::{Receiver, Transport};
use tracer_core::identity::{CallIdentity, Endpoint, Owner, PodInfo, WorkloadKind};
use tracer_core::pipeline::PipelineConfig;
use tracer_core::replay;
use tracer_core::span::SpanConfig;
use tracer_core::span::stage::{SpanStage, SpanStageConfig};

fn identity(workload: Option<&str>) -> Option<Arc<CallIdentity>> {
    let name = workload?;
    let pod = PodInfo {
        uid: format!("uid-{name}"),
        name: format!("{name}-0"),
        namespace: "ai".into(),
        node: Some("node-a".into()),
        containers: Vec::new(),
        owners: vec![Owner { kind: WorkloadKind::StatefulSet, name: name.into() }],
        resource_annotations: Vec::new(),
    };
    Some(Arc::new(CallIdentity {
        client: Endpoint::default(),
        server: Endpoint { pod: Some(Arc::new(pod)), node_name: Some(Arc::from("node-a")), ..Default::default() },
        workload_service_name: true,
    }))
}

fn service_name(r: &Resource) -> Option<String> {
    r.attributes.iter().find(|kv| kv.key == "service.name").and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Any::StringValue(s) => Some(s.clone()),
        _ => None,
    })
}

#[test]
fn each_span_is_exported_under_its_call_resource() {
    let receiver = Receiver::start(Transport::Http).expect("receiver");
    let cli = CliExport {
        outputs: vec!["none".into(), "otlp".into()],
        otlp_endpoint: Some(receiver.url()),
        otlp_protocol: Some(Protocol::HttpProtobuf),
        ..Default::default()
    };
    let env = Environment::from_pairs([("OTEL_METRICS_EXPORTER", "none")]);
    let (settings, _) = settings::resolve(&cli, &env).expect("settings");
    let resource = settings::resource(&settings, Some("host-a".into()));
    let mut outputs = outputs::build(
        &settings,
        &resource,
        Box::new(std::io::sink()),
        ollama_tracer::export::otlp::Delivery::Live,
        tracer_core::span::DEFAULT_COLD_START_NS,
    )
    .expect("outputs")
    .outputs;
    let config = SpanStageConfig { spans: SpanConfig { id_seed: Some(7), ..Default::default() }, ..Default::default() };
    let mut spans = SpanStage::new(resource, config);

    let cap = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/captures/real-clients.pcap");
    let files = replay::open_all(&[&cap]).expect("open");
    // Alternate workloads call by call (two in a row, then a switch), and some calls with no pod.
    let workloads = [Some("ollama-gpu"), Some("ollama-gpu"), None, Some("ollama-cpu"), Some("ollama-gpu")];
    let mut calls = 0;
    replay::replay(&files, &[11434], PipelineConfig::default(), &mut |mut c| {
        c.identity = identity(workloads[calls % workloads.len()]);
        calls += 1;
        spans.push(c, &mut |traced| outputs.export(&traced));
    });
    let produced = spans.stats().spans;
    assert!(calls >= 10, "the capture has calls: {calls}");
    outputs.shutdown(Some(Duration::from_secs(30))).expect("flush");
    let stats = outputs.export_stats().expect("OTLP stats");
    assert_eq!(stats.exported, produced, "every span delivered: {stats}");

    // One worker exports the queue in order and the receiver keeps arrival order, so the spans
    // arrive as the calls were made: each call's server span, then its children.
    let received = receiver.received().spans();
    assert_eq!(received.len() as u64, produced);
    let mut call: Option<usize> = None;
    for (r, _, s) in &received {
        if s.kind == 2 {
            call = Some(call.map_or(0, |i| i + 1));
        }
        let i = call.expect("a call's server span comes first");
        let want = workloads[i % workloads.len()].unwrap_or("ollama");
        assert_eq!(service_name(r).as_deref(), Some(want), "span {} of call {i}", s.name);
        assert!(r.attributes.iter().any(|kv| kv.key == "host.name"), "the base resource's other attributes stay");
    }
    assert_eq!(call.map(|i| i + 1), Some(calls), "one server span per call");
    assert!(
        received.iter().any(|(r, _, _)| service_name(r).as_deref() == Some("ollama-cpu"))
            && received.iter().any(|(r, _, _)| service_name(r).as_deref() == Some("ollama")),
        "all three resources seen"
    );
}
