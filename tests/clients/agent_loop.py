"""A two-turn tool loop, as an OpenTelemetry-instrumented agent runs it, with the real `ollama`
and `openai` clients.

The agent opens an `agent` span; each model call runs in its own client span (`llm turn N`,
kind CLIENT) whose context goes out as W3C `traceparent` / `tracestate` headers, the way OTel
HTTP instrumentations propagate it. Turn 1 offers a `weather` tool and gets a tool call; the
agent runs the tool (a `tool weather` span that sleeps --tool-ms) and sends the result in turn 2.
Streamed (ollama) and not streamed (openai) turns are both covered.

Prints one JSON line per client span: name, trace_id, span_id, parent_span_id, start/end
(ns), and for model calls the traceparent sent and the tool calls received.
"""

import json
import sys
import time

import ollama
import openai
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from common import parse_args


class JsonLines(SpanExporter):
    """Each finished span as a JSON line on stdout."""

    def export(self, spans):
        for s in spans:
            ctx = s.get_span_context()
            rec = {
                "name": s.name,
                "trace_id": format(ctx.trace_id, "032x"),
                "span_id": format(ctx.span_id, "016x"),
                "parent_span_id": format(s.parent.span_id, "016x") if s.parent else None,
                "start_ns": s.start_time,
                "end_ns": s.end_time,
            }
            rec.update({k: v for k, v in (s.attributes or {}).items() if k.startswith("test.")})
            print(json.dumps(rec), flush=True)
        return SpanExportResult.SUCCESS


def parse():
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base-url", required=True)
    p.add_argument("--tool-ms", type=int, default=80)
    p.add_argument("--model", default="llama3.2")
    return p.parse_args()


args = parse()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLines()))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("agent-loop-test")
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOL_RESULT = "Berlin: 15°C, light wind"


def headers():
    """The current span's context as HTTP headers."""
    h = {}
    propagate.inject(h)
    return h


def run_tool(name):
    with tracer.start_as_current_span(f"tool {name}") as span:
        span.set_attribute("test.tool", name)
        time.sleep(args.tool_ms / 1000)
    return TOOL_RESULT


def ollama_loop():
    messages = [{"role": "user", "content": "What's the weather in Berlin?"}]
    with tracer.start_as_current_span("llm turn 1", kind=SpanKind.CLIENT) as span:
        h = headers()
        span.set_attribute("test.traceparent", h["traceparent"])
        client = ollama.Client(host=args.base_url, headers=h)
        calls = []
        content = ""
        for part in client.chat(model=args.model, messages=messages, tools=[WEATHER_TOOL], stream=True):
            content += part.message.content or ""
            calls.extend(part.message.tool_calls or [])
        span.set_attribute("test.tool_calls", [c.function.name for c in calls])
    messages.append({"role": "assistant", "content": content, "tool_calls": [c.model_dump() for c in calls]})
    for c in calls:
        messages.append({"role": "tool", "tool_name": c.function.name, "content": run_tool(c.function.name)})
    with tracer.start_as_current_span("llm turn 2", kind=SpanKind.CLIENT) as span:
        h = headers()
        span.set_attribute("test.traceparent", h["traceparent"])
        client = ollama.Client(host=args.base_url, headers=h)
        answer = ""
        for part in client.chat(model=args.model, messages=messages, tools=[WEATHER_TOOL], stream=True):
            answer += part.message.content or ""
        span.set_attribute("test.answer", answer)


def openai_loop():
    client = openai.OpenAI(base_url=args.base_url.rstrip("/") + "/v1", api_key="sk-test-secret-key-0123456789abcdef", max_retries=0)
    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    with tracer.start_as_current_span("llm turn 1", kind=SpanKind.CLIENT) as span:
        h = headers()
        span.set_attribute("test.traceparent", h["traceparent"])
        r = client.chat.completions.create(model=args.model, messages=messages, tools=[WEATHER_TOOL], extra_headers=h)
        m = r.choices[0].message
        calls = m.tool_calls or []
        span.set_attribute("test.tool_calls", [c.function.name for c in calls])
        span.set_attribute("test.tool_call_ids", [c.id for c in calls])
    messages.append(m.model_dump(exclude_none=True))
    for c in calls:
        messages.append({"role": "tool", "tool_call_id": c.id, "content": run_tool(c.function.name)})
    with tracer.start_as_current_span("llm turn 2", kind=SpanKind.CLIENT) as span:
        h = headers()
        span.set_attribute("test.traceparent", h["traceparent"])
        r = client.chat.completions.create(model=args.model, messages=messages, tools=[WEATHER_TOOL], extra_headers=h)
        span.set_attribute("test.answer", r.choices[0].message.content or "")


for loop in (ollama_loop, openai_loop):
    with tracer.start_as_current_span("agent") as root:
        root.set_attribute("test.client", loop.__name__)
        loop()
provider.shutdown()
sys.exit(0)
