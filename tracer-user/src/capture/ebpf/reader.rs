//! Reading the ring buffer: each record to a segment of the batch, a socket event, or a TLS
//! session's input, counted. Shared by the reads that wait for the kernel's wake-up and the
//! periodic read that does not (records the programs leave without one).

use aya::maps::{MapData, RingBuf};
use tracer_common::{CHUNK_SIZE, hook, record_hook};
use tracer_core::segment::{Orientation, SegmentBatch};

use super::records::{ClockOffset, decode_record, decode_sock_record};
use super::tls_feed;
use crate::capture::counters::ReaderCounters;
use crate::capture::socket::SocketEventSink;
use crate::capture::tls::TlsCapture;

/// What turning records into segments needs, and what it counted.
pub(super) struct RingReader {
    pub orientation: Orientation,
    pub clock: ClockOffset,
    pub max_segments: usize,
    pub max_bytes: usize,
    pub counters: ReaderCounters,
    pub socket_events: Option<SocketEventSink>,
}

impl RingReader {
    /// Reads records into `batch` until the ring is empty (`true`) or the batch is full.
    pub fn fill(&mut self, rb: &mut RingBuf<MapData>, tls: &mut Option<TlsCapture>, batch: &mut SegmentBatch) -> bool {
        let RingReader { orientation, clock, max_segments, max_bytes, counters, socket_events } = self;
        while batch.is_empty() || (batch.len() < *max_segments && batch.data.len() + CHUNK_SIZE <= *max_bytes) {
            let Some(item) = rb.next() else { return true };
            counters.records_read += 1;
            let hook_byte = record_hook(&item);
            if let (Some(h @ (hook::TLS_DATA | hook::TLS_EVENT)), Some(t)) = (hook_byte, tls.as_mut()) {
                t.record(h, &item, *clock, &mut tls_feed::BatchOut { batch, sockets: socket_events.as_ref() });
                continue;
            }
            if hook_byte == Some(hook::SOCK_STATE) {
                counters.socket_records += 1;
                match decode_sock_record(&item, *clock) {
                    Ok(ev) => {
                        if let Some(a) = socket_events.as_ref() {
                            a.socket_event(ev);
                        }
                    }
                    Err(_) => counters.malformed_records += 1,
                }
                continue;
            }
            match decode_record(&item, orientation, *clock) {
                // Ciphertext of a connection a TLS session feeds.
                Ok(Some(seg)) if tls.as_mut().is_some_and(|t| t.owns(&seg.flow)) => {}
                Ok(Some(seg)) => {
                    counters.payload_bytes_read += seg.payload.len() as u64;
                    batch.push(&seg);
                }
                Ok(None) => counters.unoriented_records += 1,
                Err(_) => counters.malformed_records += 1,
            }
        }
        false
    }
}
