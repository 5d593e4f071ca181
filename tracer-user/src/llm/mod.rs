//! From HTTP exchanges to Ollama calls: the route decides the operation, the request body gives
//! model and parameters, the response body (as it streams) gives tokens, timings, finish reasons,
//! tool calls and errors; the end of the exchange decides what is missing and what went wrong.

pub mod anthropic;
pub mod call;
pub mod error_body;
pub mod framing;
pub mod native;
pub mod openai;
pub mod request;
pub mod response;
pub mod route;
pub mod stream;

#[cfg(test)]
mod tests;

// Keys are our own sequential ids, never attacker-chosen: the cheapest hash will do.
use rustc_hash::FxHashMap;

pub use self::call::{CallError, CallTimes, ErrorKind, Incomplete, LlmCall, RequestInfo, ResponseInfo};
use self::request::RequestDecoder;
use self::response::ResponseDecoder;
pub use self::route::{Api, Operation, Route};
use crate::http::{ExchangeEnd, ExchangeId, HttpEvent, Outcome};
use crate::reassembly::CloseReason;
use crate::segment::{Direction, Timestamp};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LlmStats {
    pub calls: u64,
    pub incomplete: u64,
    pub errors: u64,
}

#[derive(Debug)]
struct CallState {
    call: LlmCall,
    request: RequestDecoder,
    response: Option<ResponseDecoder>,
}

/// The call-assembly stage.
#[derive(Debug, Default)]
pub struct CallAssembler {
    calls: FxHashMap<ExchangeId, CallState>,
    stats: LlmStats,
}

impl CallAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> &LlmStats {
        &self.stats
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    pub fn push<F: FnMut(LlmCall)>(&mut self, ev: HttpEvent<'_>, out: &mut F) {
        match ev {
            HttpEvent::Request { conn, id, flow, ts, head, meta } => {
                let head = *head;
                let route = Route::classify(&head.method, &head.path);
                let call = LlmCall {
                    conn,
                    exchange: id,
                    flow,
                    meta,
                    route,
                    method: head.method,
                    path: head.path,
                    user_agent: head.user_agent,
                    traceparent: head.traceparent,
                    tracestate: head.tracestate,
                    headers: head.kept_headers,
                    status: None,
                    request: RequestInfo::default(),
                    response: ResponseInfo::default(),
                    times: CallTimes { request_start: ts, end: ts, ..Default::default() },
                    incomplete: Vec::new(),
                    error: None,
                };
                self.calls.insert(id, CallState { call, request: RequestDecoder::new(route), response: None });
            }
            HttpEvent::RequestBody { id, data, .. } => {
                if let Some(st) = self.calls.get_mut(&id) {
                    st.request.feed(data);
                }
            }
            HttpEvent::RequestEnd { id, ts } => {
                if let Some(st) = self.calls.get_mut(&id) {
                    st.call.times.request_end = Some(ts);
                }
            }
            HttpEvent::Interim { .. } => {}
            HttpEvent::Response { id, ts, head, .. } => {
                if let Some(st) = self.calls.get_mut(&id) {
                    st.call.status = Some(head.status);
                    st.call.times.response_start = Some(ts);
                    let mut decoder = ResponseDecoder::new(st.call.route, head.status, head.content_type.as_deref());
                    decoder.set_headers(head.content_type, head.content_encoding);
                    st.response = Some(decoder);
                }
            }
            HttpEvent::ResponseBody { id, ts, data } => {
                if let Some(st) = self.calls.get_mut(&id)
                    && let Some(d) = st.response.as_mut()
                {
                    d.feed(data, ts);
                }
            }
            HttpEvent::BodyGap { id, dir, .. } => {
                if let Some(st) = self.calls.get_mut(&id) {
                    match dir {
                        Direction::ToServer => st.request.gap(),
                        Direction::ToClient => {
                            if let Some(d) = st.response.as_mut() {
                                d.gap();
                            }
                        }
                    }
                }
            }
            HttpEvent::End { id, ts, end } => {
                if let Some(st) = self.calls.remove(&id) {
                    let call = finish(st, ts, end);
                    self.stats.calls += 1;
                    if call.is_incomplete() {
                        self.stats.incomplete += 1;
                    }
                    if call.error.is_some() {
                        self.stats.errors += 1;
                    }
                    out(call);
                }
            }
        }
    }
}

