"""Shared helpers for the client drivers: timing, JSON-lines output, the stand-in's address.

Every driver prints one JSON object per call to stdout with what the *client* observed:
  driver, call, route, model, stream, t_start_ns (just before the call), t_first_chunk_ns
  (first streamed item handed to us; == t_end_ns when not streamed), t_end_ns, chunks,
  content, thinking, tool_calls, input_tokens, output_tokens, finish_reason, error.

Those SDK-level times include the client library's own work (building the request, opening
the connection, parsing): 1 to 28 ms were seen. So each driver also hooks the socket under the
SDK (a network backend wrapped around httpcore's, see `Wire`) and reports wire-level times:
  local_addr, local_port the client's end of the connection the call used
  t_request_write_ns     just before the first byte of the request went to the kernel
  t_first_output_read_ns streamed answers: when the bytes that completed the first stream
                         unit (NDJSON line, SSE event) carrying output (content,
                         thinking/reasoning or a tool call) reached the client's socket (the
                         kernel's receive time), found in the bytes read — not when the SDK
                         handed it over (some SDKs' SSE parsers hold an event until the next
                         one arrives)
  t_last_read_ns         when the last read of the response returned
"""

import argparse
import json
import os
import socket
import struct
import sys
import threading
import time

# The wire reader threads (see _TimedStream) need the GIL within a fraction of a millisecond.
sys.setswitchinterval(0.0002)


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
    p.add_argument(
        "--warmup-url",
        default=None,
        help="run every call against this URL first, printing nothing: the SDK's one-time work "
        "(imports, building its models on first use) is then done before anything is measured",
    )
    return p.parse_args()


def run_session(args, make_client, calls) -> None:
    """Runs `calls` (functions of a client, each returning its Call) against --warmup-url
    without printing, if given, then against --base-url; exits 1 if a measured call failed."""
    if args.warmup_url:
        WIRE.quiet = True
        warm = make_client(args.warmup_url)
        for fn in calls:
            fn(warm)
        WIRE.quiet = False
    client = make_client(args.base_url)
    errors = sum(1 for fn in calls if fn(client).rec["error"])
    sys.exit(1 if errors else 0)


# Linux: SO_TIMESTAMPNS (SCM_TIMESTAMPNS): the kernel's receive time of the data in each
# recvmsg, CLOCK_REALTIME. Python has no constant for it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


class _TimedStream:
    """An httpcore network stream that logs when each request write starts and when response
    bytes reached the client.

    Reads: a reader thread receives from the socket as soon as bytes arrive and the SDK's
    `read()` takes from what it gathered, so an SDK busy parsing the previous event (seen: 7 ms
    when building its models on first use) does not delay the reading. Each receive is stamped
    with the kernel's receive time (SO_TIMESTAMPNS), so the thread waiting for the GIL does not
    delay the stamp either; when one receive gathers several packets the kernel reports the
    last one's time."""

    def __init__(self, inner, wire: "Wire"):
        self._inner = inner
        self._wire = wire
        sock = inner.get_extra_info("socket")
        self._sock = sock
        name = sock.getsockname()
        self.local = (name[0], name[1])
        self.local_port = name[1]
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        # httpcore or httpcore2, whichever made `inner`: its exceptions for ours.
        mod = sys.modules[type(inner).__module__.split(".")[0]]
        self._read_timeout = getattr(mod, "ReadTimeout", TimeoutError)
        self._read_error = getattr(mod, "ReadError", OSError)
        self._cond = threading.Condition()
        self._buf = bytearray()
        self._eof = False
        self._exc = None
        threading.Thread(target=self._pump, name=f"wire-{self.local_port}", daemon=True).start()

    def _recv(self):
        while True:
            try:
                data, anc, _, _ = self._sock.recvmsg(1 << 16, socket.CMSG_SPACE(16))
            except TimeoutError:
                continue  # httpcore set a timeout on the socket for its own calls
            t = now_ns()
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    t = sec * 1_000_000_000 + nsec
            return data, t

    def _pump(self):
        try:
            while True:
                try:
                    data, t = self._recv()
                except OSError as e:
                    raise self._read_error(str(e)) from e
                with self._cond:
                    if data:
                        self._wire.log("r", self.local, data, t)
                        self._buf += data
                    else:
                        self._eof = True
                    self._cond.notify_all()
                if not data:
                    return
        except BaseException as e:  # handed to the reader
            with self._cond:
                self._exc = e
                self._cond.notify_all()

    def write(self, buffer, timeout=None):
        if buffer:
            self._wire.log("w", self.local, b"", now_ns())
        return self._inner.write(buffer, timeout)

    def read(self, max_bytes, timeout=None):
        with self._cond:
            if not self._cond.wait_for(lambda: self._buf or self._eof or self._exc is not None, timeout):
                raise self._read_timeout("timed out")
            if self._buf:
                out = bytes(self._buf[:max_bytes])
                del self._buf[:max_bytes]
                return out
            if self._exc is not None:
                raise self._exc
            return b""

    def close(self):
        # Wakes the reader thread's recv (close alone would not).
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._inner.close()

    def get_extra_info(self, info):
        if info == "is_readable":
            # httpcore asks before reusing an idle connection: data or EOF means "dropped".
            with self._cond:
                return bool(self._buf) or self._eof or self._exc is not None
        return self._inner.get_extra_info(info)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _TimedBackend:
    """An httpcore network backend whose TCP streams are `_TimedStream`s."""

    def __init__(self, inner, wire: "Wire"):
        self._inner = inner
        self._wire = wire

    def connect_tcp(self, *args, **kwargs):
        return _TimedStream(self._inner.connect_tcp(*args, **kwargs), self._wire)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class Wire:
    """Socket-level event log of one driver (the drivers are single-threaded: no locking)."""

    def __init__(self):
        self.events = []  # (kind "w"/"r", t_ns, (local address, port), bytes read)
        self.quiet = False  # warm-up: records are not printed

    def log(self, kind: str, port, data: bytes, t_ns: int) -> None:
        self.events.append((kind, t_ns, port, data))

    def transport(self, httpx_module):
        """An `HTTPTransport` of `httpx_module` (httpx or httpx2) with timed sockets."""
        t = httpx_module.HTTPTransport()
        pool = t._pool
        if not hasattr(pool, "_network_backend"):
            raise RuntimeError(f"{httpx_module.__name__}: no _network_backend on the pool; pin changed?")
        pool._network_backend = _TimedBackend(pool._network_backend, self)
        return t

    def mark(self) -> int:
        return len(self.events)



