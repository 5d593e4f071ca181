//! The eBPF capture's TLS part: the loader settings of the TLS programs, their start (a
//! failure is a warning: the packet capture goes on without TLS), and where their segments and
//! socket events go (the batch being filled, attribution).

use std::sync::{Arc, Mutex};

use aya::{Ebpf, EbpfLoader};
use tracer_common::tls::global;
use tracer_core::segment::{Segment, SegmentBatch};

use crate::capture::config::{CaptureConfig, chain};
use crate::capture::socket::{SocketEvent, SocketEventSink};
use crate::capture::tls::streams::StreamOut;
use crate::capture::tls::{self, LoadSettings, TlsCapture};

/// The TLS programs' load-time settings, when TLS capture is on and can run here.
pub(super) fn settings(config: &CaptureConfig) -> Option<LoadSettings> {
    if !config.tls.enabled {
        return None;
    }
    match LoadSettings::for_config(&config.tls) {
        Ok(s) => Some(s),
        Err(why) => {
            tracing::warn!("TLS capture off: {why}");
            None
        }
    }
}

/// Sets the TLS programs' globals, or shrinks their maps when TLS capture is off.
pub(super) fn configure<'a>(loader: &mut EbpfLoader<'a>, settings: Option<&'a LoadSettings>) {
    match settings {
        Some(s) => {
            loader.override_global(global::FLAGS, &s.flags, true).override_global(global::OFFSETS, &s.offsets, true);
        }
        None => {
            for m in tls::MAPS {
                loader.map_max_entries(m, 1);
            }
        }
    }
}

/// Starts TLS capture on the loaded object; `None` (said in a warning) when it cannot run.
pub(super) fn start(ebpf: &Arc<Mutex<Ebpf>>, config: &CaptureConfig) -> Option<TlsCapture> {
    match TlsCapture::start(ebpf, &config.tls) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("TLS capture off: {}", brief(&chain(&e)));
            None
        }
    }
}

/// A verifier's refusal is thousands of lines: its first line and its verdict are enough for
/// a warning (`OLLAMA_TRACER_LOG=debug` has the rest).
fn brief(why: &str) -> String {
    let lines: Vec<&str> = why.lines().collect();
    if lines.len() <= 6 {
        return why.to_owned();
    }
    tracing::debug!("TLS programs refused: {why}");
    format!("{} … {}", lines[0], lines[lines.len() - 4..].join(" / "))
}

/// Segments into the batch being filled, socket events to attribution.
pub(super) struct BatchOut<'a> {
    pub batch: &'a mut SegmentBatch,
    pub sockets: Option<&'a SocketEventSink>,
}

impl StreamOut for BatchOut<'_> {
    fn segment(&mut self, seg: &Segment<'_>) {
        self.batch.push(seg);
    }

    fn socket_event(&mut self, ev: SocketEvent) {
        if let Some(s) = self.sockets {
            s.socket_event(ev);
        }
    }
}
