//! What `top` knows: completed calls folded into rates, per-model statistics and a ring of
//! recent calls; the latest snapshot of the calls in flight; the capture's drop counter.
//! Bounded whatever the traffic: a fixed ring, a cap on models and clients (what does not fit
//! is counted), quantile sketches of bounded size.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::report::Report;
use tracer_core::llm::call::{GenParams, OllamaMetrics};
use tracer_core::llm::content::ContentConfig;
use tracer_core::llm::{LlmCall, Route};
use tracer_core::pipeline::InFlightSnapshot;
use tracer_core::segment::{Timestamp, display_ip};

use super::quantiles::Quantiles;

/// Recent calls kept.
pub const RECENT: usize = 512;
/// Models with their own statistics; calls of further models are only counted.
pub const MAX_MODELS: usize = 64;
/// Clients remembered (names for the in-flight list, values for the client filter).
pub const MAX_CLIENTS: usize = 256;
/// Rates are averages over this many whole seconds before the current one.
pub const RATE_WINDOW_S: u64 = 5;
/// Per-second counters kept (more than the window: calls may be reported a little late).
const SECONDS_KEPT: usize = 8;
/// Output text kept per call for the detail view (content capture only).
pub const CONTENT_SHOWN: usize = 2048;

/// What `top` needs besides the calls.
#[derive(Clone, Debug)]
pub struct TopConfig {
    /// Where the calls come from, for the header (`live (ebpf)`, `replay x1`).
    pub source: String,
    /// A model load at least this long is a cold start (as `ollama.cold_start` on spans).
    pub cold_start_ns: u64,
    /// Content capture was asked for: output text is shown, cleaned as spans clean it.
    pub content: Option<ContentConfig>,
}

/// Who made a call: the process (or pod) when attribution told, and the address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub addr: SocketAddr,
    pub name: Option<String>,
}

impl Client {
    /// What the filter matches and the in-flight list shows when no name is known: the name,
    /// else the IP address.
    pub fn key(&self) -> String {
        self.name.clone().unwrap_or_else(|| display_ip(self.addr.ip()))
    }
}

/// One completed call as `top` keeps it: what the tables and the detail view show, nothing
/// more (no headers, no input content).
#[derive(Clone, Debug, PartialEq)]
pub struct CallRow {
    /// Order of arrival.
    pub seq: u64,
    pub model: Option<String>,
    pub route: String,
    pub method: String,
    pub status: Option<u16>,
    pub client: Client,
    pub start: Timestamp,
    pub end: Timestamp,
    /// Request's first byte to the first output chunk (wire).
    pub ttft_s: Option<f64>,
    /// None when the capture ended before the call did.
    pub duration_s: Option<f64>,
    pub input_tokens: Option<u64>,
    /// Of the input, what the prompt cache served (when the server reported it).
    pub cached_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub output_chunks: u64,
    pub ollama: OllamaMetrics,
    pub cold: bool,
    pub streamed: bool,
    pub finish_reasons: Vec<String>,
    pub params: GenParams,
    pub stream: Option<bool>,
    pub keep_alive: Option<String>,
    pub think: Option<String>,
    pub output_type: Option<String>,
    pub messages: Option<u32>,
    pub tools: Vec<String>,
    pub tool_calls: Vec<String>,
    /// `error.type` and the server's message.
    pub error: Option<(String, Option<String>)>,
    pub incomplete: Vec<&'static str>,
    /// The output text (content capture only; redacted, bounded).
    pub output_text: Option<String>,
}

fn secs(ns: i64) -> f64 {
    ns.max(0) as f64 / 1e9
}

