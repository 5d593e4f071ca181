//! Every attribute, metric and value name the tracer emits, in one place.
//!
//! GenAI names follow the OpenTelemetry semantic conventions v1.41 (the last release carrying
//! them); HTTP, network, client and server names are the stable ones. Ollama's own measurements
//! live under `ollama.*`, the tracer's observations about its capture under `ollama_tracer.*`.

// GenAI (v1.41)
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
pub const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
pub const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
pub const GEN_AI_REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
pub const GEN_AI_REQUEST_TOP_P: &str = "gen_ai.request.top_p";
pub const GEN_AI_REQUEST_TOP_K: &str = "gen_ai.request.top_k";
pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
pub const GEN_AI_REQUEST_SEED: &str = "gen_ai.request.seed";
pub const GEN_AI_REQUEST_STOP_SEQUENCES: &str = "gen_ai.request.stop_sequences";
pub const GEN_AI_REQUEST_FREQUENCY_PENALTY: &str = "gen_ai.request.frequency_penalty";
pub const GEN_AI_REQUEST_PRESENCE_PENALTY: &str = "gen_ai.request.presence_penalty";
pub const GEN_AI_REQUEST_CHOICE_COUNT: &str = "gen_ai.request.choice.count";
pub const GEN_AI_REQUEST_STREAM: &str = "gen_ai.request.stream";
pub const GEN_AI_REQUEST_ENCODING_FORMATS: &str = "gen_ai.request.encoding_formats";
pub const GEN_AI_OUTPUT_TYPE: &str = "gen_ai.output.type";
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// Input tokens served from the prompt cache (part of `gen_ai.usage.input_tokens`).
pub const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
pub const GEN_AI_EMBEDDINGS_DIMENSION_COUNT: &str = "gen_ai.embeddings.dimension.count";
pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";
pub const GEN_AI_CONVERSATION_ID: &str = "gen_ai.conversation.id";
pub const GEN_AI_TOOL_NAME: &str = "gen_ai.tool.name";
/// `gen_ai.operation.name` of the (inferred) tool spans.
pub const OPERATION_EXECUTE_TOOL: &str = "execute_tool";
pub const GEN_AI_TOOL_TYPE: &str = "gen_ai.tool.type";
pub const GEN_AI_TOOL_CALL_ID: &str = "gen_ai.tool.call.id";
// Content (opt-in): JSON strings in the GenAI parts schema.
pub const GEN_AI_INPUT_MESSAGES: &str = "gen_ai.input.messages";
pub const GEN_AI_OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
pub const GEN_AI_SYSTEM_INSTRUCTIONS: &str = "gen_ai.system_instructions";
pub const GEN_AI_TOOL_DEFINITIONS: &str = "gen_ai.tool.definitions";
pub const GEN_AI_TOOL_CALL_ARGUMENTS: &str = "gen_ai.tool.call.arguments";
pub const GEN_AI_TOOL_CALL_RESULT: &str = "gen_ai.tool.call.result";
// Only in the latest conventions (`--semconv latest`).
/// The reasoning setting exactly as sent (`think`, `reasoning_effort`, `reasoning.effort`).
pub const GEN_AI_REQUEST_REASONING_LEVEL: &str = "gen_ai.request.reasoning.level";
/// Responses API: the response a request continues.
pub const GEN_AI_REQUEST_PREVIOUS_RESPONSE_ID: &str = "gen_ai.request.previous_response.id";
pub const GEN_AI_TOKEN_MODALITY: &str = "gen_ai.token.modality";
/// `gen_ai.token.modality` when the server does not split its counts by modality.
pub const TOKEN_MODALITY_UNKNOWN: &str = "unknown";

/// Which version of the GenAI conventions spans and metrics follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SemconvMode {
    /// v1.41, the last release of the core conventions carrying GenAI: what MLflow, Phoenix,
    /// Langfuse, Jaeger and Datadog read today. The default.
    #[default]
    V1_41,
    /// The current `semantic-conventions-genai` names (`OTEL_SEMCONV_STABILITY_OPT_IN=
    /// gen_ai_latest_experimental`, `--semconv latest`): still in development and moving.
    Latest,
}

impl std::str::FromStr for SemconvMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v1.41" | "1.41" | "1.41.0" | "v1.41.0" => Ok(SemconvMode::V1_41),
            "latest" | "gen_ai_latest_experimental" => Ok(SemconvMode::Latest),
            other => Err(format!("unknown conventions `{other}` (expected v1.41 or latest)")),
        }
    }
}

