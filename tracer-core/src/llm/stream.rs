//! What every response reader shares: the call's [`ResponseInfo`] being filled, and the stream
//! timing (first chunk, first and last output chunk, gaps between output chunks).

use super::call::{ChunkGaps, ResponseInfo, ToolCall};
use super::content::{GAP_MARK, OutputContent, append_bounded};
use crate::json::{StrAcc, same_bytes};
use crate::segment::Timestamp;

/// Longest short string (model, id, reason) we keep.
pub(super) const SHORT: usize = 256;
/// Longest error message we keep.
pub(super) const MESSAGE: usize = 1024;
/// Tool calls kept per response.
pub(super) const MAX_TOOL_CALLS: usize = 128;
/// Raw JSON kept for one tool call's arguments object (content capture only).
pub(super) const ARGS_LIMIT: usize = 64 * 1024;

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
    /// Content capture: output kept (committed chunk by chunk) …
    pub(super) capture: bool,
    pub(super) out: OutputContent,
    /// … and the current chunk's pieces, committed only if the chunk is whole and valid.
    scratch_text: String,
    scratch_reasoning: String,
    scratch_args: String,
    /// Holes in the body (bytes the capture missed): timings across them would lie.
    pub(super) holes: u32,
    /// A hole came while text (reasoning) was still empty: the first text (reasoning) after it
    /// may lack its beginning, and is marked so.
    mark_text: bool,
    mark_reasoning: bool,
    /// The latest tool call's arguments arrive in fragments (a hole may cut them).
    args_open: bool,
}

impl Stream {
    /// The stream of an error response (status ≥ 400): its documents describe the error.
    pub(super) fn for_error() -> Self {
        Stream { error_status: true, ..Default::default() }
    }

    /// Starts a chunk: forgets pieces of a previous, broken one.
    pub(super) fn doc_reset(&mut self) {
        self.scratch_text.clear();
        self.scratch_reasoning.clear();
        self.scratch_args.clear();
    }

    pub(super) fn text(&mut self, part: &[u8]) {
        if self.capture {
            append_bounded(&mut self.scratch_text, part, &mut self.out.truncated);
        }
    }

    pub(super) fn reasoning(&mut self, part: &[u8]) {
        if self.capture {
            append_bounded(&mut self.scratch_reasoning, part, &mut self.out.truncated);
        }
    }

    /// A piece of tool-call arguments (JSON text streamed in fragments).
    pub(super) fn args(&mut self, part: &[u8]) {
        if self.capture {
            append_bounded(&mut self.scratch_args, part, &mut self.out.truncated);
        }
    }

    /// Bytes of the body are missing here. Content captured so far is marked where they were
    /// (the end of the text and reasoning so far, or the start of whichever comes first after,
    /// and the arguments of a tool call arriving in fragments): what they held is not known.
    #[cold]
    pub(super) fn hole(&mut self) {
        self.holes = self.holes.saturating_add(1);
        if !self.capture {
            return;
        }
        let mut t = false;
        for (part, mark) in
            [(&mut self.out.text, &mut self.mark_text), (&mut self.out.reasoning, &mut self.mark_reasoning)]
        {
            if part.is_empty() {
                *mark = true;
            } else if !part.ends_with(GAP_MARK) {
                append_bounded(part, GAP_MARK.as_bytes(), &mut t);
            }
        }
        if self.args_open
            && let Some(args) = self.info.tool_calls.last_mut().and_then(|c| c.arguments.as_mut())
            && !args.ends_with(GAP_MARK)
        {
            append_bounded(args, GAP_MARK.as_bytes(), &mut t);
        }
        self.out.truncated |= t;
    }

    /// The chunk was whole: its text and reasoning join the output; its argument pieces are
    /// returned for the visitor to attach to the right call.
    pub(super) fn commit(&mut self) -> Option<String> {
        if !self.capture {
            return None;
        }
        let mut t = false;
        if self.mark_text || self.mark_reasoning {
            self.mark_after_hole(&mut t);
        }
        append_bounded(&mut self.out.text, self.scratch_text.as_bytes(), &mut t);
        append_bounded(&mut self.out.reasoning, self.scratch_reasoning.as_bytes(), &mut t);
        self.out.truncated |= t;
        self.scratch_text.clear();
        self.scratch_reasoning.clear();
        (!self.scratch_args.is_empty()).then(|| std::mem::take(&mut self.scratch_args))
    }