/// The first `max` bytes of `s`, cut on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl CallRow {
    pub fn from_call(call: &LlmCall, seq: u64, config: &TopConfig) -> CallRow {
        let resp = &call.response;
        let name = call.identity.as_ref().and_then(|id| {
            let process = id.client.process.as_ref().and_then(|p| p.executable_name.clone().or(p.command.clone()));
            process.or_else(|| id.client.pod.as_ref().map(|p| format!("{}/{}", p.namespace, p.name)))
        });
        let ended = !call.incomplete.contains(&tracer_core::llm::Incomplete::CaptureEnded);
        let load = resp.ollama.load_duration.unwrap_or(0);
        let output_text = match (&config.content, &resp.content) {
            // Cut before cleaning (the regexes run on a bounded text), cleaned, cut again: a
            // secret across the first cut lies beyond the second.
            (Some(c), Some(out)) if !out.text.is_empty() => {
                Some(cut(&c.clean(cut(&out.text, 2 * CONTENT_SHOWN)), CONTENT_SHOWN).to_string())
            }
            _ => None,
        };
        CallRow {
            seq,
            model: call.model().map(str::to_string),
            route: call.http_route().map_or_else(|| call.path.clone(), str::to_string),
            method: call.method.clone(),
            status: call.status,
            client: Client { addr: call.flow.client, name },
            start: call.times.request_start,
            end: call.times.end,
            ttft_s: call.time_to_first_chunk(),
            duration_s: ended.then(|| secs(call.times.end.since(call.times.request_start))),
            input_tokens: resp.input_tokens,
            cached_tokens: resp.cache_read_input_tokens,
            output_tokens: resp.output_tokens,
            output_chunks: resp.output_chunks,
            ollama: resp.ollama,
            cold: load > 0 && load >= config.cold_start_ns,
            streamed: resp.streamed,
            finish_reasons: resp.finish_reasons.clone(),
            params: call.request.params.clone(),
            stream: call.request.stream,
            keep_alive: call.request.keep_alive.clone(),
            think: call.request.think.clone(),
            output_type: call.request.output_type.clone(),
            messages: call.request.messages,
            tools: call.request.tools.clone(),
            tool_calls: resp.tool_calls.iter().map(|t| t.name.clone()).collect(),
            error: call.error.as_ref().map(|e| (e.kind.error_type(), e.message.clone())),
            incomplete: call.incomplete.iter().map(|i| i.as_str()).collect(),
            output_text,
        }
    }

    /// Output tokens as reported, else the output chunks counted (about one token each).
    pub fn tokens_out(&self) -> u64 {
        self.output_tokens.unwrap_or(self.output_chunks)
    }

    /// Load, prompt evaluation and generation, seconds: Ollama's own measurements, else (the
    /// `/v1` routes do not carry them) the wire's time to first output and the rest.
    pub fn phases(&self) -> Option<[f64; 3]> {
        let o = &self.ollama;
        if o.load_duration.is_some() || o.prompt_eval_duration.is_some() || o.eval_duration.is_some() {
            let s = |v: Option<u64>| v.unwrap_or(0) as f64 / 1e9;
            return Some([s(o.load_duration), s(o.prompt_eval_duration), s(o.eval_duration)]);
        }
        let (ttft, total) = (self.ttft_s?, self.duration_s?);
        Some([0.0, ttft, (total - ttft).max(0.0)])
    }

    pub fn is_error(&self) -> bool {
        self.error.is_some()
    }
}

/// Per-model statistics since start.
#[derive(Clone, Debug, Default)]
pub struct ModelStats {
    pub calls: u64,
    pub errors: u64,
    pub cold_starts: u64,
    /// Explicit load requests (`done_reason: load`).
    pub loads: u64,
    pub ttft: Quantiles,
    /// Generation speed: Ollama's eval counts over its eval durations.
    pub eval_tokens: u64,
    pub eval_ns: u64,
    /// Output tokens of completed calls (the in-flight bar's expected length).
    pub output_tokens: u64,
    pub output_calls: u64,
    /// Input tokens of the calls whose server reports prompt-cache hits, and the hits.
    pub cache_input_tokens: u64,
    pub cached_tokens: u64,
}

impl ModelStats {
    pub fn tokens_per_s(&self) -> Option<f64> {
        (self.eval_ns > 0).then(|| self.eval_tokens as f64 / (self.eval_ns as f64 / 1e9))
    }

