//! From HTTP exchanges to Ollama calls: the route decides the operation, the request body gives
//! model and parameters, the response body (as it streams) gives tokens, timings, finish reasons,
//! tool calls and errors; the end of the exchange decides what is missing and what went wrong.

pub mod anthropic;
pub mod call;
pub mod content;
pub mod error_body;
pub mod framing;
pub mod gauge;
pub mod messages;
pub mod native;
pub mod openai;
pub mod provider;
pub mod request;
pub mod response;
pub mod responses;
pub mod route;
pub mod stream;
mod token_chunk;

#[cfg(test)]
mod tests;

// Keys are our own sequential ids, never attacker-chosen: the cheapest hash will do.
use rustc_hash::FxHashMap;

pub use self::call::{CallError, CallTimes, ErrorKind, Incomplete, LlmCall, RequestInfo, ResponseInfo};
use self::gauge::{InFlightGauges, InFlightKey, InFlightReading};
pub use self::provider::{Provider, Providers};
use self::request::RequestDecoder;
use self::response::ResponseDecoder;
pub use self::route::{Api, Operation, Route};
use crate::http::{ExchangeEnd, ExchangeId, HttpEvent, Outcome};
use crate::reassembly::CloseReason;
use crate::segment::{Direction, FlowKey, Timestamp};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LlmStats {
    pub calls: u64,
    pub incomplete: u64,
    pub errors: u64,
    /// Calls reported early because too many were in flight.
    pub evicted: u64,
}

#[derive(Debug)]
struct CallState {
    call: LlmCall,
    /// Until the request body ends; then its facts are in `call.request`.
    request: Option<Box<RequestDecoder>>,
    response: Option<Box<ResponseDecoder>>,
    /// Body bytes as sent (before decoding) so far, for `http.*.body.size` of a call reported
    /// before its exchange ended (the end says the final sizes).
    request_wire_bytes: u64,
    response_wire_bytes: u64,
    /// A body could not be decoded (unknown or corrupt content coding).
    undecodable: bool,
    /// The request was not captured: its route is told from the response's first bytes.
    unseen: bool,
    /// The in-flight series the call is counted in, from its request's end to its end.
    in_flight: Option<Option<InFlightKey>>,
    sniff: Option<Sniff>,
}

/// A response whose request was not captured, until its first bytes tell its route.
#[derive(Debug)]
struct Sniff {
    status: u16,
    content_type: Option<String>,
    content_encoding: Option<String>,
    /// Decoded body bytes so far (at most [`route::SNIFF_BYTES`]), and when the last arrived.
    buf: Vec<u8>,
    last_ts: Timestamp,
}

/// Where decoded response body bytes go: the decoder, or the sniffing buffer until the route is
/// known (then the buffered bytes go to the decoder first).
fn deliver(
    response: &mut Option<Box<ResponseDecoder>>,
    sniff: &mut Option<Sniff>,
    provider: Provider,
    route: &mut Route,
    capture: bool,
    data: &[u8],
    ts: Timestamp,
) {
    let Some(sn) = sniff.as_mut() else {
        if let Some(d) = response.as_mut() {
            d.feed(data, ts);
        }
        return;
    };
    let take = data.len().min(route::SNIFF_BYTES - sn.buf.len());
    sn.buf.extend_from_slice(&data[..take]);
    sn.last_ts = ts;
    let full = sn.buf.len() >= route::SNIFF_BYTES;
    if let Some(r) = Route::sniff(sn.content_type.as_deref(), &sn.buf).or(full.then_some(Route::Unknown)) {
        decide(response, sniff, route, provider.own(r), capture, ts);
        if let Some(d) = response.as_mut() {
            d.feed(&data[take..], ts);
        }
    }
}