impl SemconvMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SemconvMode::V1_41 => "v1.41",
            SemconvMode::Latest => "latest",
        }
    }

    /// The schema URL telemetry in this mode is reported under (on the instrumentation scope).
    pub fn schema_url(self) -> &'static str {
        match self {
            SemconvMode::V1_41 => "https://opentelemetry.io/schemas/1.41.0",
            // The GenAI registry's own dev channel (its model/manifest.yaml); it has no tagged
            // release yet.
            SemconvMode::Latest => "https://opentelemetry.io/schemas/gen-ai-dev/1.42.0-dev",
        }
    }
}

// `gen_ai.provider.name` values: `crate::llm::Provider::name` (who answers on the port).

// Errors
pub const ERROR_TYPE: &str = "error.type";

// HTTP, network, client, server (stable)
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
pub const HTTP_ROUTE: &str = "http.route";
pub const URL_PATH: &str = "url.path";
pub const URL_SCHEME: &str = "url.scheme";
pub const USER_AGENT_ORIGINAL: &str = "user_agent.original";
pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";
pub const CLIENT_ADDRESS: &str = "client.address";
pub const CLIENT_PORT: &str = "client.port";
pub const NETWORK_TRANSPORT: &str = "network.transport";
pub const NETWORK_TYPE: &str = "network.type";
pub const NETWORK_PROTOCOL_NAME: &str = "network.protocol.name";
pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
/// Allow-listed request headers: `http.request.header.<lower-case name>` (string array).
pub const HTTP_REQUEST_HEADER_PREFIX: &str = "http.request.header.";

