//! Ollama's route table (docs/ollama-wire.md §1) with gin's 404 / 405 / trailing-slash rules.

/// A matched Ollama route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Root,
    Version,
    Status,
    Generate,
    Chat,
    Embed,
    Embeddings,
    Ps,
    Pull,
    Push,
    Create,
    Tags,
    Show,
    Delete,
    Copy,
    Blob(String),
    Me,
    Signout,
    WebSearch,
    WebFetch,
    ModelRecommendations,
    V1Chat,
    V1Completions,
    V1Embeddings,
    V1Models,
    /// `/v1/models/:model`, the one path segment verbatim.
    V1Model(String),
    V1Responses,
    V1Audio,
    V1Messages,
}

/// The API family, which decides error shapes and streaming defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Native,
    OpenAi,
    Anthropic,
}

impl Route {
    pub fn family(&self) -> Family {
        match self {
            Route::V1Chat
            | Route::V1Completions
            | Route::V1Embeddings
            | Route::V1Models
            | Route::V1Model(_)
            | Route::V1Responses
            | Route::V1Audio => Family::OpenAi,
            Route::V1Messages => Family::Anthropic,
            _ => Family::Native,
        }
    }

    /// The handler reads the request body (so `Expect: 100-continue` gets its `100`): a JSON
    /// body, or a blob's bytes (which Ollama streams to disk).
    pub fn reads_body(&self) -> bool {
        !matches!(
            self,
            Route::Root
                | Route::Version
                | Route::Status
                | Route::Ps
                | Route::Tags
                | Route::V1Models
                | Route::V1Model(_)
                | Route::ModelRecommendations
        )
    }

    /// Inference routes that stream by default (`stream` absent means true).
    pub fn streams_by_default(&self) -> bool {
        matches!(self, Route::Generate | Route::Chat | Route::Pull | Route::Push | Route::Create)
    }
}

/// Outcome of matching a request line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routed {
    Found(Route),
    /// gin: `404 page not found`.
    NotFound,
    /// gin with `HandleMethodNotAllowed`: `405 method not allowed`.
    MethodNotAllowed,
    /// gin `RedirectTrailingSlash`: 301 for GET, 307 otherwise, to this path.
    Redirect(String),
}

/// Match `method` + `path` (no query) the way Ollama's gin router does.
pub fn route(method: &str, path: &str) -> Routed {
    match lookup(path) {
        Some((methods, route)) if methods.contains(&method) => Routed::Found(route),
        Some(_) => Routed::MethodNotAllowed,
        None => {
            // gin tries the path with the trailing slash removed (or added) before 404.
            let alt = match path.strip_suffix('/') {
                Some(p) if !p.is_empty() => p.to_owned(),
                _ => format!("{path}/"),
            };
            match lookup(&alt) {
                Some((methods, _)) if methods.contains(&method) && path != "/" => Routed::Redirect(alt),
                _ => Routed::NotFound,
            }
        }
    }
}

const GET_HEAD: &[&str] = &["GET", "HEAD"];
const POST: &[&str] = &["POST"];
const GET: &[&str] = &["GET"];

fn lookup(path: &str) -> Option<(&'static [&'static str], Route)> {
    let r = match path {
        "/" => (GET_HEAD, Route::Root),
        "/api/version" => (GET_HEAD, Route::Version),
        "/api/status" => (GET, Route::Status),
        "/api/generate" => (POST, Route::Generate),
        "/api/chat" => (POST, Route::Chat),
        "/api/embed" => (POST, Route::Embed),
        "/api/embeddings" => (POST, Route::Embeddings),
        "/api/ps" => (GET, Route::Ps),
        "/api/pull" => (POST, Route::Pull),
        "/api/push" => (POST, Route::Push),
        "/api/create" => (POST, Route::Create),
        "/api/tags" => (GET_HEAD, Route::Tags),
        "/api/show" => (POST, Route::Show),
        "/api/delete" => (&["DELETE"][..], Route::Delete),
        "/api/copy" => (POST, Route::Copy),
        "/api/me" => (POST, Route::Me),
        "/api/signout" => (POST, Route::Signout),
        "/api/experimental/web_search" => (POST, Route::WebSearch),
        "/api/experimental/web_fetch" => (POST, Route::WebFetch),
        "/api/experimental/model-recommendations" => (GET, Route::ModelRecommendations),
        "/v1/chat/completions" => (POST, Route::V1Chat),
        "/v1/completions" => (POST, Route::V1Completions),
        "/v1/embeddings" => (POST, Route::V1Embeddings),
        "/v1/models" => (GET, Route::V1Models),
        "/v1/responses" => (POST, Route::V1Responses),
        "/v1/audio/transcriptions" => (POST, Route::V1Audio),
        "/v1/messages" => (POST, Route::V1Messages),
        _ => {
            if let Some(digest) = one_segment(path, "/api/blobs/") {
                (&["POST", "HEAD"][..], Route::Blob(digest))
            } else if let Some(model) = one_segment(path, "/v1/models/") {
                (GET, Route::V1Model(model))
            } else if let Some(key) = one_segment(path, "/api/user/keys/") {
                let _ = key;
                (&["DELETE"][..], Route::Signout)
            } else {
                return None;
            }
        }
    };
    Some(r)
}

/// The `:param` of `prefix + ":param"`: exactly one non-empty path segment.
fn one_segment(path: &str, prefix: &str) -> Option<String> {
    let rest = path.strip_prefix(prefix)?;
    (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gin_rules() {
        assert_eq!(route("POST", "/api/chat"), Routed::Found(Route::Chat));
        assert_eq!(route("GET", "/api/chat"), Routed::MethodNotAllowed);
        assert_eq!(route("HEAD", "/api/ps"), Routed::MethodNotAllowed);
        assert_eq!(route("HEAD", "/"), Routed::Found(Route::Root));
        assert_eq!(route("GET", "/nope"), Routed::NotFound);
        assert_eq!(route("POST", "/api/chat/"), Routed::Redirect("/api/chat".into()));
        assert_eq!(route("GET", "/v1/models/llama3.2:1b"), Routed::Found(Route::V1Model("llama3.2:1b".into())));
        assert_eq!(route("GET", "/v1/models/user/model"), Routed::NotFound);
        assert_eq!(route("HEAD", "/api/blobs/sha256:ab"), Routed::Found(Route::Blob("sha256:ab".into())));
    }
}
