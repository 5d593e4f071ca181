#!/usr/bin/env bash
# Node.js and the real `ollama` npm client for the live tests (tests/clients/node, pinned by its
# package-lock.json). Idempotent: no output when Node is there and node_modules matches the lock.
set -euo pipefail
SETUP_TAG=setup-node
# shellcheck source=scripts/setup-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-common.sh"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$ROOT/tests/clients/node

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    say "not root: cannot install nodejs and npm (the npm client test needs them)"
    exit 0
  fi
  apt_ensure "Node.js and npm: the live test with the real ollama npm client" nodejs npm
fi

# npm writes node_modules/.package-lock.json on install: the same as the lock means up to date.
stamp=$DIR/node_modules/.installed-lock.json
if [ -f "$stamp" ] && cmp -s "$stamp" "$DIR/package-lock.json"; then
  exit 0
fi
say "npm ci in tests/clients/node: the real ollama npm client the live test drives"
(cd "$DIR" && quietly npm ci --no-audit --no-fund --loglevel=error)
cp "$DIR/package-lock.json" "$stamp"
