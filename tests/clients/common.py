"""Shared helpers for the client drivers: timing, JSON-lines output, the stand-in's address.

Every driver prints one JSON object per call to stdout with what the *client* observed:
  driver, call, route, model, stream, t_start_ns (just before the call), t_first_chunk_ns
  (first streamed item handed to us; == t_end_ns when not streamed), t_end_ns, chunks,
  content, thinking, tool_calls, input_tokens, output_tokens, finish_reason, error.
"""

import argparse
import json
import os
import sys
import time


def now_ns() -> int:
    return time.time_ns()


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--base-url",
        default=os.environ.get("STANDIN_URL", "http://127.0.0.1:11434"),
        help="stand-in (or Ollama) base URL, default $STANDIN_URL or http://127.0.0.1:11434",
    )
    p.add_argument("--model", default=None, help="model name to send (default per driver)")
    return p.parse_args()


class Call:
    """Collects one call's observations; `emit()` prints them as a JSON line."""

    def __init__(self, driver: str, call: str, route: str, model: str, stream: bool):
        self.rec = {
            "driver": driver,
            "call": call,
            "route": route,
            "model": model,
            "stream": stream,
            "t_start_ns": now_ns(),
            "t_first_chunk_ns": None,
            "t_end_ns": None,
            "chunks": 0,
            "content": "",
            "thinking": "",
            "tool_calls": [],
            "input_tokens": None,
            "output_tokens": None,
            "finish_reason": None,
            "error": None,
        }

    def chunk(self) -> None:
        if self.rec["t_first_chunk_ns"] is None:
            self.rec["t_first_chunk_ns"] = now_ns()
        self.rec["chunks"] += 1

    def text(self, content=None, thinking=None) -> None:
        if content:
            self.rec["content"] += content
        if thinking:
            self.rec["thinking"] += thinking

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.rec["t_end_ns"] = now_ns()
        if self.rec["t_first_chunk_ns"] is None:
            self.rec["t_first_chunk_ns"] = self.rec["t_end_ns"]
        if exc is not None:
            self.rec["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(self.rec), flush=True)
        # Keep going with the next call: a failed call is data too.
        return True


def finish(failed_calls: int) -> None:
    sys.exit(1 if failed_calls else 0)
