//! Which Ollama route a request is, and what GenAI operation it performs.
//!
//! Routing is by method and path only, as Ollama's router does (never by Content-Type, which the
//! server does not check).

/// The API family a route belongs to: decides how bodies are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Api {
    /// Ollama's own `/api/*`.
    Native,
    /// OpenAI-compatible `/v1/*`.
    OpenAi,
    /// Anthropic-compatible `/v1/messages`.
    Anthropic,
    /// Anything else on the port.
    Http,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    Chat,
    Generate,
    Embed,
    /// Legacy `/api/embeddings`.
    Embeddings,
    OpenAiChat,
    OpenAiCompletions,
    OpenAiEmbeddings,
    OpenAiResponses,
    OpenAiModels,
    OpenAiModel,
    OpenAiTranscriptions,
    AnthropicMessages,
    Pull,
    Push,
    Create,
    Show,
    Tags,
    Ps,
    Copy,
    Delete,
    BlobHead,
    BlobUpload,
    Version,
    Status,
    Root,
    /// A path Ollama does not serve (or a method it does not allow there).
    Unknown,
}

impl Api {
    /// `ollama.api`: which of the server's APIs a call used.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Native => "native",
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
            Api::Http => "http",
        }
    }
}

/// Body bytes looked at to tell the route of a response whose request was not captured.
pub const SNIFF_BYTES: usize = 4096;

/// GenAI operation names (`gen_ai.operation.name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    Chat,
    TextCompletion,
    Embeddings,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::TextCompletion => "text_completion",
            Operation::Embeddings => "embeddings",
        }
    }
}

impl Route {
    pub fn classify(method: &str, path: &str) -> Route {
        // Ollama redirects `/api/chat/` and unclean paths rather than serving them.
        use Route::*;
        match (method, path) {
            ("POST", "/api/chat") => Chat,
            ("POST", "/api/generate") => Generate,
            ("POST", "/api/embed") => Embed,
            ("POST", "/api/embeddings") => Embeddings,
            ("POST", "/v1/chat/completions") => OpenAiChat,
            ("POST", "/v1/completions") => OpenAiCompletions,
            ("POST", "/v1/embeddings") => OpenAiEmbeddings,
            ("POST", "/v1/responses") => OpenAiResponses,
            ("POST", "/v1/messages") => AnthropicMessages,
            ("POST", "/v1/audio/transcriptions") => OpenAiTranscriptions,
            ("GET", "/v1/models") => OpenAiModels,
            ("GET", p)
                if p.starts_with("/v1/models/")
                    && p.len() > "/v1/models/".len()
                    && !p["/v1/models/".len()..].contains('/') =>
            {
                OpenAiModel
            }
            ("POST", "/api/pull") => Pull,
            ("POST", "/api/push") => Push,
            ("POST", "/api/create") => Create,
            ("POST", "/api/show") => Show,
            ("GET" | "HEAD", "/api/tags") => Tags,
            ("GET", "/api/ps") => Ps,
            ("POST", "/api/copy") => Copy,
            ("DELETE", "/api/delete") => Delete,
            ("HEAD", p) if is_blob(p) => BlobHead,
            ("POST", p) if is_blob(p) => BlobUpload,
            ("GET" | "HEAD", "/api/version") => Version,
            ("GET", "/api/status") => Status,
            ("GET" | "HEAD", "/") => Root,
            _ => Unknown,
        }
    }

    pub fn api(self) -> Api {
        use Route::*;
        match self {
            Chat | Generate | Embed | Embeddings | Pull | Push | Create | Show | Tags | Ps | Copy | Delete
            | BlobHead | BlobUpload | Version | Status => Api::Native,
            OpenAiChat | OpenAiCompletions | OpenAiEmbeddings | OpenAiResponses | OpenAiModels | OpenAiModel
            | OpenAiTranscriptions => Api::OpenAi,
            AnthropicMessages => Api::Anthropic,
            Root | Unknown => Api::Http,
        }
    }

    /// The GenAI operation, for inference routes.
    pub fn operation(self) -> Option<Operation> {
        use Route::*;
        Some(match self {
            Chat | OpenAiChat | OpenAiResponses | AnthropicMessages => Operation::Chat,
            Generate | OpenAiCompletions => Operation::TextCompletion,
            Embed | Embeddings | OpenAiEmbeddings => Operation::Embeddings,
            _ => return None,
        })
    }

