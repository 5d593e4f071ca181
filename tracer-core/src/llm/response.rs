//! Reading response bodies as they stream: the framing (NDJSON, JSON, SSE) chosen from the route
//! and the response head, and the reader for the API's shape, which folds each chunk into the
//! call's [`ResponseInfo`] and stream timing. Only running totals and short strings are kept.

use super::anthropic::AnthropicVisitor;
use super::call::{CallTimes, ResponseInfo};
use super::error_body::ErrorVisitor;
use super::framing::{JsonSeq, Sse};
use super::native::NativeVisitor;
use super::openai::OpenAiVisitor;
use super::responses::ResponsesVisitor;
use super::route::{Api, Route};
use crate::segment::Timestamp;

/// Raw JSON kept for one captured subtree (a tool definition, tool-call arguments).
pub const RAW_JSON_LIMIT: usize = 64 * 1024;

#[derive(Debug)]
enum Framer {
    Seq(JsonSeq),
    Sse(Sse),
    /// Bodies we only count (blobs, plain text, unknown routes).
    Count,
}

#[derive(Debug)]
enum Visitor {
    Native(NativeVisitor),
    OpenAi(OpenAiVisitor),
    Responses(ResponsesVisitor),
    Anthropic(AnthropicVisitor),
    Error(ErrorVisitor),
}

macro_rules! with_visitor {
    ($self:expr, $v:ident => $body:expr) => {
        match &mut $self.visitor {
            Visitor::Native($v) => $body,
            Visitor::OpenAi($v) => $body,
            Visitor::Responses($v) => $body,
            Visitor::Anthropic($v) => $body,
            Visitor::Error($v) => $body,
        }
    };
}

/// Decodes one response body.
#[derive(Debug)]
pub struct ResponseDecoder {
    framer: Framer,
    visitor: Visitor,
}