// Ollama's own measurements, exactly as reported (durations in nanoseconds).
pub const OLLAMA_TOTAL_DURATION: &str = "ollama.total_duration";
pub const OLLAMA_LOAD_DURATION: &str = "ollama.load_duration";
pub const OLLAMA_PROMPT_EVAL_COUNT: &str = "ollama.prompt_eval_count";
pub const OLLAMA_PROMPT_EVAL_DURATION: &str = "ollama.prompt_eval_duration";
pub const OLLAMA_EVAL_COUNT: &str = "ollama.eval_count";
pub const OLLAMA_EVAL_DURATION: &str = "ollama.eval_duration";
pub const OLLAMA_DONE_REASON: &str = "ollama.done_reason";
/// The model had to be loaded for this call (`load_duration` over the cold-start threshold).
pub const OLLAMA_COLD_START: &str = "ollama.cold_start";
/// Time waiting for the scheduler (`load_duration` of a warm model), ns.
pub const OLLAMA_WAIT_DURATION: &str = "ollama.wait_duration";
/// Time of the call not covered by Ollama's `total_duration` (transfer, HTTP), ns.
pub const OLLAMA_OUTSIDE_DURATION: &str = "ollama.outside_duration";
/// Phase child spans: `load`, `prompt_eval`, `eval`.
pub const OLLAMA_PHASE: &str = "ollama.phase";
/// Tokens per second of a phase (prompt_eval, eval).
pub const OLLAMA_TOKENS_PER_SECOND: &str = "ollama.tokens_per_second";
/// The prompt tokens served from the prompt cache, as Ollama reported them (≥ 0.33).
pub const OLLAMA_PROMPT_EVAL_CACHED_COUNT: &str = "ollama.prompt_eval_cached_count";
/// The model a span that is not a GenAI operation concerns (phase children, model management):
/// `gen_ai.*` names are for GenAI operation spans only, so backends count one per call.
pub const OLLAMA_MODEL: &str = "ollama.model";
/// A native load/unload request (empty prompt or messages): `load` or `unload`.
pub const OLLAMA_REQUEST_ACTION: &str = "ollama.request.action";
// Request details without a GenAI name
pub const OLLAMA_REQUEST_KEEP_ALIVE: &str = "ollama.request.keep_alive";
pub const OLLAMA_REQUEST_NUM_CTX: &str = "ollama.request.num_ctx";
pub const OLLAMA_REQUEST_REPEAT_PENALTY: &str = "ollama.request.repeat_penalty";
pub const OLLAMA_REQUEST_MIN_P: &str = "ollama.request.min_p";
pub const OLLAMA_REQUEST_THINK: &str = "ollama.request.think";
pub const OLLAMA_REQUEST_MESSAGES: &str = "ollama.request.message_count";
pub const OLLAMA_REQUEST_TOOLS: &str = "ollama.request.tool_names";
pub const OLLAMA_REQUEST_IMAGES: &str = "ollama.request.image_count";
pub const OLLAMA_REQUEST_IMAGE_BYTES: &str = "ollama.request.image_bytes";
pub const OLLAMA_REQUEST_INPUTS: &str = "ollama.request.input_count";
pub const OLLAMA_REQUEST_BODY_SIZE: &str = "http.request.body.size";
pub const OLLAMA_RESPONSE_BODY_SIZE: &str = "http.response.body.size";
// Response details without a GenAI name
pub const OLLAMA_RESPONSE_TOOL_CALLS: &str = "ollama.response.tool_calls";
pub const OLLAMA_RESPONSE_CHUNKS: &str = "ollama.response.chunk_count";
/// Chunks carrying output (text, reasoning, tool calls).
pub const OLLAMA_RESPONSE_OUTPUT_CHUNKS: &str = "ollama.response.output_chunk_count";
/// Mean time between consecutive output chunks, seconds.
pub const OLLAMA_RESPONSE_TIME_PER_OUTPUT_CHUNK: &str = "ollama.response.time_per_output_chunk";
/// Output chunks per second between the first and the last output chunk.
pub const OLLAMA_RESPONSE_CHUNKS_PER_SECOND: &str = "ollama.response.output_chunks_per_second";
/// Output tokens per second as Ollama measured its decode (`eval_count / eval_duration`).
pub const OLLAMA_RESPONSE_TOKENS_PER_SECOND: &str = "ollama.response.output_tokens_per_second";
/// Bytes of generated text and of reasoning ("thinking") received.
pub const OLLAMA_RESPONSE_TEXT_BYTES: &str = "ollama.response.text_bytes";
pub const OLLAMA_RESPONSE_REASONING_BYTES: &str = "ollama.response.reasoning_bytes";
/// Ids of the tool calls in the response.
pub const OLLAMA_RESPONSE_TOOL_CALL_IDS: &str = "ollama.response.tool_call_ids";
pub const OLLAMA_RESPONSE_EMBEDDINGS: &str = "ollama.response.embedding_count";
pub const OLLAMA_RESPONSE_MODELS: &str = "ollama.response.model_count";
pub const OLLAMA_PROGRESS_STATUS: &str = "ollama.progress.status";
/// Copy's destination model; the model a create starts from.
pub const OLLAMA_REQUEST_DESTINATION: &str = "ollama.request.destination";
pub const OLLAMA_REQUEST_FROM: &str = "ollama.request.from";
/// Distinct progress statuses of a pull/push/create, in order.
pub const OLLAMA_PROGRESS_STEPS: &str = "ollama.progress.steps";
/// Digest of the last layer a pull/push/create reported.
pub const OLLAMA_PROGRESS_DIGEST: &str = "ollama.progress.digest";
pub const OLLAMA_PROGRESS_COMPLETED: &str = "ollama.progress.completed";
pub const OLLAMA_PROGRESS_TOTAL: &str = "ollama.progress.total";

// The tracer's observations about its own view of the call
/// True when part of the call was not observed (see the reasons).
pub const TRACER_INCOMPLETE: &str = "ollama_tracer.incomplete";
/// Why: `request_gap`, `response_gap`, `no_response`, `truncated`, `capture_ended`,
/// `no_terminator`, `invalid_json`, `undecodable_body`.
pub const TRACER_INCOMPLETE_REASONS: &str = "ollama_tracer.incomplete_reasons";
/// Bytes of the request / response the capture missed (with `request_gap` / `response_gap`).
pub const TRACER_REQUEST_LOST_BYTES: &str = "ollama_tracer.request.lost_bytes";
pub const TRACER_RESPONSE_LOST_BYTES: &str = "ollama_tracer.response.lost_bytes";
/// HTTP chunks of the response that lost bytes, where the framing tells (every gap inside one
/// chunk's data); absent when a gap took chunk framing and the number is not known.
pub const TRACER_RESPONSE_LOST_CHUNKS: &str = "ollama_tracer.response.lost_chunks";
/// The span was inferred (an `execute_tool` span between two calls), not observed.
pub const TRACER_INFERRED: &str = "ollama_tracer.inferred";
/// The conversation a call belongs to as the tracer infers it from resent message histories
/// (a hash of request content: never `gen_ai.conversation.id` unless asked for).
pub const TRACER_CONVERSATION_ID: &str = "ollama_tracer.conversation.id";
/// Why a span links to another: `previous_turn` (the conversation's previous call) or
/// `tool_call` (the call whose tool call this request answers).
pub const TRACER_LINK_TYPE: &str = "ollama_tracer.link.type";
pub const LINK_PREVIOUS_TURN: &str = "previous_turn";
pub const LINK_TOOL_CALL: &str = "tool_call";
/// The TLS library whose plaintext the call was read from (`openssl`, `boringssl`, `go`);
/// present only on calls captured through the TLS uprobes (`url.scheme` is then `https`).
pub const TRACER_TLS_LIBRARY: &str = "ollama_tracer.tls.library";

