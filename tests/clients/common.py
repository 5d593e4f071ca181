"""Shared helpers for the client drivers: timing, JSON-lines output, the stand-in's address.

Every driver prints one JSON object per call to stdout with what the *client* observed:
  driver, call, route, model, stream, t_start_ns (just before the call), t_first_chunk_ns
  (first streamed item handed to us; == t_end_ns when not streamed), t_end_ns, chunks,
  content, thinking, tool_calls, input_tokens, output_tokens, finish_reason, error.

Those SDK-level times include the client library's own work (building the request, opening
the connection, parsing): 1 to 28 ms were seen. So each driver also hooks the socket under the
SDK (a network backend wrapped around httpcore's, see `Wire`) and reports wire-level times:
  local_addr, local_port the client's end of the connection the call used
  t_request_write_ns     when the request's first write left the socket (the kernel's
                         transmit time; write_stamp says "kernel", or "user" when the kernel
                         gave none and the time just before the send was taken)
  t_first_output_read_ns streamed answers: when the bytes that completed the first stream
                         unit (NDJSON line, SSE event) carrying output (content,
                         thinking/reasoning or a tool call) reached the client's socket (the
                         kernel's receive time), found in the bytes read — not when the SDK
                         handed it over (some SDKs' SSE parsers hold an event until the next
                         one arrives). first_output_exact: false when that receive also took
                         later bytes (the reader came late): the time is then an upper bound
                         and t_first_output_prev_read_ns (the receive before) a lower one
  t_last_read_ns         when the last read of the response returned

Over https:// (the stand-in behind TLS: $STANDIN_CA names the CA to trust) the connection is
httpcore's own TLS stream — Python's ssl on the system's OpenSSL, SSL_write/SSL_read on a
socket BIO, as every client of these SDKs uses it — and the times are the client's at that
layer: t_request_write_ns just before the request's first write, each read's time just after
it returned the plaintext (write_stamp "tls"). That is what the client saw, and what the
tracer's TLS probes see.
"""

import argparse
import json
import os
import select
import socket
import ssl
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


# Linux socket timestamps (Python has no constants for them), CLOCK_REALTIME:
# SO_TIMESTAMPNS: the kernel's receive time of the data in each recvmsg.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
# SO_TIMESTAMPING, transmit side: for each send, the time its last byte entered the device
# queue (TX_SCHED), read back from the error queue; OPT_ID tags it with that byte's number.
SO_TIMESTAMPING = getattr(socket, "SO_TIMESTAMPING", 37)
SOF_TIMESTAMPING_TX_SCHED = 1 << 8
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11
SCM_TSTAMP_SCHED = 1


