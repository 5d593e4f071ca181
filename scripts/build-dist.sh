#!/usr/bin/env bash
# The downloadable `ollama-tracer`: one static binary (musl, libpcap linked in, the eBPF object
# embedded, no debug info or symbols) with shell completions and man pages generated from its
# own command-line definitions, packed as a tarball, with sha256 sums. `cargo xtask dist`, the
# test command (which tests this binary) and deploy/Dockerfile (which ships it) build through
# this script.
#
# Usage: scripts/build-dist.sh [DEST]
#   DEST  also copy the binary there (a file path, or a directory)
# Writes <target dir>/dist/:
#   ollama-tracer-VERSION-TARGET/{ollama-tracer, completions/, man/man1/}
#   ollama-tracer-VERSION-TARGET.tar.gz
#   SHA256SUMS        (the binary and the tarball)
# Prints the binary's path on stdout (last line).
#
# Env knobs:
#   DIST_TARGET              target triple (default x86_64-unknown-linux-musl)
#   EBPF_TOOLCHAIN           rustup toolchain for the BPF crate (default: nightly)
#   USERSPACE_TOOLCHAIN      rustup toolchain for the binary (default: stable)
#   OLLAMA_TRACER_SKIP_SETUP=1  skip scripts/setup-ebpf-toolchain.sh (the Dockerfile runs it in
#                            a layer of its own); scripts/setup-dist.sh always runs (it is fast
#                            when done, and prints where libpcap is)
#   OLLAMA_TRACER_COMMIT     the commit `--version` names (default: git's HEAD)
#   CARGO_TARGET_DIR         as for cargo (default: <repo>/target)
#   CARGO_BUILD_FLAGS        extra flags for `cargo build` (e.g. --quiet)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET=${DIST_TARGET:-x86_64-unknown-linux-musl}
TC=${USERSPACE_TOOLCHAIN:-stable}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

if [ "${OLLAMA_TRACER_SKIP_SETUP:-0}" != 1 ]; then
  bash "$ROOT/scripts/setup-ebpf-toolchain.sh"
fi
LIBPCAP_LIB=$(bash "$ROOT/scripts/setup-dist.sh" "$TARGET" | tail -1)

# As in scripts/build-release.sh: the eBPF object required, bpf-linker on PATH.
# shellcheck source=scripts/setup-common.sh
source "$ROOT/scripts/setup-common.sh"
ebpf_build_env
# The pcap crate links the static libpcap found here; its version is given, not probed (the
# probe would load a shared library).
export LIBPCAP_LIBDIR=$LIBPCAP_LIB LIBPCAP_VER=1.10.3
# C code (ring) is compiled by musl-gcc; the link is rustc's own static one, with the musl
# libc and start files of the target's standard library (musl-gcc as the linker would ask for
# musl's dynamic loader).
export "CC_${TARGET//-/_}=musl-gcc"

# shellcheck disable=SC2086 # CARGO_BUILD_FLAGS is a list of flags
cargo +"$TC" build --locked ${CARGO_BUILD_FLAGS:-} --profile dist --target "$TARGET" -p tracer-user --bin ollama-tracer

BIN=$TARGET_DIR/$TARGET/dist/ollama-tracer
if [ ! -x "$BIN" ]; then
  echo "[build-dist] $BIN was not built" >&2
  exit 1
fi
# Static, or it is not the artefact this script promises.
# (No program interpreter and no shared library needed; a static-pie still has a dynamic
# section, for relocating itself.)
if readelf -lW "$BIN" | grep -q 'program interpreter' || readelf -dW "$BIN" | grep -q '(NEEDED)'; then
  echo "[build-dist] $BIN is dynamically linked:" >&2
  readelf -dW "$BIN" | grep '(NEEDED)' >&2 || true
  exit 1
fi

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
NAME=ollama-tracer-$VERSION-$TARGET
OUT=$TARGET_DIR/dist
STAGE=$OUT/$NAME
rm -rf "$STAGE"
mkdir -p "$STAGE/completions" "$STAGE/man/man1"
install -m 0755 "$BIN" "$STAGE/ollama-tracer"
# Completions and man pages come from the binary's own clap definitions. The musl binary runs
# here when the target is this machine's architecture; otherwise the host's debug build would
# have to generate them (not set up: only x86_64 is built).
"$STAGE/ollama-tracer" generate completion bash >"$STAGE/completions/ollama-tracer.bash"
"$STAGE/ollama-tracer" generate completion zsh >"$STAGE/completions/_ollama-tracer"
"$STAGE/ollama-tracer" generate completion fish >"$STAGE/completions/ollama-tracer.fish"
"$STAGE/ollama-tracer" generate man "$STAGE/man/man1"

# Reproducible tarball: sorted names, fixed owner and mtime (the commit's time).
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -C "$OUT" -cf - "$NAME" |
  gzip -n -9 >"$OUT/$NAME.tar.gz"
(cd "$OUT" && sha256sum "$NAME/ollama-tracer" "$NAME.tar.gz" >SHA256SUMS)
echo "[build-dist] $OUT/$NAME.tar.gz: $(du -h "$STAGE/ollama-tracer" | cut -f1) static binary; $(cut -c1-16 "$OUT/SHA256SUMS" | head -1)… sha256" >&2

if [ $# -ge 1 ]; then
  DEST=$1
  if [ -d "$DEST" ]; then DEST="$DEST/ollama-tracer"; fi
  install -m 0755 "$BIN" "$DEST"
  BIN=$DEST
else
  BIN=$STAGE/ollama-tracer
fi
echo "$BIN"
