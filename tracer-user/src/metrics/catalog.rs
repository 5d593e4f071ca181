//! What is measured: every metric's name, unit, description, kind and bucket bounds, and the
//! attributes of a series. Names are the semantic conventions' where they exist, in the version
//! chosen ([`SemconvMode`]: v1.41 by default, or the latest GenAI conventions).

use tracer_core::span::semconv::{self as sc, SemconvMode};

/// GenAI client and server duration buckets (seconds), per the conventions.
pub const DURATION_BUCKETS: [f64; 14] =
    [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];
/// `gen_ai.client.token.usage` buckets.
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];
/// `gen_ai.server.time_to_first_token` buckets.
pub const TTFT_BUCKETS: [f64; 16] =
    [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// `gen_ai.server.time_per_output_token` buckets.
pub const TPOT_BUCKETS: [f64; 13] = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5];
/// `http.server.request.duration` buckets (HTTP semantic conventions).
pub const HTTP_BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// Most series one metric keeps; further attribute sets go to one overflow series
/// (`otel.metric.overflow=true`), as the OpenTelemetry SDKs do: model names come from the wire.
pub const MAX_SERIES: usize = 2000;
pub const OVERFLOW_ATTR: &str = "otel.metric.overflow";

/// An attribute value of a metric series (ordered, hashable).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attr {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// A series' attributes, in a fixed order.
pub type Attrs = Vec<(&'static str, Attr)>;

/// The instrument kinds used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Histogram,
    /// Monotonic, cumulative.
    Counter,
    Gauge,
}

/// A metric's identity.
#[derive(Clone, Copy, Debug)]
pub struct Desc {
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
    pub kind: Kind,
    /// Histogram bucket upper bounds.
    pub bounds: &'static [f64],
    /// What a stored integer is worth in `unit`: 1, or 1e-9 for seconds summed as nanoseconds
    /// (sums of Ollama's durations stay exact).
    pub scale: f64,
}

impl Desc {
    /// A stored integer in the metric's unit.
    pub fn value(&self, v: u64) -> f64 {
        // Nanoseconds divided rather than multiplied by 1e-9: 108 ms is 0.108, not 0.10800000000000001.
        if self.scale == 1e-9 { v as f64 / 1e9 } else { v as f64 * self.scale }
    }
}

const fn histogram(name: &'static str, unit: &'static str, description: &'static str, bounds: &'static [f64]) -> Desc {
    Desc { name, unit, description, kind: Kind::Histogram, bounds, scale: 1.0 }
}
const fn counter(name: &'static str, unit: &'static str, description: &'static str) -> Desc {
    Desc { name, unit, description, kind: Kind::Counter, bounds: &[], scale: 1.0 }
}
/// A counter of seconds, kept in nanoseconds.
const fn seconds(name: &'static str, description: &'static str) -> Desc {
    Desc { name, unit: "s", description, kind: Kind::Counter, bounds: &[], scale: 1e-9 }
}
const fn gauge(name: &'static str, unit: &'static str, description: &'static str) -> Desc {
    Desc { name, unit, description, kind: Kind::Gauge, bounds: &[], scale: 1.0 }
}

/// What a call metric measures, whatever the conventions' version names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A GenAI operation's duration on the wire (v1.41: every operation).
    Duration,
    /// Latest: inference (chat, text completion) and embeddings durations apart.
    InferenceDuration,
    EmbeddingsDuration,
    /// v1.41: input and output tokens in one histogram, by `gen_ai.token.type`.
    TokenUsage,
    /// Latest: input and output token histograms (inference), input (embeddings).
    InputTokens,
    OutputTokens,
    EmbeddingsInputTokens,
    /// Latest: token counters by `gen_ai.token.modality`.
    DetailedInput,
    DetailedOutput,
    DetailedCacheRead,
    /// v1.41: prompt-cache hits, a counter of our own (v1.41 has no token type for them).
    CacheRead,
    TimeToFirstChunk,
    TimePerOutputChunk,
    ServerDuration,
    ServerTimeToFirstToken,
    ServerTimePerOutputToken,
    HttpDuration,
    ExecuteTool,
    // The server seen from the wire.
    InFlight,
    InFlightPeak,
    Wait,
    Loads,
    LoadDuration,
    Unloads,
    ModelsLoaded,
    ModelMemory,
    BusyTime,
    ClientTokens,
    ClientBusyTime,
}

const DURATION: &str = "GenAI operation duration (request's first byte to response's last, on the wire).";
const TTFC: &str = "Time to the end of the first output chunk of a streamed response, on the wire.";
const TPOC: &str = "Time between consecutive output chunks of a streamed response, on the wire.";

