"""A two-turn conversation per API with the real `ollama`, `openai` and `anthropic` clients,
against a server that reports prompt-cache hits (Ollama >= 0.33, or the stand-in's emulation):
turn 1 has nothing cached, turn 2 (streamed) resends turn 1 and extends it, and is then sent
again (not streamed) — its whole history cached. Native chat, OpenAI chat completions, the
Responses API and Anthropic messages. The stand-in synthesises these answers (`@synth` model
prefix: no recording has cache counts). Prints one JSON line per call (see common.py), with
`cache_read_input_tokens` as each client reports it (the ollama client does not expose it).
"""

import os

import anthropic
import httpx
import httpx2
import ollama
import openai

from common import WIRE, Call, anthropic_usage, openai_usage, parse_args, run_session

args = parse_args(__doc__)
SYNTH = "@synth:tokens=4/"
TURN1 = [{"role": "user", "content": "Why is the sky blue? Answer in one sentence."}]
TURN2 = TURN1 + [
    {"role": "assistant", "content": "Because of Rayleigh scattering."},
    {"role": "user", "content": "And why are sunsets red then?"},
]


class Clients:
    def __init__(self, url):
        # Models of their own per run: a warm-up run on the same server must not leave them
        # cached.
        self.tag = os.urandom(3).hex()
        self.ollama = ollama.Client(host=url, transport=WIRE.transport(httpx))
        self.openai = openai.OpenAI(
            base_url=url.rstrip("/") + "/v1",
            api_key=os.environ.get("OPENAI_API_KEY", "ollama"),
            max_retries=0,
            http_client=openai.DefaultHttpxClient(transport=WIRE.transport(httpx2)),
        )
        self.anthropic = anthropic.Anthropic(
            base_url=url.rstrip("/"),
            api_key=os.environ.get("ANTHROPIC_API_KEY", "ollama"),
            max_retries=0,
            http_client=anthropic.DefaultHttpxClient(transport=WIRE.transport(httpx2)),
        )


def native(turn, messages, stream):
    def call(clients):
        model = f"{SYNTH}cache-native-{clients.tag}"
        with Call("cache", f"native_turn{turn}", "/api/chat", model, stream) as c:
            if stream:
                for part in clients.ollama.chat(model=model, messages=messages, stream=True):
                    c.chunk()
                    c.text(part.message.content, part.message.thinking)
                    if part.done:
                        c.rec.update(input_tokens=part.prompt_eval_count, output_tokens=part.eval_count, finish_reason=part.done_reason)
            else:
                r = clients.ollama.chat(model=model, messages=messages)
                c.text(r.message.content, r.message.thinking)
                c.rec.update(input_tokens=r.prompt_eval_count, output_tokens=r.eval_count, finish_reason=r.done_reason)
        return c

    return call


def chat(turn, messages, stream):
    def call(clients):
        model = f"{SYNTH}cache-openai-{clients.tag}"
        with Call("cache", f"openai_chat_turn{turn}", "/v1/chat/completions", model, stream) as c:
            if stream:
                kw = {"stream_options": {"include_usage": True}}
                for chunk in clients.openai.chat.completions.create(model=model, messages=messages, stream=True, **kw):
                    c.chunk()
                    for choice in chunk.choices:
                        c.text(choice.delta.content, getattr(choice.delta, "reasoning", None))
                        if choice.finish_reason:
                            c.rec["finish_reason"] = choice.finish_reason
                    if chunk.usage:
                        c.rec.update(openai_usage(chunk.usage))
            else:
                r = clients.openai.chat.completions.create(model=model, messages=messages)
                c.text(r.choices[0].message.content, getattr(r.choices[0].message, "reasoning", None))
                c.rec.update(finish_reason=r.choices[0].finish_reason, **openai_usage(r.usage))
        return c

    return call


def responses(turn, messages, stream):
    def usage(u):
        details = getattr(u, "input_tokens_details", None)
        return {
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cache_read_input_tokens": getattr(details, "cached_tokens", None) if details else None,
        }

    def call(clients):
        model = f"{SYNTH}cache-responses-{clients.tag}"
        with Call("cache", f"responses_turn{turn}", "/v1/responses", model, stream) as c:
            if stream:
                for event in clients.openai.responses.create(model=model, input=messages, stream=True):
                    c.chunk()
                    if event.type == "response.output_text.delta":
                        c.text(event.delta)
                    elif event.type == "response.completed":
                        c.rec.update(finish_reason=event.response.status, **usage(event.response.usage))
            else:
                r = clients.openai.responses.create(model=model, input=messages)
                c.text(r.output_text)
                c.rec.update(finish_reason=r.status, **usage(r.usage))
        return c

    return call


def messages_api(turn, messages, stream):
    def call(clients):
        model = f"{SYNTH}cache-anthropic-{clients.tag}"
        with Call("cache", f"anthropic_turn{turn}", "/v1/messages", model, stream) as c:
            if stream:
                for event in clients.anthropic.messages.create(model=model, max_tokens=64, messages=messages, stream=True):
                    c.chunk()
                    if event.type == "content_block_delta" and event.delta.type == "text_delta":
                        c.text(event.delta.text)
                    elif event.type == "message_delta":
                        c.rec.update(finish_reason=event.delta.stop_reason, **anthropic_usage(event.usage))
            else:
                r = clients.anthropic.messages.create(model=model, max_tokens=64, messages=messages)
                for block in r.content or []:
                    if block.type == "text":
                        c.text(block.text)
                c.rec.update(finish_reason=r.stop_reason, **anthropic_usage(r.usage))
        return c

    return call


CALLS = tuple(
    make(turn, msgs, stream)
    for make in (native, chat, responses, messages_api)
    for (turn, msgs, stream) in ((1, TURN1, False), (2, TURN2, True), (3, TURN2, False))
)

run_session(args, Clients, CALLS)
