"""Scripted session with the real `openai` Python client against Ollama's /v1 compat layer.

Calls: chat stream with stream_options.include_usage, chat stream without it, chat (not
streamed), legacy completions (streamed and not), embeddings, models list.
Prints one JSON line per call (see common.py).
"""

import openai

from common import Call, parse_args

args = parse_args(__doc__)
model = args.model or "llama3.2"
client = openai.OpenAI(base_url=args.base_url.rstrip("/") + "/v1", api_key="ollama", max_retries=0)
D = "openai"
MESSAGES = [{"role": "user", "content": "Write a haiku about the sea."}]


def chat_stream(include_usage: bool):
    name = "chat_stream_usage" if include_usage else "chat_stream"
    with Call(D, name, "/v1/chat/completions", model, True) as c:
        kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
        for chunk in client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **kwargs):
            c.chunk()
            for choice in chunk.choices:
                c.text(choice.delta.content, getattr(choice.delta, "reasoning", None))
                for tc in choice.delta.tool_calls or []:
                    c.rec["tool_calls"].append(tc.function.name)
                if choice.finish_reason:
                    c.rec["finish_reason"] = choice.finish_reason
            if chunk.usage:
                c.rec.update(input_tokens=chunk.usage.prompt_tokens, output_tokens=chunk.usage.completion_tokens)
    return c


def chat():
    with Call(D, "chat", "/v1/chat/completions", model, False) as c:
        r = client.chat.completions.create(model=model, messages=MESSAGES)
        m = r.choices[0].message
        c.text(m.content, getattr(m, "reasoning", None))
        c.rec["tool_calls"] = [t.function.name for t in (m.tool_calls or [])]
        c.rec.update(finish_reason=r.choices[0].finish_reason, input_tokens=r.usage.prompt_tokens, output_tokens=r.usage.completion_tokens)
    return c


def completion(stream: bool):
    name = "completion_stream" if stream else "completion"
    with Call(D, name, "/v1/completions", model, stream) as c:
        if stream:
            for chunk in client.completions.create(model=model, prompt="Once upon a time", stream=True, stream_options={"include_usage": True}):
                c.chunk()
                for choice in chunk.choices:
                    c.text(choice.text)
                    if choice.finish_reason:
                        c.rec["finish_reason"] = choice.finish_reason
                if chunk.usage and not chunk.choices:
                    c.rec.update(input_tokens=chunk.usage.prompt_tokens, output_tokens=chunk.usage.completion_tokens)
        else:
            r = client.completions.create(model=model, prompt="Once upon a time", max_tokens=32)
            c.text(r.choices[0].text)
            c.rec.update(finish_reason=r.choices[0].finish_reason, input_tokens=r.usage.prompt_tokens, output_tokens=r.usage.completion_tokens)
    return c


def embeddings():
    with Call(D, "embeddings", "/v1/embeddings", "all-minilm", False) as c:
        r = client.embeddings.create(model="all-minilm", input=["The food was delicious", "and the waiter..."])
        c.rec.update(input_tokens=r.usage.prompt_tokens, embeddings=len(r.data))
    return c


def models():
    with Call(D, "models", "/v1/models", "", False) as c:
        r = client.models.list()
        c.rec["models"] = [m.id for m in r.data]
    return c


errors = 0
for fn in (lambda: chat_stream(True), lambda: chat_stream(False), chat, lambda: completion(False), lambda: completion(True), embeddings, models):
    if fn().rec["error"]:
        errors += 1
raise SystemExit(1 if errors else 0)