    /// Low-cardinality route template (`http.route`); `None` for unknown paths.
    pub fn template(self) -> Option<&'static str> {
        use Route::*;
        Some(match self {
            Chat => "/api/chat",
            Generate => "/api/generate",
            Embed => "/api/embed",
            Embeddings => "/api/embeddings",
            OpenAiChat => "/v1/chat/completions",
            OpenAiCompletions => "/v1/completions",
            OpenAiEmbeddings => "/v1/embeddings",
            OpenAiResponses => "/v1/responses",
            OpenAiModels => "/v1/models",
            OpenAiModel => "/v1/models/{model}",
            OpenAiTranscriptions => "/v1/audio/transcriptions",
            AnthropicMessages => "/v1/messages",
            Pull => "/api/pull",
            Push => "/api/push",
            Create => "/api/create",
            Show => "/api/show",
            Tags => "/api/tags",
            Ps => "/api/ps",
            Copy => "/api/copy",
            Delete => "/api/delete",
            BlobHead | BlobUpload => "/api/blobs/{digest}",
            Version => "/api/version",
            Status => "/api/status",
            Root => "/",
            Unknown => return None,
        })
    }

    /// Routes that name a model to manage (`model`, or the legacy `name`).
    pub fn is_model_management(self) -> bool {
        matches!(self, Route::Pull | Route::Push | Route::Create | Route::Show | Route::Delete | Route::Copy)
    }

    /// The route of a response whose request was not captured, from its media type and first
    /// body bytes (`head`, at most [`SNIFF_BYTES`] of them). `None`: more bytes would tell; at
    /// the end of the body or the byte limit the caller takes [`Route::Unknown`].
    pub fn sniff(content_type: Option<&str>, head: &[u8]) -> Option<Route> {
        let media = content_type.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let has = |needle: &str| memchr::memmem::find(head, needle.as_bytes()).is_some();
        let first_doc_done = match media.as_str() {
            "text/event-stream" => memchr::memmem::find(head, b"\n\n").is_some(),
            "application/x-ndjson" => head.contains(&b'\n'),
            _ => false,
        };
        let route = if media == "text/event-stream" {
            if has("\"chat.completion.chunk\"") {
                Some(Route::OpenAiChat)
            } else if has("\"text_completion\"") {
                Some(Route::OpenAiCompletions)
            } else if has("message_start") {
                Some(Route::AnthropicMessages)
            } else if has("\"response.") {
                Some(Route::OpenAiResponses)
            } else {
                None
            }
        } else if has("\"object\":\"chat.completion\"") {
            Some(Route::OpenAiChat)
        } else if has("\"object\":\"text_completion\"") {
            Some(Route::OpenAiCompletions)
        } else if has("\"object\":\"response\"") {
            Some(Route::OpenAiResponses)
        } else if has("\"type\":\"message\"") && has("\"stop_reason\"") {
            Some(Route::AnthropicMessages)
        } else if has("\"object\":\"list\"") && has("\"embedding\"") {
            Some(Route::OpenAiEmbeddings)
        } else if has("\"message\":{") {
            Some(Route::Chat)
        } else if has("\"response\":") && has("\"done\":") {
            Some(Route::Generate)
        } else if has("\"embeddings\":") {
            Some(Route::Embed)
        } else if has("\"embedding\":") {
            Some(Route::Embeddings)
        } else if has("\"status\":") && media == "application/x-ndjson" {
            Some(Route::Pull)
        } else {
            None
        };
        match route {
            Some(r) => Some(r),
            // The first document (or event) is whole and said nothing we know.
            None if first_doc_done => Some(Route::Unknown),
            None => None,
        }
    }

    /// Model management routes that stream `{"status", "digest", "completed", "total"}` progress.
    pub fn is_progress(self) -> bool {
        matches!(self, Route::Pull | Route::Push | Route::Create)
    }

    /// Native routes whose `stream` defaults to true.
    pub fn streams_by_default(self) -> bool {
        matches!(self, Route::Chat | Route::Generate | Route::Pull | Route::Push | Route::Create)
    }
}

fn is_blob(path: &str) -> bool {
    path.strip_prefix("/api/blobs/").is_some_and(|d| !d.is_empty() && !d.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_routes() {
        assert_eq!(Route::classify("POST", "/api/chat"), Route::Chat);
        assert_eq!(Route::classify("GET", "/api/chat"), Route::Unknown);
        assert_eq!(Route::classify("GET", "/v1/models/llama3.2:latest"), Route::OpenAiModel);
        assert_eq!(Route::classify("GET", "/v1/models/hf.co/x"), Route::Unknown);
        assert_eq!(Route::classify("POST", "/api/blobs/sha256:abc"), Route::BlobUpload);
        assert_eq!(Route::classify("HEAD", "/"), Route::Root);
        assert_eq!(Route::OpenAiResponses.operation(), Some(Operation::Chat));
        assert_eq!(Route::Generate.operation(), Some(Operation::TextCompletion));
        assert_eq!(Route::Tags.operation(), None);
    }

    #[test]
    fn sniffs_the_route_of_a_response_without_its_request() {
        let nd = Some("application/x-ndjson");
        let sse = Some("text/event-stream");
        let json = Some("application/json; charset=utf-8");
        let cases: &[(Option<&str>, &str, Option<Route>)] = &[
            (
                nd,
                "{\"model\":\"m\",\"created_at\":\"t\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n",
                Some(Route::Chat),
            ),
            (nd, "{\"model\":\"m\",\"created_at\":\"t\",\"response\":\"Hi\",\"done\":false}\n", Some(Route::Generate)),
            (nd, "{\"status\":\"pulling manifest\"}\n", Some(Route::Pull)),
            (nd, "{\"model\":\"m\",\"created_at\":\"t\",\"mess", None),
            (nd, "{\"something\":1}\n", Some(Route::Unknown)),
            (
                sse,
                "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[]}\n\n",
                Some(Route::OpenAiChat),
            ),
            (
                sse,
                "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[]}\n\n",
                Some(Route::OpenAiCompletions),
            ),
            (sse, "event: message_start\ndata: {\"type\":\"message_start\"}\n\n", Some(Route::AnthropicMessages)),
            (sse, "event: response.created\ndata: {\"type\":\"response.created\"}\n\n", Some(Route::OpenAiResponses)),
            (json, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"choices\":[]}", Some(Route::OpenAiChat)),
            (
                json,
                "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"embedding\":[0.1]}]}",
                Some(Route::OpenAiEmbeddings),
            ),
            (json, "{\"model\":\"m\",\"embeddings\":[[0.1]]}", Some(Route::Embed)),
            (json, "{\"embedding\":[0.1]}", Some(Route::Embeddings)),
            (
                json,
                "{\"id\":\"msg_1\",\"type\":\"message\",\"content\":[],\"stop_reason\":\"end_turn\"}",
                Some(Route::AnthropicMessages),
            ),
        ];
        for (ct, body, want) in cases {
            assert_eq!(Route::sniff(*ct, body.as_bytes()), *want, "{body}");
        }
    }
}
