//! The common token chunk of a stream, recognised by its bytes: most documents of a streamed
//! answer carry one token and nothing else a decoder keeps, and reading them with the general
//! scanner (paths, visitor calls, per-key matching) costs more than everything else done per
//! packet. Each reader here accepts one shape exactly — the keys it knows, compact JSON, no
//! surrogate escapes — and answers `None` on any surprise, so the decoder reads the document
//! with the full scanner instead; where it answers, the decoder must end in the same state as
//! after the full read (`tests/src/fuzz/fast_path.rs` compares both on arbitrary input).

use crate::json::Cursor;

/// A string's unescaped length, added to `n`.
fn add_len(c: &mut Cursor<'_>, n: &mut u64) -> Option<()> {
    *n += c.str_len()?;
    Some(())
}

/// What a native `/api/chat` or `/api/generate` token chunk (`"done":false`) holds for the
/// decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct NativeToken<'a> {
    /// The last `model` value (the full read keeps the last of repeated keys).
    pub model: Option<&'a [u8]>,
    /// Unescaped bytes of the text and of the thinking.
    pub content: u64,
    pub thinking: u64,
}

/// `{"model":…,"created_at":…,"message":{"role":…,"content":…,"thinking":…},"done":false}`
/// (chat) or `{"model":…,"created_at":…,"response":…,"thinking":…,"done":false}` (generate),
/// keys in any order, each optional.
pub(super) fn native(doc: &[u8], chat: bool) -> Option<NativeToken<'_>> {
    native_as_sent(doc, chat).or_else(|| native_any_order(doc, chat))
}

/// The chunk as Ollama writes it (Go's field order, `thinking` only with text): a few literal
/// comparisons instead of a key search per member.
fn native_as_sent(doc: &[u8], chat: bool) -> Option<NativeToken<'_>> {
    let mut c = Cursor::new(doc);
    let mut t = NativeToken::default();
    c.eat_all(b"{\"model\":").then_some(())?;
    t.model = Some(c.plain_str()?);
    c.eat_all(b",\"created_at\":").then_some(())?;
    c.plain_str()?;
    let text = if chat { &b",\"message\":{\"role\":\"assistant\",\"content\":"[..] } else { b",\"response\":" };
    c.eat_all(text).then_some(())?;
    add_len(&mut c, &mut t.content)?;
    if c.eat_all(b",\"thinking\":") {
        add_len(&mut c, &mut t.thinking)?;
    }
    let end = if chat { &b"},\"done\":false}"[..] } else { b",\"done\":false}" };
    (c.eat_all(end) && c.at_end()).then_some(t)
}

/// The same members in any order, each optional.
fn native_any_order(doc: &[u8], chat: bool) -> Option<NativeToken<'_>> {
    let mut t = NativeToken::default();
    let mut c = Cursor::new(doc);
    c.object(|c, key| match key {
        b"model" => {
            t.model = Some(c.plain_str()?);
            Some(())
        }
        b"created_at" => c.plain_str().map(drop),
        // Only `false`: the final chunk (`true`) carries the counts, read in full.
        b"done" => c.eat_all(b"false").then_some(()),
        b"message" if chat => c.object(|c, key| match key {
            b"role" => c.plain_str().map(drop),
            b"content" => add_len(c, &mut t.content),
            b"thinking" => add_len(c, &mut t.thinking),
            _ => None,
        }),
        b"response" if !chat => add_len(c, &mut t.content),
        b"thinking" if !chat => add_len(c, &mut t.thinking),
        _ => None,
    })?;
    c.at_end().then_some(t)
}

/// What an OpenAI `chat.completion.chunk` (or `text_completion`) token chunk holds for the
/// decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct OpenAiToken<'a> {
    /// The last `id` and `model` values.
    pub id: Option<&'a [u8]>,
    pub model: Option<&'a [u8]>,
    pub content: u64,
    pub reasoning: u64,
}