// Attribution (docs/attribution.md): who answered and who called. The server's identity uses
// the resource attribute names as span attributes (the span is the server's); the client's the
// same names behind CLIENT_PREFIX. The tracer's own names (systemd unit) are under
// `ollama_tracer.`; the client's drop that part before the prefix.
pub const PROCESS_PID: &str = "process.pid";
pub const PROCESS_EXECUTABLE_NAME: &str = "process.executable.name";
pub const PROCESS_EXECUTABLE_PATH: &str = "process.executable.path";
pub const PROCESS_COMMAND: &str = "process.command";
pub const PROCESS_COMMAND_ARGS: &str = "process.command_args";
/// The socket's cgroup as `/proc/<pid>/cgroup` shows a v2 cgroup: `0::<path>`.
pub const PROCESS_LINUX_CGROUP: &str = "process.linux.cgroup";
pub const CONTAINER_ID: &str = "container.id";
pub const K8S_POD_UID: &str = "k8s.pod.uid";
pub const K8S_POD_NAME: &str = "k8s.pod.name";
pub const K8S_NAMESPACE_NAME: &str = "k8s.namespace.name";
pub const K8S_NODE_NAME: &str = "k8s.node.name";
pub const K8S_CONTAINER_NAME: &str = "k8s.container.name";
pub const K8S_REPLICASET_NAME: &str = "k8s.replicaset.name";
pub const K8S_DEPLOYMENT_NAME: &str = "k8s.deployment.name";
pub const K8S_STATEFULSET_NAME: &str = "k8s.statefulset.name";
pub const K8S_DAEMONSET_NAME: &str = "k8s.daemonset.name";
pub const K8S_JOB_NAME: &str = "k8s.job.name";
pub const K8S_CRONJOB_NAME: &str = "k8s.cronjob.name";
/// The systemd unit of a socket outside containers (`ollama.service`).
pub const TRACER_SYSTEMD_UNIT: &str = "ollama_tracer.systemd.unit";
/// Prefix of the client's identity attributes (`ollama_tracer.client.process.pid`, …).
pub const CLIENT_PREFIX: &str = "ollama_tracer.client.";
pub const SERVICE_NAMESPACE: &str = "service.namespace";
pub const SERVICE_INSTANCE_ID: &str = "service.instance.id";

// Resource
pub const SERVICE_NAME: &str = "service.name";
pub const SERVICE_VERSION: &str = "service.version";
pub const HOST_NAME: &str = "host.name";
pub const TELEMETRY_DISTRO_NAME: &str = "telemetry.distro.name";
pub const TELEMETRY_DISTRO_VERSION: &str = "telemetry.distro.version";
pub const DEFAULT_SERVICE_NAME: &str = "ollama";
pub const DISTRO_NAME: &str = "ollama-tracer";

// OpenInference mirrors (only with `--compat openinference`): what Arize Phoenix reads natively.
// `openinference.span.kind` also changes MLflow's span type of a chat span from CHAT_MODEL to
// LLM, which is why none of this is emitted by default.
pub const OPENINFERENCE_SPAN_KIND: &str = "openinference.span.kind";
pub const OPENINFERENCE_KIND_LLM: &str = "LLM";
pub const OPENINFERENCE_KIND_EMBEDDING: &str = "EMBEDDING";
pub const OPENINFERENCE_KIND_TOOL: &str = "TOOL";
pub const OPENINFERENCE_TOOL_NAME: &str = "tool.name";
/// Phoenix's session (from `gen_ai.conversation.id`, when a span has one).
pub const SESSION_ID: &str = "session.id";
pub const LLM_TOKEN_COUNT_PROMPT_CACHE_READ: &str = "llm.token_count.prompt_details.cache_read";
pub const LLM_PROVIDER: &str = "llm.provider";
pub const LLM_SYSTEM: &str = "llm.system";
pub const LLM_MODEL_NAME: &str = "llm.model_name";
pub const EMBEDDING_MODEL_NAME: &str = "embedding.model_name";
pub const LLM_TOKEN_COUNT_PROMPT: &str = "llm.token_count.prompt";
pub const LLM_TOKEN_COUNT_COMPLETION: &str = "llm.token_count.completion";
pub const LLM_TOKEN_COUNT_TOTAL: &str = "llm.token_count.total";
pub const LLM_INVOCATION_PARAMETERS: &str = "llm.invocation_parameters";

