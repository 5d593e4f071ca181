#!/usr/bin/env bash
# Records tests/data/captures/real-clients.* : the real ollama / openai / anthropic Python clients
# talking to ollama-standin on 127.0.0.1:11434, captured on `lo` (pcap, Ethernet link type) and
# on `any` (pcapng, LINUX_SLL2), with the stand-in's ground truth and the clients' own view.
#
# Usage: tests/clients/record-capture.sh [OUT_DIR]   (root: tcpdump/dumpcap need it)
# Env:   STANDIN_BIN  prebuilt ollama-standin (default: cargo build, debug profile)
#        PORT         default 11434 (must be free)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/tests/data/captures}
PORT=${PORT:-11434}
NAME=real-clients
say() { echo "[record-capture] $*" >&2; }

# 1. Tools: tcpdump (lo capture) and dumpcap (pcapng of `any`), from Debian.
missing=()
command -v tcpdump >/dev/null || missing+=(tcpdump)
command -v dumpcap >/dev/null || missing+=(wireshark-common)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. The stand-in and the Python venv.
if [ -z "${STANDIN_BIN:-}" ]; then
  (cd "$ROOT" && cargo build -q -p ollama-tracer-tests --bin ollama-standin)
  STANDIN_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/ollama-standin
fi
"$ROOT/scripts/setup-python.sh"
PY=${OLLAMA_TRACER_VENV:-$ROOT/tests/.venv}/bin/python

if ss -ltnH "sport = :$PORT" | grep -q .; then
  say "port $PORT is in use; stop whatever listens there first"
  exit 1
fi
mkdir -p "$OUT"
rm -f "$OUT/$NAME".*
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # file pattern
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  say "timed out waiting for '$2' in $1"; cat "$1" >&2; return 1
}

# 3. Captures first, so the connections' handshakes are in them.
tcpdump -Z root -i lo --immediate-mode -U -s 0 -w "$OUT/$NAME.pcap" "tcp port $PORT" 2>"$work/tcpdump.err" &
pids+=($!)
dumpcap -q -i any -y LINUX_SLL2 -s 0 -f "tcp port $PORT" -w "$OUT/$NAME-any.pcapng" 2>"$work/dumpcap.err" &
pids+=($!)
wait_for "$work/tcpdump.err" "listening on"
sleep 1 # dumpcap prints nothing with -q; give it time to open the socket

# 4. The stand-in (default timing: TTFT 50 ms, 15 ms between chunks).
"$STANDIN_BIN" --listen "127.0.0.1:$PORT" --truth "$OUT/$NAME.truth.jsonl" >"$work/standin.out" 2>&1 &
standin=$!
wait_for "$work/standin.out" "listening on"

# 5. The sessions, one client library after the other.
for s in native openai anthropic; do
  say "session: $s"
  "$PY" "$ROOT/tests/clients/${s}_session.py" --base-url "http://127.0.0.1:$PORT" >>"$OUT/$NAME.clients.jsonl"
done
sleep 1 # let the last FIN/ACKs through

kill -TERM "$standin"; wait "$standin" || true
cleanup
trap - EXIT
"$PY" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null \
  | grep -Ei '^(ollama|openai|anthropic|httpx|httpx2|httpcore|httpcore2|h11|opentelemetry-(api|sdk))==' >"$OUT/$NAME.versions.txt"
{ echo "python==$("$PY" -c 'import platform; print(platform.python_version())')"; tcpdump --version 2>&1 | head -2; dumpcap --version 2>&1 | head -1; } >>"$OUT/$NAME.versions.txt"
say "calls: $(wc -l <"$OUT/$NAME.truth.jsonl") truth, $(wc -l <"$OUT/$NAME.clients.jsonl") client records"
chmod 644 "$OUT"/$NAME*
ls -l "$OUT"/$NAME* >&2
