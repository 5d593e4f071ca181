#!/usr/bin/env bash
# The release build of `cargo xtask run`: the eBPF programs (tracer-ebpf, for the BPF target,
# with the nightly toolchain and bpf-linker) embedded in an `ollama-tracer` for this machine
# (glibc, libpcap as a shared library). It installs only what building and running need
# (scripts/setup-ebpf-toolchain.sh). The static binary people download and the container image
# ships is scripts/build-dist.sh's.
#
# Usage: scripts/build-release.sh [DEST]
#   DEST  also copy the binary there (a file path, or a directory)
# Prints the binary's path on stdout (last line).
#
# Env knobs:
#   EBPF_TOOLCHAIN           rustup toolchain for the BPF crate (default: nightly)
#   USERSPACE_TOOLCHAIN      rustup toolchain for the binary (default: stable)
#   OLLAMA_TRACER_SKIP_SETUP=1  do not run scripts/setup-ebpf-toolchain.sh first
#   CARGO_TARGET_DIR         as for cargo (default: <repo>/target)
#   CARGO_BUILD_FLAGS        extra flags for `cargo build` (e.g. --quiet)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [ "${OLLAMA_TRACER_SKIP_SETUP:-0}" != 1 ]; then
  bash "$ROOT/scripts/setup-ebpf-toolchain.sh"
fi

# The eBPF object required, bpf-linker on PATH.
# shellcheck source=scripts/setup-common.sh
source "$ROOT/scripts/setup-common.sh"
ebpf_build_env

# shellcheck disable=SC2086 # CARGO_BUILD_FLAGS is a list of flags
cargo +"${USERSPACE_TOOLCHAIN:-stable}" build --release --locked ${CARGO_BUILD_FLAGS:-} -p tracer-user --bin ollama-tracer

BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ollama-tracer"
if [ ! -x "$BIN" ]; then
  echo "[build-release] $BIN was not built" >&2
  exit 1
fi
if [ $# -ge 1 ]; then
  DEST=$1
  if [ -d "$DEST" ]; then DEST="$DEST/ollama-tracer"; fi
  install -m 0755 "$BIN" "$DEST"
  BIN=$DEST
fi
echo "$BIN"
