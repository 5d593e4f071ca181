#!/usr/bin/env bash
# Everything building, running and testing ollama-tracer needs, on a fresh Debian 12 with rustup:
# what `cargo xtask test` installs. `cargo xtask run` installs only the first step
# (scripts/setup-ebpf-toolchain.sh: what building and running need).
# Idempotent: a few quick checks and no output when all is present. Run as root.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup-ebpf-toolchain.sh"
bash "$ROOT/scripts/setup-test-tools.sh"
bash "$ROOT/scripts/setup-python.sh"
bash "$ROOT/scripts/setup-prometheus.sh"
bash "$ROOT/scripts/setup-audit.sh"
bash "$ROOT/scripts/setup-fuzz.sh"
bash "$ROOT/scripts/setup-node.sh"
bash "$ROOT/scripts/setup-go.sh"