// Metrics (v1.41 names, units and explicit bucket boundaries; see the README's metrics table).
pub const METRIC_CLIENT_OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
pub const METRIC_CLIENT_TOKEN_USAGE: &str = "gen_ai.client.token.usage";
pub const METRIC_CLIENT_TIME_TO_FIRST_CHUNK: &str = "gen_ai.client.operation.time_to_first_chunk";
pub const METRIC_CLIENT_TIME_PER_OUTPUT_CHUNK: &str = "gen_ai.client.operation.time_per_output_chunk";
pub const METRIC_SERVER_REQUEST_DURATION: &str = "gen_ai.server.request.duration";
pub const METRIC_SERVER_TIME_TO_FIRST_TOKEN: &str = "gen_ai.server.time_to_first_token";
pub const METRIC_SERVER_TIME_PER_OUTPUT_TOKEN: &str = "gen_ai.server.time_per_output_token";
pub const METRIC_HTTP_SERVER_REQUEST_DURATION: &str = "http.server.request.duration";
/// Duration of an (inferred) tool execution; the same as its span's (both modes).
pub const METRIC_EXECUTE_TOOL_DURATION: &str = "gen_ai.execute_tool.duration";
/// v1.41 mode: cache hits counted apart (v1.41 has no token type for them; counting them in
/// `gen_ai.client.token.usage` would count them twice, since input includes them).
pub const METRIC_OLLAMA_CACHE_READ_TOKENS: &str = "ollama.usage.cache_read.input_tokens";
// Latest mode (`semantic-conventions-genai`): the client metrics split by operation kind.
pub const METRIC_INFERENCE_DURATION: &str = "gen_ai.client.inference.duration";
pub const METRIC_EMBEDDINGS_DURATION: &str = "gen_ai.client.embeddings.duration";
pub const METRIC_INFERENCE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.client.inference.time_to_first_chunk";
pub const METRIC_INFERENCE_TIME_PER_OUTPUT_CHUNK: &str = "gen_ai.client.inference.time_per_output_chunk";
pub const METRIC_INFERENCE_USAGE_INPUT: &str = "gen_ai.client.inference.usage.input_tokens";
pub const METRIC_INFERENCE_USAGE_OUTPUT: &str = "gen_ai.client.inference.usage.output_tokens";
pub const METRIC_INFERENCE_DETAILED_INPUT: &str = "gen_ai.client.inference.usage.detailed.input_tokens";
pub const METRIC_INFERENCE_DETAILED_OUTPUT: &str = "gen_ai.client.inference.usage.detailed.output_tokens";
pub const METRIC_INFERENCE_DETAILED_CACHE_READ: &str = "gen_ai.client.inference.usage.detailed.cache_read.input_tokens";
pub const METRIC_EMBEDDINGS_USAGE_INPUT: &str = "gen_ai.client.embeddings.usage.input_tokens";
// Server metrics from the wire (the `/metrics` Ollama never shipped); the same in both versions.
// Names after Ollama PR #16998 where it has one (`ollama_models_loaded`).
pub const METRIC_REQUESTS_IN_FLIGHT: &str = "ollama.requests.in_flight";
pub const METRIC_REQUESTS_IN_FLIGHT_PEAK: &str = "ollama.requests.in_flight.peak";
pub const METRIC_REQUEST_WAIT: &str = "ollama.request.wait.duration";
pub const METRIC_MODEL_LOADS: &str = "ollama.model.loads";
pub const METRIC_MODEL_LOAD_DURATION: &str = "ollama.model.load.duration";
pub const METRIC_MODEL_UNLOADS: &str = "ollama.model.unloads";
pub const METRIC_MODELS_LOADED: &str = "ollama.models.loaded";
pub const METRIC_MODEL_MEMORY: &str = "ollama.model.memory.usage";
pub const METRIC_MODEL_BUSY_TIME: &str = "ollama.model.busy_time";
pub const METRIC_CLIENT_TOKENS: &str = "ollama.client.tokens";
pub const METRIC_CLIENT_BUSY_TIME: &str = "ollama.client.busy_time";
/// Which of the server's APIs: `native`, `openai`, `anthropic`.
pub const OLLAMA_API: &str = "ollama.api";
/// Why a model was loaded: `cold` (a call found it unloaded), `request` (an explicit load).
pub const OLLAMA_LOAD_REASON: &str = "ollama.load.reason";
/// Where a loaded model runs, as `ollama ps` says it: `100% GPU`, `100% CPU`, `48%/52% CPU/GPU`.
pub const OLLAMA_MODEL_PROCESSOR: &str = "ollama.model.processor";
/// `total` or `vram`.
pub const OLLAMA_MEMORY_LOCATION: &str = "ollama.memory.location";
/// Who called: a Kubernetes workload (`namespace/name`), else the process's executable name,
/// else `unknown` (a remote client, or no attribution).
pub const TRACER_CLIENT_WORKLOAD: &str = "ollama_tracer.client.workload";
/// `gen_ai.token.type` values.
pub const TOKEN_TYPE_INPUT: &str = "input";
pub const TOKEN_TYPE_OUTPUT: &str = "output";
/// `http.request.method` for methods outside the HTTP spec's list.
pub const HTTP_METHOD_OTHER: &str = "_OTHER";

