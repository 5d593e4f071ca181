#!/usr/bin/env bash
# Debian's `prometheus` package: the export tests scrape the tracer's metrics endpoint with a
# real Prometheus server and validate the text with `promtool check metrics`.
# Idempotent: nothing to do (and no output) when both binaries are there. Run as root.
set -euo pipefail
SETUP_TAG=setup-prometheus
# shellcheck source=scripts/setup-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-common.sh"
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  say "not root: cannot install prometheus (its tests will say SKIPPED)"
  exit 0
fi
apt_ensure "a real Prometheus server and promtool for the metrics endpoint's tests" prometheus
# The package starts a system service on :9090; the tests run their own on free ports.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
