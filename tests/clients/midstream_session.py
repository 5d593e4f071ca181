"""The tracer started while a stream flows: one long streamed chat on an `ollama` client,
printing {"event": "first_chunk"} when its first chunk arrives (the test starts the tracer
then), and, once the test writes a line to stdin, three more calls on the same client — so on
the same keep-alive connection. Prints one JSON line per call (see common.py).
"""

import json
import sys

import httpx
import ollama

from common import WIRE, Call, parse_args

args = parse_args(__doc__)
# 8 s of stream: the tracer starts after its first chunk and must attach before its end, on a
# loaded 2-core machine too (3 s was once not enough while other test binaries ran).
long_model = args.model or "@synth:tokens=400,rate=50/llama3.2"
model = "llama3.2"
D = "midstream"
client = ollama.Client(host=args.base_url, transport=WIRE.transport(httpx))
MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]


def chat_stream(name, m):
    with Call(D, name, "/api/chat", m, True) as c:
        for part in client.chat(model=m, messages=MESSAGES, stream=True):
            c.chunk()
            c.text(part.message.content, part.message.thinking)
            if c.rec["chunks"] == 1 and name == "long_stream":
                print(json.dumps({"event": "first_chunk"}), flush=True)
            if part.done:
                c.rec.update(input_tokens=part.prompt_eval_count, output_tokens=part.eval_count, finish_reason=part.done_reason)
    return c


def chat():
    with Call(D, "chat", "/api/chat", model, False) as c:
        r = client.chat(model=model, messages=MESSAGES)
        c.text(r.message.content, r.message.thinking)
        c.rec.update(input_tokens=r.prompt_eval_count, output_tokens=r.eval_count, finish_reason=r.done_reason)
    return c


def generate_stream():
    with Call(D, "generate_stream", "/api/generate", model, True) as c:
        for part in client.generate(model=model, prompt="Why is the sky blue?", stream=True):
            c.chunk()
            c.text(part.response, part.thinking)
            if part.done:
                c.rec.update(input_tokens=part.prompt_eval_count, output_tokens=part.eval_count, finish_reason=part.done_reason)
    return c


errors = 1 if chat_stream("long_stream", long_model).rec["error"] else 0
sys.stdin.readline()  # the test says when
for fn in (lambda: chat_stream("chat_stream", model), chat, generate_stream):
    if fn().rec["error"]:
        errors += 1
sys.exit(1 if errors else 0)