/// `{"id":…,"object":…,"created":N,"model":…,"system_fingerprint":…,"choices":[{"index":0,
/// "delta":{"role":…,"content":…},"finish_reason":null}]}` — exactly one choice, whose finish
/// reason is `null`; `delta` (or `message`) holding only a role, content and reasoning, or the
/// choice a `text`; a `usage` of plain counts (ignored: with one choice it is not the final
/// usage chunk). Keys in any order.
pub(super) fn openai(doc: &[u8]) -> Option<OpenAiToken<'_>> {
    openai_as_sent(doc).or_else(|| openai_any_order(doc))
}

/// A chat chunk as Ollama writes it (Go's field order): literal comparisons.
fn openai_as_sent(doc: &[u8]) -> Option<OpenAiToken<'_>> {
    let mut c = Cursor::new(doc);
    let mut t = OpenAiToken::default();
    c.eat_all(b"{\"id\":").then_some(())?;
    t.id = Some(c.plain_str()?);
    c.eat_all(b",\"object\":\"chat.completion.chunk\",\"created\":").then_some(())?;
    c.uint()?;
    c.eat_all(b",\"model\":").then_some(())?;
    t.model = Some(c.plain_str()?);
    c.eat_all(b",\"system_fingerprint\":").then_some(())?;
    c.plain_str()?;
    c.eat_all(b",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":").then_some(())?;
    add_len(&mut c, &mut t.content)?;
    (c.eat_all(b"},\"finish_reason\":null}]}") && c.at_end()).then_some(t)
}

/// The same members in any order.
fn openai_any_order(doc: &[u8]) -> Option<OpenAiToken<'_>> {
    let mut t = OpenAiToken::default();
    let mut choices = 0;
    let mut c = Cursor::new(doc);
    c.object(|c, key| match key {
        b"id" => {
            t.id = Some(c.plain_str()?);
            Some(())
        }
        b"model" => {
            t.model = Some(c.plain_str()?);
            Some(())
        }
        b"object" | b"system_fingerprint" => c.plain_str().map(drop),
        b"created" => c.uint().map(drop),
        b"usage" => c.object(|c, _| c.uint().map(drop)),
        b"choices" => {
            if !c.eat(b'[') {
                return None;
            }
            choices += 1;
            let choice = c.object(|c, key| match key {
                b"index" => c.uint().map(drop),
                b"finish_reason" | b"logprobs" => c.eat_all(b"null").then_some(()),
                b"text" => add_len(c, &mut t.content),
                b"delta" | b"message" => c.object(|c, key| match key {
                    b"role" => c.plain_str().map(drop),
                    b"content" => add_len(c, &mut t.content),
                    b"reasoning" | b"reasoning_content" => add_len(c, &mut t.reasoning),
                    _ => None,
                }),
                _ => None,
            });
            (choice.is_some() && c.eat(b']')).then_some(())
        }
        _ => None,
    })?;
    (c.at_end() && choices == 1).then_some(t)
}

/// What an Anthropic `content_block_delta` of text or thinking holds for the decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct AnthropicToken {
    pub text: u64,
    pub thinking: u64,
}

/// The event type the reader accepts (the SSE event name, if any, must be the same).
pub(super) const CONTENT_BLOCK_DELTA: &str = "content_block_delta";

/// `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":…}}` (or a
/// `thinking` delta). Keys in any order.
pub(super) fn anthropic(doc: &[u8]) -> Option<AnthropicToken> {
    let mut t = AnthropicToken::default();
    let mut typed = false;
    let mut c = Cursor::new(doc);
    c.object(|c, key| match key {
        b"type" => {
            // The last `type` is the one the full read keeps.
            typed = c.plain_str()? == CONTENT_BLOCK_DELTA.as_bytes();
            Some(())
        }
        b"index" => c.uint().map(drop),
        b"delta" => c.object(|c, key| match key {
            b"type" => c.plain_str().map(drop),
            b"text" => add_len(c, &mut t.text),
            b"thinking" => add_len(c, &mut t.thinking),
            _ => None,
        }),
        _ => None,
    })?;
    (c.at_end() && typed).then_some(t)
}
