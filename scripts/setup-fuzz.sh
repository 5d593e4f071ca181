#!/usr/bin/env bash
# Installs what fuzzing needs (scripts/fuzz.sh, the fuzz smoke run in `cargo test`): the nightly
# toolchain and cargo-fuzz. Idempotent: quiet and fast (two checks, no network) when present.
# Called by scripts/setup.sh and scripts/fuzz.sh.
#
# Env knobs:
#   CARGO_FUZZ_VERSION  cargo-fuzz version to install (default below)
#   VERBOSE=1           say what is already present, too
set -euo pipefail
SETUP_TAG=setup-fuzz
# shellcheck source=scripts/setup-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-common.sh"

CARGO_FUZZ_VERSION=${CARGO_FUZZ_VERSION:-0.13.2}

if ! rustup toolchain list | grep -q '^nightly'; then
  say "installing the nightly toolchain: cargo-fuzz builds with it"
  quietly rustup toolchain install nightly --profile minimal
else
  verbose "nightly toolchain present"
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  say "building cargo-fuzz $CARGO_FUZZ_VERSION: the fuzz smoke run of the tests (a few minutes, once)"
  quietly cargo +nightly install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
else
  verbose "$(cargo +nightly fuzz --version) present"
fi
