//! `ollama-tracer run` options for attribution, and starting it for a live capture.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use super::{Attribution, AttributionConfig, AttributionError, Kubernetes};
use crate::capture::live::{CaptureConfig, CaptureMode, EbpfAttach, cgroup_root};
use crate::pipeline::PipelineConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Toggle {
    Auto,
    Off,
}

/// Who called and who answered (see docs/attribution.md).
#[derive(clap::Args, Debug, Clone)]
pub struct AttributionArgs {
    /// Attribute calls to the processes, containers and pods at both ends (eBPF capture only):
    /// `auto` or `off`.
    #[arg(long = "attribution", value_enum, default_value = "auto", value_name = "MODE")]
    pub attribution: Toggle,
    /// Also export `process.command_args` (the arguments, values of secret-looking flags
    /// redacted). Off by default: command lines can carry secrets.
    #[arg(long)]
    pub process_args: bool,
    /// Pod, namespace and workload names from the Kubernetes API: `auto` (when running in a
    /// pod and the node name is known) or `off`.
    #[arg(long = "kubernetes", value_enum, default_value = "auto", value_name = "MODE")]
    pub kubernetes: Toggle,
    /// The API server to ask instead of the in-cluster one, without credentials (e.g. a
    /// `kubectl proxy` on a node).
    #[arg(long, value_name = "URL", hide = true)]
    pub kubernetes_api: Option<String>,
    /// This node's name: the pods watched are those scheduled on it.
    #[arg(long, env = "K8S_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Keep --service-name for a server in a pod instead of naming the service after its
    /// workload.
    #[arg(long)]
    pub keep_service_name: bool,
    /// Longest a span waits for attribution lookups under way.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "5ms")]
    pub attribution_wait: Duration,
}

impl AttributionArgs {
    /// Starts attribution for a live capture and hands it to the capture (socket events) and
    /// the pipeline (identities of calls). Must run inside the tokio runtime (the Kubernetes
    /// watch runs on it). Nothing to do when off or with libpcap only.
    pub fn install(
        &self,
        mode: CaptureMode,
        capture: &mut CaptureConfig,
        pipeline: &mut PipelineConfig,
    ) -> Result<(), AttributionError> {
        if self.attribution == Toggle::Off || mode == CaptureMode::Pcap {
            return Ok(());
        }
        let cgroup_root: PathBuf = match &capture.ebpf_attach {
            EbpfAttach::Cgroup(dir) => dir.clone(),
            EbpfAttach::CgroupRoot | EbpfAttach::Tcx(_) => match cgroup_root() {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("attribution off: {e}");
                    return Ok(());
                }
            },
        };
        let kubernetes = self.kubernetes();
        let config = AttributionConfig {
            cgroup_root,
            process_args: self.process_args,
            max_wait: self.attribution_wait,
            workload_service_name: !self.keep_service_name,
            node_name: self.node_name.clone(),
            ..AttributionConfig::default()
        };
        tracing::info!(
            "attribution: cgroups under {}, Kubernetes {}",
            config.cgroup_root.display(),
            kubernetes.as_ref().map_or("off".to_string(), |k| format!("pods of node {}", k.node()))
        );
        let a = Attribution::start(config, kubernetes)?;
        capture.attribution = Some(a.clone());
        pipeline.attribution = Some(a);
        Ok(())
    }

    fn kubernetes(&self) -> Option<Kubernetes> {
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        if self.kubernetes == Toggle::Off || !(in_cluster || self.kubernetes_api.is_some()) {
            return None;
        }
        let Some(node) = self.node_name.clone().filter(|n| !n.is_empty()) else {
            tracing::warn!("Kubernetes metadata off: the node name is unknown (--node-name or K8S_NODE_NAME)");
            return None;
        };
        let k = match &self.kubernetes_api {
            Some(url) => Kubernetes::from_url(url, node),
            None => Kubernetes::in_cluster(node),
        };
        match k {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!("Kubernetes metadata off: {e}");
                None
            }
        }
    }
}