// The tracer's own health (monotonic counters unless noted).
pub const METRIC_TRACER_PACKETS: &str = "ollama_tracer.capture.packets";
pub const METRIC_TRACER_BYTES: &str = "ollama_tracer.capture.bytes";
pub const METRIC_TRACER_KERNEL_DROPS: &str = "ollama_tracer.capture.kernel_drops";
pub const METRIC_TRACER_MALFORMED: &str = "ollama_tracer.capture.malformed";
pub const METRIC_TRACER_CONNECTIONS: &str = "ollama_tracer.reassembly.connections";
pub const METRIC_TRACER_GAPS: &str = "ollama_tracer.reassembly.gaps";
pub const METRIC_TRACER_GAP_BYTES: &str = "ollama_tracer.reassembly.gap_bytes";
pub const METRIC_TRACER_PARSE_ERRORS: &str = "ollama_tracer.http.parse_errors";
pub const METRIC_TRACER_CALLS: &str = "ollama_tracer.calls";
pub const METRIC_TRACER_INCOMPLETE: &str = "ollama_tracer.calls.incomplete";
pub const METRIC_TRACER_SPANS: &str = "ollama_tracer.spans";
/// Gauges: spans and bytes in the OTLP export queue now.
pub const METRIC_TRACER_QUEUE_SPANS: &str = "ollama_tracer.export.queue.spans";
pub const METRIC_TRACER_QUEUE_BYTES: &str = "ollama_tracer.export.queue.bytes";
pub const METRIC_TRACER_EXPORTED: &str = "ollama_tracer.export.spans";
/// By `reason`: `queue_full`, `rejected`, `shutdown`.
pub const METRIC_TRACER_EXPORT_DROPPED: &str = "ollama_tracer.export.dropped";
pub const METRIC_TRACER_EXPORT_FAILURES: &str = "ollama_tracer.export.failures";
/// Attribute of the drop counter.
pub const TRACER_DROP_REASON: &str = "reason";
/// Attribute of the export failure counter: `traces` or `metrics`.
pub const TRACER_SIGNAL: &str = "signal";
/// Resource limits reached, by `limit` (see [`TRACER_LIMITS`]).
pub const METRIC_TRACER_LIMIT_OVERFLOWS: &str = "ollama_tracer.limits.overflows";
/// Attribute of the limit counter.
pub const TRACER_LIMIT: &str = "limit";
/// The limits counted by [`METRIC_TRACER_LIMIT_OVERFLOWS`], each with the flag that sets it:
/// connections evicted at `--max-connections`; out-of-order buffers flushed as gaps at
/// `--max-reorder-per-conn`/`--max-reorder-total`; unfinished HTTP heads dropped at
/// `--max-partial-heads` (memory) or `--head-timeout` (stalled); pipelined requests beyond
/// `--max-pending-per-conn`; calls reported early at `--max-calls-in-flight`.
pub const TRACER_LIMITS: [&str; 6] =
    ["connections", "reorder_buffer", "partial_heads", "stalled_heads", "pipelined_requests", "calls_in_flight"];