/// Metrics both versions name alike.
const SHARED: [(Role, Desc); 5] = [
    (
        Role::ServerDuration,
        histogram(
            sc::METRIC_SERVER_REQUEST_DURATION,
            "s",
            "Ollama's own total_duration of the request.",
            &DURATION_BUCKETS,
        ),
    ),
    (
        Role::ServerTimeToFirstToken,
        histogram(
            sc::METRIC_SERVER_TIME_TO_FIRST_TOKEN,
            "s",
            "Ollama's load_duration + prompt_eval_duration (prefill), as it reported them.",
            &TTFT_BUCKETS,
        ),
    ),
    (
        Role::ServerTimePerOutputToken,
        histogram(
            sc::METRIC_SERVER_TIME_PER_OUTPUT_TOKEN,
            "s",
            "Ollama's eval_duration / eval_count (decode time per output token).",
            &TPOT_BUCKETS,
        ),
    ),
    (
        Role::HttpDuration,
        histogram(
            sc::METRIC_HTTP_SERVER_REQUEST_DURATION,
            "s",
            "Duration of every HTTP request to the traced port, on the wire.",
            &HTTP_BUCKETS,
        ),
    ),
    (
        Role::ExecuteTool,
        histogram(
            sc::METRIC_EXECUTE_TOOL_DURATION,
            "s",
            "Duration of an inferred tool execution (between the call that asked for it and the one that brought its result): its span's duration.",
            &DURATION_BUCKETS,
        ),
    ),
];

/// v1.41's call metrics, in output order.
const V1_41: [(Role, Desc); 5] = [
    (Role::Duration, histogram(sc::METRIC_CLIENT_OPERATION_DURATION, "s", DURATION, &DURATION_BUCKETS)),
    (
        Role::TokenUsage,
        histogram(
            sc::METRIC_CLIENT_TOKEN_USAGE,
            "{token}",
            "Tokens used, as the server reported them.",
            &TOKEN_BUCKETS,
        ),
    ),
    (
        Role::CacheRead,
        counter(
            sc::METRIC_OLLAMA_CACHE_READ_TOKENS,
            "{token}",
            "Input tokens served from the prompt cache, as the server reported them (part of the input tokens).",
        ),
    ),
    (Role::TimeToFirstChunk, histogram(sc::METRIC_CLIENT_TIME_TO_FIRST_CHUNK, "s", TTFC, &DURATION_BUCKETS)),
    (Role::TimePerOutputChunk, histogram(sc::METRIC_CLIENT_TIME_PER_OUTPUT_CHUNK, "s", TPOC, &DURATION_BUCKETS)),
];

/// The latest conventions' call metrics, in output order.
const LATEST: [(Role, Desc); 10] = [
    (Role::InferenceDuration, histogram(sc::METRIC_INFERENCE_DURATION, "s", DURATION, &DURATION_BUCKETS)),
    (Role::EmbeddingsDuration, histogram(sc::METRIC_EMBEDDINGS_DURATION, "s", DURATION, &DURATION_BUCKETS)),
    (
        Role::InputTokens,
        histogram(
            sc::METRIC_INFERENCE_USAGE_INPUT,
            "{token}",
            "Input tokens per inference call, as the server reported them (cache hits included).",
            &TOKEN_BUCKETS,
        ),
    ),
    (
        Role::OutputTokens,
        histogram(
            sc::METRIC_INFERENCE_USAGE_OUTPUT,
            "{token}",
            "Output tokens per inference call, as the server reported them.",
            &TOKEN_BUCKETS,
        ),
    ),
    (
        Role::EmbeddingsInputTokens,
        histogram(
            sc::METRIC_EMBEDDINGS_USAGE_INPUT,
            "{token}",
            "Input tokens per embeddings call, as the server reported them.",
            &TOKEN_BUCKETS,
        ),
    ),
    (
        Role::DetailedInput,
        counter(
            sc::METRIC_INFERENCE_DETAILED_INPUT,
            "{token}",
            "Input tokens, by modality (`unknown`: the server does not split them).",
        ),
    ),
    (
        Role::DetailedOutput,
        counter(
            sc::METRIC_INFERENCE_DETAILED_OUTPUT,
            "{token}",
            "Output tokens, by modality (`unknown`: the server does not split them).",
        ),
    ),
    (
        Role::DetailedCacheRead,
        counter(
            sc::METRIC_INFERENCE_DETAILED_CACHE_READ,
            "{token}",
            "Input tokens served from the prompt cache, by modality.",
        ),
    ),
    (Role::TimeToFirstChunk, histogram(sc::METRIC_INFERENCE_TIME_TO_FIRST_CHUNK, "s", TTFC, &DURATION_BUCKETS)),
    (Role::TimePerOutputChunk, histogram(sc::METRIC_INFERENCE_TIME_PER_OUTPUT_CHUNK, "s", TPOC, &DURATION_BUCKETS)),
];

