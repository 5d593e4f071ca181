"""Scripted session with the real `openai` Python client against Ollama's /v1 compat layer.

Calls: chat stream with stream_options.include_usage, chat stream without it, chat (not
streamed), legacy completions (streamed and not), embeddings, models list.
Prints one JSON line per call (see common.py).
"""

import os
import httpx2
import openai

from common import WIRE, Call, openai_usage, parse_args, run_session

args = parse_args(__doc__)
model = args.model or "llama3.2"


def make_client(url):
    # The socket-level hook (common.Wire) under the SDK's own HTTP client (httpx2).
    return openai.OpenAI(
        base_url=url.rstrip("/") + "/v1",
        # A real key when the caller sets one (tests check it never leaves the tracer).
        api_key=os.environ.get("OPENAI_API_KEY", "ollama"),
        max_retries=0,
        http_client=openai.DefaultHttpxClient(transport=WIRE.transport(httpx2)),
    )

D = "openai"
MESSAGES = [{"role": "user", "content": "Write a haiku about the sea."}]


def chat_stream(client, include_usage: bool):
    name = "chat_stream_usage" if include_usage else "chat_stream"
    with Call(D, name, "/v1/chat/completions", model, True) as c:
        kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
        for chunk in client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **kwargs):
            c.chunk()
            for choice in chunk.choices:
                c.text(choice.delta.content, getattr(choice.delta, "reasoning", None))
                for tc in choice.delta.tool_calls or []:
                    c.tool_call(tc.function.name)
                if choice.finish_reason:
                    c.rec["finish_reason"] = choice.finish_reason
            if chunk.usage:
                c.rec.update(openai_usage(chunk.usage))
    return c


def chat(client):
    with Call(D, "chat", "/v1/chat/completions", model, False) as c:
        r = client.chat.completions.create(model=model, messages=MESSAGES)
        m = r.choices[0].message
        c.text(m.content, getattr(m, "reasoning", None))
        c.rec["tool_calls"] = [t.function.name for t in (m.tool_calls or [])]
        c.rec.update(finish_reason=r.choices[0].finish_reason, **openai_usage(r.usage))
    return c


def completion(client, stream: bool):
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
                    c.rec.update(openai_usage(chunk.usage))
        else:
            r = client.completions.create(model=model, prompt="Once upon a time", max_tokens=32)
            c.text(r.choices[0].text)
            c.rec.update(finish_reason=r.choices[0].finish_reason, **openai_usage(r.usage))
    return c


def embeddings(client):
    with Call(D, "embeddings", "/v1/embeddings", "all-minilm", False) as c:
        r = client.embeddings.create(model="all-minilm", input=["The food was delicious", "and the waiter..."])
        c.rec.update(input_tokens=r.usage.prompt_tokens, embeddings=len(r.data))
    return c


def models(client):
    with Call(D, "models", "/v1/models", "", False) as c:
        r = client.models.list()
        c.rec["models"] = [m.id for m in r.data]
    return c


run_session(
    args,
    make_client,
    (
        lambda c: chat_stream(c, True),
        lambda c: chat_stream(c, False),
        chat,
        lambda c: completion(c, False),
        lambda c: completion(c, True),
        embeddings,
        models,
    ),
)
