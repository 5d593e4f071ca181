#!/usr/bin/env bash
# cargo-deny, which scripts/audit.sh runs on the dependency tree (deny.toml). Pinned, built from
# crates.io with its own lock file. Idempotent: no output when the right version is there.
set -euo pipefail
SETUP_TAG=setup-audit
# shellcheck source=scripts/setup-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-common.sh"
VERSION=0.20.2
if command -v cargo-deny >/dev/null 2>&1 && cargo-deny --version 2>/dev/null | grep -q " ${VERSION}\$"; then
  exit 0
fi
say "building cargo-deny ${VERSION}: the supply-chain check of the test command (a few minutes, once)"
quietly cargo install --locked cargo-deny --version "${VERSION}"
