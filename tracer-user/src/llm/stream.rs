//! What every response reader shares: the call's [`ResponseInfo`] being filled, and the stream
//! timing (first chunk, first and last output chunk, gaps between output chunks).

use super::call::{ChunkGaps, ResponseInfo};
use crate::json::StrAcc;
use crate::segment::Timestamp;

/// Longest short string (model, id, reason) we keep.
pub(super) const SHORT: usize = 256;
/// Longest error message we keep.
pub(super) const MESSAGE: usize = 1024;
/// Tool calls kept per response.
pub(super) const MAX_TOOL_CALLS: usize = 128;

/// Stream timing and chunk counting shared by every visitor.
#[derive(Debug, Default)]
pub(super) struct Stream {
    pub(super) info: ResponseInfo,
    pub(super) first_chunk: Option<Timestamp>,
    pub(super) first_output: Option<Timestamp>,
    pub(super) last_output: Option<Timestamp>,
    /// End of the latest chunk (the final one, once the stream is over).
    pub(super) last_chunk: Option<Timestamp>,
    pub(super) gaps: ChunkGaps,
    /// The response status is an error: documents describe the error.
    pub(super) error_status: bool,
    pub(super) status: u16,
}

impl Stream {
    pub(super) fn chunk(&mut self, ts: Timestamp, has_output: bool) {
        self.info.chunks += 1;
        self.first_chunk.get_or_insert(ts);
        self.last_chunk = Some(ts);
        if has_output {
            self.info.output_chunks += 1;
            if let Some(prev) = self.last_output {
                self.gaps.record(ts.since(prev).max(0) as f64 / 1e9);
            }
            self.first_output.get_or_insert(ts);
            self.last_output = Some(ts);
        }
    }

    pub(super) fn set_model(&mut self, acc: &StrAcc) {
        // Every chunk repeats the model: compare before allocating.
        if self.info.model.as_deref().map(str::as_bytes) != Some(acc.bytes()) {
            self.info.model = Some(acc.to_string_lossy());
        }
    }

    pub(super) fn set_id(&mut self, acc: &StrAcc) {
        if self.info.id.as_deref().map(str::as_bytes) != Some(acc.bytes()) {
            self.info.id = Some(acc.to_string_lossy());
        }
    }

    pub(super) fn error(&mut self, message: Option<String>, kind: Option<String>) {
        if !self.error_status {
            self.info.in_stream_error = true;
        }
        if self.info.error_message.is_none() {
            self.info.error_message = message;
        }
        if self.info.error_type.is_none() {
            self.info.error_type = kind;
        }
    }
}