class _TimedStream:
    """An httpcore network stream that logs when each request write left the socket and when
    response bytes reached it.

    A reader thread owns every receive on the socket (waiting in poll, so httpcore's socket
    timeouts do not matter): response bytes as soon as they arrive — the SDK's `read()` takes
    from what it gathered, so an SDK busy parsing the previous event (seen: 7 ms when building
    its models on first use) does not delay the reading — each stamped with the kernel's
    receive time (SO_TIMESTAMPNS), so waiting for the GIL does not delay the stamp either (when
    one receive gathers several packets the kernel reports the last one's time); and the
    kernel's transmit times (SO_TIMESTAMPING, TX_SCHED, from the error queue) of each write's
    last byte, with which `write()` stamps the request — a request head is one packet — so a
    thread preempted between taking a time and sending does not skew it."""

    def __init__(self, inner, wire: "Wire"):
        self._inner = inner
        self._wire = wire
        sock = inner.get_extra_info("socket")
        self._sock = sock
        name = sock.getsockname()
        self.local = (name[0], name[1])
        self.local_port = name[1]
        self._pumping = False  # the reader starts with the first read or write (not before a TLS handshake)
        self._sent = 0  # bytes written so far: OPT_ID numbers them from here
        self._tx = {}  # byte number (mod 2^32) -> kernel TX_SCHED time
        # httpcore or httpcore2, whichever made `inner`: its exceptions for ours.
        mod = sys.modules[type(inner).__module__.split(".")[0]]
        self._read_timeout = getattr(mod, "ReadTimeout", TimeoutError)
        self._read_error = getattr(mod, "ReadError", OSError)
        self._cond = threading.Condition()
        self._buf = bytearray()
        self._eof = False
        self._exc = None

    def _start(self):
        """Timestamps on, and the reader thread, before the first read or write."""
        if self._pumping:
            return
        self._pumping = True
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock.setsockopt(
            socket.SOL_SOCKET,
            SO_TIMESTAMPING,
            SOF_TIMESTAMPING_TX_SCHED | SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY,
        )
        threading.Thread(target=self._pump, name=f"wire-{self.local_port}", daemon=True).start()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        """https://: httpcore's own TLS stream on this socket, timed at the TLS layer."""
        return _TimedTlsStream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._wire, self.local)

    def _errqueue(self) -> bool:
        """Takes one entry off the error queue (a TX timestamp); False when there was none."""
        try:
            _, anc, _, _ = self._sock.recvmsg(1, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return False
        ts = info = data = None
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING and len(cdata) >= 16:
                sec, nsec = struct.unpack("qq", cdata[:16])
                ts = sec * 1_000_000_000 + nsec
            elif len(cdata) >= 16:  # struct sock_extended_err (IP_RECVERR / IPV6_RECVERR)
                _, _, _, _, _, info, data = struct.unpack("IBBBBII", cdata[:16])
        if ts and info == SCM_TSTAMP_SCHED:
            with self._cond:
                self._tx[data] = ts
                self._cond.notify_all()
        return True

    def _pump(self):
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        try:
            while True:
                events = 0
                for _, ev in poller.poll():
                    events |= ev
                # (The error queue first: poll reports it as POLLERR; a real socket error
                # leaves it empty and surfaces in the receive below.)
                if events & select.POLLERR and self._errqueue():
                    continue
                if not events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    continue
                try:
                    data, anc, _, _ = self._sock.recvmsg(1 << 16, socket.CMSG_SPACE(16))
                except (BlockingIOError, InterruptedError, TimeoutError):
                    continue
                except OSError as e:
                    raise self._read_error(str(e)) from e
                t = now_ns()
                for level, kind, cdata in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                        sec, nsec = struct.unpack("qq", cdata[:16])
                        t = sec * 1_000_000_000 + nsec
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
        if not buffer:
            return self._inner.write(buffer, timeout)
        self._start()
        t = now_ns()
        self._inner.write(buffer, timeout)
        self._sent += len(buffer)
        last = (self._sent - 1) & 0xFFFFFFFF
        # On loopback and veth the timestamp is queued before send returns; allow a moment.
        with self._cond:
            self._cond.wait_for(lambda: last in self._tx, 0.05)
            kernel = self._tx.pop(last, None)
            self._tx.clear()
        # (The event's data says where the time came from: b"k" the kernel, b"" user space.)
        self._wire.log("w", self.local, b"k" if kernel else b"", kernel or t)
        return None

    def read(self, max_bytes, timeout=None):
        self._start()
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
        if info == "is_readable" and self._pumping:
            # httpcore asks before reusing an idle connection: data or EOF means "dropped".
            with self._cond:
                return bool(self._buf) or self._eof or self._exc is not None
        return self._inner.get_extra_info(info)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _TimedTlsStream:
    """httpcore's TLS stream (an `ssl.SSLSocket`: SSL_write_ex / SSL_read_ex of the system's
    OpenSSL on the socket's descriptor), with the client's times at that layer: just before each
    write, just after each read returned its plaintext. Reads stay on the SDK's thread, as
    without the hook: an SSL object is not for two threads at once."""

    def __init__(self, inner, wire: "Wire", local):
        self._inner = inner
        self._wire = wire
        self.local = local

    def write(self, buffer, timeout=None):
        t = now_ns()
        self._inner.write(buffer, timeout)
        if buffer:
            self._wire.log("w", self.local, b"t", t)

    def read(self, max_bytes, timeout=None):
        data = self._inner.read(max_bytes, timeout)
        if data:
            self._wire.log("r", self.local, data, now_ns())
        return data

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
        # The stand-in behind TLS: its test CA ($STANDIN_CA), trusted by this client only.
        ca = os.environ.get("STANDIN_CA")
        t = httpx_module.HTTPTransport(verify=ssl.create_default_context(cafile=ca)) if ca else httpx_module.HTTPTransport()
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
    """`reads`: [(t_ns, bytes)] of one response in order. For the first stream unit carrying
    output: (time of the read that completed it, whether that time is exact, time of the read
    before), or None.

    The kernel stamps a receive with the time of the last packet it took in, and it merges
    packets that queue up unread. So the time is the unit's own only when the read ended with
    the unit (its HTTP chunk); when the read also took later bytes (the reader came late) it is
    an upper bound, and the read before is a lower bound."""
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
    chunked = b"transfer-encoding: chunked" in head
    if chunked:
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
            k = next(n for n, (e, _) in enumerate(ends) if e >= last)
            # (A unit ends its HTTP chunk: the chunk's CRLF follows in the same write.)
            exact = ends[k][0] <= last + (2 if chunked else 0)
            return ends[k][1], exact, ends[k - 1][1] if k > 0 else None


# One per driver process: every client a driver builds goes through it.
WIRE = Wire()


def openai_usage(u) -> dict:
    """Token counts from an OpenAI `usage` (cache hits: `prompt_tokens_details.cached_tokens`,
    Ollama ≥ 0.33, already part of `prompt_tokens`)."""
    details = getattr(u, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details else None
    return {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens, "cache_read_input_tokens": cached}


def anthropic_usage(u) -> dict:
    """Token counts from an Anthropic `usage`, the input as the GenAI conventions total it:
    Anthropic's `input_tokens` leaves out the cache hits (`cache_read_input_tokens`)."""
    cached = getattr(u, "cache_read_input_tokens", None)
    total = None if u.input_tokens is None else u.input_tokens + (cached or 0)
    return {"input_tokens": total, "output_tokens": u.output_tokens, "cache_read_input_tokens": cached}


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
            "cache_read_input_tokens": None,
            "finish_reason": None,
            "error": None,
            "local_addr": None,
            "local_port": None,
            "t_request_write_ns": None,
            "write_stamp": None,
            "t_first_output_read_ns": None,
            "first_output_exact": None,
            "t_first_output_prev_read_ns": None,
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
            self.rec["write_stamp"] = {b"k": "kernel", b"t": "tls"}.get(writes[0][3], "user")
            self.rec["local_addr"], self.rec["local_port"] = writes[0][2]
        if reads:
            self.rec["t_last_read_ns"] = reads[-1][1]
        if self.rec["stream"] and reads:
            # Only streamed answers have a time to first chunk.
            first = first_output_read([(t, d) for _, t, _, d in reads])
            if first:
                (
                    self.rec["t_first_output_read_ns"],
                    self.rec["first_output_exact"],
                    self.rec["t_first_output_prev_read_ns"],
                ) = first
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