/// Ends sniffing with route `r`: builds the decoder and feeds it what was buffered.
fn decide(
    response: &mut Option<Box<ResponseDecoder>>,
    sniff: &mut Option<Sniff>,
    route: &mut Route,
    r: Route,
    capture: bool,
    ts: Timestamp,
) {
    let Some(sn) = sniff.take() else { return };
    *route = r;
    let mut d = ResponseDecoder::with_capture(r, sn.status, sn.content_type.as_deref(), capture);
    d.set_headers(sn.content_type, sn.content_encoding);
    d.feed(&sn.buf, ts);
    *response = Some(Box::new(d));
}

/// The body ended or broke before its route was told: decide with what there is (the bytes
/// buffered are fed as of when the last of them arrived).
fn decide_now(st: &mut CallState, capture: bool) {
    if let Some(sn) = st.sniff.as_ref() {
        let r = st.call.provider.own(Route::sniff(sn.content_type.as_deref(), &sn.buf).unwrap_or(Route::Unknown));
        let ts = sn.last_ts;
        decide(&mut st.response, &mut st.sniff, &mut st.call.route, r, capture, ts);
    }
}

/// A call still in progress, as `top` shows it: taken on demand, never per packet.
#[derive(Clone, Debug, PartialEq)]
pub struct InFlightCall {
    pub exchange: ExchangeId,
    pub flow: FlowKey,
    pub route: Route,
    /// The request's model, else the response's (once its first chunk named it).
    pub model: Option<String>,
    pub started: Timestamp,
    /// The response head arrived.
    pub responding: bool,
    /// Body documents (chunks) so far, and those carrying output (about one token each in
    /// Ollama's streams).
    pub chunks: u64,
    pub output_chunks: u64,
}

/// What the call-assembly stage keeps beyond the facts.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    /// Keep message content (off by default; see [`content`]).
    pub capture_content: bool,
    /// Calls followed at once; beyond it the oldest is reported as it stands (flagged
    /// `capture_ended`). Each call's state is bounded, so this bounds them all.
    pub max_calls_in_flight: usize,
    /// Which server answers on which port (Ollama unless listed).
    pub providers: Providers,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig { capture_content: false, max_calls_in_flight: 16_384, providers: Providers::default() }
    }
}

/// The call-assembly stage.
#[derive(Debug, Default)]
pub struct CallAssembler {
    config: LlmConfig,
    /// Boxed: a map of inline states would hold their full size for every free slot too.
    calls: FxHashMap<ExchangeId, Box<CallState>>,
    stats: LlmStats,
    gauges: InFlightGauges,
}

impl CallAssembler {
    pub fn new(config: LlmConfig) -> Self {
        CallAssembler { config, ..Self::default() }
    }

