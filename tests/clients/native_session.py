"""Scripted session with the real `ollama` Python client (native /api routes).

Calls: chat stream, chat, generate stream, generate, embed, legacy embeddings, chat with tools
(turn 1: the model calls `weather`; turn 2: the tool result goes back), a thinking chat.
Prints one JSON line per call (see common.py).
"""

import httpx
import ollama

from common import WIRE, Call, parse_args, run_session

args = parse_args(__doc__)
model = args.model or "llama3.2"
D = "native"


def make_client(url):
    # The socket-level hook (common.Wire) under ollama's own httpx client.
    return ollama.Client(host=url, transport=WIRE.transport(httpx))


def chat_stream(client):
    with Call(D, "chat_stream", "/api/chat", model, True) as c:
        for part in client.chat(model=model, messages=[{"role": "user", "content": "Why is the sky blue?"}], stream=True):
            c.chunk()
            c.text(part.message.content, part.message.thinking)
            if part.done:
                c.rec.update(input_tokens=part.prompt_eval_count, output_tokens=part.eval_count, finish_reason=part.done_reason)
    return c


def chat(client):
    with Call(D, "chat", "/api/chat", model, False) as c:
        r = client.chat(model=model, messages=[{"role": "user", "content": "Say hello."}])
        c.text(r.message.content, r.message.thinking)
        c.rec.update(input_tokens=r.prompt_eval_count, output_tokens=r.eval_count, finish_reason=r.done_reason)
    return c


def generate_stream(client):
    with Call(D, "generate_stream", "/api/generate", model, True) as c:
        for part in client.generate(model=model, prompt="Why is the sky blue?", stream=True):
            c.chunk()
            c.text(part.response, part.thinking)
            if part.done:
                c.rec.update(input_tokens=part.prompt_eval_count, output_tokens=part.eval_count, finish_reason=part.done_reason)
    return c


def generate(client):
    with Call(D, "generate", "/api/generate", model, False) as c:
        r = client.generate(model=model, prompt="Say hello.")
        c.text(r.response, r.thinking)
        c.rec.update(input_tokens=r.prompt_eval_count, output_tokens=r.eval_count, finish_reason=r.done_reason)
    return c


def embed(client):
    with Call(D, "embed", "/api/embed", "all-minilm", False) as c:
        r = client.embed(model="all-minilm", input="The sky is blue because of Rayleigh scattering")
        c.rec.update(input_tokens=r.prompt_eval_count, embeddings=len(r.embeddings))
    return c


def embeddings_legacy(client):
    with Call(D, "embeddings_legacy", "/api/embeddings", "all-minilm", False) as c:
        r = client.embeddings(model="all-minilm", prompt="The sky is blue")
        c.rec.update(embeddings=1 if r.embedding else 0)
    return c


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Gets current weather for a location",
        "parameters": {
            "type": "object",
            "properties": {
                "latitude": {"type": "string", "description": "Latitude (e.g., 52.5200)"},
                "longitude": {"type": "string", "description": "Longitude (e.g., 13.4050)"},
            },
            "required": ["latitude", "longitude"],
        },
    },
}


def chat_tools(client):
    messages = [{"role": "user", "content": "What's the weather in Berlin? (52.5200, 13.4050)"}]
    calls = []
    with Call(D, "chat_tools_call", "/api/chat", model, False) as c:
        r = client.chat(model=model, messages=messages, tools=[WEATHER_TOOL])
        calls = r.message.tool_calls or []
        c.rec["tool_calls"] = [t.function.name for t in calls]
        c.text(r.message.content)
        c.rec.update(input_tokens=r.prompt_eval_count, output_tokens=r.eval_count, finish_reason=r.done_reason)
    messages.append({"role": "assistant", "content": "", "tool_calls": [t.model_dump() for t in calls]})
    for t in calls:
        messages.append({"role": "tool", "tool_name": t.function.name, "content": "Current weather in Berlin: 15°C, wind 10 km/h"})
    with Call(D, "chat_tools_result", "/api/chat", model, False) as c:
        r = client.chat(model=model, messages=messages, tools=[WEATHER_TOOL])
        c.text(r.message.content)
        c.rec["tool_calls"] = [t.function.name for t in (r.message.tool_calls or [])]
        c.rec.update(input_tokens=r.prompt_eval_count, output_tokens=r.eval_count, finish_reason=r.done_reason)
    return c


def chat_thinking(client):
    with Call(D, "chat_thinking_stream", "/api/chat", "qwen3", True) as c:
        for part in client.chat(model="qwen3", messages=[{"role": "user", "content": "Count from 1 to 5."}], think=True, stream=True):
            c.chunk()
            c.text(part.message.content, part.message.thinking)
            if part.done:
                c.rec.update(input_tokens=part.prompt_eval_count, output_tokens=part.eval_count, finish_reason=part.done_reason)
    return c


run_session(args, make_client, (chat_stream, chat, generate_stream, generate, embed, embeddings_legacy, chat_tools, chat_thinking))
