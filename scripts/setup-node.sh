#!/usr/bin/env bash
# Node.js and the real `ollama` npm client for the live tests (tests/clients/node, pinned by its
# package-lock.json). Idempotent: no output when Node is there and node_modules matches the lock.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$ROOT/tests/clients/node

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "[setup-node] not root: cannot install nodejs and npm (the npm client test needs them)" >&2
    exit 0
  fi
  echo "[setup-node] installing Debian's nodejs and npm" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

# npm writes node_modules/.package-lock.json on install: the same as the lock means up to date.
stamp=$DIR/node_modules/.installed-lock.json
if [ -f "$stamp" ] && cmp -s "$stamp" "$DIR/package-lock.json"; then
  exit 0
fi
echo "[setup-node] npm ci in tests/clients/node" >&2
(cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
cp "$DIR/package-lock.json" "$stamp"
