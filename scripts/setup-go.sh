#!/usr/bin/env bash
# Debian's Go toolchain, for the live TLS test that builds a small Go client (tests/clients/go:
# Go's crypto/tls is one of the TLS stacks the tracer probes). Idempotent: no output when `go`
# is there.
set -euo pipefail

if command -v go >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "[setup-go] not root: cannot install golang-go (the Go TLS test needs it)" >&2
  exit 0
fi
echo "[setup-go] installing Debian's golang-go" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go >/dev/null