    /// The first text (reasoning) after a hole that came while there was none yet: marked.
    #[cold]
    fn mark_after_hole(&mut self, t: &mut bool) {
        for (part, scratch, mark) in [
            (&mut self.out.text, &self.scratch_text, &mut self.mark_text),
            (&mut self.out.reasoning, &self.scratch_reasoning, &mut self.mark_reasoning),
        ] {
            if *mark && !scratch.is_empty() {
                append_bounded(part, GAP_MARK.as_bytes(), t);
                *mark = false;
            }
        }
    }

    /// Adds tool calls found in a chunk: a call with a name is new; a nameless one carries more
    /// argument text for the latest call (OpenAI streams arguments in fragments).
    pub(super) fn add_tool_calls(&mut self, calls: Vec<ToolCall>, max: usize) {
        for tc in calls {
            if !tc.name.is_empty() {
                if self.info.tool_calls.len() < max {
                    self.info.tool_calls.push(tc);
                    self.args_open = false;
                }
            } else if let (Some(more), Some(last)) = (tc.arguments, self.info.tool_calls.last_mut()) {
                let mut t = false;
                append_bounded(last.arguments.get_or_insert_with(String::new), more.as_bytes(), &mut t);
                self.out.truncated |= t;
                self.args_open = true;
            }
        }
    }

    /// Attaches argument text to the latest tool call.
    pub(super) fn extend_last_args(&mut self, more: &str) {
        if let Some(last) = self.info.tool_calls.last_mut() {
            let mut t = false;
            append_bounded(last.arguments.get_or_insert_with(String::new), more.as_bytes(), &mut t);
            self.out.truncated |= t;
            self.args_open = true;
        }
    }

    /// The output content, once the response is over.
    pub(super) fn finish_content(&mut self) {
        if self.capture {
            let mut out = std::mem::take(&mut self.out);
            out.tool_calls =
                self.info.tool_calls.iter().map(|t| (t.id.clone(), t.name.clone(), t.arguments.clone())).collect();
            self.info.content = Some(out);
        }
    }

    #[inline]
    pub(super) fn chunk(&mut self, ts: Timestamp, has_output: bool) {
        self.info.chunks += 1;
        // After a hole, the first chunk seen may not be the first sent: first times stay unknown.
        if self.holes == 0 {
            self.first_chunk.get_or_insert(ts);
        }
        self.last_chunk = Some(ts);
        if has_output {
            self.info.output_chunks += 1;
            if let Some(prev) = self.last_output {
                self.gaps.record(ts.since(prev).max(0) as f64 / 1e9);
            }
            if self.holes == 0 {
                self.first_output.get_or_insert(ts);
            }
            self.last_output = Some(ts);
        }
    }

    /// A token chunk read by the fast path: what `doc_end` does with a chunk holding only text
    /// and reasoning.
    pub(super) fn token_chunk(&mut self, ts: Timestamp, text: u64, reasoning: u64) {
        self.chunk(ts, text > 0 || reasoning > 0);
        self.info.text_bytes += text;
        self.info.reasoning_bytes += reasoning;
    }

    pub(super) fn set_model(&mut self, acc: &StrAcc) {
        // Every chunk repeats the model: compare before allocating.
        set_plain(&mut self.info.model, acc.bytes(), usize::MAX);
    }

    pub(super) fn set_id(&mut self, acc: &StrAcc) {
        set_plain(&mut self.info.id, acc.bytes(), usize::MAX);
    }

    /// [`Self::set_model`] of a string without escapes read in place by the token-chunk fast
    /// path, kept to `cap` bytes as an accumulator would keep it: nothing is copied unless it
    /// changed.
    pub(super) fn set_model_plain(&mut self, raw: &[u8], cap: usize) {
        set_plain(&mut self.info.model, raw, cap);
    }

    /// [`Self::set_id`] of a string read in place, as [`Self::set_model_plain`].
    pub(super) fn set_id_plain(&mut self, raw: &[u8], cap: usize) {
        set_plain(&mut self.info.id, raw, cap);
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

/// Keeps `raw` (cut to `cap` bytes, invalid UTF-8 replaced) in `to` unless it is there already.
fn set_plain(to: &mut Option<String>, raw: &[u8], cap: usize) {
    let raw = &raw[..raw.len().min(cap)];
    if !to.as_deref().is_some_and(|t| same_bytes(t.as_bytes(), raw)) {
        *to = Some(String::from_utf8_lossy(raw).into_owned());
    }
}
