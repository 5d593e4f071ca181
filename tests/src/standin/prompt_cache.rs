//! An emulated prompt cache, as Ollama ≥ 0.33 reports it (`prompt_eval_cached_count` and its
//! `/v1` equivalents): like llama.cpp's KV cache with one slot per model, a request reuses the
//! longest prefix (in whole prompt parts: system, messages, prompt) it shares with the model's
//! previous request, and at least its last token is evaluated again.

use std::collections::HashMap;
use std::sync::Mutex;

use super::api::ApiRequest;

#[derive(Debug, Default)]
pub struct PromptCache {
    /// Per model, the parts of the last prompt it evaluated.
    by_model: Mutex<HashMap<String, Vec<u64>>>,
}

impl PromptCache {
    /// The tokens of `req`'s prompt (`prompt_tokens` in all) that `model`'s cache serves; the
    /// cache then holds `req`'s prompt.
    pub fn serve(&self, model: &str, req: &ApiRequest, prompt_tokens: u64) -> u64 {
        let parts: Vec<u64> = req.prompt_parts.iter().map(|(h, _)| *h).collect();
        let mut by_model = self.by_model.lock().unwrap_or_else(|e| e.into_inner());
        let shared = by_model.get(model).map_or(0, |last| last.iter().zip(&parts).take_while(|(a, b)| a == b).count());
        by_model.insert(model.to_owned(), parts);
        if shared == 0 {
            return 0;
        }
        // The same estimate as the prompt's (4 characters a token, 10 for the template).
        let chars = req.prompt_parts[shared - 1].1 as u64;
        (chars.div_ceil(4) + 10).min(prompt_tokens.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standin::route::Route;

    fn chat(messages: &[&str]) -> ApiRequest {
        let msgs: Vec<serde_json::Value> =
            messages.iter().map(|m| serde_json::json!({"role": "user", "content": m})).collect();
        ApiRequest::parse(&Route::Chat, serde_json::json!({"model": "m", "messages": msgs}).to_string().as_bytes())
    }

    #[test]
    fn a_longer_conversation_reuses_its_history() {
        let cache = PromptCache::default();
        let first = chat(&["Why is the sky blue? Tell me in detail."]);
        assert_eq!(cache.serve("m", &first, first.prompt_tokens_estimate()), 0, "nothing cached yet");
        let second = chat(&["Why is the sky blue? Tell me in detail.", "And why are sunsets red?"]);
        let n = cache.serve("m", &second, second.prompt_tokens_estimate());
        // The first message (39 characters) and the template.
        assert_eq!(n, 39u64.div_ceil(4) + 10);
        // The very same prompt again: all but its last token.
        let again = cache.serve("m", &second, second.prompt_tokens_estimate());
        assert_eq!(again, second.prompt_tokens_estimate() - 1);
        // Another model has its own cache; a different first message shares nothing.
        assert_eq!(cache.serve("other", &second, 30), 0);
        assert_eq!(cache.serve("m", &chat(&["Hello"]), 12), 0);
    }
}