fn media_type(content_type: Option<&str>) -> String {
    content_type.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

impl ResponseDecoder {
    /// Chooses framing and reader from the route, status and Content-Type.
    pub fn new(route: Route, status: u16, content_type: Option<&str>) -> Self {
        Self::with_capture(route, status, content_type, false)
    }

    /// As [`Self::new`], keeping the output content when `capture` (content capture on).
    pub fn with_capture(route: Route, status: u16, content_type: Option<&str>, capture: bool) -> Self {
        let media = media_type(content_type);
        let sse = media == "text/event-stream";
        let ndjson = media == "application/x-ndjson";
        let json_like = media.contains("json") || media.is_empty();
        if status >= 400 {
            let framer = if json_like { Framer::Seq(JsonSeq::new(false)) } else { Framer::Count };
            return ResponseDecoder { framer, visitor: Visitor::Error(ErrorVisitor::new()) };
        }
        let framer = if sse {
            Framer::Sse(Sse::new())
        } else if ndjson {
            Framer::Seq(JsonSeq::new(true))
        } else if json_like && !matches!(route, Route::BlobUpload | Route::BlobHead | Route::Root | Route::Unknown) {
            Framer::Seq(JsonSeq::new(false))
        } else {
            Framer::Count
        };
        let streamed = sse || ndjson;
        let visitor = match (route.api(), route) {
            (_, Route::OpenAiResponses) => Visitor::Responses(ResponsesVisitor::new(streamed)),
            (Api::Anthropic, _) => Visitor::Anthropic(AnthropicVisitor::new(streamed)),
            (Api::OpenAi, _) => Visitor::OpenAi(OpenAiVisitor::new(route, streamed)),
            (Api::Native | Api::Http, _) => Visitor::Native(NativeVisitor::new(route)),
        };
        let mut d = ResponseDecoder { framer, visitor };
        with_visitor!(d, v => {
            v.s.info.streamed = streamed;
            v.s.status = status;
            v.s.capture = capture;
        });
        d
    }

    /// Turns the fast path for common token chunks off: every document is read by the full
    /// scanner (equivalence tests and fuzzers compare both).
    pub fn set_fast_path(&mut self, on: bool) {
        match &mut self.framer {
            Framer::Seq(f) => f.set_fast_path(on),
            Framer::Sse(f) => f.set_fast_path(on),
            Framer::Count => {}
        }
    }

    /// Documents the fast path took so far.
    pub fn fast_docs(&self) -> u64 {
        match &self.framer {
            Framer::Seq(f) => f.stats().fast,
            Framer::Sse(f) => f.stats().fast,
            Framer::Count => 0,
        }
    }

    /// Records the response's media type and content coding.
    pub fn set_headers(&mut self, content_type: Option<String>, content_encoding: Option<String>) {
        with_visitor!(self, v => {
            v.s.info.content_type = content_type;
            v.s.info.content_encoding = content_encoding;
        });
    }

    /// The body's bytes are only counted (not an error text either): the capture need not
    /// copy them.
    pub fn only_counts(&self) -> bool {
        matches!(self.framer, Framer::Count) && !matches!(self.visitor, Visitor::Error(_))
    }

    pub fn feed(&mut self, data: &[u8], ts: Timestamp) {
        with_visitor!(self, v => {
            v.s.info.body_bytes += data.len() as u64;
        });
        if let Visitor::Error(e) = &mut self.visitor {
            // Kept for plain-text errors and JSON that turns out not to be.
            e.text.push(data);
        }
        match &mut self.framer {
            Framer::Seq(f) => with_visitor!(self, v => f.feed(data, ts, v)),
            Framer::Sse(f) => with_visitor!(self, v => f.feed(data, ts, v)),
            Framer::Count => {}
        }
    }

    /// Chunks and output chunks read so far, and the model the response named (a cheap look
    /// at a stream in progress, for `top`).
    pub fn progress(&self) -> (u64, u64, Option<&str>) {
        let s = match &self.visitor {
            Visitor::Native(v) => &v.s,
            Visitor::OpenAi(v) => &v.s,
            Visitor::Responses(v) => &v.s,
            Visitor::Anthropic(v) => &v.s,
            Visitor::Error(v) => &v.s,
        };
        (s.info.chunks, s.info.output_chunks, s.info.model.as_deref())
    }

    /// Bytes of the body were not captured.
    #[cold]
    pub fn gap(&mut self) {
        with_visitor!(self, v => v.s.hole());
        match &mut self.framer {
            Framer::Seq(f) => f.gap(),
            Framer::Sse(f) => f.gap(),
            Framer::Count => {}
        }
    }

    /// The body's framing was found again after a gap: what follows starts a document.
    #[cold]
    pub fn rejoin(&mut self, ts: Timestamp) {
        match &mut self.framer {
            Framer::Seq(f) => with_visitor!(self, v => f.rejoin(ts, v)),
            Framer::Sse(f) => with_visitor!(self, v => f.rejoin(ts, v)),
            Framer::Count => {}
        }
    }

    /// End of the body; folds stream timing into `times`.
    pub fn finish(mut self, ts: Timestamp, times: &mut CallTimes) -> ResponseInfo {
        match &mut self.framer {
            Framer::Seq(f) => with_visitor!(self, v => f.finish(ts, v)),
            Framer::Sse(f) => with_visitor!(self, v => f.finish(ts, v)),
            Framer::Count => {}
        }
        with_visitor!(self, v => v.s.finish_content());
        if let Visitor::Error(e) = &mut self.visitor {
            let message = if !e.message.is_empty() {
                Some(e.message.to_string_lossy())
            } else if !e.text.is_empty() {
                Some(e.text.to_string_lossy().trim().to_string())
            } else {
                None
            };
            let kind = (!e.kind.is_empty()).then(|| e.kind.to_string_lossy());
            e.s.info.error_message = message;
            e.s.info.error_type = kind;
        }
        // Several JSON values in one body are a stream whatever the Content-Type said (Ollama
        // Cloud streams NDJSON as application/json).
        let multi_doc = matches!(&self.framer, Framer::Seq(f) if f.stats().docs > 1);
        let mut s = match self.visitor {
            Visitor::Native(v) => v.s,
            Visitor::OpenAi(v) => v.s,
            Visitor::Responses(v) => v.s,
            Visitor::Anthropic(v) => v.s,
            Visitor::Error(v) => v.s,
        };
        s.info.streamed |= multi_doc;
        times.first_chunk = s.first_chunk;
        times.last_chunk = s.last_chunk;
        times.first_output = s.first_output;
        times.last_output = s.last_output;
        // Time between chunks across a hole would count a lost chunk's wait twice.
        times.chunk_gaps = if s.holes > 0 { Default::default() } else { s.gaps };
        s.info
    }
}
