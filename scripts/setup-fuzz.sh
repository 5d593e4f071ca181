#!/usr/bin/env bash
# Installs what fuzzing needs (scripts/fuzz.sh, the fuzz smoke run in `cargo test`): the nightly
# toolchain and cargo-fuzz. Idempotent: quiet and fast (two checks, no network) when present.
# Called by scripts/setup.sh and scripts/fuzz.sh.
#
# Env knobs:
#   CARGO_FUZZ_VERSION  cargo-fuzz version to install (default below)
#   VERBOSE=1           say what is already present, too
set -euo pipefail

CARGO_FUZZ_VERSION=${CARGO_FUZZ_VERSION:-0.13.2}

say() { echo "[setup-fuzz] $*" >&2; }
timed() {
  local s
  s=$(date +%s)
  "$@"
  say "$(($(date +%s) - s)) s: $*"
}

if ! rustup toolchain list | grep -q '^nightly'; then
  say "installing the nightly toolchain"
  timed rustup toolchain install nightly --profile minimal
elif [ "${VERBOSE:-0}" = 1 ]; then
  say "nightly toolchain present"
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  timed cargo +nightly install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
elif [ "${VERBOSE:-0}" = 1 ]; then
  say "$(cargo +nightly fuzz --version) present"
fi
