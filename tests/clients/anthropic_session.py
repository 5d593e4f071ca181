"""Scripted session with the real `anthropic` Python client against Ollama's /v1/messages.

Calls: a message (not streamed), a streamed message. Prints one JSON line per call (see
common.py); token counts are the ones `message_delta` / the message's `usage` reported.
"""

import os
import anthropic
import httpx2

from common import WIRE, Call, anthropic_usage, parse_args, run_session

args = parse_args(__doc__)
model = args.model or "qwen3-coder"


def make_client(url):
    # The socket-level hook (common.Wire) under the SDK's own HTTP client (httpx2).
    return anthropic.Anthropic(
        base_url=url.rstrip("/"),
        # A real key when the caller sets one (tests check it never leaves the tracer).
        api_key=os.environ.get("ANTHROPIC_API_KEY", "ollama"),
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(transport=WIRE.transport(httpx2)),
    )

D = "anthropic"
MESSAGES = [{"role": "user", "content": "Say hello in one sentence."}]


def message(client):
    with Call(D, "message", "/v1/messages", model, False) as c:
        r = client.messages.create(model=model, max_tokens=256, messages=MESSAGES)
        for block in r.content or []:
            if block.type == "text":
                c.text(block.text)
            elif block.type == "thinking":
                c.text(thinking=block.thinking)
            elif block.type == "tool_use":
                c.rec["tool_calls"].append(block.name)
        c.rec.update(finish_reason=r.stop_reason, **anthropic_usage(r.usage))
    return c


def message_stream(client):
    with Call(D, "message_stream", "/v1/messages", model, True) as c:
        for event in client.messages.create(model=model, max_tokens=256, messages=MESSAGES, stream=True):
            c.chunk()
            if event.type == "content_block_delta":
                d = event.delta
                if d.type == "text_delta":
                    c.text(d.text)
                elif d.type == "thinking_delta":
                    c.text(thinking=d.thinking)
            elif event.type == "content_block_start" and event.content_block.type == "tool_use":
                c.tool_call(event.content_block.name)
            elif event.type == "message_delta":
                c.rec.update(finish_reason=event.delta.stop_reason, **anthropic_usage(event.usage))
    return c


run_session(args, make_client, (message, message_stream))