/// What Ollama never exported about itself, from the wire (the same in both versions).
const SERVER: [(Role, Desc); 11] = [
    (
        Role::InFlight,
        gauge(
            sc::METRIC_REQUESTS_IN_FLIGHT,
            "{request}",
            "GenAI requests read in full whose response has not ended: running or queued in Ollama.",
        ),
    ),
    (
        Role::InFlightPeak,
        gauge(
            sc::METRIC_REQUESTS_IN_FLIGHT_PEAK,
            "{request}",
            "The most requests in flight at once since the previous scrape or push (exact, from every start and end).",
        ),
    ),
    (
        Role::Wait,
        histogram(
            sc::METRIC_REQUEST_WAIT,
            "s",
            "From the request's last byte to the start of its prompt evaluation: queueing, scheduling and model loading (the wire time to Ollama's final chunk less its prompt_eval_duration and eval_duration).",
            &TTFT_BUCKETS,
        ),
    ),
    (
        Role::Loads,
        counter(
            sc::METRIC_MODEL_LOADS,
            "{load}",
            "Model loads: a call whose load_duration reached the cold-start threshold (cold), or an explicit load request (request).",
        ),
    ),
    (
        Role::LoadDuration,
        histogram(sc::METRIC_MODEL_LOAD_DURATION, "s", "Ollama's load_duration of each model load.", &DURATION_BUCKETS),
    ),
    (Role::Unloads, counter(sc::METRIC_MODEL_UNLOADS, "{unload}", "Explicit unload requests (keep_alive 0).")),
    (
        Role::ModelsLoaded,
        gauge(
            sc::METRIC_MODELS_LOADED,
            "{model}",
            "Models loaded, as the last /api/ps answer observed listed them (1 per model; never guessed).",
        ),
    ),
    (
        Role::ModelMemory,
        gauge(
            sc::METRIC_MODEL_MEMORY,
            "By",
            "Memory a loaded model takes (total and in VRAM), from the last /api/ps answer observed.",
        ),
    ),
    (
        Role::BusyTime,
        seconds(
            sc::METRIC_MODEL_BUSY_TIME,
            "Ollama's own durations summed, by model and phase (load, prompt_eval, eval): the time each model keeps the GPU busy.",
        ),
    ),
    (
        Role::ClientTokens,
        counter(
            sc::METRIC_CLIENT_TOKENS,
            "{token}",
            "Tokens by calling workload, model and token type (input, output, cache_read).",
        ),
    ),
    (
        Role::ClientBusyTime,
        seconds(
            sc::METRIC_CLIENT_BUSY_TIME,
            "Ollama's durations (load + prompt_eval + eval) summed by calling workload and model: what each client costs.",
        ),
    ),
];

/// The call metrics of a conventions' version, in output order.
pub fn call_metrics(mode: SemconvMode) -> Vec<(Role, Desc)> {
    let own: &[(Role, Desc)] = match mode {
        SemconvMode::V1_41 => &V1_41,
        SemconvMode::Latest => &LATEST,
    };
    own.iter().chain(SHARED.iter()).chain(SERVER.iter()).copied().collect()
}

/// Most series per metric of the calling workloads (then the overflow series).
pub const MAX_CLIENT_SERIES: usize = 500;

/// The health metrics, in output order.
pub const HEALTH: [Desc; 17] = [
    counter(sc::METRIC_TRACER_PACKETS, "{packet}", "TCP segments captured on the traced ports."),
    counter(sc::METRIC_TRACER_BYTES, "By", "TCP payload bytes captured on the traced ports."),
    counter(
        sc::METRIC_TRACER_KERNEL_DROPS,
        "{packet}",
        "Packets the capture lost (eBPF ring buffer full, or libpcap drops).",
    ),
    counter(sc::METRIC_TRACER_MALFORMED, "{frame}", "Frames whose headers could not be decoded."),
    counter(sc::METRIC_TRACER_CONNECTIONS, "{connection}", "TCP connections followed."),
    counter(sc::METRIC_TRACER_GAPS, "{gap}", "Holes in the captured byte streams."),
    counter(sc::METRIC_TRACER_GAP_BYTES, "By", "Bytes missing from the captured byte streams."),
    counter(sc::METRIC_TRACER_PARSE_ERRORS, "{error}", "HTTP messages that could not be parsed."),
    counter(sc::METRIC_TRACER_CALLS, "{call}", "Calls (HTTP exchanges) observed."),
    counter(sc::METRIC_TRACER_INCOMPLETE, "{call}", "Calls of which part was not observed."),
    counter(sc::METRIC_TRACER_SPANS, "{span}", "Spans produced."),
    gauge(
        sc::METRIC_TRACER_QUEUE_SPANS,
        "{span}",
        "Spans in the OTLP export queue now (the batch being sent included).",
    ),
    gauge(sc::METRIC_TRACER_QUEUE_BYTES, "By", "Approximate bytes in the OTLP export queue now."),
    counter(sc::METRIC_TRACER_EXPORTED, "{span}", "Spans the OTLP endpoint acknowledged."),
    counter(
        sc::METRIC_TRACER_EXPORT_DROPPED,
        "{span}",
        "Spans not exported, by reason: queue_full, rejected, shutdown.",
    ),
    counter(sc::METRIC_TRACER_EXPORT_FAILURES, "{request}", "Failed OTLP export requests, by signal."),
    counter(
        sc::METRIC_TRACER_LIMIT_OVERFLOWS,
        "{event}",
        "Resource limits reached, by limit: connections evicted, reorder buffers flushed, HTTP heads dropped (memory, stalled), pipelined requests dropped, calls reported early.",
    ),
];
