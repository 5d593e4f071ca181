#!/usr/bin/env bash
# Creates the Python venvs the tests use: the one the client drivers (tests/clients/) run in —
# the real `ollama`, `openai`, `anthropic` and `opentelemetry-*` packages from PyPI, pinned — and
# tests/.venv-backends with the real trace backends the export tests start (MLflow, Arize
# Phoenix; tests/backends/requirements.txt), kept apart so their large dependency trees never
# move the clients' pins.
# Idempotent: quiet and fast (no network) when each venv already matches its pins.
#
# Env knobs:
#   OLLAMA_TRACER_VENV    where the venv goes (default: <repo>/tests/.venv)
#   OLLAMA_TRACER_BACKENDS_VENV  where the backends venv goes (default: <repo>/tests/.venv-backends)
#   OLLAMA_TRACER_PYTHON  interpreter to build it from (default: python3 on PATH)
#   VERBOSE=1             say so when nothing had to be done
set -euo pipefail
SETUP_TAG=setup-python
# shellcheck source=scripts/setup-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${OLLAMA_TRACER_VENV:-$ROOT/tests/.venv}
PY=${OLLAMA_TRACER_PYTHON:-python3}
REQ=$ROOT/tests/clients/requirements.txt
LOCK=$ROOT/tests/clients/requirements.lock
STAMP=$VENV/.ollama-tracer-stamp

# The stamp records the interpreter and the exact pins: any change rebuilds.
want=$( {
  "$PY" -c 'import sys; print(sys.version)'
  cat "$REQ"
  if [ -f "$LOCK" ]; then cat "$LOCK"; fi
} | sha256sum | cut -d' ' -f1)
backends() {
  local venv=${OLLAMA_TRACER_BACKENDS_VENV:-$ROOT/tests/.venv-backends}
  local req=$ROOT/tests/backends/requirements.txt
  local stamp=$venv/.ollama-tracer-stamp
  local want
  want=$( { "$PY" -c 'import sys; print(sys.version)'; cat "$req"; } | sha256sum | cut -d' ' -f1)
  if [ -x "$venv/bin/mlflow" ] && [ -x "$venv/bin/phoenix" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    if [ "${VERBOSE:-0}" = 1 ]; then say "venv $venv up to date"; fi
    return 0
  fi
  say "creating $venv: MLflow and Arize Phoenix, the trace backends the export tests send to (about 1.3 GB, a few minutes)"
  rm -rf "$venv"
  quietly "$PY" -m venv "$venv"
  quietly "$venv/bin/python" -m pip --disable-pip-version-check --no-input install -r "$req"
  echo "$want" >"$stamp"
}

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
  && "$VENV/bin/python" -c 'import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ("ollama", "openai", "anthropic", "opentelemetry")))' 2>/dev/null; then
  if [ "${VERBOSE:-0}" = 1 ]; then say "venv $VENV up to date"; fi
  backends
  exit 0
fi

if ! "$PY" -m venv --help >/dev/null 2>&1; then
  apt_ensure "$PY has no venv module" python3-venv
fi

say "creating $VENV: the real ollama, openai and anthropic clients (and OpenTelemetry) the tests drive"
rm -rf "$VENV"
quietly "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input -q)
constraints=()
if [ -f "$LOCK" ]; then constraints=(-c "$LOCK"); fi
quietly "${pip[@]}" install "${constraints[@]}" -r "$REQ"
echo "$want" >"$STAMP"
backends