    /// The share of input the prompt cache served, over the calls whose server says (an
    /// Ollama older than 0.33 never does: then unknown, not 0).
    pub fn cache_ratio(&self) -> Option<f64> {
        (self.cache_input_tokens > 0).then(|| self.cached_tokens as f64 / self.cache_input_tokens as f64)
    }

    pub fn mean_output_tokens(&self) -> Option<f64> {
        (self.output_calls > 0 && self.output_tokens > 0).then(|| self.output_tokens as f64 / self.output_calls as f64)
    }
}

/// Counts of one second (by the calls' end).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Second {
    second: u64,
    calls: u64,
    errors: u64,
    tokens_in: u64,
    tokens_out: u64,
}

/// Per-second averages over the rate window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub calls: f64,
    pub errors: f64,
    pub tokens_in: f64,
    pub tokens_out: f64,
}

/// Totals since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub calls: u64,
    pub errors: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Calls of models beyond [`MAX_MODELS`] (in the totals, not in the models table).
    pub untracked_model_calls: u64,
    /// Clients not remembered because [`MAX_CLIENTS`] were.
    pub untracked_clients: u64,
}

/// Everything `top` aggregates.
#[derive(Debug)]
pub struct TopState {
    pub config: TopConfig,
    seq: u64,
    /// Latest capture time seen (calls' ends, snapshots).
    now: Timestamp,
    totals: Totals,
    seconds: [Second; SECONDS_KEPT],
    models: HashMap<String, ModelStats>,
    /// Client keys (for the filter), with their calls.
    clients: HashMap<String, u64>,
    /// Names learned per client address (for calls in flight, which have none yet), oldest
    /// first for eviction.
    names: HashMap<SocketAddr, String>,
    names_order: VecDeque<SocketAddr>,
    recent: VecDeque<Arc<CallRow>>,
    in_flight: InFlightSnapshot,
    kernel_drops: u64,
    /// The source has ended (replay over, capture stopped).
    pub finished: bool,
}

impl TopState {
    pub fn new(config: TopConfig) -> TopState {
        TopState {
            config,
            seq: 0,
            now: Timestamp(0),
            totals: Totals::default(),
            seconds: [Second::default(); SECONDS_KEPT],
            models: HashMap::new(),
            clients: HashMap::new(),
            names: HashMap::new(),
            names_order: VecDeque::new(),
            recent: VecDeque::with_capacity(RECENT),
            in_flight: InFlightSnapshot::default(),
            kernel_drops: 0,
            finished: false,
        }
    }

    /// Folds in one completed call.
    pub fn record(&mut self, call: &LlmCall) {
        // Done: no longer in flight, even before the next snapshot says so.
        let before = self.in_flight.calls.len();
        self.in_flight.calls.retain(|c| c.exchange != call.exchange || c.flow != call.flow);
        self.in_flight.total -= (before - self.in_flight.calls.len()).min(self.in_flight.total);
        self.seq += 1;
        let row = CallRow::from_call(call, self.seq, &self.config);
        self.ingest(row, call.model_action() == Some("load"));
    }

