#!/usr/bin/env bash
# cargo-deny, which scripts/audit.sh runs on the dependency tree (deny.toml). Pinned, built from
# crates.io with its own lock file. Idempotent: no output when the right version is there.
set -euo pipefail
VERSION=0.20.2
if command -v cargo-deny >/dev/null 2>&1 && cargo-deny --version 2>/dev/null | grep -q " ${VERSION}\$"; then
  exit 0
fi
echo "[setup-audit] installing cargo-deny ${VERSION} (a few minutes, once)" >&2
cargo install --quiet --locked cargo-deny --version "${VERSION}"