/// Whether the route's successful stream has a terminator we must see.
fn expects_terminator(call: &LlmCall) -> bool {
    call.route.operation().is_some() || matches!(call.route, Route::Pull | Route::Push | Route::Create)
}

fn finish(st: CallState, ts: Timestamp, end: ExchangeEnd) -> LlmCall {
    let CallState { mut call, request, response } = st;
    call.request = request.finish();
    let capture_lost = matches!(end.close, Some(CloseReason::CaptureEnd | CloseReason::Idle | CloseReason::Evicted));
    // A call cut by the end of the capture ends where we last saw it, not when we gave up.
    call.times.end = match end.outcome {
        Outcome::Complete => ts,
        _ if capture_lost => end.last_byte.max(call.times.request_start),
        _ => ts,
    };
    if let Some(decoder) = response {
        call.response = decoder.finish(call.times.end, &mut call.times);
    }
    let mut incomplete = Vec::new();
    if end.request_gap_bytes > 0 {
        incomplete.push(Incomplete::RequestGap);
    }
    if end.response_gap_bytes > 0 {
        incomplete.push(Incomplete::ResponseGap);
    }
    match end.outcome {
        Outcome::Complete => {}
        Outcome::Truncated => incomplete.push(Incomplete::Truncated),
        Outcome::NoResponse => incomplete.push(Incomplete::NoResponse),
    }
    if capture_lost && end.outcome != Outcome::Complete {
        incomplete.push(Incomplete::CaptureEnded);
    }
    let status = call.status.unwrap_or(0);
    let ok_status = (200..300).contains(&status);
    let missing_terminator = ok_status
        && call.response.streamed
        && !call.response.terminated
        && !call.response.in_stream_error
        && expects_terminator(&call);
    if missing_terminator {
        incomplete.push(Incomplete::NoTerminator);
    }
    if call.response.invalid_chunks > 0 || call.request.invalid_json {
        incomplete.push(Incomplete::InvalidJson);
    }
    incomplete.sort_unstable();
    incomplete.dedup();
    call.incomplete = incomplete;

    call.error = if status >= 400 {
        Some(CallError { kind: ErrorKind::Http(status), message: call.response.error_message.clone() })
    } else if call.response.in_stream_error {
        Some(CallError { kind: ErrorKind::InStream, message: call.response.error_message.clone() })
    } else if end.outcome != Outcome::Complete && !capture_lost && end.response_gap_bytes == 0 {
        // (With response bytes missing from the capture, how the response ended is unknown:
        // a close after the gap is no evidence of a cancel or a hang-up.)
        let client_gone =
            end.client_closed || matches!(end.close, Some(CloseReason::Reset { by: Direction::ToServer }));
        if client_gone {
            Some(CallError { kind: ErrorKind::Cancelled, message: None })
        } else if end.outcome == Outcome::Truncated
            || matches!(end.close, Some(CloseReason::Reset { by: Direction::ToClient }))
        {
            Some(CallError { kind: ErrorKind::ServerClosed, message: None })
        } else {
            None
        }
    } else if missing_terminator && end.response_gap_bytes == 0 && !capture_lost {
        // The server ended a 200 stream without its terminator: the mid-stream error of the
        // compatibility layers, whose text Ollama drops (ollama-wire §4.3). (Not when the
        // capture ended first: the stream may well have gone on.)
        Some(CallError { kind: ErrorKind::NoTerminator, message: None })
    } else {
        None
    };
    if call.error.is_some() && call.response.streamed && !call.response.terminated {
        // A stream that did not finish: its finish reason is "error" (semconv).
        call.response.finish_reasons = vec!["error".to_string()];
    }
    call
}