def _dechunk(body: bytes):
    """De-chunks an HTTP/1.1 chunked body: (data, offsets) with the position in `body` of each
    data byte. Stops quietly at a cut-short chunk."""
    data, offsets, i = bytearray(), [], 0
    while True:
        eol = body.find(b"\r\n", i)
        if eol < 0:
            break
        try:
            size = int(body[i:eol].split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        start = eol + 2
        piece = body[start : start + size]
        data += piece
        offsets.extend(range(start, start + len(piece)))
        i = start + size + 2
    return bytes(data), offsets


def _nonempty(*values) -> bool:
    return any(v not in (None, "", [], {}) for v in values)


def _has_output(obj) -> bool:
    """Whether one stream unit carries output, in any of the APIs' shapes."""
    if not isinstance(obj, dict):
        return False
    msg = obj.get("message") if isinstance(obj.get("message"), dict) else {}
    if _nonempty(obj.get("response"), obj.get("thinking"), msg.get("content"), msg.get("thinking"), msg.get("tool_calls")):
        return True  # native
    for ch in obj.get("choices") or []:
        d = ch.get("delta") or {}
        if _nonempty(ch.get("text"), d.get("content"), d.get("reasoning"), d.get("tool_calls")):
            return True  # OpenAI chat / completions
    t = obj.get("type", "")
    if t == "content_block_delta":
        d = obj.get("delta") or {}
        return _nonempty(d.get("text"), d.get("thinking"), d.get("partial_json"))  # Anthropic
    if t == "content_block_start":
        return (obj.get("content_block") or {}).get("type") == "tool_use"
    return t.startswith("response.") and t.endswith(".delta") and _nonempty(obj.get("delta"))  # Responses


def first_output_read(reads):
    """`reads`: [(t_ns, bytes)] of one response in order. The time of the read that completed
    the first stream unit carrying output, or None."""
    raw = b"".join(d for _, d in reads)
    ends, pos = [], 0
    for t, d in reads:
        pos += len(d)
        ends.append((pos, t))
    start = raw.find(b"HTTP/1.")  # a previous response's unread tail may come first
    head_end = raw.find(b"\r\n\r\n", max(start, 0))
    if start < 0 or head_end < 0:
        return None
    head = raw[start:head_end].lower()
    body_at = head_end + 4
    if b"transfer-encoding: chunked" in head:
        body, offsets = _dechunk(raw[body_at:])
        offsets = [body_at + o for o in offsets]
    else:
        body = raw[body_at:]
        offsets = list(range(body_at, len(raw)))
    sse = b"text/event-stream" in head
    sep = b"\n\n" if sse else b"\n"
    i = 0
    while True:
        j = body.find(sep, i)
        if j < 0:
            return None
        unit, i = body[i:j], j + len(sep)
        if sse:
            unit = b"".join(line[5:].lstrip() for line in unit.split(b"\n") if line.startswith(b"data:"))
        try:
            obj = json.loads(unit)
        except ValueError:
            continue
        if _has_output(obj):
            last = offsets[i - 1] + 1  # raw position just past the unit (separator included)
            return next(t for e, t in ends if e >= last)


# One per driver process: every client a driver builds goes through it.
WIRE = Wire()


class Call:
    """Collects one call's observations; `emit()` prints them as a JSON line."""

    def __init__(self, driver: str, call: str, route: str, model: str, stream: bool):
        self._mark = WIRE.mark()
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
            "local_addr": None,
            "local_port": None,
            "t_request_write_ns": None,
            "t_first_output_read_ns": None,
            "t_last_read_ns": None,
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

    def tool_call(self, name: str) -> None:
        self.rec["tool_calls"].append(name)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.rec["t_end_ns"] = now_ns()
        if self.rec["t_first_chunk_ns"] is None:
            self.rec["t_first_chunk_ns"] = self.rec["t_end_ns"]
        mine = list(WIRE.events[self._mark :])
        writes = [e for e in mine if e[0] == "w"]
        reads = [e for e in mine if e[0] == "r"]
        if writes:
            self.rec["t_request_write_ns"] = writes[0][1]
            self.rec["local_addr"], self.rec["local_port"] = writes[0][2]
        if reads:
            self.rec["t_last_read_ns"] = reads[-1][1]
        if self.rec["stream"] and reads:
            # Only streamed answers have a time to first chunk.
            self.rec["t_first_output_read_ns"] = first_output_read([(t, d) for _, t, _, d in reads])
        if os.environ.get("WIRE_DEBUG"):
            t0 = self.rec["t_request_write_ns"] or 0
            for kind, t, _, d in mine:
                print(f"# {kind} {(t - t0) / 1e6:.3f} ms {bytes(d[:200])!r}", file=sys.stderr)
        if exc is not None:
            self.rec["error"] = f"{type(exc).__name__}: {exc}"
        if not WIRE.quiet:
            print(json.dumps(self.rec), flush=True)
        # Keep going with the next call: a failed call is data too.
        return True