    fn ingest(&mut self, row: CallRow, load_request: bool) {
        self.now = self.now.max(row.end);
        let (tokens_in, tokens_out) = (row.input_tokens.unwrap_or(0), row.tokens_out());
        let error = row.is_error() as u64;
        let t = &mut self.totals;
        t.calls += 1;
        t.errors += error;
        t.tokens_in += tokens_in;
        t.tokens_out += tokens_out;
        let second = row.end.0 / 1_000_000_000;
        let slot = &mut self.seconds[second as usize % SECONDS_KEPT];
        if slot.second < second || slot.calls == 0 {
            *slot = Second { second, ..Default::default() };
        }
        // A call older than its slot's second is too late for the rates (still in the totals).
        if slot.second == second {
            slot.calls += 1;
            slot.errors += error;
            slot.tokens_in += tokens_in;
            slot.tokens_out += tokens_out;
        }
        if let Some(model) = &row.model {
            let tracked = self.models.len() < MAX_MODELS || self.models.contains_key(model);
            if tracked {
                let m = self.models.entry(model.clone()).or_default();
                m.calls += 1;
                m.errors += error;
                m.cold_starts += row.cold as u64;
                m.loads += load_request as u64;
                if let Some(t) = row.ttft_s {
                    m.ttft.record(t);
                }
                if let (Some(n), Some(d)) = (row.ollama.eval_count, row.ollama.eval_duration) {
                    m.eval_tokens += n;
                    m.eval_ns += d;
                }
                if tokens_out > 0 {
                    m.output_tokens += tokens_out;
                    m.output_calls += 1;
                }
                // Hits are reported only when there are some: a call whose server reported none
                // counts as 0 once that model has shown it reports them.
                if let Some(input) = row.input_tokens
                    && (row.cached_tokens.is_some() || m.cache_input_tokens > 0)
                {
                    m.cache_input_tokens += input;
                    m.cached_tokens += row.cached_tokens.unwrap_or(0);
                }
            } else {
                self.totals.untracked_model_calls += 1;
            }
        }
        let key = row.client.key();
        if let Some(n) = self.clients.get_mut(&key) {
            *n += 1;
        } else if self.clients.len() < MAX_CLIENTS {
            self.clients.insert(key, 1);
        } else {
            self.totals.untracked_clients += 1;
        }
        if let Some(name) = &row.client.name {
            self.remember_name(row.client.addr, name);
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Arc::new(row));
    }

    fn remember_name(&mut self, addr: SocketAddr, name: &str) {
        if self.names.get(&addr).is_some_and(|n| n == name) {
            return;
        }
        if !self.names.contains_key(&addr) {
            if self.names_order.len() == MAX_CLIENTS
                && let Some(old) = self.names_order.pop_front()
            {
                self.names.remove(&old);
            }
            self.names_order.push_back(addr);
        }
        self.names.insert(addr, name.to_string());
    }

    pub fn set_health(&mut self, report: &Report) {
        self.kernel_drops = report.capture.kernel_drops;
    }

    pub fn set_in_flight(&mut self, snapshot: &InFlightSnapshot) {
        self.now = self.now.max(snapshot.now);
        self.in_flight.clone_from(snapshot);
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    pub fn kernel_drops(&self) -> u64 {
        self.kernel_drops
    }

    /// Averages over the [`RATE_WINDOW_S`] whole seconds before the current one.
    pub fn rates(&self) -> Rates {
        let current = self.now.0 / 1_000_000_000;
        let from = current.saturating_sub(RATE_WINDOW_S);
        let mut r = Rates::default();
        for s in self.seconds.iter().filter(|s| s.calls > 0 && s.second >= from && s.second < current) {
            r.calls += s.calls as f64;
            r.errors += s.errors as f64;
            r.tokens_in += s.tokens_in as f64;
            r.tokens_out += s.tokens_out as f64;
        }
        let w = RATE_WINDOW_S as f64;
        Rates { calls: r.calls / w, errors: r.errors / w, tokens_in: r.tokens_in / w, tokens_out: r.tokens_out / w }
    }

    pub fn models(&self) -> impl Iterator<Item = (&String, &ModelStats)> {
        self.models.iter()
    }

    pub fn model(&self, name: &str) -> Option<&ModelStats> {
        self.models.get(name)
    }

    /// Client keys seen, with their calls.
    pub fn clients(&self) -> impl Iterator<Item = (&String, &u64)> {
        self.clients.iter()
    }

    /// Oldest first.
    pub fn recent(&self) -> impl DoubleEndedIterator<Item = &Arc<CallRow>> + ExactSizeIterator {
        self.recent.iter()
    }

    pub fn in_flight(&self) -> &InFlightSnapshot {
        &self.in_flight
    }

    /// A process (or pod) name learned for this client address from an earlier call.
    pub fn name_of(&self, addr: &SocketAddr) -> Option<&str> {
        self.names.get(addr).map(String::as_str)
    }
}

/// The route template of a call in flight, for display.
pub fn route_name(route: Route) -> &'static str {
    route.template().unwrap_or("?")
}