    pub fn stats(&self) -> &LlmStats {
        &self.stats
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// The in-flight gauges' readings (GenAI calls whose request was read, per model,
    /// operation and API); their peaks start again.
    pub fn read_in_flight(&mut self) -> Vec<InFlightReading> {
        self.gauges.read()
    }

    /// A call leaves: out of its in-flight series.
    fn leave(&mut self, st: &mut CallState) {
        if let Some(slot) = st.in_flight.take() {
            self.gauges.end(&slot);
        }
    }

    /// The calls in flight, appended to `out` (cleared first), oldest first, at most `max` of
    /// them; returns how many are in flight in all.
    pub fn in_flight_calls(&self, out: &mut Vec<InFlightCall>, max: usize) -> usize {
        out.clear();
        // The oldest `max` picked first: only they cost a copy of their model name.
        let mut states: Vec<&CallState> = self.calls.values().map(|b| &**b).collect();
        let key = |st: &&CallState| (st.call.times.request_start, st.call.exchange);
        if states.len() > max && max > 0 {
            states.select_nth_unstable_by_key(max - 1, key);
        }
        states.truncate(max);
        states.sort_unstable_by_key(key);
        for st in states {
            let (chunks, output_chunks, response_model) = st.response.as_ref().map_or((0, 0, None), |d| d.progress());
            out.push(InFlightCall {
                exchange: st.call.exchange,
                flow: st.call.flow,
                route: st.call.route,
                model: st.call.request.model.as_deref().or(response_model).map(str::to_string),
                started: st.call.times.request_start,
                responding: st.call.status.is_some(),
                chunks,
                output_chunks,
            });
        }
        self.calls.len()
    }

    /// Reports the oldest call in flight as it stands, to make room.
    fn evict_oldest<F: FnMut(LlmCall)>(&mut self, ts: Timestamp, out: &mut F) {
        let Some(&id) = self.calls.keys().min() else { return };
        let Some(mut st) = self.calls.remove(&id) else { return };
        self.leave(&mut st);
        decide_now(&mut st, self.config.capture_content);
        let end = ExchangeEnd {
            outcome: if st.call.status.is_some() { Outcome::Truncated } else { Outcome::NoResponse },
            request_complete: st.call.times.request_end.is_some(),
            request_gap_bytes: 0,
            response_gap_bytes: 0,
            response_gap_chunks: None,
            response_maybe_lost: false,
            close: Some(CloseReason::Evicted),
            client_closed: false,
            last_byte: st.call.times.end.max(st.call.times.response_start.unwrap_or(st.call.times.request_start)),
            end_lost: false,
            request_body_bytes: st.request_wire_bytes,
            response_body_bytes: st.response_wire_bytes,
            request_body_partial: false,
            response_body_partial: false,
        };
        self.stats.evicted += 1;
        let call = finish(st, ts, end);
        self.count(&call);
        out(call);
    }

    fn count(&mut self, call: &LlmCall) {
        self.stats.calls += 1;
        if call.is_incomplete() {
            self.stats.incomplete += 1;
        }
        if call.error.is_some() {
            self.stats.errors += 1;
        }
    }

    /// The flow of call `id`, when its body in direction `dir` is only counted (its bytes
    /// need not be captured).
    pub fn body_only_counted(&self, id: ExchangeId, dir: Direction) -> Option<FlowKey> {
        let st = self.calls.get(&id)?;
        let counted = match dir {
            Direction::ToServer => st.request.as_ref().is_some_and(|r| r.only_counts()),
            Direction::ToClient => st.sniff.is_none() && st.response.as_ref().is_some_and(|r| r.only_counts()),
        };
        counted.then_some(st.call.flow)
    }

    pub fn push<F: FnMut(LlmCall)>(&mut self, ev: HttpEvent<'_>, out: &mut F) {
        match ev {
            HttpEvent::Request { conn, id, flow, ts, head, meta } => {
                if self.calls.len() >= self.config.max_calls_in_flight {
                    self.evict_oldest(ts, out);
                }
                let head = *head;
                let unseen = head.unseen;
                let provider = self.config.providers.of(flow.server.port());
                let route = provider.classify(&head.method, &head.path);
                let call = LlmCall {
                    provider,
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
                    conversation_header: head.conversation_id,
                    headers: head.kept_headers,
                    status: None,
                    request: RequestInfo::default(),
                    response: ResponseInfo::default(),
                    times: CallTimes { request_start: ts, end: ts, ..Default::default() },
                    incomplete: Vec::new(),
                    error: None,
                    connection: Default::default(),
                    identity: None,
                };
                let capture = request::RequestCapture {
                    content: self.config.capture_content,
                    raw_limit: response::RAW_JSON_LIMIT,
                };
                let request = Box::new(RequestDecoder::with_capture(route, capture));
                self.calls.insert(
                    id,
                    Box::new(CallState {
                        call,
                        request: Some(request),
                        response: None,
                        request_wire_bytes: 0,
                        response_wire_bytes: 0,
                        undecodable: false,
                        unseen,
                        sniff: None,
                        in_flight: None,
                    }),
                );
            }
            HttpEvent::RequestBody { id, data, wire, .. } => {
                if let Some(st) = self.calls.get_mut(&id)
                    && let Some(request) = st.request.as_mut()
                {
                    st.request_wire_bytes = wire;
                    request.feed(data);
                }
            }
            HttpEvent::RequestEnd { id, ts } => {
                if let Some(st) = self.calls.get_mut(&id)
                    && let Some(request) = st.request.take()
                {
                    st.call.times.request_end = Some(ts);
                    // Done with the request: keep its facts, free the decoders.
                    st.call.request = request.finish();
                    if let Some(operation) = st.call.operation() {
                        let key = InFlightKey {
                            provider: st.call.provider,
                            model: st.call.request.model.clone().unwrap_or_default(),
                            operation,
                            api: st.call.route.api(),
                        };
                        st.in_flight = Some(self.gauges.start(key));
                    }
                }
            }
            HttpEvent::Interim { .. } => {}
            HttpEvent::Response { id, ts, head, .. } => {
                if let Some(st) = self.calls.get_mut(&id) {
                    st.call.status = Some(head.status);
                    st.call.times.response_start = Some(ts);
                    if st.unseen {
                        st.sniff = Some(Sniff {
                            status: head.status,
                            content_type: head.content_type,
                            content_encoding: head.content_encoding,
                            buf: Vec::new(),
                            last_ts: ts,
                        });
                        return;
                    }
                    let mut decoder = ResponseDecoder::with_capture(
                        st.call.route,
                        head.status,
                        head.content_type.as_deref(),
                        self.config.capture_content,
                    );
                    decoder.set_headers(head.content_type, head.content_encoding);
                    st.response = Some(Box::new(decoder));
                }
            }
            HttpEvent::ResponseBody { id, ts, data, wire } => {
                let capture = self.config.capture_content;
                if let Some(st) = self.calls.get_mut(&id)
                    && (st.response.is_some() || st.sniff.is_some())
                {
                    st.response_wire_bytes = wire;
                    deliver(&mut st.response, &mut st.sniff, st.call.provider, &mut st.call.route, capture, data, ts);
                }
            }
            HttpEvent::BodyGap { id, dir, .. } => {
                if let Some(st) = self.calls.get_mut(&id) {
                    match dir {
                        Direction::ToServer => {
                            if let Some(r) = st.request.as_mut() {
                                r.gap();
                            }
                        }
                        Direction::ToClient => {
                            decide_now(st, self.config.capture_content);
                            if let Some(d) = st.response.as_mut() {
                                d.gap();
                            }
                        }
                    }
                }
            }
            HttpEvent::BodyRejoined { id, dir: Direction::ToClient, ts } => {
                if let Some(st) = self.calls.get_mut(&id) {
                    decide_now(st, self.config.capture_content);
                    if let Some(d) = st.response.as_mut() {
                        d.rejoin(ts);
                    }
                }
            }
            // The request's one document cannot be read on from the middle.
            HttpEvent::BodyRejoined { dir: Direction::ToServer, .. } => {}
            HttpEvent::Undecodable { id, dir } => {
                if let Some(st) = self.calls.get_mut(&id) {
                    st.undecodable = true;
                    match dir {
                        Direction::ToServer => {
                            if let Some(r) = st.request.as_mut() {
                                r.gap();
                            }
                        }
                        Direction::ToClient => {
                            decide_now(st, self.config.capture_content);
                            if let Some(d) = st.response.as_mut() {
                                d.gap();
                            }
                        }
                    }
                }
            }
            HttpEvent::End { id, ts, end } => {
                if let Some(mut st) = self.calls.remove(&id) {
                    self.leave(&mut st);
                    decide_now(&mut st, self.config.capture_content);
                    let call = finish(st, ts, end);
                    self.count(&call);
                    out(call);
                }
            }
        }
    }
}

/// A whole, successful chat or completion response that produced nothing at all. Not for
/// embeddings, load/unload requests, or calls we did not see whole.
fn is_empty_response(call: &LlmCall, end: &ExchangeEnd) -> bool {
    let r = &call.response;
    matches!(call.operation(), Some(Operation::Chat | Operation::TextCompletion))
        && call.status == Some(200)
        && end.outcome == Outcome::Complete
        && end.response_gap_bytes == 0
        && r.terminated
        && r.invalid_chunks == 0
        && call.model_action().is_none()
        && r.text_bytes == 0
        && r.reasoning_bytes == 0
        && r.tool_calls.is_empty()
}

/// Whether the route's successful stream has a terminator we must see.
fn expects_terminator(call: &LlmCall) -> bool {
    call.route.operation().is_some() || matches!(call.route, Route::Pull | Route::Push | Route::Create)
}

fn finish(st: Box<CallState>, ts: Timestamp, mut end: ExchangeEnd) -> LlmCall {
    let CallState { mut call, request, response, undecodable, unseen, .. } = *st;
    if let Some(request) = request {
        call.request = request.finish();
    }
    call.request.body_bytes = end.request_body_bytes;
    call.request.lost_bytes = end.request_gap_bytes;
    call.request.body_partial = end.request_body_partial;
    let capture_lost = end.capture_lost();
    // Response bytes lost in a gap: its own, or possibly its own (an unanswered exchange
    // waited while bytes went by that could not be placed).
    let response_lost = end.response_gap_bytes > 0 || (end.response_maybe_lost && end.outcome != Outcome::Complete);
    // A call cut by the end of the capture ends where we last saw it, not when we gave up; so
    // does one whose response's end the capture lost (a close after it is no end of it).
    call.times.end = match end.outcome {
        Outcome::Complete => ts,
        _ if capture_lost || response_lost => end.last_byte.max(call.times.request_start),
        _ => ts,
    };
    call.times.end_lost = end.end_lost || (response_lost && end.outcome != Outcome::Complete);
    if let Some(decoder) = response {
        call.response = decoder.finish(call.times.end, &mut call.times);
        call.response.body_bytes = end.response_body_bytes;
        call.response.body_partial = end.response_body_partial;
    }
    call.response.lost_bytes = end.response_gap_bytes;
    call.response.lost_chunks = end.response_gap_chunks.filter(|_| end.response_gap_bytes > 0);
    // Read from a TLS library, a response is what the client read: SDKs close a stream once its
    // own terminator arrived ([DONE], `"done":true`, …), leaving the HTTP framing's last bytes
    // unread in the library. Such a call is complete, and ends with its last byte read.
    if call.meta.tls.is_some()
        && end.outcome == Outcome::Truncated
        && end.response_gap_bytes == 0
        && call.response.streamed
        && call.response.terminated
    {
        end.outcome = Outcome::Complete;
        end.close = None;
        end.client_closed = false;
        call.times.end = end.last_byte;
    }
    let mut incomplete = Vec::new();
    if unseen {
        incomplete.push(Incomplete::RequestUnseen);
    }
    if end.request_gap_bytes > 0 {
        incomplete.push(Incomplete::RequestGap);
    }
    if response_lost {
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
    if undecodable {
        incomplete.push(Incomplete::UndecodableBody);
    }
    incomplete.sort_unstable();
    incomplete.dedup();
    call.incomplete = incomplete;

    call.error = if status >= 400 {
        Some(CallError { kind: ErrorKind::Http(status), message: call.response.error_message.clone() })
    } else if call.response.in_stream_error {
        Some(CallError { kind: ErrorKind::InStream, message: call.response.error_message.clone() })
    } else if end.outcome != Outcome::Complete && !capture_lost && !response_lost {
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
    } else if missing_terminator && !response_lost && !capture_lost {
        // The server ended a 200 stream without its terminator: the mid-stream error of the
        // compatibility layers, whose text Ollama drops (ollama-wire §4.3). (Not when the
        // capture ended first: the stream may well have gone on.)
        Some(CallError { kind: ErrorKind::NoTerminator, message: None })
    } else if !unseen && is_empty_response(&call, &end) {
        Some(CallError { kind: ErrorKind::EmptyResponse, message: None })
    } else {
        None
    };
    if call.error.is_some() && call.response.streamed && !call.response.terminated {
        // A stream that did not finish: its finish reason is "error" (semconv).
        call.response.finish_reasons = vec!["error".to_string()];
    }
    call
}
