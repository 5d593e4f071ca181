//! Who answers on a traced port. Ollama by default; other local servers speak the same
//! OpenAI- (and Anthropic-) compatible wire, so their calls decode the same way, but they are
//! not Ollama: `gen_ai.provider.name` says which server it is, and Ollama's own `/api/*` routes
//! are not theirs (on their ports such a path is plain HTTP).

use std::fmt;
use std::str::FromStr;

use super::route::{Api, Route};

/// A server that speaks Ollama's wire or its `/v1` dialects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    #[default]
    Ollama,
    /// vLLM's OpenAI-compatible server (`vllm serve`, port 8000 by default).
    Vllm,
    /// llama.cpp's `llama-server` (port 8080 by default).
    LlamaCpp,
    /// LM Studio's local server (port 1234 by default).
    LmStudio,
    /// The LiteLLM proxy (port 4000 by default).
    LiteLlm,
}

impl Provider {
    pub const ALL: [Provider; 5] =
        [Provider::Ollama, Provider::Vllm, Provider::LlamaCpp, Provider::LmStudio, Provider::LiteLlm];

    /// The `gen_ai.provider.name` value. None of these is (yet) a well-known value of the
    /// conventions; these are the names the servers go by, in the conventions' spelling
    /// (lower case, `_` between words).
    pub fn name(self) -> &'static str {
        match self {
            Provider::Ollama => "ollama",
            Provider::Vllm => "vllm",
            Provider::LlamaCpp => "llama_cpp",
            Provider::LmStudio => "lm_studio",
            Provider::LiteLlm => "litellm",
        }
    }

    /// Whether the server also serves the OpenAI paths without `/v1` (`/chat/completions`):
    /// LiteLLM's documented base URL has no `/v1`, and llama-server aliases its chat route.
    fn unprefixed(self, route: Route) -> bool {
        match self {
            Provider::LiteLlm => true,
            Provider::LlamaCpp => route == Route::OpenAiChat,
            _ => false,
        }
    }

    /// The route of a request on this server's port.
    pub fn classify(self, method: &str, path: &str) -> Route {
        if self == Provider::Ollama {
            return Route::classify(method, path);
        }
        let route = Route::classify(method, path);
        if route != Route::Unknown {
            return self.own(route);
        }
        // `/chat/completions` → `/v1/chat/completions` where the server serves both.
        let mut prefixed = String::with_capacity(path.len() + 3);
        prefixed.push_str("/v1");
        prefixed.push_str(path);
        let route = self.own(Route::classify(method, &prefixed));
        if route != Route::Unknown && self.unprefixed(route) { route } else { Route::Unknown }
    }

    /// `route` if this server serves it (the `/v1` dialects), else [`Route::Unknown`].
    pub fn own(self, route: Route) -> Route {
        match (self, route.api()) {
            (Provider::Ollama, _) | (_, Api::OpenAi | Api::Anthropic) => route,
            _ => Route::Unknown,
        }
    }

    /// `http.route` of a request on `route` with `path`: the template as the server serves it
    /// (without `/v1` when the client used the unprefixed alias).
    pub fn http_route(self, route: Route, path: &str) -> Option<&'static str> {
        let template = route.template()?;
        let bare = template.strip_prefix("/v1").filter(|_| self.unprefixed(route) && !path.starts_with("/v1/"));
        Some(bare.unwrap_or(template))
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown provider name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider `{0}` (expected ollama, vllm, llama.cpp, lmstudio or litellm)")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String =
            s.trim().chars().filter(|c| !matches!(c, '-' | '_' | '.' | ' ')).flat_map(char::to_lowercase).collect();
        Ok(match norm.as_str() {
            "ollama" => Provider::Ollama,
            "vllm" => Provider::Vllm,
            "llamacpp" | "llamaserver" => Provider::LlamaCpp,
            "lmstudio" => Provider::LmStudio,
            "litellm" => Provider::LiteLlm,
            _ => return Err(UnknownProvider(s.to_string())),
        })
    }
}

/// Which provider answers on which port (ports not listed: Ollama).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Providers(Vec<(u16, Provider)>);

impl Providers {
    pub fn new(ports: impl IntoIterator<Item = (u16, Provider)>) -> Self {
        Providers(ports.into_iter().filter(|(_, p)| *p != Provider::Ollama).collect())
    }

    pub fn of(&self, port: u16) -> Provider {
        self.0.iter().find(|(p, _)| *p == port).map_or(Provider::Ollama, |(_, provider)| *provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_the_spellings_people_use() {
        for (s, p) in [
            ("vllm", Provider::Vllm),
            ("vLLM", Provider::Vllm),
            ("llama.cpp", Provider::LlamaCpp),
            ("llama-server", Provider::LlamaCpp),
            ("lmstudio", Provider::LmStudio),
            ("lm-studio", Provider::LmStudio),
            ("LiteLLM", Provider::LiteLlm),
            ("ollama", Provider::Ollama),
        ] {
            assert_eq!(s.parse::<Provider>(), Ok(p), "{s}");
        }
        assert!("tgi".parse::<Provider>().is_err());
        for p in Provider::ALL {
            assert_eq!(p.name().parse::<Provider>(), Ok(p));
        }
    }

    #[test]
    fn other_servers_have_the_v1_routes_only() {
        assert_eq!(Provider::Vllm.classify("POST", "/v1/chat/completions"), Route::OpenAiChat);
        assert_eq!(Provider::Vllm.classify("POST", "/v1/messages"), Route::AnthropicMessages);
        assert_eq!(Provider::Vllm.classify("POST", "/api/chat"), Route::Unknown);
        assert_eq!(Provider::Vllm.classify("POST", "/chat/completions"), Route::Unknown);
        assert_eq!(Provider::LiteLlm.classify("POST", "/chat/completions"), Route::OpenAiChat);
        assert_eq!(Provider::LiteLlm.classify("POST", "/embeddings"), Route::OpenAiEmbeddings);
        assert_eq!(Provider::LlamaCpp.classify("POST", "/chat/completions"), Route::OpenAiChat);
        // llama-server's own `/completions` is its native format, not OpenAI's.
        assert_eq!(Provider::LlamaCpp.classify("POST", "/completions"), Route::Unknown);
        assert_eq!(Provider::Ollama.classify("POST", "/chat/completions"), Route::Unknown);
        assert_eq!(Provider::Ollama.classify("POST", "/api/chat"), Route::Chat);
    }

    #[test]
    fn http_route_is_the_path_the_server_served() {
        assert_eq!(Provider::LiteLlm.http_route(Route::OpenAiChat, "/chat/completions"), Some("/chat/completions"));
        assert_eq!(
            Provider::LiteLlm.http_route(Route::OpenAiChat, "/v1/chat/completions"),
            Some("/v1/chat/completions")
        );
        assert_eq!(Provider::Vllm.http_route(Route::OpenAiModel, "/v1/models/x"), Some("/v1/models/{model}"));
        assert_eq!(Provider::Ollama.http_route(Route::Unknown, "/x"), None);
    }

    #[test]
    fn ports_not_listed_are_ollama() {
        let p = Providers::new([(8000, Provider::Vllm), (11434, Provider::Ollama)]);
        assert_eq!((p.of(8000), p.of(11434), p.of(1)), (Provider::Vllm, Provider::Ollama, Provider::Ollama));
    }
}
